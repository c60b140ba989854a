#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "base/log.h"
#include "config/ini.h"
#include "config/mailbox_pattern.h"

namespace twinbox::config {

namespace {

// What is wrong with a value: `detail` for the message, and the bytes [pos, pos+len) of the value
// to put the caret under (len 0: the whole value).
struct Problem {
  std::string detail;
  std::size_t pos = 0;
  std::size_t len = 0;
};
using Check = std::optional<Problem> (*)(std::string_view value);

bool is_ascii_upper_eq(std::string_view a, std::string_view upper) {
  if (a.size() != upper.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != upper[i]) return false;
  }
  return true;
}

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_alnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// RFC 3501 ATOM-CHAR, as InterIMAP's $RE_ATOM_CHAR.
bool is_atom_char(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c == 0x21 || c == 0x23 || c == 0x24 || c == 0x26 || c == 0x27 ||
         (c >= 0x2B && c <= 0x5B) || (c >= 0x5E && c <= 0x7A) || (c >= 0x7C && c <= 0x7E);
}

// interimap's list-mailbox atoms: [\x21\x23-\x27\x2A-\x5B\x5D-\x7A\x7C-\x7E].
bool is_pattern_atom_char(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c == 0x21 || (c >= 0x23 && c <= 0x27) || (c >= 0x2A && c <= 0x5B) ||
         (c >= 0x5D && c <= 0x7A) || (c >= 0x7C && c <= 0x7E);
}

// Inside list-mailbox quotes: [\x20\x21\x23-\x5B\x5D-\x7E].
bool is_pattern_quoted_char(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c == 0x20 || c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
}

// The words of a list separated by single spaces, with their offsets; an empty word marks a
// doubled space.
std::vector<std::pair<std::size_t, std::string_view>> single_space_words(std::string_view v) {
  std::vector<std::pair<std::size_t, std::string_view>> words;
  std::size_t start = 0;
  for (;;) {
    const std::size_t sp = v.find(' ', start);
    if (sp == std::string_view::npos) {
      words.emplace_back(start, v.substr(start));
      return words;
    }
    words.emplace_back(start, v.substr(start, sp - start));
    start = sp + 1;
  }
}

// ---- per-key value checks (InterIMAP's %OPTIONS and interimap's extra regexes) ----

std::optional<Problem> empty_problem() { return Problem{"value must not be empty", 0, 1}; }

// \P{Control}*: no C0 control, DEL or C1 control. InterIMAP matches bytes, so it also refuses
// UTF-8 continuation bytes 0x80-0x9F; we refuse only U+0080-U+009F proper.
std::optional<Problem> check_text_or_empty(std::string_view v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c < 0x20 || c == 0x7f) return Problem{"control character in value", i, 1};
    if (c == 0xC2 && i + 1 < v.size()) {
      const auto d = static_cast<unsigned char>(v[i + 1]);
      if (d >= 0x80 && d <= 0x9F) return Problem{"control character in value", i, 2};
    }
  }
  return std::nullopt;
}

std::optional<Problem> check_text(std::string_view v) {
  if (v.empty()) return empty_problem();
  return check_text_or_empty(v);
}

// [\x01-\x7F]+ (username, password).
std::optional<Problem> check_ascii(std::string_view v) {
  if (v.empty()) return empty_problem();
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c == 0 || c > 0x7f) return Problem{"only ASCII characters are allowed", i, 1};
  }
  return std::nullopt;
}

// [\x01-\x09\x0B\x0C\x0E-\x7F]* (list-reference, list-mailbox, ignore-mailbox).
std::optional<Problem> check_ascii_line_or_empty(std::string_view v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c == 0 || c == '\n' || c == '\r' || c > 0x7f) {
      return Problem{"only ASCII characters are allowed", i, 1};
    }
  }
  return std::nullopt;
}

std::optional<Problem> check_ascii_line(std::string_view v) {
  if (v.empty()) return empty_problem();
  return check_ascii_line_or_empty(v);
}

// ignore-mailbox is a PCRE (InterIMAP matches it with Perl): compiled here so that a bad pattern
// is a config error with its position, before anything (the state database included) is touched.
std::optional<Problem> check_pcre(std::string_view v) {
  if (auto p = check_ascii_line(v)) return p;
  auto pattern = MailboxPattern::compile(v);
  if (pattern) return std::nullopt;
  return Problem{fmt::format("not a valid regular expression (PCRE): {}", pattern.error().message),
                 std::min<std::size_t>(pattern.error().offset, v.empty() ? 0 : v.size() - 1), 1};
}

std::optional<Problem> check_yes_no(std::string_view v) {
  if (is_ascii_upper_eq(v, "YES") || is_ascii_upper_eq(v, "NO")) return std::nullopt;
  return Problem{"expected YES or NO"};
}

std::optional<Problem> check_type(std::string_view v) {
  if (v == "imap" || v == "imaps" || v == "tunnel") return std::nullopt;
  return Problem{"expected imap, imaps or tunnel"};
}

std::optional<Problem> check_change_detection(std::string_view v) {
  if (v == "auto" || v == "qresync" || v == "condstore" || v == "plain") return std::nullopt;
  return Problem{"expected auto, qresync, condstore or plain"};
}

