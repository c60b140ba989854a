#include "cli/probe.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "imap/mailbox_name.h"
#include "sync/capabilities.h"

namespace twinbox::cli {

namespace {

struct Extension {
  const char* name;
  const char* why;
};

// What else makes the sync faster (the ones the sync adapts to are sync/capabilities.h).
constexpr Extension kOptional[] = {
    {"LIST-STATUS", "RFC 5819: STATUS of every mailbox within the LIST"},
    {"LITERAL+", "RFC 7888: no round trip per literal"},
    {"MULTIAPPEND", "RFC 3502: many messages per APPEND"},
    {"COMPRESS=DEFLATE", "RFC 4978: compressed traffic"},
    {"NOTIFY", "RFC 5465: --notify"},
    {"SASL-IR", "RFC 4959: authentication in one round trip"},
    {"IDLE", "RFC 2177: --watch without polling"},
    {"UNSELECT", "RFC 3691: leave a mailbox without expunging"},
    {"ESEARCH", "RFC 4731: compact search results"},
    {"UTF8=ACCEPT", "RFC 6855: UTF-8 mailbox names"},
    {"BINARY", "RFC 3516: binary message data"},
};

bool has(const imap::Session& session, std::string_view name) {
  return session.has_capability(name);
}

std::string describe_status(const imap::StatusData& s) {
  std::string out;
  auto field = [&](const char* name, const auto& value) {
    if (value) out += fmt::format(" {}={}", name, *value);
  };
  field("messages", s.messages);
  field("uidvalidity", s.uidvalidity);
  field("uidnext", s.uidnext);
  field("highestmodseq", s.highestmodseq);
  field("unseen", s.unseen);
  return out;
}

// Prints what the sync uses (and what it does without) and the optional extensions.
void print_extensions(const imap::Session& session, const std::string& name, std::FILE* out) {
  const auto offered = [&](std::string_view name) { return has(session, name); };
  for (const auto& ext : sync::kSyncCapabilities) {
    const bool present = sync::offers(ext, offered);
    fmt::print(out, "{}:   sync     {:<18} {:<4} {}{}\n", name, ext.name, present ? "yes" : "no",
               ext.why, present ? "" : fmt::format(" (without: {})", ext.without));
  }
  for (const auto& ext : kOptional) {
    fmt::print(out, "{}:   optional {:<18} {:<4} {}\n", name, ext.name,
               has(session, ext.name) ? "yes" : "no", ext.why);
  }
}

}  // namespace

namespace {

std::string describe_where(const net::Endpoint& e) {
  if (e.type == net::EndpointType::tunnel) return fmt::format("tunnel '{}'", e.command);
  const bool imaps = e.type == net::EndpointType::imaps;
  const std::string port = e.port.empty() ? (imaps ? "993" : "143") : e.port;
  const char* mode = imaps ? "imaps" : (e.starttls ? "imap+STARTTLS" : "imap, cleartext");
  return fmt::format("{}:{} ({})", e.host, port, mode);
}

void print_connection(const net::Client& client, const imap::Session& session,
                      const std::string& name, std::FILE* out) {
  const auto& info = client.info();
  fmt::print(out, "{}: greeting: {}{}\n", name, info.preauth ? "PREAUTH " : "", info.greeting);
  if (info.tls) {
    fmt::print(out, "{}: TLS: {} {} peer key sha256${}\n{}:      certificate {}\n", name,
               info.tls->protocol, info.tls->cipher, info.tls->spki_sha256, name,
               info.tls->subject);
  }
  if (info.discarded_before_tls > 0) {
    fmt::print(out, "{}: WARNING: {} byte(s) injected before the TLS handshake were discarded\n",
               name, info.discarded_before_tls);
  }
  fmt::print(out, "{}: authentication: {}\n", name, info.auth_mechanism);
  if (info.compressed) fmt::print(out, "{}: COMPRESS=DEFLATE active\n", name);
  std::vector<std::string> caps(session.capabilities().begin(), session.capabilities().end());
  fmt::print(out, "{}: capabilities: {}\n", name, fmt::join(caps, " "));
}

bool selectable(const imap::ListData& mailbox) {
  for (const auto& a : mailbox.attributes) {
    std::string lower;
    for (char c : a) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "\\noselect" || lower == "\\nonexistent") return false;
  }
  return true;
}

struct Listing {
  std::vector<imap::ListData> mailboxes;
  std::map<std::string, imap::StatusData> statuses;  // by wire name
};

void collect(std::vector<imap::Response>& responses, Listing& listing) {
  for (auto& response : responses) {
    if (auto* list = std::get_if<imap::ListData>(&response.data)) {
      listing.mailboxes.push_back(std::move(*list));
    } else if (auto* status = std::get_if<imap::StatusData>(&response.data)) {
      listing.statuses[status->mailbox] = std::move(*status);
    }
  }
}

void print_listing(const Listing& listing, bool utf8, const std::string& name, std::FILE* out) {
  fmt::print(out, "{}: {} mailbox(es):\n", name, listing.mailboxes.size());
  for (const auto& mailbox : listing.mailboxes) {
    auto decoded = imap::mailbox_from_wire(mailbox.mailbox, utf8);
    const std::string shown = decoded ? *decoded : mailbox.mailbox + " (invalid mUTF-7)";
    std::string status;
    if (auto it = listing.statuses.find(mailbox.mailbox); it != listing.statuses.end()) {
      status = describe_status(it->second);
    }
    fmt::print(out, "{}:   {:<28} delim={} {}{}\n", name, shown,
               mailbox.delimiter ? std::string(1, *mailbox.delimiter) : std::string("NIL"),
               fmt::join(mailbox.attributes, " "), status);
  }
}

}  // namespace

