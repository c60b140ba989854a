// --delete and --rename: the user's answer to "a known mailbox vanished from one side", since
// IMAP cannot tell a deletion from a rename. Same rules as InterIMAP's: --target restricts the
// sides, INBOX cannot be deleted, a name that exists nowhere is a no-op, and a rename never
// overwrites an existing mailbox.
#include <fmt/format.h>

#include "base/log.h"
#include "imap/mailbox_name.h"
#include "sync/engine.h"

namespace twinbox::sync {

asio::awaitable<Status> Engine::connect_for_names() {
  Status connected = co_await connect();
  if (!connected) co_return connected;
  // Names on the command line use the local delimiter (from_command_line()).
  auto delimiter = co_await stores_[Side::local]->delimiter();
  if (!delimiter) co_return delimiter.error();
  local_delimiter_ = *delimiter;
  co_return ok_status();
}

asio::awaitable<Status> Engine::delete_mailboxes(const std::vector<std::string>& names,
                                                 Targets targets) {
  Status connected = co_await connect_for_names();
  if (!connected) co_return connected;
  std::vector<std::string> internal;
  for (const auto& name : names) {
    internal.push_back(from_command_line(name));
    if (internal.back() == "INBOX" || imap::is_inbox(internal.back())) {
      co_return Error(Errc::usage, "INBOX cannot be deleted");
    }
  }
  for (Side side : kSides) {
    if (!targets.side(side)) continue;
    auto listed = co_await stores_[side]->list(internal, {});
    if (!listed) co_return listed.error();
    for (const auto& m : *listed) {
      // Only the named mailbox: not recursive (RFC 9051 §6.3.4), and a \Noselect parent that
      // only holds children is left alone.
      if (!m.selectable) continue;
      Status removed = co_await stores_[side]->remove(m.name);
      if (!removed) co_return removed;
      log_info("{}deleted mailbox", log_prefix(side, m.name));
      // DELETE leaves the subscription behind (RFC 9051 §6.3.4): a deleted mailbox should not
      // stay in the user's folder list.
      if (m.subscribed) {
        Status unsubscribed = co_await stores_[side]->subscribe(m.name, false);
        if (!unsubscribed) co_return unsubscribed;
      }
    }
  }
  if (targets.database) {
    for (const auto& name : internal) {
      auto record = db_.find_mailbox(name);
      if (!record) co_return record.error();
      if (!*record) continue;
      auto pending = db_.pending_intents((*record)->id);
      if (!pending) co_return pending.error();
      for (const auto& intent : *pending) {
        Status dropped = db_.complete_intent(intent.id);
        if (!dropped) co_return dropped;
      }
      Status removed = db_.delete_mailbox((*record)->id);
      if (!removed) co_return removed;
      log_info("database: removed mailbox {}", shown(name));
    }
  }
  for (Side side : kSides) co_await stores_[side]->logout();
  disconnect();
  co_return ok_status();
}

asio::awaitable<Status> Engine::rename_mailbox(const std::string& from_name,
                                               const std::string& to_name, Targets targets) {
  Status connected = co_await connect_for_names();
  if (!connected) co_return connected;
  const std::string from = from_command_line(from_name);
  const std::string to = from_command_line(to_name);
  if (from == to) co_return Error(Errc::usage, "--rename needs two different names");
  // The destination must not exist anywhere we are about to rename to.
  PerSide<bool> has_source{};
  for (Side side : kSides) {
    if (!targets.side(side)) continue;
    const std::vector<std::string> patterns = {to, from, from + std::string(1, '\0') + "*"};
    auto listed = co_await stores_[side]->list(patterns, {});
    if (!listed) co_return listed.error();
    for (const auto& m : *listed) {
      if (m.name == to && m.selectable) {
        co_return Error(Errc::usage,
                        fmt::format("{}: mailbox '{}' exists. Run 'twinbox --target={} --delete "
                                    "{}' to delete it first",
                                    side_name(side), shown(to), side_name(side), to_name));
      }
      // A \NonExistent parent with children is renamed too (its inferiors move with it).
      if (m.name == from || m.name.rfind(from + std::string(1, '\0'), 0) == 0) {
        has_source[side] = true;
      }
    }
  }
  std::optional<store::Mailbox> source_record;
  if (targets.database) {
    auto existing = db_.find_mailbox(to);
    if (!existing) co_return existing.error();
    if (*existing) {
      co_return Error(Errc::usage,
                      fmt::format("database: mailbox '{}' exists. Run 'twinbox --target=database "
                                  "--delete {}' to delete it first",
                                  shown(to), to_name));
    }
  }
  for (Side side : kSides) {
    if (!targets.side(side) || !has_source[side]) continue;
    Status renamed = co_await stores_[side]->rename(from, to);
    if (!renamed) co_return renamed;
    log_info("{}renamed mailbox to {}", log_prefix(side, from), shown(to));
  }
  if (targets.database) {
    auto renamed = db_.rename_mailbox(from, to);
    if (!renamed) co_return renamed.error();
    if (*renamed > 0) {
      log_info("database: renamed mailbox {} to {} ({} mailbox(es) with inferiors)", shown(from),
               shown(to), *renamed);
    }
  }
  for (Side side : kSides) co_await stores_[side]->logout();
  disconnect();
  co_return ok_status();
}

}  // namespace twinbox::sync
