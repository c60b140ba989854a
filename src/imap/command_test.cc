#include "imap/command.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace twinbox::imap {
namespace {

// A compact view of the chunks: "|" between chunks, "[wait]" and "[secret]" markers, so one
// string asserts bytes and boundaries at once.
std::string layout(const Command& c) {
  std::string out;
  for (const auto& chunk : c.chunks) {
    if (!out.empty()) out += "|";
    if (chunk.wait_continuation) out += "[wait]";
    if (chunk.secret) out += "[secret]";
    out += chunk.bytes;
  }
  return out;
}

Command tagged(Result<Command> r, const std::string& tag = "A1") {
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  Command c = std::move(r).value();
  c.assign_tag(tag);
  return c;
}

WireOptions with(LiteralMode mode) {
  WireOptions w;
  w.literals = mode;
  return w;
}

const std::string kMessage = "Subject: hi\r\n\r\nbody\r\n";  // 21 octets

// LOGIN with an atom password, a quoted one and one that needs a literal; the password is always
// its own secret chunk.
TEST(Command, LoginPicksAtomQuotedOrLiteral) {
  Command atom = tagged(cmd::login("fred", "s3cr3t", {}));
  EXPECT_EQ(layout(atom), "A1 LOGIN fred |[secret]s3cr3t|\r\n");
  EXPECT_EQ(atom.trace(), "A1 LOGIN fred <redacted>");

  Command quoted = tagged(cmd::login("fred@example.org", "pa ss\"w\\d", {}));
  EXPECT_EQ(quoted.wire(), "A1 LOGIN fred@example.org \"pa ss\\\"w\\\\d\"\r\n");
  EXPECT_EQ(layout(quoted), "A1 LOGIN fred@example.org |[secret]\"pa ss\\\"w\\\\d\"|\r\n");

  Command literal = tagged(cmd::login("fred", "p\xc3\xa4ss", {}));
  EXPECT_EQ(layout(literal), "A1 LOGIN fred {5}\r\n|[wait][secret]p\xc3\xa4ss|\r\n");
  EXPECT_EQ(literal.trace(), "A1 LOGIN fred {5}\\r\\n<redacted>");

  Command plus = tagged(cmd::login("fred", "a\tb", with(LiteralMode::plus)));
  EXPECT_EQ(layout(plus), "A1 LOGIN fred {3+}\r\n|[secret]a\tb|\r\n");

  Command empty_user = tagged(cmd::login("", "x y", {}));
  EXPECT_EQ(empty_user.wire(), "A1 LOGIN \"\" \"x y\"\r\n");

  auto nul = cmd::login("fred", std::string("a\0b", 3), {});
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.error().to_string(), "usage error: NUL byte at offset 1 in a string");
}

