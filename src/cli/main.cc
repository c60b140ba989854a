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

  if (!options.probe) {
    log_error(
        "synchronisation is not implemented in this build yet (issue 3); "
        "use --probe to check both servers");
    return kExitUsage;
  }
  asio::io_context io;
  int rc = kExitInternal;
  asio::co_spawn(io, run_probe(*config, options), [&rc](std::exception_ptr e, int value) {
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
