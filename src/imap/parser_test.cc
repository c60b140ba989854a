// Parser rows: each input is fed through Reader in one chunk and byte by byte, every frame goes
// through parse_response, and both runs must agree: how the server's bytes are split across reads
// must never change a result.
#include "imap/parser.h"

// Rows use designated initializers that name only the fields a row is about; g++ -Wextra would
// flag every omitted one.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "imap/reader.h"

namespace twinbox::imap {

// ---- readable failure output for Response values ----

namespace {

template <class T>
std::string opt(const std::optional<T>& v) {
  if (!v) return "-";
  if constexpr (std::is_same_v<T, std::string>) {
    return fmt::format("\"{}\"", printable(*v, 80));
  } else if constexpr (std::is_same_v<T, SequenceSet>) {
    return v->to_string();
  } else if constexpr (std::is_same_v<T, char>) {
    return std::string(1, *v);
  } else {
    return fmt::format("{}", *v);
  }
}

std::string describe(const ResponseCode& c) {
  return fmt::format(
      "[kind={} name={} arg=\"{}\" number={} atoms={} set={} set2={} order={} "
      "order2={}]",
      static_cast<int>(c.kind), c.name, c.argument, c.number, c.atoms, c.set.to_string(),
      c.set2.to_string(), c.set_order, c.set2_order);
}
std::string describe(const StatusResponse& s) {
  return fmt::format("Status(tag={} cond={} code={} text=\"{}\")", s.tag,
                     static_cast<int>(s.condition), describe(s.code), s.text);
}
std::string describe(const CapabilityData& c) {
  return fmt::format("Capability{}", c.capabilities);
}
std::string describe(const EnabledData& c) { return fmt::format("Enabled{}", c.capabilities); }
std::string describe(const ListData& l) {
  return fmt::format("List(lsub={} attrs={} delim={} mailbox=\"{}\" childinfo={} oldname={})",
                     l.lsub, l.attributes, opt(l.delimiter), printable(l.mailbox, 80), l.childinfo,
                     opt(l.oldname));
}
std::string describe(const StatusData& s) {
  return fmt::format(
      "StatusData(\"{}\" messages={} recent={} uidnext={} uidvalidity={} unseen={} deleted={} "
      "size={} highestmodseq={})",
      s.mailbox, opt(s.messages), opt(s.recent), opt(s.uidnext), opt(s.uidvalidity), opt(s.unseen),
      opt(s.deleted), opt(s.size), opt(s.highestmodseq));
}
std::string describe(const FlagsData& f) { return fmt::format("Flags{}", f.flags); }
std::string describe(const ExistsData& e) { return fmt::format("Exists({})", e.count); }
std::string describe(const RecentData& e) { return fmt::format("Recent({})", e.count); }
std::string describe(const ExpungeData& e) { return fmt::format("Expunge({})", e.seq); }
std::string describe(const VanishedData& v) {
  return fmt::format("Vanished(earlier={} {})", v.earlier, printable(v.uids.to_string(), 80));
}
std::string describe(const FetchData& f) {
  std::string bodies;
  for (const auto& b : f.bodies) {
    bodies += fmt::format("{{{}[{}]<{}> {}}}", b.binary ? "BINARY" : "BODY", b.section,
                          opt(b.origin), opt(b.data));
  }
  return fmt::format("Fetch(seq={} uid={} flags={} modseq={} size={} date={} bodies={} other={})",
                     f.seq, opt(f.uid), f.flags ? fmt::format("{}", *f.flags) : "-", opt(f.modseq),
                     opt(f.rfc822_size), opt(f.internaldate), bodies, f.other_items);
}
std::string describe(const SearchData& s) {
  return fmt::format("Search({} modseq={})", s.numbers, opt(s.modseq));
}
std::string describe(const ESearchData& e) {
  return fmt::format("ESearch(tag={} uid={} min={} max={} count={} all={} modseq={})", e.tag, e.uid,
                     opt(e.min), opt(e.max), opt(e.count), opt(e.all), opt(e.modseq));
}
std::string describe(const std::vector<NamespaceDescr>& v) {
  std::string out = "(";
  for (const auto& d : v) out += fmt::format("(\"{}\" {})", d.prefix, opt(d.delimiter));
  return out + ")";
}
std::string describe(const NamespaceData& n) {
  return fmt::format("Namespace({} {} {})", describe(n.personal), describe(n.other_users),
                     describe(n.shared));
}
std::string describe(const IdData& id) {
  std::string out = "Id(";
  for (const auto& [k, v] : id.fields) out += fmt::format("{}={} ", k, opt(v));
  return out + ")";
}
std::string describe(const ContinuationRequest& c) {
  return fmt::format("Continue(\"{}\")", c.text);
}
std::string describe(const UnknownData& u) { return fmt::format("Unknown({})", u.name); }

}  // namespace

void PrintTo(const Response& r, std::ostream* os) {
  *os << std::visit([](const auto& d) { return describe(d); }, r.data);
}

namespace {

using namespace std::string_literals;

// ---- the feeding helper ----

struct Outcome {
  std::vector<Result<Response>> results;  // one per frame, in order
  std::optional<Error> reader_error;
  bool mid_frame = false;
};

Outcome run(std::string_view input, std::size_t chunk, const Limits& limits) {
  Outcome out;
  Reader reader(limits);
  for (std::size_t pos = 0; pos < input.size(); pos += chunk) {
    Status st = reader.feed(input.substr(pos, chunk));
    while (auto frame = reader.next()) {
      out.results.push_back(parse_response(std::move(*frame), limits));
    }
    if (!st) {
      out.reader_error = st.error();
      break;
    }
  }
  out.mid_frame = reader.mid_frame();
  return out;
}

std::string describe(const Outcome& o) {
  std::string out;
  for (const auto& r : o.results) {
    if (r.ok()) {
      out += std::visit([](const auto& d) { return describe(d); }, r->data);
    } else {
      out += "error: " + r.error().to_string();
    }
    out += "\n";
  }
  if (o.reader_error) out += "reader error: " + o.reader_error->to_string() + "\n";
  if (o.mid_frame) out += "mid frame\n";
  return out;
}

// Runs `input` whole and byte by byte, checks that both agree, returns the whole-chunk outcome.
Outcome run_both(std::string_view input, const Limits& limits = {}) {
  Outcome whole = run(input, std::max<std::size_t>(input.size(), 1), limits);
  Outcome bytes = run(input, 1, limits);
  EXPECT_EQ(describe(whole), describe(bytes)) << "whole and byte-by-byte feeding disagree";
  EXPECT_EQ(whole.results.size(), bytes.results.size());
  for (std::size_t i = 0; i < std::min(whole.results.size(), bytes.results.size()); ++i) {
    if (whole.results[i].ok() && bytes.results[i].ok()) {
      EXPECT_EQ(*whole.results[i], *bytes.results[i]);
    }
  }
  return whole;
}

// The first error: a parse error of some frame, or else the reader's.
std::optional<Error> first_error(const Outcome& o) {
  for (const auto& r : o.results) {
    if (!r.ok()) return r.error();
  }
  return o.reader_error;
}

std::string crlf(std::string_view line) { return std::string(line) + "\r\n"; }

// ---- builders for expected values ----

ResponseCode code(CodeKind kind, std::string name, std::string argument = "") {
  ResponseCode c;
  c.kind = kind;
  c.name = std::move(name);
  c.argument = std::move(argument);
  return c;
}

Response status(std::string tag, Condition cond, ResponseCode c, std::string text) {
  return Response{StatusResponse{std::move(tag), cond, std::move(c), std::move(text)}};
}

ResponseCode with_number(ResponseCode c, std::uint64_t n) {
  c.number = n;
  return c;
}
ResponseCode with_atoms(ResponseCode c, std::vector<std::string> atoms) {
  c.atoms = std::move(atoms);
  return c;
}

SequenceSet set(std::string_view text) { return SequenceSet::parse(text).value(); }

ResponseCode uid_code(CodeKind kind, std::string name, std::string argument, std::uint64_t validity,
                      std::string_view s1, std::vector<Uid> o1, std::string_view s2 = {},
                      std::vector<Uid> o2 = {}) {
  ResponseCode c = code(kind, std::move(name), std::move(argument));
  c.number = validity;
  c.set = set(s1);
  c.set_order = std::move(o1);
  if (!s2.empty()) c.set2 = set(s2);
  c.set2_order = std::move(o2);
  return c;
}

std::vector<std::string> strings(std::initializer_list<const char*> list) {
  return std::vector<std::string>(list.begin(), list.end());
}

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

// ---- rows that parse ----

struct ParseRow {
  std::string name;
  std::string input;  // exactly one response, with its line end
  Response expected;
};

void PrintTo(const ParseRow& row, std::ostream* os) { *os << row.name; }

std::vector<ParseRow> parse_rows() {
  std::vector<ParseRow> rows = {
      // Greetings (RFC 9051 §7.1.1, §7.1.4, §7.1.5)
      {"greeting_ok_capability",
       crlf("* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE AUTH=PLAIN] Dovecot ready."),
       status("", Condition::ok,
              with_atoms(code(CodeKind::capability, "CAPABILITY",
                              "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE AUTH=PLAIN"),
                         strings({"IMAP4REV1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
                                  "AUTH=PLAIN"})),
              "Dovecot ready.")},
      {"greeting_ok_plain", crlf("* OK IMAP4rev1 Service Ready"),
       status("", Condition::ok, {}, "IMAP4rev1 Service Ready")},
      {"greeting_preauth", crlf("* PREAUTH IMAP4rev1 server logged in as Smith"),
       status("", Condition::preauth, {}, "IMAP4rev1 server logged in as Smith")},
      {"greeting_bye", crlf("* BYE Too many connections"),
       status("", Condition::bye, {}, "Too many connections")},
      {"greeting_lowercase_ok", crlf("* ok hello"), status("", Condition::ok, {}, "hello")},

      // Tagged results
      {"tagged_ok_read_write", crlf("a1 OK [READ-WRITE] SELECT completed"),
       status("a1", Condition::ok, code(CodeKind::read_write, "READ-WRITE"), "SELECT completed")},
      {"tagged_no_trycreate", crlf("a2 NO [TRYCREATE] Mailbox doesn't exist"),
       status("a2", Condition::no, code(CodeKind::trycreate, "TRYCREATE"), "Mailbox doesn't exist")},
      {"tagged_bad", crlf("a3 BAD Command unknown"),
       status("a3", Condition::bad, {}, "Command unknown")},
      {"tagged_ok_without_sp_or_text", crlf("a4 OK"), status("a4", Condition::ok, {}, "")},
      {"tagged_ok_empty_text", crlf("a5 OK "), status("a5", Condition::ok, {}, "")},
      {"tagged_odd_tag_chars", crlf("x.1]z NO nope"), status("x.1]z", Condition::no, {}, "nope")},
      {"tagged_text_with_utf8_and_brackets", crlf("a6 OK done [really] — ok"),
       status("a6", Condition::ok, {}, "done [really] — ok")},

      // Response codes, one row per CodeKind
      {"code_alert", crlf("* NO [ALERT] System shutdown in 10 minutes"),
       status("", Condition::no, code(CodeKind::alert, "ALERT"), "System shutdown in 10 minutes")},
      {"code_alreadyexists", crlf("a NO [ALREADYEXISTS] exists"),
       status("a", Condition::no, code(CodeKind::already_exists, "ALREADYEXISTS"), "exists")},
      {"code_badcharset_list", crlf(R"(a NO [BADCHARSET (UTF-8 "US-ASCII")] no)"),
       status("a", Condition::no,
              with_atoms(code(CodeKind::badcharset, "BADCHARSET", R"((UTF-8 "US-ASCII"))"),
                         strings({"UTF-8", "US-ASCII"})),
              "no")},
      {"code_badcharset_bare", crlf("a NO [BADCHARSET] no"),
       status("a", Condition::no, code(CodeKind::badcharset, "BADCHARSET"), "no")},
      {"code_cannot", crlf("a NO [CANNOT] no"),
       status("a", Condition::no, code(CodeKind::cannot, "CANNOT"), "no")},
      {"code_closed", crlf("* OK [CLOSED] Previous mailbox closed"),
       status("", Condition::ok, code(CodeKind::closed, "CLOSED"), "Previous mailbox closed")},
      {"code_compressionactive", crlf("a NO [COMPRESSIONACTIVE] already"),
       status("a", Condition::no, code(CodeKind::compression_active, "COMPRESSIONACTIVE"),
              "already")},
      {"code_highestmodseq", crlf("* OK [HIGHESTMODSEQ 715194045007] Highest"),
       status("", Condition::ok,
              with_number(code(CodeKind::highestmodseq, "HIGHESTMODSEQ", "715194045007"),
                          715194045007),
              "Highest")},
      {"code_highestmodseq_max", crlf("* OK [HIGHESTMODSEQ 9223372036854775807] x"),
       status("", Condition::ok,
              with_number(code(CodeKind::highestmodseq, "HIGHESTMODSEQ", "9223372036854775807"),
                          kMaxModSeq),
              "x")},
      // Gmail: no SP and no text after the code (RFC 9051 App. E item 23; defects#28).
      {"quirk_highestmodseq_without_text", crlf("* OK [HIGHESTMODSEQ 5]"),
       status("", Condition::ok, with_number(code(CodeKind::highestmodseq, "HIGHESTMODSEQ", "5"), 5),
              "")},
      {"code_limit", crlf("a NO [LIMIT] too many"),
       status("a", Condition::no, code(CodeKind::limit, "LIMIT"), "too many")},
      {"code_nomodseq", crlf("* OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences"),
       status("", Condition::ok, code(CodeKind::nomodseq, "NOMODSEQ"),
              "Sorry, this mailbox format doesn't support modsequences")},
      {"code_nonexistent", crlf("a NO [NONEXISTENT] no"),
       status("a", Condition::no, code(CodeKind::nonexistent, "NONEXISTENT"), "no")},
      {"code_notificationoverflow", crlf("* OK [NOTIFICATIONOVERFLOW] too many"),
       status("", Condition::ok, code(CodeKind::notificationoverflow, "NOTIFICATIONOVERFLOW"),
              "too many")},
      {"code_overquota", crlf("a NO [OVERQUOTA] full"),
       status("a", Condition::no, code(CodeKind::overquota, "OVERQUOTA"), "full")},
      {"code_parse", crlf("* NO [PARSE] bad header"),
       status("", Condition::no, code(CodeKind::parse, "PARSE"), "bad header")},
      {"code_permanentflags",
       crlf(R"(* OK [PERMANENTFLAGS (\Deleted \Seen $Forwarded \*)] Limited)"),
       status("", Condition::ok,
              with_atoms(code(CodeKind::permanentflags, "PERMANENTFLAGS",
                              R"((\Deleted \Seen $Forwarded \*))"),
                         strings({"\\Deleted", "\\Seen", "$Forwarded", "\\*"})),
              "Limited")},
      // SurgeMail: trailing space inside the list (modern-email/defects#48).
      {"quirk_permanentflags_trailing_space", crlf(R"(* OK [PERMANENTFLAGS (\Seen ) ] x)"),
       status("", Condition::ok,
              with_atoms(code(CodeKind::permanentflags, "PERMANENTFLAGS", R"((\Seen ))"),
                         strings({"\\Seen"})),
              "x")},
      {"code_permanentflags_empty", crlf("* OK [PERMANENTFLAGS ()] none"),
       status("", Condition::ok, code(CodeKind::permanentflags, "PERMANENTFLAGS", "()"), "none")},
      {"code_read_only", crlf("a OK [READ-ONLY] EXAMINE completed"),
       status("a", Condition::ok, code(CodeKind::read_only, "READ-ONLY"), "EXAMINE completed")},
      {"code_toobig", crlf("a NO [TOOBIG] too big"),
       status("a", Condition::no, code(CodeKind::toobig, "TOOBIG"), "too big")},
      {"code_uidnext", crlf("* OK [UIDNEXT 4392] Predicted next UID"),
       status("", Condition::ok, with_number(code(CodeKind::uidnext, "UIDNEXT", "4392"), 4392),
              "Predicted next UID")},
      {"code_uidnotsticky", crlf("* NO [UIDNOTSTICKY] Non-persistent UIDs"),
       status("", Condition::no, code(CodeKind::uidnotsticky, "UIDNOTSTICKY"),
              "Non-persistent UIDs")},
      {"code_uidvalidity_max", crlf("* OK [UIDVALIDITY 4294967295] UIDs valid"),
       status("", Condition::ok,
              with_number(code(CodeKind::uidvalidity, "UIDVALIDITY", "4294967295"), 4294967295),
              "UIDs valid")},
      {"code_unavailable", crlf("a NO [UNAVAILABLE] later"),
       status("a", Condition::no, code(CodeKind::unavailable, "UNAVAILABLE"), "later")},
      {"code_unseen", crlf("* OK [UNSEEN 12] Message 12 is first unseen"),
       status("", Condition::ok, with_number(code(CodeKind::unseen, "UNSEEN", "12"), 12),
              "Message 12 is first unseen")},
      {"code_lowercase_name", crlf("* OK [uidnext 5] x"),
       status("", Condition::ok, with_number(code(CodeKind::uidnext, "UIDNEXT", "5"), 5), "x")},
      {"code_unknown_with_argument", crlf("* OK [XFOO bar (baz) 1] text"),
       status("", Condition::ok, code(CodeKind::other, "XFOO", "bar (baz) 1"), "text")},
      {"code_unknown_bare", crlf("a NO [XYZZY] nothing happens"),
       status("a", Condition::no, code(CodeKind::other, "XYZZY"), "nothing happens")},
      {"code_unknown_rfc5530", crlf("a NO [AUTHENTICATIONFAILED] Authentication failed"),
       status("a", Condition::no, code(CodeKind::other, "AUTHENTICATIONFAILED"),
              "Authentication failed")},
      {"code_known_with_extra_argument", crlf("* OK [ALERT now] x"),
       status("", Condition::ok, code(CodeKind::alert, "ALERT", "now"), "x")},
      {"code_modified", crlf("a3 NO [MODIFIED 7,9] Conditional STORE failed"),
       [] {
         auto c = code(CodeKind::modified, "MODIFIED", "7,9");
         c.set = set("7,9");
         return status("a3", Condition::no, c, "Conditional STORE failed");
       }()},

      // UIDPLUS (RFC 4315)
      {"appenduid_single", crlf("A003 OK [APPENDUID 38505 3955] APPEND completed"),
       status("A003", Condition::ok,
              uid_code(CodeKind::appenduid, "APPENDUID", "38505 3955", 38505, "3955", {3955}),
              "APPEND completed")},
      {"appenduid_multiappend", crlf("A004 OK [APPENDUID 38505 3955:3957] done"),
       status("A004", Condition::ok,
              uid_code(CodeKind::appenduid, "APPENDUID", "38505 3955:3957", 38505, "3955:3957",
                       {3955, 3956, 3957}),
              "done")},
      // RFC 4315 §3 forbids the set form for one message; it is unambiguous, so tolerated.
      {"appenduid_single_as_range", crlf("A005 OK [APPENDUID 38505 123:123] done"),
       status("A005", Condition::ok,
              uid_code(CodeKind::appenduid, "APPENDUID", "38505 123:123", 38505, "123", {123}),
              "done")},
      {"copyuid", crlf("A006 OK [COPYUID 38505 304,319:320 3956:3958] Done"),
       status("A006", Condition::ok,
              uid_code(CodeKind::copyuid, "COPYUID", "38505 304,319:320 3956:3958", 38505,
                       "304,319:320", {304, 319, 320}, "3956:3958", {3956, 3957, 3958}),
              "Done")},
      // "2:4 and 4:2 are equivalent" (RFC 4315 §4): a reversed range keeps ascending pairing.
      {"copyuid_reversed_ranges", crlf("A007 OK [COPYUID 7 12:10,3 22:20,30] Done"),
       status("A007", Condition::ok,
              uid_code(CodeKind::copyuid, "COPYUID", "7 12:10,3 22:20,30", 7, "3,10:12",
                       {10, 11, 12, 3}, "20:22,30", {20, 21, 22, 30}),
              "Done")},
      {"copyuid_untagged_before_expunge", crlf("* OK [COPYUID 1 5 105] Moved"),
       status("", Condition::ok, uid_code(CodeKind::copyuid, "COPYUID", "1 5 105", 1, "5", {5},
                                          "105", {105}),
              "Moved")},

      // CAPABILITY / ENABLED
      {"capability", crlf("* CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ LITERAL- CONDSTORE qresync"),
       Response{CapabilityData{
           strings({"IMAP4REV1", "IMAP4REV2", "LITERAL+", "LITERAL-", "CONDSTORE", "QRESYNC"})}}},
      // qq.com: trailing space (modern-email/defects#21).
      {"quirk_capability_trailing_space", crlf("* CAPABILITY IMAP4rev1 IDLE "),
       Response{CapabilityData{strings({"IMAP4REV1", "IDLE"})}}},
      {"capability_empty", crlf("* CAPABILITY"), Response{CapabilityData{}}},
      {"enabled", crlf("* ENABLED CONDSTORE QRESYNC"),
       Response{EnabledData{strings({"CONDSTORE", "QRESYNC"})}}},
      {"enabled_nothing", crlf("* ENABLED"), Response{EnabledData{}}},

      // LIST / LSUB (RFC 9051 §7.3.1, RFC 5258)
      {"list_inbox", crlf(R"(* LIST (\HasNoChildren) "/" INBOX)"),
       Response{ListData{false, strings({"\\HasNoChildren"}), '/', "INBOX", {}, {}}}},
      {"list_quoted_with_space", crlf(R"(* LIST (\HasChildren \Subscribed) "." "INBOX.Sent Items")"),
       Response{ListData{false, strings({"\\HasChildren", "\\Subscribed"}), '.',
                         "INBOX.Sent Items", {}, {}}}},
      {"list_nil_delimiter", crlf("* LIST (\\Noselect) NIL Public"),
       Response{ListData{false, strings({"\\Noselect"}), std::nullopt, "Public", {}, {}}}},
      {"list_backslash_delimiter_and_escapes", crlf(R"(* LIST () "\\" "a\\b \"c\"")"),
       Response{ListData{false, {}, '\\', R"(a\b "c")", {}, {}}}},
      {"list_literal_name", "* LIST () \"/\" {11}\r\nhello world\r\n",
       Response{ListData{false, {}, '/', "hello world", {}, {}}}},
      {"list_literal_name_with_crlf_and_quote", "* LIST () \"/\" {6}\r\na\r\n\"b)\r\n",
       Response{ListData{false, {}, '/', "a\r\n\"b)", {}, {}}}},
      {"list_numeric_name", crlf(R"(* LIST () "/" 666)"),
       Response{ListData{false, {}, '/', "666", {}, {}}}},
      {"list_name_with_bracket", crlf(R"(* LIST () "/" foo]bar)"),
       Response{ListData{false, {}, '/', "foo]bar", {}, {}}}},
      // GroupWise escapes parentheses (KDE bug 334456).
      {"quirk_list_groupwise_escaped_parens", crlf(R"~(* LIST () "/" "Sent \(old\)")~"),
       Response{ListData{false, {}, '/', "Sent (old)", {}, {}}}},
      {"list_empty_name", crlf(R"(* LIST (\Noselect) "/" "")"),
       Response{ListData{false, strings({"\\Noselect"}), '/', "", {}, {}}}},
      {"list_mutf7_name_kept_raw", crlf(R"(* LIST () "/" "&Jjo-&-")"),
       Response{ListData{false, {}, '/', "&Jjo-&-", {}, {}}}},
      {"list_utf8_name", crlf(R"(* LIST () "/" "Entwürfe")"),
       Response{ListData{false, {}, '/', "Entwürfe", {}, {}}}},
      {"list_dotdot_name_kept_raw", crlf(R"(* LIST () "/" "../../etc")"),
       Response{ListData{false, {}, '/', "../../etc", {}, {}}}},
      {"list_inbox_lowercase_kept_raw", crlf(R"(* LIST () "." inbox.foo)"),
       Response{ListData{false, {}, '.', "inbox.foo", {}, {}}}},
      // U+2028 (LINE SEPARATOR) and a decomposed "é" stay as sent; policy is above the parser.
      {"list_unicode_separator_and_nfd", crlf("* LIST () \"/\" \"a\xe2\x80\xa8" "b e\xcc\x81\""),
       Response{ListData{false, {}, '/', "a\xe2\x80\xa8" "b e\xcc\x81", {}, {}}}},
      {"list_long_name", crlf(R"(* LIST () "/" ")" + std::string(2000, 'x') + "\""),
       Response{ListData{false, {}, '/', std::string(2000, 'x'), {}, {}}}},
      {"list_childinfo", crlf(R"(* LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED")))"),
       Response{ListData{false, {}, '/', "Foo", strings({"SUBSCRIBED"}), {}}}},
      {"list_oldname", crlf(R"(* LIST () "/" "Bar" ("OLDNAME" ("Foo")))"),
       Response{ListData{false, {}, '/', "Bar", {}, "Foo"}}},
      {"list_unknown_extended_items_skipped",
       crlf(R"(* LIST () "/" "Baz" (XEXT (1 ("two" NIL)) "childinfo" (subscribed) X2 12))"),
       Response{ListData{false, {}, '/', "Baz", strings({"SUBSCRIBED"}), {}}}},
      {"lsub", crlf(R"(* LSUB () "." #news.comp.mail.misc)"),
       Response{ListData{true, {}, '.', "#news.comp.mail.misc", {}, {}}}},

