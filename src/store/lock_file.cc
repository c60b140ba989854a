#include "store/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace twinbox::store {
namespace {

// The pid written by the holder, or 0 when the file is empty or unreadable (the holder may be
// between its flock and its write).
long read_pid(int fd) {
  char buffer[32];
  const ssize_t n = pread(fd, buffer, sizeof buffer, 0);
  if (n <= 0) return 0;
  long pid = 0;
  const auto [end, ec] = std::from_chars(buffer, buffer + n, pid);
  if (ec != std::errc() || pid <= 0) return 0;
  return pid;
}

}  // namespace

Result<LockFile> LockFile::acquire(const std::string& path, std::string_view owner) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return Error(Errc::io, fmt::format("cannot open lock file {}: {}", path, std::strerror(errno)));
  }
  LockFile lock(fd, path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      const long pid = read_pid(fd);
      lock.fd_ = -1;  // not ours: close without truncating the holder's pid
      ::close(fd);
      return Error(Errc::io,
                   pid > 0 ? fmt::format("{} is in use by another twinbox (pid {})", owner, pid)
                           : fmt::format("{} is in use by another twinbox (pid unknown)", owner));
    }
    return Error(Errc::io, fmt::format("cannot lock {}: {}", path, std::strerror(err)));
  }
  // The umask may have removed bits from 0600 (0277 would leave it unwritable), and a file left
  // by an older run may have wider permissions.
  if (fchmod(fd, 0600) != 0) {
    return Error(Errc::io, fmt::format("cannot set mode 0600 on lock file {}: {}", path,
                                       std::strerror(errno)));
  }
  const std::string pid = fmt::format("{}\n", static_cast<long>(getpid()));
  if (ftruncate(fd, 0) != 0 ||
      pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return Error(Errc::io,
                 fmt::format("cannot write lock file {}: {}", path, std::strerror(errno)));
  }
  return lock;
}

LockFile& LockFile::operator=(LockFile&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

LockFile::~LockFile() { release(); }

void LockFile::release() {
  if (fd_ < 0) return;
  // Best effort: a pid left behind only makes a later "in use" message less precise, and only
  // while someone else holds the lock (which rewrites it).
  if (ftruncate(fd_, 0) != 0) {
    // Nothing to do: the lock is released below all the same.
  }
  ::close(fd_);  // releases the flock
  fd_ = -1;
}

}  // namespace twinbox::store
