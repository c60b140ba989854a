#include "dovecot/dovecot_lab.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#ifndef TWINBOX_SOURCE_DIR_DEFAULT
#error "TWINBOX_SOURCE_DIR_DEFAULT must name the source directory (set by CMake)"
#endif

namespace twinbox::dovecot {
namespace {

constexpr const char* kDovecot = "/usr/sbin/dovecot";

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

std::string describe(const CommandResult& r) {
  std::string text = r.errors.empty() ? r.output : r.errors;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return fmt::format("exit status {}{}{}", r.status, text.empty() ? "" : ":\n", text);
}

unsigned parse_number(const std::map<std::string, std::string>& facts, const char* key,
                      unsigned max) {
  auto it = facts.find(key);
  if (it == facts.end()) fail(fmt::format("lab start printed no {}=", key));
  unsigned value = 0;
  const std::string& s = it->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value > max) {
    fail(fmt::format("lab start printed a bad {}={}", key, s));
  }
  return value;
}

std::map<std::string, std::string> parse_facts(const std::string& text) {
  std::map<std::string, std::string> facts;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (auto eq = line.find('='); eq != std::string::npos) {
      facts[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  return facts;
}

const char* tls_name(Tls tls) {
  switch (tls) {
    case Tls::none:
      return "none";
    case Tls::starttls:
      return "starttls";
    case Tls::imaps:
      return "imaps";
  }
  return "none";
}

const char* format_name(MailFormat format) {
  switch (format) {
    case MailFormat::maildir:
      return "maildir";
    case MailFormat::mdbox:
      return "mdbox";
    case MailFormat::sdbox:
      return "sdbox";
  }
  return "maildir";
}

std::vector<std::string> start_args(const std::string& dir, const Options& o) {
  std::vector<std::string> args = {
      "bash",          DovecotLab::lab_script(),    "start",       dir,
      "--separator",   std::string(1, o.separator), "--tls",       tls_name(o.tls),
      "--mail-format", format_name(o.mail_format),  "--watch-pid", std::to_string(::getpid())};
  auto add = [&args](const char* flag, const std::string& value) {
    if (value.empty()) return;
    args.emplace_back(flag);
    args.push_back(value);
  };
  add("--capability", o.capability);
  add("--max-line", o.max_line > 0 ? std::to_string(o.max_line) : "");
  add("--port", o.port > 0 ? std::to_string(o.port) : "");
  add("--user", o.user);
  add("--password", o.password);
  add("--name", o.name);
  for (const auto& kv : o.settings) add("--set", kv);
  add("--oauth2", o.oauth2_url);
  if (!o.plaintext_auth) args.emplace_back("--no-plaintext-auth");
  return args;
}

// Writes to a pipe without dying of SIGPIPE when the reader has gone: the signal is blocked
// for this thread and a pending one consumed.
ssize_t write_nosigpipe(int fd, const char* data, std::size_t size) {
  sigset_t pipe_set, old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  ssize_t n = ::write(fd, data, size);
  int saved = errno;
  if (n < 0 && saved == EPIPE) {
    const timespec zero{};
    while (sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  errno = saved;
  return n;
}

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (::pipe2(fd, O_CLOEXEC) != 0) fail("pipe2: " + errno_text(errno));
  }
  ~Pipe() {
    close_end(0);
    close_end(1);
  }
  void close_end(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
};

}  // namespace

std::string DovecotLab::lab_script() {
  const char* env = std::getenv("TWINBOX_SOURCE_DIR");
  std::string root = env != nullptr && *env != '\0' ? env : TWINBOX_SOURCE_DIR_DEFAULT;
  std::string script = root + "/tests/dovecot/lab";
  if (::access(script.c_str(), R_OK) != 0) {
    fail(fmt::format("the lab script {} is missing ({}); is TWINBOX_SOURCE_DIR right?", script,
                     errno_text(errno)));
  }
  return script;
}

CommandResult DovecotLab::run(const std::vector<std::string>& argv, std::string_view input) {
  if (argv.empty()) fail("run: empty argv");
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  Pipe in, out, err;
  pid_t pid = ::fork();
  if (pid < 0) fail("fork: " + errno_text(errno));
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (::dup2(in.fd[0], 0) < 0 || ::dup2(out.fd[1], 1) < 0 || ::dup2(err.fd[1], 2) < 0) {
      _exit(127);
    }
    // Nothing else leaks into the lab, least of all into the daemon it starts (a daemon holding
    // a test's socket or ctest's pipe would keep them open after the test).
    if (::close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < 4096; ++fd) ::close(fd);
    }
    ::execvp(cargv[0], cargv.data());
    const char msg[] = "exec failed\n";
    [[maybe_unused]] auto ignored = ::write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  in.close_end(0);
  out.close_end(1);
  err.close_end(1);
  if (input.empty()) in.close_end(1);

  CommandResult result;
  std::size_t written = 0;
  char buf[16384];
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    pollfd fds[3];
    nfds_t n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out.fd[0] >= 0) {
      out_i = static_cast<int>(n);
      fds[n++] = {out.fd[0], POLLIN, 0};
    }
    if (err.fd[0] >= 0) {
      err_i = static_cast<int>(n);
      fds[n++] = {err.fd[0], POLLIN, 0};
    }
    if (in.fd[1] >= 0) {
      in_i = static_cast<int>(n);
      fds[n++] = {in.fd[1], POLLOUT, 0};
    }
    if (::poll(fds, n, -1) < 0) {
      if (errno == EINTR) continue;
      fail("poll: " + errno_text(errno));
    }
    auto drain = [&](int idx, Pipe& p, std::string& sink) {
      if (idx < 0 || fds[idx].revents == 0) return;
      ssize_t got = ::read(p.fd[0], buf, sizeof buf);
      if (got > 0) {
        sink.append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        p.close_end(0);
      }
    };
    drain(out_i, out, result.output);
    drain(err_i, err, result.errors);
    if (in_i >= 0 && fds[in_i].revents != 0) {
      ssize_t put = write_nosigpipe(in.fd[1], input.data() + written, input.size() - written);
      if (put > 0) written += static_cast<std::size_t>(put);
      if ((put < 0 && errno != EINTR) || written == input.size()) in.close_end(1);
    }
  }
  in.close_end(1);

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail("waitpid: " + errno_text(errno));
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

DovecotLab DovecotLab::start(const Options& options) {
  if (::access(kDovecot, X_OK) != 0) {
    fail(
        fmt::format("Dovecot is not installed ({} is missing): run scripts/install-deps "
                    "(apt-get install --no-install-recommends dovecot-imapd dovecot-core)",
                    kDovecot));
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = fmt::format("{}/twinbox-lab.XXXXXX", tmp != nullptr && *tmp ? tmp : "/tmp");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    fail(fmt::format("mkdtemp {}: {}", templ, errno_text(errno)));
  }
  DovecotLab lab;
  lab.dir_ = buf.data();
  lab.owns_dir_ = true;
  lab.launch(options);  // on failure, ~DovecotLab cleans up
  if (options.sample_mail > 0) lab.add_sample_mail(options.sample_mail, options.sample_seed);
  return lab;
}

void DovecotLab::launch(const Options& options) {
  if (options.separator != '/' && options.separator != '.') {
    fail(fmt::format("DovecotLab: separator must be '/' or '.', not '{}'", options.separator));
  }
  CommandResult r = run(start_args(dir_, options));
  if (!r.ok()) fail(fmt::format("lab start {} failed, {}", dir_, describe(r)));
  running_ = true;
  facts_ = parse_facts(r.output);
  port_ = static_cast<std::uint16_t>(parse_number(facts_, "port", 65535));
  imaps_port_ = static_cast<std::uint16_t>(parse_number(facts_, "imaps_port", 65535));
  start_ms_ = static_cast<int>(parse_number(facts_, "start_ms", 3600 * 1000));
}

void DovecotLab::stop() {
  if (!running_) return;
  CommandResult r = run({"bash", lab_script(), "stop", dir_});
  if (!r.ok()) fail(fmt::format("lab stop {} failed, {}", dir_, describe(r)));
  running_ = false;
}

void DovecotLab::restart(const Options& options) {
  stop();
  launch(options);
}

void DovecotLab::add_sample_mail(int count, unsigned seed) const {
  CommandResult r = run({"bash", lab_script(), "add-sample-mail", dir_, "--count",
                         std::to_string(count), "--seed", std::to_string(seed)});
  if (!r.ok()) fail(fmt::format("lab add-sample-mail {} failed, {}", dir_, describe(r)));
}

CommandResult DovecotLab::doveadm(const std::vector<std::string>& args,
                                  std::string_view input) const {
  std::vector<std::string> argv = {"bash", lab_script(), "doveadm", dir_};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, input);
}

