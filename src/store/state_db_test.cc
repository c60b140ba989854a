// The state API: mailboxes, sync state, mapping, UIDVALIDITY orphans, intents, transactions.
#include "store/state_db.h"

#include <chrono>
#include <cstdio>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "store/test_support.h"

namespace twinbox::store {
namespace {

using testing::ScratchDir;

const std::string kNul(1, '\0');

class StateDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = StateDb::open(path_);
    ASSERT_TRUE(db) << db.error().to_string();
    db_ = std::move(db).value();
  }
  void reopen() {
    db_.reset();
    auto db = StateDb::open(path_);
    ASSERT_TRUE(db) << db.error().to_string();
    db_ = std::move(db).value();
  }
  MailboxId add(std::string_view name, bool subscribed = false) {
    auto id = db_->add_mailbox(name, subscribed);
    EXPECT_TRUE(id) << id.error().to_string();
    return id ? *id : 0;
  }
  std::vector<std::string> names() {
    std::vector<std::string> out;
    auto list = db_->list_mailboxes();
    EXPECT_TRUE(list);
    if (list) {
      for (const Mailbox& m : *list) out.push_back(m.name);
    }
    return out;
  }
  static Pair pair(Uid local, Uid remote, std::string flags = "") {
    Pair p;
    p.uids[Side::local] = local;
    p.uids[Side::remote] = remote;
    p.flags = std::move(flags);
    return p;
  }
  std::string label() const { return fmt::format("state database {}", path_); }

  ScratchDir dir_;
  std::string path_ = dir_ / "state.db";
  std::unique_ptr<StateDb> db_;
};

// --- Mailboxes ---

TEST_F(StateDbTest, AddedMailboxHasNoSyncStateAndIsFoundByNameAndId) {
  const MailboxId id = add("INBOX", true);
  auto found = db_->find_mailbox("INBOX");
  ASSERT_TRUE(found);
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, id);
  EXPECT_EQ((*found)->name, "INBOX");
  EXPECT_TRUE((*found)->subscribed);
  EXPECT_EQ((*found)->sides[Side::local], SideState{});
  EXPECT_EQ((*found)->sides[Side::remote], SideState{});
  auto by_id = db_->get_mailbox(id);
  ASSERT_TRUE(by_id);
  EXPECT_EQ(*by_id, *found);
  auto missing = db_->find_mailbox("Nope");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing->has_value());
  auto missing_id = db_->get_mailbox(id + 100);
  ASSERT_TRUE(missing_id);
  EXPECT_FALSE(missing_id->has_value());
}

// Notes outlive the connection (a reopened database has them) and never touch the schema's own
// keys.
TEST_F(StateDbTest, NotesAreKeptByKeyAndLeaveTheSchemaVersionAlone) {
  const int version = db_->schema_version().value();
  auto missing = db_->note("server.local");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(*missing);
  ASSERT_TRUE(db_->set_note("server.local", "first").ok());
  ASSERT_TRUE(db_->set_note("server.local", "second\nline").ok());
  ASSERT_TRUE(db_->set_note("server.remote", "other").ok());
  reopen();
  auto kept = db_->note("server.local");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, std::optional<std::string>("second\nline"));
  EXPECT_EQ(db_->note("server.remote").value(), std::optional<std::string>("other"));
  EXPECT_EQ(db_->set_note("schema_version", "99").error().code, Errc::internal);
  EXPECT_EQ(db_->note("schema_version").error().code, Errc::internal);
  EXPECT_EQ(db_->schema_version().value(), version);
}

TEST_F(StateDbTest, DuplicateOrEmptyMailboxNameIsRejected) {
  add("INBOX");
  auto again = db_->add_mailbox("INBOX", false);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::internal);
  EXPECT_EQ(again.error().message, fmt::format("{}: mailbox INBOX already exists", label()));
  auto empty = db_->add_mailbox("", false);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, Errc::internal);
}

TEST_F(StateDbTest, NamesWithNulDelimitersAndNonAsciiRoundTripAndListParentsFirst) {
  const std::string child = "Archive" + kNul + "2024";
  const std::string grandchild = child + kNul + "Réunions";
  add(grandchild);
  add("日本語");
  add(child);
  add("Archive");
  add("Archive 2");  // ' ' (0x20) sorts after NUL: not between Archive and its children
  EXPECT_EQ(names(),
            (std::vector<std::string>{"Archive", child, grandchild, "Archive 2", "日本語"}));
  auto found = db_->find_mailbox(grandchild);
  ASSERT_TRUE(found);
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->name, grandchild);
  // "Archive" must not match "Archive\0..." (a NUL-terminated comparison would).
  auto prefix = db_->find_mailbox("Archive" + kNul);
  ASSERT_TRUE(prefix);
  EXPECT_FALSE(prefix->has_value());
}

