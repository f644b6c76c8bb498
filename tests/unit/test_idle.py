"""Unit tests of "idle servers sleep" (issue 15): the idle decision, the timeout's sources, the
supervisor's slept record through reconcile, and the usage sampler on real processes."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from smartspec_desktop.core.broker.server import Broker, BrokerConfig
from smartspec_desktop.core.process import idle
from smartspec_desktop.core.process.idle import IdleClock, idle_decision
from smartspec_desktop.core.process.procs import ProcIdentity
from smartspec_desktop.core.process.supervised import ExitRecord
from smartspec_desktop.core.servers.reconcile import reconcile
from smartspec_desktop.core.servers.registry import (
    RUNNING,
    SLEEPING,
    STOPPING,
    ServerRecord,
    ServerStatus,
)
from smartspec_desktop.core.servers.usage import Usage, UsageSampler, format_usage, total
from smartspec_desktop.core.storage.config import Settings, load_settings
from tests.backend_standin import BackendStandIn

LIMIT = 180.0


def decide(busy: int = 0, clients: int = 0, last_call: float | None = None, now: float = 0) -> bool:
    return idle_decision(
        busy_sessions=busy,
        clients=clients,
        last_gateway_call=last_call,
        last_active=1000.0,
        now=now,
        limit=LIMIT,
    )


def test_idle_once_nothing_happened_for_the_whole_timeout() -> None:
    assert decide(now=1000 + LIMIT) is True
    assert decide(now=1000 + LIMIT - 1) is False


def test_a_busy_session_or_a_client_keeps_it_awake_whatever_the_time() -> None:
    assert decide(busy=1, now=1e9) is False
    assert decide(clients=1, now=1e9) is False
    assert decide(busy=2, clients=3, now=1e9) is False


def test_a_recent_gateway_call_keeps_it_awake() -> None:
    assert decide(last_call=1100.0, now=1000 + LIMIT) is False
    assert decide(last_call=1100.0, now=1100 + LIMIT) is True
    # An old call does not reach back further than the last activity.
    assert decide(last_call=10.0, now=1000 + LIMIT) is True


def test_zero_means_never() -> None:
    assert (
        idle_decision(
            busy_sessions=0,
            clients=0,
            last_gateway_call=None,
            last_active=0,
            now=1e12,
            limit=0,
        )
        is False
    )


def test_the_clock_restarts_on_activity_and_unknown_counts_as_activity() -> None:
    clock = IdleClock(limit=10.0, last_active=0.0)
    assert clock.observe(busy_sessions=0, clients=0, last_gateway_call=None, now=5) is False
    assert clock.observe(busy_sessions=0, clients=1, last_gateway_call=None, now=9) is False
    assert clock.last_active == 9
    assert clock.observe(busy_sessions=0, clients=0, last_gateway_call=None, now=18) is False
    # A probe that failed (None) never puts the server to sleep, and restarts the clock.
    assert clock.observe(busy_sessions=None, clients=0, last_gateway_call=None, now=30) is False
    assert clock.observe(busy_sessions=0, clients=None, last_gateway_call=None, now=35) is False
    assert clock.observe(busy_sessions=0, clients=0, last_gateway_call=None, now=44) is False
    assert clock.observe(busy_sessions=0, clients=0, last_gateway_call=None, now=45) is True


@pytest.mark.allow_log(
    r"core\.process\.idle: ignoring SMARTSPEC_IDLE_MINUTES", reason="a bad value is the input"
)
def test_the_timeout_comes_from_env_then_workspace_then_setting() -> None:
    own = {"/w/a": 5.0, "/w/zero": 0.0}
    assert idle.effective_minutes(30.0, own, "/w/b", {}) == 30.0
    assert idle.effective_minutes(30.0, own, "/w/a", {}) == 5.0
    assert idle.effective_minutes(30.0, own, "/w/zero", {}) == 0.0
    assert idle.effective_minutes(30.0, own, "/w/a", {idle.IDLE_ENV: "0.05"}) == 0.05
    assert idle.effective_minutes(30.0, own, "/w/a", {idle.IDLE_ENV: "soon"}) == 5.0
    assert idle.effective_minutes(30.0, own, "/w/a", {idle.IDLE_ENV: "-1"}) == 5.0
    assert idle.supervisor_args(0.05) == ["--idle-minutes", "0.05"]
    assert idle.supervisor_args(0) == []
    assert idle.port_of(["opencode", "serve", "--port", "3795", "--print-logs"]) == 3795
    assert idle.port_of(["opencode", "serve"]) == 0


@pytest.mark.allow_log(r"core\.storage\.config: Setting", reason="bad values are the input")
def test_settings_keep_idle_minutes_and_drop_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    assert Settings().idle_minutes == 30.0
    path.write_text(json.dumps({"idle_minutes": 2, "idle_minutes_by_workspace": {"/w": 0.5}}))
    s, warnings = load_settings(path)
    assert (s.idle_minutes, s.idle_minutes_by_workspace, warnings) == (2.0, {"/w": 0.5}, [])
    path.write_text(json.dumps({"idle_minutes": -3, "idle_minutes_by_workspace": {"/w": "x"}}))
    s, warnings = load_settings(path)
    assert (s.idle_minutes, s.idle_minutes_by_workspace, len(warnings)) == (30.0, {}, 2)


class GoneTable:
    def alive(self, pid: int, create_time: float) -> bool:
        return False

    def kill_supervisor_of(self, exit_file: str) -> bool:
        return False


def record(**kw: object) -> ServerRecord:
    base: dict[str, object] = {
        "server_id": "srv_1",
        "workspace_path": "/w",
        "status": RUNNING,
        "created_at": "t",
        "pid": 10,
    }
    return ServerRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_a_slept_exit_record_makes_the_server_sleeping_not_crashed(tmp_path: Path) -> None:
    exit_file = tmp_path / "exit.json"
    exit_file.write_text(json.dumps({"exit_code": 0, "slept": True, "ended_at": 1_700_000_000}))
    assert ExitRecord.read(exit_file) == ExitRecord(exit_code=0, slept=True, ended_at=1.7e9)
    rec = record(exit_file=str(exit_file))
    assert reconcile(rec, GoneTable()) is True
    assert rec.status is ServerStatus.SLEEPING and rec.status.value == "sleeping"
    assert rec.exit_code is None and rec.error == "" and rec.ended_at.startswith("2023-11-14")
    assert not rec.active
    assert reconcile(rec, GoneTable()) is True and rec.status == SLEEPING  # stays so
    # A stop asked while it fell asleep wins: the record is forgotten.
    assert reconcile(record(status=STOPPING, exit_file=str(exit_file)), GoneTable()) is False
    exit_file.write_text(json.dumps({"exit_code": 0, "slept": True, "stop_requested": True}))
    assert reconcile(record(exit_file=str(exit_file)), GoneTable()) is False
    # Not "slept: true" exactly: a crash, as before.
    exit_file.write_text(json.dumps({"exit_code": 1, "slept": "yes"}))
    crashed = record(exit_file=str(exit_file))
    assert reconcile(crashed, GoneTable()) is True and crashed.status == "crashed"


def test_usage_of_a_real_tree_and_of_a_gone_one() -> None:
    # A parent with a child that allocates ~40 MB and spins a little.
    code = (
        "import subprocess,sys,time;"
        "c=subprocess.Popen([sys.executable,'-c','b=bytearray(40*2**20);import time\\n"
        "t=time.time()\\nwhile time.time()-t<30: sum(range(10000))']);time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        ident = ProcIdentity.of(parent.pid)
        assert ident is not None
        proc = psutil.Process(parent.pid)
        deadline = time.monotonic() + 20
        while not proc.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        rec = record(supervisor_pid=ident.pid, supervisor_create_time=ident.create_time, pid=0)
        sampler = UsageSampler()
        first = sampler.sample([rec])["srv_1"]
        assert first.processes == 2 and first.cpu_percent is None  # one sample: no CPU yet
        # Later samples see the memory and the CPU (waited for: the child starts under load).
        while True:
            time.sleep(0.3)
            second = sampler.sample([rec])["srv_1"]
            assert second.cpu_percent is not None and second.rss_mb is not None
            if second.rss_mb > 30 and second.cpu_percent > 0:
                break
            assert time.monotonic() < deadline + 20, second
        settled = UsageSampler().sample_settled([rec], wait=0.2)["srv_1"]
        assert settled.cpu_percent is not None
        assert format_usage(second).endswith(" %") and " MB · CPU " in format_usage(second)
    finally:
        for p in [psutil.Process(parent.pid), *psutil.Process(parent.pid).children()]:
            p.kill()
        parent.wait(5)
    gone = sampler.sample([rec])["srv_1"]
    assert gone == Usage(rss_mb=0.0, cpu_percent=0.0, processes=0) and format_usage(gone) == ""
    # A reused pid (another create time) is not counted.
    other = record(supervisor_pid=1, supervisor_create_time=12345.0, pid=0)
    assert UsageSampler().sample([other])["srv_1"].processes == 0
    both = total([second, gone])
    assert both.rss_mb == second.rss_mb and both.processes == 2


# ------------------------------------------------------------------ the watcher, in process


class FakeOpenCode:
    """A loopback server answering ``GET /session/status`` like OpenCode (Basic auth)."""

    def __init__(self, password: str = "pw") -> None:
        self.status: dict[str, object] = {}
        self.password = password
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                want = "Basic " + base64.b64encode(f"opencode:{fake.password}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(fake.status).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeOpenCode]:
    f = FakeOpenCode()
    try:
        yield f
    finally:
        f.close()


def watcher(fake: FakeOpenCode, fired: threading.Event, **kw: Any) -> idle.IdleWatcher:
    return idle.IdleWatcher(
        minutes=0.01,  # 0.6 s
        port=fake.port,
        password=fake.password,
        server_pid=os.getpid(),  # the fake's listener lives in this process
        on_idle=fired.set,
        **kw,
    ).start()


def test_the_watcher_probes_sessions_and_clients(fake: FakeOpenCode) -> None:
    assert idle.busy_sessions(fake.port, "wrong")[0] is None  # 401: unknown, not idle
    fake.status = {"ses_1": {"type": "busy"}, "ses_2": {"type": "idle"}}
    busy, probe_port = idle.busy_sessions(fake.port, fake.password)
    assert busy == 1 and probe_port > 0
    deadline = time.monotonic() + 10
    while idle.connected_clients(os.getpid(), fake.port) != 0:  # the probe's is closed
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", fake.port)) as s:
        deadline = time.monotonic() + 10
        while idle.connected_clients(os.getpid(), fake.port) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        mine = s.getsockname()[1]
        assert idle.connected_clients(os.getpid(), fake.port, exclude_ports=(mine,)) == 0


def test_a_busy_session_holds_the_watcher_until_it_ends(fake: FakeOpenCode) -> None:
    fake.status = {"ses_1": {"type": "busy"}}
    fired = threading.Event()
    w = watcher(fake, fired)
    try:
        assert not fired.wait(2.0)  # three timeouts and more: still awake
        fake.status = {"ses_1": {"type": "idle"}}
        assert fired.wait(30)
    finally:
        w.stop()


def test_a_connected_client_holds_the_watcher_until_it_leaves(fake: FakeOpenCode) -> None:
    fired = threading.Event()
    with socket.create_connection(("127.0.0.1", fake.port)):
        w = watcher(fake, fired)
        assert not fired.wait(2.0)
    assert fired.wait(30)
    w.stop()


def test_recent_gateway_calls_hold_the_watcher(fake: FakeOpenCode) -> None:
    fired = threading.Event()
    calling = threading.Event()
    calling.set()

    def last_call() -> float | None:
        return time.monotonic() if calling.is_set() else None

    w = watcher(fake, fired, last_gateway_call=last_call)
    try:
        assert not fired.wait(2.0)
        calling.clear()
        assert fired.wait(30)
    finally:
        w.stop()


def test_the_broker_records_its_last_call(tmp_path: Path) -> None:
    backend = BackendStandIn().start()
    try:
        backend.add_user("dev@example.com", "pw")
        config = BrokerConfig(
            key=backend.issue_api_key("dev@example.com"),
            token="server-token-0123456789",
            control_token="control-token-0123456789",
            upstream=backend.url,
        )
        broker = Broker(config).start()
        try:
            assert broker.last_call is None
            before = time.monotonic()
            body = {"model": backend.models[0], "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(
                f"{broker.url}/chat/completions",
                json=body,
                headers={"Authorization": "Bearer server-token-0123456789"},
                timeout=10,
            )
            assert r.status_code == 200
            assert broker.last_call is not None and broker.last_call >= before
        finally:
            broker.stop()
    finally:
        backend.stop()


# ------------------------------------------------------------------ the supervisor, for real

FAKE_SERVER = """
import base64, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port = int(sys.argv[sys.argv.index("--port") + 1])
want = "Basic " + base64.b64encode(
    ("opencode:" + os.environ["OPENCODE_SERVER_PASSWORD"]).encode()).decode()
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        ok = self.headers.get("Authorization") == want
        body = b"{}" if ok else b""
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print("listening", flush=True)
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_the_supervisor_puts_an_idle_server_to_sleep_and_says_so(tmp_path: Path) -> None:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log, exit_file = tmp_path / "server.log", tmp_path / "exit.json"
    cmd = [
        sys.executable,
        "-m",
        "smartspec_desktop.core.process.supervisor",
        "--log",
        str(log),
        "--exit-file",
        str(exit_file),
        "--cwd",
        str(tmp_path),
        "--idle-minutes",
        "0.01",
        "--",
        sys.executable,
        str(script),
        "--port",
        str(port),
    ]
    env = dict(os.environ, OPENCODE_SERVER_PASSWORD="s3cret-pw")
    sup = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert sup.stdout is not None
        hello = json.loads(sup.stdout.readline())
        server_pid = hello["pid"]
        assert sup.wait(60) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        if sup.stdout is not None:
            sup.stdout.close()
    outcome = ExitRecord.read(exit_file)
    assert outcome is not None and outcome.slept and not outcome.stop_requested
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == "zombie"
    text = log.read_text()
    assert "idle for 0.01 min" in text and "s3cret-pw" not in text


def test_use_announced_by_the_app_holds_the_watcher(fake: FakeOpenCode, tmp_path: Path) -> None:
    exit_file = tmp_path / "srv_1.json"
    assert idle.last_marked(exit_file, time.monotonic) is None
    idle.mark_active(exit_file)
    marked = idle.last_marked(exit_file, time.monotonic)
    assert marked is not None and abs(marked - time.monotonic()) < 2
    assert oct(idle.activity_file(exit_file).stat().st_mode & 0o777) == "0o600"
    fired = threading.Event()
    stop = threading.Event()

    def keep_marking() -> None:  # a CLI reusing the server again and again
        while not stop.wait(0.1):
            idle.mark_active(exit_file)

    t = threading.Thread(target=keep_marking, daemon=True)
    t.start()
    w = watcher(fake, fired, exit_file=exit_file)
    try:
        assert not fired.wait(2.0)
        stop.set()
        t.join(5)
        assert fired.wait(30)
    finally:
        stop.set()
        w.stop()
