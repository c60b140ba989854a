#include "sync/sync_harness.h"

#include <sqlite3.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <openssl/evp.h>

#ifndef TWINBOX_BINARY_DEFAULT
#error "TWINBOX_BINARY_DEFAULT must name the twinbox binary (set by CMake)"
#endif

namespace twinbox::sync_tests {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

bool keep_lab() {
  const char* keep = std::getenv("TWINBOX_KEEP_LAB");
  return keep != nullptr && std::string_view(keep) == "1";
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

std::vector<std::string> split_words(std::string_view s) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) words.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return words;
}

std::string tail(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  return fmt::format("[... {} bytes before ...]\n{}", text.size() - max,
                     text.substr(text.size() - max));
}

std::string shell_quote(std::string_view s) {
  bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("_-./=:,+@", c) != nullptr;
  });
  if (plain) return std::string(s);
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += shell_quote(a);
  }
  return out;
}

template <class T>
T parse_unsigned(std::string_view s, std::string_view what) {
  T value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    fail(fmt::format("doveadm gave a bad {}: \"{}\"", what, s));
  }
  return value;
}

// --- doveadm -f json output: an array of flat objects whose values are strings --------------

using JsonRow = std::map<std::string, std::string>;

class JsonRows {
 public:
  explicit JsonRows(std::string_view text) : s_(text) {}

  std::vector<JsonRow> parse() {
    std::vector<JsonRow> rows;
    skip_space();
    if (at_end()) return rows;  // no output at all: nothing matched
    expect('[');
    skip_space();
    if (peek() == ']') return rows;
    for (;;) {
      rows.push_back(object());
      skip_space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect(']');
      return rows;
    }
  }

