#!/usr/bin/env python3
"""Live benchmark: twinbox against InterIMAP, each left running under traffic.

InterIMAP's published benchmark measures what a long-running sync costs while mail keeps
arriving. This one does the same side by side on this machine: for each tool and each mode
(--watch=SECONDS, and --notify), two throwaway Dovecot servers get the same seeded corpus, the
tool syncs them once, is started in that mode, and for DURATION seconds a traffic generator
makes a change every PERIOD seconds (the same seeded sequence for every tool) and times how
long each takes to show on the other server:

  deliver   a new message on the remote (doveadm save), looked for on the local;
  flag      \\Flagged set or cleared on a local message, looked for on the remote;
  move      a local message moved to another mailbox, looked for there on the remote.

In --watch mode the changes are in INBOX (and moves out of it): that is the mailbox both tools
can wait on between full cycles (twinbox with IDLE; InterIMAP only polls, every SECONDS). In
--notify mode they are spread over every mailbox.

Measured per tool and mode: the delay from a change to its appearance on the other server
(p50, p99, max; each change in flight is polled with doveadm every 50 ms, so the resolution is
50 ms plus about 40 ms of doveadm per change in flight, plus doveadm's own
start-up), the tool's CPU seconds over the traffic window (/proc/PID/stat, so the initial sync
is not counted), and the bytes each way on both connections (counted by proxies in front of both
servers). The report gives twinbox / InterIMAP ratios and checks the targets: p50 <= 1 s with
NOTIFY or IDLE, CPU <= 0.3x InterIMAP, bytes <= 1.0x.

Only the Python standard library and bench.py's servers, corpus and proxy. LIVE_DEBUG=1 runs
the tools with --debug (twinbox) so that their logs in OUT/live-TOOL-MODE.log show the exchange.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402

POLL_S = 0.05


def log(*args):
    print("live:", *args, file=sys.stderr, flush=True)


def write_config(path, database, local_port, remote_port, local, remote):
    text = (f"database = {database}\n\n"
            f"[local]\ntype = imap\nhost = 127.0.0.1\nport = {local_port}\nSTARTTLS = NO\n"
            f"username = {local.facts['user']}\npassword = {local.facts['password']}\n\n"
            f"[remote]\ntype = imap\nhost = 127.0.0.1\nport = {remote_port}\nSTARTTLS = NO\n"
            f"username = {remote.facts['user']}\npassword = {remote.facts['password']}\n"
            f"compress = YES\n")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)


def message_ids(lab, mailbox):
    out = lab.doveadm("-f", "flow", "fetch", "hdr.message-id", "mailbox", mailbox, "all")
    ids = []
    for line in out.splitlines():
        if "=" in line:
            value = line.split("=", 1)[1].strip().strip("<>")
            if value:
                ids.append(value)
    return ids


def found(lab, mailbox, message_id, *extra):
    try:
        out = lab.doveadm("search", "mailbox", mailbox, "header", "message-id", message_id, *extra)
    except RuntimeError:
        return False  # the mailbox is not there (yet)
    return bool(out.strip())


def wait_until(predicate, timeout_s):
    """Seconds until predicate() held, or None after timeout_s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(POLL_S)
    return None


