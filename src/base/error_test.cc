#include "base/error.h"

#include <gtest/gtest.h>

namespace twinbox {
namespace {

TEST(Printable, EscapesControlBytesAndCutsLongInput) {
  EXPECT_EQ(printable(std::string_view("a\r\n\0b", 5)), "a\\r\\n\\x00b");
  EXPECT_EQ(printable(std::string(10, 'x'), 4), "xxxx...[6 more bytes]");
}

TEST(Error, ToStringNamesOffsetAndEvidence) {
  Error e(Errc::protocol, "unexpected ')'", "* 1 FETCH (UID ))\r\n", 16);
  EXPECT_EQ(e.to_string(),
            "protocol error: unexpected ')' (at byte 16) in: * 1 FETCH (UID ))\\r\\n");
  EXPECT_EQ(Error(Errc::timeout, "no greeting within 30 s").to_string(),
            "timed out: no greeting within 30 s");
}

TEST(Result, HoldsValueOrError) {
  Result<int> good = 5;
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 5);
  Result<int> bad = Error(Errc::io, "boom");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "boom");
}

}  // namespace
}  // namespace twinbox
