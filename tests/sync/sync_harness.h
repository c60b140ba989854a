// End-to-end sync harness: two real Dovecot servers, the twinbox binary, and an independent
// convergence oracle.
//
// SyncPair starts a "local" server (reached by twinbox through a pre-authenticated tunnel,
// separator '.' by default) and a "remote" one (TCP with username/password, separator '/'),
// writes an InterIMAP-format config file for them (mode 0600) and runs the twinbox binary on it
// with a timeout, or SIGKILLs it at a chosen moment (crash tests).
//
// The oracle never goes through twinbox: Snapshot is read with doveadm (3 calls per server,
// 4 when some message has no Message-ID). A message is identified by its Message-ID header, or
// "sha256:<hex>" of its body (CRLF read as LF) when it has none, plus its RFC822.SIZE; its flags
// (a sorted list without \Recent) and its INTERNALDATE are compared. Mailbox names are UTF-8 with
// the server's delimiter replaced by '/' (a '/' inside a name on a '.' server is therefore
// ambiguous: tests avoid it). Only selectable mailboxes are listed (no \NonExistent parents).
//
// The helpers that change a server behind twinbox's back (append, flags, expunge, mailbox
// create/rename/delete/subscribe/update) take mailbox names in that same normalised form and
// translate '/' to the side's delimiter. They throw std::runtime_error with doveadm's message on
// failure. Names with IMAP wildcards ('*', '%') are patterns for doveadm's `mailbox` search key:
// flags/expunge on such a mailbox may also touch mailboxes the pattern matches.
//
// The twinbox binary is $TWINBOX_BINARY (set by ctest), else the one known at compile time.
// $TWINBOX_SYNC_EXTRA_ARGS (space-separated, e.g. "--debug") is appended to every run.
// TWINBOX_KEEP_LAB=1 keeps the servers' directories and the pair's directory (config, state
// database, runs/NN.log) for inspection. TWINBOX_SYNC_TRACE=1 prints every command the harness
// runs with its duration.
//
// Plain POSIX, blocking; for test bodies. Snapshots of the two sides are read in parallel, the
// two servers start and stop in parallel (a Dovecot master takes ~1 s to stop).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "dovecot/dovecot_lab.h"

namespace twinbox::sync_tests {

enum class Side { local = 0, remote = 1 };
inline constexpr std::array<Side, 2> kSides{Side::local, Side::remote};
constexpr std::size_t side_index(Side side) { return static_cast<std::size_t>(side); }
constexpr Side other(Side side) { return side == Side::local ? Side::remote : Side::local; }
constexpr std::string_view side_name(Side side) { return side == Side::local ? "local" : "remote"; }

template <class T>
struct PerSide : std::array<T, 2> {
  using std::array<T, 2>::operator[];
  constexpr T& operator[](Side side) { return (*this)[side_index(side)]; }
  constexpr const T& operator[](Side side) const { return (*this)[side_index(side)]; }
};

// ---------------------------------------------------------------------------------------------
// Messages to deliver.

struct Message {
  std::string message_id;  // "<...>"; empty: no Message-ID header (identified by body hash)
  std::string from = "Twinbox Tester <tester@example.org>";
  std::string subject = "twinbox sync test";
  std::string body = "Hello.\r\n";  // CRLF line ends
  std::vector<std::string> flags;   // e.g. "\\Seen", "$Label1"
  // IMAP date-time; "" lets the server use the time of the APPEND.
  std::string internal_date = "01-Jan-2024 10:00:00 +0000";
  std::vector<std::string> headers;  // extra "Name: value" lines (no CRLF)
  std::string render() const;        // the RFC 5322 text, CRLF line ends
};

// A small message with Message-ID <TAG.N@twinbox.test>, a body that names it and an
// INTERNALDATE in January 2024 that depends on N only.
Message test_message(std::string_view tag, int n, std::vector<std::string> flags = {});
// test_message(tag, first) ... test_message(tag, first + count - 1).
std::vector<Message> test_messages(std::string_view tag, int count, int first = 1,
                                   std::vector<std::string> flags = {});
// The Message-ID test_message(tag, n) gets.
std::string test_message_id(std::string_view tag, int n);

// ---------------------------------------------------------------------------------------------
// Snapshots, read with doveadm.

struct MessageState {
  std::string id;                  // Message-ID, or "sha256:<hex of the body>"
  std::uint64_t size = 0;          // RFC822.SIZE (doveadm size.virtual)
  std::vector<std::string> flags;  // sorted, without \Recent
  std::string internal_date;       // doveadm date.received, "2024-01-01 10:00:00"
  std::uint32_t uid = 0;
  std::uint64_t modseq = 0;
  std::string flags_text() const;  // "(\Flagged \Seen)"
};

struct MailboxState {
  std::uint32_t uidvalidity = 0;
  std::uint32_t uidnext = 0;
  std::uint64_t highestmodseq = 0;
  std::vector<MessageState> messages;  // by ascending UID