// AUTHENTICATE PLAIN: the response on the command line (SASL-IR) or after "+", always secret.
TEST(Command, AuthenticatePlainWithAndWithoutInitialResponse) {
  EXPECT_EQ(sasl_plain("", "tim", "tanstaaftanstaaf"), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");  // RFC 4616
  Command ir = cmd::authenticate_plain("", "fred", "s3cr3t", true);
  ir.assign_tag("A1");
  EXPECT_EQ(layout(ir), "A1 AUTHENTICATE PLAIN |[secret]AGZyZWQAczNjcjN0|\r\n");
  EXPECT_EQ(ir.trace(), "A1 AUTHENTICATE PLAIN <redacted>");
  EXPECT_EQ(ir.kind, CommandKind::authenticate);

  Command no_ir = cmd::authenticate_plain("", "fred", "s3cr3t", false);
  no_ir.assign_tag("A2");
  EXPECT_EQ(layout(no_ir), "A2 AUTHENTICATE PLAIN\r\n|[wait][secret]AGZyZWQAczNjcjN0\r\n");
  EXPECT_EQ(no_ir.trace(), "A2 AUTHENTICATE PLAIN\\r\\n<redacted>");
}

// APPEND with flags, date and a literal in each literal mode: synchronizing waits, LITERAL+
// never waits, LITERAL- waits only above 4096 octets.
TEST(Command, AppendInEachLiteralMode) {
  const auto make = [&](LiteralMode mode, std::string body) {
    std::vector<cmd::AppendMessage> messages(1);
    messages[0].flags = {"\\Seen", "$Forwarded"};
    messages[0].internal_date = "17-Jul-1996 02:44:25 -0700";
    messages[0].content = std::move(body);
    return tagged(cmd::append("INBOX", std::move(messages), with(mode)));
  };
  const std::string head = "A1 APPEND INBOX (\\Seen $Forwarded) \"17-Jul-1996 02:44:25 -0700\" ";
  EXPECT_EQ(layout(make(LiteralMode::synchronizing, kMessage)),
            head + "{21}\r\n|[wait]" + kMessage + "|\r\n");
  EXPECT_EQ(layout(make(LiteralMode::plus, kMessage)), head + "{21+}\r\n|" + kMessage + "|\r\n");
  EXPECT_EQ(layout(make(LiteralMode::minus, kMessage)), head + "{21+}\r\n|" + kMessage + "|\r\n");
  const std::string big(5000, 'x');
  EXPECT_EQ(layout(make(LiteralMode::plus, big)), head + "{5000+}\r\n|" + big + "|\r\n");
  EXPECT_EQ(layout(make(LiteralMode::minus, big)), head + "{5000}\r\n|[wait]" + big + "|\r\n");
  const std::string edge(4096, 'y');
  EXPECT_EQ(layout(make(LiteralMode::minus, edge)), head + "{4096+}\r\n|" + edge + "|\r\n");
  // Long literals are summarized in traces, short ones shown.
  EXPECT_EQ(make(LiteralMode::minus, big).trace(),
            "A1 APPEND INBOX (\\Seen $Forwarded) \"17-Jul-1996 02:44:25 -0700\" "
            "{5000}\\r\\n{5000 bytes}");
  EXPECT_EQ(make(LiteralMode::plus, "hi").trace(),
            "A1 APPEND INBOX (\\Seen $Forwarded) \"17-Jul-1996 02:44:25 -0700\" {2+}\\r\\nhi");
}

// The literal body is moved into its chunk, not copied.
TEST(Command, AppendMovesTheBody) {
  std::vector<cmd::AppendMessage> messages(1);
  messages[0].content = std::string(1 << 16, 'z');
  const char* data = messages[0].content.data();
  Command c = tagged(cmd::append("INBOX", std::move(messages), {}));
  ASSERT_EQ(c.chunks.size(), 3u);
  EXPECT_EQ(c.chunks[1].bytes.data(), data);
  EXPECT_TRUE(c.chunks[1].literal);
}

// A streamed body: the command carries only the announcement and an external chunk of the
// announced size, which the shell fills from its source.
TEST(Command, AppendOfAStreamedBody) {
  const auto make = [](LiteralMode mode) {
    std::vector<cmd::AppendMessage> messages(1);
    messages[0].flags = {"\\Seen"};
    messages[0].streamed_size = 5u << 20;
    return tagged(cmd::append("INBOX", std::move(messages), with(mode)));
  };
  for (LiteralMode mode : {LiteralMode::synchronizing, LiteralMode::plus, LiteralMode::minus}) {
    Command c = make(mode);
    ASSERT_EQ(c.chunks.size(), 3u);
    const bool plus = mode == LiteralMode::plus;
    EXPECT_EQ(c.chunks[0].bytes, plus ? "A1 APPEND INBOX (\\Seen) {5242880+}\r\n"
                                      : "A1 APPEND INBOX (\\Seen) {5242880}\r\n");
    EXPECT_EQ(c.chunks[1].external, 5u << 20);
    EXPECT_TRUE(c.chunks[1].bytes.empty());
    EXPECT_EQ(c.chunks[1].wait_continuation, !plus);
    EXPECT_EQ(c.chunks[2].bytes, "\r\n");
    EXPECT_EQ(c.trace(), std::string("A1 APPEND INBOX (\\Seen) {5242880") + (plus ? "+" : "") +
                             "}\\r\\n{5242880 bytes, streamed}");
  }
  std::vector<cmd::AppendMessage> both(1);
  both[0].content = "x";
  both[0].streamed_size = 1;
  EXPECT_FALSE(cmd::append("INBOX", std::move(both), {}));
}

// MULTIAPPEND (RFC 3502) of three messages: one command, one literal per message.
TEST(Command, MultiappendOfThreeMessages) {
  std::vector<cmd::AppendMessage> messages(3);
  messages[0].content = "one";
  messages[1].flags = {"\\Seen"};
  messages[1].content = "two";
  messages[2].internal_date = " 7-Feb-2024 10:00:00 +0100";
  messages[2].content = "three";
  Command c = tagged(cmd::append("Archive", std::move(messages), {}));
  EXPECT_EQ(layout(c),
            "A1 APPEND Archive {3}\r\n|[wait]one| (\\Seen) {3}\r\n|[wait]two| \" 7-Feb-2024 "
            "10:00:00 +0100\" {5}\r\n|[wait]three|\r\n");
  EXPECT_EQ(c.wire(),
            "A1 APPEND Archive {3}\r\none (\\Seen) {3}\r\ntwo \" 7-Feb-2024 10:00:00 +0100\" "
            "{5}\r\nthree\r\n");
  EXPECT_EQ(c.longest_line(), std::string(" \" 7-Feb-2024 10:00:00 +0100\" {5}\r\n").size());
}

// Binary bodies need literal8 and BINARY; a bad date is refused before anything is sent.
TEST(Command, AppendBinaryAndBadDate) {
  std::vector<cmd::AppendMessage> messages(1);
  messages[0].content = std::string("a\0b", 3);
  auto refused = cmd::append("INBOX", messages, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().to_string(),
            "usage error: message contains NUL bytes and the server lacks BINARY");
  WireOptions binary;
  binary.binary = true;
  binary.literals = LiteralMode::plus;
  EXPECT_EQ(layout(tagged(cmd::append("INBOX", messages, binary))),
            std::string("A1 APPEND INBOX ~{3+}\r\n|a\0b|\r\n", 30));

  messages[0].content = "x";
  messages[0].internal_date = "2024-01-01T00:00:00Z";
  auto date = cmd::append("INBOX", messages, {});
  ASSERT_FALSE(date.ok());
  EXPECT_EQ(date.error().message, "invalid APPEND date-time");
}

// UID STORE with UNCHANGEDSINCE, the compare-and-swap of flag propagation (RFC 7162 §3.1.3).
TEST(Command, UidStoreUnchangedSince) {
  cmd::StoreOp store;
  store.flags = {"\\Seen", "$Junk"};
  store.unchanged_since = 96;
  auto r = cmd::uid_store(SequenceSet::of({1, 2, 3, 5}), store);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  (*r)[0].assign_tag("A150");
  EXPECT_EQ((*r)[0].wire(),
            "A150 UID STORE 1:3,5 (UNCHANGEDSINCE 96) +FLAGS.SILENT (\\Seen $Junk)\r\n");

  store.mode = cmd::StoreMode::remove;
  store.silent = false;
  store.unchanged_since = 0;  // valid: "only if never modified" (mod-sequence-valzer)
  store.flags = {};
  auto r2 = cmd::uid_store(SequenceSet::of({7}), store);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ((*r2)[0].wire(), "UID STORE 7 (UNCHANGEDSINCE 0) -FLAGS ()\r\n");

  store.unchanged_since = kMaxModSeq + 1;
  auto bad = cmd::uid_store(SequenceSet::of({7}), store);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "UNCHANGEDSINCE 9223372036854775808 out of range (RFC 7162 §7)");
}

