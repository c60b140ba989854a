#include "imap/session.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "base/base64.h"

namespace twinbox::imap {

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>((c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c);
  return out;
}

bool contains_item(const std::vector<std::string>& items, std::string_view item) {
  return std::any_of(items.begin(), items.end(),
                     [&](const std::string& s) { return upper(s) == item; });
}

Error internal(std::string message) { return Error(Errc::internal, std::move(message)); }

}  // namespace

bool may_pipeline(CommandKind kind) {
  switch (kind) {
    case CommandKind::uid_fetch:
    case CommandKind::uid_store:
    case CommandKind::uid_search:
    case CommandKind::uid_copy:
    case CommandKind::uid_move:
    case CommandKind::uid_expunge:
    case CommandKind::append:
    case CommandKind::status:
    case CommandKind::list:
    case CommandKind::lsub:
    case CommandKind::noop:
      return true;
    default:
      return false;
  }
}

bool may_follow_enable(CommandKind kind) {
  return kind == CommandKind::list || kind == CommandKind::lsub || kind == CommandKind::status ||
         kind == CommandKind::noop;
}

bool may_follow_select(CommandKind kind) { return kind == CommandKind::uid_fetch; }

bool may_follow_own_kind(CommandKind in_flight, CommandKind next) {
  const auto subscription = [](CommandKind k) {
    return k == CommandKind::subscribe || k == CommandKind::unsubscribe;
  };
  return (in_flight == CommandKind::create && next == CommandKind::create) ||
         (subscription(in_flight) && subscription(next));
}

bool may_follow_login(CommandKind kind) {
  return kind == CommandKind::enable || may_follow_enable(kind);
}

Session::Session(SessionOptions options) : options_(options), secure_(options.secure_transport) {}

Status Session::fail(Error error) {
  if (!failure_) failure_ = error;
  return error;
}

// ----- Output ---------------------------------------------------------------------------------

bool Session::can_start(const Pending& next) const {
  if (in_flight_.empty()) return true;
  if (in_flight_.size() >= options_.max_in_flight) return false;
  return std::all_of(in_flight_.begin(), in_flight_.end(), [&](const Pending& p) {
    // RFC 9051 §5.5: continuations are negotiated before any subsequent command is initiated.
    if (!p.chunks.empty()) return false;
    if (p.id == presumed_login_) return may_follow_login(next.kind);
    if (may_follow_own_kind(p.kind, next.kind)) return true;
    if (!may_pipeline(next.kind)) return false;
    if (p.kind == CommandKind::enable) return may_follow_enable(next.kind);
    if (p.kind == CommandKind::select || p.kind == CommandKind::examine) {
      return may_follow_select(next.kind);
    }
    return may_pipeline(p.kind);
  });
}

void Session::on_started(Pending& p) {
  if (p.kind == CommandKind::select || p.kind == CommandKind::examine) {
    // A new mailbox state from the moment the SELECT leaves; [CLOSED] resets it once more, since
    // what precedes that code still concerns the old mailbox (RFC 7162 §3.2.11).
    mailbox_ = MailboxState{};
    mailbox_->name = p.mailbox;
    mailbox_->read_only = p.kind == CommandKind::examine;
  }
}

std::optional<Chunk> Session::next_output() {
  if (failure_ || switch_ != TransportSwitch::none) return std::nullopt;
  if (state_ == ConnectionState::greeting || state_ == ConnectionState::logout) return std::nullopt;
  if (!in_flight_.empty() && !in_flight_.back().chunks.empty()) {
    Pending& p = in_flight_.back();
    if (p.chunks.front().wait_continuation) return std::nullopt;
    Chunk chunk = std::move(p.chunks.front());
    p.chunks.pop_front();
    return emit(std::move(chunk));
  }
  if (queue_.empty() || !can_start(queue_.front())) return std::nullopt;
  in_flight_.push_back(std::move(queue_.front()));
  queue_.pop_front();
  Pending& p = in_flight_.back();
  on_started(p);
  Chunk chunk = std::move(p.chunks.front());
  p.chunks.pop_front();
  return emit(std::move(chunk));
}

