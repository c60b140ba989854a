// Framing: turns an arbitrarily chunked byte stream into complete IMAP responses.
//
// A response is one line, or several lines joined by literals: `* 1 FETCH (BODY[] {5}\r\nhello)\r\n`.
// The reader never interprets beyond framing; it only needs to see where a line ends and whether
// it ends in a literal announcement. Memory is bounded: a line longer than Limits::max_line or a
// literal larger than Limits::max_literal is an error before anything is allocated for it.
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
  std::size_t max_line = 1 << 20;             // one text line (CRLF excluded)
  std::uint64_t max_literal = 256ull << 20;   // one literal (a message body)
  std::size_t max_literals_per_response = 1 << 16;
  std::size_t max_nesting = 64;               // parenthesised lists (BODYSTRUCTURE, ...)
};

// One complete response. `text` holds the line parts exactly as received, including each
// literal announcement `{n}`/`~{n}` and the CRLF after it, but not the literal bytes, which are
// in `literals` in order. The parser consumes literals by moving them out, so a message body is
// copied once, from the socket buffer into its own string, and never again.
struct Frame {
  std::string text;
  std::vector<std::string> literals;
  std::uint64_t stream_offset = 0;  // offset of the first byte in the connection's input
};

class Reader {
 public:
  explicit Reader(Limits limits = {}) : limits_(limits) {}

  // Appends input. Returns the number of bytes consumed (always all of `data`, unless an error
  // occurred, after which the reader stays failed and consumes nothing).
  Status feed(std::string_view data);

  // The next complete frame, if one is available.
  std::optional<Frame> next();

  bool failed() const { return failed_; }
  // True while a frame has started but is incomplete: EOF now is a truncated response.
  bool mid_frame() const;
  // Total bytes fed so far.
  std::uint64_t offset() const { return offset_; }
  const Limits& limits() const { return limits_; }

 private:
  Status fail(Error e);
  Status finish_line(std::size_t line_end, std::size_t terminator_len);

  Limits limits_;
  Frame current_;
  std::vector<Frame> ready_;
  std::size_t ready_head_ = 0;
  std::string line_;                 // the current, unfinished line
  std::uint64_t literal_remaining_ = 0;
  bool in_literal_ = false;
  bool failed_ = false;
  std::uint64_t offset_ = 0;
  std::uint64_t frame_start_ = 0;
};

}  // namespace twinbox::imap
