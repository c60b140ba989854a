#include "store/state_db.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <unordered_set>

#include <fmt/format.h>

#include "base/log.h"
#include "store/schema.h"
#include "store/sqlite.h"

namespace twinbox::store {
namespace {

std::string label_for(const std::string& path) { return fmt::format("state database {}", path); }

Error os_error(std::string_view what, const std::string& path, int err) {
  return Error(Errc::io, fmt::format("cannot {} {}: {}", what, path, std::strerror(err)));
}

// mkdir -p with mode 0700 for every directory it creates (whatever the umask); existing
// directories are left as they are.
Status make_parent_directories(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return ok_status();
  const std::string parent = path.substr(0, slash);
  struct stat st {};
  if (stat(parent.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return ok_status();
    return Error(Errc::io, fmt::format("cannot create state database {}: {} is not a directory",
                                       path, parent));
  }
  if (auto s = make_parent_directories(parent); !s) return s;
  if (mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) {
    return os_error("create directory", parent, errno);
  }
  if (chmod(parent.c_str(), 0700) != 0) return os_error("set mode 0700 on", parent, errno);
  return ok_status();
}

// Creates an empty database file with mode 0600 whatever the umask. Called with the lock held,
// before SQLite opens the file: the descriptor is closed before SQLite takes any POSIX lock on it
// (closing it afterwards would silently drop those locks).
Status create_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return os_error("create", path, errno);
  const int rc = fchmod(fd, 0600);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return os_error("set mode 0600 on", path, err);
  return ok_status();
}

// TWINBOX_TEST_EXIT_AFTER_COMMITS: 0 when unset or empty.
Result<std::uint64_t> exit_after_commits_from_environment() {
  const char* value = std::getenv(kExitAfterCommitsVariable);
  if (value == nullptr || *value == '\0') return std::uint64_t{0};
  const std::string_view text(value);
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0) {
    return Error(Errc::usage, fmt::format("{}={}: expected a number of commits >= 1",
                                          kExitAfterCommitsVariable, printable(text)));
  }
  return n;
}

// What SQLite's auto-checkpoint does by default (SQLITE_DEFAULT_WAL_AUTOCHECKPOINT).
constexpr int kCheckpointPages = 1000;

// Side as stored in `side` and `target_side` columns (0 or 1, see side.h).
std::int64_t side_value(Side side) { return static_cast<std::int64_t>(side_index(side)); }
Side side_from(std::int64_t value) { return value == 0 ? Side::local : Side::remote; }

std::int64_t to_sql(ModSeq modseq) { return static_cast<std::int64_t>(modseq); }

std::string_view uid_column(Side side) { return side == Side::local ? "local_uid" : "remote_uid"; }

std::string describe(MailboxId id, Side side, Uid uid) {
  return fmt::format("{} UID {} in mailbox {}", side_name(side), uid, id);
}

Error no_mailbox(MailboxId id) {
  return Error(Errc::internal, fmt::format("no mailbox with id {} in the state database", id));
}

// The same SQL for both sides, with the side's UID column substituted for "{uid}" and the other
// side's for "{other}". Built once per side, so the statement cache sees a stable text.
struct SidedSql {
  PerSide<std::string> text;
  explicit SidedSql(std::string_view pattern) {
    for (Side side : kSides) {
      text[side] = fmt::format(fmt::runtime(pattern), fmt::arg("uid", uid_column(side)),
                               fmt::arg("other", uid_column(other(side))));
    }
  }
  const std::string& operator[](Side side) const { return text[side]; }
};

constexpr std::string_view kSelectMailbox =
    "SELECT m.id, m.name, m.subscribed,"
    " l.uidvalidity, l.uidnext, l.highestmodseq,"
    " r.uidvalidity, r.uidnext, r.highestmodseq"
    " FROM mailboxes m"
    " LEFT JOIN mailbox_sides l ON l.mailbox_id = m.id AND l.side = 0"
    " LEFT JOIN mailbox_sides r ON r.mailbox_id = m.id AND r.side = 1";

Mailbox mailbox_from_row(const sql::Query& q) {
  Mailbox m;
  m.id = q.int64(0);
  m.name = q.blob(1);
  m.subscribed = q.int64(2) != 0;
  for (Side side : kSides) {
    const int base = 3 + 3 * static_cast<int>(side_index(side));
    m.sides[side].uidvalidity = q.optional_int<Uid>(base);
    m.sides[side].uidnext = q.optional_int<Uid>(base + 1);
    m.sides[side].highestmodseq = q.optional_int<ModSeq>(base + 2);
  }
  return m;
}

// Copies database `from` into `to` with the backup API (a consistent snapshot, page by page).
int copy_database(sqlite3* from, sqlite3* to) {
  sqlite3_backup* backup = sqlite3_backup_init(to, "main", from, "main");
  if (backup == nullptr) return sqlite3_errcode(to);
  int rc = sqlite3_backup_step(backup, -1);
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  const int finished = sqlite3_backup_finish(backup);
  return rc != SQLITE_OK ? rc : finished;
}

// The schema version of a twinbox database this version can use (perhaps after migrating it).
Result<int> known_schema_version(sql::Connection& db, const std::string& label) {
  auto version = read_schema_version(db);
  if (!version) return std::move(version).error();
  if (*version > current_schema_version()) {
    return Error(Errc::io,
                 fmt::format("{} has schema version {}, but this twinbox knows versions up to {}: "
                             "use a newer twinbox",
                             label, *version, current_schema_version()));
  }
  return version;
}

Result<std::optional<Mailbox>> read_one_mailbox(sql::Query& q) {
  auto row = q.step();
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<Mailbox>();
  return std::optional<Mailbox>(mailbox_from_row(q));
}

}  // namespace

