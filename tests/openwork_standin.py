"""A stand-in for ``openwork-server web`` (the real one cannot be installed on these machines).

It checks what it is given the way the real one would use it, reports exactly what it received
(argv, the OPENWORK_* environment, cwd) to ``$OPENWORK_STANDIN_REPORT`` for the test to compare,
and serves ``/health`` plus a page naming the workspace. Any wrong or missing argument, or
credentials that our OpenCode server refuses, makes it exit 2 with a message (as a real failure
would), so the launcher's error path is exercised too.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import sys
import urllib.request
from typing import Any

ENV_KEYS = (
    "OPENWORK_OPENCODE_PASSWORD",
    "OPENWORK_TOKEN",
    "OPENWORK_HOST_TOKEN",
    "OPENWORK_OPENCODE_BIN",
    "OPENWORK_NO_UPDATE_CHECK",
)


def fail(message: str) -> None:
    print(f"openwork-standin: {message}", flush=True)
    sys.exit(2)


def opencode_health(base_url: str, username: str, password: str) -> int:
    req = urllib.request.Request(base_url.rstrip("/") + "/global/health")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="openwork-server")
    p.add_argument("command", choices=["web"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--workspace", required=True)
    p.add_argument("--opencode-base-url", required=True)
    p.add_argument("--opencode-directory", required=True)
    p.add_argument("--opencode-username", required=True)
    args = p.parse_args(argv)
    env = {k: os.environ.get(k) for k in ENV_KEYS}
    if args.host != "127.0.0.1":
        fail(f"refusing to listen on {args.host}: loopback only")
    for key in ENV_KEYS:
        if not env[key]:
            fail(f"{key} is not set")
    password = str(env["OPENWORK_OPENCODE_PASSWORD"])
    if any(password in a for a in argv):
        fail("the OpenCode password is on the command line")
    status = opencode_health(args.opencode_base_url, args.opencode_username, password)
    if status != 200:
        fail(f"OpenCode at {args.opencode_base_url} answered {status} to our credentials")
    report = {
        "argv": argv,
        "env": env,
        "cwd": os.getcwd(),
        "opencode_health": status,
        "pid": os.getpid(),
    }
    path = os.environ.get("OPENWORK_STANDIN_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(report) + "\n")
    # The real server logs its tokens at boot; the supervisor must redact them.
    print(f"client token: {env['OPENWORK_TOKEN']}", flush=True)
    page = (
        "<!doctype html><title>OpenWork</title><body data-app=openwork-standin>"
        f"<h1>OpenWork</h1><p id=ws>{args.workspace}</p></body>"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                body, kind = json.dumps({"ok": True}).encode(), "application/json"
            elif self.path == "/":
                body, kind = page, "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: Any) -> None:
            print(f"request {self.command} {self.path}", flush=True)

    server = http.server.HTTPServer((args.host, args.port), Handler)
    print(f"openwork-standin listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
