#include "config/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "base/log.h"

namespace twinbox::config {
namespace {

using ::testing::internal::CaptureStderr;
using ::testing::internal::GetCapturedStderr;

const Environment kEnv{"/home/u", std::nullopt, std::nullopt};

// /usr/share/doc/interimap/interimap.sample from interimap 0.5.7, verbatim.
constexpr std::string_view kInterimapSample = R"(#database = imap.example.net.db

# only consider subscribed mailboxes
list-select-opts = SUBSCRIBED
#list-mailbox = "*"

# ignore the mailbox named 'virtual' and its descendants
ignore-mailbox = ^virtual(?:\x00|$)


[local]
type = tunnel
command = doveadm exec imap
null-stderr = YES

[remote]
#type = imaps
host = imap.example.net
#port = 993
#proxy = socks5h://localhost:9050
username = guilhem
password = xxxxxxxxxxxxxxxx
#compress = YES

# SSL options
#SSL_verify = YES
#SSL_protocol_min = TLSv1.2
#SSL_fingerprint = sha256$29111aea5d5be7e448bdc5c6e8a9d03bc9221c53c09b1cfbe6f953221e24dda0

# vim:ft=dosini
)";

// Lines 1-4; [remote] keys start at line 5.
constexpr std::string_view kTunnelLocal = "[local]\ntype = tunnel\ncommand = doveadm exec imap\n";

Config parse_ok(std::string_view text, const Environment& env = kEnv) {
  auto r = parse_config(text, "config", env);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? std::move(r).value() : Config{};
}

std::string remote_with(std::string_view lines) {
  return std::string(kTunnelLocal) + "[remote]\n" + std::string(lines);
}

void expect_sample(const Config& c) {
  EXPECT_EQ(c.database, "/home/u/.local/share/twinbox/imap.example.net.db");
  EXPECT_EQ(c.interimap_database, "/home/u/.local/share/interimap/imap.example.net.db");
  EXPECT_EQ(c.list_select_opts, std::vector<std::string>{"SUBSCRIBED"});
  EXPECT_EQ(c.list_mailbox, std::vector<std::string>{"*"});
  EXPECT_EQ(c.ignore_mailbox, "^virtual(?:\\x00|$)");
  EXPECT_EQ(c.log_prefix, kDefaultLogPrefix);
  EXPECT_FALSE(c.logfile);

  EXPECT_EQ(c.local.name, "local");
  EXPECT_EQ(c.local.type, EndpointType::tunnel);
  EXPECT_EQ(c.local.command, "doveadm exec imap");
  EXPECT_TRUE(c.local.null_stderr);
  EXPECT_FALSE(c.local.compress);
  EXPECT_EQ(c.local.port, "");
  EXPECT_EQ(c.local.line_of("command"), 13);

  EXPECT_EQ(c.remote.type, EndpointType::imaps);
  EXPECT_EQ(c.remote.host, "imap.example.net");
  EXPECT_EQ(c.remote.port, "993");
  EXPECT_EQ(c.remote.username, "guilhem");
  EXPECT_EQ(c.remote.password, "xxxxxxxxxxxxxxxx");
  EXPECT_TRUE(c.remote.compress);
  EXPECT_TRUE(c.remote.ssl_verify);
  EXPECT_TRUE(c.remote.starttls);
  EXPECT_EQ(c.remote.auth, (std::vector<std::string>{"PLAIN", "LOGIN"}));
  EXPECT_TRUE(c.remote.ssl_fingerprints.empty());
  EXPECT_EQ(c.remote.line_of("password"), 22);
  EXPECT_EQ(c.remote.line_of("port"), 0);
  EXPECT_EQ(c.line_of("ignore-mailbox"), 8);
}

TEST(ConfigTest, InterimapSampleParses) { expect_sample(parse_ok(kInterimapSample)); }

TEST(ConfigTest, InstalledInterimapSampleLoads) {
  const std::string path = "/usr/share/doc/interimap/interimap.sample";
  if (::access(path.c_str(), R_OK) != 0) GTEST_SKIP() << path << " is not installed";
  CaptureStderr();  // it holds a password and is world-readable: a warning, checked below
  auto r = load_config(path, kEnv);
  GetCapturedStderr();
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_sample(*r);
}

TEST(ConfigTest, Defaults) {
  const Config c = parse_ok("[local]\n[remote]\n");
  EXPECT_EQ(c.database, "/home/u/.local/share/twinbox/localhost.db");
  EXPECT_EQ(c.list_mailbox, std::vector<std::string>{"*"});
  EXPECT_TRUE(c.list_select_opts.empty());
  EXPECT_FALSE(c.ignore_mailbox);
  EXPECT_EQ(c.log_prefix, "%?n?%?m?%n(%m)&%n?: ?");
  for (const EndpointConfig* e : {&c.local, &c.remote}) {
    SCOPED_TRACE(e->name);
    EXPECT_EQ(e->type, EndpointType::imaps);
    EXPECT_EQ(e->host, "localhost");
    EXPECT_EQ(e->port, "993");
    EXPECT_TRUE(e->starttls);
    EXPECT_TRUE(e->ssl_verify);
    EXPECT_FALSE(e->null_stderr);
    EXPECT_EQ(e->auth, (std::vector<std::string>{"PLAIN", "LOGIN"}));
    EXPECT_EQ(e->username, "");
    EXPECT_FALSE(e->password);
    EXPECT_FALSE(e->password_command);
    EXPECT_FALSE(e->proxy);
    EXPECT_FALSE(e->ssl_hostname);
    EXPECT_FALSE(e->ssl_ciphersuites);
    EXPECT_EQ(e->list_reference, "");
  }
  EXPECT_FALSE(c.local.compress);
  EXPECT_TRUE(c.remote.compress);
}

TEST(ConfigTest, SidesInheritTheDefaultSectionAndOverrideIt) {
  const Config c = parse_ok(
      "type = imap\n"
      "SSL_verify = NO\n"
      "port = 1143\n"
      "username = me\n"
      "list-reference = Archive/\n"
      "[local]\n"
      "type = tunnel\n"
      "command = doveadm exec imap\n"
      "[remote]\n"
      "host = mail.example.org\n"
      "STARTTLS = no\n"
      "list-reference =\n");
  EXPECT_EQ(c.local.type, EndpointType::tunnel);
  EXPECT_EQ(c.local.port, "1143");  // an explicit port is inherited even by a tunnel
  EXPECT_EQ(c.local.username, "me");
  EXPECT_FALSE(c.local.ssl_verify);
  EXPECT_EQ(c.local.list_reference, "Archive/");
  EXPECT_EQ(c.local.line_of("type"), 7);
  EXPECT_EQ(c.remote.type, EndpointType::imap);
  EXPECT_EQ(c.remote.port, "1143");
  EXPECT_EQ(c.remote.host, "mail.example.org");
  EXPECT_FALSE(c.remote.starttls);
  EXPECT_FALSE(c.remote.ssl_verify);
  EXPECT_EQ(c.remote.list_reference, "");
  EXPECT_EQ(c.remote.line_of("type"), 1);
  EXPECT_EQ(c.remote.line_of("host"), 10);
  EXPECT_EQ(c.database, "/home/u/.local/share/twinbox/mail.example.org.db");
}

TEST(ConfigTest, ChangeDetectionPerSideWithAutoByDefault) {
  const Config c = parse_ok(
      "change-detection = condstore\n[local]\nchange-detection = plain\n"
      "[remote]\n");
  EXPECT_EQ(c.local.change_detection, "plain");
  EXPECT_EQ(c.remote.change_detection, "condstore");
  EXPECT_EQ(parse_ok("[local]\n[remote]\n").remote.change_detection, "auto");
  EXPECT_EQ(parse_ok("[local]\n[remote]\nmax-command-line = 4000\n").remote.max_command_line,
            4000u);
  EXPECT_NE(to_string(c.remote).find("change-detection = condstore\n"), std::string::npos);
}

TEST(ConfigTest, PortDefaultFollowsTheFinalType) {
  const Config c = parse_ok("type = imap\n[local]\n[remote]\ntype = imaps\n");
  EXPECT_EQ(c.local.port, "143");
  EXPECT_EQ(c.remote.port, "993");
}

TEST(ConfigTest, TypedValues) {
  const Config c =
      parse_ok(remote_with("type = imap\n"
                           "host = [2001:db8::1]\n"
                           "port = imap\n"
                           "STARTTLS = yes\n"
                           "compress = No\n"
                           "auth = login plain\n"
                           "proxy = socks5h://u:p@localhost:9050\n"
                           "SSL_protocol_min = TLSv1.2\n"
                           "SSL_protocol_max = TLSv1.3\n"
                           "SSL_cipherlist = HIGH:!aNULL\n"
                           "SSL_ciphersuites =\n"
                           "SSL_hostname =\n"
                           "SSL_fingerprint = sha256$00ff 0A0b\n"
                           "SSL_CAfile = /etc/ssl/ca.pem\n"
                           "SSL_CApath = /etc/ssl/certs\n"
                           "SSL_verify = yEs\n"));
  const EndpointConfig& r = c.remote;
  EXPECT_EQ(r.type, EndpointType::imap);
  EXPECT_EQ(r.host, "[2001:db8::1]");
  EXPECT_EQ(host_ip_literal(r.host), "2001:db8::1");
  EXPECT_EQ(r.port, "imap");
  EXPECT_TRUE(r.starttls);
  EXPECT_FALSE(r.compress);
  EXPECT_EQ(r.auth, (std::vector<std::string>{"LOGIN", "PLAIN"}));
  EXPECT_EQ(r.proxy, "socks5h://u:p@localhost:9050");
  EXPECT_EQ(r.ssl_protocol_min, "TLSv1.2");
  EXPECT_EQ(r.ssl_protocol_max, "TLSv1.3");
  EXPECT_EQ(r.ssl_cipherlist, "HIGH:!aNULL");
  EXPECT_EQ(r.ssl_ciphersuites, "");
  EXPECT_EQ(r.ssl_hostname, "");
  EXPECT_EQ(r.ssl_fingerprints, (std::vector<std::string>{"sha256$00ff", "0A0b"}));
  EXPECT_EQ(r.ssl_ca_file, "/etc/ssl/ca.pem");
  EXPECT_EQ(r.ssl_ca_path, "/etc/ssl/certs");
  EXPECT_TRUE(r.ssl_verify);
}

TEST(ConfigTest, LongFingerprintLine) {
  // Three SHA-512 pins on one line: 400+ bytes, beyond inih's 200-byte limit.
  std::string pins;
  for (char c : {'a', 'b', 'c'})
    pins += (pins.empty() ? "" : " ") + ("sha512$" + std::string(128, c));
  pins += " " + std::string(64, 'd');
  ASSERT_GT(pins.size(), 450u);
  const Config c = parse_ok(remote_with("SSL_fingerprint = " + pins + "\n"));
  ASSERT_EQ(c.remote.ssl_fingerprints.size(), 4u);
  EXPECT_EQ(c.remote.ssl_fingerprints[2], "sha512$" + std::string(128, 'c'));
}

TEST(ConfigTest, DefaultSectionKeys) {
  const Config c = parse_ok(
      "database = sync.db\n"
      "list-mailbox = INBOX \"Sent Items\" \"Lists\\x00*\"\n"
      "list-select-opts = subscribed Recursivematch\n"
      "logfile = /var/log/twinbox.log\n"
      "log-prefix = %n: \n"
      "[local]\n[remote]\n");
  EXPECT_EQ(c.database, "/home/u/.local/share/twinbox/sync.db");
  // The same file name where InterIMAP keeps its state: --import-interimap's default.
  EXPECT_EQ(c.interimap_database, "/home/u/.local/share/interimap/sync.db");
  EXPECT_EQ(c.list_mailbox,
            (std::vector<std::string>{"INBOX", "Sent Items", std::string("Lists\0*", 7)}));
  EXPECT_EQ(c.list_select_opts, (std::vector<std::string>{"SUBSCRIBED", "RECURSIVEMATCH"}));
  EXPECT_EQ(c.logfile, "/var/log/twinbox.log");
  EXPECT_EQ(c.log_prefix, "%n:");  // trimmed, as Config::Tiny does
  EXPECT_EQ(c.line_of("logfile"), 4);
}

TEST(ConfigTest, EmptyListSelectOptsMeansNone) {
  EXPECT_TRUE(parse_ok("list-select-opts =\n[local]\n[remote]\n").list_select_opts.empty());
}

struct DatabaseCase {
  const char* scenario;
  const char* text;
  Environment env;
  const char* path;
};

class DatabaseTest : public ::testing::TestWithParam<DatabaseCase> {};

TEST_P(DatabaseTest, ResolvesAsInterimapDoes) {
  const DatabaseCase& c = GetParam();
  SCOPED_TRACE(c.scenario);
  EXPECT_EQ(parse_ok(c.text, c.env).database, c.path);
}

INSTANTIATE_TEST_SUITE_P(
    Paths, DatabaseTest,
    ::testing::Values(DatabaseCase{"HOST.db after the remote host",
                                   "[local]\n[remote]\nhost = imap.example\n", kEnv,
                                   "/home/u/.local/share/twinbox/imap.example.db"},
                      DatabaseCase{"a tunnel remote gives localhost.db",
                                   "[local]\n[remote]\ntype = tunnel\ncommand = ssh x imap\n", kEnv,
                                   "/home/u/.local/share/twinbox/localhost.db"},
                      DatabaseCase{"the remote host may come from the default section",
                                   "host = shared.example\n[local]\n[remote]\n", kEnv,
                                   "/home/u/.local/share/twinbox/shared.example.db"},
                      DatabaseCase{"XDG_DATA_HOME wins over HOME", "[local]\n[remote]\n",
                                   Environment{"/home/u", std::nullopt, "/xdg/data"},
                                   "/xdg/data/twinbox/localhost.db"},
                      DatabaseCase{"a relative database goes under the data directory",
                                   "database = a/b.db\n[local]\n[remote]\n", kEnv,
                                   "/home/u/.local/share/twinbox/a/b.db"},
                      DatabaseCase{"an absolute database is used as-is",
                                   "database = /var/lib/x.db\n[local]\n[remote]\n",
                                   Environment{std::nullopt, std::nullopt, std::nullopt},
                                   "/var/lib/x.db"}));

TEST(ConfigTest, DatabaseNeedsHomeOrXdgDataHome) {
  auto r = parse_config("[local]\n[remote]\n", "config", Environment{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "config: cannot locate ~/.local/share: neither XDG_DATA_HOME nor HOME is set");
}

struct ErrorCase {
  const char* scenario;
  std::string text;
  const char* message;
};

class ConfigErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrorTest, ExactMessageLineAndCaret) {
  const ErrorCase& c = GetParam();
  SCOPED_TRACE(c.scenario);
  CaptureStderr();
  auto r = parse_config(c.text, "config", kEnv);
  GetCapturedStderr();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::config);
  EXPECT_EQ(r.error().message, c.message);
}

