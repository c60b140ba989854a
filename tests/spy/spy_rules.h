// What imap_spy knows: the capabilities a server advertised, and which of them a client command
// needs. Header-only, for the spy and its unit test (spy_rules_test.cc).
//
// A command is given as one logical line: its physical lines joined, each literal's octets
// replaced by "\x01" after its "{n}" announcement.
#pragma once

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace twinbox::spy {

inline std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// "{n}", "{n+}" or "~{n}" at the end of a physical line: the literal's size.
inline std::optional<unsigned long long> trailing_literal(const std::string& line) {
  if (line.empty() || line.back() != '}') return std::nullopt;
  const auto open = line.rfind('{');
  if (open == std::string::npos) return std::nullopt;
  std::string digits = line.substr(open + 1, line.size() - open - 2);
  if (!digits.empty() && digits.back() == '+') digits.pop_back();
  if (digits.empty() || digits.size() > 12 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoull(digits);
}

// A line for the report: control characters shown as '.', cut at 300 characters.
inline std::string shown(const std::string& line) {
  std::string out;
  for (char c : line.substr(0, 300)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '.' : c;
  }
  return line.size() > 300 ? out + "..." : out;
}

class Capabilities {
 public:
  // Takes the capabilities from a server line if it announces them; true if it did.
  bool learn(const std::string& line) {
    const std::string u = upper(line);
    std::string list;
    if (auto at = u.find("[CAPABILITY "); at != std::string::npos) {
      const auto end = u.find(']', at);
      if (end == std::string::npos) return false;
      list = u.substr(at + 12, end - at - 12);
    } else if (u.rfind("* CAPABILITY ", 0) == 0) {
      list = u.substr(13);
    } else {
      return false;
    }
    names_.clear();
    std::istringstream words(list);
    for (std::string word; words >> word;) names_.insert(word);
    return true;
  }
  bool known() const { return !names_.empty(); }
  bool has(const std::string& name) const {
    if (names_.count(name)) return true;
    // RFC 7162 §3.2.3: QRESYNC implies CONDSTORE. RFC 7888: LITERAL+ includes LITERAL-.
    if (name == "CONDSTORE") return names_.count("QRESYNC") > 0;
    if (name == "LITERAL-") return names_.count("LITERAL+") > 0;
    return false;
  }
  std::string text() const {
    std::string out;
    for (const auto& n : names_) out += (out.empty() ? "" : " ") + n;
    return out;
  }

 private:
  std::set<std::string> names_;
};

class Judge {
 public:
  // The capabilities `line` needs that `caps` lacks, each as "NAME (why)".
  std::vector<std::string> check(const std::string& line, const Capabilities& caps) const {
    std::vector<std::string> out;
    std::set<std::string> missing;  // one violation per capability, the first reason
    const auto need = [&](const std::string& name, const std::string& why) {
      if (!caps.has(name) && missing.insert(name).second) out.push_back(name + " (" + why + ")");
    };
    const std::string u = upper(without_quoted(line));
    std::vector<std::string> words;
    {
      std::istringstream in(u);
      for (std::string w; in >> w;) words.push_back(w);
    }
    if (words.empty()) return out;
    if (words.size() == 1 && words[0] == "DONE") {
      need("IDLE", "DONE");
      return out;
    }
    if (words.size() < 2) return out;
    std::string command = words[1];
    std::size_t args = 2;
    if (command == "UID" && words.size() > 2) {
      command += " " + words[2];
      args = 3;
    }
    const auto has_word = [&](const std::string& w) {
      return std::find(words.begin() + static_cast<long>(args), words.end(), w) != words.end();
    };
    const auto contains = [&](const std::string& text) {
      return u.find(text) != std::string::npos;
    };
    if (command == "ENABLE") {
      need("ENABLE", "ENABLE");
      for (std::size_t i = args; i < words.size(); ++i) need(words[i], "ENABLE " + words[i]);
    }
    if (command == "IDLE") need("IDLE", "IDLE");
    if (command == "NOTIFY") need("NOTIFY", "NOTIFY");
    if (command == "UNSELECT") need("UNSELECT", "UNSELECT");
    if (command == "COMPRESS") need("COMPRESS=DEFLATE", "COMPRESS");
    if (command == "ID") need("ID", "ID");
    if (command == "NAMESPACE") need("NAMESPACE", "NAMESPACE");
    if (command == "MOVE" || command == "UID MOVE") need("MOVE", command);
    if (command == "UID EXPUNGE") need("UIDPLUS", "UID EXPUNGE");
    if ((command == "SEARCH" || command == "UID SEARCH") && has_word("RETURN")) {
      need("ESEARCH", "SEARCH RETURN");
    }
    if (command == "LIST") {
      if (words.size() > args && words[args][0] == '(') need("LIST-EXTENDED", "LIST (options)");
      if (has_word("RETURN")) need("LIST-EXTENDED", "LIST RETURN");
      if (contains(" STATUS (")) need("LIST-STATUS", "LIST RETURN (STATUS)");
    }
    if (command == "APPEND") {
      // More than one message literal in one APPEND (the mailbox name may be a literal too).
      std::size_t literals = static_cast<std::size_t>(std::count(u.begin(), u.end(), '\x01'));
      if (words.size() > args && words[args].find('{') == 0) --literals;
      if (literals > 1) need("MULTIAPPEND", "APPEND of several messages");
    }
    if (command == "AUTHENTICATE" && words.size() > args + 1) need("SASL-IR", "initial response");
    if (command == "STARTTLS") need("STARTTLS", "STARTTLS");
    if (contains("CHANGEDSINCE")) need("CONDSTORE", "CHANGEDSINCE");  // and UNCHANGEDSINCE
    if (contains("MODSEQ")) need("CONDSTORE", "MODSEQ");              // and HIGHESTMODSEQ
    if (contains("(CONDSTORE")) need("CONDSTORE", "(CONDSTORE)");
    if (contains("QRESYNC")) need("QRESYNC", "QRESYNC");
    if (contains("VANISHED")) need("QRESYNC", "VANISHED");
    if (contains("BINARY[") || contains("BINARY.PEEK") || contains("~{")) need("BINARY", "BINARY");
    if (contains("+}")) {
      // Non-synchronizing literals: LITERAL+, or LITERAL- up to 4096 octets (RFC 7888).
      bool small = true;
      for (std::size_t at = u.find('{'); at != std::string::npos; at = u.find('{', at + 1)) {
        const auto end = u.find("+}", at);
        if (end == std::string::npos) break;
        const std::string digits = u.substr(at + 1, end - at - 1);
        if (!digits.empty() && std::all_of(digits.begin(), digits.end(), ::isdigit) &&
            (digits.size() > 6 || std::stoul(digits) > 4096)) {
          small = false;
        }
      }
      need(small ? "LITERAL-" : "LITERAL+", "{n+}");
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

 private:
  // Quoted strings (mailbox names, dates) emptied, so that their text is not read as syntax.
  static std::string without_quoted(const std::string& line) {
    std::string out;
    bool quoted = false, escaped = false;
    for (char c : line) {
      if (quoted) {
        if (escaped) {
          escaped = false;
        } else if (c == '\\') {
          escaped = true;
        } else if (c == '"') {
          quoted = false;
          out += c;
        }
        continue;
      }
      if (c == '"') quoted = true;
      out += c;
    }
    return out;
  }
};

}  // namespace twinbox::spy
