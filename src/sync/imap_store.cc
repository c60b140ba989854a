#include "sync/imap_store.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "base/log.h"
#include "imap/mailbox_name.h"
#include "sync/capabilities.h"
#include "sync/digest.h"

namespace twinbox::sync {

namespace {

imap::SequenceSet set_of(const std::vector<Uid>& uids) {
  std::vector<Uid> sorted = uids;
  std::sort(sorted.begin(), sorted.end());
  imap::SequenceSet set;
  for (Uid uid : sorted) set.add(uid);
  return set;
}

void add_uids(UidSet& out, const imap::SequenceSet& in) {
  for (const auto& r : in.ranges()) out.add(r.first, r.last);
}

imap::cmd::AppendMessage to_wire(OutgoingMessage message) {
  imap::cmd::AppendMessage out;
  out.flags = std::move(message.flags);
  out.internal_date = std::move(message.internal_date);
  out.content = std::move(message.content);
  return out;
}

bool has_attribute(const imap::ListData& list, std::string_view wanted) {
  return std::any_of(list.attributes.begin(), list.attributes.end(), [&](const std::string& a) {
    return a.size() == wanted.size() &&
           std::equal(a.begin(), a.end(), wanted.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  });
}

// An internal name with NUL (the delimiter, internally) needs the server's delimiter.
bool hierarchical(const std::string& internal) { return internal.find('\0') != std::string::npos; }

Error rejected(Side side, const std::string& what, const imap::Completion& done) {
  return Error(Errc::rejected,
               fmt::format("{}: {} failed: {}", side_name(side), what, done.status.text));
}

}  // namespace

ImapStore::ImapStore(Side side, std::unique_ptr<net::Client> client, std::string list_reference)
    : side_(side), client_(std::move(client)), reference_(std::move(list_reference)) {}

bool ImapStore::utf8() const { return client_->session().is_enabled("UTF8=ACCEPT"); }

bool ImapStore::has(std::string_view capability) const {
  return client_->session().has_capability(capability);
}

Status ImapStore::prepare(Tier limit) {
  auto& s = client_->session();
  limit_ = limit;
  tier_ = best_tier([&](std::string_view name) { return has(name); }, limit);
  if (tier_ != Tier::qresync) {
    log_debug("{}: change detection: {}", side_name(side_), tier_name(tier_));
    return ok_status();
  }
  // The hierarchy delimiter comes with the first LIST's answers (list()); LIST "" "" is asked
  // only when those do not tell it, which saves a command and its bytes on every run.
  const std::vector<std::string> qresync = {"QRESYNC"};
  auto enable = s.enable(qresync);
  if (!enable) return enable.error();
  enabling_ = *enable;
  return ok_status();
}

asio::awaitable<Status> ImapStore::enabled() {
  if (!enabling_) co_return ok_status();
  const imap::CommandId id = *enabling_;
  enabling_.reset();
  auto enabled = co_await client_->expect_ok(id, "ENABLE QRESYNC");
  if (!enabled) co_return enabled.error();
  if (!client_->session().is_enabled("QRESYNC")) {
    // iCloud: QRESYNC advertised, ENABLE answered OK without "* ENABLED QRESYNC". Its QRESYNC
    // parameters may not be used (RFC 7162 §3.2.3); CONDSTORE needs no ENABLE.
    log_warning(
        "{}: ENABLE QRESYNC was not confirmed by the server (no * ENABLED QRESYNC); "
        "detecting changes with CONDSTORE instead",
        side_name(side_));
    tier_ = Tier::condstore;
  }
  co_return ok_status();
}

asio::awaitable<Result<bool>> ImapStore::settle_login() {
  auto held = co_await client_->confirm_login();
  if (held && *held) co_return true;
  if (!held) {
    Status again = co_await abandon_presumption(held.error());
    if (!again) co_return again.error();
    co_return false;
  }
  log_info("{}: the server's capabilities changed since the last connection; connecting again",
           side_name(side_));
  co_return co_await reconnect(false);
}

asio::awaitable<Status> ImapStore::abandon_presumption(const Error& error) {
  // A refused login is the user's to fix; without a connector there is no connection to redo.
  if (error.code == Errc::auth || connector_ == nullptr) co_return error;
  if (error.code == Errc::timeout) {
    // A server that went silent is not asked again at once (that would double the wait for an
    // error); the next run waits for the login's answer.
    connector_->stop_presuming(side_);
    co_return error;
  }
  // Cyrus 3.6 answers AUTHENTICATE with SASL-IR, then runs it again from what followed it
  // ("BAD Already authenticated" for a tag it has answered); others may drop the connection.
  log_warning(
      "{}: the server failed the commands pipelined behind the login ({}); connecting again "
      "without, and not pipelining behind this server's login until it announces other "
      "capabilities",
      side_name(side_), error.message);
  auto reconnected = co_await reconnect(true);
  if (!reconnected) co_return reconnected.error();
  co_return ok_status();
}

asio::awaitable<Result<bool>> ImapStore::reconnect(bool refused) {
  // Only ImapConnector::open() presumes a login, and it sets itself as the connector.
  if (connector_ == nullptr) {
    co_return Error(Errc::internal,
                    fmt::format("{}: a presumed login without a connector", side_name(side_)));
  }
  // What the dropped connection sent and received still counts in the run's summary.
  const Traffic dropped = traffic();
  earlier_traffic_ = {dropped.in, dropped.out, dropped.round_trips, std::nullopt};
  client_->close();
  auto fresh = co_await connector_->connect_again(side_, refused);
  if (!fresh) co_return fresh.error();
  client_ = std::move(*fresh);
  enabling_.reset();
  Status prepared = prepare(limit_);
  if (!prepared) co_return prepared.error();
  co_return false;
}

asio::awaitable<Status> ImapStore::prepare_for_work() {
  Status ready = co_await enabled();
  if (!ready) co_return ready;
  co_return co_await client_->compress();
}

asio::awaitable<Status> ImapStore::learn_delimiter() {
  if (delimiter_known_) co_return ok_status();
  // LIST "" "": the delimiter of the personal namespace (RFC 9051 §6.3.9); NIL means flat.
  const std::vector<std::string> empty_pattern = {""};
  auto list = client_->session().list("", empty_pattern);
  auto listed = co_await client_->expect_ok(std::move(list), "LIST \"\" \"\"");
  if (!listed) co_return listed.error();
  for (const auto& response : listed->untagged) {
    if (const auto* l = std::get_if<imap::ListData>(&response.data)) delimiter_ = l->delimiter;
  }
  delimiter_known_ = true;
  co_return ok_status();
}

Result<std::string> ImapStore::internal_name(const std::string& wire,
                                             std::optional<char> delimiter) const {
  auto decoded = imap::mailbox_from_wire(wire, utf8());
  if (!decoded) return decoded.error();
  std::string name = *decoded;
  // With a list-reference, every name is under it, INBOX included: several accounts can then
  // share one server, each under its own prefix, without their INBOXes mixing.
  if (!reference_.empty()) {
    if (name.compare(0, reference_.size(), reference_) != 0) {
      return Error(Errc::protocol,
                   fmt::format("mailbox '{}' is outside list-reference '{}'", name, reference_));
    }
    name.erase(0, reference_.size());
  }
  if (imap::is_inbox(name)) return std::string("INBOX");
  if (delimiter) std::replace(name.begin(), name.end(), *delimiter, '\0');
  return name;
}

asio::awaitable<Result<std::string>> ImapStore::wire_name(const std::string& internal) {
  if (hierarchical(internal)) {
    Status known = co_await learn_delimiter();  // at once if a LIST or lane 0 told it
    if (!known) co_return known.error();
  }
  co_return server_name(internal);
}

Result<std::string> ImapStore::server_name(const std::string& internal) const {
  if (internal == "INBOX") return reference_ + internal;
  std::string name = internal;
  if (hierarchical(name)) {
    if (!delimiter_) {
      return Error(Errc::protocol, fmt::format("{}: cannot create a hierarchy on a server without "
                                               "a hierarchy delimiter",
                                               side_name(side_)));
    }
    std::replace(name.begin(), name.end(), '\0', *delimiter_);
  }
  return reference_ + name;
}

asio::awaitable<Result<std::vector<ListedMailbox>>> ImapStore::list(
    const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts) {
  const bool any_hierarchical = std::any_of(patterns.begin(), patterns.end(), hierarchical);
  // Only a LIST-EXTENDED LIST of patterns without the delimiter goes out with a presumed login;
  // anything else reads the login's answer first.
  if (client_->login_pending() && (any_hierarchical || !has("LIST-EXTENDED"))) {
    auto stands = co_await settle_login();
    if (!stands) co_return stands.error();
  }
  auto& s = client_->session();
  // list-mailbox patterns use NUL for "the delimiter" (InterIMAP): substitute this side's.
  if (any_hierarchical) {
    Status learned = co_await learn_delimiter();
    if (!learned) co_return learned.error();
  }
  std::vector<std::string> server_patterns;
  for (std::string p : patterns) {
    if (delimiter_) std::replace(p.begin(), p.end(), '\0', *delimiter_);
    server_patterns.push_back(reference_ + p);
  }
  const bool extended = has("LIST-EXTENDED");
  if (!extended) {
    Status ready = co_await enabled();
    if (!ready) co_return ready.error();
  }
  const Tier asked_for = tier_;
  // STATUS HIGHESTMODSEQ needs CONDSTORE; without a mod-sequence STATUS cannot show that
  // nothing changed (flags), so a plain tier asks for none.
  const bool want_status = tier_ != Tier::plain;
  const bool list_status = extended && want_status && has("LIST-STATUS");
  std::vector<imap::Completion> answers;
  if (extended) {
    imap::cmd::ListOptions options;
    options.selection = select_opts;
    options.return_items = {"SUBSCRIBED"};
    if (list_status) options.status_items = status_items();
    auto submitted = s.list("", server_patterns, options);
    const bool presumed = client_->login_pending();
    if (presumed) {
      // The LIST leaves with the login and the ENABLE: one round trip for the three.
      auto stands = co_await settle_login();
      if (!stands) co_return stands.error();
      if (!*stands) co_return co_await list(patterns, select_opts);  // on the new connection
    }
    // The ENABLE went out before this LIST: both answers come in one round trip.
    Result<imap::Completion> done = Error(Errc::internal, "LIST not sent");
    Status ready = co_await enabled();
    if (ready) {
      done = co_await client_->expect_ok(std::move(submitted), "LIST");
    } else {
      done = ready.error();
    }
    if (!done && presumed) {
      // Whatever went wrong behind a presumed login may be the presumption's doing: once more
      // on a connection that presumes nothing (and the error, if that one fails too).
      Status again = co_await abandon_presumption(done.error());
      if (!again) co_return again.error();
      co_return co_await list(patterns, select_opts);
    }
    if (!done) co_return done.error();
    // ENABLE not confirmed: the tier is CONDSTORE, whose STATUS items differ (MESSAGES).
    if (tier_ != asked_for) co_return co_await list(patterns, select_opts);
    answers.push_back(std::move(*done));
  } else {
    auto done = co_await list_without_extensions(server_patterns, select_opts);
    if (!done) co_return done.error();
    answers = std::move(*done);
  }
  std::map<std::string, imap::StatusData> statuses;
  std::set<std::string> lsub;  // wire names LSUB answered, without LIST-EXTENDED
  const bool subscribed_only =
      std::find(select_opts.begin(), select_opts.end(), "SUBSCRIBED") != select_opts.end();
  for (const auto& done : answers) {
    for (const auto& response : done.untagged) {
      if (const auto* status = std::get_if<imap::StatusData>(&response.data)) {
        statuses[status->mailbox] = *status;
      } else if (const auto* l = std::get_if<imap::ListData>(&response.data); l && l->lsub) {
        lsub.insert(l->mailbox);
      }
    }
  }
  std::vector<ListedMailbox> out;
  std::set<std::string> seen;  // several patterns may name one mailbox
  for (const auto& done : answers) {
    for (const auto& response : done.untagged) {
      const auto* l = std::get_if<imap::ListData>(&response.data);
      if (l == nullptr || l->lsub || !seen.insert(l->mailbox).second) continue;
      if (!delimiter_known_) {
        // The first name listed tells the delimiter (INBOX, or the first under list-reference).
        delimiter_ = l->delimiter;
        delimiter_known_ = true;
      }
      ListedMailbox m;
      m.wire = l->mailbox;
      auto name = internal_name(l->mailbox, l->delimiter);
      if (!name) {
        log_warning("{}: ignoring mailbox '{}': {}", side_name(side_), printable(l->mailbox),
                    name.error().message);
        continue;
      }
      m.name = *name;
      m.selectable = !has_attribute(*l, "\\Noselect") && !has_attribute(*l, "\\NonExistent");
      m.subscribed = extended ? has_attribute(*l, "\\Subscribed") : lsub.count(l->mailbox) > 0;
      if (!extended && subscribed_only && !m.subscribed) continue;
      if (auto it = statuses.find(l->mailbox); it != statuses.end()) {
        m.uidvalidity = it->second.uidvalidity;
        m.uidnext = it->second.uidnext;
        m.highestmodseq = it->second.highestmodseq;
        if (tier_ == Tier::condstore) m.messages = it->second.messages;
      }
      out.push_back(std::move(m));
    }
  }
  if (!delimiter_known_) {
    Status learned = co_await learn_delimiter();  // nothing listed: ask directly
    if (!learned) co_return learned.error();
  }
  if (want_status && !list_status) {
    Status statused = co_await status_of(out);
    if (!statused) co_return statused.error();
  }
  co_return out;
}

asio::awaitable<Result<std::vector<imap::Completion>>> ImapStore::list_without_extensions(
    const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts) {
  auto& s = client_->session();
  for (const auto& option : select_opts) {
    if (option != "SUBSCRIBED") {
      co_return Error(Errc::config,
                      fmt::format("{}: list-select-opts {} needs LIST-EXTENDED (RFC 5258), which "
                                  "the server does not offer",
                                  side_name(side_), option));
    }
  }
  std::vector<imap::CommandId> ids;
  std::vector<std::string> what;
  for (const auto& pattern : patterns) {
    const std::vector<std::string> one = {pattern};
    auto list = s.list("", one);
    if (!list) co_return list.error();
    ids.push_back(*list);
    what.push_back("LIST");
    auto lsub = imap::CommandBuilder("LSUB", s.wire_options()).string("").list_pattern(pattern);
    auto command = lsub.build();
    if (!command) co_return command.error();
    auto submitted = s.submit(std::move(*command));
    if (!submitted) co_return submitted.error();
    ids.push_back(*submitted);
    what.push_back("LSUB");
  }
  auto done = co_await client_->wait_all(std::move(ids));
  if (!done) co_return done.error();
  for (std::size_t i = 0; i < done->size(); ++i) {
    if (!(*done)[i].ok()) co_return rejected(side_, what[i], (*done)[i]);
  }
  co_return std::move(*done);
}

asio::awaitable<Status> ImapStore::status_of(std::vector<ListedMailbox>& mailboxes) {
  auto& s = client_->session();
  const std::vector<std::string> items = status_items();
  std::vector<imap::CommandId> ids;
  std::vector<ListedMailbox*> asked;
  for (auto& m : mailboxes) {
    if (!m.selectable) continue;
    auto decoded = imap::mailbox_from_wire(m.wire, utf8());
    if (!decoded) continue;  // internal_name() accepted it; cannot happen
    auto id = s.status(*decoded, items);
    if (!id) co_return id.error();
    ids.push_back(*id);
    asked.push_back(&m);
  }
  auto done = co_await client_->wait_all(std::move(ids));
  if (!done) co_return done.error();
  std::map<std::string, const imap::StatusData*> by_wire;
  for (const auto& completion : *done) {
    for (const auto& response : completion.untagged) {
      if (const auto* status = std::get_if<imap::StatusData>(&response.data)) {
        by_wire[status->mailbox] = status;
      }
    }
  }
  // A STATUS refused (NO) only costs the shortcut: the mailbox is then looked at.
  for (ListedMailbox* m : asked) {
    auto it = by_wire.find(m->wire);
    if (it == by_wire.end()) continue;
    m->uidvalidity = it->second->uidvalidity;
    m->uidnext = it->second->uidnext;
    m->highestmodseq = it->second->highestmodseq;
    if (tier_ == Tier::condstore) m->messages = it->second->messages;
  }
  co_return ok_status();
}

asio::awaitable<Status> ImapStore::create(const std::string& internal) {
  const std::vector<std::string> one = {internal};
  auto created = co_await create_all(one);
  if (!created) co_return created.error();
  co_return std::move(created->front());
}

asio::awaitable<Result<std::vector<Status>>> ImapStore::create_all(
    const std::vector<std::string>& internals) {
  std::vector<Status> out(internals.size(), ok_status());
  // Internal names use NUL for the delimiter: its count is the depth.
  std::map<std::size_t, std::vector<std::size_t>> by_depth;
  for (std::size_t i = 0; i < internals.size(); ++i) {
    by_depth[std::count(internals[i].begin(), internals[i].end(), '\0')].push_back(i);
  }
  auto& s = client_->session();
  for (const auto& [depth, indices] : by_depth) {
    std::vector<std::pair<std::size_t, std::string>> sent;  // index, wire name
    std::vector<imap::CommandId> ids;
    for (std::size_t i : indices) {
      auto name = co_await wire_name(internals[i]);
      if (!name) co_return name.error();
      auto command = imap::CommandBuilder("CREATE", s.wire_options()).mailbox(*name).build();
      if (!command) co_return command.error();
      auto submitted = s.submit(std::move(*command));
      if (!submitted) co_return submitted.error();
      ids.push_back(*submitted);
      sent.emplace_back(i, std::move(*name));
    }
    auto done = co_await client_->wait_all(std::move(ids));
    if (!done) co_return done.error();
    for (std::size_t k = 0; k < sent.size(); ++k) {
      const imap::Completion& answer = (*done)[k];
      // ALREADYEXISTS is success for us: another client (or an earlier run) made it.
      if (!answer.ok() && answer.status.code.kind != imap::CodeKind::already_exists) {
        out[sent[k].first] =
            rejected(side_, fmt::format("CREATE {}", printable(sent[k].second)), answer);
      }
    }
  }
  co_return out;
}

asio::awaitable<Status> ImapStore::subscribe(const std::string& internal, bool on) {
  const std::vector<std::pair<std::string, bool>> one = {{internal, on}};
  co_return co_await subscribe_all(one);
}

asio::awaitable<Status> ImapStore::subscribe_all(
    const std::vector<std::pair<std::string, bool>>& subscriptions) {
  auto& s = client_->session();
  std::vector<imap::CommandId> ids;
  for (const auto& [internal, on] : subscriptions) {
    auto name = co_await wire_name(internal);
    if (!name) co_return name.error();
    auto command = imap::CommandBuilder(on ? "SUBSCRIBE" : "UNSUBSCRIBE", s.wire_options())
                       .mailbox(*name)
                       .build();
    if (!command) co_return command.error();
    auto submitted = s.submit(std::move(*command));
    if (!submitted) co_return submitted.error();
    ids.push_back(*submitted);
  }
  // Every answer is read before the first refusal is returned: none is left behind.
  auto done = co_await client_->wait_all(std::move(ids));
  if (!done) co_return done.error();
  for (std::size_t k = 0; k < done->size(); ++k) {
    const imap::Completion& answer = (*done)[k];
    if (!answer.ok()) {
      co_return Error(
          Errc::rejected,
          fmt::format("{}: {} failed: {}", client_->endpoint().name,
                      subscriptions[k].second ? "SUBSCRIBE" : "UNSUBSCRIBE", answer.status.text));
    }
  }
  co_return ok_status();
}

Result<std::vector<imap::CommandId>> ImapStore::submit_new_messages(Uid from, Uid held_below) {
  auto& s = client_->session();
  from = std::max<Uid>(from, 1);
  std::vector<imap::CommandId> ids;
  if (held_below > from) {
    // Bodies only for the UIDs the LIST announced: more mail may have come since, and what the
    // store holds stays bounded whatever a server sends.
    imap::SequenceSet announced;
    announced.add(from, held_below - 1);
    auto with_bodies = s.uid_fetch(
        announced,
        fmt::format("(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{}>)", kHeldOctets));
    if (!with_bodies) return with_bodies.error();
    ids = std::move(*with_bodies);
    from = held_below;
  }
  imap::SequenceSet range;
  range.add(from, kMaxUid);
  auto summaries = s.uid_fetch(range, "(UID FLAGS INTERNALDATE RFC822.SIZE)");
  if (!summaries) return summaries.error();
  ids.insert(ids.end(), summaries->begin(), summaries->end());
  return ids;
}

void ImapStore::hold_body(imap::FetchData& fetched) {
  if (!fetched.uid || *fetched.uid >= held_below_) return;  // not asked for
  for (auto& body : fetched.bodies) {
    if (!body.section.empty() || body.binary || !body.data) continue;
    // Only the piece asked for: from octet 0 (a server may leave out the origin of a body it
    // sends whole), no longer than asked.
    if (body.origin.value_or(0) != 0 || body.data->size() > kHeldOctets) continue;
    HeldBody& held = held_[*fetched.uid];
    held.whole = !body.origin || body.data->size() < kHeldOctets;
    held.octets = std::move(*body.data);
    held.internal_date = fetched.internaldate.value_or("");
  }
}

bool ImapStore::holds_bodies(const std::vector<Uid>& uids) const {
  return std::all_of(uids.begin(), uids.end(), [&](Uid uid) {
    auto it = held_.find(uid);
    return it != held_.end() && it->second.whole;
  });
}

asio::awaitable<Result<imap::Completion>> ImapStore::select(
    const std::string& internal, const std::string& name, const imap::cmd::SelectOptions& options,
    std::optional<Uid> new_from, Uid held_below, std::vector<imap::CommandId>* new_ids) {
  auto& s = client_->session();
  held_.clear();
  held_below_ = held_below;
  auto submitted = s.select(name, options);
  if (submitted && new_from) {
    auto ids = submit_new_messages(*new_from, held_below);
    if (!ids) co_return ids.error();
    *new_ids = std::move(*ids);
  }
  auto selected = co_await client_->wait(std::move(submitted));
  if (!selected) co_return selected.error();
  if (!selected->ok())
    co_return rejected(side_, fmt::format("SELECT {}", printable(name)), *selected);
  selected_ = internal;
  fallback_uidnext_.reset();
  const auto& state = s.mailbox();
  if (!state || !state->uidvalidity) {
    co_return Error(Errc::protocol, fmt::format("{}: SELECT {} gave no UIDVALIDITY",
                                                side_name(side_), printable(name)));
  }
  if (!state->uidnext) {
    // Courier-IMAP omits UIDNEXT from SELECT (RFC 3501 §6.3.1 requires it): STATUS tells it;
    // failing that, the highest UID + 1 is a safe lower bound (new mail is always above it).
    const std::vector<std::string> items = {"UIDNEXT"};
    auto status = s.status(name, items);
    if (!status) co_return status.error();
    auto answered = co_await client_->wait(*status);
    if (!answered) co_return answered.error();
    for (const auto& response : answered->untagged) {
      const auto* data = std::get_if<imap::StatusData>(&response.data);
      if (data != nullptr && data->uidnext) fallback_uidnext_ = *data->uidnext;
    }
    if (!fallback_uidnext_) {
      auto highest = submit_highest_uid();
      if (!highest) co_return highest.error();
      auto fetched = co_await client_->wait(*highest);
      if (!fetched) co_return fetched.error();
      const Uid top = highest_of(*fetched);
      if (top == kMaxUid) {
        co_return Error(Errc::protocol, fmt::format("{}: {} holds UID {}: no UID is left for new "
                                                    "mail (RFC 9051 §2.3.1.1)",
                                                    side_name(side_), printable(name), top));
      }
      fallback_uidnext_ = top + 1;
    }
    log_debug("{}: SELECT {} gave no UIDNEXT; {} instead", side_name(side_), printable(name),
              *fallback_uidnext_);
  }
  co_return std::move(*selected);
}

imap::cmd::SelectOptions ImapStore::select_options() const {
  imap::cmd::SelectOptions options;
  // RFC 7162 §3.1.8: the parameter turns CONDSTORE on, so SELECT reports HIGHESTMODSEQ (under
  // QRESYNC it is on already).
  options.condstore = tier_ == Tier::condstore;
  return options;
}

std::vector<std::string> ImapStore::status_items() const {
  if (tier_ == Tier::condstore) return {"MESSAGES", "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"};
  return {"UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"};
}

std::string_view ImapStore::summary_items() const {
  return tier_ == Tier::plain ? "(UID RFC822.SIZE FLAGS INTERNALDATE)"
                              : "(UID RFC822.SIZE FLAGS INTERNALDATE MODSEQ)";
}

asio::awaitable<Result<SideObservation>> ImapStore::observe(const std::string& internal,
                                                            const store::SideState& recorded,
                                                            std::uint32_t listed_uidnext) {
  Status ready = co_await enabled();  // the tier decides what is asked
  if (!ready) co_return ready.error();
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  auto& s = client_->session();
  // Tracked: a sync recorded this mailbox; by mod-sequence: it recorded one too (a plain run,
  // or a QRESYNC run of a server that lost CONDSTORE since, records none: list every flag).
  const bool tracked = recorded.uidvalidity && recorded.uidnext;
  const bool by_modseq = tracked && tier_ != Tier::plain && recorded.highestmodseq.value_or(0) > 0;
  imap::cmd::SelectOptions options = select_options();
  if (by_modseq && tier_ == Tier::qresync) {
    options.qresync =
        imap::cmd::QresyncParams{*recorded.uidvalidity, *recorded.highestmodseq, {}, std::nullopt};
  }
  const Uid from = recorded.uidnext.value_or(1);
  // The LIST said new mail came: its summaries are asked with the SELECT, not after its answer;
  // and when only a few came, their bodies too (for the copies to come).
  std::vector<imap::CommandId> new_ids;
  const bool new_mail_listed = listed_uidnext > from;
  const std::optional<Uid> new_from = new_mail_listed ? std::optional<Uid>(from) : std::nullopt;
  const Uid held_below =
      new_mail_listed && listed_uidnext - from <= kHeldMessages ? listed_uidnext : 0;
  auto selected = co_await select(internal, *name, options, new_from, held_below, &new_ids);
  if (!selected) co_return selected.error();
  const auto& state = s.mailbox();
  const bool stop_here = (tier_ != Tier::plain && state->nomodseq) ||
                         (recorded.uidvalidity && *recorded.uidvalidity != *state->uidvalidity);
  if (stop_here && !new_ids.empty()) {
    auto unused = co_await client_->wait_all(new_ids);  // read and dropped: nothing is left over
    if (!unused) co_return unused.error();
  }
  if (tier_ != Tier::plain && state->nomodseq) {
    co_return Error(Errc::protocol,
                    fmt::format("{}: mailbox {} has no persistent mod-sequences (NOMODSEQ); set "
                                "change-detection = plain for this side",
                                side_name(side_), printable(*name)));
  }
  SideObservation observation;
  observation.uidvalidity = *state->uidvalidity;
  observation.uidnext = uidnext();
  observation.exists = state->exists;
  if (recorded.uidvalidity && *recorded.uidvalidity != observation.uidvalidity) {
    observation.uidvalidity_changed = true;
    co_return observation;
  }
  const bool qresync = options.qresync.has_value();
  observation.expunges_reported = !by_modseq || qresync;
  for (auto& response : selected->untagged) {
    if (auto* vanished = std::get_if<imap::VanishedData>(&response.data)) {
      if (qresync) add_uids(observation.vanished_set, vanished->uids);
    } else if (auto* fetch = std::get_if<imap::FetchData>(&response.data)) {
      if (!qresync || !fetch->uid || !fetch->flags) continue;
      observation.changes.flags[*fetch->uid] = canonical(*fetch->flags);
      if (fetch->modseq) observation.changes.modseq[*fetch->uid] = *fetch->modseq;
    }
  }
  std::vector<imap::CommandId> ids;
  if (tracked && state->exists > 0 && !qresync) {
    imap::cmd::FetchModifiers modifiers;
    imap::SequenceSet old;
    if (by_modseq) {
      // CONDSTORE: the flags changed since the recorded mod-sequence (RFC 7162 §3.1.4).
      modifiers.changed_since = *recorded.highestmodseq;
      old.add(1, kMaxUid);
    } else if (from > 1) {
      old.add(1, from - 1);  // plain: every message's flags
    }
    if (!old.empty()) {
      auto fetch = s.uid_fetch(old, by_modseq ? "(UID FLAGS MODSEQ)" : "(UID FLAGS)", modifiers);
      if (!fetch) co_return fetch.error();
      ids.insert(ids.end(), fetch->begin(), fetch->end());
    }
  }
  // Asked with the SELECT: its answer (an empty mailbox may answer NO to "n:*") is read only if
  // the SELECT says there is something to read.
  const bool want_new = state->exists > 0 && observation.uidnext > from;
  if (want_new && !new_ids.empty()) {
    ids.insert(ids.end(), new_ids.begin(), new_ids.end());
  } else if (want_new) {
    auto fetch = submit_new_messages(from);
    if (!fetch) co_return fetch.error();
    ids.insert(ids.end(), fetch->begin(), fetch->end());
  } else if (!new_ids.empty()) {
    auto unused = co_await client_->wait_all(new_ids);
    if (!unused) co_return unused.error();
  }
  std::set<Uid> present;  // plain listing: the UIDs below `from` that exist
  const auto take = [&](std::vector<imap::Completion>& fetched) -> Status {
    for (auto& done : fetched) {
      if (!done.ok()) return rejected(side_, "UID FETCH", done);
      for (auto& response : done.untagged) {
        if (auto* vanished = std::get_if<imap::VanishedData>(&response.data)) {
          // An expunge by another client while we were reading (RFC 7162 §3.2.10).
          if (qresync) add_uids(observation.vanished_set, vanished->uids);
          continue;
        }
        auto* f = std::get_if<imap::FetchData>(&response.data);
        if (f == nullptr || !f->uid) continue;
        if (*f->uid < from) {
          // "n:*" always names the last message, even below n (RFC 9051 §6.4.8); and a flag
          // change by another client may arrive meanwhile: keep it, HIGHESTMODSEQ covers it.
          if (!tracked || !f->flags) continue;
          present.insert(*f->uid);
          observation.changes.flags[*f->uid] = canonical(*f->flags);
          if (f->modseq) observation.changes.modseq[*f->uid] = *f->modseq;
          continue;
        }
        // A FETCH of an old message's flags only (no size): not a new message.
        if (!f->rfc822_size) continue;
        hold_body(*f);
        NewMessage m;
        m.uid = *f->uid;
        m.flags = canonical(f->flags.value_or(std::vector<std::string>{}));
        m.internal_date = f->internaldate.value_or("");
        m.size = *f->rfc822_size;
        observation.changes.added.push_back(std::move(m));
      }
    }
    std::sort(observation.changes.added.begin(), observation.changes.added.end(),
              [](const NewMessage& a, const NewMessage& b) { return a.uid < b.uid; });
    observation.changes.added.erase(
        std::unique(observation.changes.added.begin(), observation.changes.added.end(),
                    [](const NewMessage& a, const NewMessage& b) { return a.uid == b.uid; }),
        observation.changes.added.end());
    return ok_status();
  };
  if (!ids.empty()) {
    auto fetched = co_await client_->wait_all(std::move(ids));
    if (!fetched) co_return fetched.error();
    Status taken = take(*fetched);
    if (!taken) co_return taken.error();
  }
  if (tracked && !by_modseq) {
    // Every UID below the recorded UIDNEXT that the listing did not show was expunged; so the
    // listing must be whole: a server that leaves messages out would have them deleted on the
    // other side.
    const std::size_t exists = s.mailbox() ? s.mailbox()->exists : 0;
    if (present.size() + observation.changes.added.size() < exists) {
      // Mail delivered while we listed (the FETCH of new mail went out with the SELECT, before
      // the listing): EXISTS counts it, the listing may not. One more look above what it showed.
      Uid next = std::max<Uid>(from, observation.uidnext);
      if (!observation.changes.added.empty()) {
        next = std::max<Uid>(next, observation.changes.added.back().uid + 1);
      }
      auto later = submit_new_messages(next);
      if (!later) co_return later.error();
      auto fetched = co_await client_->wait_all(std::move(*later));
      if (!fetched) co_return fetched.error();
      Status taken = take(*fetched);
      if (!taken) co_return taken.error();
    }
    Status whole = listing_is_whole(*name, present.size() + observation.changes.added.size());
    if (!whole) co_return whole.error();
    observation.vanished_set = absent_below(present, from);
  }
  observation.highestmodseq = highestmodseq();
  observation.exists = s.mailbox() ? s.mailbox()->exists : 0;
  if (recorded.highestmodseq && observation.highestmodseq < *recorded.highestmodseq &&
      tier_ != Tier::plain) {
    observation.distrust.push_back(
        fmt::format("HIGHESTMODSEQ {} is below the {} recorded after the last sync",
                    observation.highestmodseq, *recorded.highestmodseq));
  }
  if (s.mailbox()) {
    for (const auto& line : s.mailbox()->anomalies) observation.distrust.push_back(line);
  }
  co_return observation;
}

asio::awaitable<Result<UidSet>> ImapStore::uids() {
  auto& s = client_->session();
  const bool esearch = has("ESEARCH");
  auto command = imap::CommandBuilder("UID SEARCH", s.wire_options())
                     .raw(esearch ? "RETURN (ALL) ALL" : "ALL")
                     .build();
  if (!command) co_return command.error();
  auto submitted = s.submit(std::move(*command));
  auto done = co_await client_->expect_ok(std::move(submitted), "UID SEARCH ALL");
  if (!done) co_return done.error();
  UidSet out;
  for (const auto& response : done->untagged) {
    if (const auto* search = std::get_if<imap::SearchData>(&response.data)) {
      for (auto uid : search->numbers) out.add(uid);
    } else if (const auto* e = std::get_if<imap::ESearchData>(&response.data)) {
      if (e->uid && e->all) add_uids(out, *e->all);
    }
  }
  // The engine takes a paired UID missing from this list as expunged: it must be whole.
  std::uint64_t count = 0;
  for (const auto& r : out.ranges()) count += std::uint64_t{r.last} - r.first + 1;
  auto wire = server_name(selected_);
  Status whole = listing_is_whole(wire ? *wire : selected_, static_cast<std::size_t>(count));
  if (!whole) co_return whole.error();
  co_return out;
}

ModSeq ImapStore::highestmodseq() const {
  if (tier_ == Tier::plain) return 0;
  const auto& state = client_->session().mailbox();
  return state && state->highestmodseq ? *state->highestmodseq : 0;
}

std::uint32_t ImapStore::uidnext() const {
  const auto& state = client_->session().mailbox();
  if (state && state->uidnext) return *state->uidnext;
  return state ? fallback_uidnext_.value_or(0) : 0;
}

namespace {

Result<std::vector<imap::CommandId>> fetch_changed_since(imap::Session& s, ModSeq modseq,
                                                         bool vanished) {
  imap::cmd::FetchModifiers modifiers;
  modifiers.changed_since = modseq;
  modifiers.vanished = vanished;
  imap::SequenceSet all;
  all.add(1, kMaxUid);
  return s.uid_fetch(all, "(UID FLAGS)", modifiers);
}

Result<std::vector<imap::CommandId>> fetch_summaries(imap::Session& s, Uid from,
                                                     std::string_view items) {
  imap::SequenceSet range;
  range.add(std::max<Uid>(from, 1), kMaxUid);
  return s.uid_fetch(range, items);
}

void collect_changes(const imap::Completion& done, Settled& out) {
  for (auto& response : done.untagged) {
    if (auto* v = std::get_if<imap::VanishedData>(&response.data)) add_uids(out.vanished, v->uids);
    auto* f = std::get_if<imap::FetchData>(&response.data);
    if (f != nullptr && f->uid && f->flags) out.flags[*f->uid] = canonical(*f->flags);
  }
}

void collect_summaries(const imap::Completion& done, Uid from, std::vector<MessageSummary>& out) {
  for (auto& response : done.untagged) {
    auto* f = std::get_if<imap::FetchData>(&response.data);
    // "n:*" always names the last message, even below n (RFC 9051 §6.4.8): filter.
    if (f == nullptr || !f->uid || !f->rfc822_size || *f->uid < from) continue;
    out.push_back({*f->uid, f->rfc822_size.value_or(0),
                   canonical(f->flags.value_or(std::vector<std::string>{})),
                   f->internaldate.value_or(""), f->modseq.value_or(0)});
  }
}

}  // namespace

Result<std::vector<imap::CommandId>> ImapStore::submit_settle(ModSeq modseq, Uid uidnext) {
  auto& s = client_->session();
  std::vector<imap::CommandId> ids;
  // A plain server cannot say what changed: the next sync lists every flag anyway.
  if (tier_ != Tier::plain && modseq > 0) {
    auto changed = fetch_changed_since(s, modseq, tier_ == Tier::qresync);
    if (!changed) return changed.error();
    ids = *changed;
  }
  auto above = fetch_summaries(s, uidnext, summary_items());
  if (!above) return above.error();
  ids.insert(ids.end(), above->begin(), above->end());
  return ids;
}

Result<Settled> ImapStore::settled_from(const std::vector<imap::Completion>& done,
                                        Uid uidnext) const {
  // A server may run pipelined FETCHes at once and interleave their untagged responses (Dovecot
  // does), and nothing in a FETCH response names its command: read all of them as one stream.
  // Summaries are the responses that carry RFC822.SIZE; every FLAGS counts as a change (a
  // message reported only by the second FETCH is either ours, or makes the check fail safe).
  Settled out;
  for (const auto& completion : done) {
    if (!completion.ok()) return rejected(side_, "UID FETCH", completion);
    collect_changes(completion, out);
    collect_summaries(completion, uidnext, out.above);
  }
  out.highestmodseq = highestmodseq();
  const auto& s = client_->session();
  out.exists = s.mailbox() ? s.mailbox()->exists : 0;
  return out;
}

asio::awaitable<Result<Settled>> ImapStore::settle(ModSeq modseq, Uid uidnext) {
  auto ids = submit_settle(modseq, uidnext);
  if (!ids) co_return ids.error();
  auto fetched = co_await client_->wait_all(std::move(*ids));
  if (!fetched) co_return fetched.error();
  co_return settled_from(*fetched, uidnext);
}

asio::awaitable<Result<std::vector<FetchedMessage>>> ImapStore::fetch_bodies(
    const std::vector<Uid>& uids) {
  auto& s = client_->session();
  std::map<Uid, std::string> bodies;
  std::map<Uid, std::string> dates;
  std::map<Uid, std::string> heads;  // held in part: the rest is asked from where they stop
  std::vector<Uid> unheld;
  std::vector<imap::CommandId> ids;
  for (Uid uid : uids) {
    auto it = held_.find(uid);
    if (it == held_.end()) {
      unheld.push_back(uid);
      continue;
    }
    HeldBody held = std::move(it->second);
    held_.erase(it);
    dates[uid] = std::move(held.internal_date);
    if (held.whole) {
      bodies[uid] = std::move(held.octets);
      continue;
    }
    imap::SequenceSet one;
    one.add(uid);
    // Up to the largest octet count a partial FETCH can name (RFC 9051 §6.4.5): the rest,
    // whatever RFC822.SIZE said.
    auto rest = s.uid_fetch(one, fmt::format("(UID BODY.PEEK[]<{}.{}>)", held.octets.size(),
                                             kMaxUid - held.octets.size()));
    if (!rest) co_return rest.error();
    ids.insert(ids.end(), rest->begin(), rest->end());
    heads[uid] = std::move(held.octets);
  }
  if (!unheld.empty()) {
    auto fetch = s.uid_fetch(set_of(unheld), "(UID INTERNALDATE BODY.PEEK[])");
    if (!fetch) co_return fetch.error();
    ids.insert(ids.end(), fetch->begin(), fetch->end());
  }
  if (!ids.empty()) {
    auto fetched = co_await client_->wait_all(std::move(ids));
    if (!fetched) co_return fetched.error();
    for (auto& done : *fetched) {
      if (!done.ok()) co_return rejected(side_, "UID FETCH BODY.PEEK[]", done);
      for (auto& response : done.untagged) {
        auto* f = std::get_if<imap::FetchData>(&response.data);
        if (f == nullptr || !f->uid) continue;
        if (f->internaldate) dates[*f->uid] = *f->internaldate;
        for (auto& body : f->bodies) {
          if (!body.section.empty() || body.binary || !body.data) continue;
          auto head = heads.find(*f->uid);
          if (!body.origin || head == heads.end()) {
            bodies[*f->uid] = std::move(*body.data);  // the whole body
          } else if (*body.origin == head->second.size()) {
            bodies[*f->uid] = head->second + *body.data;
          }
        }
      }
    }
  }
  std::vector<FetchedMessage> out;
  for (Uid uid : uids) {
    auto it = bodies.find(uid);
    if (it == bodies.end()) continue;  // expunged meanwhile: the next run sees it vanish
    out.push_back({uid, std::move(it->second), dates[uid]});
  }
  co_return out;
}

asio::awaitable<Result<std::vector<MessageSummary>>> ImapStore::summaries_from(Uid from) {
  auto fetched =
      co_await client_->wait_all(fetch_summaries(client_->session(), from, summary_items()));
  if (!fetched) co_return fetched.error();
  std::vector<MessageSummary> out;
  for (auto& done : *fetched) {
    if (!done.ok()) co_return rejected(side_, "UID FETCH (RFC822.SIZE)", done);
    collect_summaries(done, from, out);
  }
  co_return out;
}

asio::awaitable<Result<Appended>> ImapStore::append(const std::string& internal,
                                                    std::vector<OutgoingMessage> outgoing) {
  std::vector<imap::cmd::AppendMessage> messages;
  for (auto& message : outgoing) messages.push_back(to_wire(std::move(message)));
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  auto& s = client_->session();
  if (!has("UIDPLUS")) {
    // No APPENDUID: note the highest UID, append (all pipelined), then read the new ones back.
    if (selected_ != internal) {
      co_return Error(Errc::internal, "APPEND without UIDPLUS needs the mailbox selected");
    }
    std::vector<std::uint64_t> sizes;
    for (const auto& m : messages) sizes.push_back(m.content.size());
    auto highest = submit_highest_uid();
    if (!highest) co_return highest.error();
    std::vector<imap::CommandId> ids = {*highest};
    const bool multi = s.has_capability("MULTIAPPEND");
    for (std::size_t i = 0; i < messages.size();) {
      std::vector<imap::cmd::AppendMessage> batch;
      do {
        batch.push_back(std::move(messages[i++]));
      } while (multi && i < messages.size());
      auto id = s.append(*name, std::move(batch));
      if (!id) co_return id.error();
      ids.push_back(*id);
    }
    auto done = co_await client_->wait_all(std::move(ids));
    if (!done) co_return done.error();
    for (std::size_t i = 1; i < done->size(); ++i) {
      if (!(*done)[i].ok()) {
        co_return rejected(side_, fmt::format("APPEND to {}", printable(*name)), (*done)[i]);
      }
    }
    co_return co_await appended(highest_of(done->front()), sizes);
  }
  auto sent = submit_append(*name, std::move(messages));
  if (!sent) co_return sent.error();
  auto done = co_await client_->wait_all(sent->ids);
  if (!done) co_return done.error();
  co_return appended_by_uidplus(*sent, *done, *name);
}

Result<ImapStore::Appends> ImapStore::submit_append(
    const std::string& name, std::vector<imap::cmd::AppendMessage> messages) {
  auto& s = client_->session();
  Appends out;
  if (messages.size() > 1 && !s.has_capability("MULTIAPPEND")) {
    // One APPEND per message, pipelined; each answer carries its own APPENDUID.
    for (auto& message : messages) {
      std::vector<imap::cmd::AppendMessage> one;
      one.push_back(std::move(message));
      auto id = s.append(name, std::move(one));
      if (!id) return id.error();
      out.ids.push_back(*id);
      out.counts.push_back(1);
    }
    return out;
  }
  const std::size_t count = messages.size();
  auto id = s.append(name, std::move(messages));
  if (!id) return id.error();
  out.ids.push_back(*id);
  out.counts.push_back(count);
  return out;
}

Result<Appended> ImapStore::appended_by_uidplus(const Appends& sent,
                                                const std::vector<imap::Completion>& done,
                                                const std::string& name) const {
  Appended result;
  for (std::size_t i = 0; i < sent.ids.size(); ++i) {
    const imap::Completion& completion = done[i];
    if (!completion.ok()) {
      return rejected(side_, fmt::format("APPEND to {}", printable(name)), completion);
    }
    const auto& code = completion.status.code;
    // CVE-2021-3578 class: validate the code before trusting it.
    if (code.kind != imap::CodeKind::appenduid || code.set_order.size() != sent.counts[i] ||
        (i > 0 && code.number != result.uidvalidity)) {
      return Error(Errc::protocol,
                   fmt::format("{}: APPEND of {} message(s) answered without a matching "
                               "APPENDUID ({} UIDs)",
                               side_name(side_), sent.counts[i], code.set_order.size()));
    }
    result.uidvalidity = static_cast<std::uint32_t>(code.number);
    result.uids.insert(result.uids.end(), code.set_order.begin(), code.set_order.end());
  }
  return result;
}

asio::awaitable<Result<std::optional<Settled>>> ImapStore::append_and_settle(
    const std::string& internal, std::vector<OutgoingMessage> outgoing, ModSeq modseq, Uid uidnext,
    const std::function<Status(const Appended&)>& on_appended) {
  // Without UIDPLUS an APPEND's UIDs are read back after it: nothing can follow it unread.
  if (!has("UIDPLUS")) {
    co_return co_await MailStore::append_and_settle(internal, std::move(outgoing), modseq, uidnext,
                                                    on_appended);
  }
  std::vector<imap::cmd::AppendMessage> messages;
  for (auto& message : outgoing) messages.push_back(to_wire(std::move(message)));
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  auto sent = submit_append(*name, std::move(messages));
  if (!sent) co_return sent.error();
  auto settle_ids = submit_settle(modseq, uidnext);
  if (!settle_ids) co_return settle_ids.error();
  // The APPENDs' answers are recorded before the settle's are read.
  auto done = co_await client_->wait_all(sent->ids);
  if (!done) co_return done.error();
  auto appended = appended_by_uidplus(*sent, *done, *name);
  Status recorded = appended ? on_appended(*appended) : Status(appended.error());
  auto settle_done = co_await client_->wait_all(std::move(*settle_ids));
  if (!recorded) co_return recorded.error();
  if (!settle_done) co_return std::optional<Settled>();
  // The settle's answers may come attributed to an APPEND still in flight (Session routes
  // untagged data to the oldest command): every completion is read for them.
  done->insert(done->end(), settle_done->begin(), settle_done->end());
  auto settled = settled_from(*done, uidnext);
  if (!settled) co_return std::optional<Settled>();
  co_return std::optional<Settled>(std::move(*settled));
}

namespace {

// The STOREs that take messages to their new flags, grouped so that messages needing the same
// change share one command.
struct FlagChange {
  imap::cmd::StoreMode mode = imap::cmd::StoreMode::replace;
  FlagSet flags;
  std::optional<ModSeq> unchanged_since;
  auto key() const { return std::tie(mode, flags, unchanged_since); }
  friend bool operator<(const FlagChange& a, const FlagChange& b) { return a.key() < b.key(); }
};

}  // namespace

Result<ImapStore::FlagStores> ImapStore::submit_flags(const std::vector<FlagUpdate>& updates) {
  auto& s = client_->session();
  std::map<FlagChange, std::vector<Uid>> groups;
  for (const auto& u : updates) {
    if (tier_ != Tier::plain) {
      groups[{imap::cmd::StoreMode::replace, u.flags, u.unchanged_since}].push_back(u.uid);
      continue;
    }
    // Plain: no conditional STORE, so only the difference is sent and another client's change
    // to other flags since the listing survives.
    if (!u.add.empty()) groups[{imap::cmd::StoreMode::add, u.add, std::nullopt}].push_back(u.uid);
    if (!u.remove.empty()) {
      groups[{imap::cmd::StoreMode::remove, u.remove, std::nullopt}].push_back(u.uid);
    }
  }
  FlagStores out;
  for (auto& [change, uids] : groups) {
    imap::cmd::StoreOp op;
    op.mode = change.mode;
    op.flags = change.flags;
    op.unchanged_since = change.unchanged_since;
    auto store = s.uid_store(set_of(uids), op);
    if (!store) return store.error();
    for (auto id : *store) {
      out.ids.push_back(id);
      out.sent.push_back(uids);
    }
  }
  return out;
}

Result<std::set<Uid>> ImapStore::flags_stored(const FlagStores& stores,
                                              const std::vector<imap::Completion>& done) const {
  std::set<Uid> modified;
  for (std::size_t i = 0; i < done.size(); ++i) {
    if (done[i].status.code.kind == imap::CodeKind::modified) {
      // RFC 7162 §3.1.3: the UIDs that were not stored; the others were.
      for (Uid uid : stores.sent[i]) {
        if (done[i].status.code.set.contains(uid)) modified.insert(uid);
      }
      continue;
    }
    if (!done[i].ok()) return rejected(side_, "UID STORE (UNCHANGEDSINCE)", done[i]);
  }
  return modified;
}

asio::awaitable<Result<std::set<Uid>>> ImapStore::set_flags(
    const std::vector<FlagUpdate>& updates) {
  auto stores = submit_flags(updates);
  if (!stores) co_return stores.error();
  auto done = co_await client_->wait_all(stores->ids);
  if (!done) co_return done.error();
  co_return flags_stored(*stores, *done);
}

Result<std::vector<imap::CommandId>> ImapStore::mark_deleted(const std::vector<Uid>& uids) {
  imap::cmd::StoreOp deleted;
  deleted.flags = {"\\Deleted"};
  return client_->session().uid_store(set_of(uids), deleted);
}

Result<ImapStore::Expunges> ImapStore::submit_expunge(const std::vector<Uid>& uids) {
  auto store = mark_deleted(uids);
  if (!store) return store.error();
  // UID EXPUNGE of exactly these UIDs: never plain EXPUNGE, which would also remove other
  // clients' \Deleted messages (RFC 4315 §2.1, RFC 7162 §3.2.9). Pipelined behind the STORE:
  // both are UID commands, which RFC 9051 §5.5 allows in flight together; the server runs them
  // in order.
  auto expunge = client_->session().uid_expunge(set_of(uids));
  if (!expunge) return expunge.error();
  Expunges out;
  out.ids = *store;
  out.stores = store->size();
  out.ids.insert(out.ids.end(), expunge->begin(), expunge->end());
  return out;
}

Status ImapStore::expunged(const Expunges& sent, const std::vector<imap::Completion>& done) const {
  for (std::size_t i = 0; i < done.size(); ++i) {
    if (!done[i].ok()) {
      return rejected(
          side_, i < sent.stores ? "UID STORE +FLAGS.SILENT (\\Deleted)" : "UID EXPUNGE", done[i]);
    }
  }
  return ok_status();
}

asio::awaitable<Status> ImapStore::expunge(const std::vector<Uid>& uids) {
  if (uids.empty()) co_return ok_status();
  if (!has("UIDPLUS")) {
    auto store = mark_deleted(uids);
    if (!store) co_return store.error();
    co_return co_await expunge_without_uidplus(uids, *store);
  }
  auto sent = submit_expunge(uids);
  if (!sent) co_return sent.error();
  auto done = co_await client_->wait_all(sent->ids);
  if (!done) co_return done.error();
  co_return expunged(*sent, *done);
}

asio::awaitable<Result<std::set<Uid>>> ImapStore::expunge_and_set_flags(
    const std::vector<Uid>& expunges, const std::vector<FlagUpdate>& updates) {
  std::set<Uid> doomed(expunges.begin(), expunges.end());
  const bool disjoint = std::none_of(updates.begin(), updates.end(),
                                     [&](const FlagUpdate& u) { return doomed.count(u.uid) > 0; });
  // One after the other without UIDPLUS (its EXPUNGE needs a look first), or when a message is
  // in both (a STORE and an EXPUNGE of one message in flight together are ambiguous, RFC 9051
  // §5.5).
  if (expunges.empty() || updates.empty() || !has("UIDPLUS") || !disjoint) {
    co_return co_await MailStore::expunge_and_set_flags(expunges, updates);
  }
  auto expunging = submit_expunge(expunges);
  if (!expunging) co_return expunging.error();
  auto storing = submit_flags(updates);
  if (!storing) co_return storing.error();
  auto done_expunge = co_await client_->wait_all(expunging->ids);
  if (!done_expunge) co_return done_expunge.error();
  auto done_store = co_await client_->wait_all(storing->ids);
  if (!done_store) co_return done_store.error();
  Status gone = expunged(*expunging, *done_expunge);
  if (!gone) co_return gone.error();
  co_return flags_stored(*storing, *done_store);
}

asio::awaitable<Status> ImapStore::expunge_without_uidplus(const std::vector<Uid>& uids,
                                                           std::vector<imap::CommandId> store) {
  // EXPUNGE removes every \Deleted message: only when ours are the only ones (RFC 9051 §6.4.3).
  // Another client marking one between the SEARCH and the EXPUNGE meant to expunge it anyway.
  auto& s = client_->session();
  auto search = imap::CommandBuilder("UID SEARCH", s.wire_options()).raw("DELETED").build();
  if (!search) co_return search.error();
  auto searched = s.submit(std::move(*search));
  if (!searched) co_return searched.error();
  std::vector<imap::CommandId> ids = std::move(store);
  ids.push_back(*searched);
  auto done = co_await client_->wait_all(std::move(ids));
  if (!done) co_return done.error();
  for (const auto& completion : *done) {
    if (!completion.ok()) co_return rejected(side_, "UID STORE/UID SEARCH DELETED", completion);
  }
  const std::set<Uid> ours(uids.begin(), uids.end());
  std::vector<Uid> others;
  for (const auto& response : done->back().untagged) {
    if (const auto* found = std::get_if<imap::SearchData>(&response.data)) {
      for (auto uid : found->numbers) {
        if (!ours.count(uid)) others.push_back(uid);
      }
    }
  }
  if (!others.empty()) {
    // Leave the mailbox as it was: ours lose \Deleted again, the deletion waits.
    imap::cmd::StoreOp undo;
    undo.mode = imap::cmd::StoreMode::remove;
    undo.flags = {"\\Deleted"};
    auto undone = co_await client_->wait_all(s.uid_store(set_of(uids), undo));
    if (!undone) co_return undone.error();
    co_return Error(Errc::rejected,
                    fmt::format("{}: cannot expunge {} message(s) without UIDPLUS: {} other "
                                "message(s) of this mailbox are marked \\Deleted and EXPUNGE "
                                "would remove them too (expunge them, or clear the flag)",
                                side_name(side_), uids.size(), others.size()));
  }
  auto expunge = imap::CommandBuilder("EXPUNGE", s.wire_options()).build();
  if (!expunge) co_return expunge.error();
  auto submitted = s.submit(std::move(*expunge));
  auto expunged = co_await client_->expect_ok(std::move(submitted), "EXPUNGE");
  if (!expunged) co_return expunged.error();
  co_return ok_status();
}

asio::awaitable<Status> ImapStore::remove(const std::string& internal) {
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  auto& s = client_->session();
  if (selected_ == internal) {
    Status left = co_await unselect();
    if (!left) co_return left;
  }
  auto command = imap::CommandBuilder("DELETE", s.wire_options()).mailbox(*name).build();
  if (!command) co_return command.error();
  auto submitted = s.submit(std::move(*command));
  auto done = co_await client_->expect_ok(std::move(submitted), "DELETE " + printable(*name));
  if (!done) co_return done.error();
  co_return ok_status();
}

asio::awaitable<Status> ImapStore::rename(const std::string& from, const std::string& to) {
  auto old_name = co_await wire_name(from);
  if (!old_name) co_return old_name.error();
  auto new_name = co_await wire_name(to);
  if (!new_name) co_return new_name.error();
  auto& s = client_->session();
  if (!selected_.empty()) {
    Status left = co_await unselect();
    if (!left) co_return left;
  }
  auto command = imap::CommandBuilder("RENAME", s.wire_options())
                     .mailbox(*old_name)
                     .mailbox(*new_name)
                     .build();
  if (!command) co_return command.error();
  auto submitted = s.submit(std::move(*command));
  auto done = co_await client_->expect_ok(
      std::move(submitted),
      fmt::format("RENAME {} {}", printable(*old_name), printable(*new_name)));
  if (!done) co_return done.error();
  co_return ok_status();
}

asio::awaitable<Result<FullObservation>> ImapStore::observe_all(const std::string& internal) {
  Status ready = co_await enabled();  // the tier decides what is asked
  if (!ready) co_return ready.error();
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  auto& s = client_->session();
  auto selected = co_await select(internal, *name, select_options());
  if (!selected) co_return selected.error();
  const auto& state = s.mailbox();
  FullObservation out;
  out.state.uidvalidity = *state->uidvalidity;
  out.state.uidnext = uidnext();
  if (state->exists > 0) {
    auto all = co_await summaries_from(1);
    if (!all) co_return all.error();
    out.messages = std::move(*all);
    std::sort(out.messages.begin(), out.messages.end(),
              [](const MessageSummary& a, const MessageSummary& b) { return a.uid < b.uid; });
  }
  out.state.highestmodseq = highestmodseq();
  out.state.exists = s.mailbox() ? s.mailbox()->exists : 0;
  // A re-read decides what was expunged by absence, like a plain listing.
  Status whole = listing_is_whole(*name, out.messages.size());
  if (!whole) co_return whole.error();
  co_return out;
}

Status ImapStore::listing_is_whole(const std::string& name, std::size_t listed) const {
  const auto& state = client_->session().mailbox();
  const std::size_t exists = state ? state->exists : 0;
  if (listed == exists) return ok_status();
  return Error(Errc::protocol,
               fmt::format("{}: {} announced {} message(s) (EXISTS) but its listing (UID FETCH "
                           "or UID SEARCH) has {}; a listing that does not add up cannot tell "
                           "what was expunged, so nothing was changed in this mailbox",
                           side_name(side_), printable(name), exists, listed));
}

asio::awaitable<Status> ImapStore::unselect() {
  held_.clear();
  auto& s = client_->session();
  if (!s.mailbox()) {
    selected_.clear();
    co_return ok_status();
  }
  if (!s.has_capability("UNSELECT") && !s.has_capability("IMAP4REV2")) co_return ok_status();
  auto submitted = s.unselect();
  auto done = co_await client_->expect_ok(std::move(submitted), "UNSELECT");
  if (!done) co_return done.error();
  selected_.clear();
  co_return ok_status();
}

asio::awaitable<Result<bool>> ImapStore::start_idle(const std::string& internal) {
  Status ready = co_await enabled();  // the tier decides what is asked
  if (!ready) co_return ready.error();
  auto& s = client_->session();
  if (!s.has_capability("IDLE") && !s.has_capability("IMAP4REV2")) co_return false;
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  if (selected_ != internal) {
    const imap::cmd::SelectOptions plain;
    auto selected = co_await select(internal, *name, plain);
    if (!selected) co_return selected.error();
  }
  auto idle = s.idle();
  if (!idle) co_return idle.error();
  idle_ = *idle;
  co_return true;
}

asio::awaitable<Status> ImapStore::wait_for_announcement(std::chrono::milliseconds slice) {
  co_return co_await client_->await_unsolicited(slice);
}

Result<Announcement> ImapStore::take_announcements() {
  Announcement heard;
  while (auto next = client_->session().next_unsolicited()) {
    const auto& data = next->data;
    if (const auto* status = std::get_if<imap::StatusData>(&data)) {
      // A name outside list-reference, or one LIST would skip too (a warning said why), is not
      // a mailbox this run syncs.
      auto name = internal_name(status->mailbox, delimiter_);
      if (name) {
        ListedMailbox m;
        m.name = *name;
        m.wire = status->mailbox;
        m.uidvalidity = status->uidvalidity;
        m.uidnext = status->uidnext;
        m.highestmodseq = status->highestmodseq;
        if (tier_ == Tier::condstore) m.messages = status->messages;
        heard.add_status(m);
      }
    } else if (const auto* l = std::get_if<imap::ListData>(&data)) {
      // LSUB data is only ever the answer to our own LSUB (NOTIFY announces with LIST).
      auto name = internal_name(l->mailbox, l->delimiter);
      if (name && !l->lsub) {
        ListedMailbox m;
        m.name = *name;
        m.wire = l->mailbox;
        m.selectable = !has_attribute(*l, "\\Noselect") && !has_attribute(*l, "\\NonExistent");
        m.subscribed = has_attribute(*l, "\\Subscribed");
        heard.listings.insert_or_assign(*name, std::move(m));
      }
    } else if (std::holds_alternative<imap::ExpungeData>(data) ||
               std::holds_alternative<imap::VanishedData>(data)) {
      heard.everywhere = true;
    } else if (std::holds_alternative<imap::ExistsData>(data) ||
               std::holds_alternative<imap::FetchData>(data)) {
      if (selected_.empty()) {
        heard.everywhere = true;
      } else {
        heard.touched.insert(selected_);
      }
    } else if (const auto* status = std::get_if<imap::StatusResponse>(&data)) {
      if (status->condition == imap::Condition::bye) {
        return Error(Errc::eof, fmt::format("{}: the server closed the connection: {}",
                                            side_name(side_), status->text));
      }
    }
  }
  return heard;
}

asio::awaitable<Result<std::vector<ListedMailbox>>> ImapStore::status(
    const std::vector<std::string>& names) {
  Status ready = co_await enabled();  // the tier decides what is asked
  if (!ready) co_return ready.error();
  std::vector<ListedMailbox> out;
  for (const auto& internal : names) {
    auto name = co_await wire_name(internal);
    if (!name) co_return name.error();
    auto wire = imap::mailbox_to_wire(*name, utf8());
    if (!wire) co_return wire.error();
    ListedMailbox m;
    m.name = internal;
    m.wire = *wire;
    out.push_back(std::move(m));
  }
  Status asked = co_await status_of(out);
  if (!asked) co_return asked.error();
  co_return out;
}

asio::awaitable<Status> ImapStore::stop_idle() {
  if (!idle_) co_return ok_status();
  const imap::CommandId id = *idle_;
  idle_.reset();
  auto& s = client_->session();
  Status done = s.idle_done();
  (void)done;  // the server may have ended the IDLE itself: its completion is waiting below
  auto completed = co_await client_->wait(id);
  if (!completed) co_return completed.error();
  co_return ok_status();
}

asio::awaitable<Status> ImapStore::notify(bool on) {
  Status ready = co_await enabled();
  if (!ready) co_return ready;
  auto& s = client_->session();
  imap::CommandBuilder builder("NOTIFY", s.wire_options());
  if (on) {
    builder.atom("SET").raw(
        "(selected (MessageNew (UID) MessageExpunge FlagChange)) (personal (MessageNew "
        "MessageExpunge FlagChange MailboxName SubscriptionChange))");
  } else {
    builder.atom("NONE");
  }
  auto command = builder.build();
  if (!command) co_return command.error();
  auto submitted = s.submit(std::move(*command));
  auto done = co_await client_->expect_ok(std::move(submitted), on ? "NOTIFY SET" : "NOTIFY NONE");
  if (!done) co_return done.error();
  s.set_announcing(on);
  // What NOTIFY announced and nobody waited for: the full look that follows covers it.
  if (!on) s.discard_unsolicited();
  co_return ok_status();
}

Result<imap::CommandId> ImapStore::submit_highest_uid() {
  // "*" is the message with the highest UID (RFC 9051 §6.4.8); none in an empty mailbox.
  auto& s = client_->session();
  auto command = imap::CommandBuilder("UID FETCH", s.wire_options()).raw("* (UID)").build();
  if (!command) return command.error();
  return s.submit(std::move(*command));
}

Uid ImapStore::highest_of(const imap::Completion& done) {
  Uid highest = 0;  // an empty mailbox may answer NO or BAD to "*"
  for (const auto& response : done.untagged) {
    const auto* f = std::get_if<imap::FetchData>(&response.data);
    if (f != nullptr && f->uid) highest = std::max(highest, *f->uid);
  }
  return highest;
}

asio::awaitable<Result<Appended>> ImapStore::appended(Uid above,
                                                      const std::vector<std::uint64_t>& sizes) {
  if (above == kMaxUid) {
    co_return Error(Errc::protocol, fmt::format("{}: the highest UID before the APPEND was {}: "
                                                "the appended messages cannot have UIDs",
                                                side_name(side_), above));
  }
  imap::SequenceSet range;
  range.add(above + 1, kMaxUid);
  auto fetched =
      co_await client_->wait_all(client_->session().uid_fetch(range, "(UID RFC822.SIZE)"));
  if (!fetched) co_return fetched.error();
  std::map<Uid, std::uint64_t> fresh;
  for (const auto& done : *fetched) {
    if (!done.ok()) co_return rejected(side_, "UID FETCH of appended messages", done);
    for (const auto& response : done.untagged) {
      const auto* f = std::get_if<imap::FetchData>(&response.data);
      if (f != nullptr && f->uid && *f->uid > above && f->rfc822_size) {
        fresh[*f->uid] = *f->rfc822_size;
      }
    }
  }
  // Ours are the new ones, in order, when nobody else delivered meanwhile. Otherwise they cannot
  // be told apart here: the pending intents let the next run pair them by content.
  Appended out;
  out.uidvalidity =
      client_->session().mailbox() ? client_->session().mailbox()->uidvalidity.value_or(0) : 0;
  std::size_t i = 0;
  for (const auto& [uid, size] : fresh) {
    if (i >= sizes.size() || size != sizes[i]) break;
    out.uids.push_back(uid);
    ++i;
  }
  if (fresh.size() != sizes.size() || out.uids.size() != sizes.size()) {
    co_return Error(Errc::rejected,
                    fmt::format("{}: {} message(s) appended without UIDPLUS, but {} new message(s) "
                                "are in the mailbox; the next run pairs them by content",
                                side_name(side_), sizes.size(), fresh.size()));
  }
  co_return out;
}

Result<Appended> ImapStore::appended_one(const imap::Completion& done,
                                         const std::string& name) const {
  if (!done.ok()) return rejected(side_, fmt::format("APPEND to {}", printable(name)), done);
  const auto& code = done.status.code;
  // CVE-2021-3578 class: validate the code before trusting it.
  if (code.kind != imap::CodeKind::appenduid || code.set_order.size() != 1) {
    return Error(Errc::protocol,
                 fmt::format("{}: APPEND gave no usable APPENDUID", side_name(side_)));
  }
  Appended result;
  result.uidvalidity = static_cast<std::uint32_t>(code.number);
  result.uids.push_back(code.set_order[0]);
  return result;
}

namespace {
// net::Client pulls the pieces of a streamed literal through its own interface.
class WireSource : public net::BodySource {
 public:
  explicit WireSource(sync::BodySource& source) : source_(source) {}
  asio::awaitable<Result<std::string>> next_piece() override { return source_.next_piece(); }

