"""The OpenWork stand-in behaves like the real openwork-server (shared/notes/openwork.md, "The
real openwork-server, measured"; each test cites its line)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

STANDIN = Path(__file__).resolve().parent.parent / "openwork_standin.py"
PASSWORD = "right-password"
LISTENING = re.compile(r"openwork-standin listening on http://127\.0\.0\.1:(\d+)")


class FakeOpenCode(http.server.BaseHTTPRequestHandler):
    """An OpenCode server with a password: /global/health for opencode:<PASSWORD> only."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            status, body = 401, b'{"error":"unauthorized"}'
        elif self.path == "/global/health":
            status, body = 200, b'{"healthy":true,"version":"1.18.33"}'
        else:
            status, body = 404, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def opencode() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenCode)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Running:
    def __init__(self, proc: subprocess.Popen[str], port: int, lines: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.lines = lines
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def run() -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []

    def start(*argv: str, env: dict[str, str] | None = None) -> Running:
        full = {k: v for k, v in os.environ.items() if not k.startswith("OPENWORK_")}
        full.update(env or {})
        proc = subprocess.Popen(
            [sys.executable, str(STANDIN), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full,
        )
        started.append(proc)
        lines: list[str] = []
        found: queue.Queue[int] = queue.Queue()

        out = proc.stdout
        assert out is not None

        def read() -> None:
            for line in iter(out.readline, ""):
                lines.append(line.rstrip("\n"))
                m = LISTENING.search(line)
                if m:
                    found.put(int(m.group(1)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        readers.append(reader)
        try:
            port = found.get(timeout=20)
        except queue.Empty:
            raise AssertionError(f"no listening line; output: {lines}") from None
        return Running(proc, port, lines)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)
    for reader in readers:
        reader.join(5)  # EOF once the process is gone
    for proc in started:
        if proc.stdout is not None:
            proc.stdout.close()


def creds(url: str, password: str = PASSWORD) -> tuple[list[str], dict[str, str]]:
    argv = [
        "web",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workspace",
        "/tmp/ws",
        "--opencode-base-url",
        url,
        "--opencode-directory",
        "/tmp/ws",
        "--opencode-username",
        "opencode",
    ]
    env = {
        "OPENWORK_OPENCODE_PASSWORD": password,
        "OPENWORK_TOKEN": "client-token-123",
        "OPENWORK_HOST_TOKEN": "host-token-456",
        "OPENWORK_OPENCODE_BIN": "/usr/bin/true",
        "OPENWORK_NO_UPDATE_CHECK": "1",
    }
    return argv, env


def bearer(token: str = "client-token-123") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_flag_is_required_and_unknown_flags_are_ignored(run: Any) -> None:
    # openwork.md: "Unknown flags are silently ignored; none of them is required".
    bare = run("--port", "0")
    assert httpx.get(bare.url + "/health").status_code == 200
    odd = run("web", "--port", "0", "--frobnicate", "x", "--no-such-flag")
    assert httpx.get(odd.url + "/health").json()["ok"] is True


def test_wrong_password_starts_and_shows_as_401_through_the_proxy(run: Any, opencode: str) -> None:
    # openwork.md: "the OpenCode credentials are not checked at start"; "/health → 200 ... also
    # when the OpenCode password is wrong (then every proxied call is 401): probe
    # /opencode/global/health with the client token".
    argv, env = creds(opencode, password="wrong")
    s = run(*argv, env=env)
    assert s.proc.poll() is None
    assert httpx.get(s.url + "/health").status_code == 200
    r = httpx.get(s.url + "/opencode/global/health", headers=bearer())
    assert r.status_code == 401

    argv, env = creds(opencode)
    good = run(*argv, env=env)
    r = httpx.get(good.url + "/opencode/global/health", headers=bearer())
    assert r.status_code == 200 and r.json()["healthy"] is True
    # without the client token the proxy is closed
    assert httpx.get(good.url + "/opencode/global/health").status_code == 401


def test_health_carries_the_version(run: Any) -> None:
    # openwork.md: "GET /health → 200 with the server's version".
    s = run("--port", "0", env={"OPENWORK_STANDIN_VERSION": "0.18.13"})
    assert httpx.get(s.url + "/health").json() == {"ok": True, "version": "0.18.13"}


def test_web_from_0_18_50_injects_the_client_token(run: Any, opencode: str) -> None:
    # openwork.md: "openwork-server web ... injects the client token into the page"; "exists
    # only from 0.18.50; 0.18.0–0.18.49 ignore it silently: /health is 200 but / is a JSON 404".
    argv, env = creds(opencode)
    new = run(*argv, env=dict(env, OPENWORK_STANDIN_VERSION="0.18.50"))
    page = httpx.get(new.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'content="client-token-123"' in page.text and "/tmp/ws" in page.text
    deep = httpx.get(new.url + "/workspace/ws_1/session/ses_abc")  # deep links exist
    assert deep.status_code == 200

    old = run(*argv, env=dict(env, OPENWORK_STANDIN_VERSION="0.18.13"))
    assert httpx.get(old.url + "/health").status_code == 200
    r = httpx.get(old.url + "/")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert "client-token-123" not in r.text


def test_busy_port_binds_another_and_logs_it_without_eaddrinuse(run: Any) -> None:
    # openwork.md: "When the requested port is taken it binds another, random port and logs
    # no EADDRINUSE: read the port it really listens on (its log line)".
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        s = run("web", "--host", "127.0.0.1", "--port", str(taken))
        assert s.port != taken
        assert httpx.get(s.url + "/health").status_code == 200
    assert not any("EADDRINUSE" in line.upper() for line in s.lines)


def test_status_gives_the_password_to_token_holders_only(run: Any, opencode: str) -> None:
    # openwork.md: "with it /status and /workspaces return the OpenCode password in clear".
    argv, env = creds(opencode)
    s = run(*argv, env=env)
    assert httpx.get(s.url + "/status").status_code == 401
    assert httpx.get(s.url + "/status", headers=bearer()).json()["opencode"]["password"] == (
        PASSWORD
    )
    items = httpx.get(s.url + "/workspaces", headers=bearer()).json()["items"]
    assert items[0]["path"] == "/tmp/ws"


def test_report_records_what_it_was_given(run: Any, opencode: str, tmp_path: Path) -> None:
    argv, env = creds(opencode)
    report = tmp_path / "r.jsonl"
    s = run(*argv, env=dict(env, OPENWORK_STANDIN_REPORT=str(report)))
    (got,) = [json.loads(x) for x in report.read_text().splitlines()]
    assert got["argv"] == argv and got["port"] == s.port and got["web"] is True
    assert got["env"]["OPENWORK_OPENCODE_PASSWORD"] == PASSWORD
    assert got["opencode_health"] == 200
