#include "cli/stats_json.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "cli/version.h"

namespace twinbox::cli {
namespace {

using nlohmann::json;

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string utc_timestamp(std::chrono::system_clock::time_point t) {
  const std::time_t when = std::chrono::system_clock::to_time_t(t);
  std::tm utc{};
  gmtime_r(&when, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

json tier_value(const std::optional<sync::Tier>& tier) {
  if (!tier) return nullptr;
  switch (*tier) {
    case sync::Tier::qresync:
      return "qresync";
    case sync::Tier::condstore:
      return "condstore";
    case sync::Tier::plain:
      return "plain";
  }
  return nullptr;
}

json mailbox_side(const sync::MailboxReport& r, store::Side side) {
  return {{"tier", tier_value(r.tier[side])},
          {"copied_to", r.copied_to[side]},
          {"bytes_copied_to", r.bytes_copied_to[side]},
          {"expunged", r.expunged_on[side]},
          {"flags_set", r.flags_set_on[side]}};
}

}  // namespace

std::string stats_json(const sync::RunSummary& summary, const RunFacts& facts) {
  const sync::MailboxReport totals = summary.total();
  json sides = json::object();
  for (store::Side side : store::kSides) {
    // The per-mailbox counts summed, without a tier (each mailbox has its own), plus the wire.
    json total = mailbox_side(totals, side);
    total.erase("tier");
    total["bytes_received"] = summary.wire_in[side];
    total["bytes_sent"] = summary.wire_out[side];
    total["round_trips"] = summary.round_trips[side];
    sides[std::string(store::side_name(side))] = std::move(total);
  }
  json mailboxes = json::array();
  for (const auto& [name, r] : summary.mailboxes) {
    json m = {{"name", sync::shown(name)},
              {"outcome", sync::outcome_name(r.outcome)},
              {"syncs", r.syncs},
              {"duration_seconds", std::chrono::duration<double>(r.duration).count()},
              {"conflicts", r.conflicts},
              {"error", r.error.empty() ? json(nullptr) : json(Log::instance().scrub(r.error))}};
    for (store::Side side : store::kSides) {
      m[std::string(store::side_name(side))] = mailbox_side(r, side);
    }
    mailboxes.push_back(std::move(m));
  }
  const json document = {
      {"schema", kStatsSchema},
      {"version", kVersion},
      {"mode", facts.mode},
      {"started", utc_timestamp(facts.started)},
      {"duration_seconds", seconds(facts.duration)},
      {"running", !facts.exit_status.has_value()},
      {"exit_status", facts.exit_status ? json(*facts.exit_status) : json(nullptr)},
      {"error", facts.error ? json(Log::instance().scrub(*facts.error)) : json(nullptr)},
      {"cycles", summary.cycles},
      {"mailboxes_seen", summary.mailboxes_seen},
      {"mailboxes_synced", summary.mailboxes_synced},
      {"mailboxes_failed", summary.mailboxes_failed},
      {"conflicts", totals.conflicts},
      {"sides", std::move(sides)},
      {"mailboxes", std::move(mailboxes)},
  };
  // Invalid UTF-8 in a name or an error (a server's bytes) is replaced, never a throw.
  return document.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Status write_stats_json(const std::string& destination, const sync::RunSummary& summary,
                        const RunFacts& facts) {
  const std::string text = stats_json(summary, facts);
  if (destination == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return ok_status();
  }
  const std::string temporary = destination + ".tmp";
  const auto failed = [&](const char* what) {
    return Error(Errc::config, fmt::format("--stats-json {}: cannot {}: {}", destination, what,
                                           std::strerror(errno)));
  };
  std::FILE* file = std::fopen(temporary.c_str(), "w");
  if (file == nullptr) return failed("create it");
  const bool written = std::fwrite(text.data(), 1, text.size(), file) == text.size();
  if (std::fclose(file) != 0 || !written) {
    std::remove(temporary.c_str());
    return failed("write it");
  }
  if (std::rename(temporary.c_str(), destination.c_str()) != 0) {
    std::remove(temporary.c_str());
    return failed("rename it into place");
  }
  return ok_status();
}

}  // namespace twinbox::cli
