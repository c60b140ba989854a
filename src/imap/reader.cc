#include "imap/reader.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace twinbox::imap {

namespace {

constexpr std::size_t kEvidenceMax = 160;
constexpr std::size_t kEvidenceLead = 64;  // bytes kept before the fault in a windowed line

// A literal announced as huge but not yet received gets only this much memory up front; the
// rest grows with the bytes that actually arrive.
constexpr std::size_t kLiteralReserveMax = 1 << 20;

struct LiteralAnnouncement {
  bool present = false;
  bool plus = false;     // `{n+}`
  std::size_t open = 0;  // index of '{' (or of '~' for literal8)
  std::string_view digits;
};

// Looks for `{digits}`, `~{digits}` or `{digits+}` at the very end of `line`.
LiteralAnnouncement find_announcement(std::string_view line) {
  LiteralAnnouncement a;
  if (line.empty() || line.back() != '}') return a;
  std::size_t end = line.size() - 1;  // index of '}'
  if (end > 0 && line[end - 1] == '+') {
    a.plus = true;
    --end;
  }
  std::size_t first = end;
  while (first > 0 && line[first - 1] >= '0' && line[first - 1] <= '9') --first;
  if (first == end || first == 0 || line[first - 1] != '{') return a;
  a.present = true;
  a.digits = line.substr(first, end - first);
  a.open = first - 1;
  if (a.open > 0 && line[a.open - 1] == '~') --a.open;
  return a;
}

// Parses 1*DIGIT without overflow; false when the value does not fit in 64 bits.
bool parse_size(std::string_view digits, std::uint64_t& out) {
  std::uint64_t v = 0;
  for (char c : digits) {
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

}  // namespace

Error line_error(Errc code, std::string message, std::string_view line, std::size_t offset) {
  if (line.size() <= kEvidenceMax)
    return Error(code, std::move(message), std::string(line), offset);
  const std::size_t start =
      std::min(offset > kEvidenceLead ? offset - kEvidenceLead : 0, line.size() - kEvidenceMax);
  std::string evidence;
  evidence.reserve(kEvidenceMax + 6);
  if (start > 0) evidence += "...";
  evidence.append(line.substr(start, kEvidenceMax));
  if (start + kEvidenceMax < line.size()) evidence += "...";
  const std::size_t moved = offset - start + (start > 0 ? 3 : 0);
  return Error(code, std::move(message), std::move(evidence), moved);
}

Status Reader::fail(Error e) {
  failed_ = true;
  error_ = e;
  line_ = std::string();
  current_ = Frame();
  in_literal_ = false;
  return e;
}

Status Reader::line_too_long(std::string_view head) {
  return fail(line_error(
      Errc::limit,
      fmt::format("line longer than {} bytes (stream offset {})", limits_.max_line, line_start_),
      head.substr(0, std::min(head.size(), kEvidenceMax)), 0));
}

Status Reader::feed(std::string_view data) {
  if (failed_) return error_;
  while (!data.empty()) {
    if (in_literal_) {
      const auto n =
          static_cast<std::size_t>(std::min<std::uint64_t>(literal_remaining_, data.size()));
      current_.literals.back().append(data.data(), n);
      data.remove_prefix(n);
      offset_ += n;
      literal_remaining_ -= n;
      if (literal_remaining_ == 0) {
        in_literal_ = false;
        line_start_ = offset_;
      }
      continue;
    }

    const auto* lf = static_cast<const char*>(std::memchr(data.data(), '\n', data.size()));
    if (lf == nullptr) {
      // Partial line: keep it, unless it already exceeds the limit (a trailing CR may still be
      // the first half of CRLF and does not count).
      std::size_t length = line_.size() + data.size();
      if (data.back() == '\r') --length;
      if (length > limits_.max_line) {
        line_.append(data.substr(0, std::min(data.size(), kEvidenceMax)));
        return line_too_long(line_);
      }
      line_.append(data);
      offset_ += data.size();
      return ok_status();
    }

    const std::size_t chunk = static_cast<std::size_t>(lf - data.data());
    std::string_view line;
    if (line_.empty()) {
      line = data.substr(0, chunk);
    } else {
      if (line_.size() + chunk > limits_.max_line + 1) {
        line_.append(data.substr(0, std::min(chunk, kEvidenceMax)));
        return line_too_long(line_);
      }
      line_.append(data.data(), chunk);
      line = line_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limits_.max_line) return line_too_long(line);
    offset_ += chunk + 1;
    data.remove_prefix(chunk + 1);
    if (auto st = finish_line(line); !st) return st;
    line_.clear();
  }
  return ok_status();
}

Status Reader::finish_line(std::string_view line) {
  const void* nul = std::memchr(line.data(), '\0', line.size());
  const void* cr = std::memchr(line.data(), '\r', line.size());
  if (nul != nullptr || cr != nullptr) {
    const char* first = static_cast<const char*>(nul == nullptr  ? cr
                                                 : cr == nullptr ? nul
                                                                 : std::min(nul, cr));
    const auto at = static_cast<std::size_t>(first - line.data());
    const bool is_nul = *first == '\0';
    return fail(
        line_error(Errc::protocol,
                   fmt::format("{} in line (stream offset {})",
                               is_nul ? "NUL byte" : "CR not followed by LF", line_start_ + at),
                   line, at));
  }

  const LiteralAnnouncement lit = find_announcement(line);
  if (lit.present) {
    if (lit.plus) {
      // RFC 7888 §5 and RFC 9051 §4.3: only clients send non-synchronizing literals.
      return fail(line_error(Errc::protocol,
                             fmt::format("non-synchronizing literal from server (stream offset {})",
                                         line_start_ + lit.open),
                             line, lit.open));
    }
    std::uint64_t size = 0;
    if (!parse_size(lit.digits, size) || size > limits_.max_literal) {
      // CVE-2021-3657 (mbsync): refuse before allocating anything for it.
      return fail(
          line_error(Errc::limit,
                     fmt::format("literal of {} bytes exceeds the limit of {} (stream offset {})",
                                 lit.digits, limits_.max_literal, line_start_ + lit.open),
                     line, lit.open));
    }
    if (current_.literals.size() >= limits_.max_literals_per_response) {
      return fail(line_error(Errc::limit,
                             fmt::format("more than {} literals in one response (stream offset {})",
                                         limits_.max_literals_per_response, line_start_ + lit.open),
                             line, lit.open));
    }
    current_.text.append(line);
    current_.text.append("\r\n");
    std::string& body = current_.literals.emplace_back();
    body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(size, kLiteralReserveMax)));
    literal_remaining_ = size;
    in_literal_ = size > 0;
    line_start_ = offset_;
    return ok_status();
  }

  current_.text.append(line);
  current_.stream_offset = frame_start_;
  ready_.push_back(std::move(current_));
  current_ = Frame();
  frame_start_ = offset_;
  line_start_ = offset_;
  return ok_status();
}

namespace {
constexpr std::size_t kKeptFrames = 64;
}  // namespace

std::optional<Frame> Reader::next() {
  if (ready_head_ == ready_.size()) return std::nullopt;
  std::optional<Frame> frame(std::move(ready_[ready_head_++]));
  if (ready_head_ == ready_.size()) {
    ready_.clear();
    ready_head_ = 0;
    // A burst (thousands of FETCH lines in one read) leaves a large capacity behind, on every
    // connection, for the rest of the run: give it back.
    if (ready_.capacity() > kKeptFrames) ready_.shrink_to_fit();
  }
  return frame;
}

bool Reader::mid_frame() const {
  return in_literal_ || !line_.empty() || !current_.text.empty() || !current_.literals.empty();
}

}  // namespace twinbox::imap
