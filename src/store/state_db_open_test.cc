// Opening the state database: creation, modes, pragmas, the lock, refusing foreign or future
// files, and the migration mechanism.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "store/schema.h"
#include "store/sqlite.h"
#include "store/state_db.h"
#include "store/test_support.h"

namespace twinbox::store {
namespace {

using testing::RawDb;
using testing::ScratchDir;

// Sets the umask for one scope.
class UmaskScope {
 public:
  explicit UmaskScope(mode_t mask) : old_(umask(mask)) {}
  ~UmaskScope() { umask(old_); }

 private:
  mode_t old_;
};

std::string schema_dump(const std::string& path) {
  RawDb raw(path);
  return raw.value("SELECT group_concat(sql, char(10)) FROM sqlite_schema");
}

std::string pragma(StateDb& db, std::string_view name) {
  auto q = db.connection_for_testing().query(fmt::format("PRAGMA {}", name));
  if (!q) return "error";
  auto row = q->step();
  if (!row || !*row) return "error";
  return q->text(0);
}

TEST(StateDbOpen, CreatesFile0600AndParents0700WhateverTheUmask) {
  ScratchDir dir;
  UmaskScope umask_zero(0);
  const std::string path = dir / "a/b/state.db";
  auto db = StateDb::open(path);
  ASSERT_TRUE(db) << db.error().to_string();
  EXPECT_EQ(testing::mode_of(dir / "a"), 0700);
  EXPECT_EQ(testing::mode_of(dir / "a/b"), 0700);
  EXPECT_EQ(testing::mode_of(path), 0600);
  EXPECT_EQ(testing::mode_of(path + ".lock"), 0600);
  // SQLite gives its side files the database's mode.
  EXPECT_EQ(testing::mode_of(path + "-wal"), 0600);
  EXPECT_EQ(testing::mode_of(path + "-shm"), 0600);
}

TEST(StateDbOpen, CreatesAWritableFileUnderARestrictiveUmask) {
  ScratchDir dir;
  UmaskScope umask_strict(0277);
  const std::string path = dir / "state.db";
  auto db = StateDb::open(path);
  ASSERT_TRUE(db) << db.error().to_string();
  EXPECT_EQ(testing::mode_of(path), 0600);
  EXPECT_TRUE((*db)->add_mailbox("INBOX", true));
}

TEST(StateDbOpen, ExistingParentDirectoryKeepsItsMode) {
  ScratchDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  auto db = StateDb::open(dir / "state.db");
  ASSERT_TRUE(db);
  EXPECT_EQ(testing::mode_of(dir.path()), 0755);
}

TEST(StateDbOpen, UsesWalFullSyncForeignKeysAndNoBusyWait) {
  ScratchDir dir;
  auto db = StateDb::open(dir / "state.db");
  ASSERT_TRUE(db);
  EXPECT_EQ(pragma(**db, "journal_mode"), "wal");
  EXPECT_EQ(pragma(**db, "synchronous"), "2");  // FULL
  EXPECT_EQ(pragma(**db, "foreign_keys"), "1");
  EXPECT_EQ(pragma(**db, "busy_timeout"), "0");
  EXPECT_EQ(pragma(**db, "application_id"), std::to_string(kApplicationId));
  auto version = (*db)->schema_version();
  ASSERT_TRUE(version);
  EXPECT_EQ(*version, 1);
}

TEST(StateDbOpen, ReopenKeepsDataAndSchemaUnchanged) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  {
    auto db = StateDb::open(path);
    ASSERT_TRUE(db);
    ASSERT_TRUE((*db)->add_mailbox("INBOX", true));
  }
  const std::string schema = schema_dump(path);
  EXPECT_NE(schema.find("CREATE TABLE mapping"), std::string::npos);
  for (int i = 0; i < 2; ++i) {
    auto db = StateDb::open(path);
    ASSERT_TRUE(db) << db.error().to_string();
    auto version = (*db)->schema_version();
    ASSERT_TRUE(version);
    EXPECT_EQ(*version, current_schema_version());
    auto inbox = (*db)->find_mailbox("INBOX");
    ASSERT_TRUE(inbox);
    ASSERT_TRUE(inbox->has_value());
    EXPECT_TRUE((*inbox)->subscribed);
  }
  EXPECT_EQ(schema_dump(path), schema);
  RawDb raw(path);
  EXPECT_EQ(raw.value("SELECT value FROM meta WHERE key = 'schema_version'"), "1");
}

TEST(StateDbOpen, SecondOpenInTheSameProcessFailsAndLeavesTheFirstWorking) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  auto first = StateDb::open(path);
  ASSERT_TRUE(first);
  auto second = StateDb::open(path);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::io);
  EXPECT_EQ(second.error().message,
            fmt::format("state database {} is in use by another twinbox (pid {})", path, getpid()));
  // The loser never opened the database file, so it cannot have dropped the first
  // connection's POSIX locks by closing a descriptor.
  auto tx = (*first)->begin();
  ASSERT_TRUE(tx);
  ASSERT_TRUE((*first)->add_mailbox("INBOX", false));
  EXPECT_TRUE(tx->commit());
}

