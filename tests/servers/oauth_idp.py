#!/usr/bin/env python3
"""An identity provider stand-in for the OAuth2 tests: an RFC 7662 token introspection endpoint
on loopback, for Dovecot's oauth2 passdb (tests/dovecot/lab --oauth2 URL).

Usage: oauth_idp.py TOKENS.json PORT_FILE

It listens on 127.0.0.1 on a free port, writes the URL of its endpoint
(http://127.0.0.1:PORT/introspect) to PORT_FILE once it accepts connections, and serves until
killed. TOKENS.json is read again at every request, so a test revokes or expires a token by
rewriting the file (atomically: write and rename):

  {"tokens": {"<token>": {"user": "twinbox", "expires": 1800000000, "revoked": false}}}

A POST with form field token=<token> gets {"active": true, "username": user, "exp": expires}
when the token is listed, not revoked and not past its expiry; otherwise {"active": false}, as
RFC 7662 §2.2 says for a token that is expired, revoked or unknown. Every request is appended to
TOKENS.json + ".log" as one JSON line with the token's SHA-256 prefix (never the token) and the
answer's "active", so a test can tell that Dovecot asked.
"""
import hashlib
import http.server
import json
import os
import sys
import time
import urllib.parse


def answer(tokens_path, token):
    try:
        with open(tokens_path, encoding="utf-8") as f:
            tokens = json.load(f).get("tokens", {})
    except (OSError, ValueError):
        tokens = {}
    entry = tokens.get(token)
    if not entry or entry.get("revoked") or entry.get("expires", 0) <= time.time():
        return {"active": False}
    return {"active": True, "username": entry["user"], "exp": entry["expires"]}


def main():
    tokens_path, port_file = sys.argv[1], sys.argv[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            token = form.get("token", [""])[0]
            body = answer(tokens_path, token)
            with open(tokens_path + ".log", "a", encoding="utf-8") as log:
                digest = hashlib.sha256(token.encode()).hexdigest()[:12]
                log.write(json.dumps({"token_sha256": digest, "active": body["active"]}) + "\n")
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass  # the request log above is enough, and it never holds a token

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = "http://127.0.0.1:%d/introspect" % server.server_address[1]
    tmp = port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(url + "\n")
    os.rename(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
