#include "sync/engine.h"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "base/log.h"
#include "sync/digest.h"
#include "sync/planner.h"

namespace twinbox::sync {

namespace {

// Two batches are in memory at once (one being appended, the next being fetched).
constexpr std::size_t kCopyBatchBytes = 2u << 20;
constexpr std::size_t kCopyBatchCount = 200;
// Larger messages are streamed from the FETCH on one server into the APPEND on the other
// (BodyPieces), so memory does not grow with message size.
constexpr std::uint64_t kStreamThreshold = 1u << 20;

// The body of one streamed copy: pieces read from the source server, hashed on the way. Once
// the last piece is in hand, and before it is written (so before the server can complete the
// APPEND), its hash is committed into the intent: recovery after a crash can then recognise the
// copy, and an intent without a hash proves that the APPEND never completed.
class HashingSource : public net::BodySource {
 public:
  HashingSource(BodyPieces& pieces, store::StateDb& db, store::IntentId intent)
      : pieces_(pieces), db_(db), intent_(intent) {}

  asio::awaitable<Result<std::string>> next_piece() override {
    auto piece = co_await pieces_.next_piece();
    if (!piece) co_return piece.error();
    hasher_.update(*piece);
    if (pieces_.finished()) {
      auto tx = db_.begin();
      if (!tx) co_return tx.error();
      Status recorded = db_.set_intent_hash(intent_, hasher_.finish_hex());
      if (!recorded) co_return recorded.error();
      Status committed = tx->commit();
      if (!committed) co_return committed.error();
    }
    co_return std::move(*piece);
  }

 private:
  BodyPieces& pieces_;
  store::StateDb& db_;
  store::IntentId intent_;
  Sha256 hasher_;
};

std::string join_flags(const FlagSet& flags) { return fmt::format("{}", fmt::join(flags, " ")); }

// "About to APPEND message `source_uid` to `to`", recorded before the APPEND is sent.
store::Intent append_intent(store::MailboxId id, Side to, Uid source_uid, Uid target_next,
                            std::uint64_t size, const FlagSet& flags) {
  store::Intent intent;
  intent.mailbox = id;
  intent.kind = "append";
  intent.target_side = to;
  intent.source_uid = source_uid;
  intent.target_uidnext_before = target_next;
  intent.size = size;
  intent.flags = join_flags(flags);
  return intent;
}

FlagSet split_flags(const std::string& text) {
  std::vector<std::string> flags;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t space = text.find(' ', pos);
    if (space == std::string::npos) space = text.size();
    if (space > pos) flags.push_back(text.substr(pos, space - pos));
    pos = space + 1;
  }
  return canonical(std::move(flags));
}

// Awaits one operation per side concurrently (each side has its own connection).
template <class T>
asio::awaitable<PerSide<T>> both(asio::awaitable<T> local, asio::awaitable<T> remote) {
  using namespace asio::experimental::awaitable_operators;
  auto results = co_await (std::move(local) && std::move(remote));
  PerSide<T> out{{std::move(std::get<0>(results)), std::move(std::get<1>(results))}};
  co_return out;
}

bool fatal_for_run(const Error& e) {
  return e.code == Errc::io || e.code == Errc::eof || e.code == Errc::timeout ||
         e.code == Errc::security || e.code == Errc::tls || e.code == Errc::auth;
}

}  // namespace

std::string shown(const std::string& internal) {
  std::string out = internal;
  std::replace(out.begin(), out.end(), '\0', '/');
  return out;
}

std::string mailbox_label(Side side, const std::string& internal_name) {
  return fmt::format("{}({})", side_name(side), shown(internal_name));
}

namespace {
// The configured log-prefix (InterIMAP's printf-like format); set once per Engine.
std::string& log_prefix_format() {
  static std::string format(config::kDefaultLogPrefix);
  return format;
}
}  // namespace

std::string log_prefix(Side side, const std::string& internal_name) {
  return config::expand_log_prefix(log_prefix_format(), side_name(side), shown(internal_name));
}

Engine::Engine(const config::Config& config, EngineOptions options, store::StateDb& db,
               PerSide<net::Endpoint> endpoints)
    : config_(config), options_(std::move(options)), db_(db), endpoints_(std::move(endpoints)) {
  log_prefix_format() = config_.log_prefix;
}

bool Engine::ignored(const std::string& name) const {
  // ignore-mailbox is a PCRE matched against the internal name (delimiter = NUL); bypassed when
  // mailboxes are named on the command line (InterIMAP semantics). Compiled once, in run().
  if (!ignore_ || !options_.mailboxes.empty()) return false;
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(ignore_.get(), nullptr);
  const int rc = pcre2_match(ignore_.get(), reinterpret_cast<PCRE2_SPTR>(name.data()), name.size(),
                             0, 0, match, nullptr);
  pcre2_match_data_free(match);
  return rc >= 0;
}

asio::awaitable<Result<std::unique_ptr<Replica>>> Engine::open_replica(Side side) {
  auto client = co_await net::Client::connect(endpoints_[side]);
  if (!client) co_return client.error();
  const auto& section = side == Side::local ? config_.local : config_.remote;
  auto replica = std::make_unique<Replica>(side, std::move(*client), section.list_reference);
  Status prepared = co_await replica->prepare();
  if (!prepared) co_return prepared.error();
  // Another connection to the same server already listed it: same delimiter, no LIST needed.
  if (replicas_[side]) replica->adopt_delimiter(*replicas_[side]);
  co_return replica;
}

asio::awaitable<Result<PerSide<std::unique_ptr<Replica>>>> Engine::open_lane() {
  // Both servers at once: the handshakes' round trips overlap.
  auto open_local = open_replica(Side::local);
  auto open_remote = open_replica(Side::remote);
  auto opened = co_await both(std::move(open_local), std::move(open_remote));
  PerSide<std::unique_ptr<Replica>> lane;
  for (Side side : kSides) {
    if (!opened[side]) co_return opened[side].error();
    lane[side] = std::move(*opened[side]);
  }
  co_return lane;
}

asio::awaitable<Status> Engine::connect() {
  auto lane = co_await open_lane();
  if (!lane) co_return lane.error();
  replicas_ = std::move(*lane);
  co_return ok_status();
}

Lane Engine::lane0() const {
  Lane lane;
  for (Side side : kSides) lane[side] = replicas_[side].get();
  return lane;
}

Status Engine::compile_ignore_pattern() {
  if (!config_.ignore_mailbox || ignore_) return ok_status();
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(config_.ignore_mailbox->data()),
                    config_.ignore_mailbox->size(), PCRE2_UTF, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    return Error(Errc::config,
                 fmt::format("{}:{}: ignore-mailbox is not a valid PCRE at offset {}: {}",
                             config_.file, config_.line_of("ignore-mailbox"), offset,
                             reinterpret_cast<const char*>(message)));
  }
  ignore_.reset(code);
  return ok_status();
}

