#include "config/ini.h"

#include <algorithm>

#include <fmt/format.h>

namespace twinbox::config {

namespace {

std::size_t skip_spaces(std::string_view s, std::size_t pos) {
  while (pos < s.size() && is_perl_space(s[pos])) ++pos;
  return pos;
}

// One past the last non-space byte of s[0, end).
std::size_t trim_end(std::string_view s, std::size_t begin, std::size_t end) {
  while (end > begin && is_perl_space(s[end - 1])) --end;
  return end;
}

// Config::Tiny splits on /(?:\015{1,2}\012|\015|\012)/: CRLF, CR CR LF, CR or LF end a line.
std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t eol = 0;
    if (text[i] == '\n') {
      eol = 1;
    } else if (text[i] == '\r') {
      if (i + 1 < text.size() && text[i + 1] == '\n') {
        eol = 2;
      } else if (i + 2 < text.size() && text[i + 1] == '\r' && text[i + 2] == '\n') {
        eol = 3;
      } else {
        eol = 1;
      }
    }
    if (eol == 0) {
      ++i;
      continue;
    }
    lines.push_back(text.substr(start, i - start));
    i += eol;
    start = i;
  }
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

// Length of `line` once Config::Tiny's s/\s\;\s.+$// has run: the first whitespace, ';',
// whitespace triple followed by at least one more byte starts the comment.
std::size_t strip_inline_comment(std::string_view line) {
  for (std::size_t i = 0; i + 3 < line.size(); ++i) {
    if (is_perl_space(line[i]) && line[i + 1] == ';' && is_perl_space(line[i + 2])) return i;
  }
  return line.size();
}

IniSection& section_named(IniFile& file, std::string_view name) {
  for (auto& s : file.sections) {
    if (s.name == name) return s;
  }
  file.sections.push_back(IniSection{std::string(name), 0, {}, {}});
  return file.sections.back();
}

bool is_utf8_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

bool mentions_password(std::string_view line) {
  std::string lower(line);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower.find("pass") != std::string::npos;
}

}  // namespace

const IniEntry* IniSection::find(std::string_view key) const {
  for (const auto& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

const IniSection* IniFile::find(std::string_view name) const {
  for (const auto& s : sections) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

Result<IniFile> parse_ini(std::string_view text, const std::string& file_name) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  IniFile file;
  IniSection* current = nullptr;  // nullptr: the default section, created on first use
  int number = 0;
  for (std::string_view line : split_lines(text)) {
    ++number;
    const std::size_t first = skip_spaces(line, 0);
    if (first == line.size() || line[first] == '#' || line[first] == ';') continue;

    const std::size_t end = trim_end(line, first, strip_inline_comment(line));

    // Section header: /^\s*\[\s*(.+?)\s*\]\s*$/.
    if (line[first] == '[' && end - first >= 3 && line[end - 1] == ']') {
      const std::size_t name_begin = skip_spaces(line.substr(0, end - 1), first + 1);
      const std::size_t name_end = trim_end(line, name_begin, end - 1);
      if (name_begin == name_end) {
        return Error(Errc::config,
                     diagnostic(file_name, number, "empty section name", line, first, end - first));
      }
      current = &section_named(file, line.substr(name_begin, name_end - name_begin));
      if (current->line == 0) {
        current->line = number;
        current->text = std::string(line);
      }
      continue;
    }

    // Property: /^\s*([^=]+?)\s*=\s*(.*?)\s*$/.
    const std::size_t eq = line.substr(0, end).find('=');
    if (eq == std::string_view::npos) {
      // `password hunter2` may hold a secret: show only the first word of such a line.
      std::string shown(line);
      std::size_t len = end - first;
      if (mentions_password(line)) {
        std::size_t word_end = first;
        while (word_end < end && !is_perl_space(line[word_end])) ++word_end;
        shown = std::string(line.substr(0, word_end)) + (word_end < end ? " <redacted>" : "");
        len = word_end - first;
      }
      return Error(Errc::config,
                   diagnostic(file_name, number,
                              "syntax error: expected 'key = value', '[section]' or a comment",
                              shown, first, len));
    }
    const std::size_t key_end = trim_end(line, first, eq);
    if (key_end == first) {
      return Error(Errc::config,
                   diagnostic(file_name, number, "syntax error: missing key before '='", line, eq));
    }
    const std::size_t value_begin = std::min(skip_spaces(line, eq + 1), end);
    const std::size_t value_end = trim_end(line, value_begin, end);

    if (current == nullptr) current = &section_named(file, kDefaultSection);
    IniEntry entry;
    entry.key = std::string(line.substr(first, key_end - first));
    entry.value = std::string(line.substr(value_begin, value_end - value_begin));
    entry.line = number;
    entry.text = std::string(line);
    entry.key_pos = first;
    entry.value_pos = value_begin;
    auto it = std::find_if(current->entries.begin(), current->entries.end(),
                           [&](const IniEntry& e) { return e.key == entry.key; });
    if (it == current->entries.end()) {
      current->entries.push_back(std::move(entry));
    } else {
      entry.overridden_line = it->line;  // last wins, as in Config::Tiny
      *it = std::move(entry);
    }
  }
  return file;
}

std::string diagnostic(std::string_view file_name, int line, std::string_view message,
                       std::string_view text, std::size_t pos, std::size_t len) {
  std::string out = line > 0 ? fmt::format("{}:{}: {}", file_name, line, message)
                             : fmt::format("{}: {}", file_name, message);
  if (line <= 0) return out;

  // Cut long lines (a row of SSL_fingerprint pins) to a window around the fault.
  constexpr std::size_t kWindow = 110;
  pos = std::min(pos, text.size());
  len = std::max<std::size_t>(len, 1);
  std::size_t begin = 0;
  std::size_t end = text.size();
  if (text.size() > kWindow + 10) {
    begin = pos > 40 ? pos - 40 : 0;
    while (begin > 0 && begin < text.size() &&
           is_utf8_continuation(static_cast<unsigned char>(text[begin]))) {
      --begin;
    }
    end = std::min(text.size(), begin + kWindow);
    while (end < text.size() && is_utf8_continuation(static_cast<unsigned char>(text[end]))) {
      ++end;
    }
  }
  const std::string_view lead = begin > 0 ? "..." : "";
  std::string shown(lead);
  std::string caret(lead.size(), ' ');
  const std::size_t mark_end = std::min(pos + len, end);
  bool marked = false;
  for (std::size_t i = begin; i < end; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::string piece;
    if (c == '\t') {
      piece = "\t";
    } else if (c < 0x20 || c == 0x7f) {
      piece = fmt::format("\\x{:02x}", c);
    } else {
      piece = std::string(1, static_cast<char>(c));
    }
    shown += piece;
    // Columns: a tab stays a tab so the caret lines up; UTF-8 continuation bytes take none.
    const std::size_t width = is_utf8_continuation(c) ? 0 : (c == '\t' ? 1 : piece.size());
    if (i < pos) {
      caret += c == '\t' ? std::string("\t") : std::string(width, ' ');
    } else if (i < mark_end) {
      for (std::size_t w = 0; w < width; ++w) {
        caret += marked ? '~' : '^';
        marked = true;
      }
    }
  }
  if (end < text.size()) shown += "...";
  if (!marked) caret += '^';  // the fault is at the end of the line
  out += '\n';
  out += shown;
  out += '\n';
  out += caret;
  return out;
}

}  // namespace twinbox::config
