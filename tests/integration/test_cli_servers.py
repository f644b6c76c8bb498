"""End to end: the CLI with the real opencode and the backend stand-in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.backend_standin import ErrorChunk, HttpError, Text
from tests.conftest import Sandbox, server_processes, version_cache_file

pytestmark = pytest.mark.integration


def password_of(box: Sandbox, server_id: str) -> str:
    # No keyring in the default sandbox: the password sits in a 0600 file in the state dir.
    path = box.data_dir / "state" / "secrets" / f"server-password_{server_id}"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return path.read_text()


@pytest.mark.slow
def test_start_run_stop_end_to_end(sandbox: Sandbox, opencode_version: str) -> None:
    """The whole life of one server, and what each step must not break on the way (one
    server for all of it: a start is ~4 CPU-s): a folder name with spaces and non-ASCII, the
    reuse of the running server, its log, and neither the key nor its password in any
    process's argv or any file outside the secrets folder."""
    ws = sandbox.workspace("my projé ct")
    # The first start on this machine: no version of OpenCode known yet (the other tests find
    # it in the cache, as after the app's first run); probed, then cached.
    cache = version_cache_file(sandbox.data_dir)
    cache.unlink()
    # Nor has OpenCode run here: it installs its plugin package (the other tests' HOMEs have it).
    shutil.rmtree(sandbox.root / "home" / ".config" / "opencode")
    info = sandbox.cli_json("start", str(ws))
    assert opencode_version in json.loads(cache.read_text()).values()
    assert set(info) >= {
        "server_id",
        "workspace_path",
        "port",
        "url",
        "pid",
        "status",
        "created_at",
        "opencode_version",
    }
    assert info["status"] == "running" and info["reused"] is False
    assert info["workspace_path"] == str(ws.resolve())
    assert info["opencode_version"].startswith("1.18.")
    # The sandbox's private preferred range (a port of it may have been taken meanwhile: noted).
    lo, hi = sandbox.ports
    assert lo <= info["port"] <= hi or info["port_note"]
    assert info["url"] == f"http://127.0.0.1:{info['port']}"

    pw = password_of(sandbox, info["server_id"])
    assert pw not in json.dumps(info) and sandbox.api_key not in json.dumps(info)
    health = httpx.get(info["url"] + "/global/health", auth=("opencode", pw), timeout=5)
    assert health.status_code == 200 and health.json()["healthy"] is True
    assert httpx.get(info["url"] + "/global/health", timeout=5).status_code == 401
    # The first request naming the workspace makes OpenCode install its plugin package first
    # (~5 CPU-s; under load it took more than 10 s).
    providers = httpx.get(info["url"] + "/config/providers", auth=("opencode", pw), timeout=120)
    assert [p["id"] for p in providers.json()["providers"]] == ["smartspec"]

    before = sandbox.backend.balance(sandbox.email)
    sandbox.backend.default_step = Text(
        "The answer is 42.", prompt_tokens=1000, completion_tokens=500
    )
    r = sandbox.cli("run", str(ws), "what is the answer?")
    assert r.returncode == 0, r.stderr
    assert "The answer is 42." in r.stdout
    chats = sandbox.backend.chat_requests()
    assert chats, "OpenCode never called the gateway"
    assert all(c.headers["authorization"] == f"Bearer {sandbox.api_key}" for c in chats)
    assert all(c.body and c.body.get("stream") is True for c in chats)
    assert sandbox.backend.balance(sandbox.email) < before

    # The same folder spelled differently (a trailing slash, a symlink) reuses the server.
    link = sandbox.root / "link-to-ws"
    link.symlink_to(ws)
    for spelling in (str(ws) + "/", str(link)):
        again = sandbox.cli_json("start", spelling)
        assert again["reused"] is True, spelling
        assert (again["server_id"], again["pid"]) == (info["server_id"], info["pid"])
    assert [p.pid for p in server_processes(ws)] == [info["pid"]]

    logs = sandbox.cli("logs", str(ws), "-n", "200")
    assert logs.returncode == 0 and "opencode server listening" in logs.stdout

    # Neither the key nor the server's password in an argv, a log or a state file.
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        assert sandbox.api_key not in cmd and pw not in cmd
    for path in sandbox.data_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert sandbox.api_key not in text, path
            if "secrets" not in path.parts:
                assert pw not in text, path

    server = psutil.Process(info["pid"])
    tree = [server, *server.children(recursive=True)]
    r = sandbox.cli("stop", str(ws))
    assert r.returncode == 0, r.stderr
    gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive
    assert not server_processes(ws)
    assert sandbox.cli_json("status") == []


