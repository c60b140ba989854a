// End-to-end scenarios for twinbox's other modes: --delete/--rename with --target, --repair, the
// distrust checks, --watch under concurrent changes, several accounts in one server with
// list-reference, and --dry-run. Two real Dovecot servers each; the oracle reads them with doveadm.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sync/scenario_support.h"

namespace twinbox::sync_tests {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::size_t count_in(const Snapshot& s, std::string_view mailbox) {
  const MailboxState* box = s.mailbox(mailbox);
  return box == nullptr ? 0 : box->messages.size();
}

// twinbox --watch in a background thread; stop() sends SIGTERM and returns the run.
// =============================================================================================
// --delete, --rename, --target

class SyncAdmin : public SharedPairTest<SyncAdmin> {
 protected:
  void SetUp() override {
    if (!ensure_pair()) pair().reset_all();
  }
};

// A mailbox deleted behind twinbox's back on one side is neither recreated nor deleted on the
// other: the run says what to do and changes nothing. --delete then deletes it everywhere.
TEST_F(SyncAdmin, VanishedMailboxWaitsForDeleteThenGoesEverywhere) {
  pair().create_mailbox(Side::remote, "Old", true);
  pair().append(Side::remote, "Old", test_messages("old", 3));
  ASSERT_TRUE(synced(pair()));
  pair().delete_mailbox(Side::local, "Old");

  RunResult refused = pair().run();
  EXPECT_EQ(refused.status, 1) << refused.describe();
  EXPECT_THAT(refused.err, HasSubstr("--delete"));
  EXPECT_EQ(count_in(pair().snapshot(Side::remote), "Old"), 3u);
  EXPECT_EQ(pair().snapshot(Side::local).mailbox("Old"), nullptr);

  RunResult deleted = pair().run({"--delete", "Old"});
  ASSERT_TRUE(ran_ok(deleted));
  EXPECT_EQ(pair().snapshot(Side::remote).mailbox("Old"), nullptr);
  ASSERT_TRUE(synced(pair()));
  EXPECT_EQ(pair().snapshot(Side::local).mailbox("Old"), nullptr);
}

// --target=database forgets the mailbox only; the next run recreates it from the side that has
// it, without duplicating anything.
TEST_F(SyncAdmin, DatabaseOnlyDeleteLetsTheNextRunRecreateIt) {
  pair().create_mailbox(Side::remote, "Keep", true);
  pair().append(Side::remote, "Keep", test_messages("keep", 4));
  ASSERT_TRUE(synced(pair()));
  pair().delete_mailbox(Side::local, "Keep");
  ASSERT_TRUE(ran_ok(pair().run({"--target=database", "--delete", "Keep"})));
  EXPECT_EQ(count_in(pair().snapshot(Side::remote), "Keep"), 4u);
  ASSERT_TRUE(synced(pair()));
  EXPECT_EQ(count_in(pair().snapshot(Side::local), "Keep"), 4u);
  EXPECT_EQ(count_in(pair().snapshot(Side::remote), "Keep"), 4u);
}

// Forgotten by the database while both servers still hold it: the next run pairs identical
// messages by content instead of copying each of them both ways (InterIMAP duplicates here).
TEST_F(SyncAdmin, ForgottenMailboxOnBothSidesIsPairedByContent) {
  pair().create_mailbox(Side::remote, "Both", true);
  pair().append(Side::remote, "Both", test_messages("both", 5));
  ASSERT_TRUE(synced(pair()));
  ASSERT_TRUE(ran_ok(pair().run({"--target", "database", "--delete", "Both"})));
  pair().add_flags(Side::local, "Both", "\\Flagged",
                   Search::message_id(test_message_id("both", 2)));
  pair().append(Side::local, "Both", test_message("both-new", 1));
  ASSERT_TRUE(synced(pair()));
  const auto s = pair().snapshots();
  EXPECT_EQ(count_in(s[Side::local], "Both"), 6u);
  EXPECT_EQ(flags_of(s[Side::remote], "Both", test_message_id("both", 2)), "(\\Flagged)");
}

// --rename renames on both servers, with inferiors, and in the database: the next run copies
// nothing.
TEST_F(SyncAdmin, RenameMovesInferiorsEverywhere) {
  pair().create_mailbox(Side::remote, "Proj", true);
  pair().create_mailbox(Side::remote, "Proj/Sub", true);
  pair().append(Side::remote, "Proj", test_messages("proj", 2));
  pair().append(Side::remote, "Proj/Sub", test_messages("sub", 3));
  ASSERT_TRUE(synced(pair()));
  // Names on the command line use the local server's delimiter ('.').
  RunResult renamed = pair().run({"--rename", "Proj", "Work"});
  ASSERT_TRUE(ran_ok(renamed));
  const auto after = pair().snapshots();
  for (Side side : kSides) {
    EXPECT_EQ(after[side].mailbox("Proj"), nullptr) << side_name(side);
    EXPECT_EQ(count_in(after[side], "Work"), 2u) << side_name(side);
    EXPECT_EQ(count_in(after[side], "Work/Sub"), 3u) << side_name(side);
  }
  RunResult next = pair().run();
  ASSERT_TRUE(ran_ok(next));
  EXPECT_TRUE(reports_no_changes(next));
  ASSERT_TRUE(pair().expect_converged());
  for (Side side : kSides)
    EXPECT_TRUE(unchanged(after[side], pair().snapshot(side), side_name(side)));
}

TEST_F(SyncAdmin, RenameRefusesAnExistingDestination) {
  pair().create_mailbox(Side::remote, "Aaa", true);
  pair().create_mailbox(Side::remote, "Bbb", true);
  pair().append(Side::remote, "Aaa", test_messages("aaa", 1));
  ASSERT_TRUE(synced(pair()));
  const auto before = pair().snapshots();
  RunResult refused = pair().run({"--rename", "Aaa", "Bbb"});
  EXPECT_EQ(refused.status, 2) << refused.describe();
  EXPECT_THAT(refused.err, HasSubstr("exists"));
  for (Side side : kSides)
    EXPECT_TRUE(unchanged(before[side], pair().snapshot(side), side_name(side)));
}

TEST_F(SyncAdmin, InboxCannotBeDeleted) {
  RunResult refused = pair().run({"--delete", "INBOX"});
  EXPECT_EQ(refused.status, 2) << refused.describe();
  EXPECT_THAT(refused.err, HasSubstr("INBOX"));
}

// =============================================================================================
// --repair and the distrust checks

// A message expunged on one side while the state paired it: --repair's plain SELECT sees no
// VANISHED, only an absence, but the recorded pair proves both sides had it, so the deletion is
// propagated (never undone by copying the message back, as InterIMAP's --repair would); flag
// differences are merged.
TEST(SyncRepair, PropagatesWhatWasExpungedAndMergesFlags) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("rep", 6));
  ASSERT_TRUE(synced(pair));
  pair.expunge(Side::local, "INBOX", Search::message_id(test_message_id("rep", 2)));
  pair.add_flags(Side::remote, "INBOX", "\\Flagged", Search::message_id(test_message_id("rep", 3)));
  RunResult repaired = pair.run({"--repair"});
  ASSERT_TRUE(ran_ok(repaired));
  EXPECT_THAT(repaired.err, ::testing::Not(HasSubstr("copying")));
  ASSERT_TRUE(pair.expect_converged());
  const auto s = pair.snapshots();
  EXPECT_EQ(count_in(s[Side::local], "INBOX"), 5u);
  EXPECT_EQ(count_in(s[Side::remote], "INBOX"), 5u);
  EXPECT_EQ(flags_of(s[Side::remote], "INBOX", test_message_id("rep", 2)), "0 copies");
  EXPECT_EQ(flags_of(s[Side::local], "INBOX", test_message_id("rep", 3)), "(\\Flagged)");
  EXPECT_TRUE(pair.expect_no_duplicates(Side::local));
}