// Octets per command line: Microsoft 365 answers "BAD Command Error. 10" to long ones.
constexpr std::size_t kMinCommandLine = 1000, kMaxCommandLine = 1 << 20;

std::optional<Problem> check_command_line(std::string_view v) {
  std::size_t n = 0;
  const bool digits = !v.empty() && v.size() <= 8 &&
                      std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) n = std::stoul(std::string(v));
  if (!digits || n < kMinCommandLine || n > kMaxCommandLine) {
    return Problem{
        fmt::format("expected a number of octets from {} to {}", kMinCommandLine, kMaxCommandLine)};
  }
  return std::nullopt;
}

// Seconds a password-command or token-command may run.
std::optional<Problem> check_command_timeout(std::string_view v) {
  const bool digits = !v.empty() && v.size() <= 4 &&
                      std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || std::stoul(std::string(v)) < 1 || std::stoul(std::string(v)) > 3600) {
    return Problem{"expected a number of seconds from 1 to 3600"};
  }
  return std::nullopt;
}

std::optional<Problem> check_proxy(std::string_view v) {
  if (auto p = check_text(v)) return p;
  auto parsed = parse_proxy(v);
  if (!parsed) return Problem{parsed.error().message, parsed.error().offset, 1};
  return std::nullopt;
}

std::optional<Problem> check_host(std::string_view v) {
  if (auto p = check_text(v)) return p;
  if (v.size() >= 2 && v.front() == '[' && v.back() == ']' && !host_ip_literal(v)) {
    return Problem{"a host in brackets must be an IPv4 or IPv6 address"};
  }
  return std::nullopt;
}

std::optional<Problem> check_auth(std::string_view v) {
  if (v.empty()) return empty_problem();
  for (const auto& [pos, word] : single_space_words(v)) {
    if (word.empty()) return Problem{"mechanisms must be separated by single spaces", pos, 1};
    for (std::size_t i = 0; i < word.size(); ++i) {
      if (!is_atom_char(word[i])) return Problem{"invalid character in mechanism name", pos + i, 1};
    }
    const std::string upper = to_upper(word);
    if (upper != "PLAIN" && upper != "LOGIN" && !is_oauth_mechanism(upper)) {
      return Problem{fmt::format("unsupported authentication mechanism '{}': twinbox supports "
                                 "PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER",
                                 word),
                     pos, word.size()};
    }
  }
  return std::nullopt;
}

// (?:[A-Za-z0-9]+\$)?\p{AHex}+ separated by single spaces. No colons: InterIMAP's regex refuses
// them although its matching code would strip them.
std::optional<Problem> check_fingerprints(std::string_view v) {
  if (v.empty()) return empty_problem();
  for (const auto& [pos, word] : single_space_words(v)) {
    const Problem bad{"expected [ALGORITHM$]HEXDIGEST fingerprints separated by single spaces", pos,
                      std::max<std::size_t>(word.size(), 1)};
    if (word.empty()) return bad;
    std::string_view hex = word;
    if (const std::size_t dollar = word.find('$'); dollar != std::string_view::npos) {
      const std::string_view algo = word.substr(0, dollar);
      if (algo.empty() || !std::all_of(algo.begin(), algo.end(), is_alnum)) return bad;
      hex = word.substr(dollar + 1);
    }
    if (hex.empty() || !std::all_of(hex.begin(), hex.end(), is_hex)) return bad;
  }
  return std::nullopt;
}

bool is_ssl_version(std::string_view v) {
  return v == "SSLv3" || v == "TLSv1" || v == "TLSv1.1" || v == "TLSv1.2" || v == "TLSv1.3";
}

// InterIMAP accepts any text and panics at handshake time on an unknown version.
std::optional<Problem> check_ssl_version(std::string_view v) {
  if (is_ssl_version(v)) return std::nullopt;
  return Problem{"expected SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3"};
}

// !?(?:SSLv[23]|TLSv1|TLSv1\.[0-3]) separated by single spaces.
std::optional<Problem> check_ssl_protocols(std::string_view v) {
  if (v.empty()) return empty_problem();
  for (auto [pos, word] : single_space_words(v)) {
    const std::size_t len = std::max<std::size_t>(word.size(), 1);
    if (!word.empty() && word.front() == '!') word.remove_prefix(1);
    if (!(word == "SSLv2" || word == "TLSv1.0" || is_ssl_version(word))) {
      return Problem{
          "expected protocol versions such as TLSv1.2 or !TLSv1.1, separated by single "
          "spaces",
          pos, len};
    }
  }
  return std::nullopt;
}

std::optional<Problem> check_logfile(std::string_view v) {
  if (v.empty()) return empty_problem();
  if (v.front() != '/' || v.size() < 2) return Problem{"the log file must be an absolute path"};
  return check_text_or_empty(v);
}

// [\x20\x21\x23\x24\x26\x27\x2B-\x5B\x5E-\x7A\x7C-\x7E]*: atom characters and spaces.
std::optional<Problem> check_list_select_opts(std::string_view v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != ' ' && !is_atom_char(v[i])) {
      return Problem{"invalid character in selection options", i, 1};
    }
  }
  return std::nullopt;
}

