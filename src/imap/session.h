// Session: the sans-io IMAP client connection. Plain code, no sockets and no coroutines: it takes
// parsed responses in and hands bytes out, and a thin asio shell (src/net, imap/client) moves
// them. Everything here is deterministic and testable with scripted Response values.
//
// What it owns
// - Tags ("T1", "T2", ...) and the queue of submitted commands; pipelining per may_pipeline().
// - Output: next_output() yields chunks to write now, withholding a synchronizing literal until
//   the server's "+" for that command, and dropping the rest of a command the server rejected
//   with a tagged NO/BAD instead (RFC 9051 §4.3). LITERAL+ chunks are yielded without waiting.
// - Input: on_response() completes commands by tag, hands "+" to the command waiting for one,
//   and routes untagged data to the oldest command in flight (servers answer in order; this is
//   an attribution, not a guarantee: RFC 9051 §5.5 lets a server interleave, so consumers treat
//   FETCH/VANISHED/EXPUNGE data on its own merits, keyed by UID). Untagged data with nothing in
//   flight, or during IDLE, is unsolicited.
// - Connection state (RFC 9051 §3), capabilities (discarded after STARTTLS, refreshed after
//   authentication, RFC 9051 §6.2.1-6.2.3), ENABLEd extensions (RFC 5161), and the selected
//   mailbox with HIGHESTMODSEQ tracked per RFC 7162 §6 (below).
//
// HIGHESTMODSEQ (RFC 7162 §6, errata 1810). MODSEQ values in FETCH responses only raise a pending
// maximum. A [HIGHESTMODSEQ n] code sets the mailbox value at once, and the server's word wins
// for the rest of that window even when FETCHes showed higher values (it may hold back a VANISHED
// with a lower mod-sequence). At each tagged response the window closes: if no code arrived in
// it, the pending maximum becomes the value when it is higher. A value lower than the one held
// is accepted (lower is the safe direction) but flagged as a regression with evidence.
//
// Errors are values. on_response() returns Errc::protocol for a server that breaks the rules
// (unknown tag, "+" nobody asked for, OK for a command not sent in full, no greeting) and
// Errc::security for data that arrives between a STARTTLS/COMPRESS OK and the transport switch.
// After an error the session is failed: it sends nothing more and the shell must close.
// Command helpers refuse what the server or state cannot take: Errc::auth (LOGINDISABLED, no
// AUTH=PLAIN, credentials over an insecure transport), Errc::tls (no STARTTLS offered),
// Errc::security (STARTTLS after PREAUTH), Errc::internal (a caller bug: QRESYNC not enabled,
// ENABLE after SELECT, capabilities not known yet), Errc::eof (after BYE/LOGOUT), Errc::limit
// (a command line that cannot be made short enough).
//
// Helpers check capabilities as known at the time of the call. Await the completion of anything
// that changes them (greeting, CAPABILITY, STARTTLS, LOGIN/AUTHENTICATE, ENABLE) before building
// commands that depend on them; those commands never pipeline anyway.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "imap/command.h"
#include "imap/response.h"
#include "imap/sequence_set.h"

