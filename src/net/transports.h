// The concrete transports: TCP with optional TLS upgrade, tunnel subprocess, COMPRESS layer.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/ssl/stream.hpp>

#include "net/deadline.h"
#include "net/tls.h"
#include "net/transport.h"

namespace twinbox::net {

// A TCP connection that can be upgraded to TLS once (implicit TLS right after connect, or
// STARTTLS later). Before the upgrade it is plain TCP.
class SocketTransport final : public Transport {
 public:
  explicit SocketTransport(asio::ip::tcp::socket socket, std::string peer);
  ~SocketTransport() override;

  asio::awaitable<Result<std::size_t>> read_some(asio::mutable_buffer buffer) override;
  asio::awaitable<Status> write_all(std::string_view bytes) override;
  void close() override;
  std::string describe() const override;
  Counters counters() const override { return counters_; }

  // Performs the TLS handshake as a client: SNI per `options.sni` (default: `host` unless it is
  // an IP literal), chain and host-name verification when options.verify, then SPKI pins.
  // Nothing of IMAP is sent or read before this returns Ok. Callers must have discarded every
  // byte read before the upgrade (RFC 9051 §6.2.1; the STARTTLS response-injection attack).
  asio::awaitable<Result<TlsInfo>> start_tls(std::shared_ptr<asio::ssl::context> context,
                                             const std::string& host, const TlsOptions& options);
  bool tls_active() const { return tls_ != nullptr; }
  void set_peer(std::string peer) { peer_ = std::move(peer); }  // for describe() and errors

 private:
  asio::ip::tcp::socket socket_;
  std::shared_ptr<asio::ssl::context> context_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  std::string peer_;
  std::string tls_protocol_;
  Counters counters_;
};

// Resolves `host` and connects to the first address that answers within `timeout` in total.
asio::awaitable<Result<std::unique_ptr<SocketTransport>>> connect_tcp(const std::string& host,
                                                                      const std::string& port,
                                                                      Duration timeout);

// InterIMAP's `proxy`: a SOCKS5 proxy (RFC 1928) with optional username/password (RFC 1929).
struct Socks5Proxy {
  bool proxy_resolves = false;  // socks5h: the proxy resolves the server's name
  std::string host;
  std::string port = "1080";
  std::string username, password;  // empty username: no authentication offered
};

// Connects to `proxy` and through it to host:port (a number or a TCP service name); the result
// is a SocketTransport like connect_tcp's, ready for TLS or IMAP. `timeout` bounds the TCP
// connection and, separately, the SOCKS5 exchange. Errors name the proxy (socks5.h for codes).
asio::awaitable<Result<std::unique_ptr<SocketTransport>>> connect_socks5(const Socks5Proxy& proxy,
                                                                         const std::string& host,
                                                                         const std::string& port,
                                                                         Duration timeout);

// Runs `command` through /bin/sh and speaks to it over a socketpair on its stdin/stdout
// (InterIMAP's type=tunnel). Its stderr goes to /dev/null when `null_stderr`, else to ours.
class TunnelTransport final : public Transport {
 public:
  static Result<std::unique_ptr<TunnelTransport>> spawn(const asio::any_io_executor& executor,
                                                        const std::string& command,
                                                        bool null_stderr);
  ~TunnelTransport() override;

  asio::awaitable<Result<std::size_t>> read_some(asio::mutable_buffer buffer) override;
  asio::awaitable<Status> write_all(std::string_view bytes) override;
  void close() override;
  std::string describe() const override;
  Counters counters() const override { return counters_; }
  pid_t pid() const { return pid_; }

 private:
  TunnelTransport(asio::local::stream_protocol::socket socket, pid_t pid, std::string command);
  void reap();

  asio::local::stream_protocol::socket socket_;
  pid_t pid_;
  std::string command_;
  Counters counters_;
};

// RFC 4978 COMPRESS=DEFLATE over another transport: raw deflate (window bits -15) both ways,
// a sync flush after every write so each command reaches the server whole. `already_read` are
// bytes the caller read from `inner` past the tagged OK of COMPRESS: they are compressed data.
std::unique_ptr<Transport> make_compressed(std::unique_ptr<Transport> inner,
                                           std::string already_read);

}  // namespace twinbox::net
