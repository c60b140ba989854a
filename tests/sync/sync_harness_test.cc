// Self-tests of the end-to-end harness: they pass without a sync engine, and if they fail, no
// scenario result means anything.
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sync/sync_harness.h"

namespace twinbox::sync_tests {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string failure_text(const testing::AssertionResult& r) { return r.message(); }

// One pair for the suite when run in one process (ctest runs each test alone); every test
// starts from two empty servers.
class SyncHarness : public ::testing::Test {
 protected:
  static std::unique_ptr<SyncPair>& shared() {
    static std::unique_ptr<SyncPair> pair;
    return pair;
  }
  static void TearDownTestSuite() { shared().reset(); }
  void SetUp() override {
    if (shared()) {
      shared()->reset_all();
    } else {
      shared() = std::make_unique<SyncPair>();
    }
  }
  void TearDown() override {
    if (HasFailure()) shared().reset();
  }
  SyncPair& pair() { return *shared(); }
};

// Mail, flags, mailboxes and subscriptions set with the helpers show up in the snapshots, and
// expect_converged() names every difference until both sides hold the same.
TEST_F(SyncHarness, SnapshotSeesDoveadmChanges) {
  EXPECT_TRUE(pair().expect_converged());  // two empty servers

  Message no_id;
  no_id.body = "A message without a Message-ID.\r\n";
  std::vector<Message> inbox = {test_message("self", 1, {"\\Seen"}),
                                test_message("self", 2, {"\\Flagged", "$Label1", "\\Seen"}), no_id};
  pair().append(Side::remote, "INBOX", inbox);
  pair().create_mailbox(Side::local, "Projects");
  pair().create_mailbox(Side::local, "Projects/Alpha", /*subscribe=*/true);
  pair().append(Side::local, "Projects/Alpha", test_message("self", 3));

  Snapshot remote = pair().snapshot(Side::remote);
  const MailboxState* box = remote.mailbox("INBOX");
  ASSERT_NE(box, nullptr) << remote.to_string();
  ASSERT_EQ(box->messages.size(), 3u) << remote.to_string();
  EXPECT_EQ(box->messages[0].id, "<self.1@twinbox.test>");
  EXPECT_EQ(box->messages[0].size, inbox[0].render().size());
  EXPECT_THAT(box->messages[0].flags, ElementsAre("\\Seen"));
  EXPECT_THAT(box->messages[1].flags, ElementsAre("$Label1", "\\Flagged", "\\Seen"));
  EXPECT_THAT(box->messages[2].id, StartsWith("sha256:"));
  EXPECT_EQ(box->messages[2].id.size(), 7u + 64u);
  EXPECT_EQ(box->messages[2].size, no_id.render().size());
  EXPECT_LT(box->messages[0].uid, box->messages[1].uid);
  EXPECT_THAT(box->messages[0].internal_date, StartsWith("2024-01-"));
  EXPECT_GT(box->messages[0].modseq, 0u);

  Snapshot local = pair().snapshot(Side::local);  // separator '.', names read back with '/'
  ASSERT_NE(local.mailbox("Projects/Alpha"), nullptr) << local.to_string();
  EXPECT_TRUE(local.subscribed("Projects/Alpha"));
  EXPECT_FALSE(local.subscribed("Projects"));
  EXPECT_EQ(local.mailbox("Projects/Alpha")->count("<self.3@twinbox.test>"), 1u);

  std::string diff = failure_text(pair().expect_converged());
  EXPECT_THAT(diff, HasSubstr("mailbox \"Projects\": only on local (0 messages)"));
  EXPECT_THAT(diff, HasSubstr("mailbox \"Projects/Alpha\": only on local (1 messages)"));
  EXPECT_THAT(diff, HasSubstr(fmt::format(
                        "mailbox \"INBOX\": message <self.1@twinbox.test> ({} bytes): local "
                        "missing, remote 1x (\\Seen)",
                        inbox[0].render().size())));
  EXPECT_THAT(diff, HasSubstr("subscription \"Projects/Alpha\": only on local"));

  // Make the other side equal, one flag off.
  std::vector<Message> copy = inbox;
  copy[1].flags = {"\\Seen"};
  pair().append(Side::local, "INBOX", copy);
  pair().create_mailbox(Side::remote, "Projects");
  pair().create_mailbox(Side::remote, "Projects/Alpha", /*subscribe=*/true);
  pair().append(Side::remote, "Projects/Alpha", test_message("self", 3));
  diff = failure_text(pair().expect_converged());
  EXPECT_THAT(diff, HasSubstr("message <self.2@twinbox.test>"));
  EXPECT_THAT(diff, HasSubstr("flags differ: local (\\Seen), remote ($Label1 \\Flagged \\Seen)"));
  EXPECT_THAT(diff, Not(HasSubstr("only on")));

  pair().add_flags(Side::local, "INBOX", "\\Flagged $Label1",
                   Search::message_id("<self.2@twinbox.test>"));
  EXPECT_TRUE(pair().expect_converged());

  // The same message with another INTERNALDATE is a difference too.
  Message dated = test_message("self", 4);
  pair().append(Side::remote, "INBOX", dated);
  dated.internal_date = "02-Feb-2024 12:00:00 +0000";
  pair().append(Side::local, "INBOX", dated);
  EXPECT_THAT(failure_text(pair().expect_converged()),
              HasSubstr("message <self.4@twinbox.test> (" + std::to_string(dated.render().size()) +
                        " bytes): INTERNALDATE differs: local 2024-02-02 "));
  pair().expunge(Side::local, "INBOX", Search::message_id("<self.4@twinbox.test>"));
  pair().expunge(Side::remote, "INBOX", Search::message_id("<self.4@twinbox.test>"));
  EXPECT_TRUE(pair().expect_converged());
  EXPECT_TRUE(pair().expect_no_duplicates(Side::local));

  // A duplicate is named as such, by both checks.
  pair().append(Side::local, "INBOX", inbox[0]);
  diff = failure_text(pair().expect_no_duplicates(Side::local));
  EXPECT_THAT(diff, HasSubstr("mailbox \"INBOX\": message <self.1@twinbox.test>"));
  EXPECT_THAT(diff, HasSubstr("2 times (UIDs "));
  EXPECT_THAT(failure_text(pair().expect_converged()),
              HasSubstr("local 2x (\\Seen) (\\Seen), remote 1x (\\Seen)"));

  // Expunge, remove flags and unsubscribe show up too.
  pair().expunge(Side::local, "INBOX", Search::message_id("<self.1@twinbox.test>"));
  pair().remove_flags(Side::remote, "INBOX", "\\Seen", Search::message_id("<self.1@twinbox.test>"));
  pair().unsubscribe(Side::remote, "Projects/Alpha");
  diff = failure_text(pair().expect_converged());
  EXPECT_THAT(diff, HasSubstr("message <self.1@twinbox.test>"));
  EXPECT_THAT(diff, HasSubstr("local missing, remote 1x ()"));
  EXPECT_THAT(diff, HasSubstr("subscription \"Projects/Alpha\": only on local"));
}

// Reading a snapshot changes nothing on the server (the no-op scenario relies on it), and
// unchanged() names every UID, MODSEQ, flag and counter that moved.
TEST_F(SyncHarness, SnapshotIsReadOnlyAndUnchangedSeesEveryMove) {
  pair().add_sample_mail(Side::remote, 24, 11);
  pair().append(Side::remote, "INBOX", Message{});  // no Message-ID: read by body
  Snapshot first = pair().snapshot(Side::remote);
  Snapshot second = pair().snapshot(Side::remote);
  EXPECT_TRUE(unchanged(first, second, "remote")) << first.to_string();
  EXPECT_EQ(first.total_messages(), 25u);
  EXPECT_EQ(first.mailboxes.size(), 8u) << first.to_string();
  EXPECT_TRUE(first.mailbox("Archive/2024") != nullptr) << first.to_string();
  EXPECT_TRUE(first.subscribed("日本語"));
  EXPECT_FALSE(first.subscribed("Old Stuff"));

  ASSERT_FALSE(first.at("INBOX").messages.empty()) << first.to_string();
  const MessageState& m = first.at("INBOX").messages.front();
  pair().add_flags(Side::remote, "INBOX", "$HarnessMark", Search::uids(std::to_string(m.uid)));
  pair().expunge(Side::remote, "Sent", Search::all());
  std::string diff = failure_text(unchanged(first, pair().snapshot(Side::remote), "remote"));
  EXPECT_THAT(diff, HasSubstr(fmt::format("mailbox \"INBOX\": UID {} ({}) flags", m.uid, m.id)));
  EXPECT_THAT(diff, HasSubstr(fmt::format("mailbox \"INBOX\": UID {} ({}) MODSEQ", m.uid, m.id)));
  EXPECT_THAT(diff, HasSubstr("mailbox \"INBOX\": HIGHESTMODSEQ"));
  EXPECT_THAT(diff, HasSubstr("mailbox \"Sent\": UID 1 ("));
  EXPECT_THAT(diff, HasSubstr(") disappeared"));
}

// Huge UIDs, UIDVALIDITY and mod-sequences set with doveadm are read back exactly.
TEST_F(SyncHarness, HugeValuesAreReadBack) {
  pair().create_mailbox(Side::remote, "Huge");
  MailboxUpdate update;
  update.uid_validity = 4294967295u;
  update.min_next_uid = 4000000000u;
  update.min_highest_modseq = 9000000000000000000u;
  pair().update_mailbox(Side::remote, "Huge", update);
  pair().append(Side::remote, "Huge", test_messages("huge", 2));
  Snapshot s = pair().snapshot(Side::remote);
  const MailboxState* box = s.mailbox("Huge");
  ASSERT_NE(box, nullptr) << s.to_string();
  EXPECT_EQ(box->uidvalidity, 4294967295u);
  EXPECT_EQ(box->uidnext, 4000000002u);
  EXPECT_GT(box->highestmodseq, 9000000000000000000u);
  ASSERT_EQ(box->messages.size(), 2u);
  EXPECT_EQ(box->messages[0].uid, 4000000000u);
  EXPECT_GT(box->messages[1].modseq, 9000000000000000000u);
}

// Non-ASCII and odd names go through both delimiters and back, and mail reaches them.
TEST_F(SyncHarness, OddNamesRoundTrip) {
  const std::vector<std::string> names = {"Réunions", "日本語", "日本語/下書き", "fo!o [b*a%r]",
                                          "R&D"};
  for (Side side : kSides) {
    for (std::size_t i = 0; i < names.size(); ++i) {
      pair().create_mailbox(side, names[i], /*subscribe=*/true);
      pair().append(side, names[i], test_message("odd", static_cast<int>(i)));
    }
  }
  EXPECT_TRUE(pair().expect_converged());
  Snapshot local = pair().snapshot(Side::local);
  ASSERT_NE(local.mailbox("日本語/下書き"), nullptr) << local.to_string();
  EXPECT_EQ(local.mailbox("日本語/下書き")->count("<odd.2@twinbox.test>"), 1u);
  EXPECT_TRUE(local.subscribed("fo!o [b*a%r]"));
  EXPECT_EQ(pair().server_name(Side::local, "日本語/下書き"), "日本語.下書き");
  EXPECT_EQ(pair().server_name(Side::remote, "日本語/下書き"), "日本語/下書き");
}

// The config file is private and twinbox accepts it: --probe reaches both servers today.
TEST_F(SyncHarness, ProbeAcceptsTheConfigFile) {
  struct stat st {};
  ASSERT_EQ(::stat(pair().config_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(pair().config_path());
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("database = " + pair().database_path() + "\n"));
  EXPECT_THAT(text.str(), HasSubstr("[local]\ntype = tunnel\ncommand = "));
  EXPECT_THAT(text.str(), HasSubstr("[remote]\ntype = imap\nhost = 127.0.0.1\n"));

  RunResult r = pair().run({"--probe"});
  ASSERT_TRUE(ran_ok(r));
  EXPECT_THAT(r.out, HasSubstr("local: sync-capable: yes"));
  EXPECT_THAT(r.out, HasSubstr("remote: sync-capable: yes"));
}

// The remote over STARTTLS or implicit TLS, verified with the lab's CA.
struct TlsMode {
  dovecot::Tls tls;
  const char* name;
};
void PrintTo(const TlsMode& mode, std::ostream* os) { *os << mode.name; }

class SyncHarnessTls : public ::testing::TestWithParam<TlsMode> {};

TEST_P(SyncHarnessTls, ProbeAcceptsTheTlsConfig) {
  SyncPair pair(PairOptions().remote_tls(GetParam().tls));
  RunResult r = pair.run({"--probe"});
  ASSERT_TRUE(ran_ok(r));
  EXPECT_THAT(r.out, HasSubstr("remote: sync-capable: yes"));
}

INSTANTIATE_TEST_SUITE_P(Remote, SyncHarnessTls,
                         ::testing::Values(TlsMode{dovecot::Tls::starttls, "StartTls"},
                                           TlsMode{dovecot::Tls::imaps, "Imaps"}),
                         [](const auto& info) { return std::string(info.param.name); });

// restart() gives a server new options (here fewer capabilities), keeps its mail, and the config
// follows its new port.
TEST(SyncHarnessRestart, RestartChangesCapabilitiesAndKeepsMail) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_message("restart", 1));
  const std::uint16_t old_port = pair.lab(Side::remote).port();
  dovecot::Options minimal = pair.options().sides[Side::remote].lab;
  minimal.capability = "IMAP4rev1 ENABLE UIDPLUS LIST-EXTENDED QRESYNC CONDSTORE";
  pair.restart(Side::remote, minimal);
  RunResult r = pair.run({"--probe"});
  ASSERT_TRUE(ran_ok(r));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("remote: +optional LITERAL\\+ +no"));
  EXPECT_THAT(r.out, HasSubstr(fmt::format(":{} ", pair.lab(Side::remote).port())));
  if (pair.lab(Side::remote).port() == old_port) std::cerr << "note: the same port again\n";
  EXPECT_EQ(pair.snapshot(Side::remote).at("INBOX").count(test_message_id("restart", 1)), 1u);
}

