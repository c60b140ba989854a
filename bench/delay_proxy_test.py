#!/usr/bin/env python3
"""Checks twinbox_delay_proxy (bench/delay_proxy.cc) against an echo server on loopback: a round
trip takes at least twice the one-way delay (and not absurdly more), bytes arrive intact and in
order, the counters count them, a half-close passes through, and closing stdin ends the proxy.

  delay_proxy_test.py PATH-TO-twinbox_delay_proxy
"""
import socket
import subprocess
import sys
import threading
import time

ONE_WAY_MS = 50


def main():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo():
        conn, _ = server.accept()
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.close()

    threading.Thread(target=echo, daemon=True).start()
    proxy = subprocess.Popen([sys.argv[1], "--target", str(server.getsockname()[1]),
                              "--one-way-ms", str(ONE_WAY_MS)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = proxy.stdout.readline().split()
    assert first[0] == "port", first
    client = socket.create_connection(("127.0.0.1", int(first[1])))
    sent = 0
    for size in (10, 300000):
        payload = bytes((i * 7 + size) % 251 for i in range(size))
        started = time.monotonic()
        client.sendall(payload)
        received = b""
        while len(received) < size:
            received += client.recv(1 << 20)
        elapsed_ms = (time.monotonic() - started) * 1000
        sent += size
        assert received == payload, f"{size} bytes came back altered"
        assert elapsed_ms >= 2 * ONE_WAY_MS - 1, f"round trip {elapsed_ms:.0f} ms: no delay"
        assert elapsed_ms < 20 * ONE_WAY_MS, f"round trip {elapsed_ms:.0f} ms: far too slow"
        print(f"{size} bytes: round trip {elapsed_ms:.0f} ms")
    client.shutdown(socket.SHUT_WR)
    assert client.recv(10) == b"", "the half-close did not pass through"
    proxy.stdin.write("?\n")
    proxy.stdin.flush()
    counters = proxy.stdout.readline().split()
    assert counters == ["bytes", str(sent), str(sent)], counters
    proxy.stdin.close()
    assert proxy.wait(timeout=5) == 0
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