namespace twinbox::imap {

using CommandId = std::uint64_t;  // the N of tag "TN"

// RFC 9051 §5.5 pipelining rule, as one predicate. A command may be sent while others are in
// flight only if it and every command in flight are "pipelinable":
// - UID FETCH, UID STORE, UID SEARCH, UID COPY, UID MOVE, UID EXPUNGE: addressed by UID, so an
//   EXPUNGE or VANISHED caused by one cannot change what another refers to (§5.5 permits EXPUNGE
//   during UID commands and forbids sequence-number commands after them until completion);
// - APPEND, STATUS, LIST, LSUB, NOOP: no sequence numbers, no state change.
// Everything else is a barrier, sent alone: anything with sequence numbers (FETCH, STORE,
// SEARCH, COPY, MOVE, EXPUNGE), anything that changes connection state or capabilities
// (STARTTLS, LOGIN, AUTHENTICATE, COMPRESS, ENABLE, CAPABILITY, SELECT, EXAMINE, UNSELECT, CLOSE,
// LOGOUT), IDLE, and mailbox-tree changes (CREATE, DELETE, RENAME: a later APPEND may need them).
// Independently, nothing is started while a command still has unsent chunks ("command
// continuation ... MUST be negotiated before any subsequent command is initiated", §5.5).
bool may_pipeline(CommandKind kind);
// The one exception to the barriers: behind an ENABLE, a LIST, LSUB, STATUS or NOOP. ENABLE only
// changes what later SELECTs and FETCHes may say (RFC 5161 §3.1), and the server answers it
// first, so its outcome is known before these answers are read; the first LIST of a run then
// costs no round trip of its own.
bool may_follow_enable(CommandKind kind);
// And behind a SELECT or EXAMINE, a UID FETCH: it asks about the mailbox being selected, by UID.
// Should the SELECT fail, no mailbox is selected (RFC 9051 §6.3.2) and the FETCH fails too; its
// answer is read only once the SELECT's says what was selected.
bool may_follow_select(CommandKind kind);
// And CREATE behind CREATE, (UN)SUBSCRIBE behind (UN)SUBSCRIBE: a mailbox tree made, or
// subscriptions set, in one round trip. The caller sends together only CREATEs of which none is
// above another (the server creates superior names itself, RFC 9051 §6.3.4, and may run
// pipelined commands concurrently); a subscription does not need its mailbox to exist.
bool may_follow_own_kind(CommandKind in_flight, CommandKind next);
// And behind a login the caller chose to presume (Session::presume_login): an ENABLE, LIST,
// LSUB, STATUS or NOOP. None changes anything a failed login would leave behind: if the login
// is refused, the server refuses them too ("not authenticated").
bool may_follow_login(CommandKind kind);

enum class ConnectionState {
  greeting,           // nothing received yet
  not_authenticated,  // RFC 9051 §3.1
  authenticated,      // §3.2
  selected,           // §3.3
  logout,             // §3.4: BYE seen or LOGOUT completed; nothing more is sent
};

// What the shell must do to the byte stream before writing or reading anything else.
enum class TransportSwitch {
  none,
  tls,      // STARTTLS completed OK: discard any buffered input, handshake (RFC 9051 §6.2.1)
  deflate,  // COMPRESS completed OK: buffered input and everything after belongs to the inflater
};

struct Completion {
  CommandId id = 0;
  std::string tag;
  CommandKind kind = CommandKind::other;
  StatusResponse status;           // the tagged OK/NO/BAD
  std::vector<Response> untagged;  // untagged responses attributed to this command, in order
  bool ok() const { return status.condition == Condition::ok; }
};

struct MailboxState {
  std::string name;  // UTF-8, as given to select()/examine()
  bool read_only = false;
  std::optional<std::uint32_t> uidvalidity;
  std::optional<std::uint32_t> uidnext;
  std::uint32_t exists = 0;
  std::optional<ModSeq> highestmodseq;  // see the header comment
  bool nomodseq = false;                // [NOMODSEQ]: no persistent mod-sequences
  ModSeq pending_modseq = 0;            // highest FETCH MODSEQ since the last tagged response
  bool modseq_code_in_window = false;   // a [HIGHESTMODSEQ] arrived since the last tagged one
  bool modseq_regressed = false;        // HIGHESTMODSEQ went backwards in this session
  bool uidvalidity_changed = false;     // UIDVALIDITY changed while selected
  std::vector<std::string> anomalies;   // one line of evidence per distrust event above
};

enum class OAuthMechanism { xoauth2, oauthbearer };
std::string_view to_string(OAuthMechanism mechanism);  // "XOAUTH2", "OAUTHBEARER"

// The error a server sent during an OAuth exchange (the decoded JSON of its "+" challenge,
// printable and cut short), or "" if the completion holds none.
std::string sasl_error_status(const Completion& completion);

struct SessionOptions {
  std::size_t max_in_flight = 32;
  std::size_t max_line = kDefaultMaxLine;  // octets per command line (RFC 7162 §4)
  // The transport is already protected (implicit TLS, or a tunnel the user trusts).
  bool secure_transport = false;
  // Allow LOGIN/AUTHENTICATE over an unprotected transport (explicit user configuration only).
  bool allow_cleartext_credentials = false;
  // Keep one redacted trace line per command line written, for --debug (next_trace()).
  bool trace = false;
};

class Session {
 public:
  explicit Session(SessionOptions options = {});

  // ----- Input ------------------------------------------------------------------------------
  // One parsed response, in stream order. The first must be the greeting.
  Status on_response(Response&& response);
  // The peer closed the stream. OK after BYE/LOGOUT with nothing else pending, else Errc::eof.
  Status on_eof();

