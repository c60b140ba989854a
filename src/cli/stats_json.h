// --stats-json: the run's summary for machines. The schema is documented in docs/stats-json.md
// and versioned by its "schema" member; fields are only ever added within one version.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "sync/engine.h"

namespace twinbox::cli {

struct RunFacts {
  std::chrono::system_clock::time_point started;
  std::chrono::steady_clock::duration duration{};
  std::optional<int> exit_status;    // none while a --watch run goes on
  std::optional<std::string> error;  // what ended the run, if anything did
  std::string mode = "sync";         // sync, watch, repair, dry-run
};

inline constexpr const char* kStatsSchema = "twinbox-stats/1";

// The summary as one JSON document (UTF-8, with a final newline).
std::string stats_json(const sync::RunSummary& summary, const RunFacts& facts);

// Writes stats_json() to `destination`: "-" is standard output; a file is replaced atomically
// (written beside it, then renamed), so a reader never sees half a document.
Status write_stats_json(const std::string& destination, const sync::RunSummary& summary,
                        const RunFacts& facts);

}  // namespace twinbox::cli
