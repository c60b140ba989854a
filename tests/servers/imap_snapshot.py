#!/usr/bin/env python3
"""imap_snapshot.py: an independent IMAP oracle for twinbox's tests (Python 3 stdlib only).

It shares no code with twinbox: it talks to the server through imaplib, over a tunnel command
(imaplib.IMAP4_stream) or TCP, and either prints the server's state as JSON or changes it behind
the sync tool's back.

  imap_snapshot.py [CONNECTION] [snapshot]
  imap_snapshot.py [CONNECTION] content      (sorted lines to compare two servers with)
  imap_snapshot.py [CONNECTION] append MAILBOX FILE [--flags '\\Seen $X'] [--date DATE]
  imap_snapshot.py [CONNECTION] flags MAILBOX MESSAGE-ID (--add F | --remove F | --set F)
  imap_snapshot.py [CONNECTION] expunge MAILBOX MESSAGE-ID
  imap_snapshot.py [CONNECTION] create|delete|subscribe|unsubscribe MAILBOX
  imap_snapshot.py [CONNECTION] rename OLD NEW

CONNECTION is --tunnel 'CMD' (run with /bin/sh -c; LOGIN follows if it does not greet PREAUTH
and --user is given), --host H --port P --user U --password PW, or --lab DIR (the tunnel,
user and password in DIR/lab.env of tests/dovecot/lab or tests/servers/{cyrus,courier}_lab).

Mailbox names on the command line and in the output use "/" as the separator and are Unicode
(modified UTF-7 on the wire). --strip-prefix P hides a personal namespace prefix (given with
"/", e.g. "INBOX/" for Courier); "auto" takes it from NAMESPACE.

snapshot prints:
  {"mailboxes": {NAME: {"uidvalidity": N, "uidnext": N, "messages": [
      {"uid": N, "message_id": "<...>" or null, "size": RFC822.SIZE,
       "flags": [sorted, without \\Recent], "internaldate": "YYYY-MM-DDTHH:MM:SSZ" (UTC)}]}},
   "subscriptions": [sorted names]}
for every selectable mailbox (\\Noselect and \\NonExistent ones are left out). Subscriptions
come from LIST (SUBSCRIBED) where LIST-EXTENDED is offered (so they include subscribed names that
do not exist), else from LSUB without its \\Noselect entries (Courier lists unsubscribed parents
there).
The other commands print a JSON object saying what they did. Exit status: 0 on success,
1 on a server or connection error (message on stderr), 2 on usage errors.
"""

import argparse
import base64
import datetime
import imaplib
import json
import re
import sys

# Literal messages can be large; imaplib's default line limit is 10,000 bytes.
imaplib._MAXLINE = 10_000_000


class Failure(Exception):
    pass


# --- modified UTF-7 (RFC 3501 section 5.1.3) ----------------------------------------------------

def mutf7_decode(raw: bytes) -> str:
    out, i = [], 0
    text = raw.decode("ascii", errors="strict") if all(b < 0x80 for b in raw) else None
    if text is None:  # UTF8=ACCEPT servers may send UTF-8
        return raw.decode("utf-8", errors="replace")
    while i < len(text):
        c = text[i]
        if c != "&":
            out.append(c)
            i += 1
            continue
        j = text.index("-", i)
        chunk = text[i + 1:j]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64).decode("utf-16-be"))
        i = j + 1
    return "".join(out)


def mutf7_encode(name: str) -> bytes:
    out, pending = [], []

    def flush():
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return "".join(out).encode("ascii")


# --- a small parser for imaplib's response data ----------------------------------------------------

def responses(data):
    """Splits imaplib's data list into responses: lists of parts (bytes text or ('lit', bytes)).

    imaplib gives (text-ending-in-{n}, literal) tuples; the bytes element after a tuple continues
    the same response."""
    out, current, after_literal = [], None, False
    for item in data or []:
        if item is None:
            continue
        if not after_literal or current is None:
            current = []
            out.append(current)
        if isinstance(item, tuple):
            head = re.sub(rb"\{\d+\+?\}$", b"", item[0])
            current.append(head)
            current.append(("lit", item[1]))
            after_literal = True
        else:
            current.append(item)
            after_literal = False
    return out