TEST(Command, UidFetchChangedSinceVanished) {
  SequenceSet uids;
  uids.add(1, 100);
  auto r = cmd::uid_fetch(uids, "(FLAGS)", {.changed_since = 12345, .vanished = true});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(tagged(std::move((*r)[0]), "A2").wire(),
            "A2 UID FETCH 1:100 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n");

  auto plain = cmd::uid_fetch(SequenceSet::of({4}), "BODY.PEEK[]", {});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)[0].wire(), "UID FETCH 4 BODY.PEEK[]\r\n");

  auto zero = cmd::uid_fetch(uids, "(FLAGS)",
                             {.changed_since = 0, .vanished = false});  // the iPhone defect
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().message, "CHANGEDSINCE 0 out of range (RFC 7162 §7)");
  auto vanished_alone =
      cmd::uid_fetch(uids, "(FLAGS)", {.changed_since = std::nullopt, .vanished = true});
  ASSERT_FALSE(vanished_alone.ok());
  EXPECT_EQ(vanished_alone.error().message, "VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)");
  auto injected = cmd::uid_fetch(uids, "(FLAGS)\r\nA9 DELETE INBOX", {});
  ASSERT_FALSE(injected.ok());
  EXPECT_EQ(injected.error().message, "invalid command syntax");
  EXPECT_TRUE(cmd::uid_fetch(SequenceSet(), "(FLAGS)", {})->empty());
}