 private:
  sync::BodySource& source_;
};
}  // namespace

asio::awaitable<Result<Appended>> ImapStore::append_streamed(const std::string& internal,
                                                             OutgoingMessage outgoing,
                                                             std::uint64_t size,
                                                             BodySource& source) {
  auto name = co_await wire_name(internal);
  if (!name) co_return name.error();
  imap::cmd::AppendMessage message = to_wire(std::move(outgoing));
  message.content.clear();
  message.streamed_size = size;
  std::vector<imap::cmd::AppendMessage> one;
  one.push_back(std::move(message));
  Uid above = 0;
  if (!has("UIDPLUS")) {
    if (selected_ != internal) {
      co_return Error(Errc::internal, "APPEND without UIDPLUS needs the mailbox selected");
    }
    auto highest = submit_highest_uid();
    if (!highest) co_return highest.error();
    auto answered = co_await client_->wait(*highest);
    if (!answered) co_return answered.error();
    above = highest_of(*answered);
  }
  auto id = client_->session().append(*name, std::move(one));
  WireSource wire(source);
  auto done = co_await client_->wait_streaming(std::move(id), wire);
  if (!done) co_return done.error();
  if (!has("UIDPLUS")) {
    if (!done->ok())
      co_return rejected(side_, fmt::format("APPEND to {}", printable(*name)), *done);
    const std::vector<std::uint64_t> sizes = {size};
    co_return co_await appended(above, sizes);
  }
  co_return appended_one(*done, *name);
}

asio::awaitable<Result<std::set<Uid>>> ImapStore::exact_sizes(
    const std::map<Uid, std::uint64_t>& sizes) {
  auto& s = client_->session();
  std::vector<imap::CommandId> ids;
  for (const auto& [uid, size] : sizes) {
    if (size == 0) continue;
    imap::SequenceSet one;
    one.add(uid);
    auto fetch = s.uid_fetch(one, fmt::format("(BODY.PEEK[]<{}.2>)", size - 1));
    if (!fetch) co_return fetch.error();
    ids.insert(ids.end(), fetch->begin(), fetch->end());
  }
  auto fetched = co_await client_->wait_all(std::move(ids));
  if (!fetched) co_return fetched.error();
  std::set<Uid> exact;
  for (auto& done : *fetched) {
    if (!done.ok()) co_return rejected(side_, "UID FETCH BODY.PEEK[]<partial>", done);
    for (auto& response : done.untagged) {
      auto* f = std::get_if<imap::FetchData>(&response.data);
      if (f == nullptr || !f->uid) continue;
      auto it = sizes.find(*f->uid);
      if (it == sizes.end()) continue;
      for (auto& body : f->bodies) {
        if (body.section.empty() && !body.binary && body.data && body.origin &&
            *body.origin == it->second - 1 && body.data->size() == 1) {
          exact.insert(*f->uid);
        }
      }
    }
  }
  co_return exact;
}

asio::awaitable<Result<std::optional<char>>> ImapStore::delimiter() {
  Status known = co_await learn_delimiter();
  if (!known) co_return known.error();
  co_return delimiter_;
}

std::unique_ptr<BodyReader> ImapStore::read_body(Uid uid, std::uint64_t size) {
  return std::make_unique<BodyPieces>(*this, uid, size);
}

bool ImapStore::can_notify() const { return client_->session().has_capability("NOTIFY"); }

Traffic ImapStore::traffic() const {
  const auto counters = client_->counters();
  return {earlier_traffic_.in + counters.wire_in, earlier_traffic_.out + counters.wire_out,
          earlier_traffic_.round_trips + client_->round_trips(), client_->fastest_round_trip()};
}

void ImapStore::close() { client_->close(); }

asio::awaitable<void> ImapStore::logout() { co_await client_->logout(); }

asio::awaitable<Result<std::unique_ptr<MailStore>>> ImapConnector::open(Side side,
                                                                        const MailStore* sibling) {
  // Only a lane's first connection presumes: its LIST is the one that gains; the others open
  // while a run is under way, and their answers are read at once.
  const bool first = sibling == nullptr;
  std::optional<net::RememberedCapabilities> remembered;
  if (first && presume_logins_) remembered = recall(side);
  auto client = co_await net::Client::connect(endpoints_[side], std::move(remembered));
  if (!client) co_return client.error();
  if (first) remember(side, **client);
  auto store = std::make_unique<ImapStore>(side, std::move(*client), references_[side]);
  store->set_connector(this);
  Status prepared = store->prepare(limits_[side]);
  if (!prepared) co_return prepared.error();
  // Another connection to the same server already listed it: same delimiter, no LIST needed.
  if (const auto* imap = dynamic_cast<const ImapStore*>(sibling)) store->adopt_delimiter(*imap);
  co_return std::unique_ptr<MailStore>(std::move(store));
}

Status BodyPieces::request_more() {
  auto& s = replica_.client_->session();
  while (pending_.size() < kDepth && requested_ < size_) {
    Request r;
    r.origin = requested_;
    r.count = std::min(kPieceSize, size_ - requested_);
    // The last piece asks for one octet more: a body longer than announced shows up here,
    // before the literal it would overflow is complete.
    const bool last = r.origin + r.count == size_;
    imap::SequenceSet one;
    one.add(uid_);
    auto fetch =
        s.uid_fetch(one, fmt::format("(BODY.PEEK[]<{}.{}>)", r.origin, r.count + (last ? 1 : 0)));
    if (!fetch) return fetch.error();
    r.ids = std::move(*fetch);
    requested_ += r.count;
    pending_.push_back(std::move(r));
  }
  return ok_status();
}

asio::awaitable<Result<std::string>> BodyPieces::next_piece() {
  Status requested = request_more();
  if (!requested) co_return requested.error();
  if (pending_.empty()) co_return std::string();
  Request r = std::move(pending_.front());
  pending_.pop_front();
  auto fetched = co_await replica_.client_->wait_all(std::move(r.ids));
  if (!fetched) co_return fetched.error();
  // Dovecot answers pipelined FETCHes concurrently: a piece may come attributed to an earlier
  // command of ours, so pieces are kept by origin whatever completion carried them.
  for (auto& done : *fetched) {
    if (!done.ok()) co_return rejected(replica_.side_, "UID FETCH BODY.PEEK[]<partial>", done);
    for (auto& response : done.untagged) {
      auto* f = std::get_if<imap::FetchData>(&response.data);
      if (f == nullptr || f->uid != uid_) continue;
      for (auto& body : f->bodies) {
        if (body.section.empty() && !body.binary && body.data && body.origin) {
          received_[*body.origin] = std::move(*body.data);
        }
      }
    }
  }
  std::optional<std::string> piece;
  if (auto it = received_.find(r.origin); it != received_.end()) {
    piece = std::move(it->second);
    received_.erase(it);
  }
  if (!piece) {
    co_return Error(Errc::protocol, fmt::format("{}: UID {} vanished while being copied",
                                                side_name(replica_.side_), uid_));
  }
  if (piece->size() != r.count) {
    co_return Error(
        Errc::protocol,
        fmt::format("{}: UID {} does not have the {} octets its RFC822.SIZE announced "
                    "(octets {}.. gave {} instead of {})",
                    side_name(replica_.side_), uid_, size_, r.origin, piece->size(), r.count));
  }
  delivered_ += piece->size();
  co_return std::move(*piece);
}

}  // namespace twinbox::sync

namespace twinbox::sync {

namespace {
constexpr std::string_view kNoteMagic = "twinbox-capabilities 1";

std::string note_key(Side side) { return fmt::format("server.{}", side_name(side)); }

// The pieces of `text` between `separator`s (empty ones included; none after a final one).
std::vector<std::string_view> pieces(std::string_view text, char separator) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find(separator, start), text.size());
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::set<std::string> words(std::string_view text) {
  std::set<std::string> out;
  for (std::string_view word : pieces(text, ' ')) {
    if (!word.empty()) out.emplace(word);
  }
  return out;
}
}  // namespace

std::string ImapConnector::endpoint_hash(const net::Endpoint& e) {
  // Another server, account or way in makes the note void. A tunnel's command is left out (it
  // may hold a secret, and a hash of it could be guessed offline): a note that is about another
  // server behind the same kind of tunnel only costs a connection, since what the server says
  // after login is compared with what was presumed.
  const std::string_view type = e.type == net::EndpointType::imap    ? "imap"
                                : e.type == net::EndpointType::imaps ? "imaps"
                                                                     : "tunnel";
  return sha256_hex(fmt::format("{}\n{}\n{}\n{}\n{}", type, e.host, e.port, e.username,
                                e.proxy ? e.proxy->host + ":" + e.proxy->port : ""));
}

std::string ImapConnector::format_note(const Note& note) {
  return fmt::format("{}\nendpoint {}\npresume {}\nbefore-login {}\nafter-login {}\n", kNoteMagic,
                     note.endpoint, note.presume ? "yes" : "no",
                     fmt::join(note.capabilities.before_login, " "),
                     fmt::join(note.capabilities.after_login, " "));
}

std::optional<ImapConnector::Note> ImapConnector::parse_note(std::string_view text) {
  const std::vector<std::string_view> lines = pieces(text, '\n');
  const auto field = [&](std::size_t i, std::string_view name) -> std::optional<std::string_view> {
    if (i >= lines.size() || !lines[i].starts_with(name) || lines[i].size() < name.size() + 1 ||
        lines[i][name.size()] != ' ') {
      return std::nullopt;
    }
    return lines[i].substr(name.size() + 1);
  };
  if (lines.size() != 5 || lines[0] != kNoteMagic) return std::nullopt;
  auto endpoint = field(1, "endpoint");
  auto presume = field(2, "presume");
  auto before = field(3, "before-login");
  auto after = field(4, "after-login");
  if (!endpoint || !presume || !before || !after || (*presume != "yes" && *presume != "no")) {
    return std::nullopt;
  }
  Note note;
  note.endpoint = std::string(*endpoint);
  note.presume = *presume == "yes";
  note.capabilities.before_login = words(*before);
  note.capabilities.after_login = words(*after);
  return note;
}

std::optional<ImapConnector::Note> ImapConnector::read_note(Side side) {
  if (notes_ == nullptr) return std::nullopt;
  if (!note_read_[side]) {
    note_read_[side] = true;
    auto text = notes_->note(note_key(side));
    if (!text) {
      log_debug("{}: {}", side_name(side), text.error().message);
    } else if (*text) {
      note_[side] = parse_note(**text);
      if (!note_[side])
        log_debug("{}: ignoring an unreadable {} note", side_name(side), note_key(side));
    }
  }
  return note_[side];
}

std::optional<net::RememberedCapabilities> ImapConnector::recall(Side side) {
  auto note = read_note(side);
  if (!note || !note->presume || note->endpoint != endpoint_hash(endpoints_[side])) {
    return std::nullopt;
  }
  return note->capabilities;
}

void ImapConnector::remember(Side side, const net::Client& client, bool refused) {
  if (notes_ == nullptr) return;
  auto capabilities = client.capabilities_to_remember();
  if (!capabilities) return;
  Note note{endpoint_hash(endpoints_[side]), !refused, std::move(*capabilities)};
  auto old = read_note(side);
  // A server that failed what was pipelined behind its login is not presumed with again while
  // it announces the same; another version of it (other capabilities) gets another chance.
  if (old && old->endpoint == note.endpoint && !old->presume &&
      old->capabilities == note.capabilities) {
    note.presume = false;
  }
  if (old && old->endpoint == note.endpoint && old->presume == note.presume &&
      old->capabilities == note.capabilities) {
    return;  // nothing new: a run that changes nothing writes nothing
  }
  write_note(side, std::move(note));
}

void ImapConnector::stop_presuming(Side side) {
  auto note = read_note(side);
  if (!note || !note->presume) return;
  note->presume = false;
  write_note(side, std::move(*note));
}

void ImapConnector::write_note(Side side, Note note) {
  // Only a hint for the next run: a database that cannot take it costs a round trip, no more.
  Status written = notes_->set_note(note_key(side), format_note(note));
  if (!written) {
    log_debug("{}: could not note the server's capabilities: {}", side_name(side),
              written.error().message);
    return;
  }
  note_[side] = std::move(note);
}

asio::awaitable<Result<std::unique_ptr<net::Client>>> ImapConnector::connect_again(Side side,
                                                                                   bool refused) {
  auto client = co_await net::Client::connect(endpoints_[side]);
  if (client) remember(side, **client, refused);
  co_return client;
}

}  // namespace twinbox::sync
