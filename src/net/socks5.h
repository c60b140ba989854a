// The client side of a SOCKS5 handshake (RFC 1928) with username/password authentication
// (RFC 1929), as pure functions over bytes: the transport (socket_transport.cc) sends what these
// build and feeds back exactly the lengths they ask for, so nothing past the proxy's reply (the
// IMAP greeting may follow it at once) is ever consumed here.
//
//   client: greeting()                      proxy: 2 bytes  -> check_method()
//   [client: password_request()             proxy: 2 bytes  -> check_password_reply()]
//   client: connect_request()               proxy: 5 bytes  -> reply_remaining()
//                                            proxy: that many more bytes (address, port: ignored)
//
// Errors: Errc::auth (the proxy takes none of our methods, or refused the credentials),
// Errc::io (the proxy could not reach the server: network or host unreachable, refused, TTL),
// Errc::rejected (not allowed by its rules, command or address type unsupported),
// Errc::protocol (not a SOCKS5 answer), Errc::config (credentials or a name too long).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.h"

namespace twinbox::net::socks5 {

// Offers "no authentication", and username/password too when `with_password`.
std::string greeting(bool with_password);

// The proxy's method choice. True when it chose username/password (then send
// password_request()); false for "no authentication".
Result<bool> check_method(std::string_view reply, bool offered_password);

Result<std::string> password_request(std::string_view username, std::string_view password);
Status check_password_reply(std::string_view reply);

// CONNECT to host:port. An IP literal goes as an address (ATYP 1 or 4); anything else as a
// domain name (ATYP 3) for the proxy to resolve (socks5h).
Result<std::string> connect_request(std::string_view host, std::uint16_t port);

// The first 5 bytes of the reply to CONNECT: how many bytes of it are still to come, or the
// proxy's failure (REP) as an error naming `target`.
Result<std::size_t> reply_remaining(std::string_view head, std::string_view target);

// RFC 1928 §6 REP field in words ("connection refused").
std::string_view reply_text(std::uint8_t code);

}  // namespace twinbox::net::socks5
