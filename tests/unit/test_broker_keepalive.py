"""The broker keeps its connection to the backend alive between calls, and never lets a
kept-alive connection the server has given up on fail a call."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartspec_desktop.core.broker.server import Broker
from tests.backend_standin import BackendStandIn, Text
from tests.unit.test_broker import EMAIL, MODEL, TOKEN, make_broker


def count_connects(b: Broker) -> list[int]:
    """Counts the new connections the broker opens to the backend."""
    opened = [0]
    connect: Callable[[float], Any] = b.connect

    def counting(timeout: float) -> Any:
        opened[0] += 1
        return connect(timeout)

    b.connect = counting  # type: ignore[method-assign]
    return opened


def chat(b: Broker, client: httpx.Client) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    return client.post(f"{b.url}/chat/completions", json=payload, headers=TOKEN, timeout=10)


def content(r: httpx.Response) -> str:
    text = ""
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.fixture
def backend() -> Iterator[BackendStandIn]:
    s = BackendStandIn().start()
    s.add_user(EMAIL, "pw")
    try:
        yield s
    finally:
        s.stop()


def test_calls_share_one_backend_connection_and_are_metered_each(
    tmp_path: Path, backend: BackendStandIn
) -> None:
    b = make_broker(tmp_path, backend.url, backend.issue_api_key(EMAIL), keepalive_idle=30)
    opened = count_connects(b)
    backend.default_step = Text("hello", prompt_tokens=11, completion_tokens=4)
    try:
        with httpx.Client() as client:
            for _ in range(3):
                r = chat(b, client)
                assert r.status_code == 200
                assert content(r) == "hello"
            models = client.get(f"{b.url}/models", headers=TOKEN, timeout=10)
            assert models.status_code == 200
            assert chat(b, client).status_code == 200
    finally:
        b.stop()
    assert opened[0] == 1
    totals = b.meter.totals()
    assert (totals["calls"], totals["errors"], totals["prompt_tokens"]) == (5, 0, 44)
    assert totals["completion_tokens"] == 16


def test_an_idle_connection_is_not_kept_past_its_limit(
    tmp_path: Path, backend: BackendStandIn
) -> None:
    b = make_broker(tmp_path, backend.url, backend.issue_api_key(EMAIL), keepalive_idle=0.2)
    opened = count_connects(b)
    try:
        with httpx.Client() as client:
            assert chat(b, client).status_code == 200
            time.sleep(0.4)
            assert chat(b, client).status_code == 200
    finally:
        b.stop()
    assert opened[0] == 2


# -- a backend that gives up on kept-alive connections -----------------------------------------
class _Fickle(ThreadingHTTPServer):
    daemon_threads = True
    #: "close": close each connection after its answer, without saying so (the idle timeout of a
    #: server, seen before the next call); "drop": read the second call on a connection and close
    #: without answering (the same, just as the call went out).
    mode = "close"
    calls = 0


class _FickleHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Fickle

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.on_this_connection = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.on_this_connection += 1
        if self.server.mode == "drop" and self.on_this_connection > 1:
            self.close_connection = True
            return
        self.server.calls += 1
        usage = {"prompt_tokens": 5, "completion_tokens": 2}
        events = [
            {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": usage},
        ]
        body = b"".join(b"data: %s\n\n" % json.dumps(e).encode() for e in events)
        body += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        self.wfile.flush()
        if self.server.mode == "close":
            self.close_connection = True


@pytest.fixture
def fickle() -> Iterator[_Fickle]:
    server = _Fickle(("127.0.0.1", 0), _FickleHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["close", "drop"])
def test_a_connection_the_server_gave_up_on_never_fails_a_call(
    tmp_path: Path, fickle: _Fickle, mode: str
) -> None:
    fickle.mode = mode
    upstream = f"http://127.0.0.1:{fickle.server_address[1]}"
    b = make_broker(tmp_path, upstream, "sk-smartspec-" + "k" * 43, keepalive_idle=30)
    opened = count_connects(b)
    try:
        with httpx.Client() as client:
            for _ in range(4):
                r = chat(b, client)
                assert r.status_code == 200, r.text
                assert '"usage"' in r.text and "[DONE]" in r.text
                if mode == "close":
                    time.sleep(0.05)  # (the server's close has arrived before the next call)
    finally:
        b.stop()
    assert opened[0] == 4  # a new connection each time, as the server wants
    assert fickle.calls == 4  # and each call reached it once: none was sent twice
    totals = b.meter.totals()
    assert (totals["calls"], totals["errors"], totals["total_tokens"]) == (4, 0, 28)