 private:
  JsonRow object() {
    JsonRow row;
    skip_space();
    expect('{');
    skip_space();
    if (peek() == '}') {
      ++i_;
      return row;
    }
    for (;;) {
      skip_space();
      std::string key = string();
      skip_space();
      expect(':');
      skip_space();
      row[key] = peek() == '"' ? string() : bare();
      skip_space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}');
      return row;
    }
  }

  std::string bare() {  // numbers, true, false, null: kept as written
    std::size_t start = i_;
    while (!at_end() && std::strchr(",}] \t\r\n", s_[i_]) == nullptr) ++i_;
    return std::string(s_.substr(start, i_ - start));
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (at_end()) error("unterminated string");
      char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) error("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.substr(i_, 2) == "\\u") {
            i_ += 2;
            std::uint32_t low = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8(cp, out);
          break;
        }
        default:
          error("bad escape");
      }
    }
  }

  std::uint32_t hex4() {
    if (i_ + 4 > s_.size()) error("short \\u escape");
    std::uint32_t v = 0;
    auto [end, ec] = std::from_chars(s_.data() + i_, s_.data() + i_ + 4, v, 16);
    if (ec != std::errc() || end != s_.data() + i_ + 4) error("bad \\u escape");
    i_ += 4;
    return v;
  }

  static void utf8(std::uint32_t cp, std::string& out) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[i_]; }
  void skip_space() {
    while (!at_end() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    if (peek() != c) error(fmt::format("expected '{}'", c));
    ++i_;
  }
  [[noreturn]] void error(const std::string& what) const {
    fail(fmt::format("cannot parse doveadm's JSON at byte {}: {} (near \"{}\")", i_, what,
                     s_.substr(i_ > 20 ? i_ - 20 : 0, 60)));
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

const std::string& field(const JsonRow& row, const char* key) {
  auto it = row.find(key);
  if (it == row.end()) fail(fmt::format("doveadm output has no \"{}\" field", key));
  return it->second;
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    fail("EVP_Digest(sha256) failed");
  }
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

std::string normalise_name(std::string_view name, char separator) {
  std::string out(name);
  if (separator != '/') std::replace(out.begin(), out.end(), separator, '/');
  return out;
}

bool tracing() {
  static const bool on = [] {
    const char* v = std::getenv("TWINBOX_SYNC_TRACE");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return on;
}

// With TWINBOX_SYNC_TRACE=1, every command the harness runs is shown with its duration.
class Trace {
 public:
  explicit Trace(std::function<std::string()> what)
      : what_(tracing() ? what() : std::string()), start_(Clock::now()) {}
  ~Trace() {
    if (!tracing()) return;
    auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - start_).count();
    std::cerr << fmt::format("[sync-harness {:5} ms] {}\n", ms, what_);
  }

 private:
  std::string what_;
  Clock::time_point start_;
};

dovecot::CommandResult checked_doveadm(const dovecot::DovecotLab& lab,
                                       const std::vector<std::string>& args,
                                       std::string_view input = {}) {
  Trace trace([&] { return fmt::format("{}: doveadm {}", lab.dir(), join_command(args)); });
  // What `lab doveadm` does, without its ~50 ms of bash: doveadm -c CONF as the lab user.
  const char* doveadm_env = std::getenv("TWINBOX_LAB_DOVEADM");
  std::vector<std::string> argv = {
      "/usr/bin/env",
      "USER=" + lab.user(),
      fmt::format("HOME={}/home/{}", lab.dir(), lab.user()),
      doveadm_env != nullptr && *doveadm_env != '\0' ? doveadm_env : "/usr/bin/doveadm",
      "-c",
      lab.conf_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  dovecot::CommandResult r = dovecot::DovecotLab::run(argv, input);
  if (!r.ok()) {
    fail(fmt::format("doveadm {} on {} failed with exit status {}:\n{}", join_command(args),
                     lab.dir(), r.status, trim(r.errors.empty() ? r.output : r.errors)));
  }
  return r;
}

std::vector<JsonRow> doveadm_json(const dovecot::DovecotLab& lab, std::vector<std::string> args) {
  args.insert(args.begin(), {"-f", "json"});
  return JsonRows(checked_doveadm(lab, args).output).parse();
}

// --- differences, as readable lines ---------------------------------------------------------

using Key = std::pair<std::string, std::uint64_t>;  // (id, size)
struct Copies {                    // of one (id, size) in a mailbox, each list sorted
  std::vector<std::string> flags;  // flags_text()
  std::vector<std::string> dates;  // INTERNALDATE
};
using Bag = std::map<Key, Copies>;

Bag bag_of(const MailboxState& box) {
  Bag bag;
  for (const auto& m : box.messages) {
    Copies& c = bag[{m.id, m.size}];
    c.flags.push_back(m.flags_text());
    c.dates.push_back(m.internal_date);
  }
  for (auto& [key, c] : bag) {
    std::sort(c.flags.begin(), c.flags.end());
    std::sort(c.dates.begin(), c.dates.end());
  }
  return bag;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

std::string summary(const Snapshot& s) {
  return fmt::format("{} mailboxes, {} messages, {} subscriptions", s.mailboxes.size(),
                     s.total_messages(), s.subscriptions.size());
}

testing::AssertionResult verdict(std::string heading, const std::vector<std::string>& lines) {
  if (lines.empty()) return testing::AssertionSuccess();
  constexpr std::size_t kMaxLines = 60;
  std::string text = std::move(heading);
  for (std::size_t i = 0; i < lines.size() && i < kMaxLines; ++i) text += "\n  " + lines[i];
  if (lines.size() > kMaxLines) {
    text += fmt::format("\n  ... and {} more differences", lines.size() - kMaxLines);
  }
  return testing::AssertionFailure() << text;
}

std::set<std::string> names_of(const Snapshot& a, const Snapshot& b) {
  std::set<std::string> names;
  for (const auto& [name, box] : a.mailboxes) names.insert(name);
  for (const auto& [name, box] : b.mailboxes) names.insert(name);
  return names;
}

// --- processes ------------------------------------------------------------------------------

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (::pipe2(fd, O_CLOEXEC) != 0) fail("pipe2: " + errno_text(errno));
  }
  ~Pipe() {
    close_end(0);
    close_end(1);
  }
  void close_end(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
};

// Whether a process of the group is still running. Zombies do not count: pid 1 in a container
// may reap orphans late, and kill(-pgid, 0) still succeeds for them.
bool group_alive(pid_t pgid) {
  if (::kill(-pgid, 0) != 0 && errno != EPERM) return false;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename().string();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (!(rest >> state >> ppid >> pgrp)) continue;
    if (pgrp == pgid && state != 'Z' && state != 'X') return true;
  }
  return false;
}

// Counts the complete lines of a stream that satisfy a predicate.
class LineMatcher {
 public:
  explicit LineMatcher(const std::function<bool(std::string_view)>* predicate)
      : predicate_(predicate) {}
  int feed(std::string_view data) {
    if (predicate_ == nullptr || !*predicate_) return 0;
    int hits = 0;
    for (char c : data) {
      if (c != '\n') {
        line_ += c;
        continue;
      }
      if ((*predicate_)(line_)) ++hits;
      line_.clear();
    }
    return hits;
  }

 private:
  const std::function<bool(std::string_view)>* predicate_;
  std::string line_;
};

// --- change words, for reports_no_changes ---------------------------------------------------

const std::set<std::string>& change_words() {
  static const std::set<std::string> words = [] {
    std::set<std::string> w;
    for (const char* stem :
         {"copy", "append", "expunge", "create", "delete", "rename", "subscribe", "unsubscribe",
          "store", "add", "remove", "update", "move", "upload", "download"}) {
      std::string s = stem;
      w.insert(s);
      w.insert(s + "s");
      bool ends_e = s.back() == 'e';
      std::string base = ends_e ? s.substr(0, s.size() - 1) : s;
      if (s == "copy") {
        w.insert("copies");
        w.insert("copied");
        w.insert("copying");
        continue;
      }
      if (s == "add") {
        w.insert("added");
        w.insert("adding");
        continue;
      }
      w.insert(base + "ed");
      w.insert(base + "ing");
    }
    return w;
  }();
  return words;
}

bool is_number(const std::string& token) {
  return !token.empty() &&
         std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool clause_reports_change(std::string_view clause) {
  std::vector<std::string> tokens;
  std::string current;
  for (char c : clause) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      current += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!current.empty()) {
      tokens.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) tokens.push_back(std::move(current));
  const auto& words = change_words();
  const long n = static_cast<long>(tokens.size());
  auto token = [&tokens](long i) -> const std::string& {
    return tokens[static_cast<std::size_t>(i)];
  };
  auto is_change_word = [&](long i) { return words.count(token(i)) != 0 || token(i) == "set"; };
  long previous = -1;  // the previous change word
  for (long k = 0; k < n; ++k) {
    if (!is_change_word(k)) continue;
    // The word's scope: up to two words before it (not past the previous change word) and
    // everything after it up to the next change word.
    long first = std::max(previous + 1, k - 2);
    long last = k + 1;
    while (last < n && !is_change_word(last)) ++last;
    previous = k;
    bool negated = false, any_number = false, nonzero = false;
    for (long i = std::max(0L, k - 2); i <= std::min(n - 1, k + 2); ++i) {
      const std::string& t = token(i);
      negated = negated || t == "no" || t == "nothing" || t == "none" || t == "not";
    }
    for (long i = first; i < last; ++i) {
      if (i == k || !is_number(token(i))) continue;
      any_number = true;
      nonzero = nonzero || token(i).find_first_not_of('0') != std::string::npos;
    }
    if (!negated && (nonzero || !any_number)) return true;
  }
  return false;
}

// Clauses are separated by ';' ("copied 0 to local, 5 to remote; expunged 0 local, 0 remote").
bool line_reports_change(std::string_view line) {
  std::size_t pos = 0;
  while (pos <= line.size()) {
    std::size_t end = line.find(';', pos);
    if (end == std::string_view::npos) end = line.size();
    if (clause_reports_change(line.substr(pos, end - pos))) return true;
    pos = end + 1;
  }
  return false;
}

}  // namespace

// =============================================================================================
// Messages

std::string Message::render() const {
  std::string text = fmt::format("From: {}\r\nTo: Twinbox Tester <twinbox@example.org>\r\n", from);
  text += fmt::format("Subject: {}\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n", subject);
  if (!message_id.empty()) text += fmt::format("Message-ID: {}\r\n", message_id);
  text += "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n";
  for (const auto& h : headers) text += h + "\r\n";
  text += "\r\n";
  text += body;
  return text;
}

std::string test_message_id(std::string_view tag, int n) {
  return fmt::format("<{}.{}@twinbox.test>", tag, n);
}

Message test_message(std::string_view tag, int n, std::vector<std::string> flags) {
  Message m;
  m.message_id = test_message_id(tag, n);
  m.subject = fmt::format("{} #{}", tag, n);
  m.body = fmt::format("This is message {} of the {} series.\r\n", n, tag);
  m.flags = std::move(flags);
  m.internal_date = fmt::format("{:02}-Jan-2024 {:02}:{:02}:00 +0000", 1 + (n / 1440) % 28,
                                (n / 60) % 24, n % 60);
  return m;
}

std::vector<Message> test_messages(std::string_view tag, int count, int first,
                                   std::vector<std::string> flags) {
  std::vector<Message> out;
  out.reserve(static_cast<std::size_t>(count));
  for (int i = first; i < first + count; ++i) out.push_back(test_message(tag, i, flags));
  return out;
}

// =============================================================================================
// Snapshots

std::string MessageState::flags_text() const { return "(" + join(flags, " ") + ")"; }

std::vector<const MessageState*> MailboxState::find(std::string_view id) const {
  std::vector<const MessageState*> found;
  for (const auto& m : messages) {
    if (m.id == id) found.push_back(&m);
  }
  return found;
}

const MailboxState* Snapshot::mailbox(std::string_view name) const {
  auto it = mailboxes.find(std::string(name));
  return it == mailboxes.end() ? nullptr : &it->second;
}

const MailboxState& Snapshot::at(std::string_view name) const {
  static const MailboxState empty;
  const MailboxState* box = mailbox(name);
  return box != nullptr ? *box : empty;
}

std::size_t Snapshot::total_messages() const {
  std::size_t n = 0;
  for (const auto& [name, box] : mailboxes) n += box.messages.size();
  return n;
}

std::string Snapshot::to_string() const {
  std::string out;
  for (const auto& [name, box] : mailboxes) {
    out += fmt::format("\"{}\"{} uidvalidity={} uidnext={} highestmodseq={} messages={}\n", name,
                       subscribed(name) ? " (subscribed)" : "", box.uidvalidity, box.uidnext,
                       box.highestmodseq, box.messages.size());
    for (const auto& m : box.messages) {
      out += fmt::format("  uid={} modseq={} size={} date=\"{}\" {} {}\n", m.uid, m.modseq, m.size,
                         m.internal_date, m.id, m.flags_text());
    }
  }
  for (const auto& name : subscriptions) {
    if (!mailboxes.count(name)) out += fmt::format("\"{}\" subscribed, does not exist\n", name);
  }
  return out;
}

Snapshot read_snapshot(const dovecot::DovecotLab& lab) {
  const char sep = lab.separator();
  Snapshot snap;
  // Sequential on purpose: doveadm's start-up is CPU-bound, and at once they took longer here.
  std::vector<JsonRow> status_rows =
      doveadm_json(lab, {"mailbox", "status", "uidvalidity uidnext highestmodseq", "*"});
  std::vector<JsonRow> subscription_rows = doveadm_json(lab, {"mailbox", "list", "-s"});
  std::vector<JsonRow> rows = doveadm_json(
      lab, {"fetch", "mailbox uid flags hdr.message-id size.virtual modseq date.received",
            "mailbox", "*", "ALL"});
  for (const auto& row : status_rows) {
    MailboxState& box = snap.mailboxes[normalise_name(field(row, "mailbox"), sep)];
    box.uidvalidity = parse_unsigned<std::uint32_t>(field(row, "uidvalidity"), "uidvalidity");
    box.uidnext = parse_unsigned<std::uint32_t>(field(row, "uidnext"), "uidnext");
    box.highestmodseq = parse_unsigned<std::uint64_t>(field(row, "highestmodseq"), "highestmodseq");
  }
  for (const auto& row : subscription_rows) {
    snap.subscriptions.insert(normalise_name(field(row, "mailbox"), sep));
  }

  std::map<std::pair<std::string, std::uint32_t>, MessageState*> without_id;
  for (const auto& row : rows) {
    std::string name = normalise_name(field(row, "mailbox"), sep);
    auto box = snap.mailboxes.find(name);
    if (box == snap.mailboxes.end()) {
      fail(fmt::format("doveadm fetch named a mailbox that mailbox status did not: \"{}\"", name));
    }
    MessageState m;
    m.uid = parse_unsigned<std::uint32_t>(field(row, "uid"), "uid");
    m.size = parse_unsigned<std::uint64_t>(field(row, "size.virtual"), "size.virtual");
    m.modseq = parse_unsigned<std::uint64_t>(field(row, "modseq"), "modseq");
    m.id = trim(field(row, "hdr.message-id"));
    m.internal_date = field(row, "date.received");
    for (auto& flag : split_words(field(row, "flags"))) {
      if (flag != "\\Recent") m.flags.push_back(std::move(flag));
    }
    std::sort(m.flags.begin(), m.flags.end());
    box->second.messages.push_back(std::move(m));
  }
  for (auto& [name, box] : snap.mailboxes) {
    std::sort(box.messages.begin(), box.messages.end(),
              [](const MessageState& a, const MessageState& b) { return a.uid < b.uid; });
    for (auto& m : box.messages) {
      if (m.id.empty()) without_id[{name, m.uid}] = &m;
    }
  }
  if (without_id.empty()) return snap;

  // Messages without a Message-ID are known by a hash of their body. Mailbox stores keep LF or
  // CRLF depending on the format; the hash reads both as LF.
  auto hash_bodies = [&](const std::vector<std::string>& query) {
    std::vector<std::string> args = {"fetch", "mailbox uid body", "mailbox", "*"};
    args.insert(args.end(), query.begin(), query.end());
    for (const auto& row : doveadm_json(lab, args)) {
      auto it = without_id.find({normalise_name(field(row, "mailbox"), sep),
                                 parse_unsigned<std::uint32_t>(field(row, "uid"), "uid")});
      if (it == without_id.end()) continue;
      std::string body;
      const std::string& raw = field(row, "body");
      body.reserve(raw.size());
      for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n') continue;
        body += raw[i];
      }
      it->second->id = "sha256:" + sha256_hex(body);
      without_id.erase(it);
    }
  };
  hash_bodies({"NOT", "HEADER", "Message-ID", ""});
  if (!without_id.empty()) hash_bodies({"ALL"});  // an empty Message-ID header
  if (!without_id.empty()) {
    fail(fmt::format("doveadm gave no body for {} messages without a Message-ID",
                     without_id.size()));
  }
  return snap;
}

