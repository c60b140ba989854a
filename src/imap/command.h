// Client commands as bytes: a serializer that picks atom, quoted string or literal as the grammar
// requires, and the commands a sync client sends.
//
// A Command is its tag plus a list of Chunks written in order. A chunk flagged wait_continuation
// is the body of a synchronizing literal (or an AUTHENTICATE response): it may be written only
// after the server's "+" for this command, and never if the server answers the command with a
// tagged NO/BAD first (RFC 9051 §4.3, §7.5). Literal bodies are chunks of their own and are moved
// in, never copied (messages can be megabytes). A chunk flagged secret (a password, a SASL
// response) never appears in trace(): it becomes "<redacted>".
//
// Nothing here knows about a connection: the caller states the server's abilities in WireOptions
// (Session::wire_options() derives them from the capabilities) and hands the Command to Session.
// Errors are values: Errc::usage for arguments that cannot be sent (invalid UTF-8 names, a NUL
// in a string, a CR in an atom, a mod-sequence out of range), Errc::limit for a command line
// longer than allowed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "imap/sequence_set.h"

namespace twinbox::imap {

struct Chunk {
  std::string bytes;
  bool wait_continuation = false;  // write only after a "+" for this command
  bool secret = false;             // redacted in traces
  bool literal = false;            // a literal's body (summarized in traces when long)
  // A streamed literal: `bytes` is empty and the shell writes exactly this many octets from a
  // source it was given (a message body read piecewise from the other server).
  std::uint64_t external = 0;

  // Printable, redacted rendering for --debug output (CR/LF shown as \r\n, controls and 8-bit
  // bytes as \xNN; a trailing CRLF dropped).
  std::string trace() const;
};

enum class CommandKind {
  other,
  capability,
  noop,
  logout,
  starttls,
  authenticate,
  login,
  enable,
  compress,
  id,
  namespace_,
  select,
  examine,
  create,
  delete_,
  rename,
  subscribe,
  unsubscribe,
  list,
  lsub,
  status,
  append,
  idle,
  close,
  unselect,
  expunge,
  fetch,
  store,
  search,
  copy,
  move,
  uid_fetch,
  uid_store,
  uid_search,
  uid_copy,
  uid_move,
  uid_expunge,
};

// The kind of a command from its name ("uid fetch" -> uid_fetch); unknown names are `other`.
CommandKind command_kind(std::string_view name);

// How literals may be sent, from the capabilities (RFC 7888). A server MUST NOT advertise both
// LITERAL+ and LITERAL-; if one does, treat it as LITERAL- (the safe reading).
enum class LiteralMode {
  synchronizing,  // {n}: wait for "+" before every literal (RFC 9051 §4.3)
  plus,           // LITERAL+: {n+} for every literal
  minus,          // LITERAL-: {n+} up to kLiteralMinusMax octets, {n} above
};

inline constexpr std::size_t kLiteralMinusMax = 4096;  // RFC 7888 §5
// RFC 7162 §4: keep command lines (literals excluded) to about 8 KiB.
inline constexpr std::size_t kDefaultMaxLine = 8192;
// Room left for the tag and its space when a command's length is checked before tagging:
// Session tags are "T" plus at most 20 digits.
inline constexpr std::size_t kTagReserve = 22;
// Quoted strings longer than this go as literals (RFC 7162 §4: literals keep lines short).
inline constexpr std::size_t kMaxQuoted = 1024;
// Literal bodies longer than this are shown as "{n bytes}" in traces.
inline constexpr std::size_t kTraceLiteralMax = 100;

struct WireOptions {
  LiteralMode literals = LiteralMode::synchronizing;
  bool utf8_accept = false;  // UTF8=ACCEPT enabled: names in UTF-8, UTF-8 allowed in quoted
  bool binary = false;       // BINARY (RFC 3516): literal8 allowed for message data
};

struct Command {
  CommandKind kind = CommandKind::other;
  std::string name;  // upper-case command name, "UID FETCH"
  std::string tag;   // empty until assign_tag
  std::vector<Chunk> chunks;

  // Sets the tag and writes "tag SP" in front of the first chunk. Called once, by Session.
  void assign_tag(std::string new_tag);
  // All bytes in order: what goes on the wire when every continuation is granted.
  std::string wire() const;
  // One printable, redacted line for --debug output.
  std::string trace() const;
  // The longest line in octets, CRLF included, literal bodies excluded (RFC 7162 §4 counts the
  // line without its literals). Includes the tag once assigned.
  std::size_t longest_line() const;
};

// Builds one command. Items are separated by single spaces automatically (none after "(" or
// before ")"). Argument errors are remembered and returned by build(), so calls chain:
//   CommandBuilder("UID STORE", opts).sequence_set(uids).raw("+FLAGS.SILENT").flag_list(f).build()
class CommandBuilder {
 public:
  explicit CommandBuilder(std::string_view name, WireOptions options = {});

