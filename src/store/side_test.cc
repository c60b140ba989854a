#include "store/side.h"

#include <gtest/gtest.h>

namespace twinbox::store {
namespace {

TEST(Side, PerSideIsAnArrayIndexedBySide) {
  PerSide<int> counts{3, 5};
  EXPECT_EQ(counts[Side::local], 3);
  EXPECT_EQ(counts[Side::remote], 5);
  counts[Side::remote] = 7;
  EXPECT_EQ(counts[1], 7);
  const std::array<int, 2>& plain = counts;
  EXPECT_EQ(plain, (std::array<int, 2>{3, 7}));
  EXPECT_EQ(counts, (PerSide<int>{3, 7}));
}

TEST(Side, OtherAndNamesAreSymmetric) {
  for (Side side : kSides) EXPECT_EQ(other(other(side)), side);
  EXPECT_EQ(other(Side::local), Side::remote);
  EXPECT_EQ(side_name(Side::local), "local");
  EXPECT_EQ(side_name(Side::remote), "remote");
  // Stored in the database: the values must never change.
  EXPECT_EQ(side_index(Side::local), 0u);
  EXPECT_EQ(side_index(Side::remote), 1u);
}

}  // namespace
}  // namespace twinbox::store
