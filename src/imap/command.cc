#include "imap/command.h"

#include <string.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "base/base64.h"
#include "imap/mailbox_name.h"

namespace twinbox::imap {

namespace {

// RFC 9051 §9: ATOM-CHAR = any CHAR except atom-specials
// ( "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials ).
bool is_atom_char(unsigned char c) {
  if (c <= 0x20 || c >= 0x7f) return false;
  switch (c) {
    case '(':
    case ')':
    case '{':
    case '%':
    case '*':
    case '"':
    case '\\':
    case ']':
      return false;
    default:
      return true;
  }
}

// ASTRING-CHAR = ATOM-CHAR / resp-specials.
bool is_astring_char(unsigned char c) { return c == ']' || is_atom_char(c); }

bool is_atom(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return is_atom_char(static_cast<unsigned char>(c));
  });
}

bool is_ctl(unsigned char c) { return c < 0x20 || c == 0x7f; }

// Quoted only for "safe" text: no CR/LF/NUL nor any other control; 8-bit only as valid UTF-8 and
// only once UTF8=ACCEPT is enabled (RFC 6855 §3). Everything else goes as a literal.
bool can_quote(std::string_view s, bool utf8_accept) {
  if (s.size() > kMaxQuoted) return false;
  bool eight_bit = false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_ctl(c)) return false;
    if (c >= 0x80) eight_bit = true;
  }
  if (eight_bit && (!utf8_accept || find_invalid_utf8(s).has_value())) return false;
  return true;
}

std::string quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

bool non_synchronizing(LiteralMode mode, std::size_t n) {
  return mode == LiteralMode::plus || (mode == LiteralMode::minus && n <= kLiteralMinusMax);
}