// --- Transaction ---

Transaction::~Transaction() {
  if (db_ == nullptr) return;
  if (auto s = rollback(); !s) log_error("{}", s.error().message);
}

Status Transaction::commit() {
  if (db_ == nullptr) return Error(Errc::internal, "commit of a finished transaction");
  StateDb* db = std::exchange(db_, nullptr);
  return db->end_transaction("COMMIT");
}

Status Transaction::rollback() {
  if (db_ == nullptr) return Error(Errc::internal, "rollback of a finished transaction");
  StateDb* db = std::exchange(db_, nullptr);
  return db->end_transaction("ROLLBACK");
}

// --- Opening ---

StateDb::StateDb(std::string path, LockFile lock, std::unique_ptr<sql::Connection> db,
                 bool read_only, std::uint64_t exit_after_commits)
    : path_(std::move(path)),
      lock_(std::move(lock)),
      db_(std::move(db)),
      read_only_(read_only),
      exit_after_commits_(exit_after_commits) {
  // The WAL hook, unlike the commit hook (which runs before the commit is final and may still
  // see it fail), runs once the commit is durable and its write lock released: the exact point
  // of a durable step. Registering it turns SQLite's auto-checkpoint off; after_commit does it.
  sqlite3_wal_hook(
      db_->handle(),
      [](void* self, sqlite3*, const char* schema, int wal_pages) -> int {
        static_cast<StateDb*>(self)->after_commit(schema, wal_pages);
        return SQLITE_OK;
      },
      this);
}

StateDb::~StateDb() {
  // The connection outlives the members declared after it (the observer).
  sqlite3_wal_hook(db_->handle(), nullptr, nullptr);
  sqlite3_commit_hook(db_->handle(), nullptr, nullptr);
}

void StateDb::after_commit(const char* schema, int wal_pages) {
  ++commits_;
  log_debug("state: committed {}", commits_);
  if (commit_observer_) commit_observer_(commits_);
  if (commits_ == exit_after_commits_) {
    log_warning("state: exiting with status {} after commit {} ({})", kExitAfterCommitsStatus,
                commits_, kExitAfterCommitsVariable);
    _exit(kExitAfterCommitsStatus);
  }
  if (wal_pages >= kCheckpointPages) {
    // PASSIVE, as the auto-checkpoint: copies what no reader still needs, never waits. BUSY
    // (another checkpoint is running) is retried after a later commit.
    const int rc = sqlite3_wal_checkpoint_v2(db_->handle(), schema, SQLITE_CHECKPOINT_PASSIVE,
                                             nullptr, nullptr);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      log_warning("{}: checkpoint failed: {}", db_->label(), sqlite3_errstr(rc));
    }
  }
}

