// Scripted fake IMAP server: replays exact bytes and faults, records what the client sent.
//
// It is not a mock of a real server. A Script is a list of steps (send these bytes, expect those
// bytes, drop the connection, stall, start TLS, start DEFLATE, ...) that runs on one connection in
// a background thread. When the client is done, result() says whether every step ran, gives the
// first failure with the bytes actually received, and the full transcript of what the client sent,
// so a test can assert the client's exact bytes and its behaviour under faults.
//
//   FakeServer server(Script()
//                         .send("* OK ready\r\n")
//                         .expect_tagged("LOGIN")
//                         .send_tagged("OK logged in"));
//   ... connect the client to 127.0.0.1:server.port() and let it run ...
//   EXPECT_TRUE(server.ok()) << server.describe();
//   EXPECT_EQ(server.result().received(), "a1 LOGIN joe secret\r\n");
//
// Threading: the script runs on the server's own std::thread; a FakeServer is used from one test
// thread. Every blocking operation has a deadline, so wait() and the destructor always return.
// Layering (RFC 4978 section 4): application bytes <-> DEFLATE <-> TLS <-> socket, whatever the
// order in which compress() and start_tls() are called.
#pragma once

#include <openssl/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace twinbox::fake_server {

using Millis = std::chrono::milliseconds;

// Arbitrary bytes made printable for messages: \r \n \t \" \\ and \xNN escapes, cut after `max`.
std::string escape_bytes(std::string_view bytes, std::size_t max = 512);

// A throwaway self-signed certificate (EC P-256, SHA-256 signature) and its private key, generated
// in-process. Copies share the same key and certificate.
class TlsIdentity {
 public:
  struct Spec {
    std::string host = "localhost";  // subject CN and subjectAltName (IP: if it parses as one)
    bool expired = false;            // validity ended a day ago
  };
  static TlsIdentity generate(const Spec& spec);
  static TlsIdentity generate(std::string host = "localhost");

  const std::string& host() const { return host_; }
  const std::string& cert_pem() const { return cert_pem_; }  // trust this (e.g. as SSL_CAfile)
  const std::string& cert_der() const { return cert_der_; }
  const std::string& key_pem() const { return key_pem_; }  // unencrypted PKCS#8
  // SHA-256 over the DER SubjectPublicKeyInfo (i2d_X509_PUBKEY), i.e. the value of
  // `openssl x509 -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256`.
  const std::string& spki_sha256() const { return spki_sha256_; }  // 32 raw bytes
  std::string spki_sha256_hex() const;                             // 64 lowercase hex digits
  std::string spki_pin() const;  // "sha256$" + hex, InterIMAP's SSL_fingerprint syntax

  X509* cert() const { return cert_.get(); }    // borrowed
  EVP_PKEY* key() const { return key_.get(); }  // borrowed

 private:
  std::string host_;
  std::shared_ptr<X509> cert_;
  std::shared_ptr<EVP_PKEY> key_;
  std::string cert_pem_, cert_der_, key_pem_, spki_sha256_;
};

// Protocol bounds for the server side of start_tls(); 0 means OpenSSL's default. A maximum below
// TLS1_2_VERSION also lowers the security level so that TLS 1.0/1.1 can really be offered.
struct TlsSettings {
  int min_version = 0;  // e.g. TLS1_2_VERSION
  int max_version = 0;
};

// One step of a script. Build steps with Script's methods; this is their stored form.
struct Step {
  enum class Kind {
    send,                // bytes, with {tag} placeholders; chunk_size > 0: send_chunked
    send_raw,            // bytes written below TLS and DEFLATE, no placeholders
    garbage,             // count random bytes from seed
    expect,              // exactly bytes
    expect_line,         // one CRLF line accepted by predicate
    expect_tagged,       // "<tag> <command>[ ...]\r\n"; bytes = command
    expect_tagged_line,  // "<tag> <bytes>\r\n" exactly
    expect_eof,
    drop,
    drop_after_bytes,
    shutdown_write,
    send_close_notify,
    close,
    stall,
    start_tls,
    compress,
  };
  Kind kind = Kind::send;
  std::string bytes;
  std::string capture;         // expect_tagged*: also store the tag under this name
  std::size_t count = 0;       // garbage size, drop_after_bytes n
  std::size_t chunk_size = 0;  // send_chunked
  Millis duration{0};          // send_chunked delay between chunks, stall length
  Millis timeout{0};           // 0: the server's Options::step_timeout
  std::uint32_t seed = 0;
  std::function<bool(std::string_view)> predicate;
  std::optional<TlsIdentity> identity;  // start_tls: empty means FakeServer::identity()
  TlsSettings tls;