std::vector<std::string> DovecotLab::tunnel_command() const {
  return {"/bin/sh", "-c", "exec " + tunnel_command_line()};
}

const std::string& DovecotLab::fact(const std::string& key) const {
  static const std::string empty;
  auto it = facts_.find(key);
  return it == facts_.end() ? empty : it->second;
}

void DovecotLab::release() noexcept {
  if (dir_.empty()) return;
  try {
    stop();
  } catch (const std::exception& e) {
    std::cerr << "DovecotLab: " << e.what() << '\n';
  }
  if (owns_dir_) {
    const char* keep = std::getenv("TWINBOX_KEEP_LAB");
    if (keep != nullptr && std::string_view(keep) == "1") {
      std::cerr << "DovecotLab: kept " << dir_ << " (TWINBOX_KEEP_LAB=1)\n";
    } else {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      if (ec) std::cerr << "DovecotLab: cannot remove " << dir_ << ": " << ec.message() << '\n';
    }
  }
  dir_.clear();
  running_ = false;
}

DovecotLab::DovecotLab(DovecotLab&& other) noexcept
    : dir_(std::exchange(other.dir_, {})),
      owns_dir_(std::exchange(other.owns_dir_, false)),
      running_(std::exchange(other.running_, false)),
      facts_(std::move(other.facts_)),
      port_(other.port_),
      imaps_port_(other.imaps_port_),
      start_ms_(other.start_ms_) {}

DovecotLab& DovecotLab::operator=(DovecotLab&& other) noexcept {
  if (this != &other) {
    release();
    dir_ = std::exchange(other.dir_, {});
    owns_dir_ = std::exchange(other.owns_dir_, false);
    running_ = std::exchange(other.running_, false);
    facts_ = std::move(other.facts_);
    port_ = other.port_;
    imaps_port_ = other.imaps_port_;
    start_ms_ = other.start_ms_;
  }
  return *this;
}

DovecotLab::~DovecotLab() { release(); }

}  // namespace twinbox::dovecot
