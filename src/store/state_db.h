// The state database: what twinbox remembers between runs about two replicas.
//
// Per mailbox pair and side: UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ; the UID mapping with the last
// synced flags of each pair (the base of the three-way flag merge); the intents recorded before
// each effect on a server. `store` knows nothing of IMAP syntax: UIDs and mod-sequences are plain
// integers, flags and intent fields are opaque strings, a mailbox name is the internal name (UTF-8
// with the hierarchy delimiter replaced by '\0'). The schema is described in store/schema.h.
//
// Durability. The file is SQLite in WAL mode with synchronous=FULL: once commit() (or a write
// outside a transaction) returns, the change survives a crash or a power loss. Group the writes
// that belong together in one Transaction: the effect's outcome and the completion of its intent
// (record_intent before sending APPEND; add_pair + complete_intent after APPENDUID), or a batch of
// pairs and the UIDNEXT they justify (persist UIDNEXT/HIGHESTMODSEQ only after everything below
// them is recorded, so that the stored state never runs ahead of what the servers did). Every
// method may be called inside or outside a transaction; the ones that write several rows
// (rename_mailbox, clear_side, rematch_orphan) are atomic on their own either way (a SAVEPOINT).
//
// Commits. Every completed commit of a write transaction (explicit, or a write outside one) is
// counted and logged at debug level as "state: committed N", from SQLite's WAL hook: it runs once
// the commit is durable and visible to other connections, never before. The hook replaces
// SQLite's auto-checkpoint, so it also checkpoints (PASSIVE) once the WAL holds 1000 pages, as
// the auto-checkpoint would. A commit that changed nothing is not counted.
//
// Test stop point. When the environment variable TWINBOX_TEST_EXIT_AFTER_COMMITS=N (N >= 1) is
// set at open(), the process calls _exit(kExitAfterCommitsStatus) right after its Nth counted
// commit: an exact crash point for tests that interrupt a sync after every durable step and
// resume it (as isync's test harness does). Never set it outside tests: it ends the process with
// its servers' connections dropped mid-command. A malformed value fails open() (Errc::usage).
//
// Exclusivity. open() takes an exclusive lock (store/lock_file.h) before touching the database, so
// two twinbox processes never share one; the lock lives as long as the StateDb, and a lock left
// by a crashed process does not block.
//
// UIDVALIDITY changes (RFC 7162 §6, RFC 9051 §2.3.1.1). When one side's UIDVALIDITY changes, that
// side's UIDs in the mapping are void, but the messages are not gone, so the change must never turn
// into deletions on the other side. clear_side() moves each pair of the mailbox into the `orphans`
// table as (surviving side, surviving UID, last synced flags) and forgets the voided side's sync
// state. The engine then re-matches the voided side's messages against the orphans (same size and
// same SHA-256 of the body) with rematch_orphan(), which turns an orphan back into a pair with its
// flags kept as the merge base, and copies what stays unmatched instead of deleting anything. We
// chose a separate table over nullable UID columns in `mapping` so that every mapping row is a
// complete pair: the engine's common paths (find, iterate, three-way merge) never meet a half-known
// pair, the mapping keeps its compact WITHOUT ROWID primary key, and "re-match pending for this
// mailbox" is simply count_orphans() > 0, durable across crashes.
//
// Errors are values: Errc::io for the file and disk (not SQLite, another application's database,
// a future schema, in use by another twinbox, I/O failures), Errc::internal for a caller's bug
// (a constraint violated: duplicate UID, unknown mailbox id, UID 0, nested transaction).
//
// Not thread-safe: one StateDb is used by one thread at a time. A Transaction must not outlive its
// StateDb. A visitor passed to for_each_pair may call other methods, but must not modify the
// mapping of the mailbox being visited (collect, then apply) nor call for_each_pair again.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"
#include "store/lock_file.h"
#include "store/side.h"

