// The client against a scripted fake server: exact bytes, hostile servers and faults.
// Each test states its scenario in its name; error messages are asserted exactly where they are
// part of the user interface.
#include <fstream>

#include <gtest/gtest.h>

#include "fake_server/fake_server.h"
#include "net/client.h"
#include "net/run_coroutine.h"

namespace twinbox::net {
namespace {

using fake_server::FakeServer;
using fake_server::Script;
using fake_server::TlsIdentity;
using namespace std::chrono_literals;

constexpr const char* kCaps = "IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR LITERAL+ ENABLE";

Endpoint endpoint_for(const FakeServer& server, EndpointType type = EndpointType::imap) {
  Endpoint e;
  e.name = "remote";
  e.type = type;
  e.host = "localhost";  // the fake server's certificate names localhost
  e.port = std::to_string(server.port());
  e.username = "joe";
  e.password = "s3cret-pw";
  e.connect_timeout = 2s;
  e.io_timeout = 2s;
  return e;
}

// A CA file holding `identity`'s self-signed certificate, removed at the end of the test.
class TrustFile {
 public:
  explicit TrustFile(const TlsIdentity& identity)
      : path_(::testing::TempDir() + "fake_ca_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".pem") {
    std::ofstream(path_) << identity.cert_pem();
  }
  ~TrustFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Result<std::unique_ptr<Client>> connect(Endpoint e) {
  return run_coroutine(Client::connect(std::move(e)));
}

bool sent_credentials(const fake_server::ConnectionResult& r) {
  const std::string all = r.received();
  return all.find("s3cret-pw") != std::string::npos ||
         all.find("AUTHENTICATE") != std::string::npos || all.find("LOGIN") != std::string::npos;
}

TEST(ClientFault, ByeGreetingIsRefusedConnection) {
  FakeServer server(Script().send("* BYE [UNAVAILABLE] too many connections\r\n"));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::rejected);
  EXPECT_EQ(client.error().message,
            "remote: the server refused the connection: too many connections");
}

TEST(ClientFault, CleartextPreauthWithStarttlsRequiredSendsNothing) {
  FakeServer server(Script().send("* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n").expect_eof());
  auto client = connect(endpoint_for(server));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::security);
  server.wait();
  EXPECT_EQ(server.result().received(), "");
}

TEST(ClientFault, MissingStarttlsRefusesToSendCredentials) {
  FakeServer server(Script().send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n").expect_eof());
  auto client = connect(endpoint_for(server));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::tls);
  server.wait();
  EXPECT_FALSE(sent_credentials(server.result()));
}

TEST(ClientFault, LoginDisabledSendsNoCredentials) {
  FakeServer server(Script().send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n").expect_eof());
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::auth);
  EXPECT_EQ(client.error().message,
            "remote: the server disabled logins (LOGINDISABLED); no credentials sent");
  server.wait();
  EXPECT_FALSE(sent_credentials(server.result()));
}

TEST(ClientFault, StarttlsResponseInjectionIsDiscarded) {
  // The attacker appends a forged CAPABILITY and tagged OK to the plaintext STARTTLS answer,
  // hoping the client parses them as if they came over TLS (CVE-2020-15953 class).
  const std::string injected = "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nT2 OK forged\r\n";
  FakeServer server(Script()
                        .send(std::string("* OK [CAPABILITY ") + kCaps + "] hi\r\n")
                        .expect_tagged_line("STARTTLS")
                        .send("{tag} OK begin TLS\r\n" + injected)
                        .start_tls()
                        .expect_tagged_line("CAPABILITY")
                        .send(std::string("* CAPABILITY ") + kCaps + "\r\n{tag} OK done\r\n")
                        .expect_tagged("AUTHENTICATE")
                        .send("{tag} OK [CAPABILITY IMAP4rev1 ENABLE] logged in\r\n"));
  TrustFile trust(server.identity());
  Endpoint e = endpoint_for(server);
  e.tls.ca_file = trust.path();
  auto client = connect(e);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  EXPECT_EQ((*client)->info().discarded_before_tls, injected.size());
  EXPECT_EQ((*client)->info().auth_mechanism, "PLAIN");
  (*client)->close();
  server.wait();
  EXPECT_TRUE(server.ok()) << server.describe();
  EXPECT_EQ(server.result().received_in_clear(), "T1 STARTTLS\r\n");
}

TEST(ClientFault, WrongHostNameFailsBeforeAnyCredential) {
  fake_server::Options options;
  options.identity = TlsIdentity::generate("wrong.example");
  FakeServer server(Script()
                        .send(std::string("* OK [CAPABILITY ") + kCaps + "] hi\r\n")
                        .expect_tagged_line("STARTTLS")
                        .send("{tag} OK begin TLS\r\n")
                        .start_tls(),
                    options);
  TrustFile trust(server.identity());
  Endpoint e = endpoint_for(server);
  e.tls.ca_file = trust.path();
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::tls);
  EXPECT_NE(client.error().message.find("certificate verification failed"), std::string::npos)
      << client.error().message;
  server.wait();
  EXPECT_FALSE(sent_credentials(server.result()));
}