TEST(Command, SelectWithQresyncAndCondstore) {
  cmd::SelectOptions qresync;
  qresync.qresync = cmd::QresyncParams{3857529045u, 20010715194032001ull, {}, {}};
  EXPECT_EQ(tagged(cmd::select("INBOX", qresync, {}), "A142").wire(),
            "A142 SELECT INBOX (QRESYNC (3857529045 20010715194032001))\r\n");

  qresync.qresync->known_uids.add(1, 198);
  EXPECT_EQ(tagged(cmd::select("inbox", qresync, {})).wire(),
            "A1 SELECT INBOX (QRESYNC (3857529045 20010715194032001 1:198))\r\n");

  cmd::QresyncParams::SeqMatch match;
  match.seqs.add(1, 10);
  match.uids.add(41, 50);
  qresync.qresync->seq_match = match;
  qresync.examine = true;
  EXPECT_EQ(tagged(cmd::select("R\xc3\xa9unions", qresync, {})).wire(),
            "A1 EXAMINE R&AOk-unions (QRESYNC (3857529045 20010715194032001 1:198 (1:10 "
            "41:50)))\r\n");

  cmd::SelectOptions condstore;
  condstore.condstore = true;
  EXPECT_EQ(tagged(cmd::select("Archive", condstore, {})).wire(),
            "A1 SELECT Archive (CONDSTORE)\r\n");

  cmd::SelectOptions zero;
  zero.qresync = cmd::QresyncParams{0, 5, {}, {}};
  auto bad = cmd::select("INBOX", zero, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "QRESYNC needs a non-zero UIDVALIDITY");
}

TEST(Command, ListExtendedWithStatus) {
  cmd::ListOptions options;
  options.return_items = {"SUBSCRIBED", "CHILDREN"};
  options.status_items = {"UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"};
  EXPECT_EQ(tagged(cmd::list("", {"*"}, options, {})).wire(),
            "A1 LIST \"\" * RETURN (SUBSCRIBED CHILDREN STATUS (UIDVALIDITY UIDNEXT "
            "HIGHESTMODSEQ))\r\n");

  cmd::ListOptions selection;
  selection.selection = {"SUBSCRIBED"};
  EXPECT_EQ(tagged(cmd::list("", {"INBOX", "R\xc3\xa9unions/%"}, selection, {})).wire(),
            "A1 LIST (SUBSCRIBED) \"\" (INBOX R&AOk-unions/%)\r\n");
  EXPECT_EQ(tagged(cmd::list("", {"*"}, {}, {})).wire(), "A1 LIST \"\" *\r\n");
  // list-char excludes SP, ( ) { and the quoted-specials: those patterns are quoted.
  EXPECT_EQ(tagged(cmd::list("", {"Old Stuff/*", "a(b", "q\"x", ""}, {}, {})).wire(),
            "A1 LIST \"\" (\"Old Stuff/*\" \"a(b\" \"q\\\"x\" \"\")\r\n");
  EXPECT_EQ(tagged(cmd::list("acct1.", {"acct1.*"}, {}, {})).wire(), "A1 LIST acct1. acct1.*\r\n");
  EXPECT_EQ(tagged(cmd::status("Sent", {"UIDNEXT", "MESSAGES"}, {})).wire(),
            "A1 STATUS Sent (UIDNEXT MESSAGES)\r\n");
}

