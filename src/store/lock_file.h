// An exclusive lock that keeps two twinbox processes off one state database.
//
// The lock is flock(LOCK_EX | LOCK_NB) on a sibling file (the database path + ".lock", mode 0600)
// that also holds the owner's pid for the error message. Properties this relies on:
// - flock locks belong to the open file description: they are released when the process dies,
//   however it dies (kill -9 included), so a lock file left by a crashed run never blocks the next
//   one; a second open() of the file, even in the same process, conflicts with the first.
// - The descriptor is O_CLOEXEC: a tunnel or password-command child never inherits the lock and
//   cannot keep it alive after twinbox exits.
// - The file is never unlinked. Unlinking on release would let a process that opened the old
//   inode just before the unlink lock it while a third process creates and locks a new inode.
//   On release the pid is truncated away (while still locked), so a leftover file names nobody.
// SQLite's own locks are not used for this: they are POSIX record locks, which a process drops
// whenever it closes any descriptor of the file, and `locking_mode=EXCLUSIVE` would also stop
// read-only inspection of the database with the sqlite3 shell while twinbox runs.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "base/error.h"

namespace twinbox::store {

class LockFile {
 public:
  // Creates `path` if missing (mode 0600 whatever the umask), locks it and writes our pid.
  // When another process holds it: Errc::io "<owner> is in use by another twinbox (pid N)".
  static Result<LockFile> acquire(const std::string& path, std::string_view owner);

  // Holds nothing: for a database that no other process can see (StateDb::open_scratch).
  static LockFile none() { return LockFile(-1, ""); }

  LockFile(LockFile&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}
  LockFile& operator=(LockFile&& other) noexcept;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;
  ~LockFile();

  const std::string& path() const { return path_; }

 private:
  LockFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void release();

  int fd_ = -1;
  std::string path_;
};

}  // namespace twinbox::store
