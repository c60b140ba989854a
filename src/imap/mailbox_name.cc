#include "imap/mailbox_name.h"

#include <cstdint>

namespace twinbox::imap {

namespace {

// RFC 3501 §5.1.3: RFC 2045 base64 with "," in place of "/".
constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == ',') return 63;
  return -1;
}

bool is_printable_ascii(std::uint32_t c) { return c >= 0x20 && c <= 0x7e; }

// Decodes one well-formed UTF-8 sequence at `i` (RFC 3629 §4 table). Returns its length, or 0.
std::size_t decode_utf8(std::string_view s, std::size_t i, std::uint32_t& cp) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
    cp = b0 & 0x1f;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    cp = b0 & 0x0f;
    if (b0 == 0xe0) lo = 0xa0;  // overlong
    if (b0 == 0xed) hi = 0x9f;  // UTF-16 surrogates
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    cp = b0 & 0x07;
    if (b0 == 0xf0) lo = 0x90;  // overlong
    if (b0 == 0xf4) hi = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  return len;
}

void append_utf8(std::string& out, std::uint32_t cp) {
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
}

Error usage_error(std::string message, std::string_view input, std::size_t offset) {
  return Error(Errc::usage, std::move(message), std::string(input), offset);
}

Error protocol_error(std::string message, std::string_view input, std::size_t offset) {
  return Error(Errc::protocol, std::move(message), std::string(input), offset);
}

Status check_utf8_name(std::string_view text, Errc code) {
  if (auto bad = find_invalid_utf8(text)) {
    return Error(code, "invalid UTF-8 in mailbox name", std::string(text), *bad);
  }
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    return Error(code, "U+0000 in mailbox name", std::string(text), nul);
  }
  return ok_status();
}

}  // namespace

std::optional<std::size_t> find_invalid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    std::uint32_t cp = 0;
    const std::size_t len = decode_utf8(text, i, cp);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

Result<std::string> encode_mutf7(std::string_view utf8) {
  std::string out;
  out.reserve(utf8.size() + 8);
  bool in_run = false;
  std::uint32_t bits = 0;  // never more than 21 pending bits
  int nbits = 0;
  const auto put_unit = [&](std::uint32_t unit) {
    bits = (bits << 16) | unit;
    nbits += 16;
    while (nbits >= 6) {
      nbits -= 6;
      out += kAlphabet[(bits >> nbits) & 0x3f];
    }
    bits &= (1u << nbits) - 1;
  };
  const auto end_run = [&] {
    // Zero padding bits up to the next base64 character (RFC 2045 without "=" padding).
    if (nbits > 0) out += kAlphabet[(bits << (6 - nbits)) & 0x3f];
    out += '-';
    in_run = false;
    bits = 0;
    nbits = 0;
  };

  std::size_t i = 0;
  while (i < utf8.size()) {
    std::uint32_t cp = 0;
    const std::size_t len = decode_utf8(utf8, i, cp);
    if (len == 0) return usage_error("invalid UTF-8 in mailbox name", utf8, i);
    if (cp == 0) return usage_error("U+0000 in mailbox name", utf8, i);
    if (is_printable_ascii(cp)) {
      if (in_run) end_run();
      if (cp == '&') {
        out += "&-";
      } else {
        out += static_cast<char>(cp);
      }
    } else {
      if (!in_run) {
        out += '&';
        in_run = true;
      }
      if (cp >= 0x10000) {
        const std::uint32_t v = cp - 0x10000;
        put_unit(0xd800 | (v >> 10));
        put_unit(0xdc00 | (v & 0x3ff));
      } else {
        put_unit(cp);
      }
    }
    i += len;
  }
  if (in_run) end_run();
  return out;
}

Result<std::string> decode_mutf7(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  bool after_run = false;  // the previous byte closed a base64 run
  std::size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (!is_printable_ascii(c)) {
      return protocol_error("byte outside printable US-ASCII in modified UTF-7", in, i);
    }
    if (c != '&') {
      out += static_cast<char>(c);
      after_run = false;
      ++i;
      continue;
    }
    const std::size_t start = i;
    if (i + 1 < in.size() && in[i + 1] == '-') {
      out += '&';
      after_run = false;
      i += 2;
      continue;
    }
    if (after_run) return protocol_error("adjacent base64 runs (null shift)", in, start);
    ++i;
    std::uint32_t bits = 0;
    int nbits = 0;
    std::uint32_t high = 0;  // pending high surrogate
    std::size_t units = 0;
    for (;;) {
      if (i >= in.size()) return protocol_error("unterminated base64 run", in, start);
      const auto b = static_cast<unsigned char>(in[i]);
      if (b == '-') break;
      const int v = base64_value(b);
      if (v < 0) {
        if (!is_printable_ascii(b)) {
          return protocol_error("byte outside printable US-ASCII in modified UTF-7", in, i);
        }
        return protocol_error("invalid character in base64 run", in, i);
      }
      bits = (bits << 6) | static_cast<std::uint32_t>(v);
      nbits += 6;
      if (nbits >= 16) {
        nbits -= 16;
        const std::uint32_t unit = (bits >> nbits) & 0xffff;
        bits &= (1u << nbits) - 1;
        ++units;
        if (high != 0) {
          if (unit < 0xdc00 || unit > 0xdfff) {
            return protocol_error("high surrogate not followed by a low surrogate", in, i);
          }
          append_utf8(out, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
          high = 0;
        } else if (unit >= 0xd800 && unit <= 0xdbff) {
          high = unit;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          return protocol_error("unpaired low surrogate", in, i);
        } else if (is_printable_ascii(unit)) {
          return protocol_error("printable ASCII character encoded in base64", in, i);
        } else if (unit == 0) {
          return protocol_error("U+0000 in mailbox name", in, i);
        } else {
          append_utf8(out, unit);
        }
      }
      ++i;
    }
    // `i` is at the closing '-'.
    if (units == 0 || nbits >= 6) {
      return protocol_error("incomplete UTF-16 unit in base64 run", in, i);
    }
    if (bits != 0) return protocol_error("non-zero padding bits in base64 run", in, i - 1);
    if (high != 0) return protocol_error("unpaired high surrogate", in, i);
    ++i;
    after_run = true;
  }
  return out;
}

bool is_inbox(std::string_view name) {
  constexpr std::string_view kInbox = "INBOX";
  if (name.size() != kInbox.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != kInbox[i]) return false;
  }
  return true;
}

Result<std::string> mailbox_to_wire(std::string_view utf8, bool utf8_accept) {
  if (is_inbox(utf8)) return std::string("INBOX");
  if (!utf8_accept) return encode_mutf7(utf8);
  if (Status s = check_utf8_name(utf8, Errc::usage); !s) return std::move(s).error();
  return std::string(utf8);
}

Result<std::string> mailbox_from_wire(std::string_view wire, bool utf8_accept) {
  if (is_inbox(wire)) return std::string("INBOX");
  if (utf8_accept) {
    if (Status s = check_utf8_name(wire, Errc::protocol); !s) return std::move(s).error();
    return std::string(wire);
  }
  return decode_mutf7(wire);
}

}  // namespace twinbox::imap
