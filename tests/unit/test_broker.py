"""The gateway broker against the backend stand-in (and a raw upstream for odd streams)."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from smartspec_desktop.core.broker import errors
from smartspec_desktop.core.broker.budget import Budgets
from smartspec_desktop.core.broker.meter import read_records
from smartspec_desktop.core.broker.server import Broker, BrokerConfig
from tests.backend_standin import BackendStandIn, HttpError, Text

EMAIL = "dev@example.com"
MODEL = "openai/gpt-4o-mini"


@pytest.fixture
def backend() -> Iterator[BackendStandIn]:
    b = BackendStandIn().start()
    b.add_user(EMAIL, "pw")
    try:
        yield b
    finally:
        b.stop()


def make_broker(tmp_path: Path, upstream: str, key: str, **kw: Any) -> Broker:
    config = BrokerConfig(
        key=key,
        token="server-token-0123456789",
        control_token="control-token-0123456789",
        upstream=upstream,
        meter_file=tmp_path / "usage.jsonl",
        budget_file=tmp_path / "budget.json",
        **kw,
    )
    return Broker(config).start()


@pytest.fixture
def broker(tmp_path: Path, backend: BackendStandIn) -> Iterator[Broker]:
    b = make_broker(tmp_path, backend.url, backend.issue_api_key(EMAIL))
    try:
        yield b
    finally:
        b.stop()


TOKEN = {"Authorization": "Bearer server-token-0123456789"}
CONTROL = {"Authorization": "Bearer control-token-0123456789"}


def chat(broker: Broker, session: str | None = None, **body: Any) -> httpx.Response:
    headers = dict(TOKEN)
    if session:
        headers["x-session-id"] = session
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    payload.update(body)
    return httpx.post(f"{broker.url}/chat/completions", json=payload, headers=headers, timeout=10)


def control(broker: Broker, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        f"http://127.0.0.1:{broker.port}/_control{path}",
        json=body,
        headers=CONTROL,
        timeout=10,
    )


# -- forwarding -------------------------------------------------------------------------------
def test_models_and_chat_are_forwarded_with_the_real_key(
    broker: Broker, backend: BackendStandIn
) -> None:
    r = httpx.get(f"{broker.url}/models", headers=TOKEN, timeout=10)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == backend.models
    r = chat(broker, session="ses_a")
    assert r.status_code == 200
    assert "data: [DONE]" in r.text
    sent = backend.requests
    assert [q.path for q in sent] == ["/v1/opencode/models", "/v1/opencode/chat/completions"]
    real_key = sent[0].bearer_token
    assert real_key and real_key.startswith("sk-smartspec-")
    assert all(q.bearer_token == real_key for q in sent)
    assert sent[1].headers.get("x-session-id") == "ses_a"
    assert sent[1].headers.get("accept-encoding") == "identity"


def test_stream_is_forwarded_chunk_by_chunk(broker: Broker, backend: BackendStandIn) -> None:
    # The stand-in deducts credits only when it has sent the last content chunk, so seeing the
    # first chunk while the balance is untouched proves nothing was buffered whole.
    backend.script(Text("one two three four five six", chunk_delay=0.5))
    before = backend.balance(EMAIL)
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream(
        "POST", f"{broker.url}/chat/completions", json=payload, headers=TOKEN, timeout=10
    ) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert backend.balance(EMAIL) == before, "the answer was buffered before forwarding"
        assert json.loads(first[5:])["object"] == "chat.completion.chunk"
        rest = list(lines)
    assert "data: [DONE]" in rest
    assert backend.balance(EMAIL) < before


def test_wrong_or_missing_token_is_401(broker: Broker, backend: BackendStandIn) -> None:
    url = f"{broker.url}/models"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic c2VydmVyLXRva2Vu"},
        CONTROL,  # the control token is not a server token
    ):
        r = httpx.get(url, headers=headers, timeout=10)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == errors.BROKER_AUTH
    # and the server token does not open the control API
    r = httpx.get(f"http://127.0.0.1:{broker.port}/_control/usage", headers=TOKEN, timeout=10)
    assert r.status_code == 401
    assert backend.requests == []


def test_binds_only_loopback(broker: Broker) -> None:
    listening = [
        c
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == broker.port
    ]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]
    other = _non_loopback_ip()
    if other:
        with pytest.raises(OSError), socket.create_connection((other, broker.port), timeout=2):
            pass


def _non_loopback_ip() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return None


@pytest.mark.parametrize(
    "path",
    [
        "/v1/opencode/api-keys",
        "/v1/opencode/API-KEYS/x/rotate",
        "/v1/opencode/../../api/credits/balance",
        "/v1/opencode/%2e%2e/%2e%2e/api/auth/me",
        "/api/credits/balance",
        "/",
    ],
)
def test_other_paths_are_refused(broker: Broker, backend: BackendStandIn, path: str) -> None:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN['Authorization']}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == b"404", answer[:200]
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head, "a connection it closes is said to close"
    assert backend.requests == []


def test_redirect_is_not_followed(broker: Broker, backend: BackendStandIn) -> None:
    backend.script(HttpError(307, {}, headers={"Location": "http://192.0.2.1/steal"}))
    r = chat(broker)
    assert r.status_code == 400
    assert "redirect to http://192.0.2.1/steal" in r.json()["error"]["message"]
    assert len(backend.requests) == 1


@pytest.mark.parametrize(
    "status, body",
    [
        (401, {"detail": "Invalid API key"}),
        (402, {"detail": "Insufficient credits. Please add credits to continue."}),
        (429, {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests.", "details": {}}),
        (500, {"detail": "'LLMGateway' object has no attribute 'chat_completion'"}),
    ],
)
def test_error_statuses_pass_through(
    broker: Broker, backend: BackendStandIn, status: int, body: dict[str, Any]
) -> None:
    backend.script(HttpError(status, body))
    r = chat(broker)
    assert r.status_code == status
    assert r.json() == body


def test_large_non_streamed_answer_is_refused(tmp_path: Path, backend: BackendStandIn) -> None:
    backend.models = [f"vendor/model-{i:05d}" for i in range(5000)]
    b = make_broker(tmp_path, backend.url, backend.issue_api_key(EMAIL), max_response=50_000)
    try:
        r = httpx.get(f"{b.url}/models", headers=TOKEN, timeout=10)
    finally:
        b.stop()
    assert r.status_code == 400
    assert r.json()["error"]["code"] == errors.TOO_LARGE


# -- key rotation -----------------------------------------------------------------------------
def test_key_rotation_and_revocation_through_the_control_api(
    broker: Broker, backend: BackendStandIn
) -> None:
    assert chat(broker).status_code == 200
    first = backend.requests[-1].bearer_token
    new_key = backend.issue_api_key(EMAIL, name="rotated")
    r = control(broker, "PUT", "/key", {"key": new_key})
    assert r.status_code == 200
    assert r.json() == {"ok": True, "has_key": True}
    assert chat(broker).status_code == 200
    assert backend.requests[-1].bearer_token == new_key != first
    assert control(broker, "DELETE", "/key").json()["has_key"] is False
    n = len(backend.requests)
    r = chat(broker)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == errors.NO_KEY
    assert len(backend.requests) == n
    assert control(broker, "GET", "/health").json()["has_key"] is False


# -- metering ---------------------------------------------------------------------------------
def test_metering_matches_the_backends_usage(
    broker: Broker, backend: BackendStandIn, tmp_path: Path
) -> None:
    backend.script(
        Text("a", prompt_tokens=11, completion_tokens=5),
        Text("b", prompt_tokens=200, completion_tokens=30),
        Text("c", prompt_tokens=7, completion_tokens=1),
    )
    for session in ("ses_1", "ses_1", "ses_2"):
        assert chat(broker, session=session).status_code == 200
    deducted = sum(
        int(t["description"].rsplit("(", 1)[1].split()[0]) for t in backend.transactions(EMAIL)
    )
    totals = control(broker, "GET", "/usage").json()
    assert totals["calls"] == 3
    assert totals["total_tokens"] == deducted == 254
    assert totals["by_session"]["ses_1"]["prompt_tokens"] == 211
    assert totals["by_session"]["ses_2"]["completion_tokens"] == 1
    path = tmp_path / "usage.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = read_records(path)
    assert [(r["session"], r["total_tokens"], r["model"]) for r in records] == [
        ("ses_1", 16, MODEL),
        ("ses_1", 230, MODEL),
        ("ses_2", 8, MODEL),
    ]
    assert all(r["status"] == 200 and r["stream"] for r in records)
    text = path.read_text()
    assert "sk-smartspec-" not in text and "token-0123456789" not in text


# -- budgets ----------------------------------------------------------------------------------
def test_task_budget_refuses_then_continue_raises_it(
    broker: Broker, backend: BackendStandIn, tmp_path: Path
) -> None:
    r = control(broker, "PUT", "/budget/tasks/task-1", {"cap": 100, "sessions": ["ses_t"]})
    assert r.status_code == 200
    assert chat(broker, session="ses_t").status_code == 200  # 120 tokens: crosses the cap
    n = len(backend.requests)
    r = chat(broker, session="ses_t")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == errors.BUDGET_REACHED
    assert err["message"].startswith("Paused: budget of 100 tokens reached")
    assert not errors.would_retry(err["message"])
    assert len(backend.requests) == n, "a refused call must not reach the backend"
    assert chat(broker, session="other").status_code == 200  # other sessions are not capped
    state = control(broker, "GET", "/budget").json()
    assert state["tasks"]["task-1"]["paused"].startswith("Paused: budget of 100")
    r = control(broker, "POST", "/budget/tasks/task-1/raise", {"add": 1000})
    assert r.json()["tasks"]["task-1"]["cap"] == 1120
    assert r.json()["tasks"]["task-1"]["paused"] is None
    assert chat(broker, session="ses_t").status_code == 200
    # Persisted (0600): a new broker on the same file knows the task and what it used. (The
    # file is written within BUDGET_WRITE_DELAY of an answer, and at the stop: read after it.)
    broker.stop()
    path = tmp_path / "budget.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Budgets(path).state()
    assert again["tasks"]["task-1"]["used"] == 240
    assert again["day"]["used"] == 360


def test_a_charge_counts_at_once_and_reaches_the_file_on_flush_or_stop(
    broker: Broker, tmp_path: Path
) -> None:
    # The broker charges a call before its answer's last byte and writes the file after it.
    path = tmp_path / "budget.json"
    control(broker, "PUT", "/budget/day", {"cap": 100})  # (a change: written at once)
    b = broker.budgets
    b.charge(None, 150, save=False)
    assert b.check(None) is not None, "the charge must count before it is written"
    assert Budgets(path).state()["day"]["used"] == 0
    b.flush()
    assert Budgets(path).state()["day"]["used"] == 150
    b.charge(None, 7, save=False)
    b.flush_soon(3600)  # (not due before the stop)
    broker.stop()
    assert Budgets(path).state()["day"]["used"] == 157, "stop() must write what is left"


def test_charges_reach_the_file_soon_after_the_calls(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    for _ in range(3):
        assert chat(broker).status_code == 200
    used = broker.budgets.state()["day"]["used"]
    assert used > 0
    # Written within BUDGET_WRITE_DELAY of the calls, while the broker runs (generous bound).
    deadline = time.monotonic() + 30
    while not (path.exists() and Budgets(path).state()["day"]["used"] == used):
        assert time.monotonic() < deadline, "the charges never reached the budget file"
        time.sleep(0.05)


def test_day_budget(broker: Broker, backend: BackendStandIn) -> None:
    control(broker, "PUT", "/budget/day", {"cap": 0})
    r = chat(broker)
    assert r.status_code == 400
    assert "today's workspace budget" in r.json()["error"]["message"]
    control(broker, "POST", "/budget/day/raise", {"add": 500})
    assert chat(broker).status_code == 200
    assert control(broker, "PUT", "/budget/day", {"cap": -1}).status_code == 400


# -- odd streams become one clean error -------------------------------------------------------
class _Raw(ThreadingHTTPServer):
    body = b""
    content_type = "text/event-stream"


class _RawHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Raw

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.server.body)
        self.close_connection = True


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[tuple[_Raw, Broker]]:
    server = _Raw(("127.0.0.1", 0), _RawHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    b = make_broker(tmp_path, upstream, "sk-smartspec-" + "k" * 43)
    try:
        yield server, b
    finally:
        b.stop()
        server.shutdown()
        server.server_close()


REAL_DEFECT = (
    b"data: {\"error\": \"'LLMGateway' object has no attribute 'chat_completion_stream'\"}\n\n"
)
CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
)


@pytest.mark.parametrize(
    "body, own",
    [
        (REAL_DEFECT, "'LLMGateway' object has no attribute 'chat_completion_stream'"),
        (b'data: {"error": {"message": "Upstream exploded", "type": "x"}}\n\n', "Upstream"),
        (b"data: <html>oops</html>\n\n", "not JSON"),
        (b"", "empty stream"),
    ],
)
def test_error_only_stream_becomes_one_clean_400(
    raw: tuple[_Raw, Broker], body: bytes, own: str
) -> None:
    server, b = raw
    server.body = body
    r = chat(b)
    assert r.status_code == 400
    # It closes this connection, and says so: OpenCode must not send its next call on it.
    assert r.headers["connection"] == "close"
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == errors.GATEWAY_DEFECT
    assert err["message"].startswith("The SmartSpecPro gateway failed: ")
    assert own in err["message"]
    shown = err["message"].replace(errors.WORD_JOINER, "")
    assert shown.endswith(
        f"This is a defect of the backend at {b.upstream}, not of your workspace."
    )
    assert not errors.would_retry(err["message"])
    records = b.meter.totals()
    assert records["errors"] == 1


def test_error_after_content_ends_the_stream_with_an_error_chunk(
    raw: tuple[_Raw, Broker],
) -> None:
    server, b = raw
    server.body = CHUNK + REAL_DEFECT + CHUNK
    r = chat(b)
    assert r.status_code == 200
    events = [line for line in r.text.splitlines() if line.startswith("data:")]
    assert len(events) == 2
    assert json.loads(events[0][5:])["choices"][0]["delta"]["content"] == "Hel"
    err = json.loads(events[1][5:])["error"]
    assert err["code"] == errors.GATEWAY_DEFECT
    assert "chat_completion_stream" in err["message"]


def test_cut_short_stream_gets_an_error_chunk(raw: tuple[_Raw, Broker]) -> None:
    server, b = raw
    server.body = CHUNK
    r = chat(b)
    events = [line for line in r.text.splitlines() if line.startswith("data:")]
    assert "ended before the answer was complete" in json.loads(events[-1][5:])["error"]["message"]


def test_idle_stream_times_out(tmp_path: Path, backend: BackendStandIn) -> None:
    from tests.backend_standin import Hang

    b = make_broker(tmp_path, backend.url, backend.issue_api_key(EMAIL), idle_timeout=0.5)
    backend.script(Hang(after_headers=True))
    try:
        r = chat(b)
    finally:
        b.stop()
    assert r.status_code == 400
    assert "sent nothing for" in r.json()["error"]["message"]


def test_defuse_keeps_the_words_but_not_the_retry_triggers() -> None:
    text = "Internal Server Error (HTTP 500) at http://host:5029: rate limit, fetch failed"
    assert errors.would_retry(text)
    safe = errors.defuse(text)
    assert not errors.would_retry(safe)
    assert safe.replace(errors.WORD_JOINER, "") == text