  // ----- Output -----------------------------------------------------------------------------
  // The next chunk to write, or nullopt when nothing may be written now. Call until nullopt
  // after every submit and every on_response.
  std::optional<Chunk> next_output();
  // Non-none after a STARTTLS or COMPRESS OK: call transport_switched() once the shell has
  // switched the stream; until then nothing is output and any response is an injection.
  TransportSwitch pending_switch() const { return switch_; }
  void transport_switched();

  // With SessionOptions::trace: each command line as it was handed out by next_output(), in
  // printable form with secrets as "<redacted>" and long literals as "{n bytes}".
  std::optional<std::string> next_trace();

  std::optional<Completion> next_completion();
  std::optional<Response> next_unsolicited();
  bool has_unsolicited() const { return !unsolicited_.empty(); }
  // While a NOTIFY (RFC 5465) is set, its STATUS and LIST announcements may come in the middle of
  // another command's answer: a copy of each STATUS or LIST data then also goes to the
  // unsolicited queue, so that the announcement is not lost to the command it interleaved with.
  // (A copy of the answer to our own STATUS or LIST goes there too: consumers compare.)
  void set_announcing(bool on) { announcing_ = on; }
  // Drops what is queued as unsolicited (after NOTIFY NONE, when a full look follows).
  void discard_unsolicited() { unsolicited_.clear(); }

  // ----- Submitting -------------------------------------------------------------------------
  // Queues a command built by the caller and tags it. Errc::limit if a line is too long.
  Result<CommandId> submit(Command command);

  Result<CommandId> capability();
  Result<CommandId> noop();
  Result<CommandId> logout();
  Result<CommandId> starttls();
  Result<CommandId> login(std::string_view user, std::string_view password);
  // AUTHENTICATE PLAIN, with SASL-IR when the server offers it.
  Result<CommandId> authenticate_plain(std::string_view user, std::string_view password,
                                       std::string_view authzid = {});
  // AUTHENTICATE XOAUTH2 or OAUTHBEARER with a bearer token (RFC 7628), with SASL-IR when the
  // server offers it and the line fits. A refused token arrives as "+ base64(JSON status)"
  // (RFC 7628 §3.2.2): the session answers it as the mechanism requires (OAUTHBEARER: "AQ==",
  // the dummy ^A of §3.2.3; XOAUTH2: an empty line) and the server then ends the command with
  // NO. The challenge is kept in the Completion's untagged responses (a ContinuationRequest),
  // where sasl_error_status() finds it. `host` and `port` are the server's, as OAUTHBEARER sends.
  Result<CommandId> authenticate_oauth(OAuthMechanism mechanism, std::string_view user,
                                       std::string_view token, std::string_view host,
                                       std::string_view port);
  // Presumes that the LOGIN or AUTHENTICATE just submitted will succeed and that the server
  // will then announce `capabilities` (as it did to an earlier connection): until its answer,
  // the commands may_follow_login() allows go out behind it, built against these capabilities.
  // The login's answer ends the presumption: the capabilities become what the server says (or
  // unknown), and the caller must compare them with what it presumed, and abandon the
  // connection when they differ (what it sent may not suit the server). Errc::internal unless
  // the last command submitted is a login that has not been answered, without a literal or a
  // continuation to wait for.
  Status presume_login(const std::set<std::string>& capabilities);
  bool presuming_login() const { return presumed_login_.has_value(); }
  Result<CommandId> compress_deflate();
  Result<CommandId> enable(const std::vector<std::string>& capabilities);
  Result<CommandId> id_nil();
  Result<CommandId> list(std::string_view reference, const std::vector<std::string>& patterns,
                         const cmd::ListOptions& options = {});
  Result<CommandId> status(std::string_view mailbox, const std::vector<std::string>& items);
  Result<CommandId> select(std::string_view mailbox, const cmd::SelectOptions& options = {});
  Result<CommandId> unselect();
  Result<std::vector<CommandId>> uid_fetch(const SequenceSet& uids, std::string_view items,
                                           const cmd::FetchModifiers& modifiers = {});
  Result<std::vector<CommandId>> uid_store(const SequenceSet& uids, const cmd::StoreOp& store);
  Result<std::vector<CommandId>> uid_expunge(const SequenceSet& uids);
  Result<CommandId> append(std::string_view mailbox, std::vector<cmd::AppendMessage> messages);
  Result<CommandId> idle();
  // Ends the IDLE in flight: "DONE" goes out (after the server's "+" if it has not come yet).
  Status idle_done();