TEST_F(StateDbTest, RenameMovesInferiorsButNotSiblingsSharingAPrefix) {
  const MailboxId a = add("a");
  const MailboxId ab = add("a" + kNul + "b");
  const MailboxId abc = add("a" + kNul + "b" + kNul + "c");
  const MailboxId sibling = add("ab");
  const MailboxId other = add("z");
  auto renamed = db_->rename_mailbox("a", "new" + kNul + "x");
  ASSERT_TRUE(renamed) << renamed.error().to_string();
  EXPECT_EQ(*renamed, 3u);
  const std::string to = "new" + kNul + "x";
  EXPECT_EQ((*db_->get_mailbox(a))->name, to);
  EXPECT_EQ((*db_->get_mailbox(ab))->name, to + kNul + "b");
  EXPECT_EQ((*db_->get_mailbox(abc))->name, to + kNul + "b" + kNul + "c");
  EXPECT_EQ((*db_->get_mailbox(sibling))->name, "ab");
  EXPECT_EQ((*db_->get_mailbox(other))->name, "z");
}

TEST_F(StateDbTest, RenameOfAnInferiorAloneKeepsItsId) {
  const MailboxId parent = add("a");
  const MailboxId child = add("a" + kNul + "b");
  auto renamed = db_->rename_mailbox("a" + kNul + "b", "c");
  ASSERT_TRUE(renamed);
  EXPECT_EQ(*renamed, 1u);
  EXPECT_EQ((*db_->get_mailbox(child))->name, "c");
  EXPECT_EQ((*db_->get_mailbox(parent))->name, "a");
}

TEST_F(StateDbTest, RenameOfMissingMailboxIsANoOp) {
  add("a");
  auto renamed = db_->rename_mailbox("b", "c");
  ASSERT_TRUE(renamed);
  EXPECT_EQ(*renamed, 0u);
  EXPECT_EQ(names(), std::vector<std::string>{"a"});
}

TEST_F(StateDbTest, RenameOfAParentWithOnlyInferiorsInTheDatabaseMovesThem) {
  // An IMAP parent may be \NonExistent: only its children are in the database.
  add("p" + kNul + "c");
  auto renamed = db_->rename_mailbox("p", "q");
  ASSERT_TRUE(renamed);
  EXPECT_EQ(*renamed, 1u);
  EXPECT_EQ(names(), std::vector<std::string>{"q" + kNul + "c"});
}

TEST_F(StateDbTest, RenameOntoAnExistingMailboxFailsAndChangesNothing) {
  add("a");
  add("a" + kNul + "x");
  add("b" + kNul + "x");
  const auto before = names();
  auto renamed = db_->rename_mailbox("a", "b");
  ASSERT_FALSE(renamed);
  EXPECT_EQ(renamed.error().code, Errc::internal);
  EXPECT_EQ(
      renamed.error().message,
      fmt::format("{}: cannot rename mailbox a\\x00x to b\\x00x: b\\x00x already exists", label()));
  EXPECT_EQ(names(), before);
}

TEST_F(StateDbTest, RenameWhoseNewNamesOverlapTheOldOnesSucceedsInBothDirections) {
  // Up one level: "a\0x" -> "a" moves "a\0x\0x" onto the old name of "a\0x".
  const std::string ax = "a" + kNul + "x";
  const MailboxId m1 = add(ax);
  const MailboxId m2 = add(ax + kNul + "x");
  auto up = db_->rename_mailbox(ax, "a");
  ASSERT_TRUE(up) << up.error().to_string();
  EXPECT_EQ((*db_->get_mailbox(m1))->name, "a");
  EXPECT_EQ((*db_->get_mailbox(m2))->name, ax);
  // And back down.
  auto down = db_->rename_mailbox("a", ax);
  ASSERT_TRUE(down) << down.error().to_string();
  EXPECT_EQ((*db_->get_mailbox(m1))->name, ax);
  EXPECT_EQ((*db_->get_mailbox(m2))->name, ax + kNul + "x");
}