Chunk Session::emit(Chunk&& chunk) {
  if (options_.trace) {
    trace_line_ += chunk.trace();
    const std::string_view b = chunk.bytes;
    if (!chunk.literal && b.size() >= 2 && b.substr(b.size() - 2) == "\r\n") {
      traces_.push_back(std::move(trace_line_));
      trace_line_.clear();
    }
  }
  return std::move(chunk);
}

std::optional<std::string> Session::next_trace() {
  if (traces_.empty()) return std::nullopt;
  std::string t = std::move(traces_.front());
  traces_.pop_front();
  return t;
}

void Session::transport_switched() {
  if (switch_ == TransportSwitch::tls) secure_ = true;
  switch_ = TransportSwitch::none;
}

std::optional<Completion> Session::next_completion() {
  if (completions_.empty()) return std::nullopt;
  Completion c = std::move(completions_.front());
  completions_.pop_front();
  return c;
}

std::optional<Response> Session::next_unsolicited() {
  if (unsolicited_.empty()) return std::nullopt;
  Response r = std::move(unsolicited_.front());
  unsolicited_.pop_front();
  return r;
}

// ----- Input ----------------------------------------------------------------------------------

Status Session::on_response(Response&& response) {
  if (failure_) return *failure_;
  if (switch_ != TransportSwitch::none) {
    // RFC 9051 §6.2.1 and the 2020-21 STARTTLS response-injection CVEs: whatever arrives before
    // the switch was sent in cleartext (or uncompressed) by someone who is not the TLS peer.
    return fail(Error(Errc::security, switch_ == TransportSwitch::tls
                                          ? "response received after STARTTLS OK, before the "
                                            "TLS handshake (response injection)"
                                          : "response received after COMPRESS OK, outside the "
                                            "compressed stream"));
  }
  if (state_ == ConnectionState::greeting) return on_greeting(std::move(response));
  if (auto* s = std::get_if<StatusResponse>(&response.data); s != nullptr && !s->tag.empty()) {
    return on_tagged(std::move(*s));
  }
  if (std::holds_alternative<ContinuationRequest>(response.data)) {
    return on_continuation(std::move(response));
  }
  apply_untagged(response);
  if (!in_flight_.empty() && !idling_ && in_flight_.front().kind != CommandKind::idle) {
    if (announcing_ && (std::holds_alternative<StatusData>(response.data) ||
                        std::holds_alternative<ListData>(response.data))) {
      unsolicited_.push_back(response);
    }
    in_flight_.front().untagged.push_back(std::move(response));
  } else {
    unsolicited_.push_back(std::move(response));
  }
  return ok_status();
}

Status Session::on_greeting(Response&& response) {
  auto* s = std::get_if<StatusResponse>(&response.data);
  if (s == nullptr || !s->tag.empty() ||
      (s->condition != Condition::ok && s->condition != Condition::preauth &&
       s->condition != Condition::bye)) {
    return fail(Error(Errc::protocol, "expected a greeting (OK, PREAUTH or BYE)"));
  }
  switch (s->condition) {
    case Condition::ok:
      state_ = ConnectionState::not_authenticated;
      break;
    case Condition::preauth:
      // The shell decides whether PREAUTH on an unprotected transport is acceptable (RFC 9051
      // §7.1.4: a client that requires TLS must close).
      state_ = ConnectionState::authenticated;
      preauth_ = true;
      break;
    default:
      state_ = ConnectionState::logout;
      bye_ = *s;
      break;
  }
  apply_code(s->code);
  greeting_ = std::move(*s);
  return ok_status();
}

