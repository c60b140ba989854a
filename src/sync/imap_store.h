// The MailStore of a real IMAP server, reached through net::Client: it turns the engine's
// questions ("what changed in this mailbox since HIGHESTMODSEQ m?") into pipelined UID commands
// and the answers into mail_store.h values. Works with any IMAP4rev1 server; the tier of change
// detection and the fallbacks follow the capabilities (capabilities.h).
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "net/client.h"
#include "store/state_db.h"
#include "sync/mail_store.h"

namespace twinbox::sync {

class ImapConnector;

class ImapStore : public MailStore {
 public:
  ImapStore(Side side, std::unique_ptr<net::Client> client, std::string list_reference);

  net::Client& client() { return *client_; }
  // Where a fresh connection comes from when a presumed login does not hold (list()).
  void set_connector(ImapConnector* connector) { connector_ = connector; }
  // Takes the delimiter another connection to the same server learned, if it knows it.
  void adopt_delimiter(const ImapStore& other) {
    if (!other.delimiter_known_) return;
    delimiter_ = other.delimiter_;
    delimiter_known_ = true;
  }
  // Chooses the tier (the best the server offers, at most `limit`) and sends ENABLE QRESYNC for
  // that tier without waiting: its answer comes with the first LIST's (one round trip for both).
  // enabled() reads it, falling back to CONDSTORE when the server does not confirm it.
  Status prepare(Tier limit = Tier::qresync);
  // Asks the server for its hierarchy delimiter unless a LIST already told it.
  asio::awaitable<Status> learn_delimiter();
  // Internal name -> the server's name (reference prefix, delimiter, modified UTF-7).
  Result<std::string> server_name(const std::string& internal) const;

  Side side() const override { return side_; }
  Tier tier() const override { return tier_; }
  asio::awaitable<Result<std::optional<char>>> delimiter() override;
  // LIST (select-opts) reference (patterns) RETURN (SUBSCRIBED STATUS (...)), one round trip.
  asio::awaitable<Result<std::vector<ListedMailbox>>> list(
      const std::vector<std::string>& patterns,
      const std::vector<std::string>& select_opts) override;
  asio::awaitable<Status> create(const std::string& internal) override;
  asio::awaitable<Status> subscribe(const std::string& internal, bool on) override;
  // The CREATEs of one depth of the hierarchy go out together, one round trip per depth: a
  // CREATE never travels with that of a name above it (a server that runs pipelined commands
  // concurrently could make the parent first, as a \Noselect name).
  asio::awaitable<Result<std::vector<Status>>> create_all(
      const std::vector<std::string>& internals) override;
  // Every (UN)SUBSCRIBE at once: one round trip.
  asio::awaitable<Status> subscribe_all(
      const std::vector<std::pair<std::string, bool>>& subscriptions) override;
  asio::awaitable<Status> remove(const std::string& internal) override;
  asio::awaitable<Status> rename(const std::string& from, const std::string& to) override;

  // SELECT (with QRESYNC when `recorded` has a UIDVALIDITY and HIGHESTMODSEQ), then, pipelined:
  // the flags changed since (CONDSTORE: CHANGEDSINCE) or of every message (plain), and every
  // message at or above the recorded UIDNEXT.
  // When `listed_uidnext` shows new mail, the UID FETCH of the new messages goes out right
  // behind the SELECT (Session::may_follow_select): one round trip for both. When it shows at
  // most kHeldMessages of them, that FETCH also asks for the first kHeldOctets of each body,
  // kept for fetch_bodies(): a changed mailbox's copies then cost no FETCH round trip.
  asio::awaitable<Result<SideObservation>> observe(const std::string& internal,
                                                   const store::SideState& recorded,
                                                   std::uint32_t listed_uidnext) override;
  // A plain SELECT, then UID, size, flags, INTERNALDATE and MODSEQ of every message.
  asio::awaitable<Result<FullObservation>> observe_all(const std::string& internal) override;
  // UID SEARCH ALL (RETURN (ALL) with ESEARCH: a compact set).
  asio::awaitable<Result<UidSet>> uids() override;
  std::uint32_t uidnext() const override;

