#include "config/ini.h"

#include <gtest/gtest.h>

#include <string>

namespace twinbox::config {
namespace {

// The value of `key` in `section`, or "<absent>".
std::string value_of(const IniFile& ini, std::string_view section, std::string_view key) {
  const IniSection* s = ini.find(section);
  if (s == nullptr) return "<no section>";
  const IniEntry* e = s->find(key);
  return e == nullptr ? "<absent>" : e->value;
}

IniFile parse_ok(std::string_view text) {
  auto r = parse_ini(text, "config");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? std::move(r).value() : IniFile{};
}

struct ValueCase {
  const char* scenario;
  const char* text;
  const char* section;
  const char* key;
  const char* value;
};

class IniValueTest : public ::testing::TestWithParam<ValueCase> {};

TEST_P(IniValueTest, ReadsAsConfigTinyDoes) {
  const ValueCase& c = GetParam();
  SCOPED_TRACE(c.scenario);
  EXPECT_EQ(value_of(parse_ok(c.text), c.section, c.key), c.value);
}

INSTANTIATE_TEST_SUITE_P(
    Rules, IniValueTest,
    ::testing::Values(
        ValueCase{"keys before any section go to the default section", "a = 1\n[s]\nb = 2\n", "_",
                  "a", "1"},
        ValueCase{"keys after a header go to that section", "a = 1\n[s]\nb = 2\n", "s", "b", "2"},
        ValueCase{"key and value are trimmed", "  \t key \t=\t  some value \t \n", "_", "key",
                  "some value"},
        ValueCase{"split at the first '='", "k = a=b = c\n", "_", "k", "a=b = c"},
        ValueCase{"an empty value is allowed", "k =\n", "_", "k", ""},
        ValueCase{"no spaces around '=' needed", "k=v\n", "_", "k", "v"},
        ValueCase{"inline comment needs a space on both sides of ';'", "k = a ; b\n", "_", "k",
                  "a"},
        ValueCase{"p#ss;word ;x is kept whole", "password = p#ss;word ;x\n", "_", "password",
                  "p#ss;word ;x"},
        ValueCase{"'; ' without a space before is kept", "k = a; b\n", "_", "k", "a; b"},
        ValueCase{"' ;' at the end is kept", "k = a ;\n", "_", "k", "a ;"},
        ValueCase{"' ; ' needs one more character to be a comment", "k = a ; \n", "_", "k", "a ;"},
        ValueCase{"tabs count as spaces around ';'", "k = a\t;\tb\n", "_", "k", "a"},
        ValueCase{"the first ' ; ' starts the comment", "k = a;b ; c ; d\n", "_", "k", "a;b"},
        ValueCase{"'#' inside a value is kept", "k = a # b\n", "_", "k", "a # b"},
        ValueCase{"no quoting: quotes are part of the value", "k = \"a b\"\n", "_", "k", "\"a b\""},
        ValueCase{"keys are case-sensitive (upper)", "STARTTLS = YES\nstarttls = NO\n", "_",
                  "STARTTLS", "YES"},
        ValueCase{"keys are case-sensitive (lower)", "STARTTLS = YES\nstarttls = NO\n", "_",
                  "starttls", "NO"},
        ValueCase{"indented lines are ordinary lines", "[s]\na = 1\n    b = 2\n", "s", "b", "2"},
        ValueCase{"a duplicate key keeps its last value", "k = 1\nk = 2\n", "_", "k", "2"},
        ValueCase{"spaces inside a header are trimmed", "  [  local  ]  \nk = v\n", "local", "k",
                  "v"},
        ValueCase{"a header takes everything to the last ']'", "[a]]\nk = v\n", "a]", "k", "v"},
        ValueCase{"a header may carry an inline comment", "[s] ; the section\nk = v\n", "s", "k",
                  "v"},
        ValueCase{"[_] reopens the default section", "[s]\n[_]\nk = v\n", "_", "k", "v"},
        ValueCase{"a repeated section is merged", "[s]\na = 1\n[t]\n[s]\nb = 2\n", "s", "a", "1"},
        ValueCase{"section names are case-sensitive", "[Local]\nk = v\n", "local", "k",
                  "<no section>"},
        ValueCase{"a '[' without ']' is a key", "[local = x\n", "_", "[local", "x"},
        ValueCase{"CRLF line ends", "a = 1\r\nb = 2\r\n", "_", "b", "2"},
        ValueCase{"CR line ends", "a = 1\rb = 2\r", "_", "b", "2"},
        ValueCase{"a UTF-8 byte-order mark is skipped",
                  "\xEF\xBB\xBF"
                  "a = 1\n",
                  "_", "a", "1"},
        ValueCase{"no final newline needed", "a = 1", "_", "a", "1"},
        ValueCase{"comment lines with ';' are skipped", "; k = 1\n", "_", "k", "<no section>"},
        ValueCase{"indented comments are skipped", "   # k = 1\nj = 2\n", "_", "k", "<absent>"}));

TEST(IniTest, NoLineLengthLimit) {
  // inih truncates at 200 bytes; Config::Tiny has no limit.
  const std::string pins(500, 'a');
  const IniFile ini = parse_ok("[remote]\nSSL_fingerprint = " + pins + "\n");
  EXPECT_EQ(value_of(ini, "remote", "SSL_fingerprint"), pins);
}

TEST(IniTest, KeepsLineNumbersAndPositions) {
  const IniFile ini = parse_ok("# comment\n\n[remote]\n  host = example.net ; pinned\n");
  const IniEntry* e = ini.find("remote")->find("host");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->line, 4);
  EXPECT_EQ(e->text, "  host = example.net ; pinned");
  EXPECT_EQ(e->key_pos, 2u);
  EXPECT_EQ(e->value_pos, 9u);
  EXPECT_EQ(ini.find("remote")->line, 3);
}

TEST(IniTest, LineNumbersFollowConfigTinyLineBreaks) {
  // CR CR LF is one line break; CR CR CR LF is two (a lone CR, then CR CR LF).
  const IniFile ini = parse_ok("a = 1\r\r\nb = 2\r\r\r\nc = 3\n");
  EXPECT_EQ(ini.find("_")->find("b")->line, 2);
  EXPECT_EQ(ini.find("_")->find("c")->line, 4);
}

TEST(IniTest, DuplicateKeyRemembersTheOverriddenLine) {
  const IniFile ini = parse_ok("[s]\nk = 1\nother = x\nk = 2\n");
  const IniSection* s = ini.find("s");
  ASSERT_EQ(s->entries.size(), 2u);
  EXPECT_EQ(s->entries[0].key, "k");  // keeps the place of the first assignment
  EXPECT_EQ(s->entries[0].value, "2");
  EXPECT_EQ(s->entries[0].line, 4);
  EXPECT_EQ(s->entries[0].overridden_line, 2);
}

TEST(IniTest, SectionsWithoutKeysExist) {
  const IniFile ini = parse_ok("[local]\n[remote]\n");
  ASSERT_EQ(ini.sections.size(), 2u);
  EXPECT_EQ(ini.sections[0].name, "local");
  EXPECT_EQ(ini.sections[1].name, "remote");
  EXPECT_EQ(ini.find("_"), nullptr);
}

TEST(IniTest, BlankAndWhitespaceOnlyLinesAreIgnored) {
  const IniFile ini = parse_ok("\n   \n\t\n\v\f\na = 1\n");
  EXPECT_EQ(value_of(ini, "_", "a"), "1");
}

struct ErrorCase {
  const char* scenario;
  const char* text;
  const char* message;
};

class IniErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(IniErrorTest, ReportsFileLineAndCaret) {
  const ErrorCase& c = GetParam();
  SCOPED_TRACE(c.scenario);
  auto r = parse_ini(c.text, "config");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::config);
  EXPECT_EQ(r.error().message, c.message);
}

