// The sync engine: one run of the main job. It connects both sides, reconciles the mailbox
// lists, and for each mailbox pair observes both sides, recovers interrupted work, asks the pure
// planner what to do and executes the plan, recording every intent before its effect.
//
// Crash safety (issue 3 §6): an APPEND is preceded by a durable intent naming the source message,
// its size and SHA-256, and the target's UIDNEXT at that time; the pair is recorded and the intent
// completed in one transaction after APPENDUID. A run killed anywhere leaves either no copy (the
// intent finds nothing and the message is copied again) or exactly one (the intent finds it among
// the UIDs above the recorded UIDNEXT and pairs it). UIDNEXT and HIGHESTMODSEQ are persisted only
// after everything below them is applied and recorded.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config/config.h"
#include "net/client.h"
#include "store/state_db.h"
#include "sync/replica.h"

namespace twinbox::sync {

// One connection to each side; mailboxes are synced on several lanes at once (--jobs).
using Lane = PerSide<Replica*>;

struct EngineOptions {
  std::vector<std::string> mailboxes;  // command-line MAILBOX...: replaces list-mailbox
  // --jobs: mailboxes synced at once, each on its own pair of connections (1 = InterIMAP's one
  // connection per side). Extra connections are opened only when that many mailboxes changed.
  std::size_t jobs = 4;
  bool dry_run = false;
  // --repair: re-read every message of both sides instead of asking for changes, re-copy what is
  // missing, pair what matches by content, report every discrepancy.
  bool repair = false;
  // --watch[=N]: after a cycle, wait for changes (IDLE on INBOX, or NOTIFY on every mailbox with
  // `notify`) and run a cycle when one comes, or every `watch` at the latest. Connection losses
  // are retried with backoff.
  std::optional<std::chrono::seconds> watch;
  bool notify = false;
};

// Which of local, remote and the state database --delete/--rename act on (--target).
struct Targets {
  bool local = true, remote = true, database = true;
  bool side(Side s) const { return s == Side::local ? local : remote; }
};

struct RunSummary {
  std::size_t mailboxes_seen = 0, mailboxes_synced = 0, mailboxes_failed = 0;
  PerSide<std::size_t> copied_to{};  // messages appended to each side
  PerSide<std::size_t> expunged_on{};
  PerSide<std::size_t> flags_set_on{};
  std::size_t conflicts = 0;
  PerSide<std::uint64_t> wire_in{}, wire_out{};  // bytes on the wire (after TLS/COMPRESS)
};

class Engine {
 public:
  Engine(const config::Config& config, EngineOptions options, store::StateDb& db,
         PerSide<net::Endpoint> endpoints);

  // The whole run. Errors that end it are returned; per-mailbox failures are logged, counted in
  // the summary and do not stop the other mailboxes.
  asio::awaitable<Result<RunSummary>> run();

  // --delete NAME...: DELETE on the targeted servers where it exists, and forget it in the
  // database if targeted. INBOX is refused; an unknown name changes nothing.
  asio::awaitable<Status> delete_mailboxes(const std::vector<std::string>& names, Targets targets);
  // --rename FROM TO: RENAME on the targeted servers (inferiors follow, RFC 9051 §6.3.6) and in
  // the database. Refused when TO exists on a targeted side or in the database.
  asio::awaitable<Status> rename_mailbox(const std::string& from, const std::string& to,
                                         Targets targets);

  // SIGINT/SIGTERM: finish the step in progress (the mailbox being synced keeps its state
  // consistent at every step), then end the run successfully.
  void request_stop() { stop_ = true; }
  bool stop_requested() const { return stop_; }

