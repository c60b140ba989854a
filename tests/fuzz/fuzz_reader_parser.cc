// libFuzzer target over Reader + parse_response (see README.md for a long run).
//
// Input layout: byte 0 picks the chunking, the rest is the server's byte stream. The stream is
// fed twice: once whole, once in chunks whose sizes come from the input itself. Besides "never
// crash", three properties are checked and a violation aborts:
//   1. chunking does not matter: both runs give the same frames, the same parse results and the
//      same error (imap-codec's fragmentizer target checks the same idea);
//   2. bounded memory: no frame holds a line or literal beyond the configured limits;
//   3. range checks hold for whatever parses: no UID/sequence number 0, mod-sequences within
//      1..2^63-1, COPYUID sets of equal size.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "imap/parser.h"
#include "imap/reader.h"

namespace {

using namespace twinbox;
using namespace twinbox::imap;

// Small limits so short inputs reach every limit path.
constexpr Limits kLimits{.max_line = 2048,
                         .max_literal = 4096,
                         .max_literals_per_response = 16,
                         .max_nesting = 12,
                         .max_set_members = 4096};

void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

void check_code(const ResponseCode& c) {
  if (c.kind == CodeKind::highestmodseq) {
    check(c.number >= 1 && c.number <= kMaxModSeq, "HIGHESTMODSEQ range");
  }
  if (c.kind == CodeKind::copyuid) {
    check(c.set_order.size() == c.set2_order.size(), "COPYUID sets of equal size");
  }
  if (c.kind == CodeKind::appenduid || c.kind == CodeKind::copyuid) {
    check(c.number != 0, "UIDPLUS uidvalidity non-zero");
    check(c.set_order.size() <= kLimits.max_set_members, "set expansion bounded");
    for (Uid u : c.set_order) check(u != 0 && c.set.contains(u), "UIDPLUS uid in set");
  }
}

void check_response(const Response& r) {
  if (const auto* s = std::get_if<StatusResponse>(&r.data)) check_code(s->code);
  if (const auto* f = std::get_if<FetchData>(&r.data)) {
    check(f->seq != 0, "FETCH sequence number non-zero");
    check(!f->uid || *f->uid != 0, "FETCH UID non-zero");
    check(!f->modseq || (*f->modseq >= 1 && *f->modseq <= kMaxModSeq), "MODSEQ range");
    for (const auto& b : f->bodies) {
      check(!b.data || b.data->size() <= kLimits.max_literal + kLimits.max_line, "body bounded");
    }
  }
  if (const auto* v = std::get_if<VanishedData>(&r.data)) {
    check(!v->uids.empty() && !v->uids.contains(0), "VANISHED set non-empty, no 0");
  }
  if (const auto* s = std::get_if<SearchData>(&r.data)) {
    for (auto n : s->numbers) check(n != 0, "SEARCH numbers non-zero");
  }
}

struct Run {
  std::vector<Frame> frames;
  std::vector<std::string> results;  // "ok" or the error text, per frame
  std::string error;
  bool mid_frame = false;
};

Run run(std::string_view input, std::uint8_t mode) {
  Run out;
  Reader reader(kLimits);
  std::size_t pos = 0;
  const std::size_t spread = (mode & 0x3f) + 1u;
  while (pos < input.size()) {
    std::size_t n = input.size() - pos;
    // mode 0 feeds everything at once; otherwise each chunk's size is taken from the byte at
    // the chunk's start, so the fuzzer controls where the cuts fall.
    if (mode != 0) n = std::min(n, 1 + static_cast<unsigned char>(input[pos]) % spread);
    const Status st = reader.feed(input.substr(pos, n));
    pos += n;
    while (auto frame = reader.next()) {
      for (const auto& l : frame->literals) check(l.size() <= kLimits.max_literal, "literal bound");
      check(frame->literals.size() <= kLimits.max_literals_per_response, "literal count bound");
      out.frames.push_back(*frame);
      auto parsed = parse_response(std::move(*frame), kLimits);
      if (parsed.ok()) {
        check_response(*parsed);
        out.results.emplace_back("ok");
      } else {
        check(!parsed.error().message.empty(), "error has a message");
        out.results.push_back(parsed.error().to_string());
      }
    }
    if (!st) {
      out.error = st.error().to_string();
      break;
    }
  }
  out.mid_frame = reader.mid_frame();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const Run whole = run(input, 0);
  const Run chunked = run(input, mode == 0 ? 1 : mode);
  check(whole.frames == chunked.frames, "same frames whatever the chunking");
  check(whole.results == chunked.results, "same parse results whatever the chunking");
  check(whole.error == chunked.error, "same reader error whatever the chunking");
  check(whole.mid_frame == chunked.mid_frame, "same mid_frame whatever the chunking");
  return 0;
}
