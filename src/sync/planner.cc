#include "sync/planner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "sync/conflict.h"

namespace twinbox::sync {
namespace {

Uid uid_on(const Pair& pair, Side side) {
  return side == Side::local ? pair.local_uid : pair.remote_uid;
}

std::string pair_name(const Pair& pair) {
  return fmt::format("local UID {} <-> remote UID {}", pair.local_uid, pair.remote_uid);
}

std::string flag_list(const FlagSet& flags) { return fmt::format("({})", fmt::join(flags, " ")); }

Error invalid(std::string message) { return Error(Errc::internal, std::move(message)); }

// UIDs of one side with their position in the observation's vector, sorted by UID (ties keep the
// input order). Sorted vectors rather than hash maps: the plan must not depend on hashing, and
// this keeps planning O(n log n) in the number of pairs.
using UidIndex = std::vector<std::pair<Uid, std::size_t>>;

void sort_index(UidIndex& by_uid) { std::sort(by_uid.begin(), by_uid.end()); }

std::optional<std::size_t> find(const UidIndex& by_uid, Uid uid) {
  auto it = std::lower_bound(by_uid.begin(), by_uid.end(), std::pair<Uid, std::size_t>(uid, 0));
  if (it == by_uid.end() || it->first != uid) return std::nullopt;
  return it->second;
}

// What the two sides reported about one recorded pair.
struct Touched {
  PerSide<bool> vanished{};
  PerSide<const FlagSet*> reported{};  // current flags, when that side reported a change
  PerSide<std::optional<ModSeq>> modseq{};
};

struct Note {
  Side side;
  Uid uid;
  std::string text;
};

struct Indexes {
  PerSide<UidIndex> pairs;
  PerSide<UidIndex> added;
};

Result<Indexes> validate(const MailboxObservation& observation) {
  const auto& pairs = observation.pairs;
  for (const Pair& pair : pairs) {
    if (pair.local_uid == 0 || pair.remote_uid == 0) {
      return invalid(fmt::format("pair {}: UID 0 is not a valid UID", pair_name(pair)));
    }
  }
  Indexes indexes;
  for (Side side : kSides) {
    UidIndex& by_uid = indexes.pairs[index(side)];
    by_uid.reserve(pairs.size());
    for (std::size_t i = 0; i < pairs.size(); ++i) by_uid.emplace_back(uid_on(pairs[i], side), i);
    sort_index(by_uid);
    for (std::size_t i = 1; i < by_uid.size(); ++i) {
      if (by_uid[i].first != by_uid[i - 1].first) continue;
      return invalid(
          fmt::format("pairs {} and {} share {} UID {}", pair_name(pairs[by_uid[i - 1].second]),
                      pair_name(pairs[by_uid[i].second]), side_name(side), by_uid[i].first));
    }
  }
  for (Side side : kSides) {
    const SideChanges& changes = observation.changes[index(side)];
    UidIndex& by_uid = indexes.added[index(side)];
    by_uid.reserve(changes.added.size());
    for (std::size_t i = 0; i < changes.added.size(); ++i) {
      const Uid uid = changes.added[i].uid;
      if (uid == 0) {
        return invalid(
            fmt::format("new {} message with UID 0: UID 0 is not a valid UID", side_name(side)));
      }
      if (auto paired = find(indexes.pairs[index(side)], uid)) {
        return invalid(fmt::format("new {} UID {} is already paired: {}", side_name(side), uid,
                                   pair_name(pairs[*paired])));
      }
      by_uid.emplace_back(uid, i);
    }
    sort_index(by_uid);
    for (std::size_t i = 1; i < by_uid.size(); ++i) {
      if (by_uid[i].first == by_uid[i - 1].first) {
        return invalid(
            fmt::format("new {} UID {} is listed twice", side_name(side), by_uid[i].first));
      }
    }
    if (std::find(changes.vanished.begin(), changes.vanished.end(), Uid{0}) !=
        changes.vanished.end()) {
      return invalid(fmt::format("{} reported UID 0 as vanished", side_name(side)));
    }
    if (!changes.flags.empty() && changes.flags.begin()->first == 0) {
      return invalid(fmt::format("{} reported a flag change for UID 0", side_name(side)));
    }
  }
  return indexes;
}

StoreAction store_action(Side side, Uid uid, const FlagSet& current, const FlagSet& merged,
                         std::optional<ModSeq> unchanged_since) {
  StoreAction store{
      .on = side, .uid = uid, .add = {}, .remove = {}, .unchanged_since = unchanged_since};
  for (const std::string& f : merged) {
    if (!has_flag(current, f)) store.add.push_back(f);
  }
  for (const std::string& f : current) {
    if (!has_flag(merged, f)) store.remove.push_back(f);
  }
  return store;
}

// Applies kPairTable to one recorded pair.
void plan_pair(const Pair& pair, const Touched& touched, Plan& plan, std::vector<Note>& notes) {
  const FlagSet base = canonical(pair.flags);
  PerSide<FlagSet> current;
  PerSide<PairState> state{};
  for (Side side : kSides) {
    const std::size_t s = index(side);
    current[s] = touched.reported[s] != nullptr ? canonical(*touched.reported[s]) : base;
    state[s] = classify(touched.vanished[s], base, current[s]);
  }
  const PairRule& rule = pair_rule(state[index(Side::local)], state[index(Side::remote)]);
  switch (rule.outcome) {
    case Outcome::nothing:
      return;
    case Outcome::merge_flags: {
      FlagSet merged = merge_flags(base, current);
      for (Side side : kSides) {
        const std::size_t s = index(side);
        if (same_flags(current[s], merged)) continue;
        plan.stores.push_back(
            store_action(side, uid_on(pair, side), current[s], merged, touched.modseq[s]));
      }
      const FlagSet& local = current[index(Side::local)];
      const FlagSet& remote = current[index(Side::remote)];
      if (rule.conflict && !same_flags(local, remote)) {
        notes.push_back({Side::local, pair.local_uid,
                         fmt::format("conflict: {} changed flags on both sides since {}: local "
                                     "{}, remote {}; merged to {}",
                                     pair_name(pair), flag_list(base), flag_list(local),
                                     flag_list(remote), flag_list(merged))});
      }
      plan.records.push_back(
          {Pair{.local_uid = pair.local_uid, .remote_uid = pair.remote_uid, .flags = merged}});
      return;
    }
    case Outcome::forget_pair:
      plan.forgets.push_back({pair});
      return;
    case Outcome::expunge_survivor:
    case Outcome::restore_survivor:
      break;
  }
  for (Side gone : kSides) {
    if (state[index(gone)] != PairState::vanished) continue;
    const Side survivor = other(gone);
    const Uid uid = uid_on(pair, survivor);
    if (rule.outcome == Outcome::expunge_survivor) {
      plan.expunges.push_back({.on = survivor, .uid = uid, .pair = pair});
      plan.forgets.push_back({pair});
      return;
    }
    // An expunge on one side and a flag edit on the other: we cannot tell whether the user wanted
    // the message gone or kept, and a wrong expunge loses mail for good while a wrong copy leaves
    // a message the user can delete again. So the survivor wins.
    plan.copies.push_back({.from = survivor,
                           .uid = uid,
                           .flags = current[index(survivor)],
                           .internal_date = {},  // unknown here: the engine's FETCH supplies it
                           .size = 0,
                           .replaces = pair});
    notes.push_back(
        {gone, uid_on(pair, gone),
         fmt::format("conflict: {} UID {} vanished while {} UID {} changed flags {} "
                     "-> {}: copying it back to {} instead of expunging it",
                     side_name(gone), uid_on(pair, gone), side_name(survivor), uid, flag_list(base),
                     flag_list(current[index(survivor)]), side_name(gone))});
    return;
  }
}

}  // namespace

Result<Plan> plan_mailbox(const MailboxObservation& observation) {
  auto indexes = validate(observation);
  if (!indexes) return std::move(indexes).error();
  const PerSide<UidIndex>& pair_index = indexes->pairs;
  const PerSide<UidIndex>& added_index = indexes->added;

  Plan plan;
  std::vector<Note> notes;
  std::map<std::size_t, Touched> touched;  // by position in observation.pairs
  PerSide<std::vector<bool>> dropped;      // by position in SideChanges::added

  for (Side side : kSides) {
    const std::size_t s = index(side);
    const SideChanges& changes = observation.changes[s];
    dropped[s].assign(changes.added.size(), false);

    std::vector<Uid> gone = changes.vanished;
    std::sort(gone.begin(), gone.end());
    gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
    for (Uid uid : gone) {
      if (auto p = find(pair_index[s], uid)) {
        touched[*p].vanished[s] = true;
      } else if (auto n = find(added_index[s], uid)) {
        dropped[s][*n] = true;  // arrived and expunged between two syncs
      }
      // else: unknown to us (RFC 7162 §3.2.10): nothing to propagate.
    }

    for (const auto& [uid, flags] : changes.flags) {
      if (std::binary_search(gone.begin(), gone.end(), uid)) continue;  // the expunge wins
      if (auto p = find(pair_index[s], uid)) {
        Touched& t = touched[*p];
        t.reported[s] = &flags;
        if (auto m = changes.modseq.find(uid); m != changes.modseq.end()) t.modseq[s] = m->second;
      } else if (!find(added_index[s], uid)) {
        notes.push_back({side, uid,
                         fmt::format("ignored a flag change of {} UID {}: not paired yet",
                                     side_name(side), uid)});
      }
    }
  }

  for (const auto& [position, t] : touched) plan_pair(observation.pairs[position], t, plan, notes);

  for (Side side : kSides) {
    const std::size_t s = index(side);
    const auto& added = observation.changes[s].added;
    for (std::size_t i = 0; i < added.size(); ++i) {
      if (dropped[s][i]) continue;
      plan.copies.push_back({.from = side,
                             .uid = added[i].uid,
                             .flags = canonical(added[i].flags),
                             .internal_date = added[i].internal_date,
                             .size = added[i].size,
                             .replaces = std::nullopt});
    }
  }

  auto by_side_uid = [](const auto& a, const auto& b) {
    return std::pair(index(a.first), a.second) < std::pair(index(b.first), b.second);
  };
  auto sort_by = [&](auto& list, auto key) {
    std::sort(list.begin(), list.end(),
              [&](const auto& a, const auto& b) { return by_side_uid(key(a), key(b)); });
  };
  sort_by(plan.expunges, [](const ExpungeAction& e) { return std::pair(e.on, e.uid); });
  sort_by(plan.stores, [](const StoreAction& st) { return std::pair(st.on, st.uid); });
  sort_by(plan.copies, [](const CopyAction& c) { return std::pair(c.from, c.uid); });
  sort_by(plan.records,
          [](const RecordFlags& r) { return std::pair(Side::local, r.pair.local_uid); });
  sort_by(plan.forgets,
          [](const ForgetPair& f) { return std::pair(Side::local, f.pair.local_uid); });
  std::stable_sort(notes.begin(), notes.end(), [&](const Note& a, const Note& b) {
    return by_side_uid(std::pair(a.side, a.uid), std::pair(b.side, b.uid));
  });
  plan.notes.reserve(notes.size());
  for (Note& note : notes) plan.notes.push_back(std::move(note.text));
  return plan;
}

std::string describe(const Plan& plan) {
  std::string out;
  for (const ExpungeAction& e : plan.expunges) {
    out += fmt::format("expunge {} UID {} (vanished on {})\n", side_name(e.on), e.uid,
                       side_name(other(e.on)));
  }
  for (const StoreAction& s : plan.stores) {
    out += fmt::format("store {} UID {}", side_name(s.on), s.uid);
    if (!s.add.empty()) out += " +" + flag_list(s.add);
    if (!s.remove.empty()) out += " -" + flag_list(s.remove);
    if (s.unchanged_since) {
      out += fmt::format(" unchanged since {}\n", *s.unchanged_since);
    } else {
      out += " unchanged since the last sync\n";
    }
  }
  for (const CopyAction& c : plan.copies) {
    out += fmt::format("copy {} UID {} -> {} {}", side_name(c.from), c.uid,
                       side_name(other(c.from)), flag_list(c.flags));
    if (c.replaces) {
      out += fmt::format(" replacing {} UID {} (vanished there)", side_name(other(c.from)),
                         uid_on(*c.replaces, other(c.from)));
    }
    out += "\n";
  }
  for (const RecordFlags& r : plan.records) {
    out += fmt::format("record {} {}\n", pair_name(r.pair), flag_list(r.pair.flags));
  }
  for (const ForgetPair& f : plan.forgets) out += fmt::format("forget {}\n", pair_name(f.pair));
  for (const std::string& note : plan.notes) out += fmt::format("note: {}\n", note);
  return out;
}

}  // namespace twinbox::sync
