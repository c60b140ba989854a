// A reader for the INI dialect of Perl's Config::Tiny 2.28, which InterIMAP uses.
//
// twinbox must accept every configuration file InterIMAP accepts and read it the same way, so
// this follows Config::Tiny's rules, quirks included (as read in Config::Tiny 2.28's read_string):
//   * lines end at CRLF, CR CR LF, a lone CR or a lone LF (each counts as one line);
//   * lines matching ^\s*[#;] and blank lines are ignored;
//   * then the first occurrence of \s;\s.+$ is cut off (an inline comment), so
//     `k = a ; b` gives "a" while `k = p#ss;word ;x` and `k = a ;` are kept whole;
//   * `[name]` (surrounding spaces allowed) starts a section; `[_]` is the default section,
//     which also holds every key written before the first section header;
//   * `key = value` is split at the first '='; key and value are trimmed; the value may be empty;
//   * keys and section names are case-sensitive, indented lines are ordinary lines, there is no
//     quoting, no continuation and no line-length limit;
//   * anything else is a syntax error.
// A section may appear several times; its keys are merged. A key repeated within a section keeps
// its last value, as in Config::Tiny (the earlier line is remembered so callers can warn).
// \s is Perl's ASCII whitespace: space, \t, \n, \v, \f, \r.
//
// Deliberate differences, all on input Config::Tiny accepts only to produce nonsense:
//   * a leading UTF-8 byte-order mark is skipped (Config::Tiny would make it part of the first
//   key);
//   * a key made only of blanks (`  = x`) and an all-blank section name (`[ ]`) are syntax errors
//     (Config::Tiny names them " ").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace twinbox::config {

inline constexpr std::string_view kDefaultSection = "_";

struct IniEntry {
  std::string key;
  std::string value;
  int line = 0;               // 1-based line number of the (last) assignment
  std::string text;           // that source line as written, for diagnostics
  std::size_t key_pos = 0;    // byte offset of `key` in `text`
  std::size_t value_pos = 0;  // byte offset of `value` in `text`
  int overridden_line = 0;    // line of an earlier assignment of the same key, 0 if none
};

struct IniSection {
  std::string name;
  int line = 0;                   // line of the first header, 0 for an implicit default section
  std::string text;               // that header line as written
  std::vector<IniEntry> entries;  // in order of first assignment

  const IniEntry* find(std::string_view key) const;
};

struct IniFile {
  std::vector<IniSection> sections;  // in order of first appearance

  const IniSection* find(std::string_view name) const;
};

// Parses `text`. Errors are Errc::config with a diagnostic() message naming `file_name`; a
// faulty line that mentions "pass" is shown only up to its first word, as it may hold a secret.
Result<IniFile> parse_ini(std::string_view text, const std::string& file_name);

// A ninja-style diagnostic:
//   file:line: message
//   <the line>
//   <caret under bytes [pos, pos+len) of the line>
// Control bytes in the line are escaped and long lines are cut to a window around the caret.
// `line` 0 gives "file: message" alone.
std::string diagnostic(std::string_view file_name, int line, std::string_view message,
                       std::string_view text = {}, std::size_t pos = 0, std::size_t len = 1);

// Perl's \s on byte strings.
inline bool is_perl_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

}  // namespace twinbox::config