// A database that lost its pairs: --repair pairs the messages by content, copies nothing twice,
// and later flag changes propagate through the rebuilt pairs.
TEST(SyncRepair, RebuildsLostPairsByContent) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("lost", 5));
  ASSERT_TRUE(synced(pair));
  pair.sql("DELETE FROM mapping");
  ASSERT_TRUE(synced(pair, {"--repair"}));
  EXPECT_EQ(count_in(pair.snapshot(Side::local), "INBOX"), 5u);
  pair.add_flags(Side::local, "INBOX", "$Done", Search::message_id(test_message_id("lost", 4)));
  ASSERT_TRUE(synced(pair));
  EXPECT_EQ(flags_of(pair.snapshot(Side::remote), "INBOX", test_message_id("lost", 4)), "($Done)");
}

// A run that distrusts the server's change tracking: it says it re-reads the mailbox, and the
// servers converge.
testing::AssertionResult rereads_and_converges(const SyncPair& pair) {
  RunResult run = pair.run();
  if (!run.ok()) return testing::AssertionFailure() << run.describe();
  if (run.err.find("re-reading the whole mailbox") == std::string::npos) {
    return testing::AssertionFailure() << "no full re-read was reported\n" << run.describe();
  }
  return pair.expect_converged();
}

// HIGHESTMODSEQ below the recorded value (a server restored from a backup): the mailbox is
// re-read in full, and nothing is lost or duplicated.
TEST(SyncDistrust, HighestModseqBelowTheRecordedOneRereadsTheMailbox) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("hms", 4));
  ASSERT_TRUE(synced(pair));
  pair.sql("UPDATE mailbox_sides SET highestmodseq = highestmodseq + 1000 WHERE side = 0");
  pair.append(Side::local, "INBOX", test_message("hms-new", 1));
  ASSERT_TRUE(rereads_and_converges(pair));
  EXPECT_EQ(count_in(pair.snapshot(Side::remote), "INBOX"), 5u);
  EXPECT_TRUE(pair.expect_no_duplicates(Side::remote));
}

// EXISTS that the recorded pairs and the reported changes do not explain: re-read, re-pair by
// content, no duplicates.
TEST(SyncDistrust, MessageCountThatDoesNotAddUpRereadsTheMailbox) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("cnt", 4));
  ASSERT_TRUE(synced(pair));
  pair.sql("DELETE FROM mapping WHERE local_uid = (SELECT MIN(local_uid) FROM mapping)");
  pair.add_flags(Side::remote, "INBOX", "\\Seen", Search::message_id(test_message_id("cnt", 1)));
  ASSERT_TRUE(rereads_and_converges(pair));
  for (Side side : kSides) {
    EXPECT_EQ(count_in(pair.snapshot(side), "INBOX"), 4u) << side_name(side);
    EXPECT_TRUE(pair.expect_no_duplicates(side));
  }
}

// =============================================================================================
// Interrupt and resume after every durable step (in the style of isync's tests): a sync with
// changes on both sides stops itself right after its 1st, 2nd, ... completed commit to the state
// database (TWINBOX_TEST_EXIT_AFTER_COMMITS, an exact point, not a kill on a log line), until a
// run finishes on its own. Every run before that one must really have been interrupted, and
// after each a normal run must converge with every message exactly once.