      // STATUS (RFC 9051 §7.3.2; LIST-STATUS lines are the same)
      {"status", crlf("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)"),
       Response{StatusData{"blurdybloop", 231, {}, 44292, {}, {}, {}, {}, {}}}},
      {"status_all_items",
       crlf("* STATUS \"INBOX\" (MESSAGES 1 RECENT 0 UIDNEXT 2 UIDVALIDITY 3 UNSEEN 4 DELETED 5 "
            "SIZE 12345678901 HIGHESTMODSEQ 77)"),
       Response{StatusData{"INBOX", 1, 0, 2, 3, 4, 5, 12345678901, 77}}},
      // RFC 7162 §3.1.2: 0 means "no persistent mod-sequences" here (Purelymail sends it).
      {"status_highestmodseq_zero", crlf("* STATUS INBOX (HIGHESTMODSEQ 0)"),
       Response{StatusData{"INBOX", {}, {}, {}, {}, {}, {}, {}, 0}}},
      // mail.163.com (modern-email/defects#15).
      {"quirk_status_empty", crlf("* STATUS \"INBOX\" ()"), Response{StatusData{"INBOX"}}},
      // Exchange (modern-email/defects#9).
      {"quirk_status_trailing_space", crlf("* STATUS INBOX (MESSAGES 100 UNSEEN 0) "),
       Response{StatusData{"INBOX", 100, {}, {}, {}, 0, {}, {}, {}}}},
      {"quirk_status_extra_spaces", crlf("* STATUS INBOX  ( MESSAGES  1   UIDNEXT 2 )"),
       Response{StatusData{"INBOX", 1, {}, 2, {}, {}, {}, {}, {}}}},
      // KDE bug 365149.
      {"quirk_double_space_after_star", crlf("*  STATUS INBOX (MESSAGES 1)"),
       Response{StatusData{"INBOX", 1, {}, {}, {}, {}, {}, {}, {}}}},
      {"status_unknown_items_skipped",
       crlf("* STATUS INBOX (APPENDLIMIT 100 MAILBOXID (F123abc) MESSAGES 3 XFOO NIL)"),
       Response{StatusData{"INBOX", 3, {}, {}, {}, {}, {}, {}, {}}}},
      {"status_literal_mailbox", "* STATUS {5}\r\nIN BO (MESSAGES 1)\r\n",
       Response{StatusData{"IN BO", 1, {}, {}, {}, {}, {}, {}, {}}}},

