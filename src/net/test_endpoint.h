// For tests against a scripted server on loopback: an endpoint over cleartext TCP with a LOGIN
// (user "joe", password "pw") and a short silence limit, so a script that waits for more than
// the client sends fails fast instead of hanging.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "net/client.h"

namespace twinbox::net {

inline Endpoint cleartext_endpoint(std::uint16_t port,
                                   std::chrono::milliseconds io_timeout = std::chrono::seconds(3)) {
  Endpoint e;
  e.type = EndpointType::imap;
  e.host = "127.0.0.1";
  e.port = std::to_string(port);
  e.starttls = false;
  e.username = "joe";
  e.password = "pw";
  e.io_timeout = io_timeout;
  return e;
}

}  // namespace twinbox::net
