"""Unit tests of the server phases: the state migration, reconciliation against a fake process
table, the exit record's wording, the supervised handle and the start lock's waiting line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from smartspec_desktop.core.errors import PortInUse, ServerStartError, StartBusy
from smartspec_desktop.core.process.supervised import (
    EarlyExit,
    ExitRecord,
    Handshake,
    Supervised,
    log_tail,
)
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.servers.reconcile import reconcile
from smartspec_desktop.core.servers.registry import (
    CRASHED,
    RUNNING,
    STARTING,
    STATE_VERSION,
    ChildRecord,
    Registry,
    ServerRecord,
    ServerStatus,
)
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials, MemoryStore


def test_version_1_state_is_migrated_to_servers_json(tmp_path: Path) -> None:
    old, new = tmp_path / "sessions.json", tmp_path / "servers.json"
    url = "http://127.0.0.1:9"
    child = {"kind": "openwork", "pid": 7, "create_time": 1.0, "url": url}
    rec = {"session_id": "srv_a", "workspace_path": "/w", "status": "running", "created_at": "t"}
    old.write_text(json.dumps({"version": 1, "sessions": {"srv_a": {**rec, "children": [child]}}}))
    reg = Registry(new, legacy_file=old)
    snap = reg.snapshot()
    assert list(snap) == ["srv_a"] and snap["srv_a"].server_id == "srv_a"
    assert snap["srv_a"].status is ServerStatus.RUNNING
    assert snap["srv_a"].children == [ChildRecord("openwork", pid=7, create_time=1.0, url=url)]
    with reg.transaction():
        pass  # the first write moves the state to the new file
    assert not old.exists()
    data = json.loads(new.read_text())
    assert data["version"] == STATE_VERSION == 2
    assert data["servers"]["srv_a"]["server_id"] == "srv_a"
    assert data["servers"]["srv_a"]["status"] == "running"
    assert data["servers"]["srv_a"]["children"][0]["kind"] == "openwork"


@pytest.mark.allow_log(
    r"core\.servers\.registry: dropping an unreadable server record",
    reason="bad records are the input",
)
def test_records_with_a_bad_field_are_dropped(tmp_path: Path) -> None:
    state = tmp_path / "servers.json"
    good = {"server_id": "a", "workspace_path": "/w", "status": "running", "created_at": "t"}
    bad_status = dict(good, server_id="b", status="exploded")
    bad_port = dict(good, server_id="c", port="3795")
    state.write_text(
        json.dumps({"version": 2, "servers": {"a": good, "b": bad_status, "c": bad_port}})
    )
    assert list(Registry(state).snapshot()) == ["a"]


class FakeTable:
    def __init__(self, alive: set[int]) -> None:
        self.alive_pids = alive
        self.killed: list[str] = []

    def alive(self, pid: int, create_time: float) -> bool:
        return pid in self.alive_pids

    def kill_supervisor_of(self, exit_file: str) -> bool:
        self.killed.append(exit_file)
        return True


def record(**kw: object) -> ServerRecord:
    base: dict[str, object] = {
        "server_id": "srv_1",
        "workspace_path": "/w",
        "status": RUNNING,
        "created_at": "t",
    }
    return ServerRecord(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.allow_log(
    r"core\.servers\.reconcile: forgetting the server of",
    reason="a vanished server is the input",
)
def test_reconcile_keeps_live_servers_and_marks_crashes(tmp_path: Path) -> None:
    assert reconcile(record(pid=10), FakeTable({10})) is True
    exit_file = tmp_path / "exit.json"
    exit_file.write_text(json.dumps({"exit_code": -9, "ended_at": 0}))
    rec = record(pid=10, exit_file=str(exit_file))
    assert reconcile(rec, FakeTable(set())) is True
    assert rec.status == CRASHED and rec.exit_code == -9
    if sys.platform != "win32":
        assert rec.error == "OpenCode exited unexpectedly (killed by SIGKILL)."
    # Gone without an exit record, supervisor gone too: forgotten.
    assert reconcile(record(pid=10, exit_file=str(tmp_path / "none")), FakeTable(set())) is False
    # Supervisor still alive: it is about to write the record.
    kept = record(pid=10, supervisor_pid=11, exit_file=str(tmp_path / "none"))
    assert reconcile(kept, FakeTable({11})) is True
    # A stop was requested: forgotten, not crashed.
    exit_file.write_text(json.dumps({"exit_code": 0, "stop_requested": True}))
    assert reconcile(record(pid=10, exit_file=str(exit_file)), FakeTable(set())) is False


@pytest.mark.allow_log(
    r"core\.servers\.reconcile: reaped the unrecorded server",
    reason="the interrupted start is the input",
)
def test_reconcile_reaps_an_interrupted_start_only_when_its_starter_died() -> None:
    starting = record(status=STARTING, owner_pid=5, exit_file="/state/exits/srv_1.json")
    table = FakeTable({5})
    assert reconcile(starting, table) is True and table.killed == []
    table = FakeTable(set())
    assert reconcile(starting, table) is False
    assert table.killed == ["/state/exits/srv_1.json"]


def test_exit_record_names_codes_and_signals(tmp_path: Path) -> None:
    assert str(ExitRecord(exit_code=3)) == "exit code 3"
    assert str(ExitRecord()) == "exit code unknown"
    if sys.platform != "win32":
        assert str(ExitRecord(exit_code=-15)) == "killed by SIGTERM"
    path = tmp_path / "exit.json"
    assert ExitRecord.read(path) is None
    path.write_text(json.dumps({"exit_code": True, "stop_requested": 1, "ended_at": "x"}))
    assert ExitRecord.read(path) == ExitRecord()  # wrong types are not believed


def test_handshake_keeps_every_field_and_names_the_program(tmp_path: Path) -> None:
    hs = Handshake.parse(b'{"pid": 42, "broker_port": 5000}\n', name="X", log_path=tmp_path)
    assert hs.pid == 42 and hs.fields["broker_port"] == 5000
    with pytest.raises(ServerStartError) as e:
        Handshake.parse(b'{"error": "no such file"}\n', name="openwork-server", log_path=tmp_path)
    assert e.value.problem == "openwork-server could not be started: no such file."
    with pytest.raises(ServerStartError):
        Handshake.parse(b"", name="X", log_path=tmp_path)


def test_retryability_is_carried_by_the_type() -> None:
    assert issubclass(PortInUse, ServerStartError) and issubclass(StartBusy, ServerStartError)
    assert PortInUse("p").code == "server_start"


def spawn(tmp_path: Path, code: str) -> Supervised:
    return Supervised.spawn(
        [sys.executable, "-c", code],
        name="Test program",
        log_path=tmp_path / "p.log",
        exit_file=tmp_path / "exit.json",
        cwd=str(tmp_path),
        env=dict(os.environ),
    )


def test_supervised_reports_an_early_exit_with_its_log_and_record(tmp_path: Path) -> None:
    with (
        pytest.raises(EarlyExit) as e,
        spawn(tmp_path, "print('address already in use'); raise SystemExit(4)") as p,
    ):
        assert p.pid and p.supervisor_pid and p.pid != p.supervisor_pid
        p.wait_ready(lambda: False, time.monotonic() + 30)
    assert e.value.outcome == ExitRecord(
        exit_code=4, ended_at=e.value.outcome.ended_at if e.value.outcome else None
    )
    assert e.value.how == "exit code 4" and e.value.summary == "address already in use"
    assert e.value.mentions(["ADDRESS ALREADY"])
    assert "address already in use" in log_tail(tmp_path / "p.log")


def test_supervised_kills_its_tree_unless_kept(tmp_path: Path) -> None:
    with spawn(tmp_path, "import time; time.sleep(60)") as p:
        p.wait_ready(lambda: True, time.monotonic() + 30)
    assert not p.alive() and p.poll() is not None  # left the block without keep(): killed
    kept = spawn(tmp_path, "import time; time.sleep(60)")
    with kept:
        kept.keep()
    try:
        assert kept.alive()
    finally:
        kept.kill()
    assert not kept.alive()


def test_a_start_waiting_for_another_says_so(tmp_path: Path) -> None:
    paths = Paths.from_base(tmp_path / "data")
    paths.ensure()
    sm = ServerManager(
        paths, Settings(start_timeout=0.0), Credentials(MemoryStore(), MemoryStore())
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    lines: list[str] = []
    # Another process holds the workspace's lock (a FileLock object of its own = another fd).
    other = sm.registry.workspace_lock(str(ws.resolve()), timeout=1)
    assert isinstance(other, FileLock)
    other.acquire()
    try:
        with pytest.raises(Timeout):  # a short wait, then give up
            sm.registry.workspace_lock = lambda w, timeout: FileLock(  # type: ignore[method-assign, assignment]
                other.lock_file, timeout=0.2
            )
            sm.start(str(ws), progress=lines.append)
    finally:
        other.release()
    assert f"Waiting for other starts of {ws.resolve()} …" in lines
