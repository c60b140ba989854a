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

// The ignore-mailbox the README recommends for Gmail: its virtual "All Mail", "Important" and
// "Starred" views hold copies of messages that are in other mailboxes (labels).
TEST(MailboxPattern, TheDocumentedGmailPattern) {
  auto pattern =
      MailboxPattern::compile("^\\[(?:Gmail|Google Mail)\\]\\x00(?:All Mail|Important|Starred)$");
  ASSERT_TRUE(pattern) << pattern.error().to_string();
  using namespace std::string_literals;
  EXPECT_TRUE(pattern->matches("[Gmail]\0All Mail"s));
  EXPECT_TRUE(pattern->matches("[Google Mail]\0Starred"s));
  EXPECT_FALSE(pattern->matches("[Gmail]\0Sent Mail"s));
  EXPECT_FALSE(pattern->matches("[Gmail]"));
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
