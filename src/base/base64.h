// Base64 (RFC 4648 §4, with padding), as SASL exchanges carry it (RFC 9051 §6.2.2, RFC 4959).
// OpenSSL does the work; these only adapt its block functions to strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace twinbox {

std::string base64_encode(std::string_view bytes);

// nullopt unless `text` is canonical padded base64: length a multiple of 4, only the alphabet,
// "=" only as the final one or two characters. An empty text decodes to nothing.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace twinbox
