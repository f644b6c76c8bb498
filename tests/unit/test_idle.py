"""Unit tests of "idle servers sleep" (issue 15): the idle decision, the timeout's sources, the
supervisor's slept record through reconcile, and the usage sampler on real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

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
        time.sleep(0.3)
        second = sampler.sample([rec])["srv_1"]
        assert second.rss_mb > 30 and second.cpu_percent is not None and second.cpu_percent > 0
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