class Traffic:
    """The same changes for every tool: one every PERIOD seconds, chosen by a seeded generator
    (open loop: the next change does not wait for the previous one to arrive, so a slow tool
    faces the same traffic as a fast one). Each change returns the check that tells when the
    other server shows it; a message with a change in flight is not picked again."""

    def __init__(self, local, remote, names, mode, seed):
        self.local, self.remote = local, remote
        self.rng = random.Random(seed)
        self.mode = mode
        self.names = ["INBOX"] if mode == "watch" else names
        # Local messages the generator may flag or move: Message-ID -> [mailbox, flagged].
        self.known = {}
        for name in self.names:
            for mid in message_ids(local, name):
                self.known[mid] = [name, False]
        self.move_targets = [n for n in names if n != "INBOX"]
        self.busy = set()
        self.count = 0

    def one(self):
        """Makes one change; returns (kind, Message-ID, check)."""
        kind = self.rng.choice(["deliver"] * 5 + ["flag"] * 3 + ["move"] * 2)
        candidates = sorted(m for m, v in self.known.items()
                            if v[0] in self.names and m not in self.busy)
        if not candidates:
            kind = "deliver"
        self.count += 1
        if kind == "deliver":
            mailbox = self.rng.choice(self.names)
            mid = f"live-{self.count}-{self.rng.getrandbits(32):08x}@bench.invalid"
            data = (f"From: live@bench.invalid\r\nTo: you@bench.invalid\r\nSubject: live "
                    f"{self.count}\r\nMessage-ID: <{mid}>\r\n"
                    f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\n"
                    + "Live traffic.\r\n" * self.rng.randint(5, 200)).encode()
            self.remote.doveadm("save", "-m", mailbox, stdin=data)
            self.known[mid] = [mailbox, False]
            return kind, mid, lambda: found(self.local, mailbox, mid)
        mid = self.rng.choice(candidates)
        mailbox, flagged = self.known[mid]
        if kind == "flag":
            op = "remove" if flagged else "add"
            self.local.doveadm("flags", op, "\\Flagged", "mailbox", mailbox, "header",
                               "message-id", mid)
            self.known[mid][1] = not flagged
            want = "UNFLAGGED" if flagged else "FLAGGED"
            return kind, mid, lambda: found(self.remote, mailbox, mid, want)
        target = self.rng.choice([n for n in self.move_targets if n != mailbox])
        self.local.doveadm("move", target, "mailbox", mailbox, "header", "message-id", mid)
        if target in self.names:
            self.known[mid][0] = target
        else:
            del self.known[mid]
        return kind, mid, lambda: found(self.remote, target, mid)


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def run_one(tool, binary, mode, args, work, template, names):
    tag = f"{tool}-{mode}"
    log(f"{tag}: servers")
    remote = b.fresh_remote(work, template, f"{tag}-remote")
    local = b.Lab(os.path.join(work, f"{tag}-local")).start()
    proxies = {"local": b.make_proxy(int(local.facts["port"]), args.rtt / 2000.0),
               "remote": b.make_proxy(int(remote.facts["port"]), args.rtt / 2000.0)}
    config = os.path.join(work, f"{tag}.conf")
    write_config(config, os.path.join(work, f"{tag}.db"), proxies["local"].port,
                 proxies["remote"].port, local, remote)
    log_path = os.path.join(args.out, f"live-{tag}.log")
    result = {"tool": tool, "mode": mode, "rtt_ms": args.rtt, "duration_s": args.duration,
              "watch_s": args.watch if mode == "watch" else None}
    proc = None
    try:
        with open(log_path, "wb") as out:
            first = subprocess.run([binary, f"--config={config}"], stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL, timeout=600)
        if first.returncode != 0:
            result["error"] = f"the initial sync failed (status {first.returncode})"
            return result
        watch_args = [f"--watch={args.watch}"] if mode == "watch" else ["--notify"]
        if os.environ.get("LIVE_DEBUG") and tool == "twinbox":
            watch_args.append("--debug")
        out = open(log_path, "ab")
        proc = subprocess.Popen([binary, f"--config={config}", *watch_args], stdout=out,
                                stderr=out, stdin=subprocess.DEVNULL)
        time.sleep(3)  # connected, first cycle done, waiting
        if proc.poll() is not None:
            result["error"] = f"{mode} mode exited at once (status {proc.returncode})"
            return result
        traffic = Traffic(local, remote, names, mode, args.seed)
        counters0 = {k: p.counters() for k, p in proxies.items()}
        cpu0 = b.cpu_seconds(proc.pid)
        proxy_cpu0 = [b.proxy_cpu(p) for p in proxies.values()]
        t_start = time.monotonic()
        t_end = t_start + args.duration
        timeout_s = (2 * args.watch + 10) if mode == "watch" else 30
        delays, missed, pending = {}, {}, []
        next_change = t_start
        while proc.poll() is None and (time.monotonic() < t_end or pending):
            now = time.monotonic()
            if now < t_end and now >= next_change:
                kind, mid, check = traffic.one()
                traffic.busy.add(mid)
                pending.append((time.monotonic(), kind, mid, check))
                next_change += args.period
            still = []
            for t0, kind, mid, check in pending:
                if check():
                    delays.setdefault(kind, []).append(time.monotonic() - t0)
                    traffic.busy.discard(mid)
                elif time.monotonic() - t0 > timeout_s:
                    missed[kind] = missed.get(kind, 0) + 1
                    traffic.busy.discard(mid)
                else:
                    still.append((t0, kind, mid, check))
            pending = still
            time.sleep(POLL_S)
        cpu1 = b.cpu_seconds(proc.pid) if proc.poll() is None else None
        time.sleep(0.2)
        counters1 = {k: p.counters() for k, p in proxies.items()}
        proxy_cpu1 = [b.proxy_cpu(p) for p in proxies.values()]
        if None not in proxy_cpu0:
            result["proxy_cpu_s"] = round(sum(proxy_cpu1) - sum(proxy_cpu0), 3)
        if proc.poll() is not None:
            result["error"] = f"exited during the traffic (status {proc.returncode})"
        everything = [d for v in delays.values() for d in v]
        result.update({
            "events": traffic.count,
            "missed": missed,
            "cpu_s": round(cpu1 - cpu0, 3) if cpu1 is not None else None,
            "bytes_up": sum(counters1[k][0] - counters0[k][0] for k in proxies),
            "bytes_down": sum(counters1[k][1] - counters0[k][1] for k in proxies),
            "delay_p50_s": percentile(everything, 50),
            "delay_p99_s": percentile(everything, 99),
            "delay_max_s": max(everything) if everything else None,
            "by_kind": {k: {"n": len(v), "p50_s": percentile(v, 50), "max_s": max(v)}
                        for k, v in sorted(delays.items())},
        })
        result["converged"] = b.converged(local, remote)
        return result
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for p in proxies.values():
            p.close()
        for lab in (local, remote):
            lab.stop()


def fmt_s(v):
    return "n/a" if v is None else f"{v:.2f}"


