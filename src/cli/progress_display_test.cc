// The progress line's text; the terminal side is tested end to end in a pseudo-terminal
// (tests/sync/sync_output_test.cc).
#include "cli/progress_display.h"

#include <gtest/gtest.h>

namespace twinbox::cli {
namespace {

using namespace std::chrono_literals;

TEST(HumanBytes, DecimalUnits) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(999), "999 B");
  EXPECT_EQ(human_bytes(1500), "1.5 kB");
  EXPECT_EQ(human_bytes(48'100'000), "48.1 MB");
  EXPECT_EQ(human_bytes(3'250'000'000), "3.25 GB");
}

TEST(RenderProgress, MailboxesOnlyBeforeAnyCopy) {
  ProgressCounts counts;
  counts.to_sync = 12;
  counts.started = 4;
  counts.finished = 3;
  counts.active.push_back({"Archive/2024"});
  EXPECT_EQ(render_progress(counts, ProgressClock::now(), 200), "3/12 mailboxes | Archive/2024");
}

TEST(RenderProgress, RateAndEtaOnceEveryMailboxIsPlanned) {
  const auto start = ProgressClock::time_point{} + 100s;
  ProgressCounts counts;
  counts.to_sync = 2;
  counts.started = 2;
  counts.finished = 1;
  counts.active.push_back({"INBOX", 5000, 1200, 48'100'000, 12'000'000});
  counts.copied = 2345;
  counts.copied_bytes = 40'000'000;
  counts.remaining_bytes = 36'100'000;
  counts.copying_since = start;
  EXPECT_EQ(render_progress(counts, start + 10s, 200),
            "1/2 mailboxes | INBOX 1200/5000 msgs, 12.0 MB/48.1 MB | 2345 msgs, 40.0 MB, "
            "4.0 MB/s, ETA 0:09");
  // A mailbox not planned yet: the rest is unknown, so no ETA.
  counts.to_sync = 3;
  EXPECT_EQ(render_progress(counts, start + 10s, 200),
            "1/3 mailboxes | INBOX 1200/5000 msgs, 12.0 MB/48.1 MB | 2345 msgs, 40.0 MB, "
            "4.0 MB/s");
}

TEST(RenderProgress, ShowsTheMailboxWithMostLeftAndCountsTheOthers) {
  ProgressCounts counts;
  counts.to_sync = 5;
  counts.started = 3;
  counts.active.push_back({"Big", 100, 10, 9'000'000, 1'000'000});
  counts.active.push_back({"Small", 2, 0, 10'000, 0});
  counts.active.push_back({"Empty"});
  const std::string line = render_progress(counts, ProgressClock::now(), 200);
  EXPECT_EQ(line, "0/5 mailboxes | Big 10/100 msgs, 1.0 MB/9.0 MB (+2 more)");
}

TEST(RenderProgress, FitsTheTerminalCountingCharactersNotBytes) {
  ProgressCounts counts;
  counts.to_sync = 1;
  counts.started = 1;
  counts.active.push_back({"Entwürfe/Größere Ablage mit einem sehr langen Namen hier"});
  const std::string line = render_progress(counts, ProgressClock::now(), 200);
  EXPECT_NE(line.find("Entwürfe/Größere Ablage mit e~"), std::string::npos) << line;
  const std::string narrow = render_progress(counts, ProgressClock::now(), 24);
  EXPECT_EQ(narrow, "0/1 mailboxes | Entwürf");  // 23 characters, 26 bytes
}

}  // namespace
}  // namespace twinbox::cli
