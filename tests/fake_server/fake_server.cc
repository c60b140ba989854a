#include "fake_server/fake_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <random>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace twinbox::fake_server {

std::string escape_bytes(std::string_view bytes, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (out.size() >= max) {
      out += fmt::format("...[{} more bytes]", bytes.size() - i);
      break;
    }
    const auto c = static_cast<unsigned char>(bytes[i]);
    switch (c) {
      case '\r':
        out += "\\r";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

constexpr std::size_t kMaxLine = 64 * 1024;
constexpr std::size_t kMaxBuffered = 64 * 1024 * 1024;
constexpr Millis kMismatchGrace{200};

std::string quoted(std::string_view bytes) { return "\"" + escape_bytes(bytes, 120) + "\""; }

std::string errno_text(int err) { return std::generic_category().message(err); }

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Drains OpenSSL's (thread-local) error queue into one line.
std::string openssl_errors() {
  std::string out;
  char buf[256];
  while (const unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error queued" : out;
}

[[noreturn]] void throw_openssl(const char* what) {
  throw std::runtime_error(fmt::format("{}: {}", what, openssl_errors()));
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(n));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

bool is_socket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

bool is_tag_char(unsigned char c) {
  // RFC 9051 tag: 1*<any ASTRING-CHAR except "+">.
  if (c <= 0x20 || c >= 0x7f) return false;
  return std::string_view("(){%*\"\\+").find(static_cast<char>(c)) == std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

enum class Io { ok, timeout, eof, error, stopped, interrupted };

// What can cut a wait short: stop (destructor; always), and wait() or a new pending connection
// (only for "interruptible" waits, i.e. the final drain of a finished script).
struct Waker {
  int wake_fd = -1;
  const std::atomic<bool>* stop = nullptr;
  const std::atomic<bool>* wait_requested = nullptr;
  int listen_fd = -1;
};

Io poll_until(const Waker& waker, int fd, short events, TimePoint deadline, bool interruptible,
              std::string* error) {
  for (;;) {
    if (waker.stop->load()) return Io::stopped;
    if (interruptible && waker.wait_requested->load()) return Io::interrupted;
    const auto left = std::chrono::ceil<Millis>(deadline - Clock::now()).count();
    const int ms = static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
    pollfd fds[3] = {{fd, events, 0}, {waker.wake_fd, POLLIN, 0}, {waker.listen_fd, POLLIN, 0}};
    const nfds_t n = interruptible && waker.listen_fd >= 0 ? 3 : 2;
    const int r = ::poll(fds, n, ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (error) *error = fmt::format("poll: {}", errno_text(errno));
      return Io::error;
    }
    if (fds[1].revents != 0) {
      std::uint64_t value = 0;
      [[maybe_unused]] const auto ignored = ::read(waker.wake_fd, &value, sizeof value);
      continue;  // the flags say why we were woken
    }
    if (fds[0].revents != 0) return Io::ok;
    if (n == 3 && fds[2].revents != 0) return Io::interrupted;
    if (r == 0) return Io::timeout;
  }
}

// Runs one script on one connection. Owns the fds, the TLS session and the zlib streams.
class Connection {
 public:
  Connection(FdPair fds, const Waker& waker, const Options& options,
             const std::optional<TlsIdentity>& default_identity, ConnectionResult& result)
      : rfd_(fds.read_fd),
        wfd_(fds.write_fd),
        socket_(is_socket(fds.read_fd)),
        waker_(waker),
        options_(options),
        default_identity_(default_identity),
        result_(result) {
    set_nonblocking(rfd_);
    if (wfd_ != rfd_) set_nonblocking(wfd_);
    buffer_.resize(64 * 1024);
  }

  ~Connection() {
    close_fds(false);
    if (ssl_) SSL_free(ssl_);
    if (deflater_) deflateEnd(deflater_.get());
    if (inflater_) inflateEnd(inflater_.get());
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void run(const Script& script) {
    result_.connected = true;
    const auto& steps = script.steps();
    bool ok = true;
    for (std::size_t i = 0; i < steps.size() && ok; ++i) {
      step_index_ = i;
      step_ = &steps[i];
      step_timeout_ = steps[i].timeout.count() > 0 ? steps[i].timeout : options_.step_timeout;
      deadline_ = Clock::now() + step_timeout_;
      ok = closed_ ? fail("the connection is already closed") : run_step(steps[i]);
    }
    if (ok && drop_budget_) {
      step_index_ = drop_step_;
      step_ = &steps[drop_step_];
      ok = fail(fmt::format("only {} of the bytes were sent before the script ended",
                            step_->count - *drop_budget_));
    }
    if (ok && !closed_) {
      step_index_ = kNoStep;
      step_ = nullptr;
      graceful_close(Clock::now() + options_.step_timeout);
    }
    result_.completed = ok;
    result_.unconsumed = in_;
    result_.client_closed = peer_eof_;
    close_fds(false);
  }

 private:
  bool run_step(const Step& step) {
    switch (step.kind) {
      case Step::Kind::send:
        return run_send(step);
      case Step::Kind::send_raw:
        return check(write_wire(step.bytes));
      case Step::Kind::garbage: {
        std::mt19937 gen(step.seed);
        std::string bytes(step.count, '\0');
        for (auto& c : bytes) c = static_cast<char>(gen() & 0xff);
        return send_app(bytes);
      }
      case Step::Kind::expect:
        return run_expect(step.bytes);
      case Step::Kind::expect_line:
        return run_expect_line(step);
      case Step::Kind::expect_tagged:
      case Step::Kind::expect_tagged_line:
        return run_expect_tagged(step);
      case Step::Kind::expect_eof:
        return run_expect_eof();
      case Step::Kind::drop:
        close_fds(true);
        return true;
      case Step::Kind::drop_after_bytes:
        drop_budget_ = step.count;
        drop_step_ = step_index_;
        return true;
      case Step::Kind::shutdown_write:
        return run_shutdown_write();
      case Step::Kind::send_close_notify:
        return run_close_notify();
      case Step::Kind::close:
        graceful_close(deadline_);
        return true;
      case Step::Kind::stall:
        return run_stall(step.duration);
      case Step::Kind::start_tls:
        return run_start_tls(step);
      case Step::Kind::compress:
        return run_compress();
    }
    return fail("unknown step");
  }

  // ---- failures

  bool fail(std::string message) { return fail_with(std::move(message), in_); }

  bool fail_with(std::string message, std::string_view received) {
    if (!result_.failure) {
      result_.failure = Failure{step_index_, step_ ? step_->text() : "end of script",
                                std::move(message), escape_bytes(received)};
    }
    return false;
  }

  bool fail_io(Io r, std::string_view context = "") {
    switch (r) {
      case Io::ok:
      case Io::interrupted:
        return true;
      case Io::timeout:
        return fail(fmt::format("timed out after {} ms{}", step_timeout_.count(), context));
      case Io::eof:
        return fail(fmt::format("client closed the connection{}", context));
      case Io::error:
        return fail(error_ + std::string(context));
      case Io::stopped:
        return fail("server stopped");
    }
    return false;
  }

  bool check(Io r) { return r == Io::ok ? true : fail_io(r); }

  // ---- reading: wire -> TLS -> inflate -> in_

  Io read_wire(TimePoint deadline, std::string& out, bool interruptible = false) {
    if (peer_eof_) return Io::eof;
    if (closed_) {
      error_ = "the connection is already closed";
      return Io::error;
    }
    const Io r = poll_until(waker_, rfd_, POLLIN, deadline, interruptible, &error_);
    if (r != Io::ok) return r;
    const ssize_t n = ::read(rfd_, buffer_.data(), buffer_.size());
    if (n > 0) {
      out.append(buffer_.data(), static_cast<std::size_t>(n));
      return Io::ok;
    }
    if (n == 0 || errno == ECONNRESET) {
      peer_eof_ = true;
      return Io::eof;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Io::ok;
    error_ = fmt::format("read: {}", errno_text(errno));
    return Io::error;
  }

  // One read from the wire, decoded into in_. Io::ok may have added nothing (a partial record).
  Io fill(TimePoint deadline, bool interruptible = false) {
    std::string wire;
    const Io r = read_wire(deadline, wire, interruptible);
    if (r != Io::ok) return r;
    return decode(wire) ? Io::ok : Io::error;
  }

  bool decode(std::string_view wire) {
    if (!ssl_) return accept_plain(std::string(wire));
    if (!wire.empty() && BIO_write(rbio_, wire.data(), static_cast<int>(wire.size())) <= 0) {
      error_ = "BIO_write failed";
      return false;
    }
    std::string plain;
    for (;;) {
      ERR_clear_error();
      const int n = SSL_read(ssl_, buffer_.data(), static_cast<int>(buffer_.size()));
      if (n > 0) {
        plain.append(buffer_.data(), static_cast<std::size_t>(n));
        continue;
      }
      const int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_WANT_READ) break;
      if (e == SSL_ERROR_ZERO_RETURN) {  // close_notify: EOF at the application level
        peer_eof_ = true;
        break;
      }
      const std::string errors = openssl_errors();
      accept_plain(std::move(plain));
      error_ = "TLS error on data from the client: " + errors;
      return false;
    }
    if (!accept_plain(std::move(plain))) return false;
    ++no_read_while_writing_;
    flush_tls();  // alerts or KeyUpdate answers, if any
    --no_read_while_writing_;
    return true;
  }

  bool accept_plain(std::string plain) {
    if (plain.empty()) return true;
    std::string app;
    if (inflater_) {
      z_stream& z = *inflater_;
      z.next_in = reinterpret_cast<Bytef*>(plain.data());
      z.avail_in = static_cast<uInt>(plain.size());
      do {
        z.next_out = reinterpret_cast<Bytef*>(buffer_.data());
        z.avail_out = static_cast<uInt>(buffer_.size());
        const int r = ::inflate(&z, Z_SYNC_FLUSH);
        app.append(buffer_.data(), buffer_.size() - z.avail_out);
        if (r == Z_STREAM_END) {
          error_ = "the client ended its DEFLATE stream";
          record(app);
          return false;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
          record(app);
          error_ = fmt::format("invalid DEFLATE data from the client: {}", z.msg ? z.msg : "?");
          return false;
        }
        if (in_.size() + app.size() > kMaxBuffered) break;
      } while (z.avail_in > 0 || z.avail_out == 0);
    } else {
      app = std::move(plain);
    }
    record(app);
    if (in_.size() > kMaxBuffered) {
      error_ = fmt::format("more than {} unconsumed bytes from the client", kMaxBuffered);
      return false;
    }
    return true;
  }

  void record(std::string_view app) {
    if (app.empty()) return;
    in_.append(app);
    const bool tls = ssl_ != nullptr;
    const bool compressed = inflater_ != nullptr;
    auto& t = result_.transcript;
    if (t.empty() || t.back().tls != tls || t.back().compressed != compressed) {
      t.push_back(Segment{tls, compressed, {}});
    }
    t.back().bytes.append(app);
  }

  // Takes the last n recorded bytes back out of the transcript (see run_compress).
  void unrecord(std::size_t n) {
    auto& t = result_.transcript;
    while (n > 0 && !t.empty()) {
      const std::size_t k = std::min(n, t.back().bytes.size());
      t.back().bytes.resize(t.back().bytes.size() - k);
      n -= k;
      if (t.back().bytes.empty()) t.pop_back();
    }
  }

  // ---- writing: app -> deflate -> TLS -> wire

  Io write_wire(std::string_view bytes) {
    if (closed_ || write_closed_) {
      error_ = closed_ ? "the connection is already closed" : "the server's write side is shut";
      return Io::error;
    }
    std::size_t off = 0;
    while (off < bytes.size()) {
      const char* p = bytes.data() + off;
      const std::size_t len = bytes.size() - off;
      const ssize_t n = socket_ ? ::send(wfd_, p, len, MSG_NOSIGNAL) : ::write(wfd_, p, len);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // Keep reading while blocked, so a client that writes without reading cannot deadlock.
        if (no_read_while_writing_ == 0 && !peer_eof_ && fill(Clock::now()) == Io::error) {
          return Io::error;
        }
        const Io r = poll_until(waker_, wfd_, POLLOUT,
                                std::min(deadline_, Clock::now() + Millis(10)), false, &error_);
        if (r == Io::timeout && Clock::now() < deadline_) continue;
        if (r != Io::ok) return r;
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        peer_eof_ = true;  // the client's close arrived before the rest of our answer
        error_ = "client closed the connection while the server was writing";
        return Io::error;
      }
      error_ = fmt::format("write: {}", errno_text(errno));
      return Io::error;
    }
    return Io::ok;
  }

  bool flush_tls() {
    std::string out = bio_contents(wbio_);
    if (out.empty()) return true;
    (void)BIO_reset(wbio_);
    return write_wire(out) == Io::ok;
  }

  Io write_app(std::string_view app) {
    std::string data;
    if (deflater_) {
      z_stream& z = *deflater_;
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(app.data()));
      z.avail_in = static_cast<uInt>(app.size());
      do {
        z.next_out = reinterpret_cast<Bytef*>(buffer_.data());
        z.avail_out = static_cast<uInt>(buffer_.size());
        ::deflate(&z, Z_SYNC_FLUSH);
        data.append(buffer_.data(), buffer_.size() - z.avail_out);
      } while (z.avail_out == 0);
    } else {
      data.assign(app);
    }
    if (ssl_) {
      ERR_clear_error();
      if (SSL_write(ssl_, data.data(), static_cast<int>(data.size())) <= 0) {
        error_ = "SSL_write: " + openssl_errors();
        return Io::error;
      }
      data = bio_contents(wbio_);
      (void)BIO_reset(wbio_);
    }
    const Io r = write_wire(data);
    if (r == Io::ok) result_.sent.append(app);
    return r;
  }

  // Sends application bytes, honouring a pending drop_after_bytes().
  bool send_app(std::string_view app) {
    std::string_view part = app;
    bool drop_now = false;
    if (drop_budget_) {
      if (app.size() >= *drop_budget_) {
        part = app.substr(0, *drop_budget_);
        drop_now = true;
      } else {
        *drop_budget_ -= app.size();
      }
    }
    if (!part.empty() && !check(write_app(part))) return false;
    if (drop_now) {
      drop_budget_.reset();
      close_fds(true);
    }
    return true;
  }

  // ---- steps

  bool substitute(std::string_view text, std::string& out) {
    std::size_t i = 0;
    while (i < text.size()) {
      const std::size_t open = text.find("{tag", i);
      const std::size_t close = open == std::string_view::npos ? open : text.find('}', open);
      if (close == std::string_view::npos) {
        out.append(text.substr(i));
        break;
      }
      out.append(text.substr(i, open - i));
      const std::string_view inner = text.substr(open + 1, close - open - 1);
      if (inner != "tag" && !inner.starts_with("tag:")) {
        out += '{';
        i = open + 1;
        continue;
      }
      const std::string name(inner == "tag" ? std::string_view() : inner.substr(4));
      const auto it = result_.tags.find(name);
      if (it == result_.tags.end()) return fail(fmt::format("no tag captured for {{{}}}", inner));
      out += it->second;
      i = close + 1;
    }
    return true;
  }

  bool run_send(const Step& step) {
    std::string bytes;
    if (!substitute(step.bytes, bytes)) return false;
    if (step.chunk_size == 0) return send_app(bytes);
    for (std::size_t off = 0; off < bytes.size() && !closed_; off += step.chunk_size) {
      if (off > 0 && step.duration.count() > 0) {
        // An interruptible sleep: only the wake fd is watched.
        const Io r =
            poll_until(waker_, waker_.wake_fd, 0, Clock::now() + step.duration, false, &error_);
        if (r == Io::stopped || r == Io::error) return fail_io(r);
      }
      if (!send_app(std::string_view(bytes).substr(off, step.chunk_size))) return false;
    }
    return true;
  }

  bool run_expect(std::string_view expected) {
    for (;;) {
      const std::size_t n = std::min(in_.size(), expected.size());
      const auto diff = std::mismatch(expected.begin(), expected.begin() + n, in_.begin());
      if (diff.first != expected.begin() + n) {
        const std::size_t at = static_cast<std::size_t>(diff.first - expected.begin());
        // Read on to the end of the offending line, so the failure shows all of it.
        const TimePoint grace = std::min(deadline_, Clock::now() + kMismatchGrace);
        while (in_.find('\n', at) == std::string::npos && fill(grace) == Io::ok) {
        }
        return fail(fmt::format("mismatch at byte {}", at));
      }
      if (in_.size() >= expected.size()) {
        in_.erase(0, expected.size());
        return true;
      }
      const Io r = fill(deadline_);
      if (r != Io::ok) return fail_io(r);
    }
  }

  // Waits for a complete line in in_; returns its length including LF, or 0 after a failure.
  std::size_t wait_line() {
    for (;;) {
      const std::size_t lf = in_.find('\n');
      if (lf != std::string::npos) {
        if (lf == 0 || in_[lf - 1] != '\r') {
          fail("line not terminated by CRLF");
          return 0;
        }
        return lf + 1;
      }
      if (in_.size() > kMaxLine) {
        fail(fmt::format("no CRLF in the first {} bytes", kMaxLine));
        return 0;
      }
      const Io r = fill(deadline_);
      if (r != Io::ok) {
        fail_io(r);
        return 0;
      }
    }
  }

  bool run_expect_line(const Step& step) {
    const std::size_t len = wait_line();
    if (len == 0) return false;
    if (!step.predicate(std::string_view(in_).substr(0, len - 2))) {
      return fail_with("line does not match", std::string_view(in_).substr(0, len));
    }
    in_.erase(0, len);
    return true;
  }

  bool run_expect_tagged(const Step& step) {
    const std::size_t len = wait_line();
    if (len == 0) return false;
    const std::string_view whole = std::string_view(in_).substr(0, len);
    const std::string_view line = whole.substr(0, len - 2);
    const std::size_t sp = line.find(' ');
    const std::string_view tag = line.substr(0, sp);
    if (sp == std::string_view::npos || tag.empty() ||
        !std::all_of(tag.begin(), tag.end(), [](char c) { return is_tag_char(c); })) {
      return fail_with("no valid tag", whole);
    }
    const std::string_view rest = line.substr(sp + 1);
    if (step.kind == Step::Kind::expect_tagged_line) {
      if (rest != step.bytes) return fail_with("line does not match", whole);
    } else {
      const std::string_view command = step.bytes;
      const bool match = rest.size() >= command.size() &&
                         iequals(rest.substr(0, command.size()), command) &&
                         (rest.size() == command.size() || rest[command.size()] == ' ');
      if (!match) return fail_with(fmt::format("not a {} command", command), whole);
    }
    result_.tags[""] = std::string(tag);
    if (!step.capture.empty()) result_.tags[step.capture] = std::string(tag);
    in_.erase(0, len);
    return true;
  }

  bool run_expect_eof() {
    for (;;) {
      if (!in_.empty()) return fail("the client sent bytes instead of closing");
      const Io r = fill(deadline_);
      if (r == Io::eof) return true;
      if (r != Io::ok) return fail_io(r);
    }
  }

  bool run_stall(Millis duration) {
    const TimePoint end = Clock::now() + duration;
    for (;;) {
      const Io r = fill(end);
      if (r == Io::timeout || r == Io::eof) return true;
      if (r != Io::ok) return fail_io(r);
    }
  }

  void shut_write_side() {
    if (write_closed_ || closed_) return;
    if (socket_) {
      ::shutdown(wfd_, SHUT_WR);
    } else {
      close_fd(wfd_);
    }
    write_closed_ = true;
  }

  bool run_shutdown_write() {
    if (closed_ || write_closed_) return fail("the write side is already closed");
    shut_write_side();
    return true;
  }

  bool run_close_notify() {
    if (!ssl_) return fail("TLS is not active");
    ERR_clear_error();
    SSL_shutdown(ssl_);
    tls_shutdown_sent_ = true;
    if (!flush_tls()) return fail(error_);
    return true;
  }

  // close_notify (if TLS), FIN, then record whatever the client still sends until it closes.
  void graceful_close(TimePoint deadline) {
    if (closed_) return;
    deadline_ = deadline;
    if (ssl_ && !write_closed_ && !tls_shutdown_sent_) {
      SSL_shutdown(ssl_);
      flush_tls();
    }
    shut_write_side();
    while (!peer_eof_) {
      const Io r = fill(deadline, true);
      if (r == Io::interrupted) {
        while (fill(Clock::now()) == Io::ok) {
        }
        break;
      }
      if (r != Io::ok) break;
    }
    close_fds(false);
  }

  bool run_start_tls(const Step& step) {
    if (ssl_) return fail("TLS is already active");
    if (!in_.empty()) {
      return fail(fmt::format(
          "the client sent {} bytes after its last command and before the TLS handshake",
          in_.size()));
    }
    const TlsIdentity& id = step.identity ? *step.identity : default_identity_.value();
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return fail("SSL_CTX_new: " + openssl_errors());
    SSL_CTX_set_num_tickets(ctx, 0);
    if (step.tls.max_version != 0 && step.tls.max_version < TLS1_2_VERSION) {
      SSL_CTX_set_security_level(ctx, 0);  // OpenSSL 3 refuses TLS 1.0/1.1 at level 1
      SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
    }
    const bool configured = SSL_CTX_use_certificate(ctx, id.cert()) == 1 &&
                            SSL_CTX_use_PrivateKey(ctx, id.key()) == 1 &&
                            SSL_CTX_set_min_proto_version(ctx, step.tls.min_version) == 1 &&
                            SSL_CTX_set_max_proto_version(ctx, step.tls.max_version) == 1;
    if (configured) ssl_ = SSL_new(ctx);
    SSL_CTX_free(ctx);  // the SSL holds its own reference
    if (!ssl_) return fail("TLS setup: " + openssl_errors());
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, rbio_, wbio_);
    SSL_set_accept_state(ssl_);

    ++no_read_while_writing_;
    const bool handshaken = handshake();
    --no_read_while_writing_;
    if (!handshaken) return false;
    result_.tls_version = SSL_get_version(ssl_);
    if (const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) result_.sni = sni;
    // Application data that came in with the client's Finished is already in rbio_.
    if (!decode("")) return fail(error_);
    return true;
  }

  bool handshake() {
    for (;;) {
      ERR_clear_error();
      const int r = SSL_do_handshake(ssl_);
      const int e = SSL_get_error(ssl_, r);
      const std::string errors = r == 1 ? "" : openssl_errors();
      if (!flush_tls() && r == 1) return fail(error_);
      if (r == 1) return true;
      if (e != SSL_ERROR_WANT_READ) return fail("TLS handshake failed: " + errors);
      std::string wire;
      const Io rr = read_wire(deadline_, wire);
      if (rr != Io::ok) return fail_io(rr, " during the TLS handshake");
      BIO_write(rbio_, wire.data(), static_cast<int>(wire.size()));
    }
  }

  bool run_compress() {
    if (inflater_) return fail("DEFLATE is already active");
    deflater_ = std::make_unique<z_stream>();
    inflater_ = std::make_unique<z_stream>();
    if (deflateInit2(deflater_.get(), Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK ||
        inflateInit2(inflater_.get(), -15) != Z_OK) {
      return fail("zlib initialisation failed");
    }
    // Bytes already buffered arrived after the COMPRESS command: they belong to the inflater.
    std::string pending = std::move(in_);
    in_.clear();
    unrecord(pending.size());
    if (!accept_plain(std::move(pending))) return fail(error_);
    return true;
  }

  void close_fds(bool reset) {
    if (closed_) return;
    if (reset && socket_) {
      const linger l{1, 0};
      ::setsockopt(rfd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    if (wfd_ != rfd_) close_fd(wfd_);
    close_fd(rfd_);
    wfd_ = -1;
    closed_ = true;
  }

  int rfd_;
  int wfd_;
  const bool socket_;
  const Waker waker_;
  const Options& options_;
  const std::optional<TlsIdentity>& default_identity_;  // set if any step needs it
  ConnectionResult& result_;

  std::vector<char> buffer_;
  std::string in_;     // decoded client bytes not yet consumed by a step
  std::string error_;  // detail of the last Io::error
  bool closed_ = false;
  bool write_closed_ = false;
  bool peer_eof_ = false;
  int no_read_while_writing_ = 0;  // > 0 inside decode() and the TLS handshake
  bool tls_shutdown_sent_ = false;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
  std::unique_ptr<z_stream> deflater_;
  std::unique_ptr<z_stream> inflater_;
  std::optional<std::size_t> drop_budget_;
  std::size_t drop_step_ = 0;

  std::size_t step_index_ = kNoStep;
  const Step* step_ = nullptr;
  Millis step_timeout_{0};
  TimePoint deadline_{};
};

}  // namespace

// ---- TlsIdentity

TlsIdentity TlsIdentity::generate(std::string host) {
  Spec spec;
  spec.host = std::move(host);
  return generate(spec);
}

TlsIdentity TlsIdentity::generate(const Spec& spec) {
  TlsIdentity id;
  id.host_ = spec.host;
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (!key) throw_openssl("EC key generation");
  id.key_.reset(key, EVP_PKEY_free);
  X509* cert = X509_new();
  if (!cert) throw_openssl("X509_new");
  id.cert_.reset(cert, X509_free);

  std::uint64_t serial = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof serial);
  const long day = 24 * 3600;
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set_int64(X509_get_serialNumber(cert), static_cast<int64_t>(serial >> 1));
  X509_gmtime_adj(X509_getm_notBefore(cert), spec.expired ? -2 * day : -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), spec.expired ? -day : 7 * day);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(spec.host.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);

  unsigned char ip[16];
  const bool is_ip = inet_pton(AF_INET, spec.host.c_str(), ip) == 1 ||
                     inet_pton(AF_INET6, spec.host.c_str(), ip) == 1;
  const std::string san = (is_ip ? "IP:" : "DNS:") + spec.host;
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  const std::pair<int, const char*> extensions[] = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_ext_key_usage, "serverAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_subject_alt_name, san.c_str()},
  };
  for (const auto& [nid, value] : extensions) {
    X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &v3, nid, value);
    if (!ext) throw_openssl("certificate extension");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert, key, EVP_sha256()) <= 0) throw_openssl("X509_sign");

  std::unique_ptr<BIO, decltype(&BIO_free)> pem(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(pem.get(), cert);
  id.cert_pem_ = bio_contents(pem.get());
  (void)BIO_reset(pem.get());
  PEM_write_bio_PrivateKey(pem.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  id.key_pem_ = bio_contents(pem.get());

  const int der_len = i2d_X509(cert, nullptr);
  id.cert_der_.resize(static_cast<std::size_t>(der_len));
  auto* der = reinterpret_cast<unsigned char*>(id.cert_der_.data());
  i2d_X509(cert, &der);

  // SPKI pin: the DER SubjectPublicKeyInfo, not X509_pubkey_digest (which skips the algorithm).
  X509_PUBKEY* spki = X509_get_X509_PUBKEY(cert);
  const int spki_len = i2d_X509_PUBKEY(spki, nullptr);
  std::string spki_der(static_cast<std::size_t>(spki_len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(spki_der.data());
  i2d_X509_PUBKEY(spki, &p);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(spki_der.data(), spki_der.size(), md, &md_len, EVP_sha256(), nullptr) != 1) {
    throw_openssl("EVP_Digest");
  }
  id.spki_sha256_.assign(reinterpret_cast<const char*>(md), md_len);
  return id;
}

std::string TlsIdentity::spki_sha256_hex() const {
  std::string out;
  for (const unsigned char c : spki_sha256_) out += fmt::format("{:02x}", c);
  return out;
}

std::string TlsIdentity::spki_pin() const { return "sha256$" + spki_sha256_hex(); }

// ---- Step and Script

std::string Step::text() const {
  switch (kind) {
    case Kind::send:
      if (chunk_size > 0) {
        return fmt::format("send_chunked({}, {} ms) {}", chunk_size, duration.count(),
                           quoted(bytes));
      }
      return "send " + quoted(bytes);
    case Kind::send_raw:
      return "send_raw " + quoted(bytes);
    case Kind::garbage:
      return fmt::format("garbage({}, seed {})", count, seed);
    case Kind::expect:
      return "expect " + quoted(bytes);
    case Kind::expect_line:
      return "expect_line_matching " + bytes;
    case Kind::expect_tagged:
      return "expect_tagged " + bytes;
    case Kind::expect_tagged_line:
      return "expect_tagged_line " + quoted("<tag> " + bytes);
    case Kind::expect_eof:
      return "expect_eof";
    case Kind::drop:
      return "drop";
    case Kind::drop_after_bytes:
      return fmt::format("drop_after_bytes({})", count);
    case Kind::shutdown_write:
      return "shutdown_write";
    case Kind::send_close_notify:
      return "send_close_notify";
    case Kind::close:
      return "close";
    case Kind::stall:
      return fmt::format("stall({} ms)", duration.count());
    case Kind::start_tls:
      return identity ? "start_tls(CN=" + identity->host() + ")" : "start_tls";
    case Kind::compress:
      return "compress";
  }
  return "?";
}

Script& Script::add(Step step) {
  step.timeout = timeout_;
  steps_.push_back(std::move(step));
  return *this;
}

Script& Script::send(std::string bytes) {
  Step s;
  s.kind = Step::Kind::send;
  s.bytes = std::move(bytes);
  return add(std::move(s));
}

Script& Script::send_tagged(std::string text) { return send("{tag} " + text + "\r\n"); }

Script& Script::send_chunked(std::string bytes, std::size_t chunk_size, Millis delay) {
  Step s;
  s.kind = Step::Kind::send;
  s.bytes = std::move(bytes);
  s.chunk_size = std::max<std::size_t>(chunk_size, 1);
  s.duration = delay;
  return add(std::move(s));
}

Script& Script::send_raw(std::string bytes) {
  Step s;
  s.kind = Step::Kind::send_raw;
  s.bytes = std::move(bytes);
  return add(std::move(s));
}

Script& Script::garbage(std::size_t n, std::uint32_t seed) {
  Step s;
  s.kind = Step::Kind::garbage;
  s.count = n;
  s.seed = seed;
  return add(std::move(s));
}

Script& Script::expect(std::string bytes) {
  Step s;
  s.kind = Step::Kind::expect;
  s.bytes = std::move(bytes);
  return add(std::move(s));
}

Script& Script::expect_line_matching(std::string regex) {
  // POSIX ERE rather than std::regex: libstdc++ 12's <regex> trips -Wmaybe-uninitialized at -O1.
  auto compiled = std::make_unique<regex_t>();
  const std::string anchored = "^(" + regex + ")$";
  if (const int err = regcomp(compiled.get(), anchored.c_str(), REG_EXTENDED | REG_NOSUB)) {
    char buf[256];
    regerror(err, compiled.get(), buf, sizeof buf);
    throw std::invalid_argument(fmt::format("bad regex /{}/: {}", regex, buf));
  }
  std::shared_ptr<regex_t> re(compiled.release(), [](regex_t* r) {
    regfree(r);
    delete r;
  });
  return expect_line_matching("/" + regex + "/", [re](std::string_view line) {
    regmatch_t range{0, static_cast<regoff_t>(line.size())};
    return regexec(re.get(), line.data(), 1, &range, REG_STARTEND) == 0;
  });
}

Script& Script::expect_line_matching(std::string description, LinePredicate predicate) {
  Step s;
  s.kind = Step::Kind::expect_line;
  s.bytes = std::move(description);
  s.predicate = std::move(predicate);
  return add(std::move(s));
}

Script& Script::expect_tagged(std::string command, std::string capture) {
  Step s;
  s.kind = Step::Kind::expect_tagged;
  s.bytes = std::move(command);
  s.capture = std::move(capture);
  return add(std::move(s));
}

Script& Script::expect_tagged_line(std::string rest, std::string capture) {
  Step s;
  s.kind = Step::Kind::expect_tagged_line;
  s.bytes = std::move(rest);
  s.capture = std::move(capture);
  return add(std::move(s));
}

namespace {
Step simple(Step::Kind kind) {
  Step s;
  s.kind = kind;
  return s;
}
}  // namespace

Script& Script::expect_eof() { return add(simple(Step::Kind::expect_eof)); }
Script& Script::drop() { return add(simple(Step::Kind::drop)); }

Script& Script::drop_after_bytes(std::size_t n) {
  Step s = simple(Step::Kind::drop_after_bytes);
  s.count = n;
  return add(std::move(s));
}

Script& Script::shutdown_write() { return add(simple(Step::Kind::shutdown_write)); }
Script& Script::send_close_notify() { return add(simple(Step::Kind::send_close_notify)); }
Script& Script::close() { return add(simple(Step::Kind::close)); }

Script& Script::stall(Millis duration) {
  Step s = simple(Step::Kind::stall);
  s.duration = duration;
  return add(std::move(s));
}

Script& Script::start_tls() { return add(simple(Step::Kind::start_tls)); }

Script& Script::start_tls(TlsIdentity identity, TlsSettings settings) {
  Step s = simple(Step::Kind::start_tls);
  s.identity = std::move(identity);
  s.tls = settings;
  return add(std::move(s));
}

Script& Script::compress() { return add(simple(Step::Kind::compress)); }

Script& Script::timeout(Millis step_timeout) {
  timeout_ = step_timeout;
  return *this;
}

// ---- results

std::string Failure::to_string() const {
  std::string out = step == kNoStep ? step_text : fmt::format("step {} ({})", step, step_text);
  out += ": " + message;
  if (!received.empty()) out += "; received \"" + received + "\"";
  return out;
}

std::string ConnectionResult::received() const {
  std::string out;
  for (const auto& s : transcript) out += s.bytes;
  return out;
}

std::string ConnectionResult::received_in_clear() const {
  std::string out;
  for (const auto& s : transcript) {
    if (!s.tls) out += s.bytes;
  }
  return out;
}

std::string ConnectionResult::describe() const {
  std::string out;
  if (completed) {
    out = "completed";
  } else if (failure) {
    out = "FAILED " + failure->to_string();
  } else {
    out = "not completed";
  }
  out += fmt::format("\n  received: \"{}\"\n  sent: \"{}\"", escape_bytes(received(), 2000),
                     escape_bytes(sent, 2000));
  if (!unconsumed.empty()) out += "\n  unconsumed: \"" + escape_bytes(unconsumed) + "\"";
  return out;
}

// ---- FakeServer

FakeServer::FakeServer(Script script, Options options) : scripts_{std::move(script)} {
  start(std::move(options));
}

FakeServer::FakeServer(std::vector<Script> scripts, Options options)
    : scripts_(std::move(scripts)) {
  if (options.transport != Transport::tcp && scripts_.size() != 1) {
    throw std::invalid_argument("several scripts need Transport::tcp");
  }
  start(std::move(options));
}

FakeServer::FakeServer(Script script, FdPair server_fds, Options options)
    : scripts_{std::move(script)}, server_fds_(server_fds) {
  start(std::move(options));
}

void FakeServer::start(Options options) {
  options_ = std::move(options);
  identity_ = options_.identity;
  const auto needs_default_identity = [](const Script& script) {
    return std::any_of(script.steps().begin(), script.steps().end(), [](const Step& step) {
      return step.kind == Step::Kind::start_tls && !step.identity;
    });
  };
  // Generated here, before the thread starts, when a script needs it (~10 ms under ASan).
  if (std::any_of(scripts_.begin(), scripts_.end(), needs_default_identity)) identity();
  results_.resize(scripts_.size());
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw_errno("eventfd");

  if (server_fds_.read_fd < 0) {
    switch (options_.transport) {
      case Transport::tcp: {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (listen_fd_ < 0) throw_errno("socket");
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        socklen_t len = sizeof addr;
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::listen(listen_fd_, 16) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
          throw_errno("listen on 127.0.0.1");
        }
        port_ = ntohs(addr.sin_port);
        break;
      }
      case Transport::socketpair: {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
          throw_errno("socketpair");
        server_fds_ = {sv[0], sv[0]};
        client_fds_ = {sv[1], sv[1]};
        break;
      }
      case Transport::pipes: {
        int to_server[2];
        int to_client[2];
        if (::pipe2(to_server, O_CLOEXEC) != 0) throw_errno("pipe2");
        if (::pipe2(to_client, O_CLOEXEC) != 0) {
          ::close(to_server[0]);
          ::close(to_server[1]);
          throw_errno("pipe2");
        }
        server_fds_ = {to_server[0], to_client[1]};
        client_fds_ = {to_client[0], to_server[1]};
        break;
      }
    }
  }
  thread_ = std::thread([this] { run(); });
}

void FakeServer::run() {
  // Writing to a pipe whose reader is gone must give EPIPE, not kill the test binary.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  Waker waker{wake_fd_, &stop_, &wait_requested_, listen_fd_};
  if (listen_fd_ < 0) {
    const FdPair fds = std::exchange(server_fds_, FdPair{});
    Connection(fds, waker, options_, identity_, results_[0]).run(scripts_[0]);
    return;
  }
  for (std::size_t i = 0; i < scripts_.size(); ++i) {
    std::string error;
    int fd = -1;
    const TimePoint deadline = Clock::now() + options_.accept_timeout;
    for (;;) {
      const Io r = poll_until(waker, listen_fd_, POLLIN, deadline, false, &error);
      if (r == Io::timeout) {
        error = fmt::format("no client connected within {} ms", options_.accept_timeout.count());
      } else if (r == Io::stopped) {
        error = "server stopped";
      }
      if (r != Io::ok) break;
      fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) break;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        error = fmt::format("accept: {}", errno_text(errno));
        break;
      }
    }
    if (fd < 0) {
      results_[i].failure = Failure{kNoStep, "accept", error, ""};
    } else {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Connection({fd, fd}, waker, options_, identity_, results_[i]).run(scripts_[i]);
    }
    if (!results_[i].completed) {
      for (std::size_t j = i + 1; j < scripts_.size(); ++j) {
        results_[j].failure =
            Failure{kNoStep, "accept", fmt::format("not run: connection {} failed", i), ""};
      }
      break;
    }
  }
  close_fd(listen_fd_);  // later connection attempts are refused instead of left hanging
}