Status Session::on_tagged(StatusResponse&& status) {
  auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                         [&](const Pending& p) { return p.tag == status.tag; });
  if (it == in_flight_.end()) {
    return fail(
        Error(Errc::protocol, fmt::format("tagged response for unknown tag {}", status.tag)));
  }
  Pending& p = *it;
  const bool ok = status.condition == Condition::ok;
  if (!p.chunks.empty()) {
    // The server cannot accept what it has not received. IDLE is the exception: the server may
    // end it before our DONE went out.
    if (ok && p.kind != CommandKind::idle) {
      return fail(
          Error(Errc::protocol,
                fmt::format("tagged OK for {} before the command was sent in full", p.tag)));
    }
    // RFC 9051 §4.3: a NO/BAD instead of "+" voids the rest of the command; sending the literal
    // anyway would have the server run its bytes as commands.
    p.chunks.clear();
  }

  apply_code(status.code);
  if (ok) {
    switch (p.kind) {
      case CommandKind::starttls:
        // RFC 9051 §6.2.1: capabilities learned before TLS must be discarded.
        clear_capabilities();
        switch_ = TransportSwitch::tls;
        break;
      case CommandKind::login:
      case CommandKind::authenticate:
        state_ = ConnectionState::authenticated;
        presumed_login_.reset();
        // RFC 9051 §6.2.2-6.2.3: capabilities may change with authentication; keep them only if
        // the server restated them since the command was sent.
        if (status.code.kind != CodeKind::capability && !p.saw_capability) clear_capabilities();
        break;
      case CommandKind::select:
      case CommandKind::examine:
        state_ = ConnectionState::selected;
        break;
      case CommandKind::unselect:
      case CommandKind::close:
        state_ = ConnectionState::authenticated;
        mailbox_.reset();
        break;
      case CommandKind::compress:
        switch_ = TransportSwitch::deflate;
        compression_active_ = true;
        break;
      case CommandKind::logout:
        state_ = ConnectionState::logout;
        break;
      default:
        break;
    }
  } else if (p.id == presumed_login_) {
    // Refused: what was presumed is void, and the server announced nothing that counts.
    presumed_login_.reset();
    clear_capabilities();
  } else if (p.kind == CommandKind::select || p.kind == CommandKind::examine) {
    // RFC 9051 §6.3.2: a failed SELECT leaves no mailbox selected.
    if (state_ == ConnectionState::selected) state_ = ConnectionState::authenticated;
    mailbox_.reset();
  }
  if (p.kind == CommandKind::idle) idling_ = false;
  close_modseq_window();

  Completion c;
  c.id = p.id;
  c.tag = std::move(p.tag);
  c.kind = p.kind;
  c.status = std::move(status);
  c.untagged = std::move(p.untagged);
  completions_.push_back(std::move(c));
  in_flight_.erase(it);
  return ok_status();
}

Status Session::on_continuation(Response&& response) {
  if (in_flight_.empty()) {
    return fail(Error(Errc::protocol, "continuation request with no command in progress"));
  }
  // Nothing is started after a command with unsent chunks, so the newest command is the one
  // that can be waiting for "+".
  Pending& p = in_flight_.back();
  if (p.kind == CommandKind::idle) idling_ = true;  // RFC 2177 §3: "+ idling"
  for (auto& chunk : p.chunks) {
    if (chunk.wait_continuation) {
      chunk.wait_continuation = false;
      return ok_status();
    }
  }
  if (p.kind == CommandKind::idle) return ok_status();
  if (p.kind == CommandKind::authenticate) {
    if (p.sasl_error_answer) {
      // RFC 7628 §3.2.3: the server's error challenge gets the mechanism's dummy response, once;
      // the challenge is the evidence of why the token was refused.
      p.chunks.push_back(Chunk{*p.sasl_error_answer + "\r\n"});
      p.sasl_error_answer.reset();
      p.untagged.push_back(std::move(response));
      return ok_status();
    }
    // A challenge the mechanism has no answer for: cancel the exchange with "*" (RFC 9051
    // §6.2.2); the server then answers BAD.
    p.chunks.push_back(Chunk{"*\r\n"});
    return ok_status();
  }
  return fail(Error(Errc::protocol, fmt::format("unexpected continuation request for {}", p.tag)));
}

