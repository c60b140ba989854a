#include "spy/spy_rules.h"

#include <gtest/gtest.h>

namespace twinbox::spy {
namespace {

Capabilities caps(const std::string& list) {
  Capabilities c;
  EXPECT_TRUE(c.learn("* PREAUTH [CAPABILITY " + list + "] Logged in"));
  return c;
}

std::vector<std::string> violations(const std::string& line, const std::string& list) {
  return Judge().check(line, caps(list));
}

TEST(SpyRules, LearnsCapabilitiesFromGreetingResponseAndCode) {
  Capabilities c;
  EXPECT_FALSE(c.learn("* OK ready"));
  EXPECT_TRUE(c.learn("* CAPABILITY IMAP4rev1 QRESYNC"));
  EXPECT_TRUE(c.has("CONDSTORE"));  // implied
  EXPECT_TRUE(c.learn("a1 OK [CAPABILITY IMAP4rev1 LITERAL+] done"));
  EXPECT_FALSE(c.has("QRESYNC"));
  EXPECT_TRUE(c.has("LITERAL-"));
}

TEST(SpyRules, FlagsEveryHiddenExtensionTwinboxCouldUse) {
  const std::string bare = "IMAP4rev1";
  EXPECT_EQ(violations("1 ENABLE QRESYNC", bare),
            (std::vector<std::string>{"ENABLE (ENABLE)", "QRESYNC (ENABLE QRESYNC)"}));
  EXPECT_FALSE(violations("2 SELECT INBOX (CONDSTORE)", bare).empty());
  EXPECT_FALSE(violations("3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)", bare).empty());
  EXPECT_FALSE(violations("4 UID FETCH 1:* (UID FLAGS MODSEQ)", bare).empty());
  EXPECT_FALSE(violations("5 UID STORE 1 (UNCHANGEDSINCE 9) FLAGS.SILENT ()", bare).empty());
  EXPECT_FALSE(violations("6 UID EXPUNGE 1:3", bare).empty());
  EXPECT_FALSE(violations("7 UID SEARCH RETURN (ALL) ALL", bare).empty());
  EXPECT_FALSE(violations("8 LIST \"\" (\"*\") RETURN (SUBSCRIBED)", bare).empty());
  EXPECT_FALSE(violations("9 LIST (SUBSCRIBED) \"\" \"*\"", bare).empty());
  EXPECT_FALSE(violations("10 STATUS INBOX (UIDNEXT HIGHESTMODSEQ)", bare).empty());
  EXPECT_FALSE(violations("11 IDLE", bare).empty());
  EXPECT_FALSE(violations("DONE", bare).empty());
  EXPECT_FALSE(violations("12 UNSELECT", bare).empty());
  EXPECT_FALSE(violations("13 APPEND INBOX {5000+}\x01", bare).empty());
  EXPECT_FALSE(violations("14 APPEND INBOX {10}\x01 (\\Seen) {12}\x01", bare).empty());
  EXPECT_FALSE(violations("15 SELECT INBOX (QRESYNC (1 2))", bare).empty());
  EXPECT_FALSE(violations("16 NOTIFY SET (selected (MessageNew))", bare).empty());
}

TEST(SpyRules, AllowsWhatIsAdvertisedAndPlainImap) {
  const std::string full =
      "IMAP4rev1 ENABLE QRESYNC UIDPLUS ESEARCH LIST-EXTENDED LIST-STATUS IDLE UNSELECT "
      "LITERAL+ MULTIAPPEND NOTIFY";
  EXPECT_TRUE(violations("1 ENABLE QRESYNC", full).empty());
  EXPECT_TRUE(
      violations("2 UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE 5 VANISHED)", full).empty());
  EXPECT_TRUE(violations("3 LIST \"\" (\"*\") RETURN (SUBSCRIBED STATUS (UIDNEXT))", full).empty());
  EXPECT_TRUE(violations("4 APPEND INBOX {10+}\x01 (\\Seen) {12+}\x01", full).empty());
  const std::string bare = "IMAP4rev1";
  EXPECT_TRUE(violations("5 LIST \"\" \"*\"", bare).empty());
  EXPECT_TRUE(violations("6 LSUB \"\" \"*\"", bare).empty());
  EXPECT_TRUE(violations("7 UID FETCH 1:* (UID FLAGS)", bare).empty());
  EXPECT_TRUE(violations("8 UID STORE 1:3 +FLAGS.SILENT (\\Deleted)", bare).empty());
  EXPECT_TRUE(violations("9 EXPUNGE", bare).empty());
  EXPECT_TRUE(violations("10 UID SEARCH DELETED", bare).empty());
  EXPECT_TRUE(
      violations("11 APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {10}\x01", bare).empty());
  // A mailbox name is not syntax, whatever it says.
  EXPECT_TRUE(violations("12 SELECT \"QRESYNC MODSEQ\"", bare).empty());
  EXPECT_TRUE(violations("13 APPEND {7}\x01 {10}\x01", bare).empty());
}

TEST(SpyRules, TrailingLiteral) {
  EXPECT_EQ(trailing_literal("a APPEND INBOX {12}"), 12u);
  EXPECT_EQ(trailing_literal("a APPEND INBOX {12+}"), 12u);
  EXPECT_EQ(trailing_literal("* 1 FETCH (BODY[] ~{3}"), 3u);
  EXPECT_FALSE(trailing_literal("a LIST \"\" {x}").has_value());
  EXPECT_FALSE(trailing_literal("a NOOP").has_value());
}

}  // namespace
}  // namespace twinbox::spy
