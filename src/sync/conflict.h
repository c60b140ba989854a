// The conflict rules, written as two truth tables that the planner looks up (and that
// docs/conflicts.md reproduces; a test checks they are identical).
//
// 1. Per flag: a three-way merge of each flag against the pair's recorded flags (the base, what
//    both sides had at the last sync). A side that changed the flag wins; when both changed it they
//    necessarily agree. So a removal on one side and an addition on the other both survive, where
//    InterIMAP's union of both sides' flags would undo the removal.
// 2. Per message pair: what each side did since the last sync (nothing, a flag change, a flag
//    change leaving \Deleted set, an expunge) decides the outcome. An expunge on one side while the
//    other side changed the message's flags is ambiguous intent: the message is copied back to the
//    side where it vanished instead of being expunged (mail is never lost on a guess).
//
// Both tables are symmetric in local/remote (static_asserts below), so the outcome never depends on
// which side the planner looks at first.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sync/model.h"

namespace twinbox::sync {

// ---- Per flag -------------------------------------------------------------------------------

struct FlagRule {
  bool base;    // set at the last sync
  bool local;   // set on local now
  bool remote;  // set on remote now
  bool merged;  // set on both after the sync
  std::string_view why;
};

// Indexed by base*4 + local*2 + remote.
inline constexpr std::array<FlagRule, 8> kFlagTable = {{
    {false, false, false, false, "nobody set it"},
    {false, false, true, true, "remote added it"},
    {false, true, false, true, "local added it"},
    {false, true, true, true, "both added it"},
    {true, false, false, false, "both removed it"},
    {true, false, true, false, "local removed it"},
    {true, true, false, false, "remote removed it"},
    {true, true, true, true, "nobody removed it"},
}};

constexpr const FlagRule& flag_rule(bool base, bool local, bool remote) {
  return kFlagTable[(base ? 4u : 0u) + (local ? 2u : 0u) + (remote ? 1u : 0u)];
}

// The merge of canonical flag sets: every flag of base ∪ local ∪ remote, kept when kFlagTable
// says so. Names compare ignoring case; a kept flag is spelled as the bytewise smallest of the
// spellings the three sets use (so the result is the same with local and remote swapped).
// Linear in the sizes of the three sets.
FlagSet merge_flags(const FlagSet& base, const PerSide<FlagSet>& current);

// ---- Per message pair -----------------------------------------------------------------------

enum class PairState : std::uint8_t {
  unchanged,       // not reported, or reported with the base flags (a no-op MODSEQ bump)
  flags_changed,   // reported with flags that differ from the base, \Deleted not among them
  marked_deleted,  // reported with flags that differ from the base, \Deleted among them
  vanished,        // reported expunged (VANISHED)
};
inline constexpr std::size_t kPairStateCount = 4;

enum class Outcome : std::uint8_t {
  nothing,           // no action
  merge_flags,       // store the merge on each side whose flags differ from it; record it
  forget_pair,       // both copies are gone: forget the pair
  expunge_survivor,  // expunge the partner of the vanished message, then forget the pair
  restore_survivor,  // copy the survivor back to the side where it vanished; the copy replaces
                     // the pair (CopyAction::replaces)
};

struct PairRule {
  PairState local;
  PairState remote;
  Outcome outcome;
  // Concurrent changes on both sides. The planner adds a line to Plan::notes for such a pair,
  // unless both sides already hold the same flags (they made the same change).
  bool conflict;
  std::string_view why;
};

// Indexed by local * kPairStateCount + remote.
inline constexpr std::array<PairRule, kPairStateCount* kPairStateCount> kPairTable = {{
    {PairState::unchanged, PairState::unchanged, Outcome::nothing, false,
     "nothing happened since the last sync"},
    {PairState::unchanged, PairState::flags_changed, Outcome::merge_flags, false,
     "remote's change goes to local"},
    {PairState::unchanged, PairState::marked_deleted, Outcome::merge_flags, false,
     "remote's change (\\Deleted too) goes to local"},
    {PairState::unchanged, PairState::vanished, Outcome::expunge_survivor, false,
     "expunged on remote, untouched on local: expunge it on local"},

    {PairState::flags_changed, PairState::unchanged, Outcome::merge_flags, false,
     "local's change goes to remote"},
    {PairState::flags_changed, PairState::flags_changed, Outcome::merge_flags, true,
     "both changed flags: per-flag merge, both sides' changes survive"},
    {PairState::flags_changed, PairState::marked_deleted, Outcome::merge_flags, true,
     "both changed flags: per-flag merge, both sides' changes survive"},
    {PairState::flags_changed, PairState::vanished, Outcome::restore_survivor, true,
     "expunged on remote while edited on local: ambiguous, never lose mail: copy it back to "
     "remote"},

    {PairState::marked_deleted, PairState::unchanged, Outcome::merge_flags, false,
     "local's change (\\Deleted too) goes to remote"},
    {PairState::marked_deleted, PairState::flags_changed, Outcome::merge_flags, true,
     "both changed flags: per-flag merge, both sides' changes survive"},
    {PairState::marked_deleted, PairState::marked_deleted, Outcome::merge_flags, true,
     "both changed flags: per-flag merge, both sides' changes survive"},
    {PairState::marked_deleted, PairState::vanished, Outcome::expunge_survivor, false,
     "expunged on remote, marked \\Deleted on local: both say delete, expunge it on local"},

    {PairState::vanished, PairState::unchanged, Outcome::expunge_survivor, false,
     "expunged on local, untouched on remote: expunge it on remote"},
    {PairState::vanished, PairState::flags_changed, Outcome::restore_survivor, true,
     "expunged on local while edited on remote: ambiguous, never lose mail: copy it back to local"},
    {PairState::vanished, PairState::marked_deleted, Outcome::expunge_survivor, false,
     "expunged on local, marked \\Deleted on remote: both say delete, expunge it on remote"},
    {PairState::vanished, PairState::vanished, Outcome::forget_pair, false,
     "expunged on both sides: forget the pair"},
}};

constexpr const PairRule& pair_rule(PairState local, PairState remote) {
  return kPairTable[static_cast<std::size_t>(local) * kPairStateCount +
                    static_cast<std::size_t>(remote)];
}

// What one side did to a pair's message. `current` is that side's canonical flags (the base when
// the side did not report the message); `base` the pair's canonical recorded flags.
PairState classify(bool vanished, const FlagSet& base, const FlagSet& current);

std::string_view state_name(PairState state);    // "unchanged", "flags changed", ...
std::string_view outcome_name(Outcome outcome);  // "nothing", "merge flags", ...

// Both tables as Markdown, exactly as docs/conflicts.md shows them.
std::string conflict_tables_markdown();

// ---- Compile-time checks of the tables --------------------------------------------------------

namespace detail {

constexpr bool flag_table_is_sound() {
  for (std::size_t i = 0; i < kFlagTable.size(); ++i) {
    const FlagRule& r = kFlagTable[i];
    if (&flag_rule(r.base, r.local, r.remote) != &kFlagTable[i]) return false;  // ordered
    if (flag_rule(r.base, r.remote, r.local).merged != r.merged) return false;  // symmetric
    if (r.merged != (r.local != r.base ? r.local : r.remote)) return false;     // a change wins
  }
  return true;
}

constexpr bool pair_table_is_sound() {
  for (std::size_t i = 0; i < kPairTable.size(); ++i) {
    const PairRule& r = kPairTable[i];
    if (&pair_rule(r.local, r.remote) != &kPairTable[i]) return false;  // ordered, complete
    const PairRule& mirrored = pair_rule(r.remote, r.local);
    if (mirrored.outcome != r.outcome || mirrored.conflict != r.conflict) return false;
    const bool any_vanished = r.local == PairState::vanished || r.remote == PairState::vanished;
    // Only an expunge reported by a server may remove a message.
    if (r.outcome == Outcome::expunge_survivor && !any_vanished) return false;
    // A message copied back instead of expunged is always reported.
    if (r.outcome == Outcome::restore_survivor && !r.conflict) return false;
  }
  return true;
}

}  // namespace detail

static_assert(detail::flag_table_is_sound(), "kFlagTable must be ordered, symmetric, change-wins");
static_assert(detail::pair_table_is_sound(), "kPairTable must be ordered, symmetric, and safe");

}  // namespace twinbox::sync
