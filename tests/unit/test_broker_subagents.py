"""Sub-agents (OpenCode child sessions) count toward the task of the session that started them:
the parentID lookup, the budget, the meter and the usage totals (issue 9)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartspec_desktop.core.broker.budget import Budgets
from smartspec_desktop.core.broker.meter import read_records
from smartspec_desktop.core.broker.sessions import SessionRoots
from smartspec_desktop.core.servers.brokerlink import summarize, usage_report
from tests.backend_standin import BackendStandIn, Text
from tests.unit.test_broker import CONTROL, EMAIL, TOKEN, backend, make_broker

__all__ = ["backend"]  # the fixture (a stand-in with the test user)

PASSWORD = "server-password-0123"


class _OpenCode(ThreadingHTTPServer):
    """Answers ``GET /session/{id}`` like OpenCode 1.18.33 (``parentID`` for a child)."""

    def __init__(self, parents: dict[str, str | None]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.parents = parents
        self.asked: list[str] = []
        self.down = False


class _Handler(BaseHTTPRequestHandler):
    server: _OpenCode

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        sid = self.path.removeprefix("/session/")
        self.server.asked.append(sid)
        expected = "Basic " + base64.b64encode(f"opencode:{PASSWORD}".encode()).decode()
        body: dict[str, str | None] = {}
        if self.server.down:
            status = 503
        elif self.headers.get("Authorization") != expected:
            status = 401
        elif sid not in self.server.parents:
            status, body = 404, {"name": "NotFoundError"}
        else:
            status, body = 200, {"id": sid, "title": "t"}
            if self.server.parents[sid]:
                body["parentID"] = self.server.parents[sid]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def opencode() -> Iterator[_OpenCode]:
    server = _OpenCode({"ses_root": None, "ses_child": "ses_root", "ses_grandchild": "ses_child"})
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_roots_follow_the_parent_chain_once_per_session(opencode: _OpenCode) -> None:
    roots = SessionRoots(opencode.server_address[1], PASSWORD)
    assert roots.root("ses_grandchild") == "ses_root"
    assert roots.root("ses_child") == "ses_root"
    assert roots.root("ses_root") is None
    assert roots.root("ses_unknown") is None  # 404: a session of no server counts as its own
    assert roots.root("ses_grandchild") == "ses_root"
    assert sorted(opencode.asked) == ["ses_child", "ses_grandchild", "ses_root", "ses_unknown"]
    assert PASSWORD not in repr(roots)


def test_a_server_that_cannot_answer_is_asked_again(opencode: _OpenCode) -> None:
    roots = SessionRoots(opencode.server_address[1], PASSWORD)
    opencode.down = True
    assert roots.root("ses_child") is None  # this call counts as the child's own
    opencode.down = False
    assert roots.root("ses_child") == "ses_root"  # the failure was not remembered
    wrong = SessionRoots(opencode.server_address[1], "wrong-password")
    assert wrong.root("ses_child") is None


def test_budget_charges_and_stops_the_root_sessions_task(tmp_path: Path) -> None:
    b = Budgets(tmp_path / "budget.json")
    b.set_task("task-1", 100, ["ses_root"])
    assert b.task_of("ses_child", root="ses_root") == "task-1"
    assert b.task_of("ses_child") is None
    b.charge("ses_child", 80, root="ses_root")
    assert b.check("ses_child", root="ses_root") is None
    b.charge("ses_child", 30, root="ses_root")
    refusal = b.check("ses_child", root="ses_root")
    assert refusal is not None and refusal.task == "task-1" and refusal.used == 110
    assert b.check("ses_root") is not None  # the main session is stopped as well
    assert b.check("ses_other") is None
    assert Budgets(tmp_path / "budget.json").state()["tasks"]["task-1"]["used"] == 110


def test_usage_totals_count_a_sub_agent_under_its_root() -> None:
    records = [
        {"time": 10.0, "session": "ses_root", "root": None, "total_tokens": 5,
         "prompt_tokens": 4, "completion_tokens": 1, "status": 200},
        {"time": 11.0, "session": "ses_child", "root": "ses_root", "total_tokens": 7,
         "prompt_tokens": 5, "completion_tokens": 2, "status": 200},
        {"time": 12.0, "session": "ses_other", "total_tokens": 100,
         "prompt_tokens": 90, "completion_tokens": 10, "status": 200},
    ]  # fmt: skip
    assert summarize(records, sessions=["ses_root"]).total_tokens == 12
    assert summarize(records, sessions=["ses_child"]).total_tokens == 7
    by_session = usage_report(records, now=12.0)["by_session"]
    assert {s: u["total_tokens"] for s, u in by_session.items()} == {
        "ses_root": 12,
        "ses_other": 100,
    }


def test_broker_meters_the_root_and_charges_its_task(
    tmp_path: Path, backend: BackendStandIn, opencode: _OpenCode
) -> None:
    broker = make_broker(tmp_path, backend.url, backend.issue_api_key(EMAIL))
    broker.session_roots = SessionRoots(opencode.server_address[1], PASSWORD).root
    try:
        base = f"http://127.0.0.1:{broker.port}/_control"
        httpx.put(
            f"{base}/budget/tasks/task-1",
            json={"cap": 200, "sessions": ["ses_root"]},
            headers=CONTROL,
            timeout=10,
        ).raise_for_status()
        backend.script(Text("a"), Text("b"))  # 120 tokens each

        def chat(session: str) -> httpx.Response:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            headers = dict(TOKEN, **{"x-session-id": session})
            return httpx.post(
                f"{broker.url}/chat/completions", json=body, headers=headers, timeout=10
            )

        assert chat("ses_child").status_code == 200
        assert chat("ses_grandchild").status_code == 200
        refused = chat("ses_child")
        assert refused.status_code == 400
        assert refused.json()["error"]["message"].startswith("Paused: budget of 200 tokens")
        state = httpx.get(f"{base}/budget", headers=CONTROL, timeout=10).json()
        assert state["tasks"]["task-1"]["used"] == 240
        records = read_records(tmp_path / "usage.jsonl")
        assert [(r["session"], r["root"]) for r in records] == [
            ("ses_child", "ses_root"),
            ("ses_grandchild", "ses_root"),
            ("ses_child", "ses_root"),
        ]
    finally:
        broker.stop()
