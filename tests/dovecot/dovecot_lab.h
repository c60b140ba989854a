// Real Dovecot servers for integration tests: a thin RAII shell over tests/dovecot/lab.
//
// DovecotLab::start() runs `lab start` in a fresh temporary directory (mkdtemp under $TMPDIR or
// /tmp), waits for the "* OK" greeting and reads back the instance's facts; the destructor stops
// the server and removes the directory (kept when TWINBOX_KEEP_LAB=1). The lab script is found
// through $TWINBOX_SOURCE_DIR (set by ctest), else the source directory known at compile time.
//
// Failures throw std::runtime_error with the lab's own message, so a test that cannot get its
// server fails loudly instead of being skipped: a missing Dovecot means "run scripts/install-deps".
// Starting takes ~0.3-0.5 s and stopping ~1.1 s (Dovecot's master sleeps a second on shutdown):
// share one lab across a suite's tests (SetUpTestSuite) where the tests allow it.
//
// Plain POSIX (fork/exec/poll); blocking calls, meant for test bodies, not for coroutines.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace twinbox::dovecot {

enum class Tls {
  none,      // ssl = no
  starttls,  // STARTTLS on the IMAP port (TLS 1.2 minimum)
  imaps,     // STARTTLS on the IMAP port, plus implicit TLS on imaps_port()
};

enum class MailFormat { maildir, mdbox, sdbox };

struct Options {
  char separator = '/';  // '/' or '.'; maildir with '/' cannot hold '.' in mailbox names
  Tls tls = Tls::none;
  std::string capability;  // imap_capability override ("IMAP4rev1 CONDSTORE ..."); empty: default
  int max_line = 0;        // imap_max_line_length; 0: Dovecot's default (64 KiB)
  int port = 0;            // IMAP port; 0: a free one (a restart on the same port: port())
  MailFormat mail_format = MailFormat::maildir;
  std::string user;      // empty: "twinbox"
  std::string password;  // empty: random
  // false: disable_plaintext_auth = yes, LOGINDISABLED until TLS. Dovecot counts a client whose
  // address equals its own as secure, so the server then listens on 127.0.0.2 (see host()).
  bool plaintext_auth = true;
  std::string name;                   // shown in the greeting; empty: the directory's name
  std::vector<std::string> settings;  // extra top-level Dovecot settings, "key=value"
  // Non-empty: XOAUTH2 and OAUTHBEARER too, tokens checked by this RFC 7662 introspection URL
  // (an http://127.x.y.z:PORT/PATH on loopback; tests/servers/oauth_idp.py serves one).
  std::string oauth2_url;
  int sample_mail = 0;  // > 0: `lab add-sample-mail --count N` after the start
  unsigned sample_seed = 1;
};

struct CommandResult {
  int status = -1;     // exit status; 128 + signal number if killed by a signal
  std::string output;  // stdout
  std::string errors;  // stderr
  bool ok() const { return status == 0; }
};

class DovecotLab {
 public:
  // Starts a server; throws std::runtime_error (with the lab's stderr) on any failure.
  static DovecotLab start(const Options& options = {});

  DovecotLab(DovecotLab&& other) noexcept;
  DovecotLab& operator=(DovecotLab&& other) noexcept;
  DovecotLab(const DovecotLab&) = delete;
  DovecotLab& operator=(const DovecotLab&) = delete;
  ~DovecotLab();  // stop() and remove the directory (unless TWINBOX_KEEP_LAB=1)

  // "127.0.0.1", or "127.0.0.2" with plaintext_auth = false. Certificates name both, and localhost.
  const std::string& host() const { return fact("host"); }
  std::uint16_t port() const { return port_; }
  std::uint16_t imaps_port() const { return imaps_port_; }  // 0 unless Tls::imaps
  const std::string& user() const { return fact("user"); }
  const std::string& password() const { return fact("password"); }
  char separator() const { return fact("separator").front(); }
  const std::string& dir() const { return dir_; }
  const std::string& conf_path() const { return fact("conf"); }
  const std::string& log_path() const { return fact("log"); }           // the daemon's log
  const std::string& tunnel_log() const { return fact("tunnel_log"); }  // tunnels' stderr
  const std::string& ca_file() const { return fact("ca_file"); }        // "" without TLS
  const std::string& pin() const { return fact("pin"); }  // SPKI SHA-256, lowercase hex; "" w/o TLS
  int start_ms() const { return start_ms_; }              // time from launch to the greeting

  // IMAP over stdin/stdout, pre-authenticated (PREAUTH), COMPRESS=DEFLATE offered:
  // {"/bin/sh", "-c", "exec <line>"}. tunnel_command_line() is the line for a config file
  // (it has shell syntax, a stderr redirection: InterIMAP runs such commands with /bin/sh -c).
  std::vector<std::string> tunnel_command() const;
  const std::string& tunnel_command_line() const { return fact("tunnel"); }

  // `doveadm -c CONF ARGS` as the lab user (no -u needed); `input` goes to its stdin (for save).
  CommandResult doveadm(const std::vector<std::string>& args, std::string_view input = {}) const;
  // Realistic messages in several mailboxes (see `lab --help`); throws on failure.
  void add_sample_mail(int count, unsigned seed = 1) const;
  // Stops the server (idempotent); throws on failure. The mail stays until destruction.
  void stop();
  // Stops and starts again in the same directory with new options, keeping the mail and, unless
  // given, the credentials (e.g. to change the capabilities a client sees).
  void restart(const Options& options);
  bool running() const { return running_; }

  // Every fact `lab start` printed (key=value; see `lab --help`). Missing keys give "".
  const std::map<std::string, std::string>& facts() const { return facts_; }
  const std::string& fact(const std::string& key) const;

  // The lab script's path, and a helper that runs any program (stdin fed, stdout/stderr captured).
  static std::string lab_script();
  static CommandResult run(const std::vector<std::string>& argv, std::string_view input = {});

 private:
  DovecotLab() = default;
  void launch(const Options& options);
  void release() noexcept;

  std::string dir_;
  bool owns_dir_ = false;
  bool running_ = false;
  std::map<std::string, std::string> facts_;
  std::uint16_t port_ = 0;
  std::uint16_t imaps_port_ = 0;
  int start_ms_ = 0;
};

}  // namespace twinbox::dovecot
