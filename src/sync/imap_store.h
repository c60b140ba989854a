// One side of the sync as the engine sees it: an IMAP server reached through net::Client.
// It turns the engine's questions ("what changed in this mailbox since HIGHESTMODSEQ m?") into
// pipelined UID commands and the answers into sync/model.h values. IMAP syntax stops here.
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
#include "sync/model.h"

namespace twinbox::sync {

struct ListedMailbox {
  std::string wire;  // the name as the server sent it
  std::string name;  // internal name: UTF-8, reference stripped, delimiter replaced by '\0'
  std::optional<char> delimiter;
  bool selectable = true;
  bool subscribed = false;
  std::optional<std::uint32_t> uidvalidity, uidnext;
  std::optional<ModSeq> highestmodseq;
};

// What SELECT plus the change fetches reported for one mailbox.
struct SideObservation {
  SideChanges changes;             // vanished is left empty: the engine intersects vanished_set
  imap::SequenceSet vanished_set;  // VANISHED (EARLIER), kept as ranges (may be 1:4294967295)
  std::uint32_t uidvalidity = 0;
  std::uint32_t uidnext = 0;  // as announced by SELECT
  ModSeq highestmodseq = 0;   // at the end of the observation (RFC 7162 §6)
  std::uint32_t exists = 0;   // at the end of the observation
  bool uidvalidity_changed = false;
  // Evidence that the server's change tracking cannot be trusted for this mailbox (HIGHESTMODSEQ
  // below the recorded value, or gone backwards while selected): the engine then re-reads the
  // whole mailbox instead of relying on CHANGEDSINCE/VANISHED.
  std::vector<std::string> distrust;
};

struct FetchedMessage {
  Uid uid = 0;
  std::string body;
  std::string internal_date;  // as the server sent it
};

// Candidate for matching after a crash: a message appended by an interrupted run.
struct MessageSummary {
  Uid uid = 0;
  std::uint64_t size = 0;
  FlagSet flags;
  std::string internal_date;
  ModSeq modseq = 0;
};

class Replica {
 public:
  Replica(Side side, std::unique_ptr<net::Client> client, std::string list_reference);

  Side side() const { return side_; }
  net::Client& client() { return *client_; }
  // Known after list() or learn_delimiter().
  std::optional<char> delimiter() const { return delimiter_; }
  // Asks the server for its hierarchy delimiter unless a LIST already told it.
  asio::awaitable<Status> learn_delimiter();
  // Takes the delimiter another connection to the same server learned, if it knows it.
  void adopt_delimiter(const Replica& other) {
    if (!other.delimiter_known_) return;
    delimiter_ = other.delimiter_;
    delimiter_known_ = true;
  }

  // ENABLE QRESYNC; fails when the server cannot do QRESYNC (required by this engine).
  asio::awaitable<Status> prepare();

  // LIST (select-opts) reference (patterns) RETURN (SUBSCRIBED STATUS (...)), one round trip.
  asio::awaitable<Result<std::vector<ListedMailbox>>> list(
      const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts);

  // Internal name -> the server's name (reference prefix, delimiter, modified UTF-7).
  Result<std::string> server_name(const std::string& internal) const;
  // server_name(), after asking for the delimiter if the name needs it and nothing told it yet.
  asio::awaitable<Result<std::string>> wire_name(const std::string& internal);

  asio::awaitable<Status> create(const std::string& internal);
  asio::awaitable<Status> subscribe(const std::string& internal, bool on);
  // DELETE and RENAME (--delete, --rename). RENAME moves inferiors too (RFC 9051 §6.3.6).
  asio::awaitable<Status> remove(const std::string& internal);
  asio::awaitable<Status> rename(const std::string& from, const std::string& to);

  // Full re-read (repair, distrust): a plain SELECT, then UID, size, flags, INTERNALDATE and
  // MODSEQ of every message. UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ/EXISTS as after observe().
  struct FullObservation {
    SideObservation state;
    std::vector<MessageSummary> messages;  // ascending UID
  };
  asio::awaitable<Result<FullObservation>> observe_all(const std::string& internal);

  // Watch mode: leave the selected mailbox (UNSELECT, or nothing without it) so that LIST-STATUS
  // reports every mailbox exactly (RFC 5819 §4 lets servers skip the selected one).
  asio::awaitable<Status> unselect();
  // Starts IDLE (RFC 2177) on `internal` (SELECT first, read-only EXAMINE is not enough for
  // flag changes); false when the server lacks IDLE.
  asio::awaitable<Result<bool>> start_idle(const std::string& internal);
  // Waits up to `slice` for a response that announces a change (EXISTS, EXPUNGE, VANISHED,
  // FETCH, STATUS, LIST); true when one came.
  asio::awaitable<Result<bool>> wait_for_change(net::Duration slice);
  // DONE, and the IDLE's tagged OK.
  asio::awaitable<Status> stop_idle();
  // NOTIFY SET for every personal mailbox (RFC 5465), or NOTIFY NONE (on = false).
  asio::awaitable<Status> notify(bool on);
  bool idling() const { return idle_.has_value(); }

  // SELECT the mailbox (with QRESYNC when `recorded` has a UIDVALIDITY and HIGHESTMODSEQ) and
  // collect what changed since then: VANISHED (EARLIER), flag changes with MODSEQ, and every
  // message at or above the recorded UIDNEXT (all messages on a first sync).
  asio::awaitable<Result<SideObservation>> observe(const std::string& internal,
                                                   const store::SideState& recorded);

