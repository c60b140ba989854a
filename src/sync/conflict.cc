#include "sync/conflict.h"

#include <fmt/format.h>

namespace twinbox::sync {

FlagSet merge_flags(const FlagSet& base, const PerSide<FlagSet>& current) {
  // A merge walk over three sorted sets: each step takes the smallest name still ahead.
  const std::array<const FlagSet*, 3> sets = {&base, &current[index(Side::local)],
                                              &current[index(Side::remote)]};
  std::array<std::size_t, 3> at = {0, 0, 0};
  FlagSet merged;
  for (;;) {
    const std::string* next = nullptr;
    for (std::size_t k = 0; k < sets.size(); ++k) {
      if (at[k] == sets[k]->size()) continue;
      const std::string& name = (*sets[k])[at[k]];
      if (next == nullptr || compare_flags(name, *next) < 0) next = &name;
    }
    if (next == nullptr) break;
    const std::string key = *next;  // `next` points into a set whose cursor moves below
    std::array<bool, 3> held = {false, false, false};
    const std::string* spelling = nullptr;
    for (std::size_t k = 0; k < sets.size(); ++k) {
      if (at[k] == sets[k]->size()) continue;
      const std::string& name = (*sets[k])[at[k]];
      if (compare_flags(name, key) != 0) continue;
      held[k] = true;
      if (spelling == nullptr || name < *spelling) spelling = &name;
      ++at[k];
    }
    if (flag_rule(held[0], held[1], held[2]).merged) merged.push_back(*spelling);
  }
  return merged;
}

PairState classify(bool vanished, const FlagSet& base, const FlagSet& current) {
  if (vanished) return PairState::vanished;
  if (same_flags(base, current)) return PairState::unchanged;
  return has_flag(current, "\\Deleted") ? PairState::marked_deleted : PairState::flags_changed;
}

std::string_view state_name(PairState state) {
  switch (state) {
    case PairState::unchanged:
      return "unchanged";
    case PairState::flags_changed:
      return "flags changed";
    case PairState::marked_deleted:
      return "flags changed, \\Deleted set";
    case PairState::vanished:
      return "vanished";
  }
  return "?";
}

std::string_view outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::nothing:
      return "nothing";
    case Outcome::merge_flags:
      return "merge flags";
    case Outcome::forget_pair:
      return "forget the pair";
    case Outcome::expunge_survivor:
      return "expunge the survivor";
    case Outcome::restore_survivor:
      return "copy the survivor back";
  }
  return "?";
}

std::string conflict_tables_markdown() {
  auto set = [](bool b) { return b ? "set" : "-"; };
  std::string out;
  out += "| base | local | remote | merged | because |\n";
  out += "|------|-------|--------|--------|---------|\n";
  for (const FlagRule& r : kFlagTable) {
    out += fmt::format("| {} | {} | {} | {} | {} |\n", set(r.base), set(r.local), set(r.remote),
                       set(r.merged), r.why);
  }
  out += "\n";
  out += "| local | remote | outcome | conflict | because |\n";
  out += "|-------|--------|---------|----------|---------|\n";
  for (const PairRule& r : kPairTable) {
    out += fmt::format("| {} | {} | {} | {} | {} |\n", state_name(r.local), state_name(r.remote),
                       outcome_name(r.outcome), r.conflict ? "yes" : "no", r.why);
  }
  return out;
}

}  // namespace twinbox::sync