  // Messages with this id (Message-ID or "sha256:..."), in UID order.
  std::vector<const MessageState*> find(std::string_view id) const;
  std::size_t count(std::string_view id) const { return find(id).size(); }
};

struct Snapshot {
  std::map<std::string, MailboxState> mailboxes;  // normalised name ('/' delimiter) -> state
  std::set<std::string> subscriptions;            // normalised; may name missing mailboxes

  const MailboxState* mailbox(std::string_view name) const;  // nullptr if absent
  // The mailbox, or an empty one if absent: checks on it then fail instead of crashing the run.
  const MailboxState& at(std::string_view name) const;
  bool subscribed(std::string_view name) const { return subscriptions.count(std::string(name)); }
  std::size_t total_messages() const;
  std::string to_string() const;  // one line per mailbox and per message, for failure messages
};

Snapshot read_snapshot(const dovecot::DovecotLab& lab);

// Same mailboxes, same subscriptions, and in every mailbox the same multiset of
// (id, size, flags, INTERNALDATE). The failure lists every difference (up to 60 lines), naming the
// sides `a_name` and `b_name`.
testing::AssertionResult same_content(const Snapshot& a, const Snapshot& b,
                                      std::string_view a_name = "local",
                                      std::string_view b_name = "remote");
// No (id, size) appears twice in a mailbox.
testing::AssertionResult no_duplicates(const Snapshot& snapshot, std::string_view name);
// Nothing moved at all: same mailboxes with the same UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ,
// same subscriptions, and the same messages with the same UIDs, mod-sequences and flags.
testing::AssertionResult unchanged(const Snapshot& before, const Snapshot& after,
                                   std::string_view name);

// ---------------------------------------------------------------------------------------------
// Running a program (twinbox) with a timeout, or killing it at a chosen moment.

// When to SIGKILL a run: after a delay, or at the Nth complete line of its output (stdout or
// stderr, each line checked once) that satisfies a predicate, whichever comes first.
struct KillAt {
  std::optional<std::chrono::milliseconds> delay;
  std::function<bool(std::string_view line)> line;  // empty: no output condition
  int occurrence = 1;
  std::string what;  // the output condition, for messages
  // Or when this flag becomes true (set by another thread of the test).
  const std::atomic<bool>* flag = nullptr;
  int signal = SIGKILL;  // what is sent at that point (SIGTERM: ask for a clean stop)

  static KillAt after(std::chrono::milliseconds delay);
  // Lines matching a POSIX extended regex, case-insensitive (glibc: \b and \w work, \d does
  // not: write [0-9]).
  static KillAt on_output(const std::string& regex, int occurrence = 1);
  static KillAt on_line(std::function<bool(std::string_view line)> predicate, std::string what,
                        int occurrence = 1);
  // Sends `signal` once `flag` is true.
  static KillAt when_set(const std::atomic<bool>& flag, int signal);
  std::string describe() const;
};

struct RunResult {
  std::string command;  // for messages
  int status = -1;      // exit status; 128 + signal number if killed by a signal
  std::string out, err;
  bool timed_out = false;  // killed by the timeout
  bool killed = false;     // killed at the KillAt point
  std::chrono::milliseconds elapsed{0};

