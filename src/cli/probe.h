// --probe: "why won't it sync with my server". Connects to each side as configured and reports
// what twinbox sees: transport, TLS, greeting, authentication, capabilities (which required and
// optional extensions are present), ENABLE QRESYNC, and the mailbox list with STATUS.
#pragma once

#include <cstdio>

#include <asio/awaitable.hpp>

#include "net/client.h"

namespace twinbox::cli {

struct ProbeReport {
  bool connected = false;
  bool sync_capable = false;  // every extension the sync engine requires is present
  Error error;                // when !connected
};

// Prints the report for one endpoint to `out`; never throws.
asio::awaitable<ProbeReport> probe_endpoint(net::Endpoint endpoint, std::FILE* out);

}  // namespace twinbox::cli
