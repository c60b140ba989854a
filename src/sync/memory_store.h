// An in-memory mail server with IMAP's semantics, behind the MailStore seam: UIDVALIDITY, UIDNEXT,
// per-message MODSEQ and HIGHESTMODSEQ (RFC 7162), expunges remembered with their mod-sequence
// (what VANISHED (EARLIER) reports), conditional STORE (UNCHANGEDSINCE / MODIFIED), APPENDUID.
// No sockets, no clock, no threads: every call completes at once, so a run of the real Engine
// against two of these is deterministic, fast, and can be interrupted at any step.
//
// Faults (one Faults object per simulated process, shared by every connection to both servers):
// each MailStore call is one step. At a chosen step the process can be killed (every later call
// fails and, through the commit gate the simulator installs, nothing more is committed to the
// state database), or one connection can drop; either before the call takes effect or right
// after it (a lost acknowledgement). A hook runs before every step, for another client's
// concurrent changes. Lies make observations hostile in the ways real servers have been seen to
// be (see Lies).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "sync/mail_store.h"

namespace twinbox::sync {

struct MemoryMessage {
  std::string body;
  FlagSet flags;
  ModSeq modseq = 0;
  std::string internal_date;
  friend bool operator==(const MemoryMessage&, const MemoryMessage&) = default;
};

struct MemoryMailbox {
  std::uint32_t uidvalidity = 1;
  Uid uidnext = 1;
  ModSeq highestmodseq = 1;
  std::map<Uid, MemoryMessage> messages;
  std::map<Uid, ModSeq> expunged;  // UID -> the mod-sequence of its expunge
  bool subscribed = false;
  friend bool operator==(const MemoryMailbox&, const MemoryMailbox&) = default;
};

// Ways a server's answers lie, each applied to observe() of one side.
struct Lies {
  bool exists_too_low = false;       // EXISTS one below the real count
  bool vanished_everything = false;  // VANISHED (EARLIER) 1:4294967295
  bool unasked_fetch = false;        // a flag change for a UID that does not exist
  bool modseq_backwards = false;     // HIGHESTMODSEQ below the last one reported
};

struct Faults {
  enum class When { before_effect, after_effect };
  std::uint64_t steps = 0;  // calls made so far (by every connection)
  std::map<std::string, std::uint64_t> calls;  // the same, per call ("APPEND", ...)
  std::optional<std::uint64_t> kill_at;
  When kill_when = When::before_effect;
  std::optional<std::uint64_t> drop_at;  // the connection making that call drops
  When drop_when = When::before_effect;
  bool killed = false;
  PerSide<Lies> lies{};
  // Messages appended whose acknowledgement was lost: (side, mailbox, UID).
  std::set<std::tuple<std::size_t, std::string, Uid>> unacknowledged;
  // Called before each step with its number: another client's concurrent changes.
  std::function<void(std::uint64_t step)> before_step;
};

class MemoryServer {
 public:
  explicit MemoryServer(std::uint32_t first_uidvalidity = 1000)
      : next_uidvalidity_(first_uidvalidity) {
    create("INBOX");
  }

  // --- Another client's view (the simulator's and the tests' hands on the server) ---
  MemoryMailbox& create(const std::string& name);
  MemoryMailbox* find(const std::string& name);
  const MemoryMailbox* find(const std::string& name) const;
  const std::map<std::string, MemoryMailbox>& mailboxes() const { return mailboxes_; }
  std::map<std::string, MemoryMailbox>& mailboxes() { return mailboxes_; }
  Uid deliver(const std::string& name, std::string body, FlagSet flags = {},
              std::string internal_date = "01-Jan-2026 00:00:00 +0000");
  // False when the message does not exist.
  bool set_flags(const std::string& name, Uid uid, FlagSet flags);
  bool expunge(const std::string& name, Uid uid);
  // The mailbox is recreated with the same messages under new UIDs and a new UIDVALIDITY.
  void reset_uidvalidity(const std::string& name);
  bool erase_mailbox(const std::string& name);
  bool rename_mailbox(const std::string& from, const std::string& to);

 private:
  std::map<std::string, MemoryMailbox> mailboxes_;
  std::uint32_t next_uidvalidity_;
};

// One connection to a MemoryServer.
class MemoryStore : public MailStore {
 public:
  MemoryStore(Side side, MemoryServer& server, Faults& faults, char delimiter = '/',
              Tier tier = Tier::qresync)
      : side_(side), server_(server), faults_(faults), delimiter_(delimiter), tier_(tier) {}

  Side side() const override { return side_; }
  Tier tier() const override { return tier_; }
  asio::awaitable<Result<std::optional<char>>> delimiter() override;
  asio::awaitable<Result<std::vector<ListedMailbox>>> list(
      const std::vector<std::string>& patterns,
      const std::vector<std::string>& select_opts) override;
  asio::awaitable<Status> create(const std::string& name) override;
  asio::awaitable<Status> subscribe(const std::string& name, bool on) override;
  asio::awaitable<Status> remove(const std::string& name) override;
  asio::awaitable<Status> rename(const std::string& from, const std::string& to) override;

