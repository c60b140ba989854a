// Errors as values, with the evidence that explains them.
//
// Every failure twinbox reports names its place: the offending server line and the byte offset
// inside it, or a file:line. Nothing here throws; callers return Result<T>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace twinbox {

// The kind of a failure. The order of the values means nothing; what a failure abandons depends
// on its code and on when it happens:
//   * before any mailbox is synced (configuration, command line, state database, connecting and
//     logging in), every error ends the run;
//   * while mailboxes are synced, io, eof, timeout, tls, auth and security end the run, since the
//     connection is gone or can no longer be trusted (fatal_for_run in the sync engine); any
//     other code fails only the mailbox being synced: the others are still synced, and the run
//     exits with status 1;
//   * with --watch, io, eof and timeout end only the current cycle: twinbox reconnects after a
//     pause and syncs again.
// A run that ends on an error exits with a status chosen by its code (cli::exit_code_for), except
// that an unusable state database has its own status.
enum class Errc {
  protocol,  // the peer broke the IMAP grammar or the protocol's rules
  limit,     // a configured bound (line, literal, nesting, inflated size) was exceeded
  rejected,  // the server answered NO/BAD to something we needed
  io,        // socket, pipe or file error
  eof,       // the peer closed the connection
  timeout,   // a deadline passed
  tls,       // handshake, certificate, host name or pin failure
  auth,      // authentication failed or was refused for safety (no TLS, LOGINDISABLED)
  security,  // an attack pattern was detected (STARTTLS injection, cleartext PREAUTH)
  config,    // bad configuration
  usage,     // bad command-line usage
  internal,  // a bug in twinbox
};

std::string_view errc_name(Errc code);

struct Error {
  Errc code = Errc::internal;
  std::string message;     // what went wrong, in words
  std::string evidence;    // the offending input (printable, truncated), empty if none
  std::size_t offset = 0;  // byte offset of the fault inside `evidence` (or the stream)
  bool has_offset = false;

  Error() = default;
  Error(Errc c, std::string msg) : code(c), message(std::move(msg)) {}
  Error(Errc c, std::string msg, std::string ev, std::size_t off)
      : code(c), message(std::move(msg)), evidence(std::move(ev)), offset(off), has_offset(true) {}

  // "protocol error: unexpected ')' at offset 12 in: * 1 FETCH (UID ))"
  std::string to_string() const;
};

// Makes arbitrary wire bytes safe to print: control bytes escaped, long input cut at `max` bytes.
std::string printable(std::string_view bytes, std::size_t max = 200);

// A value or an Error. Small on purpose: std::expected is C++23 and libstdc++ 12 lacks it.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() { return Ok{}; }

}  // namespace twinbox
