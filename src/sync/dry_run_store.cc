#include "sync/dry_run_store.h"

#include <fmt/format.h>

#include "sync/engine.h"

namespace twinbox::sync {

void DryRunStore::record(std::string line) {
  fmt::print("{}: would {}\n", side_name(side()), line);
  std::fflush(stdout);
  recorded_.push_back(std::move(line));
}

Error DryRunStore::refused(const char* what) const {
  return Error(Errc::internal,
               fmt::format("{}: dry run: {} would change the server", side_name(side()), what));
}

asio::awaitable<Status> DryRunStore::create(const std::string& name) {
  record(fmt::format("create mailbox {}", shown(name)));
  created_.insert(name);
  co_return ok_status();
}

asio::awaitable<Status> DryRunStore::subscribe(const std::string& name, bool on) {
  record(fmt::format("{} mailbox {}", on ? "subscribe" : "unsubscribe", shown(name)));
  co_return ok_status();
}

asio::awaitable<Status> DryRunStore::remove(const std::string& name) {
  record(fmt::format("delete mailbox {}", shown(name)));
  co_return ok_status();
}

asio::awaitable<Status> DryRunStore::rename(const std::string& from, const std::string& to) {
  record(fmt::format("rename mailbox {} to {}", shown(from), shown(to)));
  co_return ok_status();
}

asio::awaitable<Result<SideObservation>> DryRunStore::observe(const std::string& name,
                                                              const store::SideState& recorded,
                                                              std::uint32_t listed_uidnext) {
  if (!created_.count(name)) co_return co_await real_->observe(name, recorded, listed_uidnext);
  // The mailbox this run would create: empty, with nothing to compare against.
  SideObservation empty;
  empty.uidnext = 1;
  co_return empty;
}

asio::awaitable<Result<FullObservation>> DryRunStore::observe_all(const std::string& name) {
  if (!created_.count(name)) co_return co_await real_->observe_all(name);
  FullObservation empty;
  empty.state.uidnext = 1;
  co_return empty;
}

asio::awaitable<Result<std::set<Uid>>> DryRunStore::set_flags(const std::vector<FlagUpdate>&) {
  co_return refused("UID STORE");
}

asio::awaitable<Status> DryRunStore::expunge(const std::vector<Uid>&) {
  co_return refused("UID EXPUNGE");
}

asio::awaitable<Result<Appended>> DryRunStore::append(const std::string&,
                                                      std::vector<OutgoingMessage>) {
  co_return refused("APPEND");
}

asio::awaitable<Result<Appended>> DryRunStore::append_streamed(const std::string&, OutgoingMessage,
                                                               std::uint64_t, BodySource&) {
  co_return refused("APPEND");
}

}  // namespace twinbox::sync
