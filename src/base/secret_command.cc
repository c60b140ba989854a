#include "base/secret_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/log.h"

extern char** environ;

namespace twinbox {

namespace {

using Clock = std::chrono::steady_clock;

// Output is read to the end (so the command never dies of SIGPIPE) but only this much is kept.
constexpr std::size_t kMaxKept = 64 * 1024;
// What an error quotes of standard error: its last bytes.
constexpr std::size_t kStderrShown = 400;
constexpr auto kGrace = std::chrono::seconds(2);  // between SIGTERM and SIGKILL

struct Wipe {
  std::string& s;
  ~Wipe() {
    if (!s.empty()) ::explicit_bzero(s.data(), s.size());
  }
};

struct Fd {
  int fd = -1;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// The tail of standard error as one printable line, scrubbed of known secrets.
std::string stderr_tail(std::string_view err) {
  while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.remove_suffix(1);
  if (err.empty()) return {};
  const bool cut = err.size() > kStderrShown;
  if (cut) err = err.substr(err.size() - kStderrShown);
  std::string text = printable(err, kStderrShown);
  return Log::instance().scrub(cut ? "..." + text : text);
}

// Waits for `pid`; past `deadline` it is sent SIGTERM, and SIGKILL kGrace later.
// Returns the wait status and whether it had to be killed.
std::pair<int, bool> reap(pid_t pid, Clock::time_point deadline) {
  bool killed = false;
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid || (done < 0 && errno != EINTR)) return {status, killed};
    const auto now = Clock::now();
    if (now >= deadline + kGrace) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return {status, true};
    }
    if (now >= deadline && !killed) {
      ::kill(pid, SIGTERM);
      killed = true;
    }
    ::usleep(10000);
  }
}

}  // namespace

Result<std::string> run_secret_command(const SecretCommand& spec) {
  const auto fail = [&](std::string message) { return Error(spec.failure, std::move(message)); };
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return fail(fmt::format("{}: pipe: {}", spec.label, std::strerror(errno)));
  }
  Fd out_read{out_pipe[0]}, out_write{out_pipe[1]};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return fail(fmt::format("{}: pipe: {}", spec.label, std::strerror(errno)));
  }
  Fd err_read{err_pipe[0]}, err_write{err_pipe[1]};

  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec for the child's copies; stdin is inherited for prompts.
  ::posix_spawn_file_actions_adddup2(&actions, out_write.fd, STDOUT_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, err_write.fd, STDERR_FILENO);
  std::string shell = "/bin/sh", dash_c = "-c", cmd = spec.command;
  char* argv[] = {shell.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = -1;
  const int spawn_error = ::posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, environ);
  ::posix_spawn_file_actions_destroy(&actions);
  out_write.reset();
  err_write.reset();
  if (spawn_error != 0) {
    return fail(fmt::format("cannot run {}: {}", spec.label, std::strerror(spawn_error)));
  }

  const auto deadline = Clock::now() + spec.timeout;
  std::string output, errors;
  Wipe wipe{output};
  char buf[4096];
  bool timed_out = false;
  while (out_read.fd >= 0 || err_read.fd >= 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{out_read.fd, POLLIN, 0}, {err_read.fd, POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) break;
    for (int k = 0; k < 2 && ready > 0; ++k) {
      if (fds[k].fd < 0 || fds[k].revents == 0) continue;
      Fd& fd = k == 0 ? out_read : err_read;
      std::string& kept = k == 0 ? output : errors;
      const ssize_t n = ::read(fd.fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fd.reset();
        continue;
      }
      if (kept.size() < kMaxKept) kept.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::explicit_bzero(buf, sizeof buf);
  out_read.reset();
  err_read.reset();
  // The pipes are closed (or timed out): a command that lingers is killed at the deadline.
  const auto [status, killed] = reap(pid, timed_out ? Clock::now() : deadline);

  const std::string said = stderr_tail(errors);
  const std::string because = said.empty() ? "" : fmt::format("; it said: {}", said);
  if (timed_out || killed) {
    const double seconds = std::chrono::duration<double>(spec.timeout).count();
    return fail(fmt::format("{} did not finish within {:g} s and was stopped{}", spec.label,
                            seconds, because));
  }
  if (WIFSIGNALED(status)) {
    return fail(fmt::format("{} was killed by signal {}{}", spec.label, WTERMSIG(status), because));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(
        fmt::format("{} failed with exit status {}{}", spec.label, WEXITSTATUS(status), because));
  }
  // The first line, without its LF or CRLF.
  std::size_t end = output.find('\n');
  if (end == std::string::npos) end = output.size();
  if (end > 0 && output[end - 1] == '\r') --end;
  if (end == 0)
    return fail(fmt::format("{} printed nothing on its first line{}", spec.label, because));
  if (output.find('\0') < end) {
    return fail(fmt::format("{} printed a NUL byte on its first line", spec.label));
  }
  std::string secret = output.substr(0, end);
  Log::instance().add_secret(secret);
  if (!said.empty()) log_debug("{} said on standard error: {}", spec.label, stderr_tail(errors));
  return secret;
}

}  // namespace twinbox
