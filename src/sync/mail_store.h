// The seam between the sync engine and a mail server (in the spirit of isync's driver.h): what
// the engine may ask of one side, in the engine's own terms. No IMAP syntax crosses it: mailbox
// names are internal names (UTF-8, hierarchy delimiter replaced by '\0'), messages are UIDs,
// flags are canonical FlagSets (model.h), and every answer is a value or an Error.
//
// Implementations:
// - ImapStore (imap_store.h): a real server through net::Client, pipelined UID commands;
// - MemoryStore (memory_store.h): an in-memory server with IMAP semantics and fault injection,
//   for the deterministic simulator and the engine's unit tests;
// - DryRunStore (dry_run_store.h): forwards what reads and records what would change.
//
// Contract common to all: one MailStore is one connection to one server, used by one coroutine
// at a time. "The selected mailbox" is the one the last observe()/observe_all() read; the
// message-level calls (fetch, append's UIDs, store, expunge) act on it. A call that fails with
// an I/O-class error (Errc::io/eof/timeout) may or may not have taken effect on the server
// (a lost acknowledgement); the engine records its intent before any effect for that reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "base/error.h"
#include "store/state_db.h"
#include "sync/model.h"

namespace twinbox::sync {

// How a store learns what changed in a mailbox since the last sync, best first. Chosen per
// side from the server's capabilities (and the config's `change-detection` cap):
// - qresync: SELECT (QRESYNC) reports flag changes and expunges since a mod-sequence (RFC 7162);
// - condstore: flag changes since a mod-sequence (CHANGEDSINCE); expunges are not reported, the
//   engine compares the server's UID list with the recorded pairs when the count says so;
// - plain: UID and FLAGS of every message at every sync (RFC 9051 only); flags are changed by
//   +FLAGS/-FLAGS deltas, so another client's concurrent change to other flags survives.
enum class Tier { plain, condstore, qresync };
std::string_view tier_name(Tier tier);

// The largest UID (RFC 9051 §2.3.1.1: a 32-bit unsigned number). One definition for sync.
inline constexpr Uid kMaxUid = store::kMaxUid;

// A set of UIDs kept as sorted disjoint ranges, never expanded: a server may report every UID
// (1:4294967295) as vanished.
class UidSet {
 public:
  struct Range {
    Uid first = 0, last = 0;  // inclusive
    friend bool operator==(const Range&, const Range&) = default;
  };
  void add(Uid first, Uid last);
  void add(Uid uid) { add(uid, uid); }
  void add(const UidSet& other);
  bool contains(Uid uid) const;
  bool empty() const { return ranges_.empty(); }
  const std::vector<Range>& ranges() const { return ranges_; }
  friend bool operator==(const UidSet&, const UidSet&) = default;

 private:
  std::vector<Range> ranges_;  // sorted, disjoint, non-adjacent
};

// The UIDs from 1 to below-1 that `present` lacks: what a listing of every message below a
// recorded UIDNEXT says was expunged.
UidSet absent_below(const std::set<Uid>& present, Uid below);

struct ListedMailbox {
  std::string name;  // internal name: UTF-8, reference stripped, delimiter replaced by '\0'
  std::string wire;  // the name as the server sent it, for messages
  bool selectable = true;
  bool subscribed = false;
  // What the server said without selecting the mailbox (LIST-STATUS), when it said it.
  std::optional<std::uint32_t> uidvalidity, uidnext;
  std::optional<ModSeq> highestmodseq;
  // The message count, from stores that cannot report expunges (Tier::condstore): a CONDSTORE
  // server need not raise HIGHESTMODSEQ on an expunge, so an unchanged one proves nothing alone.
  std::optional<std::uint32_t> messages;
};

// Takes the status fields `heard` carries (a partial status leaves the others as they were).
void update_status(ListedMailbox& m, const ListedMailbox& heard);

// What a wait for changes heard (watch mode), so that a cycle can look at those mailboxes only.
struct Announcement {
  // Mailboxes (internal names) announced with a status: what the server said, which may be
  // partial (NOTIFY sends what changed: HIGHESTMODSEQ alone for a flag change).
  std::map<std::string, ListedMailbox> statuses;
  // Mailboxes announced without a status (the IDLEd mailbox's EXISTS or FETCH).
  std::set<std::string> touched;
  // Mailboxes announced by a LIST (created, deleted, renamed, subscribed or not): name,
  // selectable, subscribed. One that differs from what the cycle listed needs a full look.
  std::map<std::string, ListedMailbox> listings;
  // A change only a look at every mailbox can place: an expunge in the IDLEd mailbox (the
  // message may have moved to another), or a name that could not be read.
  bool everywhere = false;

