// The pure planner: from what both sides of one mailbox reported since the last sync, and the
// recorded pairs, decide what to do. No I/O, no IMAP, no SQLite; the same observation always gives
// the same plan, byte for byte (ninja's planner/executor split).
//
// Rules (the per-pair and per-flag ones are the truth tables of conflict.h / docs/conflicts.md):
// - A pair is classified per side (unchanged, flags changed, flags changed with \Deleted,
//   vanished) and kPairTable gives the outcome: merge flags, expunge the survivor, copy the
//   survivor back (expunge vs concurrent edit), forget the pair.
// - Only messages listed in SideChanges::flags changed on that side; any other paired message has
//   the base flags there. A flag change on a vanished UID is superseded by the expunge.
// - A vanished UID that matches no pair is ignored (RFC 7162 §3.2.10 allows a server to report
//   UIDs the client never saw); one that is also in `added` (arrived and was expunged between two
//   syncs) is not copied.
// - Every `added` message still present is copied to the other side with its flags and
//   INTERNALDATE. A flag change for a UID that is neither paired nor new is ignored with a note (it
//   is not synced yet; the new-message pass owns it).
//
// The plan's lists are each sorted by side (local first) then UID, records and forgets by local
// UID, notes by the side and UID they concern: the output, and --dry-run's, is stable.
//
// Executing a plan (the engine's contract):
// - Every ExpungeAction has a ForgetPair with the same pair: forget it only after the expunge is
//   confirmed. Other ForgetPairs (expunged on both sides) can be applied at once.
// - A RecordFlags goes after the StoreActions of the same pair succeeded; a store answered with
//   MODIFIED means the message changed again: leave its base alone, the next observation sees it.
// - StoreAction::unchanged_since == nullopt: see StoreAction in model.h.
// - A CopyAction with `replaces` records the new pair in place of the replaced one.
#pragma once

#include <string>

#include "base/error.h"
#include "sync/model.h"

namespace twinbox::sync {

// The plan for one mailbox. Fails with Errc::internal, naming the culprit, when the observation is
// inconsistent (a bug or corrupt state, never a server's fault):
// - a pair with UID 0 on either side;
// - two pairs sharing a UID on one side;
// - a new message with UID 0, listed twice, or whose UID is already paired on its side;
// - UID 0 among a side's vanished UIDs or flag changes.
Result<Plan> plan_mailbox(const MailboxObservation& observation);

// One line per action then per note, in the plan's order, each ending with '\n'; "" for a plan
// with nothing in it. For --dry-run and the debug log, e.g.
//   expunge remote UID 9 (vanished on local)
//   store remote UID 7 +(\Flagged) -(\Seen) unchanged since 42
//   copy local UID 5 -> remote (\Seen $Label1)
std::string describe(const Plan& plan);

}  // namespace twinbox::sync
