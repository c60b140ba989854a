#include <netdb.h>
#include <openssl/ssl.h>
#include <string.h>

#include <openssl/x509v3.h>
#include <algorithm>

#include <fmt/format.h>
#include <asio/connect.hpp>
#include <asio/ip/address.hpp>
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/write.hpp>

#include "net/socks5.h"
#include "net/transports.h"

namespace twinbox::net {

namespace {

Error io_error(const std::string& what, const asio::error_code& ec) {
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
    return Error(Errc::eof, what + ": connection closed by the server");
  }
  if (ec == asio::error::operation_aborted) return Error(Errc::io, what + ": cancelled");
  return Error(Errc::io, fmt::format("{}: {}", what, ec.message()));
}

bool is_ip_literal(const std::string& host) {
  asio::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

SocketTransport::SocketTransport(asio::ip::tcp::socket socket, std::string peer)
    : socket_(std::move(socket)), peer_(std::move(peer)) {}

SocketTransport::~SocketTransport() { close(); }

asio::awaitable<Result<std::size_t>> SocketTransport::read_some(asio::mutable_buffer buffer) {
  asio::error_code ec;
  std::size_t n = 0;
  if (tls_) {
    n = co_await tls_->async_read_some(buffer, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    n = co_await socket_.async_read_some(buffer, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) co_return io_error("read from " + peer_, ec);
  counters_.wire_in += n;
  counters_.plain_in += n;
  co_return n;
}

asio::awaitable<Status> SocketTransport::write_all(std::string_view bytes) {
  asio::error_code ec;
  auto buffer = asio::buffer(bytes.data(), bytes.size());
  if (tls_) {
    co_await asio::async_write(*tls_, buffer, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await asio::async_write(socket_, buffer, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) co_return io_error("write to " + peer_, ec);
  counters_.wire_out += bytes.size();
  counters_.plain_out += bytes.size();
  co_return ok_status();
}

void SocketTransport::close() {
  asio::error_code ignored;
  if (socket_.is_open()) {
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
}

std::string SocketTransport::describe() const {
  return tls_ ? fmt::format("{} ({})", peer_, tls_protocol_) : peer_;
}

asio::awaitable<Result<TlsInfo>> SocketTransport::start_tls(
    std::shared_ptr<asio::ssl::context> context, const std::string& host,
    const TlsOptions& options) {
  context_ = std::move(context);
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, *context_);
  SSL* ssl = tls_->native_handle();

  const std::string sni = options.sni.value_or(is_ip_literal(host) ? std::string() : host);
  if (!sni.empty() && SSL_set_tlsext_host_name(ssl, sni.c_str()) != 1) {
    co_return Error(Errc::tls, fmt::format("cannot set SNI name '{}'", sni));
  }
  if (options.verify) {
    // RFC 7817: the name checked is the configured host, never one learned from the network.
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int set = is_ip_literal(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                                        : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    if (set != 1) co_return Error(Errc::tls, fmt::format("cannot verify host name '{}'", host));
  }

  asio::error_code ec;
  co_await tls_->async_handshake(asio::ssl::stream_base::client,
                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    std::string reason = ec.message();
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      reason =
          fmt::format("certificate verification failed: {}", X509_verify_cert_error_string(verify));
    }
    co_return Error(Errc::tls, fmt::format("TLS handshake with {} failed: {}", peer_, reason));
  }

  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) co_return Error(Errc::tls, "the server presented no certificate");
  std::unique_ptr<X509, decltype(&X509_free)> owner(cert, X509_free);
  Status pinned = check_pins(cert, options.fingerprints);
  if (!pinned) co_return pinned.error();

  TlsInfo info;
  info.protocol = SSL_get_version(ssl);
  info.cipher = SSL_get_cipher_name(ssl);
  auto digest = spki_digest(cert);
  if (digest) info.spki_sha256 = *digest;
  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
  info.subject = subject;
  tls_protocol_ = info.protocol;
  co_return info;
}

asio::awaitable<Result<std::unique_ptr<SocketTransport>>> connect_tcp(const std::string& host,
                                                                      const std::string& port,
                                                                      Duration timeout) {
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::resolver resolver(executor);
  asio::error_code ec;
  auto endpoints =
      co_await resolver.async_resolve(host, port, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return Error(Errc::io, fmt::format("cannot resolve {}:{}: {}", host, port, ec.message()));
  }
  asio::ip::tcp::socket socket(executor);
  auto connect = [&]() -> asio::awaitable<Result<asio::ip::tcp::endpoint>> {
    asio::error_code cec;
    auto endpoint = co_await asio::async_connect(socket, endpoints,
                                                 asio::redirect_error(asio::use_awaitable, cec));
    if (cec) {
      co_return Error(Errc::io,
                      fmt::format("cannot connect to {}:{}: {}", host, port, cec.message()));
    }
    co_return endpoint;
  };
  auto connecting = connect();
  auto connected = co_await with_deadline(std::move(connecting), timeout,
                                          fmt::format("connecting to {}:{}", host, port));
  if (!connected) co_return connected.error();
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  socket.set_option(asio::socket_base::keep_alive(true), ec);
  const auto& endpoint = *connected;
  std::string peer = endpoint.address().is_v6()
                         ? fmt::format("[{}]:{}", endpoint.address().to_string(), endpoint.port())
                         : fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
  co_return std::make_unique<SocketTransport>(std::move(socket), std::move(peer));
}

namespace {

// Reads exactly `n` bytes: nothing past the proxy's reply is consumed.
asio::awaitable<Result<std::string>> read_exactly(SocketTransport& socket, std::size_t n) {
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    auto got = co_await socket.read_some(asio::buffer(out.data() + have, n - have));
    if (!got) co_return got.error();
    have += *got;
  }
  co_return out;
}

// The port as a number; a service name ("imaps") through the services database, as InterIMAP's
// getservbyname.
Result<std::uint16_t> port_number(const std::string& port) {
  const bool digits =
      !port.empty() && port.size() <= 5 &&
      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits && std::stoul(port) <= 65535) return static_cast<std::uint16_t>(std::stoul(port));
  if (const servent* service = ::getservbyname(port.c_str(), "tcp"); service != nullptr) {
    return static_cast<std::uint16_t>(ntohs(static_cast<std::uint16_t>(service->s_port)));
  }
  return Error(Errc::config, fmt::format("unknown port or TCP service '{}'", port));
}

asio::awaitable<Status> socks5_handshake(SocketTransport& socket, const Socks5Proxy& proxy,
                                         std::string target_address, std::uint16_t port,
                                         std::string target) {
  const bool with_password = !proxy.username.empty();
  Status sent = co_await socket.write_all(socks5::greeting(with_password));
  if (!sent) co_return sent;
  auto method = co_await read_exactly(socket, 2);
  if (!method) co_return method.error();
  auto use_password = socks5::check_method(*method, with_password);
  if (!use_password) co_return use_password.error();
  if (*use_password) {
    auto request = socks5::password_request(proxy.username, proxy.password);
    if (!request) co_return request.error();
    sent = co_await socket.write_all(*request);
    ::explicit_bzero(request->data(), request->size());
    if (!sent) co_return sent;
    auto reply = co_await read_exactly(socket, 2);
    if (!reply) co_return reply.error();
    if (Status ok = socks5::check_password_reply(*reply); !ok) co_return ok;
  }
  auto request = socks5::connect_request(target_address, port);
  if (!request) co_return request.error();
  sent = co_await socket.write_all(*request);
  if (!sent) co_return sent;
  auto head = co_await read_exactly(socket, 5);
  if (!head) co_return head.error();
  auto remaining = socks5::reply_remaining(*head, target);
  if (!remaining) co_return remaining.error();
  auto rest = co_await read_exactly(socket, *remaining);
  if (!rest) co_return rest.error();
  co_return ok_status();
}

}  // namespace

asio::awaitable<Result<std::unique_ptr<SocketTransport>>> connect_socks5(const Socks5Proxy& proxy,
                                                                         const std::string& host,
                                                                         const std::string& port,
                                                                         Duration timeout) {
  const std::string via = fmt::format("SOCKS5 proxy {}:{}", proxy.host, proxy.port);
  const std::string target = fmt::format("{}:{}", host, port);
  auto number = port_number(port);
  if (!number) co_return number.error();
  // socks5: this side resolves the name and the proxy gets an address; socks5h: the name goes
  // to the proxy unresolved (nothing about the server is looked up here, as with Tor).
  std::string address = host;
  if (!proxy.proxy_resolves) {
    auto executor = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(executor);
    asio::error_code ec;
    auto found =
        co_await resolver.async_resolve(host, port, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || found.empty()) {
      co_return Error(Errc::io, fmt::format("cannot resolve {}: {}", target, ec.message()));
    }
    address = found.begin()->endpoint().address().to_string();
  }
  auto socket = co_await connect_tcp(proxy.host, proxy.port, timeout);
  if (!socket) {
    Error e = socket.error();
    e.message = fmt::format("{} (the {})", e.message, via);
    co_return e;
  }
  auto handshake = socks5_handshake(**socket, proxy, address, *number, target);
  auto done = co_await with_deadline(std::move(handshake), timeout, "the " + via + " handshake");
  if (!done) {
    Error e = done.error();
    e.message = fmt::format("{}: {}", via, e.message);
    co_return e;
  }
  (*socket)->set_peer(fmt::format("{} via {}", target, via));
  co_return std::move(*socket);
}

}  // namespace twinbox::net