INSTANTIATE_TEST_SUITE_P(
    Validation, ConfigErrorTest,
    ::testing::Values(
        ErrorCase{"a misspelt password is redacted", remote_with("pasword = hunter2\n"),
                  "config:5: unknown key 'pasword' in [remote] (did you mean 'password'?)\n"
                  "pasword = <redacted>\n"
                  "^~~~~~~"},
        ErrorCase{"ignore-mailbox is checked as a PCRE before anything is opened",
                  "ignore-mailbox = ^(virtual\n[local]\n[remote]\n",
                  "config:1: invalid value for 'ignore-mailbox' in the default section: not a "
                  "valid regular expression (PCRE): missing "
                  "closing parenthesis\n"
                  "ignore-mailbox = ^(virtual\n"
                  "                         ^"},
        ErrorCase{"an unknown key", remote_with("frobnicate = 1\n"),
                  "config:5: unknown key 'frobnicate' in [remote]\n"
                  "frobnicate = 1\n"
                  "^~~~~~~~~~"},
        ErrorCase{"keys are case-sensitive", remote_with("starttls = NO\n"),
                  "config:5: unknown key 'starttls' in [remote] (did you mean 'STARTTLS'?)\n"
                  "starttls = NO\n"
                  "^~~~~~~~"},
        ErrorCase{"a prefix suggests the full key", remote_with("  user = bob\n"),
                  "config:5: unknown key 'user' in [remote] (did you mean 'username'?)\n"
                  "  user = bob\n"
                  "  ^~~~"},
        ErrorCase{"an unknown key in the default section", "verbose = 1\n[local]\n[remote]\n",
                  "config:1: unknown key 'verbose' in the default section\n"
                  "verbose = 1\n"
                  "^~~~~~~"},
        ErrorCase{"change-detection names a tier", remote_with("change-detection = fast\n"),
                  "config:5: invalid value for 'change-detection' in [remote]: expected auto, "
                  "qresync, condstore or plain\n"
                  "change-detection = fast\n"
                  "                   ^~~~"},
        ErrorCase{"max-command-line is bounded", remote_with("max-command-line = 80\n"),
                  "config:5: invalid value for 'max-command-line' in [remote]: expected a number "
                  "of octets from 1000 to 1048576\n"
                  "max-command-line = 80\n"
                  "                   ^~"},
        ErrorCase{"type is case-sensitive", remote_with("type = IMAPS\n"),
                  "config:5: invalid value for 'type' in [remote]: expected imap, imaps or tunnel\n"
                  "type = IMAPS\n"
                  "       ^~~~~"},
        ErrorCase{"the default section is checked even when both sides override it",
                  "type = bogus\n[local]\ntype = imap\n[remote]\ntype = imap\n",
                  "config:1: invalid value for 'type' in the default section: expected imap, "
                  "imaps or tunnel\n"
                  "type = bogus\n"
                  "       ^~~~~"},
        ErrorCase{"YES/NO", remote_with("STARTTLS = maybe\n"),
                  "config:5: invalid value for 'STARTTLS' in [remote]: expected YES or NO\n"
                  "STARTTLS = maybe\n"
                  "           ^~~~~"},
        ErrorCase{"compress is YES/NO", remote_with("compress = 1\n"),
                  "config:5: invalid value for 'compress' in [remote]: expected YES or NO\n"
                  "compress = 1\n"
                  "           ^"},
        ErrorCase{"only PLAIN, LOGIN and the OAuth ones", remote_with("auth = CRAM-MD5 PLAIN\n"),
                  "config:5: invalid value for 'auth' in [remote]: unsupported authentication "
                  "mechanism 'CRAM-MD5': twinbox supports PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER\n"
                  "auth = CRAM-MD5 PLAIN\n"
                  "       ^~~~~~~~"},
        ErrorCase{"auth needs single spaces", remote_with("auth = PLAIN  LOGIN\n"),
                  "config:5: invalid value for 'auth' in [remote]: mechanisms must be separated "
                  "by single spaces\n"
                  "auth = PLAIN  LOGIN\n"
                  "             ^"},
        ErrorCase{"a non-ASCII password is not echoed", remote_with("password = caf\xC3\xA9\n"),
                  "config:5: invalid value for 'password' in [remote]: only ASCII characters are "
                  "allowed\n"
                  "password = <redacted>\n"
                  "           ^~~~~~~~~~"},
        ErrorCase{"an empty username", remote_with("username =\n"),
                  "config:5: invalid value for 'username' in [remote]: value must not be empty\n"
                  "username =\n"
                  "          ^"},
        ErrorCase{"an empty host", remote_with("host = \n"),
                  "config:5: invalid value for 'host' in [remote]: value must not be empty\n"
                  "host = \n"
                  "      ^"},
        ErrorCase{"brackets force an IP literal", remote_with("host = [imap.example]\n"),
                  "config:5: invalid value for 'host' in [remote]: a host in brackets must be an "
                  "IPv4 or IPv6 address\n"
                  "host = [imap.example]\n"
                  "       ^~~~~~~~~~~~~~"},
        ErrorCase{"a tab in a command", remote_with("type = tunnel\ncommand = ssh\thost\n"),
                  "config:6: invalid value for 'command' in [remote]: control character in value\n"
                  "command = ssh\thost\n"
                  "             ^"},
        ErrorCase{"fingerprints have no colons", remote_with("SSL_fingerprint = sha256$AB:CD\n"),
                  "config:5: invalid value for 'SSL_fingerprint' in [remote]: expected "
                  "[ALGORITHM$]HEXDIGEST fingerprints separated by single spaces\n"
                  "SSL_fingerprint = sha256$AB:CD\n"
                  "                  ^~~~~~~~~~~~"},
        ErrorCase{"the faulty fingerprint is marked", remote_with("SSL_fingerprint = ab cd xy\n"),
                  "config:5: invalid value for 'SSL_fingerprint' in [remote]: expected "
                  "[ALGORITHM$]HEXDIGEST fingerprints separated by single spaces\n"
                  "SSL_fingerprint = ab cd xy\n"
                  "                        ^~"},
        ErrorCase{"an unknown TLS version", remote_with("SSL_protocol_min = TLSv1.4\n"),
                  "config:5: invalid value for 'SSL_protocol_min' in [remote]: expected SSLv3, "
                  "TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3\n"
                  "SSL_protocol_min = TLSv1.4\n"
                  "                   ^~~~~~~"},
        ErrorCase{"deprecated SSL_protocols is still checked",
                  remote_with("SSL_protocols = !SSLv3 TLS1.3\n"),
                  "config:5: invalid value for 'SSL_protocols' in [remote]: expected protocol "
                  "versions such as TLSv1.2 or !TLSv1.1, separated by single spaces\n"
                  "SSL_protocols = !SSLv3 TLS1.3\n"
                  "                       ^~~~~~"},
        ErrorCase{"logfile must be absolute", "logfile = twinbox.log\n[local]\n[remote]\n",
                  "config:1: invalid value for 'logfile' in the default section: the log file "
                  "must be an absolute path\n"
                  "logfile = twinbox.log\n"
                  "          ^~~~~~~~~~~"},
        ErrorCase{"an unterminated quoted pattern", "list-mailbox = INBOX \"Sent\n[local]\n",
                  "config:1: invalid value for 'list-mailbox' in the default section: expected "
                  "mailbox patterns, or \"quoted\" patterns, separated by spaces\n"
                  "list-mailbox = INBOX \"Sent\n"
                  "                     ^"},
        ErrorCase{"list-select-opts takes atoms",
                  "list-select-opts = SUBSCRIBED (REMOTE)\n[local]\n[remote]\n",
                  "config:1: invalid value for 'list-select-opts' in the default section: invalid "
                  "character in selection options\n"
                  "list-select-opts = SUBSCRIBED (REMOTE)\n"
                  "                              ^"},
        ErrorCase{"a tunnel needs a command", "[local]\ntype = tunnel\n[remote]\n",
                  "config:2: type=tunnel needs a 'command' in [local]\n"
                  "type = tunnel\n"
                  "       ^~~~~~"},
        ErrorCase{"password and password-command in one section",
                  remote_with("password = secret\npassword-command = pass show mail\n"),
                  "config:6: 'password' and 'password-command' are mutually exclusive in "
                  "[remote]\n"
                  "password-command = <redacted>\n"
                  "^~~~~~~~~~~~~~~~"},
        ErrorCase{"an OAuth mechanism needs a token-command", remote_with("auth = XOAUTH2\n"),
                  "config:5: XOAUTH2 and OAUTHBEARER need a 'token-command' in [remote] (a "
                  "command that prints an access token)\n"
                  "auth = XOAUTH2\n"
                  "       ^~~~~~~"},
        ErrorCase{"credential-command-timeout is bounded",
                  remote_with("credential-command-timeout = 0\n"),
                  "config:5: invalid value for 'credential-command-timeout' in [remote]: "
                  "expected a number of seconds from 1 to 3600\n"
                  "credential-command-timeout = 0\n"
                  "                             ^"},
        ErrorCase{"a proxy scheme other than SOCKS5", remote_with("proxy = http://u:pw@h:3128\n"),
                  "config:5: invalid value for 'proxy' in [remote]: unsupported proxy scheme "
                  "'http': use socks5 or socks5h\n"
                  "proxy = <redacted>\n"
                  "        ^~~~~~~~~~"},
        ErrorCase{"a proxy port that is no port", remote_with("proxy = socks5h://u:pw@h:90 50\n"),
                  "config:5: invalid value for 'proxy' in [remote]: expected ':' and a port "
                  "number or service name after the proxy host\n"
                  "proxy = <redacted>\n"
                  "        ^~~~~~~~~~"},
        ErrorCase{"the first error in the file wins",
                  remote_with("SSL_verify = perhaps\n") + "[local]\nbogus = 1\n",
                  "config:5: invalid value for 'SSL_verify' in [remote]: expected YES or NO\n"
                  "SSL_verify = perhaps\n"
                  "             ^~~~~~~"},
        ErrorCase{"a syntax error", remote_with("password hunter2\n"),
                  "config:5: syntax error: expected 'key = value', '[section]' or a comment\n"
                  "password <redacted>\n"
                  "^~~~~~~~"},
        ErrorCase{"no [remote] section", std::string(kTunnelLocal), "config: no [remote] section"},
        ErrorCase{"no [local] section", "[remote]\n", "config: no [local] section"},
        ErrorCase{"an empty file", "", "config: no [local] section"},
        ErrorCase{"[Remote] is not [remote]", std::string(kTunnelLocal) + "[Remote]\n",
                  "config: no [remote] section"}));

