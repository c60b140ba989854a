// ImapConnector's note of what a server announced, and the login it lets the next run presume:
// against a scripted server, whose steps prove what left in one flight (it answers nothing before
// it has read every line it expects), and what happens when the presumption does not hold.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "fake_server/fake_server.h"
#include "net/run_coroutine.h"
#include "net/test_endpoint.h"
#include "sync/imap_store.h"

namespace twinbox::sync {
namespace {

using fake_server::FakeServer;
using fake_server::Script;
using namespace std::chrono_literals;

constexpr std::string_view kGreeting = "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n";
constexpr std::string_view kAfterLogin =
    "IMAP4rev1 LITERAL+ ENABLE QRESYNC CONDSTORE UIDPLUS LIST-EXTENDED LIST-STATUS";
constexpr std::string_view kEnable = "ENABLE QRESYNC";
constexpr std::string_view kList =
    "LIST \"\" * RETURN (SUBSCRIBED STATUS (UIDVALIDITY UIDNEXT HIGHESTMODSEQ))";
constexpr std::string_view kEnableAndListAnswers =
    "* ENABLED QRESYNC\r\n{tag:e} OK enabled\r\n"
    "* LIST () \"/\" INBOX\r\n* STATUS INBOX (UIDVALIDITY 7 UIDNEXT 3 HIGHESTMODSEQ 9)\r\n"
    "{tag:l} OK done\r\n";

std::string logged_in_with(std::string_view caps, std::string_view tag = "{tag:login}") {
  return fmt::format("{} OK [CAPABILITY {}] in\r\n", tag, caps);
}

// A login answered before anything else is sent, then ENABLE and LIST together.
Script login_then_list(std::string_view caps_after_login = kAfterLogin) {
  Script script;
  script.send(std::string(kGreeting))
      .expect_tagged("LOGIN", "login")
      .send(logged_in_with(caps_after_login))
      .expect_tagged_line(std::string(kEnable), "e")
      .expect_tagged_line(std::string(kList), "l")
      .send(std::string(kEnableAndListAnswers));
  return script;
}

// LOGIN, ENABLE and LIST in one flight: the server reads all three before answering any.
Script first_flight() {
  Script script;
  script.send(std::string(kGreeting))
      .expect_tagged("LOGIN", "login")
      .expect_tagged_line(std::string(kEnable), "e")
      .expect_tagged_line(std::string(kList), "l");
  return script;
}

Script login_with_list_behind(std::string_view caps_after_login = kAfterLogin) {
  Script script = first_flight();
  script.send(logged_in_with(caps_after_login)).send(std::string(kEnableAndListAnswers));
  return script;
}

struct Harness {
  Harness() {
    auto opened = store::StateDb::open_scratch("");
    EXPECT_TRUE(opened.ok());
    if (opened) db = std::move(*opened);
  }

  // One run's first connection to `server`, and its first LIST.
  Result<std::vector<ListedMailbox>> open_and_list(const FakeServer& server) {
    const net::Endpoint e = net::cleartext_endpoint(server.port(), io_timeout);
    ImapConnector connector({e, e}, {"", ""}, {Tier::qresync, Tier::qresync}, db.get());
    auto store = net::run_coroutine(connector.open(Side::remote, nullptr));
    if (!store) return store.error();
    // The scripted server keeps what it has not read yet for its next step, so whether the
    // login was presumed is asked, not inferred from the script completing.
    presumed = dynamic_cast<ImapStore&>(**store).client().login_pending();
    const std::vector<std::string> everything = {"*"};
    auto listed = net::run_coroutine((*store)->list(everything, {}));
    (*store)->close();
    return listed;
  }

  // What the note says of the next run: presume or not (nullopt: no readable note).
  std::optional<bool> noted_presume() {
    auto read = note();
    if (!read) return std::nullopt;
    return read->presume;
  }

  std::optional<ImapConnector::Note> note() {
    auto text = db->note("server.remote");
    EXPECT_TRUE(text.ok());
    if (!text || !*text) return std::nullopt;
    return ImapConnector::parse_note(**text);
  }

  std::unique_ptr<store::StateDb> db;
  bool presumed = false;  // the last open_and_list()'s login was presumed
  std::chrono::milliseconds io_timeout = 3s;
};

testing::AssertionResult ran_through(FakeServer& server) {
  server.wait();
  if (server.result().completed) return testing::AssertionSuccess();
  return testing::AssertionFailure() << server.describe();
}

TEST(ImapConnector, TheNextRunPresumesWhatTheServerAnnouncedAndListsWithTheLogin) {
  Harness h;
  FakeServer server(std::vector<Script>{login_then_list(), login_with_list_behind()});
  auto first = h.open_and_list(server);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  EXPECT_FALSE(h.presumed);  // nothing noted yet
  auto note = h.note();
  ASSERT_TRUE(note);
  EXPECT_TRUE(note->presume);
  EXPECT_EQ(note->capabilities.before_login, (std::set<std::string>{"IMAP4REV1", "LITERAL+"}));
  EXPECT_TRUE(note->capabilities.after_login.count("LIST-STATUS"));

  auto second = h.open_and_list(server);
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  EXPECT_TRUE(h.presumed);
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].name, "INBOX");
  EXPECT_EQ((*second)[0].uidnext, 3u);
  EXPECT_TRUE(ran_through(server));
}

