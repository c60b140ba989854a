// imap_spy: sits in a tunnel between twinbox and a real server and reports every command that
// uses an extension the server did not advertise.
//
//   imap_spy REPORT -- PROGRAM [ARGS...]
//
// Runs PROGRAM (the server's tunnel) with pipes, relays stdin to it and its stdout back, and
// reads both streams: the server's capabilities (greeting, CAPABILITY responses and codes), and
// the client's commands (literals skipped). Dovecot still executes an extension that
// imap_capability hides, so a test that hides one would pass even if twinbox used it; with the
// spy, such a use is a line in REPORT ("VIOLATION ..."). REPORT also gets "CAPABILITY ..." and
// one "COMMAND ..." line per command, for the test's own checks.
//
// The rules (spy_rules.h) map a command to the capabilities it needs.
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "spy/spy_rules.h"

namespace {

// Splits a byte stream into IMAP lines with their literals' announcements, skipping the literal
// bytes themselves: what is left is the protocol text.
class LineReader {
 public:
  // Feeds bytes; calls on_line(text) for every complete logical line (literal octets replaced
  // by "\x01", their "{n}" announcements kept).
  template <class OnLine>
  void feed(const char* data, std::size_t size, OnLine&& on_line) {
    for (std::size_t i = 0; i < size; ++i) {
      if (literal_left_ > 0) {
        --literal_left_;
        continue;
      }
      line_ += data[i];
      if (line_.size() >= 2 && line_.compare(line_.size() - 2, 2, "\r\n") == 0) {
        line_.resize(line_.size() - 2);
        const auto literal = twinbox::spy::trailing_literal(line_);
        logical_ += line_;
        line_.clear();
        if (literal) {
          literal_left_ = *literal;
          logical_ += "\x01";  // where a literal was: the text goes on after it
          continue;
        }
        on_line(logical_);
        logical_.clear();
      }
    }
  }

 private:
  std::string line_, logical_;
  unsigned long long literal_left_ = 0;
};

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || std::strcmp(argv[2], "--") != 0) {
    std::fprintf(stderr, "usage: imap_spy REPORT -- PROGRAM [ARGS...]\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  std::FILE* report = std::fopen(argv[1], "a");
  if (report == nullptr) {
    std::fprintf(stderr, "imap_spy: %s: %s\n", argv[1], std::strerror(errno));
    return 2;
  }
  int to_server[2], from_server[2];
  if (::pipe(to_server) != 0 || ::pipe(from_server) != 0) return 2;
  const pid_t child = ::fork();
  if (child < 0) return 2;
  if (child == 0) {
    ::dup2(to_server[0], 0);
    ::dup2(from_server[1], 1);
    ::close(to_server[0]);
    ::close(to_server[1]);
    ::close(from_server[0]);
    ::close(from_server[1]);
    ::execvp(argv[3], argv + 3);
    std::fprintf(stderr, "imap_spy: exec %s: %s\n", argv[3], std::strerror(errno));
    ::_exit(127);
  }
  ::close(to_server[0]);
  ::close(from_server[1]);

  twinbox::spy::Capabilities advertised;
  twinbox::spy::Judge judge;
  LineReader client, server;
  bool client_open = true, server_open = true;
  char buffer[65536];
  while (server_open) {
    pollfd fds[2] = {{client_open ? 0 : -1, POLLIN, 0}, {from_server[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    // The server first: a command is judged by the capabilities announced before it.
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::read(from_server[0], buffer, sizeof buffer);
      if (n <= 0) {
        server_open = false;
      } else {
        server.feed(buffer, static_cast<std::size_t>(n), [&](const std::string& line) {
          if (advertised.learn(line)) {
            std::fprintf(report, "CAPABILITY %s\n", advertised.text().c_str());
            std::fflush(report);
          }
        });
        if (!write_all(1, buffer, static_cast<std::size_t>(n))) break;
      }
    }
    if (client_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t n = ::read(0, buffer, sizeof buffer);
      if (n <= 0) {
        client_open = false;
        ::close(to_server[1]);
      } else {
        client.feed(buffer, static_cast<std::size_t>(n), [&](const std::string& line) {
          std::fprintf(report, "COMMAND %s\n", twinbox::spy::shown(line).c_str());
          for (const auto& violation : judge.check(line, advertised)) {
            std::fprintf(report, "VIOLATION %s: %s\n", violation.c_str(),
                         twinbox::spy::shown(line).c_str());
          }
          std::fflush(report);
        });
        if (!write_all(to_server[1], buffer, static_cast<std::size_t>(n))) {
          client_open = false;
        }
      }
    }
  }
  ::close(1);
  int status = 0;
  ::waitpid(child, &status, 0);
  std::fclose(report);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