TEST(ClientFault, PinMismatchFailsBeforeAnyCredential) {
  FakeServer server(Script()
                        .send(std::string("* OK [CAPABILITY ") + kCaps + "] hi\r\n")
                        .expect_tagged_line("STARTTLS")
                        .send("{tag} OK begin TLS\r\n")
                        .start_tls());
  TrustFile trust(server.identity());
  Endpoint e = endpoint_for(server);
  e.tls.ca_file = trust.path();
  e.tls.fingerprints = {"sha256$" + std::string(64, '0')};
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::tls);
  EXPECT_NE(client.error().message.find("matches no SSL_fingerprint"), std::string::npos);
  EXPECT_NE(client.error().message.find(server.identity().spki_sha256_hex()), std::string::npos);
  server.wait();
  EXPECT_FALSE(sent_credentials(server.result()));
}

TEST(ClientFault, ImplicitTlsWithMatchingPinAndNoCaLogsIn) {
  // SSL_verify = NO with a pin: trust exactly this key, as InterIMAP allows.
  FakeServer server(Script()
                        .start_tls()
                        .send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n")
                        .expect_tagged_line("AUTHENTICATE PLAIN AGpvZQBzM2NyZXQtcHc=")
                        .send("{tag} OK [CAPABILITY IMAP4rev1] logged in\r\n"));
  Endpoint e = endpoint_for(server, EndpointType::imaps);
  e.tls.verify = false;
  e.tls.fingerprints = {server.identity().spki_pin()};
  auto client = connect(e);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  ASSERT_TRUE((*client)->info().tls.has_value());
  EXPECT_EQ((*client)->info().tls->spki_sha256, server.identity().spki_sha256_hex());
}

