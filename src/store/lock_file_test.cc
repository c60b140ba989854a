#include "store/lock_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "store/test_support.h"

namespace twinbox::store {
namespace {

using testing::ScratchDir;

TEST(LockFile, HolderWritesItsPidAndReleaseEmptiesTheFile) {
  ScratchDir dir;
  const std::string path = dir / "x.lock";
  {
    auto lock = LockFile::acquire(path, "thing");
    ASSERT_TRUE(lock) << lock.error().to_string();
    EXPECT_EQ(testing::read_file(path), fmt::format("{}\n", getpid()));
    EXPECT_EQ(testing::mode_of(path), 0600);
  }
  EXPECT_TRUE(testing::exists(path));  // never unlinked (see lock_file.h)
  EXPECT_EQ(testing::read_file(path), "");
}

TEST(LockFile, SecondAcquireInTheSameProcessConflicts) {
  ScratchDir dir;
  const std::string path = dir / "x.lock";
  auto first = LockFile::acquire(path, "thing");
  ASSERT_TRUE(first);
  auto second = LockFile::acquire(path, "thing");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::io);
  EXPECT_EQ(second.error().message,
            fmt::format("thing is in use by another twinbox (pid {})", getpid()));
  // The loser must not have erased the holder's pid.
  EXPECT_EQ(testing::read_file(path), fmt::format("{}\n", getpid()));
}

TEST(LockFile, HolderThatHasNotWrittenItsPidYetIsReportedAsUnknown) {
  ScratchDir dir;
  const std::string path = dir / "x.lock";
  auto first = LockFile::acquire(path, "thing");
  ASSERT_TRUE(first);
  testing::write_file(path, "");
  auto second = LockFile::acquire(path, "thing");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message, "thing is in use by another twinbox (pid unknown)");
}

TEST(LockFile, LockOfAKilledProcessDoesNotBlock) {
  ScratchDir dir;
  const std::string path = dir / "x.lock";
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = LockFile::acquire(path, "thing");
    const char byte = lock ? 'y' : 'n';
    if (write(ready[1], &byte, 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  close(ready[1]);
  ASSERT_EQ(byte, 'y');
  EXPECT_EQ(testing::read_file(path), fmt::format("{}\n", child));
  auto while_alive = LockFile::acquire(path, "thing");
  ASSERT_FALSE(while_alive);
  EXPECT_EQ(while_alive.error().message,
            fmt::format("thing is in use by another twinbox (pid {})", child));

  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  auto after = LockFile::acquire(path, "thing");
  ASSERT_TRUE(after) << after.error().to_string();
  EXPECT_EQ(testing::read_file(path), fmt::format("{}\n", getpid()));
}

TEST(LockFile, UnopenableLockFileIsAnIoError) {
  ScratchDir dir;
  auto lock = LockFile::acquire(dir / "no/such/dir/x.lock", "thing");
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code, Errc::io);
  EXPECT_EQ(lock.error().message, fmt::format("cannot open lock file {}: No such file or directory",
                                              dir / "no/such/dir/x.lock"));
}

}  // namespace
}  // namespace twinbox::store
