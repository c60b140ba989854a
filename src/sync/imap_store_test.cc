// ImapStore against a scripted server, byte for byte: what each tier and each fallback sends, and
// the provider quirks that choose them (iCloud's ENABLE without ENABLED; servers without
// UIDPLUS, LIST-EXTENDED or CONDSTORE, like Microsoft 365 and Courier).
#include "sync/imap_store.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "fake_server/fake_server.h"
#include "net/run_coroutine.h"
#include "net/test_endpoint.h"

namespace twinbox::sync {
namespace {

using fake_server::FakeServer;
using fake_server::Script;
using namespace std::chrono_literals;

// A connection logged in with `caps`, then the rest of `script`.
Script logged_in(const std::string& caps) {
  Script script;
  script.send("* OK [CAPABILITY " + caps + "] hi\r\n")
      .expect_tagged("LOGIN")
      .send("{tag} OK [CAPABILITY " + caps + "] in\r\n");
  return script;
}

std::unique_ptr<MailStore> open_store(const FakeServer& server, Tier limit = Tier::qresync) {
  const net::Endpoint e = net::cleartext_endpoint(server.port());
  ImapConnector connector({e, e}, {"", ""}, {limit, limit});
  auto store = net::run_coroutine(connector.open(Side::remote, nullptr));
  EXPECT_TRUE(store.ok()) << store.error().to_string();
  return store ? std::move(*store) : nullptr;
}

// Closes the store, then whether the server ran its whole script.
testing::AssertionResult script_completed(MailStore& store, FakeServer& server) {
  store.close();
  server.wait();
  if (server.result().completed) return testing::AssertionSuccess();
  return testing::AssertionFailure() << server.describe();
}

store::SideState recorded(std::uint32_t uidvalidity, std::uint32_t uidnext, ModSeq modseq) {
  store::SideState s;
  s.uidvalidity = uidvalidity;
  s.uidnext = uidnext;
  s.highestmodseq = modseq;
  return s;
}

const char* const kSelected =
    "* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 6] x\r\n"
    "* OK [HIGHESTMODSEQ 12] x\r\n{tag} OK [READ-WRITE] selected\r\n";

// iCloud advertises QRESYNC but answers ENABLE without "* ENABLED" (MailKit#1871): QRESYNC may
// not be used (RFC 7162 §3.2.3). CONDSTORE needs no ENABLE: the SELECT asks for it, flag changes
// come from CHANGEDSINCE without VANISHED, and expunges are left to the engine's count check.
TEST(ImapStoreTiers, EnableWithoutEnabledFallsBackToCondstore) {
  Script script = logged_in("IMAP4rev1 ENABLE QRESYNC CONDSTORE UIDPLUS");
  script.expect_tagged_line("ENABLE QRESYNC")
      .send("{tag} OK done\r\n")
      .expect_tagged_line("SELECT INBOX (CONDSTORE)")
      .send(kSelected)
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS MODSEQ) (CHANGEDSINCE 10)", "a")
      .expect_tagged_line("UID FETCH 5:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)", "b")
      .send(
          "* 1 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (11))\r\n{tag:a} OK done\r\n"
          "* 3 FETCH (UID 5 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
          "RFC822.SIZE 42)\r\n{tag:b} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), 0));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string();
  EXPECT_EQ(store->tier(), Tier::condstore);
  EXPECT_FALSE(seen->expunges_reported);
  EXPECT_TRUE(seen->vanished_set.empty());
  EXPECT_EQ(seen->changes.flags.at(2), FlagSet{"\\Seen"});
  EXPECT_EQ(seen->changes.modseq.at(2), 11u);
  ASSERT_EQ(seen->changes.added.size(), 1u);
  EXPECT_EQ(seen->changes.added[0].uid, 5u);
  EXPECT_EQ(seen->highestmodseq, 12u);
  EXPECT_TRUE(script_completed(*store, server));
}

// A new tree costs a round trip per depth, whatever its width: the CREATEs of one depth go out
// together (never with one below them), the subscriptions all at once; a refused name is that
// name's failure, not the others'.
TEST(ImapStoreTiers, NewMailboxesAreCreatedADepthAtATimeAndSubscribedTogether) {
  Script script = logged_in("IMAP4rev1 LITERAL+");
  script.expect_tagged_line("CREATE A", "a")
      .expect_tagged_line("CREATE B", "b")
      .send("{tag:a} OK made\r\n{tag:b} NO [CANNOT] not here\r\n")
      .expect_tagged_line("LIST \"\" \"\"")  // the delimiter, once a name needs it
      .send("* LIST (\\Noselect) \"/\" \"\"\r\n{tag} OK done\r\n")
      .expect_tagged_line("CREATE A/x", "ax")
      .expect_tagged_line("CREATE A/y", "ay")
      .send("{tag:ax} NO [ALREADYEXISTS] exists\r\n{tag:ay} OK made\r\n")
      .expect_tagged_line("SUBSCRIBE A", "sa")
      .expect_tagged_line("UNSUBSCRIBE A/x", "sx")
      .send("{tag:sa} OK\r\n{tag:sx} OK\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server, Tier::plain);
  ASSERT_TRUE(store);
  const std::string nul(1, '\0');
  const std::vector<std::string> names = {"A", "A" + nul + "x", "A" + nul + "y", "B"};
  auto created = net::run_coroutine(store->create_all(names));
  ASSERT_TRUE(created.ok()) << created.error().to_string() << server.describe();
  ASSERT_EQ(created->size(), 4u);
  EXPECT_TRUE((*created)[0].ok());
  EXPECT_TRUE((*created)[1].ok());  // ALREADYEXISTS: someone made it
  EXPECT_TRUE((*created)[2].ok());
  ASSERT_FALSE((*created)[3].ok());
  EXPECT_EQ((*created)[3].error().code, Errc::rejected);
  EXPECT_NE((*created)[3].error().message.find("not here"), std::string::npos);
  const std::vector<std::pair<std::string, bool>> subscriptions = {{"A", true},
                                                                   {"A" + nul + "x", false}};
  EXPECT_TRUE(net::run_coroutine(store->subscribe_all(subscriptions)).ok());
  EXPECT_TRUE(script_completed(*store, server));
}

// LIST of "*" with these selection options; a listing of exactly one mailbox, or an error.
Result<std::vector<ListedMailbox>> list_everything(MailStore& store,
                                                   std::vector<std::string> select_opts) {
  const std::vector<std::string> everything = {"*"};
  auto listed = net::run_coroutine(store.list(everything, select_opts));
  if (listed && listed->size() != 1) {
    return Error(Errc::internal, fmt::format("{} mailboxes listed", listed->size()));
  }
  return listed;
}

// ENABLE waits for nothing: it goes out with the first LIST, and both answers come in one round
// trip (the script answers neither before it has read both lines).
TEST(ImapStoreTiers, EnableGoesOutWithTheFirstList) {
  Script script = logged_in("IMAP4rev1 ENABLE QRESYNC CONDSTORE UIDPLUS LIST-EXTENDED LIST-STATUS");
  script.expect_tagged_line("ENABLE QRESYNC", "e")
      .expect_tagged_line(
          "LIST (SUBSCRIBED) \"\" * RETURN (SUBSCRIBED STATUS (UIDVALIDITY UIDNEXT "
          "HIGHESTMODSEQ))",
          "l")
      .send(
          "* ENABLED QRESYNC\r\n{tag:e} OK enabled\r\n"
          "* LIST (\\Subscribed) \"/\" INBOX\r\n"
          "* STATUS INBOX (UIDVALIDITY 7 UIDNEXT 3 HIGHESTMODSEQ 9)\r\n{tag:l} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto listed = list_everything(*store, {"SUBSCRIBED"});
  ASSERT_TRUE(listed.ok()) << listed.error().to_string() << "\n" << server.describe();
  EXPECT_EQ(store->tier(), Tier::qresync);
  EXPECT_EQ(listed->at(0).highestmodseq, 9u);
  EXPECT_TRUE(script_completed(*store, server));
}

// The same ENABLE unconfirmed (iCloud): the LIST that went out with it asked for the QRESYNC
// tier's STATUS items, so it is asked again with CONDSTORE's (MESSAGES, for the count check).
TEST(ImapStoreTiers, UnconfirmedEnableListsAgainForCondstore) {
  Script script = logged_in("IMAP4rev1 ENABLE QRESYNC CONDSTORE UIDPLUS LIST-EXTENDED LIST-STATUS");
  script.expect_tagged_line("ENABLE QRESYNC", "e")
      .expect_tagged_line(
          "LIST \"\" * RETURN (SUBSCRIBED STATUS (UIDVALIDITY UIDNEXT "
          "HIGHESTMODSEQ))",
          "l")
      .send(
          "{tag:e} OK done\r\n* LIST () \"/\" INBOX\r\n"
          "* STATUS INBOX (UIDVALIDITY 7 UIDNEXT 3 HIGHESTMODSEQ 9)\r\n{tag:l} OK done\r\n")
      .expect_tagged_line(
          "LIST \"\" * RETURN (SUBSCRIBED STATUS (MESSAGES UIDVALIDITY "
          "UIDNEXT HIGHESTMODSEQ))")
      .send(
          "* LIST () \"/\" INBOX\r\n"
          "* STATUS INBOX (MESSAGES 2 UIDVALIDITY 7 UIDNEXT 3 HIGHESTMODSEQ 9)\r\n"
          "{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto listed = list_everything(*store, {});
  ASSERT_TRUE(listed.ok()) << listed.error().to_string() << "\n" << server.describe();
  EXPECT_EQ(store->tier(), Tier::condstore);
  EXPECT_EQ(listed->at(0).messages, 2u);
  EXPECT_TRUE(script_completed(*store, server));
}

// Plain IMAP: every message's flags below the recorded UIDNEXT, pipelined with the new ones; a
// UID missing from the listing was expunged; no MODSEQ anywhere. A flag change is sent as the
// difference from what was listed (+FLAGS / -FLAGS), never as a replacement.
TEST(ImapStoreTiers, PlainListsEveryFlagAndStoresDifferences) {
  Script script = logged_in("IMAP4rev1 UIDPLUS");
  script.expect_tagged_line("SELECT INBOX")
      .send("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 6] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("UID FETCH 1:4 (UID FLAGS)", "a")
      .expect_tagged_line("UID FETCH 5:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)", "b")
      .send(
          "* 1 FETCH (UID 1 FLAGS (\\Seen $Work))\r\n* 2 FETCH (UID 3 FLAGS ())\r\n"
          "{tag:a} OK done\r\n"
          "* 3 FETCH (UID 5 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
          "RFC822.SIZE 42)\r\n{tag:b} OK done\r\n")
      .expect_tagged_line("UID STORE 1 +FLAGS.SILENT (\\Flagged)", "c")
      .expect_tagged_line("UID STORE 1 -FLAGS.SILENT ($Work)", "d")
      .send("{tag:c} OK done\r\n{tag:d} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->tier(), Tier::plain);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 0), 0));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string();
  EXPECT_TRUE(seen->expunges_reported);
  UidSet gone;
  gone.add(2);
  gone.add(4);
  EXPECT_EQ(seen->vanished_set, gone);
  EXPECT_EQ(seen->changes.flags.size(), 2u);
  EXPECT_TRUE(seen->changes.modseq.empty());
  EXPECT_EQ(seen->highestmodseq, 0u);
  const std::vector<FlagUpdate> updates = {
      {1, {"\\Flagged", "\\Seen"}, 0, {"\\Flagged"}, {"$Work"}}};
  auto modified = net::run_coroutine(store->set_flags(updates));
  ASSERT_TRUE(modified.ok()) << modified.error().to_string();
  EXPECT_TRUE(modified->empty());
  EXPECT_TRUE(script_completed(*store, server));
}

// The config's change-detection caps the tier: a QRESYNC server read as plain sends no ENABLE.
TEST(ImapStoreTiers, ChangeDetectionCapsTheTier) {
  Script script = logged_in("IMAP4rev1 ENABLE QRESYNC CONDSTORE UIDPLUS");
  script.expect_tagged_line("LOGOUT").send("* BYE\r\n{tag} OK bye\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server, Tier::plain);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->tier(), Tier::plain);
  net::run_coroutine(store->logout());
  server.wait();
  EXPECT_TRUE(server.result().completed) << server.describe();
}

// Without UIDPLUS (Courier, many small servers) there is no APPENDUID: the highest UID is noted
// in the same flight as the APPEND, and the new messages above it are read back and matched by
// size. When another delivery makes that ambiguous, it fails (the pending intent lets the next
// run pair the copies by content) instead of guessing.
TEST(ImapStoreFallbacks, AppendWithoutUidplusReadsTheUidsBack) {
  Script script = logged_in("IMAP4rev1");
  script.expect_tagged_line("SELECT INBOX")
      .send("* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 5] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("UID FETCH 1:4 (UID FLAGS)")
      .send("* 1 FETCH (UID 4 FLAGS ())\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID FETCH * (UID)", "high")
      .expect_tagged("APPEND", "one")
      .send("+ go\r\n")
      .expect("hello\r\n")
      .send("* 1 FETCH (UID 4)\r\n{tag:high} OK done\r\n* 2 EXISTS\r\n{tag:one} OK appended\r\n")
      .expect_tagged_line("UID FETCH 5:4294967295 (UID RFC822.SIZE)")
      .send("* 2 FETCH (UID 9 RFC822.SIZE 5)\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID FETCH * (UID)", "high")
      .expect_tagged("APPEND", "one")
      .send("+ go\r\n")
      .expect("hello\r\n")
      .send("* 2 FETCH (UID 9)\r\n{tag:high} OK done\r\n* 4 EXISTS\r\n{tag:one} OK appended\r\n")
      .expect_tagged_line("UID FETCH 10:4294967295 (UID RFC822.SIZE)")
      .send(
          "* 3 FETCH (UID 10 RFC822.SIZE 5)\r\n* 4 FETCH (UID 11 RFC822.SIZE 5)\r\n"
          "{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 0), 0));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string();
  const auto one = [] {
    std::vector<OutgoingMessage> m(1);
    m[0].content = "hello";
    return m;
  };
  auto appended = net::run_coroutine(store->append("INBOX", one()));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->uids, std::vector<Uid>{9});
  EXPECT_EQ(appended->uidvalidity, 7u);
  // Someone else delivered a message of the same size meanwhile: which one is ours is unknown.
  auto ambiguous = net::run_coroutine(store->append("INBOX", one()));
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.error().message.find("2 new message(s)"), std::string::npos)
      << ambiguous.error().message;
  EXPECT_TRUE(script_completed(*store, server));
}

// Without UIDPLUS there is no UID EXPUNGE, and EXPUNGE removes every \Deleted message: it is
// sent only when no one else's message is marked; otherwise our marks are taken back.
TEST(ImapStoreFallbacks, ExpungeWithoutUidplusNeverTakesOtherMessages) {
  Script script = logged_in("IMAP4rev1");
  script.expect_tagged_line("SELECT INBOX")
      .send("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 4] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("UID FETCH 1:3 (UID FLAGS)")
      .send(
          "* 1 FETCH (UID 1 FLAGS ())\r\n* 2 FETCH (UID 2 FLAGS ())\r\n"
          "* 3 FETCH (UID 3 FLAGS (\\Deleted))\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID STORE 1 +FLAGS.SILENT (\\Deleted)", "s")
      .expect_tagged_line("UID SEARCH DELETED", "q")
      .send("{tag:s} OK done\r\n* SEARCH 1 3\r\n{tag:q} OK done\r\n")
      .expect_tagged_line("UID STORE 1 -FLAGS.SILENT (\\Deleted)")
      .send("{tag} OK done\r\n")
      .expect_tagged_line("UID STORE 2 +FLAGS.SILENT (\\Deleted)", "s")
      .expect_tagged_line("UID SEARCH DELETED", "q")
      .send("{tag:s} OK done\r\n* SEARCH 2\r\n{tag:q} OK done\r\n")
      .expect_tagged_line("EXPUNGE")
      .send("* 2 EXPUNGE\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  ASSERT_TRUE(net::run_coroutine(store->observe("INBOX", recorded(7, 4, 0), 0)).ok());
  Status refused = net::run_coroutine(store->expunge({1}));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("marked \\Deleted"), std::string::npos)
      << refused.error().message;
  Status done = net::run_coroutine(store->expunge({2}));
  EXPECT_TRUE(done.ok()) << done.error().to_string();
  EXPECT_TRUE(script_completed(*store, server));
}

// Without LIST-EXTENDED: LIST and LSUB per pattern, pipelined, subscriptions from LSUB; without
// LIST-STATUS on a CONDSTORE server: one STATUS per mailbox, pipelined, with MESSAGES (a
// CONDSTORE server need not raise HIGHESTMODSEQ on an expunge).
TEST(ImapStoreFallbacks, ListWithoutListExtendedUsesLsubAndStatus) {
  Script script = logged_in("IMAP4rev1 CONDSTORE");
  script.expect_tagged_line("LIST \"\" *", "l")
      .expect_tagged_line("LSUB \"\" *", "s")
      .send(
          "* LIST () \"/\" INBOX\r\n* LIST () \"/\" Work\r\n* LIST (\\Noselect) \"/\" Old\r\n"
          "{tag:l} OK done\r\n* LSUB () \"/\" Work\r\n{tag:s} OK done\r\n")
      .expect_tagged_line("STATUS INBOX (MESSAGES UIDVALIDITY UIDNEXT HIGHESTMODSEQ)", "a")
      .expect_tagged_line("STATUS Work (MESSAGES UIDVALIDITY UIDNEXT HIGHESTMODSEQ)", "b")
      .send(
          "* STATUS INBOX (MESSAGES 2 UIDVALIDITY 7 UIDNEXT 3 HIGHESTMODSEQ 9) \r\n"
          "{tag:a} OK done\r\n"
          "* STATUS Work (MESSAGES 0 UIDVALIDITY 8 UIDNEXT 1 HIGHESTMODSEQ 1)\r\n"
          "{tag:b} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->tier(), Tier::condstore);
  const std::vector<std::string> everything = {"*"}, none = {};
  auto listed = net::run_coroutine(store->list(everything, none));
  ASSERT_TRUE(listed.ok()) << listed.error().to_string();
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_FALSE((*listed)[0].subscribed);
  EXPECT_EQ((*listed)[0].messages, 2u);
  EXPECT_EQ((*listed)[0].highestmodseq, 9u);
  EXPECT_TRUE((*listed)[1].subscribed);
  EXPECT_EQ((*listed)[1].uidvalidity, 8u);
  EXPECT_FALSE((*listed)[2].selectable);
  EXPECT_TRUE(script_completed(*store, server));
}

// A plain listing decides expunges by absence: one that leaves a message out (a lying or broken
// server) would have it deleted on the other side. It must count EXISTS messages (after one
// more look for mail delivered meanwhile), else the mailbox fails with the numbers and nothing
// is taken as expunged.
TEST(ImapStoreQuirks, PlainListingThatDoesNotAddUpIsAnError) {
  Script script = logged_in("IMAP4rev1 UIDPLUS");
  script.expect_tagged_line("SELECT INBOX")
      .send("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 6] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("UID FETCH 1:5 (UID FLAGS)")
      .send("* 1 FETCH (UID 1 FLAGS ())\r\n* 3 FETCH (UID 5 FLAGS ())\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID FETCH 6:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)")
      .send(
          "* 3 FETCH (UID 5 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" RFC822.SIZE 9)"
          "\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 6, 0), 0));
  ASSERT_FALSE(seen.ok());
  EXPECT_EQ(seen.error().code, Errc::protocol);
  EXPECT_NE(seen.error().message.find(
                "announced 3 message(s) (EXISTS) but its listing (UID FETCH or UID SEARCH) has 2"),
            std::string::npos)
      << seen.error().message;
  EXPECT_TRUE(script_completed(*store, server));
}

// What a LIST shows of a mailbox with more new mail than ImapStore holds the bodies of.
constexpr std::uint32_t kManyNew = 5 + ImapStore::kHeldMessages + 1;

// Mail delivered while the listing ran: EXISTS counts it and the listing does not. One more
// look above what was listed finds it, and the listing adds up.
TEST(ImapStoreQuirks, PlainListingLooksOnceMoreForMailDeliveredMeanwhile) {
  Script script = logged_in("IMAP4rev1 UIDPLUS");
  script.expect_tagged_line("SELECT INBOX")
      .send("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 6] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("UID FETCH 1:5 (UID FLAGS)")
      .send(
          "* 1 FETCH (UID 1 FLAGS ())\r\n* 2 FETCH (UID 3 FLAGS ())\r\n* 3 FETCH (UID 5 FLAGS ())"
          "\r\n* 4 EXISTS\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID FETCH 6:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)")
      .send(
          "* 4 FETCH (UID 6 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" RFC822.SIZE 9)"
          "\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 6, 0), 0));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string() << "\n" << server.describe();
  ASSERT_EQ(seen->changes.added.size(), 1u);
  EXPECT_EQ(seen->changes.added[0].uid, 6u);
  EXPECT_TRUE(seen->vanished_set.contains(2));
  EXPECT_TRUE(seen->vanished_set.contains(4));
  EXPECT_FALSE(seen->vanished_set.contains(3));
  EXPECT_TRUE(script_completed(*store, server));
}

// A SELECT of INBOX with the FETCH of new mail from UID 5 behind it, and the script answers
// neither before it has read both lines (one round trip): UIDVALIDITY `uidvalidity`, and one
// message, UID `uid`, in the FETCH's answer.
Script select_with_new_mail(std::uint32_t uidvalidity, Uid uid) {
  Script script = logged_in("IMAP4rev1 CONDSTORE UIDPLUS");
  script.expect_tagged_line("SELECT INBOX (CONDSTORE)", "s")
      .expect_tagged_line("UID FETCH 5:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)", "n")
      .send(fmt::format(
          "* 3 EXISTS\r\n* OK [UIDVALIDITY {}] x\r\n* OK [UIDNEXT {}] x\r\n"
          "* OK [HIGHESTMODSEQ 12] x\r\n{{tag:s}} OK [READ-WRITE] selected\r\n"
          "* 3 FETCH (UID {} FLAGS (\\Seen) INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
          "RFC822.SIZE 42)\r\n{{tag:n}} OK done\r\n",
          uidvalidity, uid + 1, uid));
  return script;
}

// The LIST showed new mail: its summaries are asked with the SELECT.
TEST(ImapStoreTiers, NewMailIsAskedForWithTheSelect) {
  Script script = select_with_new_mail(7, 5);
  script.expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS MODSEQ) (CHANGEDSINCE 10)")
      .send("{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), kManyNew));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string() << "\n" << server.describe();
  ASSERT_EQ(seen->changes.added.size(), 1u);
  EXPECT_EQ(seen->changes.added[0].uid, 5u);
  EXPECT_EQ(seen->changes.added[0].flags, FlagSet{"\\Seen"});
  EXPECT_TRUE(script_completed(*store, server));
}

// A new UIDVALIDITY voids what was asked with the SELECT: its answer is read and dropped (the
// next command finds nothing of it), and no message of the new UIDVALIDITY is taken as new.
TEST(ImapStoreTiers, NewMailAskedForWithTheSelectIsDroppedOnANewUidvalidity) {
  Script script = select_with_new_mail(8, 3);
  script.expect_tagged_line("UID SEARCH ALL").send("* SEARCH 1 2 3\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), kManyNew));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string() << "\n" << server.describe();
  EXPECT_TRUE(seen->uidvalidity_changed);
  EXPECT_TRUE(seen->changes.added.empty());
  auto uids = net::run_coroutine(store->uids());
  ASSERT_TRUE(uids.ok()) << uids.error().to_string();
  EXPECT_TRUE(uids->contains(3));
  EXPECT_TRUE(script_completed(*store, server));
}

// A SELECT of INBOX after a LIST that showed UIDNEXT 7, with the FETCH of the two announced new
// messages (UIDs 5 and 6) and their bodies' first 64 KiB behind it, answered with
// `fetched_5_and_6` (FETCH lines); and the FETCH of the summaries of any later ones, answered
// with UID 7 (delivered since the LIST) and a body nobody asked for. Then the CHANGEDSINCE
// listing of flags, answered with nothing.
Script select_with_new_bodies_answered(const std::string& fetched_5_and_6) {
  Script script = logged_in("IMAP4rev1 CONDSTORE UIDPLUS");
  const std::string items =
      "UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]<0." + std::to_string(ImapStore::kHeldOctets);
  script.expect_tagged_line("SELECT INBOX (CONDSTORE)", "s")
      .expect_tagged_line("UID FETCH 5:6 (" + items + ">)", "n")
      .expect_tagged_line("UID FETCH 7:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)", "later")
      .send(
          "* 5 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 8] x\r\n"
          "* OK [HIGHESTMODSEQ 12] x\r\n{tag:s} OK [READ-WRITE] selected\r\n")
      .send(fetched_5_and_6)
      .send("{tag:n} OK done\r\n")
      .send(
          "* 5 FETCH (UID 7 FLAGS () INTERNALDATE \"03-Jan-2024 10:00:00 +0000\" RFC822.SIZE 3 "
          "BODY[]<0> {3}\r\nlie)\r\n{tag:later} OK done\r\n")
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS MODSEQ) (CHANGEDSINCE 10)")
      .send("{tag} OK done\r\n");
  return script;
}

// The same, UIDs 5 and 6 answered with `body5` and `body6` as BODY[]<0> (UID 6's RFC822.SIZE
// says 3 octets more than its piece).
Script select_with_new_bodies(const std::string& body5, const std::string& body6) {
  return select_with_new_bodies_answered(
      fmt::format("* 3 FETCH (UID 5 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
                  "RFC822.SIZE {} BODY[]<0> {{{}}}\r\n{})\r\n",
                  body5.size(), body5.size(), body5) +
      fmt::format("* 4 FETCH (UID 6 FLAGS () INTERNALDATE \"02-Jan-2024 10:00:00 +0000\" "
                  "RFC822.SIZE {} BODY[]<0> {{{}}}\r\n{})\r\n",
                  body6.size() + 3, body6.size(), body6));
}

// A few new messages: their bodies come with the SELECT, and are handed out without asking.
TEST(ImapStoreTiers, FewNewMessagesBringTheirBodiesWithTheSelect) {
  FakeServer server(select_with_new_bodies("Subject: a\r\n\r\nA\r\n", "Subject: b\r\n\r\nB\r\n"));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), 7));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string() << "\n" << server.describe();
  ASSERT_EQ(seen->changes.added.size(), 3u);
  EXPECT_TRUE(store->holds_bodies({5, 6}));
  EXPECT_FALSE(store->holds_bodies({7}));  // not asked for: a FETCH will read it
  // Nothing is sent: the script has no answer left, and an unanswered FETCH would time out.
  auto bodies = net::run_coroutine(store->fetch_bodies({6, 5}));
  ASSERT_TRUE(bodies.ok()) << bodies.error().to_string();
  ASSERT_EQ(bodies->size(), 2u);
  EXPECT_EQ((*bodies)[0].uid, 6u);
  EXPECT_EQ((*bodies)[0].body, "Subject: b\r\n\r\nB\r\n");
  EXPECT_EQ((*bodies)[0].internal_date, "02-Jan-2024 10:00:00 +0000");
  EXPECT_EQ((*bodies)[1].body, "Subject: a\r\n\r\nA\r\n");
  // Handed out once: held no more.
  EXPECT_FALSE(store->holds_bodies({5}));
  EXPECT_TRUE(script_completed(*store, server));
}

// A body as long as the piece asked for may go on: only the rest is asked for, from where the
// piece stops, and the two make the body.
TEST(ImapStoreTiers, ABodyLongerThanWhatCameWithTheSelectIsCompletedFromWhereItStops) {
  const std::string head(ImapStore::kHeldOctets, 'x');
  Script script = select_with_new_bodies(head, "short");
  script
      .expect_tagged_line(fmt::format("UID FETCH 5 (UID BODY.PEEK[]<{}.{}>)", head.size(),
                                      4294967295u - head.size()))
      .send(fmt::format("* 3 FETCH (UID 5 BODY[]<{}> {{4}}\r\ntail)\r\n{{tag}} OK done\r\n",
                        head.size()));
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), 7));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string() << "\n" << server.describe();
  EXPECT_FALSE(store->holds_bodies({5, 6}));
  EXPECT_TRUE(store->holds_bodies({6}));
  auto bodies = net::run_coroutine(store->fetch_bodies({5, 6}));
  ASSERT_TRUE(bodies.ok()) << bodies.error().to_string() << "\n" << server.describe();
  ASSERT_EQ(bodies->size(), 2u);
  EXPECT_EQ((*bodies)[0].body, head + "tail");
  EXPECT_EQ((*bodies)[0].internal_date, "01-Jan-2024 10:00:00 +0000");
  EXPECT_EQ((*bodies)[1].body, "short");
  EXPECT_TRUE(script_completed(*store, server));
}

// INBOX selected (UIDNEXT 6, HIGHESTMODSEQ 12), then an APPEND of "hello" with the settle's two
// UID FETCHes behind it: the script answers nothing before it has read all three.
Script append_with_settle_behind() {
  Script script = logged_in("IMAP4rev1 CONDSTORE UIDPLUS");
  script.expect_tagged_line("SELECT INBOX (CONDSTORE)")
      .send(kSelected)
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS MODSEQ) (CHANGEDSINCE 10)")
      .send("{tag} OK done\r\n")
      .expect_tagged("APPEND", "append")
      .send("+ go\r\n")
      .expect("hello\r\n")
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS) (CHANGEDSINCE 12)", "changed")
      .expect_tagged_line("UID FETCH 6:4294967295 (UID RFC822.SIZE FLAGS INTERNALDATE MODSEQ)",
                          "above");
  return script;
}

std::vector<OutgoingMessage> hello() {
  std::vector<OutgoingMessage> m(1);
  m[0].content = "hello";
  return m;
}

// What append_and_settle() of hello() gave after INBOX was selected (append_with_settle_behind):
// the UIDs handed to its callback, and its answer.
struct AppendedThenSettled {
  std::vector<Uid> recorded;
  Result<std::optional<Settled>> settled;
};

AppendedThenSettled select_then_append_and_settle(MailStore& store) {
  auto seen = net::run_coroutine(store.observe("INBOX", recorded(7, 6, 10), 0));
  EXPECT_TRUE(seen.ok()) << seen.error().to_string();
  std::vector<Uid> uids;
  const std::function<Status(const Appended&)> record = [&](const Appended& done) {
    uids = done.uids;
    return ok_status();
  };
  auto settled = net::run_coroutine(store.append_and_settle("INBOX", hello(), 12, 6, record));
  return {std::move(uids), std::move(settled)};
}

// The settle goes out with the APPEND (one round trip); its answers count wherever the session
// files them (here the first arrives before the APPEND's OK, so it is filed under the APPEND).
TEST(ImapStoreTiers, SettleGoesOutWithTheAppend) {
  Script script = append_with_settle_behind();
  script.send(
      "* 4 EXISTS\r\n* 4 FETCH (UID 6 FLAGS (\\Seen) MODSEQ (13))\r\n"
      "{tag:append} OK [APPENDUID 7 6] appended\r\n"
      "* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (14))\r\n{tag:changed} OK done\r\n"
      "* 4 FETCH (UID 6 RFC822.SIZE 5 FLAGS (\\Seen) INTERNALDATE \"01-Jan-2024 10:00:00 "
      "+0000\" MODSEQ (13))\r\n{tag:above} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto [recorded_uids, settled] = select_then_append_and_settle(*store);
  ASSERT_TRUE(settled.ok()) << settled.error().to_string() << "\n" << server.describe();
  EXPECT_EQ(recorded_uids, std::vector<Uid>{6});
  ASSERT_TRUE(settled->has_value());
  const Settled& after = **settled;
  EXPECT_EQ(after.flags.at(3), FlagSet{"\\Flagged"});  // someone else's change
  EXPECT_EQ(after.flags.at(6), FlagSet{"\\Seen"});
  ASSERT_EQ(after.above.size(), 1u);
  EXPECT_EQ(after.above[0].uid, 6u);
  EXPECT_EQ(after.highestmodseq, 14u);
  EXPECT_EQ(after.exists, 4u);
  EXPECT_TRUE(script_completed(*store, server));
}

// The connection drops after the APPEND's answer, before the settle's: the UIDs it gave are
// handed over all the same (to be recorded), and the settle is left empty.
TEST(ImapStoreTiers, AnAppendAnsweredBeforeTheConnectionDropsIsStillRecorded) {
  Script script = append_with_settle_behind();
  script.send("* 4 EXISTS\r\n{tag:append} OK [APPENDUID 7 6] appended\r\n").drop();
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto [recorded_uids, settled] = select_then_append_and_settle(*store);
  ASSERT_TRUE(settled.ok()) << settled.error().to_string() << "\n" << server.describe();
  EXPECT_EQ(recorded_uids, std::vector<Uid>{6});
  EXPECT_FALSE(settled->has_value());
  store->close();
  server.wait();
}

// append_and_settle() whose APPEND gets `answers` (and the settle's): the error it gives, with
// nothing handed over to be recorded, and every answer read (the script completes).
void expect_append_and_settle_fails(const std::string& answers, Errc code,
                                    std::string_view evidence) {
  Script script = append_with_settle_behind();
  script.send(answers);
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto [recorded_uids, settled] = select_then_append_and_settle(*store);
  ASSERT_FALSE(settled.ok());
  EXPECT_EQ(settled.error().code, code);
  EXPECT_NE(settled.error().message.find(evidence), std::string::npos) << settled.error().message;
  EXPECT_TRUE(recorded_uids.empty());
  EXPECT_TRUE(script_completed(*store, server));
}

// An APPEND refused with the settle behind it: an error with the server's words, nothing handed
// over to be recorded, and the settle's answers read (none is left to be taken for another's).
TEST(ImapStoreTiers, ARefusedAppendWithTheSettleBehindItIsAnErrorAndRecordsNothing) {
  expect_append_and_settle_fails(
      "{tag:append} NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n"
      "{tag:changed} OK done\r\n{tag:above} OK done\r\n",
      Errc::rejected, "Quota exceeded");
}

// An APPEND answered OK without APPENDUID on a server that announced UIDPLUS: which UIDs it made
// is unknown, so nothing is recorded and the error says why (the next run pairs the copy by
// content from the intent recorded before the APPEND).
TEST(ImapStoreTiers, AnAppendWithoutAppenduidBeforeTheSettleIsAProtocolError) {
  expect_append_and_settle_fails(
      "{tag:append} OK appended\r\n{tag:changed} OK done\r\n"
      "* 4 FETCH (UID 6 RFC822.SIZE 5 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
      "MODSEQ (13))\r\n{tag:above} OK done\r\n",
      Errc::protocol, "APPENDUID");
}

// Bodies that come with the SELECT are held only as asked: from octet 0 and no longer than
// kHeldOctets. A piece from elsewhere, or a longer one, is not taken for the message's start.
TEST(ImapStoreTiers, APieceNotFromTheStartOrLongerThanAskedIsNotHeld) {
  const std::string too_long(ImapStore::kHeldOctets + 1, 'x');
  Script script = select_with_new_bodies_answered(
      "* 3 FETCH (UID 5 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
      "RFC822.SIZE 9 BODY[]<4> {5}\r\nlater)\r\n" +
      fmt::format("* 4 FETCH (UID 6 FLAGS () INTERNALDATE \"02-Jan-2024 10:00:00 +0000\" "
                  "RFC822.SIZE {} BODY[]<0> {{{}}}\r\n{})\r\n",
                  too_long.size(), too_long.size(), too_long));
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), 7));
  ASSERT_TRUE(seen.ok()) << seen.error().to_string() << "\n" << server.describe();
  EXPECT_EQ(seen->changes.added.size(), 3u);
  EXPECT_FALSE(store->holds_bodies({5}));
  EXPECT_FALSE(store->holds_bodies({6}));
  EXPECT_TRUE(script_completed(*store, server));
}

// A SELECT refused while the FETCH of new mail went out behind it: the error names the SELECT
// and the server's text, the FETCH's refusal is not taken for an answer, and the connection
// stays usable for the next command.
TEST(ImapStoreTiers, RefusedSelectWithNewMailBehindItIsAnErrorAndNothingElse) {
  Script script = logged_in("IMAP4rev1 CONDSTORE UIDPLUS");
  script.expect_tagged_line("SELECT INBOX (CONDSTORE)", "s")
      .expect_tagged_line("UID FETCH 5:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)", "n")
      .send(
          "{tag:s} NO [NONEXISTENT] Mailbox doesn't exist: INBOX\r\n"
          "{tag:n} BAD No mailbox selected\r\n")
      .expect_tagged_line("UID SEARCH ALL")
      .send("* SEARCH\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto seen = net::run_coroutine(store->observe("INBOX", recorded(7, 5, 10), kManyNew));
  ASSERT_FALSE(seen.ok());
  EXPECT_EQ(seen.error().code, Errc::rejected);
  EXPECT_NE(seen.error().message.find("SELECT INBOX"), std::string::npos) << seen.error().message;
  EXPECT_NE(seen.error().message.find("doesn't exist"), std::string::npos) << seen.error().message;
  auto uids = net::run_coroutine(store->uids());
  EXPECT_TRUE(uids.ok()) << uids.error().to_string();
  EXPECT_TRUE(script_completed(*store, server));
}

// Expunges and flag changes of other messages go out in one flight (the script answers none
// before it has read all three lines); a MODIFIED answer still names what was not stored.
TEST(ImapStoreTiers, ExpungesAndFlagsGoOutTogether) {
  Script script = logged_in("IMAP4rev1 CONDSTORE UIDPLUS");
  script.expect_tagged_line("SELECT INBOX (CONDSTORE)")
      .send(kSelected)
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS MODSEQ) (CHANGEDSINCE 10)")
      .send("{tag} OK done\r\n")
      .expect_tagged_line("UID STORE 2 +FLAGS.SILENT (\\Deleted)", "d")
      .expect_tagged_line("UID EXPUNGE 2", "e")
      .expect_tagged_line("UID STORE 3:4 (UNCHANGEDSINCE 12) FLAGS.SILENT (\\Seen)", "f")
      .send(
          "{tag:d} OK stored\r\n* 2 EXPUNGE\r\n{tag:e} OK expunged\r\n"
          "{tag:f} OK [MODIFIED 4] partly\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  ASSERT_TRUE(net::run_coroutine(store->observe("INBOX", recorded(7, 6, 10), 0)).ok());
  const std::vector<Uid> expunges = {2};
  std::vector<FlagUpdate> updates(2);
  updates[0].uid = 3;
  updates[1].uid = 4;
  for (auto& u : updates) {
    u.flags = FlagSet{"\\Seen"};
    u.unchanged_since = 12;
  }
  auto modified = net::run_coroutine(store->expunge_and_set_flags(expunges, updates));
  ASSERT_TRUE(modified.ok()) << modified.error().to_string() << "\n" << server.describe();
  EXPECT_EQ(*modified, std::set<Uid>{4});
  EXPECT_TRUE(script_completed(*store, server));
}

// CONDSTORE's expunges come from UID SEARCH ALL: a short answer would delete the missing
// messages on the other side, so it must count EXISTS messages too.
TEST(ImapStoreQuirks, SearchThatDoesNotAddUpIsAnError) {
  Script script = logged_in("IMAP4rev1 CONDSTORE UIDPLUS");
  script.expect_tagged_line("SELECT INBOX (CONDSTORE)")
      .send(kSelected)
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS MODSEQ) (CHANGEDSINCE 10)")
      .send("{tag} OK done\r\n")
      .expect_tagged_line("UID SEARCH ALL")
      .send("* SEARCH 1 2\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  ASSERT_TRUE(net::run_coroutine(store->observe("INBOX", recorded(7, 6, 10), 0)).ok());
  auto uids = net::run_coroutine(store->uids());
  ASSERT_FALSE(uids.ok());
  EXPECT_NE(uids.error().message.find("has 2"), std::string::npos) << uids.error().message;
  EXPECT_TRUE(script_completed(*store, server));
}

// Courier-IMAP's SELECT has no UIDNEXT (RFC 3501 §6.3.1 requires it): STATUS asks for it; a
// server that will not say gets the highest UID + 1, a lower bound (new mail is above it).
TEST(ImapStoreQuirks, SelectWithoutUidnextAsksStatusThenTheHighestUid) {
  Script script = logged_in("IMAP4rev1 UIDPLUS");
  script.expect_tagged_line("SELECT INBOX")
      .send("* 2 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("STATUS INBOX (UIDNEXT)")
      .send("* STATUS INBOX (UIDNEXT 9)\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)")
      .send(
          "* 1 FETCH (UID 3 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
          "RFC822.SIZE 5)\r\n* 2 FETCH (UID 8 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 "
          "+0000\" RFC822.SIZE 6)\r\n{tag} OK done\r\n")
      .expect_tagged_line("SELECT Work")
      .send("* 1 EXISTS\r\n* OK [UIDVALIDITY 8] x\r\n{tag} OK selected\r\n")
      .expect_tagged_line("STATUS Work (UIDNEXT)")
      .send("{tag} NO not now\r\n")
      .expect_tagged_line("UID FETCH * (UID)")
      .send("* 1 FETCH (UID 41)\r\n{tag} OK done\r\n")
      .expect_tagged_line("UID FETCH 1:4294967295 (UID FLAGS INTERNALDATE RFC822.SIZE)")
      .send(
          "* 1 FETCH (UID 41 FLAGS () INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" "
          "RFC822.SIZE 5)\r\n{tag} OK done\r\n");
  FakeServer server(std::move(script));
  auto store = open_store(server);
  ASSERT_TRUE(store);
  auto inbox = net::run_coroutine(store->observe("INBOX", store::SideState{}, 0));
  ASSERT_TRUE(inbox.ok()) << inbox.error().to_string();
  EXPECT_EQ(inbox->uidnext, 9u);
  EXPECT_EQ(inbox->changes.added.size(), 2u);
  auto work = net::run_coroutine(store->observe("Work", store::SideState{}, 0));
  ASSERT_TRUE(work.ok()) << work.error().to_string();
  EXPECT_EQ(work->uidnext, 42u);
  EXPECT_EQ(store->uidnext(), 42u);
  EXPECT_TRUE(script_completed(*store, server));
}

}  // namespace
}  // namespace twinbox::sync
