// The sync engine: one run of the main job. It connects both sides, reconciles the mailbox
// lists, and for each mailbox pair observes both sides, recovers interrupted work, asks the pure
// planner what to do and executes the plan, recording every intent before its effect.
//
// Crash safety: an APPEND is preceded by a durable intent naming the source message, its size and
// SHA-256, and the target's UIDNEXT at that time; the pair is recorded and the intent completed in
// one transaction after APPENDUID. A run killed anywhere leaves either no copy (the intent finds
// nothing and the message is copied again) or exactly one (the intent finds it among the UIDs
// above the recorded UIDNEXT and pairs it). A flag STORE has an intent too (the flags it sets):
// when its answer is lost, recovery adopts the flags that arrived as the pair's base instead of
// taking them for the user's change. UIDNEXT and HIGHESTMODSEQ are persisted only after everything
// below them is applied and recorded.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "base/memory.h"
#include "config/config.h"
#include "config/mailbox_pattern.h"
#include "store/state_db.h"
#include "sync/interimap_import.h"
#include "sync/mail_store.h"
#include "sync/progress.h"

namespace twinbox::sync {

// One connection to each side; mailboxes are synced on several lanes at once (--jobs).
using Lane = PerSide<MailStore*>;

struct RunSummary {
  std::size_t mailboxes_seen = 0, mailboxes_synced = 0, mailboxes_failed = 0;
  PerSide<std::uint64_t> wire_in{}, wire_out{};  // bytes on the wire (after TLS/COMPRESS)
  PerSide<std::uint64_t> round_trips{};          // over every connection (Traffic::round_trips)
  std::size_t cycles = 0;
  std::map<std::string, MailboxReport> mailboxes;  // by internal name
  // The run's copies, expunges, flag updates, bytes and conflicts: every mailbox's summed.
  MailboxReport total() const;
};

struct EngineOptions {
  std::vector<std::string> mailboxes;  // command-line MAILBOX...: replaces list-mailbox
  // --jobs: mailboxes synced at once, each on its own pair of connections (1 = InterIMAP's one
  // connection per side). Extra connections are opened only when that many mailboxes changed.
  std::size_t jobs = 4;
  bool dry_run = false;
  // --repair: re-read every message of both sides instead of asking for changes, re-copy what is
  // missing, pair what matches by content, report every discrepancy.
  bool repair = false;
  // --watch[=N]: after a cycle, wait for changes (IDLE on INBOX, or NOTIFY on every mailbox with
  // `notify`) and run a cycle when one comes, or every `watch` at the latest. Connection losses
  // are retried with backoff.
  std::optional<std::chrono::seconds> watch;
  bool notify = false;
  // A side logs in with a token a command renews (token-command): in watch mode, a refused login
  // after the run has once been connected is retried like a lost connection (the next login
  // runs the command again), since tokens expire and are revoked while twinbox runs.
  bool renewable_credentials = false;
  // Told of each mailbox and copy as the run goes (a progress display); may be null.
  ProgressObserver* progress = nullptr;
  // Called after each completed cycle with the summary so far (--stats-json in watch mode).
  std::function<void(const RunSummary&)> cycle_done;
};

// Which of local, remote and the state database --delete/--rename act on (--target).
struct Targets {
  bool local = true, remote = true, database = true;
  bool side(Side s) const { return s == Side::local ? local : remote; }
};

class Engine {
 public:
  // `connector` opens the connections to both servers (ImapConnector; MemoryConnector in the
  // simulator). With options.dry_run every store is wrapped in a DryRunStore and `db` should be
  // a scratch copy (StateDb::open_scratch): nothing on the servers or on disk changes.
  Engine(const config::Config& config, EngineOptions options, store::StateDb& db,
         StoreConnector& connector);

  // The whole run. Errors that end it are returned; per-mailbox failures are logged, counted in
  // the summary and do not stop the other mailboxes.
  asio::awaitable<Result<RunSummary>> run();

  // --delete NAME...: DELETE on the targeted servers where it exists, and forget it in the
  // database if targeted. INBOX is refused; an unknown name changes nothing.
  asio::awaitable<Status> delete_mailboxes(const std::vector<std::string>& names, Targets targets);
  // --rename FROM TO: RENAME on the targeted servers (inferiors follow, RFC 9051 §6.3.6) and in
  // the database. Refused when TO exists on a targeted side or in the database.
  asio::awaitable<Status> rename_mailbox(const std::string& from, const std::string& to,
                                         Targets targets);

