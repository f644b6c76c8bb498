"""A stand-in for ``openwork-server`` (the real one cannot be installed on these machines).

It behaves like the real server as measured in ``shared/notes/openwork.md`` ("The real
openwork-server, measured"):

- every flag is optional and unknown flags are silently ignored; the OpenCode credentials are
  **not** checked at start (a wrong password shows later, as 401 on ``/opencode/*``);
- ``GET /health`` answers 200 with the server's version at once;
- ``/opencode/<path>`` is proxied to ``--opencode-base-url`` with HTTP Basic
  ``--opencode-username`` / the OpenCode password (``--opencode-password`` or
  ``OPENWORK_OPENCODE_PASSWORD``), for holders of the client token;
- the ``web`` subcommand (UI and API on one origin, the client token written into the page) only
  from version 0.18.50; older versions ignore it: ``/health`` is 200 but ``/`` is a JSON 404;
- when the asked port is taken it binds another, random port and logs no ``EADDRINUSE``;
- ``/status`` and ``/workspaces`` return the OpenCode password in clear to token holders.

Where the note does not give the real wording or shape, the stand-in uses its own, marked here
so nobody mistakes them for the real server's:

- the listening line ``openwork-standin listening on http://<host>:<port>`` (the port it really
  bound; the note only says the real server logs it);
- ``client token: <token>`` at start (the real server logs its tokens; the supervisor redacts);
- ``/health`` → ``{"ok": true, "version": "<v>"}``; the older-version 404 →
  ``{"error": "not_found"}``; a missing/wrong client token → 401 ``{"error": "unauthorized"}``;
- the page carries ``<meta name="openwork-token" content="<token>">`` and
  ``data-app=openwork-standin``; ``/workspace/<id>/session/<id>`` serves the same page;
- the ``/status`` and ``/workspaces`` shapes.

Test knobs (environment): ``OPENWORK_STANDIN_VERSION`` (default ``0.18.50``) is the version it
reports and gates ``web`` on; ``OPENWORK_STANDIN_REPORT`` names a JSONL file that gets what it was
given (argv, the OPENWORK_* environment, cwd, the bound port, and — for the test only, it never
decides anything — the status OpenCode answered to the given credentials). A non-loopback
``--host`` is refused (exit 2): a safety rule of the tests, not of the real server.
"""

from __future__ import annotations

import argparse
import base64
import errno
import html
import http.server
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from typing import Any

ENV_KEYS = (
    "OPENWORK_OPENCODE_BASE_URL",
    "OPENWORK_OPENCODE_DIRECTORY",
    "OPENWORK_OPENCODE_USERNAME",
    "OPENWORK_OPENCODE_PASSWORD",
    "OPENWORK_TOKEN",
    "OPENWORK_HOST_TOKEN",
    "OPENWORK_OPENCODE_BIN",
    "OPENWORK_NO_UPDATE_CHECK",
)
DEFAULT_VERSION = "0.18.50"
WEB_SINCE = (0, 18, 50)
DEFAULT_PORT = 8787


def version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.strip().lstrip("v").split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def say(line: str) -> None:
    print(line, flush=True)


def parse(argv: list[str]) -> tuple[argparse.Namespace, str | None]:
    p = argparse.ArgumentParser(prog="openwork-server", add_help=False)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workspace")
    p.add_argument("--opencode-base-url")
    p.add_argument("--opencode-directory")
    p.add_argument("--opencode-username")
    p.add_argument("--opencode-password")
    p.add_argument("--token")
    p.add_argument("--host-token")
    p.add_argument("--approval")
    args, rest = p.parse_known_args(argv)  # unknown flags are ignored, like the real server
    command = next((a for a in rest if not a.startswith("-")), None)
    return args, command


def opencode_status(base_url: str, username: str, password: str) -> int | None:
    """For the report only: what OpenCode answers to these credentials (None: unreachable)."""
    if not base_url:
        return None
    try:
        status, _headers, _body = forward(
            "GET", base_url, "/global/health", b"", username, password
        )
    except OSError:
        return None
    return status


