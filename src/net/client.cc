#include "net/client.h"

#include <string.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <asio/this_coro.hpp>

#include "base/log.h"
#include "base/secret_command.h"
#include "imap/parser.h"
#include "net/transports.h"

namespace twinbox::net {

namespace {

// Per connection (up to 2 x --jobs of them): 64 KiB is four TLS records, and a read of a body
// larger than that simply takes several. 256 KiB held 1.5 MB of the large corpus's peak heap
// over 8 connections; with 64 KiB its initial sync was no slower (docs/bench/memory-large.md).
constexpr std::size_t kReadBufferSize = 64 * 1024;

imap::SessionOptions session_options(const Endpoint& endpoint) {
  imap::SessionOptions options;
  options.max_line = endpoint.max_line;
  // A tunnel is a local process the user configured; implicit TLS is protected from the start.
  options.secure_transport =
      endpoint.type == EndpointType::tunnel || endpoint.type == EndpointType::imaps;
  // STARTTLS = NO on type=imap is the explicit "cleartext is fine" (loopback, test servers).
  options.allow_cleartext_credentials = endpoint.type == EndpointType::imap && !endpoint.starttls;
  options.trace = Log::instance().enabled(LogLevel::debug);
  return options;
}

std::string default_port(const Endpoint& endpoint) {
  if (!endpoint.port.empty()) return endpoint.port;
  return endpoint.type == EndpointType::imaps ? "993" : "143";
}

// Text of a frame for the wire trace: literal bytes are never shown, only their size.
std::string trace_frame(const imap::Frame& frame) {
  std::string text = printable(frame.text, 2000);
  if (!frame.literals.empty()) {
    std::size_t total = 0;
    for (const auto& literal : frame.literals) total += literal.size();
    text += fmt::format(" [{} literal(s), {} bytes]", frame.literals.size(), total);
  }
  return text;
}

}  // namespace

Client::Client(Endpoint endpoint)
    : endpoint_(std::move(endpoint)),
      reader_(endpoint_.limits),
      session_(session_options(endpoint_)),
      read_buffer_(kReadBufferSize) {}

Client::~Client() { close(); }

void Client::close() {
  if (transport_) transport_->close();
}

Status Client::fail(Error error) {
  if (!failure_) {
    failure_ = error;
    close();
  }
  return *failure_;
}

asio::awaitable<Result<std::unique_ptr<Client>>> Client::connect(
    Endpoint endpoint, std::optional<RememberedCapabilities> remembered) {
  // Registered before anything can be logged: a secret never reaches a trace, whatever path.
  auto& log = Log::instance();
  log.add_secret(endpoint.password);
  if (!endpoint.password.empty()) {
    log.add_secret(imap::sasl_plain("", endpoint.username, endpoint.password));
  }
  std::unique_ptr<Client> client(new Client(std::move(endpoint)));
  Status opened = co_await client->open_transport();
  if (!opened) co_return opened.error();
  Status ready = co_await client->handshake(remembered);
  if (!ready) co_return ready.error();
  co_return std::move(client);
}

asio::awaitable<Status> Client::open_transport() {
  const auto& e = endpoint_;
  if (e.type == EndpointType::tunnel) {
    if (e.command.empty()) co_return Error(Errc::config, "type=tunnel needs a command");
    auto executor = co_await asio::this_coro::executor;
    auto tunnel = TunnelTransport::spawn(executor, e.command, e.null_stderr);
    if (!tunnel) co_return tunnel.error();
    log_debug("{}: started tunnel: {}", e.name, (*tunnel)->describe());
    transport_ = std::move(*tunnel);
    co_return ok_status();
  }
  const std::string port = default_port(e);
  Result<std::unique_ptr<SocketTransport>> socket = Error(Errc::internal, "not connected");
  if (e.proxy) {
    socket = co_await connect_socks5(*e.proxy, e.host, port, e.connect_timeout);
  } else {
    socket = co_await connect_tcp(e.host, port, e.connect_timeout);
  }
  if (!socket) {
    Error error = socket.error();
    error.message = fmt::format("{}: {}", e.name, error.message);
    co_return error;
  }
  log_debug("{}: connected to {}", e.name, (*socket)->describe());
  if (e.type == EndpointType::imaps) {
    auto context = make_tls_context(e.tls);
    if (!context) co_return context.error();
    SocketTransport& raw = **socket;
    auto handshake = raw.start_tls(*context, e.host, e.tls);
    auto tls = co_await with_deadline(std::move(handshake), e.connect_timeout, "TLS handshake");
    if (!tls) co_return tls.error();
    log_debug("{}: TLS {} cipher {} peer sha256${} ({})", e.name, tls->protocol, tls->cipher,
              tls->spki_sha256, tls->subject);
    info_.tls = *tls;
  }
  transport_ = std::move(*socket);
  co_return ok_status();
}

asio::awaitable<Status> Client::handshake(const std::optional<RememberedCapabilities>& remembered) {
  const auto& e = endpoint_;
  Status greeted = co_await pump([this] { return session_.greeting().has_value(); });
  if (!greeted) co_return greeted;
  const auto& greeting = *session_.greeting();
  info_.greeting = greeting.text;
  info_.preauth = session_.preauthenticated();
  if (greeting.condition == imap::Condition::bye) {
    co_return fail(Error(Errc::rejected, fmt::format("{}: the server refused the connection: {}",
                                                     e.name, greeting.text)));
  }
  const bool cleartext_tcp = e.type == EndpointType::imap;
  if (cleartext_tcp && e.starttls && info_.preauth) {
    // RFC 9051 §7.1.4; Thunderbird CVE-2020-12398: PREAUTH on a cleartext port leaves no way to
    // start TLS. Someone in the middle may have sent it; close without sending anything.
    co_return fail(
        Error(Errc::security, fmt::format("{}: PREAUTH greeting over cleartext while STARTTLS is "
                                          "required: refusing to continue (man-in-the-middle?)",
                                          e.name)));
  }
  if (!session_.capabilities_known()) {
    auto caps = co_await expect_ok(session_.capability(), "CAPABILITY");
    if (!caps) co_return caps.error();
  }
  if (cleartext_tcp && e.starttls) {
    if (!session_.has_capability("STARTTLS")) {
      co_return fail(
          Error(Errc::tls, fmt::format("{}: the server does not offer STARTTLS; refusing to send "
                                       "credentials in cleartext (set STARTTLS = NO only for a "
                                       "trusted network)",
                                       e.name)));
    }
    Status tls = co_await switch_to_tls();
    if (!tls) co_return tls;
  }
  if (!info_.preauth) {
    Status authenticated = co_await authenticate(remembered);
    if (!authenticated) co_return authenticated;
  } else {
    info_.auth_mechanism = "PREAUTH";
  }
  if (!session_.capabilities_known()) {
    auto caps = co_await expect_ok(session_.capability(), "CAPABILITY");
    if (!caps) co_return caps.error();
  }
  co_return ok_status();
}

asio::awaitable<Status> Client::switch_to_tls() {
  const auto& e = endpoint_;
  switch_possible_ = true;
  auto done = co_await wait(session_.starttls());
  switch_possible_ = false;
  if (!done) co_return done.error();
  if (!done->ok()) {
    co_return fail(
        Error(Errc::tls, fmt::format("{}: STARTTLS refused: {}", e.name, done->status.text)));
  }
  if (!after_switch_.empty() || reader_.mid_frame()) {
    // The response-injection attack (CVE-2020-15953 class): bytes that arrived after the OK but
    // before the handshake were not protected by TLS. Drop them; never parse them.
    info_.discarded_before_tls = after_switch_.size();
    log_warning(
        "{}: discarded {} byte(s) received after STARTTLS OK and before the TLS "
        "handshake (response injection attempt?): {}",
        e.name, after_switch_.size(), printable(after_switch_, 80));
    after_switch_.clear();
  }
  reader_ = imap::Reader(e.limits);
  auto* socket = dynamic_cast<SocketTransport*>(transport_.get());
  if (socket == nullptr) co_return fail(Error(Errc::internal, "STARTTLS on a non-TCP transport"));
  auto context = make_tls_context(e.tls);
  if (!context) co_return fail(context.error());
  auto handshake = socket->start_tls(*context, e.host, e.tls);
  auto tls = co_await with_deadline(std::move(handshake), e.connect_timeout, "TLS handshake");
  if (!tls) co_return fail(tls.error());
  log_debug("{}: TLS {} cipher {} peer sha256${} ({})", e.name, tls->protocol, tls->cipher,
            tls->spki_sha256, tls->subject);
  info_.tls = *tls;
  session_.transport_switched();
  // Capabilities learned before TLS are void (RFC 9051 §6.2.1); ask again over TLS.
  auto caps = co_await expect_ok(session_.capability(), "CAPABILITY after STARTTLS");
  if (!caps) co_return caps.error();
  co_return ok_status();
}

asio::awaitable<Status> Client::authenticate(
    const std::optional<RememberedCapabilities>& remembered) {
  const auto& e = endpoint_;
  if (e.username.empty()) {
    co_return fail(Error(Errc::config, fmt::format("{}: no username configured and the server "
                                                   "did not pre-authenticate",
                                                   e.name)));
  }
  if (session_.has_capability("LOGINDISABLED")) {
    co_return fail(Error(Errc::auth, fmt::format("{}: the server disabled logins "
                                                 "(LOGINDISABLED); no credentials sent",
                                                 e.name)));
  }
  for (const auto& mechanism : e.auth) {
    Result<imap::CommandId> submitted = Error(Errc::internal, "no mechanism");
    if (mechanism == "PLAIN") {
      if (!session_.has_capability("AUTH=PLAIN")) continue;
      submitted = session_.authenticate_plain(e.username, e.password);
    } else if (mechanism == "LOGIN") {
      // The IMAP LOGIN command is always available unless LOGINDISABLED (checked above).
      submitted = session_.login(e.username, e.password);
    } else if (mechanism == "XOAUTH2" || mechanism == "OAUTHBEARER") {
      if (!session_.has_capability("AUTH=" + mechanism)) continue;
      submitted = authenticate_oauth(mechanism == "XOAUTH2" ? imap::OAuthMechanism::xoauth2
                                                            : imap::OAuthMechanism::oauthbearer);
      if (!submitted) co_return fail(submitted.error());
    } else {
      continue;
    }
    before_login_ = session_.capabilities();
    // The server looks as it did to a connection that remembered what came after its login:
    // presume the same again, so the first commands leave with the login (an OAuth login is
    // never presumed: a refused token is answered with a challenge, which a pipelined line would
    // answer).
    if (submitted && remembered && remembered->before_login == before_login_ &&
        (mechanism == "PLAIN" || mechanism == "LOGIN")) {
      Status presumed = session_.presume_login(remembered->after_login);
      if (presumed) {
        pending_login_ = PendingLogin{*submitted, mechanism, remembered->after_login};
        log_debug("{}: {} sent; presuming the capabilities the server announced last time", e.name,
                  mechanism);
        co_return ok_status();
      }
      log_debug("{}: not pipelining behind the login: {}", e.name, presumed.error().message);
    }
    auto done = co_await wait(std::move(submitted));
    if (!done) co_return done.error();
    if (!done->ok()) co_return fail(login_refused(*done, mechanism));
    logged_in(mechanism);
    co_return ok_status();
  }
  co_return fail(Error(Errc::auth, fmt::format("{}: none of the configured mechanisms ({}) is "
                                               "offered by the server",
                                               e.name, fmt::join(e.auth, " "))));
}

Error Client::login_refused(const imap::Completion& done, const std::string& mechanism) {
  // An OAuth refusal comes with the server's JSON status (RFC 7628 §3.2.2): the evidence.
  const std::string status = imap::sasl_error_status(done);
  return Error(Errc::auth,
               fmt::format("{}: authentication as '{}' failed ({}): {}{}", endpoint_.name,
                           endpoint_.username, mechanism, done.status.text,
                           status.empty() ? "" : fmt::format(" (the server said {})", status)));
}

void Client::logged_in(const std::string& mechanism) {
  info_.auth_mechanism = mechanism;
  log_debug("{}: authenticated as '{}' with {}", endpoint_.name, endpoint_.username, mechanism);
}

asio::awaitable<Result<bool>> Client::confirm_login() {
  if (!pending_login_) co_return true;
  const PendingLogin login = std::move(*pending_login_);
  pending_login_.reset();
  auto done = co_await wait(login.id);
  if (!done) co_return done.error();
  if (!done->ok()) {
    Status refused = fail(login_refused(*done, login.mechanism));
    co_return refused.error();
  }
  logged_in(login.mechanism);
  if (!session_.capabilities_known()) {
    auto caps = co_await expect_ok(session_.capability(), "CAPABILITY");
    if (!caps) co_return caps.error();
  }
  const bool held = decisive(session_.capabilities()) == decisive(login.presumed);
  if (!held) {
    log_debug("{}: the capabilities after login are not the ones presumed: {}", endpoint_.name,
              fmt::join(session_.capabilities(), " "));
  }
  co_return held;
}

std::set<std::string> Client::decisive(const std::set<std::string>& capabilities) {
  // What the commands sent behind a presumed login were built with (ENABLE, a LIST with RETURN
  // options and STATUS, their literals) and what the store chose its tier by. Anything else is
  // read from the server's own answer before it is used.
  static const std::set<std::string> kDecisive = {
      "ENABLE",      "QRESYNC",  "CONDSTORE", "IMAP4REV2", "LIST-EXTENDED",
      "LIST-STATUS", "LITERAL+", "LITERAL-",  "BINARY",    "UTF8=ACCEPT"};
  std::set<std::string> out;
  for (const auto& cap : capabilities) {
    if (kDecisive.count(cap)) out.insert(cap);
  }
  return out;
}

asio::awaitable<Status> Client::confirmed() {
  auto held = co_await confirm_login();
  if (!held) co_return held.error();
  if (!*held) {
    co_return fail(Error(Errc::protocol,
                         fmt::format("{}: the server's capabilities after login are not the ones "
                                     "it announced to the last connection",
                                     endpoint_.name)));
  }
  co_return ok_status();
}

std::optional<RememberedCapabilities> Client::capabilities_to_remember() const {
  if (pending_login_ || info_.preauth || !session_.capabilities_known()) return std::nullopt;
  return RememberedCapabilities{before_login_, session_.capabilities()};
}

Result<imap::CommandId> Client::authenticate_oauth(imap::OAuthMechanism mechanism) {
  const auto& e = endpoint_;
  if (e.token_command.empty()) {
    return Error(Errc::config,
                 fmt::format("{}: {} needs a token-command", e.name, imap::to_string(mechanism)));
  }
  // A fresh token at each login: the helper refreshes it when it has expired.
  auto token = run_secret_command(
      {fmt::format("{}: token-command", e.name), e.token_command, e.command_timeout, Errc::auth});
  if (!token) return token.error();
  const std::string port = default_port(e);
  // Every form the token can take on the wire is a secret before anything is sent or traced.
  auto& log = Log::instance();
  log.add_secret(imap::sasl_xoauth2(e.username, *token));
  log.add_secret(imap::sasl_oauthbearer(e.username, *token, e.host, port));
  auto submitted = session_.authenticate_oauth(mechanism, e.username, *token, e.host, port);
  ::explicit_bzero(token->data(), token->size());
  return submitted;
}

asio::awaitable<Status> Client::compress() {
  const auto& e = endpoint_;
  if (!e.compress || compress_asked_) co_return ok_status();
  compress_asked_ = true;  // once: on already, or a refusal that would not change
  if (!session_.has_capability("COMPRESS=DEFLATE")) {
    log_debug("{}: COMPRESS=DEFLATE not offered; continuing uncompressed", e.name);
    co_return ok_status();
  }
  switch_possible_ = true;
  auto done = co_await wait(session_.compress_deflate());
  switch_possible_ = false;
  if (!done) co_return done.error();
  if (!done->ok()) {
    // NO [COMPRESSIONACTIVE] (RFC 4978 §3): a lower layer already compresses; carry on.
    log_debug("{}: COMPRESS refused: {}", e.name, done->status.text);
    co_return ok_status();
  }
  // Bytes read past the OK are already compressed: they belong to the inflater (RFC 4978 §3).
  transport_ = make_compressed(std::move(transport_), std::move(after_switch_));
  after_switch_.clear();
  session_.transport_switched();
  info_.compressed = true;
  log_debug("{}: COMPRESS=DEFLATE active", e.name);
  co_return ok_status();
}

std::optional<imap::Completion> Client::take_completion(imap::CommandId id) {
  while (auto completion = session_.next_completion()) completed_.push_back(std::move(*completion));
  auto it = std::find_if(completed_.begin(), completed_.end(),
                         [id](const imap::Completion& c) { return c.id == id; });
  if (it == completed_.end()) return std::nullopt;
  imap::Completion found = std::move(*it);
  completed_.erase(it);
  return found;
}

asio::awaitable<Result<imap::Completion>> Client::wait(Result<imap::CommandId> submitted) {
  if (!submitted) co_return submitted.error();
  // A presumed login is answered before anything behind it: its outcome is read first.
  if (pending_login_) {
    Status held = co_await confirmed();
    if (!held) co_return held.error();
  }
  const imap::CommandId id = *submitted;
  std::optional<imap::Completion> completion;
  Status pumped = co_await pump([&] {
    completion = take_completion(id);
    return completion.has_value();
  });
  if (!pumped) co_return pumped.error();
  co_return std::move(*completion);
}

asio::awaitable<Result<imap::Completion>> Client::wait_streaming(Result<imap::CommandId> submitted,
                                                                 BodySource& source) {
  body_source_ = &source;
  auto done = co_await wait(std::move(submitted));
  body_source_ = nullptr;
  co_return done;
}

asio::awaitable<Result<std::vector<imap::Completion>>> Client::wait_all(
    Result<std::vector<imap::CommandId>> submitted) {
  if (!submitted) co_return submitted.error();
  std::vector<imap::Completion> out;
  for (imap::CommandId id : *submitted) {
    auto one = co_await wait(id);
    if (!one) co_return one.error();
    out.push_back(std::move(*one));
  }
  co_return out;
}

asio::awaitable<Result<imap::Completion>> Client::expect_ok(Result<imap::CommandId> submitted,
                                                            std::string what) {
  auto done = co_await wait(std::move(submitted));
  if (!done) co_return done.error();
  if (!done->ok()) {
    co_return Error(Errc::rejected,
                    fmt::format("{}: {} failed: {}", endpoint_.name, what, done->status.text));
  }
  co_return std::move(*done);
}

asio::awaitable<Status> Client::await_unsolicited(Duration timeout) {
  if (pending_login_) {
    Status held = co_await confirmed();
    if (!held) co_return held;
  }
  if (session_.has_unsolicited()) co_return ok_status();
  Status flushed = co_await flush();
  if (!flushed) co_return flushed;
  auto reading = read_and_dispatch();
  auto read = co_await with_deadline(std::move(reading), timeout, "waiting for the server");
  // A timeout cancelled the read; the connection itself is fine.
  if (!read && read.error().code != Errc::timeout) co_return read.error();
  co_return ok_status();
}

asio::awaitable<void> Client::logout() {
  if (transport_ && !failure_ && session_.state() != imap::ConnectionState::logout) {
    auto submitted = session_.logout();
    if (submitted) {
      auto done = co_await wait(std::move(submitted));
      (void)done;
    }
  }
  close();
}

template <class Done>
asio::awaitable<Status> Client::pump(Done done) {
  for (;;) {
    if (failure_) co_return *failure_;
    Status flushed = co_await flush();
    if (!flushed) co_return flushed;
    if (done()) co_return ok_status();
    // A read after something went out waits for an answer: a round trip. More reads for the same
    // answer, or commands written together, are not another.
    const std::uint64_t sent = transport_->counters().plain_out;
    const bool round_trip = sent != sent_at_last_read_;
    if (round_trip) ++round_trips_;
    sent_at_last_read_ = sent;
    if (session_.pending_switch() != imap::TransportSwitch::none) {
      co_return fail(Error(Errc::internal, "transport switch pending while waiting"));
    }
    const auto asked = std::chrono::steady_clock::now();
    auto reading = read_and_dispatch();
    Status read = co_await with_deadline(std::move(reading), endpoint_.io_timeout,
                                         endpoint_.name + ": waiting for the server");
    if (!read) co_return fail(read.error());
    if (round_trip) {
      // Bytes already waiting (an unsolicited response) make this shorter than the network's
      // round trip, never longer: an underestimate, which callers treat as a fast link.
      const Duration took = std::chrono::steady_clock::now() - asked;
      if (!fastest_round_trip_ || took < *fastest_round_trip_) fastest_round_trip_ = took;
    }
  }
}

asio::awaitable<Status> Client::flush() {
  // Small chunks (command text, short literals) are gathered into one write: a pipelined batch
  // leaves in one segment. Large literals (message bodies) are written from their own buffer.
  constexpr std::size_t kGather = 64 * 1024;
  const bool trace = Log::instance().enabled(LogLevel::debug);
  std::string batch;
  for (;;) {
    std::optional<imap::Chunk> chunk = session_.next_output();
    const bool large = chunk && (chunk->bytes.size() >= kGather || chunk->external > 0);
    if (!batch.empty() && (!chunk || large || batch.size() + chunk->bytes.size() > kGather)) {
      Status written = co_await write_with_deadline(batch);
      if (!written) co_return written;
      batch.clear();
    }
    if (trace) {
      while (auto line = session_.next_trace()) log_debug("{}: C: {}", endpoint_.name, *line);
    }
    if (!chunk) break;
    if (chunk->external > 0) {
      Status streamed = co_await write_streamed(chunk->external);
      if (!streamed) co_return streamed;
    } else if (large) {
      Status written = co_await write_with_deadline(chunk->bytes);
      if (!written) co_return written;
    } else {
      batch += chunk->bytes;
    }
  }
  co_return ok_status();
}

asio::awaitable<Status> Client::write_streamed(std::uint64_t size) {
  if (!body_source_) {
    co_return fail(Error(Errc::internal, endpoint_.name + ": streamed literal without a source"));
  }
  std::uint64_t written = 0;
  while (written < size) {
    // Pulling the piece may take a while (it is read from the other server); the deadline
    // applies to each write, not to the source.
    Result<std::string> piece = co_await body_source_->next_piece();
    if (!piece) co_return fail(piece.error());
    if (piece->empty() || piece->size() > size - written) {
      co_return fail(
          Error(Errc::protocol,
                fmt::format("{}: a streamed literal of {} bytes got {} bytes", endpoint_.name, size,
                            piece->empty() ? written : written + piece->size())));
    }
    if (const void* nul = std::memchr(piece->data(), '\0', piece->size()); nul != nullptr) {
      // RFC 9051 §4.3: a literal is CHAR8. The in-memory path would send literal8 instead.
      co_return fail(
          Error(Errc::protocol,
                fmt::format("{}: NUL byte at offset {} of a streamed literal", endpoint_.name,
                            written + static_cast<std::uint64_t>(static_cast<const char*>(nul) -
                                                                 piece->data()))));
    }
    Status sent = co_await write_with_deadline(*piece);
    if (!sent) co_return sent;
    written += piece->size();
  }
  co_return ok_status();
}

asio::awaitable<Status> Client::write_with_deadline(std::string_view bytes) {
  auto writing = transport_->write_all(bytes);
  Status written = co_await with_deadline(std::move(writing), endpoint_.io_timeout,
                                          endpoint_.name + ": sending to the server");
  if (!written) co_return fail(written.error());
  co_return ok_status();
}

asio::awaitable<Status> Client::read_and_dispatch() {
  // Read errors are returned, not recorded with fail(): under a deadline the caller decides
  // whether a cancelled read is a timeout (fatal) or the end of a bounded wait (harmless).
  auto n = co_await transport_->read_some(asio::buffer(read_buffer_.data(), read_buffer_.size()));
  if (!n) {
    if (n.error().code == Errc::eof) {
      if (reader_.mid_frame()) {
        co_return Error(Errc::eof, fmt::format("{}: connection closed in the middle of a response",
                                               endpoint_.name));
      }
      Status closed = session_.on_eof();
      if (!closed)
        co_return Error(closed.error().code, endpoint_.name + ": " + closed.error().message);
    }
    co_return n.error();
  }
  co_return ingest(std::string_view(read_buffer_.data(), *n));
}

Status Client::ingest(std::string_view data) {
  if (!switch_possible_) {
    Status fed = reader_.feed(data);
    Status dispatched = dispatch_frames();  // frames completed before a framing error count
    if (!fed) return fail(fed.error());
    return dispatched;
  }
  // A STARTTLS or COMPRESS answer may be followed, in the same read, by bytes of the next layer
  // (or by an attacker's injection): feed line by line and stop at the switch.
  while (!data.empty()) {
    const std::size_t lf = data.find('\n');
    const std::size_t take = lf == std::string_view::npos ? data.size() : lf + 1;
    Status fed = reader_.feed(data.substr(0, take));
    if (!fed) return fail(fed.error());
    data.remove_prefix(take);
    Status dispatched = dispatch_frames();
    if (!dispatched) return dispatched;
    if (session_.pending_switch() != imap::TransportSwitch::none) {
      after_switch_.append(data.data(), data.size());
      return ok_status();
    }
  }
  return ok_status();
}

Status Client::dispatch_frames() {
  const bool trace = Log::instance().enabled(LogLevel::debug);
  while (auto frame = reader_.next()) {
    if (trace) log_debug("{}: S: {}", endpoint_.name, trace_frame(*frame));
    auto response = imap::parse_response(std::move(*frame), endpoint_.limits);
    if (!response) {
      Error e = response.error();
      e.message = fmt::format("{}: bad response from the server: {}", endpoint_.name, e.message);
      return fail(std::move(e));
    }
    Status handled = session_.on_response(std::move(*response));
    if (!handled) {
      Error e = handled.error();
      e.message = fmt::format("{}: {}", endpoint_.name, e.message);
      return fail(std::move(e));
    }
  }
  return ok_status();
}

}  // namespace twinbox::net