  asio::awaitable<Result<SideObservation>> observe(const std::string& name,
                                                   const store::SideState& recorded,
                                                   std::uint32_t listed_uidnext) override;
  asio::awaitable<Result<FullObservation>> observe_all(const std::string& name) override;
  asio::awaitable<Result<UidSet>> uids() override;
  std::uint32_t uidnext() const override;

  asio::awaitable<Result<std::vector<FetchedMessage>>> fetch_bodies(
      const std::vector<Uid>& uids) override;
  // As an IMAP store that read them with the observation: small bodies of the selected mailbox
  // (so the simulator runs both copy directions at once, as a real run does).
  bool holds_bodies(const std::vector<Uid>& uids) const override;
  asio::awaitable<Result<std::vector<MessageSummary>>> summaries_from(Uid from) override;
  asio::awaitable<Result<std::set<Uid>>> exact_sizes(
      const std::map<Uid, std::uint64_t>& sizes) override;
  std::unique_ptr<BodyReader> read_body(Uid uid, std::uint64_t size) override;
  asio::awaitable<Result<Settled>> settle(ModSeq modseq, Uid uidnext) override;
  asio::awaitable<Result<std::set<Uid>>> set_flags(const std::vector<FlagUpdate>& updates) override;
  asio::awaitable<Status> expunge(const std::vector<Uid>& uids) override;
  asio::awaitable<Result<Appended>> append(const std::string& name,
                                           std::vector<OutgoingMessage> messages) override;
  asio::awaitable<Result<Appended>> append_streamed(const std::string& name,
                                                    OutgoingMessage message, std::uint64_t size,
                                                    BodySource& source) override;

  asio::awaitable<Status> unselect() override;
  bool can_notify() const override { return false; }
  asio::awaitable<Status> notify(bool on) override;
  asio::awaitable<Result<bool>> start_idle(const std::string& name) override;
  asio::awaitable<Status> wait_for_announcement(std::chrono::milliseconds slice) override;
  Result<Announcement> take_announcements() override { return Announcement{}; }
  asio::awaitable<Status> stop_idle() override;

  Traffic traffic() const override { return {0, 0, 0, round_trip_}; }
  // What traffic() says of the link's round trip (the engine sizes its copy batches by it).
  void set_round_trip(std::optional<std::chrono::steady_clock::duration> round_trip) {
    round_trip_ = round_trip;
  }
  void close() override { closed_ = true; }
  asio::awaitable<void> logout() override;

  // Public for BodyReader: one step of the fault schedule. `effect` runs unless the step fails
  // before it; an Error when the call must fail.
  Status step(const char* call, const std::function<Status()>& effect);

 private:
  Error lost(const char* call) const;
  MemoryMailbox* selected();
  // What this tier lets a client see of a message.
  MessageSummary summary_of(Uid uid, const MemoryMessage& m) const;

  Side side_;
  MemoryServer& server_;
  Faults& faults_;
  char delimiter_;
  Tier tier_;
  std::string selected_;
  bool dropped_ = false;
  bool closed_ = false;
  ModSeq last_reported_modseq_ = 0;
  std::optional<std::chrono::steady_clock::duration> round_trip_;
};

// Opens MemoryStores on two servers (the simulator's StoreConnector).
class MemoryConnector : public StoreConnector {
 public:
  MemoryConnector(PerSide<MemoryServer*> servers, Faults& faults,
                  PerSide<char> delimiters = {{'/', '/'}},
                  PerSide<Tier> tiers = {{Tier::qresync, Tier::qresync}})
      : servers_(servers), faults_(faults), delimiters_(delimiters), tiers_(tiers) {}
  // The tiers of the connections opened from now on (a server can lose an extension).
  void set_tiers(PerSide<Tier> tiers) { tiers_ = tiers; }
  // The round trip the connections opened from now on report (Traffic::fastest_round_trip).
  void set_round_trip(std::optional<std::chrono::steady_clock::duration> round_trip) {
    round_trip_ = round_trip;
  }
  asio::awaitable<Result<std::unique_ptr<MailStore>>> open(Side side,
                                                           const MailStore* sibling) override;
  std::size_t opened() const { return opened_; }
  bool opens_instantly() const override { return true; }

 private:
  PerSide<MemoryServer*> servers_;
  Faults& faults_;
  PerSide<char> delimiters_;
  PerSide<Tier> tiers_;
  std::optional<std::chrono::steady_clock::duration> round_trip_;
  std::size_t opened_ = 0;
};

}  // namespace twinbox::sync
