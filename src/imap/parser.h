// Parser: one framed response (see reader.h) into a typed Response (see response.h).
//
// Recursive descent over the frame's text, each function named after the RFC 9051 / RFC 7162
// grammar rule it reads, without recursion for nested lists (bounded by Limits::max_nesting), so
// hostile input cannot exhaust the stack. Literal strings are moved out of the frame, never copied.
//
// Errors: Errc::protocol when the server broke the grammar or a range rule, Errc::limit when a
// bound was exceeded. The message names what was expected; the evidence is the frame's text (the
// literal bytes are not in it), windowed around the fault when long (see line_error), and the
// offset is the fault's byte offset inside the evidence.
//
// Decisions that callers rely on:
// - Numbers are range-checked: UID, UIDVALIDITY, UIDNEXT and message numbers are 32-bit and, where
//   the grammar says nz-number, non-zero (UID 0, sequence number 0 and UIDVALIDITY 0 are protocol
//   errors). Mod-sequences are 1..2^63-1 (RFC 7162 §7), except STATUS HIGHESTMODSEQ, which may be
//   0 (mod-sequence-valzer: "no persistent mod-sequences"). A sign is never part of a number:
//   `* -135 EXISTS` is a protocol error, not 0 nor an unknown response named "-135".
// - What is taken without reading its structure (status and continuation text, an unknown
//   response code's argument, an unknown response) is bounded by Limits::max_text, so that a
//   server that lost a CRLF cannot hide the responses that follow on the same line in the text.
// - APPENDUID with a uid-set is accepted even for one message (`123:123`): RFC 4315 §3 forbids
//   the set form for a single append, but it denotes exactly one UID and is harmless. The parser
//   does not know how many messages were appended; the caller must compare set_order.size().
// - COPYUID source and destination sets must have the same number of members; `*` is refused in
//   both. set_order/set2_order keep the order as sent, each range ascending (RFC 4315 §4: "2:4
//   and 4:2 are equivalent").
// - Strings with a NUL byte are refused (quoted strings and string literals: CVE-2019-11500
//   class); message data (BODY[]/BINARY[]) is binary-safe and may contain NUL.
// - Harmless quirks are tolerated, each cited where it is handled: `* OK [CODE]` without text,
//   tagged `a OK` without text, `+` without text, `*  STATUS` (double space), trailing spaces
//   after STATUS, CAPABILITY, SEARCH, ID, ENABLED and inside flag lists, `\(` escapes in quoted
//   strings.
// - ID data is bounded per RFC 2971 §3.3: at most 30 pairs are kept, field names are cut to 30
//   and values to 1024 bytes (extra data is dropped, not an error: ID is informational).
// - Unknown response codes become CodeKind::other (name + raw argument), unknown untagged
//   responses UnknownData, unknown FETCH items are skipped and their names listed in other_items.
#pragma once

#include "base/error.h"
#include "imap/reader.h"
#include "imap/response.h"

namespace twinbox::imap {

// Parses one complete response. The frame's literals are moved into the result.
Result<Response> parse_response(Frame&& frame, const Limits& limits = {});

}  // namespace twinbox::imap
