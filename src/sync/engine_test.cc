// The engine against two in-memory servers (sync/test_support.h): regressions that need the
// whole engine but no real server.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/log.h"
#include "sync/test_support.h"

namespace twinbox::sync {
namespace {

using ::testing::HasSubstr;
using testing::MemoryWorld;

std::string body(int n) {
  return "Message-ID: <m" + std::to_string(n) + "@test>\r\nSubject: " + std::to_string(n) +
         "\r\n\r\nbody " + std::to_string(n) + "\r\n";
}

// The bodies of a mailbox on one server, in UID order.
std::vector<std::string> bodies(MemoryServer& server, const std::string& mailbox) {
  std::vector<std::string> out;
  if (MemoryMailbox* box = server.find(mailbox)) {
    for (const auto& [uid, m] : box->messages) out.push_back(m.body);
  }
  return out;
}

Uid uid_of(MemoryServer& server, const std::string& mailbox, const std::string& wanted) {
  for (const auto& [uid, m] : server.find(mailbox)->messages) {
    if (m.body == wanted) return uid;
  }
  return 0;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Log::instance().set_level(LogLevel::error); }
  void TearDown() override { Log::instance().set_level(LogLevel::info); }

  // Four messages on the remote INBOX, synced; then the local copy of message 2 is expunged by
  // the user.
  void synced_then_local_expunge() {
    for (int n = 1; n <= 4; ++n) world.remote.deliver("INBOX", body(n));
    ASSERT_TRUE(world.run());
    ASSERT_EQ(bodies(world.local, "INBOX").size(), 4u);
    ASSERT_TRUE(world.local.expunge("INBOX", uid_of(world.local, "INBOX", body(2))));
  }
  void expect_message_2_gone_everywhere() {
    const std::vector<std::string> expected = {body(1), body(3), body(4)};
    EXPECT_EQ(bodies(world.local, "INBOX"), expected);
    EXPECT_EQ(bodies(world.remote, "INBOX"), expected);
  }

