#include "sync/memory_store.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace twinbox::sync {

namespace {

// LIST pattern matching on internal names: '*' matches anything, '%' anything but the
// delimiter (RFC 9051 §6.3.9).
bool matches(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) return name.empty();
  if (pattern[0] == '*' || pattern[0] == '%') {
    for (std::size_t n = 0; n <= name.size(); ++n) {
      if (matches(pattern.substr(1), name.substr(n))) return true;
      if (n < name.size() && pattern[0] == '%' && name[n] == '\0') break;
    }
    return false;
  }
  return !name.empty() && pattern[0] == name[0] && matches(pattern.substr(1), name.substr(1));
}

Error rejected(Side side, const std::string& what) {
  return Error(Errc::rejected, fmt::format("{}: {}", side_name(side), what));
}

}  // namespace

// --- MemoryServer ---

MemoryMailbox& MemoryServer::create(const std::string& name) {
  auto [it, made] = mailboxes_.try_emplace(name);
  if (made) it->second.uidvalidity = next_uidvalidity_++;
  return it->second;
}

MemoryMailbox* MemoryServer::find(const std::string& name) {
  auto it = mailboxes_.find(name);
  return it == mailboxes_.end() ? nullptr : &it->second;
}

Uid MemoryServer::deliver(const std::string& name, std::string body, FlagSet flags,
                          std::string internal_date) {
  MemoryMailbox& box = create(name);
  const Uid uid = box.uidnext++;
  box.messages[uid] = {std::move(body), canonical(std::move(flags)), ++box.highestmodseq,
                       std::move(internal_date)};
  return uid;
}

const MemoryMailbox* MemoryServer::find(const std::string& name) const {
  auto it = mailboxes_.find(name);
  return it == mailboxes_.end() ? nullptr : &it->second;
}

bool MemoryServer::set_flags(const std::string& name, Uid uid, FlagSet flags) {
  MemoryMailbox* box = find(name);
  if (box == nullptr || !box->messages.count(uid)) return false;
  MemoryMessage& m = box->messages[uid];
  m.flags = canonical(std::move(flags));
  m.modseq = ++box->highestmodseq;
  return true;
}

bool MemoryServer::expunge(const std::string& name, Uid uid) {
  MemoryMailbox* box = find(name);
  if (box == nullptr || box->messages.erase(uid) == 0) return false;
  box->expunged[uid] = ++box->highestmodseq;
  return true;
}

void MemoryServer::reset_uidvalidity(const std::string& name) {
  MemoryMailbox* box = find(name);
  if (box == nullptr) return;
  MemoryMailbox fresh;
  fresh.uidvalidity = next_uidvalidity_++;
  fresh.subscribed = box->subscribed;
  for (auto& [uid, m] : box->messages) {
    m.modseq = ++fresh.highestmodseq;
    fresh.messages[fresh.uidnext++] = std::move(m);
  }
  *box = std::move(fresh);
}

bool MemoryServer::erase_mailbox(const std::string& name) { return mailboxes_.erase(name) > 0; }

bool MemoryServer::rename_mailbox(const std::string& from, const std::string& to) {
  if (!mailboxes_.count(from) || mailboxes_.count(to)) return false;
  std::vector<std::string> moving;
  const std::string prefix = from + '\0';
  for (const auto& [name, box] : mailboxes_) {
    if (name == from || name.compare(0, prefix.size(), prefix) == 0) moving.push_back(name);
  }
  for (const auto& name : moving) {
    auto node = mailboxes_.extract(name);
    node.key() = to + name.substr(from.size());
    // RFC 9051 §6.3.6: a renamed mailbox is a new one to a client that had it selected.
    node.mapped().uidvalidity += 100000;
    mailboxes_.insert(std::move(node));
  }
  if (from == "INBOX") create("INBOX");  // renaming INBOX leaves an empty INBOX
  return true;
}

// --- MemoryStore ---

Error MemoryStore::lost(const char* call) const {
  return Error(Errc::eof, fmt::format("{}: connection lost during {}", side_name(side_), call));
}