TEST(SyncInterrupted, KilledAfterEveryDurableStepThenResumed) {
  SyncPair pair;
  int finished_at = 0;
  for (int step = 1; step <= 60 && finished_at == 0; ++step) {
    SCOPED_TRACE(fmt::format("stopped after commit {}", step));
    pair.reset_all();
    pair.create_mailbox(Side::remote, "Work", true);
    pair.append(Side::remote, "INBOX", test_messages("base", 6));
    pair.append(Side::remote, "Work", test_messages("work", 3));
    ASSERT_TRUE(synced(pair));
    // Changes on both sides: new mail each way, a flag conflict, an expunge each way, a new
    // mailbox.
    pair.append(Side::local, "INBOX", test_messages("new-l", 3));
    pair.append(Side::remote, "Work", test_messages("new-r", 3));
    pair.add_flags(Side::local, "INBOX", "\\Seen", Search::message_id(test_message_id("base", 1)));
    pair.add_flags(Side::remote, "INBOX", "$Later", Search::message_id(test_message_id("base", 1)));
    pair.expunge(Side::local, "INBOX", Search::message_id(test_message_id("base", 2)));
    pair.expunge(Side::remote, "Work", Search::message_id(test_message_id("work", 1)));
    pair.create_mailbox(Side::local, "Fresh", true);
    pair.append(Side::local, "Fresh", test_messages("fresh", 2));

    RunResult cut = pair.run_exiting_after_commits(step, {"--debug"});
    if (cut.status == 0) {
      ASSERT_TRUE(ran_ok(cut));
      finished_at = step;
    } else {
      ASSERT_TRUE(exited_after_commits(cut, step));
    }
    ASSERT_TRUE(synced(pair)) << "after the run " << cut.describe();
    for (Side side : kSides) {
      const Snapshot s = pair.snapshot(side);
      const char* name = side == Side::local ? "local" : "remote";
      for (int i = 1; i <= 3; ++i) {
        EXPECT_EQ(s.at("INBOX").count(test_message_id("new-l", i)), 1u) << name;
        EXPECT_EQ(s.at("Work").count(test_message_id("new-r", i)), 1u) << name;
      }
      EXPECT_EQ(s.at("INBOX").count(test_message_id("base", 2)), 0u) << name;
      EXPECT_EQ(s.at("Work").count(test_message_id("work", 1)), 0u) << name;
      EXPECT_EQ(s.at("Fresh").messages.size(), 2u) << name;
      EXPECT_EQ(flags_of(s, "INBOX", test_message_id("base", 1)), "($Later \\Seen)") << name;
    }
    if (HasFailure()) break;
  }
  EXPECT_GT(finished_at, 3) << "the sync should take several durable steps";
  RecordProperty("durable_steps", finished_at - 1);
  std::cout << "[ info ] interrupted after each of " << finished_at - 1 << " durable steps\n";
}

// =============================================================================================
// What the state records after a run with copies lets the next run skip every mailbox. Dovecot
// runs pipelined FETCHes concurrently and interleaves their responses; a reader that attributes
// untagged FETCHes to commands once recorded a stale UIDNEXT here, and every later run then
// re-selected every mailbox. Both servers over TCP, where that was seen.

TEST(SyncState, RunAfterACopyingRunSelectsNothing) {
  PairOptions options;
  options.sides[Side::local].tunnel = false;
  SyncPair pair(options);
  pair.create_mailbox(Side::remote, "Bulk", true);
  pair.append(Side::remote, "INBOX", test_messages("bulk-inbox", 300));
  pair.append(Side::remote, "Bulk", test_messages("bulk", 200));
  pair.append(Side::local, "INBOX", test_messages("bulk-local", 50));
  ASSERT_TRUE(synced(pair));
  RunResult traced = pair.run({"--debug"});
  ASSERT_TRUE(ran_ok(traced));
  EXPECT_THAT(traced.err, ::testing::Not(HasSubstr(" SELECT "))) << traced.describe();
}

// Issue 13: after copying, what was appended is not read back (APPENDUID and the flags sent say
// what it is); only UIDs beyond it could be someone else's delivery. Local INBOX is empty, so the
// 30 copies are UIDs 1..30 and the check after them starts at 31.
TEST(SyncState, CopiedMessagesAreNotReadBack) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("not-read-back", 30));
  RunResult traced = pair.run({"--debug"});
  ASSERT_TRUE(ran_ok(traced));
  const std::string& log = traced.err;
  const auto append = log.find(" APPEND INBOX");  // to local, the only side that receives
  ASSERT_NE(append, std::string::npos) << traced.describe();
  const std::string summaries = " (UID RFC822.SIZE FLAGS INTERNALDATE MODSEQ)";
  EXPECT_EQ(log.find("UID FETCH 1:4294967295" + summaries, append), std::string::npos)
      << traced.describe();
  EXPECT_NE(log.find("UID FETCH 31:4294967295" + summaries, append), std::string::npos)
      << traced.describe();
  ASSERT_TRUE(synced(pair));
  const RunResult again = pair.run({"--debug"});
  ASSERT_TRUE(ran_ok(again));
  EXPECT_THAT(again.err, ::testing::Not(HasSubstr(" SELECT "))) << again.describe();
}

// =============================================================================================
// Large messages: streamed from the FETCH on one server into the APPEND on the other, so that
// memory does not grow with message size

// A message of about `bytes` octets: CRLF lines with 8-bit UTF-8 text, different for each tag.
Message large_message(std::string_view tag, std::size_t bytes) {
  Message m = test_message(tag, 1);
  std::string body;
  body.reserve(bytes + 100);
  for (std::size_t line = 0; body.size() < bytes; ++line) {
    body +=
        fmt::format("{} line {:08} Grüße aus Köln, Ünïcödé body text for streaming ", tag, line);
    body += std::string(line % 17, 'x');
    body += "\r\n";
  }
  m.body = std::move(body);
  return m;
}