  // ----- State ------------------------------------------------------------------------------
  ConnectionState state() const { return state_; }
  bool failed() const { return failure_.has_value(); }
  const std::optional<StatusResponse>& greeting() const { return greeting_; }
  bool preauthenticated() const { return preauth_; }
  const std::optional<StatusResponse>& bye() const { return bye_; }
  bool secure_transport() const { return secure_; }

  // Capabilities as last announced, upper-cased. capabilities_known() is false before any
  // announcement, after STARTTLS, and after an authentication whose OK carried no CAPABILITY
  // code and was preceded by no untagged CAPABILITY: then send capability() before relying on
  // them (RFC 9051 §6.2.2, §6.2.3).
  bool capabilities_known() const { return caps_known_; }
  bool has_capability(std::string_view name) const;
  const std::set<std::string>& capabilities() const { return caps_; }
  // Extensions the server confirmed with an untagged ENABLED (RFC 5161 §3.2). QRESYNC may be
  // used only after this says so (RFC 7162 §3.2.3).
  bool is_enabled(std::string_view name) const;
  // Literal mode, UTF8=ACCEPT and BINARY from the current capabilities and ENABLEd extensions.
  WireOptions wire_options() const;

  // The selected mailbox (also while a SELECT/EXAMINE is in flight), nullopt otherwise.
  const std::optional<MailboxState>& mailbox() const { return mailbox_; }
  bool idling() const { return idling_; }
  bool compression_active() const { return compression_active_; }
  std::size_t in_flight() const { return in_flight_.size(); }
  std::size_t queued() const { return queue_.size(); }

 private:
  struct Pending {
    CommandId id = 0;
    std::string tag;
    CommandKind kind = CommandKind::other;
    std::deque<Chunk> chunks;  // not yet output
    std::vector<Response> untagged;
    bool saw_capability = false;  // an untagged CAPABILITY arrived while this was in flight
    bool idle_done = false;       // DONE queued (IDLE only)
    std::string mailbox;          // SELECT/EXAMINE target (UTF-8)
    // AUTHENTICATE only: the answer to a challenge after the response went out (an OAuth
    // error, RFC 7628 §3.2.3); nullopt cancels the exchange with "*".
    std::optional<std::string> sasl_error_answer;
  };

  Status fail(Error error);
  Chunk emit(Chunk&& chunk);
  Status on_greeting(Response&& response);
  Status on_tagged(StatusResponse&& status);
  Status on_continuation(Response&& response);
  void apply_untagged(const Response& response);
  void apply_code(const ResponseCode& code);
  void set_highestmodseq(ModSeq value);
  void close_modseq_window();
  void set_capabilities(const std::vector<std::string>& caps);
  void clear_capabilities();
  bool can_start(const Pending& next) const;
  void on_started(Pending& p);
  Result<CommandId> submit_checked(Result<Command> command);
  Result<std::vector<CommandId>> submit_all(Result<std::vector<Command>> commands);
  Status require_caps_known(std::string_view what) const;
  Status require_credentials_allowed() const;

  SessionOptions options_;
  ConnectionState state_ = ConnectionState::greeting;
  std::optional<Error> failure_;
  std::optional<StatusResponse> greeting_;
  std::optional<StatusResponse> bye_;
  bool preauth_ = false;
  bool secure_ = false;
  TransportSwitch switch_ = TransportSwitch::none;
  bool compression_active_ = false;
  bool idling_ = false;
  bool select_submitted_ = false;

  std::set<std::string> caps_;
  bool caps_known_ = false;
  std::optional<CommandId> presumed_login_;  // presume_login(): that login's answer is due
  std::set<std::string> enabled_;

  std::optional<MailboxState> mailbox_;

  CommandId next_id_ = 1;
  std::deque<Pending> queue_;      // submitted, nothing output yet
  std::deque<Pending> in_flight_;  // first chunk output; in submission order
  std::deque<Completion> completions_;
  std::deque<Response> unsolicited_;
  bool announcing_ = false;
  std::string trace_line_;
  std::deque<std::string> traces_;
};

}  // namespace twinbox::imap