testing::AssertionResult same_content(const Snapshot& a, const Snapshot& b, std::string_view a_name,
                                      std::string_view b_name) {
  std::vector<std::string> lines;
  for (const auto& name : names_of(a, b)) {
    const MailboxState* pa = a.mailbox(name);
    const MailboxState* pb = b.mailbox(name);
    if (pa == nullptr || pb == nullptr) {
      lines.push_back(fmt::format("mailbox \"{}\": only on {} ({} messages)", name,
                                  pa ? a_name : b_name, (pa ? pa : pb)->messages.size()));
      continue;
    }
    Bag ba = bag_of(*pa), bb = bag_of(*pb);
    std::set<Key> keys;
    for (const auto& [k, v] : ba) keys.insert(k);
    for (const auto& [k, v] : bb) keys.insert(k);
    for (const auto& key : keys) {
      static const Copies none;
      auto ia = ba.find(key), ib = bb.find(key);
      const Copies& ca = ia == ba.end() ? none : ia->second;
      const Copies& cb = ib == bb.end() ? none : ib->second;
      std::string what =
          fmt::format("mailbox \"{}\": message {} ({} bytes)", name, key.first, key.second);
      if (ca.flags.size() != cb.flags.size()) {
        auto copies = [](const std::vector<std::string>& f) {
          return f.empty() ? std::string("missing") : fmt::format("{}x {}", f.size(), join(f, " "));
        };
        lines.push_back(fmt::format("{}: {} {}, {} {}", what, a_name, copies(ca.flags), b_name,
                                    copies(cb.flags)));
      } else if (ca.flags != cb.flags) {
        lines.push_back(fmt::format("{}: flags differ: {} {}, {} {}", what, a_name,
                                    join(ca.flags, " "), b_name, join(cb.flags, " ")));
      } else if (ca.dates != cb.dates) {
        lines.push_back(fmt::format("{}: INTERNALDATE differs: {} {}, {} {}", what, a_name,
                                    join(ca.dates, ", "), b_name, join(cb.dates, ", ")));
      }
    }
  }
  for (const auto& name : a.subscriptions) {
    if (!b.subscriptions.count(name)) {
      lines.push_back(fmt::format("subscription \"{}\": only on {}", name, a_name));
    }
  }
  for (const auto& name : b.subscriptions) {
    if (!a.subscriptions.count(name)) {
      lines.push_back(fmt::format("subscription \"{}\": only on {}", name, b_name));
    }
  }
  return verdict(fmt::format("{} and {} differ ({}: {}; {}: {}):", a_name, b_name, a_name,
                             summary(a), b_name, summary(b)),
                 lines);
}

