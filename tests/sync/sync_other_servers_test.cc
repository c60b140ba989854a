// Two more real servers, each paired with Dovecot: Cyrus IMAP 3.6 (QRESYNC, over TCP with a
// password) and Courier-IMAP 5 (no CONDSTORE, no LIST-EXTENDED: the plain tier, through a
// pre-authenticated tunnel). Both are started by the suite (tests/servers/*_lab) and read by an
// oracle that shares no code with twinbox (tests/servers/imap_snapshot.py, Python's imaplib).
// Each: initial sync both ways, a no-op, changes on both sides (flags, expunges, new mail),
// runs stopped after their 1st and 3rd commit, a rerun, and a last run with nothing to do.
//
// Courier keeps every folder under its personal namespace "INBOX." (separator '.'): the
// mailboxes synced with it are INBOX and folders under it ("INBOX/Lists" on Dovecot).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sync/scenario_support.h"

namespace twinbox::sync_tests {
namespace {

std::map<std::string, std::string> facts_of(const std::string& text) {
  std::map<std::string, std::string> facts;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) facts[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return facts;
}

// A Cyrus or Courier instance in a directory of its own, stopped and removed at the end.
class OtherServer {
 public:
  OtherServer(std::string script, std::string dir)
      : script_(source_dir() + "/tests/servers/" + std::move(script)), dir_(std::move(dir)) {
    auto started = dovecot::DovecotLab::run({script_, "start", dir_});
    if (!started.ok()) throw std::runtime_error(script_ + " start: " + started.errors);
    facts_ = facts_of(started.output);
  }
  ~OtherServer() { (void)dovecot::DovecotLab::run({script_, "stop", dir_}); }
  OtherServer(const OtherServer&) = delete;
  OtherServer& operator=(const OtherServer&) = delete;
  const std::string& fact(const std::string& key) const { return facts_.at(key); }
  bool has(const std::string& key) const { return facts_.count(key) > 0; }
  const std::string& dir() const { return dir_; }

 private:
  std::string script_, dir_;
  std::map<std::string, std::string> facts_;
};

struct Kind {
  const char* name;
  const char* script;
  const char* tier;    // --probe's "change detection:" for the remote
  const char* folder;  // a folder both servers accept, '/' as the separator
};

std::ostream& operator<<(std::ostream& out, const Kind& k) { return out << k.name; }

class SyncOtherServers : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/twinbox-other.XXXXXX";
    const char* made = ::mkdtemp(pattern);
    ASSERT_NE(made, nullptr);
    dir_ = made;
    ::chmod(dir_.c_str(), 0755);  // the servers' own users read their directories below
    dovecot::Options options;
    options.settings.push_back("mail_fsync=never");
    local_ = std::make_unique<dovecot::DovecotLab>(dovecot::DovecotLab::start(options));
    remote_ = std::make_unique<OtherServer>(GetParam().script, dir_ + "/remote");
    std::string text = fmt::format(
        "database = {}/state.db\n\n[local]\ntype = tunnel\n"
        "command = {}\nnull-stderr = YES\n\n[remote]\n",
        dir_, local_->tunnel_command_line());
    if (remote_->has("port")) {
      text += fmt::format(
          "type = imap\nhost = 127.0.0.1\nport = {}\nSTARTTLS = NO\n"
          "username = {}\npassword = {}\n",
          remote_->fact("port"), remote_->fact("user"), remote_->fact("password"));
    } else {
      text +=
          fmt::format("type = tunnel\ncommand = {}\nnull-stderr = YES\n", remote_->fact("tunnel"));
    }
    std::ofstream(config_path()) << text;
    ::chmod(config_path().c_str(), 0600);
  }
  void TearDown() override {
    remote_.reset();
    local_.reset();
    if (std::getenv("TWINBOX_KEEP_LAB") == nullptr) (void)std::system(("rm -rf " + dir_).c_str());
  }

  std::string config_path() const { return dir_ + "/config"; }

  RunResult run(const std::vector<std::string>& args = {},
                std::vector<std::string> extra_env = {}) const {
    std::vector<std::string> argv = {SyncPair::twinbox_binary(), "--config", config_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> env = twinbox_environment(dir_);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    RunOptions options;
    options.timeout = std::chrono::seconds(120);
    return run_process(argv, env, options);
  }

  // tests/servers/imap_snapshot.py on one side; throws on failure.
  std::string oracle(Side side, const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {
        "python3",
        source_dir() + "/tests/servers/imap_snapshot.py",
        "--lab",
        side == Side::local ? local_->dir() : remote_->dir(),
    };
    argv.insert(argv.end(), args.begin(), args.end());
    auto done = dovecot::DovecotLab::run(argv);
    if (!done.ok()) throw std::runtime_error("imap_snapshot.py: " + done.errors);
    return done.output;
  }
  std::string content(Side side) const { return oracle(side, {"content"}); }
  void append(Side side, const std::string& mailbox, const Message& m,
              const std::string& flags = "") const {
    const std::string file = dir_ + "/message.eml";
    std::ofstream(file, std::ios::binary | std::ios::trunc) << m.render();
    std::vector<std::string> args = {"append", mailbox, file};
    if (!flags.empty()) args.insert(args.end(), {"--flags", flags});
    oracle(side, args);
  }

  // Both sides hold the same messages, flags and subscriptions, each message once.
  testing::AssertionResult converged() const {
    const std::string a = content(Side::local), b = content(Side::remote);
    if (a != b) return testing::AssertionFailure() << "local:\n" << a << "remote:\n" << b;
    std::set<std::string> seen;
    std::istringstream in(a);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("message\t", 0) == 0 && !seen.insert(line).second) {
        return testing::AssertionFailure() << "twice: " << line;
      }
    }
    return testing::AssertionSuccess();
  }
  testing::AssertionResult has(Side side, const std::string& text) const {
    const std::string c = content(side);
    if (c.find(text) != std::string::npos) return testing::AssertionSuccess();
    return testing::AssertionFailure() << side_name(side) << " lacks '" << text << "':\n" << c;
  }

  std::string dir_;
  std::unique_ptr<dovecot::DovecotLab> local_;
  std::unique_ptr<OtherServer> remote_;
};

