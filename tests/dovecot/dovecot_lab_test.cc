// Smoke tests of the real-Dovecot lab itself: if these fail, every integration test would.
#include "dovecot/dovecot_lab.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace twinbox::dovecot {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Connects to host:port and returns the first line the server sends ("" on failure).
std::string first_line(std::uint16_t port, const char* host = "127.0.0.1") {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, host, &addr.sin_addr) != 1) return "";
  std::string line;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    char c = 0;
    pollfd p{fd, POLLIN, 0};
    while (line.size() < 4096 && ::poll(&p, 1, 5000) == 1 && ::read(fd, &c, 1) == 1) {
      line.push_back(c);
      if (c == '\n') break;
    }
  }
  ::close(fd);
  return line;
}

bool is_lower_hex(const std::string& s) {
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) ||
        std::isupper(static_cast<unsigned char>(c)))
      return false;
  }
  return true;
}

// A plain server greets on its port, and doveadm sets up mail behind the client's back.
TEST(DovecotLab, PlainServerGreetsAndDoveadmWorks) {
  DovecotLab lab = DovecotLab::start();
  EXPECT_EQ(lab.host(), "127.0.0.1");
  EXPECT_NE(lab.port(), 0);
  EXPECT_EQ(lab.imaps_port(), 0);
  EXPECT_EQ(lab.separator(), '/');
  EXPECT_FALSE(lab.password().empty());
  EXPECT_THAT(first_line(lab.port()), StartsWith("* OK "));

  CommandResult r = lab.doveadm({"mailbox", "create", "-s", "Projects", "Projects/2024"});
  ASSERT_TRUE(r.ok()) << r.errors;
  r = lab.doveadm({"save", "-m", "Projects/2024"},
                  "From: a@example.org\r\nSubject: hello\r\n\r\nbody\r\n");
  ASSERT_TRUE(r.ok()) << r.errors;
  r = lab.doveadm({"-f", "flow", "mailbox", "status", "messages", "Projects/2024"});
  ASSERT_TRUE(r.ok()) << r.errors;
  EXPECT_THAT(r.output, HasSubstr("messages=1"));
  EXPECT_FALSE(lab.doveadm({"mailbox", "status", "messages", "NoSuchMailbox"}).ok());
}

// With TLS the lab writes a CA that verifies the server certificate, and the SPKI pin; without
// plaintext authentication, LOGINDISABLED is announced before STARTTLS.
TEST(DovecotLab, TlsServerWritesCaAndPin) {
  Options options;
  options.tls = Tls::imaps;
  options.separator = '.';
  options.plaintext_auth = false;
  DovecotLab lab = DovecotLab::start(options);
  EXPECT_EQ(lab.host(), "127.0.0.2");
  EXPECT_TRUE(std::filesystem::is_regular_file(lab.ca_file())) << lab.ca_file();
  EXPECT_EQ(lab.pin().size(), 64u);
  EXPECT_TRUE(is_lower_hex(lab.pin())) << lab.pin();
  ASSERT_NE(lab.imaps_port(), 0);
  EXPECT_NE(lab.imaps_port(), lab.port());
  const std::string greeting = first_line(lab.port(), lab.host().c_str());
  EXPECT_THAT(greeting, HasSubstr(" STARTTLS "));
  EXPECT_THAT(greeting, HasSubstr(" LOGINDISABLED"));
  CommandResult r = DovecotLab::run({"openssl", "verify", "-CAfile", lab.ca_file(),
                                     "-verify_hostname", "localhost", lab.fact("cert_file")});
  EXPECT_TRUE(r.ok()) << r.output << r.errors;
}

// The tunnel command is pre-authenticated, offers COMPRESS=DEFLATE and sees the sample mail.
TEST(DovecotLab, TunnelIsPreauthenticatedWithCompressAndSampleMail) {
  Options options;
  options.sample_mail = 12;
  DovecotLab lab = DovecotLab::start(options);
  CommandResult r =
      DovecotLab::run(lab.tunnel_command(), "a STATUS INBOX (MESSAGES)\r\nb LOGOUT\r\n");
  ASSERT_TRUE(r.ok()) << r.errors;
  EXPECT_THAT(r.output, StartsWith("* PREAUTH "));
  EXPECT_THAT(r.output, HasSubstr("COMPRESS=DEFLATE"));
  EXPECT_THAT(r.output, HasSubstr("a OK"));
  r = lab.doveadm({"-f", "flow", "mailbox", "status", "-t", "messages", "*"});
  ASSERT_TRUE(r.ok()) << r.errors;
  EXPECT_THAT(r.output, HasSubstr("messages=12"));
}

// A restart keeps mail and credentials but applies new settings (here: the capabilities).
TEST(DovecotLab, RestartKeepsMailAndAppliesNewCapabilities) {
  DovecotLab lab = DovecotLab::start();
  const std::string password = lab.password();
  ASSERT_TRUE(lab.doveadm({"mailbox", "create", "Kept"}).ok());
  Options options;
  options.capability = "IMAP4rev1 CONDSTORE";
  lab.restart(options);
  EXPECT_EQ(lab.password(), password);
  EXPECT_THAT(first_line(lab.port()), StartsWith("* OK [CAPABILITY IMAP4rev1 CONDSTORE AUTH="));
  EXPECT_THAT(lab.doveadm({"mailbox", "list"}).output, HasSubstr("Kept"));
  lab.stop();
  EXPECT_FALSE(lab.running());
  EXPECT_EQ(first_line(lab.port()), "");
}

}  // namespace
}  // namespace twinbox::dovecot
