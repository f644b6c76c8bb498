"""The backend stand-in behaves like the real SmartSpecPro service on every point of
backend-contract.md's "Measured differences from the happy path" (each test cites its line), and
the demo gateway / standalone runner built on it work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.backend_standin import (
    DEFAULT_KEY_DESCRIPTION,
    RATE_LIMIT_BODY,
    REAL_CHAT_ERROR,
    REAL_MODELS,
    REAL_STREAM_ERROR,
    UNSUPPORTED_MEDIA_BODY,
    BackendStandIn,
    ErrorChunk,
    Text,
    ToolCall,
)

EMAIL = "dev@example.com"
PASSWORD = "correct horse"
CHAT = "/v1/opencode/chat/completions"
NAIVE_ISO = "%Y-%m-%dT%H:%M:%S.%f"


def start(gateway: str = "scripted") -> BackendStandIn:
    standin = BackendStandIn(gateway=gateway).start()
    standin.add_user(EMAIL, PASSWORD)
    return standin


@pytest.fixture
def backend() -> Iterator[BackendStandIn]:
    standin = start()
    try:
        yield standin
    finally:
        standin.stop()
    assert standin.errors == []


@pytest.fixture
def real() -> Iterator[BackendStandIn]:
    standin = start("real")
    try:
        yield standin
    finally:
        standin.stop()
    assert standin.errors == []


def http(standin: BackendStandIn) -> httpx.Client:
    return httpx.Client(base_url=standin.url, timeout=10.0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def chat(messages: list[Any] | None = None, model: str = "claude-3.5-sonnet", **kw: Any) -> Any:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages or [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    body.update(kw)
    return body


def sse(c: httpx.Client, key: str, body: dict[str, Any]) -> tuple[int, list[str]]:
    with c.stream("POST", CHAT, headers=bearer(key), json=body) as r:
        lines = [ln[len("data: ") :] for ln in r.iter_lines() if ln.startswith("data: ")]
        return r.status_code, lines


# -------------------------------------------------------------------------------- the gateway


def test_real_gateway_streams_one_string_error_line_without_done(real: BackendStandIn) -> None:
    # contract "Known defect": "HTTP 200 text/event-stream with exactly one line,
    # data: {"error": "'LLMGateway' object has no attribute 'chat_completion_stream'"} — the
    # error is a string ... and no [DONE]. Non-streaming answers 500".
    key = real.issue_api_key(EMAIL)
    with http(real) as c:
        status, lines = sse(c, key, chat())
        assert status == 200
        assert lines == [json.dumps({"error": REAL_STREAM_ERROR})]
        r = c.post(CHAT, headers=bearer(key), json=chat(stream=False))
        assert r.status_code == 500 and r.json() == {"detail": REAL_CHAT_ERROR}
    assert real.balance(EMAIL) == 10000  # nothing billed


def test_scripted_error_chunk_in_the_real_shape(backend: BackendStandIn) -> None:
    key = backend.issue_api_key(EMAIL)
    backend.script(ErrorChunk("boom", shape="string"))
    with http(backend) as c:
        assert sse(c, key, chat()) == (200, ['{"error": "boom"}'])


def test_array_or_null_content_is_422_in_real_mode(real: BackendStandIn) -> None:
    # contract "Chat validation: messages[].content must be a string: array content or null
    # (an assistant tool-call turn) → 422".
    key = real.issue_api_key(EMAIL)
    with http(real) as c:
        array = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        r = c.post(CHAT, headers=bearer(key), json=chat(array))
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "messages", 0, "content"]
        null = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": []},
        ]
        r = c.post(CHAT, headers=bearer(key), json=chat(null))
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "messages", 1, "content"]
        # tools, tool_choice, stream_options are silently dropped: still the defect line
        extras = chat(tools=[{"type": "function"}], tool_choice="auto")
        assert sse(c, key, extras)[0] == 200


def test_scripted_mode_keeps_the_happy_path_for_tool_calls(backend: BackendStandIn) -> None:
    key = backend.issue_api_key(EMAIL)
    backend.script(ToolCall("write", {"filePath": "a.txt", "content": "x"}), Text("ok"))
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    null = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]
    with http(backend) as c:
        status, lines = sse(c, key, chat(turns))
        assert status == 200 and lines[-1] == "[DONE]" and "tool_calls" in lines[0]
        # strict like the real service in every mode, unless turned off
        assert c.post(CHAT, headers=bearer(key), json=chat(null)).status_code == 422
        backend.strict_content = False
        assert sse(c, key, chat(null))[0] == 200


def test_model_substring_passes_and_the_list_is_the_real_one(backend: BackendStandIn) -> None:
    # contract "A model id that is a substring of a listed id (e.g. "gpt") passes validation";
    # "Real model list: 19 ids in short and vendor forms".
    key = backend.issue_api_key(EMAIL)
    with http(backend) as c:
        assert sse(c, key, chat(model="gpt"))[0] == 200
        r = c.post(CHAT, headers=bearer(key), json=chat(model="mistral"))
        assert r.status_code == 400
        models = c.get("/v1/opencode/models", headers=bearer(key)).json()["data"]
    ids = [m["id"] for m in models]
    assert len(ids) == 19 and ids == [m for m, _ in REAL_MODELS]
    assert "claude-3.5-sonnet" in ids and "anthropic/claude-3.5-sonnet" in ids
    assert {m["owned_by"] for m in models} == {"anthropic", "openai", "deepseek", "google", "meta"}


# -------------------------------------------------------------------------------- rate limit


def test_429_has_no_retry_after_and_a_fixed_window(backend: BackendStandIn) -> None:
    # contract "429 carries no Retry-After (... fixed 60 requests per 60 s per IP)".
    assert backend.rate_limit_per_minute == 60 and backend.rate_window_seconds == 60
    with http(backend) as c:
        statuses = [c.get("/v1/opencode/health").status_code for _ in range(61)]
        assert statuses[:60] == [200] * 60 and statuses[60] == 429
        r = c.get("/api/auth/me")  # across all routes
        assert r.status_code == 429 and r.json() == RATE_LIMIT_BODY
        assert "retry-after" not in r.headers
        backend.reset_rate_limit()
        backend.rate_limit_per_minute = 2
        backend.rate_window_seconds = 0.5
        assert [c.get("/health").status_code for _ in range(3)] == [200, 200, 429]
        time.sleep(0.6)  # a fixed window: once it has passed, the count starts again
        assert [c.get("/health").status_code for _ in range(3)] == [200, 200, 429]
    backend.force_429(1)
    with http(backend) as c:
        r = c.get("/health")
        assert r.status_code == 429 and "retry-after" not in r.headers


# ------------------------------------------------------------------------------ global rules


def test_non_json_content_type_is_415(backend: BackendStandIn) -> None:
    # contract "Non-JSON Content-Type on a POST → 415 {"error":"Unsupported Media Type",...}".
    with http(backend) as c:
        r = c.post(
            "/api/auth/login",
            content=b"email=a&password=b",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 415 and r.json() == UNSUPPORTED_MEDIA_BODY
        r = c.post("/api/auth/login", content=b"{}", headers={"Content-Type": ""})
        assert r.status_code == 400 and r.json() == {"error": "Missing Content-Type header"}
        r = c.post(
            "/api/auth/login",
            content=json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 200


# ----------------------------------------------------------------------------------- accounts


def test_login_email_is_validated_stripped_and_case_sensitive(backend: BackendStandIn) -> None:
    # contract "Login e-mail: validated as an e-mail ("admin" → 422 with pydantic's message),
    # surrounding spaces stripped, lookup case-sensitive".
    with http(backend) as c:
        r = c.post("/api/auth/login", json={"email": "admin", "password": "x"})
        assert r.status_code == 422
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "email"]
        assert err["msg"].startswith("value is not a valid email address: ")
        assert "@-sign" in err["msg"]
        r = c.post("/api/auth/login", json={"email": f"  {EMAIL} ", "password": PASSWORD})
        assert r.status_code == 200
        r = c.post("/api/auth/login", json={"email": EMAIL.upper(), "password": PASSWORD})
        assert r.status_code == 401 and r.json() == {"detail": "Incorrect email or password"}


def test_inactive_user_is_refused_but_its_key_passes_the_gateway(backend: BackendStandIn) -> None:
    # contract "Inactive users: login → 403 User account is inactive, JWT routes 403 with the
    # same detail, but an inactive user's API key still passes the gateway".
    key = backend.issue_api_key(EMAIL)
    token = backend.issue_token(EMAIL)
    backend.set_active(EMAIL, False)
    with http(backend) as c:
        r = c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert r.status_code == 403 and r.json() == {"detail": "User account is inactive"}
        r = c.get("/api/auth/me", headers=bearer(token))
        assert r.status_code == 403 and r.json() == {"detail": "User account is inactive"}
        assert c.get("/api/credits/balance", headers=bearer(token)).status_code == 403
        assert c.get("/v1/opencode/models", headers=bearer(key)).status_code == 200
        assert sse(c, key, chat())[0] == 200


def test_jwt_routes_not_authenticated_and_www_authenticate(backend: BackendStandIn) -> None:
    # contract "JWT routes: no Authorization → 403 Not authenticated; bad/expired JWT → 401
    # Invalid authentication credentials with WWW-Authenticate: Bearer".
    key = backend.issue_api_key(EMAIL)
    with http(backend) as c:
        for path in ("/api/auth/me", "/api/credits/balance", "/api/credits/transactions"):
            r = c.get(path)
            assert r.status_code == 403 and r.json() == {"detail": "Not authenticated"}, path
            for bad in ("eyJ.bad.token", key):  # an API key is not a JWT here
                r = c.get(path, headers=bearer(bad))
                assert r.status_code == 401, path
                assert r.json() == {"detail": "Invalid authentication credentials"}
                assert r.headers["www-authenticate"] == "Bearer"
        # the key routes keep their own rule (contract "Auth failures: no header → 422")
        assert c.get("/v1/opencode/api-keys").status_code == 422


def test_register(backend: BackendStandIn) -> None:
    # contract "Registration is POST /api/auth/register {"email","password","full_name"} → 201
    # with 10,000 credits (password: upper, lower, digit, special character)".
    new = {"email": "new@example.com", "full_name": "New User"}
    with http(backend) as c:
        for weak in ("short1!", "alllower1!", "ALLUPPER1!", "NoDigits!!", "NoSpecial1"):
            r = c.post("/api/auth/register", json=dict(new, password=weak))
            assert r.status_code == 422, weak
            assert r.json()["detail"][0]["loc"] == ["body", "password"]
            assert weak not in r.text  # the password is not echoed back
        r = c.post("/api/auth/register", json=dict(new, email="nope", password="Str0ng!pw"))
        assert r.status_code == 422
        r = c.post("/api/auth/register", json=dict(new, password="Str0ng!pw"))
        assert r.status_code == 201
        body = r.json()
        assert body["token_type"] == "bearer" and body["access_token"]
        assert body["user"]["email"] == "new@example.com"
        assert body["user"]["credits_balance"] == 10000.0
        assert body["user"]["full_name"] == "New User"
        r = c.post("/api/auth/register", json=dict(new, password="Str0ng!pw"))
        assert r.status_code == 400 and r.json() == {"detail": "Email already registered"}
        r = c.post("/api/auth/login", json={"email": "new@example.com", "password": "Str0ng!pw"})
        assert r.status_code == 200
        bal = c.get("/api/credits/balance", headers=bearer(body["access_token"])).json()
        assert bal["balance_credits"] == 10000


def test_balance_stats_extra_keys(backend: BackendStandIn) -> None:
    # contract "Balance stats has more keys than listed above".
    with http(backend) as c:
        stats = c.get("/api/credits/balance", headers=bearer(backend.issue_token(EMAIL))).json()[
            "stats"
        ]
    assert {"total_added_credits", "total_deducted_credits", "transaction_count"} < set(stats)
    assert stats["current_balance_credits"] == 10000


# ------------------------------------------------------------------------------------ API keys


def test_key_create_defaults_and_newest_first(backend: BackendStandIn) -> None:
    # contract "Key create: description: null is replaced by "API key for OpenCode CLI and
    # OpenWork integration"; expires_in_days: null → 90 days. Key list is newest first."
    token = backend.issue_token(EMAIL)
    with http(backend) as c:
        ids = []
        for name in ("first", "second", "third"):
            r = c.post(
                "/v1/opencode/api-keys",
                headers=bearer(token),
                json={"name": name, "expires_in_days": None, "description": None},
            )
            assert r.status_code == 200
            created = r.json()
            assert created["description"] == DEFAULT_KEY_DESCRIPTION
            made = datetime.strptime(created["created_at"], NAIVE_ISO)
            expires = datetime.strptime(created["expires_at"], NAIVE_ISO)
            assert expires - made == timedelta(days=90)
            ids.append(created["id"])
            time.sleep(0.002)
        listed = c.get("/v1/opencode/api-keys", headers=bearer(token)).json()
    assert [k["id"] for k in listed] == ids[::-1]


def test_rotating_a_revoked_key_gives_a_dead_key(backend: BackendStandIn) -> None:
    # contract "Rotating a revoked key answers 200 with a fresh raw key that stays inactive
    # (every call with it → 401)".
    token = backend.issue_token(EMAIL)
    with http(backend) as c:
        created = c.post("/v1/opencode/api-keys", headers=bearer(token), json={"name": "k"}).json()
        assert (
            c.delete(f"/v1/opencode/api-keys/{created['id']}", headers=bearer(token)).json()[
                "status"
            ]
            == "revoked"
        )
        r = c.post(f"/v1/opencode/api-keys/{created['id']}/rotate", headers=bearer(token), json={})
        assert r.status_code == 200
        fresh = r.json()["key"]
        assert fresh.startswith("sk-smartspec-") and fresh != created["key"]
        r = c.get("/v1/opencode/models", headers=bearer(fresh))
        assert r.status_code == 401 and r.json() == {"detail": "Invalid API key"}


def test_revoke_api_key_helper(backend: BackendStandIn) -> None:
    key = backend.issue_api_key(EMAIL)
    assert backend.revoke_api_key(key) is True
    assert backend.revoke_api_key("sk-smartspec-" + "n" * 43) is False
    with http(backend) as c:
        assert c.get("/v1/opencode/models", headers=bearer(key)).status_code == 401
    assert backend.api_keys(EMAIL)[0]["is_active"] is False


def test_timestamps_are_naive_utc(backend: BackendStandIn) -> None:
    # contract "Timestamps are naive ISO (no offset), UTC".
    key = backend.issue_api_key(EMAIL)
    with http(backend) as c:
        assert sse(c, key, chat())[0] == 200
        token = backend.issue_token(EMAIL)
        tx = c.get("/api/credits/transactions", headers=bearer(token)).json()["transactions"]
        keys = c.get("/v1/opencode/api-keys", headers=bearer(token)).json()
        health = c.get("/v1/opencode/health").json()
    stamps = [tx[0]["created_at"], keys[0]["created_at"], keys[0]["last_used_at"]]
    stamps.append(health["timestamp"])
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # the service's naive UTC
    for stamp in stamps:
        parsed = datetime.fromisoformat(stamp)
        assert parsed.tzinfo is None, stamp
        assert abs((now - parsed).total_seconds()) < 60, stamp


# ------------------------------------------------------------------------------- misbehaviour


def test_drip_and_padding_controls(backend: BackendStandIn) -> None:
    backend.pad_answers(3 * 1024 * 1024, path="/health")
    with http(backend) as c:
        r = c.get("/health")
        assert len(r.content) > 3 * 1024 * 1024 and r.json()["status"] == "healthy"
        assert len(c.get("/v1/opencode/health").content) < 1000
        backend.pad_answers(0)
        backend.drip_answers(0.2, path="/health")
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(backend.url + "/health", timeout=httpx.Timeout(5.0, read=0.1))


# -------------------------------------------------------------------------------------- demo


def test_demo_gateway_greets_writes_a_file_and_makes_a_todo_list() -> None:
    demo = start("demo")
    key = demo.issue_api_key(EMAIL)
    try:
        with http(demo) as c:
            status, lines = sse(c, key, chat([{"role": "user", "content": "hello"}]))
            assert status == 200 and lines[-1] == "[DONE]"
            text = "".join(
                json.loads(x)["choices"][0]["delta"].get("content") or ""
                for x in lines[:-1]
                if json.loads(x)["choices"]
            )
            assert "demo" in text.lower()

            _, lines = sse(c, key, chat([{"role": "user", "content": "write a file please"}]))
            assert '"write"' in lines[0] and lines[-1] == "[DONE]"
            args = "".join(
                tc["function"]["arguments"]
                for x in lines[:-1]
                for ch in json.loads(x)["choices"]
                for tc in ch["delta"].get("tool_calls", [])
            )
            assert json.loads(args)["filePath"] == "hello.txt"

            _, lines = sse(c, key, chat([{"role": "user", "content": "make a todo list"}]))
            assert '"todowrite"' in lines[0]

            after_tool = [
                {"role": "user", "content": "write a file"},
                {"role": "assistant", "content": "", "tool_calls": []},
                {"role": "tool", "tool_call_id": "c1", "content": "Wrote hello.txt"},
            ]
            _, lines = sse(c, key, chat(after_tool))
            assert "tool_calls" not in "".join(lines) and lines[-1] == "[DONE]"
        assert demo.balance(EMAIL) < 10000  # simulated credits
    finally:
        demo.stop()
    assert demo.errors == []


def test_standalone_runner_prints_a_key_and_a_login_and_serves() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smartspec_desktop.demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out = proc.stdout
        assert out is not None
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(out.readline() for _ in range(3)), daemon=True
        )
        reader.start()
        reader.join(30)
        assert len(lines) == 3, lines
        url = lines[0].split(" on ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:")
        email, password = lines[1].split(":", 1)[1].strip().split(" / ")
        key = lines[2].split(":", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=10.0) as c:
            assert c.get("/v1/opencode/models", headers=bearer(key)).status_code == 200
            r = c.post("/api/auth/login", json={"email": email, "password": password})
            assert r.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_standalone_runner_refuses_a_busy_port(backend: BackendStandIn) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "smartspec_desktop.demo", "--port", str(backend.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{backend.port}" in r.stderr and "--port" in r.stderr