  std::string text() const;  // e.g. `expect "T1 CAPABILITY\r\n"`, used in failures
};

// Builder for the steps run on one connection, in order. Placeholders in send(), send_tagged()
// and send_chunked() text: "{tag}" is the last tag captured by expect_tagged*(), "{tag:NAME}" the
// one captured under NAME; a placeholder with no captured tag is a failure of that step.
class Script {
 public:
  using LinePredicate = std::function<bool(std::string_view line)>;

  // Output. Sends go through DEFLATE and TLS when those are active.
  Script& send(std::string bytes);
  Script& send_tagged(std::string text);  // send("{tag} " + text + "\r\n")
  // Each chunk is encoded and written separately (its own TLS record / DEFLATE sync flush / TCP
  // segment: TCP_NODELAY is on), with `delay` between chunks, to exercise client reassembly.
  Script& send_chunked(std::string bytes, std::size_t chunk_size = 1, Millis delay = Millis(1));
  Script& send_raw(std::string bytes);  // straight to the socket: corrupt a TLS or DEFLATE stream
  Script& garbage(std::size_t n, std::uint32_t seed);  // deterministic (std::mt19937)

  // Input. Each waits at most the step timeout; a mismatch, EOF or timeout records the failure
  // (with the bytes received) and closes the connection. Bytes beyond what a step consumes stay
  // buffered for the next step.
  Script& expect(std::string bytes);
  // One line ending in CRLF; `regex` (POSIX extended, as egrep) must match the whole line
  // without its CRLF. A bad regex throws std::invalid_argument when the script is built.
  Script& expect_line_matching(std::string regex);
  Script& expect_line_matching(std::string description, LinePredicate predicate);
  // A line "<tag> <command>" followed by SP or CRLF; the command is compared case-insensitively
  // (e.g. "LOGIN", "UID FETCH"). The tag must be a valid IMAP tag; it becomes "{tag}", and
  // "{tag:<capture>}" when a capture name is given.
  Script& expect_tagged(std::string command, std::string capture = "");
  // Like expect_tagged, but the line must be exactly "<tag> " + rest + "\r\n".
  Script& expect_tagged_line(std::string rest, std::string capture = "");
  // The client must close its side without sending anything more.
  Script& expect_eof();

  // Faults and connection control. After the server closes, any further step fails.
  Script& drop();  // abrupt close: RST (SO_LINGER 0) on sockets, plain close on pipes
  Script& drop_after_bytes(std::size_t n);  // drop() once n more application bytes were sent
  Script& shutdown_write();     // FIN only (no TLS close_notify); the server keeps reading
  Script& send_close_notify();  // TLS close_notify (SSL_shutdown), connection stays open
  // Graceful end: TLS close_notify if TLS is on, FIN, then read until the client closes. This is
  // also what happens after the last step.
  Script& close();
  // Send nothing for `duration` while reading (bytes stay buffered for the next step); ends early
  // without failure when the client closes.
  Script& stall(Millis duration);

  // Layers. start_tls() fails if the client sent bytes after its last consumed input and before
  // the handshake (plaintext command injection, RFC 9051 section 6.2.1); response injection is
  // send("T1 OK begin TLS\r\nT2 OK forged\r\n").start_tls().
  Script& start_tls();
  Script& start_tls(TlsIdentity identity, TlsSettings settings = {});
  // RFC 4978 DEFLATE from the next byte in both directions (raw deflate, windowBits -15, a
  // Z_SYNC_FLUSH after each write). Client bytes already buffered belong to the inflater.
  Script& compress();

  // Timeout for the steps added after this call (0: back to the server's default).
  Script& timeout(Millis step_timeout);

  const std::vector<Step>& steps() const { return steps_; }

