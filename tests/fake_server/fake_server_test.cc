#include "fake_server/fake_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>

namespace twinbox::fake_server {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- a plain blocking POSIX client

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd_ = std::exchange(o.fd_, -1);
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

void set_recv_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

Fd connect_tcp(std::uint16_t port, std::chrono::milliseconds timeout = 2s) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  set_recv_timeout(fd.get(), timeout);
  return fd;
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) {
      const ssize_t w = ::write(fd, bytes.data(), bytes.size());
      ASSERT_GT(w, 0);
      bytes.remove_prefix(static_cast<std::size_t>(w));
      continue;
    }
    ASSERT_GT(n, 0) << std::strerror(errno);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

struct ReadEnd {
  std::string bytes;
  int error = 0;  // errno of the failed read, 0 for EOF
  int reads = 0;  // successful read() calls
};

// Reads until `n` bytes arrived (n == 0: until EOF), EOF, an error or the receive timeout.
ReadEnd read_some(int fd, std::size_t n = 0) {
  ReadEnd end;
  char buf[4096];
  while (n == 0 || end.bytes.size() < n) {
    const std::size_t want = n == 0 ? sizeof buf : std::min(sizeof buf, n - end.bytes.size());
    const ssize_t got = ::read(fd, buf, want);
    if (got <= 0) {
      end.error = got < 0 ? errno : 0;
      break;
    }
    end.bytes.append(buf, static_cast<std::size_t>(got));
    ++end.reads;
  }
  return end;
}

// Reads exactly as many bytes as `expected` has (no more, so nothing is left waiting) and
// compares.
void expect_read(int fd, std::string_view expected) {
  EXPECT_EQ(read_some(fd, expected.size()).bytes, expected);
}

// ---- an OpenSSL client that trusts the fake server's certificate as a CA file would

class TlsClient {
 public:
  TlsClient(int fd, const std::string& trusted_pem, const std::string& host) {
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(trusted_pem.data(), static_cast<int>(trusted_pem.size())), BIO_free);
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    EXPECT_NE(cert, nullptr);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_.get()), cert);
    X509_free(cert);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    ssl_.reset(SSL_new(ctx_.get()));
    SSL_set_fd(ssl_.get(), fd);
    SSL_set_tlsext_host_name(ssl_.get(), host.c_str());
    SSL_set1_host(ssl_.get(), host.c_str());
  }

  bool handshake() {
    ERR_clear_error();
    return SSL_connect(ssl_.get()) == 1;
  }
  long verify_result() const { return SSL_get_verify_result(ssl_.get()); }

  void write(std::string_view bytes) {
    ASSERT_EQ(SSL_write(ssl_.get(), bytes.data(), static_cast<int>(bytes.size())),
              static_cast<int>(bytes.size()));
  }
  std::string read(std::size_t max = 4096) {
    std::string buf(max, '\0');
    const int n = SSL_read(ssl_.get(), buf.data(), static_cast<int>(max));
    last_error_ = n > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_.get(), n);
    buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return buf;
  }
  std::string read_n(std::size_t n) {
    std::string out;
    while (out.size() < n) {
      const std::string got = read(n - out.size());
      if (got.empty()) break;
      out += got;
    }
    return out;
  }
  void expect_read(std::string_view expected) { EXPECT_EQ(read_n(expected.size()), expected); }
  X509* peer() const { return SSL_get0_peer_certificate(ssl_.get()); }
  void shutdown() { SSL_shutdown(ssl_.get()); }
  int last_error() const { return last_error_; }  // SSL_get_error of the last read()

 private:
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx_{nullptr, SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl_{nullptr, SSL_free};
  int last_error_ = SSL_ERROR_NONE;
};

// ---- a zlib client side of RFC 4978

class Deflater {
 public:
  Deflater() { deflateInit2(&z_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY); }
  ~Deflater() { deflateEnd(&z_); }
  std::string operator()(std::string_view in) {
    std::string out;
    char buf[4096];
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    do {
      z_.next_out = reinterpret_cast<Bytef*>(buf);
      z_.avail_out = sizeof buf;
      deflate(&z_, Z_SYNC_FLUSH);
      out.append(buf, sizeof buf - z_.avail_out);
    } while (z_.avail_out == 0);
    return out;
  }

 private:
  z_stream z_{};
};