TEST_P(SyncOtherServers, PairedWithDovecotSyncsChangesAndStops) {
  const Kind& kind = GetParam();
  const std::string folder = kind.folder;
  RunResult probe = run({"--probe"});
  ASSERT_TRUE(ran_ok(probe));
  EXPECT_THAT(probe.out,
              ::testing::HasSubstr(fmt::format("remote: change detection: {}", kind.tier)));

  // Initial: mail on both sides, a folder on the remote.
  for (int n = 1; n <= 4; ++n) append(Side::local, "INBOX", test_message("ol", n), "\\Seen");
  for (int n = 1; n <= 5; ++n) append(Side::remote, "INBOX", test_message("or", n));
  oracle(Side::remote, {"create", folder});
  for (int n = 1; n <= 2; ++n) append(Side::remote, folder, test_message("of", n), "$Label1");
  RunResult first = run();
  ASSERT_TRUE(ran_ok(first));
  ASSERT_TRUE(converged());
  EXPECT_TRUE(has(Side::local, fmt::format("{}\t{}", folder, test_message_id("of", 2))));

  RunResult noop = run();
  ASSERT_TRUE(ran_ok(noop));
  EXPECT_TRUE(reports_no_changes(noop));

  // Changes on both sides.
  oracle(Side::remote, {"flags", "INBOX", test_message_id("or", 1), "--add", "$Remote"});
  oracle(Side::local, {"flags", "INBOX", test_message_id("ol", 1), "--remove", "\\Seen"});
  oracle(Side::remote, {"expunge", "INBOX", test_message_id("ol", 2)});
  oracle(Side::local, {"expunge", "INBOX", test_message_id("or", 3)});
  append(Side::local, folder, test_message("ol-new", 1));
  append(Side::remote, "INBOX", test_message("or-new", 1));
  ASSERT_TRUE(ran_ok(run()));
  ASSERT_TRUE(converged());
  for (Side side : kSides) {
    const std::string c = content(side);
    EXPECT_THAT(c, ::testing::Not(::testing::HasSubstr(test_message_id("ol", 2)))) << c;
    EXPECT_THAT(c, ::testing::Not(::testing::HasSubstr(test_message_id("or", 3)))) << c;
    EXPECT_THAT(c, ::testing::HasSubstr(test_message_id("ol-new", 1)));
    EXPECT_THAT(c, ::testing::HasSubstr(test_message_id("or-new", 1)));
    EXPECT_THAT(c, ::testing::ContainsRegex(test_message_id("or", 1) + "\t[0-9]+\t\\$Remote"));
    EXPECT_THAT(c, ::testing::ContainsRegex(test_message_id("ol", 1) + "\t[0-9]+\t\n"));
  }

  // Stopped right after the 1st, then the 3rd commit, with new mail on both sides; a rerun.
  for (int n = 1; n <= 6; ++n) {
    append(Side::local, "INBOX", test_message("stop-l", n));
    append(Side::remote, folder, test_message("stop-r", n));
  }
  for (int commits : {1, 3}) {
    RunResult stopped =
        run({"--debug"}, {fmt::format("TWINBOX_TEST_EXIT_AFTER_COMMITS={}", commits)});
    if (stopped.status == kExitedAfterCommits) {
      EXPECT_TRUE(exited_after_commits(stopped, commits));
    } else {
      ASSERT_TRUE(ran_ok(stopped));
    }
  }
  ASSERT_TRUE(ran_ok(run()));
  ASSERT_TRUE(converged());
  for (int n = 1; n <= 6; ++n) {
    EXPECT_TRUE(has(Side::remote, test_message_id("stop-l", n)));
    EXPECT_TRUE(has(Side::local, test_message_id("stop-r", n)));
  }
  RunResult last = run();
  ASSERT_TRUE(ran_ok(last));
  EXPECT_TRUE(reports_no_changes(last));
  // A server that fails commands pipelined behind its login (Cyrus 3.6 runs an AUTHENTICATE
  // with SASL-IR twice) costs one extra connection in one run, noted, never again.
  EXPECT_THAT(last.err, ::testing::Not(::testing::HasSubstr("pipelined behind the login")));

  if (std::string(kind.name) != "Courier") return;
  // A top-level folder cannot exist on Courier: that mailbox fails (exit status 1, the server's
  // answer shown), the rest of the run goes on, and nothing about it is recorded.
  oracle(Side::local, {"create", "Projects"});
  append(Side::local, "Projects", test_message("proj", 1));
  append(Side::local, "INBOX", test_message("after", 1));
  RunResult refused = run();
  EXPECT_EQ(refused.status, 1) << refused.describe();
  EXPECT_THAT(refused.err, ::testing::HasSubstr("cannot create the mailbox"));
  EXPECT_TRUE(has(Side::remote, test_message_id("after", 1)));
  oracle(Side::local, {"delete", "Projects"});
  RunResult again = run();
  EXPECT_TRUE(ran_ok(again));
  EXPECT_TRUE(converged());
}

INSTANTIATE_TEST_SUITE_P(Servers, SyncOtherServers,
                         ::testing::Values(Kind{"Cyrus", "cyrus_lab", "QRESYNC", "Work/Lists"},
                                           Kind{"Courier", "courier_lab", "plain IMAP",
                                                "INBOX/Lists"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace twinbox::sync_tests
