"""Tests of the SmartSpecPro backend stand-in (tests/backend_standin.py) over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.backend_standin import (
    RATE_LIMIT_BODY,
    BackendStandIn,
    Delay,
    ErrorChunk,
    Hang,
    HttpError,
    Step,
    Text,
    ToolCall,
)

EMAIL = "dev@example.com"
PASSWORD = "correct horse"
MODEL = "anthropic/claude-3.5-sonnet"
CHAT = "/v1/opencode/chat/completions"
KEY_RE = re.compile(r"^sk-smartspec-[A-Za-z0-9_-]{32,}$")


@pytest.fixture
def backend() -> Iterator[BackendStandIn]:
    standin = BackendStandIn()
    standin.start()
    try:
        standin.add_user(EMAIL, PASSWORD)
        yield standin
    finally:
        standin.stop()
    assert standin.errors == []


@pytest.fixture
def client(backend: BackendStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, timeout=5.0) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: httpx.Client, email: str = EMAIL, password: str = PASSWORD) -> str:
    r = client.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert isinstance(token, str)
    return token


def chat_body(stream: bool = True, model: str = MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 32000,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [],
        "tool_choice": "auto",
        "stream": stream,
        "stream_options": {"include_usage": True},
    }


def stream_chat(client: httpx.Client, key: str) -> tuple[int, list[str]]:
    """POST a streaming chat; return the status and the SSE ``data:`` payloads."""
    with client.stream("POST", CHAT, headers=bearer(key), json=chat_body()) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
        return r.status_code, data


def parse_chunks(data: list[str]) -> list[dict[str, Any]]:
    return [json.loads(d) for d in data if d != "[DONE]"]


# ------------------------------------------------------------------------------------------------
# health, auth, credits
# ------------------------------------------------------------------------------------------------


def test_health(backend: BackendStandIn, client: httpx.Client) -> None:
    r = client.get("/v1/opencode/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["service"] == "opencode-gateway"
    assert body["version"] == "1.0.0" and body["timestamp"]
    assert client.get("/health").json()["status"] == "healthy"

    backend.set_health_ok(False)
    r = client.get("/v1/opencode/health")
    assert r.status_code == 503 and r.json()["status"] == "degraded"
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "degraded"


def test_login_and_me(client: httpx.Client) -> None:
    r = client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 1800
    assert body["access_token"].startswith("eyJ")
    user = body["user"]
    assert set(user) == {
        "id",
        "email",
        "full_name",
        "credits_balance",
        "is_admin",
        "email_verified",
    }
    assert user["email"] == EMAIL and user["credits_balance"] == 10000.0

    me = client.get("/api/auth/me", headers=bearer(body["access_token"]))
    # backend-contract.md "Measured differences": "/api/auth/me adds created_at" (naive UTC).
    assert me.status_code == 200
    assert me.json() == dict(user, created_at=me.json()["created_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", me.json()["created_at"])


def test_login_failures(backend: BackendStandIn, client: httpx.Client) -> None:
    r = client.post("/api/auth/login", json={"email": EMAIL, "password": "wrong"})
    assert r.status_code == 401 and r.json() == {"detail": "Incorrect email or password"}
    r = client.post("/api/auth/login", json={"email": "nobody@x.org", "password": "x"})
    assert r.status_code == 401
    backend.add_user("off@example.com", "pw", active=False)
    assert (
        client.post(
            "/api/auth/login", json={"email": "off@example.com", "password": "pw"}
        ).status_code
        == 403
    )
    assert client.post("/api/auth/login", json={"email": EMAIL}).status_code == 422


def test_token_expiry(backend: BackendStandIn, client: httpx.Client) -> None:
    backend.token_ttl = 0.05
    token = login(client)
    time.sleep(0.1)
    r = client.get("/api/auth/me", headers=bearer(token))
    # contract "JWT routes: bad/expired JWT → 401 Invalid authentication credentials"
    assert r.status_code == 401
    assert r.json() == {"detail": "Invalid authentication credentials"}
    assert r.headers["www-authenticate"] == "Bearer"

    backend.token_ttl = 1800
    token = login(client)
    backend.expire_tokens()
    assert client.get("/api/auth/me", headers=bearer(token)).status_code == 401


def test_balance_jwt_only(backend: BackendStandIn, client: httpx.Client) -> None:
    token = login(client)
    r = client.get("/api/credits/balance", headers=bearer(token))
    assert r.status_code == 200
    body = r.json()
    assert body["balance_credits"] == 10000 and body["balance_usd"] == 10.0
    assert body["stats"]["transaction_count"] == 0

    key = backend.issue_api_key(EMAIL)
    r = client.get("/api/credits/balance", headers=bearer(key))
    assert r.status_code == 401
    r = client.get("/api/credits/balance", headers=bearer("not-a-jwt"))
    assert r.status_code == 401
    assert r.json() == {"detail": "Invalid authentication credentials"}
    # contract "JWT routes: no Authorization → 403 Not authenticated"
    r = client.get("/api/credits/balance")
    assert r.status_code == 403 and r.json() == {"detail": "Not authenticated"}


# ------------------------------------------------------------------------------------------------
# API keys
# ------------------------------------------------------------------------------------------------


def test_api_key_lifecycle(backend: BackendStandIn, client: httpx.Client) -> None:
    jwt = login(client)
    r = client.post(
        "/v1/opencode/api-keys",
        headers=bearer(jwt),
        json={"name": "laptop", "expires_in_days": 90, "description": None},
    )
    assert r.status_code == 200, r.text
    created = r.json()
    key = created["key"]
    assert KEY_RE.match(key) and len(key) == 56
    assert created["key_prefix"] == f"{key[:16]}...{key[-4:]}"
    assert created["name"] == "laptop" and created["expires_at"]
    assert key not in repr(backend._keys)  # only the SHA-256 is stored

    models = "/v1/opencode/models"
    assert client.get(models, headers=bearer(key)).status_code == 200

    listed = client.get("/v1/opencode/api-keys", headers=bearer(key)).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert listed[0]["is_active"] is True and listed[0]["last_used_at"] is not None
    assert "key" not in listed[0]

    # rotate: the old key dies at once, the new one works
    r = client.post(f"/v1/opencode/api-keys/{created['id']}/rotate", headers=bearer(jwt), json={})
    assert r.status_code == 200
    rotated = r.json()
    assert set(rotated) == set(created) and rotated["id"] == created["id"]
    new_key = rotated["key"]
    assert new_key != key and KEY_RE.match(new_key)
    r = client.get(models, headers=bearer(key))
    assert r.status_code == 401 and r.json() == {"detail": "Invalid API key"}
    assert client.get(models, headers=bearer(new_key)).status_code == 200

    # revoke
    r = client.delete(f"/v1/opencode/api-keys/{created['id']}", headers=bearer(new_key))
    assert r.json() == {"status": "revoked", "key_id": created["id"]}
    assert client.get(models, headers=bearer(new_key)).status_code == 401
    assert client.get("/v1/opencode/api-keys", headers=bearer(jwt)).json() == []
    everything = client.get(
        "/v1/opencode/api-keys", params={"include_inactive": "true"}, headers=bearer(jwt)
    ).json()
    assert [k["is_active"] for k in everything] == [False]
    r = client.delete("/v1/opencode/api-keys/nope", headers=bearer(jwt))
    assert r.status_code == 404


def test_models_auth(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    r = client.get("/v1/opencode/models", headers=bearer(key))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == backend.models
    assert body["data"][0]["owned_by"] == "anthropic" and body["data"][0]["object"] == "model"

    bad = "sk-smartspec-" + "x" * 43
    r = client.get("/v1/opencode/models", headers=bearer(bad))
    assert r.status_code == 401 and r.json() == {"detail": "Invalid API key"}
    r = client.get("/v1/opencode/models")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "authorization"]


def test_global_errors(client: httpx.Client) -> None:
    r = client.post("/api/auth/login", content=b'{"email": "a", "password": "b"}')
    assert r.status_code == 400 and r.json() == {"error": "Missing Content-Type header"}
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_transactions_paging(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    backend.script(Text("a"), Text("b"), Text("c"))
    for _ in range(3):
        assert stream_chat(client, key)[0] == 200
    jwt = login(client)
    url = "/api/credits/transactions"
    all_tx = client.get(url, headers=bearer(jwt)).json()["transactions"]
    assert len(all_tx) == 3
    page = client.get(url, params={"limit": 1, "offset": 1}, headers=bearer(jwt)).json()
    assert page["total"] == 1 and page["transactions"][0]["id"] == all_tx[1]["id"]
    assert client.get(url, params={"limit": "x"}, headers=bearer(jwt)).status_code == 422


# ------------------------------------------------------------------------------------------------
# chat completions
# ------------------------------------------------------------------------------------------------


def test_chat_stream_text(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    backend.script(Text("The answer is 42.", prompt_tokens=100, completion_tokens=50))
    status, data = stream_chat(client, key)
    assert status == 200
    assert data[-1] == "[DONE]"
    chunks = parse_chunks(data)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    content = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert "".join(content) == "The answer is 42."
    assert sum(1 for piece in content if piece) >= 2
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
    }

    # 100 credits per 1k tokens x 150 tokens = 15 credits
    assert backend.balance(EMAIL) == 10000 - 15
    jwt = login(client)
    tx = client.get("/api/credits/transactions", headers=bearer(jwt)).json()["transactions"]
    assert len(tx) == 1
    # contract "Transactions: deductions are positive amounts with type deduction, integers;
    # metadata is always {}; description reads like OpenCode: <model> (<n> tokens)"
    assert tx[0]["type"] == "deduction" and tx[0]["amount"] == 15
    assert isinstance(tx[0]["amount"], int)
    assert tx[0]["balance_before"] == 10000
    assert tx[0]["balance_after"] == 9985
    assert tx[0]["description"] == f"OpenCode: {MODEL} (150 tokens)"
    assert tx[0]["metadata"] == {}
    balance = client.get("/api/credits/balance", headers=bearer(jwt)).json()
    assert balance["balance_credits"] == 9985
    assert balance["stats"]["total_deducted_credits"] == 15

    (req,) = backend.chat_requests()
    assert req.body["stream"] is True and req.body["stream_options"] == {"include_usage": True}
    assert req.headers["authorization"] == f"Bearer {key}" and req.bearer_token == key
    assert req.status == 200 and req.client_ip == "127.0.0.1"
    assert key not in repr(req)


def test_chat_default_reply_and_non_stream(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    r = client.post(CHAT, headers=bearer(key), json=chat_body(stream=False))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello from the SmartSpecPro stand-in."
    assert body["usage"]["total_tokens"] == 120
    assert backend.balance(EMAIL) == 10000 - 12


def test_chat_tool_call_stream(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    args = {"filePath": "hello.txt", "content": "Hello, world!\n"}
    backend.script(ToolCall("write", args, call_id="call_abc"))
    status, data = stream_chat(client, key)
    assert status == 200 and data[-1] == "[DONE]"
    chunks = parse_chunks(data)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["id"] == "call_abc" and calls[0]["type"] == "function"
    assert calls[0]["function"]["name"] == "write" and all(tc["index"] == 0 for tc in calls)
    pieces = [tc["function"]["arguments"] for tc in calls if tc["function"].get("arguments")]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == args
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] == 120


def test_chat_error_chunk_has_no_done(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    backend.script(ErrorChunk("provider exploded"))
    status, data = stream_chat(client, key)
    assert status == 200
    assert [json.loads(d) for d in data] == [
        {"error": {"message": "provider exploded", "type": "server_error"}}
    ]
    assert backend.balance(EMAIL) == 10000.0


def test_chat_scripted_http_error_and_delay(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    backend.script(HttpError(500, {"detail": "boom"}), Delay(0.05, Text("late")))
    r = client.post(CHAT, headers=bearer(key), json=chat_body())
    assert r.status_code == 500 and r.json() == {"detail": "boom"}
    t0 = time.monotonic()
    status, data = stream_chat(client, key)
    assert time.monotonic() - t0 >= 0.05
    content = [
        c["choices"][0]["delta"].get("content") or "" for c in parse_chunks(data) if c["choices"]
    ]
    assert status == 200 and "".join(content) == "late"


def test_chat_insufficient_credits(backend: BackendStandIn, client: httpx.Client) -> None:
    backend.set_balance(EMAIL, 0)
    key = backend.issue_api_key(EMAIL)
    backend.script(Text("never"))
    r = client.post(CHAT, headers=bearer(key), json=chat_body())
    assert r.status_code == 402
    assert r.json() == {"detail": "Insufficient credits. Please add credits to continue."}
    assert backend.chat_script.qsize() == 1  # the scripted step was not consumed


def test_chat_unknown_model(backend: BackendStandIn, client: httpx.Client) -> None:
    key = backend.issue_api_key(EMAIL)
    r = client.post(CHAT, headers=bearer(key), json=chat_body(model="nope/nope"))
    assert r.status_code == 400
    # contract "Chat validation: the 400 for an unknown model lists all ids in random order"
    prefix = "Invalid model. Available models: "
    detail = r.json()["detail"]
    assert detail.startswith(prefix)
    assert sorted(detail[len(prefix) :].split(", ")) == sorted(backend.models)
    r = client.post(CHAT, headers=bearer("sk-smartspec-" + "y" * 43), json=chat_body())
    assert r.status_code == 401


# ------------------------------------------------------------------------------------------------
# rate limit
# ------------------------------------------------------------------------------------------------


def test_rate_limit(backend: BackendStandIn, client: httpx.Client) -> None:
    backend.rate_limit_per_minute = 3
    for _ in range(3):
        assert client.get("/v1/opencode/health").status_code == 200
    r = client.get("/api/auth/me")  # across all routes
    assert r.status_code == 429 and r.json() == RATE_LIMIT_BODY
    # contract "429 carries no Retry-After"
    assert "retry-after" not in r.headers

    backend.rate_window_seconds = 0.1
    time.sleep(0.15)
    assert client.get("/v1/opencode/health").status_code == 200


def test_force_429(backend: BackendStandIn, client: httpx.Client) -> None:
    backend.force_429(2, retry_after=7)
    for _ in range(2):
        r = client.get("/v1/opencode/health")
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json() == RATE_LIMIT_BODY
    assert client.get("/v1/opencode/health").status_code == 200
    assert [r.status for r in backend.requests] == [429, 429, 200]


# ------------------------------------------------------------------------------------------------
# lifecycle: slow backend, prompt stop, quiet
# ------------------------------------------------------------------------------------------------


def test_delay_all_causes_client_timeout(backend: BackendStandIn) -> None:
    backend.delay_all(60.0)
    with httpx.Client(base_url=backend.url, timeout=0.1) as c, pytest.raises(httpx.ReadTimeout):
        c.get("/v1/opencode/health")
    t0 = time.monotonic()
    backend.stop()
    assert time.monotonic() - t0 < 20, "stop waited for the delayed request"


@pytest.mark.parametrize("step", [Hang(), Hang(after_headers=True), Delay(30.0)])
def test_stop_is_prompt_during_hang(step: Step) -> None:
    backend = BackendStandIn().start()
    outcome: list[str] = []
    try:
        backend.add_user(EMAIL, PASSWORD)
        key = backend.issue_api_key(EMAIL)
        backend.script(step)

        def call() -> None:
            try:
                with httpx.Client(timeout=10.0) as c:
                    r = c.post(backend.url + CHAT, headers=bearer(key), json=chat_body())
                    outcome.append(f"status {r.status_code}")
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 2.0
        while not backend.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.chat_requests()
        time.sleep(0.05)
        t0 = time.monotonic()
        backend.stop()
        assert time.monotonic() - t0 < 20, "stop waited for the hanging request"
        caller.join(20.0)
        assert not caller.is_alive()
    finally:
        backend.stop()
    assert len(outcome) == 1 and not outcome[0].startswith("status"), outcome
    assert backend.errors == []


def test_new_instance_after_stop_and_port_closed() -> None:
    first = BackendStandIn()
    with first:
        url = first.url
    with httpx.Client(timeout=1.0) as c:
        with pytest.raises(httpx.ConnectError):
            c.get(url + "/health")
        with BackendStandIn() as second:
            assert c.get(second.url + "/health").status_code == 200


def test_server_is_quiet(backend: BackendStandIn, capfd: pytest.CaptureFixture[str]) -> None:
    key = backend.issue_api_key(EMAIL)
    with httpx.Client(base_url=backend.url, timeout=5.0) as c:
        c.get("/nope")
        c.get("/v1/opencode/models", headers=bearer(key))
        c.post("/api/auth/login", content=b"not json", headers={"Content-Type": "application/json"})
        stream_chat(c, key)
    backend.stop()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