 private:
  Status compile_ignore_pattern();
  asio::awaitable<Status> cycle();
  // Watch mode: true when a change was announced or the interval passed, false when stopping.
  asio::awaitable<Result<bool>> wait_for_changes();
  asio::awaitable<void> pause(std::chrono::milliseconds duration);  // interrupted by a stop
  // Closes every connection of `lanes` (no LOGOUT: nothing is pending) and counts its bytes.
  void close_lanes(std::vector<PerSide<std::unique_ptr<Replica>>>& lanes);
  void disconnect();
  // Internal name of a name given on the command line (local delimiter -> NUL).
  std::string from_command_line(std::string name) const;
  // connect(), then learn the local delimiter that command-line names use.
  asio::awaitable<Status> connect_for_names();
  asio::awaitable<Status> connect();
  asio::awaitable<Result<std::unique_ptr<Replica>>> open_replica(Side side);
  asio::awaitable<Result<PerSide<std::unique_ptr<Replica>>>> open_lane();
  Lane lane0() const;
  // Whether LIST-STATUS and the database say that the mailbox may have changed.
  Result<bool> needs_sync(const std::string& name);
  // Syncs work[next++] on `lane` until the list is exhausted (or a stop is requested).
  // Opens connection pair `k` (0-based), then works like sync_worker(); gives up quietly (a
  // warning) when the servers refuse more connections.
  asio::awaitable<void> extra_lane_worker(std::size_t k, const std::vector<std::string>& work,
                                          std::size_t& next, std::optional<Error>& fatal);
  asio::awaitable<void> sync_worker(Lane lane, const std::vector<std::string>& work,
                                    std::size_t& next, std::optional<Error>& fatal);
  asio::awaitable<Result<std::vector<std::string>>> reconcile_mailboxes();
  asio::awaitable<Status> sync_mailbox(const std::string& name, const Lane& lane);
  asio::awaitable<Status> rematch_orphans(const Lane& lane, store::MailboxId id,
                                          const std::string& name, PerSide<SideObservation>& seen);
  asio::awaitable<Status> pair_by_content(const Lane& lane, store::MailboxId id,
                                          const std::string& name, PerSide<SideObservation>& seen,
                                          MailboxObservation& observation);
  // SHA-256 of a message's body (`size`: its RFC822.SIZE; large ones are hashed piecewise).
  asio::awaitable<Result<std::string>> body_hash(const Lane& lane, Side side, Uid uid,
                                                 std::uint64_t size);
  asio::awaitable<Status> recover_intents(const Lane& lane, store::MailboxId id,
                                          const std::string& name);
  asio::awaitable<Status> execute(const Lane& lane, store::MailboxId id, const std::string& name,
                                  const Plan& plan, PerSide<SideObservation>& seen);
  // The UIDNEXT and HIGHESTMODSEQ a side may record after our changes (see execute()).
  asio::awaitable<Result<store::SideState>> settled_state(const Lane& lane, store::MailboxId id,
                                                          Side side, const SideObservation& seen,
                                                          bool acted,
                                                          const std::vector<Uid>& expunged);
  asio::awaitable<Status> copy(const Lane& lane, store::MailboxId id, const std::string& name,
                               Side from, std::vector<CopyAction> copies,
                               PerSide<SideObservation>& seen);
  // One large message, streamed (see HashingSource in engine.cc); returns its new UID.
  asio::awaitable<Result<Uid>> copy_streamed(const Lane& lane, store::MailboxId id,
                                             const std::string& name, Side from,
                                             const CopyAction& action, Uid target_next,
                                             const PerSide<SideObservation>& seen);
  // After APPENDUID: the APPENDUID must name the mailbox we saw.
  Status check_appended(const std::string& name, Side to, std::uint32_t uidvalidity,
                        const PerSide<SideObservation>& seen) const;
  // In the caller's transaction: the copy becomes a pair and its intent is completed.
  Status record_copy(store::MailboxId id, Side from, const CopyAction& action, Uid target_uid,
                     store::IntentId intent);
  bool ignored(const std::string& name) const;

  const config::Config& config_;
  EngineOptions options_;
  store::StateDb& db_;
  PerSide<net::Endpoint> endpoints_;
  PerSide<std::unique_ptr<Replica>> replicas_;                  // lane 0: lists, watches, syncs
  std::vector<PerSide<std::unique_ptr<Replica>>> extra_lanes_;  // lanes 1..jobs-1, per cycle
  PerSide<std::map<std::string, ListedMailbox>> listed_;
  RunSummary summary_;
  bool stop_ = false;
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> ignore_{nullptr, pcre2_code_free};
};

// The internal name with '/' for the delimiter, for messages.
std::string shown(const std::string& internal);
// "local(INBOX)": names one side of one mailbox in error messages.
std::string mailbox_label(Side side, const std::string& internal_name);
// The prefix of log lines about one side of one mailbox: the config's log-prefix expanded
// (InterIMAP's default gives "local(INBOX): ").
std::string log_prefix(Side side, const std::string& internal_name);

}  // namespace twinbox::sync