Result<std::unique_ptr<StateDb>> StateDb::open(const std::string& path, OpenOptions options) {
  const std::string label = label_for(path);
  if (path.empty()) return Error(Errc::io, "the state database path is empty");
  auto exit_after_commits = exit_after_commits_from_environment();
  if (!exit_after_commits) return std::move(exit_after_commits).error();
  const bool create = options.create && !options.read_only;

  struct stat st {};
  bool exists = stat(path.c_str(), &st) == 0;
  // ENOTDIR: a parent is a file, which make_parent_directories reports in its own words.
  if (!exists && errno != ENOENT && errno != ENOTDIR) {
    return os_error("access state database", path, errno);
  }
  if (exists && !S_ISREG(st.st_mode)) {
    return Error(Errc::io, fmt::format("{} is not a regular file", label));
  }
  if (!exists && !create) return Error(Errc::io, fmt::format("{} does not exist", label));
  if (!exists) {
    if (auto s = make_parent_directories(path); !s) return std::move(s).error();
  }

  // Lock before anything touches the database file, so a losing second open changes nothing.
  auto lock = LockFile::acquire(path + ".lock", label);
  if (!lock) return std::move(lock).error();

  // Another process may have created it between our stat and our lock.
  exists = stat(path.c_str(), &st) == 0;
  if (!exists) {
    if (!create) return Error(Errc::io, fmt::format("{} does not exist", label));
    if (auto s = create_file(path); !s) return std::move(s).error();
  } else if ((st.st_mode & 077) != 0) {
    log_warning("{} is accessible by other users (mode {:04o}); run chmod 600 {}", label,
                st.st_mode & 07777, path);
  }

  auto connection = sql::Connection::open(path, options.read_only, label);
  if (!connection) return std::move(connection).error();
  sql::Connection& db = **connection;
  // Our own flock excludes other twinbox processes; waiting on SQLite's locks would only hide a
  // bug (or an sqlite3 shell holding a write transaction), so fail at once.
  sqlite3_busy_timeout(db.handle(), 0);

  // Inspect before changing anything: a foreign or future database must stay byte-identical.
  auto version = known_schema_version(db, label);
  if (!version) return std::move(version).error();
  const int current = current_schema_version();
  if (options.read_only && *version < current) {
    return Error(Errc::io, fmt::format("{} needs a schema upgrade from version {} to {}, which a "
                                       "read-only open cannot do",
                                       label, *version, current));
  }

  if (!options.read_only) {
    // journal_mode=WAL persists in the file; synchronous=FULL makes each commit durable (a
    // committed intent must survive a power loss); foreign_keys must be set outside a
    // transaction.
    auto mode = db.query("PRAGMA journal_mode = WAL");
    if (!mode) return std::move(mode).error();
    auto row = mode->step();
    if (!row) return std::move(row).error();
    if (!*row || mode->text(0) != "wal") {
      return Error(Errc::io, fmt::format("{}: cannot switch to WAL mode", label));
    }
  }
  if (auto s = db.exec("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"); !s) {
    return std::move(s).error();
  }

  if (*version < current) {
    if (*version == 0) {
      log_info("Creating new schema in {}", label);
    } else {
      log_info("Upgrading {} from schema version {} to {}", label, *version, current);
    }
    if (auto s = migrate(db, *version, migrations()); !s) return std::move(s).error();
  }

  // Every durable step from here on shows in --debug output (the constructor's WAL hook), so a
  // user can see what a run recorded; crash tests stop the process right after each one.
  return std::unique_ptr<StateDb>(new StateDb(path, std::move(lock).value(),
                                              std::move(connection).value(), options.read_only,
                                              *exit_after_commits));
}