testing::AssertionResult no_duplicates(const Snapshot& snapshot, std::string_view name) {
  std::vector<std::string> lines;
  for (const auto& [box_name, box] : snapshot.mailboxes) {
    std::map<Key, std::vector<std::uint32_t>> uids;
    for (const auto& m : box.messages) uids[{m.id, m.size}].push_back(m.uid);
    for (const auto& [key, list] : uids) {
      if (list.size() < 2) continue;
      std::vector<std::string> text;
      for (auto uid : list) text.push_back(std::to_string(uid));
      lines.push_back(fmt::format("mailbox \"{}\": message {} ({} bytes) {} times (UIDs {})",
                                  box_name, key.first, key.second, list.size(), join(text, ", ")));
    }
  }
  return verdict(fmt::format("duplicate messages on {} ({}):", name, summary(snapshot)), lines);
}

testing::AssertionResult unchanged(const Snapshot& before, const Snapshot& after,
                                   std::string_view name) {
  std::vector<std::string> lines;
  for (const auto& box_name : names_of(before, after)) {
    const MailboxState* b = before.mailbox(box_name);
    const MailboxState* a = after.mailbox(box_name);
    if (a == nullptr || b == nullptr) {
      lines.push_back(
          fmt::format("mailbox \"{}\": {}", box_name, a == nullptr ? "disappeared" : "appeared"));
      continue;
    }
    auto compare = [&](const char* what, std::uint64_t x, std::uint64_t y) {
      if (x != y) lines.push_back(fmt::format("mailbox \"{}\": {} {} -> {}", box_name, what, x, y));
    };
    compare("UIDVALIDITY", b->uidvalidity, a->uidvalidity);
    compare("UIDNEXT", b->uidnext, a->uidnext);
    compare("HIGHESTMODSEQ", b->highestmodseq, a->highestmodseq);
    std::map<std::uint32_t, const MessageState*> by_uid_b, by_uid_a;
    for (const auto& m : b->messages) by_uid_b[m.uid] = &m;
    for (const auto& m : a->messages) by_uid_a[m.uid] = &m;
    for (const auto& [uid, mb] : by_uid_b) {
      auto it = by_uid_a.find(uid);
      if (it == by_uid_a.end()) {
        lines.push_back(
            fmt::format("mailbox \"{}\": UID {} ({}) disappeared", box_name, uid, mb->id));
        continue;
      }
      const MessageState* ma = it->second;
      if (ma->id != mb->id || ma->size != mb->size) {
        lines.push_back(fmt::format("mailbox \"{}\": UID {} was {} ({} bytes), is {} ({} bytes)",
                                    box_name, uid, mb->id, mb->size, ma->id, ma->size));
      }
      if (ma->modseq != mb->modseq) {
        lines.push_back(fmt::format("mailbox \"{}\": UID {} ({}) MODSEQ {} -> {}", box_name, uid,
                                    mb->id, mb->modseq, ma->modseq));
      }
      if (ma->flags != mb->flags) {
        lines.push_back(fmt::format("mailbox \"{}\": UID {} ({}) flags {} -> {}", box_name, uid,
                                    mb->id, mb->flags_text(), ma->flags_text()));
      }
    }
    for (const auto& [uid, ma] : by_uid_a) {
      if (!by_uid_b.count(uid)) {
        lines.push_back(fmt::format("mailbox \"{}\": UID {} ({}) appeared", box_name, uid, ma->id));
      }
    }
  }
  for (const auto& s : before.subscriptions) {
    if (!after.subscriptions.count(s)) lines.push_back(fmt::format("unsubscribed \"{}\"", s));
  }
  for (const auto& s : after.subscriptions) {
    if (!before.subscriptions.count(s)) lines.push_back(fmt::format("subscribed \"{}\"", s));
  }
  return verdict(fmt::format("{} changed:", name), lines);
}

// =============================================================================================
// Running programs

KillAt KillAt::after(std::chrono::milliseconds delay) {
  KillAt k;
  k.delay = delay;
  return k;
}

