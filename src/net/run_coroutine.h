// Test helper: runs one coroutine to completion on a private io_context.
#pragma once

#include <exception>
#include <optional>
#include <utility>

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

namespace twinbox::net {

// One io_context for the whole test binary: a Client's sockets belong to the context it was
// connected on, and a test drives the same Client through several run_coroutine() calls.
inline asio::io_context& test_io_context() {
  static asio::io_context io;
  return io;
}

inline void run_coroutine(asio::awaitable<void> coroutine) {
  asio::io_context& io = test_io_context();
  io.restart();
  std::exception_ptr failure;
  asio::co_spawn(io, std::move(coroutine), [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);
}

namespace detail {
template <class T>
asio::awaitable<void> store_into(asio::awaitable<T> coroutine, std::optional<T>& out) {
  out.emplace(co_await std::move(coroutine));
}
}  // namespace detail

// co_spawn's completion handler needs a default-constructible T; Result<T> is not, so the value
// is stored from inside the coroutine instead.
template <class T>
T run_coroutine(asio::awaitable<T> coroutine) {
  std::optional<T> result;
  run_coroutine(detail::store_into(std::move(coroutine), result));
  return std::move(*result);
}

}  // namespace twinbox::net