TEST(StateDbOpen, SecondOpenFromAnotherProcessFails) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  auto first = StateDb::open(path);
  ASSERT_TRUE(first);
  const std::string expected =
      fmt::format("state database {} is in use by another twinbox (pid {})", path, getpid());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // _exit: the child must not run destructors on the parent's connection.
    auto second = StateDb::open(path);
    _exit(!second && second.error().message == expected ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(StateDbOpen, LockOfAProcessKilledMidRunDoesNotBlockAndCommittedDataSurvives) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto db = StateDb::open(path);
    bool ok = bool(db);
    if (ok) {
      auto tx = (*db)->begin();
      ok = tx && (*db)->add_mailbox("INBOX", true) && tx->commit();
      // An uncommitted transaction is open when the process dies.
      auto open_tx = (*db)->begin();
      ok = ok && open_tx && (*db)->add_mailbox("Uncommitted", true);
      const char byte = ok ? 'y' : 'n';
      if (write(ready[1], &byte, 1) != 1) _exit(2);
      pause();
    }
    _exit(1);
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  close(ready[1]);
  ASSERT_EQ(byte, 'y');
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);

  EXPECT_EQ(testing::read_file(path + ".lock"), fmt::format("{}\n", child));
  auto db = StateDb::open(path);
  ASSERT_TRUE(db) << db.error().to_string();
  auto list = (*db)->list_mailboxes();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "INBOX");
  EXPECT_EQ(testing::read_file(path + ".lock"), fmt::format("{}\n", getpid()));
}

TEST(StateDbOpen, DescriptorsAreCloseOnExec) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  auto db = StateDb::open(path);
  ASSERT_TRUE(db);
  ASSERT_TRUE((*db)->add_mailbox("INBOX", true));
  int seen = 0;
  DIR* fds = opendir("/proc/self/fd");
  ASSERT_NE(fds, nullptr);
  while (dirent* entry = readdir(fds)) {
    const int fd = atoi(entry->d_name);
    std::array<char, 4096> target{};
    const std::string link = fmt::format("/proc/self/fd/{}", entry->d_name);
    const ssize_t n = readlink(link.c_str(), target.data(), target.size() - 1);
    if (n <= 0 || std::string_view(target.data(), n).rfind(path, 0) != 0) continue;
    ++seen;
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC) << target.data();
  }
  closedir(fds);
  EXPECT_GE(seen, 3);  // the lock file, the database, its WAL (and -shm)
}

TEST(StateDbOpen, FileThatIsNotSqliteIsRefusedAndLeftAlone) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  const std::string bytes = "[remote]\nhost = imap.example.org\n" + std::string(5000, 'x');
  testing::write_file(path, bytes);
  auto db = StateDb::open(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, Errc::io);
  EXPECT_EQ(db.error().message, fmt::format("state database {} is not an SQLite database", path));
  EXPECT_EQ(testing::read_file(path), bytes);
  EXPECT_FALSE(testing::exists(path + "-wal"));
  EXPECT_FALSE(testing::exists(path + "-shm"));
  EXPECT_FALSE(testing::exists(path + "-journal"));
}