def test_concurrent_starts_yield_one_server(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    base = [
        sys.executable,
        "-m",
        "smartspec_desktop",
        "--data-dir",
        str(sandbox.data_dir),
        "--backend-url",
        sandbox.backend.url,
        "start",
        str(ws),
        "--json",
    ]
    procs = [
        subprocess.Popen(
            base, env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    infos = [json.loads(o[0]) for o in outs]
    assert len({i["server_id"] for i in infos}) == 1
    assert sorted(i["reused"] for i in infos) == [False, True, True]
    assert len(server_processes(ws)) == 1


@pytest.mark.faults
def test_busy_port_range_falls_back_to_a_free_port(sandbox: Sandbox) -> None:
    # Hold every port of a preferred range: a private one, because other programs (tests
    # running at the same time) take and free 3795-3800 while this test runs.
    held = hold_free_block(6)
    first, last = held[0].getsockname()[1], held[-1].getsockname()[1]
    sandbox.write_settings(port_range_start=first, port_range_end=last)
    try:
        r = sandbox.cli("start", str(sandbox.workspace()), "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert not first <= info["port"] <= last
        assert f"{first}-{last} were busy" in r.stderr and str(info["port"]) in r.stderr
    finally:
        for s in held:
            s.close()


def hold_free_block(n: int) -> list[socket.socket]:
    """Bind and listen on ``n`` consecutive free ports of 127.0.0.1."""
    for base in range(41000, 60000, 97):
        held = []
        for port in range(base, base + n):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
                held.append(s)
            except OSError:
                s.close()
                break
        if len(held) == n:
            return held
        for s in held:
            s.close()
    raise AssertionError(f"no {n} consecutive free ports")


@pytest.mark.faults
@pytest.mark.slow
def test_crashed_server_is_reported_with_its_exit_code(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    info = sandbox.cli_json("start", str(ws))
    supervisor = psutil.Process(info["pid"]).parent()
    assert supervisor is not None
    os.kill(info["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5  # generous: the exit record is written at once
    while time.monotonic() < deadline:
        (status,) = sandbox.cli_json("status")
        if status["status"] == "crashed":
            break
        time.sleep(0.2)
    assert status["status"] == "crashed"
    assert status["exit_code"] == -signal.SIGKILL
    # The supervisor wrote the exit record and left: nothing of the old session runs on.
    assert not psutil.wait_procs([supervisor], timeout=5)[1]
    assert not server_processes(ws)
    text = sandbox.cli("status")
    assert "crashed" in text.stdout and "smartspec-desktop start" in text.stdout
    # Starting again replaces the crashed session.
    again = sandbox.cli_json("start", str(ws))
    assert again["status"] == "running" and again["server_id"] != info["server_id"]


@pytest.mark.faults
def test_stale_entry_is_cleaned_and_a_reused_pid_is_never_killed(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = sandbox.data_dir / "state"
        state.mkdir(parents=True, exist_ok=True)  # it holds the version cache
        record = {
            "session_id": "srv_stale",
            "workspace_path": str(ws),
            "status": "running",
            "created_at": "2026-01-01T00:00:00+00:00",
            "port": 3799,
            "url": "http://127.0.0.1:3799",
            # A live pid that is not ours: same number, other create time (pid reuse).
            "pid": victim.pid,
            "create_time": psutil.Process(victim.pid).create_time() - 1000,
            "supervisor_pid": victim.pid,
            "supervisor_create_time": 1.0,
        }
        (state / "sessions.json").write_text(
            json.dumps({"version": 1, "sessions": {"srv_stale": record}})
        )
        assert sandbox.cli_json("status") == []
        assert victim.poll() is None, "a process that is not ours was killed"
        info = sandbox.cli_json("start", str(ws))
        assert info["status"] == "running" and info["reused"] is False
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.faults
def test_corrupt_state_file_is_moved_aside(sandbox: Sandbox) -> None:
    state = sandbox.data_dir / "state"
    state.mkdir(parents=True, exist_ok=True)  # it holds the version cache
    (state / "servers.json").write_text('{"version": 2, "servers": {"x": ')
    r = sandbox.cli("status")
    assert r.returncode == 0
    assert "unreadable" in r.stderr and "moved aside" in r.stderr
    assert list(state.glob("servers.json.corrupt-*"))
    info = sandbox.cli_json("start", str(sandbox.workspace()))
    assert info["status"] == "running"


@pytest.mark.faults
def test_missing_opencode_says_how_to_install(sandbox: Sandbox) -> None:
    env = dict(sandbox.env, PATH="/usr/bin:/bin")
    r = sandbox.cli("start", str(sandbox.workspace()), env=env)
    assert r.returncode == 1
    assert "OpenCode is not installed" in r.stderr
    assert "smartspec-desktop opencode install" in r.stderr
    assert sandbox.state().get("servers", {}) == {}


@pytest.mark.faults
def test_bad_and_missing_keys_spawn_nothing(sandbox: Sandbox) -> None:
    # The CLI's wording; malformed keys, no models and the rest: tests/unit/test_start_failures.py
    ws = sandbox.workspace()
    unknown = "sk-smartspec-" + "A" * 43
    r = sandbox.cli("start", str(ws), env=dict(sandbox.env, SMARTSPEC_API_KEY=unknown))
    assert r.returncode == 1 and "rejected the API key" in r.stderr
    assert unknown not in r.stderr
    env = dict(sandbox.env)
    env.pop("SMARTSPEC_API_KEY")
    r = sandbox.cli("start", str(ws), env=env)
    assert r.returncode == 1 and "No SmartSpecPro API key" in r.stderr
    assert "SMARTSPEC_API_KEY" in r.stderr  # no keyring here: the env route is the fix
    assert not server_processes(ws)
    assert sandbox.state().get("servers", {}) == {}


@pytest.mark.faults
def test_backend_down_spawns_nothing(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    sandbox.extra_args = ["--backend-url", dead]
    r = sandbox.cli("start", str(ws))
    assert r.returncode == 1
    assert f"Cannot reach the SmartSpecPro backend at {dead}" in r.stderr
    assert not server_processes(ws)


@pytest.mark.faults
def test_workspace_errors(sandbox: Sandbox) -> None:
    # The CLI's wording; the other workspace errors: tests/unit/test_start_failures.py
    target = sandbox.root / "nothing-here"
    r = sandbox.cli("start", str(target))
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert r.stderr.count("\n") == 1, "one line: the problem and the fix"


def test_workspace_config_cannot_route_around_the_gateway(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    (ws / "opencode.json").write_text(
        json.dumps(
            {
                "provider": {
                    "other": {
                        "npm": "@ai-sdk/openai-compatible",
                        "name": "Other",
                        "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "x"},
                        "models": {"m": {"name": "m"}},
                    }
                },
                "enabled_providers": ["other"],
                "model": "other/m",
            }
        )
    )
    # Trusted, so OpenCode reads that opencode.json (an untrusted one is ignored altogether).
    info = sandbox.cli_json("start", "--trust", str(ws))
    assert info["trusted"] is True
    pw = password_of(sandbox, info["server_id"])
    # The first request naming the workspace makes OpenCode install its plugin package first
    # (~5 CPU-s; under load it took more than 10 s).
    providers = httpx.get(info["url"] + "/config/providers", auth=("opencode", pw), timeout=120)
    assert [p["id"] for p in providers.json()["providers"]] == ["smartspec"]
    r = sandbox.cli("run", str(ws), "hello")
    assert r.returncode == 0, r.stderr
    assert sandbox.backend.chat_requests()


@pytest.mark.faults
def test_run_reports_gateway_failures_clearly(sandbox: Sandbox) -> None:
    """Each way the gateway fails, in turn, on one server: the run fails with the backend's
    words and says it was the gateway, without hanging."""
    ws = sandbox.workspace()
    sandbox.cli_json("start", str(ws))
    failures: list[tuple[object, str]] = [
        (
            HttpError(402, {"detail": "Insufficient credits. Please add credits to continue."}),
            "Insufficient credits",
        ),
        (ErrorChunk("upstream exploded"), "upstream exploded"),
        (HttpError(500, {"detail": "boom internal"}), "boom internal"),
    ]
    for step, expected in failures:
        sandbox.backend.default_step = step  # type: ignore[assignment]
        t0 = time.monotonic()
        r = sandbox.cli("run", str(ws), "hello", timeout=90)
        assert r.returncode == 1, (expected, r.stderr)
        assert expected in r.stderr and "gateway" in r.stderr.lower(), (expected, r.stderr)
        assert time.monotonic() - t0 < 60, f"a gateway failure ({expected}) hung the run"
