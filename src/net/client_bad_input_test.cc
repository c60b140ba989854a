// Hostile server input at the framing and parser level, end to end: every kind of bad server input
// (huge, negative, short or overlong literals, NUL bytes, bare CR or LF, runaway lines, deep
// nesting, zero or out-of-range UIDs and MODSEQs, malformed APPENDUID/COPYUID, unknown tags,
// garbage) reaches the client in one chunk and byte by byte; the client must answer with a clear
// error and close the connection (or, for harmless quirks, carry on), never crash or allocate
// without bound.
#include <gtest/gtest.h>

#include "fake_server/fake_server.h"
#include "net/client.h"
#include "net/run_coroutine.h"
#include "net/test_endpoint.h"

namespace twinbox::net {
namespace {

using fake_server::FakeServer;
using fake_server::Script;
using namespace std::chrono_literals;
using namespace std::string_literals;

struct BadInput {
  const char* name;
  std::string bytes;  // sent after the client's NOOP, instead of a normal answer
  bool fatal;         // true: the client must fail and close; false: tolerated quirk
};

void PrintTo(const BadInput& input, std::ostream* os) { *os << input.name; }

std::vector<BadInput> bad_inputs() {
  return {
      {"LiteralSize2To64", "* 1 FETCH (BODY[] {18446744073709551616}\r\n", true},
      {"LiteralSize2To63", "* 1 FETCH (BODY[] {9223372036854775808}\r\n", true},
      {"LiteralSize4GiB", "* 1 FETCH (BODY[] {4294967296}\r\n", true},
      {"LiteralOverLimit", "* 1 FETCH (BODY[] {2147483648}\r\n", true},
      {"ShortLiteralThenEof", "* 1 FETCH (UID 1 BODY[] {10}\r\nabc", true},
      {"LiteralLongerThanAnnounced",
       "* 1 FETCH (UID 1 BODY[] {3}\r\nabcdef)\r\n{tag} OK forged\r\n", true},
      {"NonSynchronizingLiteralFromServer", "* 1 FETCH (UID 1 BODY[] {5+}\r\nhello)\r\n", true},
      {"NulInQuotedString", "* LIST () \"/\" \"a\0b\"\r\n"s, true},
      {"NulInAtom", "* CAPABILITY IMAP4rev1 X\0Y\r\n"s, true},
      {"CrWithoutLf", "* OK hello\rworld\r\n", true},
      {"DeepNesting", "* 1 FETCH (UID 1 BODYSTRUCTURE " + std::string(10000, '(') + ")\r\n", true},
      {"UidZero", "* 1 FETCH (UID 0 FLAGS ())\r\n", true},
      {"SequenceZero", "* 0 FETCH (UID 5 FLAGS ())\r\n", true},
      {"ModseqZero", "* 1 FETCH (UID 1 MODSEQ (0))\r\n", true},
      {"Modseq2To63", "* 1 FETCH (UID 1 MODSEQ (9223372036854775808))\r\n", true},
      {"Modseq2To64Minus1", "* 1 FETCH (UID 1 MODSEQ (18446744073709551615))\r\n", true},
      {"HighestModseq2To63", "* OK [HIGHESTMODSEQ 9223372036854775808] x\r\n", true},
      {"CopyUidSetsOfDifferentSize", "{tag} OK [COPYUID 7 1:3 10:11] done\r\n", true},
      {"AppendUidWithStar", "{tag} OK [APPENDUID 7 *] done\r\n", true},
      {"UnknownTag", "ZZZ9 OK what\r\n", true},
      // A sign makes no number valid: `* -135 EXISTS` was an unknown response (size read as 0).
      {"ExistsNegative", "* -135 EXISTS\r\n{tag} OK done\r\n", true},
      {"FetchUidWithPlus", "* 1 FETCH (UID +5 FLAGS ())\r\n{tag} OK done\r\n", true},
      {"LiteralSizeNegative", "* 1 FETCH (UID 1 BODY[] {-5}\r\nhello)\r\n{tag} OK done\r\n", true},
      {"Garbage", "\x01\x02\x03 garbage \xff\r\n", true},
      // Tolerated quirks: the NOOP completes normally.
      {"HighestModseqWithoutText", "* OK [HIGHESTMODSEQ 5]\r\n{tag} OK done\r\n", false},
      {"UnknownCodeAndResponse",
       "* OK [XFOO bar baz] x\r\n* XAPPLEPUSHSERVICE aps\r\n{tag} OK done\r\n", false},
      {"TrailingSpaces", "* CAPABILITY IMAP4rev1 NOOP \r\n* SEARCH 1 2 \r\n{tag} OK done\r\n",
       false},
      {"VanishedEarlierHugeRange", "* VANISHED (EARLIER) 1:4294967295\r\n{tag} OK done\r\n", false},
      {"BareLf", "* OK fine\n{tag} OK done\n", false},
      {"ZeroLengthBody", "* 1 FETCH (UID 1 BODY[] {0}\r\n)\r\n{tag} OK done\r\n", false},
      {"BinaryLiteralWithNul", "* 1 FETCH (UID 1 BINARY[] ~{3}\r\na\0b)\r\n"s + "{tag} OK done\r\n",
       false},
  };
}

class ClientBadInput : public ::testing::TestWithParam<std::tuple<BadInput, bool>> {};

TEST_P(ClientBadInput, ClearErrorAndClosedConnectionOrCarryOn) {
  const auto& [input, byte_at_a_time] = GetParam();
  Script script;
  script.send("* OK [CAPABILITY IMAP4rev1] hi\r\n")
      .expect_tagged("LOGIN")
      .send("{tag} OK [CAPABILITY IMAP4rev1] in\r\n")
      .expect_tagged_line("NOOP");
  if (byte_at_a_time) {
    script.send_chunked(input.bytes, 1, 0ms);
  } else {
    script.send(input.bytes);
  }
  if (input.fatal) {
    script.shutdown_write().expect_eof();
  }
  fake_server::Options options;
  options.step_timeout = 3000ms;
  FakeServer server(std::move(script), options);

  Endpoint e = cleartext_endpoint(server.port(), 2s);
  e.limits.max_literal = 64 << 20;
  auto client = run_coroutine(Client::connect(e));
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  auto& c = **client;
  auto done = run_coroutine(c.wait(c.session().noop()));
  if (input.fatal) {
    ASSERT_FALSE(done.ok()) << input.name << " was accepted";
    EXPECT_NE(done.error().code, Errc::internal) << done.error().to_string();
    EXPECT_NE(done.error().code, Errc::timeout) << done.error().to_string();
    EXPECT_FALSE(done.error().message.empty());
    // A second use of the client reports the same failure instead of touching the socket.
    auto again = run_coroutine(c.wait(c.session().noop()));
    EXPECT_FALSE(again.ok());
    server.wait();
    EXPECT_TRUE(server.result().client_closed) << server.describe();
  } else {
    ASSERT_TRUE(done.ok()) << input.name << ": " << done.error().to_string();
    EXPECT_TRUE(done->ok());
  }
}

INSTANTIATE_TEST_SUITE_P(ProtocolChecklist, ClientBadInput,
                         ::testing::Combine(::testing::ValuesIn(bad_inputs()), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<ClientBadInput::ParamType>& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) ? "_ByteAtATime" : "_OneChunk");
                         });

