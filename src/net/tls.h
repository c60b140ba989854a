// TLS policy: InterIMAP's SSL_* options mapped onto OpenSSL, verification on by default.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/ssl/context.hpp>

#include "base/error.h"

namespace twinbox::net {

struct TlsOptions {
  bool verify = true;                     // SSL_verify: chain AND host name (RFC 7817)
  std::string ca_file;                    // SSL_CAfile
  std::string ca_path;                    // SSL_CApath
  std::vector<std::string> fingerprints;  // SSL_fingerprint: "[ALGO$]HEX" SPKI digests, any matches
  std::string protocol_min, protocol_max;   // SSL_protocol_min/max: "TLSv1.2", ...
  std::string cipherlist;                   // SSL_cipherlist (TLS <= 1.2)
  std::optional<std::string> ciphersuites;  // SSL_ciphersuites (TLS 1.3), may be empty
  std::optional<std::string> sni;           // SSL_hostname; nullopt: the host unless an IP literal
};

Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const TlsOptions& options);

// What the handshake negotiated, for --debug and the probe.
struct TlsInfo {
  std::string protocol;     // "TLSv1.3"
  std::string cipher;       // "TLS_AES_256_GCM_SHA384"
  std::string spki_sha256;  // hex SHA-256 of the peer's SubjectPublicKeyInfo (SSL_fingerprint form)
  std::string subject;      // peer certificate subject, one line
};

// SHA-256 (or `algorithm`) over the DER SubjectPublicKeyInfo of `cert`, lowercase hex.
// This is InterIMAP's SSL_fingerprint and `openssl x509 -pubkey | openssl pkey -pubin -outform DER
// | openssl dgst -sha256`; X509_pubkey_digest() would hash only the key bits and differ.
Result<std::string> spki_digest(::X509* cert, const std::string& algorithm = "sha256");

// Checks `cert` against the configured pins. Ok if `pins` is empty or any pin matches.
Status check_pins(::X509* cert, const std::vector<std::string>& pins);

}  // namespace twinbox::net