  // --import-interimap: records InterIMAP's state (read_interimap_db()) in the empty state
  // database, with each pair's base flags recovered from both servers (import_base_flags()).
  // Mailboxes InterIMAP never finished, or whose UIDVALIDITY changed since, are left out: the
  // next sync pairs their messages by content. Nothing on the servers changes; the database is
  // written in one transaction.
  asio::awaitable<Status> import_interimap(const std::vector<InterimapMailbox>& mailboxes);

  // SIGINT/SIGTERM: finish the step in progress (the mailbox being synced keeps its state
  // consistent at every step), then end the run successfully.
  void request_stop() { stop_ = true; }
  // What the run did so far (also after run() returned an error).
  const RunSummary& summary() const { return summary_; }
  bool stop_requested() const { return stop_; }

 private:
  Status compile_ignore_pattern();
  // Counts a cycle and starts its clock (worth_another_lane) and the progress display.
  void begin_cycle(std::size_t looked_at, std::size_t to_sync);
  // A full cycle: LIST both sides, create what is missing, sync every mailbox that moved.
  asio::awaitable<Status> cycle();
  // What a watch woke up for: every mailbox (the interval passed, or a change only a full cycle
  // can place), or the mailboxes named, which announced changes.
  struct Wake {
    bool everywhere = true;
    std::set<std::string> mailboxes;
  };
  // Watch mode: waits for announced changes (NOTIFY, or IDLE on INBOX) or the next full cycle.
  // Announcements that arrive together (within a few tens of ms: a move is two) are one wake.
  asio::awaitable<Result<Wake>> wait_for_changes();
  // Folds what `side` announced into listed_; adds the mailboxes it names to `names`. False when
  // only a full cycle can place it (a new, deleted or renamed mailbox, a name not listed).
  bool take_announcement(Side side, const Announcement& heard, std::set<std::string>& names);
  // Syncs `names` on lane 0 without a LIST. With NOTIFY on, then asks their STATUS on both sides
  // (a change made while one was selected is announced by nothing after the unselect); returns
  // those that changed again.
  asio::awaitable<Result<std::set<std::string>>> targeted_cycle(const std::set<std::string>& names);
  asio::awaitable<void> pause(std::chrono::milliseconds duration);  // interrupted by a stop
  // Closes every connection of `lanes` (no LOGOUT: nothing is pending) and counts its bytes.
  void close_lanes(std::vector<PerSide<std::unique_ptr<MailStore>>>& lanes);
  void disconnect();
  // Internal name of a name given on the command line (local delimiter -> NUL).
  std::string from_command_line(std::string name) const;
  // connect(), then learn the local delimiter that command-line names use.
  asio::awaitable<Status> connect_for_names();
  asio::awaitable<Status> connect();
  asio::awaitable<Result<std::unique_ptr<MailStore>>> open_store(Side side);
  asio::awaitable<Result<PerSide<std::unique_ptr<MailStore>>>> open_lane();
  // MailStore::prepare_for_work() on both sides at once: the lane has work beyond the LIST.
  asio::awaitable<Status> prepare_for_work(Lane lane);
  Lane lane0() const;
  // Whether LIST-STATUS and the database say that the mailbox may have changed.
  Result<bool> needs_sync(const std::string& name);
  // Syncs work[next++] on `lane` until the list is exhausted (or a stop is requested).
  // Opens connection pair `k` (0-based), then works like sync_worker(); gives up quietly (a
  // warning) when the servers refuse more connections.
  asio::awaitable<void> extra_lane_worker(std::size_t k, const std::vector<std::string>& work,
                                          std::size_t& next, std::optional<Error>& fatal);
  // Waits until another lane would pay for its handshake (true), or the work ran out (false).
  asio::awaitable<bool> worth_another_lane(const std::vector<std::string>& work,
                                           const std::size_t& next,
                                           const std::optional<Error>& fatal);
  asio::awaitable<void> sync_worker(Lane lane, const std::vector<std::string>& work,
                                    std::size_t& next, std::optional<Error>& fatal);
  asio::awaitable<Result<std::vector<std::string>>> reconcile_mailboxes();
  // LIST (with status where offered) of the configured patterns on both sides at once.
  asio::awaitable<PerSide<Result<std::vector<ListedMailbox>>>> list_both();
  // Whether a mailbox changed since the cycle recorded it (a fresh LIST-STATUS against the
  // database); false when the listing carries no status to tell.
  asio::awaitable<Result<bool>> changed_since_cycle();
  // One mailbox pair, in phases: observe both sides, recover what an interrupted run left,
  // load the recorded pairs, re-read everything if the server cannot be trusted, turn it all
  // into the planner's observation, plan, and execute (or print, in a dry run).
  asio::awaitable<Status> sync_mailbox(const std::string& name, const Lane& lane);
  // What one mailbox's sync knows so far, passed from phase to phase.
  struct MailboxSync {
    std::string name;
    store::MailboxId id = 0;
    PerSide<store::SideState> recorded;
    PerSide<SideObservation> seen;
    PerSide<bool> reset{};  // UIDVALIDITY changed
    // The recorded pairs: all of them, or (`pair_count` set) only those whose UIDs the changes
    // name, when both sides report every change (QRESYNC). A change to one message then costs
    // no read of the mailbox's other pairs.
    std::vector<store::Pair> pairs;
    PerSide<std::set<Uid>> paired;            // the UIDs of `pairs`
    std::optional<std::uint64_t> pair_count;  // all the mailbox's pairs, when `pairs` holds some
    PerSide<std::optional<FullObservation>> full;  // after a re-read
    // Sides observed without a recorded UIDNEXT (a first sync): observe() listed every message,
    // these UIDs.
    PerSide<std::optional<std::set<Uid>>> listed;
    std::map<std::pair<std::size_t, Uid>, std::string> hashes;  // (side, UID) -> SHA-256
  };
  asio::awaitable<Status> observe_mailbox(const Lane& lane, MailboxSync& m);
  // `side`'s UIDNEXT as the last listing showed it, 0 when it did not (MailStore::observe's
  // hint).
  std::uint32_t listed_uidnext(Side side, const MailboxSync& m) const;
  // Orphans of a UIDVALIDITY change re-matched; pending APPEND intents resolved.
  asio::awaitable<Status> recover_interrupted(const Lane& lane, MailboxSync& m);
  // The pairs the observation needs: those the changes name when `named_only` and both sides
  // report every change, else all.
  Status load_pairs(MailboxSync& m, bool named_only);
  // Expunges a store could not report (Tier::condstore), found from its UID list.
  asio::awaitable<Status> find_expunges(const Lane& lane, MailboxSync& m);
  static std::size_t expected_count(const MailboxSync& m, Side side);
  asio::awaitable<Status> reread_if_distrusted(const Lane& lane, MailboxSync& m);
  asio::awaitable<Result<MailboxObservation>> observation_of(const Lane& lane, MailboxSync& m);
  asio::awaitable<Status> rematch_orphans(const Lane& lane, MailboxSync& m);
  asio::awaitable<Status> recover_intents(const Lane& lane, MailboxSync& m,
                                          const std::vector<store::Intent>& pending);
  // Pending flag STOREs of an interrupted run: where every STORE of a pair arrived, their flags
  // become the pair's base; where only some did, the old base stays.
  Status recover_stores(MailboxSync& m, const std::vector<store::Intent>& pending);
  asio::awaitable<Status> pair_by_content(const Lane& lane, MailboxSync& m,
                                          MailboxObservation& observation);
  // A body to find among candidates: its SHA-256 if known, else read from `side`/`uid`; only
  // candidates with UID >= min_uid qualify.
  struct WantedBody {
    Side side = Side::local;
    Uid uid = 0;
    std::uint64_t size = 0;
    std::optional<std::string> hash;
    Uid min_uid = 1;
  };
  // The one size + SHA-256 matcher (UIDVALIDITY re-match, crash recovery, pairing by content):
  // for each wanted body in order, the index of the first candidate on `side` not yet taken with
  // the same size and hash. Bodies are hashed lazily, once per mailbox sync (m.hashes).
  asio::awaitable<Result<std::vector<std::optional<std::size_t>>>> match_by_content(
      const Lane& lane, MailboxSync& m, const std::vector<WantedBody>& wanted, Side side,
      const std::vector<MessageSummary>& candidates);
  // SHA-256 of a message's body (`size`: its RFC822.SIZE; large ones are hashed piecewise); ""
  // when the message is gone.
  asio::awaitable<Result<std::string>> body_hash(const Lane& lane, MailboxSync& m, Side side,
                                                 Uid uid, std::uint64_t size);
  // Takes the plan: its copies move on into copy() (a list per mailbox, held once).
  asio::awaitable<Status> execute(const Lane& lane, store::MailboxId id, const std::string& name,
                                  Plan plan, PerSide<SideObservation>& seen,
                                  const PerSide<store::SideState>& recorded);
  // The UIDNEXT and HIGHESTMODSEQ a side may record after our changes (see execute()), from
  // `settled` when the last APPEND already asked for it (copy()), else from a settle().
  asio::awaitable<Result<store::SideState>> settled_state(const Lane& lane, store::MailboxId id,
                                                          Side side, const SideObservation& seen,
                                                          bool acted,
                                                          const std::vector<Uid>& expunged,
                                                          const std::vector<Uid>& appended,
                                                          std::optional<Settled> settled);
  // Adds the UIDs it appended on the other side to `ours`. With `settled_with_last`, the last
  // APPEND (when it is the last command on that side: no streamed copy follows) asks for the
  // settle too (MailStore::append_and_settle), and its answer goes there.
  asio::awaitable<Status> copy(const Lane& lane, store::MailboxId id, const std::string& name,
                               Side from, std::vector<CopyAction> copies,
                               PerSide<SideObservation>& seen, std::vector<Uid>& ours,
                               std::optional<Settled>* settled_with_last);
  // One large message, streamed (see HashingSource in engine.cc); returns its new UID.
  asio::awaitable<Result<Uid>> copy_streamed(const Lane& lane, store::MailboxId id,
                                             const std::string& name, Side from,
                                             const CopyAction& action, Uid target_next,
                                             const PerSide<SideObservation>& seen);
  // After APPENDUID: the APPENDUID must name the mailbox we saw.
  Status check_appended(const std::string& name, Side to, std::uint32_t uidvalidity,
                        const PerSide<SideObservation>& seen) const;
  // In the caller's transaction: the copy becomes a pair and its intent is completed.
  Status record_copy(store::MailboxId id, Side from, const CopyAction& action, Uid target_uid,
                     store::IntentId intent);
  bool ignored(const std::string& name) const;
  // Records a mailbox's failure in the summary (the caller logs it).
  void count_failure(const std::string& name, const std::string& why);

