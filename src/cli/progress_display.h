// Progress of a run on a terminal: one status line on stderr, under the log, redrawn in place
// (carriage return, erase to end of line) at most ten times a second. What it says is computed
// by render_progress(), a pure function of the counts and the time, so tests need no terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "sync/progress.h"

namespace twinbox::cli {

using ProgressClock = std::chrono::steady_clock;

struct ProgressCounts {
  struct Mailbox {
    std::string name;  // as shown to the user
    std::size_t planned = 0, copied = 0;
    std::uint64_t planned_bytes = 0, copied_bytes = 0;
  };
  std::size_t to_sync = 0, started = 0, finished = 0;  // mailboxes of this cycle
  std::vector<Mailbox> active;                         // being synced, in start order
  std::size_t copied = 0;                              // messages, this cycle
  std::uint64_t copied_bytes = 0;
  std::uint64_t remaining_bytes = 0;  // planned but not copied yet, of every started mailbox
  std::optional<ProgressClock::time_point> copying_since;  // the first planned copy
};

// The status line, at most `columns` - 1 columns wide (a full line would wrap on some
// terminals). Example:
//   3/12 mailboxes | Archive/2024 1200/5000 msgs, 12.0/48.1 MB | 2345 msgs, 56.0 MB, 4.2 MB/s,
//   ETA 0:21
// ETA appears once every mailbox of the cycle has been planned (before that the rest is unknown).
std::string render_progress(const ProgressCounts& counts, ProgressClock::time_point now,
                            std::size_t columns);

// "12.3 MB", "950 kB", "12 B" (decimal units).
std::string human_bytes(std::uint64_t bytes);

class ProgressDisplay : public sync::ProgressObserver, public StatusLine {
 public:
  // Draws on `out`, a terminal. `columns` is read again at each draw (the window may change).
  explicit ProgressDisplay(std::FILE* out);
  ~ProgressDisplay() override;
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;

  // Whether progress belongs on `out`: a terminal other than TERM=dumb.
  static bool wanted_on(std::FILE* out);

  void cycle_started(std::size_t mailboxes, std::size_t to_sync) override;
  void mailbox_started(const std::string& name) override;
  void copies_planned(const std::string& name, std::size_t messages, std::uint64_t bytes) override;
  void copied(const std::string& name, std::size_t messages, std::uint64_t bytes) override;
  void mailbox_finished(const std::string& name, bool ok) override;

  // StatusLine, called by the log with its lock held.
  void erase() override;
  void redraw() override;

 private:
  ProgressCounts::Mailbox* find(const std::string& name);
  void update(bool force = false);  // redraws if 100 ms have passed (or `force`)
  std::size_t columns() const;

  std::FILE* out_;
  ProgressCounts counts_;
  std::string line_;  // what is on the screen now, "" if nothing
  ProgressClock::time_point last_draw_{};
};

}  // namespace twinbox::cli