  // BODY.PEEK[] (never sets \Seen). A body held from observe() is handed out (and let go)
  // without asking; one held only in part is completed from where it stops (BODY.PEEK[]<n.m>).
  asio::awaitable<Result<std::vector<FetchedMessage>>> fetch_bodies(
      const std::vector<Uid>& uids) override;
  bool holds_bodies(const std::vector<Uid>& uids) const override;
  // At most this many new messages (by UIDNEXT) have their bodies asked with the SELECT, and
  // at most this much of each: a few changed messages travel with the observation, while a
  // mailbox's first sync, or a big message, is not held in memory (at most 1.25 MiB per store).
  static constexpr std::uint32_t kHeldMessages = 20;
  static constexpr std::uint64_t kHeldOctets = 64 * 1024;
  asio::awaitable<Result<std::vector<MessageSummary>>> summaries_from(Uid from) override;
  // Asked as BODY.PEEK[]<size-1.2>, which must return one octet. One round trip.
  asio::awaitable<Result<std::set<Uid>>> exact_sizes(
      const std::map<Uid, std::uint64_t>& sizes) override;
  std::unique_ptr<BodyReader> read_body(Uid uid, std::uint64_t size) override;
  // Two pipelined UID FETCHes (CHANGEDSINCE with VANISHED, and UID >= uidnext), one round trip.
  asio::awaitable<Result<Settled>> settle(ModSeq modseq, Uid uidnext) override;
  // UID STORE uids (UNCHANGEDSINCE m) FLAGS.SILENT (flags): one command replaces the flags (two,
  // +FLAGS then -FLAGS, would fail the second on the modseq the first one raised). Messages with
  // the same flags and bound share one UID STORE; all are pipelined (one round trip).
  // Tier::plain has no bound: +FLAGS/-FLAGS of the update's difference.
  asio::awaitable<Result<std::set<Uid>>> set_flags(const std::vector<FlagUpdate>& updates) override;
  // UID STORE +FLAGS.SILENT (\Deleted) then UID EXPUNGE of exactly `uids`, pipelined.
  asio::awaitable<Status> expunge(const std::vector<Uid>& uids) override;
  // Both of the above in one flight (with UIDPLUS, and no message in both).
  asio::awaitable<Result<std::set<Uid>>> expunge_and_set_flags(
      const std::vector<Uid>& expunges, const std::vector<FlagUpdate>& updates) override;

  // APPEND (MULTIAPPEND when offered). Without UIDPLUS the new UIDs are read back (appended()).
  asio::awaitable<Result<Appended>> append(const std::string& internal,
                                           std::vector<OutgoingMessage> messages) override;
  // With UIDPLUS, the APPEND(s) and the settle's two UID FETCHes in one flight.
  asio::awaitable<Result<std::optional<Settled>>> append_and_settle(
      const std::string& internal, std::vector<OutgoingMessage> messages, ModSeq modseq,
      Uid uidnext, const std::function<Status(const Appended&)>& on_appended) override;
  // The literal announces `size` and the body is written as it is pulled from `source`
  // (net::Client::wait_streaming): memory does not grow with the message.
  asio::awaitable<Result<Appended>> append_streamed(const std::string& internal,
                                                    OutgoingMessage message, std::uint64_t size,
                                                    BodySource& source) override;