void Session::apply_untagged(const Response& response) {
  if (const auto* s = std::get_if<StatusResponse>(&response.data)) {
    if (s->condition == Condition::bye) {
      state_ = ConnectionState::logout;
      bye_ = *s;
    }
    apply_code(s->code);
  } else if (const auto* caps = std::get_if<CapabilityData>(&response.data)) {
    set_capabilities(caps->capabilities);
    for (auto& p : in_flight_) {
      if (p.kind == CommandKind::login || p.kind == CommandKind::authenticate) {
        p.saw_capability = true;
      }
    }
  } else if (const auto* enabled = std::get_if<EnabledData>(&response.data)) {
    // RFC 9051 §11.3: nothing but CAPABILITY and status responses counts before authentication.
    if (state_ == ConnectionState::authenticated || state_ == ConnectionState::selected) {
      for (const auto& cap : enabled->capabilities) {
        enabled_.insert(upper(cap));
        // RFC 7162 §3.2.3: enabling QRESYNC enables CONDSTORE as well.
        if (upper(cap) == "QRESYNC") enabled_.insert("CONDSTORE");
      }
    }
  } else if (!mailbox_) {
    // Mailbox data outside the selected state is ignored (RFC 9051 §11.3).
  } else if (const auto* exists = std::get_if<ExistsData>(&response.data)) {
    mailbox_->exists = exists->count;
  } else if (std::holds_alternative<ExpungeData>(response.data)) {
    if (mailbox_->exists == 0) {
      mailbox_->anomalies.push_back("EXPUNGE with no message in the mailbox");
    } else {
      --mailbox_->exists;
    }
  } else if (const auto* vanished = std::get_if<VanishedData>(&response.data)) {
    // VANISHED (EARLIER) renumbers nothing (RFC 7162 §3.2.10.1).
    if (!vanished->earlier) {
      const std::uint64_t n = vanished->uids.size();
      if (n > mailbox_->exists) {
        mailbox_->anomalies.push_back(
            fmt::format("VANISHED of {} messages with only {} in the "
                        "mailbox",
                        n, mailbox_->exists));
        mailbox_->exists = 0;
      } else {
        mailbox_->exists -= static_cast<std::uint32_t>(n);
      }
    }
  } else if (const auto* fetch = std::get_if<FetchData>(&response.data)) {
    if (fetch->modseq) {
      mailbox_->pending_modseq = std::max(mailbox_->pending_modseq, *fetch->modseq);
    }
  }
}

void Session::apply_code(const ResponseCode& code) {
  if (code.kind == CodeKind::capability) {
    set_capabilities(code.atoms);
    return;
  }
  if (code.kind == CodeKind::closed) {
    // RFC 7162 §3.2.11: what follows concerns the newly selected mailbox.
    for (const auto& p : in_flight_) {
      if (p.kind == CommandKind::select || p.kind == CommandKind::examine) {
        mailbox_ = MailboxState{};
        mailbox_->name = p.mailbox;
        mailbox_->read_only = p.kind == CommandKind::examine;
        break;
      }
    }
    return;
  }
  if (!mailbox_) return;
  MailboxState& m = *mailbox_;
  switch (code.kind) {
    case CodeKind::highestmodseq:
      set_highestmodseq(code.number);
      m.modseq_code_in_window = true;
      m.nomodseq = false;
      break;
    case CodeKind::nomodseq:
      // RFC 7162 §3.1.2.2 / §6: forget the value; the mailbox has no persistent mod-sequences.
      m.nomodseq = true;
      m.highestmodseq.reset();
      break;
    case CodeKind::uidvalidity: {
      const auto v = static_cast<std::uint32_t>(code.number);
      if (m.uidvalidity && *m.uidvalidity != v) {
        m.uidvalidity_changed = true;
        m.anomalies.push_back(
            fmt::format("UIDVALIDITY changed from {} to {} while selected", *m.uidvalidity, v));
      }
      m.uidvalidity = v;
      break;
    }
    case CodeKind::uidnext:
      m.uidnext = static_cast<std::uint32_t>(code.number);
      break;
    case CodeKind::read_only:
      m.read_only = true;
      break;
    case CodeKind::read_write:
      m.read_only = false;
      break;
    default:
      break;
  }
}

void Session::set_highestmodseq(ModSeq value) {
  MailboxState& m = *mailbox_;
  if (m.highestmodseq && value < *m.highestmodseq) {
    // Trojitá's rule: distrust, record and let the sync layer fall back to a full resync. The
    // lower value is kept: asking for changes since an older point loses nothing.
    m.modseq_regressed = true;
    m.anomalies.push_back(
        fmt::format("HIGHESTMODSEQ went backwards from {} to {}", *m.highestmodseq, value));
  }
  m.highestmodseq = value;
}