Result<std::unique_ptr<StateDb>> StateDb::open_scratch(const std::string& copy_of) {
  const std::string label = copy_of.empty() ? std::string("scratch state database")
                                            : fmt::format("scratch copy of {}", label_for(copy_of));
  auto connection = sql::Connection::open(":memory:", false, label);
  if (!connection) return std::move(connection).error();
  sql::Connection& db = **connection;
  struct stat st {};
  if (!copy_of.empty() && stat(copy_of.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return Error(Errc::io, fmt::format("{} is not a regular file", label_for(copy_of)));
    }
    // Read without leaving a trace: a read-only connection to a WAL database would create the
    // -wal and -shm files. Without a -wal file the database file alone is the whole state and
    // is read as immutable (no locks, no side files); with one (a crash, or another process),
    // the files are there already and a plain read-only connection reads through them.
    const bool has_wal = stat((copy_of + "-wal").c_str(), &st) == 0;
    std::string uri = "file:";
    for (unsigned char c : copy_of) {
      if (std::isalnum(c) || c == '/' || c == '.' || c == '-' || c == '_') {
        uri += static_cast<char>(c);
      } else {
        uri += fmt::format("%{:02X}", c);
      }
    }
    if (!has_wal) uri += "?immutable=1";
    sqlite3* source = nullptr;
    int rc = sqlite3_open_v2(uri.c_str(), &source, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
    if (rc == SQLITE_OK) rc = copy_database(source, db.handle());
    const std::string message = source != nullptr ? sqlite3_errmsg(source) : sqlite3_errstr(rc);
    sqlite3_close(source);
    if (rc != SQLITE_OK) {
      return Error(Errc::io, fmt::format("{}: cannot copy it: {}", label_for(copy_of), message));
    }
  } else {
    // An empty database is a copy of one migrated once per process: cheaper than migrating each
    // time (the simulator opens thousands).
    static std::mutex mutex;
    static std::unique_ptr<sql::Connection> empty;
    std::lock_guard<std::mutex> lock(mutex);
    if (!empty) {
      auto made = sql::Connection::open(":memory:", false, "empty state database");
      if (!made) return std::move(made).error();
      if (auto s = migrate(**made, 0, migrations()); !s) return std::move(s).error();
      empty = std::move(*made);
    }
    if (const int rc = copy_database(empty->handle(), db.handle()); rc != SQLITE_OK) {
      return db.error(rc, "copy the empty database");
    }
  }
  auto version = known_schema_version(db, label);
  if (!version) return std::move(version).error();
  const int current = current_schema_version();
  if (auto s = db.exec("PRAGMA foreign_keys = ON;"); !s) return std::move(s).error();
  if (*version < current) {
    if (auto s = migrate(db, *version, migrations()); !s) return std::move(s).error();
  }
  return std::unique_ptr<StateDb>(
      new StateDb(label, LockFile::none(), std::move(connection).value(), false, 0));
}

void StateDb::set_commit_gate(std::function<bool()> allow) {
  commit_gate_ = std::move(allow);
  sqlite3_commit_hook(
      db_->handle(),
      [](void* self) -> int {
        const auto& gate = static_cast<StateDb*>(self)->commit_gate_;
        return gate && !gate() ? 1 : 0;  // non-zero turns the COMMIT into a ROLLBACK
      },
      this);
}

Result<int> StateDb::schema_version() { return read_schema_version(*db_); }

sql::Connection& StateDb::connection_for_testing() { return *db_; }

// --- Notes ---

namespace {
Status check_note_key(std::string_view key) {
  if (key.find('.') == std::string_view::npos) {
    return Error(Errc::internal, fmt::format("note key '{}' has no namespace", key));
  }
  return ok_status();
}
}  // namespace

Result<std::optional<std::string>> StateDb::note(std::string_view key) {
  if (Status s = check_note_key(key); !s) return std::move(s).error();
  auto q = db_->query("SELECT value FROM meta WHERE key = ?1");
  if (!q) return std::move(q).error();
  auto row = q->bind_text(1, key).step();
  if (!row) return std::move(row).error();
  if (!*row || q->is_null(0)) return std::optional<std::string>();
  return std::optional<std::string>(q->text(0));
}

Status StateDb::set_note(std::string_view key, std::string_view value) {
  if (Status s = check_note_key(key); !s) return s;
  auto q = db_->query(
      "INSERT INTO meta (key, value) VALUES (?1, ?2)"
      " ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  if (!q) return std::move(q).error();
  return q->bind_text(1, key).bind_text(2, value).run();
}

// --- Transactions ---

Result<Transaction> StateDb::begin() {
  if (in_transaction_ || db_->in_transaction()) {
    return Error(Errc::internal, fmt::format("{}: a transaction is already open", db_->label()));
  }
  auto q = db_->query("BEGIN IMMEDIATE");
  if (!q) return std::move(q).error();
  if (auto s = q->run(); !s) return std::move(s).error();
  in_transaction_ = true;
  return Transaction(this);
}

Status StateDb::end_transaction(std::string_view sql) {
  in_transaction_ = false;
  Status result = [&]() -> Status {
    auto q = db_->query(sql);
    if (!q) return std::move(q).error();
    return q->run();
  }();
  // A failed COMMIT (disk full, I/O error) may leave the transaction open: roll it back so the
  // connection is usable and nothing half-done is committed later.
  if (db_->in_transaction()) {
    if (auto s = db_->exec("ROLLBACK"); !s) log_error("{}", s.error().message);
  }
  return result;
}

template <class T>
Result<T> StateDb::atomically(const std::function<Result<T>()>& body) {
  {
    auto q = db_->query("SAVEPOINT store_op");
    if (!q) return std::move(q).error();
    if (auto s = q->run(); !s) return std::move(s).error();
  }
  Result<T> result = body();
  if (result) {
    auto q = db_->query("RELEASE store_op");
    if (!q) return std::move(q).error();
    if (auto s = q->run(); s)
      return result;
    else
      result = std::move(s).error();
  }
  // ROLLBACK TO keeps the savepoint open; RELEASE then ends it (and the implicit transaction
  // SAVEPOINT started, if there was no outer one).
  if (auto s = db_->exec("ROLLBACK TO store_op; RELEASE store_op"); !s) {
    log_error("{}", s.error().message);
  }
  return result;
}

// --- Mailboxes ---

Result<MailboxId> StateDb::add_mailbox(std::string_view name, bool subscribed) {
  auto existing = find_mailbox(name);
  if (!existing) return std::move(existing).error();
  if (*existing) {
    return Error(Errc::internal,
                 fmt::format("{}: mailbox {} already exists", db_->label(), printable(name)));
  }
  auto q = db_->query("INSERT INTO mailboxes (name, subscribed) VALUES (?1, ?2)");
  if (!q) return std::move(q).error();
  if (auto s = q->bind_blob(1, name).bind_int(2, subscribed ? 1 : 0).run(); !s) {
    return std::move(s).error();
  }
  return db_->last_insert_rowid();
}

Result<std::optional<Mailbox>> StateDb::find_mailbox(std::string_view name) {
  static const std::string sql = fmt::format("{} WHERE m.name = ?1", kSelectMailbox);
  auto q = db_->query(sql);
  if (!q) return std::move(q).error();
  return read_one_mailbox(q->bind_blob(1, name));
}

Result<std::optional<Mailbox>> StateDb::get_mailbox(MailboxId id) {
  static const std::string sql = fmt::format("{} WHERE m.id = ?1", kSelectMailbox);
  auto q = db_->query(sql);
  if (!q) return std::move(q).error();
  return read_one_mailbox(q->bind_int(1, id));
}

Result<std::vector<Mailbox>> StateDb::list_mailboxes() {
  static const std::string sql = fmt::format("{} ORDER BY m.name", kSelectMailbox);
  auto q = db_->query(sql);
  if (!q) return std::move(q).error();
  std::vector<Mailbox> out;
  for (;;) {
    auto row = q->step();
    if (!row) return std::move(row).error();
    if (!*row) break;
    out.push_back(mailbox_from_row(*q));
  }
  return out;
}

Result<std::uint64_t> StateDb::rename_mailbox(std::string_view from, std::string_view to) {
  if (from.empty() || to.empty()) {
    return Error(Errc::internal,
                 fmt::format("{}: cannot rename a mailbox from or to an empty name", db_->label()));
  }
  if (from == to) return std::uint64_t{0};
  return atomically<std::uint64_t>([&]() -> Result<std::uint64_t> {
    struct Row {
      MailboxId id;
      std::string name;
      std::string new_name;
    };
    std::vector<Row> rows;
    {
      // Inferiors are the names in [from + '\0', from + '\1'): BLOBs compare bytewise, so this
      // is a range scan of the name index.
      auto q = db_->query(
          "SELECT id, name FROM mailboxes WHERE name = ?1 OR (name >= ?2 AND name < ?3)");
      if (!q) return std::move(q).error();
      std::string low(from), high(from);
      low.push_back('\0');
      high.push_back('\1');
      q->bind_blob(1, from).bind_blob(2, low).bind_blob(3, high);
      for (;;) {
        auto row = q->step();
        if (!row) return std::move(row).error();
        if (!*row) break;
        Row r{q->int64(0), q->blob(1), {}};
        r.new_name = std::string(to) + r.name.substr(from.size());
        rows.push_back(std::move(r));
      }
    }
    std::unordered_set<MailboxId> renamed;
    for (const Row& r : rows) renamed.insert(r.id);
    for (const Row& r : rows) {
      auto taken = find_mailbox(r.new_name);
      if (!taken) return std::move(taken).error();
      if (*taken && !renamed.contains((*taken)->id)) {
        return Error(
            Errc::internal,
            fmt::format("{}: cannot rename mailbox {} to {}: {} already exists", db_->label(),
                        printable(r.name), printable(r.new_name), printable(r.new_name)));
      }
    }
    // A new name may be the old name of another renamed mailbox (renaming "a\0x" to "a" moves
    // "a\0x\0x" to "a\0x"): when names shrink, rename the shortest first, which frees the name
    // the longer ones need; when they grow, the longest first.
    std::sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
      return to.size() < from.size() ? a.name.size() < b.name.size()
                                     : a.name.size() > b.name.size();
    });
    for (const Row& r : rows) {
      auto q = db_->query("UPDATE mailboxes SET name = ?1 WHERE id = ?2");
      if (!q) return std::move(q).error();
      if (auto s = q->bind_blob(1, r.new_name).bind_int(2, r.id).run(); !s) {
        return std::move(s).error();
      }
    }
    return static_cast<std::uint64_t>(rows.size());
  });
}