FakeServer::~FakeServer() {
  stop_ = true;
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto ignored = ::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  close_fd(listen_fd_);
  close_fd(wake_fd_);
  if (server_fds_.write_fd != server_fds_.read_fd) close_fd(server_fds_.write_fd);
  close_fd(server_fds_.read_fd);
  if (client_fds_.write_fd != client_fds_.read_fd) close_fd(client_fds_.write_fd);
  close_fd(client_fds_.read_fd);
}

const TlsIdentity& FakeServer::identity() const {
  if (!identity_) identity_ = TlsIdentity::generate("localhost");
  return *identity_;
}

FdPair FakeServer::take_client_fds() { return std::exchange(client_fds_, FdPair{}); }

const std::vector<ConnectionResult>& FakeServer::wait() {
  if (!joined_) {
    wait_requested_ = true;
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto ignored = ::write(wake_fd_, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    joined_ = true;
  }
  return results_;
}

const ConnectionResult& FakeServer::result(std::size_t connection) { return wait().at(connection); }

bool FakeServer::ok() {
  const auto& results = wait();
  return std::all_of(results.begin(), results.end(), [](const auto& r) { return r.ok(); });
}

std::string FakeServer::describe() {
  std::string out;
  const auto& results = wait();
  for (std::size_t i = 0; i < results.size(); ++i) {
    out += fmt::format("connection {}: {}\n", i, results[i].describe());
  }
  return out;
}

}  // namespace twinbox::fake_server
