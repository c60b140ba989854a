// Byte transports under the IMAP client: TCP (optionally upgraded to TLS), a tunnel subprocess,
// and a COMPRESS=DEFLATE layer over either. They move bytes and nothing else: framing, parsing
// and protocol state live in the sans-io core (src/imap).
//
// Every operation reports failure as a value. A read of zero bytes never happens: end of stream
// is Errc::eof. Operations are not thread-safe; one coroutine drives a transport at a time, except
// that close() may be called from a deadline timer while an operation is pending.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>

#include "base/error.h"

namespace twinbox::net {

class Transport {
 public:
  virtual ~Transport() = default;

  // Reads at least one byte into `buffer`.
  virtual asio::awaitable<Result<std::size_t>> read_some(asio::mutable_buffer buffer) = 0;
  // Writes all of `bytes`.
  virtual asio::awaitable<Status> write_all(std::string_view bytes) = 0;
  // Aborts pending operations and releases the connection; idempotent.
  virtual void close() = 0;
  // Short description for logs: "127.0.0.1:143 (TLSv1.3)", "tunnel pid 1234 (compressed)".
  virtual std::string describe() const = 0;

  // Bytes moved so far, on the wire (after compression) and as the IMAP layer sees them.
  struct Counters {
    std::uint64_t wire_in = 0, wire_out = 0, plain_in = 0, plain_out = 0;
  };
  virtual Counters counters() const = 0;
};

}  // namespace twinbox::net
