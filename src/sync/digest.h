// SHA-256 of message bodies: how a copy is recognised on the other server after a crash
// (intents), and how identical messages are paired without copying them (--repair).
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace twinbox::sync {

// Incremental SHA-256 (OpenSSL EVP), for bodies that are never whole in memory.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view bytes);
  // Lower-case hex digest of everything updated so far; the hasher is spent afterwards.
  std::string finish_hex();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string sha256_hex(std::string_view bytes);

}  // namespace twinbox::sync