// Mailbox names: mUTF-7 normally, quoted when they contain specials, raw UTF-8 (quoted) under
// UTF8=ACCEPT, a literal when nothing else can carry them.
TEST(Command, MailboxNamesNeedingEncodingAndQuoting) {
  const auto select = [](std::string_view name, WireOptions w = {}) {
    return layout(tagged(cmd::select(name, {}, w)));
  };
  EXPECT_EQ(select("R\xc3\xa9unions"), "A1 SELECT R&AOk-unions\r\n");
  EXPECT_EQ(select("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"), "A1 SELECT &ZeVnLIqe-\r\n");
  EXPECT_EQ(select("fo!o [b*a%r]"), "A1 SELECT \"fo!o [b*a%r]\"\r\n");
  EXPECT_EQ(select("&"), "A1 SELECT &-\r\n");
  EXPECT_EQ(select("a\"b\\c"), "A1 SELECT \"a\\\"b\\\\c\"\r\n");
  EXPECT_EQ(select("Inbox"), "A1 SELECT INBOX\r\n");
  EXPECT_EQ(select("x]y"), "A1 SELECT x]y\r\n");  // "]" is an ASTRING-CHAR
  EXPECT_EQ(select(""), "A1 SELECT \"\"\r\n");
  EXPECT_EQ(select("a\rb"), "A1 SELECT a&AA0-b\r\n");
  WireOptions utf8;
  utf8.utf8_accept = true;
  EXPECT_EQ(select("R\xc3\xa9unions", utf8), "A1 SELECT \"R\xc3\xa9unions\"\r\n");
  EXPECT_EQ(select("a&b", utf8), "A1 SELECT a&b\r\n");
  EXPECT_EQ(select("a\rb", utf8), "A1 SELECT {3}\r\n|[wait]a\rb|\r\n");
  auto bad = cmd::select("\xff", {}, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().to_string(),
            "usage error: invalid UTF-8 in mailbox name (at byte 0) in: \xff");
}

// RFC 7162 §4: 40,000 disjoint UIDs become several commands, none with a line over 8192 octets
// even with the longest tag, together covering exactly the set, in order.
TEST(Command, FortyThousandDisjointUidsSplitUnder8192) {
  SequenceSet uids;
  for (std::uint32_t i = 0; i < 40000; ++i) uids.add(1000000 + 2 * i);
  auto r = cmd::uid_fetch(uids, "(UID FLAGS MODSEQ)", {.changed_since = 42, .vanished = false});
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_GT(r->size(), 30u);
  SequenceSet seen;
  std::uint32_t last = 0;
  for (std::size_t i = 0; i < r->size(); ++i) {
    Command& c = (*r)[i];
    c.assign_tag("T18446744073709551615");  // the longest tag Session can make
    EXPECT_LE(c.longest_line(), kDefaultMaxLine);
    // The pieces are not wastefully small.
    if (i + 1 < r->size()) {
      EXPECT_GE(c.longest_line(), kDefaultMaxLine - 10);
    }
    const std::string wire = c.wire();
    const std::string prefix = "T18446744073709551615 UID FETCH ";
    const std::string suffix = " (UID FLAGS MODSEQ) (CHANGEDSINCE 42)\r\n";
    ASSERT_EQ(wire.substr(0, prefix.size()), prefix);
    ASSERT_EQ(wire.substr(wire.size() - suffix.size()), suffix);
    auto piece = SequenceSet::parse(
        std::string_view(wire).substr(prefix.size(), wire.size() - prefix.size() - suffix.size()));
    ASSERT_TRUE(piece.ok());
    ASSERT_GT(*piece->min(), last);
    last = *piece->max();
    seen.add(*piece);
  }
  EXPECT_EQ(seen, uids);

  auto expunge = cmd::uid_expunge(uids, 2000);
  ASSERT_TRUE(expunge.ok()) << expunge.error().to_string();
  // 40,000 UIDs of 7 digits take 320,000 octets as a set: at least 161 lines of 2,000.
  ASSERT_GT(expunge->size(), 160u);
  SequenceSet expunged;
  for (const auto& c : *expunge) {
    EXPECT_LE(c.longest_line() + kTagReserve, 2000u);
    const std::string wire = c.wire();
    const std::string prefix = "UID EXPUNGE ";
    ASSERT_TRUE(wire.starts_with(prefix) && wire.ends_with("\r\n")) << wire;
    auto piece = SequenceSet::parse(
        std::string_view(wire).substr(prefix.size(), wire.size() - prefix.size() - 2));
    ASSERT_TRUE(piece.ok()) << wire;
    expunged.add(*piece);
  }
  EXPECT_EQ(expunged, uids);

  auto too_small = cmd::uid_expunge(uids, 40);
  ASSERT_FALSE(too_small.ok());
  EXPECT_EQ(too_small.error().to_string(),
            "limit exceeded: command UID EXPUNGE cannot fit within 40 octets per line");
}

