#include "cli/endpoint.h"

#include <string>

#include <gtest/gtest.h>

namespace twinbox::cli {
namespace {

config::Environment test_env() {
  config::Environment env;
  env.home = "/home/test";
  return env;
}

net::Endpoint endpoint_for(const std::string& remote_lines) {
  const std::string text =
      "[local]\ntype = tunnel\ncommand = imap-tunnel\n[remote]\nusername = u\npassword = p\n" +
      remote_lines;
  auto config = config::parse_config(text, "config", test_env());
  EXPECT_TRUE(config.ok()) << (config.ok() ? "" : config.error().to_string());
  auto endpoint = make_endpoint(config->remote, false);
  EXPECT_TRUE(endpoint.ok());
  return *endpoint;
}

// Microsoft 365 answers "BAD Command Error. 10" to long command lines: the limit UID sets are
// split to is the config's, else the client's default.
TEST(EndpointCommandLine, MaxCommandLineFromTheConfig) {
  EXPECT_EQ(endpoint_for("host = imap.example.org\n").max_line, imap::kDefaultMaxLine);
  EXPECT_EQ(endpoint_for("host = imap.example.org\nmax-command-line = 2000\n").max_line, 2000u);
}

TEST(EndpointCompress, RemoteOverTheNetworkIsCompressedByDefault) {
  EXPECT_TRUE(endpoint_for("host = imap.example.org\n").compress);
}

TEST(EndpointCompress, ServerOnThisMachineIsNotCompressedUnlessAsked) {
  for (const char* host : {"localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"}) {
    EXPECT_FALSE(endpoint_for(std::string("host = ") + host + "\n").compress) << host;
    EXPECT_TRUE(endpoint_for(std::string("host = ") + host + "\ncompress = YES\n").compress)
        << host;
  }
}

TEST(EndpointCompress, ExplicitNoIsHonoured) {
  EXPECT_FALSE(endpoint_for("host = imap.example.org\ncompress = NO\n").compress);
}

TEST(EndpointCompress, TunnelIsOnThisMachine) {
  auto config = config::parse_config(
      "[local]\ntype = tunnel\ncommand = imap-tunnel\n[remote]\ntype = tunnel\ncommand = x\n",
      "config", test_env());
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(on_this_machine(config->remote));
  EXPECT_FALSE(make_endpoint(config->remote, false)->compress);
}

}  // namespace
}  // namespace twinbox::cli
