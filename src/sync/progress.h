// What a run reports while it goes, for a progress display and a run summary. The engine calls
// an observer from its one thread, between awaits; names are internal (NUL between levels).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "store/state_db.h"
#include "sync/mail_store.h"

namespace twinbox::sync {

class ProgressObserver {
 public:
  virtual ~ProgressObserver() = default;
  // A cycle lists `mailboxes`, of which `to_sync` may have changed and will be synced.
  virtual void cycle_started(std::size_t mailboxes, std::size_t to_sync) = 0;
  virtual void mailbox_started(const std::string& name) = 0;
  // Copies about to start in one direction: `messages` of `bytes` in all (RFC822.SIZE).
  virtual void copies_planned(const std::string& name, std::size_t messages,
                              std::uint64_t bytes) = 0;
  // Messages appended and recorded.
  virtual void copied(const std::string& name, std::size_t messages, std::uint64_t bytes) = 0;
  virtual void mailbox_finished(const std::string& name, bool ok) = 0;
};

// What happened to one mailbox in a run (summed over the cycles of --watch).
struct MailboxReport {
  enum class Outcome { unchanged, synced, failed };
  Outcome outcome = Outcome::unchanged;      // of the last cycle that looked at it
  std::size_t syncs = 0;                     // cycles that synced it (not counting "unchanged")
  store::PerSide<std::optional<Tier>> tier;  // change detection used, if it was selected
  store::PerSide<std::size_t> copied_to{}, expunged_on{}, flags_set_on{};
  store::PerSide<std::uint64_t> bytes_copied_to{};
  std::size_t conflicts = 0;
  std::chrono::milliseconds duration{};  // time spent syncing it
  std::string error;                     // the last failure, "" if none
};

std::string_view outcome_name(MailboxReport::Outcome outcome);

}  // namespace twinbox::sync
