#include "sync/model.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace twinbox::sync {
namespace {

TEST(Model, SideNames) {
  EXPECT_EQ(side_name(Side::local), "local");
  EXPECT_EQ(side_name(Side::remote), "remote");
  EXPECT_EQ(other(Side::local), Side::remote);
  EXPECT_EQ(other(Side::remote), Side::local);
  EXPECT_EQ(index(Side::remote), 1u);
}

// canonical(): sorted ignoring case, unique ignoring case, no \Recent, system flags respelled.
TEST(Model, Canonical) {
  struct Row {
    const char* scenario;
    std::vector<std::string> in;
    FlagSet expected;
  };
  const std::vector<Row> rows = {
      {"empty stays empty", {}, {}},
      {"sorted by name", {"\\Seen", "\\Answered"}, {"\\Answered", "\\Seen"}},
      {"duplicates removed", {"\\Seen", "\\Seen"}, {"\\Seen"}},
      {"\\Recent dropped", {"\\Recent", "\\Seen"}, {"\\Seen"}},
      {"\\Recent dropped in any case", {"\\RECENT", "\\recent"}, {}},
      {"empty names dropped", {"", "$Work"}, {"$Work"}},
      {"system flags respelled",
       {"\\SEEN", "\\flagged", "\\dRaFt"},
       {"\\Draft", "\\Flagged", "\\Seen"}},
      {"\\Deleted and \\Answered respelled",
       {"\\deleted", "\\ANSWERED"},
       {"\\Answered", "\\Deleted"}},
      {"system flag duplicates in two cases", {"\\Seen", "\\SEEN"}, {"\\Seen"}},
      {"keyword spelling kept", {"$MDNSent", "NonJunk"}, {"$MDNSent", "NonJunk"}},
      {"sorted ignoring case", {"b", "A", "c"}, {"A", "b", "c"}},
      {"one keyword in two cases: bytewise smallest wins", {"$label1", "$Label1"}, {"$Label1"}},
      {"same, other order", {"$Label1", "$label1"}, {"$Label1"}},
      {"unknown extension flag kept as sent", {"\\Foo", "\\Seen"}, {"\\Foo", "\\Seen"}},
      {"'$' keywords sort before '\\' flags", {"\\Seen", "$Work"}, {"$Work", "\\Seen"}},
  };
  for (const Row& row : rows) EXPECT_EQ(canonical(row.in), row.expected) << row.scenario;
}

TEST(Model, CompareFlagsIgnoresAsciiCase) {
  EXPECT_EQ(compare_flags("\\Seen", "\\SEEN"), 0);
  EXPECT_EQ(compare_flags("$Label1", "$label1"), 0);
  EXPECT_LT(compare_flags("a", "B"), 0);
  EXPECT_GT(compare_flags("b", "A"), 0);
  EXPECT_LT(compare_flags("ab", "abc"), 0);
  EXPECT_GT(compare_flags("abc", "AB"), 0);
  EXPECT_NE(compare_flags("\xc3\xa9", "\xc3\x89"), 0);  // only ASCII folds
}

TEST(Model, HasFlagAndSameFlags) {
  const FlagSet set = canonical({"\\Seen", "$Work", "\\Flagged"});
  EXPECT_TRUE(has_flag(set, "\\seen"));
  EXPECT_TRUE(has_flag(set, "$WORK"));
  EXPECT_FALSE(has_flag(set, "\\Deleted"));
  EXPECT_FALSE(has_flag({}, "\\Seen"));
  EXPECT_TRUE(same_flags(set, canonical({"$work", "\\FLAGGED", "\\SEEN"})));
  EXPECT_FALSE(same_flags(set, canonical({"$work", "\\SEEN"})));
  EXPECT_TRUE(same_flags({}, {}));
}

}  // namespace
}  // namespace twinbox::sync
