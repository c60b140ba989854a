// OAuth2 and SOCKS5 end to end, with real parts only:
// - SyncOAuth: the remote Dovecot checks bearer tokens with its oauth2 passdb against an identity
//   provider stand-in on loopback (tests/servers/oauth_idp.py, RFC 7662 introspection) that the
//   test starts; twinbox gets its token from a token-command at each login. Valid tokens with
//   OAUTHBEARER and XOAUTH2, expired and wrong-user tokens, failing and hung token commands, and
//   a token revoked while --watch runs. No token may appear in any output, --debug included, in
//   any of the forms it takes on the wire.
// - SyncSocks5: the remote is reached through microsocks (Debian's SOCKS5 server) with
//   username/password, bound to 127.0.0.5 for its outgoing connections so that Dovecot's log
//   proves the connection went through it; plain IMAP, STARTTLS and imaps; the proxy resolves
//   the name for socks5h (microsocks logs the name it was given); refused proxy credentials,
//   an unreachable server, a proxy that is down, and a name only a resolver could know.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "sync/scenario_support.h"

namespace twinbox::sync_tests {
namespace {

using namespace std::chrono_literals;

void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

std::string random_hex(std::size_t n) {
  static std::mt19937_64 rng(std::random_device{}());
  std::string out;
  while (out.size() < n) out += fmt::format("{:016x}", rng());
  return out.substr(0, n);
}

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// A TCP port nothing listens on right now.
std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A temporary directory, removed at the end unless TWINBOX_KEEP_LAB=1.
class TempDir {
 public:
  TempDir() {
    char path[] = "/tmp/twinbox-cred-XXXXXX";
    if (::mkdtemp(path) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = path;
  }
  ~TempDir() {
    const char* keep = std::getenv("TWINBOX_KEEP_LAB");
    if (keep == nullptr || std::string(keep) != "1") std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A helper server run by the test in its own process group, its output to `log`; stopped with
// SIGTERM (then SIGKILL) by the destructor.
class Daemon {
 public:
  Daemon(const std::vector<std::string>& argv, const std::string& log) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      const int in = ::open("/dev/null", O_RDONLY);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Daemon() {
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(20ms);
    }
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  bool running() const { return ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

// ---------------------------------------------------------------------------------------------
// OAuth2

struct Token {
  std::string user = "twinbox";
  std::chrono::seconds valid_for = 1h;  // negative: expired that long ago
  bool revoked = false;
};

class IdentityProvider {
 public:
  explicit IdentityProvider(const TempDir& dir)
      : tokens_(dir.path() + "/tokens.json"), url_file_(dir.path() + "/idp.url") {
    set({});
    daemon_ = std::make_unique<Daemon>(
        std::vector<std::string>{"python3", source_dir() + "/tests/servers/oauth_idp.py", tokens_,
                                 url_file_},
        dir.path() + "/idp.out");
    for (int i = 0; i < 500 && !std::filesystem::exists(url_file_); ++i) {
      std::this_thread::sleep_for(20ms);
    }
    url_ = read_text(url_file_);
    while (!url_.empty() && url_.back() == '\n') url_.pop_back();
    if (url_.empty()) throw std::runtime_error("the identity provider did not start");
  }
  const std::string& url() const { return url_; }

  void set(const std::map<std::string, Token>& tokens) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    std::string json = "{\"tokens\": {";
    for (const auto& [token, t] : tokens) {
      if (json.back() != '{') json += ", ";
      json += fmt::format(R"("{}": {{"user": "{}", "expires": {}, "revoked": {}}})", token, t.user,
                          now + t.valid_for.count(), t.revoked ? "true" : "false");
    }
    write_atomically(tokens_, json + "}}\n");
  }
  // Introspection requests answered so far with active = `active`.
  std::size_t answered(bool active) const {
    const std::string log = read_text(tokens_ + ".log");
    const std::string needle = active ? "\"active\": true" : "\"active\": false";
    std::size_t n = 0;
    for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  }

 private:
  std::string tokens_, url_file_, url_;
  std::unique_ptr<Daemon> daemon_;
};

// Every form a token takes on the wire, for leak checks: itself, base64 of it, and the SASL
// responses of both mechanisms for the lab's user (OAUTHBEARER's has the host and port in it).
std::vector<std::string> token_forms(const std::string& token, const dovecot::DovecotLab& lab) {
  const std::string user = lab.user();
  return {token, base64(token),
          base64("user=" + user +
                 "\x01"
                 "auth=Bearer " +
                 token + "\x01\x01"),
          base64(fmt::format("n,a={},\x01host={}\x01port={}\x01"
                             "auth=Bearer {}\x01\x01",
                             user, lab.host(), lab.port(), token))};
}

testing::AssertionResult never_shows(const RunResult& run, const std::vector<std::string>& forms) {
  for (const auto& form : forms) {
    if (run.out.find(form) != std::string::npos || run.err.find(form) != std::string::npos) {
      return testing::AssertionFailure()
             << "the output shows a secret (" << form.substr(0, 6) << "...):\n"
             << run.describe();
    }
  }
  return testing::AssertionSuccess();
}

class SyncOAuth : public ::testing::Test {
 protected:
  void start(const std::string& mechanism) {
    idp_ = std::make_unique<IdentityProvider>(dir_);
    token_file_ = dir_.path() + "/token";
    PairOptions options;
    options.sides[Side::remote].lab.oauth2_url = idp_->url();
    options.sides[Side::remote].config = oauth_lines(mechanism);
    pair_ = std::make_unique<SyncPair>(options);
  }
  std::vector<std::string> oauth_lines(const std::string& mechanism,
                                       std::vector<std::string> more = {}) const {
    std::vector<std::string> lines = {"auth = " + mechanism, "token-command = cat " + token_file_};
    lines.insert(lines.end(), more.begin(), more.end());
    return lines;
  }
  void use_token(const std::string& token) const { write_atomically(token_file_, token + "\n"); }
  std::string dovecot_log() const { return read_text(pair_->lab(Side::remote).log_path()); }

  TempDir dir_;
  std::unique_ptr<IdentityProvider> idp_;
  std::string token_file_;
  std::unique_ptr<SyncPair> pair_;
};

TEST_F(SyncOAuth, ValidTokenWithEachMechanismAndNeverShown) {
  start("OAUTHBEARER");
  const std::string token = "ya29." + random_hex(48);
  idp_->set({{token, Token{}}});
  use_token(token);
  pair_->append(Side::remote, "INBOX", test_messages("oauth", 3));
  pair_->append(Side::local, "INBOX", test_messages("oauth-local", 2));

  const RunResult first = pair_->run({"--debug"});
  ASSERT_TRUE(ran_ok(first));
  EXPECT_TRUE(pair_->expect_converged());
  EXPECT_TRUE(never_shows(first, token_forms(token, pair_->lab(Side::remote))));
  EXPECT_GE(idp_->answered(true), 1u);
  EXPECT_NE(dovecot_log().find("method=OAUTHBEARER"), std::string::npos);
  EXPECT_NE(first.err.find("<redacted>"), std::string::npos) << "the trace shows the exchange";

  // XOAUTH2, with a new token (the command is run again at this login).
  const std::string second_token = "ya29." + random_hex(48);
  idp_->set({{second_token, Token{}}});
  use_token(second_token);
  pair_->set_config_lines(Side::remote, oauth_lines("XOAUTH2"));
  pair_->append(Side::remote, "INBOX", test_message("oauth", 4));
  const RunResult second = pair_->run({"--debug"});
  ASSERT_TRUE(ran_ok(second));
  EXPECT_TRUE(pair_->expect_converged());
  EXPECT_EQ(pair_->snapshot(Side::local).at("INBOX").count(test_message_id("oauth", 4)), 1u);
  EXPECT_TRUE(never_shows(second, token_forms(second_token, pair_->lab(Side::remote))));
  EXPECT_NE(dovecot_log().find("method=XOAUTH2"), std::string::npos);
}

// A refused token ends the run with exit status 5, the server's JSON status as evidence, and
// nothing changed on either side; so do a failing and a hung token command.
TEST_F(SyncOAuth, RefusedTokensAndFailingCommandsChangeNothing) {
  start("OAUTHBEARER");
  pair_->append(Side::remote, "INBOX", test_messages("refused", 2));
  const PerSide<Snapshot> before = pair_->snapshots();
  const auto expect_refused = [&](const RunResult& run, const std::string& expected,
                                  const std::vector<std::string>& secrets) {
    EXPECT_EQ(run.status, 5) << run.describe();
    EXPECT_NE(run.err.find(expected), std::string::npos) << run.describe();
    EXPECT_TRUE(never_shows(run, secrets));
    const PerSide<Snapshot> after = pair_->snapshots();
    for (Side side : kSides) EXPECT_TRUE(unchanged(before[side], after[side], side_name(side)));
  };

  const std::string expired = "ya29." + random_hex(48);
  const std::string mallorys = "ya29." + random_hex(48);
  idp_->set({{expired, Token{"twinbox", -60s}}, {mallorys, Token{"mallory"}}});
  use_token(expired);
  expect_refused(pair_->run({"--debug"}),
                 "remote: authentication as 'twinbox' failed (OAUTHBEARER):"
                 " Authentication failed. (the server said {\"status\":\"invalid_token\"})",
                 token_forms(expired, pair_->lab(Side::remote)));
  use_token(mallorys);
  pair_->set_config_lines(Side::remote, oauth_lines("XOAUTH2"));
  expect_refused(pair_->run(), "remote: authentication as 'twinbox' failed (XOAUTH2)",
                 token_forms(mallorys, pair_->lab(Side::remote)));

  pair_->set_config_lines(Side::remote,
                          {"auth = XOAUTH2",
                           "token-command = echo leaked-token-123; echo 'agent is locked' >&2; "
                           "exit 3"});
  const RunResult failing = pair_->run();
  expect_refused(failing,
                 "remote: token-command failed with exit status 3; it said: agent is locked",
                 {"leaked-token-123"});

  pair_->set_config_lines(Side::remote, {"auth = XOAUTH2", "token-command = sleep 30",
                                         "credential-command-timeout = 1"});
  const RunResult hung = pair_->run();
  expect_refused(hung, "remote: token-command did not finish within 1 s and was stopped", {});
  EXPECT_LT(hung.elapsed, 15s) << hung.describe();
}

// --watch with a token that is revoked while it runs: the connection is cut (doveadm kick, the
// server's BYE), the next login is refused while the command still prints the revoked token,
// and twinbox retries, runs the command again, gets the new token and carries on where it was.
TEST_F(SyncOAuth, RevokedTokenDuringWatchIsRenewedByTheCommand) {
  start("OAUTHBEARER");
  const std::string first = "ya29." + random_hex(48);
  const std::string second = "ya29." + random_hex(48);
  idp_->set({{first, Token{}}});
  use_token(first);
  pair_->append(Side::remote, "INBOX", test_messages("watch-oauth", 2));
  ASSERT_TRUE(ran_ok(pair_->run()));

  Watching watching(*pair_, {"--watch=2", "--debug"});
  pair_->append(Side::remote, "INBOX", test_message("watch-oauth", 3));
  ASSERT_TRUE(arrives_within(*pair_, Side::local, "INBOX", test_message_id("watch-oauth", 3), 20s));

  idp_->set({{first, Token{"twinbox", 1h, true}}, {second, Token{}}});
  const std::size_t refused_before = idp_->answered(false);
  pair_->doveadm(Side::remote, {"kick", pair_->lab(Side::remote).user()});
  // The reconnection's login with the revoked token is refused; then the command renews it.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (idp_->answered(false) == refused_before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_GT(idp_->answered(false), refused_before) << "no login with the revoked token";
  use_token(second);
  pair_->append(Side::remote, "INBOX", test_message("watch-oauth", 4));
  pair_->append(Side::local, "INBOX", test_message("watch-oauth-local", 1));
  EXPECT_TRUE(arrives_within(*pair_, Side::local, "INBOX", test_message_id("watch-oauth", 4), 40s));
  EXPECT_TRUE(
      arrives_within(*pair_, Side::remote, "INBOX", test_message_id("watch-oauth-local", 1), 20s));

  const RunResult& run = watching.stop();
  EXPECT_EQ(run.status, 0) << run.describe();
  EXPECT_NE(run.err.find("authentication as 'twinbox' failed (OAUTHBEARER)"), std::string::npos)
      << run.describe();
  EXPECT_NE(run.err.find("reconnecting in"), std::string::npos) << run.describe();
  EXPECT_TRUE(never_shows(run, token_forms(first, pair_->lab(Side::remote))));
  EXPECT_TRUE(never_shows(run, token_forms(second, pair_->lab(Side::remote))));
  EXPECT_TRUE(pair_->expect_converged());
  EXPECT_TRUE(pair_->expect_no_duplicates(Side::local));
}

// ---------------------------------------------------------------------------------------------
// SOCKS5

// microsocks on a free loopback port, with a user and password, its outgoing connections bound
// to 127.0.0.5.
class Socks5Proxy {
 public:
  static constexpr const char* kOutgoing = "127.0.0.5";
  explicit Socks5Proxy(const TempDir& dir)
      : port_(free_port()),
        password_("pw-" + random_hex(16)),
        log_(dir.path() + "/microsocks.log") {
    daemon_ = std::make_unique<Daemon>(
        std::vector<std::string>{"microsocks", "-i", "127.0.0.1", "-p", std::to_string(port_), "-u",
                                 "tor", "-P", password_, "-b", kOutgoing},
        log_);
    // Up once it accepts connections.
    for (int i = 0; i < 250; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(port_);
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
      ::close(fd);
      if (up) return;
      std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error("microsocks did not start (scripts/install-deps installs it)");
  }
  std::string uri(const std::string& scheme, const std::string& password = "") const {
    return fmt::format("{}://tor:{}@127.0.0.1:{}", scheme, password.empty() ? password_ : password,
                       port_);
  }
  const std::string& password() const { return password_; }
  std::string log() const { return read_text(log_); }

 private:
  std::uint16_t port_;
  std::string password_, log_;
  std::unique_ptr<Daemon> daemon_;
};

class SyncSocks5 : public ::testing::TestWithParam<dovecot::Tls> {};

// socks5h with host = localhost: the proxy gets the name, connects from 127.0.0.5, and the sync
// runs through it on plain IMAP, STARTTLS and imaps alike.
TEST_P(SyncSocks5, SyncsThroughTheProxy) {
  TempDir dir;
  Socks5Proxy proxy(dir);
  PairOptions options;
  options.remote_tls(GetParam());
  options.sides[Side::remote].config = {"proxy = " + proxy.uri("socks5h"), "host = localhost"};
  SyncPair pair(options);
  pair.append(Side::remote, "INBOX", test_messages("socks", 3));
  pair.append(Side::local, "INBOX", test_messages("socks-local", 2));
  const RunResult run = pair.run({"--debug"});
  ASSERT_TRUE(ran_ok(run));
  EXPECT_TRUE(pair.expect_converged());
  const auto& lab = pair.lab(Side::remote);
  const std::string port =
      std::to_string(GetParam() == dovecot::Tls::imaps ? lab.imaps_port() : lab.port());
  EXPECT_NE(proxy.log().find("connected to localhost:" + port), std::string::npos) << proxy.log();
  const std::string dovecot_log = read_text(lab.log_path());
  EXPECT_NE(dovecot_log.find(fmt::format("rip={}", Socks5Proxy::kOutgoing)), std::string::npos)
      << "the server saw no connection from the proxy";
  // The lab's readiness probe connects directly before the run; no login may.
  std::istringstream lines(dovecot_log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("Login: user=") == std::string::npos) continue;
    EXPECT_NE(line.find(fmt::format("rip={},", Socks5Proxy::kOutgoing)), std::string::npos)
        << "a login that did not come through the proxy: " << line;
  }
  EXPECT_EQ(run.err.find(proxy.password()), std::string::npos) << run.describe();
}

INSTANTIATE_TEST_SUITE_P(Transports, SyncSocks5,
                         ::testing::Values(dovecot::Tls::none, dovecot::Tls::starttls,
                                           dovecot::Tls::imaps),
                         [](const auto& info) {
                           return info.param == dovecot::Tls::none       ? std::string("Plain")
                                  : info.param == dovecot::Tls::starttls ? std::string("Starttls")
                                                                         : std::string("Imaps");
                         });

// socks5 resolves here and sends the address; the failures each name the proxy and the cause,
// with the documented exit status, and leave both sides as they were.
TEST(SyncSocks5Errors, ResolutionAndFailuresAreClear) {
  TempDir dir;
  Socks5Proxy proxy(dir);
  SyncPair pair;
  const auto& lab = pair.lab(Side::remote);
  pair.set_config_lines(Side::remote, {"proxy = " + proxy.uri("socks5")});
  ASSERT_TRUE(ran_ok(pair.run()));
  EXPECT_NE(proxy.log().find(fmt::format("connected to {}:{}", lab.host(), lab.port())),
            std::string::npos)
      << proxy.log();

  pair.append(Side::remote, "INBOX", test_messages("socks-error", 2));
  const PerSide<Snapshot> before = pair.snapshots();
  const auto expect_failure = [&](const std::vector<std::string>& lines, int status,
                                  const std::string& expected) {
    pair.set_config_lines(Side::remote, lines);
    const RunResult run = pair.run({"--debug"});
    EXPECT_EQ(run.status, status) << run.describe();
    EXPECT_NE(run.err.find(expected), std::string::npos) << run.describe();
    EXPECT_EQ(run.err.find(proxy.password()), std::string::npos) << run.describe();
    const PerSide<Snapshot> after = pair.snapshots();
    for (Side side : kSides) EXPECT_TRUE(unchanged(before[side], after[side], side_name(side)));
  };
  expect_failure({"proxy = " + proxy.uri("socks5h", "wrong-password")}, 5,
                 "the proxy refused the user name or password of the proxy URI");
  const std::uint16_t closed = free_port();
  expect_failure({"proxy = " + proxy.uri("socks5h"), fmt::format("port = {}", closed)}, 4,
                 fmt::format("the proxy could not connect to {}:{}: connection refused (SOCKS5 "
                             "reply 5)",
                             lab.host(), closed));
  expect_failure({fmt::format("proxy = socks5h://127.0.0.1:{}", closed)}, 4,
                 fmt::format("(the SOCKS5 proxy 127.0.0.1:{})", closed));
  // A name no resolver knows: socks5h hands it to the proxy, socks5 fails here before the proxy.
  expect_failure({"proxy = " + proxy.uri("socks5h"), "host = imap.twinbox.invalid"}, 4,
                 "the proxy could not connect to imap.twinbox.invalid:");
  expect_failure({"proxy = " + proxy.uri("socks5"), "host = imap.twinbox.invalid"}, 4,
                 "cannot resolve imap.twinbox.invalid:");
}

}  // namespace
}  // namespace twinbox::sync_tests