namespace twinbox::store {

namespace sql {
class Connection;
}

using MailboxId = std::int64_t;
using IntentId = std::int64_t;
using Uid = std::uint32_t;
using ModSeq = std::uint64_t;

inline constexpr Uid kMaxUid = 4294967295u;

// The test stop point (see the header comment): the variable, and the process's exit status.
inline constexpr const char* kExitAfterCommitsVariable = "TWINBOX_TEST_EXIT_AFTER_COMMITS";
inline constexpr int kExitAfterCommitsStatus = 86;

struct OpenOptions {
  bool create = true;      // create the file, and missing parent directories (mode 0700)
  bool read_only = false;  // no write, no migration; implies create = false
};

// One side's sync state of a mailbox. Each field is nullopt until first stored ("never synced").
struct SideState {
  std::optional<Uid> uidvalidity;
  std::optional<Uid> uidnext;
  std::optional<ModSeq> highestmodseq;
  friend bool operator==(const SideState&, const SideState&) = default;
};

struct Mailbox {
  MailboxId id = 0;  // stable across renames
  std::string name;  // internal name: UTF-8, hierarchy delimiter replaced by '\0'
  bool subscribed = false;
  PerSide<SideState> sides;
  friend bool operator==(const Mailbox&, const Mailbox&) = default;
};

// A message known on both sides: uids[Side::local] <-> uids[Side::remote].
struct Pair {
  PerSide<Uid> uids{};
  std::string flags;  // last synced flags, in the caller's canonical form (sorted, space-separated)
  friend bool operator==(const Pair&, const Pair&) = default;
};

// A pair whose partner's UID was voided by a UIDVALIDITY change on the other side.
struct Orphan {
  Side side = Side::local;  // the side whose UID is still valid
  Uid uid = 0;
  std::string flags;  // the pair's last synced flags
  friend bool operator==(const Orphan&, const Orphan&) = default;
};

// "About to do `kind` on `target_side`", recorded durably before the effect and deleted (completed)
// in the transaction that records its outcome. Field meanings belong to the sync engine; the
// store only keeps them. UIDs must be >= 1 when present. The engine writes two kinds:
//   * "append": an APPEND to `target_side` of message `source_uid` of the other side, with
//     target_uidnext_before, size, body_hash and flags set; after a crash the engine looks for
//     the message among target_side's UIDs >= target_uidnext_before, by size and body_hash;
//   * "store": a flag STORE on `target_side`, with source_uid = the UID stored to on target_side
//     and flags = the flags set; after a crash, flags found equal to these become the pair's base.
// Pending intents of any other kind are dropped with a warning.
struct Intent {
  IntentId id = 0;                   // assigned by record_intent
  std::optional<MailboxId> mailbox;  // nullopt: not about one mailbox
  std::string kind;                  // "append" or "store" (see above); not empty
  Side target_side = Side::local;    // the side the effect is sent to
  std::optional<Uid> source_uid;     // append: UID on the other side; store: UID on target_side
  std::optional<Uid> target_uidnext_before;  // append: target_side's UIDNEXT before the APPEND
  std::optional<std::string> message_id;     // in the schema, unused by the engine
  std::optional<std::uint64_t> size;         // append: the body's size in bytes
  std::optional<std::string> body_hash;      // append: SHA-256 of the body, lower-case hex; set
                                             // later (set_intent_hash) for a streamed body
  std::optional<std::string> flags;          // canonical flags: appended with (append), set (store)
  std::optional<std::string> payload;        // in the schema, unused by the engine
  std::int64_t created_at = 0;               // Unix seconds; 0 in record_intent means "now"
  friend bool operator==(const Intent&, const Intent&) = default;
};

// Returns an error to stop the iteration; that error is then for_each_pair's result.
using PairVisitor = std::function<Status(const Pair&)>;

class StateDb;

// BEGIN IMMEDIATE ... COMMIT; rolls back on destruction unless committed. Not nestable.
class Transaction {
 public:
  Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // Durable when it returns ok. On failure the transaction is rolled back.
  Status commit();
  Status rollback();
  bool active() const { return db_ != nullptr; }