TEST(ConfigTest, SectionPasswordCommandReplacesInheritedPassword) {
  const Config c = parse_ok(
      "password = global\n"
      "[local]\n"
      "password-command = pass show local\n"
      "[remote]\n");
  EXPECT_FALSE(c.local.password);
  EXPECT_EQ(c.local.password_command, "pass show local");
  EXPECT_EQ(c.local.line_of("password"), 0);
  EXPECT_EQ(c.remote.password, "global");
  EXPECT_FALSE(c.remote.password_command);
}

TEST(ConfigTest, SectionPasswordReplacesInheritedPasswordCommand) {
  const Config c = parse_ok("password-command = pass show mail\n[local]\n[remote]\npassword = x\n");
  EXPECT_EQ(c.local.password_command, "pass show mail");
  EXPECT_EQ(c.remote.password, "x");
  EXPECT_FALSE(c.remote.password_command);
}

TEST(ConfigTest, OauthWithTokenCommandAndTimeout) {
  const Config c = parse_ok(
      "token-command = oama access me@gmail.com\n[local]\n[remote]\nauth = OAUTHBEARER xoauth2\n"
      "credential-command-timeout = 90\n");
  EXPECT_EQ(c.remote.auth, (std::vector<std::string>{"OAUTHBEARER", "XOAUTH2"}));
  EXPECT_EQ(c.remote.token_command, "oama access me@gmail.com");
  EXPECT_EQ(c.remote.command_timeout, std::chrono::seconds(90));
  EXPECT_EQ(c.local.command_timeout, std::chrono::seconds(60));
  EXPECT_NE(to_string(c).find("token-command = <redacted>"), std::string::npos);
  EXPECT_EQ(to_string(c).find("oama"), std::string::npos);
}