TEST(StateDbOpen, InterimapDatabaseIsRecognisedAndLeftAlone) {
  ScratchDir dir;
  const std::string path = dir / "localhost.db";
  {
    RawDb raw(path);
    raw.exec(
        "CREATE TABLE mailboxes (idx INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
        " mailbox BLOB COLLATE BINARY NOT NULL CHECK (mailbox != '') UNIQUE,"
        " subscribed BOOLEAN NOT NULL);"
        "CREATE TABLE local (idx INTEGER NOT NULL PRIMARY KEY REFERENCES mailboxes(idx),"
        " UIDVALIDITY UNSIGNED INT NOT NULL, UIDNEXT UNSIGNED INT NOT NULL,"
        " HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL);"
        "CREATE TABLE remote (idx INTEGER NOT NULL PRIMARY KEY REFERENCES mailboxes(idx),"
        " UIDVALIDITY UNSIGNED INT NOT NULL, UIDNEXT UNSIGNED INT NOT NULL,"
        " HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL);"
        "CREATE TABLE mapping (idx INTEGER NOT NULL REFERENCES mailboxes(idx),"
        " lUID UNSIGNED INT NOT NULL, rUID UNSIGNED INT NOT NULL,"
        " PRIMARY KEY (idx, lUID), UNIQUE (idx, rUID));"
        "INSERT INTO mailboxes (mailbox, subscribed) VALUES (x'494e424f58', 1);"
        "PRAGMA user_version = 1;");
  }
  const std::string bytes = testing::read_file(path);
  auto db = StateDb::open(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().message,
            fmt::format("state database {} is not a twinbox state database (it looks like an "
                        "InterIMAP database)",
                        path));
  EXPECT_EQ(testing::read_file(path), bytes);
  RawDb raw(path);
  EXPECT_EQ(raw.value("PRAGMA journal_mode"), "delete");
}

TEST(StateDbOpen, OtherSqliteDatabaseIsRefused) {
  ScratchDir dir;
  const std::string path = dir / "other.db";
  {
    RawDb raw(path);
    raw.exec("CREATE TABLE meta (key, value); INSERT INTO meta VALUES ('schema_version', 1)");
  }
  auto db = StateDb::open(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().message,
            fmt::format("state database {} is not a twinbox state database", path));
}

TEST(StateDbOpen, FutureSchemaVersionIsRefusedAndLeftAlone) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  {
    auto db = StateDb::open(path);
    ASSERT_TRUE(db);
    ASSERT_TRUE((*db)->add_mailbox("INBOX", true));
  }
  {
    RawDb raw(path);
    raw.exec("UPDATE meta SET value = 7 WHERE key = 'schema_version'");
  }
  const std::string bytes = testing::read_file(path);
  auto db = StateDb::open(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, Errc::io);
  EXPECT_EQ(db.error().message,
            fmt::format("state database {} has schema version 7, but this twinbox knows versions "
                        "up to 1: use a newer twinbox",
                        path));
  EXPECT_EQ(testing::read_file(path), bytes);
}

TEST(StateDbOpen, MissingVersionRowIsRefused) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  { ASSERT_TRUE(StateDb::open(path)); }
  {
    RawDb raw(path);
    raw.exec("DELETE FROM meta");
  }
  auto db = StateDb::open(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().message, fmt::format("state database {} has no schema version", path));
}

TEST(StateDbOpen, MissingFileWithoutCreateIsAnErrorAndCreatesNothing) {
  ScratchDir dir;
  const std::string path = dir / "sub/state.db";
  for (OpenOptions options : {OpenOptions{.create = false}, OpenOptions{.read_only = true}}) {
    auto db = StateDb::open(path, options);
    ASSERT_FALSE(db);
    EXPECT_EQ(db.error().code, Errc::io);
    EXPECT_EQ(db.error().message, fmt::format("state database {} does not exist", path));
    EXPECT_FALSE(testing::exists(dir / "sub"));
  }
}

TEST(StateDbOpen, DirectoryIsNotADatabase) {
  ScratchDir dir;
  auto db = StateDb::open(dir.path());
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().message, fmt::format("state database {} is not a regular file", dir.path()));
}

TEST(StateDbOpen, ParentThatIsAFileIsReported) {
  ScratchDir dir;
  testing::write_file(dir / "file", "x");
  auto db = StateDb::open(dir / "file/state.db");
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().message,
            fmt::format("cannot create state database {}: {} is not a directory",
                        dir / "file/state.db", dir / "file"));
}

