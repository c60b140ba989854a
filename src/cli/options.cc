#include "cli/options.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/version.h"

namespace twinbox::cli {

ParseOutcome parse_options(int argc, char** argv) {
  CLI::App app(
      "twinbox: keep two IMAP servers in sync in both directions (QRESYNC, InterIMAP-compatible)"
      "\n\n"
      "  twinbox [OPTIONS] [MAILBOX...]\n"
      "  twinbox [OPTIONS] --repair [MAILBOX...]\n"
      "  twinbox [OPTIONS] --delete MAILBOX...\n"
      "  twinbox [OPTIONS] --rename SOURCE DEST\n"
      "  twinbox [OPTIONS] --probe\n",
      "twinbox");
  app.footer(
      "The configuration file uses InterIMAP's format and keys; see twinbox(1).\n"
      "Exit status: 0 ok, 1 partial failure, 2 usage, 3 configuration, 4 connection,\n"
      "5 authentication/TLS, 6 protocol, 7 state database, 70 internal error.");
  Options options;
  bool version = false;
  app.add_option("--config", options.config,
                 "Configuration file (default $XDG_CONFIG_HOME/twinbox/config; a relative path "
                 "is resolved there)");
  app.add_option("--target", options.targets,
                 "Restrict --delete/--rename to these targets (repeatable, comma-separated)")
      ->delimiter(',')
      ->check(CLI::IsMember({"local", "remote", "database"}));
  auto* watch = app.add_option("--watch", options.watch,
                               "Keep syncing; full cycle every SECONDS (default 60, 900 with "
                               "--notify)")
                    ->expected(0, 1)
                    ->default_str("60")
                    ->type_name("SECONDS");
  app.add_flag("--notify", options.notify, "Wait for changes with IMAP NOTIFY (RFC 5465)");
  app.add_option("-j,--jobs", options.jobs,
                 "Mailboxes synced at once, each on its own connection to each server (default "
                 "4; 1 uses a single connection per server)")
      ->check(CLI::Range(1, 16))
      ->type_name("N");
  app.add_flag("-q,--quiet", options.quiet, "Only print warnings and errors");
  app.add_flag("--debug", options.debug,
               "Debug output with IMAP traces (credentials always redacted); repeatable");
  auto* repair = app.add_flag("--repair", options.repair,
                              "Compare both servers with the database and repair discrepancies");
  auto* remove = app.add_flag("--delete", options.remove, "Delete MAILBOX... (see --target)");
  auto* rename = app.add_flag("--rename", options.rename,
                              "Rename SOURCE to DEST, with its inferiors (see --target)");
  app.add_flag("--dry-run", options.dry_run,
               "Plan the sync and print what would be done; change nothing");
  app.add_flag("--probe", options.probe,
               "Connect to both servers and report greeting, capabilities and mailboxes");
  app.add_option("--stats-json", options.stats_json,
                 "Write a JSON summary of the run to FILE (- for standard output) when it ends; "
                 "see twinbox(1)")
      ->type_name("FILE");
  auto* import_interimap =
      app.add_option("--import-interimap", options.import_interimap,
                     "Import InterIMAP's state database (default: where InterIMAP keeps it for "
                     "this config) into a new twinbox one, so that switching downloads nothing")
          ->expected(0, 1)
          ->type_name("FILE");
  app.add_flag("--version", version, "Print the version and exit");
  app.add_option("MAILBOX", options.mailboxes, "Mailboxes to sync (default: all listed)");
  repair->excludes(remove)->excludes(rename);
  remove->excludes(rename);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return {std::nullopt, rc == 0 ? kExitOk : kExitUsage};
  }
  if (version) {
    fmt::print("twinbox {}\n", kVersion);
    return {std::nullopt, kExitOk};
  }
  auto usage_error = [](const std::string& message) {
    fmt::print(stderr, "twinbox: {}\nRun 'twinbox --help' for usage.\n", message);
    return ParseOutcome{std::nullopt, kExitUsage};
  };
  if (import_interimap->count() > 0 && !options.import_interimap) options.import_interimap = "";
  if (options.import_interimap &&
      (options.repair || options.remove || options.rename || options.probe || options.watch ||
       options.dry_run || !options.mailboxes.empty() || !options.stats_json.empty())) {
    return usage_error("--import-interimap goes alone (with --config, -q, --debug)");
  }
  if (watch->count() > 0 && !options.watch) options.watch = 0;
  if (options.notify && !options.watch) options.watch = 0;
  if (options.watch && *options.watch < 0) return usage_error("--watch takes a positive number");
  if (options.watch && *options.watch == 0) options.watch = options.notify ? 900 : 60;
  const bool command = options.repair || options.remove || options.rename;
  if (command && options.watch) return usage_error("--watch/--notify cannot go with a command");
  if (!options.targets.empty() && !options.remove && !options.rename) {
    return usage_error("--target only applies to --delete and --rename");
  }
  if (options.remove && options.mailboxes.empty()) {
    return usage_error("--delete needs at least one MAILBOX");
  }
  if (options.rename && options.mailboxes.size() != 2) {
    return usage_error("--rename needs exactly SOURCE and DEST");
  }
  if (options.probe && (command || options.watch)) {
    return usage_error("--probe cannot go with a command or --watch");
  }
  if (!options.stats_json.empty() && (options.remove || options.rename || options.probe)) {
    return usage_error("--stats-json only applies to syncs (not --delete, --rename, --probe)");
  }
  return {std::move(options), kExitOk};
}

int exit_code_for(Errc code) {
  switch (code) {
    case Errc::config:
      return kExitConfig;
    case Errc::usage:
      return kExitUsage;
    case Errc::io:
    case Errc::eof:
    case Errc::timeout:
      return kExitConnect;
    case Errc::tls:
    case Errc::auth:
    case Errc::security:
      return kExitAuth;
    case Errc::protocol:
    case Errc::limit:
    case Errc::rejected:
      return kExitProtocol;
    case Errc::internal:
      return kExitInternal;
  }
  return kExitInternal;
}

}  // namespace twinbox::cli