TEST_F(StateDbTest, DeleteMailboxRemovesItsStateMappingAndOrphans) {
  const MailboxId id = add("INBOX");
  const MailboxId keep = add("Sent");
  ASSERT_TRUE(db_->set_side_state(id, Side::local, {1, 10, 100}));
  ASSERT_TRUE(db_->add_pair(id, pair(1, 2, "\\Seen")));
  ASSERT_TRUE(db_->add_pair(id, pair(3, 4)));
  ASSERT_TRUE(db_->add_pair(keep, pair(1, 1)));
  ASSERT_TRUE(db_->clear_side(id, Side::remote));
  ASSERT_TRUE(db_->add_pair(id, pair(5, 6)));
  ASSERT_TRUE(db_->delete_mailbox(id));
  EXPECT_FALSE(db_->get_mailbox(id)->has_value());
  EXPECT_EQ(*db_->count_pairs(id), 0u);
  EXPECT_EQ(*db_->count_orphans(id), 0u);
  EXPECT_EQ(*db_->count_pairs(keep), 1u);
  testing::RawDb raw(path_);
  EXPECT_EQ(raw.value("SELECT count(*) FROM mailbox_sides"), "0");
  auto again = db_->delete_mailbox(id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message, fmt::format("no mailbox with id {} in the state database", id));
}

TEST_F(StateDbTest, SubscriptionIsStored) {
  const MailboxId id = add("INBOX", false);
  ASSERT_TRUE(db_->set_subscribed(id, true));
  EXPECT_TRUE((*db_->get_mailbox(id))->subscribed);
  ASSERT_TRUE(db_->set_subscribed(id, false));
  EXPECT_FALSE((*db_->get_mailbox(id))->subscribed);
  EXPECT_FALSE(db_->set_subscribed(id + 1, true));
}

// --- Sync state ---

TEST_F(StateDbTest, SideStateIsPerSideAndKeepsExtremeValues) {
  const MailboxId id = add("INBOX");
  const SideState local{4294967295u, 4294967295u, ~ModSeq{0}};  // 2^64-1 survives
  const SideState remote{1, 1, (ModSeq{1} << 63) - 1};
  ASSERT_TRUE(db_->set_side_state(id, Side::local, local));
  ASSERT_TRUE(db_->set_side_state(id, Side::remote, remote));
  reopen();
  EXPECT_EQ(*db_->side_state(id, Side::local), local);
  EXPECT_EQ(*db_->side_state(id, Side::remote), remote);
  auto m = db_->get_mailbox(id);
  EXPECT_EQ((*m)->sides[Side::local], local);
  EXPECT_EQ((*m)->sides[Side::remote], remote);
}

TEST_F(StateDbTest, SideStateFieldsAreSetOneAtATime) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->set_uidvalidity(id, Side::remote, 77));
  EXPECT_EQ(*db_->side_state(id, Side::remote), (SideState{77, std::nullopt, std::nullopt}));
  ASSERT_TRUE(db_->set_highestmodseq(id, Side::remote, 1000));
  ASSERT_TRUE(db_->set_uidnext(id, Side::remote, 12));
  EXPECT_EQ(*db_->side_state(id, Side::remote), (SideState{77, 12, 1000}));
  ASSERT_TRUE(db_->set_highestmodseq(id, Side::remote, std::nullopt));
  EXPECT_EQ(*db_->side_state(id, Side::remote), (SideState{77, 12, std::nullopt}));
  EXPECT_EQ(*db_->side_state(id, Side::local), SideState{});
}

TEST_F(StateDbTest, SideStateOfAnUnknownMailboxIsAnError) {
  const std::string expected = "no mailbox with id 99 in the state database";
  auto get = db_->side_state(99, Side::local);
  ASSERT_FALSE(get);
  EXPECT_EQ(get.error().message, expected);
  auto set = db_->set_side_state(99, Side::local, {1, 1, 1});
  ASSERT_FALSE(set);
  EXPECT_EQ(set.error().code, Errc::internal);
  EXPECT_EQ(set.error().message, expected);
  auto field = db_->set_uidnext(99, Side::remote, 5);
  ASSERT_FALSE(field);
  EXPECT_EQ(field.error().message, expected);
}

// --- Mapping ---

TEST_F(StateDbTest, PairsAreFoundFromEitherSide) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(10, 20, "\\Flagged \\Seen")));
  for (auto [side, uid] : {std::pair{Side::local, Uid{10}}, std::pair{Side::remote, Uid{20}}}) {
    auto found = db_->find_pair(id, side, uid);
    ASSERT_TRUE(found);
    ASSERT_TRUE(found->has_value()) << side_name(side);
    EXPECT_EQ(**found, pair(10, 20, "\\Flagged \\Seen"));
  }
  EXPECT_FALSE(db_->find_pair(id, Side::local, 20)->has_value());
  EXPECT_FALSE(db_->find_pair(id, Side::remote, 10)->has_value());
}

TEST_F(StateDbTest, MappingIsPerMailbox) {
  const MailboxId a = add("a");
  const MailboxId b = add("b");
  ASSERT_TRUE(db_->add_pair(a, pair(1, 1)));
  ASSERT_TRUE(db_->add_pair(b, pair(1, 1)));  // same UIDs, other mailbox
  EXPECT_EQ(*db_->count_pairs(a), 1u);
  EXPECT_EQ(*db_->count_pairs(b), 1u);
}