// The full text of message `id` as the server holds it (doveadm fetch text).
std::string text_of(const SyncPair& pair, Side side, std::string_view mailbox,
                    std::string_view id) {
  std::vector<std::string> args = {"fetch", "text", "mailbox", std::string(mailbox)};
  for (const auto& a : Search::message_id(id).args) args.push_back(a);
  return pair.doveadm(side, args).output;
}

bool streamed_in(const RunResult& run) {
  return run.err.find("streaming") != std::string::npos ||
         run.out.find("streaming") != std::string::npos;
}

class SyncStreaming : public ::testing::TestWithParam<bool> {};

// Both directions, with and without LITERAL+ on the receiving server (a synchronizing literal
// waits for the server's "+" before the streamed body).
TEST_P(SyncStreaming, LargeMessagesArriveIntactBothWays) {
  PairOptions options;
  if (!GetParam()) {
    const std::string caps =
        "IMAP4rev1 ENABLE UIDPLUS LIST-EXTENDED QRESYNC CONDSTORE LIST-STATUS MULTIAPPEND";
    options.capability(Side::local, caps).capability(Side::remote, caps);
  }
  SyncPair pair(options);
  const Message to_remote = large_message("big-local", 3 << 20);
  const Message to_local = large_message("big-remote", (5 << 20) + 12345);
  pair.append(Side::local, "INBOX", to_remote);
  pair.append(Side::local, "INBOX", test_messages("small-local", 5));
  pair.append(Side::remote, "INBOX", to_local);
  pair.append(Side::remote, "INBOX", test_messages("small-remote", 5));
  RunResult run = pair.run({"--debug"});
  ASSERT_TRUE(ran_ok(run));
  EXPECT_TRUE(streamed_in(run)) << run.describe();
  ASSERT_TRUE(synced(pair));
  for (const Message* m : {&to_remote, &to_local}) {
    const std::string local = text_of(pair, Side::local, "INBOX", m->message_id);
    const std::string remote = text_of(pair, Side::remote, "INBOX", m->message_id);
    EXPECT_GT(local.size(), (3u << 20) / 10 * 9);  // doveadm shows CRLF as LF
    EXPECT_TRUE(local == remote) << m->message_id << ": the copy differs from the original";
  }
  const Snapshot after = pair.snapshot(Side::local);
  EXPECT_EQ(count_in(after, "INBOX"), 12u);
}

INSTANTIATE_TEST_SUITE_P(Literals, SyncStreaming, ::testing::Values(true, false),
                         [](const auto& info) {
                           return info.param ? "LiteralPlus" : "Synchronizing";
                         });

// Interrupted while large messages are on their way, then resumed: the rerun pairs what arrived
// and copies what did not, once. Each run is cut at another point: right after each of the first
// 4 commits (TWINBOX_TEST_EXIT_AFTER_COMMITS), as each of the two streams starts (--debug's
// "streaming N bytes" line), and at 4 random moments inside the time an uninterrupted run takes.
// Every run but the random ones must really have been cut; of the random ones, at least one.
TEST(SyncStreamingKilled, KilledWhileStreamingThenResumed) {
  SyncPair pair;
  auto prepare = [&] {
    pair.reset_all();
    pair.append(Side::local, "INBOX", large_message("kill-l", 6 << 20));
    pair.append(Side::remote, "INBOX", large_message("kill-r", 4 << 20));
    pair.append(Side::remote, "INBOX", test_messages("kill-small", 3));
  };
  // An uninterrupted run, to aim the random kills inside one.
  prepare();
  const RunResult whole = pair.run({"--debug"});
  ASSERT_TRUE(ran_ok(whole));
  ASSERT_TRUE(streamed_in(whole)) << whole.describe();
  const auto duration = static_cast<int>(whole.elapsed.count());

  std::mt19937 random(4242);
  int random_kills = 0;
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    prepare();
    RunResult cut;
    if (round < 4) {
      cut = pair.run_exiting_after_commits(round + 1, {"--debug"});
      ASSERT_TRUE(exited_after_commits(cut, round + 1));
    } else if (round < 6) {
      const KillAt when = KillAt::on_output(R"(streaming [0-9]+ bytes)", round - 3);
      cut = pair.run_killed_after(when, {"--debug"});
      ASSERT_TRUE(cut.killed) << "not killed " << when.describe() << ": " << cut.describe();
    } else {
      const std::chrono::milliseconds delay(
          std::uniform_int_distribution<int>(duration / 10, duration * 3 / 4)(random));
      cut = pair.run_killed_after(KillAt::after(delay), {"--debug"});
      if (cut.killed) {
        ++random_kills;
      } else {
        ASSERT_TRUE(ran_ok(cut)) << "the run to be killed after " << delay.count() << " ms";
        std::cout << "[ info ] round " << round << ": finished in " << cut.elapsed.count()
                  << " ms, before the kill at " << delay.count() << " ms\n";
      }
    }
    ASSERT_TRUE(synced(pair)) << "after the run " << cut.describe();
    for (Side side : kSides) {
      const Snapshot s = pair.snapshot(side);
      EXPECT_EQ(s.at("INBOX").count(test_message_id("kill-l", 1)), 1u) << side_name(side);
      EXPECT_EQ(s.at("INBOX").count(test_message_id("kill-r", 1)), 1u) << side_name(side);
      EXPECT_EQ(s.at("INBOX").messages.size(), 5u) << side_name(side);
    }
    if (HasFailure()) return;
  }
  EXPECT_GE(random_kills, 1) << "no random kill hit a running sync (an uninterrupted run took "
                             << duration << " ms)";
  RecordProperty("random_kills", random_kills);
}