std::optional<Problem> check_list_mailbox(std::string_view v) {
  if (auto p = check_ascii_line(v)) return p;
  auto patterns = parse_list_mailbox(v);
  if (!patterns) {
    return Problem{"expected mailbox patterns, or \"quoted\" patterns, separated by spaces",
                   patterns.error().offset, 1};
  }
  return std::nullopt;
}

struct KeySpec {
  std::string_view key;
  Check check;
  bool default_only;  // only read from the default section (InterIMAP accepts it anywhere)
  bool secret;        // never echo the value
};

constexpr KeySpec kKeys[] = {
    // interimap's own keys.
    {"database", check_text, true, false},
    {"list-mailbox", check_list_mailbox, true, false},
    {"list-select-opts", check_list_select_opts, true, false},
    {"ignore-mailbox", check_pcre, true, false},
    {"logfile", check_logfile, true, false},
    {"log-prefix", check_text_or_empty, true, false},
    {"list-reference", check_ascii_line_or_empty, false, false},
    // Net::IMAP::InterIMAP connection keys.
    {"type", check_type, false, false},
    {"host", check_host, false, false},
    {"port", check_text, false, false},
    // Its user:password part is a secret: values are never echoed.
    {"proxy", check_proxy, false, true},
    {"command", check_text, false, false},
    {"STARTTLS", check_yes_no, false, false},
    {"auth", check_auth, false, false},
    {"username", check_ascii, false, false},
    {"password", check_ascii, false, true},
    {"compress", check_yes_no, false, false},
    {"null-stderr", check_yes_no, false, false},
    {"SSL_protocols", check_ssl_protocols, false, false},
    {"SSL_protocol_min", check_ssl_version, false, false},
    {"SSL_protocol_max", check_ssl_version, false, false},
    {"SSL_cipherlist", check_text, false, false},
    {"SSL_ciphersuites", check_text_or_empty, false, false},
    {"SSL_fingerprint", check_fingerprints, false, false},
    {"SSL_verify", check_yes_no, false, false},
    {"SSL_CAfile", check_text, false, false},
    {"SSL_CApath", check_text, false, false},
    {"SSL_hostname", check_text_or_empty, false, false},
    // twinbox extension. The command may embed a secret (`echo hunter2`): never echoed either.
    {"password-command", check_text, false, true},
    {"change-detection", check_change_detection, false, false},
    {"max-command-line", check_command_line, false, false},
    {"token-command", check_text, false, true},
    {"credential-command-timeout", check_command_timeout, false, false},
};

const KeySpec* find_key(std::string_view key) {
  for (const auto& spec : kKeys) {
    if (spec.key == key) return &spec;
  }
  return nullptr;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The known key `key` was probably meant as: case-insensitively within two edits, or a prefix of
// at least four characters ("user" for "username").
const KeySpec* suggest_key(std::string_view key) {
  const std::string lower = to_lower(key);
  const KeySpec* best = nullptr;
  std::size_t best_score = 3;
  for (const auto& spec : kKeys) {
    const std::string candidate = to_lower(spec.key);
    std::size_t score = edit_distance(lower, candidate);
    if (lower.size() >= 4 && candidate.starts_with(lower)) score = std::min<std::size_t>(score, 2);
    if (score < best_score && score < lower.size()) {
      best = &spec;
      best_score = score;
    }
  }
  return best;
}

std::string where(std::string_view section) {
  return section == kDefaultSection ? std::string("the default section")
                                    : fmt::format("[{}]", section);
}

std::string redacted_line(const IniEntry& e) {
  return e.text.substr(0, e.value_pos) + "<redacted>" + e.text.substr(e.value_pos + e.value.size());
}

bool looks_secret(std::string_view key) { return to_lower(key).find("pass") != std::string::npos; }

Error unknown_key_error(const std::string& file, std::string_view section, const IniEntry& e) {
  std::string message = fmt::format("unknown key '{}' in {}", e.key, where(section));
  const KeySpec* hint = suggest_key(e.key);
  if (hint != nullptr) message += fmt::format(" (did you mean '{}'?)", hint->key);
  const bool secret = looks_secret(e.key) || (hint != nullptr && hint->secret);
  return Error(Errc::config, diagnostic(file, e.line, message, secret ? redacted_line(e) : e.text,
                                        e.key_pos, e.key.size()));
}

Error value_error(const std::string& file, std::string_view section, const IniEntry& e,
                  const KeySpec& spec, const Problem& p) {
  const std::string message =
      fmt::format("invalid value for '{}' in {}: {}", e.key, where(section), p.detail);
  if (spec.secret) {
    return Error(Errc::config,
                 diagnostic(file, e.line, message, redacted_line(e), e.value_pos, 10));
  }
  const std::size_t len = p.len != 0 ? p.len : std::max<std::size_t>(e.value.size(), 1);
  return Error(Errc::config, diagnostic(file, e.line, message, e.text, e.value_pos + p.pos, len));
}

void warn_at(const std::string& file, int line, std::string_view message) {
  log_warning("{}:{}: {}", file, line, message);
}

bool yes(std::string_view v) { return is_ascii_upper_eq(v, "YES"); }

std::vector<std::string> words_of(std::string_view v) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < v.size()) {
    while (i < v.size() && is_perl_space(v[i])) ++i;
    std::size_t j = i;
    while (j < v.size() && !is_perl_space(v[j])) ++j;
    if (j > i) out.emplace_back(v.substr(i, j - i));
    i = j;
  }
  return out;
}

