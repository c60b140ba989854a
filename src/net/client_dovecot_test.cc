// The client against real Dovecot servers started by the suite (tests/dovecot/lab): every
// transport, TLS verification, and the commands the sync engine will depend on.
#include <gtest/gtest.h>

#include "dovecot/dovecot_lab.h"
#include "net/client.h"
#include "net/run_coroutine.h"

namespace twinbox::net {
namespace {

using dovecot::DovecotLab;
using namespace std::chrono_literals;

// One TLS-capable server for the whole suite: starting Dovecot costs about a second.
class ClientDovecot : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dovecot::Options options;
    options.tls = dovecot::Tls::imaps;
    lab_ = new DovecotLab(DovecotLab::start(options));
  }
  static void TearDownTestSuite() {
    delete lab_;
    lab_ = nullptr;
  }

  static Endpoint tcp(EndpointType type = EndpointType::imap) {
    Endpoint e;
    e.name = "remote";
    e.type = type;
    e.host = "localhost";
    e.port = std::to_string(type == EndpointType::imaps ? lab_->imaps_port() : lab_->port());
    e.username = lab_->user();
    e.password = lab_->password();
    e.tls.ca_file = lab_->ca_file();
    e.connect_timeout = 10s;
    e.io_timeout = 20s;
    return e;
  }

  static Endpoint tunnel() {
    Endpoint e;
    e.name = "local";
    e.type = EndpointType::tunnel;
    e.command = lab_->tunnel_command_line();
    e.compress = true;
    e.io_timeout = 20s;
    return e;
  }

  // Connected, and compressed where the endpoint asks for it.
  static std::unique_ptr<Client> connect(Endpoint e) {
    auto client = run_coroutine(Client::connect(std::move(e)));
    if (!client) ADD_FAILURE() << client.error().to_string();
    if (!client) return nullptr;
    Status compressed = run_coroutine((*client)->compress());
    if (!compressed) ADD_FAILURE() << compressed.error().to_string();
    return compressed ? std::move(*client) : nullptr;
  }

  static inline DovecotLab* lab_ = nullptr;
};

TEST_F(ClientDovecot, StarttlsVerifiesTheCaAndHostThenLogsIn) {
  auto client = connect(tcp());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->info().tls.has_value());
  EXPECT_EQ(client->info().tls->spki_sha256, lab_->pin());
  EXPECT_TRUE(client->session().has_capability("QRESYNC"));
  EXPECT_EQ(client->info().discarded_before_tls, 0u);
  run_coroutine(client->logout());
}

TEST_F(ClientDovecot, ImplicitTlsWithPinLogsIn) {
  Endpoint e = tcp(EndpointType::imaps);
  e.tls.fingerprints = {"sha256$" + lab_->pin()};
  auto client = connect(e);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->info().auth_mechanism, "PLAIN");
}

TEST_F(ClientDovecot, UntrustedCertificateFails) {
  Endpoint e = tcp(EndpointType::imaps);
  e.tls.ca_file.clear();  // system trust store: the lab's CA is not in it
  auto client = run_coroutine(Client::connect(e));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::tls);
}

TEST_F(ClientDovecot, PinMismatchFailsEvenWithAValidChain) {
  Endpoint e = tcp(EndpointType::imaps);
  e.tls.fingerprints = {"sha256$" + std::string(64, 'a')};
  auto client = run_coroutine(Client::connect(e));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::tls);
}

TEST_F(ClientDovecot, WrongPasswordIsAnAuthError) {
  Endpoint e = tcp();
  e.password = "not-the-password";
  auto client = run_coroutine(Client::connect(e));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().code, Errc::auth);
}

TEST_F(ClientDovecot, TunnelIsPreauthenticatedAndCompressed) {
  auto client = connect(tunnel());
  ASSERT_TRUE(client);
  EXPECT_TRUE(client->info().preauth);
  EXPECT_TRUE(client->info().compressed);
  auto counters = client->counters();
  EXPECT_GT(counters.plain_in, 0u);
}