void append_escaped(std::string& out, std::string_view bytes) {
  for (char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (is_ctl(c) || c >= 0x80) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
}

bool ends_with_crlf(std::string_view s) {
  return s.size() >= 2 && s.substr(s.size() - 2) == "\r\n";
}

void render(std::string& out, const Chunk& chunk) {
  if (chunk.secret) {
    out += "<redacted>";
    if (ends_with_crlf(chunk.bytes)) out += "\\r\\n";
  } else if (chunk.external > 0) {
    out += fmt::format("{{{} bytes, streamed}}", chunk.external);
  } else if (chunk.literal && chunk.bytes.size() > kTraceLiteralMax) {
    out += fmt::format("{{{} bytes}}", chunk.bytes.size());
  } else {
    append_escaped(out, chunk.bytes);
  }
}

std::string strip_trailing_crlf(std::string s) {
  if (s.size() >= 4 && s.compare(s.size() - 4, 4, "\\r\\n") == 0) s.resize(s.size() - 4);
  return s;
}

bool is_flag(std::string_view flag) {
  if (!flag.empty() && flag.front() == '\\') flag.remove_prefix(1);
  return is_atom(flag);
}

// RFC 9051 date-time without its quotes: dd-Mon-yyyy hh:mm:ss +zzzz (day may be " d").
bool is_date_time(std::string_view s) {
  if (s.size() != 26) return false;
  const auto digit = [&](std::size_t i) { return s[i] >= '0' && s[i] <= '9'; };
  if (!((s[0] == ' ' || digit(0)) && digit(1) && s[2] == '-' && s[6] == '-')) return false;
  static constexpr std::array<std::string_view, 12> kMonths = {
      "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  std::string month(s.substr(3, 3));
  for (auto& c : month) c = static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  if (std::find(kMonths.begin(), kMonths.end(), month) == kMonths.end()) return false;
  for (std::size_t i : {7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25}) {
    if (!digit(i)) return false;
  }
  return s[11] == ' ' && s[14] == ':' && s[17] == ':' && s[20] == ' ' &&
         (s[21] == '+' || s[21] == '-');
}

Error usage(std::string message, std::string_view evidence = {}) {
  Error e(Errc::usage, std::move(message));
  e.evidence = std::string(evidence);
  return e;
}

Status check_modseq(ModSeq m, bool zero_allowed, std::string_view what) {
  if ((m == 0 && !zero_allowed) || m > kMaxModSeq) {
    return usage(fmt::format("{} {} out of range (RFC 7162 §7)", what, m));
  }
  return ok_status();
}

Command simple(std::string_view name) {
  Command c;
  c.kind = command_kind(name);
  c.name = std::string(name);
  c.chunks.push_back(Chunk{std::string(name) + "\r\n"});
  return c;
}

}  // namespace

std::string Chunk::trace() const {
  std::string out;
  render(out, *this);
  return strip_trailing_crlf(std::move(out));
}

CommandKind command_kind(std::string_view name) {
  std::string upper(name);
  for (auto& c : upper) c = static_cast<char>((c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c);
  static const std::pair<std::string_view, CommandKind> kTable[] = {
      {"CAPABILITY", CommandKind::capability},
      {"NOOP", CommandKind::noop},
      {"LOGOUT", CommandKind::logout},
      {"STARTTLS", CommandKind::starttls},
      {"AUTHENTICATE", CommandKind::authenticate},
      {"LOGIN", CommandKind::login},
      {"ENABLE", CommandKind::enable},
      {"COMPRESS", CommandKind::compress},
      {"ID", CommandKind::id},
      {"NAMESPACE", CommandKind::namespace_},
      {"SELECT", CommandKind::select},
      {"EXAMINE", CommandKind::examine},
      {"CREATE", CommandKind::create},
      {"DELETE", CommandKind::delete_},
      {"RENAME", CommandKind::rename},
      {"SUBSCRIBE", CommandKind::subscribe},
      {"UNSUBSCRIBE", CommandKind::unsubscribe},
      {"LIST", CommandKind::list},
      {"LSUB", CommandKind::lsub},
      {"STATUS", CommandKind::status},
      {"APPEND", CommandKind::append},
      {"IDLE", CommandKind::idle},
      {"CLOSE", CommandKind::close},
      {"UNSELECT", CommandKind::unselect},
      {"EXPUNGE", CommandKind::expunge},
      {"FETCH", CommandKind::fetch},
      {"STORE", CommandKind::store},
      {"SEARCH", CommandKind::search},
      {"COPY", CommandKind::copy},
      {"MOVE", CommandKind::move},
      {"UID FETCH", CommandKind::uid_fetch},
      {"UID STORE", CommandKind::uid_store},
      {"UID SEARCH", CommandKind::uid_search},
      {"UID COPY", CommandKind::uid_copy},
      {"UID MOVE", CommandKind::uid_move},
      {"UID EXPUNGE", CommandKind::uid_expunge},
  };
  for (const auto& [text, kind] : kTable) {
    if (upper == text) return kind;
  }
  return CommandKind::other;
}

void Command::assign_tag(std::string new_tag) {
  tag = std::move(new_tag);
  if (chunks.empty()) chunks.emplace_back();
  chunks.front().bytes.insert(0, tag + " ");
}

std::string Command::wire() const {
  std::string out;
  for (const auto& c : chunks) out += c.bytes;
  return out;
}

std::string Command::trace() const {
  std::string out;
  for (const auto& c : chunks) render(out, c);
  return strip_trailing_crlf(std::move(out));
}

std::size_t Command::longest_line() const {
  std::size_t longest = 0;
  std::size_t current = 0;
  for (const auto& c : chunks) {
    if (c.literal) continue;
    for (char ch : c.bytes) {
      ++current;
      if (ch == '\n') {
        longest = std::max(longest, current);
        current = 0;
      }
    }
  }
  return std::max(longest, current);
}

// ---------------------------------------------------------------------------------------------

CommandBuilder::CommandBuilder(std::string_view name, WireOptions options) : options_(options) {
  command_.kind = command_kind(name);
  command_.name = std::string(name);
  for (char c : name) {
    if (!(is_atom_char(static_cast<unsigned char>(c)) || c == ' ')) {
      fail(Errc::usage, "invalid command name", name);
      break;
    }
  }
  command_.chunks.push_back(Chunk{std::string(name)});
}

std::string& CommandBuilder::text() {
  const Chunk& last = command_.chunks.back();
  if (last.literal || last.secret || last.wait_continuation) command_.chunks.emplace_back();
  return command_.chunks.back().bytes;
}

void CommandBuilder::separate() {
  if (need_space_) text() += ' ';
  need_space_ = true;
}

void CommandBuilder::fail(Errc code, std::string message, std::string_view evidence) {
  if (error_) return;
  Error e(code, std::move(message));
  e.evidence = std::string(evidence);
  error_ = std::move(e);
}

void CommandBuilder::add_secret_text(std::string bytes) {
  separate();
  command_.chunks.push_back(Chunk{std::move(bytes), false, true, false});
}

CommandBuilder& CommandBuilder::atom(std::string_view a) {
  if (!is_atom(a)) {
    fail(Errc::usage, "invalid atom", a);
    return *this;
  }
  separate();
  text() += a;
  return *this;
}

CommandBuilder& CommandBuilder::raw(std::string_view r) {
  if (r.empty() || std::any_of(r.begin(), r.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return is_ctl(c) || c >= 0x80;
      })) {
    fail(Errc::usage, "invalid command syntax", r);
    return *this;
  }
  separate();
  text() += r;
  return *this;
}

CommandBuilder& CommandBuilder::number(std::uint64_t n) {
  separate();
  fmt::format_to(std::back_inserter(text()), "{}", n);
  return *this;
}

CommandBuilder& CommandBuilder::astring(std::string_view s, bool secret) {
  const bool atom_ok = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return is_astring_char(static_cast<unsigned char>(c));
  });
  if (!atom_ok) return string(s, secret);
  if (secret) {
    add_secret_text(std::string(s));
  } else {
    separate();
    text() += s;
  }
  return *this;
}

