#include "imap/mailbox_name.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace twinbox::imap {
namespace {

std::string utf8_of(std::uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return out;
}

struct Pair {
  std::string utf8;
  std::string mutf7;
};

// Each row converts both ways, byte-exactly.
TEST(MailboxName, KnownPairsRoundTrip) {
  const std::vector<Pair> rows = {
      {"INBOX", "INBOX"},
      {"", ""},
      {"R\xc3\xa9unions", "R&AOk-unions"},
      {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "&ZeVnLIqe-"},
      {"fo!o [b*a%r]", "fo!o [b*a%r]"},
      {"&", "&-"},
      {"&&", "&-&-"},
      {"a&b", "a&-b"},
      {"\xc3\xa9&", "&AOk-&-"},
      {"\xf0\x9f\x98\x80", "&2D3eAA-"},                // U+1F600, a surrogate pair
      {"x\xf0\x9f\x98\x80\xc3\xa9y", "x&2D3eAADp-y"},  // pair then BMP in one run
      {"~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
       "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},  // RFC 3501 §5.1.3 example
      {"\x1f", "&AB8-"},                    // controls go in base64
      {"a-b", "a-b"},
  };
  for (const auto& row : rows) {
    auto enc = encode_mutf7(row.utf8);
    ASSERT_TRUE(enc.ok()) << row.utf8 << ": " << enc.error().to_string();
    EXPECT_EQ(*enc, row.mutf7) << row.utf8;
    auto dec = decode_mutf7(row.mutf7);
    ASSERT_TRUE(dec.ok()) << row.mutf7 << ": " << dec.error().to_string();
    EXPECT_EQ(*dec, row.utf8) << row.mutf7;
  }
}

struct BadInput {
  std::string input;
  std::string message;
  std::size_t offset;
};

// Each row is non-canonical or malformed modified UTF-7 and names the offending byte.
TEST(MailboxName, DecodeRejectsMalformedInputWithOffset) {
  const std::vector<BadInput> rows = {
      {"&Jjo", "unterminated base64 run", 0},
      {"a&AOk", "unterminated base64 run", 1},
      {"&AGE-", "printable ASCII character encoded in base64", 3},  // "a" must stand for itself
      {"&ACY-", "printable ASCII character encoded in base64", 3},  // "&" must be "&-"
      {"&AOk-&AOk-", "adjacent base64 runs (null shift)", 5},
      {"&AOl-", "non-zero padding bits in base64 run", 3},
      {"&AOkA-", "incomplete UTF-16 unit in base64 run", 5},
      {"&A-", "incomplete UTF-16 unit in base64 run", 2},
      {"&2D0-", "unpaired high surrogate", 4},
      {"&3gA-", "unpaired low surrogate", 3},
      {"&2D0A6Q-", "high surrogate not followed by a low surrogate", 6},
      {"&AO!k-", "invalid character in base64 run", 3},
      {"&AO/k-", "invalid character in base64 run", 3},  // RFC 2045 "/" is "," here
      {"&AAA-", "U+0000 in mailbox name", 3},
      {"caf\xc3\xa9", "byte outside printable US-ASCII in modified UTF-7", 3},
      {"a\tb", "byte outside printable US-ASCII in modified UTF-7", 1},
      {"&AO\x80k-", "byte outside printable US-ASCII in modified UTF-7", 3},
  };
  for (const auto& row : rows) {
    auto r = decode_mutf7(row.input);
    ASSERT_FALSE(r.ok()) << row.input;
    EXPECT_EQ(r.error().code, Errc::protocol) << row.input;
    EXPECT_EQ(r.error().message, row.message) << row.input;
    EXPECT_EQ(r.error().offset, row.offset) << row.input;
    EXPECT_EQ(r.error().evidence, row.input);
  }
}

// Invalid UTF-8 handed to the encoder is our bug or bad configuration, reported with its offset.
TEST(MailboxName, EncodeRejectsInvalidUtf8WithOffset) {
  const std::vector<BadInput> rows = {
      {"\xff", "invalid UTF-8 in mailbox name", 0},
      {"ab\xc3", "invalid UTF-8 in mailbox name", 2},            // truncated sequence
      {"\xc0\xaf", "invalid UTF-8 in mailbox name", 0},          // overlong "/"
      {"x\xe0\x80\xaf", "invalid UTF-8 in mailbox name", 1},     // overlong, 3 bytes
      {"\xed\xa0\x80", "invalid UTF-8 in mailbox name", 0},      // encoded surrogate
      {"\xf4\x90\x80\x80", "invalid UTF-8 in mailbox name", 0},  // above U+10FFFF
      {"\xc3\xa9\x80", "invalid UTF-8 in mailbox name", 2},      // stray continuation
      {std::string("a\0b", 3), "U+0000 in mailbox name", 1},
  };
  for (const auto& row : rows) {
    auto r = encode_mutf7(row.input);
    ASSERT_FALSE(r.ok()) << row.input;
    EXPECT_EQ(r.error().code, Errc::usage);
    EXPECT_EQ(r.error().message, row.message);
    EXPECT_EQ(r.error().offset, row.offset);
  }
}

// Random names of ASCII, '&', controls, BMP and astral characters survive both directions, and
// the encoding is pure printable ASCII.
TEST(MailboxName, RandomStringsRoundTrip) {
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<int> kind(0, 5);
  std::uniform_int_distribution<int> len(0, 24);
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::string utf8;
    const int n = len(rng);
    for (int k = 0; k < n; ++k) {
      std::uint32_t cp = 0;
      switch (kind(rng)) {
        case 0:
          cp = std::uniform_int_distribution<std::uint32_t>(0x20, 0x7e)(rng);
          break;
        case 1:
          cp = '&';
          break;
        case 2:
          cp = std::uniform_int_distribution<std::uint32_t>(0x01, 0x1f)(rng);
          break;
        case 3:
          cp = std::uniform_int_distribution<std::uint32_t>(0x80, 0xd7ff)(rng);
          break;
        case 4:
          cp = std::uniform_int_distribution<std::uint32_t>(0xe000, 0xfffd)(rng);
          break;
        default:
          cp = std::uniform_int_distribution<std::uint32_t>(0x10000, 0x10ffff)(rng);
          break;
      }
      utf8 += utf8_of(cp);
    }
    auto enc = encode_mutf7(utf8);
    ASSERT_TRUE(enc.ok()) << enc.error().to_string();
    for (char c : *enc) ASSERT_TRUE(c >= 0x20 && c <= 0x7e) << *enc;
    auto dec = decode_mutf7(*enc);
    ASSERT_TRUE(dec.ok()) << *enc << ": " << dec.error().to_string();
    ASSERT_EQ(*dec, utf8) << *enc;
  }
}

// Whatever random wire text the strict decoder accepts re-encodes to the same bytes: one name,
// one spelling.
TEST(MailboxName, DecoderAcceptsOnlyCanonicalSpellings) {
  std::mt19937 rng(7);
  const std::string alphabet = "&-AOkZeVnLIqe2D3+,a/ 0";
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> len(0, 12);
  int accepted = 0;
  for (int iteration = 0; iteration < 100000; ++iteration) {
    std::string wire;
    const int n = len(rng);
    for (int k = 0; k < n; ++k) wire += alphabet[pick(rng)];
    auto dec = decode_mutf7(wire);
    if (!dec.ok()) continue;
    ++accepted;
    auto enc = encode_mutf7(*dec);
    ASSERT_TRUE(enc.ok()) << wire;
    ASSERT_EQ(*enc, wire);
  }
  EXPECT_GT(accepted, 1000);
}

TEST(MailboxName, FindInvalidUtf8) {
  EXPECT_EQ(find_invalid_utf8("plain"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("\xf0\x9f\x98\x80 ok"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("ok\xf0\x9f\x98"), 2u);
}

// The wire form is mUTF-7, or UTF-8 once UTF8=ACCEPT is enabled; INBOX is canonicalised.
TEST(MailboxName, WireFormFollowsUtf8Accept) {
  EXPECT_EQ(*mailbox_to_wire("inbox", false), "INBOX");
  EXPECT_EQ(*mailbox_to_wire("InBoX", true), "INBOX");
  EXPECT_EQ(*mailbox_to_wire("INBOX.sub", false), "INBOX.sub");
  EXPECT_EQ(*mailbox_to_wire("R\xc3\xa9unions", false), "R&AOk-unions");
  EXPECT_EQ(*mailbox_to_wire("R\xc3\xa9unions", true), "R\xc3\xa9unions");
  EXPECT_EQ(*mailbox_to_wire("a&b", true), "a&b");
  auto bad = mailbox_to_wire("\xff", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::usage);

  EXPECT_EQ(*mailbox_from_wire("R&AOk-unions", false), "R\xc3\xa9unions");
  EXPECT_EQ(*mailbox_from_wire("Inbox", false), "INBOX");
  EXPECT_EQ(*mailbox_from_wire("a&b", true), "a&b");
  EXPECT_EQ(*mailbox_from_wire("R\xc3\xa9unions", true), "R\xc3\xa9unions");
  auto garbage = mailbox_from_wire("R\xc3\xa9unions", false);
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().to_string(),
            "protocol error: byte outside printable US-ASCII in modified UTF-7 (at byte 1) in: "
            "R\xc3\xa9unions");
  auto bad_utf8 = mailbox_from_wire("\xc3", true);
  ASSERT_FALSE(bad_utf8.ok());
  EXPECT_EQ(bad_utf8.error().code, Errc::protocol);
  EXPECT_EQ(bad_utf8.error().message, "invalid UTF-8 in mailbox name");
}

}  // namespace
}  // namespace twinbox::imap