 private:
  Script& add(Step step);

  std::vector<Step> steps_;
  Millis timeout_{0};
};

inline constexpr std::size_t kNoStep = static_cast<std::size_t>(-1);

struct Failure {
  std::size_t step = kNoStep;  // index into Script::steps(); kNoStep: not inside a step
  std::string step_text;       // Step::text() of that step
  std::string message;         // what went wrong, e.g. `client closed the connection`
  std::string received;        // escape_bytes() of the unconsumed bytes received at that point

  // `step 1 (expect "T1 CAPABILITY\r\n"): mismatch at byte 5; received "T1 CAPABILITIES\r\n"`
  std::string to_string() const;
};

// Bytes the client sent, as it wrote them (after decryption and inflation), with their layer.
struct Segment {
  bool tls = false;
  bool compressed = false;
  std::string bytes;
};

struct ConnectionResult {
  bool connected = false;
  bool completed = false;  // every step ran and none failed
  std::optional<Failure> failure;
  std::vector<Segment> transcript;  // everything received from the client, in order
  std::string sent;                 // application bytes the server sent (before DEFLATE/TLS)
  std::string unconsumed;           // received bytes that no step consumed
  std::map<std::string, std::string> tags;  // captured tags; key "" is the last one
  std::string sni;             // server name from the client's ClientHello; empty: none or no TLS
  std::string tls_version;     // negotiated protocol, e.g. "TLSv1.3"; empty: no TLS
  bool client_closed = false;  // the client's EOF (or reset) was seen

  bool ok() const { return completed; }
  std::string received() const;           // the whole transcript
  std::string received_in_clear() const;  // only the bytes that arrived outside TLS
  std::string describe() const;           // one-paragraph summary for test failure output
};

enum class Transport {
  tcp,         // listen on 127.0.0.1, ephemeral port(); one connection per script
  socketpair,  // AF_UNIX socketpair; take_client_fds() gives the same fd twice
  pipes,       // two pipes, laid out like a tunnel child's stdout/stdin
};

struct FdPair {
  int read_fd = -1;
  int write_fd = -1;
};

struct Options {
  Transport transport = Transport::tcp;
  Millis step_timeout{3000};            // default deadline of every step
  Millis accept_timeout{3000};          // how long each tcp script waits for its connection
  std::optional<TlsIdentity> identity;  // for start_tls(); default: generated for "localhost"
};

class FakeServer {
 public:
  explicit FakeServer(Script script, Options options = {});
  // tcp only: script i runs on the i-th accepted connection (reconnect tests). After a failed
  // connection the remaining scripts are not run.
  explicit FakeServer(std::vector<Script> scripts, Options options = {});
  // Runs the script on fds the caller provides (e.g. one end of its own socketpair or pipes);
  // takes ownership of them. options.transport is ignored.
  FakeServer(Script script, FdPair server_fds, Options options = {});
  ~FakeServer();  // stops any step in progress and joins; never blocks for long

  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  std::uint16_t port() const { return port_; }  // tcp; 0 otherwise
  // socketpair/pipes: the client's ends, now owned by the caller (close them). For socketpair
  // read_fd == write_fd. For pipes: read the server's output from read_fd, write to write_fd.
  FdPair take_client_fds();
  // The default identity of start_tls() steps: Options::identity, or one generated for
  // "localhost" (when the server starts if a script needs it, else on first call).
  const TlsIdentity& identity() const;

  // Waits until every script has finished, then returns the results (one per script). A script
  // that finished its steps and is only waiting for the client to close is cut short: bytes
  // already received are still recorded.
  const std::vector<ConnectionResult>& wait();
  const ConnectionResult& result(std::size_t connection = 0);  // wait()s first
  bool ok();                                                   // every connection completed
  std::string describe();  // every connection's describe(); wait()s first

 private:
  void start(Options options);
  void run();

  std::vector<Script> scripts_;
  Options options_;
  mutable std::optional<TlsIdentity> identity_;
  std::vector<ConnectionResult> results_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  FdPair server_fds_;
  FdPair client_fds_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> wait_requested_{false};
  std::thread thread_;
  bool joined_ = false;
};

}  // namespace twinbox::fake_server