TEST(ConfigTest, ProxyUriAsInterimapReadsIt) {
  auto p = parse_proxy("socks5h://localhost:9050");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->proxy_resolves);
  EXPECT_EQ(p->host, "localhost");
  EXPECT_EQ(p->port, "9050");
  EXPECT_EQ(p->username, "");
  // Credentials up to the last "@", split at the first ":"; default port 1080.
  p = parse_proxy("socks5://me@home:p:w@rd@10.0.0.1");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->proxy_resolves);
  EXPECT_EQ(p->username, "me@home");
  EXPECT_EQ(p->password, "p:w@rd");
  EXPECT_EQ(p->host, "10.0.0.1");
  EXPECT_EQ(p->port, "1080");
  p = parse_proxy("socks5h://[::1]:socks");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->host, "::1");
  EXPECT_EQ(p->port, "socks");
  for (const char* bad :
       {"localhost:9050", "socks4://h", "socks5://", "socks5://u:p@", "socks5://[nothost]:1",
        "socks5://h:", "socks5://h:1:2", "socks5://:pw@h"}) {
    EXPECT_FALSE(parse_proxy(bad).ok()) << bad;
  }
  const Config c = parse_ok(remote_with("proxy = socks5h://tor:s3cret@127.0.0.1:9050\n"));
  ASSERT_TRUE(c.remote.proxy_uri);
  EXPECT_EQ(c.remote.proxy_uri->password, "s3cret");
  EXPECT_EQ(to_string(c).find("s3cret"), std::string::npos);
}