void Session::close_modseq_window() {
  if (!mailbox_) return;
  MailboxState& m = *mailbox_;
  // RFC 7162 §6: without a HIGHESTMODSEQ code since the last tagged response, the highest
  // MODSEQ seen becomes the value if it is bigger. With no baseline (CONDSTORE not active) the
  // FETCH values alone establish nothing.
  if (!m.modseq_code_in_window && !m.nomodseq && m.highestmodseq &&
      m.pending_modseq > *m.highestmodseq) {
    m.highestmodseq = m.pending_modseq;
  }
  m.pending_modseq = 0;
  m.modseq_code_in_window = false;
}

void Session::set_capabilities(const std::vector<std::string>& caps) {
  caps_.clear();
  for (const auto& c : caps) caps_.insert(upper(c));
  caps_known_ = true;
}

void Session::clear_capabilities() {
  caps_.clear();
  caps_known_ = false;
}

Status Session::on_eof() {
  if (failure_) return *failure_;
  const bool only_logout =
      queue_.empty() && std::all_of(in_flight_.begin(), in_flight_.end(),
                                    [](const Pending& p) { return p.kind == CommandKind::logout; });
  const bool logout_sent = std::any_of(in_flight_.begin(), in_flight_.end(), [](const Pending& p) {
    return p.kind == CommandKind::logout;
  });
  if (only_logout && (state_ == ConnectionState::logout || logout_sent)) {
    state_ = ConnectionState::logout;
    return ok_status();
  }
  std::string message;
  if (state_ == ConnectionState::greeting) {
    message = "connection closed before the greeting";
  } else if (bye_) {
    message = fmt::format("server closed the connection (BYE {})", bye_->text);
  } else {
    message = "server closed the connection unexpectedly";
  }
  if (!in_flight_.empty() || !queue_.empty()) {
    message += fmt::format(" with {} command(s) unanswered", in_flight_.size() + queue_.size());
  }
  state_ = ConnectionState::logout;
  return fail(Error(Errc::eof, std::move(message)));
}

// ----- Capabilities ---------------------------------------------------------------------------

bool Session::has_capability(std::string_view name) const { return caps_.count(upper(name)) > 0; }

bool Session::is_enabled(std::string_view name) const { return enabled_.count(upper(name)) > 0; }

WireOptions Session::wire_options() const {
  WireOptions w;
  if (has_capability("LITERAL-")) {
    w.literals = LiteralMode::minus;  // also if LITERAL+ is (wrongly) advertised alongside
  } else if (has_capability("LITERAL+")) {
    w.literals = LiteralMode::plus;
  }
  w.utf8_accept = is_enabled("UTF8=ACCEPT");
  w.binary = has_capability("BINARY");
  return w;
}

// ----- Submitting -----------------------------------------------------------------------------

Result<CommandId> Session::submit(Command command) {
  if (failure_) return *failure_;
  if (state_ == ConnectionState::logout) {
    return Error(Errc::eof, fmt::format("cannot send {}: the connection is closing", command.name));
  }
  if (command.chunks.empty()) return internal("empty command");
  const std::size_t line = command.longest_line() + kTagReserve;
  if (line > options_.max_line) {
    return Error(Errc::limit, fmt::format("{} command line of {} octets exceeds the limit of {}",
                                          command.name, line, options_.max_line));
  }
  Pending p;
  p.id = next_id_++;
  p.tag = fmt::format("T{}", p.id);
  p.kind = command.kind;
  command.assign_tag(p.tag);
  for (auto& chunk : command.chunks) p.chunks.push_back(std::move(chunk));
  if (p.kind == CommandKind::select || p.kind == CommandKind::examine) select_submitted_ = true;
  queue_.push_back(std::move(p));
  return queue_.back().id;
}

Result<CommandId> Session::submit_checked(Result<Command> command) {
  if (!command.ok()) return std::move(command).error();
  return submit(std::move(*command));
}

