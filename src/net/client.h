// The IMAP client: a thin coroutine shell that moves bytes between a Transport and the sans-io
// core (Reader -> parse_response -> Session -> output chunks). All protocol decisions are the
// Session's; this file owns sockets, deadlines, the TLS/COMPRESS switches and the wire trace.
//
// Ownership: a Client is driven by one coroutine at a time; awaiting two of its operations
// concurrently is a bug. It must outlive every operation awaited on it.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "imap/reader.h"
#include "imap/session.h"
#include "net/deadline.h"
#include "net/tls.h"
#include "net/transport.h"
#include "net/transports.h"

namespace twinbox::net {

enum class EndpointType { imap, imaps, tunnel };

struct Endpoint {
  std::string name = "remote";  // "local" / "remote": the prefix of every log line
  EndpointType type = EndpointType::imaps;
  std::string host = "localhost";
  std::string port;      // empty: 143 for imap, 993 for imaps
  std::string command;   // tunnel
  bool starttls = true;  // type=imap: require STARTTLS before credentials
  TlsOptions tls;
  std::vector<std::string> auth = {"PLAIN", "LOGIN"};  // preference order; XOAUTH2, OAUTHBEARER
  std::string username;
  std::string password;  // never logged
  // XOAUTH2/OAUTHBEARER: run at each login, its first output line is the access token (never
  // logged); its failures are Errc::auth.
  std::string token_command;
  std::chrono::milliseconds command_timeout = std::chrono::seconds(60);
  std::optional<Socks5Proxy> proxy;  // type=imap/imaps only
  bool compress = false;
  bool null_stderr = false;
  Duration connect_timeout = std::chrono::seconds(30);
  Duration io_timeout = std::chrono::seconds(120);  // longest silence while a reply is due
  imap::Limits limits;
  std::size_t max_line = imap::kDefaultMaxLine;
};

// What the connection turned out to be, for the probe and --debug.
struct ConnectionInfo {
  std::string greeting;  // the greeting line's text
  bool preauth = false;
  std::optional<TlsInfo> tls;
  std::string auth_mechanism;  // "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER" or "PREAUTH"
  bool compressed = false;
  std::size_t discarded_before_tls = 0;  // bytes injected before the TLS handshake (discarded)
};

// What an earlier connection learned of a server, for pipelining behind the login: the
// capabilities announced before authentication (the ones this connection must see again) and
// after it (presumed until the login is answered).
struct RememberedCapabilities {
  std::set<std::string> before_login;
  std::set<std::string> after_login;
  friend bool operator==(const RememberedCapabilities&, const RememberedCapabilities&) = default;
};

// Where a streamed literal's body (imap::Chunk::external) comes from, piece by piece.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // The next piece, never empty before the announced size is reached; an error ends the stream.
  virtual asio::awaitable<Result<std::string>> next_piece() = 0;
};

class Client {
 public:
  // Connects, reads the greeting, upgrades to TLS (implicit or STARTTLS), authenticates and
  // refreshes capabilities. Credentials are never sent over an unprotected TCP connection unless
  // STARTTLS = NO. Compression waits for compress().
  //
  // With `remembered`, and when the server announces the same capabilities before login as it
  // did then, and the login is one line (LOGIN, AUTHENTICATE PLAIN with SASL-IR), connect()
  // returns once the login is sent, presuming it will succeed with the capabilities remembered
  // after it (imap::Session::presume_login): the caller's first commands leave with it. The
  // first wait then reads the login's answer; or confirm_login() does, and tells whether the
  // presumption held.
  static asio::awaitable<Result<std::unique_ptr<Client>>> connect(
      Endpoint endpoint, std::optional<RememberedCapabilities> remembered = std::nullopt);

  // What a future connection may presume (nullopt while the login's answer is due).
  std::optional<RememberedCapabilities> capabilities_to_remember() const;
  bool login_pending() const { return pending_login_.has_value(); }
  // Reads the answer to a presumed login: Errc::auth if refused (as connect() would have said),
  // the connection's error if it failed; otherwise whether the capabilities the server
  // announced after the login are the ones presumed (those that decide what went out behind
  // it and the tier; a per-session APPENDLIMIT does not count). When they are not, what went out
  // behind the login was built for another server: close this connection. True at once without a
  // presumed login.
  asio::awaitable<Result<bool>> confirm_login();

  // COMPRESS=DEFLATE if the endpoint asks for it and the server offers it; at once if it is on
  // already or not wanted. Its round trip is paid only once there is work worth compressing: a
  // run that finds nothing changed ends uncompressed (RFC 4978 allows COMPRESS in the
  // authenticated and selected states, not only right after login).
  asio::awaitable<Status> compress();