      // FLAGS, EXISTS, RECENT, EXPUNGE
      {"flags", crlf(R"(* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Forwarded NonJunk))"),
       Response{FlagsData{strings(
           {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded", "NonJunk"})}}},
      {"flags_empty", crlf("* FLAGS ()"), Response{FlagsData{}}},
      {"exists", crlf("* 23 EXISTS"), Response{ExistsData{23}}},
      {"exists_zero", crlf("* 0 EXISTS"), Response{ExistsData{0}}},
      {"exists_max", crlf("* 4294967295 EXISTS"), Response{ExistsData{4294967295}}},
      {"recent", crlf("* 5 RECENT"), Response{RecentData{5}}},
      {"expunge", crlf("* 44 EXPUNGE"), Response{ExpungeData{44}}},

      // VANISHED (RFC 7162 §3.2.10)
      {"vanished", crlf("* VANISHED 405,407:410,415"),
       Response{VanishedData{false, set("405,407:410,415")}}},
      {"vanished_earlier_everything", crlf("* VANISHED (EARLIER) 1:4294967295"),
       Response{VanishedData{true, set("1:4294967295")}}},
      {"vanished_reversed_and_unordered", crlf("* VANISHED 10:8,3,5:4"),
       Response{VanishedData{false, set("3:5,8:10")}}},

      // FETCH (RFC 9051 §7.5.2, RFC 7162 §3.1.4)
      {"fetch_uid_flags_modseq", crlf(R"(* 12 FETCH (UID 4827313 FLAGS (\Seen) MODSEQ (12121231000)))"),
       Response{FetchData{.seq = 12,
                          .uid = 4827313,
                          .flags = strings({"\\Seen"}),
                          .modseq = 12121231000}}},
      {"fetch_full_message",
       "* 1 FETCH (UID 7 MODSEQ (9) FLAGS (\\Seen $Label1) INTERNALDATE \"17-Jul-1996 02:44:25 "
       "-0700\" RFC822.SIZE 14 BODY[] {14}\r\nSubject: x\r\n\r\n)\r\n",
       Response{FetchData{.seq = 1,
                          .uid = 7,
                          .flags = strings({"\\Seen", "$Label1"}),
                          .modseq = 9,
                          .rfc822_size = 14,
                          .internaldate = "17-Jul-1996 02:44:25 -0700",
                          .bodies = {BodySection{"", false, {}, "Subject: x\r\n\r\n"}}}}},
      {"fetch_header_fields",
       "* 3 FETCH (UID 9 BODY[HEADER.FIELDS (Message-ID)] {21}\r\nMessage-ID: <a@b>\r\n\r\n)\r\n",
       Response{FetchData{.seq = 3,
                          .uid = 9,
                          .bodies = {BodySection{"HEADER.FIELDS (MESSAGE-ID)", false, {},
                                                 "Message-ID: <a@b>\r\n\r\n"}}}}},
      {"fetch_partial_origin", "* 3 FETCH (BODY[]<100> {5}\r\nhello)\r\n",
       Response{FetchData{.seq = 3, .bodies = {BodySection{"", false, 100, "hello"}}}}},
      {"fetch_body_nil", crlf("* 3 FETCH (BODY[1.2] NIL)"),
       Response{FetchData{.seq = 3, .bodies = {BodySection{"1.2", false, {}, std::nullopt}}}}},
      {"fetch_body_quoted", crlf(R"(* 3 FETCH (BODY[TEXT] "short \"body\""))"),
       Response{FetchData{.seq = 3, .bodies = {BodySection{"TEXT", false, {}, "short \"body\""}}}}},
      {"fetch_body_empty_literal", "* 3 FETCH (UID 4 BODY[] {0}\r\n)\r\n",
       Response{FetchData{.seq = 3, .uid = 4, .bodies = {BodySection{"", false, {}, ""}}}}},
      {"fetch_binary_literal8_with_nul", "* 3 FETCH (BINARY[] ~{6}\r\nab\0\0cd)\r\n"s,
       Response{FetchData{.seq = 3, .bodies = {BodySection{"", true, {}, "ab\0\0cd"s}}}}},
      {"fetch_binary_plain_literal", "* 3 FETCH (BINARY[1] {3}\r\nabc)\r\n",
       Response{FetchData{.seq = 3, .bodies = {BodySection{"1", true, {}, "abc"}}}}},
      // Message data is binary-safe even in a {n} literal.
      {"fetch_body_literal_with_nul", "* 3 FETCH (BODY[] {3}\r\na\0b)\r\n"s,
       Response{FetchData{.seq = 3, .bodies = {BodySection{"", false, {}, "a\0b"s}}}}},
      {"fetch_two_bodies", "* 3 FETCH (BODY[1] {1}\r\na BODY[2] {1}\r\nb)\r\n",
       Response{FetchData{.seq = 3,
                          .bodies = {BodySection{"1", false, {}, "a"},
                                     BodySection{"2", false, {}, "b"}}}}},
      // Gmail sends more items after a literal (mjs/imapclient#30).
      {"fetch_items_after_literal", "* 3 FETCH (BODY[] {5}\r\nhello UID 7 FLAGS ())\r\n",
       Response{FetchData{.seq = 3,
                          .uid = 7,
                          .flags = std::vector<std::string>{},
                          .bodies = {BodySection{"", false, {}, "hello"}}}}},
      // ProtonMail Bridge: FLAGS before UID in an unsolicited FETCH (getmail6#93).
      {"fetch_flags_before_uid", crlf("* 51868 FETCH (FLAGS (NonJunk) UID 51958)"),
       Response{FetchData{.seq = 51868, .uid = 51958, .flags = strings({"NonJunk"})}}},
      {"fetch_lowercase_items", crlf(R"(* 2 FETCH (uid 5 flags (\Seen) rfc822.size 4294967296))"),
       Response{FetchData{.seq = 2,
                          .uid = 5,
                          .flags = strings({"\\Seen"}),
                          .rfc822_size = 4294967296}}},
      {"fetch_uid_max", crlf("* 2 FETCH (UID 4294967295)"),
       Response{FetchData{.seq = 2, .uid = 4294967295}}},
      {"fetch_modseq_max", crlf("* 2 FETCH (MODSEQ (9223372036854775807))"),
       Response{FetchData{.seq = 2, .modseq = kMaxModSeq}}},
      {"fetch_unknown_items_skipped",
       "* 4 FETCH (ENVELOPE (\"Mon, 7 Feb 1994\" {7}\r\nsubject ((\"A\" NIL \"a\" \"b.c\")) NIL "
       "NIL NIL NIL NIL \"<id@x>\") UID 8 BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" "
       "\"US-ASCII\") NIL NIL \"7BIT\" -1 -2) X-GM-LABELS (\\Inbox \"[Gmail]/Sent\") "
       "BINARY.SIZE[1] 1234 X-GM-MSGID 1278455344230334865 BODY (\"text\" \"plain\" NIL NIL NIL "
       "NIL 3 1) EMAILID (M6d99ac3275bb4e) RFC822.HEADER NIL)\r\n",
       Response{FetchData{.seq = 4,
                          .uid = 8,
                          .other_items = strings({"ENVELOPE", "BODYSTRUCTURE", "X-GM-LABELS",
                                                  "BINARY.SIZE", "X-GM-MSGID", "BODY", "EMAILID",
                                                  "RFC822.HEADER"})}}},
      // Exchange/maddy: extra spaces inside BODYSTRUCTURE (modern-email/defects#51).
      {"quirk_fetch_bodystructure_extra_spaces",
       crlf(R"(* 4 FETCH (BODYSTRUCTURE ( "TEXT"  "PLAIN" NIL  ) UID 1))"),
       Response{FetchData{.seq = 4, .uid = 1, .other_items = strings({"BODYSTRUCTURE"})}}},
      {"fetch_nesting_at_limit",
       crlf("* 4 FETCH (BODYSTRUCTURE " + repeat("(", 64) + "NIL" + repeat(")", 64) + ")"),
       Response{FetchData{.seq = 4, .other_items = strings({"BODYSTRUCTURE"})}}},
      {"fetch_body_peek_is_unknown", "* 4 FETCH (BODY.PEEK[] {1}\r\nx)\r\n",
       Response{FetchData{.seq = 4, .other_items = strings({"BODY.PEEK"})}}},
      {"fetch_empty", crlf("* 4 FETCH ()"), Response{FetchData{.seq = 4}}},

      // SEARCH (RFC 9051 §7.3.4 (rev1), RFC 7162 §3.1.5)
      {"search", crlf("* SEARCH 2 3 6"), Response{SearchData{{2, 3, 6}, {}}}},
      {"search_empty", crlf("* SEARCH"), Response{SearchData{}}},
      // Yahoo (djc/imap-proto#108).
      {"quirk_search_trailing_space", crlf("* SEARCH 1 2 3 "), Response{SearchData{{1, 2, 3}, {}}}},
      {"quirk_search_empty_trailing_space", crlf("* SEARCH "), Response{SearchData{}}},
      {"search_modseq", crlf("* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)"),
       Response{SearchData{{2, 5, 6, 7, 11, 12, 18, 19, 20, 23}, 917162500}}},

      // ESEARCH (RFC 4731, RFC 9051 §7.3.4)
      {"esearch_min_max", crlf(R"(* ESEARCH (TAG "A285") UID MIN 7 MAX 3800)"),
       Response{ESearchData{"A285", true, 7, 3800, {}, {}, {}}}},
      {"esearch_all_count_modseq", crlf("* ESEARCH (TAG \"a\") UID ALL 1:3,5 COUNT 4 MODSEQ 200"),
       Response{ESearchData{"a", true, {}, {}, 4, set("1:3,5"), 200}}},
      {"esearch_nothing", crlf("* ESEARCH (TAG \"a\")"), Response{ESearchData{"a"}}},
      {"esearch_bare", crlf("* ESEARCH"), Response{ESearchData{}}},
      {"esearch_unknown_return_data", crlf("* ESEARCH UID PARTIAL (1:10 1,2) COUNT 2"),
       Response{ESearchData{"", true, {}, {}, 2, {}, {}}}},

      // NAMESPACE (RFC 2342, RFC 9051 §7.3.5)
      {"namespace_personal_only", crlf(R"(* NAMESPACE (("" "/")) NIL NIL)"),
       Response{NamespaceData{{NamespaceDescr{"", '/'}}, {}, {}}}},
      {"namespace_all",
       crlf(R"(* NAMESPACE (("INBOX." ".")) (("Other Users." ".")("#mh/" "/")) (("Shared." NIL)))"),
       Response{NamespaceData{{NamespaceDescr{"INBOX.", '.'}},
                              {NamespaceDescr{"Other Users.", '.'}, NamespaceDescr{"#mh/", '/'}},
                              {NamespaceDescr{"Shared.", std::nullopt}}}}},
      {"namespace_extension_skipped",
       crlf(R"(* NAMESPACE (("" "/" "X-PARAM" ("FLAG1" "FLAG2"))) NIL NIL)"),
       Response{NamespaceData{{NamespaceDescr{"", '/'}}, {}, {}}}},

      // ID (RFC 2971)
      {"id", crlf(R"(* ID ("name" "Dovecot" "version" NIL))"),
       Response{IdData{{{"name", "Dovecot"}, {"version", std::nullopt}}}}},
      {"id_nil", crlf("* ID NIL"), Response{IdData{}}},
      // modern-email/defects#24.
      {"quirk_id_trailing_space", crlf(R"(* ID ("name" "x") )"), Response{IdData{{{"name", "x"}}}}},
      {"id_literal_value", "* ID (\"name\" {5}\r\nhello \"os\" NIL)\r\n",
       Response{IdData{{{"name", "hello"}, {"os", std::nullopt}}}}},
      // RFC 2971 §3.3 bounds: values cut at 1024 bytes, fields at 30.
      {"id_long_value_truncated",
       crlf("* ID (\"" + std::string(40, 'f') + "\" \"" + std::string(5000, 'v') + "\")"),
       Response{IdData{{{std::string(30, 'f'), std::string(1024, 'v')}}}}},

      // Continuation requests (RFC 9051 §7.5)
      {"continuation", crlf("+ Ready for additional command text"),
       Response{ContinuationRequest{"Ready for additional command text"}}},
      // imap-codec quirk_empty_continue_req (#638).
      {"quirk_continuation_bare", crlf("+"), Response{ContinuationRequest{}}},
      {"continuation_empty_text", crlf("+ "), Response{ContinuationRequest{}}},
      {"continuation_base64", crlf("+ YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ="),
       Response{ContinuationRequest{
           "YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ="}}},

      // Unknown untagged responses (RFC 9051 §7: accept any response at any time)
      {"unknown_untagged", crlf("* XAPPLEPUSHSERVICE aps-version 2 aps-topic com.apple.mobilemail"),
       Response{UnknownData{"XAPPLEPUSHSERVICE"}}},
      {"unknown_untagged_with_literal", "* METADATA \"INBOX\" (/shared/comment {3}\r\nabc)\r\n",
       Response{UnknownData{"METADATA"}}},
      {"unknown_numbered", crlf("* 3 XFOO bar"), Response{UnknownData{"XFOO"}}},
      {"xlist_is_unknown", crlf(R"(* XLIST (\Inbox) "/" "Inbox")"), Response{UnknownData{"XLIST"}}},
  };

  // Bare LF line ends are accepted (reader.h).
  rows.push_back({"bare_lf_line_end", "* 23 EXISTS\n", Response{ExistsData{23}}});
  rows.push_back({"bare_lf_after_literal", "* 3 FETCH (BODY[] {2}\nhi)\n",
                  Response{FetchData{.seq = 3, .bodies = {BodySection{"", false, {}, "hi"}}}}});

  // ID with more than 30 pairs keeps the first 30 (RFC 2971 §3.3).
  {
    std::string line = "* ID (";
    IdData expected;
    for (int i = 0; i < 40; ++i) {
      line += fmt::format("{}\"k{}\" \"v{}\"", i ? " " : "", i, i);
      if (i < 30) expected.fields.emplace_back(fmt::format("k{}", i), fmt::format("v{}", i));
    }
    rows.push_back({"id_many_pairs_bounded", crlf(line + ")"), Response{expected}});
  }

  // VANISHED with 100k disjoint ranges stays 100k ranges (RFC 7162 §3.2.10), never expanded.
  {
    std::string line = "* VANISHED (EARLIER) ";
    SequenceSet expected;
    for (std::uint32_t i = 0; i < 100000; ++i) {
      const std::uint32_t uid = 2 * i + 1;
      line += fmt::format("{}{}", i ? "," : "", uid);
      expected.add(uid);
    }
    rows.push_back({"vanished_100k_ranges", crlf(line), Response{VanishedData{true, expected}}});
  }
  // ... also when the server sends them in descending order.
  {
    std::string line = "* VANISHED ";
    SequenceSet expected;
    for (std::uint32_t i = 100000; i > 0; --i) {
      line += fmt::format("{}{}", i == 100000 ? "" : ",", 2 * i + 1);
    }
    // The expected set is built in ascending order: adding to the front of SequenceSet's range
    // vector 100k times is quadratic, and this table is built at every test process start.
    for (std::uint32_t i = 1; i <= 100000; ++i) expected.add(2 * i + 1);
    rows.push_back(
        {"vanished_100k_descending", crlf(line), Response{VanishedData{false, expected}}});
  }
  return rows;
}

class ParseRows : public testing::TestWithParam<ParseRow> {};

TEST_P(ParseRows, WholeAndByteByByte) {
  const ParseRow& row = GetParam();
  const Outcome out = run_both(row.input);
  ASSERT_FALSE(out.reader_error) << out.reader_error->to_string();
  ASSERT_EQ(out.results.size(), 1u) << describe(out);
  ASSERT_TRUE(out.results[0].ok()) << out.results[0].error().to_string();
  EXPECT_EQ(*out.results[0], row.expected);
  EXPECT_FALSE(out.mid_frame);
}

INSTANTIATE_TEST_SUITE_P(Parser, ParseRows, testing::ValuesIn(parse_rows()),
                         [](const auto& info) { return info.param.name; });

// ---- rows that fail ----

struct ErrorRow {
  std::string name;
  std::string input;
  Errc code = Errc::protocol;
  std::string message;                // asserted exactly when not empty
  std::optional<std::size_t> offset;  // asserted when set (offset inside the evidence)
  Limits limits = {};
};

void PrintTo(const ErrorRow& row, std::ostream* os) { *os << row.name; }

std::vector<ErrorRow> error_rows() {
  std::vector<ErrorRow> rows = {
      // Range checks: zero UIDs, UIDVALIDITYs and sequence numbers, numbers over 32 bits (RFC 9051
      // §9 nz-number, number) and MODSEQs of 0 or over 63 bits (RFC 7162 §7 mod-sequence-value)
      {"uid_zero", crlf("* 1 FETCH (UID 0)"), Errc::protocol,
       "UID 0 out of range for nz-number (1..4294967295)", 15},
      {"uid_too_big", crlf("* 1 FETCH (UID 4294967296)"), Errc::protocol,
       "UID 4294967296 out of range for nz-number (1..4294967295)", 15},
      {"fetch_seq_zero", crlf("* 0 FETCH (UID 1)"), Errc::protocol,
       "sequence number 0 out of range for nz-number (1..4294967295)", 2},
      {"expunge_zero", crlf("* 0 EXPUNGE"), Errc::protocol,
       "sequence number 0 out of range for nz-number (1..4294967295)", 2},
      {"exists_too_big", crlf("* 4294967296 EXISTS"), Errc::protocol,
       "message number 4294967296 out of range for number (0..4294967295)", 2},
      {"modseq_zero", crlf("* 1 FETCH (MODSEQ (0))"), Errc::protocol,
       "MODSEQ 0 out of range for mod-sequence-value (1..9223372036854775807)", 19},
      {"modseq_2_pow_63", crlf("* 1 FETCH (UID 1 MODSEQ (9223372036854775808))"), Errc::protocol,
       "MODSEQ 9223372036854775808 out of range for mod-sequence-value (1..9223372036854775807)",
       25},
      {"modseq_2_pow_64_minus_1", crlf("* 1 FETCH (MODSEQ (18446744073709551615))"), Errc::protocol,
       "MODSEQ 18446744073709551615 out of range for mod-sequence-value (1..9223372036854775807)",
       19},
      {"modseq_overflowing_64_bits", crlf("* 1 FETCH (MODSEQ (99999999999999999999999))"),
       Errc::protocol, "", 19},
      {"highestmodseq_zero", crlf("* OK [HIGHESTMODSEQ 0] x"), Errc::protocol,
       "HIGHESTMODSEQ 0 out of range for mod-sequence-value (1..9223372036854775807)", 20},
      {"highestmodseq_2_pow_63", crlf("* OK [HIGHESTMODSEQ 9223372036854775808] x"), Errc::protocol,
       "", 20},
      {"highestmodseq_2_pow_64_minus_1", crlf("* OK [HIGHESTMODSEQ 18446744073709551615]"),
       Errc::protocol, "", 20},
      {"status_highestmodseq_2_pow_63", crlf("* STATUS INBOX (HIGHESTMODSEQ 9223372036854775808)"),
       Errc::protocol,
       "HIGHESTMODSEQ 9223372036854775808 out of range for mod-sequence-valzer "
       "(0..9223372036854775807)",
       30},
      {"uidvalidity_zero", crlf("* OK [UIDVALIDITY 0] x"), Errc::protocol,
       "UIDVALIDITY 0 out of range for nz-number (1..4294967295)", 18},
      {"uidvalidity_too_big", crlf("* OK [UIDVALIDITY 4294967296] x"), Errc::protocol, "", 18},
      {"status_uidnext_zero", crlf("* STATUS INBOX (UIDNEXT 0)"), Errc::protocol,
       "UIDNEXT 0 out of range for nz-number (1..4294967295)", 24},
      {"status_negative", crlf("* STATUS INBOX (MESSAGES -1)"), Errc::protocol,
       "MESSAGES -1 out of range for number (0..4294967295)", 25},
      // A corrupted server's `* -135 EXISTS` was an unknown response named "-135", so the
      // mailbox size stayed unknown and was taken as 0.
      {"exists_negative", crlf("* -135 EXISTS"), Errc::protocol,
       "message number -135 out of range for number (0..4294967295)", 2},
      {"exists_plus", crlf("* +135 EXISTS"), Errc::protocol,
       "message number +135: no sign allowed in number", 2},
      {"fetch_uid_negative", crlf("* 1 FETCH (UID -7 FLAGS ())"), Errc::protocol,
       "UID -7 out of range for nz-number (1..4294967295)", 15},
      {"search_zero", crlf("* SEARCH 1 0"), Errc::protocol, "", 11},
      {"vanished_zero", crlf("* VANISHED 0:4"), Errc::protocol,
       "VANISHED UID 0 out of range for nz-number (1..4294967295)", 11},
      {"vanished_star", crlf("* VANISHED 1:*"), Errc::protocol, "'*' not allowed in VANISHED UID",
       13},
      {"vanished_bad_modifier", crlf("* VANISHED (LATER) 1"), Errc::protocol,
       "expected (EARLIER) or known-uids after VANISHED", 11},

      // UIDPLUS validation (RFC 4315 §3: wrong arity, '*', zero UIDs, UID sets of different
      // sizes; CVE-2021-3578 class)
      {"appenduid_missing_uid", crlf("a OK [APPENDUID 38505] done"), Errc::protocol,
       "expected SP after APPENDUID uidvalidity", 21},
      {"appenduid_star", crlf("a OK [APPENDUID 38505 *] done"), Errc::protocol,
       "'*' not allowed in APPENDUID uid-set", 22},
      {"appenduid_zero_validity", crlf("a OK [APPENDUID 0 5] done"), Errc::protocol, "", 16},
      {"appenduid_extra_argument", crlf("a OK [APPENDUID 1 5 6] done"), Errc::protocol,
       "expected ']' to close response code APPENDUID", 19},
      {"appenduid_not_a_number", crlf("a OK [APPENDUID abc 5] done"), Errc::protocol,
       "expected nz-number for APPENDUID uidvalidity", 16},
      {"copyuid_size_mismatch", crlf("a OK [COPYUID 1 1:3 5:6] done"), Errc::protocol,
       "COPYUID source and destination sets differ in size (3 and 2 UIDs)", 20},
      {"copyuid_star", crlf("a OK [COPYUID 1 1:* 5:7] done"), Errc::protocol,
       "'*' not allowed in COPYUID source uid-set", 18},
      {"copyuid_missing_destination", crlf("a OK [COPYUID 1 1:3] done"), Errc::protocol,
       "expected SP between COPYUID uid-sets", 19},
      {"copyuid_zero_uid", crlf("a OK [COPYUID 1 1,2 3,0] done"), Errc::protocol, "", 22},

      // Strings and mailbox names: unterminated quoted strings, NUL bytes, a delimiter of two
      // characters, literal8 where RFC 9051 §9 allows only a string
      {"unterminated_quoted", crlf(R"(* LIST () "/" "abc)"), Errc::protocol,
       "unterminated quoted string", 14},
      {"delimiter_two_chars", crlf(R"(* LIST () "ab" INBOX)"), Errc::protocol,
       "hierarchy delimiter must be one character", 10},
      {"nul_in_literal_mailbox", "* LIST () \"/\" {3}\r\na\0b\r\n"s, Errc::protocol,
       "NUL byte in literal mailbox", 14},
      {"literal8_for_mailbox", "* LIST () \"/\" ~{3}\r\nabc\r\n", Errc::protocol, "", {}},
      {"literal8_for_body", "* 1 FETCH (BODY[] ~{3}\r\nabc)\r\n", Errc::protocol,
       "expected nstring for BODY[]", 18},

      // Structure
      {"empty_line", "\r\n", Errc::protocol, "expected '*', '+' or a tag", 0},
      {"tagged_bye", crlf("a1 BYE x"), Errc::protocol, "expected OK, NO or BAD after tag", 3},
      {"tagged_unknown_condition", crlf("a1 MAYBE x"), Errc::protocol, "", 3},
      {"no_space_after_star", crlf("*OK x"), Errc::protocol, "expected SP after '*'", 1},
      {"fetch_unclosed", crlf("* 1 FETCH (UID 1"), Errc::protocol,
       "expected SP or ')' between FETCH items", 16},
      {"fetch_garbage_after", crlf("* 1 FETCH (UID 1) x"), Errc::protocol,
       "unexpected data after FETCH", 17},
      {"fetch_flags_unclosed", crlf(R"(* 1 FETCH (FLAGS (\Seen))"), Errc::protocol, "", {}},
      {"fetch_section_unclosed", crlf("* 1 FETCH (BODY[HEADER NIL)"), Errc::protocol,
       "unterminated section (expected ']')", 15},
      {"exists_trailing_garbage", crlf("* 3 EXISTS now"), Errc::protocol,
       "unexpected data after EXISTS", 10},
      {"literal_in_response_text", "* OK hello {3}\r\nabc\r\n", Errc::protocol,
       "unexpected literal in response text", 14},
      {"code_unclosed", crlf("* OK [ALERT hello"), Errc::protocol,
       "expected ']' to close response code ALERT", 17},
      {"status_missing_list", crlf("* STATUS INBOX"), Errc::protocol,
       "expected SP after STATUS mailbox", 14},
      // 10,000 nested parentheses in a BODYSTRUCTURE: a limit, not a stack overflow.
      {"nesting_10000", crlf("* 1 FETCH (BODYSTRUCTURE " + repeat("(", 10000) + ")"), Errc::limit,
       "lists nested deeper than 64", 64 + 3},  // windowed evidence: "..." + 64
      {"nesting_65",
       crlf("* 1 FETCH (BODYSTRUCTURE " + repeat("(", 65) + "NIL" + repeat(")", 65) + ")"),
       Errc::limit, "lists nested deeper than 64", 89},
      {"nesting_custom_limit", crlf("* 1 FETCH (X (((1))))"), Errc::limit,
       "lists nested deeper than 2", 15, Limits{.max_nesting = 2}},
      // iCloud: unescaped '"' inside the ENVELOPE Message-ID.
      {"icloud_unescaped_quote_in_envelope",
       crlf(R"(* 1 FETCH (UID 5 ENVELOPE (NIL "s" NIL NIL NIL NIL NIL NIL NIL "<a"b@c>")))"),
       Errc::protocol,
       "",
       {}},

      // Framing errors surface from the reader (reader_test.cc has the details).
      {"nul_in_quoted_via_reader", "* LIST () \"/\" \"a\0b\"\r\n"s, Errc::protocol,
       "NUL byte in line (stream offset 16)", 16},
      {"nul_in_atom_via_reader", "* LIST () \"/\" a\0b\r\n"s, Errc::protocol,
       "NUL byte in line (stream offset 15)", 15},
      {"non_synchronizing_literal_from_server", "* LIST () \"/\" {5+}\r\nhello\r\n", Errc::protocol,
       "non-synchronizing literal from server (stream offset 14)", 14},

      // Text taken whole is bounded by Limits::max_text: a server that lost a CRLF cannot hide
      // the responses after it on the same line (here with a limit of 16 bytes; the 10 MiB
      // case with the default limit is Parser.TenMebibyteTextHidesNoResponse).
      {"ok_text_over_limit", crlf("* OK 0123456789abcdef* 3 FETCH (UID 7 FLAGS (\\Seen))"),
       Errc::protocol, "response text of 47 bytes exceeds the limit of 16", 5,
       Limits{.max_text = 16}},
      {"ok_text_at_limit_then_tagged_text_over",
       crlf("* OK 0123456789abcdef") + crlf("a1 OK [READ-WRITE] 0123456789abcdefT5 OK done"),
       Errc::protocol, "response text of 26 bytes exceeds the limit of 16", 19,
       Limits{.max_text = 16}},
      {"continuation_text_over_limit", crlf("+ 0123456789abcdef* 3 EXISTS"), Errc::protocol,
       "response text of 26 bytes exceeds the limit of 16", 2, Limits{.max_text = 16}},
      {"unknown_response_over_limit", crlf("* XJUNK 0123456789* 3 EXISTS"), Errc::protocol,
       "unknown response of 26 bytes exceeds the limit of 16", 2, Limits{.max_text = 16}},
      {"unknown_message_data_over_limit", crlf("* 7 XJUNK 0123456789* 3 EXISTS"), Errc::protocol,
       "unknown response of 28 bytes exceeds the limit of 16", 2, Limits{.max_text = 16}},
      {"unknown_code_over_limit", crlf("* OK [XJUNK 0123456789* 3 FETCH (BODY[] NIL)"),
       Errc::protocol, "response code XJUNK of 32 bytes exceeds the limit of 16", 6,
       Limits{.max_text = 16}},
  };

  // An announced literal larger than the limit (up to 2^64) is refused before allocation
  // (CVE-2021-3657 class).
  for (const char* size :
       {"18446744073709551616", "9223372036854775808", "4294967296", "2147483648"}) {
    rows.push_back({fmt::format("huge_literal_{}", size),
                    fmt::format("* 1 FETCH (BODY[] {{{}}}\r\n", size), Errc::limit,
                    fmt::format("literal of {} bytes exceeds the limit of 268435456 (stream "
                                "offset 18)",
                                size),
                    18});
  }

  // Every number the parser reads, with each kind of bad value (negative, with a '+' sign, empty,
  // over its range, over 64 bits, zero where the grammar wants nonzero): '#' in the template is
  // replaced by the value; the error points at the value.
  struct NumberField {
    std::string name;
    std::string line;  // with '#'
    std::string what;
    std::string rule;
    bool check_empty = true;  // false where an empty value is not a number position
  };
  const std::vector<NumberField> fields = {
      {"exists", "* # EXISTS", "message number", "number", false},
      {"recent", "* # RECENT", "message number", "number", false},
      {"expunge", "* # EXPUNGE", "message number", "number", false},
      {"fetch_seq", "* # FETCH (UID 1)", "message number", "number", false},
      {"fetch_uid", "* 1 FETCH (UID #)", "UID", "nz-number"},
      {"fetch_modseq", "* 1 FETCH (MODSEQ (#))", "MODSEQ", "mod-sequence-value"},
      {"fetch_rfc822_size", "* 1 FETCH (RFC822.SIZE #)", "RFC822.SIZE", "number64"},
      {"fetch_origin", "* 1 FETCH (BODY[]<#> NIL)", "origin octet", "number"},
      {"literal_size", "* 1 FETCH (BODY[] {#}", "literal size", "number64"},
      {"code_uidvalidity", "* OK [UIDVALIDITY #] x", "UIDVALIDITY", "nz-number"},
      {"code_uidnext", "* OK [UIDNEXT #] x", "UIDNEXT", "nz-number"},
      {"code_unseen", "* OK [UNSEEN #] x", "UNSEEN", "nz-number"},
      {"code_highestmodseq", "* OK [HIGHESTMODSEQ #] x", "HIGHESTMODSEQ", "mod-sequence-value"},
      {"code_modified", "a1 NO [MODIFIED 1,#] x", "MODIFIED set", "nz-number"},
      {"appenduid_validity", "a1 OK [APPENDUID # 5] x", "APPENDUID uidvalidity", "nz-number"},
      {"appenduid_uid", "a1 OK [APPENDUID 1 4:#] x", "APPENDUID uid-set", "nz-number"},
      {"copyuid_validity", "a1 OK [COPYUID # 1 2] x", "COPYUID uidvalidity", "nz-number"},
      {"copyuid_source", "a1 OK [COPYUID 1 # 2] x", "COPYUID source uid-set", "nz-number"},
      {"copyuid_destination", "a1 OK [COPYUID 1 2 #] x", "COPYUID destination uid-set",
       "nz-number"},
      {"status_messages", "* STATUS INBOX (MESSAGES #)", "MESSAGES", "number"},
      {"status_recent", "* STATUS INBOX (RECENT #)", "RECENT", "number"},
      {"status_uidnext", "* STATUS INBOX (UIDNEXT #)", "UIDNEXT", "nz-number"},
      {"status_uidvalidity", "* STATUS INBOX (UIDVALIDITY #)", "UIDVALIDITY", "nz-number"},
      {"status_unseen", "* STATUS INBOX (UNSEEN #)", "UNSEEN", "number"},
      {"status_deleted", "* STATUS INBOX (DELETED #)", "DELETED", "number"},
      {"status_size", "* STATUS INBOX (SIZE #)", "SIZE", "number64"},
      {"status_highestmodseq", "* STATUS INBOX (HIGHESTMODSEQ #)", "HIGHESTMODSEQ",
       "mod-sequence-valzer"},
      // `* SEARCH 1 ` is a tolerated trailing space (Yahoo), so no empty row.
      {"search", "* SEARCH 1 #", "SEARCH", "nz-number", false},
      {"search_modseq", "* SEARCH 1 (MODSEQ #)", "MODSEQ", "mod-sequence-value"},
      {"esearch_min", "* ESEARCH UID MIN #", "MIN", "nz-number"},
      {"esearch_max", "* ESEARCH UID MAX #", "MAX", "nz-number"},
      {"esearch_count", "* ESEARCH UID COUNT #", "COUNT", "number"},
      {"esearch_all", "* ESEARCH UID ALL 1:3,#", "ESEARCH ALL", "nz-number"},
      {"esearch_modseq", "* ESEARCH UID MIN 1 MODSEQ #", "MODSEQ", "mod-sequence-value"},
      {"vanished", "* VANISHED #", "VANISHED UID", "nz-number"},
      {"vanished_range_end", "* VANISHED 1:#", "VANISHED UID", "nz-number"},
      {"vanished_earlier", "* VANISHED (EARLIER) 5,#", "VANISHED UID", "nz-number"},
  };
  for (const NumberField& f : fields) {
    const std::size_t at = f.line.find('#');
    const bool wide = f.rule.starts_with("mod-sequence") || f.rule == "number64";
    const std::uint64_t lo = f.rule == "nz-number" || f.rule == "mod-sequence-value" ? 1 : 0;
    const std::uint64_t hi = wide ? 9223372036854775807ull : 4294967295ull;
    auto line = [&](std::string_view value) {
      std::string out = f.line;
      out.replace(at, 1, value);
      return crlf(out);
    };
    auto range = [&](std::string_view value) {
      return fmt::format("{} {} out of range for {} ({}..{})", f.what, value, f.rule, lo, hi);
    };
    auto add = [&](std::string_view kind, std::string_view value, std::string message) {
      rows.push_back({fmt::format("number_{}_{}", f.name, kind), line(value), Errc::protocol,
                      std::move(message), at});
    };
    add("negative", "-135", range("-135"));
    add("negative_zero", "-0", range("-0"));
    add("plus", "+135", fmt::format("{} +135: no sign allowed in {}", f.what, f.rule));
    if (f.check_empty) add("empty", "", fmt::format("expected {} for {}", f.rule, f.what));
    if (f.name == "literal_size") continue;  // bigger sizes are the reader's (huge_literal_*)
    const std::string over = wide ? "9223372036854775808" : "4294967296";
    add("over_range", over, range(over));
    add("over_64_bits", "99999999999999999999", range("99999999999999999999"));
    if (lo == 1) add("zero", "0", range("0"));
  }
  return rows;
}

class ErrorRows : public testing::TestWithParam<ErrorRow> {};

TEST_P(ErrorRows, WholeAndByteByByte) {
  const ErrorRow& row = GetParam();
  const Outcome out = run_both(row.input, row.limits);
  const std::optional<Error> error = first_error(out);
  ASSERT_TRUE(error) << describe(out);
  EXPECT_EQ(error->code, row.code) << error->to_string();
  if (!row.message.empty()) {
    EXPECT_EQ(error->message, row.message);
  }
  if (row.offset) {
    EXPECT_TRUE(error->has_offset);
    EXPECT_EQ(error->offset, *row.offset) << error->to_string();
  }
  EXPECT_EQ(error->evidence.empty(), row.input == "\r\n");
}

INSTANTIATE_TEST_SUITE_P(Parser, ErrorRows, testing::ValuesIn(error_rows()),
                         [](const auto& info) { return info.param.name; });

// ---- single scenarios ----

// Error::to_string shows the message, the offset and the offending line.
TEST(Parser, ErrorCarriesEvidenceLineAndOffset) {
  Frame frame{"* 1 FETCH (UID 0)", {}, 0};
  const auto r = parse_response(std::move(frame));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().evidence, "* 1 FETCH (UID 0)");
  EXPECT_EQ(r.error().to_string(),
            "protocol error: UID 0 out of range for nz-number (1..4294967295) (at byte 15) in: "
            "* 1 FETCH (UID 0)");
}

// Dovecot CVE-2019-11500 class: the parser itself refuses NUL in a quoted string, even in a
// frame that did not come through the reader.
TEST(Parser, NulInQuotedStringFromRawFrame) {
  Frame frame{"* LIST () \"/\" \"a\0b\""s, {}, 0};
  const auto r = parse_response(std::move(frame));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "NUL byte in quoted string");
  EXPECT_EQ(r.error().offset, 16u);
}

