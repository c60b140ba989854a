#include "config/mailbox_pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace twinbox::config {

struct MailboxPattern::Code {
  explicit Code(pcre2_code* c) : code(c) {}
  ~Code() { pcre2_code_free(code); }
  Code(const Code&) = delete;
  Code& operator=(const Code&) = delete;
  pcre2_code* code;
};

Result<MailboxPattern> MailboxPattern::compile(std::string_view source) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   PCRE2_UTF, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    return Error(Errc::config, reinterpret_cast<const char*>(message), std::string(source),
                 static_cast<std::size_t>(offset));
  }
  return MailboxPattern(std::make_shared<const Code>(code));
}

bool MailboxPattern::matches(std::string_view name) const {
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  const int rc = pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(name.data()), name.size(), 0,
                             0, match, nullptr);
  pcre2_match_data_free(match);
  return rc >= 0;
}

}  // namespace twinbox::config