// run_process reports status and output, times out, and kills at a delay or an output line.
TEST(RunProcess, StatusOutputTimeoutAndKillPoints) {
  const std::vector<std::string> env = {"PATH=/usr/bin:/bin"};
  RunResult r = run_process({"/bin/sh", "-c", "echo hi; echo oops >&2; exit 3"}, env, {});
  EXPECT_EQ(r.status, 3);
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_EQ(r.err, "oops\n");
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.killed);

  RunOptions slow;
  slow.timeout = 300ms;
  auto t0 = std::chrono::steady_clock::now();
  r = run_process({"/bin/sleep", "30"}, env, slow);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.status, 128 + 9);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_THAT(r.describe(), HasSubstr("TIMED OUT"));

  RunOptions at_line;
  at_line.kill = KillAt::on_output("cop(y|ied)", 2);
  r = run_process(
      {"/bin/sh", "-c", "echo copied 1 >&2; echo other; echo copied 2 >&2; sleep 0.5; echo late"},
      env, at_line);
  EXPECT_TRUE(r.killed) << r.describe();
  EXPECT_EQ(r.status, 128 + 9);
  EXPECT_EQ(r.err, "copied 1\ncopied 2\n");
  EXPECT_THAT(r.out, Not(HasSubstr("late")));

  RunOptions at_predicate;
  at_predicate.kill =
      KillAt::on_line([](std::string_view line) { return line.size() > 5; }, "longer than 5 bytes");
  r = run_process({"/bin/sh", "-c", "echo a; echo 123456; exec sleep 30"}, env, at_predicate);
  EXPECT_TRUE(r.killed) << r.describe();
  EXPECT_EQ(r.out, "a\n123456\n");
  EXPECT_THAT(r.describe(), HasSubstr("killed on purpose"));

  RunOptions at_delay;
  at_delay.kill = KillAt::after(100ms);
  r = run_process({"/bin/sh", "-c", "echo started; exec sleep 30"}, env, at_delay);
  EXPECT_TRUE(r.killed);
  EXPECT_GE(r.elapsed, 100ms);
  EXPECT_LT(r.elapsed, 2s);
  EXPECT_EQ(r.out, "started\n");

  // A run that ends before its kill point is not "killed".
  r = run_process({"/bin/sh", "-c", "exit 0"}, env, at_delay);
  EXPECT_FALSE(r.killed);
  EXPECT_TRUE(r.ok());
}

