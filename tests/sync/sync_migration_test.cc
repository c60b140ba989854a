// Switching from InterIMAP: the Debian package's interimap syncs a pair, twinbox imports its
// state database, and from then on twinbox carries on where InterIMAP stopped.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "sync/scenario_support.h"

namespace twinbox::sync_tests {
namespace {

// What the servers exchanged with the clients of one step: Dovecot logs "in=N out=M" when an
// IMAP session ends (bytes received from and sent to the client), so both tools are measured
// by the same independent meter.
class DovecotTraffic {
 public:
  explicit DovecotTraffic(const SyncPair& pair) : pair_(pair) {
    for (Side side : kSides) offset_[side] = read_text(pair.lab(side).log_path()).size();
  }
  std::uint64_t bytes() const {
    // No std::regex: g++ 12 warns inside it under the sanitizers (-Wmaybe-uninitialized).
    const auto number_after = [](const std::string& line, std::string_view key) -> std::uint64_t {
      const auto at = line.find(key);
      return at == std::string::npos ? 0 : std::stoull(line.substr(at + key.size()));
    };
    std::uint64_t total = 0;
    for (Side side : kSides) {
      std::istringstream log(read_text(pair_.lab(side).log_path()).substr(offset_[side]));
      for (std::string line; std::getline(log, line);) {
        if (line.find("Disconnected: ") == std::string::npos) continue;
        total += number_after(line, " in=") + number_after(line, " out=");
      }
    }
    return total;
  }

 private:
  const SyncPair& pair_;
  PerSide<std::size_t> offset_{};
};

struct Interimap {
  const SyncPair& pair;
  std::string config, database;