  bool any() const {
    return everywhere || !statuses.empty() || !touched.empty() || !listings.empty();
  }
  // A status heard for m.name: a later one updates the fields it carries.
  void add_status(const ListedMailbox& m);
  // Adds what `later` heard, as above.
  void merge(const Announcement& later);
};

// What one side reported for one mailbox: its state and what changed since the recorded one.
struct SideObservation {
  SideChanges changes;  // vanished is left empty: the engine intersects vanished_set
  UidSet vanished_set;  // expunged since the recorded state (may name unknown UIDs, or all)
  // False when the store cannot tell expunges (Tier::condstore): vanished_set is then empty and
  // the engine asks uids() when the message count does not add up.
  bool expunges_reported = true;
  std::uint32_t uidvalidity = 0;
  std::uint32_t uidnext = 0;  // as announced when the mailbox was opened
  ModSeq highestmodseq = 0;   // at the end of the observation (RFC 7162 §6)
  std::uint32_t exists = 0;   // message count at the end of the observation
  bool uidvalidity_changed = false;
  // Evidence that the server's change tracking cannot be trusted for this mailbox (HIGHESTMODSEQ
  // below the recorded value, or gone backwards while selected): the engine then re-reads the
  // whole mailbox instead of relying on the reported changes.
  std::vector<std::string> distrust;
};

// UID, size, flags, INTERNALDATE and MODSEQ of one message.
struct MessageSummary {
  Uid uid = 0;
  std::uint64_t size = 0;
  FlagSet flags;
  std::string internal_date;
  ModSeq modseq = 0;
};

// Every message of a mailbox (repair, distrust): the state as after observe(), and the messages
// in ascending UID order.
struct FullObservation {
  SideObservation state;
  std::vector<MessageSummary> messages;
};

struct FetchedMessage {
  Uid uid = 0;
  std::string body;
  std::string internal_date;  // as the server sent it
};

// A message to append: its flags, INTERNALDATE (empty: the server's clock) and octets.
struct OutgoingMessage {
  FlagSet flags;
  std::string internal_date;
  std::string content;  // empty for a streamed append
};

struct Appended {
  std::uint32_t uidvalidity = 0;
  std::vector<Uid> uids;  // in the order of the messages given
};

// What changed since a mod-sequence, plus every message at or above a UID, after our own
// changes; and the HIGHESTMODSEQ after both.
struct Settled {
  std::map<Uid, FlagSet> flags;
  UidSet vanished;
  std::vector<MessageSummary> above;
  ModSeq highestmodseq = 0;
  std::uint32_t exists = 0;  // the message count after both
};

// Replace a message's flags, unless it changed after `unchanged_since` (RFC 7162 §3.1.3). A
// store without conditional STORE (Tier::plain) applies the difference from the flags the side
// showed instead (the planner's StoreAction), so another client's change to others survives.
struct FlagUpdate {
  Uid uid = 0;
  FlagSet flags;
  ModSeq unchanged_since = 0;
  FlagSet add, remove;
};

// A message body handed out in pieces (never all in memory), for streamed copies and hashes.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // The next piece, never empty before the announced size is reached; an error ends the stream.
  virtual asio::awaitable<Result<std::string>> next_piece() = 0;
};

// A body of the selected mailbox read piecewise; finished() once every octet was handed out.
class BodyReader : public BodySource {
 public:
  virtual bool finished() const = 0;
};

// Bytes exchanged with a server (after TLS/COMPRESS), for the run summary.
struct Traffic {
  std::uint64_t in = 0, out = 0;
  std::uint64_t round_trips = 0;  // sent, then waited for the answer (net::Client::round_trips)
  // The quickest of those round trips (net::Client::fastest_round_trip); nullopt without any.
  std::optional<std::chrono::steady_clock::duration> fastest_round_trip;
};

class MailStore {
 public:
  virtual ~MailStore() = default;

