// What the planner sees and decides, independent of IMAP syntax and of SQLite.
//
// The engine observes each side of one mailbox pair (what changed since the last sync, per
// RFC 7162: VANISHED, flag changes, new UIDs), loads the recorded state of that pair, and asks
// the pure planner (planner.h) what to do. The plan is then executed by the engine with intents
// recorded before each effect (engine.h). Nothing here talks to a server or a database.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store/side.h"

namespace twinbox::sync {

// The sides are the state database's (store/side.h): one definition for the whole program.
using store::kSides;
using store::other;
using store::PerSide;
using store::Side;
using store::side_name;
inline constexpr std::size_t index(Side s) { return store::side_index(s); }

using Uid = std::uint32_t;
using ModSeq = std::uint64_t;

// A flag set in canonical form: sorted, unique; system flags keep their backslash ("\\Seen"),
// keywords as sent. \Recent is never part of it (session-only, RFC 3501 §2.3.2).
//
// Flag names compare ignoring ASCII case, system flags and keywords alike: RFC 9051 §9 makes every
// alphabetic character of the grammar case-insensitive unless noted otherwise, and flag-keyword is
// a plain atom with no such note; RFC 8621 §4.1.1 (JMAP, which shares IMAP keywords) says so
// explicitly, and Dovecot stores keywords case-insensitively. "Sorted" therefore means by the
// ASCII-lowercased name, and "unique" means no two names equal ignoring case. See
// docs/conflicts.md.
using FlagSet = std::vector<std::string>;

// The canonical form of a flag list as a server sent it: \Recent (any case) and empty names
// dropped; the five system flags of RFC 9051 §2.3.2 spelled as the RFC spells them ("\SEEN" ->
// "\Seen"); sorted by the lowercased name; of several spellings of one keyword, the bytewise
// smallest is kept, so the result does not depend on the input order.
FlagSet canonical(std::vector<std::string> flags);

// A flag set as the state database stores it (store::Pair::flags): space-separated.
std::string join_flags(const FlagSet& flags);

// <0, 0, >0 comparing two flag names ignoring ASCII case (the order of a canonical FlagSet).
int compare_flags(std::string_view a, std::string_view b);
// Whether the canonical set `set` holds `flag`, ignoring case (binary search).
bool has_flag(const FlagSet& set, std::string_view flag);
// Whether two canonical sets hold the same flags, ignoring case.
bool same_flags(const FlagSet& a, const FlagSet& b);

// One message pair recorded by the last sync: the UIDs on both sides and the flags both had
// then (the base of the three-way merge).
struct Pair {
  Uid local_uid = 0;
  Uid remote_uid = 0;
  FlagSet flags;

  bool operator==(const Pair&) const = default;
};

// A message seen on one side and not yet paired.
struct NewMessage {
  Uid uid = 0;
  FlagSet flags;
  std::string internal_date;  // as the server sent it
  std::uint64_t size = 0;

  bool operator==(const NewMessage&) const = default;
};

// What one side reported since the last sync of this mailbox.
struct SideChanges {
  std::vector<Uid> vanished;      // expunged UIDs (may name unknown UIDs)
  std::map<Uid, FlagSet> flags;   // current flags of messages whose flags changed
  std::map<Uid, ModSeq> modseq;   // their MODSEQ (for UNCHANGEDSINCE)
  std::vector<NewMessage> added;  // UIDs >= the recorded UIDNEXT
};

struct MailboxObservation {
  // Recorded pairs of this mailbox: all of them, or at least every pair that a change names
  // (the planner acts on no other).
  std::vector<Pair> pairs;
  PerSide<SideChanges> changes;
};

// ---- The plan -------------------------------------------------------------------------------

// Copy a message from `from` to the other side, keeping flags and INTERNALDATE.
struct CopyAction {
  Side from = Side::local;
  Uid uid = 0;  // on `from`
  FlagSet flags;
  // Empty / 0 when the planner does not know them (a copy that `replaces` a pair): the engine takes
  // INTERNALDATE and the size from its UID FETCH of the body.
  std::string internal_date;
  std::uint64_t size = 0;
  // When the copy replaces a pair that was expunged on the other side while this side changed
  // the message (see the conflict rules): the pair to drop once the copy is recorded.
  std::optional<Pair> replaces;

  bool operator==(const CopyAction&) const = default;
};

// Expunge `uid` on side `on` (UID STORE +FLAGS.SILENT (\Deleted) + UID EXPUNGE of exactly it),
// because its partner vanished on the other side.
struct ExpungeAction {
  Side on = Side::local;
  Uid uid = 0;
  Pair pair;  // the pair to forget once done

  bool operator==(const ExpungeAction&) const = default;
};

// Set the flags of `uid` on side `on` to the merge result, conditional on the message
// not having changed since `unchanged_since` (UNCHANGEDSINCE; 0 = unconditional is never used).
//
// `unchanged_since` is the MODSEQ that side reported with the message's flag change. It is nullopt
// when that side did not report the message (or reported it without a MODSEQ): the engine then
// uses that side's HIGHESTMODSEQ from the same observation (the value CHANGEDSINCE ran up to). For
// a message the side did not report, the recorded HIGHESTMODSEQ the CHANGEDSINCE started from is
// an equally valid bound: an unreported message has MODSEQ <= it.
struct StoreAction {
  Side on = Side::local;
  Uid uid = 0;
  FlagSet add, remove;  // the difference to apply on that side (canonical sets)
  std::optional<ModSeq> unchanged_since;

  bool operator==(const StoreAction&) const = default;
};

// Record new base flags for a pair (after the stores succeed, or when both sides already agree).
struct RecordFlags {
  Pair pair;  // with the merged flags

  bool operator==(const RecordFlags&) const = default;
};

// Forget a pair: both sides vanished, or one side vanished and the other is being expunged. In the
// second case an ExpungeAction names the same pair: forget it only once that expunge is confirmed.
// A pair replaced by a CopyAction (`replaces`) gets no ForgetPair: recording the copy replaces it.
struct ForgetPair {
  Pair pair;

  bool operator==(const ForgetPair&) const = default;
};

struct Plan {
  std::vector<ExpungeAction> expunges;
  std::vector<StoreAction> stores;
  std::vector<CopyAction> copies;
  std::vector<RecordFlags> records;
  std::vector<ForgetPair> forgets;
  std::vector<std::string> notes;  // one line per conflict resolved, for the log and --dry-run
  bool empty() const {
    return expunges.empty() && stores.empty() && copies.empty() && records.empty() &&
           forgets.empty();
  }
  bool operator==(const Plan&) const = default;
};

}  // namespace twinbox::sync
