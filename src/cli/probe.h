// --probe: "why won't it sync with my server". Connects to each side as configured and reports
// what twinbox sees: transport, TLS, greeting, authentication, capabilities (which extensions the
// sync uses and what replaces each missing one), ENABLE QRESYNC, the change detection the sync
// will use, and the mailbox list with STATUS.
#pragma once

#include <cstdio>

#include <asio/awaitable.hpp>

#include "net/client.h"
#include "sync/mail_store.h"

namespace twinbox::cli {

struct ProbeReport {
  bool connected = false;
  bool sync_capable = false;  // an IMAP4rev1 (or rev2) server: every tier needs no more
  Error error;                // when !connected
};

// Prints the report for one endpoint to `out`; never throws.
// `limit` is the side's change-detection setting.
asio::awaitable<ProbeReport> probe_endpoint(net::Endpoint endpoint, std::FILE* out,
                                            sync::Tier limit = sync::Tier::qresync);

}  // namespace twinbox::cli