  bool ok() const { return status == 0 && !timed_out && !killed; }
  // Command, status, time, and the tails of stderr and stdout.
  std::string describe() const;
};

struct RunOptions {
  std::chrono::milliseconds timeout{60'000};
  std::optional<KillAt> kill;
  std::vector<std::string> env;  // "KEY=value" added to SyncPair's environment for this run
};

// Runs argv (argv[0] a path) with exactly the environment `env` ("KEY=value"), stdin from
// /dev/null, stdout and stderr captured, in its own process group. On timeout the whole group
// is SIGKILLed. At a KillAt point only the process itself is SIGKILLed (as a crash would), then
// its group is given 5 s to go away (a tunnel child sees EOF and exits) before being SIGKILLed.
RunResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      const RunOptions& options);

// The environment twinbox runs with in the tests: PATH, HOME and XDG directories under `dir`,
// and the sanitizer, locale and TMPDIR variables passed through.
std::vector<std::string> twinbox_environment(const std::string& dir);

// Exit status 0, no timeout, not killed; else the run's description.
testing::AssertionResult ran_ok(const RunResult& result);

// TWINBOX_TEST_EXIT_AFTER_COMMITS=N (store/state_db.h) makes twinbox _exit with this status right
// after its Nth commit to the state database: an exact crash point after a durable step.
inline constexpr int kExitedAfterCommits = 86;
// The run stopped itself right after its `commits`th commit: status kExitedAfterCommits, neither
// killed nor timed out, its warning names that commit, and (with --debug) exactly `commits`
// "state: committed" lines came before.
testing::AssertionResult exited_after_commits(const RunResult& result, int commits);

// Output lines that report a change (best effort: the engine's wording is free). A line is cut
// into clauses at ';'. A clause reports a change if it has a change word (copy, append, expunge,
// create, delete, rename, subscribe, store, set, add, remove, update, move and their forms) with
// a non-zero number, or no number at all, in its scope (two words before it, everything after
// it up to the next change word), unless "no"/"nothing"/"none"/"not" is within two words.
// Quiet: "copied 0 to local, 0 to remote; expunged 0 local, 0 remote", "0 copied, 0 expunged",
// "nothing to copy". Changes: "copied 0 to local, 5 to remote", "Created mailbox Foo",
// "2 messages expunged".
std::vector<std::string> change_lines(std::string_view output);
// No line of stdout or stderr reports a change.
testing::AssertionResult reports_no_changes(const RunResult& result);

// ---------------------------------------------------------------------------------------------
// The pair of servers.

struct SideOptions {
  dovecot::Options lab;             // separator, capability, max_line, tls, mail format, ...
  std::vector<std::string> config;  // extra lines for this side's config section
  bool tunnel = false;              // type = tunnel (else imap/imaps over TCP)
  // With tunnel: the tunnel runs through tests/spy/imap_spy, which writes every command, and
  // every use of an extension the server did not advertise, to spy_report(side).
  bool spy = false;
};

// Defaults: local tunnel, separator '.'; remote TCP (type = imap, STARTTLS = NO), separator
// '/'; both maildir with mail_fsync = never (30 s -> 3.5 s for 2,000 APPENDs here; twinbox's
// crash safety is about its own process, not Dovecot's disk).
struct PairOptions {
  PairOptions();

  PerSide<SideOptions> sides;
  std::vector<std::string> config;  // extra lines for the default section (list-mailbox, ...)
  std::chrono::milliseconds timeout{60'000};  // per twinbox run

  PairOptions& separators(char local, char remote);
  PairOptions& capability(Side side, std::string capability);
  PairOptions& max_line(int bytes);            // imap_max_line_length on both servers
  PairOptions& remote_tls(dovecot::Tls tls);   // starttls: STARTTLS = YES; imaps: imaps
  PairOptions& config_line(std::string line);  // default section
  PairOptions& config_line(Side side, std::string line);
};

// Flags/expunge selection: a doveadm search query.
struct Search {
  std::vector<std::string> args;
  static Search all();
  static Search message_id(std::string_view id);  // HEADER Message-ID <id> (a substring match)
  static Search uids(std::string_view set);       // "1:3,7"
  static Search uids(const std::vector<std::uint32_t>& uids);
};

struct MailboxUpdate {
  std::optional<std::uint32_t> uid_validity;
  std::optional<std::uint32_t> min_next_uid;
  std::optional<std::uint64_t> min_highest_modseq;
};

class SyncPair {
 public:
  // Starts both servers (in parallel) and writes the config; throws on failure.
  explicit SyncPair(PairOptions options = {});
  ~SyncPair();  // stops both servers (in parallel); removes dir() unless TWINBOX_KEEP_LAB=1
  SyncPair(const SyncPair&) = delete;
  SyncPair& operator=(const SyncPair&) = delete;

  const dovecot::DovecotLab& lab(Side side) const { return *labs_[side]; }
  const PairOptions& options() const { return options_; }
  const std::string& dir() const { return dir_; }
  std::string config_path() const { return dir_ + "/config"; }
  std::string database_path() const { return dir_ + "/state.db"; }
  static std::string twinbox_binary();  // throws if it is not executable

  // The spy's report for `side` (SideOptions::spy): "CAPABILITY ...", "COMMAND ..." and
  // "VIOLATION ..." lines, one per event, of every run so far.
  std::string spy_report(Side side) const;
  // Its VIOLATION lines only.
  std::vector<std::string> spy_violations(Side side) const;
  // The spy report's COMMAND lines that contain `text` (case-sensitive).
  std::size_t spy_commands_with(Side side, std::string_view text) const;

