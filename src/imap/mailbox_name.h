// Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3, RFC 9051 App. A.1) and UTF-8
// (RFC 6855 UTF8=ACCEPT).
//
// twinbox holds every mailbox name in UTF-8 and converts only at the wire. The decoder is strict
// and accepts exactly the canonical encoding, so decode(x) succeeding implies encode(decode(x)) ==
// x and two spellings of one name can never map to two different local names:
//   - input must be printable US-ASCII (0x20..0x7e): raw 8-bit or control bytes are errors;
//   - "&-" is "&"; any other "&" opens a base64 run that must end with "-";
//   - a run encodes UTF-16 whose units are whole, whose padding bits are zero and which has no
//     spare base64 character; surrogates must pair up inside the run;
//   - a run must not encode printable ASCII (which must stand for itself), must not be empty
//     ("&-" is the escape, not a null shift) and must not directly follow another run ("-&" null
//     shift: two adjacent runs are one run spelled non-canonically).
// U+0000 is refused both ways: no name contains it and it would truncate C strings downstream.
// Errors carry the input as evidence and the byte offset of the fault.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace twinbox::imap {

// The offset of the first byte that is not part of well-formed UTF-8 (no overlong forms, no
// surrogates, nothing above U+10FFFF), or nullopt when `text` is valid.
std::optional<std::size_t> find_invalid_utf8(std::string_view text);

// UTF-8 -> modified UTF-7. Errc::usage on invalid UTF-8 or U+0000 (the name came from us).
Result<std::string> encode_mutf7(std::string_view utf8);

// Modified UTF-7 -> UTF-8. Errc::protocol on any non-canonical or malformed input (the name came
// from a server).
Result<std::string> decode_mutf7(std::string_view mutf7);

// True for "INBOX" in any letter case: that name is case-insensitive (RFC 9051 §5.1).
bool is_inbox(std::string_view name);

// The wire form of a UTF-8 mailbox name: "INBOX" for any casing of INBOX, the UTF-8 itself (after
// validation) once UTF8=ACCEPT is enabled (RFC 6855 §3), modified UTF-7 otherwise. The result
// still has to be quoted or sent as a literal as the astring grammar requires (command.h does).
Result<std::string> mailbox_to_wire(std::string_view utf8, bool utf8_accept);

// The inverse, for names the server sent (LIST, STATUS, ...): "INBOX" for any casing of INBOX,
// validated UTF-8 under UTF8=ACCEPT, decoded modified UTF-7 otherwise. Errc::protocol on bad input.
Result<std::string> mailbox_from_wire(std::string_view wire, bool utf8_accept);

}  // namespace twinbox::imap
