// StateDb::open_scratch: the in-memory database of --dry-run and the simulator.
#include <filesystem>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "store/state_db.h"
#include "store/test_support.h"

namespace twinbox::store {
namespace {

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

TEST(StateDbScratch, EmptyWhenThereIsNoFileAndCreatesNone) {
  testing::ScratchDir dir;
  auto db = StateDb::open_scratch(dir / "state.db");
  ASSERT_TRUE(db) << db.error().to_string();
  auto mailboxes = (*db)->list_mailboxes();
  ASSERT_TRUE(mailboxes);
  EXPECT_TRUE(mailboxes->empty());
  ASSERT_TRUE((*db)->add_mailbox("INBOX", true));
  EXPECT_TRUE(listing(dir.path()).empty());
}

// A copy of the real file, read without a lock, a -wal or a -shm file left behind; writes go to
// the copy only.
TEST(StateDbScratch, CopiesTheFileAndLeavesItAndItsDirectoryUntouched) {
  testing::ScratchDir dir;
  const std::string path = dir / "state.db";
  {
    auto real = StateDb::open(path);
    ASSERT_TRUE(real) << real.error().to_string();
    ASSERT_TRUE((*real)->add_mailbox("Archive", false));
  }
  const auto files_before = listing(dir.path());
  const std::string bytes_before = testing::read_file(path);
  auto db = StateDb::open_scratch(path);
  ASSERT_TRUE(db) << db.error().to_string();
  auto found = (*db)->find_mailbox("Archive");
  ASSERT_TRUE(found);
  ASSERT_TRUE(found->has_value());
  ASSERT_TRUE((*db)->add_mailbox("INBOX", true));
  db->reset();
  EXPECT_EQ(listing(dir.path()), files_before);
  EXPECT_EQ(testing::read_file(path), bytes_before);
}

TEST(StateDbScratch, ForeignFileIsRefusedAndKept) {
  testing::ScratchDir dir;
  const std::string path = dir / "state.db";
  testing::write_file(path, "not a database at all, but text");
  auto db = StateDb::open_scratch(path);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, Errc::io);
  EXPECT_EQ(testing::read_file(path), "not a database at all, but text");
}

// The simulator's kill: once the gate says no, nothing more is committed.
TEST(StateDbScratch, CommitGateRollsBackWhenClosed) {
  auto db = StateDb::open_scratch("");
  ASSERT_TRUE(db);
  bool open = true;
  (*db)->set_commit_gate([&] { return open; });
  ASSERT_TRUE((*db)->add_mailbox("Kept", false));
  open = false;
  EXPECT_FALSE((*db)->add_mailbox("Lost", false));
  open = true;
  auto lost = (*db)->find_mailbox("Lost");
  ASSERT_TRUE(lost);
  EXPECT_FALSE(lost->has_value());
}

}  // namespace
}  // namespace twinbox::store