  const config::Config& config_;
  EngineOptions options_;
  store::StateDb& db_;
  StoreConnector& connector_;
  PerSide<std::unique_ptr<MailStore>> stores_;                    // lane 0: lists, watches, syncs
  std::vector<PerSide<std::unique_ptr<MailStore>>> extra_lanes_;  // lanes 1..jobs-1, per cycle
  std::chrono::steady_clock::duration lane_open_time_{};          // how long lane 0 took
  PerSide<bool> login_unanswered_{};  // lane 0 was open before a login's answer (presumed)
  std::chrono::steady_clock::time_point cycle_started_;
  std::size_t finished_ = 0;             // mailboxes done in this cycle, by every lane
  std::optional<char> local_delimiter_;  // for command-line names
  PerSide<std::map<std::string, ListedMailbox>> listed_;
  PerSide<bool> notifying_{};  // a NOTIFY is set on lane 0 (it stays across targeted cycles)
  std::chrono::steady_clock::time_point full_cycle_due_;  // watch mode
  // With NOTIFY: when a LIST-STATUS checks that every change since a targeted sync was announced.
  std::optional<std::chrono::steady_clock::time_point> verify_due_;
  RunSummary summary_;
  // Copies free bodies of every size: glibc keeps that memory unless it is handed back
  // (base/memory.h). Once per 8 MiB copied: with 1 MiB batches, the large corpus's peak RSS
  // went from 35.6 to 31.2 MiB for 6-10 % more CPU (docs/bench/memory-large.md).
  FreeMemoryReturner free_memory_{8u << 20};
  bool stop_ = false;
  std::optional<config::MailboxPattern> ignore_;  // ignore-mailbox, compiled once per Engine
};

// The internal name with '/' for the delimiter, for messages.
std::string shown(const std::string& internal);
// "local(INBOX)": names one side of one mailbox in error messages.
std::string mailbox_label(Side side, const std::string& internal_name);
// The prefix of log lines about one side of one mailbox: the config's log-prefix expanded
// (InterIMAP's default gives "local(INBOX): ").
std::string log_prefix(Side side, const std::string& internal_name);

}  // namespace twinbox::sync
