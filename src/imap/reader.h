// Framing: turns an arbitrarily chunked byte stream into complete IMAP responses.
//
// A response is one line, or several lines joined by literals:
// `* 1 FETCH (BODY[] {5}\r\nhello)\r\n`. The reader never interprets beyond framing; it only
// needs to see where a line ends and whether it ends in a literal announcement. Memory is bounded:
// a line longer than Limits::max_line or a literal larger than Limits::max_literal is an error
// before anything is allocated for it.
//
// Line ends: CRLF, and bare LF too (imap-codec's quirk_crlf_relaxed; LF can never be part of a
// line's text, so accepting it alone cannot smuggle a response). A CR not followed by LF and a NUL
// byte in line text are protocol errors (Dovecot's parser rejects both, "CR sent without LF"; NUL
// is the CVE-2019-11500 class). Literal bytes are opaque: NUL, CR and LF are data there.
//
// Literals: `{n}` and `~{n}` (literal8, RFC 3516 / RFC 9051 §4.3). A server never sends the
// non-synchronizing `{n+}` (RFC 7888 §5, RFC 9051 §4.3), so it is a protocol error. A line that
// ends in `{digits}` is always a literal announcement, as in every IMAP implementation.
//
// Framing is independent of parsing (imap-codec's "fragmentizer" idea): a frame the parser rejects
// does not by itself desynchronize the reader. But a server that sent a literal longer than
// announced has already desynchronized it (the extra bytes read as lines, possibly a forged tagged
// OK), so the safe reaction to a parse error is to close the connection and not look at later
// frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace twinbox::imap {

struct Limits {
  // One text line (CRLF excluded). VANISHED (EARLIER) for a large mailbox with scattered
  // expunges can be megabytes long (100k ranges of 6-digit UIDs: 1.4 MB).
  std::size_t max_line = 16 << 20;
  // Bytes the parser accepts without reading their structure: the free text of a status response
  // or continuation request, an unknown response code's argument, an unknown response. None of
  // these is ever long from a working server; a long one is a server that lost a CRLF, and the
  // responses after it on the same line would otherwise vanish into the text.
  std::size_t max_text = 64 << 10;
  std::uint64_t max_literal = 256ull << 20;  // one literal (a message body)
  std::size_t max_literals_per_response = 1 << 16;
  std::size_t max_nesting = 64;  // parenthesised lists (BODYSTRUCTURE, ...)
  // APPENDUID/COPYUID sets are expanded into ResponseCode::set_order for pairing; this bounds
  // that expansion (a COPYUID of 1:4294967295 must not allocate 16 GiB).
  std::size_t max_set_members = 1 << 22;
};

// One complete response. `text` holds the line parts exactly as received, including each
// literal announcement `{n}`/`~{n}` and the CRLF after it, but not the literal bytes, which are
// in `literals` in order. The parser consumes literals by moving them out, so a message body is
// copied once, from the socket buffer into its own string, and never again.
//
// Normalisation: the CRLF after a literal announcement is always "\r\n" in `text` (a bare LF is
// stored as CRLF), and the final line's terminator is not part of `text`.
struct Frame {
  std::string text;
  std::vector<std::string> literals;
  std::uint64_t stream_offset = 0;  // offset of the first byte in the connection's input
  friend bool operator==(const Frame&, const Frame&) = default;
};

// An Error whose evidence is `line` and whose offset points into it. A long line is cut to a
// window around `offset` (marked with "...") so that Error::to_string, which prints about 200
// characters, still shows the fault. Shared by the reader and the parser.
Error line_error(Errc code, std::string message, std::string_view line, std::size_t offset);

class Reader {
 public:
  explicit Reader(Limits limits = {}) : limits_(limits) {}

  // Appends input. Returns the number of bytes consumed (always all of `data`, unless an error
  // occurred, after which the reader stays failed and consumes nothing).
  // Frames completed before an error are still returned by next(). Errors carry the offending
  // line as evidence, the offset inside it, and the stream offset in the message.
  Status feed(std::string_view data);

  // The next complete frame, if one is available.
  std::optional<Frame> next();

  bool failed() const { return failed_; }
  // True while a frame has started but is incomplete: EOF now is a truncated response.
  // A failed reader has released its partial frame and answers false: the error is the report.
  bool mid_frame() const;
  // Total bytes fed so far.
  std::uint64_t offset() const { return offset_; }
  const Limits& limits() const { return limits_; }

 private:
  Status fail(Error e);
  // Handles one complete line, its terminator (LF or CRLF) already removed.
  Status finish_line(std::string_view line);
  Status line_too_long(std::string_view head);

  Limits limits_;
  Frame current_;
  std::vector<Frame> ready_;
  std::size_t ready_head_ = 0;
  std::string line_;  // the current line, only when it spans several feed() calls
  std::uint64_t literal_remaining_ = 0;
  bool in_literal_ = false;
  bool failed_ = false;
  std::uint64_t offset_ = 0;
  std::uint64_t frame_start_ = 0;
  std::uint64_t line_start_ = 0;  // stream offset of the current line's first byte
  Error error_;                   // repeated by feed() once failed
};

}  // namespace twinbox::imap