struct Source {
  const IniEntry* entry;
  bool inherited;  // from the default section
};

// A side: the default section overridden by [local] or [remote], typed.
Result<EndpointConfig> build_endpoint(const std::string& file, std::string_view name,
                                      const IniSection* defaults, const IniSection& section) {
  std::map<std::string, Source, std::less<>> merged;
  if (defaults != nullptr) {
    for (const auto& e : defaults->entries) merged[e.key] = Source{&e, true};
  }
  for (const auto& e : section.entries) merged[e.key] = Source{&e, false};

  // password and password-command exclude each other; the section's own one beats an inherited
  // one, so a global password-command can be overridden by a password for one side.
  auto pw = merged.find("password");
  auto pwc = merged.find("password-command");
  if (pw != merged.end() && pwc != merged.end()) {
    if (pw->second.inherited == pwc->second.inherited) {
      const IniEntry& later =
          *(pw->second.entry->line > pwc->second.entry->line ? pw : pwc)->second.entry;
      return Error(Errc::config,
                   diagnostic(file, later.line,
                              fmt::format("'password' and 'password-command' are mutually "
                                          "exclusive in {}",
                                          where(pw->second.inherited ? kDefaultSection : name)),
                              redacted_line(later), later.key_pos, later.key.size()));
    }
    merged.erase(pw->second.inherited ? pw : pwc);
  }

  EndpointConfig ep;
  ep.name = std::string(name);
  ep.compress = name == "remote";
  bool port_set = false;
  for (const auto& [key, source] : merged) {
    const std::string& v = source.entry->value;
    ep.lines[key] = source.entry->line;
    if (key == "type") {
      ep.type = v == "imap"     ? EndpointType::imap
                : v == "tunnel" ? EndpointType::tunnel
                                : EndpointType::imaps;
    } else if (key == "host") {
      ep.host = v;
    } else if (key == "port") {
      ep.port = v;
      port_set = true;
    } else if (key == "command") {
      ep.command = v;
    } else if (key == "STARTTLS") {
      ep.starttls = yes(v);
    } else if (key == "compress") {
      ep.compress = yes(v);
    } else if (key == "null-stderr") {
      ep.null_stderr = yes(v);
    } else if (key == "auth") {
      ep.auth.clear();
      for (const auto& w : words_of(v)) ep.auth.push_back(to_upper(w));
    } else if (key == "username") {
      ep.username = v;
    } else if (key == "password") {
      ep.password = v;
    } else if (key == "password-command") {
      ep.password_command = v;
    } else if (key == "proxy") {
      ep.proxy = v;
      ep.proxy_uri = *parse_proxy(v);
    } else if (key == "token-command") {
      ep.token_command = v;
    } else if (key == "credential-command-timeout") {
      ep.command_timeout = std::chrono::seconds(std::stoul(v));
    } else if (key == "SSL_verify") {
      ep.ssl_verify = yes(v);
    } else if (key == "SSL_fingerprint") {
      ep.ssl_fingerprints = words_of(v);
    } else if (key == "SSL_protocol_min") {
      ep.ssl_protocol_min = v;
    } else if (key == "SSL_protocol_max") {
      ep.ssl_protocol_max = v;
    } else if (key == "SSL_protocols") {
      ep.ssl_protocols = words_of(v);
    } else if (key == "SSL_cipherlist") {
      ep.ssl_cipherlist = v;
    } else if (key == "SSL_ciphersuites") {
      ep.ssl_ciphersuites = v;
    } else if (key == "SSL_hostname") {
      ep.ssl_hostname = v;
    } else if (key == "SSL_CAfile") {
      ep.ssl_ca_file = v;
    } else if (key == "SSL_CApath") {
      ep.ssl_ca_path = v;
    } else if (key == "list-reference") {
      ep.list_reference = v;
    } else if (key == "change-detection") {
      ep.change_detection = v;
    } else if (key == "max-command-line") {
      ep.max_command_line = std::stoul(v);
    }
    // Default-section-only keys inherited here are not per-side settings.
  }
  if (!port_set) {
    ep.port = ep.type == EndpointType::imaps ? "993" : ep.type == EndpointType::imap ? "143" : "";
  }
  const bool oauth = std::any_of(ep.auth.begin(), ep.auth.end(), is_oauth_mechanism);
  if (oauth && !ep.token_command) {
    const IniEntry& auth = *merged.at("auth").entry;
    return Error(Errc::config,
                 diagnostic(file, auth.line,
                            fmt::format("XOAUTH2 and OAUTHBEARER need a 'token-command' in {} (a "
                                        "command that prints an access token)",
                                        where(name)),
                            auth.text, auth.value_pos, auth.value.size()));
  }
  if (!oauth && ep.token_command && !merged.at("token-command").inherited) {
    warn_at(file, ep.line_of("token-command"),
            fmt::format("token-command in {} is not used: auth names neither XOAUTH2 nor "
                        "OAUTHBEARER",
                        where(name)));
  }
  if (ep.type == EndpointType::tunnel && ep.command.empty()) {
    const IniEntry& type = *merged.at("type").entry;
    return Error(
        Errc::config,
        diagnostic(file, type.line, fmt::format("type=tunnel needs a 'command' in {}", where(name)),
                   type.text, type.value_pos, type.value.size()));
  }
  return ep;
}