TEST_F(StateDbTest, DuplicateUidOnEitherSideZeroUidAndUnknownMailboxAreRejected) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 2)));
  auto same_local = db_->add_pair(id, pair(1, 3));
  ASSERT_FALSE(same_local);
  EXPECT_EQ(same_local.error().code, Errc::internal);
  EXPECT_EQ(same_local.error().message,
            fmt::format("{}: statement failed: UNIQUE constraint failed: mapping.mailbox_id, "
                        "mapping.local_uid (SQLITE_CONSTRAINT, extended code 1555)",
                        label()));
  auto same_remote = db_->add_pair(id, pair(4, 2));
  ASSERT_FALSE(same_remote);
  EXPECT_EQ(same_remote.error().message,
            fmt::format("{}: statement failed: UNIQUE constraint failed: mapping.mailbox_id, "
                        "mapping.remote_uid (SQLITE_CONSTRAINT, extended code 2067)",
                        label()));
  auto zero = db_->add_pair(id, pair(0, 5));
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, Errc::internal);
  auto no_mailbox = db_->add_pair(id + 1, pair(1, 1));
  ASSERT_FALSE(no_mailbox);
  EXPECT_EQ(no_mailbox.error().message,
            fmt::format("{}: statement failed: FOREIGN KEY constraint failed (SQLITE_CONSTRAINT, "
                        "extended code 787)",
                        label()));
  EXPECT_EQ(*db_->count_pairs(id), 1u);
}

TEST_F(StateDbTest, RemovePairBySideReportsWhetherItExisted) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 2)));
  ASSERT_TRUE(db_->add_pair(id, pair(3, 4)));
  EXPECT_TRUE(*db_->remove_pair(id, Side::remote, 4));
  EXPECT_FALSE(*db_->remove_pair(id, Side::remote, 4));
  EXPECT_FALSE(*db_->remove_pair(id, Side::local, 2));  // 2 is a remote UID
  EXPECT_TRUE(*db_->remove_pair(id, Side::local, 1));
  EXPECT_EQ(*db_->count_pairs(id), 0u);
}

TEST_F(StateDbTest, FlagsAreUpdatedFromEitherSide) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 2, "\\Seen")));
  ASSERT_TRUE(db_->set_pair_flags(id, Side::remote, 2, "$Label1 \\Seen"));
  EXPECT_EQ((*db_->find_pair(id, Side::local, 1))->flags, "$Label1 \\Seen");
  ASSERT_TRUE(db_->set_pair_flags(id, Side::local, 1, ""));
  EXPECT_EQ((*db_->find_pair(id, Side::local, 1))->flags, "");
  auto missing = db_->set_pair_flags(id, Side::local, 2, "x");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::internal);
  EXPECT_EQ(missing.error().message,
            fmt::format("{}: no pair with local UID 2 in mailbox {}", label(), id));
}

TEST_F(StateDbTest, IterationFollowsTheChosenSidesUidOrderWithinARange) {
  const MailboxId id = add("INBOX");
  // Remote UIDs run backwards relative to local ones.
  for (Uid l = 1; l <= 5; ++l) ASSERT_TRUE(db_->add_pair(id, pair(l, 100 - l)));
  auto by_local = db_->pairs(id, Side::local);
  ASSERT_TRUE(by_local);
  ASSERT_EQ(by_local->size(), 5u);
  for (Uid i = 0; i < 5; ++i) EXPECT_EQ((*by_local)[i].uids[Side::local], i + 1);
  auto by_remote = db_->pairs(id, Side::remote);
  ASSERT_TRUE(by_remote);
  ASSERT_EQ(by_remote->size(), 5u);
  for (Uid i = 0; i < 5; ++i) EXPECT_EQ((*by_remote)[i].uids[Side::remote], 95 + i);
  auto range = db_->pairs(id, Side::local, 2, 4);
  ASSERT_TRUE(range);
  ASSERT_EQ(range->size(), 3u);
  EXPECT_EQ(range->front(), pair(2, 98));
  EXPECT_EQ(range->back(), pair(4, 96));
  // "Interrupted sync" rows: UIDs at or above a stored UIDNEXT.
  auto above = db_->pairs(id, Side::remote, 97);
  ASSERT_TRUE(above);
  EXPECT_EQ(above->size(), 3u);
}

TEST_F(StateDbTest, VisitorErrorStopsIterationAndIsReturned) {
  const MailboxId id = add("INBOX");
  for (Uid l = 1; l <= 5; ++l) ASSERT_TRUE(db_->add_pair(id, pair(l, l)));
  int visited = 0;
  auto s = db_->for_each_pair(id, Side::local, [&](const Pair& p) -> Status {
    ++visited;
    if (p.uids[Side::local] == 2) return Error(Errc::io, "stop here");
    return ok_status();
  });
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "stop here");
  EXPECT_EQ(visited, 2);
  // The statement was reset: iterating again works.
  EXPECT_EQ(db_->pairs(id, Side::local)->size(), 5u);
}