// The server was upgraded: what went out behind the login was built for the old one. The answers
// are dropped with that connection, a new one presumes nothing, and the note is brought up to date.
TEST(ImapConnector, ChangedCapabilitiesConnectAgainWithoutPresuming) {
  Harness h;
  const std::string upgraded = std::string(kAfterLogin) + " BINARY";  // literal8 for APPEND
  Script second_run = login_with_list_behind(upgraded);
  second_run.expect_eof();
  FakeServer server(std::vector<Script>{login_then_list(), second_run, login_then_list(upgraded)});
  ASSERT_TRUE(h.open_and_list(server).ok());
  auto listed = h.open_and_list(server);
  ASSERT_TRUE(listed.ok()) << listed.error().to_string();
  EXPECT_EQ(listed->size(), 1u);
  EXPECT_TRUE(ran_through(server));
  auto note = h.note();
  ASSERT_TRUE(note);
  EXPECT_TRUE(note->presume);
  EXPECT_TRUE(note->capabilities.after_login.count("BINARY"));
}

// What the server announces beyond what decides the pipelined commands and the tier (a
// per-session APPENDLIMIT, an ID) may change from one connection to the next: the presumption
// holds, and nothing is sent twice.
TEST(ImapConnector, ACapabilityThatDecidesNothingDoesNotVoidThePresumption) {
  Harness h;
  const std::string varying = std::string(kAfterLogin) + " APPENDLIMIT=1000 ID";
  FakeServer server(std::vector<Script>{login_then_list(), login_with_list_behind(varying)});
  ASSERT_TRUE(h.open_and_list(server).ok());
  auto listed = h.open_and_list(server);
  ASSERT_TRUE(listed.ok()) << listed.error().to_string();
  EXPECT_TRUE(h.presumed);
  EXPECT_EQ(listed->size(), 1u);
  EXPECT_TRUE(ran_through(server));
}

// A server (or a proxy in front of it) that drops a connection with commands behind the login
// costs one connection, once: the run goes on with a new one, and no later run presumes again.
TEST(ImapConnector, AServerThatDropsCommandsBehindTheLoginIsNotPresumedWithAgain) {
  Harness h;
  Script dropped = first_flight();
  dropped.drop();
  FakeServer server(
      std::vector<Script>{login_then_list(), dropped, login_then_list(), login_then_list()});
  ASSERT_TRUE(h.open_and_list(server).ok());
  auto listed = h.open_and_list(server);
  ASSERT_TRUE(listed.ok()) << listed.error().to_string();
  EXPECT_EQ(h.noted_presume(), std::optional<bool>(false));
  ASSERT_TRUE(h.open_and_list(server).ok());
  EXPECT_FALSE(h.presumed);  // the login is answered before the ENABLE leaves
  EXPECT_TRUE(ran_through(server));
}

// A server that failed a presumed login once gets another chance when it announces something
// else after login (another version of it).
TEST(ImapConnector, AnotherVersionOfAServerThatFailedOnceIsPresumedWithAgain) {
  Harness h;
  ImapConnector::Note refused;
  refused.presume = false;
  refused.capabilities = {{"IMAP4REV1", "LITERAL+"}, {"IMAP4REV1", "ENABLE"}};
  FakeServer server(std::vector<Script>{login_then_list(), login_with_list_behind()});
  refused.endpoint = ImapConnector::endpoint_hash(net::cleartext_endpoint(server.port()));
  ASSERT_TRUE(h.db->set_note("server.remote", ImapConnector::format_note(refused)).ok());
  ASSERT_TRUE(h.open_and_list(server).ok());
  EXPECT_FALSE(h.presumed);
  EXPECT_EQ(h.noted_presume(), std::optional<bool>(true));
  ASSERT_TRUE(h.open_and_list(server).ok());
  EXPECT_TRUE(h.presumed);
  EXPECT_TRUE(ran_through(server));
}

