#include "config/mailbox_pattern.h"

#include <gtest/gtest.h>

namespace twinbox::config {
namespace {

TEST(MailboxPattern, MatchesInternalNamesWithTheDelimiterAsNul) {
  auto pattern = MailboxPattern::compile("^(?:Trash|Archive\\x00.*)$");
  ASSERT_TRUE(pattern) << pattern.error().to_string();
  EXPECT_TRUE(pattern->matches("Trash"));
  EXPECT_TRUE(
      pattern->matches(std::string("Archive\0"
                                   "2024",
                                   12)));
  EXPECT_FALSE(pattern->matches("Archive"));
  EXPECT_FALSE(pattern->matches("INBOX"));
}

TEST(MailboxPattern, UtfModeMatchesNonAsciiNames) {
  auto pattern = MailboxPattern::compile("^Entw.rfe$");
  ASSERT_TRUE(pattern);
  EXPECT_TRUE(pattern->matches("Entwürfe"));  // one '.' for the two-byte ü
}

TEST(MailboxPattern, InvalidPatternSaysWhereItStopped) {
  auto pattern = MailboxPattern::compile("^(Trash");
  ASSERT_FALSE(pattern);
  EXPECT_EQ(pattern.error().code, Errc::config);
  EXPECT_EQ(pattern.error().message, "missing closing parenthesis");
  EXPECT_EQ(pattern.error().offset, 7u);
}

}  // namespace
}  // namespace twinbox::config