  // The pair's own configuration file (InterIMAP's format), its database moved aside.
  explicit Interimap(const SyncPair& p)
      : pair(p), config(p.dir() + "/interimap.conf"), database(p.dir() + "/interimap.db") {
    std::istringstream lines(read_text(p.config_path()));
    std::string text;
    for (std::string line; std::getline(lines, line);) {
      text += line.rfind("database = ", 0) == 0 ? "database = " + database : line;
      text += "\n";
    }
    std::ofstream(config) << text;
  }
  RunResult run() const {
    RunOptions options;
    options.timeout = std::chrono::minutes(3);
    return run_process({"/usr/bin/interimap", "--config=" + config},
                       twinbox_environment(pair.dir()), options);
  }
};

// A change is logged as "...: copied N message(s) to ...", "expunged N message(s)", "updated
// flags of N message(s)" or "created mailbox"; the summary line's zero counts are not changes.
bool changed_something(const RunResult& run) {
  return run.err.find("message(s)") != std::string::npos ||
         run.err.find("created mailbox") != std::string::npos;
}

TEST(SyncInterimapImport, SwitchingDownloadsNothingAndMergesFromInterimapsBase) {
  SyncPair pair;
  pair.create_mailbox(Side::remote, "Lists", true);
  pair.create_mailbox(Side::remote, "Lists/dev", true);
  pair.create_mailbox(Side::remote, "Entwürfe", true);
  pair.append(Side::remote, "INBOX", test_messages("switch", 40));
  pair.append(Side::remote, "Lists/dev", test_messages("switch-dev", 10));
  pair.append(Side::remote, "Entwürfe", test_messages("switch-drafts", 3));
  pair.append(Side::local, "INBOX", test_messages("switch-local", 5));
  pair.add_flags(Side::remote, "INBOX", "\\Seen", Search::uids("1:20"));

  const Interimap interimap(pair);
  const RunResult first = interimap.run();
  ASSERT_EQ(first.status, 0) << first.describe();
  ASSERT_TRUE(pair.expect_converged());
  const DovecotTraffic interimap_meter(pair);
  const RunResult interimap_noop = interimap.run();
  ASSERT_EQ(interimap_noop.status, 0) << interimap_noop.describe();
  const std::uint64_t interimap_bytes = interimap_meter.bytes();
  ASSERT_GT(interimap_bytes, 0u) << "Dovecot logged no session traffic";

  // Changes after InterIMAP's last run: the import must take them for changes, not for the base.
  pair.add_flags(Side::local, "INBOX", "\\Flagged",
                 Search::message_id(test_message_id("switch", 1)));
  pair.remove_flags(Side::remote, "INBOX", "\\Seen",
                    Search::message_id(test_message_id("switch", 2)));
  pair.expunge(Side::remote, "Lists/dev", Search::message_id(test_message_id("switch-dev", 3)));

  const RunResult imported = pair.run({"--import-interimap=" + interimap.database});
  ASSERT_EQ(imported.status, 0) << imported.describe();
  EXPECT_NE(imported.err.find("imported 4 mailbox(es) and 58 message pair(s) from InterIMAP"),
            std::string::npos)
      << imported.describe();

  const RunResult resumed = pair.run();
  ASSERT_TRUE(resumed.ok()) << resumed.describe();
  EXPECT_EQ(resumed.err.find("copied 0 to local, 0 to remote"), resumed.err.find("copied"))
      << "re-downloaded: " << resumed.describe();
  EXPECT_TRUE(pair.expect_converged());
  for (Side side : kSides) EXPECT_TRUE(pair.expect_no_duplicates(side));
  const PerSide<Snapshot> s = pair.snapshots();
  for (Side side : kSides) {
    EXPECT_EQ(flags_of(s[side], "INBOX", test_message_id("switch", 1)), "(\\Flagged \\Seen)")
        << side_name(side);
    EXPECT_EQ(flags_of(s[side], "INBOX", test_message_id("switch", 2)), "()")
        << side_name(side) << ": a removal after InterIMAP's last run was undone";
    EXPECT_EQ(flags_of(s[side], "Lists/dev", test_message_id("switch-dev", 3)), "0 copies")
        << side_name(side) << ": a deletion after InterIMAP's last run was undone";
  }

  // A no-op costs no more than InterIMAP's own.
  const DovecotTraffic twinbox_meter(pair);
  const RunResult noop = pair.run();
  ASSERT_TRUE(noop.ok()) << noop.describe();
  EXPECT_FALSE(changed_something(noop)) << noop.describe();
  const std::uint64_t twinbox_bytes = twinbox_meter.bytes();
  EXPECT_LE(twinbox_bytes, interimap_bytes)
      << "twinbox's no-op: " << twinbox_bytes << " bytes, InterIMAP's: " << interimap_bytes;
  RecordProperty("interimap_noop_bytes", std::to_string(interimap_bytes));
  RecordProperty("twinbox_noop_bytes", std::to_string(twinbox_bytes));
}

TEST(SyncInterimapImport, BadOrForeignDatabasesChangeNothing) {
  SyncPair pair;
  pair.append(Side::remote, "INBOX", test_messages("refuse", 3));
  const PerSide<Snapshot> before = pair.snapshots();
  const std::string garbage = pair.dir() + "/garbage.db";
  std::ofstream(garbage) << "not a database, only some text long enough to look like a header";

  RunResult run = pair.run({"--import-interimap=" + garbage});
  EXPECT_EQ(run.status, 7) << run.describe();
  EXPECT_NE(run.err.find(garbage), std::string::npos) << run.describe();
  EXPECT_FALSE(std::filesystem::exists(pair.database_path())) << "a twinbox database was created";
  run = pair.run({"--import-interimap=" + pair.dir() + "/missing.db"});
  EXPECT_EQ(run.status, 7) << run.describe();
  EXPECT_NE(run.err.find("no InterIMAP state database there"), std::string::npos);

  // twinbox's own database is not InterIMAP's.
  ASSERT_TRUE(pair.run().ok());
  const std::string copy = pair.dir() + "/twinbox-copy.db";
  std::filesystem::copy_file(pair.database_path(), copy);
  run = pair.run({"--import-interimap=" + copy});
  EXPECT_EQ(run.status, 7) << run.describe();
  EXPECT_NE(run.err.find("not an InterIMAP state database"), std::string::npos) << run.describe();

  // A real InterIMAP database, but twinbox already keeps state: refused, nothing mixed.
  const Interimap interimap(pair);
  ASSERT_EQ(interimap.run().status, 0);
  const std::string before_db = read_text(pair.database_path());
  run = pair.run({"--import-interimap=" + interimap.database});
  EXPECT_EQ(run.status, 2) << run.describe();
  EXPECT_NE(run.err.find("already holds 1 mailbox(es)"), std::string::npos) << run.describe();
  EXPECT_EQ(read_text(pair.database_path()), before_db);
  const PerSide<Snapshot> after = pair.snapshots();
  EXPECT_TRUE(same_content(after[Side::local], after[Side::remote]));
  (void)before;
}

}  // namespace
}  // namespace twinbox::sync_tests