Status StateDb::delete_mailbox(MailboxId id) {
  return atomically<Ok>([&]() -> Status {
    auto count = db_->query("SELECT count(*) FROM intents WHERE mailbox_id = ?1");
    if (!count) return std::move(count).error();
    auto row = count->bind_int(1, id).step();
    if (!row) return std::move(row).error();
    if (const std::int64_t n = count->int64(0); n > 0) {
      return Error(
          Errc::internal,
          fmt::format("{}: cannot delete mailbox {}: {} {} about it {} pending", db_->label(), id,
                      n, n == 1 ? "intent" : "intents", n == 1 ? "is" : "are"));
    }
    auto q = db_->query("DELETE FROM mailboxes WHERE id = ?1");
    if (!q) return std::move(q).error();
    if (auto s = q->bind_int(1, id).run(); !s) return s;
    if (db_->changes() == 0) return no_mailbox(id);
    return ok_status();
  });
}

Status StateDb::set_subscribed(MailboxId id, bool subscribed) {
  auto q = db_->query("UPDATE mailboxes SET subscribed = ?2 WHERE id = ?1");
  if (!q) return std::move(q).error();
  if (auto s = q->bind_int(1, id).bind_int(2, subscribed ? 1 : 0).run(); !s) return s;
  if (db_->changes() == 0) return no_mailbox(id);
  return ok_status();
}

Result<SideState> StateDb::side_state(MailboxId id, Side side) {
  auto q = db_->query(
      "SELECT s.uidvalidity, s.uidnext, s.highestmodseq FROM mailboxes m"
      " LEFT JOIN mailbox_sides s ON s.mailbox_id = m.id AND s.side = ?2 WHERE m.id = ?1");
  if (!q) return std::move(q).error();
  auto row = q->bind_int(1, id).bind_int(2, side_value(side)).step();
  if (!row) return std::move(row).error();
  if (!*row) return no_mailbox(id);
  return SideState{q->optional_int<Uid>(0), q->optional_int<Uid>(1), q->optional_int<ModSeq>(2)};
}