// A hand-made frame whose literal does not match its announcement is an error, not a read past
// the end.
TEST(Parser, LiteralMismatchInRawFrame) {
  Frame frame{"* 1 FETCH (BODY[] {5}\r\n)", {"abc"}, 0};
  const auto r = parse_response(std::move(frame));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "literal data missing or of the wrong size");
  Frame none{"* 1 FETCH (BODY[] {5}\r\n)", {}, 0};
  EXPECT_FALSE(parse_response(std::move(none)).ok());
}

// The body is moved out of the frame: the string's buffer is the one the reader filled.
TEST(Parser, BodyLiteralIsMovedNotCopied) {
  Frame frame{"* 1 FETCH (BODY[] {4096}\r\n)", {std::string(4096, 'x')}, 0};
  const char* buffer = frame.literals[0].data();
  auto r = parse_response(std::move(frame));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const auto& body = std::get<FetchData>(r->data).bodies.at(0).data.value();
  EXPECT_EQ(body.data(), buffer);
}

// A long line's evidence is a window around the fault, so to_string still shows it.
TEST(Parser, LongLineEvidenceIsWindowed) {
  std::string line = "* 1 FETCH (X-LONG \"" + std::string(1000, 'a') + "\" UID 0)";
  Frame frame{line, {}, 0};
  const auto r = parse_response(std::move(frame));
  ASSERT_FALSE(r.ok());
  const Error& e = r.error();
  EXPECT_EQ(e.message, "UID 0 out of range for nz-number (1..4294967295)");
  EXPECT_LE(e.evidence.size(), 166u);
  EXPECT_EQ(e.evidence.substr(0, 3), "...");
  EXPECT_EQ(e.evidence.substr(e.offset, 1), "0");
  EXPECT_EQ(e.evidence.substr(e.offset - 4, 6), "UID 0)");
}

