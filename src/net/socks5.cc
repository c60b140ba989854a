#include "net/socks5.h"

#include <arpa/inet.h>

#include <fmt/format.h>

namespace twinbox::net::socks5 {

namespace {

constexpr std::uint8_t kVersion = 0x05;
constexpr std::uint8_t kNoAuthentication = 0x00, kUsernamePassword = 0x02, kNoAcceptable = 0xFF;
constexpr std::uint8_t kPasswordVersion = 0x01;  // RFC 1929 §2
constexpr std::uint8_t kConnect = 0x01;
constexpr std::uint8_t kIpv4 = 0x01, kDomainName = 0x03, kIpv6 = 0x04;

std::uint8_t byte(std::string_view bytes, std::size_t i) {
  return static_cast<std::uint8_t>(bytes[i]);
}

Error not_socks5(std::string_view what, std::string_view bytes) {
  return Error(Errc::protocol, fmt::format("the proxy's {} is not SOCKS5", what), printable(bytes),
               0);
}

}  // namespace

std::string greeting(bool with_password) {
  std::string out{static_cast<char>(kVersion)};
  if (with_password) {
    out += '\x02';
    out += static_cast<char>(kNoAuthentication);
    out += static_cast<char>(kUsernamePassword);
  } else {
    out += '\x01';
    out += static_cast<char>(kNoAuthentication);
  }
  return out;
}

Result<bool> check_method(std::string_view reply, bool offered_password) {
  if (reply.size() != 2 || byte(reply, 0) != kVersion) return not_socks5("greeting reply", reply);
  const std::uint8_t method = byte(reply, 1);
  if (method == kNoAuthentication) return false;
  if (method == kUsernamePassword && offered_password) return true;
  if (method == kNoAcceptable) {
    return Error(Errc::auth,
                 offered_password
                     ? "the proxy accepts neither no authentication nor our user name and password"
                     : "the proxy requires authentication: give user:password@ in the proxy URI");
  }
  return Error(
      Errc::protocol,
      fmt::format("the proxy chose authentication method {:#04x}, which we did not offer", method));
}

Result<std::string> password_request(std::string_view username, std::string_view password) {
  if (username.empty() || username.size() > 255 || password.size() > 255) {
    return Error(Errc::config,
                 "the proxy user name must be 1 to 255 octets, the password at most 255");
  }
  std::string out{static_cast<char>(kPasswordVersion), static_cast<char>(username.size())};
  out.append(username);
  out += static_cast<char>(password.size());
  out.append(password);
  return out;
}

Status check_password_reply(std::string_view reply) {
  // RFC 1929 §2 says VER is 1; some proxies answer 5 (curl and others accept either).
  if (reply.size() != 2 || (byte(reply, 0) != kPasswordVersion && byte(reply, 0) != kVersion)) {
    return not_socks5("authentication reply", reply);
  }
  if (byte(reply, 1) != 0) {
    return Error(Errc::auth, "the proxy refused the user name or password of the proxy URI");
  }
  return ok_status();
}

Result<std::string> connect_request(std::string_view host, std::uint16_t port) {
  std::string out{static_cast<char>(kVersion), static_cast<char>(kConnect), '\0'};
  const std::string name(host);
  unsigned char address[16];
  if (::inet_pton(AF_INET, name.c_str(), address) == 1) {
    out += static_cast<char>(kIpv4);
    out.append(reinterpret_cast<const char*>(address), 4);
  } else if (::inet_pton(AF_INET6, name.c_str(), address) == 1) {
    out += static_cast<char>(kIpv6);
    out.append(reinterpret_cast<const char*>(address), 16);
  } else {
    if (host.empty() || host.size() > 255) {
      return Error(Errc::config,
                   fmt::format("host name '{}' cannot go through SOCKS5 (1 to 255 octets)", host));
    }
    out += static_cast<char>(kDomainName);
    out += static_cast<char>(host.size());
    out.append(host);
  }
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xFF);
  return out;
}

std::string_view reply_text(std::uint8_t code) {
  switch (code) {
    case 0x00:
      return "succeeded";
    case 0x01:
      return "general SOCKS server failure";
    case 0x02:
      return "connection not allowed by ruleset";
    case 0x03:
      return "network unreachable";
    case 0x04:
      return "host unreachable";
    case 0x05:
      return "connection refused";
    case 0x06:
      return "TTL expired";
    case 0x07:
      return "command not supported";
    case 0x08:
      return "address type not supported";
    default:
      return "unassigned reply code";
  }
}

Result<std::size_t> reply_remaining(std::string_view head, std::string_view target) {
  if (head.size() != 5 || byte(head, 0) != kVersion || byte(head, 2) != 0) {
    return not_socks5("reply to CONNECT", head);
  }
  const std::uint8_t rep = byte(head, 1);
  if (rep != 0) {
    const Errc code = rep == 0x02 || rep == 0x07 || rep == 0x08 ? Errc::rejected : Errc::io;
    return Error(code, fmt::format("the proxy could not connect to {}: {} (SOCKS5 reply {})",
                                   target, reply_text(rep), rep));
  }
  // The bound address (ignored) and port: one byte of the address is in `head` already.
  switch (byte(head, 3)) {
    case kIpv4:
      return std::size_t{3 + 2};
    case kIpv6:
      return std::size_t{15 + 2};
    case kDomainName:
      return std::size_t{byte(head, 4)} + 2;
    default:
      return not_socks5("reply to CONNECT (address type)", head);
  }
}

}  // namespace twinbox::net::socks5
