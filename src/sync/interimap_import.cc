#include "sync/interimap_import.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "imap/mailbox_name.h"
#include "store/sqlite.h"

namespace twinbox::sync {
namespace {

using store::Side;

Error foreign(const std::string& path, std::string_view why) {
  return Error(
      Errc::io,
      fmt::format("{}: not an InterIMAP state database ({}); nothing was imported", path, why));
}

// InterIMAP's internal name: modified UTF-7 levels separated by NUL -> UTF-8 levels.
Result<std::string> internal_name(const std::string& path, std::int64_t idx,
                                  const std::string& stored) {
  std::string out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = stored.find('\0', start);
    const std::string level = stored.substr(start, end == std::string::npos ? end : end - start);
    auto decoded = start == 0 && end == std::string::npos ? imap::mailbox_from_wire(level, false)
                                                          : imap::decode_mutf7(level);
    if (!decoded || level.empty()) {
      return Error(Errc::io,
                   fmt::format("{}: mailboxes row idx={}: the name is not modified UTF-7 levels "
                               "separated by NUL ({}); nothing was imported",
                               path, idx, decoded ? "an empty level" : decoded.error().message));
    }
    out += *decoded;
    if (end == std::string::npos) break;
    out += '\0';
    start = end + 1;
  }
  return out;
}

Result<Uid> uid_column(const std::string& path, std::string_view table, std::int64_t idx,
                       std::string_view column, std::int64_t value, bool zero_allowed) {
  if (value < (zero_allowed ? 0 : 1) || value > static_cast<std::int64_t>(store::kMaxUid)) {
    return Error(Errc::io,
                 fmt::format("{}: {} row idx={}: {} {} is not a 32-bit {}; nothing "
                             "was imported",
                             path, table, idx, column, value, zero_allowed ? "number" : "UID"));
  }
  return static_cast<Uid>(value);
}

}  // namespace

bool InterimapMailbox::complete() const {
  for (Side side : store::kSides) {
    const auto& s = sides[side];
    if (!s || !s->uidvalidity || !s->uidnext || *s->uidnext == 0) return false;
  }
  return true;
}