  virtual Side side() const = 0;
  // How this connection detects changes (see Tier); fixed once the store is open.
  virtual Tier tier() const = 0;
  // The hierarchy delimiter, once known (command-line names use the local one).
  virtual asio::awaitable<Result<std::optional<char>>> delimiter() = 0;

  // --- Mailboxes ---
  // Mailboxes matching the patterns (internal names, '*' and '%' as in LIST), with their
  // subscription and, where the server offers it cheaply, their status.
  virtual asio::awaitable<Result<std::vector<ListedMailbox>>> list(
      const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts) = 0;
  // Succeeds when the mailbox exists afterwards (made by us or by someone else).
  virtual asio::awaitable<Status> create(const std::string& name) = 0;
  virtual asio::awaitable<Status> subscribe(const std::string& name, bool on) = 0;
  // create() of each name, in order, as few round trips as the store can: one Status per name
  // (Errc::rejected: the server refused that name); an Error when the connection failed.
  // By default one create() after the other.
  virtual asio::awaitable<Result<std::vector<Status>>> create_all(
      const std::vector<std::string>& names);
  // subscribe() of each (name, on), in order, as few round trips as the store can; the first
  // failure. By default one subscribe() after the other.
  virtual asio::awaitable<Status> subscribe_all(
      const std::vector<std::pair<std::string, bool>>& subscriptions);
  virtual asio::awaitable<Status> remove(const std::string& name) = 0;
  // Inferiors follow (RFC 9051 §6.3.6).
  virtual asio::awaitable<Status> rename(const std::string& from, const std::string& to) = 0;

  // --- Observing one mailbox (it becomes the selected one) ---
  // What changed since `recorded` (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ; all unset on a first
  // sync): expunges, flag changes with their MODSEQ, and every message at or above the recorded
  // UIDNEXT. When UIDVALIDITY differs from the recorded one, only the state is filled in and
  // uidvalidity_changed is set. `listed_uidnext`: UIDNEXT as the LIST showed it (0: not shown).
  // Past the recorded one, the new messages can be asked for with the SELECT, before its answer,
  // and when they are few, their bodies too (holds_bodies()). A hint: wrong, it costs a round
  // trip or a few bytes, never a message.
  virtual asio::awaitable<Result<SideObservation>> observe(const std::string& name,
                                                           const store::SideState& recorded,
                                                           std::uint32_t listed_uidnext) = 0;
  // Every message, without relying on change tracking.
  virtual asio::awaitable<Result<FullObservation>> observe_all(const std::string& name) = 0;
  // Every UID of the selected mailbox now (UID SEARCH ALL): expunges for Tier::condstore.
  virtual asio::awaitable<Result<UidSet>> uids() = 0;
  // UIDNEXT of the selected mailbox as last reported (0 when unknown).
  virtual std::uint32_t uidnext() const = 0;

  // --- Messages of the selected mailbox ---
  // Bodies and INTERNALDATEs of `uids`, in that order; a UID that no longer exists is left out.
  virtual asio::awaitable<Result<std::vector<FetchedMessage>>> fetch_bodies(
      const std::vector<Uid>& uids) = 0;
  // True when fetch_bodies(uids) would answer from what this store already read (bodies asked
  // with the observation), without using the connection: the engine may then use it for
  // something else at the same time (both copy directions at once). By default, never.
  virtual bool holds_bodies(const std::vector<Uid>& uids) const;
  // Summaries of every message with UID >= `from`, ascending.
  virtual asio::awaitable<Result<std::vector<MessageSummary>>> summaries_from(Uid from) = 0;
  // Which of the messages (UID -> announced size) have a body of exactly that size: only those
  // can be streamed, since a streamed append announces its size before the body is read.
  virtual asio::awaitable<Result<std::set<Uid>>> exact_sizes(
      const std::map<Uid, std::uint64_t>& sizes) = 0;
  // The body of `uid` (of exactly `size` octets) in pieces.
  virtual std::unique_ptr<BodyReader> read_body(Uid uid, std::uint64_t size) = 0;
  // After our own changes: see Settled.
  virtual asio::awaitable<Result<Settled>> settle(ModSeq modseq, Uid uidnext) = 0;
  // Replaces flags conditionally; returns the UIDs that were NOT changed because they had
  // changed since their bound (MODIFIED).
  virtual asio::awaitable<Result<std::set<Uid>>> set_flags(
      const std::vector<FlagUpdate>& updates) = 0;
  // Expunges exactly `uids` (never other messages, e.g. other clients' \Deleted ones).
  virtual asio::awaitable<Status> expunge(const std::vector<Uid>& uids) = 0;
  // expunge(`expunges`), then set_flags(`updates`) (either may be empty), as few round trips as
  // the store can; returns set_flags()'s answer. By default one after the other.
  virtual asio::awaitable<Result<std::set<Uid>>> expunge_and_set_flags(
      const std::vector<Uid>& expunges, const std::vector<FlagUpdate>& updates);

