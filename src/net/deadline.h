// Deadlines for asio coroutines: every network operation twinbox performs has one.
#pragma once

#include <chrono>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <variant>

#include <asio/awaitable.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "base/error.h"

namespace twinbox::net {

using Duration = std::chrono::steady_clock::duration;

// Runs `op`; if it has not finished after `timeout`, cancels it and returns Errc::timeout naming
// `what`. Kept as one simple co_await statement: g++ 12 miscompiles temporaries and lambdas inside
// a co_await full-expression (a capturing lambda and a co_await in the same full-expression can
// double-free).
template <class T>
asio::awaitable<Result<T>> with_deadline(asio::awaitable<Result<T>> op, Duration timeout,
                                         std::string what) {
  using namespace asio::experimental::awaitable_operators;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  // as_tuple: the timer, cancelled whenever the operation finishes first, reports that as a
  // value instead of throwing an exception (one per network read otherwise).
  auto wait = timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  std::variant<Result<T>, std::tuple<std::error_code>> outcome =
      co_await (std::move(op) || std::move(wait));
  // The cancelled operation may be reported as the winner with its "operation aborted" error;
  // past the deadline, any failure is the timeout.
  const bool expired = std::chrono::steady_clock::now() >= deadline;
  if (outcome.index() == 1 || (expired && !std::get<0>(outcome).ok())) {
    const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    co_return Error(Errc::timeout,
                    millis % 1000 == 0
                        ? what + " did not finish within " + std::to_string(millis / 1000) + " s"
                        : what + " did not finish within " + std::to_string(millis) + " ms");
  }
  co_return std::move(std::get<0>(outcome));
}

}  // namespace twinbox::net