// Memory does not grow with message size: copying a 48 MiB message costs about what a 2 MiB one
// does (it would be at least 48 MiB more if the body were held whole). The peak is what twinbox
// reports of itself (VmHWM, with --debug): wait4's rusage of an exec'd child can include the
// size of the process that forked it, here the test with its 48 MiB message.
TEST(SyncStreamingMemory, PeakMemoryDoesNotGrowWithMessageSize) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan parks freed memory in a quarantine (256 MiB by default) before reusing it, which
  // would measure the sanitizer, not twinbox. The runs inherit ASAN_OPTIONS.
  const char* inherited = std::getenv("ASAN_OPTIONS");
  const std::string asan_options =
      (inherited != nullptr && *inherited ? std::string(inherited) + ":" : std::string()) +
      "quarantine_size_mb=4";
  ::setenv("ASAN_OPTIONS", asan_options.c_str(), 1);
#endif
  SyncPair pair;
  long peak[2] = {0, 0};
  const std::size_t sizes[2] = {2u << 20, 48u << 20};
  const std::string reported = "peak resident memory: ";
  for (int i = 0; i < 2; ++i) {
    pair.reset_all();
    pair.append(Side::remote, "INBOX", large_message(fmt::format("mem{}", i), sizes[i]));
    RunResult run = pair.run({"--debug"});
    ASSERT_TRUE(ran_ok(run));
    // std::regex is avoided: g++ 12 warns inside <regex> under ASan (-Werror).
    const auto at = run.err.find(reported);
    ASSERT_NE(at, std::string::npos) << run.describe();
    peak[i] = std::strtol(run.err.c_str() + at + reported.size(), nullptr, 10);
  }
  std::cout << "[ info ] peak RSS: " << peak[0] / 1024 << " MiB copying 2 MiB, " << peak[1] / 1024
            << " MiB copying 48 MiB\n";
  EXPECT_GT(peak[0], 0);
  EXPECT_LT(peak[1] - peak[0], 16 * 1024) << "peak RSS grew with the message size";
}

// =============================================================================================
// --dry-run

TEST(SyncDryRun, PrintsThePlanAndChangesNothing) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("dry", 3));
  ASSERT_TRUE(synced(pair));
  pair.append(Side::remote, "INBOX", test_message("dry-new", 1));
  pair.add_flags(Side::local, "INBOX", "\\Answered", Search::message_id(test_message_id("dry", 1)));
  pair.expunge(Side::remote, "INBOX", Search::message_id(test_message_id("dry", 2)));
  pair.create_mailbox(Side::remote, "Fresh", true);
  pair.append(Side::remote, "Fresh", test_messages("fresh", 2));
  const auto before = pair.snapshots();
  const auto read_file = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string database_before = read_file(pair.database_path());
  ASSERT_FALSE(database_before.empty());
  RunResult dry = pair.run({"--dry-run", "--debug"});
  ASSERT_TRUE(ran_ok(dry));
  // Nothing that changes a server goes out (the debug trace shows every command sent).
  for (const char* verb : {" CREATE ", " SUBSCRIBE ", " APPEND ", " STORE ", " EXPUNGE "}) {
    EXPECT_THAT(dry.err, ::testing::Not(HasSubstr(verb))) << verb;
  }
  EXPECT_THAT(dry.out, HasSubstr("local: would create mailbox Fresh\n"));
  EXPECT_THAT(dry.out, HasSubstr("local: would subscribe mailbox Fresh\n"));
  EXPECT_THAT(dry.out, HasSubstr("Fresh:\ncopy remote UID 1 -> local"));
  EXPECT_THAT(dry.out, ::testing::ContainsRegex("INBOX:\n(.*\n)*copy remote UID 4 -> local"));
  EXPECT_THAT(dry.out,
              ::testing::ContainsRegex("expunge local UID [0-9]+ \\(vanished on remote\\)"));
  EXPECT_THAT(dry.out, ::testing::ContainsRegex("store remote UID 1 \\+\\(\\\\Answered\\)"));
  // Mailboxes, subscriptions, messages, flags, UIDNEXT and HIGHESTMODSEQ as they were; the state
  // database byte for byte, and no file created beside it.
  for (Side side : kSides)
    EXPECT_TRUE(unchanged(before[side], pair.snapshot(side), side_name(side)));
  EXPECT_EQ(read_file(pair.database_path()), database_before);
  struct stat st {};
  EXPECT_NE(::stat((pair.database_path() + "-wal").c_str(), &st), 0);
  ASSERT_TRUE(synced(pair));  // the real run still does it all
  EXPECT_EQ(count_in(pair.snapshot(Side::local), "INBOX"), 3u);
  EXPECT_EQ(count_in(pair.snapshot(Side::local), "Fresh"), 2u);
}

// A dry run before any real one: no state database is created at all.
TEST(SyncDryRun, FirstRunLeavesNoDatabaseBehind) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("first", 2));
  pair.append(Side::local, "INBOX", test_message("first-local", 1));  // Dovecot makes INBOX on use
  const auto before = pair.snapshots();
  RunResult dry = pair.run({"--dry-run"});
  ASSERT_TRUE(ran_ok(dry));
  EXPECT_THAT(dry.out, HasSubstr("\ncopy remote UID 1 -> local ()\n"));
  for (Side side : kSides)
    EXPECT_TRUE(unchanged(before[side], pair.snapshot(side), side_name(side)));
  struct stat st {};
  EXPECT_NE(::stat(pair.database_path().c_str(), &st), 0) << "a dry run created the database";
  EXPECT_NE(::stat((pair.database_path() + ".lock").c_str(), &st), 0);
}