TEST_F(StateDbTest, VisitorMayReadButNotReenterTheIteration) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 1)));
  auto s = db_->for_each_pair(id, Side::local, [&](const Pair& p) -> Status {
    auto found = db_->find_pair(id, Side::remote, p.uids[Side::remote]);
    if (!found) return std::move(found).error();
    return db_->for_each_pair(id, Side::local, [](const Pair&) { return ok_status(); });
  });
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::internal);
  EXPECT_EQ(
      s.error().message,
      fmt::format("{}: statement already in use (a re-entrant call from a row visitor?)", label()));
}

TEST_F(StateDbTest, RemoveAllPairsOfAMailboxCountsThem) {
  const MailboxId a = add("a");
  const MailboxId b = add("b");
  for (Uid l = 1; l <= 3; ++l) ASSERT_TRUE(db_->add_pair(a, pair(l, l)));
  ASSERT_TRUE(db_->add_pair(b, pair(1, 1)));
  EXPECT_EQ(*db_->remove_all_pairs(a), 3u);
  EXPECT_EQ(*db_->count_pairs(a), 0u);
  EXPECT_EQ(*db_->count_pairs(b), 1u);
}

// 100k rows take about 0.5 s to insert and commit in a release build. Under ASan every one of
// SQLite's ~6 mallocs per executed statement (Debian builds it without lookaside) lands in ASan's
// quarantine, which makes it ten times slower: the sanitized build checks the same code paths
// with a quarter of the rows.
#if defined(__SANITIZE_ADDRESS__)
constexpr Uid kManyPairs = 25'000;
#else
constexpr Uid kManyPairs = 100'000;
#endif

TEST_F(StateDbTest, HundredThousandPairsInOneTransactionStayFast) {
  const MailboxId id = add("INBOX");
  constexpr Uid kCount = kManyPairs;
  const auto start = std::chrono::steady_clock::now();
  {
    auto tx = db_->begin();
    ASSERT_TRUE(tx);
    for (Uid l = 1; l <= kCount; ++l) {
      // Remote UIDs interleave so that remote order differs from local order.
      const Uid r = (l % 2 == 0) ? l / 2 : kCount / 2 + (l + 1) / 2;
      auto s = db_->add_pair(id, pair(l, r, l % 3 == 0 ? "\\Seen" : ""));
      ASSERT_TRUE(s) << s.error().to_string();
    }
    ASSERT_TRUE(tx->commit());
  }
  const auto inserted = std::chrono::steady_clock::now();
  EXPECT_EQ(*db_->count_pairs(id), kCount);
  for (Side order : kSides) {
    Uid previous = 0;
    std::uint64_t n = 0;
    auto s = db_->for_each_pair(id, order, [&](const Pair& p) -> Status {
      if (p.uids[order] <= previous) return Error(Errc::internal, "out of order");
      previous = p.uids[order];
      ++n;
      return ok_status();
    });
    ASSERT_TRUE(s) << s.error().to_string();
    EXPECT_EQ(n, kCount);
  }
  const auto iterated = std::chrono::steady_clock::now();
  EXPECT_EQ(*db_->remove_all_pairs(id), kCount);
  const auto removed = std::chrono::steady_clock::now();
  using ms = std::chrono::milliseconds;
  std::printf("%u pairs: insert+commit %lld ms, iterate both orders %lld ms, remove %lld ms\n",
              kCount,
              static_cast<long long>(std::chrono::duration_cast<ms>(inserted - start).count()),
              static_cast<long long>(std::chrono::duration_cast<ms>(iterated - inserted).count()),
              static_cast<long long>(std::chrono::duration_cast<ms>(removed - iterated).count()));
}

// --- UIDVALIDITY change ---

