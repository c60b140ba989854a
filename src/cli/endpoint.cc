#include "cli/endpoint.h"

#include <fmt/format.h>

#include "base/secret_command.h"

namespace twinbox::cli {

bool on_this_machine(const config::EndpointConfig& side) {
  if (side.type == config::EndpointType::tunnel) return true;
  const std::string& host = side.host;
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

Result<net::Endpoint> make_endpoint(const config::EndpointConfig& side, bool debug) {
  net::Endpoint e;
  e.name = side.name;
  switch (side.type) {
    case config::EndpointType::imap:
      e.type = net::EndpointType::imap;
      break;
    case config::EndpointType::imaps:
      e.type = net::EndpointType::imaps;
      break;
    case config::EndpointType::tunnel:
      e.type = net::EndpointType::tunnel;
      break;
  }
  if (side.proxy_uri && side.type != config::EndpointType::tunnel) {
    const config::ProxyUri& p = *side.proxy_uri;
    e.proxy = net::Socks5Proxy{p.proxy_resolves, p.host, p.port, p.username, p.password};
  }
  e.host = config::host_ip_literal(side.host).value_or(side.host);
  e.port = side.port;
  e.command = side.command;
  e.starttls = side.starttls;
  if (side.max_command_line) e.max_line = *side.max_command_line;
  e.compress = side.compress && (side.lines.count("compress") > 0 || !on_this_machine(side));
  e.null_stderr = side.null_stderr && !debug;
  e.auth = side.auth;
  e.username = side.username;
  e.command_timeout = side.command_timeout;
  if (side.password_command) {
    auto password = run_secret_command({fmt::format("{}: password-command", side.name),
                                        *side.password_command, side.command_timeout});
    if (!password) return password.error();
    e.password = std::move(*password);
  } else if (side.password) {
    e.password = *side.password;
  }
  if (side.token_command) e.token_command = *side.token_command;
  e.tls.verify = side.ssl_verify;
  e.tls.ca_file = side.ssl_ca_file;
  e.tls.ca_path = side.ssl_ca_path;
  e.tls.fingerprints = side.ssl_fingerprints;
  e.tls.protocol_min = side.ssl_protocol_min;
  e.tls.protocol_max = side.ssl_protocol_max;
  e.tls.cipherlist = side.ssl_cipherlist;
  e.tls.ciphersuites = side.ssl_ciphersuites;
  e.tls.sni = side.ssl_hostname;
  return e;
}

}  // namespace twinbox::cli
