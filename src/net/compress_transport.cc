#include <zlib.h>

#include <array>

#include <fmt/format.h>

#include "net/transports.h"

namespace twinbox::net {

namespace {

constexpr std::size_t kChunk = 64 * 1024;

class CompressTransport final : public Transport {
 public:
  CompressTransport(std::unique_ptr<Transport> inner, std::string already_read)
      : inner_(std::move(inner)), pending_(std::move(already_read)) {
    // Uncompressed traffic before the switch still counts as traffic the IMAP layer saw.
    const Counters before = inner_->counters();
    counters_.plain_in = before.plain_in;
    counters_.plain_out = before.plain_out;
    inflate_ok_ = inflateInit2(&inflater_, -15) == Z_OK;
    deflate_ok_ = deflateInit2(&deflater_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
                               Z_DEFAULT_STRATEGY) == Z_OK;
    inflater_.next_in = reinterpret_cast<Bytef*>(pending_.data());
    inflater_.avail_in = static_cast<uInt>(pending_.size());
  }
  ~CompressTransport() override {
    if (inflate_ok_) inflateEnd(&inflater_);
    if (deflate_ok_) deflateEnd(&deflater_);
  }

  asio::awaitable<Result<std::size_t>> read_some(asio::mutable_buffer buffer) override {
    if (!inflate_ok_) co_return Error(Errc::internal, "zlib inflateInit2 failed");
    for (;;) {
      if (ended_) co_return Error(Errc::eof, "the server ended the compressed stream");
      if (inflater_.avail_in > 0) {
        inflater_.next_out = static_cast<Bytef*>(buffer.data());
        inflater_.avail_out = static_cast<uInt>(buffer.size());
        const int rc = inflate(&inflater_, Z_SYNC_FLUSH);
        const std::size_t produced = buffer.size() - inflater_.avail_out;
        if (rc == Z_STREAM_END) ended_ = true;
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
          co_return Error(Errc::protocol,
                          fmt::format("corrupt COMPRESS=DEFLATE stream from the server: {}",
                                      inflater_.msg != nullptr ? inflater_.msg : "zlib error"));
        }
        if (produced > 0) {
          counters_.plain_in += produced;
          co_return produced;
        }
      }
      // Need more compressed input.
      pending_.resize(kChunk);
      auto n = co_await inner_->read_some(asio::buffer(pending_.data(), pending_.size()));
      if (!n) {
        if (n.error().code == Errc::eof && inflater_.total_in > 0 && !ended_) {
          co_return Error(Errc::eof, "connection closed in the middle of a compressed block");
        }
        co_return n.error();
      }
      inflater_.next_in = reinterpret_cast<Bytef*>(pending_.data());
      inflater_.avail_in = static_cast<uInt>(*n);
    }
  }

  asio::awaitable<Status> write_all(std::string_view bytes) override {
    if (!deflate_ok_) co_return Error(Errc::internal, "zlib deflateInit2 failed");
    deflater_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
    deflater_.avail_in = static_cast<uInt>(bytes.size());
    // Z_SYNC_FLUSH: the server must be able to decode each command without waiting for more.
    do {
      deflater_.next_out = reinterpret_cast<Bytef*>(out_.data());
      deflater_.avail_out = static_cast<uInt>(out_.size());
      const int rc = deflate(&deflater_, Z_SYNC_FLUSH);
      if (rc != Z_OK && rc != Z_BUF_ERROR) co_return Error(Errc::internal, "zlib deflate failed");
      const std::size_t produced = out_.size() - deflater_.avail_out;
      if (produced > 0) {
        Status written = co_await inner_->write_all(std::string_view(out_.data(), produced));
        if (!written) co_return written;
      }
    } while (deflater_.avail_out == 0 || deflater_.avail_in > 0);
    counters_.plain_out += bytes.size();
    co_return ok_status();
  }

  void close() override { inner_->close(); }
  std::string describe() const override { return inner_->describe() + " (COMPRESS=DEFLATE)"; }
  Counters counters() const override {
    Counters c = inner_->counters();
    c.plain_in = counters_.plain_in;
    c.plain_out = counters_.plain_out;
    return c;
  }

 private:
  std::unique_ptr<Transport> inner_;
  std::string pending_;
  std::array<char, kChunk> out_{};
  z_stream inflater_{};
  z_stream deflater_{};
  bool inflate_ok_ = false;
  bool deflate_ok_ = false;
  bool ended_ = false;
  Counters counters_;
};

}  // namespace

std::unique_ptr<Transport> make_compressed(std::unique_ptr<Transport> inner,
                                           std::string already_read) {
  return std::make_unique<CompressTransport>(std::move(inner), std::move(already_read));
}

}  // namespace twinbox::net
