// twinbox: keep two IMAP servers in sync in both directions.
#include <signal.h>

#include <fmt/format.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "base/log.h"
#include "cli/endpoint.h"
#include "cli/options.h"
#include "cli/probe.h"
#include "config/config.h"
#include "store/state_db.h"
#include "sync/engine.h"

namespace twinbox::cli {
namespace {

int report(const Error& error) {
  log_error("{}", error.to_string());
  return exit_code_for(error.code);
}

asio::awaitable<int> run_probe(const config::Config& config, const Options& options) {
  int rc = kExitOk;
  for (const auto* side : {&config.local, &config.remote}) {
    auto endpoint = make_endpoint(*side, options.debug > 0);
    if (!endpoint) {
      rc = std::max(rc, report(endpoint.error()));
      continue;
    }
    ProbeReport result = co_await probe_endpoint(std::move(*endpoint), stdout);
    std::fflush(stdout);
    if (!result.connected) {
      rc = rc == kExitOk ? exit_code_for(result.error.code) : rc;
    } else if (!result.sync_capable && rc == kExitOk) {
      rc = kExitProtocol;
    }
  }
  co_return rc;
}

asio::awaitable<int> run_sync(const config::Config& config, const Options& options) {
  store::PerSide<net::Endpoint> endpoints;
  for (store::Side side : store::kSides) {
    auto endpoint =
        make_endpoint(side == store::Side::local ? config.local : config.remote, options.debug > 0);
    if (!endpoint) co_return report(endpoint.error());
    endpoints[side] = std::move(*endpoint);
  }
  auto db = store::StateDb::open(config.database);
  if (!db) {
    log_error("{}", db.error().to_string());
    co_return kExitState;
  }
  sync::EngineOptions engine_options;
  engine_options.mailboxes = options.mailboxes;
  engine_options.dry_run = options.dry_run;
  sync::Engine engine(config, engine_options, **db, std::move(endpoints));
  auto summary = co_await engine.run();
  if (!summary) co_return report(summary.error());
  const auto& s = *summary;
  log_info(
      "{} mailbox(es), {} synced{}; copied {} to local, {} to remote; expunged {} local, {} "
      "remote; flags set {} local, {} remote{}",
      s.mailboxes_seen, s.mailboxes_synced,
      s.mailboxes_failed > 0 ? fmt::format(", {} FAILED", s.mailboxes_failed) : "",
      s.copied_to[store::Side::local], s.copied_to[store::Side::remote],
      s.expunged_on[store::Side::local], s.expunged_on[store::Side::remote],
      s.flags_set_on[store::Side::local], s.flags_set_on[store::Side::remote],
      s.conflicts > 0 ? fmt::format("; {} conflict(s) resolved", s.conflicts) : "");
  co_return s.mailboxes_failed > 0 ? kExitPartial : kExitOk;
}

int run(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  ParseOutcome parsed = parse_options(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  const Options& options = *parsed.options;

  auto& log = Log::instance();
  log.set_level(options.debug > 0 ? LogLevel::debug
                                  : (options.quiet ? LogLevel::warning : LogLevel::info));
  log.set_prefix("twinbox: ");

  auto path = config::resolve_config_path(options.config);
  if (!path) return report(path.error());
  auto config = config::load_config(*path);
  if (!config) return report(config.error());
  if (config->logfile && !log.set_file(*config->logfile)) {
    return report(Error(Errc::config, fmt::format("cannot open logfile {}", *config->logfile)));
  }

  if (options.repair || options.remove || options.rename || options.watch) {
    log_error("--repair, --delete, --rename and --watch are not implemented in this build yet");
    return kExitUsage;
  }
  asio::io_context io;
  int rc = kExitInternal;
  auto job = options.probe ? run_probe(*config, options) : run_sync(*config, options);
  asio::co_spawn(io, std::move(job), [&rc](std::exception_ptr e, int value) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log_error("internal error: {}", ex.what());
      }
      rc = kExitInternal;
    } else {
      rc = value;
    }
  });
  io.run();
  return rc;
}

}  // namespace
}  // namespace twinbox::cli

int main(int argc, char** argv) { return twinbox::cli::run(argc, argv); }