class Inflater {
 public:
  Inflater() { inflateInit2(&z_, -15); }
  ~Inflater() { inflateEnd(&z_); }
  std::string operator()(std::string_view in) {
    std::string out;
    char buf[4096];
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    do {
      z_.next_out = reinterpret_cast<Bytef*>(buf);
      z_.avail_out = sizeof buf;
      const int r = inflate(&z_, Z_SYNC_FLUSH);
      EXPECT_TRUE(r == Z_OK || r == Z_BUF_ERROR) << r;
      out.append(buf, sizeof buf - z_.avail_out);
    } while (z_.avail_in > 0 || z_.avail_out == 0);
    return out;
  }

 private:
  z_stream z_{};
};

// Reads compressed bytes with `read_wire` until `n` inflated bytes are available.
std::string read_inflated(Inflater& inflater, std::size_t n,
                          const std::function<std::string()>& read_wire) {
  std::string out;
  while (out.size() < n) {
    const std::string wire = read_wire();
    if (wire.empty()) break;
    out += inflater(wire);
  }
  return out;
}

std::string hex(const unsigned char* p, std::size_t n) {
  std::string out;
  char buf[3];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", p[i]);
    out += buf;
  }
  return out;
}

// SHA-256 of a certificate's SubjectPublicKeyInfo through the EVP_PKEY route (i2d_PUBKEY), the
// same bytes `openssl pkey -pubin -outform DER` writes.
std::string spki_sha256_hex_of(X509* cert) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
  unsigned char md[EVP_MAX_MD_SIZE];
  std::size_t md_len = 0;
  EXPECT_EQ(
      EVP_Q_digest(nullptr, "SHA256", nullptr, der, static_cast<std::size_t>(len), md, &md_len), 1);
  OPENSSL_free(der);
  return hex(md, md_len);
}

// ---- dialogue

