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

TEST(EndpointProxy, SocksUriBecomesTheEndpointsProxy) {
  EXPECT_FALSE(endpoint_for("host = imap.example.org\n").proxy);
  const auto e = endpoint_for("host = imap.example.org\nproxy = socks5h://tor:pw@127.0.0.1:9050\n");
  ASSERT_TRUE(e.proxy);
  EXPECT_TRUE(e.proxy->proxy_resolves);
  EXPECT_EQ(e.proxy->host, "127.0.0.1");
  EXPECT_EQ(e.proxy->port, "9050");
  EXPECT_EQ(e.proxy->username, "tor");
  EXPECT_EQ(e.proxy->password, "pw");
  EXPECT_EQ(e.host, "imap.example.org");
}

// The token command is run at login, not when the endpoint is made; the password command now.
TEST(EndpointCredentials, TokenCommandIsKeptForEachLogin) {
  const auto e = endpoint_for(
      "host = imap.example.org\nauth = OAUTHBEARER\ntoken-command = exit 1\n"
      "credential-command-timeout = 5\n");
  EXPECT_EQ(e.token_command, "exit 1");
  EXPECT_EQ(e.command_timeout, std::chrono::seconds(5));
  auto config = config::parse_config(
      "[local]\ntype = tunnel\ncommand = t\n[remote]\npassword-command = echo pw; exit 7\n",
      "config", test_env());
  ASSERT_TRUE(config.ok());
  auto failed = make_endpoint(config->remote, false);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message, "remote: password-command failed with exit status 7");
}

}  // namespace
}  // namespace twinbox::cli