Status StateDb::set_side_state(MailboxId id, Side side, const SideState& state) {
  // A missing mailbox fails the foreign key; report it as such rather than as a constraint.
  auto exists = get_mailbox(id);
  if (!exists) return std::move(exists).error();
  if (!*exists) return no_mailbox(id);
  auto q = db_->query(
      "INSERT INTO mailbox_sides (mailbox_id, side, uidvalidity, uidnext, highestmodseq)"
      " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (mailbox_id, side) DO UPDATE SET"
      " uidvalidity = excluded.uidvalidity, uidnext = excluded.uidnext,"
      " highestmodseq = excluded.highestmodseq");
  if (!q) return std::move(q).error();
  std::optional<std::int64_t> modseq;
  if (state.highestmodseq) modseq = to_sql(*state.highestmodseq);
  return q->bind_int(1, id)
      .bind_int(2, side_value(side))
      .bind_optional_int(3, state.uidvalidity)
      .bind_optional_int(4, state.uidnext)
      .bind_optional_int(5, modseq)
      .run();
}

Status StateDb::set_side_field(MailboxId id, Side side, std::string_view column,
                               std::optional<std::int64_t> value) {
  auto exists = get_mailbox(id);
  if (!exists) return std::move(exists).error();
  if (!*exists) return no_mailbox(id);
  auto q =
      db_->query(fmt::format("INSERT INTO mailbox_sides (mailbox_id, side, {0}) VALUES (?1, ?2, ?3)"
                             " ON CONFLICT (mailbox_id, side) DO UPDATE SET {0} = excluded.{0}",
                             column));
  if (!q) return std::move(q).error();
  return q->bind_int(1, id).bind_int(2, side_value(side)).bind_optional_int(3, value).run();
}

Status StateDb::set_uidvalidity(MailboxId id, Side side, std::optional<Uid> uidvalidity) {
  return set_side_field(id, side, "uidvalidity", uidvalidity);
}

Status StateDb::set_uidnext(MailboxId id, Side side, std::optional<Uid> uidnext) {
  return set_side_field(id, side, "uidnext", uidnext);
}

Status StateDb::set_highestmodseq(MailboxId id, Side side, std::optional<ModSeq> highestmodseq) {
  std::optional<std::int64_t> value;
  if (highestmodseq) value = to_sql(*highestmodseq);
  return set_side_field(id, side, "highestmodseq", value);
}

// --- Mapping ---

Status StateDb::add_pair(MailboxId id, const Pair& pair) {
  auto q = db_->query(
      "INSERT INTO mapping (mailbox_id, local_uid, remote_uid, flags) VALUES (?1, ?2, ?3, ?4)");
  if (!q) return std::move(q).error();
  return q->bind_int(1, id)
      .bind_int(2, pair.uids[Side::local])
      .bind_int(3, pair.uids[Side::remote])
      .bind_text(4, pair.flags)
      .run();
}

Result<std::optional<Pair>> StateDb::find_pair(MailboxId id, Side side, Uid uid) {
  static const SidedSql sql(
      "SELECT local_uid, remote_uid, flags FROM mapping WHERE mailbox_id = ?1 AND {uid} = ?2");
  auto q = db_->query(sql[side]);
  if (!q) return std::move(q).error();
  auto row = q->bind_int(1, id).bind_int(2, uid).step();
  if (!row) return std::move(row).error();
  if (!*row) return std::optional<Pair>();
  Pair pair;
  pair.uids[Side::local] = static_cast<Uid>(q->int64(0));
  pair.uids[Side::remote] = static_cast<Uid>(q->int64(1));
  pair.flags = q->text(2);
  return std::optional<Pair>(std::move(pair));
}

Result<bool> StateDb::remove_pair(MailboxId id, Side side, Uid uid) {
  static const SidedSql sql("DELETE FROM mapping WHERE mailbox_id = ?1 AND {uid} = ?2");
  auto q = db_->query(sql[side]);
  if (!q) return std::move(q).error();
  if (auto s = q->bind_int(1, id).bind_int(2, uid).run(); !s) return std::move(s).error();
  return db_->changes() > 0;
}

Status StateDb::set_pair_flags(MailboxId id, Side side, Uid uid, std::string_view flags) {
  static const SidedSql sql("UPDATE mapping SET flags = ?3 WHERE mailbox_id = ?1 AND {uid} = ?2");
  auto q = db_->query(sql[side]);
  if (!q) return std::move(q).error();
  if (auto s = q->bind_int(1, id).bind_int(2, uid).bind_text(3, flags).run(); !s) return s;
  if (db_->changes() == 0) {
    return Error(Errc::internal,
                 fmt::format("{}: no pair with {}", db_->label(), describe(id, side, uid)));
  }
  return ok_status();
}