TEST(ConfigTest, InlineCommentCutsAPasswordAsInterimapDoes) {
  // Config::Tiny strips " ; ..." even from passwords; "p#ss;word ;x" survives whole.
  EXPECT_EQ(parse_ok(remote_with("password = abc ; def\n")).remote.password, "abc");
  EXPECT_EQ(parse_ok(remote_with("password = p#ss;word ;x\n")).remote.password, "p#ss;word ;x");
}

TEST(ConfigTest, UnknownSectionsAreIgnoredWithAWarning) {
  CaptureStderr();
  const Config c = parse_ok(std::string(kTunnelLocal) + "[remote]\n[pullimap]\nmailbox = x\n");
  EXPECT_EQ(GetCapturedStderr(), "warning: config:5: ignoring unknown section [pullimap]\n");
  EXPECT_EQ(c.remote.host, "localhost");
}

TEST(ConfigTest, DefaultOnlyKeysInASideAreAcceptedButIgnored) {
  CaptureStderr();
  const Config c = parse_ok("[local]\ndatabase = other.db\n[remote]\n");
  EXPECT_EQ(GetCapturedStderr(),
            "warning: config:2: 'database' is only read from the default section; ignored in "
            "[local]\n");
  EXPECT_EQ(c.database, "/home/u/.local/share/twinbox/localhost.db");
}

