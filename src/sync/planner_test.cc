#include "sync/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "sync/conflict.h"

namespace twinbox::sync {

// Readable gtest failures.
void PrintTo(const Plan& plan, std::ostream* os) { *os << "\n" << describe(plan); }
void PrintTo(const StoreAction& s, std::ostream* os) {
  Plan plan;
  plan.stores.push_back(s);
  *os << describe(plan);
}
void PrintTo(const CopyAction& c, std::ostream* os) {
  Plan plan;
  plan.copies.push_back(c);
  *os << describe(plan) << "date \"" << c.internal_date << "\" size " << c.size;
}
void PrintTo(const Pair& p, std::ostream* os) {
  RecordFlags r{p};
  Plan plan;
  plan.records.push_back(r);
  *os << describe(plan);
}

namespace {

constexpr Side L = Side::local;
constexpr Side R = Side::remote;

// Builds an observation one fact at a time: Obs().pair(10, 20, {"\\Seen"}).vanish(L, {10}).
class Obs {
 public:
  Obs& pair(Uid local, Uid remote, FlagSet flags = {}) {
    o_.pairs.push_back({.local_uid = local, .remote_uid = remote, .flags = std::move(flags)});
    return *this;
  }
  Obs& flags(Side side, Uid uid, FlagSet flags, std::optional<ModSeq> modseq = std::nullopt) {
    changes(side).flags[uid] = std::move(flags);
    if (modseq) changes(side).modseq[uid] = *modseq;
    return *this;
  }
  Obs& vanish(Side side, std::vector<Uid> uids) {
    for (Uid uid : uids) changes(side).vanished.push_back(uid);
    return *this;
  }
  Obs& add(Side side, Uid uid, FlagSet flags = {}, std::string date = "01-Jan-2024 10:00:00 +0000",
           std::uint64_t size = 100) {
    changes(side).added.push_back(
        {.uid = uid, .flags = std::move(flags), .internal_date = std::move(date), .size = size});
    return *this;
  }
  const MailboxObservation& get() const { return o_; }