INSTANTIATE_TEST_SUITE_P(
    Errors, IniErrorTest,
    ::testing::Values(
        ErrorCase{"a line without '='", "[local]\n  just words\n",
                  "config:2: syntax error: expected 'key = value', '[section]' or a comment\n"
                  "  just words\n"
                  "  ^~~~~~~~~~"},
        ErrorCase{"an inline comment does not hide the error", "a = 1\nfoo ; bar\n",
                  "config:2: syntax error: expected 'key = value', '[section]' or a comment\n"
                  "foo ; bar\n"
                  "^~~"},
        ErrorCase{"an empty header", "[]\n",
                  "config:1: syntax error: expected 'key = value', '[section]' or a comment\n"
                  "[]\n"
                  "^~"},
        ErrorCase{"a blank section name", "[ ]\n",
                  "config:1: empty section name\n"
                  "[ ]\n"
                  "^~~"},
        ErrorCase{"a missing key", "  = value\n",
                  "config:1: syntax error: missing key before '='\n"
                  "  = value\n"
                  "  ^"},
        ErrorCase{"a tab before the fault keeps the caret aligned", "\tno equals\n",
                  "config:1: syntax error: expected 'key = value', '[section]' or a comment\n"
                  "\tno equals\n"
                  "\t^~~~~~~~~"},
        ErrorCase{"control bytes are escaped", "a\x01 b\n",
                  "config:1: syntax error: expected 'key = value', '[section]' or a comment\n"
                  "a\\x01 b\n"
                  "^~~~~~~"}));

TEST(DiagnosticTest, WithoutLine) {
  EXPECT_EQ(diagnostic("config", 0, "no [remote] section"), "config: no [remote] section");
}

TEST(DiagnosticTest, CaretAtEndOfLine) {
  EXPECT_EQ(diagnostic("f", 3, "empty", "host =", 6, 1), "f:3: empty\nhost =\n      ^");
}

TEST(DiagnosticTest, Utf8TakesOneColumnPerCharacter) {
  EXPECT_EQ(diagnostic("f", 1, "m", "h\xC3\xA9llo = x", 8, 1),
            "f:1: m\nh\xC3\xA9llo = x\n       ^");
}

TEST(DiagnosticTest, LongLinesAreCutAroundTheFault) {
  const std::string line =
      "SSL_fingerprint = " + std::string(300, 'a') + "Z" + std::string(200, 'b');
  const std::size_t pos = line.find('Z');
  const std::string d = diagnostic("f", 9, "bad", line, pos, 1);
  const std::string shown = "..." + line.substr(pos - 40, 110) + "...";
  EXPECT_EQ(d, "f:9: bad\n" + shown + "\n" + std::string(43, ' ') + "^");
}

}  // namespace
}  // namespace twinbox::config
