// The IMAP capabilities ImapStore cannot work without, in one place: the store refuses a server
// that lacks one, and --probe prints the same list.
#pragma once

#include <array>
#include <string_view>

namespace twinbox::sync {

struct RequiredCapability {
  std::string_view name;
  std::string_view why;
  std::string_view implied_by;  // a capability that implies this one, or empty
};

inline constexpr std::array<RequiredCapability, 5> kRequiredCapabilities{{
    {"QRESYNC", "RFC 7162: changes and expunges since the last sync in one round trip", ""},
    // RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
    {"CONDSTORE", "RFC 7162: mod-sequences, conditional STORE", "QRESYNC"},
    {"ENABLE", "RFC 5161: needed to turn QRESYNC on", ""},
    {"UIDPLUS", "RFC 4315: APPENDUID mapping and UID EXPUNGE", ""},
    {"LIST-EXTENDED", "RFC 5258: subscriptions and selection options in one LIST", ""},
}};

// Whether a server whose capabilities `has` answers offers `required`.
template <class Has>
bool offers(const RequiredCapability& required, const Has& has) {
  return has(required.name) || (!required.implied_by.empty() && has(required.implied_by));
}

}  // namespace twinbox::sync