  MemoryWorld world;
};

TEST_F(EngineTest, InitialSyncCopiesBothWaysWithFlags) {
  world.local.deliver("INBOX", body(1), {"\\Seen"});
  world.remote.deliver("INBOX", body(2), {"$Label"});
  world.remote.deliver("Work", body(3));
  ASSERT_TRUE(world.run());
  EXPECT_EQ(bodies(world.local, "INBOX"), (std::vector<std::string>{body(1), body(2)}));
  EXPECT_EQ(bodies(world.remote, "INBOX"), (std::vector<std::string>{body(2), body(1)}));
  EXPECT_EQ(bodies(world.local, "Work"), (std::vector<std::string>{body(3)}));
  EXPECT_EQ(world.local.find("INBOX")->messages.rbegin()->second.flags, FlagSet{"$Label"});
  EXPECT_EQ(world.remote.find("INBOX")->messages.rbegin()->second.flags, FlagSet{"\\Seen"});
}

// Two batches per lane are in memory at once: 1 MiB each where round trips are cheap (the peak
// RSS target is measured there), 2 MiB once the link's round trip shows it is slow (a lane then
// moves more per round trip). 24 bodies of 100 KiB: 10 per batch, or 20.
TEST_F(EngineTest, CopyBatchesGrowOnASlowLink) {
  const auto appends_for = [](std::optional<std::chrono::milliseconds> round_trip) {
    MemoryWorld world;
    world.round_trip = round_trip;
    for (int n = 0; n < 24; ++n) {
      world.remote.deliver("INBOX", body(n) + std::string(100 * 1024, 'x') + "\r\n");
    }
    EXPECT_TRUE(world.run());
    EXPECT_EQ(world.local.find("INBOX")->messages.size(), 24u);
    return world.faults.calls["APPEND"];
  };
  EXPECT_EQ(appends_for(std::nullopt), 3u);
  EXPECT_EQ(appends_for(std::chrono::milliseconds(1)), 3u);
  EXPECT_EQ(appends_for(std::chrono::milliseconds(50)), 2u);
}

// Issue 9 defect 1: a re-read (the server is distrusted) must not undo a deletion that the
// recorded pairs prove. Each trigger seen in the field, one test.
TEST_F(EngineTest, RereadAfterTooLowExistsDoesNotResurrectADeletion) {
  synced_then_local_expunge();
  world.faults.lies[Side::local].exists_too_low = true;
  ASSERT_TRUE(world.run());
  world.faults.lies[Side::local] = {};
  ASSERT_TRUE(world.run());
  expect_message_2_gone_everywhere();
}

TEST_F(EngineTest, RereadAfterVanishedEverythingDoesNotResurrectADeletion) {
  synced_then_local_expunge();
  world.faults.lies[Side::remote].vanished_everything = true;
  ASSERT_TRUE(world.run());
  world.faults.lies[Side::remote] = {};
  ASSERT_TRUE(world.run());
  expect_message_2_gone_everywhere();
}

TEST_F(EngineTest, UnaskedFetchDoesNotResurrectADeletion) {
  synced_then_local_expunge();
  world.faults.lies[Side::local].unasked_fetch = true;
  ASSERT_TRUE(world.run());
  world.faults.lies[Side::local] = {};
  ASSERT_TRUE(world.run());
  expect_message_2_gone_everywhere();
}

TEST_F(EngineTest, RereadAfterAnInterruptedRunDoesNotResurrectADeletion) {
  synced_then_local_expunge();
  world.faults.lies[Side::local].modseq_backwards = true;  // forces the re-read
  // The run stops at its 3rd call: a connection lost in the middle of the mailbox.
  world.faults.drop_at = 3;
  auto cut = world.run();
  ASSERT_GE(world.faults.steps, 3u) << "the connection was not dropped";
  EXPECT_TRUE(!cut || cut->mailboxes_failed > 0);
  world.faults.drop_at.reset();
  ASSERT_TRUE(world.run());
  world.faults.lies[Side::local] = {};
  ASSERT_TRUE(world.run());
  expect_message_2_gone_everywhere();
}

// A deletion on one side while the other changed the message's flags: the planner's conflict
// rule keeps the message (copied back), the one case where an expunge is undone on purpose.
TEST_F(EngineTest, ExpungeAgainstAConcurrentFlagChangeKeepsTheMessage) {
  synced_then_local_expunge();
  ASSERT_TRUE(
      world.remote.set_flags("INBOX", uid_of(world.remote, "INBOX", body(2)), {"\\Flagged"}));
  ASSERT_TRUE(world.run());
  EXPECT_EQ(bodies(world.local, "INBOX").size(), 4u);
  EXPECT_EQ(bodies(world.remote, "INBOX").size(), 4u);
}

// A few changes in a large mailbox cost what they name, not the mailbox's size: with QRESYNC on
// both sides only the pairs of the changed, vanished and new UIDs are read from the database (a
// watch mode's wake once read every pair of INBOX). A re-read (a server in doubt) still compares
// every pair, and both end converged.
TEST_F(EngineTest, AFewChangesReadOnlyThePairsTheyName) {
  for (int n = 1; n <= 300; ++n) world.remote.deliver("INBOX", body(n));
  ASSERT_TRUE(world.run());
  const auto flags_of = [&](MemoryServer& server, int n) {
    return server.find("INBOX")->messages.at(uid_of(server, "INBOX", body(n))).flags;
  };
  ASSERT_TRUE(
      world.remote.set_flags("INBOX", uid_of(world.remote, "INBOX", body(10)), {"\\Flagged"}));
  ASSERT_TRUE(world.local.set_flags("INBOX", uid_of(world.local, "INBOX", body(20)), {"\\Seen"}));
  ASSERT_TRUE(world.local.expunge("INBOX", uid_of(world.local, "INBOX", body(30))));
  world.remote.deliver("INBOX", body(301));
  std::uint64_t read_before = world.db->pairs_read();
  ASSERT_TRUE(world.run());
  EXPECT_LE(world.db->pairs_read() - read_before, 3u);  // bodies 10, 20 and 30
  for (Side side : kSides) {
    MemoryServer& server = world.server(side);
    EXPECT_EQ(bodies(server, "INBOX").size(), 300u) << side_name(side);
    EXPECT_EQ(uid_of(server, "INBOX", body(30)), 0u) << side_name(side);
    EXPECT_NE(uid_of(server, "INBOX", body(301)), 0u) << side_name(side);
    EXPECT_EQ(flags_of(server, 10), FlagSet{"\\Flagged"}) << side_name(side);
    EXPECT_EQ(flags_of(server, 20), FlagSet{"\\Seen"}) << side_name(side);
  }

  ASSERT_TRUE(world.local.set_flags("INBOX", uid_of(world.local, "INBOX", body(40)), {"$Later"}));
  world.faults.lies[Side::local].exists_too_low = true;  // a count the state does not explain
  read_before = world.db->pairs_read();
  ASSERT_TRUE(world.run());
  world.faults.lies[Side::local] = {};
  EXPECT_GE(world.db->pairs_read() - read_before, 300u);
  for (Side side : kSides) {
    MemoryServer& server = world.server(side);
    EXPECT_EQ(bodies(server, "INBOX").size(), 300u) << side_name(side);
    EXPECT_EQ(flags_of(server, 40), FlagSet{"$Later"}) << side_name(side);
  }

  // Changes scattered over more UID ranges than are worth a query each (every other message of
  // 600, on the local side): one read of every pair rather than 300 queries of one.
  for (int n = 1001; n <= 1300; ++n) world.remote.deliver("INBOX", body(n));
  ASSERT_TRUE(world.run());
  MemoryMailbox& local_inbox = *world.local.find("INBOX");
  ASSERT_EQ(local_inbox.messages.size(), 600u);
  std::vector<Uid> every_other;
  for (auto it = local_inbox.messages.begin(); it != local_inbox.messages.end(); ++it) {
    if (std::distance(local_inbox.messages.begin(), it) % 2 == 0) every_other.push_back(it->first);
  }
  for (Uid uid : every_other) ASSERT_TRUE(world.local.set_flags("INBOX", uid, {"$Scattered"}));
  read_before = world.db->pairs_read();
  ASSERT_TRUE(world.run());
  EXPECT_EQ(world.db->pairs_read() - read_before, 600u);  // not the 300 named
  for (int n : {1, 1299}) {
    EXPECT_EQ(flags_of(world.remote, n), flags_of(world.local, n)) << n;
  }
  EXPECT_EQ(world.remote.find("INBOX")->messages.begin()->second.flags, FlagSet{"$Scattered"});
}

// Issue 9 defect 4: --dry-run changes neither server (no CREATE, SUBSCRIBE, APPEND, STORE,
// EXPUNGE) and prints what it would do.
TEST_F(EngineTest, DryRunChangesNothingAndPrintsThePlan) {
  for (int n = 1; n <= 2; ++n) world.remote.deliver("INBOX", body(n));
  ASSERT_TRUE(world.run());
  world.remote.deliver("INBOX", body(3));
  world.remote.deliver("Lists", body(4));
  world.remote.find("Lists")->subscribed = true;
  world.local.set_flags("INBOX", 1, {"\\Seen"});
  world.remote.expunge("INBOX", 2);
  const auto local_before = world.local.mailboxes();
  const auto remote_before = world.remote.mailboxes();
  EngineOptions options;
  options.dry_run = true;
  ::testing::internal::CaptureStdout();
  auto run = world.run(options);
  const std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(run) << run.error().to_string();
  EXPECT_EQ(world.local.mailboxes(), local_before);
  EXPECT_EQ(world.remote.mailboxes(), remote_before);
  EXPECT_THAT(out, HasSubstr("local: would create mailbox Lists\n"));
  EXPECT_THAT(out, HasSubstr("local: would subscribe mailbox Lists\n"));
  EXPECT_THAT(out, HasSubstr("Lists:\ncopy remote UID 1 -> local ()\n"));
  EXPECT_THAT(out, HasSubstr("copy remote UID 3 -> local ()\n"));
  EXPECT_THAT(out, HasSubstr("expunge local UID 2"));
  EXPECT_THAT(out, HasSubstr("store remote UID 1 +(\\Seen)"));
}

// A flag conflict (\\Seen added on one side, $Later on the other) merged into two STOREs, the
// run killed at every step, before and after its effect (one STORE arrived, not the other; or
// both, with their answers lost): the rerun must end with both flags on both sides.
TEST(EngineKilled, FlagMergeSurvivesAKillAtEveryStep) {
  Log::instance().set_level(LogLevel::error);
  for (auto when : {Faults::When::before_effect, Faults::When::after_effect}) {
    for (std::uint64_t step = 1; step <= 20; ++step) {
      SCOPED_TRACE(::testing::Message() << "killed at step " << step
                                        << (when == Faults::When::after_effect ? " after" : ""));
      MemoryWorld world;
      world.remote.deliver("INBOX", body(1));
      world.remote.deliver("INBOX", body(2));
      ASSERT_TRUE(world.run());
      ASSERT_TRUE(world.local.set_flags("INBOX", 1, {"\\Seen"}));
      ASSERT_TRUE(world.remote.set_flags("INBOX", 1, {"$Later"}));
      world.faults.kill_at = step;
      world.faults.kill_when = when;
      EngineOptions one_lane;
      one_lane.jobs = 1;
      (void)world.run(one_lane);
      world.faults.kill_at.reset();
      ASSERT_TRUE(world.run());
      const FlagSet both = canonical({"\\Seen", "$Later"});
      EXPECT_EQ(world.local.find("INBOX")->messages.at(1).flags, both);
      EXPECT_EQ(world.remote.find("INBOX")->messages.at(1).flags, both);
    }
  }
  Log::instance().set_level(LogLevel::info);
}

// A message expunged on the local side while the remote changed its flags is copied back (the
// conflict rules). That copy, interrupted at every step, before and after its effect (an APPEND
// whose answer was lost included), must end as one message on each side: found and paired by
// the next run, not taken for new mail and copied back once more (the chaos campaign of
// 2026-12-05 found both sides with two).
TEST(EngineKilled, ACopyBackEndsAsOneMessageWhereverItIsInterrupted) {
  Log::instance().set_level(LogLevel::error);
  for (bool drop : {false, true}) {
    for (auto when : {Faults::When::before_effect, Faults::When::after_effect}) {
      for (std::uint64_t step = 1; step <= 16; ++step) {
        SCOPED_TRACE(::testing::Message()
                     << (drop ? "connection dropped" : "killed") << " at step " << step
                     << (when == Faults::When::after_effect ? " after" : ""));
        MemoryWorld world;
        for (int n = 1; n <= 3; ++n) world.remote.deliver("INBOX", body(n));
        ASSERT_TRUE(world.run());
        ASSERT_TRUE(world.local.expunge("INBOX", uid_of(world.local, "INBOX", body(2))));
        ASSERT_TRUE(
            world.remote.set_flags("INBOX", uid_of(world.remote, "INBOX", body(2)), {"$Later"}));
        (drop ? world.faults.drop_at : world.faults.kill_at) = step;
        (drop ? world.faults.drop_when : world.faults.kill_when) = when;
        EngineOptions one_lane;
        one_lane.jobs = 1;
        (void)world.run(one_lane);
        world.faults.kill_at.reset();
        world.faults.drop_at.reset();
        ASSERT_TRUE(world.run());
        ASSERT_TRUE(world.run());
        for (Side side : kSides) {
          const std::vector<std::string> expected = {body(1), body(2), body(3)};
          std::vector<std::string> held = bodies(world.server(side), "INBOX");
          std::sort(held.begin(), held.end());
          EXPECT_EQ(held, expected) << side_name(side);
        }
      }
    }
  }
  Log::instance().set_level(LogLevel::info);
}

TEST(UidSet, MergesTouchingRangesAndHandlesTheLargestUid) {
  UidSet set;
  set.add(5, 7);
  set.add(1);
  set.add(8, 9);
  set.add(3);
  set.add(kMaxUid);
  set.add(2);
  EXPECT_EQ(set.ranges(), (std::vector<UidSet::Range>{{1, 3}, {5, 9}, {kMaxUid, kMaxUid}}));
  EXPECT_TRUE(set.contains(9));
  EXPECT_FALSE(set.contains(4));
  EXPECT_FALSE(set.contains(10));
  set.add(1, kMaxUid);
  EXPECT_EQ(set.ranges(), (std::vector<UidSet::Range>{{1, kMaxUid}}));
  EXPECT_TRUE(set.contains(4000000000u));
}

TEST(UidSet, AbsentBelowIsWhatAListingLacks) {
  EXPECT_EQ(absent_below({2, 5, 6, 9}, 9).ranges(),
            (std::vector<UidSet::Range>{{1, 1}, {3, 4}, {7, 8}}));
  EXPECT_EQ(absent_below({}, 4).ranges(), (std::vector<UidSet::Range>{{1, 3}}));
  EXPECT_TRUE(absent_below({1, 2, 3}, 4).empty());
  EXPECT_TRUE(absent_below({}, 1).empty());
}

}  // namespace
}  // namespace twinbox::sync
