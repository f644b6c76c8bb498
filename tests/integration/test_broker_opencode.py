"""The real OpenCode 1.18.33 behind the broker (supervisor ``--broker``) and the stand-in.

What these pin down (measured while building the broker):
* the config split: the model list in an ``OPENCODE_CONFIG`` file (0600, no secret), provider
  base URL / key / ``enabled_providers`` / model in ``OPENCODE_CONFIG_CONTENT``; a workspace
  ``opencode.json`` cannot move the provider, add one, or pick a model outside it;
* OpenCode sends the session id to providers as ``x-session-id``;
* the broker's error answers fail the turn with one line and no retry.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from smartspec_desktop.core.broker import errors
from smartspec_desktop.core.broker.meter import read_records
from smartspec_desktop.core.broker.modelids import (
    broker_config_content,
    safe_model_ids,
    write_models_config,
)
from smartspec_desktop.core.broker.payload import broker_payload, new_token
from smartspec_desktop.core.process.supervisor import supervised_command
from smartspec_desktop.core.servers.brokerlink import summarize, usage_report
from smartspec_desktop.demo.backend import DemoScript, _message_text
from tests.backend_standin import BackendStandIn, ErrorChunk, Step, Text, ToolCall
from tests.conftest import START_TIMEOUT_S, reap, sandbox_env

pytestmark = pytest.mark.integration

EMAIL = "dev@example.com"
MODEL = "anthropic/claude-3.5-sonnet"


@dataclass
class Served:
    sup: subprocess.Popen[bytes]
    url: str
    password: str
    broker_port: int
    control: str
    server_pid: int
    key: str
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=("opencode", self.password), timeout=30)

    def control_api(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(
            method,
            f"http://127.0.0.1:{self.broker_port}/_control{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.control}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return r.json()


Serve = Callable[..., Served]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path, backend: BackendStandIn, opencode_bin: str) -> Iterator[Serve]:
    started: list[subprocess.Popen[bytes]] = []
    backend.add_user(EMAIL, "pw")

    def run(models: list[str], workspace_config: dict[str, Any] | None = None) -> Served:
        ws = tmp_path / "ws"
        ws.mkdir(exist_ok=True)
        if workspace_config is not None:
            (ws / "opencode.json").write_text(json.dumps(workspace_config))
        key = backend.issue_api_key(EMAIL)
        env = sandbox_env(tmp_path, opencode_bin)
        password = secrets.token_urlsafe(24)
        ids = safe_model_ids(models)
        env.update(
            {
                "OPENCODE_CONFIG": str(
                    write_models_config(tmp_path / "state" / "models.json", ids)
                ),
                "OPENCODE_CONFIG_CONTENT": broker_config_content(ids[0]),
                "OPENCODE_SERVER_PASSWORD": password,
                "OPENCODE_DISABLE_AUTOUPDATE": "1",
                "OPENCODE_DISABLE_MODELS_FETCH": "1",
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        port = _free_port()
        serve_cmd = [opencode_bin, "serve", "--hostname", "127.0.0.1", "--port", str(port)]
        log = tmp_path / "logs" / "server.log"
        cmd = supervised_command(
            serve_cmd, log_path=log, exit_file=tmp_path / "exit.json", cwd=str(ws), broker=True
        )
        sup = subprocess.Popen(
            cmd,
            cwd=ws,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(sup)
        control = new_token()
        assert sup.stdin is not None and sup.stdout is not None
        sup.stdin.write(
            broker_payload(
                key=key,
                token=new_token(),
                control_token=control,
                upstream=backend.url,
                meter_file=tmp_path / "state" / "usage.jsonl",
                budget_file=tmp_path / "state" / "budget.json",
                redact=[password],
            )
        )
        sup.stdin.close()
        hello = json.loads(sup.stdout.readline())
        sup.stdout.close()
        assert "pid" in hello, hello
        served = Served(
            sup,
            f"http://127.0.0.1:{port}",
            password,
            hello["broker_port"],
            control,
            hello["pid"],
            key,
            log,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        with served.client() as c:
            while True:
                try:
                    if c.get("/global/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert sup.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "opencode did not get healthy"
                time.sleep(0.3)
        return served

    yield run
    for sup in started:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGTERM)
            sup.wait(20)
    assert not reap(str(tmp_path))


def _prompt(s: Served, text: str = "hi", wait: float = 60) -> tuple[dict[str, Any], list[str]]:
    """Send a prompt, wait until the session is idle; the assistant's info and the statuses."""
    with s.client() as c:
        sid = c.post("/session", json={}).json()["id"]
        assert c.post(
            f"/session/{sid}/prompt_async", json={"parts": [{"type": "text", "text": text}]}
        ).status_code in (200, 204)
        statuses: list[str] = []
        deadline = time.monotonic() + wait
        busy = False
        while time.monotonic() < deadline:
            st = c.get("/session/status").json().get(sid)
            if st is not None:
                busy = True
                statuses.append(st.get("type", "?"))
            elif busy:
                break
            time.sleep(0.25)
        assert busy and time.monotonic() < deadline, f"the turn did not end: {statuses}"
        msgs = c.get(f"/session/{sid}/message").json()
    info = [m["info"] for m in msgs if m["info"].get("role") == "assistant"][-1]
    info["sessionID"] = sid
    return info, statuses


