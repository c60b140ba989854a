#include "imap/session.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "base/base64.h"
#include "imap/parser.h"
#include "imap/reader.h"

namespace twinbox::imap {
namespace {

#define EXPECT_OK(expr)                                       \
  do {                                                        \
    auto status_ = (expr);                                    \
    EXPECT_TRUE(status_.ok()) << status_.error().to_string(); \
  } while (0)

SessionOptions secure() {
  SessionOptions o;
  o.secure_transport = true;
  return o;
}

// A scripted dialogue: server text goes through the real reader and parser into the session;
// client() is everything the session wants written now.
struct Script {
  explicit Script(SessionOptions options = secure()) : session(options) {}

  Status server(std::string_view text) {
    if (Status s = reader.feed(text); !s) {
      ADD_FAILURE() << "reader: " << s.error().to_string();
      return s;
    }
    while (auto frame = reader.next()) {
      auto response = parse_response(std::move(*frame));
      if (!response.ok()) {
        ADD_FAILURE() << "parser: " << response.error().to_string();
        return std::move(response).error();
      }
      if (Status s = session.on_response(std::move(*response)); !s) return s;
    }
    return ok_status();
  }

  std::string client() {
    std::string out;
    while (auto chunk = session.next_output()) out += chunk->bytes;
    return out;
  }

  Completion completion() {
    auto c = session.next_completion();
    EXPECT_TRUE(c.has_value()) << "no completion";
    return c ? std::move(*c) : Completion{};
  }

  Session session;
  Reader reader;
};

// A session past a PREAUTH greeting announcing `caps` (on a secure transport).
void preauth(Script& s, std::string_view caps) {
  EXPECT_OK(s.server(fmt::format("* PREAUTH [CAPABILITY {}] ready\r\n", caps)));
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
}

// A session with INBOX selected (CONDSTORE), HIGHESTMODSEQ 90, 172 messages.
void select_inbox(Script& s, std::string_view caps) {
  preauth(s, caps);
  cmd::SelectOptions options;
  options.condstore = true;
  auto id = s.session.select("INBOX", options);
  ASSERT_TRUE(id.ok()) << id.error().to_string();
  const std::string tag = fmt::format("T{}", *id);
  EXPECT_EQ(s.client(), tag + " SELECT INBOX (CONDSTORE)\r\n");
  EXPECT_OK(
      s.server("* 172 EXISTS\r\n"
               "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
               "* OK [UIDNEXT 201] Predicted next UID\r\n"
               "* OK [HIGHESTMODSEQ 90] Highest\r\n" +
               tag + " OK [READ-WRITE] SELECT completed\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::selected);
  EXPECT_TRUE(s.completion().ok());
}

constexpr std::string_view kCaps =
    "IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN ENABLE QRESYNC CONDSTORE ID IDLE UIDPLUS UNSELECT "
    "MULTIAPPEND LIST-EXTENDED LIST-STATUS COMPRESS=DEFLATE";

// Greeting, then CAPABILITY, LOGIN and ENABLE QRESYNC: each a barrier, sent only after the
// previous one completed; nothing at all before the greeting.
TEST(Session, GreetingCapabilityLoginEnableInOrder) {
  Script s;
  ASSERT_TRUE(s.session.capability().ok());
  EXPECT_EQ(s.client(), "");  // no greeting yet
  EXPECT_OK(s.server("* OK Dovecot ready.\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::not_authenticated);
  EXPECT_FALSE(s.session.capabilities_known());
  EXPECT_EQ(s.client(), "T1 CAPABILITY\r\n");
  EXPECT_OK(s.server(fmt::format("* CAPABILITY {}\r\nT1 OK Pre-login capabilities\r\n", kCaps)));
  Completion c = s.completion();
  EXPECT_EQ(c.tag, "T1");
  ASSERT_EQ(c.untagged.size(), 1u);
  EXPECT_TRUE(s.session.has_capability("qresync"));

  ASSERT_TRUE(s.session.login("fred", "s3cr3t").ok());
  // ENABLE queued behind LOGIN (submitted raw: the helper rightly refuses before authentication).
  ASSERT_TRUE(s.session.submit(*cmd::enable({"QRESYNC"})).ok());
  EXPECT_EQ(s.client(), "T2 LOGIN fred s3cr3t\r\n");
  EXPECT_EQ(s.client(), "");
  EXPECT_OK(s.server(fmt::format("T2 OK [CAPABILITY {}] Logged in\r\n", kCaps)));
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
  EXPECT_TRUE(s.session.capabilities_known());
  EXPECT_EQ(s.client(), "T3 ENABLE QRESYNC\r\n");
  EXPECT_FALSE(s.session.is_enabled("QRESYNC"));
  EXPECT_OK(s.server("* ENABLED QRESYNC\r\nT3 OK Enabled\r\n"));
  EXPECT_TRUE(s.session.is_enabled("qresync"));
  EXPECT_TRUE(s.session.is_enabled("CONDSTORE"));  // implied (RFC 7162 §3.2.3)
  EXPECT_EQ(s.completion().tag, "T2");
  Completion enable = s.completion();
  EXPECT_EQ(enable.kind, CommandKind::enable);
  ASSERT_EQ(enable.untagged.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<EnabledData>(enable.untagged[0].data));
}

// RFC 9051 §6.2.2: without a CAPABILITY code or response during LOGIN, capabilities must be
// asked again; an untagged CAPABILITY before the tagged OK counts.
TEST(Session, CapabilitiesRefreshedAfterAuthentication) {
  Script bare;
  EXPECT_OK(bare.server(fmt::format("* OK [CAPABILITY {}] ready\r\n", kCaps)));
  ASSERT_TRUE(bare.session.login("fred", "s3cr3t").ok());
  EXPECT_EQ(bare.client(), "T1 LOGIN fred s3cr3t\r\n");
  EXPECT_OK(bare.server("T1 OK Logged in\r\n"));
  EXPECT_FALSE(bare.session.capabilities_known());
  EXPECT_FALSE(bare.session.has_capability("IDLE"));
  auto refused = bare.session.enable({"QRESYNC"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().to_string(),
            "internal error: ENABLE needs the server's capabilities: send CAPABILITY first");

  Script untagged;
  EXPECT_OK(untagged.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"));
  ASSERT_TRUE(untagged.session.login("fred", "s3cr3t").ok());
  untagged.client();
  EXPECT_OK(untagged.server("* CAPABILITY IMAP4rev1 IDLE\r\nT1 OK Logged in\r\n"));
  EXPECT_TRUE(untagged.session.capabilities_known());
  EXPECT_TRUE(untagged.session.has_capability("IDLE"));
  EXPECT_FALSE(untagged.session.has_capability("AUTH=PLAIN"));
}

// Three UID FETCHes go out together; untagged FETCHes go to the oldest command in flight, and a
// barrier (UNSELECT) waits for all three.
TEST(Session, ThreePipelinedUidFetchesWithRouting) {
  Script s;
  select_inbox(s, kCaps);
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({1, 2}), "(FLAGS)").ok());
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({15}), "(FLAGS)").ok());
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({20}), "(FLAGS)").ok());
  ASSERT_TRUE(s.session.unselect().ok());
  EXPECT_EQ(s.client(),
            "T2 UID FETCH 1:2 (FLAGS)\r\n"
            "T3 UID FETCH 15 (FLAGS)\r\n"
            "T4 UID FETCH 20 (FLAGS)\r\n");
  EXPECT_EQ(s.session.in_flight(), 3u);
  EXPECT_OK(
      s.server("* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
               "* 2 FETCH (UID 2 FLAGS ())\r\n"
               "T2 OK Fetch completed.\r\n"
               "* 5 FETCH (UID 15 FLAGS (\\Flagged))\r\n"
               "T3 OK Fetch completed.\r\n"));
  EXPECT_EQ(s.client(), "");  // UNSELECT still waits for T4
  EXPECT_OK(s.server("T4 OK Fetch completed.\r\n"));
  EXPECT_EQ(s.client(), "T5 UNSELECT\r\n");

  Completion t2 = s.completion();
  EXPECT_EQ(t2.tag, "T2");
  ASSERT_EQ(t2.untagged.size(), 2u);
  EXPECT_EQ(std::get<FetchData>(t2.untagged[1].data).uid, 2u);
  Completion t3 = s.completion();
  ASSERT_EQ(t3.untagged.size(), 1u);
  EXPECT_EQ(std::get<FetchData>(t3.untagged[0].data).uid, 15u);
  EXPECT_TRUE(s.completion().untagged.empty());
  EXPECT_OK(s.server("T5 OK Unselected\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
  EXPECT_FALSE(s.session.mailbox().has_value());
}

// Barriers hold back everything after them, and max_in_flight caps the pipeline.
TEST(Session, BarriersAndPipelineWindow) {
  SessionOptions options = secure();
  options.max_in_flight = 2;
  Script s(options);
  select_inbox(s, kCaps);
  ASSERT_TRUE(s.session.noop().ok());
  ASSERT_TRUE(s.session.capability().ok());  // a barrier
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({1}), "(FLAGS)").ok());
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({2}), "(FLAGS)").ok());
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({3}), "(FLAGS)").ok());
  EXPECT_EQ(s.client(), "T2 NOOP\r\n");
  EXPECT_OK(s.server("T2 OK\r\n"));
  EXPECT_EQ(s.client(), "T3 CAPABILITY\r\n");
  EXPECT_OK(s.server(fmt::format("* CAPABILITY {}\r\nT3 OK\r\n", kCaps)));
  EXPECT_EQ(s.client(), "T4 UID FETCH 1 (FLAGS)\r\nT5 UID FETCH 2 (FLAGS)\r\n");
  EXPECT_OK(s.server("T4 OK\r\n"));
  EXPECT_EQ(s.client(), "T6 UID FETCH 3 (FLAGS)\r\n");
  EXPECT_TRUE(may_pipeline(CommandKind::uid_expunge));
  EXPECT_FALSE(may_pipeline(CommandKind::fetch));  // sequence numbers (RFC 9051 §5.5)
  EXPECT_FALSE(may_pipeline(CommandKind::select));
}

