// Typed IMAP server responses (RFC 9051 §7 and the extensions a sync client meets).
//
// Strings are raw wire values: mailbox names stay in modified UTF-7 (decode with mailbox_name.h),
// flags keep their case. Numbers are range-checked by the parser: UIDs, UIDVALIDITY and message
// numbers are 32-bit and non-zero, mod-sequences are 63-bit. Every type compares with == (tests
// state expected responses as values). See parser.h for what the parser accepts and refuses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "imap/sequence_set.h"

namespace twinbox::imap {

enum class Condition { ok, no, bad, bye, preauth };

enum class CodeKind {
  none,  // no response code
  alert,
  already_exists,
  appenduid,
  badcharset,
  cannot,
  capability,
  closed,
  compression_active,
  copyuid,
  highestmodseq,
  limit,
  modified,
  nomodseq,
  nonexistent,
  notificationoverflow,
  overquota,
  parse,
  permanentflags,
  read_only,
  read_write,
  toobig,
  trycreate,
  uidnext,
  uidnotsticky,
  uidvalidity,
  unavailable,
  unseen,
  other,  // unknown code: name and raw argument preserved, otherwise ignored (RFC 9051 App. E)
};

struct ResponseCode {
  CodeKind kind = CodeKind::none;
  std::string name;      // the code's atom as sent, upper-cased ("APPENDUID", "XFOO")
  std::string argument;  // raw text after the name (every code; all we keep of `other` codes)
  // UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, UNSEEN; APPENDUID/COPYUID uidvalidity
  std::uint64_t number = 0;
  std::vector<std::string> atoms;  // CAPABILITY, PERMANENTFLAGS, BADCHARSET
  SequenceSet set;                 // MODIFIED; APPENDUID uids; COPYUID source uids
  SequenceSet set2;                // COPYUID destination uids
  std::vector<Uid> set_order;      // APPENDUID/COPYUID sets as sent, in order (for pairing)
  std::vector<Uid> set2_order;
  friend bool operator==(const ResponseCode&, const ResponseCode&) = default;
};

// Tagged or untagged OK/NO/BAD/BYE, or the PREAUTH greeting.
struct StatusResponse {
  std::string tag;  // empty when untagged
  Condition condition = Condition::ok;
  ResponseCode code;
  std::string text;
  friend bool operator==(const StatusResponse&, const StatusResponse&) = default;
};

struct CapabilityData {
  std::vector<std::string> capabilities;  // upper-cased
  friend bool operator==(const CapabilityData&, const CapabilityData&) = default;
};
struct EnabledData {
  std::vector<std::string> capabilities;  // upper-cased
  friend bool operator==(const EnabledData&, const EnabledData&) = default;
};

struct ListData {
  bool lsub = false;
  std::vector<std::string> attributes;  // as sent, e.g. "\\HasChildren", "\\Subscribed"
  std::optional<char> delimiter;        // nullopt for NIL
  std::string mailbox;                  // raw (modified UTF-7 unless UTF8=ACCEPT)
  std::vector<std::string> childinfo;   // CHILDINFO extended data ("SUBSCRIBED")
  std::optional<std::string> oldname;   // OLDNAME extended data (RFC 9051 §6.3.9.7)
  friend bool operator==(const ListData&, const ListData&) = default;
};

struct StatusData {
  std::string mailbox;
  std::optional<std::uint32_t> messages, recent, uidnext, uidvalidity, unseen, deleted;
  std::optional<std::uint64_t> size;
  std::optional<ModSeq> highestmodseq;  // 0 allowed here: "no persistent mod-sequences"
  friend bool operator==(const StatusData&, const StatusData&) = default;
};

struct FlagsData {
  std::vector<std::string> flags;
  friend bool operator==(const FlagsData&, const FlagsData&) = default;
};
struct ExistsData {
  std::uint32_t count = 0;
  friend bool operator==(const ExistsData&, const ExistsData&) = default;
};
struct RecentData {
  std::uint32_t count = 0;
  friend bool operator==(const RecentData&, const RecentData&) = default;
};
struct ExpungeData {
  SeqNum seq = 0;
  friend bool operator==(const ExpungeData&, const ExpungeData&) = default;
};
struct VanishedData {
  bool earlier = false;
  SequenceSet uids;
  friend bool operator==(const VanishedData&, const VanishedData&) = default;
};

struct BodySection {
  std::string section;  // between the brackets, upper-cased: "", "HEADER.FIELDS (MESSAGE-ID)"
  bool binary = false;  // BINARY[...] rather than BODY[...]
  std::optional<std::uint32_t> origin;  // <origin> of a partial fetch
  std::optional<std::string> data;      // nullopt for NIL
  friend bool operator==(const BodySection&, const BodySection&) = default;
};

struct FetchData {
  SeqNum seq = 0;
  std::optional<Uid> uid;
  std::optional<std::vector<std::string>> flags;
  std::optional<ModSeq> modseq;
  std::optional<std::uint64_t> rfc822_size;
  std::optional<std::string> internaldate;  // as sent: "17-Jul-1996 02:44:25 -0700"
  std::vector<BodySection> bodies;
  std::vector<std::string> other_items;  // names of items we parsed over but do not keep
  friend bool operator==(const FetchData&, const FetchData&) = default;
};

struct SearchData {
  std::vector<std::uint32_t> numbers;
  std::optional<ModSeq> modseq;  // (MODSEQ n) suffix, RFC 7162 §3.1.5
  friend bool operator==(const SearchData&, const SearchData&) = default;
};

struct ESearchData {
  std::string tag;  // correlator (TAG "x"), empty if absent
  bool uid = false;
  std::optional<std::uint32_t> min, max, count;
  std::optional<SequenceSet> all;
  std::optional<ModSeq> modseq;
  friend bool operator==(const ESearchData&, const ESearchData&) = default;
};

struct NamespaceDescr {
  std::string prefix;
  std::optional<char> delimiter;
  friend bool operator==(const NamespaceDescr&, const NamespaceDescr&) = default;
};
struct NamespaceData {
  std::vector<NamespaceDescr> personal, other_users, shared;
  friend bool operator==(const NamespaceData&, const NamespaceData&) = default;
};

struct IdData {
  std::vector<std::pair<std::string, std::optional<std::string>>> fields;  // empty for NIL
  friend bool operator==(const IdData&, const IdData&) = default;
};

struct ContinuationRequest {
  std::string text;  // may be base64 for AUTHENTICATE
  friend bool operator==(const ContinuationRequest&, const ContinuationRequest&) = default;
};

// An untagged response we do not know (`* XAPPLEPUSHSERVICE ...`): ignored, kept for traces.
struct UnknownData {
  std::string name;
  friend bool operator==(const UnknownData&, const UnknownData&) = default;
};

using ResponseData =
    std::variant<StatusResponse, CapabilityData, EnabledData, ListData, StatusData, FlagsData,
                 ExistsData, RecentData, ExpungeData, VanishedData, FetchData, SearchData,
                 ESearchData, NamespaceData, IdData, ContinuationRequest, UnknownData>;

struct Response {
  ResponseData data;
  bool is_tagged() const {
    const auto* s = std::get_if<StatusResponse>(&data);
    return s != nullptr && !s->tag.empty();
  }
  friend bool operator==(const Response&, const Response&) = default;
};

}  // namespace twinbox::imap
