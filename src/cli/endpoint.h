// From the configuration file's [local]/[remote] settings to a connectable net::Endpoint.
#pragma once

#include "config/config.h"
#include "net/client.h"

namespace twinbox::cli {

// Resolves the password (running password-command if configured) and maps every key.
// `debug`: null-stderr is ignored so the tunnel's own errors are visible, as in InterIMAP.
Result<net::Endpoint> make_endpoint(const config::EndpointConfig& side, bool debug);

}  // namespace twinbox::cli