CommandBuilder& CommandBuilder::string(std::string_view s, bool secret) {
  if (can_quote(s, options_.utf8_accept)) {
    if (secret) {
      add_secret_text(quote(s));
    } else {
      separate();
      text() += quote(s);
    }
    return *this;
  }
  return literal(std::string(s), secret);
}

CommandBuilder& CommandBuilder::mailbox(std::string_view utf8) {
  auto wire = mailbox_to_wire(utf8, options_.utf8_accept);
  if (!wire.ok()) {
    if (!error_) error_ = std::move(wire).error();
    return *this;
  }
  return astring(*wire);
}

CommandBuilder& CommandBuilder::list_pattern(std::string_view utf8) {
  auto wire = mailbox_to_wire(utf8, options_.utf8_accept);
  if (!wire.ok()) {
    if (!error_) error_ = std::move(wire).error();
    return *this;
  }
  // RFC 9051 list-mailbox = 1*list-char / string, where list-char is ATOM-CHAR, a wildcard or
  // "]": printable ASCII except SP ( ) { " and backslash. Bare when it can be (LIST "" *).
  const bool bare = !wire->empty() && std::all_of(wire->begin(), wire->end(), [](char c) {
    return c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"' && c != '\\';
  });
  if (!bare) return string(*wire);
  separate();
  text() += *wire;
  return *this;
}

CommandBuilder& CommandBuilder::flag_list(const std::vector<std::string>& flags) {
  begin_list();
  for (const auto& f : flags) {
    if (!is_flag(f)) {
      fail(Errc::usage, "invalid flag", f);
      return *this;
    }
    separate();
    text() += f;
  }
  return end_list();
}

CommandBuilder& CommandBuilder::sequence_set(const SequenceSet& set) {
  if (set.empty()) {
    fail(Errc::usage, "empty sequence set", {});
    return *this;
  }
  separate();
  text() += set.to_string();
  return *this;
}

void CommandBuilder::add_literal(std::string bytes, bool secret, bool binary) {
  separate();
  const bool plus = non_synchronizing(options_.literals, bytes.size());
  fmt::format_to(std::back_inserter(text()), "{}{{{}{}}}\r\n", binary ? "~" : "", bytes.size(),
                 plus ? "+" : "");
  command_.chunks.push_back(Chunk{std::move(bytes), !plus, secret, true});
}