  // UNSELECT, or nothing without it (RFC 5819 §4 lets LIST-STATUS skip the selected mailbox).
  asio::awaitable<Status> unselect() override;
  bool can_notify() const override;
  // NOTIFY SET for every personal mailbox (RFC 5465), or NOTIFY NONE (on = false).
  asio::awaitable<Status> notify(bool on) override;
  // IDLE (RFC 2177) after a SELECT (a read-only EXAMINE would miss flag changes).
  asio::awaitable<Result<bool>> start_idle(const std::string& internal) override;
  asio::awaitable<Status> wait_for_announcement(std::chrono::milliseconds slice) override;
  // EXISTS, EXPUNGE, VANISHED, FETCH, STATUS or LIST announce a change.
  Result<Announcement> take_announcements() override;
  // STATUS of each (pipelined).
  asio::awaitable<Result<std::vector<ListedMailbox>>> status(
      const std::vector<std::string>& names) override;
  asio::awaitable<Status> stop_idle() override;

  // COMPRESS=DEFLATE when configured and offered (net::Client::compress()).
  asio::awaitable<Status> prepare_for_work() override;
  Traffic traffic() const override;
  void close() override;
  asio::awaitable<void> logout() override;

  // HIGHESTMODSEQ of the selected mailbox as tracked by the session (RFC 7162 §6).
  ModSeq highestmodseq() const;

 private:
  Result<std::string> internal_name(const std::string& wire, std::optional<char> delimiter) const;
  // server_name(), after asking for the delimiter if the name needs it and nothing told it yet.
  asio::awaitable<Result<std::string>> wire_name(const std::string& internal);
  // SELECT `name` (the server's name of `internal`); fails unless it answered OK with
  // UIDVALIDITY and UIDNEXT.
  // With `new_from`, submit_new_messages(*new_from, held_below) goes out right behind the
  // SELECT; its ids go to `new_ids`. Bodies held for the mailbox selected before are let go.
  asio::awaitable<Result<imap::Completion>> select(const std::string& internal,
                                                   const std::string& name,
                                                   const imap::cmd::SelectOptions& options,
                                                   std::optional<Uid> new_from = std::nullopt,
                                                   Uid held_below = 0,
                                                   std::vector<imap::CommandId>* new_ids = nullptr);
  // The summaries of every message from UID `from` on (UID FETCH from:*); for those below
  // `held_below`, the first kHeldOctets of their bodies too (a UID FETCH of their own).
  Result<std::vector<imap::CommandId>> submit_new_messages(Uid from, Uid held_below = 0);
  // Keeps a body (or its first kHeldOctets) that came with a new message's summary, when its
  // UID is one whose body was asked for.
  void hold_body(imap::FetchData& fetched);
  // The answer to prepare()'s ENABLE, read once before anything that depends on the tier.
  asio::awaitable<Status> enabled();
  // Reads the answer to a presumed login (net::Client::connect). True when this connection
  // stands; false when it has been replaced by a fresh one, without presuming, because the
  // server's capabilities changed or the connection failed before the login's answer (a
  // server that does not take commands pipelined behind a login): ask again on the new one.
  asio::awaitable<Result<bool>> settle_login();
  // After `error` in what went out behind a presumed login: a new connection that presumes
  // nothing, and a note that this server is not to be presumed with again; `error` itself when
  // it is the user's (a refused login) or there is no connector.
  asio::awaitable<Status> abandon_presumption(const Error& error);
  // A new connection in place of this one (connector_), prepared as it was; false.
  asio::awaitable<Result<bool>> reconnect(bool refused);
  Traffic earlier_traffic_;  // of the connections reconnect() replaced
  bool utf8() const;
  bool has(std::string_view capability) const;
  // LIST and LSUB per pattern, for servers without LIST-EXTENDED; STATUS of each mailbox when
  // LIST-STATUS is missing but a mod-sequence would let the engine skip unchanged mailboxes.
  asio::awaitable<Result<std::vector<imap::Completion>>> list_without_extensions(
      const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts);
  asio::awaitable<Status> status_of(std::vector<ListedMailbox>& mailboxes);
  // The FETCH items of a message summary this tier can ask for.
  std::string_view summary_items() const;
  // What STATUS (or LIST-STATUS) asks to let the engine skip an unchanged mailbox.
  std::vector<std::string> status_items() const;
  imap::cmd::SelectOptions select_options() const;
  // Without UIDPLUS: the UIDs of the `sizes.size()` messages just appended to the selected
  // mailbox, all above `above` (read back by size); an error when they cannot be told apart.
  asio::awaitable<Result<Appended>> appended(Uid above, const std::vector<std::uint64_t>& sizes);
  // A listing of every message decides expunges by absence: it must count EXISTS messages.
  Status listing_is_whole(const std::string& name, std::size_t listed) const;
  // UID FETCH * (UID), and the highest UID its answer names (0: an empty mailbox).
  Result<imap::CommandId> submit_highest_uid();
  static Uid highest_of(const imap::Completion& done);
  asio::awaitable<Status> expunge_without_uidplus(const std::vector<Uid>& uids,
                                                  std::vector<imap::CommandId> store);
  // The halves of set_flags() and expunge(): submitted, then read from their completions.
  struct FlagStores {
    std::vector<imap::CommandId> ids;
    std::vector<std::vector<Uid>> sent;  // the UIDs of each command
  };
  Result<FlagStores> submit_flags(const std::vector<FlagUpdate>& updates);
  Result<std::set<Uid>> flags_stored(const FlagStores& stores,
                                     const std::vector<imap::Completion>& done) const;
  struct Expunges {
    std::vector<imap::CommandId> ids;  // the STOREs of \Deleted, then the UID EXPUNGEs
    std::size_t stores = 0;
  };
  // UID STORE +FLAGS.SILENT (\\Deleted) of `uids`, submitted.
  Result<std::vector<imap::CommandId>> mark_deleted(const std::vector<Uid>& uids);
  Result<Expunges> submit_expunge(const std::vector<Uid>& uids);
  Status expunged(const Expunges& sent, const std::vector<imap::Completion>& done) const;

