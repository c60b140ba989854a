// A small RAII layer over SQLite's C API, with errors as values.
//
// Why not SQLiteCpp (packaged, and a fine library): it reports every failure by throwing
// SQLite::Exception, while twinbox never throws (base/error.h), so each call would need a
// try/catch to turn it back into a Result. What the state database needs from SQLite is small
// (open, exec a script, prepared statements cached by SQL text, bind, step, read columns, extended
// error codes) and fits in this file and sqlite.cc.
//
// Contracts:
// - A Connection is used from one thread at a time (it is opened with SQLITE_OPEN_NOMUTEX).
// - Connection::query() hands out a cached prepared statement wrapped in a Query. The Query resets
//   the statement when it goes out of scope, so no statement keeps a read transaction open (which
//   would hold back WAL checkpoints) and the statement is ready for its next use. A statement is
//   in use by at most one Query at a time: asking for it again while a Query on it is alive (a
//   re-entrant call from a row visitor) is an Errc::internal error, not undefined behaviour.
// - Errors name the database (the label given to open) and carry SQLite's message and extended
//   result code. Disk and file problems are Errc::io; anything else (a constraint violated, a
//   malformed statement, misuse) is a bug in twinbox, Errc::internal.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "base/error.h"

namespace twinbox::store::sql {

// Errc::io for disk, file and locking problems, Errc::internal for everything else.
Errc errc_for(int rc);

// One prepared statement, finalized on destruction.
class Statement {
 public:
  Statement() = default;
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Statement();
  Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

class Connection;

// A cached statement borrowed for one execution: bind (1-based), step, read columns (0-based).
// Bind failures are remembered and reported by the next step().
class Query {
 public:
  Query(Query&& other) noexcept;
  Query& operator=(Query&&) = delete;
  Query(const Query&) = delete;
  ~Query();

  Query& bind_int(int index, std::int64_t value);
  Query& bind_null(int index);
  Query& bind_text(int index, std::string_view value);
  Query& bind_blob(int index, std::string_view value);  // an empty view binds a zero-length blob
  template <class T>
  Query& bind_optional_int(int index, const std::optional<T>& value) {
    return value ? bind_int(index, static_cast<std::int64_t>(*value)) : bind_null(index);
  }
  Query& bind_optional_text(int index, const std::optional<std::string>& value) {
    return value ? bind_text(index, *value) : bind_null(index);
  }

  // True when a row is available, false when the statement is done.
  Result<bool> step();
  // Steps until done, ignoring any rows.
  Status run();

  bool is_null(int column) const;
  std::int64_t int64(int column) const;
  std::string text(int column) const;  // all bytes, embedded NULs included
  std::string blob(int column) const;
  template <class T>
  std::optional<T> optional_int(int column) const {
    if (is_null(column)) return std::nullopt;
    return static_cast<T>(int64(column));
  }
  std::optional<std::string> optional_text(int column) const {
    if (is_null(column)) return std::nullopt;
    return text(column);
  }

 private:
  friend class Connection;
  Query(Connection* connection, sqlite3_stmt* stmt, bool* busy)
      : connection_(connection), stmt_(stmt), busy_(busy) {}
  void note_bind(int rc);

  Connection* connection_;
  sqlite3_stmt* stmt_;
  bool* busy_;
  int bind_rc_ = SQLITE_OK;
};

class Connection {
 public:
  // Opens an existing database file (never creates one: the caller creates it with the right
  // mode first). `label` names the database in every error, e.g. "state database /x/state.db".
  static Result<std::unique_ptr<Connection>> open(const std::string& path, bool read_only,
                                                  std::string label);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs a script of one or more statements that return no rows needed by the caller.
  Status exec(std::string_view sql);
  // The cached prepared statement for `sql` (prepared on first use).
  Result<Query> query(std::string_view sql);

  std::int64_t last_insert_rowid() const;
  std::int64_t changes() const;  // rows changed by the last INSERT/UPDATE/DELETE
  bool in_transaction() const;
  sqlite3* handle() const { return db_; }
  const std::string& label() const { return label_; }

  // An Error for a failed call that returned `rc`, using the connection's current message:
  // "<label>: <what>: <sqlite message> (<extended code name>)".
  Error error(int rc, std::string_view what) const;

 private:
  struct Cached {
    Statement statement;
    bool busy = false;
  };
  Connection(sqlite3* db, std::string label) : db_(db), label_(std::move(label)) {}

  sqlite3* db_;
  std::string label_;
  std::unordered_map<std::string, Cached> cache_;
};

}  // namespace twinbox::store::sql
