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
#include "sync/dry_run_store.h"
#include "sync/planner.h"

namespace twinbox::sync {

namespace {

// Two batches are in memory at once per lane (one being appended, the next being fetched):
// 1 MiB, not 2, took 3 MiB off the large corpus's peak RSS (docs/bench/memory-large.md). Over a
// link whose round trip is long next to the servers' time for a batch, a lane moves at most a
// batch per round trip, so the batch grows once the quickest round trip shows a slow link.
// Measured at 50 ms on the medium corpus it changed little (18.66 s against 18.94 s, within the
// spread between runs; 4 MiB was no better on the small one): the servers bound that sync.
constexpr std::size_t kCopyBatchBytes = 1u << 20;
constexpr std::size_t kSlowLinkCopyBatchBytes = 2u << 20;
constexpr auto kSlowLink = std::chrono::milliseconds(15);

std::size_t copy_batch_bytes(const Traffic& from, const Traffic& to) {
  for (const Traffic* t : {&from, &to}) {
    if (t->fastest_round_trip && *t->fastest_round_trip >= kSlowLink) {
      return kSlowLinkCopyBatchBytes;
    }
  }
  return kCopyBatchBytes;
}
constexpr std::size_t kCopyBatchCount = 200;
// Larger messages are streamed from the FETCH on one server into the APPEND on the other
// (BodyPieces), so memory does not grow with message size.
constexpr std::uint64_t kStreamThreshold = 1u << 20;

// The body of one streamed copy: pieces read from the source server, hashed on the way. Once
// the last piece is in hand, and before it is written (so before the server can complete the
// APPEND), its hash is committed into the intent: recovery after a crash can then recognise the
// copy, and an intent without a hash proves that the APPEND never completed.
class HashingSource : public BodySource {
 public:
  HashingSource(BodyReader& pieces, store::StateDb& db, store::IntentId intent)
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
  BodyReader& pieces_;
  store::StateDb& db_;
  store::IntentId intent_;
  Sha256 hasher_;
};

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

// How long after a targeted sync with NOTIFY a LIST-STATUS checks that nothing went unannounced
// (once per such interval while changes keep coming, so it costs one LIST per 10 s of traffic).
constexpr std::chrono::seconds kVerifyNotifyAfter(10);

// Awaits whichever of two operations finishes first and returns its outcome; the other is
// cancelled (its outcome is dropped: it must keep what it did where it can be found).
asio::awaitable<Status> first_of(asio::awaitable<Status> local, asio::awaitable<Status> remote) {
  using namespace asio::experimental::awaitable_operators;
  auto result = co_await (std::move(local) || std::move(remote));
  if (result.index() == 0) co_return std::move(std::get<0>(result));
  co_return std::move(std::get<1>(result));
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
               StoreConnector& connector)
    : config_(config), options_(std::move(options)), db_(db), connector_(connector) {
  log_prefix_format() = config_.log_prefix;
}

bool Engine::ignored(const std::string& name) const {
  // Bypassed when mailboxes are named on the command line (InterIMAP semantics).
  return ignore_ && options_.mailboxes.empty() && ignore_->matches(name);
}

asio::awaitable<Result<std::unique_ptr<MailStore>>> Engine::open_store(Side side) {
  auto opened = co_await connector_.open(side, stores_[side].get());
  if (!opened) co_return opened.error();
  if (options_.dry_run) co_return std::make_unique<DryRunStore>(std::move(*opened));
  co_return std::move(*opened);
}

asio::awaitable<Result<PerSide<std::unique_ptr<MailStore>>>> Engine::open_lane() {
  // Both servers at once: the handshakes' round trips overlap.
  auto open_local = open_store(Side::local);
  auto open_remote = open_store(Side::remote);
  auto opened = co_await both(std::move(open_local), std::move(open_remote));
  PerSide<std::unique_ptr<MailStore>> lane;
  for (Side side : kSides) {
    if (!opened[side]) co_return opened[side].error();
    lane[side] = std::move(*opened[side]);
  }
  co_return lane;
}

asio::awaitable<Status> Engine::connect() {
  const auto started = std::chrono::steady_clock::now();
  auto lane = co_await open_lane();
  if (!lane) co_return lane.error();
  stores_ = std::move(*lane);
  lane_open_time_ = std::chrono::steady_clock::now() - started;
  // A connection that made no round trip yet has not read its login's answer (it went out
  // with the first LIST: ImapConnector): an extra lane, which waits for it, takes a round trip
  // more than this one did (worth_another_lane adds it once it is measured).
  for (Side side : kSides) login_unanswered_[side] = stores_[side]->traffic().round_trips == 0;
  co_return ok_status();
}

asio::awaitable<Status> Engine::prepare_for_work(Lane lane) {
  auto local = lane[Side::local]->prepare_for_work();
  auto remote = lane[Side::remote]->prepare_for_work();
  auto ready = co_await both(std::move(local), std::move(remote));
  for (Side side : kSides) {
    if (!ready[side]) co_return ready[side];
  }
  co_return ok_status();
}

Lane Engine::lane0() const {
  Lane lane;
  for (Side side : kSides) lane[side] = stores_[side].get();
  return lane;
}

Status Engine::compile_ignore_pattern() {
  if (!config_.ignore_mailbox || ignore_) return ok_status();
  auto pattern = config::MailboxPattern::compile(*config_.ignore_mailbox);
  if (!pattern) {
    return Error(Errc::config,
                 fmt::format("{}:{}: ignore-mailbox is not a valid PCRE at offset {}: {}",
                             config_.file, config_.line_of("ignore-mailbox"),
                             pattern.error().offset, pattern.error().message));
  }
  ignore_ = std::move(*pattern);
  return ok_status();
}

void Engine::close_lanes(std::vector<PerSide<std::unique_ptr<MailStore>>>& lanes) {
  for (auto& lane : lanes) {
    for (Side side : kSides) {
      if (!lane[side]) continue;
      const Traffic traffic = lane[side]->traffic();
      summary_.wire_in[side] += traffic.in;
      summary_.wire_out[side] += traffic.out;
      summary_.round_trips[side] += traffic.round_trips;
      lane[side]->close();
      lane[side].reset();
    }
  }
  lanes.clear();
}

void Engine::disconnect() {
  extra_lanes_.push_back(std::move(stores_));
  close_lanes(extra_lanes_);
  notifying_ = {};  // a NOTIFY lives and dies with its connection
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
  if (local_delimiter_) std::replace(name.begin(), name.end(), *local_delimiter_, '\0');
  return name;
}

asio::awaitable<Result<RunSummary>> Engine::run() {
  Status compiled = compile_ignore_pattern();
  if (!compiled) co_return compiled.error();
  // Watch mode survives connection losses: reconnect with exponential backoff (1 s .. 5 min).
  // Authentication, TLS and protocol errors are not retried: they need the user. Except a
  // refused token once the run has been connected: a token command may renew it (the first
  // login's refusal still ends the run, so a wrong setup is reported at once).
  std::chrono::milliseconds backoff(1000);
  bool connected_once = false;
  const auto retry = [&](const Error& e) {
    if (!options_.watch) return false;
    if (e.code == Errc::auth) return options_.renewable_credentials && connected_once;
    return e.code == Errc::io || e.code == Errc::eof || e.code == Errc::timeout;
  };
  Wake wake;  // the first cycle looks at everything
  while (!stop_) {
    Status step = ok_status();
    if (!stores_[Side::local] || !stores_[Side::remote]) {
      step = co_await connect();
      wake = Wake{};
    }
    if (step) connected_once = true;
    std::set<std::string> again;
    if (step && wake.everywhere) {
      step = co_await cycle();
      if (options_.watch) full_cycle_due_ = std::chrono::steady_clock::now() + *options_.watch;
      verify_due_.reset();
    } else if (step) {
      auto changed = co_await targeted_cycle(wake.mailboxes);
      if (changed) {
        again = std::move(*changed);
      } else {
        step = changed.error();
      }
      if (step && !verify_due_ && notifying_[Side::local] && notifying_[Side::remote]) {
        verify_due_ = std::chrono::steady_clock::now() + kVerifyNotifyAfter;
      }
    }
    if (step && options_.cycle_done) options_.cycle_done(summary_);
    if (step && options_.watch && !stop_) {
      if (!again.empty()) {
        wake = Wake{false, std::move(again)};
      } else {
        auto woke = co_await wait_for_changes();
        if (woke) {
          wake = std::move(*woke);
        } else {
          step = woke.error();
        }
      }
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

void Engine::begin_cycle(std::size_t looked_at, std::size_t to_sync) {
  ++summary_.cycles;
  if (options_.progress) options_.progress->cycle_started(looked_at, to_sync);
  cycle_started_ = std::chrono::steady_clock::now();
  finished_ = 0;
}

asio::awaitable<Status> Engine::cycle() {
  // LIST-STATUS may not report the selected mailbox exactly (RFC 5819 §4): leave it first. A
  // NOTIFY is off during a full cycle: the LIST sees everything it would announce.
  for (Side side : kSides) {
    Status left = co_await stores_[side]->unselect();
    if (!left) co_return left;
    if (notifying_[side]) {
      Status off = co_await stores_[side]->notify(false);
      if (!off) co_return off;
      notifying_[side] = false;
    }
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
      summary_.mailboxes[name].outcome = MailboxReport::Outcome::unchanged;
    }
  }
  begin_cycle(names->size(), work.size());
  // A watch keeps its connections: whatever comes later is worth compressing too.
  if (!work.empty() || options_.watch) {
    Status ready = co_await prepare_for_work(lane0());
    if (!ready) co_return ready;
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

asio::awaitable<bool> Engine::worth_another_lane(const std::vector<std::string>& work,
                                                 const std::size_t& next,
                                                 const std::optional<Error>& fatal) {
  // Another connection pair pays only when the work left would take lane 0 longer than opening
  // a pair took: a no-op over a plain server's mailboxes, or a few small changes, is done on one
  // lane before the handshakes of others would be. Judged by lane 0's pace so far, every 10 ms.
  using Clock = std::chrono::steady_clock;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!stop_ && !fatal && next < work.size()) {
    // In-memory stores open at once: no measurement is worth a timer (nor is it deterministic).
    if (connector_.opens_instantly()) co_return true;
    const auto elapsed = Clock::now() - cycle_started_;
    const std::size_t left = work.size() - next;
    auto open_time = lane_open_time_;
    Clock::duration unanswered{};  // a PREAUTH tunnel's is about nothing
    for (Side side : kSides) {
      const auto fastest = stores_[side]->traffic().fastest_round_trip;
      if (login_unanswered_[side] && fastest) unanswered = std::max(unanswered, *fastest);
    }
    open_time += unanswered;
    if (elapsed > open_time && (finished_ == 0 || elapsed * left / finished_ > open_time)) {
      co_return true;
    }
    timer.expires_after(std::chrono::milliseconds(10));
    std::error_code ignored;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  co_return false;
}

asio::awaitable<void> Engine::extra_lane_worker(std::size_t k, const std::vector<std::string>& work,
                                                std::size_t& next, std::optional<Error>& fatal) {
  if (!co_await worth_another_lane(work, next, fatal)) co_return;
  auto opened = co_await open_lane();
  if (!opened) {
    log_warning("could not open connection pair {} for parallel sync ({})", k + 1,
                opened.error().to_string());
    co_return;
  }
  Lane lane;
  for (Side side : kSides) lane[side] = (*opened)[side].get();
  extra_lanes_.push_back(std::move(*opened));  // the stores stay put; closed after the cycle
  Status ready = co_await prepare_for_work(lane);
  if (!ready) {
    log_warning("connection pair {} is not used for parallel sync ({})", k + 1,
                ready.error().to_string());
    co_return;
  }
  co_await sync_worker(lane, work, next, fatal);
}

asio::awaitable<void> Engine::sync_worker(Lane lane, const std::vector<std::string>& work,
                                          std::size_t& next, std::optional<Error>& fatal) {
  while (!stop_ && !fatal && next < work.size()) {
    const std::string& name = work[next++];
    if (options_.progress) options_.progress->mailbox_started(name);
    const auto started = std::chrono::steady_clock::now();
    Status synced = co_await sync_mailbox(name, lane);
    MailboxReport& report = summary_.mailboxes[name];
    report.duration += std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    ++finished_;
    if (options_.progress) options_.progress->mailbox_finished(name, static_cast<bool>(synced));
    if (!synced) {
      count_failure(name, synced.error().to_string());
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
  std::optional<std::uint64_t> paired;
  for (Side side : kSides) {
    const auto& m = listed_[side][name];
    const auto& r = (*record)->sides[side];
    const bool same = m.uidvalidity && m.uidnext && m.highestmodseq && r.uidvalidity && r.uidnext &&
                      r.highestmodseq && *m.uidvalidity == *r.uidvalidity &&
                      *m.uidnext == *r.uidnext && *m.highestmodseq == *r.highestmodseq;
    if (!same) return true;
    if (m.messages) {
      // A side whose expunges need not move HIGHESTMODSEQ (CONDSTORE): its count must match.
      if (!paired) {
        auto counted = db_.count_pairs((*record)->id);
        if (!counted) return counted.error();
        paired = *counted;
      }
      if (*m.messages != *paired) return true;
    }
  }
  return false;
}

asio::awaitable<Result<Engine::Wake>> Engine::wait_for_changes() {
  // NOTIFY (RFC 5465) covers every mailbox on one connection; without it, IDLE covers INBOX and
  // the other mailboxes are looked at by the full cycle every `watch` seconds.
  bool just_set = false;
  for (Side side : kSides) {
    auto& replica = *stores_[side];
    if (!options_.notify || !replica.can_notify() || notifying_[side]) continue;
    // Nothing selected: Dovecot sends the selected mailbox's changes only when a command or IDLE
    // is in progress, so a delivery to the mailbox the cycle left selected would go unannounced.
    // Unselected, every mailbox is under the "personal" filter.
    Status left = co_await replica.unselect();
    if (!left) co_return left.error();
    Status set = co_await replica.notify(true);
    if (!set) co_return set.error();
    notifying_[side] = true;
    just_set = true;
  }
  if (just_set) {
    // A change made after the full cycle looked at a mailbox and before NOTIFY SET would be
    // announced by nothing until the next full cycle: look once more, now that announcements
    // are on (the LIST-STATUS of a no-op cycle). Before any IDLE: no command may follow one.
    auto moved = co_await changed_since_cycle();
    if (!moved) co_return moved.error();
    if (*moved) {
      log_debug("a change came during the cycle");
      co_return Wake{};
    }
  }
  PerSide<bool> idling{};
  for (Side side : kSides) {
    if (notifying_[side] || !listed_[side].count("INBOX")) continue;
    auto started = co_await stores_[side]->start_idle("INBOX");
    if (!started) co_return started.error();
    idling[side] = *started;
  }
  // Announcements are gathered until they stop for a moment (a move is two, which one look at
  // both mailboxes handles best), then become one wake.
  using Clock = std::chrono::steady_clock;
  constexpr auto kSettle = std::chrono::milliseconds(50);
  PerSide<Announcement> heard;
  std::optional<Clock::time_point> settled;
  Wake wake;
  bool woke = false;
  while (!stop_ && !woke) {
    const auto now = Clock::now();
    if (now >= full_cycle_due_) break;  // the interval passed: a full cycle
    if (!settled && verify_due_ && now >= *verify_due_) {
      // NOTIFY is trusted but verified: a while after syncing what it announced, one LIST-STATUS
      // checks that nothing went unannounced (Dovecot drops events for the selected mailbox, and
      // the live benchmark saw a delivery go unannounced while twinbox was busy nearby).
      verify_due_.reset();
      auto moved = co_await changed_since_cycle();
      if (!moved) co_return moved.error();
      if (*moved) {
        log_info("a change went unannounced; looking at every mailbox");
        break;
      }
      continue;
    }
    auto until = settled ? std::min(*settled, full_cycle_due_) : full_cycle_due_;
    if (!settled && verify_due_) until = std::min(until, *verify_due_);
    if (now >= until) {
      // Only what needs a look wakes: a status equal to the recorded one (the answer to our own
      // STATUS, or a change already synced) does not.
      std::set<std::string> names;
      bool placed = true;
      for (Side side : kSides) placed = placed && take_announcement(side, heard[side], names);
      heard = {};
      settled.reset();
      if (!placed) {
        woke = true;
        break;
      }
      for (const auto& name : names) {
        auto needed = needs_sync(name);
        if (!needed) co_return needed.error();
        if (*needed) wake.mailboxes.insert(name);
      }
      if (!wake.mailboxes.empty()) {
        wake.everywhere = false;
        woke = true;
      }
      continue;
    }
    // Both sides at once: whichever speaks first is heard at once (the other's wait is
    // cancelled; what it had read stays queued for the next wait). A stop is seen within 1 s.
    const auto slice = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min<Clock::duration>(until - now, std::chrono::seconds(1)));
    auto local = stores_[Side::local]->wait_for_announcement(slice);
    auto remote = stores_[Side::remote]->wait_for_announcement(slice);
    Status first = co_await first_of(std::move(local), std::move(remote));
    if (!first) co_return first.error();
    for (Side side : kSides) {
      auto taken = stores_[side]->take_announcements();
      if (!taken) co_return taken.error();
      if (!taken->any()) continue;
      log_debug("{}: change announced", side_name(side));
      heard[side].merge(*taken);
      if (!settled) settled = Clock::now() + kSettle;
    }
  }
  for (Side side : kSides) {
    if (idling[side]) {
      Status done = co_await stores_[side]->stop_idle();
      if (!done) co_return done.error();
    }
  }
  if (!wake.everywhere) {
    log_debug("looking at {} mailbox(es) only", wake.mailboxes.size());
  }
  co_return wake;
}

bool Engine::take_announcement(Side side, const Announcement& heard, std::set<std::string>& names) {
  if (heard.everywhere) return false;
  // Targeted looks need what a look at one mailbox can check afterwards: QRESYNC on both sides,
  // and NOTIFY on both or on neither (IDLE on INBOX).
  for (Side s : kSides) {
    if (stores_[s]->tier() != Tier::qresync) return false;
  }
  if (notifying_[Side::local] != notifying_[Side::remote]) return false;
  auto& listed = listed_[side];
  // A LIST names a mailbox created, deleted or renamed (or is the copy of our own LIST's
  // answer). Subscriptions are left to the full cycle: a server without LIST-EXTENDED does not
  // say \Subscribed in LIST, and every such copy would look like a change.
  for (const auto& [name, m] : heard.listings) {
    if (ignored(name)) continue;
    auto it = listed.find(name);
    if (it == listed.end() || it->second.selectable != m.selectable) return false;
  }
  const auto known = [&](const std::string& name) {
    if (ignored(name)) return false;
    for (Side s : kSides) {
      auto it = listed_[s].find(name);
      if (it == listed_[s].end() || !it->second.selectable) return false;
    }
    return true;
  };
  for (const auto& [name, m] : heard.statuses) {
    // A mailbox this run does not sync (outside list-mailbox, or ignored) is not looked at; one
    // created since the cycle is announced by a LIST too, which asks for a full look.
    if (!listed.count(name)) continue;
    update_status(listed[name], m);
    if (known(name)) names.insert(name);
  }
  for (const auto& name : heard.touched) {
    if (!known(name)) return false;
    listed[name].highestmodseq.reset();  // no status came: needs_sync() must say yes
    names.insert(name);
  }
  return true;
}

asio::awaitable<Result<std::set<std::string>>> Engine::targeted_cycle(
    const std::set<std::string>& names) {
  std::vector<std::string> work(names.begin(), names.end());
  begin_cycle(work.size(), work.size());
  std::size_t next = 0;
  std::optional<Error> fatal;
  co_await sync_worker(lane0(), work, next, fatal);
  if (fatal) co_return *fatal;
  std::set<std::string> again;
  if (!notifying_[Side::local] || !notifying_[Side::remote]) co_return again;
  for (Side side : kSides) {
    Status left = co_await stores_[side]->unselect();
    if (!left) co_return left.error();
  }
  auto checked =
      co_await both(stores_[Side::local]->status(work), stores_[Side::remote]->status(work));
  for (Side side : kSides) {
    if (!checked[side]) co_return checked[side].error();
    for (const auto& m : *checked[side]) {
      if (listed_[side].count(m.name)) update_status(listed_[side][m.name], m);
    }
  }
  for (const auto& name : work) {
    auto needed = needs_sync(name);
    if (!needed) co_return needed.error();
    if (*needed) again.insert(name);
  }
  if (!again.empty()) log_debug("{} mailbox(es) changed while being synced", again.size());
  co_return again;
}

asio::awaitable<PerSide<Result<std::vector<ListedMailbox>>>> Engine::list_both() {
  std::vector<std::string> patterns = config_.list_mailbox;
  if (!options_.mailboxes.empty()) {
    patterns.clear();
    for (const auto& name : options_.mailboxes) patterns.push_back(from_command_line(name));
  }
  auto list_local = stores_[Side::local]->list(patterns, config_.list_select_opts);
  auto list_remote = stores_[Side::remote]->list(patterns, config_.list_select_opts);
  co_return co_await both(std::move(list_local), std::move(list_remote));
}

asio::awaitable<Result<bool>> Engine::changed_since_cycle() {
  auto listed = co_await list_both();
  PerSide<std::map<std::string, ListedMailbox>> fresh;
  PerSide<std::set<std::string>> synced;  // the mailboxes a cycle would look at
  for (Side side : kSides) {
    if (!listed[side]) co_return listed[side].error();
    for (auto& m : *listed[side]) {
      if (m.selectable && !ignored(m.name)) {
        // Without a status to compare, this look cannot tell (and must not wake every time).
        if (!m.uidvalidity || !m.uidnext || !m.highestmodseq) co_return false;
        synced[side].insert(m.name);
      }
      fresh[side][m.name] = std::move(m);
    }
  }
  if (synced[Side::local] != synced[Side::remote]) co_return true;
  std::swap(listed_, fresh);  // what needs_sync() compares with the database
  for (const auto& name : synced[Side::local]) {
    auto needed = needs_sync(name);
    if (!needed) co_return needed.error();
    if (*needed) co_return true;
  }
  co_return false;
}

asio::awaitable<Result<std::vector<std::string>>> Engine::reconcile_mailboxes() {
  auto listed = co_await list_both();
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
  // Each mailbox's fate is decided first, then the servers are asked all at once: the CREATEs
  // of every new mailbox together (one round trip per depth of the tree), then every
  // subscription change together, then the database. A first sync of a deep tree costs a few
  // round trips, not two per mailbox.
  struct Reconciled {
    std::string name;
    std::optional<store::Mailbox> record;
    bool skip = false;
    bool wanted = false;  // subscribed on both sides once reconciled
  };
  std::vector<Reconciled> mailboxes;
  PerSide<std::vector<std::string>> to_create;
  PerSide<std::vector<std::size_t>> created_index;  // to_create[side][k] is mailboxes[...]
  for (const auto& name : names) {
    auto record = db_.find_mailbox(name);
    if (!record) co_return record.error();
    Reconciled m{name, std::move(*record)};
    PerSide<bool> present{};
    for (Side side : kSides) {
      auto it = listed_[side].find(name);
      present[side] = it != listed_[side].end() && it->second.selectable;
    }
    for (Side side : kSides) {
      if (present[side] || !m.record) continue;
      // InterIMAP's safety: a known mailbox that vanished from one side is never recreated
      // (that would undo a deletion) nor deleted on the other side without being asked.
      log_error(
          "{}: mailbox '{}' is known but no longer exists on {}; nothing was changed. "
          "Run 'twinbox --delete {}' to delete it on {} too, or 'twinbox --rename' if it "
          "was renamed",
          side_name(side), shown(name), side_name(side), shown(name), side_name(other(side)));
      count_failure(
          name, fmt::format("the mailbox is known but no longer exists on {}", side_name(side)));
      m.skip = true;
      break;
    }
    if (!m.skip) {
      // A new mailbox. Names are in order, so a selectable parent missing too is created before
      // (or with) it; a server creates any other superior names itself (RFC 3501 §6.3.3), and
      // creating them here would turn a \Noselect parent into a mailbox that exists on one side.
      for (Side side : kSides) {
        if (present[side]) continue;
        to_create[side].push_back(name);
        created_index[side].push_back(mailboxes.size());
      }
    }
    mailboxes.push_back(std::move(m));
  }
  auto create_local = stores_[Side::local]->create_all(to_create[Side::local]);
  auto create_remote = stores_[Side::remote]->create_all(to_create[Side::remote]);
  auto created = co_await both(std::move(create_local), std::move(create_remote));
  for (Side side : kSides) {
    if (!created[side]) co_return created[side].error();
    for (std::size_t k = 0; k < to_create[side].size(); ++k) {
      Reconciled& m = mailboxes[created_index[side][k]];
      const Status& outcome = (*created[side])[k];
      if (!outcome) {
        // The server refused the name (Courier keeps every folder under "INBOX."): this
        // mailbox waits, the others go on. Nothing is recorded, so the next run tries again.
        log_error("{}cannot create the mailbox: {}", log_prefix(side, m.name),
                  outcome.error().message);
        count_failure(m.name, fmt::format("{}: cannot create the mailbox: {}", side_name(side),
                                          outcome.error().message));
        m.skip = true;
        continue;
      }
      log_info("{}created mailbox", log_prefix(side, m.name));
      ListedMailbox made;
      made.name = m.name;
      listed_[side][m.name] = made;
    }
  }
  // Subscriptions: a side that differs from the recorded state changed it; a new mailbox is
  // subscribed on both sides if it is on either.
  PerSide<std::vector<std::pair<std::string, bool>>> subscriptions;
  for (Reconciled& m : mailboxes) {
    if (m.skip) continue;
    PerSide<bool> subscribed{};
    for (Side side : kSides) subscribed[side] = listed_[side][m.name].subscribed;
    bool wanted = subscribed[Side::local] || subscribed[Side::remote];
    if (m.record) {
      const bool before = m.record->subscribed;
      wanted = before;
      for (Side side : kSides) {
        if (subscribed[side] != before) wanted = subscribed[side];
      }
    }
    m.wanted = wanted;
    for (Side side : kSides) {
      if (subscribed[side] != wanted) subscriptions[side].emplace_back(m.name, wanted);
    }
  }
  auto subscribe_local = stores_[Side::local]->subscribe_all(subscriptions[Side::local]);
  auto subscribe_remote = stores_[Side::remote]->subscribe_all(subscriptions[Side::remote]);
  auto subscribed = co_await both(std::move(subscribe_local), std::move(subscribe_remote));
  for (Side side : kSides) {
    if (!subscribed[side]) co_return subscribed[side].error();
    for (const auto& [name, on] : subscriptions[side]) {
      log_info("{}{}", log_prefix(side, name), on ? "subscribed" : "unsubscribed");
    }
  }
  std::vector<std::string> out;
  for (const Reconciled& m : mailboxes) {
    if (m.skip) continue;
    if (m.record) {
      if (m.record->subscribed != m.wanted) {
        Status saved = db_.set_subscribed(m.record->id, m.wanted);
        if (!saved) co_return saved.error();
      }
    } else {
      auto added = db_.add_mailbox(m.name, m.wanted);
      if (!added) co_return added.error();
    }
    out.push_back(m.name);
  }
  summary_.mailboxes_seen = out.size();
  co_return out;
}

asio::awaitable<Status> Engine::sync_mailbox(const std::string& name, const Lane& lane) {
  MailboxSync m;
  m.name = name;
  Status step = co_await observe_mailbox(lane, m);
  if (step) step = co_await recover_interrupted(lane, m);
  if (step) {
    // QRESYNC on both sides, each reporting its changes since the recorded state (a side
    // without a recorded HIGHESTMODSEQ lists every flag instead: all its UIDs are named then).
    bool named_only = !options_.repair;
    for (Side side : kSides) {
      const SideObservation& seen = m.seen[side];
      named_only = named_only && lane[side]->tier() == Tier::qresync && seen.expunges_reported &&
                   !m.reset[side] && m.recorded[side].uidnext && seen.distrust.empty();
    }
    step = load_pairs(m, named_only);
  }
  if (step) step = co_await find_expunges(lane, m);
  if (step) step = co_await reread_if_distrusted(lane, m);
  if (!step) co_return step;
  auto observation = co_await observation_of(lane, m);
  if (!observation) co_return observation.error();
  auto plan = plan_mailbox(*observation);
  if (!plan) co_return plan.error();
  for (const auto& note : plan->notes) log_warning("{}: {}", shown(name), note);
  MailboxReport& report = summary_.mailboxes[name];
  report.conflicts += plan->notes.size();
  for (Side side : kSides) report.tier[side] = lane[side]->tier();
  if (options_.dry_run) {
    const std::string text = describe(*plan);
    fmt::print("{}:{}", shown(name), text.empty() ? " nothing to do\n" : "\n" + text);
    std::fflush(stdout);
    co_return ok_status();
  }
  if (Log::instance().enabled(LogLevel::debug)) {
    log_debug("{}: plan:\n{}", shown(name), describe(*plan));
  }
  Status executed = co_await execute(lane, m.id, name, std::move(*plan), m.seen, m.recorded);
  if (!executed) co_return executed;
  ++summary_.mailboxes_synced;
  report.outcome = MailboxReport::Outcome::synced;
  ++report.syncs;
  co_return ok_status();
}

std::uint32_t Engine::listed_uidnext(Side side, const MailboxSync& m) const {
  const auto it = listed_[side].find(m.name);
  if (it == listed_[side].end()) return 0;
  return it->second.uidnext.value_or(0);
}

asio::awaitable<Status> Engine::observe_mailbox(const Lane& lane, MailboxSync& m) {
  auto record = db_.find_mailbox(m.name);
  if (!record) co_return record.error();
  if (!*record) co_return Error(Errc::internal, "mailbox missing from the state database");
  m.id = (*record)->id;
  for (Side side : kSides) m.recorded[side] = (*record)->sides[side];
  {
    // Both sides at once: each is its own connection.
    auto observe_local =
        lane[Side::local]->observe(m.name, m.recorded[Side::local], listed_uidnext(Side::local, m));
    auto observe_remote = lane[Side::remote]->observe(m.name, m.recorded[Side::remote],
                                                      listed_uidnext(Side::remote, m));
    auto observed = co_await both(std::move(observe_local), std::move(observe_remote));
    for (Side side : kSides) {
      if (!observed[side]) co_return observed[side].error();
      m.seen[side] = std::move(*observed[side]);
      m.reset[side] = m.seen[side].uidvalidity_changed;
    }
  }
  if (m.reset[Side::local] && m.reset[Side::remote]) {
    co_return Error(Errc::protocol,
                    fmt::format("{}: UIDVALIDITY changed on both sides; nothing was changed in "
                                "this mailbox (there is no side left to re-match against). Run "
                                "'twinbox --target=database --delete {}' to forget its state: "
                                "the next run then pairs the identical messages by content",
                                shown(m.name), shown(m.name)));
  }
  for (Side side : kSides) {
    if (m.recorded[side].uidvalidity || m.seen[side].uidvalidity == 0) continue;
    // The pairs a first sync records are only valid under this UIDVALIDITY: record it before
    // any of them, so that a reset before the first sync completes is seen as one.
    Status saved = db_.set_uidvalidity(m.id, side, m.seen[side].uidvalidity);
    if (!saved) co_return saved;
  }
  for (Side side : kSides) {
    if (!m.reset[side]) continue;
    // The UIDs recorded for this side are void, the messages are not gone: never turn this into
    // deletions (RFC 7162 §3.2.5.1). Keep the pairs as orphans of the other side, observe this
    // side afresh and re-match by size and content (recover_interrupted).
    log_warning("{}UIDVALIDITY changed from {} to {}: re-matching its messages by content",
                log_prefix(side, m.name), *m.recorded[side].uidvalidity, m.seen[side].uidvalidity);
    auto cleared = db_.clear_side(m.id, side);
    if (!cleared) co_return cleared.error();
    m.recorded[side] = store::SideState{};
    auto observed = co_await lane[side]->observe(m.name, m.recorded[side], listed_uidnext(side, m));
    if (!observed) co_return observed.error();
    m.seen[side] = std::move(*observed);
  }
  co_return ok_status();
}

asio::awaitable<Status> Engine::recover_interrupted(const Lane& lane, MailboxSync& m) {
  auto orphan_count = db_.count_orphans(m.id);
  if (!orphan_count) co_return orphan_count.error();
  if (*orphan_count > 0) {
    Status rematched = co_await rematch_orphans(lane, m);
    if (!rematched) co_return rematched;
  }
  auto pending = db_.pending_intents(m.id);
  if (!pending) co_return pending.error();
  if (pending->empty()) co_return ok_status();
  if (m.reset[Side::local] || m.reset[Side::remote]) {
    // The intents name UIDs of the old UIDVALIDITY: void. What an interrupted copy delivered is
    // paired by content with its original instead (observation_of).
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    for (const auto& intent : *pending) {
      Status completed = db_.complete_intent(intent.id);
      if (!completed) co_return completed;
    }
    Status committed = tx->commit();
    if (!committed) co_return committed;
    log_warning(
        "{}: {} interrupted change(s) predate the UIDVALIDITY change; their messages "
        "are matched by content",
        shown(m.name), pending->size());
    co_return ok_status();
  }
  co_return co_await recover_intents(lane, m, *pending);
}

Status Engine::load_pairs(MailboxSync& m, bool named_only) {
  m.pairs.clear();
  m.paired = {};
  m.pair_count.reset();
  // The UIDs each side's changes name: what vanished (ranges, never expanded), what changed
  // flags, what is new (an interrupted run may have paired it already). A query per range:
  // past a few hundred, one read of every pair is cheaper, so the building stops there too (a
  // server may report VANISHED and flag changes of alternate UIDs by the hundred thousand).
  constexpr std::size_t kMostRangesQueried = 256;
  PerSide<UidSet> named;
  const auto name = [&](Side side, Uid first, Uid last) {
    named[side].add(first, last);
    return named[Side::local].ranges().size() + named[Side::remote].ranges().size() <=
           kMostRangesQueried;
  };
  for (Side side : kSides) {
    if (!named_only) break;
    const SideObservation& seen = m.seen[side];
    for (const auto& r : seen.vanished_set.ranges()) {
      named_only = named_only && name(side, r.first, r.last);
    }
    for (const auto& [uid, flags] : seen.changes.flags) {
      named_only = named_only && name(side, uid, uid);
    }
    for (const auto& n : seen.changes.added) named_only = named_only && name(side, n.uid, n.uid);
  }
  if (named_only) {
    auto count = db_.count_pairs(m.id);
    if (!count) return count.error();
    m.pair_count = *count;
    std::set<Uid> loaded;  // by local UID: a pair named on both sides is read twice
    for (Side side : kSides) {
      for (const auto& range : named[side].ranges()) {
        Status read = db_.for_each_pair(
            m.id, side,
            [&](const store::Pair& pair) -> Status {
              if (loaded.insert(pair.uids[Side::local]).second) m.pairs.push_back(pair);
              return ok_status();
            },
            range.first, range.last);
        if (!read) return read;
      }
    }
  } else {
    auto pairs = db_.pairs(m.id, Side::local);
    if (!pairs) return pairs.error();
    m.pairs = std::move(*pairs);
  }
  for (const auto& p : m.pairs) {
    for (Side side : kSides) m.paired[side].insert(p.uids[side]);
  }
  std::map<std::pair<std::size_t, Uid>, const store::Pair*> by_uid;
  for (const auto& p : m.pairs) {
    for (Side side : kSides) by_uid[{index(side), p.uids[side]}] = &p;
  }
  for (Side side : kSides) {
    if (m.recorded[side].uidnext) continue;
    // A first sync lists every message (paired ones, recorded by an interrupted first sync,
    // have their flags compared below).
    m.listed[side].emplace();
    for (const auto& n : m.seen[side].changes.added) m.listed[side]->insert(n.uid);
  }
  // Messages an interrupted run appended and recorded are above the recorded UIDNEXT but
  // already paired: not new. Their flags may have changed since (a plain store reports flag
  // changes only below the recorded UIDNEXT): compared with the pair's, like any listing.
  for (Side side : kSides) {
    SideChanges& changes = m.seen[side].changes;
    std::erase_if(changes.added, [&](const NewMessage& n) {
      auto pair = by_uid.find({index(side), n.uid});
      if (pair == by_uid.end()) return false;
      if (!changes.flags.count(n.uid) && !same_flags(n.flags, split_flags(pair->second->flags))) {
        changes.flags[n.uid] = n.flags;
      }
      return true;
    });
  }
  return ok_status();
}

// The messages of `side` the recorded state accounts for, against the server's count.
std::size_t Engine::expected_count(const MailboxSync& m, Side side) {
  const SideObservation& seen = m.seen[side];
  // Every pair with a vanished UID is loaded, even when only some are (their ranges were read).
  std::size_t vanished = 0;
  for (Uid uid : m.paired[side]) vanished += seen.vanished_set.contains(uid) ? 1 : 0;
  return seen.changes.added.size() + m.pair_count.value_or(m.paired[side].size()) - vanished;
}

asio::awaitable<Status> Engine::find_expunges(const Lane& lane, MailboxSync& m) {
  // A store that cannot report expunges (Tier::condstore): when the count says messages are
  // missing, the server's UID list tells which. Paired messages absent from it were expunged.
  // (m.paired holds every pair here: load_pairs reads only some when both sides report
  // expunges, and then this skips them.)
  for (Side side : kSides) {
    SideObservation& seen = m.seen[side];
    if (seen.expunges_reported || m.reset[side] || !m.recorded[side].uidnext) continue;
    if (expected_count(m, side) == seen.exists) continue;
    auto present = co_await lane[side]->uids();
    if (!present) co_return present.error();
    for (Uid uid : m.paired[side]) {
      if (!present->contains(uid)) seen.vanished_set.add(uid);
    }
  }
  co_return ok_status();
}

asio::awaitable<Status> Engine::reread_if_distrusted(const Lane& lane, MailboxSync& m) {
  // Distrust the server (Trojitá's habit): change tracking that went backwards, or a message
  // count that the recorded pairs, the expunges and the new messages do not explain, means the
  // reported changes cannot be relied on: re-read the whole mailbox.
  PerSide<std::vector<std::string>> distrust;
  for (Side side : kSides) {
    const SideObservation& seen = m.seen[side];
    distrust[side] = seen.distrust;
    if (m.reset[side] || !m.recorded[side].uidnext || options_.repair) continue;
    const std::size_t expected = expected_count(m, side);
    if (expected != seen.exists) {
      distrust[side].push_back(
          fmt::format("the mailbox has {} message(s) but the recorded state and the changes "
                      "reported since account for {}",
                      seen.exists, expected));
    }
  }
  // Either side in doubt: re-read both, so that messages the state lost track of on one side can
  // be paired by content with their partners on the other instead of being copied again.
  if (!options_.repair && distrust[Side::local].empty() && distrust[Side::remote].empty()) {
    co_return ok_status();
  }
  if (m.pair_count) {
    // A re-read compares every message with its pair: all of them.
    Status loaded = load_pairs(m, false);
    if (!loaded) co_return loaded;
  }
  for (Side side : kSides) {
    for (const auto& reason : distrust[side]) {
      log_warning("{}{}: re-reading the whole mailbox", log_prefix(side, m.name), reason);
    }
    auto all = co_await lane[side]->observe_all(m.name);
    if (!all) co_return all.error();
    if (all->state.uidvalidity != m.seen[side].uidvalidity) {
      co_return Error(Errc::protocol, fmt::format("{}: UIDVALIDITY changed during the sync",
                                                  mailbox_label(side, m.name)));
    }
    m.seen[side] = all->state;
    m.full[side] = std::move(*all);
  }
  co_return ok_status();
}

asio::awaitable<Result<MailboxObservation>> Engine::observation_of(const Lane& lane,
                                                                   MailboxSync& m) {
  MailboxObservation observation;
  PerSide<std::map<Uid, const MessageSummary*>> present;
  for (Side side : kSides) {
    if (!m.full[side]) continue;
    for (const auto& summary : m.full[side]->messages) present[side][summary.uid] = &summary;
  }
  // A recorded pair proves that both sides had the message. A side that no longer has it lost it
  // to an expunge, whether or not the server said so (VANISHED, or simply absent from a full
  // re-read): that is a deletion for the planner to propagate (or to undo only by its conflict
  // rules), never a loss to repair by copying the message back.
  // Pairs recovered from an interrupted first sync have no VANISHED to report them: absent from
  // the listing of every message is gone as well.
  const auto gone = [&](Side side, Uid uid) {
    if (m.full[side]) return !present[side].count(uid);
    if (m.listed[side]) return !m.listed[side]->count(uid);
    return m.seen[side].vanished_set.contains(uid);
  };
  for (Side side : kSides) observation.changes[side] = std::move(m.seen[side].changes);
  for (const auto& p : m.pairs) {
    Pair pair{p.uids[Side::local], p.uids[Side::remote], split_flags(p.flags)};
    for (Side side : kSides) {
      const Uid uid = p.uids[side];
      SideChanges& changes = observation.changes[side];
      if (gone(side, uid)) {
        changes.vanished.push_back(uid);
        continue;
      }
      if (!m.full[side]) {
        // Flags back to the base are no change (a plain store lists every message's flags; a
        // mod-sequence also moves when a flag is set and cleared again).
        auto reported = changes.flags.find(uid);
        if (reported != changes.flags.end() && same_flags(reported->second, pair.flags)) {
          changes.flags.erase(reported);
          changes.modseq.erase(uid);
        }
        continue;
      }
      // A full re-read reports every message's flags: only those that differ from the base are
      // changes.
      const MessageSummary& summary = *present[side].at(uid);
      if (!same_flags(summary.flags, pair.flags)) {
        changes.flags[uid] = summary.flags;
        changes.modseq[uid] = summary.modseq;
      } else {
        changes.flags.erase(uid);
        changes.modseq.erase(uid);
      }
    }
    observation.pairs.push_back(std::move(pair));
  }
  for (Side side : kSides) {
    if (!m.full[side]) continue;
    auto& added = observation.changes[side].added;
    added.clear();
    for (const auto& summary : m.full[side]->messages) {
      if (m.paired[side].count(summary.uid)) continue;
      if (!options_.repair && summary.uid < m.recorded[side].uidnext.value_or(1)) {
        log_warning("{}UID {} is not in the state database; copying it", log_prefix(side, m.name),
                    summary.uid);
      }
      added.push_back({summary.uid, summary.flags, summary.internal_date, summary.size});
    }
  }
  // Both sides may hold the same messages unknown to the database: after a full re-read, on a
  // first sync of a mailbox that exists on both sides (e.g. after `--target=database --delete`),
  // or where one side is listed whole because its sync never completed or its UIDVALIDITY
  // changed (a copy an interrupted run delivered is there without a pair). Pair the identical
  // ones instead of copying each of them both ways.
  const bool both_read = m.full[Side::local] && m.full[Side::remote];
  const bool listed_whole = m.listed[Side::local] || m.listed[Side::remote];
  if (both_read || (listed_whole && !observation.changes[Side::local].added.empty() &&
                    !observation.changes[Side::remote].added.empty())) {
    Status matched = co_await pair_by_content(lane, m, observation);
    if (!matched) co_return matched.error();
  }
  co_return observation;
}

asio::awaitable<Result<std::vector<std::optional<std::size_t>>>> Engine::match_by_content(
    const Lane& lane, MailboxSync& m, const std::vector<WantedBody>& wanted, Side side,
    const std::vector<MessageSummary>& candidates) {
  std::multimap<std::uint64_t, std::size_t> by_size;
  for (std::size_t i = 0; i < candidates.size(); ++i) by_size.emplace(candidates[i].size, i);
  std::vector<bool> taken(candidates.size(), false);
  std::vector<std::optional<std::size_t>> out(wanted.size());
  for (std::size_t w = 0; w < wanted.size(); ++w) {
    auto [first, last] = by_size.equal_range(wanted[w].size);
    std::optional<std::string> hash = wanted[w].hash;
    for (auto c = first; c != last && !out[w]; ++c) {
      const MessageSummary& candidate = candidates[c->second];
      if (taken[c->second] || candidate.uid < wanted[w].min_uid) continue;
      if (!hash) {
        // Hashed only once a candidate of the same size exists.
        auto own = co_await body_hash(lane, m, wanted[w].side, wanted[w].uid, wanted[w].size);
        if (!own) co_return own.error();
        hash = std::move(*own);
      }
      if (hash->empty()) break;  // no body to compare (an incomplete streamed APPEND, or gone)
      auto theirs = co_await body_hash(lane, m, side, candidate.uid, candidate.size);
      if (!theirs) co_return theirs.error();
      if (!theirs->empty() && *theirs == *hash) {
        taken[c->second] = true;
        out[w] = c->second;
      }
    }
  }
  co_return out;
}

asio::awaitable<Status> Engine::pair_by_content(const Lane& lane, MailboxSync& m,
                                                MailboxObservation& observation) {
  // Messages on both sides that the database does not pair may be the same message (a lost or
  // older database). Pair those with equal size and SHA-256 instead of copying them both ways;
  // the base flags are what both sides share, so the merge keeps every flag set.
  auto& local_added = observation.changes[Side::local].added;
  auto& remote_added = observation.changes[Side::remote].added;
  std::vector<WantedBody> wanted;
  for (const auto& mine : local_added) {
    wanted.push_back({Side::local, mine.uid, mine.size, std::nullopt, 1});
  }
  std::vector<MessageSummary> candidates;
  for (const auto& theirs : remote_added) {
    candidates.push_back({theirs.uid, theirs.size, theirs.flags, theirs.internal_date, 0});
  }
  auto matches = co_await match_by_content(lane, m, wanted, Side::remote, candidates);
  if (!matches) co_return matches.error();
  std::set<Uid> taken_local, taken_remote;
  for (std::size_t i = 0; i < matches->size(); ++i) {
    if (!(*matches)[i]) continue;
    const NewMessage& mine = local_added[i];
    const NewMessage& theirs = remote_added[*(*matches)[i]];
    FlagSet base;
    for (const auto& flag : mine.flags) {
      if (has_flag(theirs.flags, flag)) base.push_back(flag);
    }
    store::Pair pair;
    pair.uids[Side::local] = mine.uid;
    pair.uids[Side::remote] = theirs.uid;
    pair.flags = join_flags(base);
    Status added = db_.add_pair(m.id, pair);
    if (!added) co_return added;
    observation.pairs.push_back({mine.uid, theirs.uid, base});
    PerSide<const NewMessage*> message{{&mine, &theirs}};
    for (Side side : kSides) {
      if (same_flags(message[side]->flags, base)) continue;
      observation.changes[side].flags[message[side]->uid] = message[side]->flags;
    }
    taken_local.insert(mine.uid);
    taken_remote.insert(theirs.uid);
  }
  std::erase_if(local_added, [&](const NewMessage& n) { return taken_local.count(n.uid) > 0; });
  std::erase_if(remote_added, [&](const NewMessage& n) { return taken_remote.count(n.uid) > 0; });
  if (!taken_local.empty()) {
    log_warning("{}: paired {} message(s) found on both sides but missing from the database",
                shown(m.name), taken_local.size());
  }
  for (Side side : kSides) {
    for (const auto& n : observation.changes[side].added) {
      log_warning("{}UID {} has no partner on {}; copying it", log_prefix(side, m.name), n.uid,
                  side_name(other(side)));
    }
  }
  co_return ok_status();
}

asio::awaitable<Result<std::string>> Engine::body_hash(const Lane& lane, MailboxSync& m, Side side,
                                                       Uid uid, std::uint64_t size) {
  const auto key = std::make_pair(index(side), uid);
  if (auto it = m.hashes.find(key); it != m.hashes.end()) co_return it->second;
  std::optional<std::string> hash;
  if (size > kStreamThreshold) {
    // Hashed piece by piece: a large message is never whole in memory.
    auto pieces = lane[side]->read_body(uid, size);
    Sha256 hasher;
    while (!pieces->finished()) {
      auto piece = co_await pieces->next_piece();
      if (!piece) break;  // size not exact (or gone): the whole body decides below
      hasher.update(*piece);
    }
    if (pieces->finished()) hash = hasher.finish_hex();
  }
  if (!hash) {
    const std::vector<Uid> one = {uid};
    auto bodies = co_await lane[side]->fetch_bodies(one);
    if (!bodies) co_return bodies.error();
    // A message that vanished meanwhile matches nothing (an empty hash is never a SHA-256).
    hash = bodies->empty() ? std::string() : sha256_hex((*bodies)[0].body);
  }
  m.hashes[key] = *hash;
  co_return *hash;
}

asio::awaitable<Status> Engine::rematch_orphans(const Lane& lane, MailboxSync& m) {
  auto orphans = db_.orphans(m.id);
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
    std::vector<MessageSummary> kept;  // the orphans still on the surviving side
    std::vector<WantedBody> wanted;
    for (const auto& summary : *present) {
      if (!mine.count(summary.uid)) continue;
      kept.push_back(summary);
      wanted.push_back({survivor, summary.uid, summary.size, std::nullopt, 1});
    }
    // Candidates on the reset side: everything it now reports.
    std::vector<MessageSummary> candidates;
    auto& added = m.seen[reset].changes.added;
    for (const auto& n : added) candidates.push_back({n.uid, n.size, n.flags, n.internal_date, 0});
    auto matches = co_await match_by_content(lane, m, wanted, reset, candidates);
    if (!matches) co_return matches.error();
    for (std::size_t i = 0; i < kept.size(); ++i) {
      const MessageSummary& summary = kept[i];
      if ((*matches)[i]) {
        Status done =
            db_.rematch_orphan(m.id, survivor, summary.uid, candidates[*(*matches)[i]].uid);
        if (!done) co_return done;
        ++matched;
      } else {
        // Its partner is gone with the old UIDVALIDITY: copy it back rather than lose it.
        auto removed = db_.remove_orphan(m.id, survivor, summary.uid);
        if (!removed) co_return removed.error();
        auto& added = m.seen[survivor].changes.added;
        // It may be listed already (at or above the recorded UIDNEXT).
        if (std::none_of(added.begin(), added.end(),
                         [&](const NewMessage& n) { return n.uid == summary.uid; })) {
          added.push_back({summary.uid, summary.flags, summary.internal_date, summary.size});
        }
        ++restored;
      }
      mine.erase(summary.uid);
    }
    // Orphans whose message is gone from the surviving side too: nothing left to keep.
    for (const auto& [uid, orphan] : mine) {
      auto removed = db_.remove_orphan(m.id, survivor, uid);
      if (!removed) co_return removed.error();
    }
    std::sort(m.seen[survivor].changes.added.begin(), m.seen[survivor].changes.added.end(),
              [](const NewMessage& a, const NewMessage& b) { return a.uid < b.uid; });
  }
  log_info("{}: re-matched {} message(s) by content; {} to copy again", shown(m.name), matched,
           restored);
  co_return ok_status();
}

asio::awaitable<Status> Engine::recover_intents(const Lane& lane, MailboxSync& m,
                                                const std::vector<store::Intent>& pending) {
  for (Side target : kSides) {
    std::vector<store::Intent> appends;
    for (const auto& intent : pending) {
      if (intent.kind == "append" && intent.target_side == target) appends.push_back(intent);
    }
    if (appends.empty()) continue;
    Uid lowest = kMaxUid;
    std::vector<WantedBody> wanted;
    for (const auto& intent : appends) {
      const Uid from = intent.target_uidnext_before.value_or(1);
      lowest = std::min(lowest, from);
      // An intent without a hash is a streamed APPEND whose body was never complete: it
      // matches nothing (no SHA-256 is empty).
      wanted.push_back({other(target), intent.source_uid.value_or(0), intent.size.value_or(0),
                        intent.body_hash.value_or(""), from});
    }
    auto candidates = co_await lane[target]->summaries_from(lowest);
    if (!candidates) co_return candidates.error();
    auto matches = co_await match_by_content(lane, m, wanted, target, *candidates);
    if (!matches) co_return matches.error();
    std::size_t matched = 0;
    std::optional<UidSet> present;  // the target's UIDs, read once if a copy-back needs them
    for (std::size_t i = 0; i < appends.size(); ++i) {
      const store::Intent& intent = appends[i];
      // A copy back (a message expunged on the target while the other side changed it, see the
      // conflict rules) was sent while its source was still paired with the expunged copy: once
      // the copy is found to have arrived, it replaces that pair. Left unpaired, it would be
      // taken for new mail and copied to the source side, and the conflict would copy the
      // message back once more: a duplicate on both sides.
      const bool arrived = (*matches)[i] && intent.source_uid;
      const Uid copy = arrived ? (*candidates)[*(*matches)[i]].uid : 0;
      std::optional<store::Pair> partner;  // the source's pair now, if it has one
      if (arrived) {
        auto found = db_.find_pair(m.id, other(target), *intent.source_uid);
        if (!found) co_return found.error();
        partner = std::move(*found);
      }
      bool replace = false;
      if (partner) {
        // Never when the copy found is someone's partner already (it cannot be: candidates
        // start at the target's UIDNEXT before the APPEND; the pair is then left as it was).
        auto holder = db_.find_pair(m.id, target, copy);
        if (!holder) co_return holder.error();
        const Uid old_copy = partner->uids[target];
        if (!*holder) {
          replace = m.seen[target].vanished_set.contains(old_copy);
          if (!replace) {
            if (!present) {
              auto uids = co_await lane[target]->uids();
              if (!uids) co_return uids.error();
              present = std::move(*uids);
            }
            replace = !present->contains(old_copy);
          }
        }
      }
      // (Only this lane touches this mailbox's pairs: nothing changed them during the wait.)
      auto tx = db_.begin();
      if (!tx) co_return tx.error();
      if (replace) {
        auto removed = db_.remove_pair(m.id, Side::local, partner->uids[Side::local]);
        if (!removed) co_return removed.error();
      }
      if (arrived && (!partner || replace)) {
        store::Pair pair;
        pair.uids[target] = copy;
        pair.uids[other(target)] = *intent.source_uid;
        pair.flags = intent.flags.value_or("");
        Status added = db_.add_pair(m.id, pair);
        if (!added) co_return added;
        ++matched;
      }
      Status completed = db_.complete_intent(intent.id);
      if (!completed) co_return completed;
      Status committed = tx->commit();
      if (!committed) co_return committed;
    }
    log_info("{}recovered an interrupted copy: {} of {} message(s) had arrived and were paired",
             log_prefix(target, m.name), matched, appends.size());
  }
  Status stores = recover_stores(m, pending);
  if (!stores) co_return stores;
  // Intents of kinds this version does not write are dropped with a note.
  for (const auto& intent : pending) {
    if (intent.kind == "append" || intent.kind == "store") continue;
    log_warning("{}: dropping an unknown pending intent of kind '{}'", shown(m.name), intent.kind);
    Status completed = db_.complete_intent(intent.id);
    if (!completed) co_return completed;
  }
  co_return ok_status();
}

Status Engine::recover_stores(MailboxSync& m, const std::vector<store::Intent>& pending) {
  // The flags of every pair an interrupted run was storing to, grouped by pair (its local UID):
  // whether each of its STOREs arrived, and the flags they set.
  struct Stores {
    bool all_arrived = true;
    FlagSet intended;
  };
  std::map<Uid, Stores> by_pair;
  std::vector<store::IntentId> done;
  for (const auto& intent : pending) {
    if (intent.kind != "store") continue;
    done.push_back(intent.id);
    if (!intent.source_uid) continue;
    const Side side = intent.target_side;
    const Uid uid = *intent.source_uid;
    auto pair = db_.find_pair(m.id, side, uid);
    if (!pair) return pair.error();
    if (!*pair) continue;
    // The message's flags now, if this observation reported them.
    std::optional<FlagSet> now;
    const SideChanges& changes = m.seen[side].changes;
    if (auto f = changes.flags.find(uid); f != changes.flags.end()) now = f->second;
    for (const auto& n : changes.added) {
      if (n.uid == uid) now = n.flags;
    }
    Stores& stores = by_pair[(*pair)->uids[Side::local]];
    stores.intended = split_flags(intent.flags.value_or(""));
    if (!now || !same_flags(*now, stores.intended)) stores.all_arrived = false;
  }
  auto tx = db_.begin();
  if (!tx) return tx.error();
  std::size_t adopted = 0;
  for (const auto& [local_uid, stores] : by_pair) {
    // Every STORE of the pair took effect: their flags are the new base, not the user's change.
    // When only some did, the old base stays right: the merged flags already hold every change
    // the other side still shows.
    if (!stores.all_arrived) continue;
    Status saved = db_.set_pair_flags(m.id, Side::local, local_uid, join_flags(stores.intended));
    if (!saved) return saved;
    ++adopted;
  }
  for (store::IntentId id : done) {
    Status completed = db_.complete_intent(id);
    if (!completed) return completed;
  }
  Status committed = tx->commit();
  if (!committed) return committed;
  if (adopted > 0) {
    log_info("{}: recovered an interrupted flag update: {} message(s) had been stored",
             shown(m.name), adopted);
  }
  return ok_status();
}

asio::awaitable<Status> Engine::execute(const Lane& lane, store::MailboxId id,
                                        const std::string& name, Plan plan,
                                        PerSide<SideObservation>& seen,
                                        const PerSide<store::SideState>& recorded) {
  PerSide<bool> acted{};
  // 1. Expunges and flags: one flight per side (MailStore::expunge_and_set_flags), both sides
  //    at once; then forget the expunged pairs and record the merged flags, in one transaction.
  //    A crash before it: both sides report the expunged UIDs vanished next time and their pairs
  //    are forgotten then; the STOREs are recovered from their intents.
  PerSide<std::vector<Uid>> expunge;
  for (const auto& e : plan.expunges) expunge[e.on].push_back(e.uid);
  // Flags: one conditional STORE per message with the merged flags.
  std::map<std::pair<int, Uid>, FlagSet> merged;  // (side, uid) -> merged flags
  for (const auto& r : plan.records) {
    merged[{0, r.pair.local_uid}] = r.pair.flags;
    merged[{1, r.pair.remote_uid}] = r.pair.flags;
  }
  std::set<Uid> modified_local;  // pairs (by local UID) whose store hit MODIFIED
  // A side whose flag changes could not all be applied to the other side (MODIFIED there): its
  // HIGHESTMODSEQ must not move past them, or the next run would take its flags for the base and
  // let the other side's concurrent change overwrite them.
  PerSide<bool> unmerged{};
  PerSide<std::size_t> stored{};
  PerSide<std::vector<FlagUpdate>> updates;
  for (const auto& s : plan.stores) {
    const auto key = std::make_pair(static_cast<int>(index(s.on)), s.uid);
    auto it = merged.find(key);
    if (it == merged.end()) co_return Error(Errc::internal, "store without a merged flag record");
    updates[s.on].push_back(
        {s.uid, it->second, s.unchanged_since.value_or(seen[s.on].highestmodseq), s.add, s.remove});
  }
  // Intent before effect: a STORE whose answer is lost leaves the flags changed on the server
  // with the pair's base unchanged, and the next run would take our own change for the user's
  // (a three-way merge against the wrong base). The intent lets recovery tell them apart.
  std::vector<store::IntentId> store_intents;
  if (!updates[Side::local].empty() || !updates[Side::remote].empty()) {
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    for (Side side : kSides) {
      for (const auto& u : updates[side]) {
        store::Intent intent;
        intent.mailbox = id;
        intent.kind = "store";
        intent.target_side = side;
        intent.source_uid = u.uid;  // the message stored to, on target_side
        intent.flags = join_flags(u.flags);
        auto recorded_intent = db_.record_intent(intent);
        if (!recorded_intent) co_return recorded_intent.error();
        store_intents.push_back(*recorded_intent);
      }
    }
    Status committed = tx->commit();
    if (!committed) co_return committed;
  }
  // Both sides at once, each on its own connection (nothing to do costs nothing).
  auto apply_local =
      lane[Side::local]->expunge_and_set_flags(expunge[Side::local], updates[Side::local]);
  auto apply_remote =
      lane[Side::remote]->expunge_and_set_flags(expunge[Side::remote], updates[Side::remote]);
  const auto applied = co_await both(std::move(apply_local), std::move(apply_remote));
  for (Side side : kSides) {
    const auto& modified = applied[side];
    if (!modified) co_return modified.error();
    if (!expunge[side].empty()) {
      acted[side] = true;
      summary_.mailboxes[name].expunged_on[side] += expunge[side].size();
      log_info("{}expunged {} message(s)", log_prefix(side, name), expunge[side].size());
    }
    if (updates[side].empty()) continue;
    acted[side] = true;
    stored[side] = updates[side].size() - modified->size();
    if (!modified->empty()) unmerged[other(side)] = true;
    for (const auto& r : plan.records) {
      const Uid uid = side == Side::local ? r.pair.local_uid : r.pair.remote_uid;
      if (modified->count(uid)) modified_local.insert(r.pair.local_uid);
    }
  }
  if (!plan.forgets.empty() || !plan.records.empty() || !store_intents.empty()) {
    auto tx = db_.begin();
    if (!tx) co_return tx.error();
    for (const auto& f : plan.forgets) {
      auto removed = db_.remove_pair(id, Side::local, f.pair.local_uid);
      if (!removed) co_return removed.error();
    }
    for (const auto& r : plan.records) {
      if (modified_local.count(r.pair.local_uid)) continue;
      Status saved =
          db_.set_pair_flags(id, Side::local, r.pair.local_uid, join_flags(r.pair.flags));
      if (!saved) co_return saved;
    }
    for (store::IntentId intent : store_intents) {
      Status completed = db_.complete_intent(intent);
      if (!completed) co_return completed;
    }
    Status committed = tx->commit();
    if (!committed) co_return committed;
  }
  for (Side side : kSides) {
    if (stored[side] == 0) continue;
    summary_.mailboxes[name].flags_set_on[side] += stored[side];
    log_info("{}updated flags of {} message(s)", log_prefix(side, name), stored[side]);
  }

  // 2. Copies, each direction in batches, intent before effect.
  PerSide<std::vector<CopyAction>> copies;
  for (auto& c : plan.copies) copies[c.from].push_back(std::move(c));
  plan.copies = {};  // its moved-from shells too: a first sync's list is a mailbox long
  PerSide<std::vector<Uid>> appended;
  // Bodies read with the observation (few and small, ImapStore::kHeldMessages): their copies
  // cost no FETCH.
  PerSide<bool> held{};
  for (Side from : kSides) {
    std::vector<Uid> uids;
    for (const auto& c : copies[from]) uids.push_back(c.uid);
    held[from] = !uids.empty() && lane[from]->holds_bodies(uids);
  }
  // The settle (step 3) of a side that receives only such copies goes with their APPEND, the
  // last command on that side: never behind our STOREs (RFC 9051 §5.5 forbids a FETCH of flags
  // behind a STORE of them in flight), which have been answered by now. It asks from the
  // observed UIDNEXT, so it reads back what was just appended: a few summaries at most.
  PerSide<std::optional<Settled>> presettled;
  const auto settled_with = [&](Side from) {
    return held[from] ? &presettled[other(from)] : nullptr;
  };
  if (held[Side::local] && held[Side::remote]) {
    // Each direction only APPENDs, to its own connection: both at once. Otherwise one after
    // the other, since one direction's FETCH would share a connection with the other's APPEND.
    auto to_remote = copy(lane, id, name, Side::local, std::move(copies[Side::local]), seen,
                          appended[Side::remote], settled_with(Side::local));
    auto to_local = copy(lane, id, name, Side::remote, std::move(copies[Side::remote]), seen,
                         appended[Side::local], settled_with(Side::remote));
    const auto copied = co_await both(std::move(to_remote), std::move(to_local));
    for (Side from : kSides) {
      if (!copied[from]) co_return copied[from];
      acted[other(from)] = true;
    }
  } else {
    for (Side from : kSides) {
      if (copies[from].empty()) continue;
      // The other direction only reads from this one's target: its settle stays valid.
      Status copied = co_await copy(lane, id, name, from, std::move(copies[from]), seen,
                                    appended[other(from)], settled_with(from));
      if (!copied) co_return copied;
      acted[other(from)] = true;
    }
  }

  // 3. Persist UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, now that everything below them is
  //    applied and recorded. After our own changes, HIGHESTMODSEQ may only move past them if
  //    nobody else changed anything meanwhile; otherwise keep the observed value so the next
  //    run sees the concurrent change (RFC 7162 §6).
  auto settle_local = settled_state(lane, id, Side::local, seen[Side::local], acted[Side::local],
                                    expunge[Side::local], appended[Side::local],
                                    std::move(presettled[Side::local]));
  auto settle_remote = settled_state(lane, id, Side::remote, seen[Side::remote],
                                     acted[Side::remote], expunge[Side::remote],
                                     appended[Side::remote], std::move(presettled[Side::remote]));
  auto settled = co_await both(std::move(settle_local), std::move(settle_remote));
  PerSide<store::SideState> next;
  for (Side side : kSides) {
    if (!settled[side]) co_return settled[side].error();
    next[side] = *settled[side];
    // 1 when nothing was recorded: CHANGEDSINCE 1 reports every message's flags.
    if (unmerged[side]) next[side].highestmodseq = recorded[side].highestmodseq.value_or(1);
  }
  // Nothing moved (a plain server's mailbox is looked at on every run): no commit, no fsync.
  if (next[Side::local] == recorded[Side::local] && next[Side::remote] == recorded[Side::remote]) {
    co_return ok_status();
  }
  auto tx = db_.begin();
  if (!tx) co_return tx.error();
  for (Side side : kSides) {
    Status saved = db_.set_side_state(id, side, next[side]);
    if (!saved) co_return saved;
  }
  co_return tx->commit();
}

asio::awaitable<Result<store::SideState>> Engine::settled_state(
    const Lane& lane, store::MailboxId id, Side side, const SideObservation& seen, bool acted,
    const std::vector<Uid>& expunged, const std::vector<Uid>& appended,
    std::optional<Settled> settled) {
  store::SideState next;
  next.uidvalidity = seen.uidvalidity;
  next.uidnext = seen.uidnext;
  next.highestmodseq = seen.highestmodseq;
  if (!acted) co_return next;
  // Our own appends from the observed UIDNEXT on are not read back: their UIDs (APPENDUID) and
  // flags are recorded, and a change to them since shows in the CHANGEDSINCE part of settle().
  // Only a message beyond them can be a delivery by someone else.
  const std::set<Uid> appended_here(appended.begin(), appended.end());
  Uid beyond_ours = seen.uidnext;
  while (appended_here.count(beyond_ours)) ++beyond_ours;
  if (!settled) {
    auto asked = co_await lane[side]->settle(seen.highestmodseq, beyond_ours);
    if (!asked) co_return asked.error();
    settled = std::move(*asked);
  }
  bool only_ours = true;
  UidSet expunged_here;
  for (Uid uid : expunged) expunged_here.add(uid);
  for (const auto& range : settled->vanished.ranges()) {
    for (std::uint64_t uid = range.first; uid <= range.last && only_ours; ++uid) {
      // Bounded: a vanished set we did not cause ends the loop at its first member.
      if (!expunged_here.contains(static_cast<Uid>(uid))) only_ours = false;
    }
  }
  for (const auto& [uid, flags] : settled->flags) {
    auto pair = db_.find_pair(id, side, uid);
    if (!pair) co_return pair.error();
    if (!*pair || !same_flags(split_flags((*pair)->flags), flags)) only_ours = false;
  }
  // Our appends: if they are exactly the UIDs right after the observed UIDNEXT, nobody else
  // delivered in between and UIDNEXT may move past them.
  Uid expected = beyond_ours;
  bool contiguous = true;
  for (const auto& m : settled->above) {
    auto pair = db_.find_pair(id, side, m.uid);
    if (!pair) co_return pair.error();
    if (!*pair) contiguous = false;
    expected = std::max(expected, m.uid + 1);
  }
  if (lane[side]->tier() == Tier::condstore && only_ours) {
    // Expunges by another client meanwhile are not reported (CONDSTORE): the count must be
    // exactly the pairs recorded, or HIGHESTMODSEQ could move past an expunge nobody saw.
    auto paired = db_.count_pairs(id);
    if (!paired) co_return paired.error();
    if (settled->exists != *paired) only_ours = false;
  }
  if (only_ours && contiguous) {
    next.uidnext = expected;
    next.highestmodseq = settled->highestmodseq;
  }
  co_return next;
}

asio::awaitable<Status> Engine::copy(const Lane& lane, store::MailboxId id, const std::string& name,
                                     Side from, std::vector<CopyAction> copies,
                                     PerSide<SideObservation>& seen, std::vector<Uid>& ours,
                                     std::optional<Settled>* settled_with_last) {
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
    copies = {};  // moved into batched and streamed: only the shells were left
  }
  // Batches bounded in bytes (as announced by RFC822.SIZE) and in count.
  const std::size_t batch_limit = copy_batch_bytes(lane[from]->traffic(), lane[to]->traffic());
  std::vector<std::vector<Uid>> batches;
  std::map<Uid, const CopyAction*> by_uid;
  for (std::size_t start = 0; start < batched.size();) {
    std::size_t end = start, bytes = 0;
    while (end < batched.size() && end - start < kCopyBatchCount &&
           (end == start || bytes + batched[end].size <= batch_limit)) {
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
  MailboxReport& report = summary_.mailboxes[name];
  const auto count_copied = [&](std::size_t messages, std::uint64_t bytes) {
    total += messages;
    report.copied_to[to] += messages;
    report.bytes_copied_to[to] += bytes;
    if (options_.progress) options_.progress->copied(name, messages, bytes);
    free_memory_.after(bytes);
  };
  if (options_.progress && (!batched.empty() || !streamed.empty())) {
    std::uint64_t planned = 0;
    for (const auto* part : {&batched, &streamed}) {
      for (const auto& c : *part) planned += c.size;
    }
    options_.progress->copies_planned(name, batched.size() + streamed.size(), planned);
  }
  // The next batch is fetched from `from` while this one is appended to `to`: two connections,
  // so the transfer in one direction hides the other's round trips.
  Result<std::vector<FetchedMessage>> bodies = std::vector<FetchedMessage>{};
  if (!batches.empty()) bodies = co_await lane[from]->fetch_bodies(batches[0]);
  for (std::size_t k = 0; k < batches.size(); ++k) {
    if (!bodies) co_return bodies.error();
    std::vector<OutgoingMessage> messages;
    std::vector<const CopyAction*> actions;
    std::vector<store::IntentId> intents;
    std::uint64_t batch_bytes = 0;
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
      batch_bytes += fetched.body.size();
      OutgoingMessage message;
      message.flags = action.flags;
      message.internal_date =
          action.internal_date.empty() ? fetched.internal_date : action.internal_date;
      message.content = std::move(fetched.body);
      messages.push_back(std::move(message));
      actions.push_back(&action);
    }
    Status committed = tx->commit();  // the intents are durable before the APPEND is sent
    if (!committed) co_return committed;
    const bool more = k + 1 < batches.size();
    Result<Appended> appended = Appended{};
    if (messages.empty()) {
      if (more) bodies = co_await lane[from]->fetch_bodies(batches[k + 1]);
      continue;
    }
    const auto record_batch = [&](const Appended& appended) -> Status {
      Status same_mailbox = check_appended(name, to, appended.uidvalidity, seen);
      if (!same_mailbox) return same_mailbox;
      auto record = db_.begin();
      if (!record) return record.error();
      for (std::size_t i = 0; i < actions.size(); ++i) {
        Status recorded = record_copy(id, from, *actions[i], appended.uids[i], intents[i]);
        if (!recorded) return recorded;
        target_next = std::max(target_next, appended.uids[i] + 1);
      }
      ours.insert(ours.end(), appended.uids.begin(), appended.uids.end());
      Status saved = record->commit();
      if (!saved) return saved;
      count_copied(actions.size(), batch_bytes);
      return ok_status();
    };
    if (more) {
      using namespace asio::experimental::awaitable_operators;
      auto appending = lane[to]->append(name, std::move(messages));
      auto fetching = lane[from]->fetch_bodies(batches[k + 1]);
      auto results = co_await (std::move(appending) && std::move(fetching));
      appended = std::move(std::get<0>(results));
      bodies = std::move(std::get<1>(results));
    } else if (settled_with_last != nullptr && streamed.empty()) {
      // Recorded as soon as the APPEND is answered, before the settle's answer is read: a kill
      // in between must not leave an answered APPEND unrecorded.
      std::function<Status(const Appended&)> on_appended = [&](const Appended& done) {
        return record_batch(done);
      };
      auto settled = co_await lane[to]->append_and_settle(
          name, std::move(messages), seen[to].highestmodseq, seen[to].uidnext, on_appended);
      if (!settled) co_return settled.error();
      *settled_with_last = std::move(*settled);  // empty: settled_state asks again
      continue;
    } else {
      appended = co_await lane[to]->append(name, std::move(messages));
    }
    if (!appended) co_return appended.error();
    Status recorded = record_batch(*appended);
    if (!recorded) co_return recorded;
  }
  for (const auto& action : streamed) {
    auto uid = co_await copy_streamed(lane, id, name, from, action, target_next, seen);
    if (!uid) co_return uid.error();
    target_next = std::max(target_next, *uid + 1);
    ours.push_back(*uid);
    count_copied(1, action.size);
  }
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
  auto pieces = lane[from]->read_body(action.uid, action.size);
  HashingSource source(*pieces, db_, intent_id);
  OutgoingMessage message;
  message.flags = action.flags;
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

MailboxReport RunSummary::total() const {
  MailboxReport sum;
  for (const auto& [name, r] : mailboxes) {
    for (Side side : kSides) {
      sum.copied_to[side] += r.copied_to[side];
      sum.bytes_copied_to[side] += r.bytes_copied_to[side];
      sum.expunged_on[side] += r.expunged_on[side];
      sum.flags_set_on[side] += r.flags_set_on[side];
    }
    sum.conflicts += r.conflicts;
  }
  return sum;
}

void Engine::count_failure(const std::string& name, const std::string& why) {
  ++summary_.mailboxes_failed;
  MailboxReport& report = summary_.mailboxes[name];
  report.outcome = MailboxReport::Outcome::failed;
  report.error = why;
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