std::string getenv_string(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

// A set XDG base directory, or HOME/fallback.
Result<std::string> xdg_base(const std::optional<std::string>& xdg, const Environment& env,
                             std::string_view fallback, std::string_view variable) {
  if (xdg) return *xdg;
  if (env.home) return fmt::format("{}/{}", *env.home, fallback);
  return Error(Errc::config,
               fmt::format("cannot locate ~/{}: neither {} nor HOME is set", fallback, variable));
}

}  // namespace

bool is_oauth_mechanism(std::string_view mechanism) {
  return mechanism == "XOAUTH2" || mechanism == "OAUTHBEARER";
}

Result<ProxyUri> parse_proxy(std::string_view uri) {
  const auto problem = [&](std::string message, std::size_t at) {
    return Error(Errc::config, std::move(message), std::string(), at);
  };
  ProxyUri out;
  const std::size_t colon_slashes = uri.find("://");
  if (colon_slashes == std::string_view::npos) {
    return problem("expected socks5://[user:password@]host[:port] or socks5h://...", 0);
  }
  const std::string_view scheme = uri.substr(0, colon_slashes);
  if (scheme == "socks5h") {
    out.proxy_resolves = true;
  } else if (scheme != "socks5") {
    return problem(fmt::format("unsupported proxy scheme '{}': use socks5 or socks5h", scheme), 0);
  }
  std::size_t at = colon_slashes + 3;
  std::string_view rest = uri.substr(at);
  if (const std::size_t last_at = rest.rfind('@'); last_at != std::string_view::npos) {
    const std::string_view userpass = rest.substr(0, last_at);
    const std::size_t colon = userpass.find(':');
    out.username = std::string(userpass.substr(0, colon));
    if (colon != std::string_view::npos) out.password = std::string(userpass.substr(colon + 1));
    if (out.username.empty() || out.username.size() > 255 || out.password.size() > 255) {
      return problem("proxy user name must be 1 to 255 octets, and the password at most 255", at);
    }
    at += last_at + 1;
    rest = rest.substr(last_at + 1);
  }
  std::size_t host_end = 0;
  if (!rest.empty() && rest.front() == '[') {
    host_end = rest.find(']');
    if (host_end == std::string_view::npos || !host_ip_literal(rest.substr(0, host_end + 1))) {
      return problem("a proxy host in brackets must be an IPv6 or IPv4 address", at);
    }
    out.host = std::string(rest.substr(1, host_end - 1));
    ++host_end;
  } else {
    host_end = std::min(rest.find(':'), rest.size());
    out.host = std::string(rest.substr(0, host_end));
  }
  if (out.host.empty()) return problem("the proxy URI has no host", at);
  if (host_end < rest.size()) {
    const std::string_view port = rest.substr(host_end + 1);
    const bool alnum = !port.empty() && std::all_of(port.begin(), port.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    });
    if (rest[host_end] != ':' || !alnum) {
      return problem("expected ':' and a port number or service name after the proxy host",
                     at + host_end);
    }
    out.port = std::string(port);
  }
  return out;
}

std::string_view to_string(EndpointType type) {
  switch (type) {
    case EndpointType::imap:
      return "imap";
    case EndpointType::imaps:
      return "imaps";
    case EndpointType::tunnel:
      return "tunnel";
  }
  return "?";
}

int EndpointConfig::line_of(std::string_view key) const {
  auto it = lines.find(key);
  return it == lines.end() ? 0 : it->second;
}

int Config::line_of(std::string_view key) const {
  auto it = lines.find(key);
  return it == lines.end() ? 0 : it->second;
}

Environment Environment::from_process() {
  Environment env;
  auto absolute = [](std::string v) -> std::optional<std::string> {
    if (v.empty() || v.front() != '/') return std::nullopt;
    return v;
  };
  if (std::string home = getenv_string("HOME"); !home.empty()) env.home = home;
  env.xdg_config_home = absolute(getenv_string("XDG_CONFIG_HOME"));
  env.xdg_data_home = absolute(getenv_string("XDG_DATA_HOME"));
  return env;
}

Result<std::string> resolve_config_path(std::string_view path, const Environment& env) {
  if (path.empty()) path = "config";
  if (path.front() == '/') return std::string(path);
  if (path == "~" || path.starts_with("~/")) {
    if (!env.home) {
      return Error(Errc::config, fmt::format("cannot expand '{}': HOME is not set", path));
    }
    return *env.home + std::string(path.substr(1));
  }
  auto base = xdg_base(env.xdg_config_home, env, ".config", "XDG_CONFIG_HOME");
  if (!base) return std::move(base).error();
  return fmt::format("{}/twinbox/{}", *base, path);
}

