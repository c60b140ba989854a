// run_password_command: the password-command extension (declared in config/config.h).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "base/log.h"
#include "config/config.h"

extern char** environ;

namespace twinbox::config {

namespace {

// The output is read to the end (so the command never dies of SIGPIPE) but only this much is
// kept: a password is one short line.
constexpr std::size_t kMaxKept = 64 * 1024;

struct Wipe {
  std::string& s;
  ~Wipe() {
    if (!s.empty()) ::explicit_bzero(s.data(), s.size());
  }
};

}  // namespace

Result<std::string> run_password_command(const std::string& command) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return Error(Errc::io,
                 fmt::format("password-command '{}': pipe: {}", command, std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  // dup2 onto 1 clears close-on-exec for the child's stdout; stdin and stderr are inherited so
  // that gpg/pass can prompt and report.
  ::posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::string shell = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {shell.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = -1;
  const int spawn_error = ::posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (spawn_error != 0) {
    ::close(fds[0]);
    return Error(Errc::config, fmt::format("cannot run password-command '{}': {}", command,
                                           std::strerror(spawn_error)));
  }

  std::string output;
  Wipe wipe{output};
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < kMaxKept) output.append(buf, static_cast<std::size_t>(n));
  }
  ::explicit_bzero(buf, sizeof buf);
  ::close(fds[0]);

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return Error(Errc::config, fmt::format("password-command '{}': waitpid: {}", command,
                                             std::strerror(errno)));
    }
  }
  if (WIFSIGNALED(status)) {
    return Error(Errc::config, fmt::format("password-command '{}' was killed by signal {}", command,
                                           WTERMSIG(status)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(Errc::config, fmt::format("password-command '{}' failed with exit status {}",
                                           command, WEXITSTATUS(status)));
  }
  // The first line, without its LF or CRLF.
  std::size_t end = output.find('\n');
  if (end == std::string::npos) end = output.size();
  if (end > 0 && output[end - 1] == '\r') --end;
  if (end == 0) {
    return Error(Errc::config, fmt::format("password-command '{}' printed no password", command));
  }
  if (output.find('\0') < end) {
    return Error(Errc::config,
                 fmt::format("password-command '{}' printed a NUL byte in the password", command));
  }
  std::string password = output.substr(0, end);
  Log::instance().add_secret(password);
  return password;
}

}  // namespace twinbox::config
