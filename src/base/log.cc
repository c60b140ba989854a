#include "base/log.h"

#include <ctime>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace twinbox {

Log& Log::instance() {
  static Log log;
  return log;
}

void Log::set_level(LogLevel level) {
  std::lock_guard lock(mutex_);
  level_ = level;
}

void Log::set_prefix(std::string prefix) {
  std::lock_guard lock(mutex_);
  prefix_ = std::move(prefix);
}

bool Log::set_file(const std::string& path) {
  // Traces contain mail content and addresses: the file is private to the user.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::FILE* f = ::fdopen(fd, "a");
  if (f == nullptr) {
    ::close(fd);
    return false;
  }
  std::lock_guard lock(mutex_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = f;
  return true;
}

void Log::add_secret(std::string_view secret) {
  if (secret.empty()) return;
  std::lock_guard lock(mutex_);
  if (std::find(secrets_.begin(), secrets_.end(), secret) == secrets_.end()) {
    secrets_.emplace_back(secret);
    // Longest first, so a secret containing another is replaced whole.
    std::sort(secrets_.begin(), secrets_.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  }
}

std::string Log::scrub(std::string_view text) const {
  std::lock_guard lock(mutex_);
  std::string out(text);
  for (const auto& secret : secrets_) {
    for (std::size_t pos = out.find(secret); pos != std::string::npos;
         pos = out.find(secret, pos)) {
      out.replace(pos, secret.size(), "<redacted>");
      pos += 10;
    }
  }
  return out;
}

void Log::write(LogLevel level, std::string_view text) {
  std::string line = scrub(text);
  std::lock_guard lock(mutex_);
  std::FILE* out = file_ != nullptr ? file_ : stderr;
  std::string record;
  record.reserve(prefix_.size() + line.size() + 48);
  if (file_ != nullptr) {
    // A log file outlives the run: each line says when (local time, ISO 8601).
    char stamp[40];
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    if (std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S%z ", &local) > 0) record += stamp;
  }
  record += prefix_;
  if (level == LogLevel::warning) record += "warning: ";
  if (level == LogLevel::error) record += "error: ";
  record += line;
  record += '\n';
  const bool under_status = file_ == nullptr && status_line_ != nullptr;
  if (under_status) status_line_->erase();
  std::fwrite(record.data(), 1, record.size(), out);
  std::fflush(out);
  if (under_status) status_line_->redraw();
}

void Log::set_status_line(StatusLine* line) {
  std::lock_guard lock(mutex_);
  status_line_ = line;
}

}  // namespace twinbox