Status StateDb::for_each_pair(MailboxId id, Side order, const PairVisitor& visit, Uid first,
                              Uid last) {
  // By local UID this walks the mapping's primary key; by remote UID, its UNIQUE index.
  static const SidedSql sql(
      "SELECT local_uid, remote_uid, flags FROM mapping"
      " WHERE mailbox_id = ?1 AND {uid} BETWEEN ?2 AND ?3 ORDER BY {uid}");
  auto q = db_->query(sql[order]);
  if (!q) return std::move(q).error();
  q->bind_int(1, id).bind_int(2, first).bind_int(3, last);
  Pair pair;
  for (;;) {
    auto row = q->step();
    if (!row) return std::move(row).error();
    if (!*row) return ok_status();
    pair.uids[Side::local] = static_cast<Uid>(q->int64(0));
    pair.uids[Side::remote] = static_cast<Uid>(q->int64(1));
    pair.flags = q->text(2);
    ++pairs_read_;
    if (auto s = visit(pair); !s) return s;
  }
}

Result<std::vector<Pair>> StateDb::pairs(MailboxId id, Side order, Uid first, Uid last) {
  std::vector<Pair> out;
  auto s = for_each_pair(
      id, order,
      [&](const Pair& pair) -> Status {
        out.push_back(pair);
        return ok_status();
      },
      first, last);
  if (!s) return std::move(s).error();
  return out;
}

Result<std::uint64_t> StateDb::count_pairs(MailboxId id) {
  auto q = db_->query("SELECT count(*) FROM mapping WHERE mailbox_id = ?1");
  if (!q) return std::move(q).error();
  auto row = q->bind_int(1, id).step();
  if (!row) return std::move(row).error();
  return static_cast<std::uint64_t>(q->int64(0));
}

Result<std::uint64_t> StateDb::remove_all_pairs(MailboxId id) {
  auto q = db_->query("DELETE FROM mapping WHERE mailbox_id = ?1");
  if (!q) return std::move(q).error();
  if (auto s = q->bind_int(1, id).run(); !s) return std::move(s).error();
  return static_cast<std::uint64_t>(db_->changes());
}

// --- UIDVALIDITY change ---

Result<std::uint64_t> StateDb::clear_side(MailboxId id, Side voided) {
  static const SidedSql orphan_sql(
      "INSERT INTO orphans (mailbox_id, side, uid, flags)"
      " SELECT mailbox_id, ?2, {other}, flags FROM mapping WHERE mailbox_id = ?1");
  return atomically<std::uint64_t>([&]() -> Result<std::uint64_t> {
    auto exists = get_mailbox(id);
    if (!exists) return std::move(exists).error();
    if (!*exists) return no_mailbox(id);
    {
      auto q = db_->query("DELETE FROM orphans WHERE mailbox_id = ?1 AND side = ?2");
      if (!q) return std::move(q).error();
      q->bind_int(1, id).bind_int(2, side_value(voided));
      if (auto s = q->run(); !s) return std::move(s).error();
    }
    std::uint64_t orphaned = 0;
    {
      auto q = db_->query(orphan_sql[voided]);
      if (!q) return std::move(q).error();
      q->bind_int(1, id).bind_int(2, side_value(other(voided)));
      if (auto s = q->run(); !s) return std::move(s).error();
      orphaned = static_cast<std::uint64_t>(db_->changes());
    }
    if (auto removed = remove_all_pairs(id); !removed) return std::move(removed).error();
    if (auto s = set_side_state(id, voided, SideState{}); !s) return std::move(s).error();
    return orphaned;
  });
}

Result<std::vector<Orphan>> StateDb::orphans(MailboxId id) {
  auto q =
      db_->query("SELECT side, uid, flags FROM orphans WHERE mailbox_id = ?1 ORDER BY side, uid");
  if (!q) return std::move(q).error();
  q->bind_int(1, id);
  std::vector<Orphan> out;
  for (;;) {
    auto row = q->step();
    if (!row) return std::move(row).error();
    if (!*row) return out;
    out.push_back(Orphan{side_from(q->int64(0)), static_cast<Uid>(q->int64(1)), q->text(2)});
  }
}

Result<std::uint64_t> StateDb::count_orphans(MailboxId id) {
  auto q = db_->query("SELECT count(*) FROM orphans WHERE mailbox_id = ?1");
  if (!q) return std::move(q).error();
  auto row = q->bind_int(1, id).step();
  if (!row) return std::move(row).error();
  return static_cast<std::uint64_t>(q->int64(0));
}