  // What changed since `modseq` in the selected mailbox: flags (UID FETCH CHANGEDSINCE) and
  // expunges (VANISHED (EARLIER)).
  struct Changes {
    std::map<Uid, FlagSet> flags;
    imap::SequenceSet vanished;
  };
  asio::awaitable<Result<Changes>> changed_since(ModSeq modseq);

  // After our own changes: what changed since `modseq` plus every message at or above `uidnext`
  // (two pipelined UID FETCHes, one round trip), and the HIGHESTMODSEQ after both.
  struct Settled {
    Changes changes;
    std::vector<MessageSummary> above;
    ModSeq highestmodseq = 0;
  };
  asio::awaitable<Result<Settled>> settle(ModSeq modseq, Uid uidnext);

  // Bodies of `uids` in the selected mailbox (BODY.PEEK[]; never sets \Seen).
  asio::awaitable<Result<std::vector<FetchedMessage>>> fetch_bodies(const std::vector<Uid>& uids);

  // UID, size, flags and INTERNALDATE of every message with UID >= `from` in the selected
  // mailbox.
  asio::awaitable<Result<std::vector<MessageSummary>>> summaries_from(Uid from);

  struct Appended {
    std::uint32_t uidvalidity = 0;
    std::vector<Uid> uids;  // in the order of the messages given
  };
  // APPEND (MULTIAPPEND when offered) to the mailbox; needs APPENDUID (UIDPLUS).
  asio::awaitable<Result<Appended>> append(const std::string& internal,
                                           std::vector<imap::cmd::AppendMessage> messages);
  // APPEND of one message of exactly `size` octets whose body is pulled from `source` while it
  // is written (net::Client::wait_streaming): memory does not grow with the message.
  asio::awaitable<Result<Appended>> append_streamed(const std::string& internal,
                                                    imap::cmd::AppendMessage message,
                                                    std::uint64_t size, net::BodySource& source);

  // Which of the messages (UID -> RFC822.SIZE) in the selected mailbox have a body of exactly
  // that size: asked as BODY.PEEK[]<size-1.2>, which must return one octet. Only those can be
  // streamed, since the literal announces the size before the body is read. One round trip.
  asio::awaitable<Result<std::set<Uid>>> exact_sizes(const std::map<Uid, std::uint64_t>& sizes);

  // UID STORE uids (UNCHANGEDSINCE m) FLAGS.SILENT (flags): replaces each message's flags by
  // the merged ones, conditionally (two commands, +FLAGS then -FLAGS, would fail the second on
  // the modseq the first one raised). A message the server reports MODIFIED changed concurrently
  // and the next observation will see it (RFC 7162 §3.1.3).
  // Messages with the same flags and bound share one UID STORE, and all the STOREs are
  // pipelined (one round trip). Returns the UIDs the server reported MODIFIED.
  struct FlagUpdate {
    Uid uid = 0;
    FlagSet flags;
    ModSeq unchanged_since = 0;
  };
  asio::awaitable<Result<std::set<Uid>>> set_flags_many(const std::vector<FlagUpdate>& updates);

  // UID STORE +FLAGS.SILENT (\Deleted) then UID EXPUNGE of exactly `uids`.
  asio::awaitable<Status> expunge(const std::vector<Uid>& uids);

  // HIGHESTMODSEQ of the selected mailbox as tracked by the session (RFC 7162 §6).
  ModSeq highestmodseq() const;
  std::uint32_t uidnext() const;

 private:
  Result<std::string> internal_name(const std::string& wire, std::optional<char> delimiter) const;
  // SELECT `name` (the server's name of `internal`); fails unless it answered OK with
  // UIDVALIDITY and UIDNEXT.
  asio::awaitable<Result<imap::Completion>> select(const std::string& internal,
                                                   const std::string& name,
                                                   const imap::cmd::SelectOptions& options);
  bool utf8() const;

  friend class BodyPieces;
  Result<Appended> appended_one(const imap::Completion& done, const std::string& name) const;

  Side side_;
  std::unique_ptr<net::Client> client_;
  std::string reference_;
  std::optional<char> delimiter_;  // nullopt with delimiter_known_: a flat server
  bool delimiter_known_ = false;
  std::string selected_;
  std::optional<imap::CommandId> idle_;
};

// One message body of the selected mailbox read with pipelined partial FETCHes
// (BODY.PEEK[]<origin.octets>, RFC 9051 §6.4.5): at most kDepth pieces of kPieceSize octets are
// in memory at once, whatever the message's size. The pieces must add up to exactly `size`;
// anything else (the message vanished, the server's RFC822.SIZE was wrong) is an error.
class BodyPieces : public net::BodySource {
 public:
  static constexpr std::uint64_t kPieceSize = 512 * 1024;
  static constexpr std::size_t kDepth = 4;

  BodyPieces(Replica& replica, Uid uid, std::uint64_t size)
      : replica_(replica), uid_(uid), size_(size) {}
  asio::awaitable<Result<std::string>> next_piece() override;
  // Every octet has been handed out.
  bool finished() const { return delivered_ == size_; }

 private:
  struct Request {
    std::vector<imap::CommandId> ids;
    std::uint64_t origin = 0;
    std::uint64_t count = 0;
  };
  Status request_more();

  Replica& replica_;
  Uid uid_;
  std::uint64_t size_;
  std::uint64_t requested_ = 0;
  std::uint64_t delivered_ = 0;
  std::deque<Request> pending_;
  std::map<std::uint64_t, std::string> received_;  // pieces that arrived ahead of their turn
};

}  // namespace twinbox::sync