TEST(Command, SimpleCommands) {
  EXPECT_EQ(cmd::capability().wire(), "CAPABILITY\r\n");
  EXPECT_EQ(cmd::id_nil().wire(), "ID NIL\r\n");
  EXPECT_EQ(cmd::compress_deflate().wire(), "COMPRESS DEFLATE\r\n");
  EXPECT_EQ(cmd::compress_deflate().kind, CommandKind::compress);
  EXPECT_EQ(cmd::unselect().kind, CommandKind::unselect);
  EXPECT_EQ(tagged(cmd::enable({"QRESYNC", "UTF8=ACCEPT"})).wire(),
            "A1 ENABLE QRESYNC UTF8=ACCEPT\r\n");
  EXPECT_EQ(tagged(cmd::uid_expunge(SequenceSet::of({3, 4, 9}))->front()).wire(),
            "A1 UID EXPUNGE 3:4,9\r\n");
}

TEST(Command, CommandKindFromName) {
  EXPECT_EQ(command_kind("uid fetch"), CommandKind::uid_fetch);
  EXPECT_EQ(command_kind("UID EXPUNGE"), CommandKind::uid_expunge);
  EXPECT_EQ(command_kind("Select"), CommandKind::select);
  EXPECT_EQ(command_kind("XAPPLEPUSHSERVICE"), CommandKind::other);
}

// Builder arguments that cannot be sent are refused, never written in a way that could inject
// a second command.
TEST(Command, BuilderRefusesUnsendableArguments) {
  const auto error_of = [](Result<Command> r) {
    return r.ok() ? std::string() : r.error().to_string();
  };
  EXPECT_EQ(error_of(CommandBuilder("X").atom("a b").build()), "usage error: invalid atom in: a b");
  EXPECT_EQ(error_of(CommandBuilder("X").raw("a\r\nb").build()),
            "usage error: invalid command syntax in: a\\r\\nb");
  EXPECT_EQ(error_of(CommandBuilder("X").flag_list({"\\Seen", "a(b"}).build()),
            "usage error: invalid flag in: a(b");
  EXPECT_EQ(error_of(CommandBuilder("X").flag_list({"\\"}).build()),
            "usage error: invalid flag in: \\\\");
  EXPECT_EQ(error_of(CommandBuilder("X").sequence_set({}).build()),
            "usage error: empty sequence set");
  EXPECT_EQ(error_of(CommandBuilder("X").begin_list().build()),
            "internal error: unbalanced parenthesis in command in: X");
  EXPECT_EQ(error_of(CommandBuilder("X").end_list().build()),
            "internal error: unbalanced parenthesis in command in: X");
  // Only the first error is kept.
  EXPECT_EQ(error_of(CommandBuilder("X").atom("").raw("").build()), "usage error: invalid atom");
}

TEST(Command, BuilderSpacingAndLongQuotedStrings) {
  auto c = CommandBuilder("X")
               .begin_list()
               .begin_list()
               .atom("A")
               .end_list()
               .number(7)
               .end_list()
               .string("q")
               .build();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->wire(), "X ((A) 7) \"q\"\r\n");
  const std::string long_text(kMaxQuoted + 1, 'a');
  auto l = CommandBuilder("X").string(long_text).build();
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->chunks.size(), 3u);
  EXPECT_EQ(l->chunks[0].bytes, "X {1025}\r\n");
  // UTF-8 in a quoted string only under UTF8=ACCEPT, and only valid UTF-8.
  WireOptions utf8;
  utf8.utf8_accept = true;
  EXPECT_EQ(CommandBuilder("X", utf8).string("\xc3\xa9").build()->wire(), "X \"\xc3\xa9\"\r\n");
  EXPECT_EQ(CommandBuilder("X", utf8).string("\xc3").build()->wire(), "X {1}\r\n\xc3\r\n");
  EXPECT_EQ(CommandBuilder("X").string("\xc3\xa9").build()->wire(), "X {2}\r\n\xc3\xa9\r\n");
}

}  // namespace
}  // namespace twinbox::imap