Result<std::vector<CommandId>> Session::submit_all(Result<std::vector<Command>> commands) {
  if (!commands.ok()) return std::move(commands).error();
  std::vector<CommandId> ids;
  for (auto& c : *commands) {
    auto id = submit(std::move(c));
    if (!id.ok()) return std::move(id).error();
    ids.push_back(*id);
  }
  return ids;
}

Status Session::require_caps_known(std::string_view what) const {
  if (!caps_known_) {
    return internal(fmt::format("{} needs the server's capabilities: send CAPABILITY first", what));
  }
  return ok_status();
}

Status Session::require_credentials_allowed() const {
  if (!secure_ && !options_.allow_cleartext_credentials) {
    return Error(Errc::auth, "refusing to send credentials over an unencrypted connection");
  }
  return ok_status();
}

Result<CommandId> Session::capability() { return submit(cmd::capability()); }
Result<CommandId> Session::noop() { return submit(cmd::noop()); }
Result<CommandId> Session::logout() { return submit(cmd::logout()); }

Result<CommandId> Session::starttls() {
  if (state_ != ConnectionState::not_authenticated) {
    // After PREAUTH the connection is authenticated and STARTTLS is no longer allowed (RFC 9051
    // §6.2.1); carrying on in cleartext is the CVE-2020-12398 class.
    return Error(Errc::security, "STARTTLS is only possible before authentication");
  }
  if (secure_) return internal("STARTTLS on a connection that is already secure");
  if (Status s = require_caps_known("STARTTLS"); !s) return std::move(s).error();
  if (!has_capability("STARTTLS")) return Error(Errc::tls, "server does not offer STARTTLS");
  return submit(cmd::starttls());
}

Result<CommandId> Session::login(std::string_view user, std::string_view password) {
  if (state_ != ConnectionState::not_authenticated) {
    return internal("LOGIN is only valid before authentication");
  }
  if (Status s = require_caps_known("LOGIN"); !s) return std::move(s).error();
  if (Status s = require_credentials_allowed(); !s) return std::move(s).error();
  if (has_capability("LOGINDISABLED")) {
    return Error(Errc::auth, "server advertises LOGINDISABLED: LOGIN is not allowed");
  }
  return submit_checked(cmd::login(user, password, wire_options()));
}

Result<CommandId> Session::authenticate_plain(std::string_view user, std::string_view password,
                                              std::string_view authzid) {
  if (state_ != ConnectionState::not_authenticated) {
    return internal("AUTHENTICATE is only valid before authentication");
  }
  if (Status s = require_caps_known("AUTHENTICATE"); !s) return std::move(s).error();
  if (Status s = require_credentials_allowed(); !s) return std::move(s).error();
  if (!has_capability("AUTH=PLAIN")) return Error(Errc::auth, "server does not offer AUTH=PLAIN");
  return submit(cmd::authenticate_plain(authzid, user, password, has_capability("SASL-IR")));
}

std::string_view to_string(OAuthMechanism mechanism) {
  return mechanism == OAuthMechanism::xoauth2 ? "XOAUTH2" : "OAUTHBEARER";
}

std::string sasl_error_status(const Completion& completion) {
  for (const auto& response : completion.untagged) {
    const auto* challenge = std::get_if<ContinuationRequest>(&response.data);
    if (challenge == nullptr) continue;
    const auto decoded = base64_decode(challenge->text);
    return printable(decoded ? *decoded : challenge->text, 300);
  }
  return {};
}

Result<CommandId> Session::authenticate_oauth(OAuthMechanism mechanism, std::string_view user,
                                              std::string_view token, std::string_view host,
                                              std::string_view port) {
  if (state_ != ConnectionState::not_authenticated) {
    return internal("AUTHENTICATE is only valid before authentication");
  }
  if (Status s = require_caps_known("AUTHENTICATE"); !s) return std::move(s).error();
  if (Status s = require_credentials_allowed(); !s) return std::move(s).error();
  const std::string_view name = to_string(mechanism);
  if (!has_capability(fmt::format("AUTH={}", name))) {
    return Error(Errc::auth, fmt::format("server does not offer AUTH={}", name));
  }
  const std::string response = mechanism == OAuthMechanism::xoauth2
                                   ? sasl_xoauth2(user, token)
                                   : sasl_oauthbearer(user, token, host, port);
  Command command = cmd::authenticate(name, response, has_capability("SASL-IR"));
  // A long token (a JWT of several kilobytes) may not fit one command line: send it after "+".
  if (command.longest_line() + kTagReserve > options_.max_line) {
    command = cmd::authenticate(name, response, false);
  }
  auto id = submit(std::move(command));
  if (id) {
    queue_.back().sasl_error_answer = mechanism == OAuthMechanism::xoauth2 ? "" : "AQ==";
  }
  return id;
}