def parse(parts):
    """Parses one response into nested lists; atoms and strings are bytes, NIL is None."""
    tokens = []
    for part in parts:
        if isinstance(part, tuple):
            tokens.append(("str", part[1]))
            continue
        i, n = 0, len(part)
        while i < n:
            c = part[i:i + 1]
            if c in b" \r\n":
                i += 1
            elif c in b"()":
                tokens.append((c.decode(), None))
                i += 1
            elif c == b'"':
                i += 1
                buf = bytearray()
                while i < n and part[i:i + 1] != b'"':
                    if part[i:i + 1] == b"\\":
                        i += 1
                    buf += part[i:i + 1]
                    i += 1
                i += 1
                tokens.append(("str", bytes(buf)))
            else:
                start, depth = i, 0
                while i < n:
                    ch = part[i:i + 1]
                    if ch == b"[":
                        depth += 1
                    elif ch == b"]":
                        depth -= 1
                    elif depth <= 0 and ch in b" ()\r\n":
                        break
                    i += 1
                atom = part[start:i]
                tokens.append(("atom", None if atom.upper() == b"NIL" else atom))
    stack = [[]]
    for kind, value in tokens:
        if kind == "(":
            stack.append([])
        elif kind == ")":
            if len(stack) > 1:
                done = stack.pop()
                stack[-1].append(done)
        else:
            stack[-1].append(value)
    while len(stack) > 1:
        done = stack.pop()
        stack[-1].append(done)
    return stack[0]


def pairs(items):
    return {items[i].upper() if isinstance(items[i], bytes) else items[i]: items[i + 1]
            for i in range(0, len(items) - 1, 2)}


# --- the connection ---------------------------------------------------------------------------------