 private:
  friend class StateDb;
  explicit Transaction(StateDb* db) : db_(db) {}
  StateDb* db_;
};

class StateDb {
 public:
  // Opens (or creates, mode 0600) the database at `path`, locks it against other twinbox
  // processes, and brings its schema up to date. A file that is not a twinbox database or has a
  // newer schema is left untouched and named in the error.
  static Result<std::unique_ptr<StateDb>> open(const std::string& path, OpenOptions options = {});
  // An in-memory database, gone when the StateDb is: empty, or a copy of the twinbox database at
  // `copy_of` as it was when opened (read only, no lock taken: nothing is written to that file or
  // beside it; a missing file gives an empty database). --dry-run works on such a copy, and the
  // simulator on an empty one. Schema checks and migrations as in open().
  static Result<std::unique_ptr<StateDb>> open_scratch(const std::string& copy_of);

  ~StateDb();
  StateDb(const StateDb&) = delete;
  StateDb& operator=(const StateDb&) = delete;

  const std::string& path() const { return path_; }
  bool read_only() const { return read_only_; }
  Result<int> schema_version();
  // For tests that check per-connection settings (synchronous, foreign_keys).
  sql::Connection& connection_for_testing();
  // Completed commits since open() (see the header comment).
  std::uint64_t commits() const { return commits_; }
  // Called with commits() after each completed commit, before the test stop point and the
  // checkpoint; it may read the database through another connection. Not for production use.
  void set_commit_observer_for_testing(std::function<void(std::uint64_t)> observer) {
    commit_observer_ = std::move(observer);
  }

  // Asked before each commit; when it answers false the commit is rolled back and fails. The
  // simulator's kill: a killed process commits nothing more. Not for production use.
  void set_commit_gate(std::function<bool()> allow);

  Result<Transaction> begin();

  // --- Notes kept between runs (the meta table) ---
  // Facts about the servers that save work on the next run (what a server announced after
  // login). Only a performance hint: nothing that decides what happens to mail. Keys are
  // namespaced ("server.local"); the schema's own keys cannot be read or written this way.
  Result<std::optional<std::string>> note(std::string_view key);
  Status set_note(std::string_view key, std::string_view value);

  // --- Mailboxes ---
  // Adds a mailbox with no sync state on either side. Errc::internal if the name exists.
  Result<MailboxId> add_mailbox(std::string_view name, bool subscribed);
  Result<std::optional<Mailbox>> find_mailbox(std::string_view name);
  Result<std::optional<Mailbox>> get_mailbox(MailboxId id);
  // Every mailbox, ordered by name (bytewise, so parents come before their children).
  Result<std::vector<Mailbox>> list_mailboxes();
  // Renames `from` and its inferiors (every name starting with `from` + '\0'), as IMAP RENAME
  // does. Returns how many mailboxes were renamed (0 when none matched). Errc::internal when a
  // new name is taken by a mailbox outside the renamed set.
  Result<std::uint64_t> rename_mailbox(std::string_view from, std::string_view to);
  // Deletes the mailbox with its sync state, mapping and orphans. Errc::internal if unknown or
  // if intents about it are pending (reconcile them first).
  Status delete_mailbox(MailboxId id);
  Status set_subscribed(MailboxId id, bool subscribed);

  Result<SideState> side_state(MailboxId id, Side side);
  Status set_side_state(MailboxId id, Side side, const SideState& state);
  Status set_uidvalidity(MailboxId id, Side side, std::optional<Uid> uidvalidity);
  Status set_uidnext(MailboxId id, Side side, std::optional<Uid> uidnext);
  Status set_highestmodseq(MailboxId id, Side side, std::optional<ModSeq> highestmodseq);

