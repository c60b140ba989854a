// Command-line options: InterIMAP's, with the same names and meanings, plus twinbox's own.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace twinbox::cli {

// Exit statuses, documented in twinbox(1). InterIMAP exits 1 on any error; scripts that test for
// non-zero keep working, and twinbox's callers can tell the cause apart.
enum ExitCode : int {
  kExitOk = 0,
  kExitPartial = 1,    // ran, but some mailboxes or messages could not be synced
  kExitUsage = 2,      // bad command line
  kExitConfig = 3,     // bad configuration file
  kExitConnect = 4,    // could not connect, or the server went away
  kExitAuth = 5,       // authentication, TLS verification or a security check failed
  kExitProtocol = 6,   // the server broke the protocol or lacks a required capability
  kExitState = 7,      // the state database is unusable or locked by another instance
  kExitInternal = 70,  // a bug in twinbox
};

struct Options {
  std::string config;                // --config; empty: the default location
  std::vector<std::string> targets;  // --target: local, remote, database
  std::optional<int> watch;          // --watch[=SECONDS]
  bool notify = false;               // --notify
  bool quiet = false;                // -q
  int debug = 0;                     // --debug, repeatable
  bool repair = false;               // --repair
  bool remove = false;               // --delete
  bool rename = false;               // --rename
  bool dry_run = false;              // --dry-run
  int jobs = 4;                      // --jobs: mailboxes synced at once
  bool probe = false;                // --probe
  std::string stats_json;            // --stats-json FILE|-; empty: none
  // --import-interimap[=FILE]: "" for InterIMAP's default location of this config's database.
  std::optional<std::string> import_interimap;
  std::vector<std::string> mailboxes;  // positional
};

struct ParseOutcome {
  std::optional<Options> options;  // nullopt: exit with `exit_code` (help/version printed)
  int exit_code = kExitOk;
};

// Parses argv; prints --help/--version/usage errors itself.
ParseOutcome parse_options(int argc, char** argv);

int exit_code_for(Errc code);

}  // namespace twinbox::cli
