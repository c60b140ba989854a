#include "base/base64.h"

#include <gtest/gtest.h>

namespace twinbox {
namespace {

using namespace std::string_literals;

TEST(Base64, EncodesWithPadding) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("\x01"), "AQ==");
  EXPECT_EQ(base64_encode("\0fred\0s3cr3t"s), "AGZyZWQAczNjcjN0");
}

TEST(Base64, DecodesCanonicalText) {
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_EQ(base64_decode("Zg=="), "f");
  EXPECT_EQ(base64_decode("Zm8="), "fo");
  EXPECT_EQ(base64_decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64_decode("eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0="), R"({"status":"invalid_token"})");
  EXPECT_EQ(base64_decode("AA=="), "\0"s);
}

TEST(Base64, RefusesWhatIsNotBase64) {
  for (const char* bad : {"Zg", "Zg=", "Z===", " Zg==", "Zg==\n", "Z-8=", "Zm9v!", "=Zm9"}) {
    EXPECT_EQ(base64_decode(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace twinbox