// The no-op check: summaries with zero counts are quiet, real changes are not.
TEST(ChangeLines, SeparatesChangesFromQuietSummaries) {
  EXPECT_THAT(change_lines("twinbox: 8 mailboxes, 0 copied, 0 expunged, 0 flags updated\n"
                           "local(INBOX): nothing to copy\n"
                           "remote(Sent): no messages added\n"
                           "twinbox: 8 mailbox(es), 0 synced; copied 0 to local, 0 to remote; "
                           "expunged 0 local, 0 remote; flags set 0 local, 0 remote\n"
                           "twinbox: done in 0.21 s\n"),
              ::testing::IsEmpty());
  EXPECT_THAT(change_lines("local(INBOX): copied 3 messages\n"
                           "remote(INBOX): 2 messages expunged\n"
                           "local: Created mailbox Foo\n"
                           "remote(Archive): Added 1 UID(s) 4\n"
                           "summary: 12 mailboxes, 0 copied, 1 expunged\n"
                           "twinbox: 8 mailbox(es), 1 synced; copied 0 to local, 5 to remote; "
                           "expunged 0 local, 0 remote; flags set 0 local, 0 remote\n"
                           "twinbox: 8 mailbox(es), 1 synced; copied 0 to local, 0 to remote; "
                           "expunged 0 local, 0 remote; flags set 0 local, 2 remote\n"
                           "twinbox: local(Sent): subscribed\n"),
              ElementsAre("local(INBOX): copied 3 messages", "remote(INBOX): 2 messages expunged",
                          "local: Created mailbox Foo", "remote(Archive): Added 1 UID(s) 4",
                          "summary: 12 mailboxes, 0 copied, 1 expunged",
                          "twinbox: 8 mailbox(es), 1 synced; copied 0 to local, 5 to remote; "
                          "expunged 0 local, 0 remote; flags set 0 local, 0 remote",
                          "twinbox: 8 mailbox(es), 1 synced; copied 0 to local, 0 to remote; "
                          "expunged 0 local, 0 remote; flags set 0 local, 2 remote",
                          "twinbox: local(Sent): subscribed"));
}

}  // namespace
}  // namespace twinbox::sync_tests