Result<std::string> resolve_data_path(std::string_view path, const Environment& env,
                                      std::string_view program) {
  if (!path.empty() && path.front() == '/') return std::string(path);
  auto base = xdg_base(env.xdg_data_home, env, ".local/share", "XDG_DATA_HOME");
  if (!base) return std::move(base).error();
  return fmt::format("{}/{}/{}", *base, program, path);
}

Result<std::vector<std::string>> parse_list_mailbox(std::string_view v) {
  std::vector<std::string> patterns;
  std::size_t i = 0;
  // interimap: do { atom | "quoted" } while (s/\A\s+//); then nothing may be left.
  for (;;) {
    if (i < v.size() && is_pattern_atom_char(v[i])) {
      const std::size_t start = i;
      while (i < v.size() && is_pattern_atom_char(v[i])) ++i;
      patterns.emplace_back(v.substr(start, i - start));
    } else if (i < v.size() && v[i] == '"') {
      std::string pattern;
      std::size_t j = i + 1;
      while (j < v.size()) {
        if (is_pattern_quoted_char(v[j])) {
          pattern += v[j++];
          continue;
        }
        if (v[j] != '\\' || j + 1 >= v.size()) break;
        const char e = v[j + 1];
        // Perl string escapes; Perl has no "\v", which therefore stands for a plain 'v'.
        static constexpr std::string_view kFrom = "\"\\0abtnvfr";
        static constexpr std::string_view kTo{"\"\\\0\a\b\t\nv\f\r", 10};
        if (const std::size_t k = kFrom.find(e); k != std::string_view::npos) {
          pattern += kTo[k];
          j += 2;
        } else if (e == 'x' && j + 3 < v.size() && is_hex(v[j + 2]) && is_hex(v[j + 3])) {
          pattern += static_cast<char>(std::stoi(std::string(v.substr(j + 2, 2)), nullptr, 16));
          j += 4;
        } else {
          break;
        }
      }
      if (j == i + 1) break;  // "" is not a pattern
      if (j >= v.size() || v[j] != '"') break;
      patterns.push_back(std::move(pattern));
      i = j + 1;
    }
    if (i >= v.size() || !is_perl_space(v[i])) break;
    while (i < v.size() && is_perl_space(v[i])) ++i;
  }
  if (i != v.size()) {
    return Error(Errc::config, "invalid mailbox pattern", std::string(v), i);
  }
  return patterns;
}

namespace {

// InterIMAP's conditional grammar (_logger_prefix): a branch is a run of
//   [^%&?\\] | %[^?] | \\[&?\\]   or a nested conditional,
// and a conditional is %?X?then? or %?X?then&else?. The Perl regex is deterministic on this
// grammar, so a recursive descent finds exactly its matches.
struct Conditional {
  std::size_t end;
  char letter;
  std::string_view then_branch, else_branch;
};

constexpr int kMaxNesting = 64;

std::size_t plain_token(std::string_view s, std::size_t i) {
  const char c = s[i];
  if (c == '%') return i + 1 < s.size() && s[i + 1] != '?' ? 2 : 0;
  if (c == '\\') {
    return i + 1 < s.size() && (s[i + 1] == '&' || s[i + 1] == '?' || s[i + 1] == '\\') ? 2 : 0;
  }
  return c == '&' || c == '?' ? 0 : 1;
}

std::optional<Conditional> match_conditional(std::string_view s, std::size_t i, int depth);

std::size_t match_branch(std::string_view s, std::size_t i, int depth) {
  while (i < s.size()) {
    if (const std::size_t n = plain_token(s, i)) {
      i += n;
    } else if (auto c = match_conditional(s, i, depth + 1)) {
      i = c->end;
    } else {
      break;
    }
  }
  return i;
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::optional<Conditional> match_conditional(std::string_view s, std::size_t i, int depth) {
  if (depth > kMaxNesting || i + 4 > s.size() || s[i] != '%' || s[i + 1] != '?' ||
      !is_alpha(s[i + 2]) || s[i + 3] != '?') {
    return std::nullopt;
  }
  const std::size_t then_begin = i + 4;
  const std::size_t then_end = match_branch(s, then_begin, depth);
  if (then_end < s.size() && s[then_end] == '?') {
    return Conditional{then_end + 1, s[i + 2], s.substr(then_begin, then_end - then_begin), {}};
  }
  if (then_end < s.size() && s[then_end] == '&') {
    const std::size_t else_begin = then_end + 1;
    const std::size_t else_end = match_branch(s, else_begin, depth);
    if (else_end < s.size() && s[else_end] == '?') {
      return Conditional{else_end + 1, s[i + 2], s.substr(then_begin, then_end - then_begin),
                         s.substr(else_begin, else_end - else_begin)};
    }
  }
  return std::nullopt;
}

}  // namespace

std::string expand_log_prefix(std::string_view format, std::string_view name,
                              std::string_view mailbox) {
  auto value_of = [&](char letter) -> std::string_view {
    return letter == 'n' ? name : letter == 'm' ? mailbox : std::string_view();
  };
  // Rewrite conditionals until none is left: each pass replaces the outermost ones by the chosen
  // branch, whose own conditionals the next pass handles.
  std::string text(format);
  for (bool changed = true; changed;) {
    changed = false;
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if (auto c = match_conditional(text, i, 0)) {
        out += value_of(c->letter).empty() ? c->else_branch : c->then_branch;
        i = c->end;
        changed = true;
      } else {
        out += text[i++];
      }
    }
    text = std::move(out);
  }
  // Then unescape \& \? \\, then expand %% %n %m, each left to right.
  std::string unescaped;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() &&
        (text[i + 1] == '&' || text[i + 1] == '?' || text[i + 1] == '\\')) {
      ++i;
    }
    unescaped += text[i];
  }
  std::string out;
  for (std::size_t i = 0; i < unescaped.size(); ++i) {
    const char next = i + 1 < unescaped.size() ? unescaped[i + 1] : '\0';
    if (unescaped[i] == '%' && (next == '%' || next == 'n' || next == 'm')) {
      out += next == '%' ? std::string_view("%") : value_of(next);
      ++i;
    } else {
      out += unescaped[i];
    }
  }
  return out;
}