Status MemoryStore::step(const char* call, const std::function<Status()>& effect) {
  if (faults_.killed || dropped_ || closed_) return lost(call);
  const std::uint64_t n = ++faults_.steps;
  ++faults_.calls[call];
  if (faults_.before_step) faults_.before_step(n);
  const bool kill = faults_.kill_at == n;
  const bool drop = faults_.drop_at == n;
  if ((kill && faults_.kill_when == Faults::When::before_effect) ||
      (drop && faults_.drop_when == Faults::When::before_effect)) {
    (kill ? faults_.killed : dropped_) = true;
    return lost(call);
  }
  Status done = effect();
  if (kill || drop) {
    (kill ? faults_.killed : dropped_) = true;
    return lost(call);  // the effect happened; its acknowledgement is lost
  }
  return done;
}

MemoryMailbox* MemoryStore::selected() { return server_.find(selected_); }

MessageSummary MemoryStore::summary_of(Uid uid, const MemoryMessage& m) const {
  return {uid, m.body.size(), m.flags, m.internal_date, tier_ == Tier::plain ? 0 : m.modseq};
}

asio::awaitable<Result<std::optional<char>>> MemoryStore::delimiter() {
  co_return std::optional<char>(delimiter_);
}

asio::awaitable<Result<std::vector<ListedMailbox>>> MemoryStore::list(
    const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts) {
  std::vector<ListedMailbox> out;
  const bool subscribed_only =
      std::find(select_opts.begin(), select_opts.end(), "SUBSCRIBED") != select_opts.end();
  Status done = step("LIST", [&]() -> Status {
    for (const auto& [name, box] : server_.mailboxes()) {
      const bool wanted = std::any_of(patterns.begin(), patterns.end(),
                                      [&](const std::string& p) { return matches(p, name); });
      if (!wanted || (subscribed_only && !box.subscribed)) continue;
      ListedMailbox m;
      m.name = name;
      m.wire = name;
      std::replace(m.wire.begin(), m.wire.end(), '\0', delimiter_);
      m.subscribed = box.subscribed;
      m.uidvalidity = box.uidvalidity;
      m.uidnext = box.uidnext;
      if (tier_ != Tier::plain) m.highestmodseq = box.highestmodseq;
      if (tier_ == Tier::condstore) m.messages = static_cast<std::uint32_t>(box.messages.size());
      out.push_back(std::move(m));
    }
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

asio::awaitable<Status> MemoryStore::create(const std::string& name) {
  co_return step("CREATE", [&]() -> Status {
    server_.create(name);
    return ok_status();
  });
}

asio::awaitable<Status> MemoryStore::subscribe(const std::string& name, bool on) {
  co_return step("SUBSCRIBE", [&]() -> Status {
    if (MemoryMailbox* box = server_.find(name)) box->subscribed = on;
    return ok_status();
  });
}

asio::awaitable<Status> MemoryStore::remove(const std::string& name) {
  co_return step("DELETE", [&]() -> Status {
    if (!server_.erase_mailbox(name)) return rejected(side_, "DELETE: no such mailbox");
    if (selected_ == name) selected_.clear();
    return ok_status();
  });
}

asio::awaitable<Status> MemoryStore::rename(const std::string& from, const std::string& to) {
  co_return step("RENAME", [&]() -> Status {
    selected_.clear();
    if (!server_.rename_mailbox(from, to)) return rejected(side_, "RENAME failed");
    return ok_status();
  });
}

asio::awaitable<Result<SideObservation>> MemoryStore::observe(const std::string& name,
                                                              const store::SideState& recorded,
                                                              std::uint32_t /*listed_uidnext*/) {
  SideObservation o;
  Status done = step("SELECT", [&]() -> Status {
    MemoryMailbox* box = server_.find(name);
    if (box == nullptr) return rejected(side_, fmt::format("SELECT {}: no such mailbox", name));
    selected_ = name;
    o.uidvalidity = box->uidvalidity;
    o.uidnext = box->uidnext;
    o.highestmodseq = box->highestmodseq;
    o.exists = static_cast<std::uint32_t>(box->messages.size());
    if (recorded.uidvalidity && *recorded.uidvalidity != box->uidvalidity) {
      o.uidvalidity_changed = true;
      return ok_status();
    }
    const Lies& lies = faults_.lies[side_];
    const Uid from = recorded.uidnext.value_or(1);
    // Without a recorded mod-sequence (first sync, or the last one was plain), every flag is
    // listed, as a plain server does.
    const bool tracked = recorded.uidvalidity && recorded.uidnext;
    const bool by_modseq = tier_ != Tier::plain && recorded.highestmodseq.value_or(0) > 0;
    if (tracked && by_modseq) {
      const ModSeq since = *recorded.highestmodseq;
      o.expunges_reported = tier_ == Tier::qresync;
      if (o.expunges_reported) {
        for (const auto& [uid, modseq] : box->expunged) {
          if (modseq > since) o.vanished_set.add(uid);
        }
        if (lies.vanished_everything) o.vanished_set.add(1, kMaxUid);
      }
      for (const auto& [uid, m] : box->messages) {
        if (m.modseq <= since) continue;
        o.changes.flags[uid] = m.flags;
        o.changes.modseq[uid] = m.modseq;
      }
      if (lies.unasked_fetch) {
        o.changes.flags[box->uidnext + 7] = {"\\Seen"};
        o.changes.modseq[box->uidnext + 7] = box->highestmodseq;
      }
    } else if (tracked) {
      std::set<Uid> present;  // every UID below `from` not listed vanished
      for (auto it = box->messages.begin(); it != box->messages.end() && it->first < from; ++it) {
        present.insert(it->first);
        o.changes.flags[it->first] = it->second.flags;
        if (tier_ != Tier::plain) o.changes.modseq[it->first] = it->second.modseq;
      }
      o.vanished_set = absent_below(present, from);
    }
    for (auto it = box->messages.lower_bound(recorded.uidnext.value_or(1));
         it != box->messages.end(); ++it) {
      o.changes.added.push_back(
          {it->first, it->second.flags, it->second.internal_date, it->second.body.size()});
    }
    if (lies.exists_too_low && o.exists > 0) --o.exists;
    if (lies.modseq_backwards && o.highestmodseq > 1) o.highestmodseq = 1;
    if (tier_ == Tier::plain) o.highestmodseq = 0;
    if (recorded.highestmodseq && o.highestmodseq < *recorded.highestmodseq) {
      o.distrust.push_back(
          fmt::format("HIGHESTMODSEQ {} is below the {} recorded after the last sync",
                      o.highestmodseq, *recorded.highestmodseq));
    }
    last_reported_modseq_ = o.highestmodseq;
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return o;
}

asio::awaitable<Result<FullObservation>> MemoryStore::observe_all(const std::string& name) {
  FullObservation out;
  Status done = step("SELECT + UID FETCH 1:*", [&]() -> Status {
    MemoryMailbox* box = server_.find(name);
    if (box == nullptr) return rejected(side_, fmt::format("SELECT {}: no such mailbox", name));
    selected_ = name;
    out.state.uidvalidity = box->uidvalidity;
    out.state.uidnext = box->uidnext;
    out.state.highestmodseq = tier_ == Tier::plain ? 0 : box->highestmodseq;
    out.state.exists = static_cast<std::uint32_t>(box->messages.size());
    for (const auto& [uid, m] : box->messages) out.messages.push_back(summary_of(uid, m));
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

asio::awaitable<Result<UidSet>> MemoryStore::uids() {
  UidSet out;
  Status done = step("UID SEARCH ALL", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "SEARCH without a selected mailbox");
    for (const auto& [uid, m] : box->messages) out.add(uid);
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

std::uint32_t MemoryStore::uidnext() const {
  const MemoryMailbox* box = std::as_const(server_).find(selected_);
  return box ? box->uidnext : 0;
}

bool MemoryStore::holds_bodies(const std::vector<Uid>& uids) const {
  const MemoryMailbox* box = server_.find(selected_);
  if (box == nullptr) return false;
  return std::all_of(uids.begin(), uids.end(), [&](Uid uid) {
    auto it = box->messages.find(uid);
    return it != box->messages.end() && it->second.body.size() < 64 * 1024;
  });
}

asio::awaitable<Result<std::vector<FetchedMessage>>> MemoryStore::fetch_bodies(
    const std::vector<Uid>& uids) {
  std::vector<FetchedMessage> out;
  Status done = step("UID FETCH BODY.PEEK[]", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "FETCH without a selected mailbox");
    for (Uid uid : uids) {
      auto it = box->messages.find(uid);
      if (it != box->messages.end())
        out.push_back({uid, it->second.body, it->second.internal_date});
    }
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

asio::awaitable<Result<std::vector<MessageSummary>>> MemoryStore::summaries_from(Uid from) {
  std::vector<MessageSummary> out;
  Status done = step("UID FETCH (RFC822.SIZE)", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "FETCH without a selected mailbox");
    for (auto it = box->messages.lower_bound(from); it != box->messages.end(); ++it) {
      out.push_back(summary_of(it->first, it->second));
    }
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

asio::awaitable<Result<std::set<Uid>>> MemoryStore::exact_sizes(
    const std::map<Uid, std::uint64_t>& sizes) {
  std::set<Uid> out;
  Status done = step("UID FETCH BODY.PEEK[]<partial>", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "FETCH without a selected mailbox");
    for (const auto& [uid, size] : sizes) {
      auto it = box->messages.find(uid);
      if (it != box->messages.end() && it->second.body.size() == size) out.insert(uid);
    }
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

namespace {

// Pieces of one body; each piece is one step (a FETCH of a range).
class MemoryBodyReader : public BodyReader {
 public:
  static constexpr std::uint64_t kPiece = 64 * 1024;
  MemoryBodyReader(MemoryStore& store, MemoryServer& server, std::string mailbox, Uid uid,
                   std::uint64_t size, Side side)
      : store_(store),
        server_(server),
        mailbox_(std::move(mailbox)),
        uid_(uid),
        size_(size),
        side_(side) {}
  asio::awaitable<Result<std::string>> next_piece() override {
    std::string piece;
    Status done = store_.step("UID FETCH BODY.PEEK[]<range>", [&]() -> Status {
      MemoryMailbox* box = server_.find(mailbox_);
      auto it = box ? box->messages.find(uid_) : decltype(box->messages.end()){};
      if (box == nullptr || it == box->messages.end()) {
        return Error(Errc::protocol,
                     fmt::format("{}: UID {} vanished while being copied", side_name(side_), uid_));
      }
      if (it->second.body.size() != size_) {
        return Error(Errc::protocol, fmt::format("{}: UID {} does not have the {} octets its "
                                                 "RFC822.SIZE announced",
                                                 side_name(side_), uid_, size_));
      }
      piece = it->second.body.substr(delivered_, kPiece);
      return ok_status();
    });
    if (!done) co_return done.error();
    delivered_ += piece.size();
    co_return piece;
  }
  bool finished() const override { return delivered_ == size_; }

 private:
  MemoryStore& store_;
  MemoryServer& server_;
  std::string mailbox_;
  Uid uid_;
  std::uint64_t size_;
  Side side_;
  std::uint64_t delivered_ = 0;
};

}  // namespace

std::unique_ptr<BodyReader> MemoryStore::read_body(Uid uid, std::uint64_t size) {
  return std::make_unique<MemoryBodyReader>(*this, server_, selected_, uid, size, side_);
}

asio::awaitable<Result<Settled>> MemoryStore::settle(ModSeq modseq, Uid uidnext) {
  Settled out;
  Status done = step("UID FETCH (CHANGEDSINCE) + UID FETCH n:*", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "FETCH without a selected mailbox");
    // A plain server cannot tell what changed: only what is above `uidnext`.
    for (const auto& [uid, m] : box->messages) {
      if (tier_ != Tier::plain && m.modseq > modseq) out.flags[uid] = m.flags;
      if (uid >= uidnext) out.above.push_back(summary_of(uid, m));
    }
    if (tier_ == Tier::qresync) {
      for (const auto& [uid, when] : box->expunged) {
        if (when > modseq) out.vanished.add(uid);
      }
    }
    out.highestmodseq = tier_ == Tier::plain ? 0 : box->highestmodseq;
    out.exists = static_cast<std::uint32_t>(box->messages.size());
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return out;
}

asio::awaitable<Result<std::set<Uid>>> MemoryStore::set_flags(
    const std::vector<FlagUpdate>& updates) {
  std::set<Uid> modified;
  Status done = step("UID STORE (UNCHANGEDSINCE)", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "STORE without a selected mailbox");
    for (const auto& u : updates) {
      auto it = box->messages.find(u.uid);
      if (it == box->messages.end()) continue;  // expunged meanwhile: nothing to store
      if (tier_ == Tier::plain) {
        // +FLAGS/-FLAGS of the difference: another client's change to other flags survives.
        FlagSet now;
        for (const auto& f : it->second.flags) {
          if (!has_flag(u.remove, f)) now.push_back(f);
        }
        for (const auto& f : u.add) {
          if (!has_flag(now, f)) now.push_back(f);
        }
        it->second.flags = canonical(std::move(now));
        it->second.modseq = ++box->highestmodseq;
        continue;
      }
      if (it->second.modseq > u.unchanged_since) {
        modified.insert(u.uid);
        continue;
      }
      it->second.flags = u.flags;
      it->second.modseq = ++box->highestmodseq;
    }
    return ok_status();
  });
  if (!done) co_return done.error();
  co_return modified;
}

asio::awaitable<Status> MemoryStore::expunge(const std::vector<Uid>& uids) {
  co_return step("UID EXPUNGE", [&]() -> Status {
    MemoryMailbox* box = selected();
    if (box == nullptr) return rejected(side_, "EXPUNGE without a selected mailbox");
    for (Uid uid : uids) server_.expunge(selected_, uid);
    return ok_status();
  });
}

asio::awaitable<Result<Appended>> MemoryStore::append(const std::string& name,
                                                      std::vector<OutgoingMessage> messages) {
  Appended out;
  Status done = step("APPEND", [&]() -> Status {
    MemoryMailbox* box = server_.find(name);
    if (box == nullptr) return rejected(side_, fmt::format("APPEND: no mailbox {}", name));
    for (const auto& m : messages) {
      if (m.content.empty()) return rejected(side_, "APPEND of an empty message");
    }
    out.uidvalidity = box->uidvalidity;
    for (auto& m : messages) {
      out.uids.push_back(
          server_.deliver(name, std::move(m.content), std::move(m.flags), m.internal_date));
    }
    return ok_status();
  });
  if (!done) {
    for (Uid uid : out.uids) faults_.unacknowledged.emplace(index(side_), name, uid);
    co_return done.error();
  }
  co_return out;
}

asio::awaitable<Result<Appended>> MemoryStore::append_streamed(const std::string& name,
                                                               OutgoingMessage message,
                                                               std::uint64_t size,
                                                               BodySource& source) {
  std::string body;
  while (body.size() < size) {
    auto piece = co_await source.next_piece();
    if (!piece) co_return piece.error();
    if (piece->empty() || body.size() + piece->size() > size) {
      dropped_ = true;  // a literal that cannot be completed closes the connection
      co_return Error(Errc::protocol, "streamed body does not match its announced size");
    }
    body += *piece;
  }
  message.content = std::move(body);
  std::vector<OutgoingMessage> one;
  one.push_back(std::move(message));
  co_return co_await append(name, std::move(one));
}

asio::awaitable<Status> MemoryStore::unselect() {
  selected_.clear();
  co_return ok_status();
}

asio::awaitable<Status> MemoryStore::notify(bool) { co_return ok_status(); }

asio::awaitable<Result<bool>> MemoryStore::start_idle(const std::string&) { co_return false; }

asio::awaitable<Status> MemoryStore::wait_for_announcement(std::chrono::milliseconds) {
  co_return ok_status();
}

asio::awaitable<Status> MemoryStore::stop_idle() { co_return ok_status(); }

asio::awaitable<void> MemoryStore::logout() {
  closed_ = true;
  co_return;
}

asio::awaitable<Result<std::unique_ptr<MailStore>>> MemoryConnector::open(Side side,
                                                                          const MailStore*) {
  if (faults_.killed) co_return Error(Errc::eof, "connection refused: the process was killed");
  ++opened_;
  auto store =
      std::make_unique<MemoryStore>(side, *servers_[side], faults_, delimiters_[side], tiers_[side]);
  store->set_round_trip(round_trip_);
  co_return std::unique_ptr<MailStore>(std::move(store));
}

}  // namespace twinbox::sync
