#include "imap/parser.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace twinbox::imap {

namespace {

// Character classes of RFC 9051 §9.
enum : std::uint8_t {
  kAtomChar = 1 << 0,     // ATOM-CHAR; 8-bit bytes accepted (UTF-8 from UTF8=ACCEPT servers)
  kAstringChar = 1 << 1,  // ASTRING-CHAR = ATOM-CHAR / resp-specials
  kTagChar = 1 << 2,      // tag = 1*<any ASTRING-CHAR except "+">
  kDigit = 1 << 3,
  kItemChar = 1 << 4,   // FETCH item names: ATOM-CHAR up to "[" or "<" (BODY[...]<0>)
  kLooseChar = 1 << 5,  // a bare token inside a value we skip (NIL, -1, \Seen, 12.5)
};

constexpr std::array<std::uint8_t, 256> make_classes() {
  std::array<std::uint8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    const bool ctl = c < 0x20 || c == 0x7f;
    const bool atom_special = c == '(' || c == ')' || c == '{' || c == ' ' || c == '%' ||
                              c == '*' || c == '"' || c == '\\' || c == ']';
    std::uint8_t bits = 0;
    if (!ctl && !atom_special) bits |= kAtomChar | kAstringChar | kTagChar | kItemChar;
    if (c == ']') bits |= kAstringChar | kTagChar;
    if (c == '+') bits &= static_cast<std::uint8_t>(~kTagChar);
    if (c == '[' || c == '<') bits &= static_cast<std::uint8_t>(~kItemChar);
    if (c >= '0' && c <= '9') bits |= kDigit;
    if (!ctl && c != ' ' && c != '(' && c != ')' && c != '"') bits |= kLooseChar;
    table[static_cast<std::size_t>(c)] = bits;
  }
  return table;
}
constexpr std::array<std::uint8_t, 256> kClasses = make_classes();

constexpr char to_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }

// `upper` must already be upper case.
bool iequals(std::string_view text, std::string_view upper) {
  if (text.size() != upper.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (to_upper(text[i]) != upper[i]) return false;
  }
  return true;
}

std::string upper_copy(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = to_upper(c);
  return out;
}

struct CodeName {
  std::string_view name;
  CodeKind kind;
};
constexpr std::array<CodeName, 27> kCodeNames{{
    {"ALERT", CodeKind::alert},
    {"ALREADYEXISTS", CodeKind::already_exists},
    {"APPENDUID", CodeKind::appenduid},
    {"BADCHARSET", CodeKind::badcharset},
    {"CANNOT", CodeKind::cannot},
    {"CAPABILITY", CodeKind::capability},
    {"CLOSED", CodeKind::closed},
    {"COMPRESSIONACTIVE", CodeKind::compression_active},
    {"COPYUID", CodeKind::copyuid},
    {"HIGHESTMODSEQ", CodeKind::highestmodseq},
    {"LIMIT", CodeKind::limit},
    {"MODIFIED", CodeKind::modified},
    {"NOMODSEQ", CodeKind::nomodseq},
    {"NONEXISTENT", CodeKind::nonexistent},
    {"NOTIFICATIONOVERFLOW", CodeKind::notificationoverflow},
    {"OVERQUOTA", CodeKind::overquota},
    {"PARSE", CodeKind::parse},
    {"PERMANENTFLAGS", CodeKind::permanentflags},
    {"READ-ONLY", CodeKind::read_only},
    {"READ-WRITE", CodeKind::read_write},
    {"TOOBIG", CodeKind::toobig},
    {"TRYCREATE", CodeKind::trycreate},
    {"UIDNEXT", CodeKind::uidnext},
    {"UIDNOTSTICKY", CodeKind::uidnotsticky},
    {"UIDVALIDITY", CodeKind::uidvalidity},
    {"UNAVAILABLE", CodeKind::unavailable},
    {"UNSEEN", CodeKind::unseen},
}};

CodeKind code_kind(std::string_view upper_name) {
  for (const auto& c : kCodeNames) {
    if (c.name == upper_name) return c.kind;
  }
  return CodeKind::other;
}

// RFC 2971 §3.3 bounds on ID data.
constexpr std::size_t kIdMaxPairs = 30;
constexpr std::size_t kIdMaxField = 30;
constexpr std::size_t kIdMaxValue = 1024;

constexpr std::uint64_t kMaxNumber = 0xffffffffULL;

class Parser {
 public:
  Parser(Frame& frame, const Limits& limits) : frame_(frame), s_(frame.text), limits_(limits) {}

  Result<Response> response() {
    Response out;
    if (!response(out)) return std::move(error_);
    return out;
  }