void Engine::close_lanes(std::vector<PerSide<std::unique_ptr<Replica>>>& lanes) {
  for (auto& lane : lanes) {
    for (Side side : kSides) {
      if (!lane[side]) continue;
      const auto counters = lane[side]->client().counters();
      summary_.wire_in[side] += counters.wire_in;
      summary_.wire_out[side] += counters.wire_out;
      lane[side]->client().close();
      lane[side].reset();
    }
  }
  lanes.clear();
}

void Engine::disconnect() {
  extra_lanes_.push_back(std::move(replicas_));
  close_lanes(extra_lanes_);
}

asio::awaitable<void> Engine::pause(std::chrono::milliseconds duration) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto until = std::chrono::steady_clock::now() + duration;
  while (!stop_ && std::chrono::steady_clock::now() < until) {
    timer.expires_after(std::min<std::chrono::steady_clock::duration>(
        std::chrono::milliseconds(200), until - std::chrono::steady_clock::now()));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

std::string Engine::from_command_line(std::string name) const {
  // Names on the command line use the local delimiter (InterIMAP); internally it is NUL.
  const auto delimiter =
      replicas_[Side::local] ? replicas_[Side::local]->delimiter() : std::nullopt;
  if (delimiter) std::replace(name.begin(), name.end(), *delimiter, '\0');
  return name;
}

asio::awaitable<Result<RunSummary>> Engine::run() {
  Status compiled = compile_ignore_pattern();
  if (!compiled) co_return compiled.error();
  // Watch mode survives connection losses: reconnect with exponential backoff (1 s .. 5 min).
  // Authentication, TLS and protocol errors are not retried: they need the user.
  std::chrono::milliseconds backoff(1000);
  const auto retry = [&](const Error& e) {
    return options_.watch && (e.code == Errc::io || e.code == Errc::eof || e.code == Errc::timeout);
  };
  while (!stop_) {
    Status step = ok_status();
    if (!replicas_[Side::local] || !replicas_[Side::remote]) step = co_await connect();
    if (step) step = co_await cycle();
    if (step && options_.watch && !stop_) {
      auto woke = co_await wait_for_changes();
      if (!woke) step = woke.error();
    }
    if (!step) {
      if (!retry(step.error())) {
        disconnect();
        co_return step.error();
      }
      log_warning("{}; reconnecting in {} s", step.error().to_string(), backoff.count() / 1000);
      disconnect();
      co_await pause(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::minutes(5));
      continue;
    }
    backoff = std::chrono::milliseconds(1000);
    if (!options_.watch) break;
  }
  if (stop_) log_info("stopping as asked; the state is saved");
  // Every command has completed and the state is committed: the connections are closed without
  // LOGOUT (as InterIMAP does), which saves a round trip per connection and its bytes.
  disconnect();
  co_return summary_;
}

asio::awaitable<Status> Engine::cycle() {
  // LIST-STATUS may not report the selected mailbox exactly (RFC 5819 §4): leave it first.
  for (Side side : kSides) {
    Status left = co_await replicas_[side]->unselect();
    if (!left) co_return left;
  }
  auto names = co_await reconcile_mailboxes();
  if (!names) co_return names.error();
  std::vector<std::string> work;
  for (const auto& name : *names) {
    auto needed = needs_sync(name);
    if (!needed) co_return needed.error();
    if (*needed) {
      work.push_back(name);
    } else {
      log_debug("{}: unchanged", shown(name));
    }
  }
  // More lanes only when there is work for them. Lane 0 starts at once; the others are opened
  // concurrently and join as they come up (their handshakes overlap lane 0's work instead of
  // preceding it). A lane that cannot be opened (a server's connection limit) means fewer jobs.
  const std::size_t jobs = std::max<std::size_t>(1, std::min(options_.jobs, work.size()));
  std::size_t next = 0;
  std::optional<Error> fatal;
  if (jobs == 1) {
    co_await sync_worker(lane0(), work, next, fatal);
  } else {
    // One coroutine per lane, all on this thread: the database is only touched between awaits
    // (no transaction spans one), so the workers interleave safely.
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer all_done(executor, std::chrono::steady_clock::time_point::max());
    std::size_t running = jobs;
    const auto finished = [&](std::exception_ptr e) {
      if (e && !fatal) fatal = Error(Errc::internal, "a sync worker failed");
      if (--running == 0) all_done.cancel();
    };
    asio::co_spawn(executor, sync_worker(lane0(), work, next, fatal), finished);
    for (std::size_t k = 1; k < jobs; ++k) {
      asio::co_spawn(executor, extra_lane_worker(k, work, next, fatal), finished);
    }
    std::error_code ignored;
    while (running > 0) {
      co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
  }
  // Extra lanes live for one cycle: a watch keeps only lane 0.
  close_lanes(extra_lanes_);
  if (fatal) co_return *fatal;
  co_return ok_status();
}

asio::awaitable<void> Engine::extra_lane_worker(std::size_t k, const std::vector<std::string>& work,
                                                std::size_t& next, std::optional<Error>& fatal) {
  auto opened = co_await open_lane();
  if (!opened) {
    log_warning("could not open connection pair {} for parallel sync ({})", k + 1,
                opened.error().to_string());
    co_return;
  }
  Lane lane;
  for (Side side : kSides) lane[side] = (*opened)[side].get();
  extra_lanes_.push_back(std::move(*opened));  // the Replicas stay put; closed after the cycle
  co_await sync_worker(lane, work, next, fatal);
}

asio::awaitable<void> Engine::sync_worker(Lane lane, const std::vector<std::string>& work,
                                          std::size_t& next, std::optional<Error>& fatal) {
  while (!stop_ && !fatal && next < work.size()) {
    const std::string& name = work[next++];
    Status synced = co_await sync_mailbox(name, lane);
    if (!synced) {
      ++summary_.mailboxes_failed;
      log_error("{}: {}", shown(name), synced.error().to_string());
      if (fatal_for_run(synced.error()) && !fatal) fatal = synced.error();
    }
  }
}

Result<bool> Engine::needs_sync(const std::string& name) {
  if (options_.repair) return true;
  auto record = db_.find_mailbox(name);
  if (!record) return record.error();
  if (!*record) return true;
  auto pending = db_.pending_intents((*record)->id);
  if (!pending) return pending.error();
  if (!pending->empty()) return true;
  // Nothing moved on either side (LIST-STATUS said so): no SELECT at all.
  for (Side side : kSides) {
    const auto& m = listed_[side][name];
    const auto& r = (*record)->sides[side];
    const bool same = m.uidvalidity && m.uidnext && m.highestmodseq && r.uidvalidity && r.uidnext &&
                      r.highestmodseq && *m.uidvalidity == *r.uidvalidity &&
                      *m.uidnext == *r.uidnext && *m.highestmodseq == *r.highestmodseq;
    if (!same) return true;
  }
  return false;
}

asio::awaitable<Result<bool>> Engine::wait_for_changes() {
  // NOTIFY (RFC 5465) covers every mailbox on one connection; without it, IDLE covers INBOX and
  // the other mailboxes are looked at by the full cycle every `watch` seconds.
  PerSide<bool> notifying{}, idling{};
  for (Side side : kSides) {
    auto& replica = *replicas_[side];
    if (options_.notify && replica.client().session().has_capability("NOTIFY")) {
      Status set = co_await replica.notify(true);
      if (!set) co_return set.error();
      notifying[side] = true;
      continue;
    }
    if (listed_[side].count("INBOX")) {
      auto started = co_await replica.start_idle("INBOX");
      if (!started) co_return started.error();
      idling[side] = *started;
    }
  }
  const auto until = std::chrono::steady_clock::now() + *options_.watch;
  bool changed = false;
  while (!stop_ && !changed && std::chrono::steady_clock::now() < until) {
    for (Side side : kSides) {
      auto woke = co_await replicas_[side]->wait_for_change(std::chrono::milliseconds(250));
      if (!woke) co_return woke.error();
      if (*woke) {
        log_debug("{}: change announced", side_name(side));
        changed = true;
      }
    }
  }
  for (Side side : kSides) {
    if (idling[side]) {
      Status done = co_await replicas_[side]->stop_idle();
      if (!done) co_return done.error();
    }
    if (notifying[side]) {
      Status done = co_await replicas_[side]->notify(false);
      if (!done) co_return done.error();
    }
  }
  co_return !stop_;
}

asio::awaitable<Result<std::vector<std::string>>> Engine::reconcile_mailboxes() {
  std::vector<std::string> patterns = config_.list_mailbox;
  if (!options_.mailboxes.empty()) {
    patterns.clear();
    for (const auto& name : options_.mailboxes) patterns.push_back(from_command_line(name));
  }
  auto list_local = replicas_[Side::local]->list(patterns, config_.list_select_opts);
  auto list_remote = replicas_[Side::remote]->list(patterns, config_.list_select_opts);
  auto listed = co_await both(std::move(list_local), std::move(list_remote));
  for (Side side : kSides) {
    if (!listed[side]) co_return listed[side].error();
    listed_[side].clear();
    for (auto& m : *listed[side]) listed_[side][m.name] = std::move(m);
  }
  std::set<std::string> names;
  for (Side side : kSides) {
    for (const auto& [name, m] : listed_[side]) {
      if (m.selectable && !ignored(name)) names.insert(name);
    }
  }
  std::vector<std::string> out;
  for (const auto& name : names) {
    auto record = db_.find_mailbox(name);
    if (!record) co_return record.error();
    PerSide<bool> present{};
    for (Side side : kSides) {
      auto it = listed_[side].find(name);
      present[side] = it != listed_[side].end() && it->second.selectable;
    }
    bool skip = false;
    for (Side side : kSides) {
      if (present[side]) continue;
      if (*record) {
        // InterIMAP's safety: a known mailbox that vanished from one side is never recreated
        // (that would undo a deletion) nor deleted on the other side without being asked.
        log_error(
            "{}: mailbox '{}' is known but no longer exists on {}; nothing was changed. "
            "Run 'twinbox --delete {}' to delete it on {} too, or 'twinbox --rename' if it "
            "was renamed",
            side_name(side), shown(name), side_name(side), shown(name), side_name(other(side)));
        ++summary_.mailboxes_failed;
        skip = true;
        break;
      }
      // New mailbox. Names are visited in order, so a selectable parent missing too was created
      // just before; a server creates any other superior names itself (RFC 3501 §6.3.3), and
      // creating them here would turn a \Noselect parent into a mailbox that exists on one side.
      Status created = co_await replicas_[side]->create(name);
      if (!created) co_return created.error();
      log_info("{}created mailbox", log_prefix(side, name));
      ListedMailbox made;
      made.name = name;
      listed_[side][name] = made;
    }
    if (skip) continue;
    // Subscriptions: a side that differs from the recorded state changed it; a new mailbox is
    // subscribed on both sides if it is on either.
    PerSide<bool> subscribed{};
    for (Side side : kSides) subscribed[side] = listed_[side][name].subscribed;
    bool wanted = subscribed[Side::local] || subscribed[Side::remote];
    if (*record) {
      const bool before = (*record)->subscribed;
      wanted = before;
      for (Side side : kSides) {
        if (subscribed[side] != before) wanted = subscribed[side];
      }
    }
    for (Side side : kSides) {
      if (subscribed[side] == wanted) continue;
      Status changed = co_await replicas_[side]->subscribe(name, wanted);
      if (!changed) co_return changed.error();
      log_info("{}{}", log_prefix(side, name), wanted ? "subscribed" : "unsubscribed");
    }
    if (*record) {
      if ((*record)->subscribed != wanted) {
        Status saved = db_.set_subscribed((*record)->id, wanted);
        if (!saved) co_return saved.error();
      }
    } else {
      auto added = db_.add_mailbox(name, wanted);
      if (!added) co_return added.error();
    }
    out.push_back(name);
  }
  summary_.mailboxes_seen = out.size();
  co_return out;
}

asio::awaitable<Status> Engine::sync_mailbox(const std::string& name, const Lane& lane) {
  auto record = db_.find_mailbox(name);
  if (!record) co_return record.error();
  if (!*record) co_return Error(Errc::internal, "mailbox missing from the state database");
  const store::MailboxId id = (*record)->id;
  PerSide<store::SideState> recorded;
  for (Side side : kSides) recorded[side] = (*record)->sides[side];
  auto pending = db_.pending_intents(id);
  if (!pending) co_return pending.error();

  PerSide<SideObservation> seen;
  PerSide<bool> reset{};
  {
    // Both sides at once: each is its own connection.
    auto observe_local = lane[Side::local]->observe(name, recorded[Side::local]);
    auto observe_remote = lane[Side::remote]->observe(name, recorded[Side::remote]);
    auto observed = co_await both(std::move(observe_local), std::move(observe_remote));
    for (Side side : kSides) {
      if (!observed[side]) co_return observed[side].error();
      seen[side] = std::move(*observed[side]);
      reset[side] = seen[side].uidvalidity_changed;
    }
  }
  if (reset[Side::local] && reset[Side::remote]) {
    co_return Error(Errc::protocol,
                    fmt::format("{}: UIDVALIDITY changed on both sides; nothing was changed in "
                                "this mailbox (there is no side left to re-match against)",
                                shown(name)));
  }
  for (Side side : kSides) {
    if (!reset[side]) continue;
    // The UIDs recorded for this side are void, the messages are not gone: never turn this into
    // deletions (RFC 7162 §3.2.5.1). Keep the pairs as orphans of the other side, observe this
    // side afresh and re-match by size and content below.
    log_warning("{}UIDVALIDITY changed from {} to {}: re-matching its messages by content",
                log_prefix(side, name), *recorded[side].uidvalidity, seen[side].uidvalidity);
    auto cleared = db_.clear_side(id, side);
    if (!cleared) co_return cleared.error();
    recorded[side] = store::SideState{};
    auto observed = co_await lane[side]->observe(name, recorded[side]);
    if (!observed) co_return observed.error();
    seen[side] = std::move(*observed);
  }
  auto orphan_count = db_.count_orphans(id);
  if (!orphan_count) co_return orphan_count.error();
  if (*orphan_count > 0) {
    Status rematched = co_await rematch_orphans(lane, id, name, seen);
    if (!rematched) co_return rematched;
  }
  if (!pending->empty()) {
    Status recovered = co_await recover_intents(lane, id, name);
    if (!recovered) co_return recovered;
  }

  auto pairs = db_.pairs(id, Side::local);
  if (!pairs) co_return pairs.error();
  PerSide<std::set<Uid>> paired;
  for (const auto& p : *pairs) {
    for (Side side : kSides) paired[side].insert(p.uids[side]);
  }
  // Messages an interrupted run appended and recorded are above the recorded UIDNEXT but
  // already paired: not new.
  for (Side side : kSides) {
    std::erase_if(seen[side].changes.added,
                  [&](const NewMessage& m) { return paired[side].count(m.uid) > 0; });
  }

  // Distrust the server (issue 3 §4): change tracking that went backwards, or a message count
  // that the recorded pairs, the VANISHED set and the new messages do not explain, means
  // CHANGEDSINCE/VANISHED cannot be relied on: re-read the whole side.
  PerSide<std::optional<Replica::FullObservation>> full;
  PerSide<std::vector<std::string>> distrust;
  for (Side side : kSides) {
    std::vector<std::string> reasons = seen[side].distrust;
    if (!reset[side] && recorded[side].uidnext && !options_.repair) {
      std::size_t expected = 0;
      for (Uid uid : paired[side]) expected += seen[side].vanished_set.contains(uid) ? 0 : 1;
      expected += seen[side].changes.added.size();
      if (expected != seen[side].exists) {
        reasons.push_back(fmt::format(
            "the mailbox has {} message(s) but the recorded state and the changes reported "
            "since account for {}",
            seen[side].exists, expected));
      }
    }
    distrust[side] = std::move(reasons);
  }
  // Either side in doubt: re-read both, so that messages the state lost track of on one side can
  // be paired by content with their partners on the other instead of being copied again.
  const bool reread =
      options_.repair || !distrust[Side::local].empty() || !distrust[Side::remote].empty();
  for (Side side : kSides) {
    if (!reread) break;
    for (const auto& reason : distrust[side]) {
      log_warning("{}{}: re-reading the whole mailbox", log_prefix(side, name), reason);
    }
    auto all = co_await lane[side]->observe_all(name);
    if (!all) co_return all.error();
    if (all->state.uidvalidity != seen[side].uidvalidity) {
      co_return Error(Errc::protocol, fmt::format("{}: UIDVALIDITY changed during the sync",
                                                  mailbox_label(side, name)));
    }
    seen[side] = all->state;
    full[side] = std::move(*all);
  }

  MailboxObservation observation;
  Plan extra;  // what the full re-read decides outside the planner: copies back and forgets
  PerSide<std::map<Uid, const MessageSummary*>> present;
  for (Side side : kSides) {
    if (!full[side]) continue;
    for (const auto& m : full[side]->messages) present[side][m.uid] = &m;
  }
  const auto gone = [&](Side side, Uid uid) {
    return full[side] ? !present[side].count(uid) : seen[side].vanished_set.contains(uid);
  };
  for (const auto& p : *pairs) {
    Pair pair{p.uids[Side::local], p.uids[Side::remote], split_flags(p.flags)};
    PerSide<bool> missing{};
    for (Side side : kSides) missing[side] = full[side] && gone(side, p.uids[side]);
    if (missing[Side::local] || missing[Side::remote]) {
      const bool both = (missing[Side::local] || gone(Side::local, pair.local_uid)) &&
                        (missing[Side::remote] || gone(Side::remote, pair.remote_uid));
      if (both) {
        log_warning("{}: pair (local UID {}, remote UID {}) is gone from both sides; forgetting it",
                    shown(name), pair.local_uid, pair.remote_uid);
        extra.forgets.push_back({pair});
      } else {
        // Recorded as synced, absent without a VANISHED to say it was expunged: copy it back
        // from the side that still has it rather than expunge it there.
        const Side from = missing[Side::local] ? Side::remote : Side::local;
        const Uid uid = p.uids[from];
        log_warning("{}UID {} disappeared; copying UID {} back from {}",
                    log_prefix(other(from), name), p.uids[other(from)], uid, side_name(from));
        CopyAction copy;
        copy.from = from;
        copy.uid = uid;
        copy.flags = pair.flags;
        if (full[from]) {
          copy.flags = present[from].at(uid)->flags;
        } else if (auto f = seen[from].changes.flags.find(uid);
                   f != seen[from].changes.flags.end()) {
          copy.flags = f->second;
        }
        seen[from].changes.flags.erase(uid);
        copy.replaces = pair;
        extra.copies.push_back(std::move(copy));
      }
      continue;
    }
    for (Side side : kSides) {
      if (!full[side]) continue;
      const MessageSummary& m = *present[side].at(p.uids[side]);
      if (!same_flags(m.flags, pair.flags)) {
        seen[side].changes.flags[m.uid] = m.flags;
        seen[side].changes.modseq[m.uid] = m.modseq;
      }
    }
    observation.pairs.push_back(std::move(pair));
  }
  for (Side side : kSides) {
    if (!full[side]) continue;
    seen[side].changes.added.clear();
    for (const auto& m : full[side]->messages) {
      if (paired[side].count(m.uid)) continue;
      if (!options_.repair && m.uid < recorded[side].uidnext.value_or(1)) {
        log_warning("{}UID {} is not in the state database; copying it", log_prefix(side, name),
                    m.uid);
      }
      seen[side].changes.added.push_back({m.uid, m.flags, m.internal_date, m.size});
    }
  }
  // Both sides hold messages the database knows nothing about (--repair, or a first sync of a
  // mailbox that already exists on both sides, e.g. after `--target=database --delete`): pair
  // the identical ones instead of copying each of them both ways.
  const bool first_sync = !recorded[Side::local].uidvalidity && !recorded[Side::remote].uidvalidity;
  if ((full[Side::local] && full[Side::remote]) ||
      (first_sync && !seen[Side::local].changes.added.empty() &&
       !seen[Side::remote].changes.added.empty())) {
    Status matched = co_await pair_by_content(lane, id, name, seen, observation);
    if (!matched) co_return matched;
  }

  for (Side side : kSides) {
    SideChanges changes = seen[side].changes;
    if (!full[side]) {
      for (Uid uid : paired[side]) {
        if (seen[side].vanished_set.contains(uid)) changes.vanished.push_back(uid);
      }
    }
    observation.changes[side] = std::move(changes);
  }
  auto plan = plan_mailbox(observation);
  if (!plan) co_return plan.error();
  for (auto& copy : extra.copies) plan->copies.push_back(std::move(copy));
  for (auto& forget : extra.forgets) plan->forgets.push_back(std::move(forget));
  for (const auto& note : plan->notes) log_warning("{}: {}", shown(name), note);
  summary_.conflicts += plan->notes.size();
  if (options_.dry_run) {
    const std::string text = describe(*plan);
    if (!text.empty()) fmt::print("{}:\n{}", shown(name), text);
    co_return ok_status();
  }
  Status executed = co_await execute(lane, id, name, *plan, seen);
  if (!executed) co_return executed;
  ++summary_.mailboxes_synced;
  co_return ok_status();
}

asio::awaitable<Status> Engine::pair_by_content(const Lane& lane, store::MailboxId id,
                                                const std::string& name,
                                                PerSide<SideObservation>& seen,
                                                MailboxObservation& observation) {
  // --repair: messages on both sides that the database does not pair may be the same message
  // (a lost or older database). Pair those with equal size and SHA-256 instead of copying them
  // both ways; the base flags are what both sides share, so the merge keeps every flag set.
  std::multimap<std::uint64_t, std::size_t> remote_by_size;
  auto& remote_added = seen[Side::remote].changes.added;
  auto& local_added = seen[Side::local].changes.added;
  for (std::size_t i = 0; i < remote_added.size(); ++i) {
    remote_by_size.emplace(remote_added[i].size, i);
  }
  std::set<std::size_t> taken_remote, taken_local;
  std::size_t matched = 0;
  for (std::size_t i = 0; i < local_added.size(); ++i) {
    const NewMessage& mine = local_added[i];
    auto [first, last] = remote_by_size.equal_range(mine.size);
    if (first == last) continue;
    auto local_hash = co_await body_hash(lane, Side::local, mine.uid, mine.size);
    if (!local_hash) co_return local_hash.error();
    for (auto c = first; c != last; ++c) {
      if (taken_remote.count(c->second)) continue;
      const NewMessage& theirs = remote_added[c->second];
      auto remote_hash = co_await body_hash(lane, Side::remote, theirs.uid, theirs.size);
      if (!remote_hash) co_return remote_hash.error();
      if (*remote_hash != *local_hash) continue;
      FlagSet base;
      for (const auto& flag : mine.flags) {
        if (has_flag(theirs.flags, flag)) base.push_back(flag);
      }
      store::Pair pair;
      pair.uids[Side::local] = mine.uid;
      pair.uids[Side::remote] = theirs.uid;
      pair.flags = join_flags(base);
      Status added = db_.add_pair(id, pair);
      if (!added) co_return added;
      observation.pairs.push_back({mine.uid, theirs.uid, base});
      if (!same_flags(mine.flags, base)) seen[Side::local].changes.flags[mine.uid] = mine.flags;
      if (!same_flags(theirs.flags, base))
        seen[Side::remote].changes.flags[theirs.uid] = theirs.flags;
      taken_remote.insert(c->second);
      taken_local.insert(i);
      ++matched;
      break;
    }
  }
  const auto drop = [](std::vector<NewMessage>& list, const std::set<std::size_t>& taken) {
    std::vector<NewMessage> kept;
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (!taken.count(i)) kept.push_back(std::move(list[i]));
    }
    list = std::move(kept);
  };
  drop(local_added, taken_local);
  drop(remote_added, taken_remote);
  if (matched > 0) {
    log_warning("{}: paired {} message(s) found on both sides but missing from the database",
                shown(name), matched);
  }
  for (Side side : kSides) {
    for (const auto& m : seen[side].changes.added) {
      log_warning("{}UID {} has no partner on {}; copying it", log_prefix(side, name), m.uid,
                  side_name(other(side)));
    }
  }
  co_return ok_status();
}

asio::awaitable<Result<std::string>> Engine::body_hash(const Lane& lane, Side side, Uid uid,
                                                       std::uint64_t size) {
  if (size > kStreamThreshold) {
    // Hashed piece by piece: a large message is never whole in memory.
    BodyPieces pieces(*lane[side], uid, size);
    Sha256 hasher;
    while (!pieces.finished()) {
      auto piece = co_await pieces.next_piece();
      if (!piece) break;  // size not exact (or gone): the whole body decides below
      hasher.update(*piece);
    }
    if (pieces.finished()) co_return hasher.finish_hex();
  }
  const std::vector<Uid> one = {uid};
  auto bodies = co_await lane[side]->fetch_bodies(one);
  if (!bodies) co_return bodies.error();
  co_return bodies->empty() ? std::string() : sha256_hex((*bodies)[0].body);
}

asio::awaitable<Status> Engine::rematch_orphans(const Lane& lane, store::MailboxId id,
                                                const std::string& name,
                                                PerSide<SideObservation>& seen) {
  auto orphans = db_.orphans(id);
  if (!orphans) co_return orphans.error();
  std::size_t matched = 0, restored = 0;
  for (Side survivor : kSides) {
    const Side reset = other(survivor);
    std::map<Uid, const store::Orphan*> mine;
    for (const auto& o : *orphans) {
      if (o.side == survivor) mine[o.uid] = &o;
    }
    if (mine.empty()) continue;
    auto present = co_await lane[survivor]->summaries_from(1);
    if (!present) co_return present.error();
    // Candidates on the reset side: everything it now reports, by size.
    std::multimap<std::uint64_t, Uid> by_size;
    for (const auto& m : seen[reset].changes.added) by_size.emplace(m.size, m.uid);
    std::set<Uid> taken;
    std::map<std::pair<int, Uid>, std::string> hashes;
    for (const auto& summary : *present) {
      auto it = mine.find(summary.uid);
      if (it == mine.end()) continue;
      std::optional<Uid> partner;
      auto [first, last] = by_size.equal_range(summary.size);
      for (auto c = first; c != last && !partner; ++c) {
        if (taken.count(c->second)) continue;
        const auto key_survivor = std::make_pair(static_cast<int>(index(survivor)), summary.uid);
        const auto key_reset = std::make_pair(static_cast<int>(index(reset)), c->second);
        if (!hashes.count(key_survivor)) {
          auto hash = co_await body_hash(lane, survivor, summary.uid, summary.size);
          if (!hash) co_return hash.error();
          hashes[key_survivor] = *hash;
        }
        if (!hashes.count(key_reset)) {
          auto hash = co_await body_hash(lane, reset, c->second, summary.size);
          if (!hash) co_return hash.error();
          hashes[key_reset] = *hash;
        }
        if (hashes[key_survivor] == hashes[key_reset]) partner = c->second;
      }
      if (partner) {
        taken.insert(*partner);
        Status done = db_.rematch_orphan(id, survivor, summary.uid, *partner);
        if (!done) co_return done;
        ++matched;
      } else {
        // Its partner is gone with the old UIDVALIDITY: copy it back rather than lose it.
        auto removed = db_.remove_orphan(id, survivor, summary.uid);
        if (!removed) co_return removed.error();
        seen[survivor].changes.added.push_back(
            {summary.uid, summary.flags, summary.internal_date, summary.size});
        ++restored;
      }
      mine.erase(it);
    }
    // Orphans whose message is gone from the surviving side too: nothing left to keep.
    for (const auto& [uid, orphan] : mine) {
      auto removed = db_.remove_orphan(id, survivor, uid);
      if (!removed) co_return removed.error();
    }
    std::sort(seen[survivor].changes.added.begin(), seen[survivor].changes.added.end(),
              [](const NewMessage& a, const NewMessage& b) { return a.uid < b.uid; });
  }
  log_info("{}: re-matched {} message(s) by content; {} to copy again", shown(name), matched,
           restored);
  co_return ok_status();
}

asio::awaitable<Status> Engine::recover_intents(const Lane& lane, store::MailboxId id,
                                                const std::string& name) {
  auto pending = db_.pending_intents(id);
  if (!pending) co_return pending.error();
  for (Side target : kSides) {
    std::vector<store::Intent> appends;
    for (const auto& intent : *pending) {
      if (intent.kind == "append" && intent.target_side == target) appends.push_back(intent);
    }
    if (appends.empty()) continue;
    Uid lowest = 4294967295u;
    for (const auto& intent : appends)
      lowest = std::min(lowest, intent.target_uidnext_before.value_or(1));
    auto candidates = co_await lane[target]->summaries_from(lowest);
    if (!candidates) co_return candidates.error();
    std::set<Uid> used;
    std::map<Uid, std::string> hashes;  // fetched lazily, only for candidates of the right size
    std::size_t matched = 0;
    for (const auto& intent : appends) {
      std::optional<Uid> found;
      for (const auto& c : *candidates) {
        // An intent without a hash is a streamed APPEND whose body was never complete.
        if (!intent.body_hash) break;
        if (used.count(c.uid) || c.uid < intent.target_uidnext_before.value_or(1) ||
            c.size != intent.size.value_or(0)) {
          continue;
        }
        if (!hashes.count(c.uid)) {
          auto hash = co_await body_hash(lane, target, c.uid, c.size);
          if (!hash) co_return hash.error();
          hashes[c.uid] = std::move(*hash);
        }
        if (hashes[c.uid] == intent.body_hash.value_or("")) {
          found = c.uid;
          break;
        }
      }
      auto tx = db_.begin();
      if (!tx) co_return tx.error();
      if (found && intent.source_uid) {
        used.insert(*found);
        store::Pair pair;
        pair.uids[target] = *found;
        pair.uids[other(target)] = *intent.source_uid;
        pair.flags = intent.flags.value_or("");
        auto existing = db_.find_pair(id, other(target), *intent.source_uid);
        if (!existing) co_return existing.error();
        if (!*existing) {
          Status added = db_.add_pair(id, pair);
          if (!added) co_return added;
          ++matched;
        }
      }
      Status completed = db_.complete_intent(intent.id);
      if (!completed) co_return completed;
      Status committed = tx->commit();
      if (!committed) co_return committed;
    }
    log_info("{}recovered an interrupted copy: {} of {} message(s) had arrived and were paired",
             log_prefix(target, name), matched, appends.size());
  }
  // Intents of kinds this version does not write are dropped with a note.
  auto rest = db_.pending_intents(id);
  if (!rest) co_return rest.error();
  for (const auto& intent : *rest) {
    log_warning("{}: dropping an unknown pending intent of kind '{}'", shown(name), intent.kind);
    Status completed = db_.complete_intent(intent.id);
    if (!completed) co_return completed;
  }
  co_return ok_status();
}

asio::awaitable<Status> Engine::execute(const Lane& lane, store::MailboxId id,
                                        const std::string& name, const Plan& plan,
                                        PerSide<SideObservation>& seen) {
  PerSide<bool> acted{};
  // 1. Expunges, then forget the pairs (a crash in between: both sides report the UID vanished
  //    next time and the pair is forgotten then).
  PerSide<std::vector<Uid>> expunge;
  for (const auto& e : plan.expunges) expunge[e.on].push_back(e.uid);
  for (Side side : kSides) {
    if (expunge[side].empty()) continue;
    Status done = co_await lane[side]->expunge(expunge[side]);
    if (!done) co_return done;
    acted[side] = true;
    summary_.expunged_on[side] += expunge[side].size();
    log_info("{}expunged {} message(s)", log_prefix(side, name), expunge[side].size());
  }
  if (!plan.forgets.empty()) {
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    for (const auto& f : plan.forgets) {
      auto removed = db_.remove_pair(id, Side::local, f.pair.local_uid);
      if (!removed) co_return removed.error();
    }
    Status committed = tx->commit();
    if (!committed) co_return committed;
  }

  // 2. Flags: one conditional STORE per message with the merged flags.
  std::map<std::pair<int, Uid>, FlagSet> merged;  // (side, uid) -> merged flags
  for (const auto& r : plan.records) {
    merged[{0, r.pair.local_uid}] = r.pair.flags;
    merged[{1, r.pair.remote_uid}] = r.pair.flags;
  }
  std::set<Uid> modified_local;  // pairs (by local UID) whose store hit MODIFIED
  PerSide<std::size_t> stored{};
  PerSide<std::vector<Replica::FlagUpdate>> updates;
  for (const auto& s : plan.stores) {
    const auto key = std::make_pair(static_cast<int>(index(s.on)), s.uid);
    auto it = merged.find(key);
    if (it == merged.end()) co_return Error(Errc::internal, "store without a merged flag record");
    updates[s.on].push_back(
        {s.uid, it->second, s.unchanged_since.value_or(seen[s.on].highestmodseq)});
  }
  for (Side side : kSides) {
    if (updates[side].empty()) continue;
    auto modified = co_await lane[side]->set_flags_many(updates[side]);
    if (!modified) co_return modified.error();
    acted[side] = true;
    stored[side] = updates[side].size() - modified->size();
    for (const auto& r : plan.records) {
      const Uid uid = side == Side::local ? r.pair.local_uid : r.pair.remote_uid;
      if (modified->count(uid)) modified_local.insert(r.pair.local_uid);
    }
  }
  if (!plan.records.empty()) {
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    for (const auto& r : plan.records) {
      if (modified_local.count(r.pair.local_uid)) continue;
      Status saved =
          db_.set_pair_flags(id, Side::local, r.pair.local_uid, join_flags(r.pair.flags));
      if (!saved) co_return saved;
    }
    Status committed = tx->commit();
    if (!committed) co_return committed;
  }
  for (Side side : kSides) {
    if (stored[side] == 0) continue;
    summary_.flags_set_on[side] += stored[side];
    log_info("{}updated flags of {} message(s)", log_prefix(side, name), stored[side]);
  }

  // 3. Copies, each direction in batches, intent before effect.
  PerSide<std::vector<CopyAction>> copies;
  for (const auto& c : plan.copies) copies[c.from].push_back(c);
  PerSide<std::vector<Uid>> appended;
  for (Side from : kSides) {
    if (copies[from].empty()) continue;
    Status copied = co_await copy(lane, id, name, from, std::move(copies[from]), seen);
    if (!copied) co_return copied;
    acted[other(from)] = true;
  }

  // 4. Persist UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, now that everything below them is
  //    applied and recorded. After our own changes, HIGHESTMODSEQ may only move past them if
  //    nobody else changed anything meanwhile; otherwise keep the observed value so the next
  //    run sees the concurrent change (RFC 7162 §6).
  auto settle_local = settled_state(lane, id, Side::local, seen[Side::local], acted[Side::local],
                                    expunge[Side::local]);
  auto settle_remote = settled_state(lane, id, Side::remote, seen[Side::remote],
                                     acted[Side::remote], expunge[Side::remote]);
  auto settled = co_await both(std::move(settle_local), std::move(settle_remote));
  PerSide<store::SideState> next;
  for (Side side : kSides) {
    if (!settled[side]) co_return settled[side].error();
    next[side] = *settled[side];
  }
  auto tx = db_.begin();
  if (!tx) co_return tx.error();
  for (Side side : kSides) {
    Status saved = db_.set_side_state(id, side, next[side]);
    if (!saved) co_return saved;
  }
  co_return tx->commit();
}

asio::awaitable<Result<store::SideState>> Engine::settled_state(const Lane& lane,
                                                                store::MailboxId id, Side side,
                                                                const SideObservation& seen,
                                                                bool acted,
                                                                const std::vector<Uid>& expunged) {
  store::SideState next;
  next.uidvalidity = seen.uidvalidity;
  next.uidnext = seen.uidnext;
  next.highestmodseq = seen.highestmodseq;
  if (!acted) co_return next;
  auto settled = co_await lane[side]->settle(seen.highestmodseq, seen.uidnext);
  if (!settled) co_return settled.error();
  bool only_ours = true;
  imap::SequenceSet ours;
  for (Uid uid : expunged) ours.add(uid);
  for (const auto& range : settled->changes.vanished.ranges()) {
    for (std::uint64_t uid = range.first; uid <= range.last && only_ours; ++uid) {
      // Bounded: a vanished set we did not cause ends the loop at its first member.
      if (!ours.contains(static_cast<Uid>(uid))) only_ours = false;
    }
  }
  for (const auto& [uid, flags] : settled->changes.flags) {
    auto pair = db_.find_pair(id, side, uid);
    if (!pair) co_return pair.error();
    if (!*pair || !same_flags(split_flags((*pair)->flags), flags)) only_ours = false;
  }
  // Our appends: if they are exactly the UIDs right after the observed UIDNEXT, nobody else
  // delivered in between and UIDNEXT may move past them.
  Uid expected = seen.uidnext;
  bool contiguous = true;
  for (const auto& m : settled->above) {
    auto pair = db_.find_pair(id, side, m.uid);
    if (!pair) co_return pair.error();
    if (!*pair) contiguous = false;
    expected = std::max(expected, m.uid + 1);
  }
  if (only_ours && contiguous) {
    next.uidnext = expected;
    next.highestmodseq = settled->highestmodseq;
  }
  co_return next;
}

asio::awaitable<Status> Engine::copy(const Lane& lane, store::MailboxId id, const std::string& name,
                                     Side from, std::vector<CopyAction> copies,
                                     PerSide<SideObservation>& seen) {
  const Side to = other(from);
  Uid target_next = std::max<Uid>(seen[to].uidnext, lane[to]->uidnext());
  // Large messages whose RFC822.SIZE is exact are streamed one at a time; the rest travel in
  // batches held in memory (an inexact size cannot announce a literal before the body is read).
  std::vector<CopyAction> batched, streamed;
  {
    std::map<Uid, std::uint64_t> large;
    for (const auto& c : copies) {
      if (c.size > kStreamThreshold) large[c.uid] = c.size;
    }
    std::set<Uid> exact;
    if (!large.empty()) {
      auto checked = co_await lane[from]->exact_sizes(large);
      if (!checked) co_return checked.error();
      exact = std::move(*checked);
    }
    for (auto& c : copies) {
      if (exact.count(c.uid)) {
        streamed.push_back(std::move(c));
        continue;
      }
      if (large.count(c.uid)) {
        log_debug("{}UID {}: RFC822.SIZE {} is not the body's size; copied without streaming",
                  log_prefix(from, name), c.uid, c.size);
      }
      batched.push_back(std::move(c));
    }
  }
  // Batches bounded in bytes (as announced by RFC822.SIZE) and in count.
  std::vector<std::vector<Uid>> batches;
  std::map<Uid, const CopyAction*> by_uid;
  for (std::size_t start = 0; start < batched.size();) {
    std::size_t end = start, bytes = 0;
    while (end < batched.size() && end - start < kCopyBatchCount &&
           (end == start || bytes + batched[end].size <= kCopyBatchBytes)) {
      bytes += batched[end].size;
      ++end;
    }
    batches.emplace_back();
    for (std::size_t i = start; i < end; ++i) {
      batches.back().push_back(batched[i].uid);
      by_uid[batched[i].uid] = &batched[i];
    }
    start = end;
  }
  std::size_t total = 0;
  // The next batch is fetched from `from` while this one is appended to `to`: two connections,
  // so the transfer in one direction hides the other's round trips.
  Result<std::vector<FetchedMessage>> bodies = std::vector<FetchedMessage>{};
  if (!batches.empty()) bodies = co_await lane[from]->fetch_bodies(batches[0]);
  for (std::size_t k = 0; k < batches.size(); ++k) {
    if (!bodies) co_return bodies.error();
    std::vector<imap::cmd::AppendMessage> messages;
    std::vector<const CopyAction*> actions;
    std::vector<store::IntentId> intents;
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    for (auto& fetched : *bodies) {
      const CopyAction& action = *by_uid[fetched.uid];
      if (fetched.body.empty()) {
        // RFC 3502: a zero-length APPEND literal is refused; such a message cannot be copied.
        log_warning("{}UID {} is empty and cannot be copied", log_prefix(from, name), fetched.uid);
        continue;
      }
      store::Intent intent =
          append_intent(id, to, fetched.uid, target_next, fetched.body.size(), action.flags);
      intent.body_hash = sha256_hex(fetched.body);
      auto recorded = db_.record_intent(intent);
      if (!recorded) co_return recorded.error();
      intents.push_back(*recorded);
      imap::cmd::AppendMessage message;
      for (const auto& flag : action.flags) message.flags.push_back(flag);
      message.internal_date =
          action.internal_date.empty() ? fetched.internal_date : action.internal_date;
      message.content = std::move(fetched.body);
      messages.push_back(std::move(message));
      actions.push_back(&action);
    }
    Status committed = tx->commit();  // the intents are durable before the APPEND is sent
    if (!committed) co_return committed;
    const bool more = k + 1 < batches.size();
    Result<Replica::Appended> appended = Replica::Appended{};
    if (messages.empty()) {
      if (more) bodies = co_await lane[from]->fetch_bodies(batches[k + 1]);
      continue;
    }
    if (more) {
      using namespace asio::experimental::awaitable_operators;
      auto appending = lane[to]->append(name, std::move(messages));
      auto fetching = lane[from]->fetch_bodies(batches[k + 1]);
      auto results = co_await (std::move(appending) && std::move(fetching));
      appended = std::move(std::get<0>(results));
      bodies = std::move(std::get<1>(results));
    } else {
      appended = co_await lane[to]->append(name, std::move(messages));
    }
    if (!appended) co_return appended.error();
    Status same_mailbox = check_appended(name, to, appended->uidvalidity, seen);
    if (!same_mailbox) co_return same_mailbox;
    auto record = db_.begin();
    if (!record) co_return record.error();
    for (std::size_t i = 0; i < actions.size(); ++i) {
      Status recorded = record_copy(id, from, *actions[i], appended->uids[i], intents[i]);
      if (!recorded) co_return recorded;
      target_next = std::max(target_next, appended->uids[i] + 1);
    }
    Status saved = record->commit();
    if (!saved) co_return saved;
    total += actions.size();
  }
  for (const auto& action : streamed) {
    auto uid = co_await copy_streamed(lane, id, name, from, action, target_next, seen);
    if (!uid) co_return uid.error();
    target_next = std::max(target_next, *uid + 1);
    ++total;
  }
  summary_.copied_to[to] += total;
  if (total > 0) {
    log_info("{}copied {} message(s) to {}", log_prefix(from, name), total, side_name(to));
  }
  co_return ok_status();
}

asio::awaitable<Result<Uid>> Engine::copy_streamed(const Lane& lane, store::MailboxId id,
                                                   const std::string& name, Side from,
                                                   const CopyAction& action, Uid target_next,
                                                   const PerSide<SideObservation>& seen) {
  const Side to = other(from);
  // No body_hash yet: HashingSource records it before the last piece goes out.
  const store::Intent intent =
      append_intent(id, to, action.uid, target_next, action.size, action.flags);
  store::IntentId intent_id = 0;
  {
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    auto recorded = db_.record_intent(intent);
    if (!recorded) co_return recorded.error();
    Status committed = tx->commit();
    if (!committed) co_return committed.error();
    intent_id = *recorded;
  }
  BodyPieces pieces(*lane[from], action.uid, action.size);
  HashingSource source(pieces, db_, intent_id);
  imap::cmd::AppendMessage message;
  for (const auto& flag : action.flags) message.flags.push_back(flag);
  message.internal_date = action.internal_date;
  log_debug("{}UID {}: streaming {} bytes to {}", log_prefix(from, name), action.uid, action.size,
            side_name(to));
  auto appended = co_await lane[to]->append_streamed(name, std::move(message), action.size, source);
  if (!appended) co_return appended.error();
  Status same_mailbox = check_appended(name, to, appended->uidvalidity, seen);
  if (!same_mailbox) co_return same_mailbox.error();
  auto record = db_.begin();
  if (!record) co_return record.error();
  Status recorded = record_copy(id, from, action, appended->uids[0], intent_id);
  if (!recorded) co_return recorded.error();
  Status saved = record->commit();
  if (!saved) co_return saved.error();
  co_return appended->uids[0];
}

Status Engine::check_appended(const std::string& name, Side to, std::uint32_t uidvalidity,
                              const PerSide<SideObservation>& seen) const {
  if (seen[to].uidvalidity == 0 || uidvalidity == seen[to].uidvalidity) return ok_status();
  return Error(Errc::protocol,
               fmt::format("{}: APPENDUID names UIDVALIDITY {} but the mailbox has {}: "
                           "the mailbox was recreated meanwhile",
                           mailbox_label(to, name), uidvalidity, seen[to].uidvalidity));
}

Status Engine::record_copy(store::MailboxId id, Side from, const CopyAction& action, Uid target_uid,
                           store::IntentId intent) {
  if (action.replaces) {
    auto removed = db_.remove_pair(id, Side::local, action.replaces->local_uid);
    if (!removed) return removed.error();
  }
  store::Pair pair;
  pair.uids[from] = action.uid;
  pair.uids[other(from)] = target_uid;
  pair.flags = join_flags(action.flags);
  Status added = db_.add_pair(id, pair);
  if (!added) return added;
  return db_.complete_intent(intent);
}

}  // namespace twinbox::sync
