// twinbox_floor: the servers' floor for an initial sync. It does the IMAP work of a first sync
// from remote to local and nothing else: per mailbox, SELECT and one UID FETCH of sizes, flags and
// dates on the remote, then batches of UID FETCH BODY.PEEK[] overlapped with MULTIAPPEND on the
// local, on --jobs connection pairs like twinbox. No state database, no hashing, no planning, no
// crash safety: what is left is the time the two servers (and the network) need for the same
// commands, the limit no client can beat. bench/bench.py runs it beside the two tools.
//
//   twinbox_floor --config FILE [--jobs N]
#include <fmt/format.h>
#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <CLI/CLI.hpp>

#include "base/log.h"
#include "cli/endpoint.h"
#include "config/config.h"
#include "sync/imap_store.h"

namespace twinbox::bench {
namespace {

using sync::ImapStore;
using sync::Side;

constexpr std::size_t kBatchBytes = 8u << 20;
constexpr std::size_t kBatchCount = 200;

struct Lane {
  std::unique_ptr<ImapStore> from, to;
};

asio::awaitable<Result<std::unique_ptr<ImapStore>>> open(const config::Config& config, Side side) {
  auto endpoint = cli::make_endpoint(side == Side::local ? config.local : config.remote, false);
  if (!endpoint) co_return endpoint.error();
  auto client = co_await net::Client::connect(std::move(*endpoint));
  if (!client) co_return client.error();
  auto replica = std::make_unique<ImapStore>(side, std::move(*client), "");
  Status prepared = replica->prepare();
  if (!prepared) co_return prepared.error();
  Status ready = co_await replica->prepare_for_work();  // the floor always has work: COMPRESS
  if (!ready) co_return ready.error();
  co_return replica;
}

asio::awaitable<Status> copy_mailbox(Lane& lane, const std::string& name, std::size_t& copied) {
  const store::SideState fresh;
  auto seen = co_await lane.from->observe(name, fresh, true);
  if (!seen) co_return seen.error();
  std::vector<std::vector<sync::Uid>> batches;
  std::map<sync::Uid, const sync::NewMessage*> by_uid;
  const auto& added = seen->changes.added;
  for (std::size_t start = 0; start < added.size();) {
    std::size_t end = start, bytes = 0;
    while (end < added.size() && end - start < kBatchCount &&
           (end == start || bytes + added[end].size <= kBatchBytes)) {
      bytes += added[end].size;
      by_uid[added[end].uid] = &added[end];
      ++end;
    }
    batches.emplace_back();
    for (std::size_t i = start; i < end; ++i) batches.back().push_back(added[i].uid);
    start = end;
  }
  if (batches.empty()) co_return ok_status();
  auto bodies = co_await lane.from->fetch_bodies(batches[0]);
  for (std::size_t k = 0; k < batches.size(); ++k) {
    if (!bodies) co_return bodies.error();
    std::vector<sync::OutgoingMessage> messages;
    for (auto& fetched : *bodies) {
      if (fetched.body.empty()) continue;
      sync::OutgoingMessage m;
      m.flags = by_uid[fetched.uid]->flags;
      m.internal_date = by_uid[fetched.uid]->internal_date;
      m.content = std::move(fetched.body);
      messages.push_back(std::move(m));
    }
    const std::size_t count = messages.size();
    Result<sync::Appended> appended = sync::Appended{};
    if (k + 1 < batches.size()) {
      using namespace asio::experimental::awaitable_operators;
      auto appending = lane.to->append(name, std::move(messages));
      auto fetching = lane.from->fetch_bodies(batches[k + 1]);
      auto results = co_await (std::move(appending) && std::move(fetching));
      appended = std::move(std::get<0>(results));
      bodies = std::move(std::get<1>(results));
    } else if (count > 0) {
      appended = co_await lane.to->append(name, std::move(messages));
    }
    if (!appended) co_return appended.error();
    copied += count;
  }
  co_return ok_status();
}

asio::awaitable<void> worker(Lane& lane, const std::vector<std::string>& names, std::size_t& next,
                             std::size_t& copied, int& status) {
  while (next < names.size() && status == 0) {
    const std::string name = names[next++];
    Status ok = co_await copy_mailbox(lane, name, copied);
    if (!ok) {
      log_error("{}: {}", name, ok.error().to_string());
      status = 1;
    }
  }
}

asio::awaitable<int> run(const config::Config& config, std::size_t jobs) {
  std::vector<Lane> lanes;
  for (std::size_t k = 0; k < jobs; ++k) {
    Lane lane;
    auto from = co_await open(config, Side::remote);
    auto to = co_await open(config, Side::local);
    if (!from || !to) {
      log_error("connect: {}", (!from ? from.error() : to.error()).to_string());
      co_return 4;
    }
    lane.from = std::move(*from);
    lane.to = std::move(*to);
    lanes.push_back(std::move(lane));
  }
  const std::vector<std::string> all = {"*"};
  auto listed = co_await lanes[0].from->list(all, {});
  if (!listed) {
    log_error("LIST: {}", listed.error().to_string());
    co_return 6;
  }
  std::vector<std::string> names;
  for (const auto& m : *listed) {
    if (!m.selectable) continue;
    names.push_back(m.name);
    Status created = co_await lanes[0].to->create(m.name);
    if (!created) {
      log_error("CREATE: {}", created.error().to_string());
      co_return 6;
    }
  }
  std::size_t next = 0, copied = 0, running = lanes.size();
  int status = 0;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer done(executor, std::chrono::steady_clock::time_point::max());
  for (auto& lane : lanes) {
    asio::co_spawn(executor, worker(lane, names, next, copied, status), [&](std::exception_ptr) {
      if (--running == 0) done.cancel();
    });
  }
  std::error_code ignored;
  while (running > 0) co_await done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  for (auto& lane : lanes) {
    co_await lane.from->client().logout();
    co_await lane.to->client().logout();
  }
  log_info("{} mailbox(es), {} message(s) copied", names.size(), copied);
  co_return status;
}

}  // namespace
}  // namespace twinbox::bench

int main(int argc, char** argv) {
  CLI::App app("twinbox_floor: the servers' floor for an initial sync (bench/)");
  std::string config_path;
  std::size_t jobs = 4;
  app.add_option("--config", config_path, "twinbox/InterIMAP configuration file")->required();
  app.add_option("-j,--jobs", jobs, "connection pairs")->check(CLI::Range(1, 16));
  CLI11_PARSE(app, argc, argv);
  twinbox::Log::instance().set_prefix("twinbox_floor: ");
  auto config = twinbox::config::load_config(config_path);
  if (!config) {
    twinbox::log_error("{}", config.error().to_string());
    return 3;
  }
  asio::io_context io;
  int rc = 70;
  asio::co_spawn(io, twinbox::bench::run(*config, jobs),
                 [&rc](std::exception_ptr e, int value) { rc = e ? 70 : value; });
  io.run();
  return rc;
}