// =============================================================================================
// Output: log-prefix and logfile from the config

TEST(SyncOutput, LogPrefixAndLogfileFromTheConfig) {
  SyncPair pair;
  const std::string logfile = pair.dir() + "/twinbox.log";
  // Config::Tiny trims trailing blanks; a conditional keeps the space.
  pair.set_config_lines({"log-prefix = <%n|%m>%?n? ?", "logfile = " + logfile});
  pair.append(Side::remote, "INBOX", test_messages("out", 2));
  RunResult run = pair.run();
  ASSERT_TRUE(ran_ok(run));
  std::ifstream in(logfile);
  const std::string text(std::istreambuf_iterator<char>(in), {});
  EXPECT_THAT(text, HasSubstr("<remote|INBOX> copied 2 message(s) to local")) << text;
  EXPECT_THAT(text, ::testing::ContainsRegex("^20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T")) << text;
  struct stat st {};
  ASSERT_EQ(::stat(logfile.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(run.err, ::testing::Not(HasSubstr("copied"))) << "log lines belong in the logfile";
}

// =============================================================================================
// --watch

// Random changes on both servers while twinbox watches (appends, flag edits on both sides of the
// same messages, expunges, a new mailbox); then the servers converge without a restart, SIGTERM
// ends the run with status 0, and a one-shot run afterwards finds nothing to do.
TEST(SyncWatch, ConvergesUnderConcurrentChangesAndStopsCleanlyOnSigterm) {
  SyncPair pair;
  pair.create_mailbox(Side::remote, "Work", true);
  pair.append(Side::remote, "INBOX", test_messages("w-inbox", 10));
  pair.append(Side::remote, "Work", test_messages("w-work", 6));
  ASSERT_TRUE(synced(pair));

  Watching watching(pair, {"--watch=2"}, 240s);
  struct Live {
    std::string mailbox, id;
  };
  std::vector<Live> live;
  for (int n = 1; n <= 10; ++n) live.push_back({"INBOX", test_message_id("w-inbox", n)});
  for (int n = 1; n <= 6; ++n) live.push_back({"Work", test_message_id("w-work", n)});
  std::mt19937 rng(20261128);
  int appended = 0;
  const std::vector<std::string> flags = {"\\Seen", "\\Flagged", "$Todo", "\\Answered"};
  for (int round = 0; round < 24; ++round) {
    const Side side = rng() % 2 ? Side::local : Side::remote;
    const int action = static_cast<int>(rng() % 10);
    if (action < 3) {
      const std::string box = rng() % 2 ? "INBOX" : "Work";
      pair.append(side, box, test_message("w-new", ++appended));
      live.push_back({box, test_message_id("w-new", appended)});
    } else if (action < 8 && !live.empty()) {
      const Live& target = live[rng() % live.size()];
      const std::string& flag = flags[rng() % flags.size()];
      if (rng() % 3 == 0) {
        pair.remove_flags(side, target.mailbox, flag, Search::message_id(target.id));
      } else {
        pair.add_flags(side, target.mailbox, flag, Search::message_id(target.id));
      }
    } else if (action < 9 && live.size() > 4) {
      const std::size_t i = rng() % live.size();
      pair.expunge(side, live[i].mailbox, Search::message_id(live[i].id));
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (round == 20 || action == 9) {
      if (!pair.snapshot(side).mailbox("Later")) pair.create_mailbox(side, "Later", true);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 300));
  }
  // Converged without a restart, within a bounded time.
  testing::AssertionResult converged = testing::AssertionFailure() << "never checked";
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1s);
    converged = pair.expect_converged();
    if (converged) break;
  }
  std::this_thread::sleep_for(1s);
  const RunResult& run = watching.stop();
  EXPECT_TRUE(converged);
  EXPECT_TRUE(ran_ok(run));
  EXPECT_THAT(run.err, HasSubstr("stopping as asked"));
  for (Side side : kSides) EXPECT_TRUE(pair.expect_no_duplicates(side));
  RunResult after = pair.run();
  EXPECT_TRUE(ran_ok(after));
  EXPECT_TRUE(reports_no_changes(after)) << after.describe();
}

// New mail in INBOX reaches the other side within seconds (IDLE), long before the full cycle.
TEST(SyncWatch, IdleDeliversNewInboxMailWithinSeconds) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("idle", 2));
  ASSERT_TRUE(synced(pair));
  Watching watching(pair, {"--watch=600"});
  std::this_thread::sleep_for(2s);  // the first cycle is done and IDLE started
  const bool arrived = delivered_within(pair, Side::remote, "INBOX", "idle-new", 1, 15s);
  const RunResult& run = watching.stop();
  EXPECT_TRUE(arrived) << "new INBOX mail did not arrive within 15 s of a --watch=600 run";
  EXPECT_TRUE(ran_ok(run));
}

// Kills the server processes that serve `lab`'s IMAP connections (their working directory is
// in the lab's directory): to the client, every connection is cut at once.
int cut_connections(const dovecot::DovecotLab& lab) {
  int killed = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code error;
    const auto cwd = std::filesystem::read_symlink(entry.path() / "cwd", error).string();
    std::ifstream cmdline(entry.path() / "cmdline");
    const std::string command(std::istreambuf_iterator<char>(cmdline), {});
    if (error || cwd.rfind(lab.dir() + "/", 0) != 0 || command.find("imap") == std::string::npos) {
      continue;
    }
    if (::kill(std::stoi(pid), SIGKILL) == 0) ++killed;
  }
  return killed;
}

