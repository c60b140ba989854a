// Switching from InterIMAP without re-downloading anything: its state database (schema version
// 1, InterIMAP 0.5 and later; see ../shared/reference/interimap.md §7) read into the mailboxes,
// per-side UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ and message pairs that twinbox records.
//
// One thing InterIMAP does not record is the flags a pair had at its last sync, which twinbox's
// three-way merge needs as the base. import_base_flags() recovers it from the servers: a side
// whose copy has not changed since the recorded HIGHESTMODSEQ still shows the base.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "store/state_db.h"
#include "sync/model.h"

namespace twinbox::sync {

struct InterimapMailbox {
  std::int64_t idx = 0;  // InterIMAP's mailboxes.idx, for messages
  std::string name;      // twinbox's internal form: UTF-8, NUL between levels
  bool subscribed = false;
  // Absent when InterIMAP has no row for that side (the mailbox was never synced).
  store::PerSide<std::optional<store::SideState>> sides;
  std::vector<store::PerSide<Uid>> pairs;  // mapping rows: uids[local], uids[remote]
  // Whether InterIMAP finished a sync of it: UIDVALIDITY and a UIDNEXT on both sides.
  bool complete() const;
};

// Reads InterIMAP's database at `path` (read-only; never changes it). Errors name the file and
// what is wrong: not a database, not InterIMAP's (a twinbox database included), the pre-0.5
// schema, locked by a running interimap, a name that is not modified UTF-7, a UID out of range.
Result<std::vector<InterimapMailbox>> read_interimap_db(const std::string& path);

// What one copy of a paired message looks like now.
struct CopyNow {
  FlagSet flags;
  ModSeq modseq = 0;
};

// The base of a pair's three-way merge after an import: the flags of a copy that has not changed
// since that side's recorded HIGHESTMODSEQ (local first); if both changed, the flags they share
// (an addition on either side then survives, as with InterIMAP's union); if one copy is gone,
// the other's.
FlagSet import_base_flags(const std::optional<CopyNow>& local, ModSeq local_recorded,
                          const std::optional<CopyNow>& remote, ModSeq remote_recorded);

}  // namespace twinbox::sync