  // --- Appending to a mailbox (need not be the selected one) ---
  virtual asio::awaitable<Result<Appended>> append(const std::string& name,
                                                   std::vector<OutgoingMessage> messages) = 0;
  // append() to the selected mailbox, then settle(modseq, uidnext), as few round trips as the
  // store can: an IMAP store sends the settle's FETCHes behind the APPEND, before its answer,
  // so they may or may not see the appended messages (either is safe for Settled's reader: they
  // are recorded by then). Never after a STORE still in flight (RFC 9051 §5.5).
  // `on_appended` gets the APPEND's answer before the settle's is read; its error ends the call.
  // The settle is empty when it failed after the APPEND succeeded (a settle() says why).
  // By default one after the other.
  virtual asio::awaitable<Result<std::optional<Settled>>> append_and_settle(
      const std::string& name, std::vector<OutgoingMessage> messages, ModSeq modseq, Uid uidnext,
      const std::function<Status(const Appended&)>& on_appended);
  // One message of exactly `size` octets pulled from `source` while it is written.
  virtual asio::awaitable<Result<Appended>> append_streamed(const std::string& name,
                                                            OutgoingMessage message,
                                                            std::uint64_t size,
                                                            BodySource& source) = 0;

  // --- Watch mode ---
  // Leave the selected mailbox, so that list() reports every mailbox exactly.
  virtual asio::awaitable<Status> unselect() = 0;
  // Whether the server can announce changes in every mailbox on this connection (NOTIFY).
  virtual bool can_notify() const = 0;
  virtual asio::awaitable<Status> notify(bool on) = 0;
  // Start waiting for changes in `name`; false when the server cannot (no IDLE).
  virtual asio::awaitable<Result<bool>> start_idle(const std::string& name) = 0;
  // Waits up to `slice` for the server to announce something. What arrives is kept for
  // take_announcements(), so a wait cancelled at any point loses nothing (the engine waits on
  // both sides at once and cancels the slower).
  virtual asio::awaitable<Status> wait_for_announcement(std::chrono::milliseconds slice) = 0;
  // What was announced so far (taken: the next call starts afresh); an error if the server said
  // BYE.
  virtual Result<Announcement> take_announcements() = 0;
  // The status of these mailboxes (internal names, none selected), as list() reports it. With
  // NOTIFY on, this is what closes the window between a look at a mailbox and its unselect.
  // By default from a list() of everything; an IMAP store asks STATUS for each.
  virtual asio::awaitable<Result<std::vector<ListedMailbox>>> status(
      const std::vector<std::string>& names);
  virtual asio::awaitable<Status> stop_idle() = 0;

  // --- The connection ---
  // This connection is about to do more than list: a run that finds nothing to do never calls
  // it. An IMAP store turns on COMPRESS here (configured and offered); by default, nothing.
  virtual asio::awaitable<Status> prepare_for_work();
  virtual Traffic traffic() const = 0;
  // Closes without a goodbye (every command has completed).
  virtual void close() = 0;
  // Says goodbye (LOGOUT) and closes.
  virtual asio::awaitable<void> logout() = 0;
};

// Opens connections to the two servers. `sibling` is an open store of the same side, whose
// knowledge (the delimiter) a new connection may reuse.
class StoreConnector {
 public:
  virtual ~StoreConnector() = default;
  virtual asio::awaitable<Result<std::unique_ptr<MailStore>>> open(Side side,
                                                                   const MailStore* sibling) = 0;
  // True when opening costs nothing (in memory): extra connection pairs need no judgement of
  // whether their handshake pays, and no clock decides it (the simulator stays deterministic).
  virtual bool opens_instantly() const { return false; }
};

}  // namespace twinbox::sync
