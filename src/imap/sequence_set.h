// Sets of UIDs or sequence numbers, kept as sorted disjoint ranges and never expanded.
//
// A server may report VANISHED (EARLIER) 1:4294967295 or 100k disjoint ranges (RFC 7162 §5.1);
// everything here is linear in the number of ranges, not in the number of members.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace twinbox::imap {

using Uid = std::uint32_t;
using SeqNum = std::uint32_t;
using ModSeq = std::uint64_t;  // 1..2^63-1 (RFC 7162 §7); larger values are protocol errors

inline constexpr ModSeq kMaxModSeq = (ModSeq{1} << 63) - 1;

struct Range {
  std::uint32_t first = 0;  // inclusive
  std::uint32_t last = 0;   // inclusive, first <= last
  friend bool operator==(const Range&, const Range&) = default;
};

class SequenceSet {
 public:
  SequenceSet() = default;
  static SequenceSet of(std::initializer_list<std::uint32_t> members);

  // Adds [first, last] (either order: "12:10" means "10:12", RFC 9051 §9 seq-range).
  void add(std::uint32_t first, std::uint32_t last);
  void add(std::uint32_t member) { add(member, member); }
  void add(const SequenceSet& other);
  void remove(std::uint32_t first, std::uint32_t last);

  bool empty() const { return ranges_.empty(); }
  bool contains(std::uint32_t member) const;
  std::uint64_t size() const;  // number of members
  std::optional<std::uint32_t> min() const;
  std::optional<std::uint32_t> max() const;
  const std::vector<Range>& ranges() const { return ranges_; }

  // Members in order, for callers that really need them (bounded by the caller).
  std::vector<std::uint32_t> members() const;

  // IMAP syntax: "1:4,7,9:12". Empty set gives "".
  std::string to_string() const;

  // Splits into pieces whose to_string() is at most `max_chars` long, in ascending order, so a
  // command carrying the set never exceeds the server's line limit (RFC 7162 §4). A single
  // range always fits (at most 21 chars), so max_chars must be >= 21.
  std::vector<SequenceSet> split(std::size_t max_chars) const;

  // Parses a sequence-set without "*" (UIDs as servers send them in VANISHED, APPENDUID,
  // COPYUID, MODIFIED, ESEARCH). Zero is rejected: no message has UID or number 0.
  static Result<SequenceSet> parse(std::string_view text);

  friend bool operator==(const SequenceSet&, const SequenceSet&) = default;

 private:
  std::vector<Range> ranges_;  // sorted, disjoint, non-adjacent
};

}  // namespace twinbox::imap