// POSIX extended regular expressions (glibc: \b works) rather than <regex>: libstdc++ 12's
// <regex> draws a false -Wmaybe-uninitialized at -O1, which -Werror turns into a build failure.
KillAt KillAt::on_output(const std::string& regex, int occurrence) {
  auto compiled = std::shared_ptr<regex_t>(new regex_t, [](regex_t* r) {
    ::regfree(r);
    delete r;
  });
  if (::regcomp(compiled.get(), regex.c_str(), REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0) {
    fail("bad regular expression: " + regex);
  }
  return on_line(
      [compiled](std::string_view line) {
        const std::string text(line);
        return ::regexec(compiled.get(), text.c_str(), 0, nullptr, 0) == 0;
      },
      fmt::format("matching /{}/", regex), occurrence);
}

KillAt KillAt::on_line(std::function<bool(std::string_view line)> predicate, std::string what,
                       int occurrence) {
  KillAt k;
  k.line = std::move(predicate);
  k.what = std::move(what);
  k.occurrence = occurrence;
  return k;
}

KillAt KillAt::when_set(const std::atomic<bool>& flag, int signal) {
  KillAt k;
  k.flag = &flag;
  k.signal = signal;
  k.what = fmt::format("signal {} when the test says so", signal);
  return k;
}

std::string KillAt::describe() const {
  std::string text;
  if (delay) text = fmt::format("after {} ms", delay->count());
  if (line) {
    if (!text.empty()) text += " or ";
    text += fmt::format("at output line #{} {}", occurrence, what);
  }
  return text.empty() ? "never" : text;
}

std::string RunResult::describe() const {
  std::string how;
  if (timed_out) {
    how = fmt::format("TIMED OUT and killed after {} ms", elapsed.count());
  } else if (killed) {
    how = fmt::format("killed on purpose after {} ms (status {})", elapsed.count(), status);
  } else {
    how = fmt::format("exit status {} after {} ms", status, elapsed.count());
  }
  return fmt::format("{}\n  {}\n--- stderr ---\n{}\n--- stdout ---\n{}\n--------------", command,
                     how, tail(err, 6000), tail(out, 3000));
}

RunResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      const RunOptions& options) {
  if (argv.empty()) fail("run_process: empty argv");
  RunResult result;
  result.command = join_command(argv);
  Trace trace([&] { return "run " + result.command; });

  const std::function<bool(std::string_view)>* predicate = nullptr;
  int kill_after_hits = 0;
  std::optional<Clock::time_point> kill_time;
  const auto start = Clock::now();
  if (options.kill) {
    if (options.kill->line) {
      predicate = &options.kill->line;
      kill_after_hits = std::max(1, options.kill->occurrence);
    }
    if (options.kill->delay) kill_time = start + *options.kill->delay;
  }
  const auto deadline = start + options.timeout;

  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  Pipe out, err;
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) fail("open /dev/null: " + errno_text(errno));
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(devnull);
    fail("fork: " + errno_text(errno));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (::dup2(devnull, 0) < 0 || ::dup2(out.fd[1], 1) < 0 || ::dup2(err.fd[1], 2) < 0) {
      _exit(127);
    }
    if (::close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < 4096; ++fd) ::close(fd);
    }
    ::execve(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "run_process: exec failed\n";
    [[maybe_unused]] auto ignored = ::write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  ::setpgid(pid, pid);  // also here, so that the group exists before any kill(-pid)
  ::close(devnull);
  out.close_end(1);
  err.close_end(1);

  LineMatcher out_lines(predicate), err_lines(predicate);
  int hits = 0;
  bool reaped = false;
  // If anything below throws, the run must not outlive this call.
  struct Reaper {
    pid_t pid;
    const bool& reaped;
    ~Reaper() {
      if (reaped) return;
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  } reaper{pid, reaped};
  int wait_status = 0;
  Clock::time_point ended = start;
  char buf[65536];
  auto kill_now = [&] {
    if (!reaped && !result.killed && !result.timed_out) {
      ::kill(pid, options.kill ? options.kill->signal : SIGKILL);
      result.killed = true;
    }
  };
  for (;;) {
    if (!reaped) {
      pid_t w = ::waitpid(pid, &wait_status, WNOHANG);
      if (w == pid) {
        reaped = true;
        ended = Clock::now();
      } else if (w < 0 && errno != EINTR) {
        fail("waitpid: " + errno_text(errno));
      }
    }
    const bool pipes_open = out.fd[0] >= 0 || err.fd[0] >= 0;
    if (reaped && !pipes_open) break;
    const auto now = Clock::now();
    if (!reaped && kill_time && now >= *kill_time) kill_now();
    if (!reaped && options.kill && options.kill->flag && options.kill->flag->load()) kill_now();
    if (!reaped && !result.killed && !result.timed_out && now >= deadline) {
      ::kill(-pid, SIGKILL);
      result.timed_out = true;
    }
    if (reaped && now >= ended + std::chrono::seconds(5)) {
      // A descendant still holds our pipes: it is part of this run, end it.
      ::kill(-pid, SIGKILL);
      out.close_end(0);
      err.close_end(0);
      break;
    }
    int wait_ms = 50;
    if (!reaped && !result.killed && !result.timed_out) {
      auto next = kill_time ? std::min(*kill_time, deadline) : deadline;
      auto left = std::chrono::duration_cast<milliseconds>(next - now).count() + 1;
      wait_ms = static_cast<int>(std::clamp<long long>(left, 0, 50));
    }
    if (!pipes_open) wait_ms = std::min(wait_ms, 5);
    pollfd fds[2];
    nfds_t n = 0;
    int out_i = -1, err_i = -1;
    if (out.fd[0] >= 0) {
      out_i = static_cast<int>(n);
      fds[n++] = {out.fd[0], POLLIN, 0};
    }
    if (err.fd[0] >= 0) {
      err_i = static_cast<int>(n);
      fds[n++] = {err.fd[0], POLLIN, 0};
    }
    if (::poll(n > 0 ? fds : nullptr, n, wait_ms) < 0) {
      if (errno == EINTR) continue;
      fail("poll: " + errno_text(errno));
    }
    auto drain = [&](int idx, Pipe& p, std::string& sink, LineMatcher& lines) {
      if (idx < 0 || fds[idx].revents == 0) return;
      ssize_t got = ::read(p.fd[0], buf, sizeof buf);
      if (got > 0) {
        std::string_view data(buf, static_cast<std::size_t>(got));
        sink.append(data);
        hits += lines.feed(data);
      } else if (got == 0 || errno != EINTR) {
        p.close_end(0);
      }
    };
    drain(out_i, out, result.out, out_lines);
    drain(err_i, err, result.err, err_lines);
    if (predicate != nullptr && hits >= kill_after_hits) kill_now();
  }
  // The loop only ends once the process is reaped. Whatever is left of the run (a tunnel whose
  // parent was killed sees EOF and exits).
  const auto grace = Clock::now() + std::chrono::seconds(5);
  while (group_alive(pid) && Clock::now() < grace) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  if (group_alive(pid)) ::kill(-pid, SIGKILL);

  result.elapsed = std::chrono::duration_cast<milliseconds>(ended - start);
  result.status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
  // Killed at the KillAt point only counts if the kill is what ended it.
  if (result.killed && !(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL)) {
    result.killed = false;
  }
  return result;
}

testing::AssertionResult ran_ok(const RunResult& result) {
  if (result.ok()) return testing::AssertionSuccess();
  return testing::AssertionFailure() << result.describe();
}

testing::AssertionResult exited_after_commits(const RunResult& result, int commits) {
  if (result.killed || result.timed_out || result.status != kExitedAfterCommits) {
    return testing::AssertionFailure()
           << "expected the run to exit with status " << kExitedAfterCommits << " after commit "
           << commits << ": " << result.describe();
  }
  const std::string said =
      fmt::format("state: exiting with status {} after commit {} (", kExitedAfterCommits, commits);
  if (result.err.find(said) == std::string::npos) {
    return testing::AssertionFailure()
           << "no \"" << said << "\" in its output: " << result.describe();
  }
  // With --debug, every commit is logged: exactly `commits` of them before the exit.
  int logged = 0;
  for (std::size_t at = 0; (at = result.err.find("state: committed ", at)) != std::string::npos;
       ++at) {
    ++logged;
  }
  if (logged != 0 && logged != commits) {
    return testing::AssertionFailure() << logged << " \"state: committed\" lines instead of "
                                       << commits << ": " << result.describe();
  }
  return testing::AssertionSuccess();
}

std::vector<std::string> change_lines(std::string_view output) {
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < output.size()) {
    std::size_t eol = output.find('\n', pos);
    if (eol == std::string_view::npos) eol = output.size();
    std::string_view line = output.substr(pos, eol - pos);
    if (line_reports_change(line)) lines.emplace_back(line);
    pos = eol + 1;
  }
  return lines;
}