def forward(
    method: str, base_url: str, path: str, body: bytes, username: str, password: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    req = urllib.request.Request(base_url.rstrip("/") + path, data=body or None, method=method)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    if body:
        req.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return int(r.status), list(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), list(e.headers.items()), e.read()


def bind(host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Bind the asked port; if it is taken, silently a random one (as the real server does)."""
    http.server.ThreadingHTTPServer.allow_reuse_address = False
    try:
        return http.server.ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    return http.server.ThreadingHTTPServer((host, 0), Handler)


class Config:
    version = DEFAULT_VERSION
    web = False
    workspace = ""
    base_url = ""
    directory = ""
    username = "opencode"
    password = ""
    token = ""


CONFIG = Config()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *a: Any) -> None:
        say(f"request {self.command} {self.path.split('?', 1)[0]}")

    def _send(self, status: int, body: bytes, kind: str, headers: Any = ()) -> None:
        self.send_response(status)
        skip = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        for name, value in headers:
            if name.lower() not in skip:
                self.send_header(name, value)
        if not any(n.lower() == "content-type" for n, _ in headers):
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return bool(given) and secrets.compare_digest(given, CONFIG.token)

    def _page(self) -> bytes:
        token = html.escape(CONFIG.token, quote=True)
        workspace = html.escape(CONFIG.workspace)
        return (
            "<!doctype html><html><head><title>OpenWork</title>"
            f'<meta name="openwork-token" content="{token}"></head>'
            f"<body data-app=openwork-standin><h1>OpenWork</h1><p id=ws>{workspace}</p>"
            f"<p id=version>{html.escape(CONFIG.version)}</p></body></html>"
        ).encode()

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if path == "/health" and self.command == "GET":
            self._json(200, {"ok": True, "version": CONFIG.version})
            return
        if self.command == "GET" and (path == "/" or path.startswith("/workspace/")):
            if CONFIG.web:
                self._send(200, self._page(), "text/html; charset=utf-8")
            else:
                self._json(404, {"error": "not_found"})
            return
        if not self._authorized():
            self._json(401, {"error": "unauthorized"})
            return
        opencode = {
            "baseUrl": CONFIG.base_url,
            "directory": CONFIG.directory,
            "username": CONFIG.username,
            "password": CONFIG.password,
        }
        if path == "/status":
            self._json(200, {"ok": True, "version": CONFIG.version, "opencode": opencode})
        elif path == "/workspaces":
            item = {"id": "ws_1", "path": CONFIG.workspace, "opencode": opencode}
            self._json(200, {"items": [item]})
        elif path.startswith("/opencode/") or path == "/opencode":
            if not CONFIG.base_url:
                self._json(502, {"error": "opencode_unconfigured"})
                return
            rest = self.path[len("/opencode") :] or "/"
            try:
                status, headers, answer = forward(
                    self.command, CONFIG.base_url, rest, body, CONFIG.username, CONFIG.password
                )
            except OSError as e:
                self._json(502, {"error": "opencode_unreachable", "message": str(e)})
                return
            self._send(status, answer, "application/json", headers)
        else:
            self._json(404, {"error": "not_found"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def main(argv: list[str]) -> int:
    args, command = parse(argv)
    env = {k: os.environ.get(k) for k in ENV_KEYS}
    host = args.host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"openwork-standin: refusing to listen on {host}: the tests bind loopback only")
        return 2
    CONFIG.version = os.environ.get("OPENWORK_STANDIN_VERSION") or DEFAULT_VERSION
    CONFIG.web = command == "web" and version_tuple(CONFIG.version) >= WEB_SINCE
    CONFIG.workspace = args.workspace or os.getcwd()
    CONFIG.base_url = args.opencode_base_url or env["OPENWORK_OPENCODE_BASE_URL"] or ""
    CONFIG.directory = args.opencode_directory or env["OPENWORK_OPENCODE_DIRECTORY"] or ""
    CONFIG.username = args.opencode_username or env["OPENWORK_OPENCODE_USERNAME"] or "opencode"
    CONFIG.password = args.opencode_password or env["OPENWORK_OPENCODE_PASSWORD"] or ""
    CONFIG.token = args.token or env["OPENWORK_TOKEN"] or secrets.token_urlsafe(24)
    if not env["OPENWORK_OPENCODE_BIN"]:
        say(
            "openwork-standin: OPENWORK_OPENCODE_BIN is not set (the real server would try to "
            "download an OpenCode engine now)"
        )

    server = bind(host, args.port if args.port is not None else DEFAULT_PORT)
    port = int(server.server_address[1])
    path = os.environ.get("OPENWORK_STANDIN_REPORT")
    if path:
        report = {
            "argv": argv,
            "env": env,
            "cwd": os.getcwd(),
            "port": port,
            "web": CONFIG.web,
            "opencode_health": opencode_status(CONFIG.base_url, CONFIG.username, CONFIG.password),
            "pid": os.getpid(),
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(report) + "\n")
    say(f"client token: {CONFIG.token}")
    say(f"openwork-standin listening on http://{host}:{port}")
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
