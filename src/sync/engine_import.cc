// --import-interimap: switching from InterIMAP keeps every pair, so nothing is downloaded again.
#include <fmt/format.h>

#include "base/log.h"
#include "sync/engine.h"

namespace twinbox::sync {

asio::awaitable<Status> Engine::import_interimap(const std::vector<InterimapMailbox>& mailboxes) {
  // Mixing InterIMAP's pairs into state twinbox already keeps could pair a message twice.
  auto existing = db_.list_mailboxes();
  if (!existing) co_return existing.error();
  if (!existing->empty()) {
    co_return Error(Errc::usage,
                    fmt::format("the state database {} already holds {} mailbox(es): an import "
                                "only goes into a new one (set another `database`, or move this "
                                "one away); nothing was imported",
                                db_.path(), existing->size()));
  }
  Status connected = co_await connect();
  if (!connected) co_return connected;

  struct Imported {
    const InterimapMailbox* from;
    std::vector<store::Pair> pairs;
  };
  std::vector<Imported> imported;
  std::size_t skipped = 0, pair_count = 0;
  for (const InterimapMailbox& m : mailboxes) {
    if (ignored(m.name)) continue;
    if (!m.complete()) {
      log_warning(
          "{}: InterIMAP never finished syncing it; left for twinbox's first sync, which "
          "pairs identical messages by content",
          shown(m.name));
      ++skipped;
      continue;
    }
    // Every message of both sides, with its flags and MODSEQ: the pairs' base flags.
    PerSide<std::map<Uid, CopyNow>> now;
    bool usable = true;
    for (Side side : kSides) {
      auto all = co_await stores_[side]->observe_all(m.name);
      if (!all && all.error().code == Errc::rejected) {
        log_warning("{}cannot be selected ({}); left for twinbox's first sync",
                    log_prefix(side, m.name), all.error().message);
        usable = false;
        break;
      }
      if (!all) co_return all.error();
      if (all->state.uidvalidity != *m.sides[side]->uidvalidity) {
        log_warning(
            "{}UIDVALIDITY is {}, InterIMAP recorded {}; left for twinbox's first sync, "
            "which pairs identical messages by content",
            log_prefix(side, m.name), all->state.uidvalidity, *m.sides[side]->uidvalidity);
        usable = false;
        break;
      }
      for (auto& message : all->messages) {
        now[side][message.uid] = CopyNow{std::move(message.flags), message.modseq};
      }
    }
    if (!usable) {
      ++skipped;
      continue;
    }
    Imported entry{&m, {}};
    for (const auto& uids : m.pairs) {
      PerSide<std::optional<CopyNow>> copy;
      for (Side side : kSides) {
        auto it = now[side].find(uids[side]);
        if (it != now[side].end()) copy[side] = it->second;
      }
      store::Pair pair;
      pair.uids = uids;
      // A pair whose copies are gone stays: it is what lets the next sync propagate the
      // expunge instead of copying the other copy back.
      pair.flags = join_flags(
          import_base_flags(copy[Side::local], m.sides[Side::local]->highestmodseq.value_or(0),
                            copy[Side::remote], m.sides[Side::remote]->highestmodseq.value_or(0)));
      entry.pairs.push_back(std::move(pair));
    }
    pair_count += entry.pairs.size();
    imported.push_back(std::move(entry));
  }

  auto tx = db_.begin();
  if (!tx) co_return tx.error();
  for (const auto& entry : imported) {
    auto id = db_.add_mailbox(entry.from->name, entry.from->subscribed);
    if (!id) co_return id.error();
    for (Side side : kSides) {
      Status saved = db_.set_side_state(*id, side, *entry.from->sides[side]);
      if (!saved) co_return saved;
    }
    for (const auto& pair : entry.pairs) {
      Status added = db_.add_pair(*id, pair);
      if (!added) co_return added;
    }
  }
  Status committed = tx->commit();
  if (!committed) co_return committed;
  log_info("imported {} mailbox(es) and {} message pair(s) from InterIMAP{}", imported.size(),
           pair_count,
           skipped > 0 ? fmt::format("; {} mailbox(es) left for the first sync", skipped) : "");
  disconnect();
  co_return ok_status();
}

}  // namespace twinbox::sync