 private:
  SideChanges& changes(Side side) { return o_.changes[index(side)]; }
  MailboxObservation o_;
};

Pair mirror(Pair pair) {
  std::swap(pair.local_uid, pair.remote_uid);
  return pair;
}

MailboxObservation mirror(MailboxObservation o) {
  for (Pair& pair : o.pairs) pair = mirror(pair);
  std::swap(o.changes[0], o.changes[1]);
  return o;
}

// The order plan_mailbox promises: by side then UID; records and forgets by local UID.
Plan sorted(Plan p) {
  auto key = [](Side side, Uid uid) { return std::pair(index(side), uid); };
  std::sort(p.expunges.begin(), p.expunges.end(),
            [&](const auto& a, const auto& b) { return key(a.on, a.uid) < key(b.on, b.uid); });
  std::sort(p.stores.begin(), p.stores.end(),
            [&](const auto& a, const auto& b) { return key(a.on, a.uid) < key(b.on, b.uid); });
  std::sort(p.copies.begin(), p.copies.end(),
            [&](const auto& a, const auto& b) { return key(a.from, a.uid) < key(b.from, b.uid); });
  std::sort(p.records.begin(), p.records.end(),
            [](const auto& a, const auto& b) { return a.pair.local_uid < b.pair.local_uid; });
  std::sort(p.forgets.begin(), p.forgets.end(),
            [](const auto& a, const auto& b) { return a.pair.local_uid < b.pair.local_uid; });
  return p;
}

// The same plan with local and remote swapped (notes are left alone: their wording names sides).
Plan mirror(Plan p) {
  for (auto& e : p.expunges) e = {.on = other(e.on), .uid = e.uid, .pair = mirror(e.pair)};
  for (auto& s : p.stores) s.on = other(s.on);
  for (auto& c : p.copies) {
    c.from = other(c.from);
    if (c.replaces) c.replaces = mirror(*c.replaces);
  }
  for (auto& r : p.records) r.pair = mirror(r.pair);
  for (auto& f : p.forgets) f.pair = mirror(f.pair);
  return sorted(std::move(p));
}

Plan planned(const MailboxObservation& o) {
  auto r = plan_mailbox(o);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : Plan();
}

// Checks the properties every plan has: deterministic, sorted, and the plan of the mirrored
// observation is the mirrored plan (side symmetry).
void expect_well_formed(const MailboxObservation& o, const std::string& scenario) {
  const Plan direct = planned(o);
  EXPECT_EQ(planned(o), direct) << scenario << ": not deterministic";
  EXPECT_EQ(sorted(direct), direct) << scenario << ": not sorted\n" << describe(direct);
  Plan mirrored = planned(mirror(o));
  Plan expected = mirror(direct);
  EXPECT_EQ(mirrored.notes.size(), expected.notes.size()) << scenario;
  mirrored.notes.clear();
  expected.notes.clear();
  EXPECT_EQ(mirrored, expected) << scenario << ": not symmetric\nplan:\n"
                                << describe(direct) << "plan of the mirror:\n"
                                << describe(mirrored);
}

struct Scenario {
  const char* name;
  Obs obs;
  std::string expected;  // describe(plan)
};

void run(const std::vector<Scenario>& scenarios) {
  for (const Scenario& s : scenarios) {
    EXPECT_EQ(describe(planned(s.obs.get())), s.expected) << s.name;
    expect_well_formed(s.obs.get(), s.name);
  }
}

// ---- Flags --------------------------------------------------------------------------------------

TEST(Planner, Flags) {
  run({
      {"nothing reported: nothing to do", Obs().pair(10, 20, {"\\Seen"}), ""},
      {"local reports the base flags again (a no-op MODSEQ bump): nothing",
       Obs().pair(10, 20, {"\\Seen"}).flags(L, 10, {"\\SEEN"}, 50), ""},
      {"a keyword respelled on remote only is no change",
       Obs().pair(10, 20, {"$Label1"}).flags(R, 20, {"$label1"}, 60), ""},
      {"\\Recent on local is no change",
       Obs().pair(10, 20, {"\\Seen"}).flags(L, 10, {"\\Recent", "\\Seen"}, 50), ""},
      {"local adds \\Flagged: stored on remote",
       Obs().pair(10, 20, {"\\Seen"}).flags(L, 10, {"\\Seen", "\\Flagged"}, 50),
       "store remote UID 20 +(\\Flagged) unchanged since the last sync\n"
       "record local UID 10 <-> remote UID 20 (\\Flagged \\Seen)\n"},
      {"remote removes \\Seen: stored on local",
       Obs().pair(10, 20, {"\\Seen"}).flags(R, 20, {}, 60),
       "store local UID 10 -(\\Seen) unchanged since the last sync\n"
       "record local UID 10 <-> remote UID 20 ()\n"},
      {"remote adds \\Deleted: propagated like any flag",
       Obs().pair(10, 20, {}).flags(R, 20, {"\\Deleted"}, 60),
       "store local UID 10 +(\\Deleted) unchanged since the last sync\n"
       "record local UID 10 <-> remote UID 20 (\\Deleted)\n"},
      {"both add the same flag: record only",
       Obs().pair(10, 20, {}).flags(L, 10, {"\\Seen"}, 50).flags(R, 20, {"\\SEEN"}, 60),
       "record local UID 10 <-> remote UID 20 (\\Seen)\n"},
      {"local removes \\Seen, remote adds \\Draft: both survive (InterIMAP would keep \\Seen)",
       Obs()
           .pair(10, 20, {"\\Flagged", "\\Seen"})
           .flags(L, 10, {"\\Flagged"}, 50)
           .flags(R, 20, {"\\Draft", "\\Flagged", "\\Seen"}, 60),
       "store local UID 10 +(\\Draft) unchanged since 50\n"
       "store remote UID 20 -(\\Seen) unchanged since 60\n"
       "record local UID 10 <-> remote UID 20 (\\Draft \\Flagged)\n"
       "note: conflict: local UID 10 <-> remote UID 20 changed flags on both sides since "
       "(\\Flagged \\Seen): local (\\Flagged), remote (\\Draft \\Flagged \\Seen); merged to "
       "(\\Draft \\Flagged)\n"},
      {"local adds a keyword, remote removes \\Seen",
       Obs().pair(10, 20, {"\\Seen"}).flags(L, 10, {"$Label1", "\\Seen"}, 50).flags(R, 20, {}, 60),
       "store local UID 10 -(\\Seen) unchanged since 50\n"
       "store remote UID 20 +($Label1) unchanged since 60\n"
       "record local UID 10 <-> remote UID 20 ($Label1)\n"
       "note: conflict: local UID 10 <-> remote UID 20 changed flags on both sides since "
       "(\\Seen): local ($Label1 \\Seen), remote (); merged to ($Label1)\n"},
      {"a change reported without MODSEQ (no CONDSTORE): its store is unconditional on it",
       Obs().pair(10, 20, {}).flags(L, 10, {"\\Seen"}).flags(R, 20, {"\\Flagged"}, 60),
       "store local UID 10 +(\\Flagged) unchanged since the last sync\n"
       "store remote UID 20 +(\\Seen) unchanged since 60\n"
       "record local UID 10 <-> remote UID 20 (\\Flagged \\Seen)\n"
       "note: conflict: local UID 10 <-> remote UID 20 changed flags on both sides since (): "
       "local (\\Seen), remote (\\Flagged); merged to (\\Flagged \\Seen)\n"},
      {"a base recorded in another spelling is canonicalised",
       Obs().pair(10, 20, {"\\SEEN", "\\Recent", "$b", "$A"}).flags(L, 10, {"$a"}, 50),
       "store remote UID 20 -($b \\Seen) unchanged since the last sync\n"
       "record local UID 10 <-> remote UID 20 ($A)\n"},
  });
}

TEST(Planner, StoreCarriesCanonicalDifferenceAndModseq) {
  const Plan plan = planned(Obs()
                                .pair(10, 20, {"\\Seen", "$Old"})
                                .flags(L, 10, {"\\Seen", "$old", "\\Recent"}, 50)
                                .flags(R, 20, {"\\SEEN", "$New", "\\Flagged"}, 60)
                                .get());
  ASSERT_EQ(plan.stores.size(), 1u);
  EXPECT_EQ(plan.stores[0], (StoreAction{.on = L,
                                         .uid = 10,
                                         .add = {"$New", "\\Flagged"},
                                         .remove = {"$old"},
                                         .unchanged_since = 50}));
  ASSERT_EQ(plan.records.size(), 1u);
  EXPECT_EQ(plan.records[0].pair,
            (Pair{.local_uid = 10, .remote_uid = 20, .flags = {"$New", "\\Flagged", "\\Seen"}}));
}

// ---- Expunges -----------------------------------------------------------------------------------

TEST(Planner, Expunges) {
  run({
      {"remote expunges, local untouched: expunge exactly that UID on local",
       Obs().pair(10, 20, {"\\Seen"}).pair(11, 21).vanish(R, {20}),
       "expunge local UID 10 (vanished on remote)\n"
       "forget local UID 10 <-> remote UID 20\n"},
      {"local expunges, remote reports the base flags: still expunged",
       Obs().pair(10, 20, {"\\Seen"}).vanish(L, {10}).flags(R, 20, {"\\Seen"}, 60),
       "expunge remote UID 20 (vanished on local)\n"
       "forget local UID 10 <-> remote UID 20\n"},
      {"local expunges while remote flags it: copied back to local, not expunged",
       Obs().pair(10, 20, {"\\Seen"}).vanish(L, {10}).flags(R, 20, {"\\Flagged", "\\Seen"}, 60),
       "copy remote UID 20 -> local (\\Flagged \\Seen) replacing local UID 10 (vanished there)\n"
       "note: conflict: local UID 10 vanished while remote UID 20 changed flags (\\Seen) -> "
       "(\\Flagged \\Seen): copying it back to local instead of expunging it\n"},
      {"remote expunges while local marks it unread: copied back to remote",
       Obs().pair(10, 20, {"\\Seen"}).vanish(R, {20}).flags(L, 10, {}, 50),
       "copy local UID 10 -> remote () replacing remote UID 20 (vanished there)\n"
       "note: conflict: remote UID 20 vanished while local UID 10 changed flags (\\Seen) -> (): "
       "copying it back to remote instead of expunging it\n"},
      {"local expunges while remote marks it \\Deleted: both say delete, expunge on remote",
       Obs().pair(10, 20, {"\\Seen"}).vanish(L, {10}).flags(R, 20, {"\\Deleted", "\\Seen"}, 60),
       "expunge remote UID 20 (vanished on local)\n"
       "forget local UID 10 <-> remote UID 20\n"},
      {"expunged on both sides: forget only", Obs().pair(10, 20).vanish(L, {10}).vanish(R, {20}),
       "forget local UID 10 <-> remote UID 20\n"},
      {"a flag change of a UID that vanished on the same side: the expunge wins",
       Obs().pair(10, 20, {"\\Seen"}).vanish(L, {10}).flags(L, 10, {"\\Flagged"}, 50),
       "expunge remote UID 20 (vanished on local)\n"
       "forget local UID 10 <-> remote UID 20\n"},
      {"vanished UIDs matching no pair and no new message are ignored",
       Obs().pair(10, 20).vanish(L, {3, 20, 99}).vanish(R, {10, 7}), ""},
      {"a UID reported vanished twice counts once", Obs().pair(10, 20).vanish(R, {20, 20}),
       "expunge local UID 10 (vanished on remote)\n"
       "forget local UID 10 <-> remote UID 20\n"},
  });
}

// ---- New messages -------------------------------------------------------------------------------

TEST(Planner, NewMessages) {
  run({
      {"new local message: copied with canonical flags",
       Obs().add(L, 11, {"\\Seen", "$Label1", "\\Recent"}),
       "copy local UID 11 -> remote ($Label1 \\Seen)\n"},
      {"new messages on both sides, ordered by side then UID",
       Obs().add(R, 5).add(L, 12).add(L, 11).add(R, 3),
       "copy local UID 11 -> remote ()\n"
       "copy local UID 12 -> remote ()\n"
       "copy remote UID 3 -> local ()\n"
       "copy remote UID 5 -> local ()\n"},
      {"arrived and expunged between two syncs: not copied",
       Obs().add(L, 11).add(L, 12).vanish(L, {11}), "copy local UID 12 -> remote ()\n"},
      {"a flag change of an unpaired, non-new UID: ignored with a note",
       Obs().pair(10, 20).flags(R, 33, {"\\Seen"}, 70),
       "note: ignored a flag change of remote UID 33: not paired yet\n"},
      {"a flag change of a new message: the new message's own flags are copied",
       Obs().add(L, 11, {"\\Seen"}).flags(L, 11, {"\\Flagged"}, 50),
       "copy local UID 11 -> remote (\\Seen)\n"},
      {"a new message whose UID is paired on the other side only is fine",
       Obs().pair(10, 20).add(L, 20), "copy local UID 20 -> remote ()\n"},
  });
}

TEST(Planner, NewMessageKeepsDateAndSize) {
  const Plan plan =
      planned(Obs().add(R, 7, {"\\Answered"}, "17-Jul-1996 02:44:25 -0700", 4242).get());
  ASSERT_EQ(plan.copies.size(), 1u);
  EXPECT_EQ(plan.copies[0], (CopyAction{.from = R,
                                        .uid = 7,
                                        .flags = {"\\Answered"},
                                        .internal_date = "17-Jul-1996 02:44:25 -0700",
                                        .size = 4242,
                                        .replaces = std::nullopt}));
}

TEST(Planner, RestoreCopyReplacesThePair) {
  const Plan plan = planned(Obs()
                                .pair(10, 20, {"\\Seen"})
                                .vanish(R, {20})
                                .flags(L, 10, {"\\Seen", "\\Flagged"}, 9)
                                .get());
  ASSERT_EQ(plan.copies.size(), 1u);
  EXPECT_EQ(plan.copies[0],
            (CopyAction{.from = L,
                        .uid = 10,
                        .flags = {"\\Flagged", "\\Seen"},
                        .internal_date = {},
                        .size = 0,
                        .replaces = Pair{.local_uid = 10, .remote_uid = 20, .flags = {"\\Seen"}}}));
  EXPECT_TRUE(plan.expunges.empty());
  EXPECT_TRUE(plan.forgets.empty());
  EXPECT_TRUE(plan.records.empty());
  EXPECT_EQ(plan.notes.size(), 1u);
}

// Input order does not matter, and every kind of action lands in its sorted place.
TEST(Planner, MixedMailboxIsOrdered) {
  run({{"one of each, pairs given out of order",
        Obs()
            .pair(5, 105, {"\\Seen"})
            .pair(3, 103)
            .pair(1, 101)
            .pair(4, 104, {"\\Seen"})
            .pair(2, 102, {"\\Seen"})
            .vanish(L, {5, 1})
            .flags(L, 2, {}, 40)
            .add(L, 6)
            .vanish(R, {105, 103})
            .flags(R, 104, {"\\Seen", "\\Flagged"}, 90)
            .add(R, 106),
        "expunge local UID 3 (vanished on remote)\n"
        "expunge remote UID 101 (vanished on local)\n"
        "store local UID 4 +(\\Flagged) unchanged since the last sync\n"
        "store remote UID 102 -(\\Seen) unchanged since the last sync\n"
        "copy local UID 6 -> remote ()\n"
        "copy remote UID 106 -> local ()\n"
        "record local UID 2 <-> remote UID 102 ()\n"
        "record local UID 4 <-> remote UID 104 (\\Flagged \\Seen)\n"
        "forget local UID 1 <-> remote UID 101\n"
        "forget local UID 3 <-> remote UID 103\n"
        "forget local UID 5 <-> remote UID 105\n"}});
}

// ---- The truth table, row by row
// ------------------------------------------------------------------

// Puts side `side` of pair (10, 20) with base (\Seen $Work) into `state`. The two sides change
// different flags, so a merge of two changes is never trivial.
void apply_state(Obs& obs, Side side, PairState state, bool noisy) {
  const Uid uid = side == L ? 10 : 20;
  const ModSeq modseq = side == L ? 100 : 200;
  switch (state) {
    case PairState::unchanged:
      if (noisy) obs.flags(side, uid, {"\\SEEN", "$work"}, modseq);  // a no-op MODSEQ bump
      return;
    case PairState::flags_changed:
      obs.flags(side, uid, side == L ? FlagSet{"\\Seen", "$Work", "\\Flagged"} : FlagSet{"$Work"},
                modseq);
      return;
    case PairState::marked_deleted:
      obs.flags(
          side, uid,
          side == L ? FlagSet{"\\Seen", "$Work", "\\Deleted"} : FlagSet{"\\Deleted", "\\Answered"},
          modseq);
      return;
    case PairState::vanished:
      obs.vanish(side, {uid});
      return;
  }
}

// A per-flag three-way merge written independently of merge_flags: lowercase sets.
FlagSet oracle_merge(const FlagSet& base, const FlagSet& local, const FlagSet& remote) {
  auto lowered = [](const FlagSet& flags) {
    std::set<std::string> out;
    for (std::string f : canonical(flags)) {
      for (char& c : f) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.insert(f);
    }
    return out;
  };
  const auto b = lowered(base), l = lowered(local), r = lowered(remote);
  std::set<std::string> all = b;
  all.insert(l.begin(), l.end());
  all.insert(r.begin(), r.end());
  std::vector<std::string> out;
  for (const std::string& f : all) {
    const bool local_changed = l.count(f) != b.count(f);
    if (local_changed ? l.count(f) : r.count(f)) out.push_back(f);
  }
  return canonical(out);
}

TEST(Planner, EveryTruthTableRowInBothDirections) {
  const FlagSet base = {"$Work", "\\Seen"};
  for (const PairRule& rule : kPairTable) {
    for (bool noisy : {false, true}) {
      const std::string scenario = std::string(rule.why) + (noisy ? " (noisy)" : "");
      Obs obs;
      obs.pair(10, 20, base);
      apply_state(obs, L, rule.local, noisy);
      apply_state(obs, R, rule.remote, noisy);
      const MailboxObservation& o = obs.get();
      const Plan plan = planned(o);
      PerSide<FlagSet> current;
      for (Side side : kSides) {
        auto it = o.changes[index(side)].flags.find(side == L ? 10 : 20);
        current[index(side)] =
            it == o.changes[index(side)].flags.end() ? base : canonical(it->second);
      }
      const Pair pair = o.pairs[0];
      Plan expected;
      const Side gone = rule.local == PairState::vanished ? L : R;
      const Side survivor = other(gone);
      const Uid survivor_uid = survivor == L ? 10 : 20;
      switch (rule.outcome) {
        case Outcome::nothing:
          break;
        case Outcome::merge_flags: {
          const FlagSet merged = merge_flags(base, current);
          EXPECT_TRUE(same_flags(merged, oracle_merge(base, current[0], current[1]))) << scenario;
          for (Side side : kSides) {
            const FlagSet& cur = current[index(side)];
            if (same_flags(cur, merged)) continue;
            StoreAction store{.on = side,
                              .uid = side == L ? 10u : 20u,
                              .add = {},
                              .remove = {},
                              .unchanged_since = {}};
            for (const auto& f : merged) {
              if (!has_flag(cur, f)) store.add.push_back(f);
            }
            for (const auto& f : cur) {
              if (!has_flag(merged, f)) store.remove.push_back(f);
            }
            const auto& modseqs = o.changes[index(side)].modseq;
            if (auto m = modseqs.find(store.uid); m != modseqs.end()) {
              store.unchanged_since = m->second;
            }
            expected.stores.push_back(store);
          }
          expected.records.push_back({Pair{.local_uid = 10, .remote_uid = 20, .flags = merged}});
          break;
        }
        case Outcome::forget_pair:
          expected.forgets.push_back({pair});
          break;
        case Outcome::expunge_survivor:
          expected.expunges.push_back({.on = survivor, .uid = survivor_uid, .pair = pair});
          expected.forgets.push_back({pair});
          break;
        case Outcome::restore_survivor:
          expected.copies.push_back({.from = survivor,
                                     .uid = survivor_uid,
                                     .flags = current[index(survivor)],
                                     .internal_date = {},
                                     .size = 0,
                                     .replaces = pair});
          break;
      }
      const bool noted = rule.conflict && rule.outcome == Outcome::restore_survivor;
      const bool merge_noted = rule.conflict && rule.outcome == Outcome::merge_flags &&
                               !same_flags(current[0], current[1]);
      EXPECT_EQ(plan.notes.size(), noted || merge_noted ? 1u : 0u) << scenario;
      Plan compared = plan;
      compared.notes.clear();
      EXPECT_EQ(compared, expected) << scenario << "\n" << describe(plan);
      expect_well_formed(o, scenario);
    }
  }
}

// ---- Validation ---------------------------------------------------------------------------------

TEST(Planner, RejectsInconsistentObservations) {
  struct Row {
    const char* scenario;
    Obs obs;
    std::string message;
  };
  const std::vector<Row> rows = {
      {"pair with local UID 0", Obs().pair(1, 2).pair(0, 7),
       "pair local UID 0 <-> remote UID 7: UID 0 is not a valid UID"},
      {"pair with remote UID 0", Obs().pair(7, 0),
       "pair local UID 7 <-> remote UID 0: UID 0 is not a valid UID"},
      {"two pairs share a local UID", Obs().pair(5, 7).pair(1, 2).pair(5, 9),
       "pairs local UID 5 <-> remote UID 7 and local UID 5 <-> remote UID 9 share local UID 5"},
      {"two pairs share a remote UID", Obs().pair(2, 9).pair(1, 9),
       "pairs local UID 2 <-> remote UID 9 and local UID 1 <-> remote UID 9 share remote UID 9"},
      {"new message with UID 0", Obs().add(R, 0),
       "new remote message with UID 0: UID 0 is not a valid UID"},
      {"new message already paired", Obs().pair(5, 7).add(L, 5),
       "new local UID 5 is already paired: local UID 5 <-> remote UID 7"},
      {"new message listed twice", Obs().add(L, 12).add(L, 3).add(L, 12),
       "new local UID 12 is listed twice"},
      {"vanished UID 0", Obs().pair(1, 2).vanish(R, {2, 0}), "remote reported UID 0 as vanished"},
      {"flag change of UID 0", Obs().flags(L, 0, {"\\Seen"}),
       "local reported a flag change for UID 0"},
  };
  for (const Row& row : rows) {
    auto plan = plan_mailbox(row.obs.get());
    ASSERT_FALSE(plan.ok()) << row.scenario;
    EXPECT_EQ(plan.error().code, Errc::internal) << row.scenario;
    EXPECT_EQ(plan.error().message, row.message) << row.scenario;
  }
}

// ---- Simulation: random changes on two replicas, plan, apply, check convergence ----------------

// Two replicas of one mailbox and the recorded pairs, with the plan applied the way the engine
// would apply it (and no concurrent changes, so every UNCHANGEDSINCE succeeds).
struct World {
  PerSide<std::map<Uid, FlagSet>> box;
  PerSide<Uid> next_uid{1, 1};
  std::map<Uid, Pair> pairs;  // by local UID