testing::AssertionResult reports_no_changes(const RunResult& result) {
  std::vector<std::string> lines = change_lines(result.err);
  for (auto& line : change_lines(result.out)) lines.push_back(std::move(line));
  return verdict(fmt::format("the run reported changes:\n{}", result.describe()), lines);
}

// =============================================================================================
// Pair options

PairOptions::PairOptions() {
  for (Side side : kSides) {
    SideOptions& s = sides[side];
    s.lab.separator = side == Side::local ? '.' : '/';
    s.lab.settings.push_back("mail_fsync=never");
    s.tunnel = side == Side::local;
  }
}

PairOptions& PairOptions::separators(char local, char remote) {
  sides[Side::local].lab.separator = local;
  sides[Side::remote].lab.separator = remote;
  return *this;
}

PairOptions& PairOptions::capability(Side side, std::string caps) {
  sides[side].lab.capability = std::move(caps);
  return *this;
}

PairOptions& PairOptions::max_line(int bytes) {
  for (Side side : kSides) sides[side].lab.max_line = bytes;
  return *this;
}

PairOptions& PairOptions::remote_tls(dovecot::Tls tls) {
  sides[Side::remote].lab.tls = tls;
  return *this;
}

PairOptions& PairOptions::config_line(std::string line) {
  config.push_back(std::move(line));
  return *this;
}

PairOptions& PairOptions::config_line(Side side, std::string line) {
  sides[side].config.push_back(std::move(line));
  return *this;
}

Search Search::all() { return {{"ALL"}}; }
Search Search::message_id(std::string_view id) {
  return {{"HEADER", "Message-ID", std::string(id)}};
}
Search Search::uids(std::string_view set) { return {{"uid", std::string(set)}}; }
Search Search::uids(const std::vector<std::uint32_t>& uids) {
  std::vector<std::string> text;
  for (auto uid : uids) text.push_back(std::to_string(uid));
  return {{"uid", join(text, ",")}};
}

// =============================================================================================
// SyncPair

SyncPair::SyncPair(PairOptions options) : options_(std::move(options)) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = fmt::format("{}/twinbox-sync.XXXXXX", tmp != nullptr && *tmp ? tmp : "/tmp");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr)
    fail(fmt::format("mkdtemp {}: {}", templ, errno_text(errno)));
  dir_ = buf.data();
  std::filesystem::create_directories(dir_ + "/home");
  std::filesystem::create_directories(dir_ + "/xdg-config");
  std::filesystem::create_directories(dir_ + "/xdg-data");
  std::filesystem::create_directories(dir_ + "/runs");

  // Both servers start at once; a failure of either stops the other (its destructor).
  auto start = [this](Side side) {
    return std::async(std::launch::async, [opts = options_.sides[side].lab] {
      return dovecot::DovecotLab::start(opts);
    });
  };
  Trace trace([] { return std::string("start both servers"); });
  auto local = start(Side::local);
  auto remote = start(Side::remote);
  std::string errors;
  for (auto [side, future] : {std::pair{Side::local, &local}, std::pair{Side::remote, &remote}}) {
    try {
      labs_[side].emplace(future->get());
    } catch (const std::exception& e) {
      errors += fmt::format("{} server: {}\n", side_name(side), e.what());
    }
  }
  if (!errors.empty()) {
    shutdown();  // stops the server that did start and removes dir_
    fail(errors);
  }
  write_config();
}

SyncPair::~SyncPair() { shutdown(); }