  const WireOptions& options() const { return options_; }

  // An atom (RFC 9051 ATOM-CHAR only), e.g. "QRESYNC", "+FLAGS.SILENT", "UTF8=ACCEPT".
  CommandBuilder& atom(std::string_view text);
  // Fixed syntax written as is, e.g. "BODY.PEEK[]" or "(UID FLAGS)": printable US-ASCII only.
  CommandBuilder& raw(std::string_view text);
  CommandBuilder& number(std::uint64_t n);
  // astring: an atom when every byte is ASTRING-CHAR, else a quoted string for short printable
  // text (7-bit; UTF-8 too under UTF8=ACCEPT), else a literal. A NUL byte is an error.
  CommandBuilder& astring(std::string_view text, bool secret = false);
  // string: quoted or literal, never an atom (LIST patterns, dates).
  CommandBuilder& string(std::string_view text, bool secret = false);
  // A mailbox name given in UTF-8: its wire form (mailbox_name.h) as an astring.
  CommandBuilder& mailbox(std::string_view utf8);
  // A LIST pattern in UTF-8 (wildcards "*" and "%" allowed): its wire form as a string.
  CommandBuilder& list_pattern(std::string_view utf8);
  // "(\Seen $Forwarded)": each flag is "\" atom or a keyword atom.
  CommandBuilder& flag_list(const std::vector<std::string>& flags);
  // A non-empty sequence set, written as given (no "*").
  CommandBuilder& sequence_set(const SequenceSet& set);
  // {n}/{n+} literal (the body must not contain NUL) and ~{n}/~{n+} literal8 (binary).
  CommandBuilder& literal(std::string bytes, bool secret = false);
  CommandBuilder& literal8(std::string bytes);
  // The announcement of a literal of `size` octets whose body the shell streams (Chunk::external).
  CommandBuilder& external_literal(std::uint64_t size);
  CommandBuilder& begin_list();
  CommandBuilder& end_list();

  // Ends the line with CRLF and returns the command, or the first argument error. Call once:
  // the builder is spent afterwards.
  Result<Command> build();

 private:
  std::string& text();
  void separate();
  void add_secret_text(std::string text);
  void add_literal(std::string bytes, bool secret, bool binary);
  void fail(Errc code, std::string message, std::string_view evidence);