TEST(FakeServer, GreetingThenExactCommandThenReply) {
  // The client reads the greeting, sends one exact command and gets the scripted reply, then EOF.
  FakeServer server(Script()
                        .send("* OK ready\r\n")
                        .expect("T1 CAPABILITY\r\n")
                        .send("* CAPABILITY IMAP4rev1\r\nT1 OK done\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK ready\r\n");
  write_all(c.get(), "T1 CAPABILITY\r\n");
  const ReadEnd end = read_some(c.get());
  EXPECT_EQ(end.bytes, "* CAPABILITY IMAP4rev1\r\nT1 OK done\r\n");
  EXPECT_EQ(end.error, 0);  // a FIN after the last step
  c.reset();

  ASSERT_TRUE(server.ok()) << server.describe();
  const ConnectionResult& r = server.result();
  EXPECT_EQ(r.received(), "T1 CAPABILITY\r\n");
  EXPECT_EQ(r.sent, "* OK ready\r\n* CAPABILITY IMAP4rev1\r\nT1 OK done\r\n");
  EXPECT_EQ(r.unconsumed, "");
  EXPECT_TRUE(r.client_closed);
  ASSERT_EQ(r.transcript.size(), 1u);
  EXPECT_FALSE(r.transcript[0].tls);
  EXPECT_FALSE(r.transcript[0].compressed);
}

TEST(FakeServer, MismatchRecordsTheStepAndTheBytesReceived) {
  // A wrong command fails the expect step, closes the connection and shows the whole line.
  FakeServer server(Script().send("* OK ready\r\n").expect("T1 CAPABILITY\r\n").send("T1 OK\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK ready\r\n");
  write_all(c.get(), "T1 CAPABILITIES\r\n");
  EXPECT_EQ(read_some(c.get()).bytes, "");  // no reply, just the end of the connection
  c.reset();

  EXPECT_FALSE(server.ok());
  const ConnectionResult& r = server.result();
  ASSERT_TRUE(r.failure);
  EXPECT_EQ(r.failure->step, 1u);
  EXPECT_EQ(r.failure->message, "mismatch at byte 12");
  EXPECT_EQ(r.failure->received, "T1 CAPABILITIES\\r\\n");
  EXPECT_EQ(
      r.failure->to_string(),
      R"(step 1 (expect "T1 CAPABILITY\r\n"): mismatch at byte 12; received "T1 CAPABILITIES\r\n")");
  EXPECT_EQ(r.received(), "T1 CAPABILITIES\r\n");
  EXPECT_EQ(r.sent, "* OK ready\r\n");
}

TEST(FakeServer, ExpectTimesOutWithThePartialInput) {
  // A client that stops mid-line fails the step after its timeout, with what it did send.
  FakeServer server(Script().timeout(50ms).send("* OK\r\n").expect("T1 NOOP\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK\r\n");
  write_all(c.get(), "T1 NO");
  EXPECT_EQ(read_some(c.get()).bytes, "");
  ASSERT_TRUE(server.result().failure);
  EXPECT_EQ(server.result().failure->to_string(),
            R"(step 1 (expect "T1 NOOP\r\n"): timed out after 50 ms; received "T1 NO")");
}

TEST(FakeServer, TaggedCommandsAreCapturedAndAnswered) {
  // Replies reuse whatever tags the client chose, by last capture or by name (pipelining).
  FakeServer server(Script()
                        .send("* OK\r\n")
                        .expect_tagged("LOGIN")
                        .send_tagged("OK logged in")
                        .expect_tagged("UID FETCH", "fetch")
                        .expect_tagged_line("CHECK", "check")
                        .send("{tag:check} OK check\r\n{tag:fetch} OK fetch\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK\r\n");
  write_all(c.get(), "a7 login joe secret\r\n");
  expect_read(c.get(), "a7 OK logged in\r\n");
  write_all(c.get(), "a8 UID FETCH 1:* (FLAGS)\r\na9 CHECK\r\n");
  expect_read(c.get(), "a9 OK check\r\na8 OK fetch\r\n");
  c.reset();

  ASSERT_TRUE(server.ok()) << server.describe();
  const auto& tags = server.result().tags;
  EXPECT_EQ(tags.at(""), "a9");
  EXPECT_EQ(tags.at("fetch"), "a8");
  EXPECT_EQ(tags.at("check"), "a9");
}

TEST(FakeServer, TaggedExpectationsRejectWrongCommandsAndTags) {
  // A wrong command name and an invalid tag are failures naming the line.
  FakeServer wrong(Script().expect_tagged("LOGIN"));
  Fd c = connect_tcp(wrong.port());
  write_all(c.get(), "a1 LOGINX joe\r\n");
  ASSERT_TRUE(wrong.result().failure) << wrong.describe();
  EXPECT_EQ(wrong.result().failure->to_string(),
            R"(step 0 (expect_tagged LOGIN): not a LOGIN command; received "a1 LOGINX joe\r\n")");

  FakeServer bad_tag(Script().expect_tagged("NOOP"));
  Fd d = connect_tcp(bad_tag.port());
  write_all(d.get(), "a+1 NOOP\r\n");
  ASSERT_TRUE(bad_tag.result().failure) << bad_tag.describe();
  EXPECT_EQ(bad_tag.result().failure->to_string(),
            R"(step 0 (expect_tagged NOOP): no valid tag; received "a+1 NOOP\r\n")");
}

TEST(FakeServer, LinesMatchRegexesAndPredicates) {
  // Variable content is matched by a whole-line regex or a predicate.
  FakeServer server(
      Script()
          .expect_line_matching("T2 LOGIN .*")
          .expect_line_matching("an ID command",
                                [](std::string_view line) { return line.starts_with("T3 ID "); })
          .expect_line_matching("T4 LOGOUT"));
  Fd c = connect_tcp(server.port());
  write_all(c.get(), "T2 LOGIN joe secret\r\nT3 ID NIL\r\nT4 AUTHENTICATE PLAIN\r\n");
  c.reset();
  ASSERT_TRUE(server.result().failure);
  EXPECT_EQ(
      server.result().failure->to_string(),
      R"(step 2 (expect_line_matching /T4 LOGOUT/): line does not match; received "T4 AUTHENTICATE PLAIN\r\n")");
}

TEST(FakeServer, MissingTagForPlaceholderIsAFailure) {
  // {tag} before any tagged command is a script error reported at its step.
  FakeServer server(Script().send_tagged("OK too early"));
  Fd c = connect_tcp(server.port());
  ASSERT_TRUE(server.result().failure) << server.describe();
  EXPECT_EQ(server.result().failure->to_string(),
            R"(step 0 (send "{tag} OK too early\r\n"): no tag captured for {tag})");
}

// ---- faults

TEST(FakeServer, ChunkedSendIsReassembledByTheClient) {
  // One-byte segments arrive over several reads and reassemble to the exact bytes.
  const std::string greeting = "* OK [CAPABILITY IMAP4rev1] ready\r\n";
  FakeServer server(Script().send_chunked(greeting, 1, 1ms));
  Fd c = connect_tcp(server.port());
  const ReadEnd end = read_some(c.get());
  EXPECT_EQ(end.bytes, greeting);
  EXPECT_GT(end.reads, 1);
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, SendsATenMebibyteLineWithoutCrlfExactly) {
  // A corrupted server's 10 MiB without CRLF, then a real response: every byte arrives as given.
  const std::string bytes = std::string(10 << 20, 'x') + "* 1 EXISTS\r\n";
  FakeServer server(Script().send(bytes));
  Fd c = connect_tcp(server.port());
  const ReadEnd end = read_some(c.get(), bytes.size());
  EXPECT_EQ(end.bytes.size(), bytes.size());
  EXPECT_TRUE(end.bytes == bytes);  // not EXPECT_EQ: a failure would print 10 MiB
  c.reset();
  ASSERT_TRUE(server.ok()) << server.describe();
  EXPECT_EQ(server.result().sent.size(), bytes.size());
}

TEST(FakeServer, DropAfterBytesEndsTheStreamMidResponse) {
  // The client sees exactly the first n bytes of the next send, then the connection is gone.
  FakeServer server(Script().send("* OK\r\n").drop_after_bytes(9).send("* 1 FETCH (UID 7)\r\n"));
  Fd c = connect_tcp(server.port());
  const ReadEnd end = read_some(c.get());
  EXPECT_EQ(end.bytes, "* OK\r\n* 1 FETCH");
  EXPECT_TRUE(end.error == 0 || end.error == ECONNRESET) << std::strerror(end.error);
  c.reset();
  ASSERT_TRUE(server.ok()) << server.describe();
  EXPECT_EQ(server.result().sent, "* OK\r\n* 1 FETCH");
}

TEST(FakeServer, DropAfterBytesSpansChunks) {
  // The byte budget also cuts a chunked send in the middle.
  FakeServer server(Script().drop_after_bytes(4).send_chunked("* OK ready\r\n", 3, 0ms));
  Fd c = connect_tcp(server.port());
  EXPECT_EQ(read_some(c.get()).bytes, "* OK");
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, DropResetsTheConnection) {
  // drop() is an RST: the client's next read fails with ECONNRESET.
  FakeServer server(Script().send("* OK\r\n").expect("T1 NOOP\r\n").drop());
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK\r\n");
  write_all(c.get(), "T1 NOOP\r\n");
  const ReadEnd end = read_some(c.get());
  EXPECT_EQ(end.bytes, "");
  EXPECT_EQ(end.error, ECONNRESET) << std::strerror(end.error);
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, StallIsSeenAsAClientTimeout) {
  // A silent server makes a client read deadline expire; the stall ends when the client leaves.
  FakeServer server(Script().send("* OK\r\n").stall(5s));
  Fd c = connect_tcp(server.port(), 50ms);
  expect_read(c.get(), "* OK\r\n");
  const auto start = Clock::now();
  const ReadEnd end = read_some(c.get(), 1);
  EXPECT_EQ(end.error, EAGAIN);
  EXPECT_GE(Clock::now() - start, 40ms);
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
  EXPECT_LT(Clock::now() - start, 2s);
}

TEST(FakeServer, BytesSentDuringAStallAreKeptForTheNextStep) {
  // The client's DONE during the stall is matched by the following expect.
  FakeServer server(
      Script().send("+ idling\r\n").stall(50ms).expect("DONE\r\n").send("T1 OK IDLE done\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "+ idling\r\n");
  write_all(c.get(), "DONE\r\n");
  expect_read(c.get(), "T1 OK IDLE done\r\n");
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, ShutdownWriteIsAnEofThatStillReads) {
  // After a half-close the client sees EOF, and what it sends next is still checked.
  FakeServer server(Script().send("* BYE\r\n").shutdown_write().expect("T1 LOGOUT\r\n"));
  Fd c = connect_tcp(server.port());
  const ReadEnd end = read_some(c.get());
  EXPECT_EQ(end.bytes, "* BYE\r\n");
  EXPECT_EQ(end.error, 0);
  write_all(c.get(), "T1 LOGOUT\r\n");
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, ExpectEofRequiresTheClientToLeaveSilently) {
  // A client that must hang up (e.g. after a cleartext PREAUTH) may send nothing more.
  FakeServer good(Script().send("* PREAUTH hi\r\n").expect_eof());
  Fd c = connect_tcp(good.port());
  expect_read(c.get(), "* PREAUTH hi\r\n");
  c.reset();
  EXPECT_TRUE(good.ok()) << good.describe();

  FakeServer bad(Script().send("* PREAUTH hi\r\n").expect_eof());
  Fd d = connect_tcp(bad.port());
  expect_read(d.get(), "* PREAUTH hi\r\n");
  write_all(d.get(), "T1 SELECT INBOX\r\n");
  d.reset();
  ASSERT_TRUE(bad.result().failure) << bad.describe();
  EXPECT_EQ(
      bad.result().failure->to_string(),
      R"(step 1 (expect_eof): the client sent bytes instead of closing; received "T1 SELECT INBOX\r\n")");
}

TEST(FakeServer, GarbageIsDeterministicPerSeed) {
  // The same seed gives the same bytes; another seed gives others.
  const auto bytes_for = [](std::uint32_t seed) {
    FakeServer server(Script().garbage(64, seed));
    Fd c = connect_tcp(server.port());
    std::string got = read_some(c.get()).bytes;
    c.reset();
    EXPECT_TRUE(server.ok()) << server.describe();
    return got;
  };
  const std::string a = bytes_for(7);
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(bytes_for(7), a);
  EXPECT_NE(bytes_for(8), a);
}

// ---- TLS

TEST(FakeServer, StartTlsVerifiesAgainstTheExposedCertificate) {
  // STARTTLS, then a handshake trusted via the PEM with host-name check; LOGIN only inside TLS.
  FakeServer server(Script()
                        .send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
                        .expect_tagged_line("STARTTLS")
                        .send_tagged("OK begin TLS")
                        .start_tls()
                        .expect_tagged("LOGIN")
                        .send_tagged("OK logged in"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
  write_all(c.get(), "A1 STARTTLS\r\n");
  expect_read(c.get(), "A1 OK begin TLS\r\n");
  {
    TlsClient tls(c.get(), server.identity().cert_pem(), "localhost");
    ASSERT_TRUE(tls.handshake()) << ERR_error_string(ERR_get_error(), nullptr);
    EXPECT_EQ(tls.verify_result(), X509_V_OK);
    EXPECT_EQ(spki_sha256_hex_of(tls.peer()), server.identity().spki_sha256_hex());
    tls.write("A2 LOGIN joe secret\r\n");
    tls.expect_read("A2 OK logged in\r\n");
    tls.shutdown();
  }
  c.reset();

  ASSERT_TRUE(server.ok()) << server.describe();
  const ConnectionResult& r = server.result();
  EXPECT_EQ(r.received_in_clear(), "A1 STARTTLS\r\n");
  EXPECT_EQ(r.received(), "A1 STARTTLS\r\nA2 LOGIN joe secret\r\n");
  ASSERT_EQ(r.transcript.size(), 2u);
  EXPECT_TRUE(r.transcript[1].tls);
  EXPECT_EQ(r.sni, "localhost");
  EXPECT_EQ(r.tls_version, "TLSv1.3");
}

TEST(FakeServer, CertificateForAnotherHostFailsVerification) {
  // The same client check that accepts "localhost" rejects a certificate for another name.
  const TlsIdentity wrong = TlsIdentity::generate("wrong.example");
  FakeServer server(Script().start_tls(wrong));
  Fd c = connect_tcp(server.port());
  TlsClient tls(c.get(), wrong.cert_pem(), "localhost");
  EXPECT_FALSE(tls.handshake());
  EXPECT_EQ(tls.verify_result(), X509_V_ERR_HOSTNAME_MISMATCH);
  c.reset();
  const ConnectionResult& r = server.result();
  ASSERT_TRUE(r.failure);
  EXPECT_EQ(r.failure->step_text, "start_tls(CN=wrong.example)");
  EXPECT_TRUE(r.failure->message.starts_with("TLS handshake failed: ")) << r.failure->message;

  // Positive control: the certificate itself is fine for its own name.
  FakeServer right(Script().start_tls(wrong).send("* OK\r\n"));
  Fd d = connect_tcp(right.port());
  TlsClient ok_tls(d.get(), wrong.cert_pem(), "wrong.example");
  ASSERT_TRUE(ok_tls.handshake());
  ok_tls.expect_read("* OK\r\n");
  ok_tls.shutdown();
  d.reset();
  EXPECT_TRUE(right.ok()) << right.describe();
}

TEST(FakeServer, ExpiredCertificateFailsVerification) {
  // An expired identity is refused by a verifying client.
  TlsIdentity::Spec spec;
  spec.expired = true;
  Options options;
  options.identity = TlsIdentity::generate(spec);
  FakeServer server(Script().start_tls(), options);
  Fd c = connect_tcp(server.port());
  TlsClient tls(c.get(), server.identity().cert_pem(), "localhost");
  EXPECT_FALSE(tls.handshake());
  EXPECT_EQ(tls.verify_result(), X509_V_ERR_CERT_HAS_EXPIRED);
}

TEST(FakeServer, SpkiPinMatchesAnIndependentComputation) {
  // The pin is SHA-256 of the DER SubjectPublicKeyInfo, as the openssl command line computes it.
  const TlsIdentity id = TlsIdentity::generate();
  const auto* p = reinterpret_cast<const unsigned char*>(id.cert_der().data());
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      d2i_X509(nullptr, &p, static_cast<long>(id.cert_der().size())), X509_free);
  ASSERT_TRUE(cert);
  const std::string expected = spki_sha256_hex_of(cert.get());
  EXPECT_EQ(id.spki_sha256_hex(), expected);
  EXPECT_EQ(id.spki_sha256().size(), 32u);
  EXPECT_EQ(id.spki_pin(), "sha256$" + expected);

  // X509_pubkey_digest hashes only the key bits: a different, wrong value for a pin.
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  X509_pubkey_digest(cert.get(), EVP_sha256(), md, &md_len);
  EXPECT_NE(hex(md, md_len), expected);

  // The PEM is the same certificate.
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(id.cert_pem().data(), static_cast<int>(id.cert_pem().size())), BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> from_pem(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  ASSERT_TRUE(from_pem);
  EXPECT_EQ(X509_cmp(from_pem.get(), cert.get()), 0);

  // And the documented pipeline, when the openssl tool is installed.
  if (::access("/usr/bin/openssl", X_OK) == 0) {
    char path[] = "/tmp/twinbox-fake-cert-XXXXXX";
    const int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, id.cert_pem().data(), id.cert_pem().size()),
              static_cast<ssize_t>(id.cert_pem().size()));
    ::close(fd);
    const std::string command = std::string("/usr/bin/openssl x509 -pubkey -noout -in ") + path +
                                " | /usr/bin/openssl pkey -pubin -outform DER"
                                " | /usr/bin/openssl dgst -sha256 -r";
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char out[128] = {};
    const std::size_t n = std::fread(out, 1, sizeof out - 1, pipe);
    ::pclose(pipe);
    ::unlink(path);
    EXPECT_EQ(std::string(out, std::min<std::size_t>(n, 64)), expected);
  }
}

TEST(FakeServer, InjectedResponseBeforeTlsArrivesInClear) {
  // Response injection: a forged tagged OK right after "begin TLS", in the same plaintext write.
  FakeServer server(Script()
                        .send("* OK ready\r\n")
                        .expect("T1 STARTTLS\r\n")
                        .send("T1 OK begin TLS\r\nT2 OK forged\r\n")
                        .start_tls()
                        .expect("T2 CAPABILITY\r\n")
                        .send("T2 OK fine\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK ready\r\n");
  write_all(c.get(), "T1 STARTTLS\r\n");
  expect_read(c.get(), "T1 OK begin TLS\r\nT2 OK forged\r\n");
  {
    TlsClient tls(c.get(), server.identity().cert_pem(), "localhost");
    ASSERT_TRUE(tls.handshake());
    tls.write("T2 CAPABILITY\r\n");
    tls.expect_read("T2 OK fine\r\n");
    tls.shutdown();
  }
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, PlaintextPipelinedAfterStartTlsIsAFailure) {
  // Command injection the other way: bytes after STARTTLS and before the handshake are caught.
  FakeServer server(Script().expect("T1 STARTTLS\r\n").send("T1 OK begin TLS\r\n").start_tls());
  Fd c = connect_tcp(server.port());
  write_all(c.get(), "T1 STARTTLS\r\nT2 LOGIN joe secret\r\n");
  c.reset();
  ASSERT_TRUE(server.result().failure) << server.describe();
  EXPECT_EQ(
      server.result().failure->to_string(),
      R"(step 2 (start_tls): the client sent 21 bytes after its last command and before the TLS handshake; received "T2 LOGIN joe secret\r\n")");
}

TEST(FakeServer, TlsVersionCanBeCapped) {
  // A server capped at TLS 1.2 negotiates it; one capped at TLS 1.1 is refused by default clients.
  const TlsIdentity id = TlsIdentity::generate();
  FakeServer v12(Script().start_tls(id, TlsSettings{0, TLS1_2_VERSION}).send("* OK\r\n"));
  Fd c = connect_tcp(v12.port());
  TlsClient tls(c.get(), id.cert_pem(), "localhost");
  ASSERT_TRUE(tls.handshake());
  tls.expect_read("* OK\r\n");
  tls.shutdown();
  c.reset();
  ASSERT_TRUE(v12.ok()) << v12.describe();
  EXPECT_EQ(v12.result().tls_version, "TLSv1.2");

  FakeServer v11(Script().start_tls(id, TlsSettings{0, TLS1_1_VERSION}));
  Fd d = connect_tcp(v11.port());
  TlsClient old(d.get(), id.cert_pem(), "localhost");
  EXPECT_FALSE(old.handshake());
  d.reset();
  ASSERT_TRUE(v11.result().failure);
  EXPECT_TRUE(v11.result().failure->message.starts_with("TLS handshake failed: "));
}

TEST(FakeServer, TlsCloseNotifyAndCorruptRecords) {
  // close_notify ends the TLS stream cleanly; raw bytes below TLS are a record error.
  FakeServer clean(Script().start_tls().send("* BYE\r\n").send_close_notify().expect_eof());
  Fd c = connect_tcp(clean.port());
  TlsClient tls(c.get(), clean.identity().cert_pem(), "localhost");
  ASSERT_TRUE(tls.handshake());
  tls.expect_read("* BYE\r\n");
  EXPECT_EQ(tls.read(), "");
  EXPECT_EQ(tls.last_error(), SSL_ERROR_ZERO_RETURN);
  c.reset();
  EXPECT_TRUE(clean.ok()) << clean.describe();

  // An application-data record header followed by bytes that cannot decrypt.
  FakeServer corrupt(Script()
                         .start_tls()
                         .send("* OK\r\n")
                         .send_raw(std::string("\x17\x03\x03\x00\x20", 5) + std::string(32, 'x')));
  Fd d = connect_tcp(corrupt.port());
  TlsClient bad(d.get(), corrupt.identity().cert_pem(), "localhost");
  ASSERT_TRUE(bad.handshake());
  bad.expect_read("* OK\r\n");
  EXPECT_EQ(bad.read(), "");
  EXPECT_EQ(bad.last_error(), SSL_ERROR_SSL);
  d.reset();
  EXPECT_TRUE(corrupt.ok()) << corrupt.describe();
}

// ---- COMPRESS

TEST(FakeServer, CompressRoundTripWithZlibClient) {
  // After COMPRESS both directions are raw DEFLATE; the transcript holds the inflated bytes.
  FakeServer server(Script()
                        .send("* OK\r\n")
                        .expect_tagged_line("COMPRESS DEFLATE")
                        .send_tagged("OK DEFLATE active")
                        .compress()
                        .expect("T2 NOOP\r\n")
                        .send("* 3 EXISTS\r\nT2 OK done\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK\r\n");
  write_all(c.get(), "T1 COMPRESS DEFLATE\r\n");
  expect_read(c.get(), "T1 OK DEFLATE active\r\n");
  Deflater deflater;
  Inflater inflater;
  write_all(c.get(), deflater("T2 NOOP\r\n"));
  EXPECT_EQ(read_inflated(inflater, 24, [&] { return read_some(c.get(), 1).bytes; }),
            "* 3 EXISTS\r\nT2 OK done\r\n");
  c.reset();

  ASSERT_TRUE(server.ok()) << server.describe();
  const ConnectionResult& r = server.result();
  ASSERT_EQ(r.transcript.size(), 2u);
  EXPECT_EQ(r.transcript[0].bytes, "T1 COMPRESS DEFLATE\r\n");
  EXPECT_FALSE(r.transcript[0].compressed);
  EXPECT_EQ(r.transcript[1].bytes, "T2 NOOP\r\n");
  EXPECT_TRUE(r.transcript[1].compressed);
}

TEST(FakeServer, CompressInsideTls) {
  // TLS then COMPRESS: DEFLATE runs above TLS, chunked sends still reassemble.
  FakeServer server(Script()
                        .start_tls()
                        .send("* OK\r\n")
                        .expect_tagged("COMPRESS")
                        .send_tagged("OK")
                        .compress()
                        .expect("T2 NOOP\r\n")
                        .send_chunked("T2 OK done\r\n", 2, 0ms));
  Fd c = connect_tcp(server.port());
  TlsClient tls(c.get(), server.identity().cert_pem(), "localhost");
  ASSERT_TRUE(tls.handshake());
  tls.expect_read("* OK\r\n");
  tls.write("T1 COMPRESS DEFLATE\r\n");
  tls.expect_read("T1 OK\r\n");
  Deflater deflater;
  Inflater inflater;
  tls.write(deflater("T2 NOOP\r\n"));
  EXPECT_EQ(read_inflated(inflater, 12, [&] { return tls.read(); }), "T2 OK done\r\n");
  tls.shutdown();
  c.reset();
  ASSERT_TRUE(server.ok()) << server.describe();
  const ConnectionResult& r = server.result();
  EXPECT_EQ(r.received_in_clear(), "");
  ASSERT_EQ(r.transcript.size(), 2u);
  EXPECT_TRUE(r.transcript[1].tls && r.transcript[1].compressed);
}

// ---- connections and transports

TEST(FakeServer, SuccessiveScriptsServeReconnects) {
  // The first connection is dropped; the reconnect gets the second script.
  std::vector<Script> scripts;
  scripts.push_back(Script().send("* OK one\r\n").drop());
  scripts.push_back(Script().send("* OK two\r\n").expect("T1 LOGOUT\r\n").send("* BYE\r\n"));
  FakeServer server(std::move(scripts));
  Fd c = connect_tcp(server.port());
  EXPECT_EQ(read_some(c.get()).bytes, "* OK one\r\n");
  c = connect_tcp(server.port());
  expect_read(c.get(), "* OK two\r\n");
  write_all(c.get(), "T1 LOGOUT\r\n");
  EXPECT_EQ(read_some(c.get()).bytes, "* BYE\r\n");
  c.reset();
  ASSERT_TRUE(server.ok()) << server.describe();
  EXPECT_EQ(server.wait().size(), 2u);
  EXPECT_EQ(server.result(1).received(), "T1 LOGOUT\r\n");
}

TEST(FakeServer, NoClientIsAnAcceptFailure) {
  // A script nobody connects to fails after the accept timeout.
  Options options;
  options.accept_timeout = 50ms;
  FakeServer server(Script().send("* OK\r\n"), options);
  ASSERT_TRUE(server.result().failure) << server.describe();
  EXPECT_EQ(server.result().failure->to_string(), "accept: no client connected within 50 ms");
  EXPECT_FALSE(server.result().connected);
}

TEST(FakeServer, PipesServeLikeATunnel) {
  // Over a pair of pipes the client reads the server's output and writes its input.
  Options options;
  options.transport = Transport::pipes;
  FakeServer server(Script().send("* PREAUTH ready\r\n").expect("T1 NOOP\r\n").send("T1 OK\r\n"),
                    options);
  const FdPair fds = server.take_client_fds();
  Fd in(fds.read_fd);
  Fd out(fds.write_fd);
  expect_read(in.get(), "* PREAUTH ready\r\n");
  write_all(out.get(), "T1 NOOP\r\n");
  EXPECT_EQ(read_some(in.get()).bytes, "T1 OK\r\n");
  out.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, SocketpairSupportsTls) {
  // A socketpair carries TLS too (a tunnel to a TLS-speaking command).
  Options options;
  options.transport = Transport::socketpair;
  FakeServer server(Script().start_tls().send("* OK\r\n").expect("T1 NOOP\r\n"), options);
  const FdPair fds = server.take_client_fds();
  EXPECT_EQ(fds.read_fd, fds.write_fd);
  Fd c(fds.read_fd);
  TlsClient tls(c.get(), server.identity().cert_pem(), "localhost");
  ASSERT_TRUE(tls.handshake());
  tls.expect_read("* OK\r\n");
  tls.write("T1 NOOP\r\n");
  tls.shutdown();
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

TEST(FakeServer, RunsOnFdsTheTestProvides) {
  // The caller's own socketpair end becomes the server side.
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  FakeServer server(Script().send("* OK\r\n").expect("T1 NOOP\r\n"), FdPair{sv[0], sv[0]});
  Fd c(sv[1]);
  expect_read(c.get(), "* OK\r\n");
  write_all(c.get(), "T1 NOOP\r\n");
  c.reset();
  EXPECT_TRUE(server.ok()) << server.describe();
}

// ---- lifetime

TEST(FakeServer, WaitDoesNotWaitForAnOpenClient) {
  // wait() returns at once after the last step, keeping what the client sent meanwhile.
  FakeServer server(Script().send("* OK\r\n"));
  Fd c = connect_tcp(server.port());
  expect_read(c.get(), "* OK\r\n");
  write_all(c.get(), "T9 LOGOUT\r\n");
  const auto start = Clock::now();
  ASSERT_TRUE(server.ok()) << server.describe();
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_EQ(server.result().unconsumed, "T9 LOGOUT\r\n");
}

TEST(FakeServer, DestructorDoesNotHang) {
  // Destroying a server mid-script (here: waiting for a client) returns promptly.
  const auto start = Clock::now();
  {
    FakeServer idle(Script().send("* OK\r\n"));
    FakeServer stuck(Script().send("* OK\r\n").expect("never\r\n"));
    Fd c = connect_tcp(stuck.port());
  }
  EXPECT_LT(Clock::now() - start, 1s);
}

}  // namespace
}  // namespace twinbox::fake_server
