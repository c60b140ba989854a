// Logging: InterIMAP-like lines on stderr or a log file, with secrets scrubbed by value.
//
// Credentials are redacted twice: the IMAP layer never hands a LOGIN/AUTHENTICATE payload to the
// log in the first place, and every record is also scrubbed of each registered secret (the
// password, its base64 SASL form), so a secret that slips through some other path still never
// reaches a terminal or a file.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace twinbox {

enum class LogLevel { error = 0, warning = 1, info = 2, debug = 3 };

// A line drawn on the terminal under the log (a progress display). The log erases it before
// each record it writes to stderr and redraws it after, so records never mix with it.
// Both are called with the log's lock held.
class StatusLine {
 public:
  virtual ~StatusLine() = default;
  virtual void erase() = 0;
  virtual void redraw() = 0;
};

class Log {
 public:
  // The process-wide log. Configured once by main; safe to use from several threads.
  static Log& instance();

  void set_level(LogLevel level);
  LogLevel level() const { return level_; }
  bool enabled(LogLevel level) const { return level <= level_; }
  void set_prefix(std::string prefix);
  // Writes to `path` (appending, mode 0600) instead of stderr. Returns false on failure.
  bool set_file(const std::string& path);
  // Every later record has each occurrence of `secret` replaced by "<redacted>".
  void add_secret(std::string_view secret);
  // Returns `text` with every registered secret replaced.
  std::string scrub(std::string_view text) const;

  void write(LogLevel level, std::string_view text);

  // Records on stderr erase and redraw `line` (null: none). A log file is left alone.
  void set_status_line(StatusLine* line);
  // Runs `draw` under the log's lock, so a status line update never splits a record.
  template <class Draw>
  void locked(Draw&& draw) {
    std::lock_guard lock(mutex_);
    draw();
  }

  template <class... Args>
  void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
    if (!enabled(level)) return;
    write(level, fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  Log() = default;
  mutable std::mutex mutex_;
  LogLevel level_ = LogLevel::info;
  std::string prefix_;
  std::FILE* file_ = nullptr;
  std::vector<std::string> secrets_;
  StatusLine* status_line_ = nullptr;
};

template <class... Args>
void log_error(fmt::format_string<Args...> f, Args&&... a) {
  Log::instance().log(LogLevel::error, f, std::forward<Args>(a)...);
}
template <class... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... a) {
  Log::instance().log(LogLevel::warning, f, std::forward<Args>(a)...);
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... a) {
  Log::instance().log(LogLevel::info, f, std::forward<Args>(a)...);
}
template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... a) {
  Log::instance().log(LogLevel::debug, f, std::forward<Args>(a)...);
}

}  // namespace twinbox
