#include "cli/progress_display.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "sync/engine.h"

namespace twinbox::cli {
namespace {

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr std::size_t kNameColumns = 30;

// The first `columns` code points of UTF-8 `text` (each taken as one column wide: mailbox names
// are mostly Latin; a wide character only makes the line a little shorter than the terminal).
std::string first_columns(const std::string& text, std::size_t columns) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (count++ == columns) return text.substr(0, i);
  }
  return text;
}

std::size_t column_count(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

std::string shortened(const std::string& name, std::size_t columns) {
  if (column_count(name) <= columns) return name;
  return first_columns(name, columns - 1) + "~";
}

std::string duration_text(double seconds) {
  const auto total = static_cast<long long>(seconds + 0.5);
  if (total >= 3600) {
    return fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60);
  }
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

}  // namespace

std::string human_bytes(std::uint64_t bytes) {
  if (bytes < 1000) return fmt::format("{} B", bytes);
  const double b = static_cast<double>(bytes);
  if (bytes < 1000 * 1000) return fmt::format("{:.1f} kB", b / 1e3);
  if (bytes < 1000ull * 1000 * 1000) return fmt::format("{:.1f} MB", b / 1e6);
  return fmt::format("{:.2f} GB", b / 1e9);
}

std::string render_progress(const ProgressCounts& counts, ProgressClock::time_point now,
                            std::size_t columns) {
  std::string text = fmt::format("{}/{} mailboxes", counts.finished, counts.to_sync);
  if (!counts.active.empty()) {
    // The mailbox with the most left to copy says the most about how long this will take.
    const auto left = [](const ProgressCounts::Mailbox& m) {
      return m.planned_bytes - std::min(m.planned_bytes, m.copied_bytes);
    };
    const ProgressCounts::Mailbox* shown = &counts.active.back();
    for (const auto& m : counts.active) {
      if (left(m) > left(*shown)) shown = &m;
    }
    text += " | " + shortened(shown->name, kNameColumns);
    if (shown->planned > 0) {
      text += fmt::format(" {}/{} msgs, {}/{}", shown->copied, shown->planned,
                          human_bytes(shown->copied_bytes), human_bytes(shown->planned_bytes));
    }
    if (counts.active.size() > 1) text += fmt::format(" (+{} more)", counts.active.size() - 1);
  }
  if (counts.copying_since) {
    text += fmt::format(" | {} msgs, {}", counts.copied, human_bytes(counts.copied_bytes));
    const double seconds = std::chrono::duration<double>(now - *counts.copying_since).count();
    if (seconds >= 0.5 && counts.copied_bytes > 0) {
      const double rate = static_cast<double>(counts.copied_bytes) / seconds;
      text += fmt::format(", {}/s", human_bytes(static_cast<std::uint64_t>(rate)));
      if (counts.started == counts.to_sync) {
        text += ", ETA " + duration_text(static_cast<double>(counts.remaining_bytes) / rate);
      }
    }
  }
  return first_columns(text, columns > 1 ? columns - 1 : 0);
}

ProgressDisplay::ProgressDisplay(std::FILE* out) : out_(out) {
  Log::instance().set_status_line(this);
}

ProgressDisplay::~ProgressDisplay() {
  Log::instance().set_status_line(nullptr);
  erase();
  line_.clear();
}

bool ProgressDisplay::wanted_on(std::FILE* out) {
  if (::isatty(::fileno(out)) == 0) return false;
  const char* term = std::getenv("TERM");
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

std::size_t ProgressDisplay::columns() const {
  winsize size{};
  if (::ioctl(::fileno(out_), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

ProgressCounts::Mailbox* ProgressDisplay::find(const std::string& name) {
  const std::string shown = sync::shown(name);
  for (auto& m : counts_.active) {
    if (m.name == shown) return &m;
  }
  return nullptr;
}

void ProgressDisplay::cycle_started(std::size_t, std::size_t to_sync) {
  counts_ = ProgressCounts{};
  counts_.to_sync = to_sync;
  update(true);
}

void ProgressDisplay::mailbox_started(const std::string& name) {
  ++counts_.started;
  counts_.active.push_back({sync::shown(name)});
  update(true);
}

void ProgressDisplay::copies_planned(const std::string& name, std::size_t messages,
                                     std::uint64_t bytes) {
  if (auto* m = find(name)) {
    m->planned += messages;
    m->planned_bytes += bytes;
  }
  counts_.remaining_bytes += bytes;
  if (!counts_.copying_since) counts_.copying_since = ProgressClock::now();
  update(true);
}

void ProgressDisplay::copied(const std::string& name, std::size_t messages, std::uint64_t bytes) {
  if (auto* m = find(name)) {
    m->copied += messages;
    m->copied_bytes += bytes;
  }
  counts_.copied += messages;
  counts_.copied_bytes += bytes;
  counts_.remaining_bytes -= std::min(counts_.remaining_bytes, bytes);
  update();
}

void ProgressDisplay::mailbox_finished(const std::string& name, bool) {
  if (auto* m = find(name)) {
    // What was planned but not copied (a failure, an empty message) is no longer to come.
    const std::uint64_t left = m->planned_bytes - std::min(m->planned_bytes, m->copied_bytes);
    counts_.remaining_bytes -= std::min(counts_.remaining_bytes, left);
    counts_.active.erase(counts_.active.begin() + (m - counts_.active.data()));
  }
  ++counts_.finished;
  if (counts_.finished >= counts_.to_sync) {
    // The cycle is done: no line lingers under the summary or while --watch waits.
    Log::instance().locked([this] {
      erase();
      line_.clear();
    });
    return;
  }
  update(true);
}

void ProgressDisplay::update(bool force) {
  const auto now = ProgressClock::now();
  if (!force && now - last_draw_ < kRedrawInterval) return;
  last_draw_ = now;
  Log::instance().locked([&] {
    line_ = render_progress(counts_, now, columns());
    redraw();
  });
}

void ProgressDisplay::erase() {
  if (line_.empty()) return;
  std::fputs("\r\x1b[K", out_);
  std::fflush(out_);
}

void ProgressDisplay::redraw() {
  if (line_.empty()) return;
  std::fputs("\r", out_);
  std::fputs(line_.c_str(), out_);
  std::fputs("\x1b[K", out_);
  std::fflush(out_);
}

}  // namespace twinbox::cli
