// Reader + parser throughput on the stream a sync reads most: FETCH responses carrying message
// bodies. Input is fed in 64 KiB chunks, as a socket read would deliver it. The target is well
// above 300 MB/s on one core, so that parsing never limits a sync.
#include <benchmark/benchmark.h>

#include <string>

#include <fmt/format.h>

#include "imap/parser.h"
#include "imap/reader.h"

namespace {

using twinbox::imap::parse_response;
using twinbox::imap::Reader;

constexpr std::size_t kChunk = 64 * 1024;

std::string message_body(std::size_t size) {
  std::string body =
      "Return-Path: <alice@example.org>\r\n"
      "Message-ID: <20240611.123456@example.org>\r\n"
      "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
      "Subject: benchmark\r\nDate: Tue, 11 Jun 2024 10:00:00 +0000\r\n\r\n";
  while (body.size() < size) body += "The quick brown fox jumps over the lazy dog. 0123456789\r\n";
  body.resize(size);
  return body;
}

// `count` responses of the form
//   * n FETCH (UID n MODSEQ (m) FLAGS (\Seen) INTERNALDATE "..." RFC822.SIZE s BODY[] {s}\r\n...)
std::string fetch_stream(int count, std::size_t body_size) {
  const std::string body = message_body(body_size);
  std::string out;
  for (int n = 1; n <= count; ++n) {
    out += fmt::format(
        "* {} FETCH (UID {} MODSEQ ({}) FLAGS (\\Seen) INTERNALDATE \"11-Jun-2024 10:00:00 "
        "+0000\" RFC822.SIZE {} BODY[] {{{}}}\r\n",
        n, 1000 + n, 9000000 + n, body.size(), body.size());
    out += body;
    out += ")\r\n";
  }
  return out;
}

// Flag-only FETCH lines, the bulk of a CONDSTORE resync: no literals, all parsing.
std::string flags_stream(int count) {
  std::string out;
  for (int n = 1; n <= count; ++n) {
    out += fmt::format("* {} FETCH (UID {} MODSEQ ({}) FLAGS (\\Seen \\Answered $Label1))\r\n", n,
                       1000 + n, 9000000 + n);
  }
  return out;
}

void parse_stream(benchmark::State& state, const std::string& stream) {
  std::size_t responses = 0;
  for (auto _ : state) {
    Reader reader;
    for (std::size_t pos = 0; pos < stream.size(); pos += kChunk) {
      if (!reader.feed(std::string_view(stream).substr(pos, kChunk))) {
        state.SkipWithError("reader failed");
        return;
      }
      while (auto frame = reader.next()) {
        auto response = parse_response(std::move(*frame));
        if (!response.ok()) {
          state.SkipWithError(response.error().to_string().c_str());
          return;
        }
        benchmark::DoNotOptimize(response);
        ++responses;
      }
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
  state.SetItemsProcessed(static_cast<std::int64_t>(responses));
}

void BM_FetchStream4KiBBodies(benchmark::State& state) {
  static const std::string stream = fetch_stream(2048, 4096);  // ~8.7 MB
  parse_stream(state, stream);
}
BENCHMARK(BM_FetchStream4KiBBodies);

void BM_FetchStream64KiBBodies(benchmark::State& state) {
  static const std::string stream = fetch_stream(128, 64 * 1024);
  parse_stream(state, stream);
}
BENCHMARK(BM_FetchStream64KiBBodies);

void BM_FetchFlagsOnly(benchmark::State& state) {
  static const std::string stream = flags_stream(50000);
  parse_stream(state, stream);
}
BENCHMARK(BM_FetchFlagsOnly);

// Framing alone, for comparison with the full parse.
void BM_ReaderOnly4KiBBodies(benchmark::State& state) {
  static const std::string stream = fetch_stream(2048, 4096);
  for (auto _ : state) {
    Reader reader;
    for (std::size_t pos = 0; pos < stream.size(); pos += kChunk) {
      (void)reader.feed(std::string_view(stream).substr(pos, kChunk));
      while (auto frame = reader.next()) benchmark::DoNotOptimize(frame);
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
}
BENCHMARK(BM_ReaderOnly4KiBBodies);

}  // namespace
