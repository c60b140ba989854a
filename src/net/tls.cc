#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace twinbox::net {

namespace {

std::string openssl_error_text() {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

std::optional<int> protocol_version(const std::string& name) {
  if (name == "SSLv3") return SSL3_VERSION;
  if (name == "TLSv1") return TLS1_VERSION;
  if (name == "TLSv1.1") return TLS1_1_VERSION;
  if (name == "TLSv1.2") return TLS1_2_VERSION;
  if (name == "TLSv1.3") return TLS1_3_VERSION;
  return std::nullopt;
}

}  // namespace

Result<std::shared_ptr<asio::ssl::context>> make_tls_context(const TlsOptions& options) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX* ctx = context->native_handle();
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);  // CRIME; COMPRESS=DEFLATE is ours to decide

  // TLS 1.2 unless told otherwise: RFC 9051 §11.1 requires it, mbsync 1.5 defaults to it.
  const std::string min_name = options.protocol_min.empty() ? "TLSv1.2" : options.protocol_min;
  auto min = protocol_version(min_name);
  if (!min) return Error(Errc::config, fmt::format("unknown SSL_protocol_min '{}'", min_name));
  SSL_CTX_set_min_proto_version(ctx, *min);
  if (!options.protocol_max.empty()) {
    auto max = protocol_version(options.protocol_max);
    if (!max) {
      return Error(Errc::config,
                   fmt::format("unknown SSL_protocol_max '{}'", options.protocol_max));
    }
    SSL_CTX_set_max_proto_version(ctx, *max);
  }
  if (!options.cipherlist.empty() &&
      SSL_CTX_set_cipher_list(ctx, options.cipherlist.c_str()) != 1) {
    return Error(Errc::config, fmt::format("SSL_cipherlist '{}' rejected: {}", options.cipherlist,
                                           openssl_error_text()));
  }
  if (options.ciphersuites && SSL_CTX_set_ciphersuites(ctx, options.ciphersuites->c_str()) != 1) {
    return Error(Errc::config, fmt::format("SSL_ciphersuites '{}' rejected: {}",
                                           *options.ciphersuites, openssl_error_text()));
  }

  if (options.ca_file.empty() && options.ca_path.empty()) {
    // Honours SSL_CERT_FILE / SSL_CERT_DIR like InterIMAP 0.5.5.
    SSL_CTX_set_default_verify_paths(ctx);
  } else if (SSL_CTX_load_verify_locations(
                 ctx, options.ca_file.empty() ? nullptr : options.ca_file.c_str(),
                 options.ca_path.empty() ? nullptr : options.ca_path.c_str()) != 1) {
    return Error(Errc::config,
                 fmt::format("cannot load SSL_CAfile/SSL_CApath: {}", openssl_error_text()));
  }
  context->set_verify_mode(options.verify ? asio::ssl::verify_peer : asio::ssl::verify_none);
  return context;
}

Result<std::string> spki_digest(::X509* cert, const std::string& algorithm) {
  const EVP_MD* md = EVP_get_digestbyname(algorithm.c_str());
  if (md == nullptr) return Error(Errc::config, fmt::format("unknown digest '{}'", algorithm));
  unsigned char* der = nullptr;
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (len <= 0) return Error(Errc::tls, "cannot encode the peer's public key");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  const int ok = EVP_Digest(der, static_cast<std::size_t>(len), digest, &digest_len, md, nullptr);
  OPENSSL_free(der);
  if (ok != 1) return Error(Errc::tls, "digest of the peer's public key failed");
  std::string hex;
  for (unsigned int i = 0; i < digest_len; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

Status check_pins(::X509* cert, const std::vector<std::string>& pins) {
  if (pins.empty()) return ok_status();
  for (const auto& pin : pins) {
    std::string algorithm = "sha256";
    std::string hex = pin;
    if (auto dollar = pin.find('$'); dollar != std::string::npos) {
      algorithm = pin.substr(0, dollar);
      hex = pin.substr(dollar + 1);
    }
    std::string normalized;
    for (char c : hex) {
      if (c != ':') normalized += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    auto digest = spki_digest(cert, algorithm);
    if (!digest) return digest.error();
    if (*digest == normalized) return ok_status();
  }
  auto actual = spki_digest(cert);
  return Error(Errc::tls, fmt::format("server public key matches no SSL_fingerprint (it is "
                                      "sha256${}): refusing to continue, possible MITM",
                                      actual ? *actual : std::string("?")));
}

}  // namespace twinbox::net