Status StateDb::rematch_orphan(MailboxId id, Side side, Uid uid, Uid partner_uid) {
  return atomically<Ok>([&]() -> Status {
    std::string flags;
    {
      auto q =
          db_->query("SELECT flags FROM orphans WHERE mailbox_id = ?1 AND side = ?2 AND uid = ?3");
      if (!q) return std::move(q).error();
      auto row = q->bind_int(1, id).bind_int(2, side_value(side)).bind_int(3, uid).step();
      if (!row) return std::move(row).error();
      if (!*row) {
        return Error(Errc::internal,
                     fmt::format("{}: no orphan with {}", db_->label(), describe(id, side, uid)));
      }
      flags = q->text(0);
    }
    if (auto removed = remove_orphan(id, side, uid); !removed) return std::move(removed).error();
    Pair pair;
    pair.uids[side] = uid;
    pair.uids[other(side)] = partner_uid;
    pair.flags = std::move(flags);
    return add_pair(id, pair);
  });
}

Result<bool> StateDb::remove_orphan(MailboxId id, Side side, Uid uid) {
  auto q = db_->query("DELETE FROM orphans WHERE mailbox_id = ?1 AND side = ?2 AND uid = ?3");
  if (!q) return std::move(q).error();
  q->bind_int(1, id).bind_int(2, side_value(side)).bind_int(3, uid);
  if (auto s = q->run(); !s) return std::move(s).error();
  return db_->changes() > 0;
}

// --- Intents ---

Result<IntentId> StateDb::record_intent(const Intent& intent) {
  auto q = db_->query(
      "INSERT INTO intents (mailbox_id, kind, target_side, source_uid, target_uidnext_before,"
      " message_id, size, body_hash, flags, payload, created_at)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
  if (!q) return std::move(q).error();
  std::optional<std::int64_t> size;
  if (intent.size) size = static_cast<std::int64_t>(*intent.size);
  q->bind_optional_int(1, intent.mailbox)
      .bind_text(2, intent.kind)
      .bind_int(3, side_value(intent.target_side))
      .bind_optional_int(4, intent.source_uid)
      .bind_optional_int(5, intent.target_uidnext_before)
      .bind_optional_text(6, intent.message_id)
      .bind_optional_int(7, size)
      .bind_optional_text(8, intent.body_hash)
      .bind_optional_text(9, intent.flags)
      .bind_optional_text(10, intent.payload)
      .bind_int(11, intent.created_at != 0 ? intent.created_at
                                           : static_cast<std::int64_t>(std::time(nullptr)));
  if (auto s = q->run(); !s) return std::move(s).error();
  return db_->last_insert_rowid();
}

Result<std::vector<Intent>> StateDb::read_intents(std::optional<MailboxId> id) {
  constexpr std::string_view kColumns =
      "SELECT id, mailbox_id, kind, target_side, source_uid, target_uidnext_before, message_id,"
      " size, body_hash, flags, payload, created_at FROM intents";
  static const std::string all = fmt::format("{} ORDER BY id", kColumns);
  static const std::string one = fmt::format("{} WHERE mailbox_id = ?1 ORDER BY id", kColumns);
  auto q = db_->query(id ? one : all);
  if (!q) return std::move(q).error();
  if (id) q->bind_int(1, *id);
  std::vector<Intent> out;
  for (;;) {
    auto row = q->step();
    if (!row) return std::move(row).error();
    if (!*row) return out;
    Intent intent;
    intent.id = q->int64(0);
    intent.mailbox = q->optional_int<MailboxId>(1);
    intent.kind = q->text(2);
    intent.target_side = side_from(q->int64(3));
    intent.source_uid = q->optional_int<Uid>(4);
    intent.target_uidnext_before = q->optional_int<Uid>(5);
    intent.message_id = q->optional_text(6);
    intent.size = q->optional_int<std::uint64_t>(7);
    intent.body_hash = q->optional_text(8);
    intent.flags = q->optional_text(9);
    intent.payload = q->optional_text(10);
    intent.created_at = q->int64(11);
    out.push_back(std::move(intent));
  }
}

Result<std::vector<Intent>> StateDb::pending_intents() { return read_intents(std::nullopt); }

Result<std::vector<Intent>> StateDb::pending_intents(MailboxId id) { return read_intents(id); }

Status StateDb::complete_intent(IntentId id) {
  auto q = db_->query("DELETE FROM intents WHERE id = ?1");
  if (!q) return std::move(q).error();
  if (auto s = q->bind_int(1, id).run(); !s) return s;
  if (db_->changes() == 0) {
    return Error(Errc::internal, fmt::format("{}: no pending intent {}", db_->label(), id));
  }
  return ok_status();
}

Status StateDb::set_intent_hash(IntentId id, const std::string& body_hash) {
  auto q = db_->query("UPDATE intents SET body_hash = ?2 WHERE id = ?1");
  if (!q) return std::move(q).error();
  if (auto s = q->bind_int(1, id).bind_text(2, body_hash).run(); !s) return s;
  if (db_->changes() == 0) {
    return Error(Errc::internal, fmt::format("{}: no pending intent {}", db_->label(), id));
  }
  return ok_status();
}

}  // namespace twinbox::store
