// --dry-run: a MailStore that forwards every question to the real one and records, instead of
// doing, everything that would change the server. Mailbox-level changes (CREATE, SUBSCRIBE,
// DELETE, RENAME) are printed as "would ..." lines; a mailbox it "created" observes as empty.
// Message-level changes (APPEND, STORE, EXPUNGE) are never reached in a dry run (the engine
// prints the plan instead of executing it): they fail with Errc::internal, so a bug cannot
// change a server.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "sync/mail_store.h"

namespace twinbox::sync {

class DryRunStore : public MailStore {
 public:
  explicit DryRunStore(std::unique_ptr<MailStore> real) : real_(std::move(real)) {}

  // The lines recorded so far ("would create mailbox Archive/2024"), in order.
  const std::vector<std::string>& recorded() const { return recorded_; }

  Side side() const override { return real_->side(); }
  Tier tier() const override { return real_->tier(); }
  asio::awaitable<Result<std::optional<char>>> delimiter() override { return real_->delimiter(); }
  asio::awaitable<Result<std::vector<ListedMailbox>>> list(
      const std::vector<std::string>& patterns,
      const std::vector<std::string>& select_opts) override {
    return real_->list(patterns, select_opts);
  }
  asio::awaitable<Status> create(const std::string& name) override;
  asio::awaitable<Status> subscribe(const std::string& name, bool on) override;
  asio::awaitable<Status> remove(const std::string& name) override;
  asio::awaitable<Status> rename(const std::string& from, const std::string& to) override;

  asio::awaitable<Result<SideObservation>> observe(const std::string& name,
                                                   const store::SideState& recorded,
                                                   std::uint32_t listed_uidnext) override;
  asio::awaitable<Result<FullObservation>> observe_all(const std::string& name) override;
  std::uint32_t uidnext() const override { return real_->uidnext(); }
  asio::awaitable<Result<UidSet>> uids() override { return real_->uids(); }

  asio::awaitable<Result<std::vector<FetchedMessage>>> fetch_bodies(
      const std::vector<Uid>& uids) override {
    return real_->fetch_bodies(uids);
  }
  bool holds_bodies(const std::vector<Uid>& uids) const override {
    return real_->holds_bodies(uids);
  }
  asio::awaitable<Result<std::vector<MessageSummary>>> summaries_from(Uid from) override {
    return real_->summaries_from(from);
  }
  asio::awaitable<Result<std::set<Uid>>> exact_sizes(
      const std::map<Uid, std::uint64_t>& sizes) override {
    return real_->exact_sizes(sizes);
  }
  std::unique_ptr<BodyReader> read_body(Uid uid, std::uint64_t size) override {
    return real_->read_body(uid, size);
  }
  asio::awaitable<Result<Settled>> settle(ModSeq modseq, Uid uidnext) override {
    return real_->settle(modseq, uidnext);
  }
  asio::awaitable<Result<std::set<Uid>>> set_flags(const std::vector<FlagUpdate>&) override;
  asio::awaitable<Status> expunge(const std::vector<Uid>& uids) override;
  asio::awaitable<Result<Appended>> append(const std::string& name,
                                           std::vector<OutgoingMessage> messages) override;
  asio::awaitable<Result<Appended>> append_streamed(const std::string& name,
                                                    OutgoingMessage message, std::uint64_t size,
                                                    BodySource& source) override;

  asio::awaitable<Status> unselect() override { return real_->unselect(); }
  bool can_notify() const override { return real_->can_notify(); }
  asio::awaitable<Status> notify(bool on) override { return real_->notify(on); }
  asio::awaitable<Result<bool>> start_idle(const std::string& name) override {
    return real_->start_idle(name);
  }
  asio::awaitable<Status> wait_for_announcement(std::chrono::milliseconds slice) override {
    return real_->wait_for_announcement(slice);
  }
  Result<Announcement> take_announcements() override { return real_->take_announcements(); }
  asio::awaitable<Result<std::vector<ListedMailbox>>> status(
      const std::vector<std::string>& names) override {
    return real_->status(names);
  }
  asio::awaitable<Status> stop_idle() override { return real_->stop_idle(); }

  Traffic traffic() const override { return real_->traffic(); }
  void close() override { real_->close(); }
  asio::awaitable<void> logout() override { return real_->logout(); }
  asio::awaitable<Status> prepare_for_work() override { return real_->prepare_for_work(); }

 private:
  void record(std::string line);
  Error refused(const char* what) const;

  std::unique_ptr<MailStore> real_;
  std::set<std::string> created_;  // mailboxes that exist only in this dry run
  std::vector<std::string> recorded_;
};

}  // namespace twinbox::sync