def ratio(a, b_):
    return None if a is None or not b_ else a / b_


def report(results, out_dir, args):
    lines = [f"Live benchmark {time.strftime('%Y-%m-%d %H:%M %Z')} on {os.cpu_count()} cores, "
             f"{args.duration} s of traffic per run (a change every {args.period:g} s), watch "
             f"interval {args.watch} s, "
             f"RTT {args.rtt} ms, corpus {args.mailboxes} mailboxes / {args.messages} messages", "",
             "| tool | mode | events | missed | delay p50 s | p99 s | max s | CPU s | bytes up | "
             "bytes down | CPU ratio | bytes ratio | proxies' CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keyed = {(r["tool"], r["mode"]): r for r in results}
    verdicts = []
    for r in results:
        if "events" not in r:
            lines.append(f"| {r['tool']} | {r['mode']} | FAILED: {r.get('error')} ||||||||||||")
            continue
        ref = keyed.get(("interimap", r["mode"])) if r["tool"] == "twinbox" else None
        cpu_r = ratio(r["cpu_s"], ref.get("cpu_s")) if ref and "events" in ref else None
        bytes_r = (ratio(r["bytes_up"] + r["bytes_down"], ref["bytes_up"] + ref["bytes_down"])
                   if ref and "events" in ref else None)
        missed = sum(r["missed"].values())
        lines.append(f"| {r['tool']}{' (FAILED: ' + r['error'] + ')' if r.get('error') else ''} "
                     f"| {r['mode']} | {r['events']} | {missed} | {fmt_s(r['delay_p50_s'])} | "
                     f"{fmt_s(r['delay_p99_s'])} | {fmt_s(r['delay_max_s'])} | "
                     f"{fmt_s(r['cpu_s'])} | {r['bytes_up']} | {r['bytes_down']} | "
                     f"{fmt_s(cpu_r) if cpu_r is not None else ''} | "
                     f"{fmt_s(bytes_r) if bytes_r is not None else ''} | "
                     f"{fmt_s(r['proxy_cpu_s']) if 'proxy_cpu_s' in r else '(Python)'} |")
        if r["tool"] == "twinbox":
            p50 = r["delay_p50_s"]
            verdicts.append(f"- {r['mode']}: p50 {fmt_s(p50)} s "
                            f"({'meets' if p50 is not None and p50 <= 1 else 'misses'} <= 1 s)"
                            + (f"; CPU {cpu_r:.2f}x ({'meets' if cpu_r <= 0.3 else 'misses'} "
                               f"<= 0.3x)" if cpu_r is not None else "")
                            + (f"; bytes {bytes_r:.2f}x ({'meets' if bytes_r <= 1 else 'misses'} "
                               f"<= 1.0x)" if bytes_r is not None else "")
                            + ("" if r.get("converged") else "; servers NOT converged"))
    text = "\n".join(lines) + "\n\nTargets (twinbox):\n" + "\n".join(verdicts) + "\n"
    with open(os.path.join(out_dir, "live.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "live.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=120, help="seconds of traffic per run")
    p.add_argument("--modes", default="watch,notify")
    p.add_argument("--tools", default="interimap,twinbox")
    p.add_argument("--watch", type=int, default=60, help="--watch=SECONDS for both tools")
    p.add_argument("--period", type=float, default=2.0, help="seconds between two changes")
    p.add_argument("--rtt", type=int, default=0, help="round-trip time in ms on both links")
    p.add_argument("--mailboxes", type=int, default=8)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--proxy", default=os.path.join(b.ROOT, "build", "release", "bench",
                                                    "twinbox_delay_proxy"),
                   help="the delay proxy (bench/delay_proxy.cc); the Python one if missing")
    p.add_argument("--twinbox", default=os.path.join(b.ROOT, "build", "release", "src", "cli",
                                                      "twinbox"))
    p.add_argument("--interimap", default=shutil.which("interimap") or "/usr/bin/interimap")
    p.add_argument("--out", default=os.path.join(b.ROOT, "build", "bench"))
    args = p.parse_args()
    b.NATIVE_PROXY = args.proxy
    if "twinbox" in args.tools and not os.path.exists(args.twinbox):
        log("building the release preset for twinbox")
        subprocess.run(["cmake", "--preset", "release"], cwd=b.ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "--preset", "release", "--target", "twinbox"],
                       cwd=b.ROOT, check=True)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="twinbox-live.", dir="/tmp")
    os.chmod(work, 0o755)
    results = []
    try:
        template = b.Lab(os.path.join(work, "template")).start()
        names = b.write_corpus(template, args.mailboxes, args.messages, args.seed)
        template.stop()
        for mode in args.modes.split(","):
            for tool in args.tools.split(","):
                binary = args.interimap if tool == "interimap" else args.twinbox
                results.append(run_one(tool, binary, mode, args, work, template, names))
                log(json.dumps(results[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.out, args)
    # A tool that could not run fails the benchmark; so does a twinbox change that never arrived
    # (within 30 s, or two watch intervals) or servers left apart. The reference's are reported.
    bad = [r for r in results if r.get("error") or (
        r["tool"] == "twinbox" and (not r.get("converged") or r.get("missed")))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