TEST(ClientFault, PlainAuthWithoutSaslIrWaitsForContinuation) {
  FakeServer server(Script()
                        .send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n")
                        .expect_tagged_line("AUTHENTICATE PLAIN")
                        .send("+ \r\n")
                        .expect("AGpvZQBzM2NyZXQtcHc=\r\n")
                        .send("{tag} OK [CAPABILITY IMAP4rev1] logged in\r\n"));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  (*client)->close();
  server.wait();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(ClientFault, AuthenticationFailureIsAnAuthError) {
  FakeServer server(Script()
                        .send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n")
                        .expect_tagged("AUTHENTICATE")
                        .send("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::auth);
  EXPECT_EQ(client.error().message,
            "remote: authentication as 'joe' failed (PLAIN): Authentication failed.");
}

TEST(ClientFault, LoginFallbackQuotesCredentials) {
  FakeServer server(Script()
                        .send("* OK [CAPABILITY IMAP4rev1] hi\r\n")
                        .expect_tagged_line("LOGIN joe s3cret-pw")
                        .send("{tag} OK [CAPABILITY IMAP4rev1] logged in\r\n"));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  EXPECT_EQ((*client)->info().auth_mechanism, "LOGIN");
}

TEST(ClientFault, GreetingByteAtATimeIsReassembled) {
  FakeServer server(Script()
                        .send_chunked("* OK [CAPABILITY IMAP4rev1] slow\r\n", 1, 0ms)
                        .expect_tagged("LOGIN")
                        .send_chunked("{tag} OK [CAPABILITY IMAP4rev1 ENABLE] in\r\n", 1, 0ms));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  EXPECT_EQ((*client)->info().greeting, "slow");
}

TEST(ClientFault, ConnectionDroppedMidGreetingIsEof) {
  FakeServer server(Script().drop_after_bytes(7).send("* OK [CAPABILITY IMAP4rev1] hi\r\n"));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_TRUE(client.error().code == Errc::eof || client.error().code == Errc::io)
      << client.error().to_string();
}

TEST(ClientFault, StalledServerTimesOut) {
  FakeServer server(Script().stall(1500ms));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  e.io_timeout = 200ms;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::timeout);
}

TEST(ClientFault, GarbageIsAProtocolErrorWithEvidence) {
  FakeServer server(Script().send("* OK hi\r\nHELLO \x01 world\r\n").stall(500ms));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::protocol);
  EXPECT_FALSE(client.error().evidence.empty());
}

TEST(ClientFault, HugeLiteralIsRefusedWithoutAllocation) {
  FakeServer server(Script()
                        .send("* OK [CAPABILITY IMAP4rev1] hi\r\n")
                        .expect_tagged("LOGIN")
                        .send("* 1 FETCH (BODY[] {18446744073709551615}\r\n")
                        .stall(500ms));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  auto client = connect(e);
  ASSERT_FALSE(client.ok());
  EXPECT_TRUE(client.error().code == Errc::limit || client.error().code == Errc::protocol)
      << client.error().to_string();
}

TEST(ClientFault, CompressStartsRightAfterTheTaggedOk) {
  FakeServer server(Script()
                        .send("* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\n")
                        .expect_tagged_line("LOGIN joe s3cret-pw")
                        .send("{tag} OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE ENABLE] in\r\n")
                        .expect_tagged_line("COMPRESS DEFLATE")
                        .send("{tag} OK go\r\n")
                        .compress()
                        .expect_tagged_line("NOOP")
                        .send("{tag} OK noop done\r\n"));
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  e.compress = true;
  auto client = connect(e);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  auto& c = **client;
  EXPECT_FALSE(c.info().compressed);  // not before there is work (compress())
  Status compressed = run_coroutine(c.compress());
  ASSERT_TRUE(compressed.ok()) << compressed.error().to_string();
  EXPECT_TRUE(c.info().compressed);
  Status again = run_coroutine(c.compress());  // once only: no second COMPRESS on the wire
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  auto done = run_coroutine(c.expect_ok(c.session().noop(), "NOOP"));
  ASSERT_TRUE(done.ok()) << done.error().to_string();
  EXPECT_EQ(done->status.text, "noop done");
}

// Pieces handed out in order; what a streamed APPEND pulls while it writes.
class ScriptedSource : public BodySource {
 public:
  explicit ScriptedSource(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  asio::awaitable<Result<std::string>> next_piece() override {
    if (next_ == pieces_.size()) co_return Error(Errc::io, "source: nothing more");
    co_return pieces_[next_++];
  }

 private:
  std::vector<std::string> pieces_;
  std::size_t next_ = 0;
};

Script logged_in_with_literal_plus() {
  Script script;
  script.send("* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n")
      .expect_tagged("LOGIN")
      .send("{tag} OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n");
  return script;
}

// Connected and logged in without TLS (the fake server's script starts with the greeting).
Result<std::unique_ptr<Client>> connect_cleartext(const FakeServer& server) {
  Endpoint e = endpoint_for(server);
  e.starttls = false;
  return connect(e);
}

Result<imap::Completion> append_streamed(Client& client, std::uint64_t size,
                                         ScriptedSource& source) {
  std::vector<imap::cmd::AppendMessage> one(1);
  one[0].streamed_size = size;
  return run_coroutine(
      client.wait_streaming(client.session().append("INBOX", std::move(one)), source));
}

TEST(ClientFault, StreamedAppendWritesThePiecesAsOneLiteral) {
  FakeServer server(logged_in_with_literal_plus()
                        .expect_tagged_line("APPEND INBOX {11+}")
                        .expect("hello world\r\n")
                        .send("{tag} OK [APPENDUID 7 3] done\r\n"));
  auto client = connect_cleartext(server);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  ScriptedSource source({"hello", " worl", "d"});
  auto done = append_streamed(**client, 11, source);
  ASSERT_TRUE(done.ok()) << done.error().to_string();
  EXPECT_TRUE(done->ok());
}

// A literal cannot be taken back: a source that fails, overflows or hands out a NUL byte ends
// the connection before the literal is complete, so the server appends nothing.
TEST(ClientFault, StreamedAppendThatCannotCompleteClosesTheConnection) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"hello", std::string("wor\0ld", 6)}, "remote: NUL byte at offset 8 of a streamed literal"},
      {{"hello", " world!"}, "remote: a streamed literal of 11 bytes got 12 bytes"},
      {{"hello"}, "source: nothing more"},
  };
  for (const auto& [pieces, message] : cases) {
    SCOPED_TRACE(message);
    FakeServer server(logged_in_with_literal_plus()
                          .expect_tagged_line("APPEND INBOX {11+}")
                          .expect("hello")
                          .expect_eof());
    auto client = connect_cleartext(server);
    ASSERT_TRUE(client.ok()) << client.error().to_string();
    ScriptedSource source(pieces);
    auto done = append_streamed(**client, 11, source);
    ASSERT_FALSE(done.ok());
    EXPECT_EQ(done.error().message, message);
    server.wait();
    EXPECT_TRUE(server.result().ok()) << server.result().describe();
  }
}

}  // namespace
}  // namespace twinbox::net