// A server that sends 10 MiB of text without CRLF, with the default limits: that is shorter than
// Limits::max_line, so the FETCH after it ends up on the same line; the parser must refuse the
// line, not return an OK whose text holds the FETCH.
TEST(Parser, TenMebibyteTextHidesNoResponse) {
  const std::string junk(10 << 20, 'x');
  for (const std::string& head : {"* OK "s, "* XJUNK "s, "a1 OK "s, "+ "s}) {
    Reader reader;
    ASSERT_TRUE(
        reader.feed(head + junk + "* 3 FETCH (UID 7 FLAGS (\\Seen))\r\na1 OK done\r\n").ok());
    auto frame = reader.next();
    ASSERT_TRUE(frame);
    const auto r = parse_response(std::move(*frame));
    ASSERT_FALSE(r.ok()) << head;
    const bool unknown = head == "* XJUNK ";
    const std::size_t at = unknown ? 2 : head.size();
    const std::size_t size = head.size() - at + junk.size() + 31;
    EXPECT_EQ(r.error().code, Errc::protocol);
    EXPECT_EQ(r.error().message, fmt::format("{} of {} bytes exceeds the limit of 65536",
                                             unknown ? "unknown response" : "response text", size));
    EXPECT_EQ(r.error().evidence.substr(0, head.size() + 3), head + "xxx");
    EXPECT_EQ(r.error().offset, at);
  }
}