  ~Client();

  imap::Session& session() { return session_; }
  const Endpoint& endpoint() const { return endpoint_; }
  const ConnectionInfo& info() const { return info_; }
  Transport::Counters counters() const { return transport_->counters(); }
  // How many times the client sent something and then waited for the answer, since the greeting:
  // what a network's latency multiplies.
  std::uint64_t round_trips() const { return round_trips_; }
  // The shortest of those waits so far, from the write to the first bytes of the answer: the
  // network's round-trip time plus the server's quickest reply (nullopt before the first).
  std::optional<Duration> fastest_round_trip() const { return fastest_round_trip_; }

  // Waits for the completion of a command already submitted to session(). A tagged NO/BAD is a
  // Completion (check ok()); an Error means the connection is unusable and has been closed.
  asio::awaitable<Result<imap::Completion>> wait(Result<imap::CommandId> submitted);
  // The same for several pipelined commands, in submission order.
  asio::awaitable<Result<std::vector<imap::Completion>>> wait_all(
      Result<std::vector<imap::CommandId>> submitted);
  // wait() for a command with a streamed literal (an APPEND built with streamed_size): its body
  // is pulled from `source` and written piece by piece, so it is never whole in memory. A literal
  // that cannot be completed (the source failed, gave more or fewer bytes than announced, or a
  // NUL byte) cannot be taken back: the connection is closed, and the server discards the
  // unfinished command.
  asio::awaitable<Result<imap::Completion>> wait_streaming(Result<imap::CommandId> submitted,
                                                           BodySource& source);
  // wait() that turns a tagged NO/BAD into Errc::rejected naming `what` and the server's text.
  asio::awaitable<Result<imap::Completion>> expect_ok(Result<imap::CommandId> submitted,
                                                      std::string what);

  // Reads until an unsolicited response is queued in the session (IDLE/NOTIFY) or `timeout`
  // passes (both ok). The responses stay queued (session().next_unsolicited()): a wait that is
  // cancelled after its read completed loses nothing.
  asio::awaitable<Status> await_unsolicited(Duration timeout);

  // LOGOUT and close; errors are ignored (the connection is going away anyway).
  asio::awaitable<void> logout();
  void close();

 private:
  explicit Client(Endpoint endpoint);

  asio::awaitable<Status> open_transport();
  asio::awaitable<Status> handshake(const std::optional<RememberedCapabilities>& remembered);
  asio::awaitable<Status> authenticate(const std::optional<RememberedCapabilities>& remembered);
  Error login_refused(const imap::Completion& done, const std::string& mechanism);
  void logged_in(const std::string& mechanism);
  asio::awaitable<Status> confirmed();
  // The capabilities a presumption must get right (confirm_login() compares only these).
  static std::set<std::string> decisive(const std::set<std::string>& capabilities);
  Result<imap::CommandId> authenticate_oauth(imap::OAuthMechanism mechanism);
  asio::awaitable<Status> switch_to_tls();

  // Writes what the session has to send, then reads and dispatches until `done()` is true.
  template <class Done>
  asio::awaitable<Status> pump(Done done);
  asio::awaitable<Status> flush();
  asio::awaitable<Status> write_with_deadline(std::string_view bytes);
  asio::awaitable<Status> write_streamed(std::uint64_t size);
  asio::awaitable<Status> read_and_dispatch();
  Status ingest(std::string_view data);
  Status dispatch_frames();
  Status fail(Error error);
  std::optional<imap::Completion> take_completion(imap::CommandId id);

  Endpoint endpoint_;
  ConnectionInfo info_;
  std::unique_ptr<Transport> transport_;
  imap::Reader reader_;
  imap::Session session_;
  std::vector<char> read_buffer_;
  std::vector<imap::Completion> completed_;  // completions not yet claimed by wait()
  std::string after_switch_;                 // bytes read past a STARTTLS/COMPRESS OK
  bool switch_possible_ = false;
  bool compress_asked_ = false;
  std::uint64_t round_trips_ = 0;
  std::uint64_t sent_at_last_read_ = 0;  // plain_out when pump() last started a read
  std::optional<Duration> fastest_round_trip_;
  struct PendingLogin {
    imap::CommandId id = 0;
    std::string mechanism;
    std::set<std::string> presumed;  // the capabilities after it
  };
  std::optional<PendingLogin> pending_login_;
  std::set<std::string> before_login_;  // the capabilities the login was chosen by
  std::optional<Error> failure_;
  BodySource* body_source_ = nullptr;  // set only during wait_streaming()
};

}  // namespace twinbox::net