  // APPENDs submitted: one command with MULTIAPPEND, else one per message.
  struct Appends {
    std::vector<imap::CommandId> ids;
    std::vector<std::size_t> counts;  // messages per command
  };
  Result<Appends> submit_append(const std::string& name,
                                std::vector<imap::cmd::AppendMessage> messages);
  // The UIDs of the APPENDs from their answers' APPENDUID codes (`done` starts with them).
  Result<Appended> appended_by_uidplus(const Appends& sent,
                                       const std::vector<imap::Completion>& done,
                                       const std::string& name) const;
  // settle()'s halves: its FETCHes submitted, then read from every completion in `done`.
  Result<std::vector<imap::CommandId>> submit_settle(ModSeq modseq, Uid uidnext);
  Result<Settled> settled_from(const std::vector<imap::Completion>& done, Uid uidnext) const;

  friend class BodyPieces;
  Result<Appended> appended_one(const imap::Completion& done, const std::string& name) const;

  Side side_;
  std::unique_ptr<net::Client> client_;
  ImapConnector* connector_ = nullptr;
  Tier limit_ = Tier::qresync;  // prepare()'s, for a replaced connection
  std::string reference_;
  std::optional<char> delimiter_;  // nullopt with delimiter_known_: a flat server
  bool delimiter_known_ = false;
  std::string selected_;
  std::optional<imap::CommandId> idle_;
  Tier tier_ = Tier::qresync;
  std::optional<imap::CommandId> enabling_;  // ENABLE QRESYNC sent, its answer not read yet
  std::optional<Uid> fallback_uidnext_;      // the selected mailbox's, when SELECT did not say
  // Bodies of the selected mailbox's new messages read with the observation (hold_body), until
  // fetch_bodies() hands them out or another SELECT voids them.
  struct HeldBody {
    std::string octets;
    std::string internal_date;
    bool whole = false;  // the server sent fewer octets than asked: the message ends there
  };
  std::map<Uid, HeldBody> held_;
  Uid held_below_ = 0;  // bodies were asked for below this UID (submit_new_messages)
};

// Connects to the configured servers: net::Client::connect, then prepare().
//
// With a state database, it notes what each server announced before and after login (a note
// per side, tied to the endpoint by a hash of its type, host, port, user and command), and the
// first connection of a run to that server presumes the same again: its ENABLE and first LIST
// go out with the login, one round trip instead of two. A presumption that fails (the
// capabilities changed: connect again; the connection failed before the login's answer: connect
// again and never presume with that server) costs one connection, never a wrong command.
class ImapConnector : public StoreConnector {
 public:
  ImapConnector(PerSide<net::Endpoint> endpoints, PerSide<std::string> list_references,
                PerSide<Tier> limits = {{Tier::qresync, Tier::qresync}},
                store::StateDb* notes = nullptr)
      : endpoints_(std::move(endpoints)),
        references_(std::move(list_references)),
        limits_(limits),
        notes_(notes) {}
  asio::awaitable<Result<std::unique_ptr<MailStore>>> open(Side side,
                                                           const MailStore* sibling) override;
  // Whether a lane's first connection may presume its login (the note is kept either way). Only
  // a run whose first question to a new connection is its LIST gains, and only list() handles a
  // presumption that fails by connecting again.
  void set_presume_logins(bool on) { presume_logins_ = on; }
  // A connection that presumes nothing, after a presumption failed (`refused`: the server did
  // not answer the login with commands behind it, so none will be presumed with it again).
  asio::awaitable<Result<std::unique_ptr<net::Client>>> connect_again(Side side, bool refused);
  // The note says not to presume with this server (until it announces other capabilities).
  void stop_presuming(Side side);

