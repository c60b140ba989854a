#include "imap/sequence_set.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace twinbox::imap {

SequenceSet SequenceSet::of(std::initializer_list<std::uint32_t> members) {
  SequenceSet set;
  for (auto m : members) set.add(m);
  return set;
}

void SequenceSet::add(std::uint32_t first, std::uint32_t last) {
  if (first > last) std::swap(first, last);
  // Fast path: appending in ascending order, the common case when building from a scan.
  if (ranges_.empty() || first > static_cast<std::uint64_t>(ranges_.back().last) + 1) {
    ranges_.push_back({first, last});
    return;
  }
  // First range whose end reaches first-1 (adjacent ranges merge).
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), first, [](const Range& r, auto v) {
    return static_cast<std::uint64_t>(r.last) + 1 < v;
  });
  auto end = it;
  std::uint32_t lo = first, hi = last;
  while (end != ranges_.end() && end->first <= static_cast<std::uint64_t>(hi) + 1) {
    lo = std::min(lo, end->first);
    hi = std::max(hi, end->last);
    ++end;
  }
  if (it == end) {
    ranges_.insert(it, {lo, hi});
  } else {
    *it = {lo, hi};
    ranges_.erase(it + 1, end);
  }
}

void SequenceSet::add(const SequenceSet& other) {
  for (const auto& r : other.ranges_) add(r.first, r.last);
}

void SequenceSet::remove(std::uint32_t first, std::uint32_t last) {
  if (first > last) std::swap(first, last);
  std::vector<Range> out;
  out.reserve(ranges_.size() + 1);
  for (const auto& r : ranges_) {
    if (r.last < first || r.first > last) {
      out.push_back(r);
      continue;
    }
    if (r.first < first) out.push_back({r.first, first - 1});
    if (r.last > last) out.push_back({last + 1, r.last});
  }
  ranges_ = std::move(out);
}

bool SequenceSet::contains(std::uint32_t member) const {
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), member,
                             [](const Range& r, std::uint32_t v) { return r.last < v; });
  return it != ranges_.end() && it->first <= member;
}

std::uint64_t SequenceSet::size() const {
  std::uint64_t n = 0;
  for (const auto& r : ranges_) n += std::uint64_t{r.last} - r.first + 1;
  return n;
}

std::optional<std::uint32_t> SequenceSet::min() const {
  if (ranges_.empty()) return std::nullopt;
  return ranges_.front().first;
}

std::optional<std::uint32_t> SequenceSet::max() const {
  if (ranges_.empty()) return std::nullopt;
  return ranges_.back().last;
}

std::vector<std::uint32_t> SequenceSet::members() const {
  std::vector<std::uint32_t> out;
  for (const auto& r : ranges_) {
    for (std::uint64_t v = r.first; v <= r.last; ++v) out.push_back(static_cast<std::uint32_t>(v));
  }
  return out;
}

namespace {
void append_range(std::string& out, const Range& r) {
  if (!out.empty()) out += ',';
  if (r.first == r.last) {
    fmt::format_to(std::back_inserter(out), "{}", r.first);
  } else {
    fmt::format_to(std::back_inserter(out), "{}:{}", r.first, r.last);
  }
}
}  // namespace

std::string SequenceSet::to_string() const {
  std::string out;
  for (const auto& r : ranges_) append_range(out, r);
  return out;
}

std::vector<SequenceSet> SequenceSet::split(std::size_t max_chars) const {
  std::vector<SequenceSet> out;
  std::string piece;
  SequenceSet current;
  for (const auto& r : ranges_) {
    std::string one;
    append_range(one, r);
    const std::size_t added = one.size() + (piece.empty() ? 0 : 1);
    if (!piece.empty() && piece.size() + added > max_chars) {
      out.push_back(std::move(current));
      current = SequenceSet();
      piece.clear();
    }
    append_range(piece, r);
    current.ranges_.push_back(r);
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

namespace {
bool parse_number(std::string_view text, std::uint32_t& out) {
  if (text.empty() || text.size() > 10) return false;
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  if (v == 0 || v > 0xffffffffULL) return false;
  out = static_cast<std::uint32_t>(v);
  return true;
}
}  // namespace

Result<SequenceSet> SequenceSet::parse(std::string_view text) {
  if (text.empty()) return Error(Errc::protocol, "empty sequence set", std::string(text), 0);
  // Ranges are collected, sorted and merged once: adding them one by one would be quadratic for
  // a server that lists UIDs in descending order.
  std::vector<Range> ranges;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(pos, comma - pos);
    std::size_t colon = item.find(':');
    std::uint32_t a = 0, b = 0;
    bool good = colon == std::string_view::npos ? parse_number(item, a) && (b = a, true)
                                                : parse_number(item.substr(0, colon), a) &&
                                                      parse_number(item.substr(colon + 1), b);
    if (!good) {
      return Error(Errc::protocol, "bad sequence set item (non-zero 32-bit numbers expected)",
                   std::string(text), pos);
    }
    ranges.push_back({std::min(a, b), std::max(a, b)});
    if (comma == text.size()) break;
    pos = comma + 1;
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& x, const Range& y) { return x.first < y.first; });
  SequenceSet set;
  for (const auto& r : ranges) set.add(r.first, r.last);  // ascending: the append fast path
  return set;
}

}  // namespace twinbox::imap
