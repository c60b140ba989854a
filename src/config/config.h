// InterIMAP-compatible configuration: the same file, keys, defaults, inheritance and validation
// (InterIMAP's behaviour, as in InterIMAP.pm read_config and %OPTIONS, interimap's own option
// regexes and the interimap(1) CONFIGURATION FILE section), read into typed settings.
//
// Shape of the file: keys before any section form the default section; [local] and [remote]
// are both mandatory, and each starts from a copy of the default section that its own keys then
// override. Every key must be known and its value must pass InterIMAP's per-key check; a file
// InterIMAP accepts is accepted here, with the exceptions listed under "Stricter than InterIMAP".
//
// Errors are Errc::config and ninja-style: "file:line: reason", the offending line, and a caret
// under the offending part. Secrets (password values) are never echoed in errors or by
// to_string().
//
// twinbox extensions:
//   * password-command: a shell command whose first output line is the password
//     (run_password_command); mutually exclusive with password in the same section. A section's
//     own password or password-command replaces the other one inherited from the default section.
//   * token-command: a shell command whose first output line is an OAuth 2.0 access token, for
//     auth = XOAUTH2 / OAUTHBEARER; run at each login, so a helper that refreshes tokens works in
//     --watch. credential-command-timeout (seconds, default 60) bounds both commands.
//   * --config and the default paths live under twinbox/ instead of interimap/, and a leading
//     "~" or "~/" in --config is expanded from $HOME.
//
// Stricter than InterIMAP (it would fail later, at connect time, or send a broken command):
//   * auth lists only PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER (InterIMAP, which has only the first
//     two, fails only if an unsupported one is chosen);
//   * proxy must be a socks5:// or socks5h:// URI of InterIMAP's form (InterIMAP checks it when
//     connecting), with RFC 1929's 255-octet bounds on the credentials;
//   * SSL_protocol_min/max must name SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3;
//   * a bracketed host must be an IPv4 or IPv6 literal;
//   * type=tunnel needs a command.
// More lenient: values whose UTF-8 encoding contains bytes 0x80-0x9F (e.g. "…" in a command) are
// accepted; InterIMAP's \P{Control} treats such bytes as C1 controls. Only real controls (C0, DEL,
// U+0080-U+009F) are refused.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace twinbox::config {

enum class EndpointType { imap, imaps, tunnel };
std::string_view to_string(EndpointType type);

// InterIMAP's `proxy`: socks5://[user:pass@]host[:port] (this side resolves the IMAP server's
// name) or socks5h://... (the proxy resolves it); the port defaults to 1080 and may be a service
// name; an IPv6 proxy address goes in brackets. As InterIMAP reads it: the credentials run up to
// the last "@" and split at the first ":"; no percent-decoding.
struct ProxyUri {
  bool proxy_resolves = false;  // socks5h
  std::string host;             // without brackets
  std::string port = "1080";
  std::string username, password;  // RFC 1929; empty username: no authentication offered
};

// Errc::config with Error::offset at the offending byte. The two schemes are the only ones.
Result<ProxyUri> parse_proxy(std::string_view uri);

// XOAUTH2 or OAUTHBEARER (upper-case names), the mechanisms that take a token, not a password.
bool is_oauth_mechanism(std::string_view mechanism);

// One side: the merged [local] or [remote] settings.
struct EndpointConfig {
  std::string name;  // "local" or "remote"
  EndpointType type = EndpointType::imaps;
  std::string host = "localhost";  // as written; "[…]" forces an IP literal (see host_ip_literal)
  std::string port;                // "143"/"993" by type; may be a service name; "" for tunnel
  std::string command;             // type=tunnel: run via /bin/sh -c if it has metacharacters
  bool starttls = true;            // type=imap only: require STARTTLS
  bool compress = false;           // default NO for local, YES for remote
  bool null_stderr = false;        // type=tunnel: command's stderr to /dev/null (unless --debug)
  std::vector<std::string> auth{"PLAIN", "LOGIN"};  // upper-cased, in order of preference
  std::string username;                             // empty: unset
  std::optional<std::string> password;
  std::optional<std::string> password_command;
  std::optional<std::string> proxy;   // the SOCKS5 proxy URI as written (see parse_proxy)
  std::optional<ProxyUri> proxy_uri;  // the same, parsed
  // twinbox's `token-command`: prints an OAuth 2.0 access token for XOAUTH2/OAUTHBEARER; run at
  // each login. Required when auth names one of them.
  std::optional<std::string> token_command;
  // twinbox's `credential-command-timeout`: how long password-command and token-command may run.
  std::chrono::seconds command_timeout{60};