void SyncPair::shutdown() noexcept {
  if (dir_.empty()) return;
  // Stopping takes ~1 s per server (Dovecot's master sleeps on shutdown): both at once.
  auto stop = [this](Side side) noexcept {
    try {
      if (labs_[side]) labs_[side]->stop();
    } catch (const std::exception& e) {
      std::cerr << "SyncPair: stopping the " << side_name(side) << " server: " << e.what() << '\n';
    }
  };
  Trace trace([] { return std::string("stop both servers"); });
  try {
    std::thread remote(stop, Side::remote);
    stop(Side::local);
    remote.join();
  } catch (const std::system_error&) {  // no thread: one after the other
    stop(Side::local);
    stop(Side::remote);
  }
  for (Side side : kSides) labs_[side].reset();
  if (keep_lab()) {
    std::cerr << "SyncPair: kept " << dir_ << " (TWINBOX_KEEP_LAB=1)\n";
  } else {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  dir_.clear();
}

std::string SyncPair::spy_report(Side side) const {
  std::ifstream in(fmt::format("{}/{}-spy.log", dir_, side_name(side)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> SyncPair::spy_violations(Side side) const {
  std::vector<std::string> out;
  std::istringstream in(spy_report(side));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VIOLATION ", 0) == 0) out.push_back(line);
  }
  return out;
}

std::size_t SyncPair::spy_commands_with(Side side, std::string_view text) const {
  std::size_t count = 0;
  std::istringstream in(spy_report(side));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("COMMAND ", 0) == 0 && line.find(text) != std::string::npos) ++count;
  }
  return count;
}

std::string SyncPair::twinbox_binary() {
  const char* env = std::getenv("TWINBOX_BINARY");
  std::string path = env != nullptr && *env != '\0' ? env : TWINBOX_BINARY_DEFAULT;
  if (::access(path.c_str(), X_OK) != 0) {
    fail(
        fmt::format("the twinbox binary {} is not executable ({}); build the twinbox target, or "
                    "set TWINBOX_BINARY",
                    path, errno_text(errno)));
  }
  return path;
}

void SyncPair::write_config() {
  std::string text = "# twinbox configuration written by tests/sync/sync_harness.cc\n";
  text += fmt::format("database = {}\n", database_path());
  for (const auto& line : options_.config) text += line + "\n";
  for (Side side : kSides) {
    const SideOptions& o = options_.sides[side];
    const dovecot::DovecotLab& l = lab(side);
    text += fmt::format("\n[{}]\n", side_name(side));
    if (o.tunnel && o.spy) {
      const std::string script = fmt::format("{}/{}-tunnel.sh", dir_, side_name(side));
      write_text_file(script, "exec " + l.tunnel_command_line() + "\n");
      text += fmt::format(
          "type = tunnel\ncommand = {} {}/{}-spy.log -- /bin/sh {}\nnull-stderr = YES\n",
          TWINBOX_SPY_BINARY, dir_, side_name(side), script);
    } else if (o.tunnel) {
      text +=
          fmt::format("type = tunnel\ncommand = {}\nnull-stderr = YES\n", l.tunnel_command_line());
    } else {
      if (l.imaps_port() != 0) {
        text += fmt::format("type = imaps\nhost = {}\nport = {}\n", l.host(), l.imaps_port());
      } else {
        text += fmt::format("type = imap\nhost = {}\nport = {}\nSTARTTLS = {}\n", l.host(),
                            l.port(), o.lab.tls == dovecot::Tls::none ? "NO" : "YES");
      }
      if (!l.ca_file().empty()) text += fmt::format("SSL_CAfile = {}\n", l.ca_file());
      text += fmt::format("username = {}\npassword = {}\n", l.user(), l.password());
    }
    for (const auto& line : o.config) text += line + "\n";
  }

  const std::string path = config_path();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail(fmt::format("open {}: {}", path, errno_text(errno)));
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t done = 0;
  while (ok && done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  int saved = errno;
  ::close(fd);
  if (!ok) fail(fmt::format("write {}: {}", path, errno_text(saved)));
}

void SyncPair::set_config_lines(std::vector<std::string> lines) {
  options_.config = std::move(lines);
  write_config();
}

void SyncPair::set_config_lines(Side side, std::vector<std::string> lines) {
  options_.sides[side].config = std::move(lines);
  write_config();
}

void SyncPair::restart(Side side, const dovecot::Options& lab_options) {
  options_.sides[side].lab = lab_options;
  labs_[side]->restart(lab_options);
  write_config();
}

std::vector<std::string> SyncPair::environment() const { return twinbox_environment(dir_); }

std::vector<std::string> twinbox_environment(const std::string& dir) {
  const char* path = std::getenv("PATH");
  std::vector<std::string> env = {
      fmt::format("PATH={}", path != nullptr && *path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"),
      fmt::format("HOME={}/home", dir),
      fmt::format("XDG_CONFIG_HOME={}/xdg-config", dir),
      fmt::format("XDG_DATA_HOME={}/xdg-data", dir),
  };
  for (const char* pass : {"TMPDIR", "TZ", "LANG", "LC_ALL", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                           "LSAN_OPTIONS", "LLVM_PROFILE_FILE"}) {
    const char* value = std::getenv(pass);
    if (value != nullptr) env.push_back(fmt::format("{}={}", pass, value));
  }
  return env;
}

RunResult SyncPair::run(const std::vector<std::string>& args,
                        std::chrono::milliseconds timeout) const {
  RunOptions o;
  o.timeout = timeout.count() > 0 ? timeout : options_.timeout;
  return run_twinbox(config_path(), args, o);
}

RunResult SyncPair::run_killed_after(const KillAt& when, const std::vector<std::string>& args,
                                     std::chrono::milliseconds timeout) const {
  RunOptions o;
  o.timeout = timeout.count() > 0 ? timeout : options_.timeout;
  o.kill = when;
  return run_twinbox(config_path(), args, o);
}

RunResult SyncPair::run_exiting_after_commits(int commits, const std::vector<std::string>& args,
                                              std::chrono::milliseconds timeout) const {
  RunOptions o;
  o.timeout = timeout.count() > 0 ? timeout : options_.timeout;
  o.env.push_back(fmt::format("TWINBOX_TEST_EXIT_AFTER_COMMITS={}", commits));
  return run_twinbox(config_path(), args, o);
}

RunResult SyncPair::run_with_config(const std::string& config,
                                    const std::vector<std::string>& args) const {
  RunOptions o;
  o.timeout = options_.timeout;
  return run_twinbox(config, args, o);
}

void SyncPair::sql(const std::string& statement) const {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(database_path().c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    fail("open " + database_path() + ": " + message);
  }
  char* error = nullptr;
  const int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, &error);
  std::string message = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  if (rc != SQLITE_OK) fail("sql '" + statement + "': " + message);
}

RunResult SyncPair::run_twinbox(const std::string& config, const std::vector<std::string>& args,
                                const RunOptions& options) const {
  std::vector<std::string> argv = {twinbox_binary(), "--config", config};
  argv.insert(argv.end(), args.begin(), args.end());
  if (const char* extra = std::getenv("TWINBOX_SYNC_EXTRA_ARGS")) {
    for (auto& word : split_words(extra)) argv.push_back(std::move(word));
  }
  std::vector<std::string> env = environment();
  env.insert(env.end(), options.env.begin(), options.env.end());
  RunResult result = run_process(argv, env, options);
  for (auto it = options.env.rbegin(); it != options.env.rend(); ++it) {
    result.command = *it + " " + result.command;  // shown by describe() and in the log
  }
  // Every run's full output, for a look after the fact (TWINBOX_KEEP_LAB=1 keeps dir()).
  std::ofstream log(fmt::format("{}/runs/{:02}.log", dir_, ++runs_));
  log << result.command << "\n"
      << (result.timed_out ? "timed out"
          : result.killed  ? "killed on purpose"
                           : "exited")
      << ", status " << result.status << " after " << result.elapsed.count() << " ms"
      << "\n--- stderr ---\n"
      << result.err << "\n--- stdout ---\n"
      << result.out;
  return result;
}

Snapshot SyncPair::snapshot(Side side) const {
  Trace trace([side] { return fmt::format("{}: snapshot", side_name(side)); });
  return read_snapshot(lab(side));
}

PerSide<Snapshot> SyncPair::snapshots() const {
  auto remote = std::async(std::launch::async, [this] { return snapshot(Side::remote); });
  PerSide<Snapshot> both;
  both[Side::local] = snapshot(Side::local);
  both[Side::remote] = remote.get();
  return both;
}

testing::AssertionResult SyncPair::expect_converged() const {
  PerSide<Snapshot> s = snapshots();
  return same_content(s[Side::local], s[Side::remote], "local", "remote");
}

testing::AssertionResult SyncPair::expect_no_duplicates(Side side) const {
  return no_duplicates(snapshot(side), side_name(side));
}

std::string SyncPair::server_name(Side side, std::string_view name) const {
  std::string out(name);
  const char sep = options_.sides[side].lab.separator;
  if (sep != '/') std::replace(out.begin(), out.end(), '/', sep);
  return out;
}

dovecot::CommandResult SyncPair::doveadm(Side side, const std::vector<std::string>& args,
                                         std::string_view input) const {
  return checked_doveadm(lab(side), args, input);
}

void SyncPair::append(Side side, std::string_view mailbox,
                      const std::vector<Message>& messages) const {
  if (messages.empty()) return;
  std::string name = server_name(side, mailbox);
  bool ascii = std::all_of(name.begin(), name.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7F &&
           c != '&';
  });
  if (!ascii) name = trim(doveadm(side, {"mailbox", "mutf7", name}).output);
  std::string quoted = "\"";
  for (char c : name) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += '"';

  // MULTIAPPEND (RFC 3502) with LITERAL+: one transaction per batch, which is what makes bulk
  // delivery fast on Dovecot (each APPEND command costs a sync to disk).
  constexpr std::size_t kBatch = 500;
  std::string session;
  std::size_t batches = 0;
  for (std::size_t i = 0; i < messages.size(); i += kBatch) {
    session += fmt::format("a{} APPEND {}", ++batches, quoted);
    for (std::size_t j = i; j < std::min(messages.size(), i + kBatch); ++j) {
      const Message& m = messages[j];
      std::string text = m.render();
      session += fmt::format(" ({})", join(m.flags, " "));
      if (!m.internal_date.empty()) session += fmt::format(" \"{}\"", m.internal_date);
      session += fmt::format(" {{{}+}}\r\n", text.size());
      session += text;
    }
    session += "\r\n";
  }
  session += "z LOGOUT\r\n";
  Trace trace([&] {
    return fmt::format("{}: APPEND {} messages to \"{}\"", side_name(side), messages.size(), name);
  });
  dovecot::CommandResult r = dovecot::DovecotLab::run(lab(side).tunnel_command(), session);
  for (std::size_t b = 1; b <= batches; ++b) {
    std::string ok = fmt::format("\na{} OK ", b);
    if (("\n" + r.output).find(ok) == std::string::npos) {
      fail(fmt::format("APPEND of {} messages to {} \"{}\" failed (exit status {}):\n{}{}",
                       messages.size(), side_name(side), mailbox, r.status, tail(r.output, 2000),
                       tail(r.errors, 1000)));
    }
  }
}

void SyncPair::append(Side side, std::string_view mailbox, const Message& message) const {
  append(side, mailbox, std::vector<Message>{message});
}

void SyncPair::add_sample_mail(Side side, int count, unsigned seed) const {
  lab(side).add_sample_mail(count, seed);
}

void SyncPair::flags_command(Side side, const char* verb, std::string_view mailbox,
                             std::string_view flags, const Search& search) const {
  std::vector<std::string> args = {"flags", verb, std::string(flags), "mailbox",
                                   server_name(side, mailbox)};
  args.insert(args.end(), search.args.begin(), search.args.end());
  doveadm(side, args);
}

void SyncPair::add_flags(Side side, std::string_view mailbox, std::string_view flags,
                         const Search& search) const {
  flags_command(side, "add", mailbox, flags, search);
}

void SyncPair::remove_flags(Side side, std::string_view mailbox, std::string_view flags,
                            const Search& search) const {
  flags_command(side, "remove", mailbox, flags, search);
}

void SyncPair::replace_flags(Side side, std::string_view mailbox, std::string_view flags,
                             const Search& search) const {
  flags_command(side, "replace", mailbox, flags, search);
}

void SyncPair::expunge(Side side, std::string_view mailbox, const Search& search) const {
  std::vector<std::string> args = {"expunge", "mailbox", server_name(side, mailbox)};
  args.insert(args.end(), search.args.begin(), search.args.end());
  doveadm(side, args);
}

void SyncPair::create_mailbox(Side side, std::string_view name, bool subscribe) const {
  std::vector<std::string> args = {"mailbox", "create"};
  if (subscribe) args.emplace_back("-s");
  args.push_back(server_name(side, name));
  doveadm(side, args);
}

void SyncPair::delete_mailbox(Side side, std::string_view name) const {
  doveadm(side, {"mailbox", "delete", "-s", server_name(side, name)});
}

void SyncPair::rename_mailbox(Side side, std::string_view from, std::string_view to) const {
  doveadm(side, {"mailbox", "rename", "-s", server_name(side, from), server_name(side, to)});
}

void SyncPair::subscribe(Side side, std::string_view name) const {
  doveadm(side, {"mailbox", "subscribe", server_name(side, name)});
}

void SyncPair::unsubscribe(Side side, std::string_view name) const {
  doveadm(side, {"mailbox", "unsubscribe", server_name(side, name)});
}

void SyncPair::update_mailbox(Side side, std::string_view name, const MailboxUpdate& update) const {
  const std::string server = server_name(side, name);
  // Open it first: `mailbox update` on a never-synced maildir index sees uidvalidity=0, logs a
  // corrupted index header, and the fsck that follows replaces the UIDVALIDITY.
  doveadm(side, {"mailbox", "status", "uidvalidity", server});
  std::vector<std::string> args = {"mailbox", "update"};
  if (update.uid_validity) {
    args.insert(args.end(), {"--uid-validity", std::to_string(*update.uid_validity)});
  }
  if (update.min_next_uid) {
    args.insert(args.end(), {"--min-next-uid", std::to_string(*update.min_next_uid)});
  }
  if (update.min_highest_modseq) {
    args.insert(args.end(), {"--min-highest-modseq", std::to_string(*update.min_highest_modseq)});
  }
  args.push_back(server);
  doveadm(side, args);
}

void SyncPair::reset(Side side) const {
  const char sep = options_.sides[side].lab.separator;
  std::vector<std::string> names;
  for (const auto& row : doveadm_json(lab(side), {"mailbox", "list"})) {
    const std::string& name = field(row, "mailbox");
    if (name != "INBOX") names.push_back(name);
  }
  // Children first.
  std::sort(names.begin(), names.end(), [sep](const std::string& a, const std::string& b) {
    auto depth = [sep](const std::string& s) { return std::count(s.begin(), s.end(), sep); };
    return std::tuple(depth(a), a) > std::tuple(depth(b), b);
  });
  for (const auto& name : names) {
    // \NonExistent parents cannot be deleted; the check below catches what really remains.
    lab(side).doveadm({"mailbox", "delete", "-s", name});
  }
  doveadm(side, {"expunge", "mailbox", "INBOX", "ALL"});
  for (const auto& row : doveadm_json(lab(side), {"mailbox", "list", "-s"})) {
    doveadm(side, {"mailbox", "unsubscribe", field(row, "mailbox")});
  }
  Snapshot s = snapshot(side);
  if (s.mailboxes.size() != 1 || !s.mailbox("INBOX") || s.total_messages() != 0 ||
      !s.subscriptions.empty()) {
    fail(fmt::format("reset of the {} server left:\n{}", side_name(side), s.to_string()));
  }
}

void SyncPair::reset_all() const {
  auto remote = std::async(std::launch::async, [this] { reset(Side::remote); });
  std::string errors;
  try {
    reset(Side::local);
  } catch (const std::exception& e) {
    errors += std::string(e.what()) + "\n";
  }
  try {
    remote.get();
  } catch (const std::exception& e) {
    errors += std::string(e.what()) + "\n";
  }
  if (!errors.empty()) fail(errors);
  reset_state();
}

void SyncPair::reset_state() const {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (entry.path().filename().string().rfind("state.db", 0) == 0) {
      std::filesystem::remove_all(entry.path(), ec);
      if (ec) fail(fmt::format("cannot remove {}: {}", entry.path().string(), ec.message()));
    }
  }
}

}  // namespace twinbox::sync_tests
