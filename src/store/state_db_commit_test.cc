// Commits: counted once durable and visible (the WAL hook), checkpointed without SQLite's
// auto-checkpoint, and the test stop point TWINBOX_TEST_EXIT_AFTER_COMMITS.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "store/sqlite.h"
#include "store/state_db.h"
#include "store/test_support.h"

namespace twinbox::store {
namespace {

using testing::RawDb;
using testing::ScratchDir;

// Sets (or unsets, with nullopt) an environment variable for one scope.
class EnvScope {
 public:
  EnvScope(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvScope() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::unique_ptr<StateDb> open_or_fail(const std::string& path) {
  auto db = StateDb::open(path);
  EXPECT_TRUE(db) << db.error().to_string();
  return db ? std::move(db).value() : nullptr;
}

std::string mailbox_names(const std::string& path) {
  RawDb raw(path);
  return raw.value(
      "SELECT coalesce(group_concat(name, ','), '') FROM"
      " (SELECT CAST(name AS TEXT) AS name FROM mailboxes ORDER BY name)");
}

// When the hook reports a commit, another connection already sees it: autocommit writes and
// explicit transactions count once each; rollbacks, empty commits, reads and migrations do not.
TEST(StateDbCommit, HookRunsOnceTheCommitIsVisibleToAnotherConnection) {
  EnvScope no_stop(kExitAfterCommitsVariable, std::nullopt);
  ScratchDir dir;
  const std::string path = dir / "state.db";
  auto db = open_or_fail(path);
  ASSERT_TRUE(db);
  EXPECT_EQ(db->commits(), 0u);  // the schema's creation is not counted
  std::vector<std::pair<std::uint64_t, std::string>> seen;
  db->set_commit_observer_for_testing(
      [&](std::uint64_t n) { seen.emplace_back(n, mailbox_names(path)); });

  ASSERT_TRUE(db->add_mailbox("A", true));  // autocommit
  {
    auto tx = db->begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(db->add_mailbox("B", true));
    EXPECT_TRUE(seen.size() == 1u) << "a write inside a transaction is no commit";
    ASSERT_TRUE(db->add_mailbox("C", true));
    ASSERT_TRUE(tx->commit());
  }
  {
    auto tx = db->begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(db->add_mailbox("Rolled back", true));
  }
  {
    auto tx = db->begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(tx->commit());  // nothing written: nothing to count
  }
  ASSERT_TRUE(db->list_mailboxes());
  ASSERT_TRUE(db->rename_mailbox("A", "D"));  // a SAVEPOINT outside a transaction

  const std::vector<std::pair<std::uint64_t, std::string>> expected = {
      {1, "A"}, {2, "A,B,C"}, {3, "B,C,D"}};
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(db->commits(), 3u);
}

// The hook replaces SQLite's auto-checkpoint, so it checkpoints itself: 3,000 commits of at
// least one page each leave a WAL of about 1,000 pages, not 3,000.
TEST(StateDbCommit, WalIsCheckpointedAsTheAutoCheckpointWould) {
  EnvScope no_stop(kExitAfterCommitsVariable, std::nullopt);
  ScratchDir dir;
  const std::string path = dir / "state.db";
  auto db = open_or_fail(path);
  ASSERT_TRUE(db);
  // What is measured is the WAL's size, not its syncing: 3,000 fsyncs would only cost time.
  ASSERT_TRUE(db->connection_for_testing().exec("PRAGMA synchronous = OFF"));
  auto id = db->add_mailbox("INBOX", false);
  ASSERT_TRUE(id);
  constexpr int kCommits = 3000;
  for (int i = 0; i < kCommits; ++i) ASSERT_TRUE(db->set_subscribed(*id, i % 2 == 0));
  EXPECT_EQ(db->commits(), static_cast<std::uint64_t>(kCommits + 1));

  RawDb raw(path);
  const std::uint64_t page = std::stoull(raw.value("PRAGMA page_size"));
  const std::uint64_t frame = page + 24;  // a WAL frame: its header and the page
  const std::uint64_t wal = testing::read_file(path + "-wal").size();
  EXPECT_GT(wal, 0u);
  EXPECT_LE(wal, 32 + 1100 * frame) << "the WAL holds " << (wal - 32) / frame << " frames";
  // And nothing was lost on the way.
  EXPECT_EQ(raw.value("SELECT subscribed FROM mailboxes WHERE CAST(name AS TEXT) = 'INBOX'"), "0");
}

// TWINBOX_TEST_EXIT_AFTER_COMMITS=3: the process ends with status 86 right after its 3rd commit;
// the 3rd commit is in the file, the 4th never started.
TEST(StateDbCommit, ExitAfterCommitsStopsTheProcessRightAfterTheNthCommit) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv(kExitAfterCommitsVariable, "3", 1);
    auto db = StateDb::open(path);
    if (!db) _exit(1);
    for (const char* name : {"A", "B", "C", "D", "E"}) {
      if (!(*db)->add_mailbox(name, true)) _exit(2);
    }
    _exit(0);  // _exit: the child must not run the parent's atexit handlers
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), kExitAfterCommitsStatus);
  EXPECT_EQ(mailbox_names(path), "A,B,C");

  // Without the variable, the same database opens and counts from zero.
  EnvScope no_stop(kExitAfterCommitsVariable, std::nullopt);
  auto db = open_or_fail(path);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->add_mailbox("D", true));
  EXPECT_EQ(db->commits(), 1u);
}

TEST(StateDbCommit, MalformedExitAfterCommitsIsRefused) {
  ScratchDir dir;
  for (const char* value : {"0", "-1", "3x", " 3", "x"}) {
    SCOPED_TRACE(value);
    EnvScope stop(kExitAfterCommitsVariable, value);
    auto db = StateDb::open(dir / "state.db");
    ASSERT_FALSE(db);
    EXPECT_EQ(db.error().code, Errc::usage);
    EXPECT_EQ(db.error().message,
              fmt::format("TWINBOX_TEST_EXIT_AFTER_COMMITS={}: expected a number of commits >= 1",
                          value));
    EXPECT_FALSE(testing::exists(dir / "state.db"));
  }
  EnvScope empty(kExitAfterCommitsVariable, "");
  EXPECT_TRUE(StateDb::open(dir / "state.db"));
}

}  // namespace
}  // namespace twinbox::store