// A corrupted server sends 10 MiB without CRLF, then real responses.
// The 10 MiB fit under Limits::max_line, so they and the FETCH after them arrive as one line;
// the NOOP must fail with a protocol error naming that line, and neither the FETCH (a flag change)
// nor the tagged OK after it may be taken as the answer.
struct LongLine {
  const char* name;
  std::string head;  // what the 10 MiB of 'x' follow
  std::string message;
  std::string evidence;  // how the error's evidence starts
};

void PrintTo(const LongLine& input, std::ostream* os) { *os << input.name; }

class ClientTenMebibyteLine : public ::testing::TestWithParam<LongLine> {};

TEST_P(ClientTenMebibyteLine, FailsWithProtocolErrorAndInterpretsNothingAfter) {
  const LongLine& input = GetParam();
  const std::string junk(10 << 20, 'x');
  fake_server::Options options;
  options.step_timeout = 10000ms;
  FakeServer server(
      Script()
          .send("* OK [CAPABILITY IMAP4rev1] hi\r\n")
          .expect_tagged("LOGIN")
          .send("{tag} OK [CAPABILITY IMAP4rev1] in\r\n")
          .expect_tagged_line("NOOP")
          .send(input.head + junk + "* 3 FETCH (UID 7 FLAGS (\\Seen))\r\n{tag} OK done\r\n")
          .shutdown_write()
          .expect_eof(),
      options);

  Endpoint e;
  e.type = EndpointType::imap;
  e.host = "127.0.0.1";
  e.port = std::to_string(server.port());
  e.starttls = false;
  e.username = "joe";
  e.password = "pw";
  e.io_timeout = 10s;
  auto client = run_coroutine(Client::connect(e));
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  auto& c = **client;
  auto done = run_coroutine(c.wait(c.session().noop()));
  ASSERT_FALSE(done.ok()) << "the NOOP completed with " << done->status.text.size()
                          << " bytes of text";
  EXPECT_EQ(done.error().code, Errc::protocol) << done.error().to_string();
  EXPECT_EQ(done.error().message, input.message);
  EXPECT_TRUE(done.error().has_offset);
  EXPECT_EQ(done.error().evidence.substr(0, input.evidence.size()), input.evidence);
  EXPECT_EQ(c.session().next_unsolicited(), std::nullopt);
  server.wait();
  EXPECT_TRUE(server.ok()) << server.describe();
  EXPECT_EQ(server.result().received(), "T1 LOGIN joe pw\r\nT2 NOOP\r\n");
}

INSTANTIATE_TEST_SUITE_P(
    ProtocolChecklist, ClientTenMebibyteLine,
    ::testing::Values(
        LongLine{"UntaggedOkText", "* OK ",
                 "remote: bad response from the server: response text of 10485791 bytes exceeds "
                 "the limit of 65536",
                 "* OK xxx"},
        LongLine{"UnknownResponse", "* XJUNK ",
                 "remote: bad response from the server: unknown response of 10485797 bytes "
                 "exceeds the limit of 65536",
                 "* XJUNK xxx"},
        LongLine{"TaggedOkText", "{tag} OK ",
                 "remote: bad response from the server: response text of 10485791 bytes exceeds "
                 "the limit of 65536",
                 "T2 OK xxx"},
        LongLine{"NoStructure", "", "remote: bad response from the server: expected SP after tag",
                 "...xxx"}),
    [](const ::testing::TestParamInfo<LongLine>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace twinbox::net