// Literal longer than announced, the extra bytes forging a tagged OK (RFC 9051 §4.3: the size alone
// delimits a literal): the FETCH frame breaks, and the parse error is what the session acts on
// (closing the connection) before it could ever look at the forged line.
TEST(Parser, LiteralLongerThanAnnouncedBreaksTheFrame) {
  const Outcome out = run_both("* 1 FETCH (BODY[] {5}\r\nhello\r\na1 OK forged\r\n)\r\n");
  ASSERT_GE(out.results.size(), 1u);
  ASSERT_FALSE(out.results[0].ok());
  EXPECT_EQ(out.results[0].error().message, "expected SP or ')' between FETCH items");
}

// A literal cut short by EOF leaves the reader mid-frame, no response.
TEST(Parser, ShortLiteralThenEof) {
  const Outcome out = run_both("* 1 FETCH (BODY[] {10}\r\nhello");
  EXPECT_TRUE(out.results.empty());
  EXPECT_FALSE(out.reader_error);
  EXPECT_TRUE(out.mid_frame);
}

// LIST-STATUS (RFC 5819 §2): a \NoSelect mailbox, or one the server had trouble with, has a LIST
// line and no STATUS; each line parses on its own.
TEST(Parser, ListStatusWithMissingStatus) {
  const Outcome out = run_both(
      "* LIST () \"/\" INBOX\r\n"
      "* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 5 HIGHESTMODSEQ 6)\r\n"
      "* LIST (\\Noselect \\HasChildren) \"/\" Public\r\n"
      "* LIST () \"/\" Broken\r\n"
      "* STATUS Unlisted (MESSAGES 1)\r\n"
      "a1 OK LIST completed\r\n");
  ASSERT_EQ(out.results.size(), 6u);
  for (const auto& r : out.results) ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(std::get<ListData>(out.results[0]->data).mailbox, "INBOX");
  EXPECT_EQ(std::get<StatusData>(out.results[1]->data).highestmodseq, 6u);
  EXPECT_EQ(std::get<ListData>(out.results[2]->data).attributes,
            (std::vector<std::string>{"\\Noselect", "\\HasChildren"}));
  EXPECT_EQ(std::get<ListData>(out.results[3]->data).mailbox, "Broken");
  EXPECT_EQ(std::get<StatusData>(out.results[4]->data).mailbox, "Unlisted");
}