TEST(StateDbOpen, ReadOnlyReadsButNeitherWritesNorMigrates) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  {
    auto db = StateDb::open(path);
    ASSERT_TRUE(db);
    ASSERT_TRUE((*db)->add_mailbox("INBOX", true));
  }
  {
    auto db = StateDb::open(path, {.read_only = true});
    ASSERT_TRUE(db) << db.error().to_string();
    EXPECT_TRUE((*db)->read_only());
    auto inbox = (*db)->find_mailbox("INBOX");
    ASSERT_TRUE(inbox);
    EXPECT_TRUE(inbox->has_value());
    auto added = (*db)->add_mailbox("Sent", false);
    ASSERT_FALSE(added);
    EXPECT_EQ(added.error().code, Errc::io);
  }
  const std::string empty = dir / "empty.db";
  testing::write_file(empty, "");
  auto db = StateDb::open(empty, {.read_only = true});
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().message,
            fmt::format("state database {} needs a schema upgrade from version 0 to 1, which a "
                        "read-only open cannot do",
                        empty));
  EXPECT_EQ(testing::read_file(empty), "");
}

TEST(StateDbOpen, EmptyExistingFileBecomesADatabase) {
  ScratchDir dir;
  const std::string path = dir / "state.db";
  testing::write_file(path, "");
  auto db = StateDb::open(path, {.create = false});
  ASSERT_TRUE(db) << db.error().to_string();
  auto version = (*db)->schema_version();
  ASSERT_TRUE(version);
  EXPECT_EQ(*version, 1);
}

// --- Migrations ---

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_file(path_, "");
    auto c = sql::Connection::open(path_, false, "test db");
    ASSERT_TRUE(c);
    db_ = std::move(c).value();
  }
  int version() {
    auto v = read_schema_version(*db_);
    return v ? *v : -1;
  }

  ScratchDir dir_;
  std::string path_ = dir_ / "m.db";
  std::unique_ptr<sql::Connection> db_;
};

TEST_F(MigrationTest, EmptyDatabaseIsVersionZeroAndMigratesToCurrent) {
  EXPECT_EQ(version(), 0);
  ASSERT_TRUE(migrate(*db_, 0, migrations()));
  EXPECT_EQ(version(), current_schema_version());
  // Running again from the current version does nothing.
  ASSERT_TRUE(migrate(*db_, current_schema_version(), migrations()));
  EXPECT_EQ(version(), current_schema_version());
}

TEST_F(MigrationTest, EachMigrationCommitsWithItsVersionAndAFailureRollsBackOnlyItself) {
  const std::array<Migration, 3> list{
      Migration{1, migrations()[0].sql},
      Migration{2, "ALTER TABLE mailboxes ADD COLUMN note TEXT;"},
      Migration{3, "CREATE TABLE extra (x); INSERT INTO nowhere VALUES (1);"},
  };
  auto s = migrate(*db_, 0, list);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::internal);
  EXPECT_EQ(s.error().message,
            "test db: no such table: nowhere (SQLITE_ERROR) (while upgrading the schema to "
            "version 3)");
  EXPECT_EQ(version(), 2);
  EXPECT_FALSE(db_->in_transaction());
  RawDb raw(path_);
  EXPECT_EQ(raw.value("SELECT count(*) FROM sqlite_schema WHERE name = 'extra'"), "0");
  EXPECT_EQ(raw.value("SELECT count(*) FROM pragma_table_info('mailboxes') WHERE name = 'note'"),
            "1");
}

TEST_F(MigrationTest, BrokenReferencesAbortTheMigration) {
  const std::array<Migration, 2> list{
      Migration{1, migrations()[0].sql},
      Migration{2, "INSERT INTO mapping VALUES (42, 1, 1, '');"},
  };
  ASSERT_TRUE(db_->exec("PRAGMA foreign_keys = OFF"));  // as a careless migration would find it
  auto s = migrate(*db_, 0, list);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message,
            "test db: broken referential integrity in table mapping (while upgrading the schema "
            "to version 2)");
  EXPECT_EQ(version(), 1);
}

}  // namespace
}  // namespace twinbox::store
