// The ignore-mailbox pattern: a PCRE (InterIMAP matches it with Perl), compiled once, in UTF mode,
// and matched against internal mailbox names (the hierarchy delimiter is '\0' there). The config
// check and the engine both go through compile(), so they cannot disagree on what is valid.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"

namespace twinbox::config {

class MailboxPattern {
 public:
  // Errc::config with PCRE2's message; Error::offset is where the pattern stopped making sense.
  static Result<MailboxPattern> compile(std::string_view source);
  bool matches(std::string_view name) const;

 private:
  struct Code;
  explicit MailboxPattern(std::shared_ptr<const Code> code) : code_(std::move(code)) {}
  std::shared_ptr<const Code> code_;
};

}  // namespace twinbox::config