Status Session::presume_login(const std::set<std::string>& capabilities) {
  const Pending* last = nullptr;
  if (!queue_.empty()) {
    last = &queue_.back();
  } else if (!in_flight_.empty()) {
    last = &in_flight_.back();
  }
  if (last == nullptr ||
      (last->kind != CommandKind::login && last->kind != CommandKind::authenticate)) {
    return internal("presume_login() without a login just submitted");
  }
  const bool waits = std::any_of(last->chunks.begin(), last->chunks.end(),
                                 [](const Chunk& c) { return c.wait_continuation; });
  if (waits || last->sasl_error_answer) {
    return internal("presume_login() on a login that waits for a continuation");
  }
  presumed_login_ = last->id;
  set_capabilities(std::vector<std::string>(capabilities.begin(), capabilities.end()));
  return ok_status();
}

Result<CommandId> Session::compress_deflate() {
  // RFC 4978 §6 (security): compress only after authentication, never mixing credentials and
  // attacker-influenced data in one DEFLATE stream.
  if (state_ != ConnectionState::authenticated && state_ != ConnectionState::selected) {
    return internal("COMPRESS is only sent after authentication");
  }
  if (Status s = require_caps_known("COMPRESS"); !s) return std::move(s).error();
  if (!has_capability("COMPRESS=DEFLATE"))
    return internal("server does not offer COMPRESS=DEFLATE");
  if (compression_active_) return internal("compression is already active");
  return submit(cmd::compress_deflate());
}

Result<CommandId> Session::enable(const std::vector<std::string>& capabilities) {
  // RFC 5161 §3.1: authenticated state only, before any mailbox is selected.
  const bool authenticated = state_ == ConnectionState::authenticated || presumed_login_;
  if (!authenticated || select_submitted_) {
    return internal("ENABLE is only valid after authentication and before any SELECT");
  }
  if (Status s = require_caps_known("ENABLE"); !s) return std::move(s).error();
  if (!has_capability("ENABLE") && !has_capability("IMAP4REV2")) {
    return internal("server does not offer ENABLE");
  }
  return submit_checked(cmd::enable(capabilities));
}

Result<CommandId> Session::id_nil() {
  if (!has_capability("ID")) return internal("server does not offer ID");
  return submit(cmd::id_nil());
}

Result<CommandId> Session::list(std::string_view reference,
                                const std::vector<std::string>& patterns,
                                const cmd::ListOptions& options) {
  if ((!options.selection.empty() || !options.return_items.empty()) &&
      !has_capability("LIST-EXTENDED") && !has_capability("IMAP4REV2")) {
    return internal("LIST selection or RETURN options need LIST-EXTENDED");
  }
  if (!options.status_items.empty() && !has_capability("LIST-STATUS") &&
      !has_capability("IMAP4REV2")) {
    return internal("LIST RETURN (STATUS ...) needs LIST-STATUS");
  }
  if (contains_item(options.status_items, "HIGHESTMODSEQ") && !has_capability("CONDSTORE") &&
      !has_capability("QRESYNC")) {
    return internal("STATUS HIGHESTMODSEQ needs CONDSTORE");
  }
  return submit_checked(cmd::list(reference, patterns, options, wire_options()));
}

Result<CommandId> Session::status(std::string_view mailbox, const std::vector<std::string>& items) {
  if (contains_item(items, "HIGHESTMODSEQ") && !has_capability("CONDSTORE") &&
      !has_capability("QRESYNC")) {
    return internal("STATUS HIGHESTMODSEQ needs CONDSTORE");
  }
  return submit_checked(cmd::status(mailbox, items, wire_options()));
}