def load_lab(path):
    facts = {}
    with open(path.rstrip("/") + "/lab.env", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                facts[k] = v
    return facts


class Server:
    def __init__(self, args):
        tunnel, user, password = args.tunnel, args.user, args.password
        host, port = args.host, args.port
        if args.lab:
            facts = load_lab(args.lab)
            tunnel = tunnel or facts.get("preauth_tunnel") or facts.get("tunnel")
            user = user or facts.get("user")
            password = password or facts.get("password") or "x"
        try:
            if tunnel:
                self.imap = imaplib.IMAP4_stream(tunnel)
            elif host and port:
                self.imap = imaplib.IMAP4(host, int(port))
            else:
                raise Failure("give --tunnel CMD, --host H --port P --user U --password PW, or --lab DIR")
            if self.imap.state == "NONAUTH":
                if not user:
                    raise Failure("the server did not pre-authenticate: give --user and --password")
                self.imap.login(user, password or "")
        except imaplib.IMAP4.error as e:
            raise Failure(f"connect/login: {e}") from None
        caps = self.check(self.imap.capability(), "CAPABILITY")
        self.caps = set(caps[-1].decode().upper().split()) if caps else set()
        self.caps |= {c.upper() for c in self.imap.capabilities}
        self.delimiter = self.find_delimiter()
        self.prefix = b""
        strip = args.strip_prefix
        if strip == "auto":
            self.prefix = self.personal_prefix()
        elif strip:
            self.prefix = self.to_wire(strip, with_prefix=False)

    def check(self, result, what):
        typ, data = result
        if typ != "OK":
            raise Failure(f"{what}: {typ} {b' '.join(d for d in data if isinstance(d, bytes)).decode(errors='replace')}")
        return data

    def find_delimiter(self):
        data = self.check(self.imap.list('""', '""'), "LIST")
        for r in responses(data):
            p = parse(r)
            if len(p) >= 2 and isinstance(p[1], bytes):
                return p[1]
        return b"/"

    def personal_prefix(self):
        if "NAMESPACE" not in self.caps:
            return b""
        data = self.check(self.imap.namespace(), "NAMESPACE")
        for r in responses(data):
            p = parse(r)
            if p and isinstance(p[0], list) and p[0] and isinstance(p[0][0], list):
                return p[0][0][0] or b""
        return b""

    # "/"-separated Unicode name <-> wire name.
    def to_wire(self, name, with_prefix=True):
        wire = mutf7_encode(name)
        if self.delimiter and self.delimiter != b"/":
            wire = wire.replace(b"/", self.delimiter)
        if with_prefix and self.prefix and name.upper() != "INBOX":
            wire = self.prefix + wire
        return wire

    def from_wire(self, wire):
        if self.prefix and wire.startswith(self.prefix) and len(wire) > len(self.prefix):
            wire = wire[len(self.prefix):]
        if self.delimiter and self.delimiter != b"/":
            wire = wire.replace(self.delimiter, b"/")
        return mutf7_decode(wire)

    @staticmethod
    def quote(wire):
        return b'"' + wire.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'

    def q(self, name):
        return self.quote(self.to_wire(name)).decode("ascii")

    def mailboxes(self):
        """(name, wire name, attributes) of every mailbox LIST "" "*" shows."""
        data = self.check(self.imap.list('""', '"*"'), "LIST")
        out = []
        for r in responses(data):
            p = parse(r)
            if len(p) < 3 or not isinstance(p[0], list):
                continue
            attrs = {a.decode().lower() for a in p[0] if isinstance(a, bytes)}
            out.append((self.from_wire(p[2]), p[2], attrs))
        return out

    def subscriptions(self):
        # LIST (SUBSCRIBED) also shows subscriptions of mailboxes that do not exist (Cyrus keeps
        # the old name's subscription after a RENAME, and LSUB hides it).
        extended = "LIST-EXTENDED" in self.caps
        if extended:
            data = self.check(self.imap._simple_command("LIST", "(SUBSCRIBED)", '""', '"*"'), "LIST")
            data = self.imap._untagged_response("OK", data, "LIST")[1]
        else:
            data = self.check(self.imap.lsub('""', '"*"'), "LSUB")
        names = set()
        for r in responses(data):
            p = parse(r)
            if len(p) < 3 or not isinstance(p[0], list):
                continue
            attrs = {a.decode().lower() for a in p[0] if isinstance(a, bytes)}
            if extended and "\\subscribed" not in attrs:
                continue
            if not extended and "\\noselect" in attrs:
                continue
            names.add(self.from_wire(p[2]))
        return sorted(names)

    def select(self, wire, readonly):
        typ, data = self.imap.select(self.quote(wire).decode("ascii"), readonly=readonly)
        if typ != "OK":
            raise Failure(f"SELECT {wire.decode(errors='replace')}: {typ} {data}")
        return int(data[0]) if data and data[0] else 0

    def status(self, wire):
        data = self.check(self.imap.status(self.quote(wire).decode("ascii"), "(UIDNEXT UIDVALIDITY)"),
                          "STATUS")
        for r in responses(data):
            p = parse(r)
            if p and isinstance(p[-1], list):
                kv = pairs(p[-1])
                return int(kv[b"UIDVALIDITY"]), int(kv[b"UIDNEXT"])
        raise Failure(f"STATUS {wire!r}: no STATUS response")

    def messages(self, wire, readonly=True):
        exists = self.select(wire, readonly)
        if exists == 0:
            return []
        data = self.check(self.imap.uid(
            "FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"),
            "UID FETCH")
        out = []
        for r in responses(data):
            p = parse(r)
            if len(p) < 2 or not isinstance(p[1], list):
                continue
            kv = pairs(p[1])
            if b"UID" not in kv or b"RFC822.SIZE" not in kv:
                continue  # an unsolicited FETCH (a flag change by another session)
            header = next((v for k, v in kv.items() if isinstance(k, bytes) and k.startswith(b"BODY[")), b"")
            out.append({
                "uid": int(kv[b"UID"]),
                "message_id": message_id(header or b""),
                "size": int(kv[b"RFC822.SIZE"]),
                "flags": sorted(f.decode() for f in kv.get(b"FLAGS", []) if f.lower() != b"\\recent"),
                "internaldate": utc(kv[b"INTERNALDATE"].decode()),
            })
        out.sort(key=lambda m: m["uid"])
        return out

    def uids_of(self, name, msgid):
        wire = self.to_wire(name)
        found = [m["uid"] for m in self.messages(wire, readonly=False) if m["message_id"] == msgid]
        if not found:
            raise Failure(f"no message with Message-ID {msgid} in {name}")
        return found

    def close(self):
        try:
            self.imap.logout()
        except Exception:
            pass


def message_id(header: bytes):
    text = re.sub(rb"\r?\n[ \t]+", b" ", header).decode("utf-8", errors="replace")
    m = re.search(r"(?im)^message-id:\s*(.*?)\s*$", text)
    return m.group(1) if m and m.group(1) else None


def utc(internaldate: str):
    when = datetime.datetime.strptime(internaldate.strip(), "%d-%b-%Y %H:%M:%S %z")
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def flag_list(text):
    return "(" + " ".join(text.split()) + ")"


def uid_set(uids):
    return ",".join(str(u) for u in uids)


# --- commands -------------------------------------------------------------------------------------

def cmd_snapshot(s, a):
    boxes = {}
    for name, wire, attrs in s.mailboxes():
        if "\\noselect" in attrs or "\\nonexistent" in attrs:
            continue
        uidvalidity, uidnext = s.status(wire)
        boxes[name] = {"uidvalidity": uidvalidity, "uidnext": uidnext, "messages": s.messages(wire)}
    return {"mailboxes": dict(sorted(boxes.items())), "subscriptions": s.subscriptions()}


def cmd_content(s, a):
    """What two synced servers must share, as sorted text lines that compare with ==: one line
    per message (mailbox, Message-ID, size, flags; a message held twice is two lines) and one
    per subscription."""
    lines = []
    snapshot = cmd_snapshot(s, a)
    for name, box in snapshot["mailboxes"].items():
        lines.append(f"mailbox\t{name}")
        for m in box["messages"]:
            lines.append(f"message\t{name}\t{m['message_id']}\t{m['size']}\t"
                         + " ".join(m["flags"]))
    lines += [f"subscribed\t{name}" for name in snapshot["subscriptions"]]
    return "\n".join(sorted(lines)) + "\n"


def cmd_append(s, a):
    with open(a.file, "rb") as f:
        message = f.read()
    flags = flag_list(a.flags) if a.flags else None
    date = '"' + a.date + '"' if a.date else None
    data = s.check(s.imap.append(s.q(a.mailbox), flags, date, message), "APPEND")
    out = {"mailbox": a.mailbox}
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[-1] if data and data[-1] else b"")
    if m:
        out.update(uidvalidity=int(m.group(1)), uid=int(m.group(2)))
    return out