// The command flow of a QRESYNC sync, end to end, over a compressed tunnel.
TEST_F(ClientDovecot, QresyncCommandFlow) {
  auto client = connect(tunnel());
  ASSERT_TRUE(client);
  auto& c = *client;
  auto& s = c.session();
  const std::vector<std::string> qresync = {"QRESYNC"};
  ASSERT_TRUE(run_coroutine(c.expect_ok(s.enable(qresync), "ENABLE")).ok());
  ASSERT_TRUE(s.is_enabled("QRESYNC"));
  auto create = imap::CommandBuilder("CREATE", s.wire_options()).mailbox("Flow").build();
  ASSERT_TRUE(create.ok());
  auto created = run_coroutine(c.expect_ok(s.submit(std::move(*create)), "CREATE"));
  ASSERT_TRUE(created.ok()) << created.error().to_string();

  // MULTIAPPEND of three messages with LITERAL+.
  std::vector<imap::cmd::AppendMessage> messages;
  for (int i = 1; i <= 3; ++i) {
    messages.push_back({{"\\Seen", "$Label1"},
                        "17-Jul-2024 02:44:25 +0200",
                        "Subject: m" + std::to_string(i) + "\r\nMessage-ID: <m" +
                            std::to_string(i) + "@x>\r\n\r\nbody " + std::to_string(i) + "\r\n"});
  }
  auto appended = run_coroutine(c.expect_ok(s.append("Flow", std::move(messages)), "APPEND"));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  ASSERT_EQ(appended->status.code.kind, imap::CodeKind::appenduid);
  const auto uidvalidity = static_cast<std::uint32_t>(appended->status.code.number);
  ASSERT_EQ(appended->status.code.set.size(), 3u);

  // LIST-STATUS sees them.
  imap::cmd::ListOptions list_options;
  list_options.return_items = {"SUBSCRIBED"};
  list_options.status_items = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ"};
  const std::vector<std::string> pattern = {"Flow"};
  auto listed = run_coroutine(c.expect_ok(s.list("", pattern, list_options), "LIST"));
  ASSERT_TRUE(listed.ok());
  std::optional<imap::StatusData> status;
  for (auto& r : listed->untagged) {
    if (auto* st = std::get_if<imap::StatusData>(&r.data)) status = *st;
  }
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->messages, 3u);
  const imap::ModSeq modseq_before = status->highestmodseq.value_or(0);
  ASSERT_GT(modseq_before, 0u);

  // Changes behind our back: a flag on message 2 and an expunge of message 3 (via doveadm).
  const auto uids = appended->status.code.set_order;
  ASSERT_EQ(uids.size(), 3u);
  ASSERT_TRUE(lab_->doveadm({"flags", "add", "\\Flagged", "mailbox", "Flow", "uid",
                             std::to_string(uids[1])})
                  .ok());
  ASSERT_TRUE(lab_->doveadm({"expunge", "mailbox", "Flow", "uid", std::to_string(uids[2])}).ok());

  // SELECT (QRESYNC ...) reports exactly those changes.
  imap::cmd::SelectOptions select;
  select.qresync = imap::cmd::QresyncParams{uidvalidity, modseq_before, {}, std::nullopt};
  auto selected = run_coroutine(c.expect_ok(s.select("Flow", select), "SELECT"));
  ASSERT_TRUE(selected.ok()) << selected.error().to_string();
  bool vanished = false, flagged = false;
  for (auto& r : selected->untagged) {
    if (auto* v = std::get_if<imap::VanishedData>(&r.data)) {
      vanished = v->earlier && v->uids.contains(uids[2]);
    }
    if (auto* f = std::get_if<imap::FetchData>(&r.data)) {
      flagged = f->uid == uids[1] && f->flags &&
                std::find(f->flags->begin(), f->flags->end(), "\\Flagged") != f->flags->end();
    }
  }
  EXPECT_TRUE(vanished);
  EXPECT_TRUE(flagged);
  ASSERT_TRUE(s.mailbox().has_value());
  const imap::ModSeq modseq_now = s.mailbox()->highestmodseq.value_or(0);
  EXPECT_GT(modseq_now, modseq_before);

  // UID FETCH (CHANGEDSINCE ... VANISHED) gives the same answer.
  imap::cmd::FetchModifiers since;
  since.changed_since = modseq_before;
  since.vanished = true;
  auto fetched = run_coroutine(c.wait_all(s.uid_fetch(
      imap::SequenceSet::of({uids[0], uids[1], uids[2]}), "(UID FLAGS MODSEQ)", since)));
  ASSERT_TRUE(fetched.ok());
  int fetches = 0;
  for (auto& done : *fetched) {
    ASSERT_TRUE(done.ok());
    for (auto& r : done.untagged) fetches += std::holds_alternative<imap::FetchData>(r.data);
  }
  EXPECT_EQ(fetches, 1);

  // Bodies come back whole.
  auto bodies =
      run_coroutine(c.wait_all(s.uid_fetch(imap::SequenceSet::of({uids[0]}), "(UID BODY.PEEK[])")));
  ASSERT_TRUE(bodies.ok());
  std::string body;
  for (auto& r : (*bodies)[0].untagged) {
    if (auto* f = std::get_if<imap::FetchData>(&r.data); f && !f->bodies.empty()) {
      body = f->bodies[0].data.value_or("");
    }
  }
  EXPECT_EQ(body, "Subject: m1\r\nMessage-ID: <m1@x>\r\n\r\nbody 1\r\n");

  // UID STORE (UNCHANGEDSINCE old) on the changed message is refused with MODIFIED.
  imap::cmd::StoreOp store;
  store.mode = imap::cmd::StoreMode::add;
  store.flags = {"$Conflict"};
  store.unchanged_since = modseq_before;
  auto stored = run_coroutine(c.wait_all(s.uid_store(imap::SequenceSet::of({uids[1]}), store)));
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ((*stored)[0].status.code.kind, imap::CodeKind::modified);
  EXPECT_TRUE((*stored)[0].status.code.set.contains(uids[1]));

  // \Deleted + UID EXPUNGE of exactly one UID.
  imap::cmd::StoreOp deleted;
  deleted.flags = {"\\Deleted"};
  ASSERT_TRUE(
      run_coroutine(c.wait_all(s.uid_store(imap::SequenceSet::of({uids[0]}), deleted))).ok());
  auto expunged = run_coroutine(c.wait_all(s.uid_expunge(imap::SequenceSet::of({uids[0]}))));
  ASSERT_TRUE(expunged.ok());
  ASSERT_TRUE((*expunged)[0].ok());
  bool vanished_now = false;
  for (auto& r : (*expunged)[0].untagged) {
    if (auto* v = std::get_if<imap::VanishedData>(&r.data)) {
      vanished_now = !v->earlier && v->uids.contains(uids[0]);
    }
  }
  EXPECT_TRUE(vanished_now);
  EXPECT_EQ((*expunged)[0].status.code.kind, imap::CodeKind::highestmodseq);
  run_coroutine(c.logout());
}

}  // namespace
}  // namespace twinbox::net