Result<CommandId> Session::select(std::string_view mailbox, const cmd::SelectOptions& options) {
  if (options.qresync && !is_enabled("QRESYNC")) {
    // RFC 7162 §3.2.5: the server MUST answer BAD unless QRESYNC was positively enabled.
    return internal("SELECT (QRESYNC ...) before the server confirmed ENABLED QRESYNC");
  }
  if (options.condstore && !has_capability("CONDSTORE") && !has_capability("QRESYNC")) {
    return internal("SELECT (CONDSTORE) needs CONDSTORE");
  }
  auto command = cmd::select(mailbox, options, wire_options());
  if (!command.ok()) return std::move(command).error();
  auto id = submit(std::move(*command));
  if (id.ok()) queue_.back().mailbox = std::string(mailbox);
  return id;
}

Result<CommandId> Session::unselect() {
  if (!has_capability("UNSELECT") && !has_capability("IMAP4REV2")) {
    return internal("server does not offer UNSELECT");
  }
  return submit(cmd::unselect());
}

Result<std::vector<CommandId>> Session::uid_fetch(const SequenceSet& uids, std::string_view items,
                                                  const cmd::FetchModifiers& modifiers) {
  if (modifiers.changed_since && !has_capability("CONDSTORE") && !has_capability("QRESYNC")) {
    return internal("UID FETCH (CHANGEDSINCE) needs CONDSTORE");
  }
  if (modifiers.vanished && !is_enabled("QRESYNC")) {
    // RFC 7162 §3.2.6: BAD unless QRESYNC was enabled.
    return internal("UID FETCH (VANISHED) before the server confirmed ENABLED QRESYNC");
  }
  return submit_all(cmd::uid_fetch(uids, items, modifiers, options_.max_line));
}

Result<std::vector<CommandId>> Session::uid_store(const SequenceSet& uids,
                                                  const cmd::StoreOp& store) {
  if (store.unchanged_since && !has_capability("CONDSTORE") && !has_capability("QRESYNC")) {
    return internal("UID STORE (UNCHANGEDSINCE) needs CONDSTORE");
  }
  return submit_all(cmd::uid_store(uids, store, options_.max_line));
}

Result<std::vector<CommandId>> Session::uid_expunge(const SequenceSet& uids) {
  if (!has_capability("UIDPLUS") && !has_capability("IMAP4REV2")) {
    // Plain EXPUNGE would also remove other clients' \Deleted messages (RFC 7162 §3.2.9).
    return internal("UID EXPUNGE needs UIDPLUS");
  }
  return submit_all(cmd::uid_expunge(uids, options_.max_line));
}

Result<CommandId> Session::append(std::string_view mailbox,
                                  std::vector<cmd::AppendMessage> messages) {
  if (messages.size() > 1 && !has_capability("MULTIAPPEND")) {
    return internal("APPEND of several messages needs MULTIAPPEND");
  }
  return submit_checked(cmd::append(mailbox, std::move(messages), wire_options()));
}

Result<CommandId> Session::idle() {
  if (!has_capability("IDLE") && !has_capability("IMAP4REV2")) {
    return internal("server does not offer IDLE");
  }
  return submit(cmd::idle());
}

Status Session::idle_done() {
  if (failure_) return *failure_;
  Pending* idle = nullptr;
  if (!in_flight_.empty() && in_flight_.back().kind == CommandKind::idle) {
    idle = &in_flight_.back();
  } else if (!queue_.empty() && queue_.back().kind == CommandKind::idle) {
    idle = &queue_.back();  // not written yet: DONE follows it, after the "+"
  }
  if (idle == nullptr) return internal("DONE without an IDLE in progress");
  Pending& p = *idle;
  if (p.idle_done) return internal("DONE already sent");
  p.idle_done = true;
  // RFC 2177 §3: DONE only after the server's "+"; if it has not come, DONE waits for it.
  p.chunks.push_back(Chunk{"DONE\r\n", !idling_});
  return ok_status();
}

}  // namespace twinbox::imap
