// End-to-end sync scenarios (initial sync, changes on both sides, mailbox names, limits, server
// variants, crash safety): two real Dovecot servers, the twinbox binary, and a convergence oracle
// that reads both servers with doveadm, never through twinbox.
//
// They must never be weakened to pass. See README.md for running one of them. The other modes
// (--delete/--rename, --repair, --watch, list-reference, --dry-run) are in sync_modes_test.cc.
#include <algorithm>
#include <cctype>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sync/scenario_support.h"

namespace twinbox::sync_tests {
namespace {

using namespace std::chrono_literals;

// =============================================================================================
// Initial synchronisation

class SyncInitial : public SharedPairTest<SyncInitial> {
 protected:
  void SetUp() override {
    if (!ensure_pair()) pair().reset_all();
  }
};

// Initial sync remote->local: the remote's sample mail (8 mailboxes, one unsubscribed) is
// copied to an empty local server, and the remote is left as it was.
TEST_F(SyncInitial, RemoteToLocal) {
  pair().add_sample_mail(Side::remote, 40, 1);
  Snapshot before = pair().snapshot(Side::remote);
  ASSERT_TRUE(synced(pair()));
  PerSide<Snapshot> after = pair().snapshots();
  EXPECT_TRUE(same_content(before, after[Side::remote], "remote before", "remote after"));
  EXPECT_EQ(after[Side::local].total_messages(), 40u);
  EXPECT_NE(after[Side::local].mailbox("Archive/2024"), nullptr);
  EXPECT_FALSE(after[Side::local].subscribed("Old Stuff"));
  EXPECT_TRUE(after[Side::local].subscribed("日本語"));
}

// Initial sync local->remote: the same, the other way round.
TEST_F(SyncInitial, LocalToRemote) {
  pair().add_sample_mail(Side::local, 40, 2);
  Snapshot before = pair().snapshot(Side::local);
  ASSERT_TRUE(synced(pair()));
  PerSide<Snapshot> after = pair().snapshots();
  EXPECT_TRUE(same_content(before, after[Side::local], "local before", "local after"));
  EXPECT_EQ(after[Side::remote].total_messages(), 40u);
  EXPECT_NE(after[Side::remote].mailbox("Archive/2024"), nullptr);
}

// Both servers start with mail in the same mailboxes: the first run merges them, and a second
// run sends nothing (no UID, MODSEQ, flag or counter moves on either server; no change logged).
TEST_F(SyncInitial, SecondRunChangesNothing) {
  pair().add_sample_mail(Side::remote, 30, 3);
  pair().add_sample_mail(Side::local, 20, 4);
  ASSERT_TRUE(synced(pair()));
  EXPECT_EQ(pair().snapshot(Side::local).total_messages(), 50u);

  PerSide<Snapshot> before = pair().snapshots();
  RunResult second = pair().run();
  ASSERT_TRUE(ran_ok(second));
  EXPECT_TRUE(reports_no_changes(second));
  // The first run recorded exactly what LIST-STATUS now reports: no mailbox is even selected.
  RunResult traced = pair().run({"--debug"});
  ASSERT_TRUE(ran_ok(traced));
  EXPECT_THAT(traced.err, ::testing::Not(::testing::HasSubstr(" SELECT "))) << traced.describe();
  PerSide<Snapshot> after = pair().snapshots();
  EXPECT_TRUE(unchanged(before[Side::local], after[Side::local], "local"));
  EXPECT_TRUE(unchanged(before[Side::remote], after[Side::remote], "remote"));
}

// =============================================================================================
// Changes after the initial sync. Baseline: the remote's sample mail, synced. Every test uses
// its own Message-IDs, so the tests may share one pair.

class SyncChanges : public SharedPairTest<SyncChanges> {
 protected:
  void SetUp() override {
    if (ensure_pair()) {
      pair().add_sample_mail(Side::remote, 24, 5);
      ASSERT_TRUE(synced(pair())) << "baseline: the initial sync";
    }
  }
};

// New messages on both sides, in two mailboxes, are copied to the other side once.
TEST_F(SyncChanges, NewMessagesOnBothSidesAreCopied) {
  pair().append(Side::local, "INBOX", test_messages("new-l", 5, 1, {"\\Seen"}));
  pair().append(Side::remote, "INBOX", test_messages("new-r", 5));
  pair().append(Side::remote, "Archive/2024", test_messages("new-ra", 3, 1, {"\\Flagged"}));
  ASSERT_TRUE(synced(pair()));
  Snapshot local = pair().snapshot(Side::local);
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(local.at("INBOX").count(test_message_id("new-r", i)), 1u);
  }
  EXPECT_EQ(flags_of(local, "Archive/2024", test_message_id("new-ra", 2)), "(\\Flagged)");
  EXPECT_EQ(flags_of(pair().snapshot(Side::remote), "INBOX", test_message_id("new-l", 3)),
            "(\\Seen)");
}

// Three-way flag merge: \Seen removed on local and \Flagged added on remote on the same message
// end with the removal AND the addition on both sides (a union would bring \Seen back);
// likewise a keyword removed on remote while local adds \Answered.
TEST_F(SyncChanges, ThreeWayFlagMergeKeepsRemovalAndAddition) {
  pair().append(
      Side::remote, "INBOX",
      {test_message("3way", 1, {"\\Seen"}), test_message("3way", 2, {"\\Seen", "$Label1"})});
  ASSERT_TRUE(synced(pair()));

  pair().remove_flags(Side::local, "INBOX", "\\Seen",
                      Search::message_id(test_message_id("3way", 1)));
  pair().add_flags(Side::remote, "INBOX", "\\Flagged",
                   Search::message_id(test_message_id("3way", 1)));
  pair().remove_flags(Side::remote, "INBOX", "$Label1",
                      Search::message_id(test_message_id("3way", 2)));
  pair().add_flags(Side::local, "INBOX", "\\Answered",
                   Search::message_id(test_message_id("3way", 2)));
  ASSERT_TRUE(synced(pair()));

  for (Side side : kSides) {
    Snapshot s = pair().snapshot(side);
    EXPECT_EQ(flags_of(s, "INBOX", test_message_id("3way", 1)), "(\\Flagged)") << side_name(side);
    EXPECT_EQ(flags_of(s, "INBOX", test_message_id("3way", 2)), "(\\Answered \\Seen)")
        << side_name(side);
  }
}

// Messages expunged on local are expunged on remote, and nothing else is.
TEST_F(SyncChanges, ExpungeOnLocalPropagates) {
  pair().append(Side::remote, "INBOX", test_messages("exp-l", 4));
  ASSERT_TRUE(synced(pair()));
  const std::size_t total = pair().snapshot(Side::remote).total_messages();
  pair().expunge(Side::local, "INBOX", Search::message_id(test_message_id("exp-l", 2)));
  pair().expunge(Side::local, "INBOX", Search::message_id(test_message_id("exp-l", 3)));
  ASSERT_TRUE(synced(pair()));
  Snapshot remote = pair().snapshot(Side::remote);
  EXPECT_EQ(remote.total_messages(), total - 2);
  EXPECT_EQ(remote.at("INBOX").count(test_message_id("exp-l", 2)), 0u);
  EXPECT_EQ(remote.at("INBOX").count(test_message_id("exp-l", 4)), 1u);
}

// Messages expunged on remote are expunged on local.
TEST_F(SyncChanges, ExpungeOnRemotePropagates) {
  pair().append(Side::local, "Sent", test_messages("exp-r", 3));
  ASSERT_TRUE(synced(pair()));
  const std::size_t total = pair().snapshot(Side::local).total_messages();
  pair().expunge(Side::remote, "Sent", Search::message_id(test_message_id("exp-r", 1)));
  ASSERT_TRUE(synced(pair()));
  Snapshot local = pair().snapshot(Side::local);
  EXPECT_EQ(local.total_messages(), total - 1);
  EXPECT_EQ(local.at("Sent").count(test_message_id("exp-r", 1)), 0u);
}

// A mailbox created (and subscribed) on remote appears on local with its mail and its
// subscription; its unsubscribed parent appears unsubscribed.
TEST_F(SyncChanges, MailboxCreatedOnRemoteAppearsOnLocalSubscribed) {
  pair().create_mailbox(Side::remote, "Projects");
  pair().create_mailbox(Side::remote, "Projects/Alpha", /*subscribe=*/true);
  pair().append(Side::remote, "Projects/Alpha", test_messages("alpha", 2));
  ASSERT_TRUE(synced(pair()));
  Snapshot local = pair().snapshot(Side::local);
  ASSERT_NE(local.mailbox("Projects/Alpha"), nullptr) << local.to_string();
  EXPECT_EQ(local.at("Projects/Alpha").messages.size(), 2u);
  EXPECT_TRUE(local.subscribed("Projects/Alpha"));
  EXPECT_FALSE(local.subscribed("Projects"));
}

// A mailbox created on local appears on remote, subscribed.
TEST_F(SyncChanges, MailboxCreatedOnLocalAppearsOnRemote) {
  pair().create_mailbox(Side::local, "Notes", /*subscribe=*/true);
  pair().append(Side::local, "Notes", test_message("notes", 1, {"\\Seen"}));
  ASSERT_TRUE(synced(pair()));
  Snapshot remote = pair().snapshot(Side::remote);
  ASSERT_NE(remote.mailbox("Notes"), nullptr) << remote.to_string();
  EXPECT_TRUE(remote.subscribed("Notes"));
}

// An unsubscription on local and a subscription on remote both propagate.
TEST_F(SyncChanges, SubscriptionChangesPropagateBothWays) {
  pair().unsubscribe(Side::local, "Sent");
  pair().subscribe(Side::remote, "Old Stuff");
  ASSERT_TRUE(synced(pair()));
  Snapshot remote = pair().snapshot(Side::remote);
  EXPECT_FALSE(remote.subscribed("Sent"));
  EXPECT_TRUE(pair().snapshot(Side::local).subscribed("Old Stuff"));
}

// UIDVALIDITY change: a mailbox deleted and re-created on remote with the same messages plus one
// (new UIDVALIDITY, UIDs from 1 again) is reported, and the run deletes nothing on local and
// duplicates nothing: the messages are re-matched.
TEST_F(SyncChanges, UidValidityChangeIsRecoveredWithoutLossOrDuplicates) {
  pair().create_mailbox(Side::remote, "Recreated", /*subscribe=*/true);
  pair().append(Side::remote, "Recreated", test_messages("uv", 4, 1, {"\\Seen"}));
  ASSERT_TRUE(synced(pair()));
  const std::uint32_t old_uidvalidity = pair().snapshot(Side::remote).at("Recreated").uidvalidity;
  pair().delete_mailbox(Side::remote, "Recreated");
  pair().create_mailbox(Side::remote, "Recreated", /*subscribe=*/true);
  MailboxUpdate update;
  update.uid_validity = old_uidvalidity + 1000;
  pair().update_mailbox(Side::remote, "Recreated", update);
  pair().append(Side::remote, "Recreated", test_messages("uv", 5, 1, {"\\Seen"}));

  RunResult run = pair().run();
  ASSERT_TRUE(ran_ok(run));
  std::string said = run.err + run.out;
  std::transform(said.begin(), said.end(), said.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  EXPECT_THAT(said, ::testing::HasSubstr("uidvalidity")) << run.describe();
  EXPECT_TRUE(pair().expect_converged());
  EXPECT_TRUE(pair().expect_no_duplicates(Side::local));
  Snapshot local = pair().snapshot(Side::local);
  EXPECT_EQ(local.at("Recreated").messages.size(), 5u) << local.to_string();
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(local.at("Recreated").count(test_message_id("uv", i)), 1u);
}

// =============================================================================================
// Mailbox names

struct Delimiters {
  char local, remote;
  const char* name;
};

void PrintTo(const Delimiters& d, std::ostream* os) { *os << d.name; }

class SyncNames : public ::testing::TestWithParam<Delimiters> {};

// Non-ASCII and odd names (Réunions, 日本語/下書き, fo!o [b*a%r], R&D/Q1 2024, Projets/Été)
// created on either side appear on the other with the other delimiter, mail and subscriptions.
TEST_P(SyncNames, NonAsciiAndOddNamesAcrossDelimiters) {
  SyncPair pair(PairOptions().separators(GetParam().local, GetParam().remote));
  int n = 0;
  auto make = [&](Side side, const char* name, bool subscribe, bool mail) {
    pair.create_mailbox(side, name, subscribe);
    if (mail) pair.append(side, name, test_message("odd-name", ++n));
  };
  make(Side::remote, "Réunions", true, true);
  make(Side::remote, "日本語", true, false);
  make(Side::remote, "日本語/下書き", true, true);
  make(Side::remote, "fo!o [b*a%r]", true, true);
  make(Side::local, "R&D", false, false);
  make(Side::local, "R&D/Q1 2024", true, true);
  make(Side::local, "Projets", false, false);
  make(Side::local, "Projets/Été", true, true);
  ASSERT_TRUE(synced(pair));

  PerSide<Snapshot> s = pair.snapshots();
  ASSERT_NE(s[Side::local].mailbox("日本語/下書き"), nullptr) << s[Side::local].to_string();
  EXPECT_EQ(s[Side::local].at("日本語/下書き").count(test_message_id("odd-name", 2)), 1u);
  EXPECT_TRUE(s[Side::local].subscribed("fo!o [b*a%r]"));
  ASSERT_NE(s[Side::remote].mailbox("Projets/Été"), nullptr) << s[Side::remote].to_string();
  EXPECT_TRUE(s[Side::remote].subscribed("R&D/Q1 2024"));
  EXPECT_FALSE(s[Side::remote].subscribed("R&D"));

  // A flag change inside the oddest name travels too.
  pair.add_flags(Side::local, "fo!o [b*a%r]", "\\Flagged", Search::all());
  ASSERT_TRUE(synced(pair));
  EXPECT_EQ(flags_of(pair.snapshot(Side::remote), "fo!o [b*a%r]", test_message_id("odd-name", 3)),
            "(\\Flagged)");
}

INSTANTIATE_TEST_SUITE_P(Delimiters, SyncNames,
                         ::testing::Values(Delimiters{'.', '/', "LocalDotRemoteSlash"},
                                           Delimiters{'/', '.', "LocalSlashRemoteDot"}),
                         [](const auto& info) { return std::string(info.param.name); });

// =============================================================================================
// Limits: huge numbers, long UID sets

// UIDs near 2^32, UIDVALIDITY 2^32-1 and mod-sequences above 9*10^18 on both sides: the initial
// sync and a later one with new messages, flag changes and an expunge converge.
TEST(SyncLimits, HugeUidsAndModseqs) {
  SyncPair pair;
  MailboxUpdate remote_inbox, local_inbox, huge;
  remote_inbox.min_next_uid = 4000000000u;
  remote_inbox.min_highest_modseq = 9000000000000000000u;
  local_inbox.min_next_uid = 4294966000u;
  local_inbox.min_highest_modseq = 9100000000000000000u;
  huge.uid_validity = 4294967295u;
  huge.min_next_uid = 4294967000u;
  huge.min_highest_modseq = 9200000000000000000u;
  pair.update_mailbox(Side::remote, "INBOX", remote_inbox);
  pair.update_mailbox(Side::local, "INBOX", local_inbox);
  pair.create_mailbox(Side::remote, "Huge", /*subscribe=*/true);
  pair.update_mailbox(Side::remote, "Huge", huge);
  pair.append(Side::remote, "INBOX", test_messages("huge-r", 5));
  pair.append(Side::remote, "Huge", test_messages("huge-h", 5, 1, {"\\Seen"}));
  pair.append(Side::local, "INBOX", test_messages("huge-l", 5));
  ASSERT_TRUE(synced(pair));

  pair.add_flags(Side::remote, "INBOX", "\\Flagged",
                 Search::message_id(test_message_id("huge-l", 1)));
  pair.add_flags(Side::local, "INBOX", "\\Seen", Search::message_id(test_message_id("huge-r", 2)));
  pair.expunge(Side::local, "Huge", Search::message_id(test_message_id("huge-h", 3)));
  pair.append(Side::remote, "INBOX", test_message("huge-r", 6));
  pair.append(Side::local, "INBOX", test_message("huge-l", 6));
  ASSERT_TRUE(synced(pair));

  Snapshot remote = pair.snapshot(Side::remote);
  EXPECT_EQ(remote.at("Huge").count(test_message_id("huge-h", 3)), 0u);
  EXPECT_EQ(remote.at("Huge").uidvalidity, 4294967295u);
  EXPECT_EQ(remote.at("INBOX").count(test_message_id("huge-l", 6)), 1u);
  EXPECT_EQ(flags_of(remote, "INBOX", test_message_id("huge-r", 2)), "(\\Seen)");
}

// UID sets longer than the servers' 8192-byte line limit: 2,000 messages with 10-digit UIDs,
// every other one expunged on remote while local flags the rest, converge (commands split).
TEST(SyncLimits, UidSetsLongerThanTheLineLimit) {
  PairOptions options = PairOptions().max_line(8192);
  options.timeout = 180s;
  SyncPair pair(options);
  MailboxUpdate ten_digits;
  ten_digits.min_next_uid = 1000000000u;
  for (Side side : kSides) pair.update_mailbox(side, "INBOX", ten_digits);
  constexpr int kCount = 2000;
  pair.append(Side::remote, "INBOX", test_messages("split", kCount));
  ASSERT_TRUE(synced(pair));

  // Remote: expunge the odd-numbered messages; local: flag the even-numbered ones. Neither set
  // is contiguous on either server, so each is ~11 KB as a UID set.
  std::vector<std::uint32_t> expunge_uids, flag_uids;
  PerSide<Snapshot> synced_once = pair.snapshots();
  for (int i = 1; i <= kCount; ++i) {
    auto on_remote = synced_once[Side::remote].at("INBOX").find(test_message_id("split", i));
    auto on_local = synced_once[Side::local].at("INBOX").find(test_message_id("split", i));
    ASSERT_EQ(on_remote.size(), 1u);
    ASSERT_EQ(on_local.size(), 1u);
    if (i % 2 == 1) {
      expunge_uids.push_back(on_remote.front()->uid);
    } else {
      flag_uids.push_back(on_local.front()->uid);
    }
  }
  pair.expunge(Side::remote, "INBOX", Search::uids(expunge_uids));
  pair.add_flags(Side::local, "INBOX", "\\Flagged", Search::uids(flag_uids));
  ASSERT_TRUE(synced(pair));

  for (Side side : kSides) {
    Snapshot s = pair.snapshot(side);
    const MailboxState* inbox = s.mailbox("INBOX");
    ASSERT_NE(inbox, nullptr) << side_name(side);
    EXPECT_EQ(inbox->messages.size(), static_cast<std::size_t>(kCount / 2)) << side_name(side);
    EXPECT_TRUE(std::all_of(inbox->messages.begin(), inbox->messages.end(),
                            [](const MessageState& m) { return m.flags_text() == "(\\Flagged)"; }))
        << side_name(side);
  }
}

// =============================================================================================
// Server variants

// Servers with only the capabilities twinbox requires (no LITERAL+, MULTIAPPEND, SASL-IR,
// COMPRESS, NOTIFY, ...) still sync both ways: the first run merges both servers' mail, the
// second brings remote's new mail to local and local's new flags to remote.
TEST(SyncServers, MinimalCapabilities) {
  const std::string caps = "IMAP4rev1 ENABLE UIDPLUS LIST-EXTENDED QRESYNC CONDSTORE LIST-STATUS";
  SyncPair pair(PairOptions().capability(Side::local, caps).capability(Side::remote, caps));
  pair.add_sample_mail(Side::remote, 20, 9);
  pair.add_sample_mail(Side::local, 10, 10);
  PerSide<Snapshot> before = pair.snapshots();
  const Snapshot expected = merged(before[Side::local], before[Side::remote]);
  ASSERT_EQ(expected.total_messages(), 30u);
  ASSERT_TRUE(synced(pair));
  EXPECT_TRUE(both_hold(pair, expected));

  pair.append(Side::remote, "INBOX", test_messages("minimal", 3));
  pair.add_flags(Side::local, "Sent", "\\Flagged", Search::all());
  // Local's mailboxes with their new flags, and remote's INBOX with its new messages.
  PerSide<Snapshot> changed = pair.snapshots();
  Snapshot expected_next = changed[Side::local];
  expected_next.mailboxes["INBOX"] = changed[Side::remote].at("INBOX");
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(expected_next.at("INBOX").count(test_message_id("minimal", i)), 1u);
  }
  ASSERT_FALSE(expected_next.at("Sent").messages.empty());
  for (const auto& m : expected_next.at("Sent").messages) {
    ASSERT_THAT(m.flags, ::testing::Contains("\\Flagged")) << m.id;
  }
  ASSERT_TRUE(synced(pair));
  EXPECT_TRUE(both_hold(pair, expected_next));
}

// The remote over STARTTLS, verified against the lab's CA: remote's mail reaches local, and
// local's new mail reaches remote.
TEST(SyncServers, RemoteOverStartTls) {
  SyncPair pair(PairOptions().remote_tls(dovecot::Tls::starttls));
  pair.add_sample_mail(Side::remote, 20, 11);
  const Snapshot before = pair.snapshot(Side::remote);
  ASSERT_EQ(before.total_messages(), 20u);
  ASSERT_TRUE(synced(pair));
  EXPECT_TRUE(both_hold(pair, before));

  pair.append(Side::local, "INBOX", test_messages("tls", 2));
  const Snapshot expected = pair.snapshot(Side::local);  // local holds all there is
  ASSERT_EQ(expected.total_messages(), 22u);
  ASSERT_TRUE(synced(pair));
  EXPECT_TRUE(both_hold(pair, expected));
}

// =============================================================================================
// Crash safety: kill -9 at various moments, then a normal run must converge with nothing lost
// and nothing duplicated.

struct KillPoint {
  const char* name;
  KillAt when;
  std::vector<std::string> args;  // --debug makes wire traces visible to the kill predicate
  // A point in time may come after a fast run has finished; a point in the output (an APPEND,
  // an APPENDUID, ...) is reached by every run that does the work, so it must kill.
  bool may_finish = false;
};

void PrintTo(const KillPoint& p, std::ostream* os) { *os << p.name; }

// The runs of a suite that were to be killed, and how many of them were.
struct KillTally {
  int runs = 0;
  int killed = 0;
};

// The first run's fate: killed (what the test wants), or, for a point that may come too late,
// finished cleanly before it (the rerun checks still apply, but the suite then needs another
// run that was killed: see expect_kills).
testing::AssertionResult killed_as_planned(const RunResult& r, const KillPoint& point,
                                           KillTally& tally) {
  ++tally.runs;
  if (r.killed) {
    ++tally.killed;
    return testing::AssertionSuccess();
  }
  if (r.ok() && point.may_finish) {
    std::cout << "[ info ] twinbox finished before the kill point (" << point.when.describe()
              << ") in " << r.elapsed.count() << " ms\n";
    return testing::AssertionSuccess();
  }
  if (r.ok()) {
    return testing::AssertionFailure()
           << "the run finished without reaching its kill point (" << point.when.describe()
           << "): nothing was interrupted. " << r.describe();
  }
  return testing::AssertionFailure() << "the run to be killed " << point.when.describe()
                                     << " failed on its own: " << r.describe();
}

// At the end of a suite: at least one of its runs was really killed.
void expect_kills(const KillTally& tally, std::string_view suite) {
  std::cout << "[ info ] " << suite << ": " << tally.killed << " of " << tally.runs
            << " runs killed\n";
  if (tally.runs > 0) {
    EXPECT_GE(tally.killed, 1) << suite << ": every run finished before its kill point";
  }
}

const std::vector<KillPoint>& initial_sync_kill_points() {
  static const std::vector<KillPoint> points = {
      {"After50ms", KillAt::after(50ms), {}, true},
      {"After200ms", KillAt::after(200ms), {}, true},
      {"After500ms", KillAt::after(500ms), {}, true},
      {"OnFirstProgressLine",
       KillAt::on_output(R"(\b(cop(y|ied|ying)|added|append(ed|ing)?|progress)\b)"),
       {}},
      {"OnFirstAppendCommand", KillAt::on_output(R"(\bAPPEND\b)"), {"--debug"}},
      {"OnFirstAppendUid", KillAt::on_output(R"(APPENDUID)"), {"--debug"}},
      {"OnThirdAppendUid", KillAt::on_output(R"(APPENDUID)", 3), {"--debug"}},
  };
  return points;
}

// Baseline: 300 sample messages in 8 mailboxes on remote, local empty, no state database.
class SyncKilledInitial : public SharedPairTest<SyncKilledInitial>,
                          public ::testing::WithParamInterface<KillPoint> {
 public:
  static void SetUpTestSuite() { tally() = {}; }
  static void TearDownTestSuite() {
    SharedPairTest<SyncKilledInitial>::TearDownTestSuite();
    expect_kills(tally(), "SyncKilledInitial");
  }

 protected:
  static KillTally& tally() {
    static KillTally t;
    return t;
  }
  static Snapshot& original_remote() {
    static Snapshot s;
    return s;
  }
  void SetUp() override {
    if (ensure_pair()) {
      pair().add_sample_mail(Side::remote, 300, 7);
      original_remote() = pair().snapshot(Side::remote);
    } else {
      pair().reset(Side::local);
      pair().reset_state();
    }
  }
};

// kill -9 during an initial sync of 300 messages, then a normal run: converged, no duplicate on
// either side, and the remote holds exactly what it held before.
TEST_P(SyncKilledInitial, RerunConvergesWithNothingLostOrDuplicated) {
  const KillPoint& point = GetParam();
  RunResult first = pair().run_killed_after(point.when, point.args);
  ASSERT_TRUE(killed_as_planned(first, point, tally()));
  ASSERT_TRUE(synced(pair()));
  PerSide<Snapshot> s = pair().snapshots();
  EXPECT_TRUE(same_content(original_remote(), s[Side::remote], "remote before", "remote after"));
  EXPECT_EQ(s[Side::local].total_messages(), 300u);
}

INSTANTIATE_TEST_SUITE_P(KillPoints, SyncKilledInitial,
                         ::testing::ValuesIn(initial_sync_kill_points()),
                         [](const auto& info) { return std::string(info.param.name); });

// Baseline: 60 sample messages on remote, synced. Each test then makes changes on both sides
// (160 new messages, flag changes in two mailboxes, 3 expunges) and kills the sync of them.
class SyncKilledWithChanges : public SharedPairTest<SyncKilledWithChanges>,
                              public ::testing::WithParamInterface<KillPoint> {
 public:
  static void SetUpTestSuite() { tally() = {}; }
  static void TearDownTestSuite() {
    SharedPairTest<SyncKilledWithChanges>::TearDownTestSuite();
    expect_kills(tally(), "SyncKilledWithChanges");
  }

 protected:
  static KillTally& tally() {
    static KillTally t;
    return t;
  }
  void SetUp() override {
    if (ensure_pair()) {
      pair().add_sample_mail(Side::remote, 60, 8);
      ASSERT_TRUE(synced(pair())) << "baseline: the initial sync";
    }
  }
};

// kill -9 during a sync of changes on both sides, then a normal run: every new message exactly
// once on both sides, the expunged ones gone from both, the flag changes on both.
TEST_P(SyncKilledWithChanges, RerunConvergesWithNothingLostOrDuplicated) {
  const KillPoint& point = GetParam();
  const std::string tag = fmt::format("kill-{}", point.name);
  const std::string tag_l = tag + "-l", tag_la = tag + "-la", tag_r = tag + "-r",
                    tag_rs = tag + "-rs";
  pair().append(Side::local, "INBOX", test_messages(tag_l, 60));
  pair().append(Side::local, "Archive/2024", test_messages(tag_la, 20, 1, {"\\Seen"}));
  pair().append(Side::remote, "INBOX", test_messages(tag_r, 60));
  pair().append(Side::remote, "Sent", test_messages(tag_rs, 20));
  pair().add_flags(Side::local, "Réunions", "$Killed", Search::all());
  pair().remove_flags(Side::remote, "日本語", "\\Seen", Search::all());
  std::vector<std::string> expunged;
  for (const auto& id : ids_in(pair().snapshot(Side::remote), "INBOX")) {
    if (id.rfind("<kill-", 0) == 0) continue;  // only baseline messages
    expunged.push_back(id);
    if (expunged.size() == 3) break;
  }
  ASSERT_EQ(expunged.size(), 3u);
  for (const auto& id : expunged) pair().expunge(Side::remote, "INBOX", Search::message_id(id));

  RunResult first = pair().run_killed_after(point.when, point.args);
  ASSERT_TRUE(killed_as_planned(first, point, tally()));
  ASSERT_TRUE(synced(pair()));

  for (Side side : kSides) {
    Snapshot s = pair().snapshot(side);
    const char* name = side == Side::local ? "local" : "remote";
    for (int i = 1; i <= 60; ++i) {
      EXPECT_EQ(s.at("INBOX").count(test_message_id(tag_l, i)), 1u) << name;
      EXPECT_EQ(s.at("INBOX").count(test_message_id(tag_r, i)), 1u) << name;
    }
    for (int i = 1; i <= 20; ++i) {
      EXPECT_EQ(s.at("Archive/2024").count(test_message_id(tag_la, i)), 1u) << name;
      EXPECT_EQ(s.at("Sent").count(test_message_id(tag_rs, i)), 1u) << name;
    }
    for (const auto& id : expunged) EXPECT_EQ(s.at("INBOX").count(id), 0u) << name << id;
    for (const auto& m : s.at("Réunions").messages) {
      EXPECT_THAT(m.flags, ::testing::Contains("$Killed")) << name << " " << m.id;
    }
    for (const auto& m : s.at("日本語").messages) {
      EXPECT_THAT(m.flags, ::testing::Not(::testing::Contains("\\Seen"))) << name << " " << m.id;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    KillPoints, SyncKilledWithChanges,
    ::testing::Values(KillPoint{"After100ms", KillAt::after(100ms), {}, true},
                      KillPoint{"After300ms", KillAt::after(300ms), {}, true},
                      KillPoint{"OnFirstAppendUid", KillAt::on_output("APPENDUID"), {"--debug"}}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace twinbox::sync_tests
