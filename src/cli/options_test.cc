// Command-line parsing: InterIMAP's options keep their meaning (Getopt::Long semantics).
#include "cli/options.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace twinbox::cli {
namespace {

ParseOutcome parse(std::initializer_list<const char*> args) {
  std::vector<std::string> storage = {"twinbox"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(Options, WatchWithoutValueDefaultsTo60) {
  auto r = parse({"--watch"});
  ASSERT_TRUE(r.options);
  EXPECT_EQ(r.options->watch, 60);
}

TEST(Options, WatchTakesAttachedOrSeparateValue) {
  auto attached = parse({"--watch=30", "INBOX"});
  ASSERT_TRUE(attached.options);
  EXPECT_EQ(attached.options->watch, 30);
  EXPECT_EQ(attached.options->mailboxes, std::vector<std::string>{"INBOX"});
  auto separate = parse({"--watch", "30", "INBOX"});
  ASSERT_TRUE(separate.options);
  EXPECT_EQ(separate.options->watch, 30);
  EXPECT_EQ(separate.options->mailboxes, std::vector<std::string>{"INBOX"});
}

TEST(Options, NotifyImpliesWatch900) {
  auto r = parse({"--notify"});
  ASSERT_TRUE(r.options);
  EXPECT_EQ(r.options->watch, 900);
}

TEST(Options, TargetsAreCommaSeparatedAndRepeatable) {
  auto r = parse({"--target=local,remote", "--target", "database", "--delete", "Old"});
  ASSERT_TRUE(r.options);
  EXPECT_EQ(r.options->targets, (std::vector<std::string>{"local", "remote", "database"}));
}

TEST(Options, UsageErrorsExitWith2) {
  EXPECT_EQ(parse({"--target=elsewhere", "--delete", "x"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--target=local"}).exit_code, kExitUsage);  // without --delete/--rename
  EXPECT_EQ(parse({"--delete"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--rename", "a"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--repair", "--delete", "a"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--watch", "--repair"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--no-such-option"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--jobs=0"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"--jobs=17"}).exit_code, kExitUsage);
  EXPECT_EQ(parse({"-j", "four"}).exit_code, kExitUsage);
}

TEST(Options, JobsDefaultsTo4AndTakesAValue) {
  auto d = parse({});
  ASSERT_TRUE(d.options);
  EXPECT_EQ(d.options->jobs, 4);
  auto one = parse({"-j", "1"});
  ASSERT_TRUE(one.options);
  EXPECT_EQ(one.options->jobs, 1);
}

TEST(Options, DebugIsACounter) {
  auto r = parse({"--debug", "--debug", "--probe"});
  ASSERT_TRUE(r.options);
  EXPECT_EQ(r.options->debug, 2);
  EXPECT_TRUE(r.options->probe);
}

TEST(Options, HelpAndVersionExitZeroWithoutOptions) {
  auto help = parse({"--help"});
  EXPECT_FALSE(help.options);
  EXPECT_EQ(help.exit_code, kExitOk);
  auto version = parse({"--version"});
  EXPECT_FALSE(version.options);
  EXPECT_EQ(version.exit_code, kExitOk);
}

TEST(ExitCodes, EachErrorClassHasItsOwnStatus) {
  EXPECT_EQ(exit_code_for(Errc::config), kExitConfig);
  EXPECT_EQ(exit_code_for(Errc::timeout), kExitConnect);
  EXPECT_EQ(exit_code_for(Errc::tls), kExitAuth);
  EXPECT_EQ(exit_code_for(Errc::security), kExitAuth);
  EXPECT_EQ(exit_code_for(Errc::protocol), kExitProtocol);
  EXPECT_EQ(exit_code_for(Errc::internal), kExitInternal);
}

TEST(Options, StatsJsonTakesAFileOrDashAndOnlyGoesWithSyncs) {
  auto file = parse({"--stats-json", "/tmp/run.json", "--watch"});
  ASSERT_TRUE(file.options);
  EXPECT_EQ(file.options->stats_json, "/tmp/run.json");
  auto dash = parse({"--stats-json=-"});
  ASSERT_TRUE(dash.options);
  EXPECT_EQ(dash.options->stats_json, "-");
  auto with_delete = parse({"--stats-json", "-", "--delete", "Old"});
  EXPECT_FALSE(with_delete.options);
  EXPECT_EQ(with_delete.exit_code, kExitUsage);
}

TEST(Options, ImportInterimapTakesAnOptionalFileAndGoesAlone) {
  auto default_path = parse({"--import-interimap"});
  ASSERT_TRUE(default_path.options);
  EXPECT_EQ(default_path.options->import_interimap, std::optional<std::string>(""));
  auto file = parse({"--import-interimap=/tmp/old.db", "--debug"});
  ASSERT_TRUE(file.options);
  EXPECT_EQ(file.options->import_interimap, std::optional<std::string>("/tmp/old.db"));
  EXPECT_FALSE(parse({"--import-interimap", "--watch"}).options);
  EXPECT_FALSE(parse({"--import-interimap=/tmp/old.db", "INBOX"}).options);
  EXPECT_FALSE(parse({}).options->import_interimap);
}

}  // namespace
}  // namespace twinbox::cli