CommandBuilder& CommandBuilder::literal(std::string bytes, bool secret) {
  // RFC 9051 §4.3: a literal is CHAR8, which excludes NUL; NUL needs literal8 (RFC 3516).
  if (auto nul = bytes.find('\0'); nul != std::string::npos) {
    fail(Errc::usage, fmt::format("NUL byte at offset {} in a string", nul), {});
    return *this;
  }
  add_literal(std::move(bytes), secret, false);
  return *this;
}

CommandBuilder& CommandBuilder::literal8(std::string bytes) {
  add_literal(std::move(bytes), false, true);
  return *this;
}

CommandBuilder& CommandBuilder::external_literal(std::uint64_t size) {
  if (size == 0) {
    fail(Errc::usage, "a streamed literal cannot be empty", {});
    return *this;
  }
  separate();
  const bool plus = non_synchronizing(options_.literals, size);
  fmt::format_to(std::back_inserter(text()), "{{{}{}}}\r\n", size, plus ? "+" : "");
  Chunk body{std::string(), !plus, false, true};
  body.external = size;
  command_.chunks.push_back(std::move(body));
  return *this;
}

CommandBuilder& CommandBuilder::begin_list() {
  separate();
  text() += '(';
  need_space_ = false;
  ++depth_;
  return *this;
}

CommandBuilder& CommandBuilder::end_list() {
  if (depth_ == 0) {
    fail(Errc::internal, "unbalanced parenthesis in command", command_.name);
    return *this;
  }
  --depth_;
  text() += ')';
  need_space_ = true;
  return *this;
}

Result<Command> CommandBuilder::build() {
  if (!error_ && depth_ != 0)
    fail(Errc::internal, "unbalanced parenthesis in command", command_.name);
  if (error_) return std::move(*error_);
  text() += "\r\n";
  return std::move(command_);
}

// ---------------------------------------------------------------------------------------------

Result<std::vector<Command>> split_by_set(
    const SequenceSet& set, std::size_t max_line,
    const std::function<Result<Command>(const SequenceSet&)>& build) {
  std::vector<Command> out;
  if (set.empty()) return out;
  auto probe = build(SequenceSet::of({1}));
  if (!probe.ok()) return std::move(probe).error();
  // The probe's set is one character long; everything else is fixed overhead.
  const std::size_t overhead = probe->longest_line() - 1 + kTagReserve;
  constexpr std::size_t kLongestRange = 21;  // "4294967294:4294967295"
  if (max_line < overhead + kLongestRange) {
    return Error(Errc::limit, fmt::format("command {} cannot fit within {} octets per line",
                                          probe->name, max_line));
  }
  for (const auto& piece : set.split(max_line - overhead)) {
    auto command = build(piece);
    if (!command.ok()) return std::move(command).error();
    if (command->longest_line() + kTagReserve > max_line) {
      return Error(Errc::internal, fmt::format("split command {} still exceeds {} octets",
                                               command->name, max_line));
    }
    out.push_back(std::move(*command));
  }
  return out;
}

std::string sasl_plain(std::string_view authzid, std::string_view user, std::string_view password) {
  std::string raw;
  raw.reserve(authzid.size() + user.size() + password.size() + 2);
  raw.append(authzid).append(1, '\0').append(user).append(1, '\0').append(password);
  std::string out = base64_encode(raw);
  ::explicit_bzero(raw.data(), raw.size());
  return out;
}

std::string sasl_oauthbearer(std::string_view user, std::string_view token, std::string_view host,
                             std::string_view port) {
  // RFC 7628 §3.1: gs2-header "n,a=user," then kvpairs separated by ^A, ending in ^A^A. The
  // authzid's "," and "=" are escaped as in RFC 5801 §4 ("=2C", "=3D").
  std::string authzid;
  for (char c : user) {
    if (c == ',') {
      authzid += "=2C";
    } else if (c == '=') {
      authzid += "=3D";
    } else {
      authzid += c;
    }
  }
  std::string raw = fmt::format(
      "n,a={},\x01host={}\x01port={}\x01"
      "auth=Bearer {}\x01\x01",
      authzid, host, port, token);
  std::string out = base64_encode(raw);
  ::explicit_bzero(raw.data(), raw.size());
  return out;
}