TEST(ConfigTest, DuplicateKeyWarnsAndLastWins) {
  CaptureStderr();
  const Config c = parse_ok(remote_with("host = a.example\nhost = b.example\n"));
  EXPECT_EQ(GetCapturedStderr(),
            "warning: config:6: 'host' set again in [remote]; the value from line 5 is ignored\n");
  EXPECT_EQ(c.remote.host, "b.example");
  EXPECT_EQ(c.remote.line_of("host"), 6);
}

TEST(ConfigTest, DeprecatedSslProtocolsIsAcceptedWithAWarning) {
  CaptureStderr();
  const Config c = parse_ok(remote_with("SSL_protocols = !SSLv3 !TLSv1 TLSv1.2 TLSv1.3\n"));
  EXPECT_EQ(GetCapturedStderr(),
            "warning: config:5: SSL_protocols is deprecated; use SSL_protocol_min and "
            "SSL_protocol_max\n");
  EXPECT_EQ(c.remote.ssl_protocols,
            (std::vector<std::string>{"!SSLv3", "!TLSv1", "TLSv1.2", "TLSv1.3"}));
}

TEST(ConfigTest, ControlCharactersVersusUtf8) {
  // InterIMAP refuses "…" (E2 80 A6: 0x80 is a C1 control byte to Perl); we accept UTF-8 and
  // refuse only real controls such as U+0085.
  EXPECT_EQ(parse_ok(remote_with("type = tunnel\ncommand = echo \xE2\x80\xA6\n")).remote.command,
            "echo \xE2\x80\xA6");
  auto r = parse_config(remote_with("type = tunnel\ncommand = a\xC2\x85z\n"), "config", kEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "config:6: invalid value for 'command' in [remote]: control character in value\n"
            "command = a\xC2\x85z\n"
            "           ^");
}

struct PatternCase {
  const char* value;
  std::vector<std::string> patterns;
};

class ListMailboxTest : public ::testing::TestWithParam<PatternCase> {};

TEST_P(ListMailboxTest, Parses) {
  const PatternCase& c = GetParam();
  SCOPED_TRACE(c.value);
  auto r = parse_list_mailbox(c.value);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, c.patterns);
}

using namespace std::string_literals;

INSTANTIATE_TEST_SUITE_P(
    Patterns, ListMailboxTest,
    ::testing::Values(
        PatternCase{"INBOX", {"INBOX"}}, PatternCase{"*", {"*"}},
        PatternCase{"INBOX Sent  Archive/% [Gmail]/*", {"INBOX", "Sent", "Archive/%", "[Gmail]/*"}},
        PatternCase{"a\tb", {"a", "b"}}, PatternCase{"\"Sent Items\"", {"Sent Items"}},
        PatternCase{"\"(x){y}\"", {"(x){y}"}}, PatternCase{"\"a\\\"b\\\\c\"", {"a\"b\\c"}},
        PatternCase{"\"Lists\\0*\"", {"Lists\0*"s}}, PatternCase{"\"Lists\\x00*\"", {"Lists\0*"s}},
        PatternCase{"\"\\x41\\x7e\\x7E\"", {"A~~"}},
        PatternCase{"\"\\a\\b\\t\\n\\f\\r\"", {"\a\b\t\n\f\r"}},
        // Perl has no "\v" string escape: InterIMAP turns \v into a plain 'v'.
        PatternCase{"\"\\v\"", {"v"}},
        PatternCase{"INBOX \"Sent Items\" Drafts", {"INBOX", "Sent Items", "Drafts"}}));

