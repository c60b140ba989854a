// Reader rows: every input is fed whole, byte by byte and in 2- and 7-byte chunks; the frames,
// the error and mid_frame() must be the same every time (a CRLF split across TCP segments, or
// 1-byte segments everywhere, must not change the result).
#include "imap/reader.h"

// Rows use designated initializers that name only the fields a row is about; g++ -Wextra would
// flag every omitted one.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <gtest/gtest.h>

#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace twinbox::imap {

void PrintTo(const Frame& f, std::ostream* os) {
  *os << "Frame{\"" << printable(f.text, 120) << "\", {";
  for (const auto& l : f.literals) *os << "\"" << printable(l, 40) << "\" ";
  *os << "}, " << f.stream_offset << "}";
}

namespace {

using namespace std::string_literals;

struct Fed {
  std::vector<Frame> frames;
  std::optional<Error> error;
  bool mid_frame = false;
};

Fed feed(std::string_view input, std::size_t chunk, const Limits& limits) {
  Fed out;
  Reader reader(limits);
  for (std::size_t pos = 0; pos < input.size(); pos += chunk) {
    const Status st = reader.feed(input.substr(pos, chunk));
    while (auto frame = reader.next()) out.frames.push_back(std::move(*frame));
    if (!st) {
      out.error = st.error();
      break;
    }
  }
  out.mid_frame = reader.mid_frame();
  return out;
}

struct ExpectedError {
  Errc code;
  std::string message;
  std::size_t offset;
};

struct FrameRow {
  std::string name;
  std::string input;
  std::vector<Frame> frames;
  std::optional<ExpectedError> error = std::nullopt;
  bool mid_frame = false;
  Limits limits = {};
};

void PrintTo(const FrameRow& row, std::ostream* os) { *os << row.name; }

std::vector<FrameRow> frame_rows() {
  const std::string fetch = "* 1 FETCH (BODY[] {5}\r\nhello)\r\n";
  std::vector<FrameRow> rows = {
      {"single_line", "* 1 EXISTS\r\n", {{"* 1 EXISTS", {}, 0}}},
      {"two_lines_with_offsets",
       "* 1 EXISTS\r\n* 2 RECENT\r\n",
       {{"* 1 EXISTS", {}, 0}, {"* 2 RECENT", {}, 12}}},
      {"literal", fetch, {{"* 1 FETCH (BODY[] {5}\r\n)", {"hello"}, 0}}},
      {"literal_then_next_frame_offset",
       fetch + "* 2 EXISTS\r\n",
       {{"* 1 FETCH (BODY[] {5}\r\n)", {"hello"}, 0}, {"* 2 EXISTS", {}, fetch.size()}}},
      // Literal bytes are opaque: CRLF, braces, NUL and a fake announcement inside.
      {"literal_with_crlf_braces_nul",
       "* 1 FETCH (BODY[] {13}\r\na\r\n{3}\r\n\0x}\r\n)\r\n"s,
       {{"* 1 FETCH (BODY[] {13}\r\n)", {"a\r\n{3}\r\n\0x}\r\n"s}, 0}}},
      {"literal8_with_nul",
       "* 1 FETCH (BINARY[] ~{4}\r\n\0\0\0\0)\r\n"s,
       {{"* 1 FETCH (BINARY[] ~{4}\r\n)", {"\0\0\0\0"s}, 0}}},
      {"literal_zero", "* 1 FETCH (BODY[] {0}\r\n)\r\n", {{"* 1 FETCH (BODY[] {0}\r\n)", {""}, 0}}},
      {"literal_leading_zeros",
       "* 1 FETCH (BODY[] {003}\r\nabc)\r\n",
       {{"* 1 FETCH (BODY[] {003}\r\n)", {"abc"}, 0}}},
      {"two_literals",
       "* 1 FETCH (BODY[1] {1}\r\na BODY[2] {2}\r\nbc)\r\n",
       {{"* 1 FETCH (BODY[1] {1}\r\n BODY[2] {2}\r\n)", {"a", "bc"}, 0}}},
      {"literal_ends_response",
       "* LIST () \"/\" {3}\r\nabc\r\n",
       {{"* LIST () \"/\" {3}\r\n", {"abc"}, 0}}},
      {"literal_then_literal_back_to_back",
       "* X {1}\r\na{1}\r\nb\r\n",
       {{"* X {1}\r\n{1}\r\n", {"a", "b"}, 0}}},
      // Bare LF is a line end; after an announcement it is stored as CRLF (reader.h).
      {"bare_lf", "* 1 EXISTS\n* 2 EXISTS\r\n", {{"* 1 EXISTS", {}, 0}, {"* 2 EXISTS", {}, 11}}},
      {"bare_lf_after_announcement",
       "* 1 FETCH (BODY[] {2}\nhi)\n",
       {{"* 1 FETCH (BODY[] {2}\r\n)", {"hi"}, 0}}},
      {"empty_line_is_an_empty_frame", "\r\n* 1 EXISTS\r\n", {{"", {}, 0}, {"* 1 EXISTS", {}, 2}}},
      {"not_announcements",
       "* OK {abc}\r\n* OK {}\r\n* OK {5\r\n* OK 5}\r\n* OK {5-}\r\n",
       {{"* OK {abc}", {}, 0},
        {"* OK {}", {}, 12},
        {"* OK {5", {}, 21},
        {"* OK 5}", {}, 30},
        {"* OK {5-}", {}, 39}}},
      {"eight_bit_text", "* OK h\xc3\xa9llo \xff\r\n", {{"* OK h\xc3\xa9llo \xff", {}, 0}}},

      // Incomplete input (e.g. a literal shorter than announced, then EOF): no frame, mid_frame()
      // true.
      {"short_literal_then_eof", "* 1 FETCH (BODY[] {10}\r\nhello", {}, std::nullopt, true},
      {"partial_line_then_eof", "* 1 EXI", {}, std::nullopt, true},
      {"cr_at_eof", "* OK a\r", {}, std::nullopt, true},
      {"announcement_then_eof", "* 1 FETCH (BODY[] {0}\r\n", {}, std::nullopt, true},
      {"complete_then_partial", "* 1 EXISTS\r\n* 2", {{"* 1 EXISTS", {}, 0}}, std::nullopt, true},
      // A literal longer than announced: the extra bytes become lines (RFC 9051 §4.3: the
      // announced size alone delimits a literal), so a forged tagged OK in them is just a line.
      {"literal_longer_than_announced",
       "* 1 FETCH (BODY[] {5}\r\nhelloXX a1 OK forged)\r\n",
       {{"* 1 FETCH (BODY[] {5}\r\nXX a1 OK forged)", {"hello"}, 0}}},

      // Errors: CR without LF, NUL bytes, non-synchronizing literals from the server (RFC 7888
      // defines them for the client only), lines and literals over the limits (huge literal
      // sizes, 2^31 and above, are added after the table)
      {"cr_without_lf",
       "* OK a\rb\r\n",
       {},
       ExpectedError{Errc::protocol, "CR not followed by LF in line (stream offset 6)", 6}},
      {"cr_without_lf_second_line",
       "* 1 EXISTS\r\n* OK \rb\r\n",
       {{"* 1 EXISTS", {}, 0}},
       ExpectedError{Errc::protocol, "CR not followed by LF in line (stream offset 17)", 5}},
      {"cr_cr_lf",
       "* OK a\r\r\n",
       {},
       ExpectedError{Errc::protocol, "CR not followed by LF in line (stream offset 6)", 6}},
      {"nul_in_line",
       "* OK a\0b\r\n"s,
       {},
       ExpectedError{Errc::protocol, "NUL byte in line (stream offset 6)", 6}},
      {"nul_after_literal",
       "* 1 FETCH (BODY[] {1}\r\nx \0)\r\n"s,
       {},
       ExpectedError{Errc::protocol, "NUL byte in line (stream offset 25)", 1}},
      {"non_synchronizing_literal",
       "* 1 FETCH (BODY[] {5+}\r\nhello)\r\n",
       {},
       ExpectedError{Errc::protocol, "non-synchronizing literal from server (stream offset 18)",
                     18}},
      {"non_synchronizing_literal8",
       "* 1 FETCH (BINARY[] ~{5+}\r\nhello)\r\n",
       {},
       ExpectedError{Errc::protocol, "non-synchronizing literal from server (stream offset 20)",
                     20}},
      {"line_at_limit",
       "0123456789\r\n",
       {{"0123456789", {}, 0}},
       std::nullopt,
       false,
       Limits{.max_line = 10}},
      {"line_over_limit",
       "0123456789A\r\n",
       {},
       ExpectedError{Errc::limit, "line longer than 10 bytes (stream offset 0)", 0},
       false,
       Limits{.max_line = 10}},
      {"line_over_limit_bare_lf",
       "0123456789A\n",
       {},
       ExpectedError{Errc::limit, "line longer than 10 bytes (stream offset 0)", 0},
       false,
       Limits{.max_line = 10}},
      {"line_over_limit_without_end",
       "0123456789AB",
       {},
       ExpectedError{Errc::limit, "line longer than 10 bytes (stream offset 0)", 0},
       false,
       Limits{.max_line = 10}},
      {"line_over_limit_after_literal",
       "* X {1}\r\na0123456789A\r\n",
       {},
       ExpectedError{Errc::limit, "line longer than 10 bytes (stream offset 10)", 0},
       false,
       Limits{.max_line = 10}},
      {"literal_at_limit",
       "* X {5}\r\nhello\r\n",
       {{"* X {5}\r\n", {"hello"}, 0}},
       std::nullopt,
       false,
       Limits{.max_literal = 5}},
      {"literal_over_limit",
       "* X {6}\r\nhello!\r\n",
       {},
       ExpectedError{Errc::limit, "literal of 6 bytes exceeds the limit of 5 (stream offset 4)", 4},
       false,
       Limits{.max_literal = 5}},
      // A well-formed 200 MB body over a 50 MB limit is refused at its announcement; nothing of
      // it is buffered.
      {"literal_200mb_over_50mb_limit",
       "* 1 FETCH (UID 5 BODY[] {209715200}\r\nFrom: x\r\n",
       {},
       ExpectedError{Errc::limit,
                     "literal of 209715200 bytes exceeds the limit of 52428800 (stream offset 24)",
                     24},
       false,
       Limits{.max_literal = 50 << 20}},
      {"too_many_literals",
       "* X {1}\r\na{1}\r\nb{1}\r\nc\r\n",
       {},
       ExpectedError{Errc::limit, "more than 2 literals in one response (stream offset 16)", 0},
       false,
       Limits{.max_literals_per_response = 2}},
  };
  for (const char* size : {"18446744073709551616", "9223372036854775808", "4294967296",
                           "2147483648", "99999999999999999999999999999999"}) {
    rows.push_back({fmt::format("huge_literal_{}", std::string_view(size).substr(0, 20)),
                    fmt::format("* 1 FETCH (BODY[] {{{}}}\r\n", size),
                    {},
                    ExpectedError{Errc::limit,
                                  fmt::format("literal of {} bytes exceeds the limit of "
                                              "268435456 (stream offset 18)",
                                              size),
                                  18}});
  }
  return rows;
}

class FrameRows : public testing::TestWithParam<FrameRow> {};

TEST_P(FrameRows, AnyChunking) {
  const FrameRow& row = GetParam();
  for (std::size_t chunk : {row.input.size(), std::size_t{1}, std::size_t{2}, std::size_t{7}}) {
    SCOPED_TRACE(fmt::format("chunk size {}", chunk));
    const Fed out = feed(row.input, chunk, row.limits);
    EXPECT_EQ(out.frames, row.frames);
    EXPECT_EQ(out.mid_frame, row.mid_frame);
    if (row.error) {
      ASSERT_TRUE(out.error);
      EXPECT_EQ(out.error->code, row.error->code);
      EXPECT_EQ(out.error->message, row.error->message);
      EXPECT_EQ(out.error->offset, row.error->offset) << out.error->to_string();
      EXPECT_FALSE(out.error->evidence.empty());
    } else {
      EXPECT_FALSE(out.error) << out.error->to_string();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Reader, FrameRows, testing::ValuesIn(frame_rows()),
                         [](const auto& info) { return info.param.name; });

// A 10 MB line without CRLF, from a corrupted server, fails as soon as it passes the limit, without
// buffering more than the limit.
TEST(Reader, TenMegabyteLineFailsAtTheLimit) {
  Limits limits;
  limits.max_line = std::size_t{1} << 20;
  Reader reader(limits);
  const std::string chunk(64 * 1024, 'a');
  std::size_t fed = 0;
  Status st = ok_status();
  while (fed < 10 * 1024 * 1024) {
    st = reader.feed(chunk);
    if (!st) break;
    fed += chunk.size();
  }
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(fed, std::size_t{1} << 20);  // 16 chunks fit exactly, the 17th does not
  EXPECT_EQ(st.error().code, Errc::limit);
  EXPECT_EQ(st.error().message, "line longer than 1048576 bytes (stream offset 0)");
  EXPECT_EQ(st.error().evidence, std::string(160, 'a'));
  EXPECT_TRUE(reader.failed());
}

// A failed reader keeps failing with the same error and consumes nothing more.
TEST(Reader, StaysFailed) {
  Reader reader;
  ASSERT_FALSE(reader.feed("* OK a\rb\r\n").ok());
  const std::uint64_t offset = reader.offset();
  const Status again = reader.feed("* 1 EXISTS\r\n");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message, "CR not followed by LF in line (stream offset 6)");
  EXPECT_EQ(reader.offset(), offset);
  EXPECT_FALSE(reader.next());
}

// Frames completed before an error are still handed out.
TEST(Reader, FramesBeforeErrorSurvive) {
  Reader reader;
  EXPECT_FALSE(reader.feed("* 1 EXISTS\r\na1 OK done\r\n* BAD \0\r\n"s).ok());
  ASSERT_TRUE(reader.next());
  auto second = reader.next();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->text, "a1 OK done");
  EXPECT_FALSE(reader.next());
}

// mid_frame() tracks exactly whether EOF now would truncate a response.
TEST(Reader, MidFrameTransitions) {
  Reader reader;
  EXPECT_FALSE(reader.mid_frame());
  ASSERT_TRUE(reader.feed("* 1 FETCH (BODY[] {3}\r").ok());
  EXPECT_TRUE(reader.mid_frame());
  ASSERT_TRUE(reader.feed("\nab").ok());
  EXPECT_TRUE(reader.mid_frame());
  ASSERT_TRUE(reader.feed("c").ok());
  EXPECT_TRUE(reader.mid_frame());
  ASSERT_TRUE(reader.feed(")\r\n").ok());
  EXPECT_FALSE(reader.mid_frame());
  ASSERT_TRUE(reader.next());
  EXPECT_FALSE(reader.next());
  EXPECT_EQ(reader.offset(), 29u);
}

// Random chunkings of a realistic stream all give the same frames as one big chunk.
TEST(Reader, RandomChunkingIsInvariant) {
  std::string stream = "* OK [CAPABILITY IMAP4rev1] ready\r\n";
  for (int i = 1; i <= 50; ++i) {
    const std::string body(static_cast<std::size_t>(i * 37), static_cast<char>('a' + i % 26));
    stream += fmt::format("* {} FETCH (UID {} BODY[] {{{}}}\r\n{} FLAGS (\\Seen))\r\n", i, i,
                          body.size(), body);
  }
  stream += "a1 OK done\n";
  const Fed whole = feed(stream, stream.size(), {});
  ASSERT_EQ(whole.frames.size(), 52u);
  std::mt19937 rng(20240611);
  for (int round = 0; round < 20; ++round) {
    Reader reader;
    std::vector<Frame> frames;
    std::size_t pos = 0;
    while (pos < stream.size()) {
      const std::size_t n = std::uniform_int_distribution<std::size_t>(1, 300)(rng);
      ASSERT_TRUE(reader.feed(std::string_view(stream).substr(pos, n)).ok());
      pos += n;
      while (auto f = reader.next()) frames.push_back(std::move(*f));
    }
    EXPECT_EQ(frames, whole.frames);
    EXPECT_FALSE(reader.mid_frame());
  }
}

// line_error keeps short lines whole and windows long ones around the fault.
TEST(Reader, LineErrorWindow) {
  const Error short_error = line_error(Errc::protocol, "m", "abc", 1);
  EXPECT_EQ(short_error.evidence, "abc");
  EXPECT_EQ(short_error.offset, 1u);

  std::string line(1000, '.');
  line[500] = 'X';
  const Error e = line_error(Errc::protocol, "m", line, 500);
  EXPECT_EQ(e.evidence.substr(0, 3), "...");
  EXPECT_EQ(e.evidence.substr(e.evidence.size() - 3), "...");
  EXPECT_EQ(e.evidence[e.offset], 'X');
  EXPECT_EQ(e.offset, 64u + 3);

  const Error at_end = line_error(Errc::protocol, "m", line, 999);
  EXPECT_EQ(at_end.evidence.size(), 163u);
  EXPECT_EQ(at_end.offset, 162u);
}

}  // namespace
}  // namespace twinbox::imap