// Cyrus 3.6 answers an AUTHENTICATE with SASL-IR, then runs it once more from what followed it:
// a second answer for the login's tag. Whatever fails behind a presumed login gets one more
// connection that presumes nothing, and that server is not presumed with again.
TEST(ImapConnector, AServerThatAnswersTheLoginTwiceIsNotPresumedWithAgain) {
  Harness h;
  Script twice = first_flight();
  twice.send(logged_in_with(kAfterLogin)).send("{tag:login} BAD Already authenticated\r\n");
  FakeServer server(std::vector<Script>{login_then_list(), twice, login_then_list()});
  ASSERT_TRUE(h.open_and_list(server).ok());
  auto listed = h.open_and_list(server);
  ASSERT_TRUE(listed.ok()) << listed.error().to_string();
  EXPECT_EQ(listed->size(), 1u);
  EXPECT_EQ(h.noted_presume(), std::optional<bool>(false));
  EXPECT_TRUE(ran_through(server));
}

// A server that goes silent behind a presumed login is not asked again at once (a second wait
// would double the time to the error); the next run does not presume.
TEST(ImapConnector, SilenceBehindAPresumedLoginIsATimeoutAndTheNextRunDoesNotPresume) {
  Harness h;
  Script silent = first_flight();
  silent.stall(2000ms);
  FakeServer server(std::vector<Script>{login_then_list(), silent, login_then_list()});
  ASSERT_TRUE(h.open_and_list(server).ok());
  h.io_timeout = 300ms;
  auto listed = h.open_and_list(server);
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.error().code, Errc::timeout) << listed.error().to_string();
  EXPECT_EQ(h.noted_presume(), std::optional<bool>(false));
  h.io_timeout = 3s;
  ASSERT_TRUE(h.open_and_list(server).ok());
  EXPECT_FALSE(h.presumed);
  EXPECT_TRUE(ran_through(server));
}

// A refused login stays what it is without a presumption: an authentication error, and no second
// connection with the same password.
TEST(ImapConnector, ARefusedPresumedLoginIsAnAuthenticationError) {
  Harness h;
  Script refused = first_flight();
  refused.send(
      "{tag:login} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
      "{tag:e} BAD Not authenticated\r\n{tag:l} BAD Not authenticated\r\n");
  FakeServer server(std::vector<Script>{login_then_list(), refused});
  ASSERT_TRUE(h.open_and_list(server).ok());
  auto listed = h.open_and_list(server);
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.error().code, Errc::auth) << listed.error().to_string();
  EXPECT_NE(listed.error().message.find("Authentication failed."), std::string::npos);
  EXPECT_TRUE(ran_through(server));
}

// A note about another server, or one that cannot be read, presumes nothing.
TEST(ImapConnector, ANoteThatIsNotAboutThisServerIsIgnored) {
  Harness h;
  FakeServer server(std::vector<Script>{login_then_list(), login_then_list()});
  ImapConnector::Note other;
  other.endpoint = ImapConnector::endpoint_hash(net::Endpoint{});
  other.capabilities = {{"IMAP4REV1", "LITERAL+"}, {"IMAP4REV1", "ENABLE", "QRESYNC"}};
  ASSERT_TRUE(h.db->set_note("server.remote", ImapConnector::format_note(other)).ok());
  ASSERT_TRUE(h.open_and_list(server).ok());
  EXPECT_FALSE(h.presumed);
  ASSERT_TRUE(h.db->set_note("server.remote", "twinbox-capabilities 1\nendpoint").ok());
  ASSERT_TRUE(h.open_and_list(server).ok());
  EXPECT_FALSE(h.presumed);
  EXPECT_TRUE(ran_through(server));
}

TEST(ImapConnectorNote, ReadsWhatItWritesAndNothingElse) {
  ImapConnector::Note note;
  note.endpoint = "ab12";
  note.presume = false;
  note.capabilities = {{"IMAP4REV1", "STARTTLS"}, {"IMAP4REV1", "QRESYNC", "LIST-STATUS"}};
  const std::string text = ImapConnector::format_note(note);
  auto read = ImapConnector::parse_note(text);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->endpoint, note.endpoint);
  EXPECT_EQ(read->presume, note.presume);
  EXPECT_EQ(read->capabilities, note.capabilities);
  for (std::string_view bad :
       {"", "twinbox-capabilities 2\nendpoint a\npresume yes\nbefore-login A\nafter-login B\n",
        "twinbox-capabilities 1\nendpoint a\npresume maybe\nbefore-login A\nafter-login B\n",
        "twinbox-capabilities 1\nendpoint a\npresume yes\nafter-login B\nbefore-login A\n",
        "twinbox-capabilities 1\nendpoint a\npresume yes\nbefore-login A\n",
        "twinbox-capabilities 1\nendpointa\npresume yes\nbefore-login A\nafter-login B\n"}) {
    EXPECT_FALSE(ImapConnector::parse_note(bad)) << bad;
  }
  EXPECT_NE(ImapConnector::endpoint_hash(net::Endpoint{}), note.endpoint);
  net::Endpoint other;
  other.username = "someone else";
  EXPECT_NE(ImapConnector::endpoint_hash(net::Endpoint{}), ImapConnector::endpoint_hash(other));
}

}  // namespace
}  // namespace twinbox::sync