  // TLS (type=imaps, or imap with STARTTLS).
  bool ssl_verify = true;
  std::vector<std::string> ssl_fingerprints;       // "[ALGO$]HEX" SPKI digests, as written
  std::string ssl_protocol_min, ssl_protocol_max;  // "" or SSLv3 TLSv1 TLSv1.1 TLSv1.2 TLSv1.3
  std::vector<std::string> ssl_protocols;  // deprecated SSL_protocols words, e.g. "!TLSv1.1"
  std::string ssl_cipherlist;
  std::optional<std::string> ssl_ciphersuites;  // may be set to "" (an empty list)
  std::optional<std::string> ssl_hostname;      // SNI; "" disables; unset: host unless an IP
  std::string ssl_ca_file, ssl_ca_path;

  std::string list_reference;  // LIST reference name, default ""
  // twinbox's `change-detection`: the best tier of change detection to use on this side
  // ("qresync", "condstore" or "plain"); "auto" (the default): the best the server offers.
  std::string change_detection = "auto";
  // twinbox's `max-command-line`: octets per command line (UID sets are split to fit); unset:
  // the client's default (imap::kDefaultMaxLine).
  std::optional<std::size_t> max_command_line;

  // Line of the file where `key` got its value (in this section or inherited from the default
  // section); 0 for a default value.
  int line_of(std::string_view key) const;

  std::map<std::string, int, std::less<>> lines;  // key -> line, for line_of
};

struct Config {
  std::string file;      // the file name used in messages
  std::string database;  // resolved: absolute path of the SQLite state file
  // Where InterIMAP keeps its state for this same file: the same `database` value resolved
  // under $XDG_DATA_HOME/interimap/ (the default of --import-interimap).
  std::string interimap_database;
  std::vector<std::string> list_mailbox{"*"};  // LIST patterns; '\0' stands for the delimiter
  std::vector<std::string> list_select_opts;   // upper-cased words, e.g. "SUBSCRIBED"
  std::optional<std::string> ignore_mailbox;   // PCRE source, compiled by the user of the config
  std::optional<std::string> logfile;          // absolute path
  std::string log_prefix;                      // see expand_log_prefix
  EndpointConfig local, remote;

  int line_of(std::string_view key) const;  // for default-section keys; 0 if not set
  std::map<std::string, int, std::less<>> lines;
};

// Where XDG paths come from; from_process() reads HOME, XDG_CONFIG_HOME and XDG_DATA_HOME.
// Unset, empty and relative XDG variables are ignored, as the XDG spec says.
struct Environment {
  std::optional<std::string> home;
  std::optional<std::string> xdg_config_home;
  std::optional<std::string> xdg_data_home;

  static Environment from_process();
};

// The --config argument (empty: "config") resolved as InterIMAP does: absolute paths as-is,
// "~" and "~/…" from $HOME, anything else under $XDG_CONFIG_HOME/twinbox/ (or
// ~/.config/twinbox/). Creates nothing.
Result<std::string> resolve_config_path(std::string_view path,
                                        const Environment& env = Environment::from_process());

// A database path resolved as InterIMAP does: absolute as-is, else under
// $XDG_DATA_HOME/PROGRAM/ (or ~/.local/share/PROGRAM/). Creates nothing.
Result<std::string> resolve_data_path(std::string_view path,
                                      const Environment& env = Environment::from_process(),
                                      std::string_view program = "twinbox");

// Reads and checks the file at `path` (already resolved). Also warns (log_warning) when the file
// holds a password and is readable by group or others, and registers passwords as log secrets.
Result<Config> load_config(const std::string& path,
                           const Environment& env = Environment::from_process());

// Checks `text` as if read from `file_name`. Pure apart from log_warning for deprecated or
// ignored settings.
Result<Config> parse_config(std::string_view text, const std::string& file_name,
                            const Environment& env = Environment::from_process());

// The list-mailbox value split into patterns: atoms, or "quoted" strings with \" \\ \0 \a \b \t
// \n \f \r \xHH escapes. "\v" gives "v", as in InterIMAP (Perl has no \v string escape).
// An error carries, in Error::offset, the byte offset where parsing stopped.
Result<std::vector<std::string>> parse_list_mailbox(std::string_view value);

inline constexpr std::string_view kDefaultLogPrefix = "%?n?%?m?%n(%m)&%n?: ?";

// Expands an InterIMAP log-prefix: %n is `name` (local, remote, database or empty), %m the
// `mailbox` (or empty), %% a percent sign; %?X?then? and %?X?then&else? (nestable) give `then`
// when %X is non-empty, else `else`; \&, \? and \\ escape those characters. Malformed
// conditionals are left as written, like InterIMAP does.
std::string expand_log_prefix(std::string_view format, std::string_view name,
                              std::string_view mailbox);

// If `host` is an IP literal, bare or in brackets, the address without brackets.
std::optional<std::string> host_ip_literal(std::string_view host);

// Settings for --debug: every secret is shown as "<redacted>" (passwords, password-command,
// proxy credentials).
std::string to_string(const EndpointConfig& endpoint);
std::string to_string(const Config& config);

}  // namespace twinbox::config