  // The note's text, and what it says (nullopt: nothing to presume). Public for tests.
  struct Note {
    std::string endpoint;  // hash of the endpoint's identity
    bool presume = true;
    net::RememberedCapabilities capabilities;
  };
  static std::string format_note(const Note& note);
  static std::optional<Note> parse_note(std::string_view text);
  static std::string endpoint_hash(const net::Endpoint& endpoint);

 private:
  std::optional<net::RememberedCapabilities> recall(Side side);
  void remember(Side side, const net::Client& client, bool refused = false);
  std::optional<Note> read_note(Side side);
  void write_note(Side side, Note note);

  PerSide<net::Endpoint> endpoints_;
  PerSide<std::string> references_;
  PerSide<Tier> limits_;
  store::StateDb* notes_;
  bool presume_logins_ = true;
  PerSide<std::optional<Note>> note_;  // as read or last written
  PerSide<bool> note_read_{};
};

// One message body of the selected mailbox read with pipelined partial FETCHes
// (BODY.PEEK[]<origin.octets>, RFC 9051 §6.4.5): at most kDepth pieces of kPieceSize octets are
// in memory at once, whatever the message's size. The pieces must add up to exactly `size`;
// anything else (the message vanished, the server's RFC822.SIZE was wrong) is an error.
class BodyPieces : public BodyReader {
 public:
  static constexpr std::uint64_t kPieceSize = 512 * 1024;
  static constexpr std::size_t kDepth = 4;

  BodyPieces(ImapStore& replica, Uid uid, std::uint64_t size)
      : replica_(replica), uid_(uid), size_(size) {}
  asio::awaitable<Result<std::string>> next_piece() override;
  // Every octet has been handed out.
  bool finished() const override { return delivered_ == size_; }

 private:
  struct Request {
    std::vector<imap::CommandId> ids;
    std::uint64_t origin = 0;
    std::uint64_t count = 0;
  };
  Status request_more();

  ImapStore& replica_;
  Uid uid_;
  std::uint64_t size_;
  std::uint64_t requested_ = 0;
  std::uint64_t delivered_ = 0;
  std::deque<Request> pending_;
  std::map<std::uint64_t, std::string> received_;  // pieces that arrived ahead of their turn
};

}  // namespace twinbox::sync