  WireOptions options_;
  Command command_;
  bool need_space_ = true;
  int depth_ = 0;
  std::optional<Error> error_;
};

// Builds one command per piece of `set` with `build(piece)`, splitting the set so that no
// command's longest line, tag included (kTagReserve), exceeds `max_line` (RFC 7162 §4). `build`
// must place the set once and otherwise produce the same text for every piece. An empty set
// gives no commands. Errc::limit if even a single range cannot fit.
Result<std::vector<Command>> split_by_set(
    const SequenceSet& set, std::size_t max_line,
    const std::function<Result<Command>(const SequenceSet& piece)>& build);

// base64(authzid NUL user NUL password), the SASL PLAIN response (RFC 4616). Exposed so the
// caller can register it with Log::add_secret.
std::string sasl_plain(std::string_view authzid, std::string_view user, std::string_view password);

// The OAuth 2.0 bearer-token responses, base64-encoded, for the caller to register as secrets:
// OAUTHBEARER (RFC 7628 §3.1: gs2 header with the user as authzid, host, port, "auth=Bearer
// TOKEN") and XOAUTH2 (Google's and Microsoft's: "user=U^Aauth=Bearer TOKEN^A^A").
std::string sasl_oauthbearer(std::string_view user, std::string_view token, std::string_view host,
                             std::string_view port);
std::string sasl_xoauth2(std::string_view user, std::string_view token);

// ---------------------------------------------------------------------------------------------
// The commands twinbox sends. Pure functions: capability checks are Session's job.
namespace cmd {

Command capability();
Command noop();
Command logout();
Command starttls();
Command compress_deflate();  // RFC 4978
Command unselect();          // RFC 3691; never CLOSE, which expunges silently (RFC 7162 §3.2.8)
Command idle();              // RFC 2177; end it with Session::idle_done()
Command id_nil();            // RFC 2971: "ID NIL", never "ID ()" (rejected by some servers)

// LOGIN user password; the password chunk is secret.
Result<Command> login(std::string_view user, std::string_view password, const WireOptions& options);

// AUTHENTICATE mechanism with one (already base64) response: as an initial response (SASL-IR,
// RFC 4959) on the command line, or as a secret chunk that waits for the server's "+".
Command authenticate(std::string_view mechanism, std::string_view response, bool initial_response);
Command authenticate_plain(std::string_view authzid, std::string_view user,
                           std::string_view password, bool initial_response);

// ENABLE cap... (RFC 5161).
Result<Command> enable(const std::vector<std::string>& capabilities);

struct QresyncParams {
  std::uint32_t uidvalidity = 0;  // non-zero
  ModSeq modseq = 0;              // 1..2^63-1
  SequenceSet known_uids;         // empty: omitted
  struct SeqMatch {
    SequenceSet seqs;  // message numbers, ascending
    SequenceSet uids;  // their UIDs, ascending
  };
  std::optional<SeqMatch> seq_match;
};

struct SelectOptions {
  bool examine = false;                  // EXAMINE: read-only
  bool condstore = false;                // (CONDSTORE) select parameter (RFC 7162 §3.1.8)
  std::optional<QresyncParams> qresync;  // (QRESYNC (...)) select parameter (RFC 7162 §3.2.5)
};

// SELECT/EXAMINE mailbox [(CONDSTORE) | (QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)]))]
Result<Command> select(std::string_view mailbox, const SelectOptions& select,
                       const WireOptions& options);

struct ListOptions {
  std::vector<std::string> selection;     // LIST-EXTENDED selection options, e.g. SUBSCRIBED
  std::vector<std::string> return_items;  // RETURN options, e.g. SUBSCRIBED CHILDREN
  std::vector<std::string> status_items;  // LIST-STATUS (RFC 5819): RETURN (... STATUS (...))
};

// LIST [(selection)] reference pattern|(patterns) [RETURN (...)] (RFC 9051 §6.3.9, RFC 5258).
Result<Command> list(std::string_view reference, const std::vector<std::string>& patterns,
                     const ListOptions& list, const WireOptions& options);

// STATUS mailbox (items).
Result<Command> status(std::string_view mailbox, const std::vector<std::string>& items,
                       const WireOptions& options);

struct FetchModifiers {
  std::optional<ModSeq> changed_since;  // CHANGEDSINCE m, 1..2^63-1 (RFC 7162 §3.1.4)
  bool vanished = false;                // VANISHED (QRESYNC; needs changed_since, §3.2.6)
};

// UID FETCH set items [(CHANGEDSINCE m [VANISHED])], split to fit max_line. `items` is fixed
// syntax such as "(UID FLAGS MODSEQ)" or "BODY.PEEK[]".
Result<std::vector<Command>> uid_fetch(const SequenceSet& uids, std::string_view items,
                                       const FetchModifiers& modifiers,
                                       std::size_t max_line = kDefaultMaxLine);

enum class StoreMode { add, remove, replace };

struct StoreOp {
  StoreMode mode = StoreMode::add;
  bool silent = true;
  std::vector<std::string> flags;
  std::optional<ModSeq> unchanged_since;  // 0..2^63-1 (RFC 7162 §3.1.3)
};

// UID STORE set [(UNCHANGEDSINCE m)] +FLAGS.SILENT (flags), split to fit max_line.
Result<std::vector<Command>> uid_store(const SequenceSet& uids, const StoreOp& store,
                                       std::size_t max_line = kDefaultMaxLine);

// UID EXPUNGE set (RFC 4315 §2.1), split to fit max_line.
Result<std::vector<Command>> uid_expunge(const SequenceSet& uids,
                                         std::size_t max_line = kDefaultMaxLine);

struct AppendMessage {
  std::vector<std::string> flags;  // empty: no flag list
  std::string internal_date;       // "17-Jul-1996 02:44:25 -0700"; empty: omitted
  std::string content;             // moved into the command
  // Non-zero: `content` is empty and the body, of exactly this many octets without NUL, is
  // streamed by the shell (Chunk::external) instead of being held in memory.
  std::uint64_t streamed_size = 0;
};

// APPEND mailbox (flags) "date" {n}... ; several messages make a MULTIAPPEND (RFC 3502), which
// is atomic. A body with NUL bytes goes as literal8 when options.binary, else is an error.
Result<Command> append(std::string_view mailbox, std::vector<AppendMessage> messages,
                       const WireOptions& options);

}  // namespace cmd

}  // namespace twinbox::imap