std::optional<std::string> host_ip_literal(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string h(host);
  unsigned char buf[16];
  if (::inet_pton(AF_INET, h.c_str(), buf) == 1 || ::inet_pton(AF_INET6, h.c_str(), buf) == 1) {
    return h;
  }
  return std::nullopt;
}

Result<Config> parse_config(std::string_view text, const std::string& file_name,
                            const Environment& env) {
  auto parsed = parse_ini(text, file_name);
  if (!parsed) return std::move(parsed).error();
  const IniFile& ini = *parsed;

  const IniSection* defaults = ini.find(kDefaultSection);
  const IniSection* local = ini.find("local");
  const IniSection* remote = ini.find("remote");

  // Check every key where it is written, in file order, so the first error is the first line.
  std::vector<std::pair<const IniSection*, const IniEntry*>> entries;
  for (const auto& section : ini.sections) {
    if (&section != defaults && &section != local && &section != remote) {
      warn_at(file_name, section.line, fmt::format("ignoring unknown section [{}]", section.name));
      continue;
    }
    for (const auto& e : section.entries) entries.emplace_back(&section, &e);
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.second->line < b.second->line; });
  for (const auto& [section, e] : entries) {
    const KeySpec* spec = find_key(e->key);
    if (spec == nullptr) return unknown_key_error(file_name, section->name, *e);
    if (auto problem = spec->check(e->value)) {
      return value_error(file_name, section->name, *e, *spec, *problem);
    }
    if (e->overridden_line != 0) {
      warn_at(file_name, e->line,
              fmt::format("'{}' set again in {}; the value from line {} is ignored", e->key,
                          where(section->name), e->overridden_line));
    }
    if (spec->default_only && section != defaults) {
      warn_at(file_name, e->line,
              fmt::format("'{}' is only read from the default section; ignored in {}", e->key,
                          where(section->name)));
    }
    if (e->key == "SSL_protocols") {
      warn_at(file_name, e->line,
              "SSL_protocols is deprecated; use SSL_protocol_min and SSL_protocol_max");
    }
  }

  if (local == nullptr) return Error(Errc::config, diagnostic(file_name, 0, "no [local] section"));
  if (remote == nullptr) {
    return Error(Errc::config, diagnostic(file_name, 0, "no [remote] section"));
  }

  Config config;
  config.file = file_name;
  auto l = build_endpoint(file_name, "local", defaults, *local);
  if (!l) return std::move(l).error();
  auto r = build_endpoint(file_name, "remote", defaults, *remote);
  if (!r) return std::move(r).error();
  config.local = std::move(*l);
  config.remote = std::move(*r);

  const IniEntry* database = nullptr;
  config.log_prefix = kDefaultLogPrefix;
  if (defaults != nullptr) {
    for (const auto& e : defaults->entries) {
      config.lines[e.key] = e.line;
      if (e.key == "database") {
        database = &e;
      } else if (e.key == "list-mailbox") {
        config.list_mailbox = *parse_list_mailbox(e.value);  // checked above
      } else if (e.key == "list-select-opts") {
        config.list_select_opts.clear();
        for (const auto& w : words_of(e.value)) config.list_select_opts.push_back(to_upper(w));
      } else if (e.key == "ignore-mailbox") {
        config.ignore_mailbox = e.value;
      } else if (e.key == "logfile") {
        config.logfile = e.value;
      } else if (e.key == "log-prefix") {
        config.log_prefix = e.value;
      }
    }
  }
  // Default: HOST.db after the remote host (which defaults to localhost, even for a tunnel).
  auto db =
      resolve_data_path(database != nullptr ? database->value : config.remote.host + ".db", env);
  if (!db) {
    return Error(Errc::config,
                 database != nullptr
                     ? diagnostic(file_name, database->line, db.error().message, database->text,
                                  database->value_pos, database->value.size())
                     : diagnostic(file_name, 0, db.error().message));
  }
  config.database = std::move(*db);
  auto interimap = resolve_data_path(
      database != nullptr ? database->value : config.remote.host + ".db", env, "interimap");
  if (interimap) config.interimap_database = std::move(*interimap);
  return config;
}

