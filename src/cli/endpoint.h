// From the configuration file's [local]/[remote] settings to a connectable net::Endpoint.
#pragma once

#include "config/config.h"
#include "net/client.h"

namespace twinbox::cli {

// Whether the server runs on this machine (a tunnel, or a loopback host name or address).
// COMPRESS=DEFLATE is used where it helps: `compress` defaults to YES for the remote as in
// InterIMAP, but a server on this machine is only compressed when the config says so explicitly
// (the link is never the bottleneck there, and deflate costs CPU on both ends).
bool on_this_machine(const config::EndpointConfig& side);

// Resolves the password (running password-command if configured) and maps every key.
// `debug`: null-stderr is ignored so the tunnel's own errors are visible, as in InterIMAP.
Result<net::Endpoint> make_endpoint(const config::EndpointConfig& side, bool debug);

}  // namespace twinbox::cli
