// The IMAP capabilities the sync uses, in one place: what each buys and what replaces it when a
// server lacks it. ImapStore chooses its tier and fallbacks from this, and --probe prints it.
#pragma once

#include <array>
#include <string_view>

#include "sync/mail_store.h"

namespace twinbox::sync {

struct UsedCapability {
  std::string_view name;
  std::string_view why;
  std::string_view without;     // what twinbox does when the server lacks it
  std::string_view implied_by;  // a capability that implies this one, or empty
};

inline constexpr std::array<UsedCapability, 7> kSyncCapabilities{{
    {"QRESYNC", "RFC 7162: changes and expunges since the last sync in one round trip",
     "CONDSTORE tier", ""},
    // RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
    {"CONDSTORE", "RFC 7162: flag changes since a mod-sequence, conditional STORE",
     "plain tier: UID and FLAGS of every message at every sync", "QRESYNC"},
    {"ENABLE", "RFC 5161: needed to turn QRESYNC on", "CONDSTORE tier", ""},
    {"UIDPLUS", "RFC 4315: APPENDUID and UID EXPUNGE",
     "new UIDs read back by size; EXPUNGE only when no other message is \\Deleted", ""},
    {"LIST-EXTENDED", "RFC 5258: subscriptions and selection options in one LIST", "LIST and LSUB",
     ""},
    {"LIST-STATUS", "RFC 5819: unchanged mailboxes skipped without a SELECT",
     "one STATUS per mailbox, pipelined (CONDSTORE and QRESYNC tiers)", ""},
    {"ESEARCH", "RFC 4731: the UID list as ranges (CONDSTORE tier expunges)",
     "UID SEARCH ALL lists every UID", ""},
}};

// Whether a server whose capabilities `has` answers offers `capability`.
template <class Has>
bool offers(const UsedCapability& capability, const Has& has) {
  return has(capability.name) || (!capability.implied_by.empty() && has(capability.implied_by));
}

// The best change detection a server offers, at most `limit` (before ENABLE confirms QRESYNC).
template <class Has>
Tier best_tier(const Has& has, Tier limit) {
  if (limit >= Tier::qresync && has("QRESYNC") && has("ENABLE")) return Tier::qresync;
  if (limit >= Tier::condstore && (has("CONDSTORE") || has("QRESYNC"))) return Tier::condstore;
  return Tier::plain;
}

}  // namespace twinbox::sync