// The remote's connection is cut while twinbox watches: it reconnects with backoff and goes on
// syncing, and still stops cleanly on SIGTERM.
TEST(SyncWatch, ReconnectsAfterTheConnectionIsCut) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("rc", 2));
  ASSERT_TRUE(synced(pair));
  Watching watching(pair, {"--watch=2"});
  std::this_thread::sleep_for(2s);
  const int killed = cut_connections(pair.lab(Side::remote));
  const bool arrived = delivered_within(pair, Side::remote, "INBOX", "rc-new", 1, 30s);
  const RunResult& run = watching.stop();
  EXPECT_GT(killed, 0) << "no server process to kill: the test did not cut anything";
  EXPECT_TRUE(arrived) << "no sync within 30 s of the cut\n" << run.describe();
  EXPECT_TRUE(ran_ok(run));
  EXPECT_THAT(run.err, HasSubstr("reconnecting"));
}

// With --notify, one NOTIFY per server covers every mailbox: new mail in a mailbox other than
// INBOX arrives within seconds too.
TEST(SyncWatch, NotifyDeliversNewMailInAnyMailboxWithinSeconds) {
  SyncPair pair;
  pair.create_mailbox(Side::remote, "Lists", true);
  pair.append(Side::remote, "Lists", test_messages("notify", 2));
  ASSERT_TRUE(synced(pair));
  Watching watching(pair, {"--notify", "--watch=600"});
  std::this_thread::sleep_for(2s);
  const bool arrived = delivered_within(pair, Side::local, "Lists", "notify-new", 1, 15s);
  const RunResult& run = watching.stop();
  EXPECT_TRUE(arrived) << "new mail in Lists did not arrive within 15 s of a --notify run\n"
                       << run.describe();
  EXPECT_TRUE(ran_ok(run));
}

// The mailbox a cycle synced stays selected; Dovecot announces a selected mailbox's changes only
// during a command or IDLE, so --notify must leave it before waiting: a second delivery to the
// same mailbox arrives within seconds too, not at the next full cycle (found by bench/live.py).
TEST(SyncWatch, NotifyAnnouncesTheMailboxTheLastCycleSynced) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("notify-again", 2));
  ASSERT_TRUE(synced(pair));
  Watching watching(pair, {"--notify", "--watch=600"});
  std::this_thread::sleep_for(2s);
  const bool first = delivered_within(pair, Side::remote, "INBOX", "notify-again-first", 1, 15s);
  std::this_thread::sleep_for(1s);
  const bool second = delivered_within(pair, Side::remote, "INBOX", "notify-again-second", 1, 15s);
  const RunResult& run = watching.stop();
  EXPECT_TRUE(first) << run.describe();
  EXPECT_TRUE(second) << "a second delivery to INBOX did not arrive within 15 s\n"
                      << run.describe();
  EXPECT_TRUE(ran_ok(run));
}

// The lines of `log` from the first that contains `from` on (empty if none does).
std::vector<std::string> lines_after(const std::string& log, const std::string& from) {
  std::vector<std::string> out;
  std::size_t at = log.find(from);
  while (at != std::string::npos && at < log.size()) {
    const std::size_t end = log.find('\n', at);
    out.push_back(log.substr(at, end == std::string::npos ? std::string::npos : end - at));
    at = end == std::string::npos ? end : end + 1;
  }
  return out;
}

std::size_t count_lines_with(const std::vector<std::string>& lines, const std::string& text) {
  return static_cast<std::size_t>(std::count_if(
      lines.begin(), lines.end(), [&](const std::string& l) { return l.find(text) != l.npos; }));
}

// With --notify, an announced change is synced by looking at that mailbox only: no LIST of every
// mailbox and no SELECT of the others, and NOTIFY stays set (no NOTIFY NONE and SET per change).
TEST(SyncWatch, NotifyLooksOnlyAtTheAnnouncedMailbox) {
  SyncPair pair;
  for (const char* box : {"Lists", "Work", "Archive"}) pair.create_mailbox(Side::remote, box, true);
  pair.append(Side::remote, "Lists", test_messages("only", 2));
  pair.append(Side::remote, "Work", test_messages("only-work", 2));
  ASSERT_TRUE(synced(pair));
  Watching watching(pair, {"--notify", "--watch=600", "--debug"});
  std::this_thread::sleep_for(2s);
  const bool first = delivered_within(pair, Side::remote, "Lists", "only-new", 1, 15s);
  pair.add_flags(Side::local, "Lists", "\\Flagged", Search::message_id(test_message_id("only", 1)));
  bool flagged = false;
  for (int i = 0; i < 30 && !flagged; ++i) {
    std::this_thread::sleep_for(500ms);
    const Snapshot remote = pair.snapshot(Side::remote);
    const auto found = remote.at("Lists").find(test_message_id("only", 1));
    flagged = found.size() == 1 &&
              std::count(found[0]->flags.begin(), found[0]->flags.end(), "\\Flagged") == 1;
  }
  const RunResult& run = watching.stop();
  EXPECT_TRUE(first) << run.describe();
  EXPECT_TRUE(flagged) << "the flag did not reach the remote within 15 s\n" << run.describe();
  EXPECT_TRUE(ran_ok(run));
  const auto after = lines_after(run.err, "change announced");
  ASSERT_FALSE(after.empty()) << run.describe();
  EXPECT_GE(count_lines_with(after, "looking at 1 mailbox(es) only"), 2u) << run.describe();
  EXPECT_EQ(count_lines_with(after, " LIST "), 0u) << run.describe();
  EXPECT_EQ(count_lines_with(after, "NOTIFY "), 0u) << run.describe();
  EXPECT_GE(count_lines_with(after, "SELECT Lists"), 2u) << run.describe();
  EXPECT_EQ(count_lines_with(after, "SELECT Work"), 0u) << run.describe();
  EXPECT_EQ(count_lines_with(after, "SELECT INBOX"), 0u) << run.describe();
}