// CREATEs go out together, and (UN)SUBSCRIBEs together; neither travels with the other kind or
// with anything else.
TEST(Session, CreatesTravelTogetherAndSoDoSubscriptions) {
  Script s;
  preauth(s, "IMAP4rev1");
  for (const char* name : {"A", "B"}) {
    ASSERT_TRUE(s.session.submit(*CommandBuilder("CREATE", {}).mailbox(name).build()).ok());
  }
  ASSERT_TRUE(s.session.submit(*CommandBuilder("SUBSCRIBE", {}).mailbox("A").build()).ok());
  ASSERT_TRUE(s.session.submit(*CommandBuilder("UNSUBSCRIBE", {}).mailbox("B").build()).ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 CREATE A\r\nT2 CREATE B\r\n");
  EXPECT_OK(s.server("T1 OK\r\n"));
  EXPECT_EQ(s.client(), "");  // a SUBSCRIBE waits for every CREATE
  EXPECT_OK(s.server("T2 OK\r\n"));
  EXPECT_EQ(s.client(), "T3 SUBSCRIBE A\r\nT4 UNSUBSCRIBE B\r\n");
  EXPECT_OK(s.server("T3 OK\r\nT4 OK\r\n"));
  EXPECT_EQ(s.client(), "T5 NOOP\r\n");
  EXPECT_TRUE(may_follow_own_kind(CommandKind::create, CommandKind::create));
  EXPECT_FALSE(may_follow_own_kind(CommandKind::create, CommandKind::append));
  EXPECT_FALSE(may_follow_own_kind(CommandKind::delete_, CommandKind::delete_));
  EXPECT_FALSE(may_follow_own_kind(CommandKind::rename, CommandKind::rename));
}

// ENABLE is a barrier except for a LIST, LSUB, STATUS or NOOP behind it (they go out together);
// a SELECT still waits for its answer, and ENABLE itself waits for what is in flight.
TEST(Session, OnlyListAndStatusFollowAnEnable) {
  Script s;
  preauth(s, "IMAP4rev1 ENABLE QRESYNC CONDSTORE");
  const std::vector<std::string> qresync = {"QRESYNC"}, everything = {"*"};
  ASSERT_TRUE(s.session.enable(qresync).ok());
  ASSERT_TRUE(s.session.list("", everything).ok());
  ASSERT_TRUE(s.session.select("INBOX").ok());
  EXPECT_EQ(s.client(), "T1 ENABLE QRESYNC\r\nT2 LIST \"\" *\r\n");
  EXPECT_OK(s.server("* ENABLED QRESYNC\r\nT1 OK enabled\r\n"));
  EXPECT_TRUE(s.session.is_enabled("QRESYNC"));
  EXPECT_EQ(s.client(), "");  // the SELECT waits for the LIST too
  EXPECT_OK(s.server("* LIST () \"/\" INBOX\r\nT2 OK done\r\n"));
  EXPECT_EQ(s.client(), "T3 SELECT INBOX\r\n");
  EXPECT_TRUE(may_follow_enable(CommandKind::status));
  EXPECT_FALSE(may_follow_enable(CommandKind::select));
  EXPECT_FALSE(may_follow_enable(CommandKind::uid_fetch));  // its answer may say VANISHED
}

// A session past a greeting with `caps`, a LOGIN submitted and presumed to succeed with kCaps.
void presumed_login(Script& s, std::string_view greeting_caps) {
  EXPECT_OK(s.server(fmt::format("* OK [CAPABILITY {}] ready\r\n", greeting_caps)));
  ASSERT_TRUE(s.session.login("fred", "s3cr3t").ok());
  std::set<std::string> presumed;
  for (std::string_view cap :
       {"IMAP4rev1", "ENABLE", "QRESYNC", "CONDSTORE", "LIST-EXTENDED", "LIST-STATUS"}) {
    presumed.insert(std::string(cap));
  }
  EXPECT_OK(s.session.presume_login(presumed));
  EXPECT_TRUE(s.session.presuming_login());
}

// With the login presumed, ENABLE and LIST leave with it (one round trip for all three) and
// nothing else does; the login's answer then sets the capabilities the server announced.
TEST(Session, EnableAndListFollowAPresumedLogin) {
  Script s;
  presumed_login(s, "IMAP4rev1 LITERAL+ AUTH=PLAIN");
  const std::vector<std::string> qresync = {"QRESYNC"}, everything = {"*"};
  ASSERT_TRUE(s.session.enable(qresync).ok());  // the state is not_authenticated yet
  cmd::ListOptions options;
  options.return_items = {"SUBSCRIBED"};
  options.status_items = {"HIGHESTMODSEQ"};
  ASSERT_TRUE(s.session.list("", everything, options).ok());
  ASSERT_TRUE(s.session.select("INBOX").ok());
  EXPECT_EQ(s.client(),
            "T1 LOGIN fred s3cr3t\r\nT2 ENABLE QRESYNC\r\n"
            "T3 LIST \"\" * RETURN (SUBSCRIBED STATUS (HIGHESTMODSEQ))\r\n");
  EXPECT_EQ(s.session.state(), ConnectionState::not_authenticated);
  EXPECT_OK(
      s.server("T1 OK [CAPABILITY IMAP4rev1 ENABLE QRESYNC LIST-STATUS] Logged in\r\n"
               "* ENABLED QRESYNC\r\nT2 OK enabled\r\n"));
  EXPECT_FALSE(s.session.presuming_login());
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
  EXPECT_TRUE(s.session.is_enabled("QRESYNC"));
  EXPECT_FALSE(s.session.has_capability("CONDSTORE"));  // what the server said, not the presumed
  EXPECT_EQ(s.client(), "");                            // the SELECT waits for the LIST
  EXPECT_OK(s.server("* LIST () \"/\" INBOX\r\nT3 OK done\r\n"));
  EXPECT_EQ(s.client(), "T4 SELECT INBOX\r\n");
  EXPECT_TRUE(may_follow_login(CommandKind::enable));
  EXPECT_FALSE(may_follow_login(CommandKind::select));
  EXPECT_FALSE(may_follow_login(CommandKind::compress));  // never credentials and data in one
}

// A refused login ends the presumption: the capabilities are unknown again and the commands
// behind it are the server's to refuse; ENABLED before authentication counts for nothing.
TEST(Session, ARefusedPresumedLoginLeavesNothingPresumed) {
  Script s;
  presumed_login(s, "IMAP4rev1 AUTH=PLAIN");
  ASSERT_TRUE(s.session.enable({"QRESYNC"}).ok());
  EXPECT_EQ(s.client(), "T1 LOGIN fred s3cr3t\r\nT2 ENABLE QRESYNC\r\n");
  EXPECT_OK(
      s.server("T1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
               "* ENABLED QRESYNC\r\nT2 BAD Not authenticated\r\n"));
  EXPECT_FALSE(s.session.presuming_login());
  EXPECT_EQ(s.session.state(), ConnectionState::not_authenticated);
  EXPECT_FALSE(s.session.capabilities_known());
  EXPECT_FALSE(s.session.is_enabled("QRESYNC"));
  EXPECT_FALSE(s.session.enable({"QRESYNC"}).ok());
}

// Only a login that is the last command and needs no continuation can be presumed: behind a
// synchronizing literal or a SASL exchange, a pipelined line would be read as its answer.
TEST(Session, OnlyAOneLineLoginCanBePresumed) {
  const std::set<std::string> presumed = {"IMAP4REV1", "ENABLE"};
  {
    Script s;
    EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"));
    EXPECT_FALSE(s.session.presume_login(presumed).ok());     // nothing submitted
    ASSERT_TRUE(s.session.login("fred", "pass\"word").ok());  // a quoted string
    EXPECT_OK(s.session.presume_login(presumed));
  }
  {
    Script s;  // no LITERAL+: a password that needs a literal waits for "+"
    EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"));
    ASSERT_TRUE(s.session.login("fred", "line\nbreak").ok());
    EXPECT_FALSE(s.session.presume_login(presumed).ok());
    EXPECT_FALSE(s.session.presuming_login());
  }
  {
    Script s;  // no SASL-IR: the credentials wait for "+"
    EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"));
    ASSERT_TRUE(s.session.authenticate_plain("fred", "s3cr3t").ok());
    EXPECT_FALSE(s.session.presume_login(presumed).ok());
  }
  {
    Script s;  // with SASL-IR it is one line
    EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n"));
    ASSERT_TRUE(s.session.authenticate_plain("fred", "s3cr3t").ok());
    EXPECT_OK(s.session.presume_login(presumed));
  }
}

// Behind a SELECT only a UID FETCH goes out at once; anything else waits for the SELECT's answer.
TEST(Session, OnlyUidFetchFollowsASelect) {
  Script s;
  preauth(s, "IMAP4rev1 UIDPLUS");
  ASSERT_TRUE(s.session.select("INBOX").ok());
  SequenceSet new_mail;
  new_mail.add(5, 4294967295u);
  ASSERT_TRUE(s.session.uid_fetch(new_mail, "(UID FLAGS)").ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 SELECT INBOX\r\nT2 UID FETCH 5:4294967295 (UID FLAGS)\r\n");
  EXPECT_OK(
      s.server("* 2 EXISTS\r\n* OK [UIDVALIDITY 3] x\r\n* OK [UIDNEXT 7] x\r\n"
               "T1 OK [READ-WRITE] selected\r\n"));
  EXPECT_EQ(s.client(), "T3 NOOP\r\n");  // once the SELECT is answered (a FETCH allows it)
  EXPECT_OK(s.server("* 2 FETCH (UID 6 FLAGS ())\r\nT2 OK done\r\nT3 OK\r\n"));
  EXPECT_TRUE(may_follow_select(CommandKind::uid_fetch));
  EXPECT_FALSE(may_follow_select(CommandKind::uid_store));  // never a change before the answer
  EXPECT_FALSE(may_follow_select(CommandKind::fetch));
}

// A synchronizing literal waits for "+"; nothing else starts meanwhile; the rest follows at once.
TEST(Session, SynchronizingLiteralWaitsForContinuation) {
  Script s;
  preauth(s, "IMAP4rev1 UIDPLUS");
  std::vector<cmd::AppendMessage> messages(1);
  messages[0].content = "Subject: hi\r\n\r\nbody\r\n";
  ASSERT_TRUE(s.session.append("INBOX", std::move(messages)).ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 APPEND INBOX {21}\r\n");
  EXPECT_EQ(s.client(), "");
  EXPECT_OK(s.server("+ Ready for literal data\r\n"));
  EXPECT_EQ(s.client(), "Subject: hi\r\n\r\nbody\r\n\r\nT2 NOOP\r\n");
  EXPECT_OK(s.server("T1 OK [APPENDUID 38505 3955] APPEND completed\r\nT2 OK\r\n"));
  EXPECT_TRUE(s.completion().ok());
}

// RFC 9051 §4.3: a tagged NO/BAD instead of "+" voids the rest of the command; the literal is
// never sent and the next command goes out.
TEST(Session, SynchronizingLiteralDroppedOnTaggedRejection) {
  Script s;
  preauth(s, "IMAP4rev1 MULTIAPPEND");
  std::vector<cmd::AppendMessage> messages(2);
  messages[0].content = "one";
  messages[1].content = "two";
  ASSERT_TRUE(s.session.append("Nope", std::move(messages)).ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 APPEND Nope {3}\r\n");
  EXPECT_OK(s.server("T1 NO [TRYCREATE] Mailbox doesn't exist: Nope\r\n"));
  EXPECT_EQ(s.client(), "T2 NOOP\r\n");
  Completion c = s.completion();
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.status.code.kind, CodeKind::trycreate);

  // Rejected after the first literal of a MULTIAPPEND: the second is dropped too.
  std::vector<cmd::AppendMessage> more(2);
  more[0].content = "one";
  more[1].content = "two";
  ASSERT_TRUE(s.session.append("Box", std::move(more)).ok());
  EXPECT_OK(s.server("T2 OK\r\n"));
  EXPECT_EQ(s.client(), "T3 APPEND Box {3}\r\n");
  EXPECT_OK(s.server("+ go\r\n"));
  EXPECT_EQ(s.client(), "one {3}\r\n");
  EXPECT_OK(s.server("T3 BAD [TOOBIG] Message too large\r\n"));
  EXPECT_EQ(s.client(), "");
  EXPECT_EQ(s.session.in_flight(), 0u);
}

// LITERAL+ literals go out without waiting (RFC 7888).
TEST(Session, NonSynchronizingLiteralDoesNotWait) {
  Script s;
  preauth(s, "IMAP4rev1 LITERAL+");
  std::vector<cmd::AppendMessage> messages(1);
  messages[0].content = "hello";
  ASSERT_TRUE(s.session.append("INBOX", std::move(messages)).ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 APPEND INBOX {5+}\r\nhello\r\nT2 NOOP\r\n");
}

// A tagged OK for a command the server cannot have received in full is a protocol error.
TEST(Session, TaggedOkBeforeLiteralIsProtocolError) {
  Script s;
  preauth(s, "IMAP4rev1");
  std::vector<cmd::AppendMessage> messages(1);
  messages[0].content = "hello";
  ASSERT_TRUE(s.session.append("INBOX", std::move(messages)).ok());
  EXPECT_EQ(s.client(), "T1 APPEND INBOX {5}\r\n");
  Status st = s.server("T1 OK done\r\n");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().to_string(),
            "protocol error: tagged OK for T1 before the command was sent in full");
  EXPECT_TRUE(s.session.failed());
  EXPECT_EQ(s.client(), "");
}

// AUTHENTICATE PLAIN with SASL-IR: one line, the response redacted in traces.
TEST(Session, AuthenticatePlainWithSaslIr) {
  SessionOptions options = secure();
  options.trace = true;
  Script s(options);
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"));
  ASSERT_TRUE(s.session.authenticate_plain("fred", "s3cr3t").ok());
  EXPECT_EQ(s.client(), "T1 AUTHENTICATE PLAIN AGZyZWQAczNjcjN0\r\n");
  EXPECT_EQ(s.session.next_trace(), "T1 AUTHENTICATE PLAIN <redacted>");
  EXPECT_EQ(s.session.next_trace(), std::nullopt);
  EXPECT_OK(s.server("T1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
  EXPECT_TRUE(s.session.has_capability("IDLE"));
}

// Without SASL-IR the response waits for the server's empty "+" challenge.
TEST(Session, AuthenticatePlainWithoutSaslIr) {
  SessionOptions options = secure();
  options.trace = true;
  Script s(options);
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"));
  ASSERT_TRUE(s.session.authenticate_plain("fred", "s3cr3t").ok());
  EXPECT_EQ(s.client(), "T1 AUTHENTICATE PLAIN\r\n");
  EXPECT_EQ(s.client(), "");
  EXPECT_OK(s.server("+ \r\n"));
  EXPECT_EQ(s.client(), "AGZyZWQAczNjcjN0\r\n");
  EXPECT_EQ(s.session.next_trace(), "T1 AUTHENTICATE PLAIN");
  EXPECT_EQ(s.session.next_trace(), "<redacted>");
  // A further challenge PLAIN cannot answer is cancelled with "*" (RFC 9051 §6.2.2).
  EXPECT_OK(s.server("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"));
  EXPECT_EQ(s.client(), "*\r\n");
  EXPECT_OK(s.server("T1 BAD Authentication cancelled\r\n"));
  EXPECT_FALSE(s.completion().ok());
  EXPECT_EQ(s.session.state(), ConnectionState::not_authenticated);
}

// OAUTHBEARER (RFC 7628 §3.1) with SASL-IR: gs2 header, host, port and the bearer token in one
// redacted initial response.
TEST(Session, AuthenticateOauthbearerWithSaslIr) {
  SessionOptions options = secure();
  options.trace = true;
  Script s(options);
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready\r\n"));
  ASSERT_TRUE(s.session
                  .authenticate_oauth(OAuthMechanism::oauthbearer, "fred@example.org", "tok3n",
                                      "imap.example.org", "993")
                  .ok());
  // base64("n,a=fred@example.org,^Ahost=imap.example.org^Aport=993^Aauth=Bearer tok3n^A^A")
  EXPECT_EQ(s.client(),
            "T1 AUTHENTICATE OAUTHBEARER "
            "bixhPWZyZWRAZXhhbXBsZS5vcmcsAWhvc3Q9aW1hcC5leGFtcGxlLm9yZwFwb3J0PTk5MwFhdXRoPUJlYXJl"
            "ciB0b2szbgEB\r\n");
  EXPECT_EQ(s.session.next_trace(), "T1 AUTHENTICATE OAUTHBEARER <redacted>");
  EXPECT_OK(s.server("T1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
  // RFC 5801 §4: "," and "=" in the authorization identity are escaped.
  EXPECT_EQ(base64_decode(sasl_oauthbearer("a,b=c", "t", "h", "1")),
            "n,a=a=2Cb=3Dc,\x01host=h\x01port=1\x01"
            "auth=Bearer t\x01\x01");
}

// A refused token: the server's "+ base64(JSON)" gets the dummy response "AQ==" (RFC 7628
// §3.2.3), then NO; the JSON status is kept for the error message.
TEST(Session, OauthbearerErrorChallengeIsAnsweredAndKept) {
  Script s;
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ready\r\n"));
  ASSERT_TRUE(
      s.session.authenticate_oauth(OAuthMechanism::oauthbearer, "fred", "t", "h", "143").ok());
  s.client();
  EXPECT_OK(s.server("+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"));
  EXPECT_EQ(s.client(), "AQ==\r\n");
  // A second challenge is not answered the same way: the exchange is cancelled.
  EXPECT_OK(s.server("+ eyJ9\r\n"));
  EXPECT_EQ(s.client(), "*\r\n");
  EXPECT_OK(s.server("T1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"));
  const Completion done = s.completion();
  EXPECT_FALSE(done.ok());
  EXPECT_EQ(sasl_error_status(done), R"({"status":"invalid_token"})");
  EXPECT_EQ(s.session.state(), ConnectionState::not_authenticated);
}

// XOAUTH2 without SASL-IR: the response waits for "+", an error challenge gets an empty line.
TEST(Session, Xoauth2WithoutSaslIr) {
  SessionOptions options = secure();
  options.trace = true;
  Script s(options);
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n"));
  ASSERT_TRUE(s.session.authenticate_oauth(OAuthMechanism::xoauth2, "fred", "tok", "h", "1").ok());
  EXPECT_EQ(s.client(), "T1 AUTHENTICATE XOAUTH2\r\n");
  EXPECT_OK(s.server("+ \r\n"));
  // base64("user=fred^Aauth=Bearer tok^A^A")
  EXPECT_EQ(s.client(), "dXNlcj1mcmVkAWF1dGg9QmVhcmVyIHRvawEB\r\n");
  EXPECT_EQ(s.session.next_trace(), "T1 AUTHENTICATE XOAUTH2");
  EXPECT_EQ(s.session.next_trace(), "<redacted>");
  EXPECT_OK(s.server("+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"));
  EXPECT_EQ(s.client(), "\r\n");
  EXPECT_OK(s.server("T1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"));
  EXPECT_EQ(sasl_error_status(s.completion()), R"({"status":"401","schemes":"bearer"})");
}

// A token too long for one command line goes after "+" even when SASL-IR is offered; a
// mechanism the server does not offer and cleartext are refused before anything is sent.
TEST(Session, OauthLongTokenMissingMechanismAndCleartext) {
  SessionOptions options = secure();
  options.max_line = 1000;
  Script s(options);
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n"));
  const std::string token(700, 'x');
  ASSERT_TRUE(s.session.authenticate_oauth(OAuthMechanism::xoauth2, "u", "x", "h", "1").ok());
  EXPECT_EQ(s.client().find("T1 AUTHENTICATE XOAUTH2 "), 0u);
  EXPECT_OK(s.server("T1 NO no\r\n"));
  s.completion();
  auto refused = s.session.authenticate_oauth(OAuthMechanism::oauthbearer, "u", "t", "h", "1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::auth);
  auto long_token = s.session.authenticate_oauth(OAuthMechanism::xoauth2, "u", token, "h", "1");
  ASSERT_TRUE(long_token.ok());
  EXPECT_EQ(s.client(), "T2 AUTHENTICATE XOAUTH2\r\n");

  Script clear(SessionOptions{});
  EXPECT_OK(clear.server("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n"));
  EXPECT_FALSE(clear.session.authenticate_oauth(OAuthMechanism::xoauth2, "u", "t", "h", "1").ok());
  EXPECT_EQ(clear.client(), "");
}

// Credentials are refused over cleartext and when LOGINDISABLED is advertised.
TEST(Session, CredentialsRefusedWhenUnsafe) {
  Script clear(SessionOptions{});
  EXPECT_OK(clear.server("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"));
  auto login = clear.session.login("fred", "s3cr3t");
  ASSERT_FALSE(login.ok());
  EXPECT_EQ(login.error().to_string(),
            "authentication error: refusing to send credentials over an unencrypted connection");
  EXPECT_FALSE(clear.session.authenticate_plain("fred", "s3cr3t").ok());
  EXPECT_EQ(clear.client(), "");

  Script disabled;
  EXPECT_OK(disabled.server("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN] ready\r\n"));
  auto refused = disabled.session.login("fred", "s3cr3t");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().to_string(),
            "authentication error: server advertises LOGINDISABLED: LOGIN is not allowed");
  auto no_plain = Script().session.authenticate_plain("a", "b");
  ASSERT_FALSE(no_plain.ok());
  EXPECT_EQ(no_plain.error().code, Errc::internal);  // no greeting yet
}

// STARTTLS: output stops until the switch, capabilities are discarded and must be re-requested,
// and only then may credentials go out.
TEST(Session, CapabilitiesResetAfterStarttls) {
  Script s(SessionOptions{});
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"));
  ASSERT_TRUE(s.session.starttls().ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 STARTTLS\r\n");
  EXPECT_OK(s.server("T1 OK Begin TLS negotiation now.\r\n"));
  EXPECT_EQ(s.session.pending_switch(), TransportSwitch::tls);
  EXPECT_FALSE(s.session.capabilities_known());
  EXPECT_FALSE(s.session.has_capability("LOGINDISABLED"));
  EXPECT_EQ(s.client(), "");  // nothing before the handshake
  s.session.transport_switched();
  EXPECT_TRUE(s.session.secure_transport());
  EXPECT_EQ(s.client(), "T2 NOOP\r\n");
  ASSERT_TRUE(s.session.capability().ok());
  EXPECT_OK(s.server("T2 OK\r\n"));
  EXPECT_EQ(s.client(), "T3 CAPABILITY\r\n");
  EXPECT_OK(s.server("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nT3 OK\r\n"));
  EXPECT_FALSE(s.session.has_capability("STARTTLS"));
  ASSERT_TRUE(s.session.login("fred", "s3cr3t").ok());
  EXPECT_EQ(s.client(), "T4 LOGIN fred s3cr3t\r\n");
  auto again = s.session.starttls();
  ASSERT_FALSE(again.ok());
}

// Bytes that arrive after the STARTTLS OK but before the handshake were not sent by the TLS
// peer: response injection (CVE-2020-15953 class).
TEST(Session, ResponseAfterStarttlsOkIsInjection) {
  Script s(SessionOptions{});
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"));
  ASSERT_TRUE(s.session.starttls().ok());
  s.client();
  Status st = s.server("T1 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().to_string(),
            "security violation: response received after STARTTLS OK, before the TLS handshake "
            "(response injection)");
  EXPECT_TRUE(s.session.failed());
}

// STARTTLS is impossible after PREAUTH (RFC 9051 §6.2.1; CVE-2020-12398).
TEST(Session, StarttlsRefusedAfterPreauth) {
  Script s(SessionOptions{});
  EXPECT_OK(s.server("* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"));
  EXPECT_TRUE(s.session.preauthenticated());
  auto r = s.session.starttls();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().to_string(),
            "security violation: STARTTLS is only possible before authentication");
}

// COMPRESS: output stops until the shell installs the deflate layer; COMPRESSIONACTIVE is a
// plain refusal.
TEST(Session, CompressSwitch) {
  Script s;
  preauth(s, kCaps);
  ASSERT_TRUE(s.session.compress_deflate().ok());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T1 COMPRESS DEFLATE\r\n");
  EXPECT_OK(s.server("T1 OK DEFLATE active\r\n"));
  EXPECT_EQ(s.session.pending_switch(), TransportSwitch::deflate);
  EXPECT_EQ(s.client(), "");
  s.session.transport_switched();
  EXPECT_TRUE(s.session.compression_active());
  EXPECT_EQ(s.client(), "T2 NOOP\r\n");
  EXPECT_FALSE(s.session.compress_deflate().ok());

  Script refused;
  preauth(refused, kCaps);
  ASSERT_TRUE(refused.session.compress_deflate().ok());
  refused.client();
  EXPECT_OK(refused.server("T1 NO [COMPRESSIONACTIVE] TLS compression is on\r\n"));
  EXPECT_EQ(refused.session.pending_switch(), TransportSwitch::none);
  EXPECT_FALSE(refused.session.compression_active());
}

// IDLE: "+" starts idling, updates are unsolicited, nothing else is sent until DONE completes.
TEST(Session, IdleAndDone) {
  Script s;
  select_inbox(s, kCaps);
  ASSERT_TRUE(s.session.idle().ok());
  EXPECT_EQ(s.client(), "T2 IDLE\r\n");
  EXPECT_FALSE(s.session.idling());
  EXPECT_OK(s.server("+ idling\r\n"));
  EXPECT_TRUE(s.session.idling());
  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "");
  EXPECT_OK(s.server("* 173 EXISTS\r\n"));
  auto update = s.session.next_unsolicited();
  ASSERT_TRUE(update.has_value());
  EXPECT_EQ(std::get<ExistsData>(update->data).count, 173u);
  EXPECT_EQ(s.session.mailbox()->exists, 173u);
  EXPECT_OK(s.session.idle_done());
  EXPECT_EQ(s.client(), "DONE\r\n");
  EXPECT_FALSE(s.session.idle_done().ok());  // once
  EXPECT_OK(s.server("T2 OK Idle completed.\r\n"));
  EXPECT_FALSE(s.session.idling());
  EXPECT_EQ(s.client(), "T3 NOOP\r\n");
  Completion idle = s.completion();
  EXPECT_EQ(idle.kind, CommandKind::idle);
  EXPECT_TRUE(idle.untagged.empty());

  // DONE requested before the "+" waits for it (RFC 2177 §3).
  EXPECT_OK(s.server("T3 OK\r\n"));
  ASSERT_TRUE(s.session.idle().ok());
  EXPECT_OK(s.session.idle_done());
  EXPECT_EQ(s.client(), "T4 IDLE\r\n");
  EXPECT_OK(s.server("+ idling\r\n"));
  EXPECT_EQ(s.client(), "DONE\r\n");
  EXPECT_OK(s.server("T4 OK\r\n"));
  EXPECT_EQ(s.session.in_flight(), 0u);
}

// RFC 7162 §6, the example: MODSEQs in FETCH do not move HIGHESTMODSEQ before the tagged
// response, and a [HIGHESTMODSEQ] code wins over higher FETCH values seen in the same window.
TEST(Session, HighestModSeqAdvancesOnlyAtTaggedCompletion) {
  Script s;
  select_inbox(s, kCaps);
  const auto hms = [&] { return s.session.mailbox()->highestmodseq.value_or(0); };
  EXPECT_EQ(hms(), 90u);
  EXPECT_EQ(s.session.mailbox()->uidvalidity, 3857529045u);
  EXPECT_EQ(s.session.mailbox()->uidnext, 201u);
  EXPECT_EQ(s.session.mailbox()->exists, 172u);

  cmd::StoreOp store;
  store.flags = {"\\Seen"};
  store.unchanged_since = 96;
  ASSERT_TRUE(s.session.uid_store(SequenceSet::of({6, 7, 8}), store).ok());
  EXPECT_EQ(s.client(), "T2 UID STORE 6:8 (UNCHANGEDSINCE 96) +FLAGS.SILENT (\\Seen)\r\n");
  EXPECT_OK(s.server("* 1 FETCH (UID 6 MODSEQ (103))\r\n* 2 FETCH (UID 7 MODSEQ (101))\r\n"));
  EXPECT_EQ(hms(), 90u);
  EXPECT_EQ(s.session.mailbox()->pending_modseq, 103u);
  EXPECT_OK(s.server("* OK [HIGHESTMODSEQ 99] VANISHED reply with MODSEQ 100 is delayed\r\n"));
  EXPECT_EQ(hms(), 99u);
  EXPECT_OK(s.server("T2 OK [MODIFIED 8] done\r\n"));
  EXPECT_EQ(hms(), 99u);  // the code wins over MODSEQ 103

  store.unchanged_since.reset();
  ASSERT_TRUE(s.session.uid_store(SequenceSet::of({8}), store).ok());
  EXPECT_EQ(s.client(), "T3 UID STORE 8 +FLAGS.SILENT (\\Seen)\r\n");
  EXPECT_OK(s.server(
      "* 3 FETCH (UID 8 MODSEQ (104))\r\nT3 OK [HIGHESTMODSEQ 99] Still delaying VANISHED\r\n"));
  EXPECT_EQ(hms(), 99u);

  ASSERT_TRUE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "T4 NOOP\r\n");
  EXPECT_OK(s.server("* VANISHED 8\r\nT4 OK [HIGHESTMODSEQ 104] done\r\n"));
  EXPECT_EQ(hms(), 104u);
  EXPECT_EQ(s.session.mailbox()->exists, 171u);

  // Without a code, the highest FETCH MODSEQ becomes the value at the tagged response.
  ASSERT_TRUE(s.session.noop().ok());
  s.client();
  EXPECT_OK(s.server("* 4 FETCH (UID 9 MODSEQ (110) FLAGS (\\Seen))\r\n"));
  EXPECT_EQ(hms(), 104u);
  EXPECT_OK(s.server("T5 OK done\r\n"));
  EXPECT_EQ(hms(), 110u);
  EXPECT_FALSE(s.session.mailbox()->modseq_regressed);

  // Going backwards is accepted (the safe direction) but flagged with evidence.
  ASSERT_TRUE(s.session.noop().ok());
  s.client();
  EXPECT_OK(s.server("* OK [HIGHESTMODSEQ 100]\r\nT6 OK\r\n"));
  EXPECT_EQ(hms(), 100u);
  EXPECT_TRUE(s.session.mailbox()->modseq_regressed);
  ASSERT_EQ(s.session.mailbox()->anomalies.size(), 1u);
  EXPECT_EQ(s.session.mailbox()->anomalies[0], "HIGHESTMODSEQ went backwards from 110 to 100");
}

// SELECT with QRESYNC: refused until ENABLED QRESYNC was seen; [CLOSED] separates the old
// mailbox's data from the new one's; NOMODSEQ drops the value.
TEST(Session, QresyncSelectAndClosedBoundary) {
  Script s;
  preauth(s, kCaps);
  cmd::SelectOptions q;
  q.qresync = cmd::QresyncParams{67890007, 20050715194045000ull, {}, {}};
  auto early = s.session.select("INBOX", q);
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().to_string(),
            "internal error: SELECT (QRESYNC ...) before the server confirmed ENABLED QRESYNC");
  auto vanished =
      s.session.uid_fetch(SequenceSet::of({1}), "(FLAGS)", {.changed_since = 5, .vanished = true});
  ASSERT_FALSE(vanished.ok());

  ASSERT_TRUE(s.session.enable({"QRESYNC"}).ok());
  EXPECT_EQ(s.client(), "T1 ENABLE QRESYNC\r\n");
  EXPECT_OK(s.server("* ENABLED QRESYNC\r\nT1 OK\r\n"));
  ASSERT_TRUE(s.session.select("INBOX", q).ok());
  EXPECT_EQ(s.client(), "T2 SELECT INBOX (QRESYNC (67890007 20050715194045000))\r\n");
  EXPECT_OK(
      s.server("* 10 EXISTS\r\n* OK [UIDVALIDITY 67890007] x\r\n"
               "* OK [HIGHESTMODSEQ 20050715194045100] x\r\n"
               "* VANISHED (EARLIER) 41,43:116\r\n"
               "* 1 FETCH (UID 49 MODSEQ (20050715194045200) FLAGS (\\Seen))\r\n"
               "T2 OK [READ-WRITE] done\r\n"));
  EXPECT_EQ(s.session.mailbox()->exists, 10u);  // VANISHED (EARLIER) renumbers nothing
  EXPECT_EQ(s.session.mailbox()->highestmodseq, 20050715194045100ull);
  auto enable_late = s.session.enable({"CONDSTORE"});
  ASSERT_FALSE(enable_late.ok());  // RFC 5161 §3.1: not after SELECT

  cmd::SelectOptions examine;
  examine.examine = true;
  ASSERT_TRUE(s.session.select("R\xc3\xa9unions", examine).ok());
  EXPECT_EQ(s.client(), "T3 EXAMINE R&AOk-unions\r\n");
  EXPECT_OK(
      s.server("* 11 EXISTS\r\n"  // still the old mailbox
               "* OK [CLOSED] Previous mailbox closed\r\n"
               "* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n* OK [NOMODSEQ] no modseqs\r\n"
               "T3 OK [READ-ONLY] done\r\n"));
  ASSERT_TRUE(s.session.mailbox().has_value());
  EXPECT_EQ(s.session.mailbox()->name, "R\xc3\xa9unions");
  EXPECT_EQ(s.session.mailbox()->exists, 3u);
  EXPECT_TRUE(s.session.mailbox()->nomodseq);
  EXPECT_FALSE(s.session.mailbox()->highestmodseq.has_value());
  EXPECT_TRUE(s.session.mailbox()->read_only);
  EXPECT_FALSE(s.session.mailbox()->uidvalidity_changed);

  ASSERT_TRUE(s.session.select("Gone").ok());
  s.client();
  EXPECT_OK(s.server("T4 NO [NONEXISTENT] Mailbox doesn't exist\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::authenticated);
  EXPECT_FALSE(s.session.mailbox().has_value());
}

// Untagged data with nothing in flight is unsolicited; during LIST it belongs to LIST.
TEST(Session, UntaggedRouting) {
  Script s;
  preauth(s, kCaps);
  EXPECT_OK(s.server("* OK [ALERT] maintenance at noon\r\n"));
  ASSERT_TRUE(s.session.next_unsolicited().has_value());
  EXPECT_FALSE(s.session.next_unsolicited().has_value());
  cmd::ListOptions options;
  options.return_items = {"SUBSCRIBED", "CHILDREN"};
  options.status_items = {"UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"};
  ASSERT_TRUE(s.session.list("", {"*"}, options).ok());
  EXPECT_EQ(s.client(),
            "T1 LIST \"\" * RETURN (SUBSCRIBED CHILDREN STATUS (UIDVALIDITY UIDNEXT "
            "HIGHESTMODSEQ))\r\n");
  EXPECT_OK(
      s.server("* LIST (\\Subscribed \\HasNoChildren) \"/\" INBOX\r\n"
               "* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 5 HIGHESTMODSEQ 9)\r\n"
               "T1 OK List completed.\r\n"));
  Completion c = s.completion();
  ASSERT_EQ(c.untagged.size(), 2u);
  EXPECT_EQ(std::get<ListData>(c.untagged[0].data).mailbox, "INBOX");
  EXPECT_FALSE(s.session.next_unsolicited().has_value());
  // Mailbox data outside the selected state changes nothing.
  EXPECT_OK(s.server("* 5 EXISTS\r\n"));
  EXPECT_FALSE(s.session.mailbox().has_value());
}

// With a NOTIFY set, a STATUS that interleaves with another command's answer is also queued as
// unsolicited: the command keeps it, and the announcement is not lost to it. Other data is not.
TEST(Session, AnnouncementsDuringACommandAreAlsoUnsolicited) {
  Script s;
  preauth(s, kCaps);
  s.session.set_announcing(true);
  ASSERT_TRUE(s.session.noop().ok());
  s.client();
  EXPECT_OK(
      s.server("* STATUS Lists (MESSAGES 3 UIDNEXT 9 HIGHESTMODSEQ 12)\r\n"
               "* LIST () \"/\" New\r\n"
               "* OK [ALERT] not an announcement\r\n"
               "T1 OK NOOP completed.\r\n"));
  Completion c = s.completion();
  EXPECT_EQ(c.untagged.size(), 3u);
  auto status = s.session.next_unsolicited();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(std::get<StatusData>(status->data).mailbox, "Lists");
  auto list = s.session.next_unsolicited();
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(std::get<ListData>(list->data).mailbox, "New");
  EXPECT_FALSE(s.session.next_unsolicited().has_value());

  // NOTIFY NONE: back to plain routing, and what was queued can be dropped.
  s.session.set_announcing(false);
  ASSERT_TRUE(s.session.noop().ok());
  s.client();
  EXPECT_OK(s.server("* STATUS Lists (HIGHESTMODSEQ 13)\r\nT2 OK NOOP completed.\r\n"));
  EXPECT_EQ(s.completion().untagged.size(), 1u);
  EXPECT_FALSE(s.session.next_unsolicited().has_value());
  EXPECT_OK(s.server("* STATUS Lists (HIGHESTMODSEQ 14)\r\n"));
  s.session.discard_unsolicited();
  EXPECT_FALSE(s.session.next_unsolicited().has_value());
}

TEST(Session, UnknownTagIsProtocolError) {
  Script s;
  preauth(s, kCaps);
  ASSERT_TRUE(s.session.noop().ok());
  s.client();
  Status st = s.server("X9 OK what\r\n");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().to_string(), "protocol error: tagged response for unknown tag X9");
  EXPECT_TRUE(s.session.failed());
  EXPECT_FALSE(s.session.noop().ok());
  EXPECT_EQ(s.client(), "");
  // A tag that was queued but not yet sent is just as unknown to the server.
  Script q;
  preauth(q, kCaps);
  ASSERT_TRUE(q.session.capability().ok());
  ASSERT_TRUE(q.session.noop().ok());
  q.client();
  EXPECT_FALSE(q.server("T2 OK\r\n").ok());
}

TEST(Session, UnexpectedContinuationAndBadGreeting) {
  Script s;
  preauth(s, kCaps);
  Status none = s.server("+ hello\r\n");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().to_string(),
            "protocol error: continuation request with no command in progress");

  Script t;
  preauth(t, kCaps);
  ASSERT_TRUE(t.session.noop().ok());
  t.client();
  Status stray = t.server("+ hello\r\n");
  ASSERT_FALSE(stray.ok());
  EXPECT_EQ(stray.error().message, "unexpected continuation request for T1");

  Script g;
  Status greeting = g.server("* 3 EXISTS\r\n");
  ASSERT_FALSE(greeting.ok());
  EXPECT_EQ(greeting.error().message, "expected a greeting (OK, PREAUTH or BYE)");
}

// BYE: nothing more is sent; EOF after BYE with commands pending is an error naming the BYE,
// after LOGOUT it is the normal end.
TEST(Session, ByeHandling) {
  Script s;
  select_inbox(s, kCaps);
  ASSERT_TRUE(s.session.uid_fetch(SequenceSet::of({1}), "(FLAGS)").ok());
  s.client();
  EXPECT_OK(s.server("* BYE Server shutting down\r\n"));
  EXPECT_EQ(s.session.state(), ConnectionState::logout);
  ASSERT_TRUE(s.session.bye().has_value());
  auto after = s.session.noop();
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code, Errc::eof);
  EXPECT_EQ(s.client(), "");
  Status eof = s.session.on_eof();
  ASSERT_FALSE(eof.ok());
  EXPECT_EQ(eof.error().to_string(),
            "connection closed: server closed the connection (BYE Server shutting down) with 1 "
            "command(s) unanswered");

  Script l;
  preauth(l, kCaps);
  ASSERT_TRUE(l.session.logout().ok());
  EXPECT_EQ(l.client(), "T1 LOGOUT\r\n");
  EXPECT_OK(l.server("* BYE Logging out\r\nT1 OK Logout completed.\r\n"));
  Completion c = l.completion();
  ASSERT_EQ(c.untagged.size(), 1u);
  EXPECT_OK(l.session.on_eof());

  Script g;
  EXPECT_OK(g.server("* BYE Too many connections\r\n"));
  EXPECT_EQ(g.session.state(), ConnectionState::logout);
  EXPECT_EQ(g.session.bye()->text, "Too many connections");

  Script early;
  EXPECT_EQ(early.session.on_eof().error().message, "connection closed before the greeting");
}

TEST(Session, WireOptionsFromCapabilities) {
  Script s;
  preauth(s, "IMAP4rev1 LITERAL+ LITERAL- BINARY");
  EXPECT_EQ(s.session.wire_options().literals, LiteralMode::minus);  // both: the safe reading
  EXPECT_TRUE(s.session.wire_options().binary);
  Script p;
  preauth(p, "IMAP4rev1 LITERAL+");
  EXPECT_EQ(p.session.wire_options().literals, LiteralMode::plus);
  Script n;
  preauth(n, "IMAP4rev1");
  EXPECT_EQ(n.session.wire_options().literals, LiteralMode::synchronizing);
}

// A command whose line cannot be split (SELECT with a huge known-uids set) is refused whole.
TEST(Session, OverlongCommandLineRefused) {
  Script s;
  preauth(s, kCaps);
  ASSERT_TRUE(s.session.enable({"QRESYNC"}).ok());
  s.client();
  EXPECT_OK(s.server("* ENABLED QRESYNC\r\nT1 OK\r\n"));
  cmd::SelectOptions q;
  q.qresync = cmd::QresyncParams{1, 2, {}, {}};
  for (std::uint32_t i = 0; i < 2000; ++i) q.qresync->known_uids.add(1000 + 2 * i);
  auto r = s.session.select("INBOX", q);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::limit);
  EXPECT_EQ(s.client(), "");
}

// Traces name each line as it leaves, with secrets and long literals summarized.
TEST(Session, TracesAreRedacted) {
  SessionOptions options = secure();
  options.trace = true;
  Script s(options);
  EXPECT_OK(s.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"));
  ASSERT_TRUE(s.session.login("fred", "p\xc3\xa4ss").ok());
  EXPECT_EQ(s.client(), "T1 LOGIN fred {5}\r\n");
  EXPECT_OK(s.server("+ OK\r\n"));
  EXPECT_EQ(s.client(), "p\xc3\xa4ss\r\n");
  EXPECT_EQ(s.session.next_trace(), "T1 LOGIN fred {5}");
  EXPECT_EQ(s.session.next_trace(), "<redacted>");
  EXPECT_EQ(s.session.next_trace(), std::nullopt);
}

}  // namespace
}  // namespace twinbox::imap

namespace twinbox::imap {
namespace {

Response tagged_status(std::string tag, Condition condition, ResponseCode code = {}) {
  StatusResponse s;
  s.tag = std::move(tag);
  s.condition = condition;
  s.code = std::move(code);
  return Response{std::move(s)};
}

// Random commands and random (often wrong) server responses, built as values: the session may
// fail, but never crashes, never writes after failing, and never exceeds its pipeline window.
TEST(Session, RandomDialoguesKeepInvariants) {
  std::mt19937 rng(1234);
  const auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  for (int round = 0; round < 300; ++round) {
    SessionOptions options = secure();
    options.max_in_flight = 4;
    Session s(options);
    StatusResponse greeting;
    greeting.condition = Condition::preauth;
    greeting.code.kind = CodeKind::capability;
    greeting.code.atoms = {"IMAP4REV1", "IDLE", "CONDSTORE", "UIDPLUS", "MULTIAPPEND"};
    ASSERT_TRUE(s.on_response(Response{greeting}).ok());
    ASSERT_TRUE(s.select("INBOX").ok());
    for (int step = 0; step < 80; ++step) {
      switch (pick(9)) {
        case 0:
          (void)s.noop();
          break;
        case 1:
          (void)s.uid_fetch(SequenceSet::of({static_cast<Uid>(1 + pick(50))}), "(FLAGS)");
          break;
        case 2: {
          std::vector<cmd::AppendMessage> m(1 + pick(2));
          for (auto& x : m) x.content = std::string(static_cast<std::size_t>(pick(8)), 'x');
          (void)s.append("INBOX", std::move(m));
          break;
        }
        case 3:
          (void)s.idle();
          break;
        case 4:
          (void)s.idle_done();
          break;
        case 5:
          while (auto c = s.next_output()) {
            ASSERT_FALSE(s.failed());
          }
          break;
        case 6: {
          ResponseCode code;
          if (pick(3) == 0) {
            code.kind = CodeKind::highestmodseq;
            code.number = 1 + static_cast<ModSeq>(pick(1000));
          }
          const Condition conditions[] = {Condition::ok, Condition::no, Condition::bad};
          (void)s.on_response(
              tagged_status(fmt::format("T{}", 1 + pick(12)), conditions[pick(3)], code));
          break;
        }
        case 7: {
          FetchData f;
          f.seq = 1 + static_cast<SeqNum>(pick(5));
          f.modseq = 1 + static_cast<ModSeq>(pick(1000));
          (void)s.on_response(Response{f});
          break;
        }
        default: {
          const int k = pick(4);
          if (k == 0) (void)s.on_response(Response{ContinuationRequest{}});
          if (k == 1)
            (void)s.on_response(Response{ExistsData{static_cast<std::uint32_t>(pick(9))}});
          if (k == 2) (void)s.on_response(Response{VanishedData{false, SequenceSet::of({3, 4})}});
          if (k == 3) (void)s.on_response(Response{ExpungeData{1}});
          break;
        }
      }
      ASSERT_LE(s.in_flight(), options.max_in_flight);
      if (s.failed()) {
        ASSERT_FALSE(s.next_output().has_value());
        break;
      }
    }
  }
}

}  // namespace
}  // namespace twinbox::imap
