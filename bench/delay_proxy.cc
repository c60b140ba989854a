// twinbox_delay_proxy: a TCP proxy that adds a one-way delay in each direction and counts the
// bytes, for bench/bench.py and bench/live.py. A link with latency, not a bandwidth limit: each
// chunk read from one side leaves for the other `delay` after it arrived, in order.
//
//   twinbox_delay_proxy --target PORT [--one-way-ms N]
//
// It listens on 127.0.0.1 (an ephemeral port), prints "port N" on stdout, then answers each line
// read on stdin with "bytes UP DOWN" (client->server and server->client so far). It ends when
// stdin closes. Written in C++ with asio so that its own CPU, which the benchmark reports, stays
// small beside the tools': the Python proxy it replaces cost more than the tools at 20 ms RTT.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <CLI/CLI.hpp>

namespace {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Counters {
  std::uint64_t up = 0, down = 0;
};

// One direction of one connection: what was read, waiting for its time to leave.
class DelayedPipe {
 public:
  DelayedPipe(tcp::socket& from, tcp::socket& to, Clock::duration delay, std::uint64_t& counted)
      : from_(from), to_(to), delay_(delay), counted_(counted), wake_(from.get_executor()) {}

  asio::awaitable<void> read_side() {
    std::error_code error;
    for (;;) {
      std::vector<char> chunk(256 * 1024);
      const std::size_t n = co_await from_.async_read_some(
          asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, error));
      if (error || n == 0) break;
      chunk.resize(n);
      counted_ += n;
      queue_.push_back({Clock::now() + delay_, std::move(chunk)});
      wake_.cancel();
    }
    reading_done_ = true;
    wake_.cancel();
  }

  asio::awaitable<void> write_side() {
    std::error_code error;
    for (;;) {
      if (queue_.empty()) {
        if (reading_done_) break;
        wake_.expires_at(Clock::time_point::max());
        co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, error));
        continue;
      }
      if (Clock::now() < queue_.front().due) {
        wake_.expires_at(queue_.front().due);
        co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, error));
        continue;
      }
      std::vector<char> chunk = std::move(queue_.front().bytes);
      queue_.pop_front();
      co_await asio::async_write(to_, asio::buffer(chunk),
                                 asio::redirect_error(asio::use_awaitable, error));
      if (error) break;
    }
    // The reading side closed: pass the end on (half-close), as a real link would.
    to_.shutdown(tcp::socket::shutdown_send, error);
  }

 private:
  struct Pending {
    Clock::time_point due;
    std::vector<char> bytes;
  };
  tcp::socket& from_;
  tcp::socket& to_;
  Clock::duration delay_;
  std::uint64_t& counted_;
  asio::steady_timer wake_;
  std::deque<Pending> queue_;
  bool reading_done_ = false;
};

struct Connection {
  Connection(tcp::socket c, tcp::socket s, Clock::duration delay, Counters& counters)
      : client(std::move(c)),
        server(std::move(s)),
        up(client, server, delay, counters.up),
        down(server, client, delay, counters.down) {}
  tcp::socket client, server;
  DelayedPipe up, down;
};

// Each of a connection's four coroutines holds it alive (parameters live in the coroutine frame).
asio::awaitable<void> reading(std::shared_ptr<Connection> /*keeps it alive*/, DelayedPipe* pipe) {
  co_await pipe->read_side();
}
asio::awaitable<void> writing(std::shared_ptr<Connection> /*keeps it alive*/, DelayedPipe* pipe) {
  co_await pipe->write_side();
}

asio::awaitable<void> serve(tcp::socket client, std::uint16_t target, Clock::duration delay,
                            Counters& counters) {
  auto executor = co_await asio::this_coro::executor;
  tcp::socket server(executor);
  std::error_code error;
  co_await server.async_connect({asio::ip::make_address("127.0.0.1"), target},
                                asio::redirect_error(asio::use_awaitable, error));
  if (error) co_return;
  client.set_option(tcp::no_delay(true), error);
  server.set_option(tcp::no_delay(true), error);
  auto link = std::make_shared<Connection>(std::move(client), std::move(server), delay, counters);
  asio::co_spawn(executor, reading(link, &link->up), asio::detached);
  asio::co_spawn(executor, writing(link, &link->up), asio::detached);
  asio::co_spawn(executor, reading(link, &link->down), asio::detached);
  asio::co_spawn(executor, writing(link, &link->down), asio::detached);
}

asio::awaitable<void> accept(tcp::acceptor& acceptor, std::uint16_t target, Clock::duration delay,
                             Counters& counters) {
  auto executor = co_await asio::this_coro::executor;
  for (;;) {
    std::error_code error;
    tcp::socket client =
        co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, error));
    if (error) co_return;
    asio::co_spawn(executor, serve(std::move(client), target, delay, counters), asio::detached);
  }
}

// stdin: each line asks for the counters; its end stops the proxy.
asio::awaitable<void> control(asio::io_context& io, const Counters& counters) {
  asio::posix::stream_descriptor in(io, ::dup(STDIN_FILENO));
  asio::streambuf buffer;
  for (;;) {
    std::error_code error;
    co_await asio::async_read_until(in, buffer, '\n',
                                    asio::redirect_error(asio::use_awaitable, error));
    if (error) break;
    buffer.consume(buffer.size());
    std::printf("bytes %llu %llu\n", static_cast<unsigned long long>(counters.up),
                static_cast<unsigned long long>(counters.down));
    std::fflush(stdout);
  }
  io.stop();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"TCP proxy with a one-way delay and byte counters (for twinbox's benchmarks)"};
  std::uint16_t target = 0;
  int one_way_ms = 0;
  app.add_option("--target", target, "port of the server on 127.0.0.1")->required();
  app.add_option("--one-way-ms", one_way_ms, "delay added in each direction")
      ->check(CLI::Range(0, 10000));
  CLI11_PARSE(app, argc, argv);

  asio::io_context io(1);
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::printf("port %u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
  std::fflush(stdout);
  Counters counters;
  const Clock::duration delay = std::chrono::milliseconds(one_way_ms);
  asio::co_spawn(io, accept(acceptor, target, delay, counters), asio::detached);
  asio::co_spawn(io, control(io, counters), asio::detached);
  io.run();
  return 0;
}
