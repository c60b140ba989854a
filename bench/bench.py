#!/usr/bin/env python3
"""Side-by-side benchmark: twinbox against InterIMAP (and mbsync, OfflineIMAP) on the same corpus
and servers.

Everything runs on this machine: two throwaway Dovecot servers per run (tests/dovecot/lab), a
seeded corpus written once as a Maildir template and copied for every run, so that both tools
start from byte-identical data. For each network condition (loopback, and 20 ms RTT through a
delay proxy in front of the remote) and each tool, three scenarios are timed:

  initial   an empty local server is filled from the remote;
  noop      a second run with nothing to do;
  changes   a run after changes on both sides (1 % flag changes, new messages, expunges, a new
            mailbox), the same changes for both tools.

A third "tool", the servers' floor (bench/floor.cc), does only the IMAP work of the initial sync,
fully pipelined on the same number of connections, with no state: twinbox's distance to it is
what a client could still win.

Measured per run: wall time, CPU time (user + system of the tool's process, from wait4), peak
RSS, bytes each way on the remote connection (counted by the proxy both tools go through), and
the CPU both Dovecot servers spent on the run (their processes, from /proc): on 2 cores, half of
the servers' and the tool's CPU together is a bound no client can beat.
With --tools mbsync,twinbox-condstore,twinbox-plain: mbsync (isync), and twinbox against a
remote that shows only Gmail's capabilities (CONDSTORE, no QRESYNC) or Microsoft 365's (plain
IMAP), both with COMPRESS=DEFLATE, which mbsync 1.4 uses as twinbox does with compress = YES.
With --tools offlineimap: OfflineIMAP (offlineimap3), IMAP to IMAP like the others, against the
full Dovecot; its rows have no ratio (absolute numbers, and wall / floor).

After every scenario of every tool but the floor, a strict check compares the two servers: per
mailbox the multiset of (Message-ID, flags and keywords), the mailbox and subscription lists, and
headers a tool injected into the messages (mbsync's X-TUID, OfflineIMAP's X-OfflineIMAP). Its
verdict ("yes" or what differs) is the "strict" column; only the message counts per mailbox
decide the run's status, so a tool that loses keywords still has its timings reported.

Printed as a table with the ratios twinbox / InterIMAP (twinbox's tiers: / mbsync, including
bytes), and written to OUT/results.json,
OUT/results.md and, with gnuplot, OUT/wall.png (wall time against corpus size).

Only the Python standard library; see bench/README.md.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, asdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "tests", "dovecot", "lab")

SIZES = {
    # name: (mailboxes, messages)
    "tiny": (4, 200),
    "small": (20, 2000),
    "medium": (50, 20000),
    "large": (100, 100000),
}
# Corpora with one message of this many bytes in INBOX on top of the usual mix: peak memory
# must not grow with message size.
GIANT = {"giant": 50 << 20}
SIZES["giant"] = (4, 200)


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Throwaway Dovecot servers (tests/dovecot/lab)


class Lab:
    def __init__(self, path, separator="/", capability=""):
        self.path = path
        self.separator = separator
        self.capability = capability
        self.facts = {}

    def start(self):
        extra = ["--capability", self.capability] if self.capability else []
        out = subprocess.run([LAB, "start", self.path, "--separator", self.separator,
                              "--set", "mail_fsync=never", *extra],
                             check=True, capture_output=True, text=True).stdout
        self.facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return self

    def stop(self):
        subprocess.run([LAB, "stop", self.path], capture_output=True, text=True)

    def doveadm(self, *args, stdin=None):
        r = subprocess.run([LAB, "doveadm", self.path, *args], input=stdin,
                           capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode(errors="replace")

    @property
    def maildir(self):
        return os.path.join(self.path, "mail", self.facts["user"], "Maildir")

    def mail_owner(self):
        st = os.stat(os.path.join(self.path, "mail"))
        return st.st_uid, st.st_gid


def chown_tree(path, uid, gid):
    if os.geteuid() != 0:
        return
    for base, dirs, files in os.walk(path):
        os.chown(base, uid, gid)
        for name in files:
            os.chown(os.path.join(base, name), uid, gid)


# ---------------------------------------------------------------------------------------------
# The corpus: seeded, realistic mix, written straight into a Maildir++ tree.

WORDS = ("meeting report budget review draft invoice travel schedule project update quarterly "
         "design release notes feedback question answer lunch agenda minutes contract offer "
         "résumé café naïve Zürich Łódź").split()
MAILBOX_STEMS = ["Archive", "Projects", "Lists", "Clients", "Travel", "Réunions", "日本語", "Family",
                 "Receipts", "Old Stuff"]
FLAG_LETTERS = {"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R", "\\Draft": "D"}
KEYWORDS = ["$Label1", "$Todo", "Work", "$Forwarded"]


def mutf7(name):
    """IMAP modified UTF-7 (RFC 3501 §5.1.3), what Maildir++ stores on disk."""
    out, run = [], []

    def flush():
        if run:
            import base64
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mailbox_names(count, rng):
    names = ["INBOX", "Sent", "Drafts", "Trash"]
    i = 0
    while len(names) < count:
        stem = MAILBOX_STEMS[i % len(MAILBOX_STEMS)]
        depth = i // len(MAILBOX_STEMS)
        names.append(stem if depth == 0 else f"{stem}/{2000 + depth}")
        i += 1
    return names[:count]


def message_size(rng):
    """Median about 4 KiB, a long tail to several MiB (lognormal, capped)."""
    r = rng.random()
    if r < 0.002:
        return rng.randint(2 << 20, 6 << 20)
    if r < 0.03:
        return rng.randint(100 << 10, 1 << 20)
    return max(600, min(int(rng.lognormvariate(8.3, 0.8)), 90 << 10))


def render_message(rng, n, mailbox, size):
    subject_words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
    day = 1 + n % 28
    headers = [
        f"From: {rng.choice(['Ann', 'Bob', 'Chloé', 'Dévi', 'Eva'])} <sender{n % 97}@example.org>",
        "To: Twinbox Bench <bench@example.net>",
        f"Subject: {subject_words} #{n}",
        f"Date: {['Mon', 'Tue', 'Wed'][n % 3]}, {day:02d} Mar 2025 10:{n % 60:02d}:00 +0000",
        f"Message-ID: <bench.{n}@twinbox.bench>",
        "MIME-Version: 1.0",
    ]
    body_lines = []
    attachment = size > 64 << 10
    text_size = size if not attachment else 2000
    line = []
    total = 0
    while total < text_size:
        word = rng.choice(WORDS)
        line.append(word)
        total += len(word.encode()) + 1
        if len(line) >= 12:
            body_lines.append(" ".join(line))
            line = []
    if line:
        body_lines.append(" ".join(line))
    if not attachment:
        headers.append("Content-Type: text/plain; charset=utf-8")
        headers.append("Content-Transfer-Encoding: 8bit")
        body = "\r\n".join(body_lines)
    else:
        import base64
        blob = rng.randbytes(size * 3 // 4)
        encoded = base64.encodebytes(blob).decode().replace("\n", "\r\n")
        headers.append('Content-Type: multipart/mixed; boundary="b-{}"'.format(n))
        body = (f"--b-{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + "\r\n".join(body_lines)
                + f"\r\n--b-{n}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Disposition: attachment; filename=\"file{n}.bin\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--b-{n}--\r\n")
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


def random_flags(rng):
    flags = []
    if rng.random() < 0.7:
        flags.append("\\Seen")
    if rng.random() < 0.08:
        flags.append("\\Flagged")
    if rng.random() < 0.15:
        flags.append("\\Answered")
    if rng.random() < 0.1:
        flags.append(rng.choice(KEYWORDS))
    return flags


def maildir_folder(root, name):
    if name == "INBOX":
        return root
    return os.path.join(root, "." + mutf7(name).replace("/", "."))


def write_corpus(lab, mailboxes, messages, seed, giant=0):
    """Fills lab's Maildir, then lets Dovecot index it, expunges ~3 % (UID gaps), subscribes."""
    rng = random.Random(seed)
    names = mailbox_names(mailboxes, rng)
    # A skewed spread: INBOX and a few mailboxes hold most of the mail.
    weights = [8 if n == "INBOX" else rng.choice([1, 1, 2, 4]) for n in names]
    per_box = {n: [] for n in names}
    for i in range(messages):
        per_box[rng.choices(names, weights)[0]].append(i + 1)
    root = lab.maildir
    os.makedirs(root, exist_ok=True)
    start = 1735689600  # 2025-01-01
    for name in names:
        folder = maildir_folder(root, name)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        with open(os.path.join(folder, "dovecot-keywords"), "w") as f:
            for k, kw in enumerate(KEYWORDS):
                f.write(f"{k} {kw}\n")
        if name != "INBOX":
            open(os.path.join(folder, "maildirfolder"), "w").close()
        for n in per_box[name]:
            size = giant if giant and name == "INBOX" and n == per_box[name][0] else None
            data = render_message(rng, n, name, size or message_size(rng))
            flags = random_flags(rng)
            letters = "".join(sorted(FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS))
            letters += "".join(chr(ord("a") + KEYWORDS.index(f)) for f in flags if f in KEYWORDS)
            when = start + n * 37
            path = os.path.join(folder, "cur", f"{when}.M{n}P1.bench,S={len(data)}:2,{letters}")
            with open(path, "wb") as f:
                f.write(data)
            os.utime(path, (when, when))
    uid, gid = lab.mail_owner()
    chown_tree(os.path.join(lab.path, "mail"), uid, gid)
    lab.doveadm("force-resync", "*")
    # UID gaps: expunge about 3 % of each mailbox's messages.
    for name in names:
        count = len(per_box[name])
        gone = sorted(rng.sample(range(1, count + 1), count * 3 // 100)) if count > 30 else []
        if gone:
            lab.doveadm("expunge", "mailbox", name, "uid", ",".join(map(str, gone)))
    lab.doveadm("mailbox", "subscribe", *[n for n in names if n != "Trash"])
    return names


# ---------------------------------------------------------------------------------------------
# A TCP proxy in front of the remote: counts bytes each way and adds a one-way delay.


class Proxy:
    def __init__(self, target_port, one_way_delay_s):
        self.target_port = target_port
        self.delay = one_way_delay_s
        self.up = 0    # client -> server
        self.down = 0  # server -> client
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _pump(self, reader, writer, direction):
        # Each chunk leaves `delay` after it arrived, in order: a link with latency, not a
        # bandwidth limit.
        queue = asyncio.Queue()

        async def sender():
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, data = item
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass

        task = asyncio.ensure_future(sender())
        try:
            while True:
                data = await reader.read(262144)
                if not data:
                    break
                if direction == "up":
                    self.up += len(data)
                else:
                    self.down += len(data)
                await queue.put((self.loop.time() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        await queue.put(None)
        try:
            await task
        except (ConnectionError, OSError):
            pass

    async def _handle(self, client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        for w in (client_writer, server_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pump(client_reader, server_writer, "up"),
                             self._pump(server_reader, client_writer, "down"))
        for w in (client_writer, server_writer):
            try:
                w.close()
            except OSError:
                pass

    def counters(self):
        return self.up, self.down

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (index 0 is the state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """utime + stime of a running process, in seconds."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(lab):
    """CPU seconds a Dovecot server's processes used so far: its master's, its running
    children's, and what its exited children left in the master's cutime + cstime. Read once a
    tool has exited, it waits (up to 2 s) for the server's imap processes of that tool's
    connections to end, so that their time is in the master's count."""
    master = int(lab.facts["pid"])
    deadline = time.monotonic() + 2
    while True:
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = proc_stat(entry)
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.append((comm, fields))
        if not any(comm == "imap" for comm, _ in children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    fields = proc_stat(master)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    ticks += sum(int(f[11]) + int(f[12]) for _, f in children)
    return ticks / os.sysconf("SC_CLK_TCK")


class NativeProxy:
    """The same link as Proxy, by bench/delay_proxy.cc (twinbox_delay_proxy): cheap enough that
    its CPU, reported beside each run, does not compete with the tools on a 2-core machine."""

    def __init__(self, binary, target_port, one_way_delay_s):
        self.proc = subprocess.Popen(
            [binary, "--target", str(target_port), "--one-way-ms",
             str(round(one_way_delay_s * 1000))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().split()
        if len(first) != 2 or first[0] != "port":
            raise RuntimeError(f"{binary}: unexpected first line {first!r}")
        self.port = int(first[1])

    def counters(self):
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        words = self.proc.stdout.readline().split()
        return int(words[1]), int(words[2])

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


NATIVE_PROXY = None  # path of twinbox_delay_proxy, when built (main() sets it)


def make_proxy(target_port, one_way_delay_s):
    if NATIVE_PROXY and os.path.exists(NATIVE_PROXY):
        return NativeProxy(NATIVE_PROXY, target_port, one_way_delay_s)
    return Proxy(target_port, one_way_delay_s)


def proxy_cpu(proxy):
    """CPU seconds the proxy process used so far (None for the in-process Python proxy)."""
    return proxy.cpu_seconds() if isinstance(proxy, NativeProxy) else None


# ---------------------------------------------------------------------------------------------
# One tool run, measured.


@dataclass
class Measure:
    tool: str
    scenario: str
    rtt_ms: int
    size: str
    messages: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_kib: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    status: int = 0
    strict: str = ""  # "yes", or what differs between the servers after this scenario
    proxy_cpu_s: float = -1.0  # the delay proxy's CPU during the run (-1: the Python proxy)
    servers_cpu_s: float = 0.0  # both Dovecot servers' CPU during the run


def run_measured(argv, log_path, proxy, work, servers):
    """Wall time here; CPU and peak RSS from GNU time, whose child starts small. (A child forked
    by this Python process would carry Python's own RSS high-water mark through exec.)"""
    up0, down0 = proxy.counters()
    proxy_cpu0 = proxy_cpu(proxy)
    servers_cpu0 = sum(server_cpu_seconds(lab) for lab in servers)
    usage_file = os.path.join(work, "usage.txt")
    with open(log_path, "ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        t0 = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-o", usage_file, "-f", "%U %S %M", *argv],
                              stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        wall = time.monotonic() - t0
    with open(usage_file) as f:
        user, system, rss = f.read().split()[-3:]
    time.sleep(0.05)  # the proxy's last bytes
    up1, down1 = proxy.counters()
    proxy_cpu1 = proxy_cpu(proxy)
    proxy_used = round(proxy_cpu1 - proxy_cpu0, 3) if proxy_cpu0 is not None else -1.0
    servers_used = round(sum(server_cpu_seconds(lab) for lab in servers) - servers_cpu0, 3)
    return wall, float(user) + float(system), int(rss), up1 - up0, down1 - down0, \
        proc.returncode, proxy_used, servers_used


# The change-detection tiers: the remote Dovecot shows Gmail's capability set (CONDSTORE without
# QRESYNC) or Microsoft 365's (plain IMAP). Dovecot still has the extensions; the spy tests in
# tests/sync check that twinbox does not use them. COMPRESS=DEFLATE stays offered (Gmail has it)
# because mbsync, which they are compared with, uses it.
TIER_CAPABILITIES = {
    "twinbox-condstore": "IMAP4rev1 UNSELECT IDLE NAMESPACE ID CHILDREN UIDPLUS ENABLE MOVE "
                         "CONDSTORE ESEARCH LIST-EXTENDED LIST-STATUS SPECIAL-USE "
                         "COMPRESS=DEFLATE",
    "twinbox-plain": "IMAP4rev1 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+ "
                     "COMPRESS=DEFLATE",
}
# What each tool's ratios are against: InterIMAP for twinbox (QRESYNC, its ground); mbsync for
# the tiers without QRESYNC, where InterIMAP cannot run at all.
REFERENCE = {"twinbox": "interimap", "twinbox-condstore": "mbsync", "twinbox-plain": "mbsync"}


def write_mbsync_config(path, state_dir, local, remote_port, remote_user, remote_password):
    """mbsync (isync 1.4) between the same two servers: every mailbox, both ways, expunges and
    creations propagated, INTERNALDATE kept; its state in a directory of its own. (It compresses
    when the server offers COMPRESS=DEFLATE, and adds an X-TUID header to what it copies.)"""
    os.makedirs(state_dir, exist_ok=True)
    stores = []
    for name, port, user, password in (
            ("local", local.facts["port"], local.facts["user"], local.facts["password"]),
            ("remote", remote_port, remote_user, remote_password)):
        stores.append(f"IMAPAccount {name}\nHost 127.0.0.1\nPort {port}\nUser {user}\n"
                      f"Pass {password}\nSSLType None\nAuthMechs LOGIN\n\n"
                      f"IMAPStore {name}\nAccount {name}\n\n")
    text = "".join(stores) + (
        "Channel bench\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
        "Expunge Both\nRemove None\nCopyArrivalDate yes\nSync All\n"
        f"SyncState {state_dir}/\n")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)


def write_offlineimap_config(path, state_dir, local, remote_port, remote_user, remote_password):
    """OfflineIMAP (offlineimap3 8.0) between the same two servers: its local repository can be
    an IMAP server too, so both are `type = IMAP` over TCP, as for the other tools. Every folder,
    both ways, folders created and deletions propagated (expunged) on both sides; its metadata
    in a directory of its own. (Where a server lacks UIDPLUS it adds an X-OfflineIMAP header to
    what it copies, to find the new UID again.)
    Uncompressed, its default, unlike the other tools: with `usecompression = yes` it hangs for
    good in the tiny corpus's initial sync. Its imaplib2 (3.05) inflates at most 32 KiB per read
    and then waits for the socket to be readable again, while the rest of the message sits in
    the inflater; so its bytes on the wire are not comparable with the others'."""
    os.makedirs(state_dir, exist_ok=True)
    repositories = []
    for name, port, user, password in (
            ("local", local.facts["port"], local.facts["user"], local.facts["password"]),
            ("remote", remote_port, remote_user, remote_password)):
        # ConfigParser interpolation: a literal % is written %%.
        repositories.append(
            f"[Repository {name}]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {port}\n"
            f"remoteuser = {user}\nremotepass = {str(password).replace('%', '%%')}\n"
            "ssl = no\nstarttls = no\nauth_mechanisms = PLAIN, LOGIN\ncreatefolders = True\n"
            "expunge = yes\nsync_deletes = yes\n\n")
    text = (f"[general]\naccounts = bench\nmetadata = {state_dir}\nui = quiet\n\n"
            "[Account bench]\nlocalrepository = local\nremoterepository = remote\n\n"
            + "".join(repositories))
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)


def write_config(path, tool, database, local, remote_port, remote_user, remote_password):
    # The same InterIMAP-format file for both tools; both servers over TCP so that each tool's
    # CPU time and RSS are its own (a tunnel's server process would be its child).
    text = (f"database = {database}\n\n"
            f"[local]\ntype = imap\nhost = 127.0.0.1\nport = {local.facts['port']}\n"
            f"STARTTLS = NO\nusername = {local.facts['user']}\n"
            f"password = {local.facts['password']}\n\n"
            f"[remote]\ntype = imap\nhost = 127.0.0.1\nport = {remote_port}\nSTARTTLS = NO\n"
            f"username = {remote_user}\npassword = {remote_password}\ncompress = YES\n")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)


def apply_changes(local, remote, names, seed, messages):
    """The 'changes' scenario, identical for both tools: chosen by UID on each side (both tools
    copy in UID order, and the remote is a copy of one template)."""
    rng = random.Random(seed + 1)

    def uids(lab, name):
        out = lab.doveadm("-f", "flow", "fetch", "uid", "mailbox", name, "all")
        return [int(line.split("=", 1)[1]) for line in out.splitlines() if line.startswith("uid=")]

    changed = 0
    for name in names:
        for lab, flag, op in ((remote, "\\Flagged", "add"), (local, "\\Seen", "remove")):
            present = uids(lab, name)
            picked = [u for u in present if rng.random() < 0.01]
            if picked:
                lab.doveadm("flags", op, flag, "mailbox", name, "uid", ",".join(map(str, picked)))
                changed += len(picked)
            gone = [u for u in present if rng.random() < 0.005 and u not in picked]
            if gone:
                lab.doveadm("expunge", "mailbox", name, "uid", ",".join(map(str, gone)))
    new = max(5, messages // 100)
    for i in range(new):
        lab = remote if i % 2 == 0 else local
        name = rng.choice(names)
        data = render_message(rng, 10_000_000 + i, name, message_size(rng))
        lab.doveadm("save", "-m", name, stdin=data)
    remote.doveadm("mailbox", "create", "-s", "Bench New")
    for i in range(20):
        remote.doveadm("save", "-m", "Bench New", stdin=render_message(rng, 20_000_000 + i,
                                                                         "Bench New", 3000))


def fresh_remote(work, template, name, capability=""):
    lab = Lab(os.path.join(work, name), capability=capability).start()
    lab.stop()
    shutil.rmtree(lab.maildir, ignore_errors=True)
    shutil.copytree(template.maildir, lab.maildir, symlinks=True)
    uid, gid = lab.mail_owner()
    chown_tree(os.path.join(lab.path, "mail"), uid, gid)
    return lab.start()


def run_tool(tool, binary, work, template, names, size, messages, rtt_ms, seed, out_dir):
    tag = f"{tool}-{size}-rtt{rtt_ms}"
    log(f"{tag}: servers")
    remote = fresh_remote(work, template, f"{tag}-remote", TIER_CAPABILITIES.get(tool, ""))
    local = Lab(os.path.join(work, f"{tag}-local")).start()
    proxy = make_proxy(int(remote.facts["port"]), rtt_ms / 2000.0)
    results = []
    try:
        config = os.path.join(work, f"{tag}.conf")
        if tool == "mbsync":
            write_mbsync_config(config, os.path.join(work, f"{tag}-state"), local, proxy.port,
                                remote.facts["user"], remote.facts["password"])
            argv = [binary, "-q", "-c", config, "bench"]
        elif tool == "offlineimap":
            write_offlineimap_config(config, os.path.join(work, f"{tag}-state"), local,
                                     proxy.port, remote.facts["user"], remote.facts["password"])
            argv = [binary, "-o", "-u", "quiet", "-c", config]
        else:
            write_config(config, tool, os.path.join(work, f"{tag}.db"), local, proxy.port,
                         remote.facts["user"], remote.facts["password"])
            argv = [binary, f"--config={config}"]
        if tool == "interimap":
            argv.insert(1, "--quiet")
        log_path = os.path.join(out_dir, f"{tag}.log")
        # The floor only does an initial sync's IMAP work: no state, so no resync to time.
        scenarios = ("initial",) if tool == "floor" else ("initial", "noop", "changes")
        for scenario in scenarios:
            if scenario == "changes":
                apply_changes(local, remote, names, seed, messages)
            wall, cpu, rss, up, down, status, proxy_used, servers_used = run_measured(
                argv, log_path, proxy, work, (local, remote))
            # Outside the timed run; the floor keeps no state and is no sync, so it is not checked.
            strict = "n/a" if tool == "floor" else strict_check(local, remote)
            m = Measure(tool, scenario, rtt_ms, size, messages, round(wall, 3), round(cpu, 3),
                        rss, up, down, status, strict, proxy_used, servers_used)
            log(f"{tag}: {scenario}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss // 1024} MiB, "
                f"{up} B up, {down} B down, status {status}, strict: {strict}")
            results.append(m)
            if status != 0:
                log(f"{tag}: {scenario} failed (status {status}); see {log_path}")
                break
        # Independent check: the two servers hold the same number of messages per mailbox.
        results_ok = tool == "floor" or converged(local, remote)
        if not results_ok:
            log(f"{tag}: WARNING: the servers did not converge")
            for m in results:
                m.status = m.status or 99
    finally:
        proxy.close()
        local.stop()
        remote.stop()
    return results


def converged(local, remote):
    def counts(lab):
        out = lab.doveadm("-f", "flow", "mailbox", "status", "messages", "*")
        return sorted(line.replace("Bench New", "Bench New") for line in out.splitlines())
    a, b = counts(local), counts(remote)
    if a != b:
        log(f"local:  {a[:10]}")
        log(f"remote: {b[:10]}")
    return a == b


def server_state(lab):
    """What the strict check compares on one server: {mailbox: {Message-ID: [flag tuples]}}, the
    mailbox list, the subscription list, and how many messages carry each injected header.
    Names are given with "/" as the separator, whatever the lab's, so that two labs compare.
    \\Recent is dropped: it is per session, not synced state. One fetch of every mailbox, in
    doveadm's JSON (flow output has no quoting)."""
    def name(mailbox):
        return mailbox if lab.separator == "/" else mailbox.replace(lab.separator, "/")

    rows = json.loads(lab.doveadm("-f", "json", "fetch",
                                  "mailbox hdr.message-id hdr.x-tuid hdr.x-offlineimap flags",
                                  "all") or "[]")
    boxes, injected = {}, {"X-TUID": 0, "X-OfflineIMAP": 0}
    for row in rows:
        flags = tuple(sorted(set(row.get("flags", "").split()) - {"\\Recent"}))
        message_id = row.get("hdr.message-id", "").strip()
        boxes.setdefault(name(row["mailbox"]), {}).setdefault(message_id, []).append(flags)
        for header in injected:
            if row.get("hdr." + header.lower(), "").strip():
                injected[header] += 1
    for ids in boxes.values():
        for flag_sets in ids.values():
            flag_sets.sort()

    def names(*args):
        return {name(n) for n in lab.doveadm("mailbox", "list", *args).splitlines() if n}

    return boxes, names(), names("-s"), injected


def strict_check(local, remote):
    """Beyond equal message counts: are the two servers the same mailbox store? Returns "yes",
    or a short list of what differs (messages only on one side or duplicated, flags or keywords
    that differ, mailbox or subscription lists, injected headers), so that a table row says what
    a tool does not carry, not only how fast it is."""
    try:
        (a_boxes, a_names, a_subs, a_inj), (b_boxes, b_names, b_subs, b_inj) = \
            server_state(local), server_state(remote)
    except (RuntimeError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return "check failed: " + first[:80]
    reasons = []
    if a_names != b_names:
        only = sorted(a_names ^ b_names)
        more = ", ..." if len(only) > 3 else ""
        reasons.append(f"mailboxes differ ({', '.join(only[:3])}{more})")
    unpaired = flags_differ = keywords_differ = lost_local = lost_remote = 0
    for box in a_boxes.keys() | b_boxes.keys():
        a, b = a_boxes.get(box, {}), b_boxes.get(box, {})
        for message_id in a.keys() | b.keys():
            fa, fb = a.get(message_id, []), b.get(message_id, [])
            if len(fa) != len(fb):
                unpaired += abs(len(fa) - len(fb))
                continue
            for x, y in zip(fa, fb):
                if x == y:
                    continue
                keywords_x = {f for f in x if not f.startswith("\\")}
                keywords_y = {f for f in y if not f.startswith("\\")}
                if set(x) - keywords_x != set(y) - keywords_y:
                    flags_differ += 1
                elif keywords_x < keywords_y:
                    lost_local += 1
                elif keywords_y < keywords_x:
                    lost_remote += 1
                else:
                    keywords_differ += 1
    if unpaired:
        reasons.append(f"{unpaired} messages missing or duplicated on one side")
    if flags_differ:
        reasons.append(f"flags differ in {flags_differ} messages")
    if lost_local or lost_remote:
        reasons.append(f"keywords lost in {lost_local} local, {lost_remote} remote messages")
    if keywords_differ:
        reasons.append(f"keywords differ in {keywords_differ} messages")
    if a_subs != b_subs:
        reasons.append(f"subscriptions differ ({len(a_subs)} local, {len(b_subs)} remote)")
    for header in a_inj:
        if a_inj[header] or b_inj[header]:
            reasons.append(f"{header} header injected in {a_inj[header]} local, "
                           f"{b_inj[header]} remote messages")
    return "; ".join(reasons) or "yes"


# ---------------------------------------------------------------------------------------------


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def report(results, out_dir, machine):
    lines = [f"Benchmark run {time.strftime('%Y-%m-%d %H:%M %Z')} on {machine}", "",
             "| corpus | RTT | scenario | tool | wall s | CPU s | peak RSS MiB | bytes up | "
             "bytes down | wall ratio | CPU ratio | bytes ratio | wall / floor | strict | "
             "proxy CPU s | servers' CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keyed = {(m.size, m.rtt_ms, m.scenario, m.tool): m for m in results}
    for m in results:
        ref = keyed.get((m.size, m.rtt_ms, m.scenario, REFERENCE.get(m.tool, "")))
        floor = keyed.get((m.size, m.rtt_ms, m.scenario, "floor"))
        wall_ratio = f"{ratio(m.wall_s, ref.wall_s)} vs {ref.tool}" if ref else ""
        cpu_ratio = ratio(m.cpu_s, ref.cpu_s) if ref else ""
        bytes_ratio = ratio(m.bytes_up + m.bytes_down, ref.bytes_up + ref.bytes_down) if ref else ""
        over_floor = ratio(m.wall_s, floor.wall_s) if floor and m.tool != "floor" else ""
        failed = "" if m.status == 0 else f" (FAILED {m.status})"
        proxy_col = f"{m.proxy_cpu_s:.2f}" if m.proxy_cpu_s >= 0 else "(Python proxy)"
        lines.append(f"| {m.size} ({m.messages}) | {m.rtt_ms} ms | {m.scenario} | {m.tool}{failed} "
                     f"| {m.wall_s:.2f} | {m.cpu_s:.2f} | {m.peak_rss_kib / 1024:.1f} | "
                     f"{m.bytes_up} | {m.bytes_down} | {wall_ratio} | {cpu_ratio} | "
                     f"{bytes_ratio} | {over_floor} | {m.strict} | {proxy_col} | "
                     f"{m.servers_cpu_s:.2f} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump([asdict(m) for m in results], f, indent=1)
    print(text)


def plot(results, out_dir):
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no plot")
        return
    data = os.path.join(out_dir, "wall.dat")
    series = {}
    for m in results:
        if m.scenario == "initial" and m.status == 0 and m.size not in GIANT:
            series.setdefault((m.tool, m.rtt_ms), []).append((m.messages, m.wall_s))
    if not series:
        return
    with open(data, "w") as f:
        for (tool, rtt), points in sorted(series.items()):
            f.write(f'"{tool}, {rtt} ms RTT"\n')
            for x, y in sorted(points):
                f.write(f"{x} {y}\n")
            f.write("\n\n")
    plots = ", ".join(f"'{data}' index {i} with linespoints title columnheader(1)"
                      for i in range(len(series)))
    script = (f"set terminal png size 900,560\nset output '{out_dir}/wall.png'\n"
              "set title 'Initial sync: wall time against corpus size'\n"
              "set xlabel 'messages'\nset ylabel 'wall time (s)'\nset logscale xy\n"
              "set key top left\nset grid\n"
              f"plot {plots}\n")
    subprocess.run(["gnuplot"], input=script, text=True, check=False)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small",
                   help="comma-separated corpus sizes: " + ", ".join(
                       f"{k} ({v[0]} mailboxes, {v[1]} messages)" for k, v in SIZES.items()))
    p.add_argument("--rtt", default="0,20", help="round-trip times in ms (default 0,20)")
    p.add_argument("--tools", default="interimap,twinbox,floor",
                   help="interimap, twinbox, floor (the servers' floor: bench/floor.cc), "
                        "mbsync, and twinbox-condstore / twinbox-plain (the remote without "
                        "QRESYNC / without CONDSTORE, compared with mbsync), offlineimap "
                        "(OfflineIMAP, IMAP to IMAP; absolute numbers, no ratio)")
    p.add_argument("--twinbox", default=os.path.join(ROOT, "build", "release", "src", "cli",
                                                      "twinbox"))
    p.add_argument("--interimap", default=shutil.which("interimap") or "/usr/bin/interimap")
    p.add_argument("--mbsync", default=shutil.which("mbsync") or "/usr/bin/mbsync")
    p.add_argument("--offlineimap",
                   default=shutil.which("offlineimap") or "/usr/bin/offlineimap")
    p.add_argument("--floor", default=os.path.join(ROOT, "build", "release", "bench",
                                                    "twinbox_floor"))
    p.add_argument("--proxy", default=os.path.join(ROOT, "build", "release", "bench",
                                                    "twinbox_delay_proxy"),
                   help="the delay proxy (bench/delay_proxy.cc); the Python one if missing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    p.add_argument("--keep", action="store_true", help="keep the servers' directories")
    args = p.parse_args()
    global NATIVE_PROXY
    NATIVE_PROXY = args.proxy

    # One command from a fresh clone: the release build is made here when it is missing.
    tools = args.tools.split(",")
    wanted = [b for t, b in (("twinbox", args.twinbox), ("floor", args.floor))
              if any(x.startswith(t) for x in tools) and not os.path.exists(b)]
    if not os.path.exists(args.proxy) and args.proxy.startswith(ROOT):
        wanted.append(args.proxy)
    if wanted:
        log("building the release preset (cmake --preset release) for " + ", ".join(wanted))
        subprocess.run(["cmake", "--preset", "release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "--preset", "release", "--target", "twinbox",
                        "twinbox_floor", "twinbox_delay_proxy"], cwd=ROOT, check=True)

    os.makedirs(args.out, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}"
    work = tempfile.mkdtemp(prefix="twinbox-bench.", dir="/tmp")
    os.chmod(work, 0o755)
    results = []
    try:
        for size in args.sizes.split(","):
            mailboxes, messages = SIZES[size]
            log(f"corpus {size}: {mailboxes} mailboxes, {messages} messages (seed {args.seed})")
            template = Lab(os.path.join(work, f"template-{size}")).start()
            names = write_corpus(template, mailboxes, messages, args.seed, GIANT.get(size, 0))
            template.stop()
            for rtt in (int(x) for x in args.rtt.split(",")):
                for tool in args.tools.split(","):
                    binary = {"interimap": args.interimap, "floor": args.floor,
                              "mbsync": args.mbsync,
                              "offlineimap": args.offlineimap}.get(tool, args.twinbox)
                    results += run_tool(tool, binary, work, template, names, size, messages,
                                        rtt, args.seed, args.out)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, args.out, machine)
    plot(results, args.out)
    failed = [m for m in results if m.status != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