 private:
  // ---- cursor ----

  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }
  int peek_at(std::size_t i) const {
    return i < s_.size() ? static_cast<unsigned char>(s_[i]) : -1;
  }
  bool at_end() const { return pos_ >= s_.size(); }
  bool is(int c, std::uint8_t cls) const {
    return c >= 0 && (kClasses[static_cast<std::size_t>(c)] & cls) != 0;
  }

  std::string_view take_while(std::uint8_t cls) {
    const std::size_t start = pos_;
    while (pos_ < s_.size() && (kClasses[static_cast<unsigned char>(s_[pos_])] & cls) != 0) ++pos_;
    return s_.substr(start, pos_ - start);
  }

  void skip_spaces() {
    while (peek() == ' ') ++pos_;
  }

  bool fail_at(std::size_t at, std::string message, Errc code = Errc::protocol) {
    error_ = line_error(code, std::move(message), s_, at);
    return false;
  }
  bool fail(std::string message) { return fail_at(pos_, std::move(message)); }
  // The message is only formatted on failure: these run on every token.
  bool expected(std::string_view what, std::string_view more = {}) {
    return fail(fmt::format("expected {}{}", what, more));
  }
  bool expect(char c, std::string_view what, std::string_view more = {}) {
    if (peek() != static_cast<unsigned char>(c)) return expected(what, more);
    ++pos_;
    return true;
  }
  bool sp(std::string_view what, std::string_view more = {}) { return expect(' ', what, more); }

  bool end(std::string_view what) {
    if (!at_end()) return fail(fmt::format("unexpected data after {}", what));
    return true;
  }

  // Bytes from `start` to the end of the line that are taken without looking at their structure
  // must fit Limits::max_text: a longer run is a server that lost a CRLF, and a response that
  // followed on the same line would otherwise be swallowed unseen.
  bool within_text_limit(std::string_view what, std::size_t start) {
    const std::size_t size = s_.size() - start;
    if (size <= limits_.max_text) return true;
    return fail_at(
        start, fmt::format("{} of {} bytes exceeds the limit of {}", what, size, limits_.max_text));
  }

  // True (and consumed) if the next token is NIL.
  bool nil() {
    if (pos_ + 3 <= s_.size() && iequals(s_.substr(pos_, 3), "NIL") &&
        !is(peek_at(pos_ + 3), kAstringChar)) {
      pos_ += 3;
      return true;
    }
    return false;
  }

  // ---- numbers (RFC 9051 §9 number, nz-number, number64; RFC 7162 §7 mod-sequence-value) ----

  bool range_error(std::size_t at, std::string_view digits, std::string_view what,
                   std::string_view rule, std::uint64_t lo, std::uint64_t hi) {
    return fail_at(at,
                   fmt::format("{} {} out of range for {} ({}..{})", what, digits, rule, lo, hi));
  }

  bool ranged(std::uint64_t& out, std::uint64_t lo, std::uint64_t hi, std::string_view rule,
              std::string_view what) {
    const std::size_t start = pos_;
    if ((peek() == '-' || peek() == '+') && is(peek_at(pos_ + 1), kDigit)) {
      // Every number in the grammar is unsigned digits: `* -135 EXISTS` is not 0 or 135.
      ++pos_;
      take_while(kDigit);
      const std::string_view token = s_.substr(start, pos_ - start);
      if (token[0] == '-') return range_error(start, token, what, rule, lo, hi);
      return fail_at(start, fmt::format("{} {}: no sign allowed in {}", what, token, rule));
    }
    std::uint64_t v = 0;
    bool overflow = false;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const auto d = static_cast<std::uint64_t>(s_[pos_] - '0');
      if (v > (UINT64_MAX - d) / 10) overflow = true;
      v = v * 10 + d;
      ++pos_;
    }
    if (pos_ == start) return fail(fmt::format("expected {} for {}", rule, what));
    if (overflow || v < lo || v > hi) {
      return range_error(start, s_.substr(start, pos_ - start), what, rule, lo, hi);
    }
    out = v;
    return true;
  }

  bool number(std::uint32_t& out, std::string_view what) {
    std::uint64_t v = 0;
    if (!ranged(v, 0, kMaxNumber, "number", what)) return false;
    out = static_cast<std::uint32_t>(v);
    return true;
  }
  bool nz_number(std::uint32_t& out, std::string_view what) {
    std::uint64_t v = 0;
    if (!ranged(v, 1, kMaxNumber, "nz-number", what)) return false;
    out = static_cast<std::uint32_t>(v);
    return true;
  }
  bool number64(std::uint64_t& out, std::string_view what) {
    return ranged(out, 0, kMaxModSeq, "number64", what);
  }
  bool mod_sequence_value(std::uint64_t& out, std::string_view what) {
    return ranged(out, 1, kMaxModSeq, "mod-sequence-value", what);
  }
  bool mod_sequence_valzer(std::uint64_t& out, std::string_view what) {
    return ranged(out, 0, kMaxModSeq, "mod-sequence-valzer", what);
  }

  // ---- strings ----

  // quoted = DQUOTE *QUOTED-CHAR DQUOTE. `out` may be null to skip.
  bool quoted(std::string* out) {
    const std::size_t open = pos_++;
    if (out != nullptr) out->clear();
    for (;;) {
      std::size_t i = pos_;
      while (i < s_.size()) {
        const char c = s_[i];
        if (c == '"' || c == '\\' || c == '\0' || c == '\r' || c == '\n') break;
        ++i;
      }
      if (out != nullptr) out->append(s_.data() + pos_, i - pos_);
      pos_ = i;
      if (i == s_.size() || s_[i] == '\r' || s_[i] == '\n') {
        return fail_at(open, "unterminated quoted string");
      }
      if (s_[i] == '\0') return fail("NUL byte in quoted string");  // CVE-2019-11500 class
      ++pos_;
      if (s_[i] == '"') return true;
      // QUOTED-CHAR allows only \\ and \"; GroupWise also escapes parentheses in LIST names
      // (KDE bug 334456), so any other escaped character stands for itself.
      const int e = peek();
      if (e < 0 || e == '\r' || e == '\n') return fail_at(open, "unterminated quoted string");
      if (e == 0) return fail("NUL byte in quoted string");
      if (out != nullptr) out->push_back(static_cast<char>(e));
      ++pos_;
    }
  }

  // literal = "{" number64 "}" CRLF *CHAR8; literal8 = "~{" number64 "}" CRLF *OCTET.
  // The bytes are moved out of the frame; `out` may be null to skip.
  bool literal(std::string* out, bool literal8_ok, bool nul_ok, std::string_view what) {
    const std::size_t open = pos_;
    if (peek() == '~') {
      if (!literal8_ok)
        return fail(fmt::format("expected string for {} (literal8 not allowed)", what));
      ++pos_;
    }
    if (!expect('{', "'{' of literal")) return false;
    std::uint64_t size = 0;
    if (!number64(size, "literal size")) return false;
    if (!expect('}', "'}' after literal size")) return false;
    if (peek() != '\r' || peek_at(pos_ + 1) != '\n') return expected("CRLF after literal size");
    pos_ += 2;
    if (literal_ >= frame_.literals.size() || frame_.literals[literal_].size() != size) {
      return fail_at(open, "literal data missing or of the wrong size");
    }
    std::string& data = frame_.literals[literal_++];
    if (!nul_ok && std::memchr(data.data(), '\0', data.size()) != nullptr) {
      return fail_at(open, fmt::format("NUL byte in literal {}", what));
    }
    if (out != nullptr) *out = std::move(data);
    return true;
  }

  // string = quoted / literal
  bool string(std::string& out, std::string_view what) {
    const int c = peek();
    if (c == '"') return quoted(&out);
    if (c == '{') return literal(&out, false, false, what);
    return fail(fmt::format("expected string for {}", what));
  }

  // astring = 1*ASTRING-CHAR / string
  bool astring(std::string& out, std::string_view what) {
    const int c = peek();
    if (c == '"' || c == '{') return string(out, what);
    const std::string_view token = take_while(kAstringChar);
    if (token.empty()) return fail(fmt::format("expected astring for {}", what));
    out.assign(token);
    return true;
  }

  // nstring = string / nil
  bool nstring(std::optional<std::string>& out, std::string_view what) {
    if (nil()) {
      out.reset();
      return true;
    }
    return string(out.emplace(), what);
  }

  // A one-character hierarchy delimiter: DQUOTE QUOTED-CHAR DQUOTE / nil.
  bool delimiter(std::optional<char>& out) {
    if (nil()) {
      out.reset();
      return true;
    }
    const std::size_t start = pos_;
    if (peek() != '"') return expected("quoted hierarchy delimiter or NIL");
    std::string d;
    if (!quoted(&d)) return false;
    if (d.size() != 1) return fail_at(start, "hierarchy delimiter must be one character");
    out = d[0];
    return true;
  }

  // ---- generic values ----

  // Skips one value whose meaning we do not need: tagged-ext-val (RFC 4466), the value of an
  // unknown FETCH item (ENVELOPE, BODYSTRUCTURE, X-GM-LABELS) or STATUS item. Iterative, so
  // 10,000 nested parentheses cost no stack; nesting beyond Limits::max_nesting is an error.
  bool skip_value() {
    std::size_t depth = 0;
    for (;;) {
      const int c = peek();
      bool value_done = true;
      if (c == '(') {
        if (++depth > limits_.max_nesting) {
          return fail_at(pos_, fmt::format("lists nested deeper than {}", limits_.max_nesting),
                         Errc::limit);
        }
        ++pos_;
        // Extra spaces inside lists: Exchange and maddy (modern-email/defects#51).
        skip_spaces();
        value_done = peek() == ')';
      } else if (c == '"') {
        if (!quoted(nullptr)) return false;
      } else if (c == '{' || (c == '~' && peek_at(pos_ + 1) == '{')) {
        if (!literal(nullptr, true, true, "value")) return false;
      } else if (take_while(kLooseChar).empty()) {
        return expected("a value");
      }
      if (!value_done) continue;
      for (;;) {
        if (depth == 0) return true;
        const bool spaced = peek() == ' ';
        skip_spaces();
        if (peek() == ')') {
          ++pos_;
          --depth;
          continue;
        }
        if (spaced) break;
        return expected("SP or ')' in list");
      }
    }
  }

  // ---- sequence sets (RFC 9051 §9 sequence-set, RFC 4315 uid-set, RFC 7162 known-uids) ----

  // Servers never send "*" here. Ranges are collected, sorted if needed and added in ascending
  // order, so 100k ranges cost O(n log n) whatever their order. `order` (if given) receives the
  // members in the order sent, each range ascending, bounded by Limits::max_set_members.
  bool sequence_set(SequenceSet& out, std::vector<Uid>* order, std::string_view what) {
    std::vector<Range> ranges;
    bool ascending = true;
    std::uint64_t members = 0;
    for (;;) {
      if (peek() == '*') return fail(fmt::format("'*' not allowed in {}", what));
      std::uint32_t a = 0;
      if (!nz_number(a, what)) return false;
      std::uint32_t b = a;
      if (peek() == ':') {
        ++pos_;
        if (peek() == '*') return fail(fmt::format("'*' not allowed in {}", what));
        if (!nz_number(b, what)) return false;
      }
      const Range r{std::min(a, b), std::max(a, b)};
      if (!ranges.empty() && r.first < ranges.back().first) ascending = false;
      if (order != nullptr) {
        members += std::uint64_t{r.last} - r.first + 1;
        if (members > limits_.max_set_members) {
          return fail_at(pos_,
                         fmt::format("{} has more than {} members", what, limits_.max_set_members),
                         Errc::limit);
        }
      }
      ranges.push_back(r);
      if (peek() != ',') break;
      ++pos_;
    }
    if (order != nullptr) {
      order->reserve(static_cast<std::size_t>(members));
      for (const Range& r : ranges) {
        for (std::uint64_t v = r.first; v <= r.last; ++v) order->push_back(static_cast<Uid>(v));
      }
    }
    if (!ascending) {
      std::sort(ranges.begin(), ranges.end(),
                [](const Range& x, const Range& y) { return x.first < y.first; });
    }
    for (const Range& r : ranges) out.add(r.first, r.last);
    return true;
  }

  // ---- flags ----

  // flag = "\" atom / atom; PERMANENTFLAGS adds "\*" (flag-perm).
  bool flag(std::string& out) {
    const std::size_t start = pos_;
    if (peek() == '\\') {
      ++pos_;
      if (peek() == '*') {
        ++pos_;
        out.assign("\\*");
        return true;
      }
    }
    if (take_while(kAtomChar).empty()) return fail_at(start, "expected flag");
    out.assign(s_.substr(start, pos_ - start));
    return true;
  }

  // flag-list = "(" [flag *(SP flag)] ")"
  bool flag_list(std::vector<std::string>& out, std::string_view what) {
    if (!expect('(', "'(' to open ", what)) return false;
    // Extra spaces inside the list are tolerated: SurgeMail sends a trailing space inside
    // PERMANENTFLAGS (modern-email/defects#48).
    skip_spaces();
    while (peek() != ')') {
      if (!flag(out.emplace_back())) return false;
      if (peek() == ')') break;
      if (!sp("SP or ')' in ", what)) return false;
      skip_spaces();
    }
    ++pos_;
    return true;
  }

  // capability *(SP capability), upper-cased, up to `terminator` (']' in a code, -1 at the end).
  // A trailing space is tolerated: qq.com after authentication (modern-email/defects#21).
  bool capability_list(std::vector<std::string>& out, int terminator) {
    for (;;) {
      if (peek() == terminator) return true;
      if (!sp("SP before capability")) return false;
      if (peek() == terminator) return true;
      const std::string_view cap = take_while(kAtomChar);
      if (cap.empty()) return expected("capability");
      out.push_back(upper_copy(cap));
    }
  }

  // ---- status responses ----

  // resp-text-code (RFC 9051 §7.1, RFC 4315, RFC 7162 §7, RFC 5530, ...).
  bool resp_text_code(ResponseCode& code) {
    ++pos_;  // '['
    const std::size_t name_start = pos_;
    const std::string_view name = take_while(kAtomChar);
    if (name.empty()) return expected("response code name after '['");
    code.name = upper_copy(name);
    code.kind = code_kind(code.name);
    const std::size_t arg_start = peek() == ' ' ? pos_ + 1 : pos_;
    bool tolerate_trailing_space = false;
    switch (code.kind) {
      case CodeKind::badcharset:
        if (peek() == ' ') {
          ++pos_;
          if (!expect('(', "'(' after BADCHARSET")) return false;
          for (;;) {
            if (peek() == '"') {
              if (!quoted(&code.atoms.emplace_back())) return false;
            } else {
              const std::string_view charset = take_while(kAtomChar);
              if (charset.empty()) return expected("charset");
              code.atoms.emplace_back(charset);
            }
            if (peek() == ')') break;
            if (!sp("SP or ')' in BADCHARSET")) return false;
          }
          ++pos_;
        }
        break;
      case CodeKind::capability:
        if (!capability_list(code.atoms, ']')) return false;
        break;
      case CodeKind::permanentflags:
        if (!sp("SP after PERMANENTFLAGS") || !flag_list(code.atoms, "PERMANENTFLAGS")) {
          return false;
        }
        tolerate_trailing_space = true;
        break;
      case CodeKind::uidnext:
      case CodeKind::uidvalidity:
      case CodeKind::unseen: {
        std::uint32_t n = 0;
        if (!sp("SP after ", code.name) || !nz_number(n, code.name)) return false;
        code.number = n;
        break;
      }
      case CodeKind::highestmodseq:
        if (!sp("SP after HIGHESTMODSEQ") || !mod_sequence_value(code.number, "HIGHESTMODSEQ")) {
          return false;
        }
        break;
      case CodeKind::appenduid:
        if (!resp_code_apnd(code)) return false;
        break;
      case CodeKind::copyuid:
        if (!resp_code_copy(code)) return false;
        break;
      case CodeKind::modified:
        if (!sp("SP after MODIFIED") || !sequence_set(code.set, nullptr, "MODIFIED set")) {
          return false;
        }
        break;
      default:
        // Codes without arguments, and unknown ones (RFC 9051 App. E item 22: ignore them):
        // atom [SP 1*<any TEXT-CHAR except "]">], the argument kept raw.
        if (peek() == ' ') {
          while (pos_ < s_.size() && s_[pos_] != ']' && s_[pos_] != '\r' && s_[pos_] != '\n') {
            ++pos_;
          }
        }
        if (pos_ - name_start > limits_.max_text) {
          return fail_at(name_start, fmt::format("response code {} of {} bytes exceeds the limit "
                                                 "of {}",
                                                 printable(code.name, 20), pos_ - name_start,
                                                 limits_.max_text));
        }
        break;
    }
    const std::size_t arg_end = pos_;
    if (tolerate_trailing_space) skip_spaces();
    if (!expect(']', "']' to close response code ", code.name)) return false;
    if (arg_start < arg_end) code.argument.assign(s_.substr(arg_start, arg_end - arg_start));
    return true;
  }

  // resp-code-apnd = "APPENDUID" SP nz-number SP append-uid; append-uid = uniqueid / uid-set
  bool resp_code_apnd(ResponseCode& code) {
    std::uint32_t validity = 0;
    if (!sp("SP after APPENDUID") || !nz_number(validity, "APPENDUID uidvalidity") ||
        !sp("SP after APPENDUID uidvalidity") ||
        !sequence_set(code.set, &code.set_order, "APPENDUID uid-set")) {
      return false;
    }
    code.number = validity;
    return true;
  }

  // resp-code-copy = "COPYUID" SP nz-number SP uid-set SP uid-set (RFC 4315 §4)
  bool resp_code_copy(ResponseCode& code) {
    std::uint32_t validity = 0;
    if (!sp("SP after COPYUID") || !nz_number(validity, "COPYUID uidvalidity") ||
        !sp("SP after COPYUID uidvalidity") ||
        !sequence_set(code.set, &code.set_order, "COPYUID source uid-set") ||
        !sp("SP between COPYUID uid-sets")) {
      return false;
    }
    const std::size_t dest_at = pos_;
    if (!sequence_set(code.set2, &code.set2_order, "COPYUID destination uid-set")) return false;
    if (code.set_order.size() != code.set2_order.size()) {
      return fail_at(dest_at, fmt::format("COPYUID source and destination sets differ in size "
                                          "({} and {} UIDs)",
                                          code.set_order.size(), code.set2_order.size()));
    }
    code.number = validity;
    return true;
  }

  // resp-text = ["[" resp-text-code "]" SP] [text]
  bool resp_text(StatusResponse& r) {
    if (peek() == '[') {
      if (!resp_text_code(r.code)) return false;
      // RFC 9051 App. E item 23 made the text optional, and Gmail then drops the SP too:
      // `* OK [HIGHESTMODSEQ 5]` (modern-email/defects#28; imap-codec quirk_missing_text).
      if (at_end()) return true;
      if (!sp("SP after response code")) return false;
    }
    return text(r.text);
  }

  // text = 1*TEXT-CHAR (the rest of the line)
  bool text(std::string& out) {
    const std::string_view rest = s_.substr(pos_);
    if (!within_text_limit("response text", pos_)) return false;
    const std::size_t bad = rest.find_first_of("\r\n");
    if (bad != std::string_view::npos) {
      return fail_at(pos_ + bad, "unexpected literal in response text");
    }
    out.assign(rest);
    pos_ = s_.size();
    return true;
  }

  // resp-cond-state / resp-cond-bye / resp-cond-auth after the condition word.
  bool resp_cond(StatusResponse& r) {
    // RFC 9051 errata on App. E item 23: the SP may be dropped when resp-text is empty;
    // Dovecot's client tests cover "a OK" with nothing after it.
    if (at_end()) return true;
    if (!sp("SP after status condition")) return false;
    return resp_text(r);
  }

  static bool condition(std::string_view word, Condition& out) {
    if (iequals(word, "OK")) {
      out = Condition::ok;
    } else if (iequals(word, "NO")) {
      out = Condition::no;
    } else if (iequals(word, "BAD")) {
      out = Condition::bad;
    } else if (iequals(word, "BYE")) {
      out = Condition::bye;
    } else if (iequals(word, "PREAUTH")) {
      out = Condition::preauth;
    } else {
      return false;
    }
    return true;
  }

  // ---- mailbox data ----

  // mailbox-list = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
  //                [SP mbox-list-extended]            (RFC 9051 §9, RFC 5258 §9)
  bool mailbox_list(ListData& l) {
    if (!sp("SP after LIST") || !flag_list(l.attributes, "mbx-list-flags") ||
        !sp("SP after mbx-list-flags") || !delimiter(l.delimiter) ||
        !sp("SP after hierarchy delimiter") || !astring(l.mailbox, "mailbox")) {
      return false;
    }
    if (at_end()) return true;
    if (!sp("SP before mbox-list-extended") || !mbox_list_extended(l)) return false;
    return end("mbox-list-extended");
  }

  // mbox-list-extended = "(" [mbox-list-extended-item *(SP mbox-list-extended-item)] ")"
  // mbox-list-extended-item = mbox-list-extended-item-tag SP tagged-ext-val
  bool mbox_list_extended(ListData& l) {
    if (!expect('(', "'(' to open mbox-list-extended")) return false;
    while (peek() != ')') {
      std::string tag;
      if (!astring(tag, "mbox-list-extended-item-tag") || !sp("SP after extended item tag")) {
        return false;
      }
      if (iequals(tag, "CHILDINFO")) {
        // RFC 5258 §4: CHILDINFO ("SUBSCRIBED")
        if (!expect('(', "'(' after CHILDINFO")) return false;
        for (;;) {
          std::string opt;
          if (!astring(opt, "CHILDINFO option")) return false;
          l.childinfo.push_back(upper_copy(opt));
          if (peek() == ')') break;
          if (!sp("SP or ')' in CHILDINFO")) return false;
        }
        ++pos_;
      } else if (iequals(tag, "OLDNAME")) {
        // RFC 9051 §6.3.9.7: OLDNAME ("old name")
        if (!expect('(', "'(' after OLDNAME") || !astring(l.oldname.emplace(), "OLDNAME") ||
            !expect(')', "')' after OLDNAME mailbox")) {
          return false;
        }
      } else if (!skip_value()) {
        return false;
      }
      if (peek() == ')') break;
      if (!sp("SP or ')' in mbox-list-extended")) return false;
    }
    ++pos_;
    return true;
  }

  // mailbox-data =/ "STATUS" SP mailbox SP "(" [status-att-list] ")"
  // LIST-STATUS (RFC 5819) answers are ordinary STATUS lines.
  bool status_response(StatusData& st) {
    if (!sp("SP after STATUS") || !astring(st.mailbox, "mailbox") ||
        !sp("SP after STATUS mailbox")) {
      return false;
    }
    // Extra spaces around the list and its atoms are tolerated (Trojitá row
    // status-extra-whitespace-around-atoms).
    skip_spaces();
    if (!expect('(', "'(' to open status-att-list")) return false;
    skip_spaces();
    while (peek() != ')') {
      const std::string_view name = take_while(kAtomChar);
      if (name.empty()) return expected("status-att");
      if (!sp("SP after ", name)) return false;
      skip_spaces();
      if (!status_att_val(st, name)) return false;
      if (peek() == ')') break;
      if (!sp("SP or ')' in status-att-list")) return false;
      skip_spaces();
    }
    ++pos_;
    // Exchange and Office 365 send a trailing space (modern-email/defects#9; imap-codec PR #468).
    skip_spaces();
    return end("STATUS");
  }

  // status-att-val (RFC 9051 §9; HIGHESTMODSEQ from RFC 7162 §3.1.2 may be 0 here).
  bool status_att_val(StatusData& st, std::string_view name) {
    auto number_into = [&](std::optional<std::uint32_t>& field, bool nz) {
      std::uint32_t v = 0;
      if (!(nz ? nz_number(v, name) : number(v, name))) return false;
      field = v;
      return true;
    };
    if (iequals(name, "MESSAGES")) return number_into(st.messages, false);
    if (iequals(name, "RECENT")) return number_into(st.recent, false);
    if (iequals(name, "UIDNEXT")) return number_into(st.uidnext, true);
    if (iequals(name, "UIDVALIDITY")) return number_into(st.uidvalidity, true);
    if (iequals(name, "UNSEEN")) return number_into(st.unseen, false);
    if (iequals(name, "DELETED")) return number_into(st.deleted, false);
    if (iequals(name, "SIZE")) return number64(st.size.emplace(), "SIZE");
    if (iequals(name, "HIGHESTMODSEQ")) {
      return mod_sequence_valzer(st.highestmodseq.emplace(), "HIGHESTMODSEQ");
    }
    return skip_value();  // APPENDLIMIT, MAILBOXID, ... (RFC 9051 §9 status-att-val extensions)
  }

  // ---- message data ----

  // section = "[" [section-spec] "]", kept raw and upper-cased.
  bool section(std::string& out) {
    const std::size_t open = pos_++;
    const std::size_t start = pos_;
    bool in_quote = false;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == '\r' || c == '\n') break;
      if (in_quote && c == '\\') {
        ++pos_;
      } else if (c == '"') {
        in_quote = !in_quote;
      } else if (c == ']' && !in_quote) {
        out = upper_copy(s_.substr(start, pos_ - start));
        ++pos_;
        return true;
      }
      ++pos_;
    }
    return fail_at(open, "unterminated section (expected ']')");
  }

  // "<" number ">" after a section (RFC 9051 §7.5.2 BODY[<section>]<<origin octet>>)
  bool origin(std::optional<std::uint32_t>& out) {
    ++pos_;
    if (!number(out.emplace(), "origin octet")) return false;
    return expect('>', "'>' after origin octet");
  }

  // msg-att = "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic / msg-att-static)) ")"
  bool msg_att(FetchData& f) {
    if (!expect('(', "'(' to open msg-att")) return false;
    while (peek() != ')') {
      const std::string_view name = take_while(kItemChar);
      if (name.empty()) return expected("FETCH item name");
      if (!msg_att_item(f, name)) return false;
      if (peek() == ')') break;
      if (!sp("SP or ')' between FETCH items")) return false;
    }
    ++pos_;
    return end("FETCH");
  }

  bool msg_att_item(FetchData& f, std::string_view name) {
    if (iequals(name, "UID")) {
      // uniqueid = nz-number: "servers speaking about UID 0 are buggy" (Trojitá testUid0).
      return sp("SP after UID") && nz_number(f.uid.emplace(), "UID");
    }
    if (iequals(name, "FLAGS")) {
      f.flags.emplace();
      return sp("SP after FLAGS") && flag_list(*f.flags, "FLAGS");
    }
    if (iequals(name, "MODSEQ")) {
      // fetch-mod-resp = "MODSEQ" SP "(" permsg-modsequence ")" (RFC 7162 §7)
      return sp("SP after MODSEQ") && expect('(', "'(' after MODSEQ") &&
             mod_sequence_value(f.modseq.emplace(), "MODSEQ") &&
             expect(')', "')' after MODSEQ value");
    }
    if (iequals(name, "RFC822.SIZE")) {
      return sp("SP after RFC822.SIZE") && number64(f.rfc822_size.emplace(), "RFC822.SIZE");
    }
    if (iequals(name, "INTERNALDATE")) {
      if (!sp("SP after INTERNALDATE")) return false;
      if (peek() != '"') return expected("quoted date-time for INTERNALDATE");
      return quoted(&f.internaldate.emplace());
    }
    const bool body = iequals(name, "BODY");
    const bool binary = iequals(name, "BINARY");
    if ((body || binary) && peek() == '[') {
      BodySection& b = f.bodies.emplace_back();
      b.binary = binary;
      if (!section(b.section)) return false;
      if (peek() == '<' && !origin(b.origin)) return false;
      if (!sp("SP after body section")) return false;
      if (nil()) return true;
      const int c = peek();
      if (c == '"') return quoted(&b.data.emplace());
      if (c == '{' || (binary && c == '~')) return literal(&b.data.emplace(), binary, true, "body");
      return expected(binary ? "nstring or literal8 for BINARY[]" : "nstring for BODY[]");
    }
    // Unknown or unneeded (ENVELOPE, BODYSTRUCTURE, BODY without section, BINARY.SIZE[...],
    // X-GM-*, EMAILID...): skipped structurally, name kept.
    f.other_items.push_back(upper_copy(name));
    if (peek() == '[') {
      std::string ignored;
      if (!section(ignored)) return false;
    }
    if (peek() == '<') {
      std::optional<std::uint32_t> ignored;
      if (!origin(ignored)) return false;
    }
    return sp("SP after ", f.other_items.back()) && skip_value();
  }

  // message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att)); mailbox-data =/ number SP
  // ("EXISTS" / "RECENT")
  bool message_data(Response& out) {
    const std::size_t at = pos_;
    std::uint32_t n = 0;
    if (!number(n, "message number") || !sp("SP after message number")) return false;
    const std::string_view name = take_while(kAtomChar);
    if (name.empty()) return expected("EXISTS, RECENT, EXPUNGE or FETCH");
    auto nonzero = [&] {
      return n != 0 || range_error(at, "0", "sequence number", "nz-number", 1, kMaxNumber);
    };
    if (iequals(name, "EXISTS")) {
      out.data = ExistsData{n};
      return end("EXISTS");
    }
    if (iequals(name, "RECENT")) {
      out.data = RecentData{n};
      return end("RECENT");
    }
    if (iequals(name, "EXPUNGE")) {
      if (!nonzero()) return false;
      out.data = ExpungeData{n};
      return end("EXPUNGE");
    }
    if (iequals(name, "FETCH")) {
      if (!nonzero()) return false;
      auto& f = out.data.emplace<FetchData>();
      f.seq = n;
      return sp("SP after FETCH") && msg_att(f);
    }
    // An unknown response is skipped whole (RFC 9051 App. E item 22), so it is bounded like text.
    if (!within_text_limit("unknown response", at)) return false;
    out.data = UnknownData{upper_copy(name)};
    return true;
  }

  // mailbox-data =/ "SEARCH" *(SP nz-number) [SP search-sort-mod-seq] (RFC 7162 §7)
  bool search_response(SearchData& s) {
    for (;;) {
      if (at_end()) return true;
      if (!sp("SP in SEARCH")) return false;
      // Yahoo sends `* SEARCH 1 2 3 ` (djc/imap-proto#108; ikvk/imap_tools#97).
      skip_spaces();
      if (at_end()) return true;
      if (peek() == '(') {
        ++pos_;
        if (!iequals(take_while(kAtomChar), "MODSEQ")) return expected("MODSEQ in SEARCH");
        if (!sp("SP after MODSEQ") || !mod_sequence_value(s.modseq.emplace(), "MODSEQ") ||
            !expect(')', "')' after SEARCH MODSEQ")) {
          return false;
        }
        skip_spaces();
        return end("SEARCH");
      }
      if (!nz_number(s.numbers.emplace_back(), "SEARCH")) return false;
    }
  }

  // esearch-response = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)
  // (RFC 4731 §3.1, RFC 9051 §9; MODSEQ from RFC 7162 §3.1.5)
  bool esearch_response(ESearchData& e) {
    if (at_end()) return true;
    if (!sp("SP after ESEARCH")) return false;
    if (peek() == '(') {
      // search-correlator = SP "(" "TAG" SP tag-string ")"
      ++pos_;
      if (!iequals(take_while(kAtomChar), "TAG")) return expected("TAG in search-correlator");
      if (!sp("SP after TAG") || !astring(e.tag, "tag-string") ||
          !expect(')', "')' after search-correlator")) {
        return false;
      }
      if (at_end()) return true;
      if (!sp("SP after search-correlator")) return false;
    }
    for (;;) {
      const std::string_view name = take_while(kAtomChar);
      if (name.empty()) return expected("search-return-data");
      if (iequals(name, "UID")) {
        e.uid = true;
      } else {
        if (!sp("SP after ", name)) return false;
        bool ok = true;
        if (iequals(name, "MIN")) {
          ok = nz_number(e.min.emplace(), "MIN");
        } else if (iequals(name, "MAX")) {
          ok = nz_number(e.max.emplace(), "MAX");
        } else if (iequals(name, "COUNT")) {
          ok = number(e.count.emplace(), "COUNT");
        } else if (iequals(name, "ALL")) {
          ok = sequence_set(e.all.emplace(), nullptr, "ESEARCH ALL");
        } else if (iequals(name, "MODSEQ")) {
          ok = mod_sequence_value(e.modseq.emplace(), "MODSEQ");
        } else {
          ok = skip_value();  // search-ret-data-ext (RFC 4466)
        }
        if (!ok) return false;
      }
      if (at_end()) return true;
      if (!sp("SP between search-return-data")) return false;
    }
  }

  // namespace = nil / "(" 1*namespace-descr ")"
  // namespace-descr = "(" string SP (DQUOTE QUOTED-CHAR DQUOTE / nil)
  //                   *(namespace-response-extension) ")"          (RFC 2342 §5, RFC 9051 §9)
  bool namespace_list(std::vector<NamespaceDescr>& out) {
    if (nil()) return true;
    if (!expect('(', "'(' or NIL for namespace")) return false;
    do {
      NamespaceDescr& d = out.emplace_back();
      if (!expect('(', "'(' to open namespace-descr") || !string(d.prefix, "namespace prefix") ||
          !sp("SP after namespace prefix") || !delimiter(d.delimiter)) {
        return false;
      }
      // namespace-response-extension = SP string SP "(" string *(SP string) ")"
      while (peek() == ' ') {
        ++pos_;
        std::string ignored;
        if (!string(ignored, "namespace extension") || !sp("SP after namespace extension") ||
            !skip_value()) {
          return false;
        }
      }
      if (!expect(')', "')' to close namespace-descr")) return false;
      skip_spaces();  // descriptors are not separated; tolerate a space between them
    } while (peek() == '(');
    return expect(')', "')' to close namespace");
  }

  bool namespace_response(NamespaceData& n) {
    return sp("SP after NAMESPACE") && namespace_list(n.personal) &&
           sp("SP after personal namespace") && namespace_list(n.other_users) &&
           sp("SP after other users' namespace") && namespace_list(n.shared) && end("NAMESPACE");
  }

  // id-response = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil
  // (RFC 2971 §4). ID replies are attacker-controlled even before authentication (Thunderbird
  // CVE-2026-92240), so what is kept is bounded by RFC 2971 §3.3.
  bool id_response(IdData& id) {
    if (!sp("SP after ID")) return false;
    if (!nil()) {
      if (!expect('(', "'(' or NIL after ID")) return false;
      while (peek() != ')') {
        std::string field;
        std::optional<std::string> value;
        if (!astring(field, "ID field") || !sp("SP after ID field") ||
            !nstring(value, "ID value")) {
          return false;
        }
        if (id.fields.size() < kIdMaxPairs) {
          if (field.size() > kIdMaxField) field.resize(kIdMaxField);
          if (value && value->size() > kIdMaxValue) value->resize(kIdMaxValue);
          id.fields.emplace_back(std::move(field), std::move(value));
        }
        if (peek() == ')') break;
        if (!sp("SP or ')' in ID list")) return false;
      }
      ++pos_;
    }
    // A trailing space is tolerated (modern-email/defects#24).
    skip_spaces();
    return end("ID");
  }

  // expunged-resp = "VANISHED" [SP "(EARLIER)"] SP known-uids (RFC 7162 §7)
  bool expunged_resp(VanishedData& v) {
    if (!sp("SP after VANISHED")) return false;
    if (peek() == '(') {
      const std::size_t at = pos_;
      ++pos_;
      if (!iequals(take_while(kAtomChar), "EARLIER") || peek() != ')') {
        return fail_at(at, "expected (EARLIER) or known-uids after VANISHED");
      }
      ++pos_;
      v.earlier = true;
      if (!sp("SP after (EARLIER)")) return false;
    }
    return sequence_set(v.uids, nullptr, "VANISHED UID") && end("known-uids");
  }

  // ---- top level ----

  // response-data = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data /
  //                 capability-data / enable-data / namespace-response / id-response ...) CRLF
  bool response_data(Response& out) {
    ++pos_;  // '*'
    if (!sp("SP after '*'")) return false;
    // `*  STATUS ...` with two spaces (KDE bug 365149, Trojitá untagged-extra-space-before-status).
    skip_spaces();
    // A sign before digits is a number too, and an invalid one (`* -135 EXISTS`), not the name of
    // an unknown response.
    if (is(peek(), kDigit) || ((peek() == '-' || peek() == '+') && is(peek_at(pos_ + 1), kDigit))) {
      return message_data(out);
    }
    const std::size_t name_start = pos_;
    const std::string_view name = take_while(kAtomChar);
    if (name.empty()) return expected("response name after '*'");
    Condition cond{};
    if (condition(name, cond)) {
      auto& r = out.data.emplace<StatusResponse>();
      r.condition = cond;
      return resp_cond(r);
    }
    if (iequals(name, "CAPABILITY")) {
      auto& c = out.data.emplace<CapabilityData>();
      return capability_list(c.capabilities, -1);
    }
    if (iequals(name, "ENABLED")) {
      auto& e = out.data.emplace<EnabledData>();
      return capability_list(e.capabilities, -1);
    }
    if (iequals(name, "LIST") || iequals(name, "LSUB")) {
      auto& l = out.data.emplace<ListData>();
      l.lsub = iequals(name, "LSUB");
      return mailbox_list(l);
    }
    if (iequals(name, "STATUS")) return status_response(out.data.emplace<StatusData>());
    if (iequals(name, "FLAGS")) {
      auto& f = out.data.emplace<FlagsData>();
      if (!sp("SP after FLAGS") || !flag_list(f.flags, "FLAGS")) return false;
      skip_spaces();
      return end("FLAGS");
    }
    if (iequals(name, "SEARCH")) return search_response(out.data.emplace<SearchData>());
    if (iequals(name, "ESEARCH")) return esearch_response(out.data.emplace<ESearchData>());
    if (iequals(name, "NAMESPACE")) return namespace_response(out.data.emplace<NamespaceData>());
    if (iequals(name, "ID")) return id_response(out.data.emplace<IdData>());
    if (iequals(name, "VANISHED")) return expunged_resp(out.data.emplace<VanishedData>());
    // An unknown response is skipped whole (RFC 9051 App. E item 22), so it is bounded like text.
    if (!within_text_limit("unknown response", name_start)) return false;
    out.data = UnknownData{upper_copy(name)};
    return true;
  }

  // continue-req = "+" SP (resp-text / base64)
  bool continue_req(Response& out) {
    ++pos_;
    auto& c = out.data.emplace<ContinuationRequest>();
    // A bare `+` with nothing after it (imap-codec quirk_empty_continue_req, issue #638).
    if (at_end()) return true;
    if (!sp("SP after '+'")) return false;
    return text(c.text);
  }

  // response-tagged = tag SP resp-cond-state CRLF
  bool response_tagged(Response& out) {
    const std::string_view tag = take_while(kTagChar);
    if (tag.empty()) return expected("'*', '+' or a tag");
    if (!sp("SP after tag")) return false;
    const std::size_t at = pos_;
    Condition cond{};
    if (!condition(take_while(kAtomChar), cond) || cond == Condition::bye ||
        cond == Condition::preauth) {
      return fail_at(at, "expected OK, NO or BAD after tag");
    }
    auto& r = out.data.emplace<StatusResponse>();
    r.tag.assign(tag);
    r.condition = cond;
    return resp_cond(r);
  }

  bool response(Response& out) {
    switch (peek()) {
      case '*':
        return response_data(out);
      case '+':
        return continue_req(out);
      default:
        return response_tagged(out);
    }
  }

  Frame& frame_;
  std::string_view s_;
  std::size_t pos_ = 0;
  std::size_t literal_ = 0;  // next literal to consume
  const Limits& limits_;
  Error error_;
};

}  // namespace

Result<Response> parse_response(Frame&& frame, const Limits& limits) {
  return Parser(frame, limits).response();
}

}  // namespace twinbox::imap