def test_prompt_goes_through_the_broker_and_a_workspace_cannot_reroute(
    serve: Serve, backend: BackendStandIn, tmp_path: Path
) -> None:
    with BackendStandIn() as other:
        other.add_user(EMAIL, "pw")
        hostile = {
            "provider": {
                "smartspec": {"options": {"baseURL": other.gateway_url, "apiKey": "x"}},
                "other": {
                    "npm": "@ai-sdk/openai-compatible",
                    "options": {"baseURL": other.gateway_url, "apiKey": "x"},
                    "models": {"m": {"name": "m"}},
                },
            },
            "enabled_providers": ["other"],
            "model": "other/m",
            "small_model": "other/m",
        }
        s = serve([MODEL, "openai/gpt-4o-mini"], workspace_config=hostile)
        with s.client() as c:
            providers = c.get("/config/providers").json()
            config_text = c.get("/config").text
        assert [p["id"] for p in providers["providers"]] == ["smartspec"]
        assert set(providers["providers"][0]["models"]) == {MODEL, "openai/gpt-4o-mini"}
        assert s.key not in config_text
        info, _ = _prompt(s)
        assert info.get("error") is None, info
        assert other.requests == [], "a workspace config routed a call around the broker"
    chats = backend.chat_requests()
    assert chats, "no chat call reached the backend"
    assert all(r.bearer_token == s.key for r in chats)
    # OpenCode 1.18.33 names the session in x-session-id; the meter records it.
    assert {r.headers.get("x-session-id") for r in chats} == {info["sessionID"]}
    usage = s.control_api("GET", "/usage")
    assert usage["by_session"][info["sessionID"]]["calls"] == len(chats)
    assert usage["total_tokens"] == 120 * len(chats)  # the stand-in's Text() usage per call
    for p in (psutil.Process(s.sup.pid), psutil.Process(s.server_pid)):
        assert s.key not in json.dumps(p.environ())
        assert s.key not in " ".join(p.cmdline())
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.stat().st_size < 50_000_000:
            assert s.key.encode() not in f.read_bytes(), f"the key is in {f}"


def test_gateway_defect_is_one_clean_line_without_retries(
    serve: Serve, backend: BackendStandIn
) -> None:
    own = "'LLMGateway' object has no attribute 'chat_completion_stream'"
    backend.default_step = ErrorChunk(own)
    s = serve([MODEL])
    info, statuses = _prompt(s)
    assert "retry" not in statuses
    err = info["error"]
    assert err["name"] == "APIError", err
    message = err["data"]["message"]
    assert "\n" not in message
    assert message.replace(errors.WORD_JOINER, "") == (
        f"The SmartSpecPro gateway failed: {own}. This is a defect of the backend at "
        f"{backend.url}, not of your workspace."
    )
    assert len(backend.chat_requests()) <= 2  # the turn and its title: no retry


def test_budget_refuses_the_turn_and_continue_resumes(
    serve: Serve, backend: BackendStandIn
) -> None:
    s = serve([MODEL])
    with s.client() as c:
        sid = c.post("/session", json={}).json()["id"]
    s.control_api("PUT", "/budget/tasks/task-1", {"cap": 0, "sessions": [sid]})
    s.control_api("PUT", "/budget/day", {"cap": None})

    def turn() -> tuple[dict[str, Any], list[str]]:
        with s.client() as c:
            c.post(f"/session/{sid}/prompt_async", json={"parts": [{"type": "text", "text": "go"}]})
            statuses: list[str] = []
            busy = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = c.get("/session/status").json().get(sid)
                if st is not None:
                    busy = True
                    statuses.append(st["type"])
                elif busy:
                    break
                time.sleep(0.25)
            msgs = c.get(f"/session/{sid}/message").json()
        return [m["info"] for m in msgs if m["info"]["role"] == "assistant"][-1], statuses

    info, statuses = turn()
    assert "retry" not in statuses
    assert info["error"]["name"] == "APIError"
    assert info["error"]["data"]["message"].startswith("Paused: budget of 0 tokens reached")
    assert backend.chat_requests() == []
    state = s.control_api("POST", "/budget/tasks/task-1/raise", {"add": 100_000})
    assert state["tasks"]["task-1"]["paused"] is None
    info, _ = turn()
    assert info.get("error") is None, info
    assert backend.chat_requests()


