#include "store/schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <set>
#include <string>

namespace twinbox::store {
namespace {

// Version 1. CHECK constraints catch bugs in twinbox (a UID 0, a name bound as TEXT, a side 2)
// at the statement that makes them, not runs later.
constexpr std::string_view kVersion1 = R"sql(
CREATE TABLE meta (
  key TEXT PRIMARY KEY NOT NULL,
  value NOT NULL
) WITHOUT ROWID;

CREATE TABLE mailboxes (
  id INTEGER PRIMARY KEY,
  name BLOB NOT NULL UNIQUE CHECK (typeof(name) = 'blob' AND length(name) > 0),
  subscribed INTEGER NOT NULL DEFAULT 0 CHECK (subscribed IN (0, 1))
);

CREATE TABLE mailbox_sides (
  mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
  side INTEGER NOT NULL CHECK (side IN (0, 1)),
  uidvalidity INTEGER CHECK (uidvalidity BETWEEN 0 AND 4294967295),
  uidnext INTEGER CHECK (uidnext BETWEEN 0 AND 4294967295),
  highestmodseq INTEGER CHECK (typeof(highestmodseq) IN ('integer', 'null')),
  PRIMARY KEY (mailbox_id, side)
) WITHOUT ROWID;

CREATE TABLE mapping (
  mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
  local_uid INTEGER NOT NULL CHECK (local_uid BETWEEN 1 AND 4294967295),
  remote_uid INTEGER NOT NULL CHECK (remote_uid BETWEEN 1 AND 4294967295),
  flags TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (mailbox_id, local_uid),
  UNIQUE (mailbox_id, remote_uid)
) WITHOUT ROWID;

CREATE TABLE orphans (
  mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
  side INTEGER NOT NULL CHECK (side IN (0, 1)),
  uid INTEGER NOT NULL CHECK (uid BETWEEN 1 AND 4294967295),
  flags TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (mailbox_id, side, uid)
) WITHOUT ROWID;

CREATE TABLE intents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  mailbox_id INTEGER REFERENCES mailboxes (id),
  kind TEXT NOT NULL CHECK (kind <> ''),
  target_side INTEGER NOT NULL CHECK (target_side IN (0, 1)),
  source_uid INTEGER CHECK (source_uid BETWEEN 1 AND 4294967295),
  target_uidnext_before INTEGER CHECK (target_uidnext_before BETWEEN 0 AND 4294967295),
  message_id TEXT,
  size INTEGER CHECK (size >= 0),
  body_hash TEXT,
  flags TEXT,
  payload TEXT,
  created_at INTEGER NOT NULL
);
CREATE INDEX intents_by_mailbox ON intents (mailbox_id, id);

PRAGMA application_id = 1415007810;
)sql";

constexpr std::array kMigrations{
    Migration{1, kVersion1},
};

Error with_context(Error e, std::string_view context) {
  e.message = fmt::format("{} ({})", e.message, context);
  return e;
}

}  // namespace

std::span<const Migration> migrations() { return kMigrations; }

int current_schema_version() { return kMigrations.back().version; }

Result<int> read_schema_version(sql::Connection& db) {
  // Read with the C API directly: the first read of a file that is not SQLite fails in prepare
  // with SQLITE_NOTADB, which gets its own message.
  std::set<std::string> tables;
  {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v2(
        db.handle(), "SELECT name FROM sqlite_schema WHERE type = 'table'", -1, &raw, nullptr);
    sql::Statement stmt(raw);
    if (rc == SQLITE_NOTADB) {
      return Error(Errc::io, fmt::format("{} is not an SQLite database", db.label()));
    }
    if (rc != SQLITE_OK) return db.error(rc, "cannot read the schema");
    int step;
    while ((step = sqlite3_step(raw)) == SQLITE_ROW) {
      const auto* name = reinterpret_cast<const char*>(sqlite3_column_text(raw, 0));
      if (name != nullptr) tables.insert(name);
    }
    if (step == SQLITE_NOTADB) {
      return Error(Errc::io, fmt::format("{} is not an SQLite database", db.label()));
    }
    if (step != SQLITE_DONE) return db.error(step, "cannot read the schema");
  }
  if (tables.empty()) return 0;

  auto app = db.query("PRAGMA application_id");
  if (!app) return std::move(app).error();
  auto row = app->step();
  if (!row) return std::move(row).error();
  const std::int64_t application_id = *row ? app->int64(0) : 0;

  if (!tables.contains("meta") || application_id != kApplicationId) {
    const bool interimap = tables.contains("mailboxes") && tables.contains("local") &&
                           tables.contains("remote") && tables.contains("mapping");
    return Error(Errc::io, fmt::format("{} is not a twinbox state database{}", db.label(),
                                       interimap ? " (it looks like an InterIMAP database)" : ""));
  }

  auto version = db.query("SELECT value FROM meta WHERE key = 'schema_version'");
  if (!version) return std::move(version).error();
  row = version->step();
  if (!row) return std::move(row).error();
  if (!*row) {
    return Error(Errc::io, fmt::format("{} has no schema version", db.label()));
  }
  const std::int64_t value = version->int64(0);
  if (version->is_null(0) || value < 1 || value > 1'000'000) {
    return Error(Errc::io, fmt::format("{} has an invalid schema version '{}'", db.label(),
                                       version->text(0)));
  }
  return static_cast<int>(value);
}

Status migrate(sql::Connection& db, int from, std::span<const Migration> list) {
  for (const Migration& migration : list) {
    if (migration.version <= from) continue;
    const std::string context =
        fmt::format("while upgrading the schema to version {}", migration.version);
    if (auto s = db.exec("BEGIN IMMEDIATE"); !s) return with_context(std::move(s).error(), context);
    auto apply = [&]() -> Status {
      if (auto s = db.exec(migration.sql); !s) return s;
      auto set = db.query(
          "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)"
          " ON CONFLICT (key) DO UPDATE SET value = excluded.value");
      if (!set) return std::move(set).error();
      if (auto s = set->bind_int(1, migration.version).run(); !s) return s;
      auto check = db.query("PRAGMA foreign_key_check");
      if (!check) return std::move(check).error();
      auto violation = check->step();
      if (!violation) return std::move(violation).error();
      if (*violation) {
        return Error(Errc::internal, fmt::format("{}: broken referential integrity in table {}",
                                                 db.label(), check->text(0)));
      }
      return db.exec("COMMIT");
    };
    if (auto s = apply(); !s) {
      if (db.in_transaction()) (void)db.exec("ROLLBACK");
      return with_context(std::move(s).error(), context);
    }
  }
  return ok_status();
}

}  // namespace twinbox::store