def cmd_flags(s, a):
    uids = s.uids_of(a.mailbox, a.message_id)
    op, value = ("+FLAGS.SILENT", a.add) if a.add is not None else \
        ("-FLAGS.SILENT", a.remove) if a.remove is not None else ("FLAGS.SILENT", a.set)
    s.check(s.imap.uid("STORE", uid_set(uids), op, flag_list(value)), "UID STORE")
    return {"mailbox": a.mailbox, "uids": uids, "store": op, "flags": value.split()}


def cmd_expunge(s, a):
    uids = s.uids_of(a.mailbox, a.message_id)
    s.check(s.imap.uid("STORE", uid_set(uids), "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
    if "UIDPLUS" in s.caps:
        s.check(s.imap.uid("EXPUNGE", uid_set(uids)), "UID EXPUNGE")
        how = "UID EXPUNGE"
    else:
        s.check(s.imap.expunge(), "EXPUNGE")
        how = "EXPUNGE"
    return {"mailbox": a.mailbox, "uids": uids, "command": how}


def simple(command):
    def run(s, a):
        s.check(getattr(s.imap, command)(s.q(a.mailbox)), command.upper())
        return {command: a.mailbox}
    return run


def cmd_rename(s, a):
    s.check(s.imap.rename(s.q(a.old), s.q(a.new)), "RENAME")
    return {"rename": [a.old, a.new]}


def main(argv):
    p = argparse.ArgumentParser(prog="imap_snapshot.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--tunnel", help="shell command speaking IMAP on stdin/stdout")
    p.add_argument("--host")
    p.add_argument("--port")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--lab", metavar="DIR", help="take the connection from DIR/lab.env")
    p.add_argument("--strip-prefix", metavar="PREFIX|auto",
                   help='personal namespace prefix to hide, with "/" (e.g. INBOX/), or auto')
    sub = p.add_subparsers(dest="command")
    sub.add_parser("snapshot")
    sub.add_parser("content")
    ap = sub.add_parser("append")
    ap.add_argument("mailbox")
    ap.add_argument("file")
    ap.add_argument("--flags", help=r"space-separated, e.g. '\Seen $X'")
    ap.add_argument("--date", help='INTERNALDATE, e.g. "01-Jan-2024 10:00:00 +0100"')
    fp = sub.add_parser("flags")
    fp.add_argument("mailbox")
    fp.add_argument("message_id")
    g = fp.add_mutually_exclusive_group(required=True)
    g.add_argument("--add")
    g.add_argument("--remove")
    g.add_argument("--set")
    ep = sub.add_parser("expunge")
    ep.add_argument("mailbox")
    ep.add_argument("message_id")
    for name in ("create", "delete", "subscribe", "unsubscribe"):
        sub.add_parser(name).add_argument("mailbox")
    rp = sub.add_parser("rename")
    rp.add_argument("old")
    rp.add_argument("new")
    a = p.parse_args(argv)
    commands = {None: cmd_snapshot, "snapshot": cmd_snapshot, "content": cmd_content,
                "append": cmd_append,
                "flags": cmd_flags, "expunge": cmd_expunge, "create": simple("create"),
                "delete": simple("delete"), "subscribe": simple("subscribe"),
                "unsubscribe": simple("unsubscribe"), "rename": cmd_rename}
    try:
        s = Server(a)
        try:
            result = commands[a.command](s, a)
        finally:
            s.close()
    except (Failure, imaplib.IMAP4.error, OSError) as e:
        print(f"imap_snapshot.py: {e}", file=sys.stderr)
        return 1
    if isinstance(result, str):
        sys.stdout.write(result)
        return 0
    json.dump(result, sys.stdout, ensure_ascii=False, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
