#include "cli/stats_json.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/log.h"

namespace twinbox::cli {
namespace {

using nlohmann::json;
using store::Side;

sync::RunSummary sample_summary() {
  sync::RunSummary s;
  s.mailboxes_seen = 2;
  s.mailboxes_synced = 1;
  s.mailboxes_failed = 1;
  s.wire_in[Side::remote] = 4096;
  s.wire_out[Side::remote] = 512;
  s.round_trips[Side::remote] = 6;
  s.cycles = 1;
  sync::MailboxReport inbox;
  inbox.outcome = sync::MailboxReport::Outcome::synced;
  inbox.syncs = 1;
  inbox.tier = {sync::Tier::qresync, sync::Tier::condstore};
  inbox.copied_to[Side::local] = 3;
  inbox.bytes_copied_to[Side::local] = 1234;
  inbox.flags_set_on[Side::remote] = 2;
  inbox.duration = std::chrono::milliseconds(1500);
  s.mailboxes["INBOX"] = inbox;
  sync::MailboxReport broken;
  broken.outcome = sync::MailboxReport::Outcome::failed;
  broken.error = "remote: cannot create the mailbox: \xff name";  // not UTF-8
  s.mailboxes[std::string("Lists\0dev", 9)] = broken;
  return s;
}

TEST(StatsJson, DocumentFollowsTheSchema) {
  RunFacts facts;
  facts.started = std::chrono::system_clock::from_time_t(1'800'000'000);
  facts.duration = std::chrono::milliseconds(2500);
  facts.exit_status = 1;
  const json doc = json::parse(stats_json(sample_summary(), facts));
  EXPECT_EQ(doc["schema"], "twinbox-stats/1");
  EXPECT_EQ(doc["mode"], "sync");
  EXPECT_EQ(doc["started"], "2027-01-15T08:00:00Z");
  EXPECT_DOUBLE_EQ(doc["duration_seconds"].get<double>(), 2.5);
  EXPECT_EQ(doc["running"], false);
  EXPECT_EQ(doc["exit_status"], 1);
  EXPECT_TRUE(doc["error"].is_null());
  EXPECT_EQ(doc["mailboxes_failed"], 1);
  EXPECT_EQ(doc["sides"]["remote"]["bytes_received"], 4096);
  EXPECT_EQ(doc["sides"]["remote"]["bytes_sent"], 512);
  EXPECT_EQ(doc["sides"]["remote"]["round_trips"], 6);
  EXPECT_EQ(doc["sides"]["local"]["copied_to"], 3);
  EXPECT_EQ(doc["sides"]["local"]["bytes_copied_to"], 1234);
  ASSERT_EQ(doc["mailboxes"].size(), 2u);
  const json& inbox = doc["mailboxes"][0];
  EXPECT_EQ(inbox["name"], "INBOX");
  EXPECT_EQ(inbox["outcome"], "synced");
  EXPECT_EQ(inbox["local"]["tier"], "qresync");
  EXPECT_EQ(inbox["remote"]["tier"], "condstore");
  EXPECT_EQ(inbox["remote"]["flags_set"], 2);
  EXPECT_DOUBLE_EQ(inbox["duration_seconds"].get<double>(), 1.5);
  const json& broken = doc["mailboxes"][1];
  EXPECT_EQ(broken["name"], "Lists/dev");
  EXPECT_EQ(broken["outcome"], "failed");
  EXPECT_TRUE(broken["local"]["tier"].is_null());
  EXPECT_NE(broken["error"].get<std::string>().find("cannot create the mailbox"),
            std::string::npos);
}

TEST(StatsJson, SecretsAreScrubbedFromErrors) {
  Log::instance().add_secret("hunter2-stats");
  RunFacts facts;
  facts.error = "remote: login failed for hunter2-stats";
  auto summary = sample_summary();
  summary.mailboxes["INBOX"].error = "said hunter2-stats";
  const std::string text = stats_json(summary, facts);
  EXPECT_EQ(text.find("hunter2-stats"), std::string::npos) << text;
  EXPECT_TRUE(json::parse(text)["running"].get<bool>());
}

TEST(StatsJson, FileIsReplacedWholeAndErrorsNameIt) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("twinbox-stats-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/run.json";
  {
    std::ofstream old(path);
    old << "old contents that are longer than nothing";
  }
  RunFacts facts;
  facts.exit_status = 0;
  ASSERT_TRUE(write_stats_json(path, sample_summary(), facts));
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(json::parse(text.str())["exit_status"], 0);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  Status missing = write_stats_json(dir + "/no/such/dir/run.json", sample_summary(), facts);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("--stats-json " + dir +
                                         "/no/such/dir/run.json: cannot "
                                         "create it"),
            std::string::npos)
      << missing.error().message;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace twinbox::cli
