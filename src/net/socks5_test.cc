#include "net/socks5.h"

#include <gtest/gtest.h>

namespace twinbox::net::socks5 {
namespace {

using namespace std::string_literals;

TEST(Socks5, GreetingOffersPasswordOnlyWithCredentials) {
  EXPECT_EQ(greeting(false), "\x05\x01\x00"s);
  EXPECT_EQ(greeting(true), "\x05\x02\x00\x02"s);
}

TEST(Socks5, MethodChoice) {
  EXPECT_EQ(*check_method("\x05\x00"s, true), false);
  EXPECT_EQ(*check_method("\x05\x02"s, true), true);
  auto refused = check_method("\x05\xff"s, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::auth);
  EXPECT_EQ(refused.error().message,
            "the proxy requires authentication: give user:password@ in the proxy URI");
  // A method we did not offer, or an answer that is not SOCKS5 (an HTTP proxy, say).
  EXPECT_EQ(check_method("\x05\x02"s, false).error().code, Errc::protocol);
  EXPECT_EQ(check_method("HT", false).error().code, Errc::protocol);
}

TEST(Socks5, PasswordExchange) {
  EXPECT_EQ(*password_request("tor", "pw"), "\x01\x03tor\x02pw"s);
  EXPECT_FALSE(password_request("", "pw").ok());
  EXPECT_FALSE(password_request(std::string(256, 'u'), "pw").ok());
  EXPECT_TRUE(check_password_reply("\x01\x00"s).ok());
  EXPECT_TRUE(check_password_reply("\x05\x00"s).ok());
  auto refused = check_password_reply("\x01\x01"s);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::auth);
}

TEST(Socks5, ConnectRequestAddressTypes) {
  EXPECT_EQ(*connect_request("127.0.0.1", 993), "\x05\x01\x00\x01\x7f\x00\x00\x01\x03\xe1"s);
  EXPECT_EQ(*connect_request("::1", 143),
            "\x05\x01\x00\x04"s + std::string(15, '\0') + "\x01\x00\x8f"s);
  // socks5h: the name itself, for the proxy to resolve.
  EXPECT_EQ(*connect_request("imap.example.org", 993),
            "\x05\x01\x00\x03\x10imap.example.org\x03\xe1"s);
  EXPECT_FALSE(connect_request(std::string(256, 'a'), 1).ok());
}

TEST(Socks5, ReplyLengthsAndFailures) {
  EXPECT_EQ(*reply_remaining("\x05\x00\x00\x01\x7f"s, "h:1"), 5u);
  EXPECT_EQ(*reply_remaining("\x05\x00\x00\x04\x00"s, "h:1"), 17u);
  EXPECT_EQ(*reply_remaining("\x05\x00\x00\x03\x09"s, "h:1"), 11u);
  auto refused = reply_remaining("\x05\x05\x00\x01\x00"s, "imap.example.org:993");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::io);
  EXPECT_EQ(refused.error().message,
            "the proxy could not connect to imap.example.org:993: connection refused (SOCKS5 "
            "reply 5)");
  EXPECT_EQ(reply_remaining("\x05\x02\x00\x01\x00"s, "h:1").error().code, Errc::rejected);
  EXPECT_EQ(reply_remaining("\x05\x00\x00\x07\x00"s, "h:1").error().code, Errc::protocol);
  EXPECT_EQ(reply_remaining("\x04\x5a\x00\x00\x00"s, "h:1").error().code, Errc::protocol);
}

}  // namespace
}  // namespace twinbox::net::socks5
