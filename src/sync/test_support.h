// The real Engine against two MemoryServers, for the engine's tests and the simulator: no
// sockets, no clock, one thread; a run is deterministic for given servers, faults and options.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "config/config.h"
#include "store/state_db.h"
#include "sync/engine.h"
#include "sync/memory_store.h"

namespace twinbox::sync::testing {

struct MemoryWorld {
  MemoryServer local{1000}, remote{5000};
  PerSide<char> delimiters{{'/', '/'}};
  PerSide<Tier> tiers{{Tier::qresync, Tier::qresync}};
  Faults faults;
  std::optional<std::chrono::steady_clock::duration> round_trip;  // what the stores report
  config::Config config;
  std::unique_ptr<store::StateDb> db;

  MemoryWorld() {
    config.file = "memory";
    config.database = ":memory:";
    config.log_prefix = std::string(config::kDefaultLogPrefix);
    auto opened = store::StateDb::open_scratch("");
    if (!opened) throw std::runtime_error(opened.error().to_string());
    db = std::move(*opened);
    // A killed process commits nothing more (Faults::killed is set at the kill step).
    db->set_commit_gate([this] { return !faults.killed; });
  }

  MemoryServer& server(Side side) { return side == Side::local ? local : remote; }

  // One run of the engine, as one process; the faults' kill, if it fires, ends the "process":
  // the next run() starts a fresh one with the same servers and database.
  Result<RunSummary> run(EngineOptions options = {}) {
    faults.killed = false;
    faults.steps = 0;
    asio::io_context io;
    MemoryConnector connector({&local, &remote}, faults, delimiters, tiers);
    connector.set_round_trip(round_trip);
    Engine engine(config, std::move(options), *db, connector);
    std::optional<Result<RunSummary>> out;
    bool threw = false;
    auto body = [&]() -> asio::awaitable<void> { out = co_await engine.run(); };
    asio::co_spawn(io, body(), [&](std::exception_ptr e) { threw = e != nullptr; });
    io.run();
    if (threw) return Error(Errc::internal, "the engine threw");
    if (!out) return Error(Errc::internal, "the engine did not finish");
    return std::move(*out);
  }
};

}  // namespace twinbox::sync::testing
