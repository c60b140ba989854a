#include "sync/digest.h"

#include <gtest/gtest.h>

namespace twinbox::sync {
namespace {

TEST(Sha256, KnownVectors) {
  // FIPS 180-2 examples.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, PiecewiseEqualsWhole) {
  std::string body;
  for (int i = 0; i < 100000; ++i) body += static_cast<char>('a' + i % 26);
  Sha256 hasher;
  for (std::size_t at = 0; at < body.size(); at += 4093) {
    hasher.update(std::string_view(body).substr(at, 4093));
  }
  EXPECT_EQ(hasher.finish_hex(), sha256_hex(body));
}

}  // namespace
}  // namespace twinbox::sync