Result<Config> load_config(const std::string& path, const Environment& env) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return Error(Errc::config, err == ENOENT ? fmt::format("{}: no such configuration file", path)
                                             : fmt::format("{}: cannot open configuration file: {}",
                                                           path, std::strerror(err)));
  }
  struct stat st {};
  std::string text;
  int read_errno = 0;
  if (::fstat(fd, &st) != 0) {
    read_errno = errno;
  } else if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(Errc::config, fmt::format("{}: not a regular file", path));
  } else {
    char buf[8192];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) read_errno = errno;
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  if (read_errno != 0) {
    return Error(Errc::config, fmt::format("{}: cannot read configuration file: {}", path,
                                           std::strerror(read_errno)));
  }

  auto config = parse_config(text, path, env);
  if (!config) return config;
  const bool has_password = config->local.password || config->remote.password;
  if (has_password && (st.st_mode & 077) != 0) {
    log_warning(
        "{} contains a password and can be read by other users (mode {:04o}); run 'chmod 600 "
        "{}' or use password-command",
        path, st.st_mode & 07777, path);
  }
  for (const auto* side : {&config->local, &config->remote}) {
    if (side->password) Log::instance().add_secret(*side->password);
    if (side->proxy_uri && !side->proxy_uri->password.empty()) {
      Log::instance().add_secret(side->proxy_uri->password);
    }
  }
  return config;
}

namespace {

std::string redact_proxy(std::string_view uri) {
  // scheme://user:pass@host:port: hide the credentials.
  const std::size_t scheme = uri.find("://");
  const std::size_t at = uri.rfind('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos || at < scheme) {
    return std::string(uri);
  }
  return fmt::format("{}<redacted>{}", uri.substr(0, scheme + 3), uri.substr(at));
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

}  // namespace

std::string to_string(const EndpointConfig& e) {
  std::string out = fmt::format("[{}]\n", e.name);
  auto line = [&](std::string_view key, std::string_view value) {
    out += fmt::format("{} = {}\n", key, value);
  };
  auto yes_no = [](bool b) { return b ? "YES" : "NO"; };
  line("type", to_string(e.type));
  if (e.type == EndpointType::tunnel) {
    line("command", e.command);
    line("null-stderr", yes_no(e.null_stderr));
  } else {
    line("host", e.host);
    line("port", e.port);
    if (e.proxy) line("proxy", redact_proxy(*e.proxy));
    if (e.type == EndpointType::imap) line("STARTTLS", yes_no(e.starttls));
  }
  line("auth", join(e.auth));
  if (!e.username.empty()) line("username", e.username);
  if (e.password) line("password", "<redacted>");
  if (e.password_command) line("password-command", "<redacted>");
  if (e.token_command) line("token-command", "<redacted>");
  line("compress", yes_no(e.compress));
  if (!e.list_reference.empty()) line("list-reference", e.list_reference);
  if (e.change_detection != "auto") line("change-detection", e.change_detection);
  if (e.max_command_line) line("max-command-line", std::to_string(*e.max_command_line));
  if (e.type != EndpointType::tunnel) {
    line("SSL_verify", yes_no(e.ssl_verify));
    if (!e.ssl_fingerprints.empty()) line("SSL_fingerprint", join(e.ssl_fingerprints));
    if (!e.ssl_protocol_min.empty()) line("SSL_protocol_min", e.ssl_protocol_min);
    if (!e.ssl_protocol_max.empty()) line("SSL_protocol_max", e.ssl_protocol_max);
    if (!e.ssl_protocols.empty()) line("SSL_protocols", join(e.ssl_protocols));
    if (!e.ssl_cipherlist.empty()) line("SSL_cipherlist", e.ssl_cipherlist);
    if (e.ssl_ciphersuites) line("SSL_ciphersuites", *e.ssl_ciphersuites);
    if (e.ssl_hostname) line("SSL_hostname", *e.ssl_hostname);
    if (!e.ssl_ca_file.empty()) line("SSL_CAfile", e.ssl_ca_file);
    if (!e.ssl_ca_path.empty()) line("SSL_CApath", e.ssl_ca_path);
  }
  return out;
}

std::string to_string(const Config& c) {
  std::string out = fmt::format("# {}\ndatabase = {}\n", c.file, c.database);
  std::string patterns;
  for (const auto& p : c.list_mailbox) {
    if (!patterns.empty()) patterns += ' ';
    patterns += '"';
    for (const char ch : p) {
      const auto u = static_cast<unsigned char>(ch);
      if (ch == '"' || ch == '\\') {
        patterns += '\\';
        patterns += ch;
      } else if (u < 0x20 || u == 0x7f) {
        patterns += fmt::format("\\x{:02x}", u);
      } else {
        patterns += ch;
      }
    }
    patterns += '"';
  }
  out += fmt::format("list-mailbox = {}\n", patterns);
  if (!c.list_select_opts.empty()) {
    out += fmt::format("list-select-opts = {}\n", join(c.list_select_opts));
  }
  if (c.ignore_mailbox) out += fmt::format("ignore-mailbox = {}\n", *c.ignore_mailbox);
  if (c.logfile) out += fmt::format("logfile = {}\n", *c.logfile);
  out += fmt::format("log-prefix = {}\n\n", c.log_prefix);
  out += to_string(c.local);
  out += '\n';
  out += to_string(c.remote);
  return out;
}

}  // namespace twinbox::config
