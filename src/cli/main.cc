// twinbox: keep two IMAP servers in sync in both directions.
#include <malloc.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include "base/log.h"
#include "cli/endpoint.h"
#include "cli/options.h"
#include "cli/probe.h"
#include "cli/progress_display.h"
#include "cli/stats_json.h"
#include "config/config.h"
#include "store/state_db.h"
#include "sync/engine.h"
#include "sync/imap_store.h"

namespace twinbox::cli {
namespace {

// The config's change-detection (validated by the config reader) as a cap on the tier.
sync::Tier tier_limit(const std::string& change_detection) {
  if (change_detection == "plain") return sync::Tier::plain;
  if (change_detection == "condstore") return sync::Tier::condstore;
  return sync::Tier::qresync;
}

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
    ProbeReport result =
        co_await probe_endpoint(std::move(*endpoint), stdout, tier_limit(side->change_detection));
    std::fflush(stdout);
    if (!result.connected) {
      rc = rc == kExitOk ? exit_code_for(result.error.code) : rc;
    } else if (!result.sync_capable && rc == kExitOk) {
      rc = kExitProtocol;
    }
  }
  co_return rc;
}

// The process's peak resident set (VmHWM) in KiB, 0 if unknown. Read from /proc because
// getrusage/wait4 can report the parent's size at fork time for an exec'd child.
long peak_resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

void print_summary(const sync::RunSummary& s) {
  const sync::MailboxReport t = s.total();
  log_info(
      "{} mailbox(es), {} synced{}; copied {} to local, {} to remote; expunged {} local, {} "
      "remote; flags set {} local, {} remote{}",
      s.mailboxes_seen, s.mailboxes_synced,
      s.mailboxes_failed > 0 ? fmt::format(", {} FAILED", s.mailboxes_failed) : "",
      t.copied_to[store::Side::local], t.copied_to[store::Side::remote],
      t.expunged_on[store::Side::local], t.expunged_on[store::Side::remote],
      t.flags_set_on[store::Side::local], t.flags_set_on[store::Side::remote],
      t.conflicts > 0 ? fmt::format("; {} conflict(s) resolved", t.conflicts) : "");
  for (store::Side side : store::kSides) {
    log_info("{}: received {} bytes, sent {} bytes, {} round trip(s)", store::side_name(side),
             s.wire_in[side], s.wire_out[side], s.round_trips[side]);
  }
  log_debug("peak resident memory: {} KiB", peak_resident_kib());
}

sync::Targets targets_of(const Options& options) {
  if (options.targets.empty()) return {};
  sync::Targets t{false, false, false};
  for (const auto& name : options.targets) {
    if (name == "local") t.local = true;
    if (name == "remote") t.remote = true;
    if (name == "database") t.database = true;
  }
  return t;
}

// SIGINT/SIGTERM ask the engine to stop after the step in progress; a second one ends the
// process at once (the state database is consistent at every commit).
class StopOnSignal {
 public:
  StopOnSignal(asio::io_context& io, sync::Engine& engine) : signals_(io, SIGINT, SIGTERM) {
    arm(engine);
  }
  ~StopOnSignal() {
    std::error_code ignored;
    signals_.cancel(ignored);
  }

 private:
  void arm(sync::Engine& engine) {
    signals_.async_wait([this, &engine](const std::error_code& error, int signal_number) {
      if (error) return;
      if (engine.stop_requested()) {
        log_warning("second signal {}: exiting now", signal_number);
        std::_Exit(kExitPartial);
      }
      log_info("signal {} received: finishing the current step", signal_number);
      engine.request_stop();
      arm(engine);
    });
  }
  asio::signal_set signals_;
};