std::string sasl_xoauth2(std::string_view user, std::string_view token) {
  // Google's XOAUTH2 (developers.google.com/gmail/imap/xoauth2-protocol), also Microsoft's.
  std::string raw = fmt::format(
      "user={}\x01"
      "auth=Bearer {}\x01\x01",
      user, token);
  std::string out = base64_encode(raw);
  ::explicit_bzero(raw.data(), raw.size());
  return out;
}

// ---------------------------------------------------------------------------------------------

namespace cmd {

Command capability() { return simple("CAPABILITY"); }
Command noop() { return simple("NOOP"); }
Command logout() { return simple("LOGOUT"); }
Command starttls() { return simple("STARTTLS"); }
Command unselect() { return simple("UNSELECT"); }
Command idle() { return simple("IDLE"); }

Command compress_deflate() {
  Command c = simple("COMPRESS");
  c.chunks.front().bytes = "COMPRESS DEFLATE\r\n";
  return c;
}

Command id_nil() {
  Command c = simple("ID");
  c.chunks.front().bytes = "ID NIL\r\n";
  return c;
}

Result<Command> login(std::string_view user, std::string_view password,
                      const WireOptions& options) {
  return CommandBuilder("LOGIN", options).astring(user).astring(password, true).build();
}

Command authenticate(std::string_view mechanism, std::string_view response, bool initial_response) {
  Command c = simple("AUTHENTICATE");
  if (initial_response) {
    // RFC 4959 §3: the initial response on the command line.
    c.chunks.front().bytes = fmt::format("AUTHENTICATE {} ", mechanism);
    c.chunks.push_back(Chunk{std::string(response), false, true, false});
    c.chunks.push_back(Chunk{"\r\n"});
  } else {
    // RFC 9051 §6.2.2: the server answers "+ " (empty challenge); the response follows it.
    c.chunks.front().bytes = fmt::format("AUTHENTICATE {}\r\n", mechanism);
    c.chunks.push_back(Chunk{std::string(response) + "\r\n", true, true, false});
  }
  return c;
}

Command authenticate_plain(std::string_view authzid, std::string_view user,
                           std::string_view password, bool initial_response) {
  return authenticate("PLAIN", sasl_plain(authzid, user, password), initial_response);
}

Result<Command> enable(const std::vector<std::string>& capabilities) {
  if (capabilities.empty()) return usage("ENABLE needs at least one capability");
  CommandBuilder b("ENABLE");
  for (const auto& cap : capabilities) b.atom(cap);
  return b.build();
}

Result<Command> select(std::string_view mailbox, const SelectOptions& select,
                       const WireOptions& options) {
  CommandBuilder b(select.examine ? "EXAMINE" : "SELECT", options);
  b.mailbox(mailbox);
  if (select.qresync) {
    const QresyncParams& q = *select.qresync;
    if (q.uidvalidity == 0) return usage("QRESYNC needs a non-zero UIDVALIDITY");
    if (Status s = check_modseq(q.modseq, false, "QRESYNC mod-sequence"); !s) {
      return std::move(s).error();
    }
    b.begin_list().atom("QRESYNC").begin_list().number(q.uidvalidity).number(q.modseq);
    if (!q.known_uids.empty()) b.sequence_set(q.known_uids);
    if (q.seq_match) {
      if (q.seq_match->seqs.size() != q.seq_match->uids.size()) {
        return usage("QRESYNC sequence match data: sets of different sizes");
      }
      b.begin_list().sequence_set(q.seq_match->seqs).sequence_set(q.seq_match->uids).end_list();
    }
    b.end_list().end_list();
  } else if (select.condstore) {
    b.begin_list().atom("CONDSTORE").end_list();
  }
  return b.build();
}

Result<Command> list(std::string_view reference, const std::vector<std::string>& patterns,
                     const ListOptions& list, const WireOptions& options) {
  if (patterns.empty()) return usage("LIST needs at least one pattern");
  CommandBuilder b("LIST", options);
  if (!list.selection.empty()) {
    b.begin_list();
    for (const auto& s : list.selection) b.atom(s);
    b.end_list();
  }
  if (reference.empty()) {
    b.string("");
  } else {
    b.list_pattern(reference);
  }
  if (patterns.size() == 1) {
    b.list_pattern(patterns.front());
  } else {
    b.begin_list();
    for (const auto& p : patterns) b.list_pattern(p);
    b.end_list();
  }
  if (!list.return_items.empty() || !list.status_items.empty()) {
    b.atom("RETURN").begin_list();
    for (const auto& r : list.return_items) b.atom(r);
    if (!list.status_items.empty()) {
      b.atom("STATUS").begin_list();
      for (const auto& s : list.status_items) b.atom(s);
      b.end_list();
    }
    b.end_list();
  }
  return b.build();
}

Result<Command> status(std::string_view mailbox, const std::vector<std::string>& items,
                       const WireOptions& options) {
  if (items.empty()) return usage("STATUS needs at least one item");
  CommandBuilder b("STATUS", options);
  b.mailbox(mailbox).begin_list();
  for (const auto& item : items) b.atom(item);
  b.end_list();
  return b.build();
}

Result<std::vector<Command>> uid_fetch(const SequenceSet& uids, std::string_view items,
                                       const FetchModifiers& modifiers, std::size_t max_line) {
  if (modifiers.vanished && !modifiers.changed_since) {
    return usage("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)");
  }
  if (modifiers.changed_since) {
    if (Status s = check_modseq(*modifiers.changed_since, false, "CHANGEDSINCE"); !s) {
      return std::move(s).error();
    }
  }
  return split_by_set(uids, max_line, [&](const SequenceSet& piece) {
    CommandBuilder b("UID FETCH");
    b.sequence_set(piece).raw(items);
    if (modifiers.changed_since) {
      b.begin_list().atom("CHANGEDSINCE").number(*modifiers.changed_since);
      if (modifiers.vanished) b.atom("VANISHED");
      b.end_list();
    }
    return b.build();
  });
}

Result<std::vector<Command>> uid_store(const SequenceSet& uids, const StoreOp& store,
                                       std::size_t max_line) {
  if (store.unchanged_since) {
    if (Status s = check_modseq(*store.unchanged_since, true, "UNCHANGEDSINCE"); !s) {
      return std::move(s).error();
    }
  }
  std::string action = store.mode == StoreMode::add      ? "+FLAGS"
                       : store.mode == StoreMode::remove ? "-FLAGS"
                                                         : "FLAGS";
  if (store.silent) action += ".SILENT";
  return split_by_set(uids, max_line, [&](const SequenceSet& piece) {
    CommandBuilder b("UID STORE");
    b.sequence_set(piece);
    if (store.unchanged_since) {
      b.begin_list().atom("UNCHANGEDSINCE").number(*store.unchanged_since).end_list();
    }
    b.atom(action).flag_list(store.flags);
    return b.build();
  });
}

Result<std::vector<Command>> uid_expunge(const SequenceSet& uids, std::size_t max_line) {
  return split_by_set(uids, max_line, [](const SequenceSet& piece) {
    return CommandBuilder("UID EXPUNGE").sequence_set(piece).build();
  });
}

Result<Command> append(std::string_view mailbox, std::vector<AppendMessage> messages,
                       const WireOptions& options) {
  if (messages.empty()) return usage("APPEND needs at least one message");
  CommandBuilder b("APPEND", options);
  b.mailbox(mailbox);
  for (auto& m : messages) {
    if (!m.flags.empty()) b.flag_list(m.flags);
    if (!m.internal_date.empty()) {
      if (!is_date_time(m.internal_date)) return usage("invalid APPEND date-time", m.internal_date);
      b.string(m.internal_date);
    }
    if (m.streamed_size > 0) {
      // Its bytes are not known yet; the shell refuses a NUL byte while streaming.
      if (!m.content.empty()) return usage("a streamed APPEND message carries content");
      b.external_literal(m.streamed_size);
    } else if (std::memchr(m.content.data(), '\0', m.content.size()) != nullptr) {
      // RFC 3516 §4.4: binary content needs literal8, which needs BINARY.
      if (!options.binary) return usage("message contains NUL bytes and the server lacks BINARY");
      b.literal8(std::move(m.content));
    } else {
      b.literal(std::move(m.content));
    }
  }
  return b.build();
}

}  // namespace cmd

}  // namespace twinbox::imap
