#include "sync/conflict.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace twinbox::sync {
namespace {

FlagSet with_if(bool present, const char* flag) { return present ? FlagSet{flag} : FlagSet{}; }

// Every row of the per-flag table, for a system flag and for a keyword, in both directions.
TEST(FlagTable, EveryRowIsWhatMergeFlagsDoes) {
  for (const FlagRule& r : kFlagTable) {
    for (const char* flag : {"\\Seen", "$Label1"}) {
      const FlagSet merged =
          merge_flags(with_if(r.base, flag), {with_if(r.local, flag), with_if(r.remote, flag)});
      EXPECT_EQ(merged, with_if(r.merged, flag)) << flag << ": " << r.why;
      const FlagSet mirrored =
          merge_flags(with_if(r.base, flag), {with_if(r.remote, flag), with_if(r.local, flag)});
      EXPECT_EQ(mirrored, merged) << flag << " mirrored: " << r.why;
    }
  }
}

TEST(FlagTable, MergeCases) {
  struct Row {
    const char* scenario;
    FlagSet base, local, remote, merged;
  };
  const std::vector<Row> rows = {
      {"nothing changed", {"\\Seen"}, {"\\Seen"}, {"\\Seen"}, {"\\Seen"}},
      {"add/add the same flag", {}, {"\\Seen"}, {"\\Seen"}, {"\\Seen"}},
      {"add/add different flags", {}, {"\\Seen"}, {"\\Flagged"}, {"\\Flagged", "\\Seen"}},
      {"local removes \\Seen, remote adds \\Draft: both survive (InterIMAP keeps \\Seen)",
       {"\\Flagged", "\\Seen"},
       {"\\Flagged"},
       {"\\Draft", "\\Flagged", "\\Seen"},
       {"\\Draft", "\\Flagged"}},
      {"local adds, remote removes another",
       {"\\Seen"},
       {"\\Answered", "\\Seen"},
       {},
       {"\\Answered"}},
      {"remove/remove the same flag", {"\\Seen"}, {}, {}, {}},
      {"remove on one side only", {"$Work", "\\Seen"}, {"\\Seen"}, {"$Work", "\\Seen"}, {"\\Seen"}},
      {"keyword differing only in case is no change",
       {"$Label1"},
       {"$label1"},
       {"$Label1"},
       {"$Label1"}},
      {"keyword removed on one side, respelled on the other", {"$Label1"}, {}, {"$LABEL1"}, {}},
      {"keyword added in two cases: the bytewise smallest spelling",
       {},
       {"$label"},
       {"$Label"},
       {"$Label"}},
      {"everything at once",
       {"$A", "$B", "\\Seen"},
       {"$A", "$C", "\\Seen"},
       {"$A", "$B", "$D"},
       {"$A", "$C", "$D"}},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(merge_flags(row.base, {row.local, row.remote}), row.merged) << row.scenario;
    EXPECT_EQ(merge_flags(row.base, {row.remote, row.local}), row.merged)
        << row.scenario << " (mirrored)";
  }
}

TEST(PairTable, ClassifyOneSide) {
  struct Row {
    const char* scenario;
    bool vanished;
    FlagSet base, current;
    PairState expected;
  };
  const std::vector<Row> rows = {
      {"not reported", false, {"\\Seen"}, {"\\Seen"}, PairState::unchanged},
      {"reported in another case only", false, {"$Work"}, {"$WORK"}, PairState::unchanged},
      {"flag added", false, {}, {"\\Seen"}, PairState::flags_changed},
      {"flag removed", false, {"\\Seen"}, {}, PairState::flags_changed},
      {"\\Deleted added", false, {}, {"\\Deleted"}, PairState::marked_deleted},
      {"other change while \\Deleted stays set",
       false,
       {"\\Deleted"},
       {"\\Deleted", "\\Seen"},
       PairState::marked_deleted},
      {"\\Deleted removed", false, {"\\Deleted"}, {}, PairState::flags_changed},
      {"vanished wins over flags", true, {}, {"\\Seen"}, PairState::vanished},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(classify(row.vanished, row.base, row.current), row.expected) << row.scenario;
  }
}

TEST(PairTable, CompleteOrderedAndSymmetric) {
  ASSERT_EQ(kPairTable.size(), kPairStateCount * kPairStateCount);
  for (std::size_t l = 0; l < kPairStateCount; ++l) {
    for (std::size_t r = 0; r < kPairStateCount; ++r) {
      const auto local = static_cast<PairState>(l), remote = static_cast<PairState>(r);
      const PairRule& rule = pair_rule(local, remote);
      EXPECT_EQ(rule.local, local);
      EXPECT_EQ(rule.remote, remote);
      EXPECT_EQ(pair_rule(remote, local).outcome, rule.outcome) << rule.why;
      EXPECT_EQ(pair_rule(remote, local).conflict, rule.conflict) << rule.why;
    }
  }
}

// Mail is sacred: only a server-reported expunge removes mail, and never one that was edited on
// the other side after the last sync unless the edit marked it \Deleted.
TEST(PairTable, ExpungesOnlyUnchangedOrDeletedSurvivors) {
  for (const PairRule& r : kPairTable) {
    if (r.outcome != Outcome::expunge_survivor) continue;
    const PairState survivor = r.local == PairState::vanished ? r.remote : r.local;
    EXPECT_TRUE(survivor == PairState::unchanged || survivor == PairState::marked_deleted) << r.why;
  }
  EXPECT_EQ(pair_rule(PairState::vanished, PairState::flags_changed).outcome,
            Outcome::restore_survivor);
  EXPECT_TRUE(pair_rule(PairState::vanished, PairState::flags_changed).conflict);
}

// docs/conflicts.md shows the tables the code uses, character for character.
TEST(ConflictDocs, TablesMatchTheCode) {
  const char* root = std::getenv("TWINBOX_SOURCE_DIR");
  if (root == nullptr) GTEST_SKIP() << "TWINBOX_SOURCE_DIR not set (run through ctest)";
  std::ifstream in(std::string(root) + "/docs/conflicts.md");
  ASSERT_TRUE(in) << "docs/conflicts.md missing";
  std::stringstream doc;
  doc << in.rdbuf();
  const std::string tables = conflict_tables_markdown();
  const std::string flag_table = tables.substr(0, tables.find("\n\n") + 1);
  const std::string pair_table = tables.substr(tables.find("\n\n") + 2);
  EXPECT_NE(doc.str().find(flag_table), std::string::npos) << "update docs/conflicts.md with:\n"
                                                           << flag_table;
  EXPECT_NE(doc.str().find(pair_table), std::string::npos) << "update docs/conflicts.md with:\n"
                                                           << pair_table;
}

}  // namespace
}  // namespace twinbox::sync