  // (Re)writes the config file from options() and the servers' facts (mode 0600).
  void write_config();
  // Replaces the extra config lines of a section and rewrites the file.
  void set_config_lines(std::vector<std::string> lines);
  void set_config_lines(Side side, std::vector<std::string> lines);
  // Restarts one server with new options (mail kept) and rewrites the config.
  void restart(Side side, const dovecot::Options& lab_options);

  // `twinbox --config FILE ARGS...` with the pair's timeout (or `timeout` if non-zero). The full
  // output of every run also goes to DIR/runs/NN.log.
  RunResult run(const std::vector<std::string>& args = {},
                std::chrono::milliseconds timeout = std::chrono::milliseconds{0}) const;
  // The same, SIGKILLed at `when` (if it has not finished by then: see RunResult::killed).
  RunResult run_killed_after(const KillAt& when, const std::vector<std::string>& args = {},
                             std::chrono::milliseconds timeout = std::chrono::milliseconds{
                                 0}) const;
  // The same, with TWINBOX_TEST_EXIT_AFTER_COMMITS=`commits`: twinbox exits with status
  // kExitedAfterCommits right after its `commits`th commit to the state database, unless it
  // finishes with fewer (check with exited_after_commits, else ran_ok).
  RunResult run_exiting_after_commits(int commits, const std::vector<std::string>& args = {},
                                      std::chrono::milliseconds timeout = std::chrono::milliseconds{
                                          0}) const;
  // `twinbox --config CONFIG ARGS...`: another config on the same servers (list-reference).
  RunResult run_with_config(const std::string& config,
                            const std::vector<std::string>& args = {}) const;
  // Runs SQL on the state database (tests that corrupt or age the state on purpose).
  void sql(const std::string& statement) const;

  Snapshot snapshot(Side side) const;
  PerSide<Snapshot> snapshots() const;  // both, read in parallel
  testing::AssertionResult expect_converged() const;
  testing::AssertionResult expect_no_duplicates(Side side) const;

  // --- changes behind twinbox's back (names normalised, '/' as delimiter) ---
  std::string server_name(Side side, std::string_view name) const;
  // IMAP APPEND through a tunnel, MULTIAPPEND batches of 500: flags and INTERNALDATE kept.
  void append(Side side, std::string_view mailbox, const std::vector<Message>& messages) const;
  void append(Side side, std::string_view mailbox, const Message& message) const;
  // `lab add-sample-mail`: mailboxes INBOX, Sent, Archive, Archive/2024, Réunions, 日本語, R&D
  // (subscribed) and Old Stuff (not), realistic messages with flags and keywords.
  void add_sample_mail(Side side, int count, unsigned seed) const;
  void add_flags(Side side, std::string_view mailbox, std::string_view flags,
                 const Search& search) const;
  void remove_flags(Side side, std::string_view mailbox, std::string_view flags,
                    const Search& search) const;
  void replace_flags(Side side, std::string_view mailbox, std::string_view flags,
                     const Search& search) const;
  void expunge(Side side, std::string_view mailbox, const Search& search) const;
  // Parents are not created implicitly (maildir with '/' needs them created first).
  void create_mailbox(Side side, std::string_view name, bool subscribe = false) const;
  void delete_mailbox(Side side, std::string_view name) const;  // also unsubscribes
  void rename_mailbox(Side side, std::string_view from, std::string_view to) const;
  void subscribe(Side side, std::string_view name) const;
  void unsubscribe(Side side, std::string_view name) const;
  // doveadm mailbox update (the mailbox is opened first: on a never-opened maildir mailbox
  // Dovecot 2.3.19 reports a corrupted index and resets UIDVALIDITY).
  void update_mailbox(Side side, std::string_view name, const MailboxUpdate& update) const;
  // Back to an empty server: every mailbox but INBOX deleted, INBOX emptied, no subscriptions.
  void reset(Side side) const;
  // Both servers reset (in parallel), and the state database removed.
  void reset_all() const;
  // Removes the state database (and its -wal, -shm, lock files): the next run is an initial one.
  void reset_state() const;
  // doveadm on one server; throws (with its stderr) unless it exits 0.
  dovecot::CommandResult doveadm(Side side, const std::vector<std::string>& args,
                                 std::string_view input = {}) const;

 private:
  void shutdown() noexcept;
  RunResult run_twinbox(const std::string& config, const std::vector<std::string>& args,
                        const RunOptions& options) const;
  std::vector<std::string> environment() const;
  void flags_command(Side side, const char* verb, std::string_view mailbox, std::string_view flags,
                     const Search& search) const;

  PairOptions options_;
  std::string dir_;
  PerSide<std::optional<dovecot::DovecotLab>> labs_;
  mutable int runs_ = 0;  // numbers DIR/runs/NN.log
};

}  // namespace twinbox::sync_tests
