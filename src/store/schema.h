// The state database schema and its migrations.
//
// The schema version lives in the `meta` table (key 'schema_version'); `PRAGMA application_id` is
// set to 'TWNB' so that file(1) and twinbox itself can tell a twinbox state database from any
// other SQLite file. A migration is one SQL script; each runs in its own transaction together with
// the update of schema_version and a foreign key check, so a database is always at exactly one
// version, and a failed upgrade leaves it at the previous one.
//
// Version 1 (all UIDs are 32-bit unsigned IMAP UIDs, `side` is store::Side: 0 local, 1 remote):
//
//   meta(key TEXT PRIMARY KEY, value)                        -- schema_version = 1
//   mailboxes(id INTEGER PRIMARY KEY,                        -- stable across renames
//             name BLOB UNIQUE NOT NULL,                     -- internal name, see below
//             subscribed INTEGER NOT NULL)                   -- last agreed subscription, 0/1
//   mailbox_sides(mailbox_id, side,                          -- one row per mailbox and side
//             uidvalidity, uidnext, highestmodseq,           -- NULL = never synced
//             PRIMARY KEY(mailbox_id, side))
//   mapping(mailbox_id, local_uid NOT NULL, remote_uid NOT NULL,
//           flags TEXT NOT NULL,                             -- last synced flags of the pair
//           PRIMARY KEY(mailbox_id, local_uid), UNIQUE(mailbox_id, remote_uid))
//   orphans(mailbox_id, side, uid, flags,                    -- pairs whose partner UID was voided
//           PRIMARY KEY(mailbox_id, side, uid))              --   by a UIDVALIDITY change
//   intents(id INTEGER PRIMARY KEY AUTOINCREMENT, mailbox_id NULL or a mailbox, kind TEXT,
//           target_side, source_uid, target_uidnext_before, message_id, size, body_hash,
//           flags, payload, created_at)
//
// Mailbox names are BLOBs: the UTF-8 name with the hierarchy delimiter replaced by NUL, as
// InterIMAP stores them, so the two servers may use different delimiters and a rename can find a
// mailbox's inferiors by the prefix name + '\0'. BLOBs compare with memcmp, so listing by name
// puts every parent before its children. HIGHESTMODSEQ is stored as the signed 64-bit integer
// with the same bits, so the whole unsigned range survives (InterIMAP 0.5's `largeint` fix).
// Mapping and orphan rows disappear with their mailbox (ON DELETE CASCADE); a mailbox with
// pending intents cannot be deleted.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "base/error.h"
#include "store/sqlite.h"

namespace twinbox::store {

// The SQL that takes a database from version `version - 1` to `version`.
struct Migration {
  int version;
  std::string_view sql;
};

inline constexpr std::int32_t kApplicationId = 0x54574E42;  // "TWNB"

// Every migration in order; the last one's version is the version this code writes.
std::span<const Migration> migrations();
int current_schema_version();

// The schema version of an open database: 0 when it has no tables yet. Errors (Errc::io) name the
// file: not an SQLite database, another application's database (InterIMAP's is recognised), or a
// twinbox database without a readable version.
Result<int> read_schema_version(sql::Connection& db);

// Applies every migration in `list` whose version is above `from`, in order, each in its own
// transaction. `list` must be ordered with consecutive versions starting at 1.
Status migrate(sql::Connection& db, int from, std::span<const Migration> list);

}  // namespace twinbox::store