asio::awaitable<int> run_sync(asio::io_context& io, const config::Config& config,
                              const Options& options) {
  store::PerSide<net::Endpoint> endpoints;
  for (store::Side side : store::kSides) {
    auto endpoint =
        make_endpoint(side == store::Side::local ? config.local : config.remote, options.debug > 0);
    if (!endpoint) co_return report(endpoint.error());
    endpoints[side] = std::move(*endpoint);
  }
  // An import reads InterIMAP's database first: a bad one must not leave a new twinbox one.
  std::optional<std::vector<sync::InterimapMailbox>> interimap_state;
  if (options.import_interimap) {
    const std::string& source =
        options.import_interimap->empty() ? config.interimap_database : *options.import_interimap;
    if (source == config.database) {
      log_error(
          "{} is both InterIMAP's database and twinbox's (`database` is an absolute path): "
          "set `database` to a new file for twinbox; nothing was imported",
          source);
      co_return kExitUsage;
    }
    auto state = sync::read_interimap_db(source);
    if (!state) {
      log_error("{}", state.error().message);
      co_return kExitState;
    }
    interimap_state = std::move(*state);
  }
  // --dry-run works on an in-memory copy: the state database is neither created nor changed.
  auto db = options.dry_run ? store::StateDb::open_scratch(config.database)
                            : store::StateDb::open(config.database);
  if (!db) {
    log_error("{}", db.error().to_string());
    co_return kExitState;
  }
  sync::EngineOptions engine_options;
  engine_options.mailboxes = options.mailboxes;
  engine_options.dry_run = options.dry_run;
  engine_options.repair = options.repair;
  engine_options.jobs = static_cast<std::size_t>(options.jobs);
  if (options.watch) engine_options.watch = std::chrono::seconds(*options.watch);
  engine_options.notify = options.notify;
  engine_options.renewable_credentials =
      config.local.token_command.has_value() || config.remote.token_command.has_value();
  // Progress on a terminal only: never in a pipe, a log file's terminal-less run, or with -q.
  std::optional<ProgressDisplay> progress;
  if (!options.quiet && !options.dry_run && ProgressDisplay::wanted_on(stderr)) {
    progress.emplace(stderr);
    engine_options.progress = &*progress;
  }
  RunFacts facts;
  facts.started = std::chrono::system_clock::now();
  const auto started = std::chrono::steady_clock::now();
  facts.mode = options.dry_run  ? "dry-run"
               : options.repair ? "repair"
               : options.watch  ? "watch"
                                : "sync";
  // In watch mode the file is rewritten after each cycle, for monitoring ("exit_status" null).
  if (options.watch && !options.stats_json.empty() && options.stats_json != "-") {
    engine_options.cycle_done = [&](const sync::RunSummary& so_far) {
      RunFacts now = facts;
      now.duration = std::chrono::steady_clock::now() - started;
      now.exit_status.reset();
      Status written = write_stats_json(options.stats_json, so_far, now);
      if (!written) log_warning("{}", written.error().message);
    };
  }
  // The servers' capabilities are noted for the next run (ImapConnector), except by a run that
  // must change nothing.
  store::StateDb* notes = options.dry_run || (*db)->read_only() ? nullptr : db->get();
  sync::ImapConnector connector(
      std::move(endpoints), {config.local.list_reference, config.remote.list_reference},
      {tier_limit(config.local.change_detection), tier_limit(config.remote.change_detection)},
      notes);
  // Only a sync lists first, which is what a presumed login saves a round trip for (and where a
  // presumption that fails is handled); --delete, --rename and the import ask other things first.
  connector.set_presume_logins(!options.import_interimap && !options.remove && !options.rename);
  sync::Engine engine(config, engine_options, **db, connector);
  StopOnSignal stop(io, engine);
  if (options.import_interimap) {
    Status imported = co_await engine.import_interimap(*interimap_state);
    if (!imported) co_return report(imported.error());
    co_return kExitOk;
  }
  if (options.remove || options.rename) {
    // Two statements, not a conditional expression: g++ 12 miscompiles co_await inside ?:.
    Status done = ok_status();
    if (options.remove) {
      done = co_await engine.delete_mailboxes(options.mailboxes, targets_of(options));
    } else {
      done = co_await engine.rename_mailbox(options.mailboxes[0], options.mailboxes[1],
                                            targets_of(options));
    }
    if (!done) co_return report(done.error());
    co_return kExitOk;
  }
  auto summary = co_await engine.run();
  progress.reset();  // the line is gone before the summary is printed
  int status = kExitOk;
  if (summary) {
    print_summary(*summary);
    status = summary->mailboxes_failed > 0 ? kExitPartial : kExitOk;
  } else {
    status = report(summary.error());
    facts.error = summary.error().to_string();  // scrubbed by stats_json()
  }
  if (!options.stats_json.empty()) {
    facts.duration = std::chrono::steady_clock::now() - started;
    facts.exit_status = status;
    Status written = write_stats_json(options.stats_json, engine.summary(), facts);
    if (!written) {
      log_error("{}", written.error().message);
      if (status == kExitOk) status = kExitPartial;
    }
  }
  co_return status;
}

int run(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  // Message bodies are large, short-lived buffers. glibc would give each one its own mmap and
  // return it at free(), so every body costs fresh page faults (a quarter of the CPU time of an
  // initial sync in a profile); keeping them on the heap reuses the pages instead.
  ::mallopt(M_MMAP_THRESHOLD, 64 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
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

  asio::io_context io;
  int rc = kExitInternal;
  auto job = options.probe ? run_probe(*config, options) : run_sync(io, *config, options);
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