TEST_F(StateDbTest, ClearSideTurnsPairsIntoOrphansOfTheSurvivingSide) {
  const MailboxId id = add("INBOX");
  const MailboxId other_mailbox = add("Sent");
  ASSERT_TRUE(db_->set_side_state(id, Side::local, {111, 50, 500}));
  ASSERT_TRUE(db_->set_side_state(id, Side::remote, {222, 60, 600}));
  ASSERT_TRUE(db_->add_pair(id, pair(1, 11, "\\Seen")));
  ASSERT_TRUE(db_->add_pair(id, pair(2, 12, "\\Flagged")));
  ASSERT_TRUE(db_->add_pair(other_mailbox, pair(1, 11)));
  auto orphaned = db_->clear_side(id, Side::local);
  ASSERT_TRUE(orphaned) << orphaned.error().to_string();
  EXPECT_EQ(*orphaned, 2u);
  EXPECT_EQ(*db_->count_pairs(id), 0u);
  EXPECT_EQ(*db_->count_orphans(id), 2u);
  EXPECT_EQ(*db_->orphans(id),
            (std::vector<Orphan>{{Side::remote, 11, "\\Seen"}, {Side::remote, 12, "\\Flagged"}}));
  EXPECT_EQ(*db_->side_state(id, Side::local), SideState{});
  EXPECT_EQ(*db_->side_state(id, Side::remote), (SideState{222, 60, 600}));
  EXPECT_EQ(*db_->count_pairs(other_mailbox), 1u);
}

TEST_F(StateDbTest, RematchedOrphanBecomesAPairWithItsFlags) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 11, "\\Seen")));
  ASSERT_TRUE(db_->add_pair(id, pair(2, 12, "\\Flagged")));
  ASSERT_TRUE(db_->clear_side(id, Side::local));
  ASSERT_TRUE(db_->set_uidvalidity(id, Side::local, 999));
  ASSERT_TRUE(db_->rematch_orphan(id, Side::remote, 12, 7));
  EXPECT_EQ(**db_->find_pair(id, Side::local, 7), pair(7, 12, "\\Flagged"));
  EXPECT_EQ(*db_->orphans(id), (std::vector<Orphan>{{Side::remote, 11, "\\Seen"}}));
  // The unmatched one is copied again by the engine, never deleted: it just stops being an
  // orphan once the copy is mapped.
  auto tx = db_->begin();
  ASSERT_TRUE(tx);
  ASSERT_TRUE(*db_->remove_orphan(id, Side::remote, 11));
  ASSERT_TRUE(db_->add_pair(id, pair(8, 11, "\\Seen")));
  ASSERT_TRUE(tx->commit());
  EXPECT_EQ(*db_->count_orphans(id), 0u);
  EXPECT_FALSE(*db_->remove_orphan(id, Side::remote, 11));
}

TEST_F(StateDbTest, RematchOfAMissingOrphanOrOntoAMappedUidFailsAndKeepsTheOrphan) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 11)));
  ASSERT_TRUE(db_->add_pair(id, pair(2, 12)));
  ASSERT_TRUE(db_->clear_side(id, Side::remote));
  auto missing = db_->rematch_orphan(id, Side::local, 5, 50);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::internal);
  EXPECT_EQ(missing.error().message,
            fmt::format("{}: no orphan with local UID 5 in mailbox {}", label(), id));
  ASSERT_TRUE(db_->rematch_orphan(id, Side::local, 1, 50));
  auto taken = db_->rematch_orphan(id, Side::local, 2, 50);  // remote 50 is already paired
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, Errc::internal);
  EXPECT_EQ(*db_->orphans(id), (std::vector<Orphan>{{Side::local, 2, ""}}));
}

TEST_F(StateDbTest, ClearingBothSidesLeavesNothingToRematch) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 11)));
  ASSERT_TRUE(db_->clear_side(id, Side::local));
  // Orphans known by remote UIDs are void once remote changes UIDVALIDITY too.
  auto orphaned = db_->clear_side(id, Side::remote);
  ASSERT_TRUE(orphaned);
  EXPECT_EQ(*orphaned, 0u);
  EXPECT_EQ(*db_->count_orphans(id), 0u);
}

TEST_F(StateDbTest, ClearSideKeepsEarlierOrphansOfTheSameSurvivingSide) {
  const MailboxId id = add("INBOX");
  ASSERT_TRUE(db_->add_pair(id, pair(1, 11)));
  ASSERT_TRUE(db_->clear_side(id, Side::local));
  ASSERT_TRUE(db_->add_pair(id, pair(5, 12)));  // re-matching had started
  // Local's UIDVALIDITY changes again before re-matching finished.
  auto orphaned = db_->clear_side(id, Side::local);
  ASSERT_TRUE(orphaned);
  EXPECT_EQ(*orphaned, 1u);
  EXPECT_EQ(*db_->orphans(id),
            (std::vector<Orphan>{{Side::remote, 11, ""}, {Side::remote, 12, ""}}));
}

TEST_F(StateDbTest, ClearSideOfAnUnknownMailboxIsAnError) {
  auto cleared = db_->clear_side(42, Side::local);
  ASSERT_FALSE(cleared);
  EXPECT_EQ(cleared.error().message, "no mailbox with id 42 in the state database");
}

// --- Intents ---