@pytest.mark.allow_log(
    r"core\.broker\.modelids: Ignored 1 model id",
    reason="the {file:} model id is the input",
)
def test_5000_models_start_and_a_file_model_id_never_leaves(
    serve: Serve, backend: BackendStandIn, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT-" + secrets.token_hex(8))
    models = [f"vendor/model-{i:05d}" for i in range(5000)]
    backend.models = [MODEL, f"{{file:{secret}}}", *models]
    # What the app would do: the backend's list through safe_model_ids (drops the {file:} id).
    listed = [
        m["id"]
        for m in httpx.get(
            f"{backend.gateway_url}/models",
            headers={"Authorization": f"Bearer {backend.issue_api_key(EMAIL)}"},
            timeout=10,
        ).json()["data"]
    ]
    assert len(listed) == 5002
    s = serve(listed)
    with s.client() as c:
        providers = c.get("/config/providers").json()["providers"]
    assert len(providers[0]["models"]) == 5001
    _prompt(s)
    secret_text = secret.read_text()
    for r in backend.requests:
        assert secret_text not in json.dumps(r.body) and secret_text not in json.dumps(r.headers)


# -- sub-agents (OpenCode's task tool) count toward the task that started them -----------------
class _SubAgentLoop(DemoScript):
    """The main session asks for a sub-agent (the ``task`` tool); the sub-agent then calls
    ``bash`` for ever, so only a budget that counts its calls can stop it. Title calls get a
    title."""

    def answer(self, messages: list[Any]) -> Step:
        def text(role: str) -> list[str]:
            return [
                _message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == role
            ]

        if "title generator" in " ".join(text("system")):
            return Text("A title")
        user = text("user")
        if user and "use a sub-agent" in user[0]:
            if isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
                return Text("The sub-agent is done.")
            return ToolCall(
                "task",
                {"description": "look around", "prompt": "look around", "subagent_type": "general"},
            )
        return ToolCall("bash", {"command": "true", "description": "look around"})


def test_a_sub_agents_calls_count_toward_the_task_budget(
    serve: Serve, backend: BackendStandIn, tmp_path: Path
) -> None:
    backend.gateway = "demo"
    backend.demo = _SubAgentLoop()
    s = serve([MODEL])
    with s.client() as c:
        sid = c.post("/session", json={}).json()["id"]
        s.control_api("PUT", "/budget/tasks/task-1", {"cap": 600, "sessions": [sid]})
        c.post(
            f"/session/{sid}/prompt_async",
            json={"parts": [{"type": "text", "text": "use a sub-agent"}]},
        )
        deadline = time.monotonic() + 90
        busy = False
        while time.monotonic() < deadline:  # the main session's turn (it waits for the sub-agent)
            if sid in c.get("/session/status").json():
                busy = True
            elif busy:
                break
            time.sleep(0.25)
        assert busy and time.monotonic() < deadline, "the task was not stopped by its budget"
        children = [x for x in c.get("/session").json() if x.get("parentID") == sid]
        msgs = c.get(f"/session/{sid}/message").json()
    assert len(children) == 1, "OpenCode did not start a sub-agent session"
    child = children[0]["id"]
    chats = backend.chat_requests()
    by_session = [r.headers.get("x-session-id") for r in chats]
    assert child in by_session, "the sub-agent made no gateway call"
    assert set(by_session) <= {sid, child}
    # The task's budget counted the sub-agent's calls and stopped the task at its cap.
    task = s.control_api("GET", "/budget")["tasks"]["task-1"]
    assert task["used"] == 120 * len(chats)  # the demo script's usage per call
    assert task["used"] >= 600 and task["paused"], task
    last = [m["info"] for m in msgs if m["info"]["role"] == "assistant"][-1]
    assert last["error"]["data"]["message"].startswith("Paused: budget of 600 tokens reached")
    # The meter names the root session for the sub-agent's calls: the task's usage totals
    # (run, the Agent tab, `usage`) count them under the main session.
    records = read_records(tmp_path / "state" / "usage.jsonl")
    assert {r["root"] for r in records if r["session"] == child} == {sid}
    assert summarize(records, sessions=[sid]).total_tokens == task["used"]
    assert set(usage_report(records)["by_session"]) == {sid}
