#include "sync/mail_store.h"

#include "sync/progress.h"

#include <algorithm>

namespace twinbox::sync {

std::string_view tier_name(Tier tier) {
  switch (tier) {
    case Tier::qresync:
      return "QRESYNC";
    case Tier::condstore:
      return "CONDSTORE";
    case Tier::plain:
      return "plain IMAP";
  }
  return "?";
}

void Announcement::merge(const Announcement& later) {
  everywhere = everywhere || later.everywhere;
  touched.insert(later.touched.begin(), later.touched.end());
  for (const auto& [name, m] : later.listings) listings.insert_or_assign(name, m);
  for (const auto& [name, heard] : later.statuses) add_status(heard);
}

void Announcement::add_status(const ListedMailbox& m) {
  auto [it, fresh] = statuses.try_emplace(m.name, m);
  if (!fresh) update_status(it->second, m);
}

void update_status(ListedMailbox& m, const ListedMailbox& heard) {
  if (heard.uidvalidity) m.uidvalidity = heard.uidvalidity;
  if (heard.uidnext) m.uidnext = heard.uidnext;
  if (heard.highestmodseq) m.highestmodseq = heard.highestmodseq;
  if (heard.messages) m.messages = heard.messages;
}

asio::awaitable<Status> MailStore::prepare_for_work() { co_return ok_status(); }

asio::awaitable<Result<std::vector<Status>>> MailStore::create_all(
    const std::vector<std::string>& names) {
  std::vector<Status> out;
  for (const auto& name : names) {
    Status created = co_await create(name);
    if (!created && created.error().code != Errc::rejected) co_return created.error();
    out.push_back(std::move(created));
  }
  co_return out;
}

asio::awaitable<Status> MailStore::subscribe_all(
    const std::vector<std::pair<std::string, bool>>& subscriptions) {
  for (const auto& [name, on] : subscriptions) {
    Status changed = co_await subscribe(name, on);
    if (!changed) co_return changed;
  }
  co_return ok_status();
}

asio::awaitable<Result<std::optional<Settled>>> MailStore::append_and_settle(
    const std::string& name, std::vector<OutgoingMessage> messages, ModSeq modseq, Uid uidnext,
    const std::function<Status(const Appended&)>& on_appended) {
  auto appended = co_await append(name, std::move(messages));
  if (!appended) co_return appended.error();
  Status recorded = on_appended(*appended);
  if (!recorded) co_return recorded.error();
  auto settled = co_await settle(modseq, uidnext);
  if (!settled) co_return std::optional<Settled>();
  co_return std::optional<Settled>(std::move(*settled));
}

bool MailStore::holds_bodies(const std::vector<Uid>& /*uids*/) const { return false; }

asio::awaitable<Result<std::set<Uid>>> MailStore::expunge_and_set_flags(
    const std::vector<Uid>& expunges, const std::vector<FlagUpdate>& updates) {
  if (!expunges.empty()) {
    Status gone = co_await expunge(expunges);
    if (!gone) co_return gone.error();
  }
  if (updates.empty()) co_return std::set<Uid>{};
  co_return co_await set_flags(updates);
}

asio::awaitable<Result<std::vector<ListedMailbox>>> MailStore::status(
    const std::vector<std::string>& names) {
  // Named arguments: g++ 12 mishandles braced temporaries in a co_await expression.
  const std::vector<std::string> everything = {"*"};
  const std::vector<std::string> no_options;
  auto all = co_await list(everything, no_options);
  if (!all) co_return all.error();
  std::vector<ListedMailbox> out;
  for (auto& m : *all) {
    if (std::find(names.begin(), names.end(), m.name) != names.end()) out.push_back(std::move(m));
  }
  co_return out;
}

std::string_view outcome_name(MailboxReport::Outcome outcome) {
  switch (outcome) {
    case MailboxReport::Outcome::unchanged:
      return "unchanged";
    case MailboxReport::Outcome::synced:
      return "synced";
    case MailboxReport::Outcome::failed:
      return "failed";
  }
  return "?";
}

void UidSet::add(Uid first, Uid last) {
  if (first > last) std::swap(first, last);
  // The ranges that touch or overlap [first, last] merge with it.
  auto begin = std::lower_bound(ranges_.begin(), ranges_.end(), first, [](const Range& r, Uid v) {
    return r.last != kMaxUid && r.last + 1 < v;
  });
  auto end = begin;
  while (end != ranges_.end() && (last == kMaxUid || end->first <= last + 1)) {
    first = std::min(first, end->first);
    last = std::max(last, end->last);
    ++end;
  }
  begin = ranges_.erase(begin, end);
  ranges_.insert(begin, Range{first, last});
}

void UidSet::add(const UidSet& other) {
  for (const auto& r : other.ranges_) add(r.first, r.last);
}

UidSet absent_below(const std::set<Uid>& present, Uid below) {
  UidSet absent;
  Uid next = 1;  // the lowest UID not yet accounted for
  for (auto it = present.begin(); it != present.end() && *it < below; ++it) {
    if (*it > next) absent.add(next, *it - 1);
    next = *it + 1;
  }
  if (below > next) absent.add(next, below - 1);
  return absent;
}

bool UidSet::contains(Uid uid) const {
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), uid,
                             [](const Range& r, Uid v) { return r.last < v; });
  return it != ranges_.end() && it->first <= uid;
}

}  // namespace twinbox::sync