struct PatternErrorCase {
  const char* value;
  std::size_t offset;
};

class ListMailboxErrorTest : public ::testing::TestWithParam<PatternErrorCase> {};

TEST_P(ListMailboxErrorTest, StopsAtTheFault) {
  const PatternErrorCase& c = GetParam();
  SCOPED_TRACE(c.value);
  auto r = parse_list_mailbox(c.value);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().offset, c.offset);
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, ListMailboxErrorTest,
    ::testing::Values(PatternErrorCase{"\"\"", 0}, PatternErrorCase{"\"abc", 0},
                      PatternErrorCase{"a (b)", 2}, PatternErrorCase{"foo\"bar\"", 3},
                      PatternErrorCase{"\"a\"b", 3}, PatternErrorCase{"\"\\q\"", 0},
                      PatternErrorCase{"\"\\x4\"", 0}, PatternErrorCase{"a{b", 1},
                      PatternErrorCase{"a\\b", 1}));

struct PrefixCase {
  const char* format;
  const char* name;
  const char* mailbox;
  const char* expected;
};

class LogPrefixTest : public ::testing::TestWithParam<PrefixCase> {};

TEST_P(LogPrefixTest, ExpandsAsInterimapDoes) {
  const PrefixCase& c = GetParam();
  SCOPED_TRACE(c.format);
  EXPECT_EQ(expand_log_prefix(c.format, c.name, c.mailbox), c.expected);
}

// Expected values were obtained from InterIMAP 0.5.7's _logger_prefix.
INSTANTIATE_TEST_SUITE_P(
    Prefixes, LogPrefixTest,
    ::testing::Values(
        PrefixCase{"%?n?%?m?%n(%m)&%n?: ?", "local", "INBOX", "local(INBOX): "},
        PrefixCase{"%?n?%?m?%n(%m)&%n?: ?", "remote", "", "remote: "},
        PrefixCase{"%?n?%?m?%n(%m)&%n?: ?", "", "", ""},
        PrefixCase{"%?n?%?m?%n(%m)&%n?: ?", "database", "", "database: "},
        PrefixCase{"%n %m", "local", "", "local "}, PrefixCase{"%%n", "local", "", "%n"},
        PrefixCase{"100%% %n", "local", "", "100% local"},
        PrefixCase{"%?m?[%m]&no mailbox? ", "local", "", "no mailbox "},
        PrefixCase{"%?n?a\\&b&c? ", "local", "", "a&b "}, PrefixCase{"%?n?a\\&b&c? ", "", "", "c "},
        PrefixCase{"\\?\\\\", "local", "", "?\\"}, PrefixCase{"%?x?yes&no?", "local", "", "no"},
        PrefixCase{"%?n?abc", "local", "", "%?n?abc"}, PrefixCase{"%q", "local", "", "%q"},
        PrefixCase{"%?n?a?b?", "local", "", "ab?"},
        PrefixCase{"%?n?x\\y?", "local", "", "%?n?x\\y?"}, PrefixCase{"%%?n?x?", "local", "", "%x"},
        PrefixCase{"%?n?%%&z?", "local", "", "%"}, PrefixCase{"%?n?%&&z?", "local", "", "%&"},
        PrefixCase{"%?n?%?m?<%m>&<none>?&-?", "local", "", "<none>"},
        PrefixCase{"%?n?%?m?<%m>&<none>?&-?", "local", "Sent", "<Sent>"},
        PrefixCase{"%?n?%?m?<%m>&<none>?&-?", "", "Sent", "-"},
        PrefixCase{"a\\b%", "local", "", "a\\b%"}, PrefixCase{"%?n?%?x?y?", "local", "", "%?n?"},
        PrefixCase{"%?n?%?x?y?z?", "local", "", "z"}));

TEST(LogPrefixTest, DeepNestingDoesNotOverflow) {
  std::string format;
  for (int i = 0; i < 10000; ++i) format += "%?n?";
  EXPECT_EQ(expand_log_prefix(format, "local", "").size(), format.size());
}