Result<std::vector<InterimapMailbox>> read_interimap_db(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    return Error(Errc::io, fmt::format("{}: no InterIMAP state database there (give its path with "
                                       "--import-interimap=FILE)",
                                       path));
  }
  auto opened = store::sql::Connection::open(path, true, "InterIMAP database " + path);
  if (!opened) return opened.error();
  store::sql::Connection& db = **opened;
  // A running interimap holds its database with an exclusive lock for its whole life.
  sqlite3_busy_timeout(db.handle(), 2000);

  auto version = db.query("PRAGMA user_version");
  if (!version) return foreign(path, version.error().message);
  auto has_row = version->step();
  if (!has_row) {
    return Error(has_row.error().code,
                 has_row.error().message + " (is interimap running? stop it first)");
  }
  const std::int64_t schema = *has_row ? version->int64(0) : -1;
  if (schema == 0 && !db.query("SELECT idx, mailbox, subscribed FROM mailboxes")) {
    return foreign(path, "PRAGMA user_version is 0 and there is no InterIMAP mailboxes table");
  }
  if (schema == 0) {
    return Error(Errc::io, fmt::format("{}: this is InterIMAP's pre-0.5 schema (user_version "
                                       "0); run interimap 0.5 or later once to upgrade it, "
                                       "then import; nothing was imported",
                                       path));
  }
  if (schema != 1) {
    return foreign(path, fmt::format("PRAGMA user_version is {}, InterIMAP's is 1", schema));
  }

  std::vector<InterimapMailbox> mailboxes;
  std::map<std::int64_t, std::size_t> by_idx;
  // Runs `sql` and hands each row to `read`; a query InterIMAP's schema cannot answer means
  // the file is someone else's.
  const auto each_row = [&](const std::string& sql, const auto& read) -> Status {
    auto q = db.query(sql);
    if (!q) return foreign(path, q.error().message);
    for (;;) {
      auto row = q->step();
      if (!row) return row.error();
      if (!*row) return ok_status();
      Status done = read(*q);
      if (!done) return done;
    }
  };
  // The mailbox a side or mapping row names.
  const auto mailbox_of = [&](std::string_view table,
                              std::int64_t idx) -> Result<InterimapMailbox*> {
    auto it = by_idx.find(idx);
    if (it == by_idx.end()) {
      return foreign(
          path, fmt::format("table {} names mailbox idx={}, which does not exist", table, idx));
    }
    return &mailboxes[it->second];
  };

  Status read = each_row("SELECT idx, mailbox, subscribed FROM mailboxes ORDER BY idx",
                         [&](store::sql::Query& q) -> Status {
                           InterimapMailbox m;
                           m.idx = q.int64(0);
                           auto name = internal_name(path, m.idx, q.blob(1));
                           if (!name) return name.error();
                           m.name = std::move(*name);
                           m.subscribed = q.int64(2) != 0;
                           by_idx[m.idx] = mailboxes.size();
                           mailboxes.push_back(std::move(m));
                           return ok_status();
                         });
  if (!read) return read.error();
  for (Side side : store::kSides) {
    const std::string table(store::side_name(side));
    read = each_row(fmt::format("SELECT idx, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ FROM {}", table),
                    [&](store::sql::Query& q) -> Status {
                      const std::int64_t idx = q.int64(0);
                      auto mailbox = mailbox_of(table, idx);
                      if (!mailbox) return mailbox.error();
                      auto uidvalidity =
                          uid_column(path, table, idx, "UIDVALIDITY", q.int64(1), false);
                      auto uidnext = uid_column(path, table, idx, "UIDNEXT", q.int64(2), true);
                      if (!uidvalidity) return uidvalidity.error();
                      if (!uidnext) return uidnext.error();
                      store::SideState state;
                      state.uidvalidity = *uidvalidity;
                      if (*uidnext > 0) state.uidnext = *uidnext;
                      // Written with %lld: a value of 2^63 or more reads back negative; the bits
                      // are the same.
                      const auto modseq = static_cast<ModSeq>(q.int64(3));
                      if (modseq > 0) state.highestmodseq = modseq;
                      (*mailbox)->sides[side] = state;
                      return ok_status();
                    });
    if (!read) return read.error();
  }
  read = each_row("SELECT idx, lUID, rUID FROM mapping ORDER BY idx, lUID",
                  [&](store::sql::Query& q) -> Status {
                    const std::int64_t idx = q.int64(0);
                    auto mailbox = mailbox_of("mapping", idx);
                    if (!mailbox) return mailbox.error();
                    auto local = uid_column(path, "mapping", idx, "lUID", q.int64(1), false);
                    auto remote = uid_column(path, "mapping", idx, "rUID", q.int64(2), false);
                    if (!local) return local.error();
                    if (!remote) return remote.error();
                    store::PerSide<Uid> uids{};
                    uids[Side::local] = *local;
                    uids[Side::remote] = *remote;
                    (*mailbox)->pairs.push_back(uids);
                    return ok_status();
                  });
  if (!read) return read.error();
  return mailboxes;
}

FlagSet import_base_flags(const std::optional<CopyNow>& local, ModSeq local_recorded,
                          const std::optional<CopyNow>& remote, ModSeq remote_recorded) {
  if (local && local->modseq <= local_recorded) return local->flags;
  if (remote && remote->modseq <= remote_recorded) return remote->flags;
  if (local && remote) {
    FlagSet shared;
    for (const auto& flag : local->flags) {
      if (has_flag(remote->flags, flag)) shared.push_back(flag);
    }
    return shared;
  }
  if (local) return local->flags;
  if (remote) return remote->flags;
  return {};
}

}  // namespace twinbox::sync