TEST_F(StateDbTest, IntentRoundTripsEveryField) {
  const MailboxId id = add("INBOX");
  Intent intent;
  intent.mailbox = id;
  intent.kind = "append";
  intent.target_side = Side::remote;
  intent.source_uid = 17;
  intent.target_uidnext_before = 4294967295u;
  intent.message_id = "<a@b>";
  intent.size = 5'000'000'000;
  intent.body_hash = "sha256:00ff";
  intent.flags = "\\Seen";
  intent.payload = std::string("bytes\0kept", 10);
  intent.created_at = 1'700'000'000;
  auto recorded = db_->record_intent(intent);
  ASSERT_TRUE(recorded) << recorded.error().to_string();
  intent.id = *recorded;
  reopen();
  auto pending = db_->pending_intents();
  ASSERT_TRUE(pending);
  EXPECT_EQ(*pending, std::vector<Intent>{intent});
}

TEST_F(StateDbTest, IntentWithOnlyRequiredFieldsGetsTheCurrentTime) {
  Intent intent;
  intent.kind = "create_mailbox";
  intent.payload = "Archive";
  const auto before = std::time(nullptr);
  auto id = db_->record_intent(intent);
  ASSERT_TRUE(id);
  auto pending = db_->pending_intents();
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 1u);
  const Intent& got = pending->front();
  EXPECT_EQ(got.mailbox, std::nullopt);
  EXPECT_EQ(got.source_uid, std::nullopt);
  EXPECT_EQ(got.size, std::nullopt);
  EXPECT_EQ(got.message_id, std::nullopt);
  EXPECT_GE(got.created_at, before);
  EXPECT_LE(got.created_at, std::time(nullptr));
}

TEST_F(StateDbTest, InvalidIntentIsRejected) {
  Intent no_kind;
  EXPECT_FALSE(db_->record_intent(no_kind));
  Intent bad_mailbox;
  bad_mailbox.kind = "expunge";
  bad_mailbox.mailbox = 1234;
  auto s = db_->record_intent(bad_mailbox);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::internal);
  EXPECT_EQ(*db_->pending_intents(), std::vector<Intent>{});
}

TEST_F(StateDbTest, PendingIntentsAreListedInRecordOrderPerMailbox) {
  const MailboxId a = add("a");
  const MailboxId b = add("b");
  std::vector<IntentId> ids;
  for (MailboxId m : {a, b, a}) {
    Intent intent;
    intent.mailbox = m;
    intent.kind = "store_flags";
    auto id = db_->record_intent(intent);
    ASSERT_TRUE(id);
    ids.push_back(*id);
  }
  EXPECT_LT(ids[0], ids[1]);
  EXPECT_LT(ids[1], ids[2]);
  auto of_a = db_->pending_intents(a);
  ASSERT_TRUE(of_a);
  ASSERT_EQ(of_a->size(), 2u);
  EXPECT_EQ((*of_a)[0].id, ids[0]);
  EXPECT_EQ((*of_a)[1].id, ids[2]);
  EXPECT_EQ(db_->pending_intents()->size(), 3u);
}

TEST_F(StateDbTest, IntentLifecycleCompletesAtomicallyWithItsOutcome) {
  const MailboxId id = add("INBOX");
  // 1. Intent recorded and committed before the APPEND is sent.
  Intent append;
  append.mailbox = id;
  append.kind = "append";
  append.target_side = Side::local;
  append.source_uid = 42;
  append.target_uidnext_before = 7;
  auto intent = db_->record_intent(append);
  ASSERT_TRUE(intent);
  // 2. A crash before the outcome is recorded: the transaction is rolled back, the intent stays.
  {
    auto tx = db_->begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(db_->add_pair(id, pair(7, 42)));
    ASSERT_TRUE(db_->complete_intent(*intent));
  }  // destroyed without commit
  reopen();
  EXPECT_EQ(db_->pending_intents()->size(), 1u);
  EXPECT_FALSE(db_->find_pair(id, Side::remote, 42)->has_value());
  // 3. The outcome and the completion commit together.
  {
    auto tx = db_->begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(db_->add_pair(id, pair(7, 42)));
    ASSERT_TRUE(db_->set_uidnext(id, Side::local, 8));
    ASSERT_TRUE(db_->complete_intent(*intent));
    ASSERT_TRUE(tx->commit());
  }
  reopen();
  EXPECT_TRUE(db_->pending_intents()->empty());
  EXPECT_TRUE(db_->find_pair(id, Side::remote, 42)->has_value());
  auto again = db_->complete_intent(*intent);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::internal);
  EXPECT_EQ(again.error().message, fmt::format("{}: no pending intent {}", label(), *intent));
}