// NOTIFY also announces mailboxes the run does not sync (ignore-mailbox) and copies of our own
// LIST's answers: neither may wake a cycle. A quiet --notify run lists once per full cycle.
TEST(SyncWatch, NotifyIgnoresWhatTheRunDoesNotSync) {
  SyncPair pair;
  pair.create_mailbox(Side::remote, "Lists", true);
  pair.create_mailbox(Side::remote, "Spam", true);
  pair.append(Side::remote, "Lists", test_messages("ign", 2));
  pair.set_config_lines({"ignore-mailbox = ^Spam$"});
  const RunResult first = pair.run();
  ASSERT_TRUE(ran_ok(first)) << first.describe();
  Watching watching(pair, {"--notify", "--watch=600", "--debug"});
  std::this_thread::sleep_for(2s);
  pair.append(Side::remote, "Spam", test_messages("ign-spam", 3));
  std::this_thread::sleep_for(2s);
  const bool arrived = delivered_within(pair, Side::remote, "Lists", "ign-new", 1, 15s);
  const RunResult& run = watching.stop();
  EXPECT_TRUE(arrived) << run.describe();
  EXPECT_TRUE(ran_ok(run));
  EXPECT_EQ(pair.snapshot(Side::local).mailbox("Spam"), nullptr);
  // One LIST per side for the first cycle and one after NOTIFY SET; nothing more.
  const auto all = lines_after(run.err, "twinbox");
  EXPECT_EQ(count_lines_with(all, " LIST \"\" "), 4u) << run.describe();
  EXPECT_EQ(count_lines_with(all, "NOTIFY NONE"), 0u) << run.describe();
}

// IDLE announces an expunge in INBOX, which may be half of a move: that wakes a full cycle, so the
// message reaches the other mailbox within seconds too, not at the next interval.
TEST(SyncWatch, IdleExpungeInInboxLooksAtEveryMailbox) {
  SyncPair pair;
  pair.create_mailbox(Side::remote, "Work", true);
  pair.append(Side::remote, "INBOX", test_messages("moved", 3));
  ASSERT_TRUE(synced(pair));
  Watching watching(pair, {"--watch=600"});
  std::this_thread::sleep_for(2s);
  // A move as a client does it without MOVE: copy to Work, then expunge from INBOX.
  pair.append(Side::local, "Work", test_message("moved", 2));
  pair.expunge(Side::local, "INBOX", Search::message_id(test_message_id("moved", 2)));
  const bool arrived = arrives_within(pair, Side::remote, "Work", test_message_id("moved", 2), 15s);
  const RunResult& run = watching.stop();
  EXPECT_TRUE(arrived) << "the moved message did not reach the remote's Work within 15 s\n"
                       << run.describe();
  EXPECT_TRUE(ran_ok(run));
  EXPECT_EQ(pair.snapshot(Side::remote).at("INBOX").count(test_message_id("moved", 2)), 0u);
}

// =============================================================================================
// list-reference: three remote accounts into one local server, each under its own prefix.

TEST(SyncListReference, ThreeRemotesIntoOneLocalServer) {
  // Pair 0 provides the local server and the first remote; pairs 1 and 2 only their remotes.
  SyncPair main_pair;
  SyncPair second, third;
  const std::vector<const SyncPair*> accounts = {&main_pair, &second, &third};
  std::vector<std::string> configs;
  const auto read_file = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string main_text = read_file(main_pair.config_path());
  const std::string local_section =
      main_text.substr(main_text.find("\n[local]\n"),
                       main_text.find("\n[remote]\n") - main_text.find("\n[local]\n"));
  for (std::size_t k = 0; k < accounts.size(); ++k) {
    const std::string text = read_file(accounts[k]->config_path());
    const std::string remote_section = text.substr(text.find("\n[remote]\n"));
    const std::string path = fmt::format("{}/account{}.conf", main_pair.dir(), k + 1);
    std::ofstream out(path);
    out << fmt::format("database = {}/account{}.db\n", main_pair.dir(), k + 1) << local_section
        << fmt::format("list-reference = acct{}.\n", k + 1) << remote_section;
    out.close();
    ::chmod(path.c_str(), 0600);
    configs.push_back(path);
    accounts[k]->append(Side::remote, "INBOX", test_messages(fmt::format("acct{}", k + 1), 2 + k));
    accounts[k]->create_mailbox(Side::remote, "Lists", true);
    accounts[k]->append(Side::remote, "Lists", test_messages(fmt::format("list{}", k + 1), 1));
  }
  for (int round = 0; round < 2; ++round) {
    for (const auto& config : configs) {
      RunResult run = main_pair.run_with_config(config);
      ASSERT_TRUE(ran_ok(run));
      if (round == 1) {
        EXPECT_TRUE(reports_no_changes(run)) << run.describe();
      }
    }
  }
  const Snapshot local = main_pair.snapshot(Side::local);
  for (std::size_t k = 0; k < accounts.size(); ++k) {
    const std::string prefix = fmt::format("acct{}/", k + 1);
    EXPECT_EQ(count_in(local, prefix + "INBOX"), 2 + k) << local.to_string();
    EXPECT_EQ(count_in(local, prefix + "Lists"), 1u);
    // Nothing of another account leaked into this remote.
    EXPECT_EQ(count_in(accounts[k]->snapshot(Side::remote), "INBOX"), 2 + k);
  }
  EXPECT_EQ(count_in(local, "INBOX"), 0u);  // the local server's own INBOX is not touched
}

}  // namespace
}  // namespace twinbox::sync_tests
