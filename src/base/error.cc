#include "base/error.h"

#include <fmt/format.h>

namespace twinbox {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::protocol:
      return "protocol error";
    case Errc::limit:
      return "limit exceeded";
    case Errc::rejected:
      return "rejected by server";
    case Errc::io:
      return "I/O error";
    case Errc::eof:
      return "connection closed";
    case Errc::timeout:
      return "timed out";
    case Errc::tls:
      return "TLS error";
    case Errc::auth:
      return "authentication error";
    case Errc::security:
      return "security violation";
    case Errc::config:
      return "configuration error";
    case Errc::usage:
      return "usage error";
    case Errc::internal:
      return "internal error";
  }
  return "error";
}

std::string printable(std::string_view bytes, std::size_t max) {
  std::string out;
  out.reserve(std::min(bytes.size(), max) + 8);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (out.size() >= max) {
      out += fmt::format("...[{} more bytes]", bytes.size() - i);
      break;
    }
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string Error::to_string() const {
  std::string out = fmt::format("{}: {}", errc_name(code), message);
  if (!evidence.empty()) {
    if (has_offset) out += fmt::format(" (at byte {})", offset);
    out += fmt::format(" in: {}", printable(evidence));
  }
  return out;
}

}  // namespace twinbox