TEST_F(StateDbTest, StreamedAppendRecordsItsHashLater) {
  const MailboxId id = add("INBOX");
  Intent append;
  append.mailbox = id;
  append.kind = "append";
  append.size = 5 << 20;
  auto intent = db_->record_intent(append);
  ASSERT_TRUE(intent);
  EXPECT_FALSE(db_->pending_intents(id)->at(0).body_hash.has_value());
  ASSERT_TRUE(db_->set_intent_hash(*intent, "abc123"));
  reopen();
  EXPECT_EQ(db_->pending_intents(id)->at(0).body_hash, std::optional<std::string>("abc123"));
  ASSERT_TRUE(db_->complete_intent(*intent));
  auto gone = db_->set_intent_hash(*intent, "def");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::internal);
}

TEST_F(StateDbTest, IntentIdsAreNeverReused) {
  Intent intent;
  intent.kind = "expunge";
  auto first = db_->record_intent(intent);
  ASSERT_TRUE(first);
  ASSERT_TRUE(db_->complete_intent(*first));
  auto second = db_->record_intent(intent);
  ASSERT_TRUE(second);
  EXPECT_GT(*second, *first);
}

TEST_F(StateDbTest, MailboxWithPendingIntentsCannotBeDeleted) {
  const MailboxId id = add("INBOX");
  Intent intent;
  intent.mailbox = id;
  intent.kind = "expunge";
  auto recorded = db_->record_intent(intent);
  ASSERT_TRUE(recorded);
  auto s = db_->delete_mailbox(id);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::internal);
  EXPECT_EQ(s.error().message,
            fmt::format("{}: cannot delete mailbox {}: 1 intent about it is pending", label(), id));
  ASSERT_TRUE(db_->complete_intent(*recorded));
  EXPECT_TRUE(db_->delete_mailbox(id));
}

// --- Transactions ---

TEST_F(StateDbTest, TransactionRollsBackOnDestruction) {
  const MailboxId id = add("INBOX");
  {
    auto tx = db_->begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(db_->add_mailbox("Sent", false));
    ASSERT_TRUE(db_->add_pair(id, pair(1, 1)));
    ASSERT_TRUE(db_->rename_mailbox("INBOX", "Renamed"));
    ASSERT_TRUE(db_->set_side_state(id, Side::local, {1, 2, 3}));
    EXPECT_EQ(names(), (std::vector<std::string>{"Renamed", "Sent"}));  // visible inside
  }
  EXPECT_EQ(names(), std::vector<std::string>{"INBOX"});
  EXPECT_EQ(*db_->count_pairs(id), 0u);
  EXPECT_EQ(*db_->side_state(id, Side::local), SideState{});
}

TEST_F(StateDbTest, CommittedTransactionSurvivesReopen) {
  {
    auto tx = db_->begin();
    ASSERT_TRUE(tx);
    const MailboxId id = add("INBOX");
    ASSERT_TRUE(db_->add_pair(id, pair(1, 1)));
    ASSERT_TRUE(tx->commit());
    EXPECT_FALSE(tx->active());
  }
  reopen();
  EXPECT_EQ(names(), std::vector<std::string>{"INBOX"});
}

TEST_F(StateDbTest, ExplicitRollbackAndMisuseOfAFinishedTransaction) {
  auto tx = db_->begin();
  ASSERT_TRUE(tx);
  add("INBOX");
  ASSERT_TRUE(tx->rollback());
  EXPECT_TRUE(names().empty());
  auto commit = tx->commit();
  ASSERT_FALSE(commit);
  EXPECT_EQ(commit.error().message, "commit of a finished transaction");
  // A new one can start after the first finished.
  auto next = db_->begin();
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->commit());
}

TEST_F(StateDbTest, NestedTransactionIsRefused) {
  auto tx = db_->begin();
  ASSERT_TRUE(tx);
  auto nested = db_->begin();
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().code, Errc::internal);
  EXPECT_EQ(nested.error().message, fmt::format("{}: a transaction is already open", label()));
}

TEST_F(StateDbTest, FailedCompoundWriteInsideATransactionUndoesOnlyItself) {
  add("a");
  add("b");
  auto tx = db_->begin();
  ASSERT_TRUE(tx);
  add("c");
  ASSERT_FALSE(db_->rename_mailbox("a", "b"));  // collision: the rename is undone
  ASSERT_TRUE(tx->commit());                    // what came before it is kept
  EXPECT_EQ(names(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(StateDbTest, TransactionMayBeMovedAndStillRollsBackOnce) {
  {
    auto tx = db_->begin();
    ASSERT_TRUE(tx);
    Transaction moved = std::move(tx).value();
    add("INBOX");
    EXPECT_TRUE(moved.active());
  }
  EXPECT_TRUE(names().empty());
  auto tx = db_->begin();
  EXPECT_TRUE(tx);
}

}  // namespace
}  // namespace twinbox::store