// A dialogue: greeting, capability, select responses and the tagged OK, in one stream.
TEST(Parser, SelectDialogueStream) {
  const std::string stream =
      "* OK [CAPABILITY IMAP4rev1 CONDSTORE QRESYNC] ready\r\n"
      "* 172 EXISTS\r\n"
      "* 1 RECENT\r\n"
      "* OK [UNSEEN 12] Message 12 is first unseen\r\n"
      "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
      "* OK [UIDNEXT 4392] Predicted next UID\r\n"
      "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
      "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
      "* OK [HIGHESTMODSEQ 715194045007]\r\n"
      "* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n"
      "* 49 FETCH (UID 117 FLAGS (\\Seen \\Answered) MODSEQ (90060115194045001))\r\n"
      "A142 OK [READ-WRITE] SELECT completed\r\n";
  const Outcome out = run_both(stream);
  ASSERT_EQ(out.results.size(), 12u);
  for (const auto& r : out.results) ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(std::get<ExistsData>(out.results[1]->data).count, 172u);
  EXPECT_EQ(std::get<StatusResponse>(out.results[5]->data).code.number, 4392u);
  EXPECT_EQ(std::get<VanishedData>(out.results[9]->data).uids.size(), 1u + 74 + 1 + 92 + 327);
  EXPECT_EQ(std::get<FetchData>(out.results[10]->data).modseq, 90060115194045001u);
  EXPECT_TRUE(out.results[11]->is_tagged());
  EXPECT_FALSE(out.mid_frame);
}

}  // namespace
}  // namespace twinbox::imap
