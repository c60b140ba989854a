#include "store/sqlite.h"

#include <gtest/gtest.h>

#include "store/test_support.h"

namespace twinbox::store::sql {
namespace {

using testing::ScratchDir;

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_file(path_, "");
    auto c = Connection::open(path_, false, "test db");
    ASSERT_TRUE(c) << c.error().to_string();
    db_ = std::move(c).value();
    ASSERT_TRUE(db_->exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v)"));
  }

  ScratchDir dir_;
  std::string path_ = dir_ / "t.db";
  std::unique_ptr<Connection> db_;
};

TEST_F(SqliteTest, OpenNeverCreatesAFile) {
  auto c = Connection::open(dir_ / "missing.db", false, "missing db");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::io);
  EXPECT_EQ(c.error().message,
            "missing db: cannot open: unable to open database file (SQLITE_CANTOPEN)");
  EXPECT_FALSE(testing::exists(dir_ / "missing.db"));
}

TEST_F(SqliteTest, BlobsKeepNulBytesAndEmptyBlobIsNotNull) {
  const std::string with_nul("a\0b\0", 4);
  {
    auto q = db_->query("INSERT INTO t (k, v) VALUES (?1, ?2)");
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->bind_int(1, 1).bind_blob(2, with_nul).run());
  }
  {
    auto q = db_->query("INSERT INTO t (k, v) VALUES (?1, ?2)");
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->bind_int(1, 2).bind_blob(2, "").run());
  }
  auto q = db_->query("SELECT v, typeof(v) FROM t ORDER BY k");
  ASSERT_TRUE(q);
  ASSERT_TRUE(*q->step());
  EXPECT_EQ(q->blob(0), with_nul);
  ASSERT_TRUE(*q->step());
  EXPECT_FALSE(q->is_null(0));
  EXPECT_EQ(q->text(1), "blob");
  EXPECT_EQ(q->blob(0), "");
  EXPECT_FALSE(*q->step());
}

TEST_F(SqliteTest, OptionalsBindNullAndReadBack) {
  {
    auto q = db_->query("INSERT INTO t (k, v) VALUES (?1, ?2)");
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->bind_int(1, 1).bind_optional_int(2, std::optional<int>()).run());
  }
  auto q = db_->query("SELECT v FROM t");
  ASSERT_TRUE(q);
  ASSERT_TRUE(*q->step());
  EXPECT_EQ(q->optional_int<int>(0), std::nullopt);
  EXPECT_EQ(q->optional_text(0), std::nullopt);
}

TEST_F(SqliteTest, StatementsAreCachedAndResetWhenTheQueryEnds) {
  for (int i = 0; i < 3; ++i) {
    auto q = db_->query("INSERT INTO t (v) VALUES (?1)");
    ASSERT_TRUE(q);
    ASSERT_TRUE(q->bind_int(1, i).run());
  }
  auto q = db_->query("SELECT count(*) FROM t");
  ASSERT_TRUE(q);
  ASSERT_TRUE(*q->step());
  EXPECT_EQ(q->int64(0), 3);
}

TEST_F(SqliteTest, ReentrantUseOfAStatementIsAnError) {
  auto outer = db_->query("SELECT k FROM t");
  ASSERT_TRUE(outer);
  auto inner = db_->query("SELECT k FROM t");
  ASSERT_FALSE(inner);
  EXPECT_EQ(inner.error().code, Errc::internal);
  EXPECT_EQ(inner.error().message,
            "test db: statement already in use (a re-entrant call from a row visitor?)");
}

TEST_F(SqliteTest, ConstraintViolationIsInternalWithSqliteMessageAndStatement) {
  ASSERT_TRUE(db_->exec("INSERT INTO t (k, v) VALUES (1, 'x')"));
  auto q = db_->query("INSERT INTO t (k, v) VALUES (?1, 'y')");
  ASSERT_TRUE(q);
  auto s = q->bind_int(1, 1).run();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::internal);
  EXPECT_EQ(s.error().message,
            "test db: statement failed: UNIQUE constraint failed: t.k "
            "(SQLITE_CONSTRAINT, extended code 1555)");
  EXPECT_EQ(s.error().evidence, "INSERT INTO t (k, v) VALUES (?1, 'y')");
}

TEST_F(SqliteTest, BindOutOfRangeIsReportedByStep) {
  auto q = db_->query("SELECT ?1");
  ASSERT_TRUE(q);
  auto row = q->bind_int(2, 5).step();
  ASSERT_FALSE(row);
  EXPECT_EQ(row.error().code, Errc::internal);
  EXPECT_EQ(row.error().message,
            "test db: cannot bind a parameter: column index out of range (SQLITE_RANGE)");
}

TEST_F(SqliteTest, BadSqlIsNotCached) {
  auto q = db_->query("SELEKT 1");
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().message,
            "test db: cannot prepare a statement: near \"SELEKT\": syntax error (SQLITE_ERROR)");
  auto again = db_->query("SELEKT 1");
  ASSERT_FALSE(again);  // prepared afresh, not a cached null statement
  EXPECT_EQ(again.error().message, q.error().message);
}

TEST_F(SqliteTest, ExecReportsTheFailingScript) {
  auto s = db_->exec("CREATE TABLE t (x)");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "test db: table t already exists (SQLITE_ERROR)");
  EXPECT_EQ(s.error().evidence, "CREATE TABLE t (x)");
}

TEST(SqliteErrc, DiskProblemsAreIoAndTheRestInternal) {
  EXPECT_EQ(errc_for(SQLITE_IOERR_FSYNC), Errc::io);
  EXPECT_EQ(errc_for(SQLITE_FULL), Errc::io);
  EXPECT_EQ(errc_for(SQLITE_NOTADB), Errc::io);
  EXPECT_EQ(errc_for(SQLITE_READONLY), Errc::io);
  EXPECT_EQ(errc_for(SQLITE_CONSTRAINT_UNIQUE), Errc::internal);
  EXPECT_EQ(errc_for(SQLITE_MISUSE), Errc::internal);
}

}  // namespace
}  // namespace twinbox::store::sql
