#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <asio/redirect_error.hpp>
#include <asio/write.hpp>

#include "net/transports.h"

namespace twinbox::net {

Result<std::unique_ptr<TunnelTransport>> TunnelTransport::spawn(
    const asio::any_io_executor& executor, const std::string& command, bool null_stderr) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Error(Errc::io, fmt::format("socketpair: {}", std::strerror(errno)));
  }
  int devnull = -1;
  if (null_stderr) {
    devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return Error(Errc::io, fmt::format("/dev/null: {}", std::strerror(errno)));
    }
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    if (devnull >= 0) ::close(devnull);
    return Error(Errc::io, fmt::format("fork: {}", std::strerror(err)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::dup2(fds[1], STDIN_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    if (devnull >= 0) ::dup2(devnull, STDERR_FILENO);
    ::signal(SIGPIPE, SIG_DFL);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  if (devnull >= 0) ::close(devnull);
  asio::local::stream_protocol::socket socket(executor);
  asio::error_code ec;
  socket.assign(asio::local::stream_protocol(), fds[0], ec);
  if (ec) {
    ::close(fds[0]);
    return Error(Errc::io, fmt::format("tunnel socket: {}", ec.message()));
  }
  return std::unique_ptr<TunnelTransport>(new TunnelTransport(std::move(socket), pid, command));
}

TunnelTransport::TunnelTransport(asio::local::stream_protocol::socket socket, pid_t pid,
                                 std::string command)
    : socket_(std::move(socket)), pid_(pid), command_(std::move(command)) {}

TunnelTransport::~TunnelTransport() { close(); }

asio::awaitable<Result<std::size_t>> TunnelTransport::read_some(asio::mutable_buffer buffer) {
  asio::error_code ec;
  const std::size_t n =
      co_await socket_.async_read_some(buffer, asio::redirect_error(asio::use_awaitable, ec));
  if (ec == asio::error::eof) {
    co_return Error(Errc::eof,
                    fmt::format("tunnel command exited or closed its output: {}", command_));
  }
  if (ec) co_return Error(Errc::io, fmt::format("read from tunnel: {}", ec.message()));
  counters_.wire_in += n;
  counters_.plain_in += n;
  co_return n;
}

asio::awaitable<Status> TunnelTransport::write_all(std::string_view bytes) {
  asio::error_code ec;
  co_await asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error(Errc::io, fmt::format("write to tunnel: {}", ec.message()));
  counters_.wire_out += bytes.size();
  counters_.plain_out += bytes.size();
  co_return ok_status();
}

void TunnelTransport::close() {
  asio::error_code ignored;
  if (socket_.is_open()) {
    socket_.shutdown(asio::local::stream_protocol::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }
  reap();
}

void TunnelTransport::reap() {
  if (pid_ <= 0) return;
  // The server normally exits at end of input; give it a moment, then insist.
  using namespace std::chrono_literals;
  for (int i = 0; i < 100; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) != 0) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) != 0) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string TunnelTransport::describe() const {
  return fmt::format("tunnel pid {} ({})", pid_, command_);
}

}  // namespace twinbox::net