  Uid deliver(Side side, FlagSet flags) {
    const Uid uid = next_uid[index(side)]++;
    box[index(side)][uid] = canonical(std::move(flags));
    return uid;
  }
};

const std::vector<std::string> kPool = {"\\Seen",  "\\Flagged", "\\Answered", "\\Deleted",
                                        "\\Draft", "$Work",     "$label",     "$Label"};

FlagSet random_flags(std::mt19937& rng) {
  FlagSet out;
  for (const auto& f : kPool) {
    if (rng() % 3 == 0) out.push_back(f);
  }
  return canonical(out);
}

FlagSet toggled(FlagSet flags, std::mt19937& rng) {
  const std::string& f = kPool[rng() % kPool.size()];
  if (has_flag(flags, f)) {
    std::erase_if(flags, [&](const std::string& x) { return compare_flags(x, f) == 0; });
  } else {
    flags.push_back(f);
  }
  return canonical(flags);
}

void apply(World& w, const Plan& plan, const MailboxObservation& o) {
  for (const ExpungeAction& e : plan.expunges) {
    auto& box = w.box[index(e.on)];
    ASSERT_TRUE(box.count(e.uid)) << "expunge of a missing message";
    const Uid partner = e.on == L ? e.pair.remote_uid : e.pair.local_uid;
    const auto& vanished = o.changes[index(other(e.on))].vanished;
    ASSERT_NE(std::find(vanished.begin(), vanished.end(), partner), vanished.end())
        << "expunge without evidence";
    box.erase(e.uid);
  }
  for (const StoreAction& s : plan.stores) {
    auto& box = w.box[index(s.on)];
    ASSERT_TRUE(box.count(s.uid)) << "store on a missing message";
    const auto& changes = o.changes[index(s.on)];
    const auto m = changes.modseq.find(s.uid);
    EXPECT_EQ(s.unchanged_since,
              m == changes.modseq.end() ? std::nullopt : std::optional<ModSeq>(m->second));
    FlagSet& flags = box[s.uid];
    for (const auto& f : s.remove) {
      ASSERT_TRUE(has_flag(flags, f)) << "removes a flag it does not have";
      std::erase_if(flags, [&](const std::string& x) { return compare_flags(x, f) == 0; });
    }
    for (const auto& f : s.add) {
      ASSERT_FALSE(has_flag(flags, f)) << "adds a flag it has";
      flags.push_back(f);
    }
    flags = canonical(flags);
  }
  for (const RecordFlags& r : plan.records) {
    ASSERT_TRUE(w.pairs.count(r.pair.local_uid));
    ASSERT_EQ(w.pairs[r.pair.local_uid].remote_uid, r.pair.remote_uid);
    w.pairs[r.pair.local_uid].flags = r.pair.flags;
  }
  for (const ForgetPair& f : plan.forgets) {
    ASSERT_EQ(w.pairs.erase(f.pair.local_uid), 1u) << "forgets an unknown pair";
  }
  for (const CopyAction& c : plan.copies) {
    ASSERT_TRUE(w.box[index(c.from)].count(c.uid)) << "copy of a missing message";
    EXPECT_TRUE(same_flags(w.box[index(c.from)][c.uid], c.flags));
    const Uid copy = w.deliver(other(c.from), c.flags);
    if (c.replaces) {
      ASSERT_EQ(w.pairs.erase(c.replaces->local_uid), 1u);
    }
    Pair pair{.local_uid = c.from == L ? c.uid : copy,
              .remote_uid = c.from == L ? copy : c.uid,
              .flags = c.flags};
    ASSERT_FALSE(w.pairs.count(pair.local_uid)) << "pairs a message twice";
    w.pairs[pair.local_uid] = pair;
  }
}

void expect_converged(const World& w, const std::string& scenario) {
  std::set<Uid> remote_paired;
  for (const auto& [local_uid, pair] : w.pairs) {
    auto l = w.box[0].find(pair.local_uid);
    auto r = w.box[1].find(pair.remote_uid);
    ASSERT_NE(l, w.box[0].end()) << scenario << ": pair without local message";
    ASSERT_NE(r, w.box[1].end()) << scenario << ": pair without remote message";
    EXPECT_TRUE(same_flags(l->second, pair.flags)) << scenario << " local UID " << local_uid;
    EXPECT_TRUE(same_flags(r->second, pair.flags)) << scenario << " remote UID " << r->first;
    EXPECT_TRUE(remote_paired.insert(pair.remote_uid).second) << scenario;
  }
  EXPECT_EQ(w.pairs.size(), w.box[0].size()) << scenario << ": unpaired local messages";
  EXPECT_EQ(w.pairs.size(), w.box[1].size()) << scenario << ": unpaired remote messages";
}

// Random user activity on both replicas between syncs (flag edits, expunges, deliveries, some
// expunged right away, unknown vanished UIDs, no-op reports), five syncs in a row per seed. After
// every sync the replicas hold the same messages with the same flags, the flags are the three-way
// merge, nothing edited on one side was expunged, and the plan is symmetric.
TEST(Planner, RandomActivityConverges) {
  std::map<std::string, int> seen;  // how often each kind of decision came up
  for (std::uint32_t seed = 1; seed <= 150; ++seed) {
    std::mt19937 rng(seed);
    World w;
    for (int i = 0; i < 20; ++i) {
      const FlagSet flags = random_flags(rng);
      const Uid l = w.deliver(L, flags), r = w.deliver(R, flags);
      w.pairs[l] = {.local_uid = l, .remote_uid = r, .flags = flags};
    }
    for (int round = 0; round < 5; ++round) {
      const std::string scenario =
          "seed " + std::to_string(seed) + " round " + std::to_string(round);
      MailboxObservation o;
      for (const auto& [l, pair] : w.pairs) o.pairs.push_back(pair);
      std::shuffle(o.pairs.begin(), o.pairs.end(), rng);
      std::map<Uid, FlagSet> expected_flags;  // by local UID, for pairs that survive as they are
      std::set<std::pair<int, Uid>> must_survive;
      for (const auto& [l, pair] : w.pairs) {
        PerSide<bool> gone{};
        PerSide<FlagSet> now;
        for (Side side : kSides) {
          const Uid uid = side == L ? pair.local_uid : pair.remote_uid;
          auto& box = w.box[index(side)];
          auto& changes = o.changes[index(side)];
          const unsigned dice = rng() % 100;
          if (dice < 12) {
            box.erase(uid);
            changes.vanished.push_back(uid);
            gone[index(side)] = true;
            if (dice < 3) changes.flags[uid] = random_flags(rng);  // edited, then expunged
            continue;
          }
          if (dice < 40) {
            box[uid] = toggled(box[uid], rng);
            if (rng() % 4 == 0) box[uid] = toggled(box[uid], rng);
          }
          if (dice < 40 || dice > 95) {  // a real change or a no-op MODSEQ bump
            changes.flags[uid] = box[uid];
            changes.modseq[uid] = 1000 + rng() % 1000;
          }
          now[index(side)] = box[uid];
        }
        if (!gone[0] && !gone[1]) {
          expected_flags[l] = oracle_merge(pair.flags, now[0], now[1]);
        }
        for (Side side : kSides) {
          const FlagSet& survivor = now[index(side)];
          if (!gone[index(other(side))] || gone[index(side)]) continue;
          if (!same_flags(survivor, pair.flags) && !has_flag(survivor, "\\Deleted")) {
            must_survive.insert(
                {static_cast<int>(index(side)), side == L ? pair.local_uid : pair.remote_uid});
          }
        }
      }
      for (Side side : kSides) {
        auto& changes = o.changes[index(side)];
        for (unsigned n = rng() % 4; n > 0; --n) {
          const Uid uid = w.deliver(side, random_flags(rng));
          changes.added.push_back({.uid = uid,
                                   .flags = w.box[index(side)][uid],
                                   .internal_date = "01-Jan-2024 10:00:00 +0000",
                                   .size = 100 + uid});
          if (rng() % 5 == 0) {  // arrived and expunged between syncs
            w.box[index(side)].erase(uid);
            changes.vanished.push_back(uid);
          }
        }
        if (rng() % 3 == 0) changes.vanished.push_back(100000 + rng() % 1000);  // never seen
        std::shuffle(changes.vanished.begin(), changes.vanished.end(), rng);
      }

      const Plan plan = planned(o);
      seen["expunge"] += static_cast<int>(plan.expunges.size());
      seen["store"] += static_cast<int>(plan.stores.size());
      seen["record"] += static_cast<int>(plan.records.size());
      for (const auto& c : plan.copies) ++seen[c.replaces ? "copy back" : "copy new"];
      seen["forget"] += static_cast<int>(plan.forgets.size() - plan.expunges.size());
      for (const auto& n : plan.notes)
        ++seen[n.find("vanished while") != n.npos ? "note back" : "note merge"];
      expect_well_formed(o, scenario);
      apply(w, plan, o);
      expect_converged(w, scenario);
      for (const auto& [l, flags] : expected_flags) {
        ASSERT_TRUE(w.pairs.count(l)) << scenario;
        EXPECT_TRUE(same_flags(w.pairs[l].flags, flags)) << scenario << " local UID " << l << "\n"
                                                         << describe(plan);
      }
      for (const auto& [side, uid] : must_survive) {
        EXPECT_TRUE(w.box[side].count(uid)) << scenario << ": an edited message was expunged";
      }
      if (HasFailure()) return;
    }
  }
  for (const char* kind : {"expunge", "store", "record", "copy back", "copy new", "forget",
                           "note back", "note merge"}) {
    EXPECT_GE(seen[kind], 20) << kind << " hardly exercised: " << seen[kind];
  }
}

// ---- Scale
// ----------------------------------------------------------------------------------------

// n pairs; 1% of them change: flag edits on either side, both sides, expunges, and as many new
// messages.
MailboxObservation big_mailbox(Uid n) {
  MailboxObservation o;
  o.pairs.reserve(n);
  for (Uid i = 1; i <= n; ++i) {
    o.pairs.push_back({.local_uid = i, .remote_uid = n + i, .flags = {"\\Seen"}});
  }
  auto& local = o.changes[0];
  auto& remote = o.changes[1];
  for (Uid i = 1; i <= n; i += 100) {
    switch ((i / 100) % 5) {
      case 0:
        local.flags[i] = {"\\Flagged", "\\Seen"};
        local.modseq[i] = 7;
        break;
      case 1:
        remote.flags[n + i] = {};
        break;
      case 2:
        local.vanished.push_back(i);
        break;
      case 3:
        remote.vanished.push_back(n + i);
        break;
      case 4:
        local.flags[i] = {"$Work", "\\Seen"};
        remote.flags[n + i] = {};
        break;
    }
    local.added.push_back({.uid = 2 * n + i, .flags = {}, .internal_date = {}, .size = 0});
  }
  return o;
}

TEST(Planner, HundredThousandPairs) {
  const MailboxObservation o = big_mailbox(100000);
  const Plan plan = planned(o);
  // 1000 changed pairs, 200 of each kind.
  EXPECT_EQ(plan.expunges.size(), 400u);
  EXPECT_EQ(plan.forgets.size(), 400u);
  EXPECT_EQ(plan.records.size(), 600u);
  EXPECT_EQ(plan.stores.size(), 800u);  // one per single-sided edit, two per double edit
  EXPECT_EQ(plan.copies.size(), 1000u);
  EXPECT_EQ(plan.notes.size(), 200u);
  EXPECT_EQ(sorted(plan), plan);
}

// Planning 4x the pairs (and 4x the changes) takes about 4x as long: nothing quadratic. A
// quadratic planner would take 16x; the bound leaves room for a busy machine.
TEST(Planner, ScalesLinearly) {
  auto fastest = [](const MailboxObservation& o) {
    auto best = std::chrono::steady_clock::duration::max();
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto plan = plan_mailbox(o);
      best = std::min(best, std::chrono::steady_clock::now() - start);
      EXPECT_TRUE(plan.ok());
    }
    return std::chrono::duration<double>(best).count();
  };
  const double small = fastest(big_mailbox(50000));
  const double large = fastest(big_mailbox(200000));
  EXPECT_LT(large, 10 * small) << "50k pairs: " << small << " s, 200k pairs: " << large << " s";
}

}  // namespace
}  // namespace twinbox::sync