TEST(HostTest, IpLiterals) {
  EXPECT_EQ(host_ip_literal("192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(host_ip_literal("[192.0.2.1]"), "192.0.2.1");
  EXPECT_EQ(host_ip_literal("[::1]"), "::1");
  EXPECT_EQ(host_ip_literal("::1"), "::1");
  EXPECT_FALSE(host_ip_literal("imap.example.net"));
  EXPECT_FALSE(host_ip_literal("[imap.example.net]"));
  EXPECT_FALSE(host_ip_literal("192.0.2.256"));
}

struct PathCase {
  const char* scenario;
  const char* argument;
  Environment env;
  const char* path;
};

class ConfigPathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(ConfigPathTest, Resolves) {
  const PathCase& c = GetParam();
  SCOPED_TRACE(c.scenario);
  auto r = resolve_config_path(c.argument, c.env);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, c.path);
}

INSTANTIATE_TEST_SUITE_P(
    Paths, ConfigPathTest,
    ::testing::Values(
        PathCase{"default under ~/.config", "", kEnv, "/home/u/.config/twinbox/config"},
        PathCase{"default under XDG_CONFIG_HOME", "",
                 Environment{"/home/u", "/xdg/cfg", std::nullopt}, "/xdg/cfg/twinbox/config"},
        PathCase{"relative under the config directory", "work", kEnv,
                 "/home/u/.config/twinbox/work"},
        PathCase{"even ./", "./work", kEnv, "/home/u/.config/twinbox/./work"},
        PathCase{"absolute as-is", "/etc/twinbox.conf", Environment{}, "/etc/twinbox.conf"},
        PathCase{"tilde slash", "~/twinbox.ini", kEnv, "/home/u/twinbox.ini"},
        PathCase{"tilde alone", "~", kEnv, "/home/u"}));

TEST(ConfigPathTest, NeedsHome) {
  auto r = resolve_config_path("", Environment{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "cannot locate ~/.config: neither XDG_CONFIG_HOME nor HOME is set");
  r = resolve_config_path("~/x", Environment{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "cannot expand '~/x': HOME is not set");
}

TEST(EnvironmentTest, RelativeXdgVariablesAreIgnored) {
  const char* old_home = std::getenv("HOME");
  const std::string saved_home = old_home != nullptr ? old_home : "";
  ::setenv("HOME", "/home/t", 1);
  ::setenv("XDG_CONFIG_HOME", "relative/dir", 1);
  ::setenv("XDG_DATA_HOME", "/abs/data", 1);
  const Environment env = Environment::from_process();
  EXPECT_EQ(env.home, "/home/t");
  EXPECT_FALSE(env.xdg_config_home);
  EXPECT_EQ(env.xdg_data_home, "/abs/data");
  ::unsetenv("XDG_CONFIG_HOME");
  ::unsetenv("XDG_DATA_HOME");
  if (old_home != nullptr) ::setenv("HOME", saved_home.c_str(), 1);
}

// A file in a fresh temporary directory, removed at the end of the test.
class TempFile {
 public:
  TempFile(std::string_view content, mode_t mode) {
    char dir[] = "/tmp/twinbox-config-test-XXXXXX";
    EXPECT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/config";
    std::ofstream(path_) << content;
    EXPECT_EQ(::chmod(path_.c_str(), mode), 0);
  }
  ~TempFile() {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, path_;
};

TEST(LoadConfigTest, WarnsWhenAPasswordIsReadableByOthers) {
  TempFile file(remote_with("password = load-test-secret\n"), 0644);
  CaptureStderr();
  auto r = load_config(file.path(), kEnv);
  const std::string err = GetCapturedStderr();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(err, "warning: " + file.path() +
                     " contains a password and can be read by other users (mode 0644); run "
                     "'chmod 600 " +
                     file.path() + "' or use password-command\n");
  EXPECT_EQ(r->file, file.path());
  EXPECT_EQ(Log::instance().scrub("x load-test-secret"), "x <redacted>");
}

TEST(LoadConfigTest, GroupAccessAloneWarns) {
  TempFile file(remote_with("password = x\n"), 0610);
  CaptureStderr();
  ASSERT_TRUE(load_config(file.path(), kEnv).ok());
  EXPECT_NE(GetCapturedStderr().find("(mode 0610)"), std::string::npos);
}

TEST(LoadConfigTest, NoWarningForAPrivateFileOrWithoutPassword) {
  TempFile private_file(remote_with("password = x\n"), 0600);
  TempFile command_file(remote_with("password-command = pass show mail\n"), 0644);
  CaptureStderr();
  ASSERT_TRUE(load_config(private_file.path(), kEnv).ok());
  ASSERT_TRUE(load_config(command_file.path(), kEnv).ok());
  EXPECT_EQ(GetCapturedStderr(), "");
}

TEST(LoadConfigTest, ErrorsNameThePath) {
  TempFile file(remote_with("pasword = x\n"), 0600);
  auto r = load_config(file.path(), kEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.substr(0, file.path().size() + 3), file.path() + ":5:");
}

TEST(LoadConfigTest, MissingFile) {
  auto r = load_config("/nonexistent/twinbox/config", kEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::config);
  EXPECT_EQ(r.error().message, "/nonexistent/twinbox/config: no such configuration file");
}

TEST(LoadConfigTest, Directory) {
  TempFile file("", 0600);
  auto r = load_config(file.dir(), kEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, file.dir() + ": not a regular file");
}

TEST(ToStringTest, NeverShowsSecrets) {
  const Config c = parse_ok(
      "password = hunter2-default\n"
      "[local]\n"
      "password-command = echo hunter2-command\n"
      "[remote]\n"
      "host = imap.example\n"
      "proxy = socks5h://user:hunter2-proxy@localhost:9050\n");
  const std::string s = to_string(c);
  EXPECT_EQ(s.find("hunter2"), std::string::npos) << s;
  EXPECT_NE(s.find("password = <redacted>"), std::string::npos) << s;
  EXPECT_NE(s.find("password-command = <redacted>"), std::string::npos) << s;
  EXPECT_NE(s.find("proxy = socks5h://<redacted>@localhost:9050"), std::string::npos) << s;
  EXPECT_NE(s.find("host = imap.example"), std::string::npos) << s;
}

TEST(ToStringTest, Endpoint) {
  const Config c = parse_ok(kInterimapSample);
  EXPECT_EQ(to_string(c.local),
            "[local]\n"
            "type = tunnel\n"
            "command = doveadm exec imap\n"
            "null-stderr = YES\n"
            "auth = PLAIN LOGIN\n"
            "compress = NO\n");
}

}  // namespace
}  // namespace twinbox::config
