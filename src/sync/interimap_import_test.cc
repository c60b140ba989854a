// Reading InterIMAP's state database, and the base flags an import gives each pair.
#include "sync/interimap_import.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace twinbox::sync {
namespace {

using store::Side;

// InterIMAP 0.5's schema, as `sqlite3 .schema` shows it (reference/interimap.md §7).
constexpr const char* kSchema = R"sql(
PRAGMA user_version = 1;
CREATE TABLE mailboxes (idx INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
                        mailbox BLOB COLLATE BINARY NOT NULL CHECK (mailbox != '') UNIQUE,
                        subscribed BOOLEAN NOT NULL);
CREATE TABLE local (idx INTEGER NOT NULL PRIMARY KEY REFERENCES mailboxes(idx),
                    UIDVALIDITY UNSIGNED INT NOT NULL CHECK (UIDVALIDITY > 0),
                    UIDNEXT UNSIGNED INT NOT NULL,
                    HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL);
CREATE TABLE remote (idx INTEGER NOT NULL PRIMARY KEY REFERENCES mailboxes(idx),
                     UIDVALIDITY UNSIGNED INT NOT NULL CHECK (UIDVALIDITY > 0),
                     UIDNEXT UNSIGNED INT NOT NULL,
                     HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL);
CREATE TABLE mapping (idx INTEGER NOT NULL REFERENCES mailboxes(idx),
                      lUID UNSIGNED INT NOT NULL CHECK (lUID > 0),
                      rUID UNSIGNED INT NOT NULL CHECK (rUID > 0),
                      PRIMARY KEY (idx,lUID), UNIQUE (idx,rUID));
)sql";

class InterimapDb : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("twinbox-interimap-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = dir_ + "/interimap.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void create(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
    EXPECT_EQ(rc, SQLITE_OK) << (message ? message : "");
    sqlite3_free(message);
    sqlite3_close(db);
  }
  std::string error_of() {
    auto read = read_interimap_db(path_);
    EXPECT_FALSE(read);
    return read ? std::string() : read.error().message;
  }

  std::string dir_, path_;
};

TEST_F(InterimapDb, ReadsMailboxesStatesAndPairs) {
  create(std::string(kSchema) + R"sql(
INSERT INTO mailboxes VALUES (1, CAST('INBOX' AS BLOB), 1);
INSERT INTO mailboxes VALUES (2, CAST('Entw&APw-rfe' AS BLOB) || x'00' || CAST('Alt' AS BLOB), 0);
INSERT INTO mailboxes VALUES (3, CAST('New' AS BLOB), 1);
INSERT INTO local VALUES (1, 1700000000, 42, 97);
INSERT INTO remote VALUES (1, 1234, 40, -2);
INSERT INTO local VALUES (2, 5, 3, 10);
INSERT INTO remote VALUES (2, 6, 0, 0);
INSERT INTO mapping VALUES (1, 1, 3), (1, 41, 39), (2, 2, 1);
)sql");
  auto read = read_interimap_db(path_);
  ASSERT_TRUE(read) << read.error().message;
  ASSERT_EQ(read->size(), 3u);
  const InterimapMailbox& inbox = (*read)[0];
  EXPECT_EQ(inbox.name, "INBOX");
  EXPECT_TRUE(inbox.subscribed);
  EXPECT_TRUE(inbox.complete());
  EXPECT_EQ(inbox.sides[Side::local]->uidvalidity, 1700000000u);
  EXPECT_EQ(inbox.sides[Side::local]->uidnext, 42u);
  EXPECT_EQ(inbox.sides[Side::local]->highestmodseq, 97u);
  // Stored with %lld: 2^64 - 2 reads back as -2.
  EXPECT_EQ(inbox.sides[Side::remote]->highestmodseq, 18446744073709551614u);
  ASSERT_EQ(inbox.pairs.size(), 2u);
  EXPECT_EQ(inbox.pairs[1][Side::local], 41u);
  EXPECT_EQ(inbox.pairs[1][Side::remote], 39u);
  const InterimapMailbox& drafts = (*read)[1];
  EXPECT_EQ(drafts.name, std::string("Entwürfe\0Alt", 13));
  EXPECT_FALSE(drafts.complete()) << "remote UIDNEXT 0: InterIMAP never finished it";
  EXPECT_FALSE((*read)[2].complete()) << "no side rows at all";
}

TEST_F(InterimapDb, ForeignAndBrokenFilesAreNamedAndRefused) {
  EXPECT_NE(error_of().find("no InterIMAP state database there"), std::string::npos);

  std::ofstream(path_) << "this is not SQLite at all, just text that is long enough";
  EXPECT_NE(error_of().find(path_), std::string::npos);

  std::filesystem::remove(path_);
  create("PRAGMA user_version = 1; CREATE TABLE mailboxes (id INTEGER PRIMARY KEY, name BLOB);");
  EXPECT_NE(error_of().find("not an InterIMAP state database"), std::string::npos);

  std::filesystem::remove(path_);
  create("CREATE TABLE mailboxes (idx INTEGER, mailbox TEXT, subscribed BOOLEAN);");
  EXPECT_NE(error_of().find("pre-0.5 schema"), std::string::npos);

  std::filesystem::remove(path_);
  create("PRAGMA user_version = 3;");
  EXPECT_NE(error_of().find("PRAGMA user_version is 3"), std::string::npos);
}

TEST_F(InterimapDb, BadRowsAreNamed) {
  create(std::string(kSchema) + R"sql(
INSERT INTO mailboxes VALUES (7, CAST('Bad&-name&AAA' AS BLOB), 0);
)sql");
  EXPECT_NE(error_of().find("mailboxes row idx=7: the name is not modified UTF-7"),
            std::string::npos);

  std::filesystem::remove(path_);
  create(std::string(kSchema) + R"sql(
INSERT INTO mailboxes VALUES (1, CAST('INBOX' AS BLOB), 0);
INSERT INTO local VALUES (1, 5, 4294967296, 1);
)sql");
  EXPECT_NE(error_of().find("local row idx=1: UIDNEXT 4294967296 is not a 32-bit number"),
            std::string::npos);
}

TEST(ImportBaseFlags, AnUnchangedCopyShowsTheBase) {
  const FlagSet seen = {"\\Seen"}, flagged = {"\\Flagged", "\\Seen"}, none;
  // Local unchanged since InterIMAP's last sync (MODSEQ <= recorded): its flags are the base,
  // so a remote change is a change.
  EXPECT_EQ(import_base_flags(CopyNow{seen, 5}, 10, CopyNow{flagged, 20}, 10), seen);
  // Local changed, remote did not: the remote shows the base.
  EXPECT_EQ(import_base_flags(CopyNow{none, 12}, 10, CopyNow{seen, 3}, 10), seen);
  // Both changed: what they share (an addition on either side survives).
  EXPECT_EQ(import_base_flags(CopyNow{flagged, 12}, 10, CopyNow{seen, 11}, 10), seen);
  // One copy gone (its expunge will be propagated): the other's flags.
  EXPECT_EQ(import_base_flags(std::nullopt, 10, CopyNow{seen, 11}, 10), seen);
  EXPECT_EQ(import_base_flags(std::nullopt, 10, std::nullopt, 10), none);
}

}  // namespace
}  // namespace twinbox::sync