  // --- Mapping ---
  // Errc::internal if either UID is 0 or already mapped in this mailbox.
  Status add_pair(MailboxId id, const Pair& pair);
  Result<std::optional<Pair>> find_pair(MailboxId id, Side side, Uid uid);
  // False when no pair has that UID.
  Result<bool> remove_pair(MailboxId id, Side side, Uid uid);
  // Errc::internal when no pair has that UID.
  Status set_pair_flags(MailboxId id, Side side, Uid uid, std::string_view flags);
  // The pairs whose `order`-side UID is in [first, last], in ascending order of that UID.
  Status for_each_pair(MailboxId id, Side order, const PairVisitor& visit, Uid first = 1,
                       Uid last = kMaxUid);
  Result<std::vector<Pair>> pairs(MailboxId id, Side order, Uid first = 1, Uid last = kMaxUid);
  Result<std::uint64_t> count_pairs(MailboxId id);
  // Pairs read so far by the two above: what a sync of a few changes costs in a large mailbox.
  std::uint64_t pairs_read() const { return pairs_read_; }
  Result<std::uint64_t> remove_all_pairs(MailboxId id);

  // --- UIDVALIDITY change (see the header comment) ---
  // `voided`'s UIDs are void: every pair of the mailbox becomes an orphan on the other side (with
  // its flags), orphans known by a `voided` UID are dropped, and `voided`'s SideState is reset to
  // never synced. Returns the number of pairs orphaned.
  Result<std::uint64_t> clear_side(MailboxId id, Side voided);
  // Ordered by side, then UID.
  Result<std::vector<Orphan>> orphans(MailboxId id);
  Result<std::uint64_t> count_orphans(MailboxId id);
  // The orphan (side, uid) found its partner: it becomes the pair uid <-> partner_uid, keeping
  // the orphan's flags. Errc::internal if there is no such orphan or partner_uid is mapped.
  Status rematch_orphan(MailboxId id, Side side, Uid uid, Uid partner_uid);
  // False when there is no such orphan.
  Result<bool> remove_orphan(MailboxId id, Side side, Uid uid);

  // --- Intents ---
  Result<IntentId> record_intent(const Intent& intent);
  // Pending intents in the order they were recorded: all, or those about one mailbox.
  Result<std::vector<Intent>> pending_intents();
  Result<std::vector<Intent>> pending_intents(MailboxId id);
  // Deletes the intent. Errc::internal if it is not pending.
  Status complete_intent(IntentId id);
  // Records the body hash of a pending intent once it is known (a streamed APPEND learns it
  // only when the last piece has been read). Errc::internal if it is not pending.
  Status set_intent_hash(IntentId id, const std::string& body_hash);

 private:
  friend class Transaction;
  StateDb(std::string path, LockFile lock, std::unique_ptr<sql::Connection> db, bool read_only,
          std::uint64_t exit_after_commits);

  // SQLite's WAL hook: a commit of `wal_pages` pages in total is complete.
  void after_commit(const char* schema, int wal_pages);

  Status end_transaction(std::string_view sql);
  // Runs `body` inside a SAVEPOINT: all of it or none of it, inside a transaction or not.
  template <class T>
  Result<T> atomically(const std::function<Result<T>()>& body);
  Status set_side_field(MailboxId id, Side side, std::string_view column,
                        std::optional<std::int64_t> value);
  Result<std::vector<Intent>> read_intents(std::optional<MailboxId> id);

  std::string path_;
  LockFile lock_;  // declared before db_: released only after the connection is closed
  std::unique_ptr<sql::Connection> db_;
  bool read_only_;
  bool in_transaction_ = false;
  std::function<bool()> commit_gate_;
  std::uint64_t commits_ = 0;
  std::uint64_t pairs_read_ = 0;
  std::uint64_t exit_after_commits_;  // 0: never
  std::function<void(std::uint64_t)> commit_observer_;
};

}  // namespace twinbox::store
