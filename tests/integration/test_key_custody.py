"""Key custody end to end (issue 9): the normal `start`/`run` with the real OpenCode 1.18.33.

The server runs behind its gateway broker: the agent, every process of the server's tree, the
server's config and every file the app or OpenCode writes never hold the real key; the broker
meters every call and enforces token budgets; key rotation reaches a running server; the real
backend's error chunk gives one clean line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psutil
import pytest

from smartspec_desktop.core.broker.errors import gateway_failure
from smartspec_desktop.core.opencode.client import OpenCodeClient
from smartspec_desktop.core.opencode.tasks import run_task
from smartspec_desktop.core.servers.brokerlink import BrokerControl, new_task_id
from smartspec_desktop.core.storage.secrets import FileStore
from tests.backend_standin import REAL_STREAM_ERROR, Text, ToolCall
from tests.conftest import Sandbox

pytestmark = pytest.mark.integration

DUMP = "env > agent_env.txt; tr '\\0' '\\n' < /proc/$PPID/environ > parent_env.txt; echo dumped"


def _tree(sup_pid: int) -> list[psutil.Process]:
    sup = psutil.Process(sup_pid)
    return [sup, *sup.children(recursive=True)]


def _secret(sandbox: Sandbox, server_id: str, name: str) -> str:
    # The sandbox has no keyring: the server's secrets are in the 0600 fallback files.
    value = FileStore(sandbox.data_dir / "state" / "secrets").get(f"{name}:{server_id}")
    assert value, f"no {name} stored for {server_id}"
    return value


def _record(sandbox: Sandbox) -> dict[str, object]:
    (rec,) = sandbox.state()["servers"].values()
    assert isinstance(rec, dict)
    return rec


def _control(sandbox: Sandbox, rec: dict[str, object]) -> BrokerControl:
    port = rec["broker_port"]
    assert isinstance(port, int) and port > 0
    return BrokerControl(port, _secret(sandbox, str(rec["server_id"]), "broker-control"))


def test_the_key_never_reaches_opencode_and_every_call_is_metered(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    key = sandbox.api_key
    started = sandbox.cli_json("start", str(ws))
    assert started["broker_port"] > 0
    rec = _record(sandbox)
    assert "broker-control" not in json.dumps(rec) and key not in json.dumps(rec)

    sandbox.backend.script(
        ToolCall("bash", {"command": DUMP, "description": "dump the environment"}),
        Text("Dumped.", prompt_tokens=300, completion_tokens=7),
    )
    r = sandbox.cli("run", str(ws), "Dump your environment")
    assert r.returncode == 0, r.stderr
    agent_env = (ws / "agent_env.txt").read_text()
    parent_env = (ws / "parent_env.txt").read_text()
    assert "PATH=" in agent_env and "PATH=" in parent_env, "the tool call did not run"
    assert key not in agent_env and key not in parent_env
    assert "SMARTSPEC_API_KEY" not in agent_env + parent_env
    assert "SMARTSPEC_BROKER_URL=http://127.0.0.1:" in parent_env  # the broker token may be

    # The backend still got every call, with the real key (the broker swapped the token).
    chats = sandbox.backend.chat_requests()
    assert len(chats) == 2 and all(c.bearer_token == key for c in chats)

    # GET /config with the server password: the token reference, never the key.
    password = _secret(sandbox, str(rec["server_id"]), "server-password")
    with httpx.Client(auth=("opencode", password), timeout=30, trust_env=False) as http:
        config = http.get(f"{rec['url']}/config")
    assert config.status_code == 200 and key not in config.text

    # No process of the server's tree holds it (supervisor, broker, opencode, its children).
    sup_pid = rec["supervisor_pid"]
    assert isinstance(sup_pid, int)
    procs = _tree(sup_pid)
    assert len(procs) >= 2
    for p in procs:
        environ = Path(f"/proc/{p.pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        assert key.encode() not in environ and key.encode() not in cmdline, p

    # No file the app or OpenCode wrote holds it (data dir, the sandbox HOME, the workspace).
    for root in (sandbox.data_dir, sandbox.root / "home", ws):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                assert key.encode() not in f.read_bytes(), f

    # Metering: what the stand-in reported, per task (run), per session and per workspace.
    assert "usage: 2 calls · 427 tokens (400 in / 27 out)" in r.stderr
    usage = sandbox.cli_json("usage", str(ws))
    assert usage["total"]["calls"] == 2 and usage["total"]["prompt_tokens"] == 400
    assert usage["total"]["completion_tokens"] == 27
    (sid,) = usage["by_session"]
    assert usage["by_session"][sid]["total_tokens"] == 427
    (session,) = sandbox.cli_json("sessions", str(ws))
    assert session["id"] == sid and session["usage"]["calls"] == 2
    assert "cost" not in session
    (status,) = sandbox.cli_json("status")
    assert status["usage"]["today"]["total_tokens"] == 427
    text = sandbox.cli("usage", str(ws))
    assert text.returncode == 0 and "2 calls · 427 tokens" in text.stdout

    # The real backend's error chunk (its chat route is broken today) gives one clean line,
    # and no retry.
    sandbox.backend.gateway = "real"
    t0 = time.monotonic()
    r = sandbox.cli("run", str(ws), "hello")
    assert r.returncode == 1
    expected = gateway_failure(REAL_STREAM_ERROR, sandbox.backend.url)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {expected}"], r.stderr
    assert "ZodError" not in r.stderr and "invalid_union" not in r.stderr
    assert len(sandbox.backend.chat_requests()) == 3, "no retry"
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_a_budget_stops_a_looping_task_and_continue_resumes_it(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    sandbox.cli_json("start", str(ws))
    loop = [
        ToolCall("bash", {"command": f"echo {i} >> loop.txt", "description": f"step {i}"})
        for i in range(6)
    ]
    sandbox.backend.script(*loop)
    r = sandbox.cli("run", str(ws), "Loop forever", "--budget", "250")
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "Paused: budget of 250 tokens reached" in line and "--budget" in line
    # 120 tokens per call: the third call crossed 250 and the fourth was refused.
    assert len(sandbox.backend.chat_requests()) == 3
    assert (ws / "loop.txt").read_text().split() == ["0", "1", "2"]
    assert "usage: 4 calls · 360 tokens" in r.stderr and "1 refused" in r.stderr

    # Continue (+N) as the window does it: raise the task's budget, prompt the session again.
    rec = _record(sandbox)
    control = _control(sandbox, rec)
    tasks = control.budget()["tasks"]
    ((task_id, task),) = tasks.items()
    assert task["paused"] and task["used"] == 360
    control.raise_task(task_id, 1000)
    sandbox.backend.clear_script()
    sandbox.backend.script(Text("Stopped looping.", prompt_tokens=10, completion_tokens=2))
    password = _secret(sandbox, str(rec["server_id"]), "server-password")
    with OpenCodeClient(str(rec["url"]), password, timeout=30) as client:
        state = run_task(client, "Continue.", session_id=task["sessions"][0], timeout=120)
    assert "Stopped looping." in state.text
    assert control.budget()["tasks"][task_id]["used"] == 372

    # The budget outlives the server: it lives in the broker's budget file.
    assert sandbox.cli("stop", str(ws)).returncode == 0
    sandbox.cli_json("start", str(ws))
    again = _control(sandbox, _record(sandbox)).budget()["tasks"][task_id]
    assert again["used"] == 372 and again["cap"] == 1360
    assert new_task_id() != task_id


def test_5000_models_and_a_workspace_day_cap_reach_the_normal_start(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    sandbox.backend.models = [f"vendor/model-{i:05d}" for i in range(5000)] + [
        "{file:/etc/hostname}"
    ]
    sandbox.write_settings(workspace_day_caps={str(ws.resolve()): 100})
    started = sandbox.cli_json("start", str(ws))
    assert started["status"] == "running" and started["model"] == "vendor/model-00000"
    models_file = sandbox.data_dir / "state" / "models" / f"{started['server_id']}.json"
    listed = json.loads(models_file.read_text())["provider"]["smartspec"]["models"]
    assert len(listed) == 5000 and "{file:/etc/hostname}" not in listed
    assert models_file.stat().st_mode & 0o077 == 0
    log = Path(started["log_path"]).read_text()
    assert "gateway broker on http://127.0.0.1:" in log

    # The day cap from settings reached the broker: the second run is refused.
    sandbox.backend.script(Text("one"), Text("two"))
    assert sandbox.cli("run", str(ws), "first").returncode == 0
    r = sandbox.cli("run", str(ws), "second")
    assert r.returncode == 1
    assert "Paused: budget of 100 tokens reached (today's workspace budget" in r.stderr
    assert len(sandbox.backend.chat_requests()) == 1


def test_key_rotation_reaches_a_running_server(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    sandbox.cli_json("start", str(ws))
    new_key = sandbox.backend.issue_api_key(sandbox.email, name="rotated")
    # The sandbox has no keyring: the key lives in SMARTSPEC_API_KEY, so push it as the
    # Account page / `key set` would (they call the same ServerManager.push_key).
    control = _control(sandbox, _record(sandbox))
    control.set_key(new_key)
    sandbox.backend.script(Text("With the new key."))
    r = sandbox.cli("run", str(ws), "hello", env=dict(sandbox.env, SMARTSPEC_API_KEY=new_key))
    assert r.returncode == 0, r.stderr
    assert sandbox.backend.chat_requests()[-1].bearer_token == new_key

    # `key delete` with no key left anywhere: running servers lose theirs at once.
    env = dict(sandbox.env)
    env.pop("SMARTSPEC_API_KEY")
    gone = sandbox.cli("key", "delete", env=env)
    assert gone.returncode == 0, gone.stderr
    assert "1 running server(s) no longer have a key" in gone.stdout
    assert control.health()["has_key"] is False
    before = len(sandbox.backend.chat_requests())
    r = sandbox.cli("run", str(ws), "hello again")
    assert r.returncode == 1
    assert "has no API key" in r.stderr and len(sandbox.backend.chat_requests()) == before