asio::awaitable<ProbeReport> probe_endpoint(net::Endpoint endpoint, std::FILE* out,
                                            sync::Tier limit) {
  ProbeReport report;
  const std::string name = endpoint.name;
  fmt::print(out, "== {}: {}\n", name, describe_where(endpoint));
  auto connected = co_await net::Client::connect(std::move(endpoint));
  if (!connected) {
    report.error = connected.error();
    fmt::print(out, "{}: cannot connect: {}\n", name, report.error.to_string());
    co_return report;
  }
  net::Client& client = **connected;
  imap::Session& session = client.session();
  report.connected = true;
  // A sync compresses once it finds work; the probe shows whether it would.
  Status compressed = co_await client.compress();
  if (!compressed) {
    report.error = compressed.error();
    fmt::print(out, "{}: COMPRESS failed: {}\n", name, report.error.to_string());
    co_return report;
  }
  print_connection(client, session, name, out);
  print_extensions(session, name, out);
  const auto offered = [&](std::string_view name) { return has(session, name); };
  sync::Tier tier = sync::best_tier(offered, limit);
  if (tier == sync::Tier::qresync) {
    // Arguments built outside the co_await full-expression: g++ 12 cannot keep a braced list's
    // backing array alive across a suspension ("array used as initializer").
    const std::vector<std::string> qresync = {"QRESYNC"};
    auto enable = session.enable(qresync);
    auto enabled = co_await client.expect_ok(std::move(enable), "ENABLE QRESYNC");
    const bool on = enabled.ok() && session.is_enabled("QRESYNC");
    std::string outcome = "enabled";
    if (!enabled.ok()) outcome = enabled.error().to_string();
    if (enabled.ok() && !on) outcome = "no * ENABLED answer";
    fmt::print(out, "{}: ENABLE QRESYNC: {}\n", name, outcome);
    if (!on) tier = sync::Tier::condstore;
  }
  fmt::print(
      out, "{}: change detection: {}{}\n", name, sync::tier_name(tier),
      tier < sync::best_tier(offered, sync::Tier::qresync) ? " (change-detection setting)" : "");
  report.sync_capable = has(session, "IMAP4REV1") || has(session, "IMAP4REV2");

  // The mailbox list, with STATUS in the same round trip when the server offers LIST-STATUS.
  imap::cmd::ListOptions list_options;
  const bool list_status = session.has_capability("LIST-STATUS");
  std::vector<std::string> status_items = {"MESSAGES", "UIDVALIDITY", "UIDNEXT"};
  if (has(session, "CONDSTORE")) status_items.push_back("HIGHESTMODSEQ");
  if (session.has_capability("LIST-EXTENDED")) list_options.return_items.push_back("SUBSCRIBED");
  if (list_status) list_options.status_items = status_items;
  const std::vector<std::string> everything = {"*"};
  auto list = session.list("", everything, list_options);
  auto listed = co_await client.expect_ok(std::move(list), "LIST");
  if (!listed) {
    fmt::print(out, "{}: {}\n", name, listed.error().to_string());
    co_await client.logout();
    co_return report;
  }
  Listing listing;
  collect(listed->untagged, listing);
  if (!list_status) {
    // One STATUS per selectable mailbox, pipelined.
    std::vector<imap::CommandId> ids;
    for (const auto& mailbox : listing.mailboxes) {
      if (!selectable(mailbox)) continue;
      auto decoded = imap::mailbox_from_wire(mailbox.mailbox, false);
      auto id = session.status(decoded ? *decoded : mailbox.mailbox, status_items);
      if (id) ids.push_back(*id);
    }
    auto done = co_await client.wait_all(std::move(ids));
    if (done) {
      for (auto& completion : *done) collect(completion.untagged, listing);
    }
  }
  print_listing(listing, session.is_enabled("UTF8=ACCEPT"), name, out);
  const auto counters = client.counters();
  co_await client.logout();
  fmt::print(out, "{}: sync-capable: {}; traffic: {} bytes in, {} bytes out\n", name,
             report.sync_capable ? "yes" : "NO (neither IMAP4rev1 nor IMAP4rev2 advertised)",
             counters.wire_in, counters.wire_out);
  co_return report;
}

}  // namespace twinbox::cli
