#include "imap/sequence_set.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace twinbox::imap {
namespace {

SequenceSet parsed(std::string_view text) {
  auto r = SequenceSet::parse(text);
  EXPECT_TRUE(r.ok()) << text;
  return r.ok() ? *r : SequenceSet();
}

// Adding members and ranges merges overlapping and adjacent ranges, whatever the order.
TEST(SequenceSet, AddMerges) {
  struct Row {
    std::vector<std::pair<std::uint32_t, std::uint32_t>> adds;
    std::string expected;
  };
  const std::vector<Row> rows = {
      {{}, ""},
      {{{5, 5}}, "5"},
      {{{1, 3}, {4, 6}}, "1:6"},                      // adjacent after
      {{{4, 6}, {1, 3}}, "1:6"},                      // adjacent before
      {{{1, 3}, {5, 6}}, "1:3,5:6"},                  // gap of one stays a gap
      {{{10, 12}, {1, 2}, {5, 6}}, "1:2,5:6,10:12"},  // out of order
      {{{1, 10}, {3, 4}}, "1:10"},                    // contained
      {{{1, 2}, {5, 6}, {9, 10}, {2, 9}}, "1:10"},    // bridges several
      {{{12, 10}}, "10:12"},                          // reversed range (RFC 9051 §9 seq-range)
      {{{4294967295, 4294967295}, {1, 1}}, "1,4294967295"},
      {{{4294967294, 4294967295}, {4294967290, 4294967293}}, "4294967290:4294967295"},
      {{{0, 0}, {1, 1}}, "0:1"},  // 0 is representable, parse() refuses it
  };
  for (const auto& row : rows) {
    SequenceSet s;
    for (auto [a, b] : row.adds) s.add(a, b);
    EXPECT_EQ(s.to_string(), row.expected);
  }
}

TEST(SequenceSet, AddSetAndOf) {
  SequenceSet a = SequenceSet::of({1, 2, 3, 7});
  EXPECT_EQ(a.to_string(), "1:3,7");
  a.add(SequenceSet::of({4, 9}));
  EXPECT_EQ(a.to_string(), "1:4,7,9");
  EXPECT_EQ(a, parsed("9,7,4,1:3"));
}

TEST(SequenceSet, Remove) {
  struct Row {
    std::string start;
    std::uint32_t first, last;
    std::string expected;
  };
  const std::vector<Row> rows = {
      {"1:10", 4, 6, "1:3,7:10"},  // splits a range
      {"1:10", 1, 3, "4:10"},
      {"1:10", 8, 20, "1:7"},
      {"1:10", 6, 4, "1:3,7:10"},  // reversed arguments
      {"1:3,5,7:9", 2, 8, "1,9"},
      {"5", 5, 5, ""},
      {"5", 1, 4, "5"},
      {"1:4294967295", 1, 4294967294, "4294967295"},
      {"1:4294967295", 2, 4294967295, "1"},
  };
  for (const auto& row : rows) {
    SequenceSet s = parsed(row.start);
    s.remove(row.first, row.last);
    EXPECT_EQ(s.to_string(), row.expected)
        << row.start << " minus " << row.first << ":" << row.last;
  }
}

TEST(SequenceSet, ContainsSizeMinMax) {
  const SequenceSet s = parsed("3:5,10,4294967295");
  for (std::uint32_t v : {3u, 4u, 5u, 10u, 4294967295u}) EXPECT_TRUE(s.contains(v)) << v;
  for (std::uint32_t v : {0u, 1u, 2u, 6u, 9u, 11u, 4294967294u}) EXPECT_FALSE(s.contains(v)) << v;
  EXPECT_EQ(s.size(), 5u);
  EXPECT_EQ(s.min(), 3u);
  EXPECT_EQ(s.max(), 4294967295u);
  EXPECT_EQ(s.members(), (std::vector<std::uint32_t>{3, 4, 5, 10, 4294967295u}));

  const SequenceSet empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_FALSE(empty.min());
  EXPECT_FALSE(empty.max());
  EXPECT_FALSE(empty.contains(1));
}

// VANISHED (EARLIER) 1:4294967295 (RFC 7162 §3.2.10), from a server that names every possible UID,
// is one range, never expanded.
TEST(SequenceSet, EverythingIsOneRange) {
  const SequenceSet all = parsed("1:4294967295");
  EXPECT_EQ(all.ranges().size(), 1u);
  EXPECT_EQ(all.size(), 4294967295u);
  EXPECT_TRUE(all.contains(123456789));
  EXPECT_EQ(all.to_string(), "1:4294967295");
}

TEST(SequenceSet, ParseAcceptsServerForms) {
  EXPECT_EQ(parsed("12:10").to_string(), "10:12");
  EXPECT_EQ(parsed("1,2,3").to_string(), "1:3");
  EXPECT_EQ(parsed("7,1:3,5").to_string(), "1:3,5,7");
  EXPECT_EQ(parsed("3:3").to_string(), "3");
  EXPECT_EQ(parsed("4294967295").to_string(), "4294967295");
}

TEST(SequenceSet, ParseErrors) {
  struct Row {
    std::string text;
    std::size_t offset;
  };
  const std::vector<Row> rows = {
      {"", 0},     {"0", 0},   {"1,0", 2},   {"1:0", 0},
      {"*", 0},    {"1:*", 0}, {"1,", 2},    {",1", 0},
      {"1,,2", 2}, {"a", 0},   {"1:2:3", 0}, {"4294967296", 0},
      {"-1", 0},   {"1 2", 0}, {"+1", 0},    {"99999999999999999999", 0},
  };
  for (const auto& row : rows) {
    const auto r = SequenceSet::parse(row.text);
    ASSERT_FALSE(r.ok()) << "accepted: " << row.text;
    EXPECT_EQ(r.error().code, Errc::protocol);
    EXPECT_EQ(r.error().offset, row.offset) << row.text;
  }
  EXPECT_EQ(SequenceSet::parse("1,0").error().message,
            "bad sequence set item (non-zero 32-bit numbers expected)");
  EXPECT_EQ(SequenceSet::parse("").error().message, "empty sequence set");
}

// Every piece fits the limit, the pieces are ascending and disjoint, and together they are the
// original set (RFC 7162 §4: a set of 40k UIDs must not make a command line above 8 KB).
void check_split(const SequenceSet& set, std::size_t limit) {
  const auto pieces = set.split(limit);
  SequenceSet joined;
  std::uint64_t members = 0;
  std::optional<std::uint32_t> previous_max;
  for (const auto& piece : pieces) {
    ASSERT_FALSE(piece.empty());
    EXPECT_LE(piece.to_string().size(), limit);
    if (previous_max) {
      EXPECT_GT(*piece.min(), *previous_max);
    }
    previous_max = piece.max();
    members += piece.size();
    joined.add(piece);
  }
  EXPECT_EQ(joined, set);
  EXPECT_EQ(members, set.size());
}

TEST(SequenceSet, Split40000DisjointUidsAt8000Chars) {
  SequenceSet set;
  for (std::uint32_t i = 0; i < 40000; ++i) set.add(100000 + 2 * i);
  ASSERT_EQ(set.ranges().size(), 40000u);
  ASSERT_GT(set.to_string().size(), 8000u);
  check_split(set, 8000);
  const auto pieces = set.split(8000);
  EXPECT_GE(pieces.size(), set.to_string().size() / 8000);
  // Greedy packing: every piece but the last is nearly full.
  for (std::size_t i = 0; i + 1 < pieces.size(); ++i) {
    EXPECT_GT(pieces[i].to_string().size(), 8000u - 22);
  }
}

TEST(SequenceSet, SplitEdgeCases) {
  EXPECT_TRUE(SequenceSet().split(21).empty());
  const SequenceSet one = parsed("1:4294967295");
  ASSERT_EQ(one.split(21).size(), 1u);  // the longest single range is 21 characters
  EXPECT_EQ(one.split(21)[0], one);
  const SequenceSet small = parsed("1:3,5,7:9");
  ASSERT_EQ(small.split(100).size(), 1u);
  check_split(small, 21);
  SequenceSet mixed;
  for (std::uint32_t i = 1; i < 5000; ++i) mixed.add(i * 1000, i * 1000 + (i % 3));
  check_split(mixed, 21);
  check_split(mixed, 100);
  check_split(mixed, 8000);
}

}  // namespace
}  // namespace twinbox::imap
