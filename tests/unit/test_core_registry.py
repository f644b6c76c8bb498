"""Unit tests of core.registry: the shared session state file and its locks."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from filelock import Timeout

from smartspec_desktop.core.errors import StateError
from smartspec_desktop.core.servers.registry import (
    ACTIVE,
    CRASHED,
    RUNNING,
    STARTING,
    STATE_VERSION,
    Registry,
    ServerRecord,
    ServerStatus,
    same_workspace,
)


def record(sid: str = "s1", ws: str = "/ws/a", status: ServerStatus = RUNNING) -> ServerRecord:
    return ServerRecord(
        server_id=sid,
        workspace_path=ws,
        status=status,
        created_at="2026-11-25T06:00:00+00:00",
        port=3795,
        url="http://127.0.0.1:3795",
        pid=4242,
        create_time=1.5,
    )


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "state" / "sessions.json", lock_timeout=2.0)


def test_empty_registry_reads_as_empty_without_creating_anything(
    registry: Registry, tmp_path: Path
) -> None:
    assert registry.snapshot() == {}
    assert not registry.file.exists()
    assert registry.warnings == []


def test_transaction_persists_and_snapshot_reads_it(registry: Registry) -> None:
    with registry.transaction() as records:
        records["s1"] = record()
    assert registry.file.exists()
    assert stat.S_IMODE(registry.file.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.file.parent.stat().st_mode) == 0o700
    snap = registry.snapshot()
    assert snap == {"s1": record()}
    data = json.loads(registry.file.read_text(encoding="utf-8"))
    assert data["version"] == STATE_VERSION
    assert data["servers"]["s1"]["port"] == 3795
    # Another Registry object (another process) sees the same state.
    assert Registry(registry.file).snapshot()["s1"].url == "http://127.0.0.1:3795"


def test_changes_inside_a_transaction_are_saved_and_deletes_too(registry: Registry) -> None:
    with registry.transaction() as records:
        records["s1"] = record()
        records["s2"] = record("s2", "/ws/b", STARTING)
    with registry.transaction() as records:
        records["s1"].status = CRASHED
        records["s1"].exit_code = 1
        del records["s2"]
    snap = registry.snapshot()
    assert list(snap) == ["s1"]
    assert (snap["s1"].status, snap["s1"].exit_code) == (CRASHED, 1)
    assert not snap["s1"].active


def test_a_transaction_without_changes_does_not_rewrite_the_file(registry: Registry) -> None:
    with registry.transaction() as records:
        records["s1"] = record()
    before = registry.file.stat()
    with registry.transaction() as records:
        assert "s1" in records
    after = registry.file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_transaction_without_servers_or_file_writes_nothing(registry: Registry) -> None:
    """A `status` on a fresh data dir: nothing to save, so no file (an fsync'd write less)."""
    with registry.transaction() as records:
        assert records == {}
    assert not registry.file.exists()
    assert registry.snapshot() == {}
    with registry.transaction() as records:  # the first change is saved as always
        records["s1"] = record()
    assert list(Registry(registry.file).snapshot()) == ["s1"]


@pytest.mark.allow_log(
    r"core\.storage\.atomic: .*servers\.json was unreadable", reason="the damage is the input"
)
def test_a_damaged_file_is_saved_anew_by_a_transaction_that_changes_nothing(
    tmp_path: Path,
) -> None:
    reg = Registry(tmp_path / "servers.json", lock_timeout=2.0)
    reg.file.write_text('{"servers": {', encoding="utf-8")
    with reg.transaction() as records:
        assert records == {}
    assert json.loads(reg.file.read_text(encoding="utf-8")) == {
        "version": STATE_VERSION,
        "servers": {},
    }
    assert len(reg.drain_warnings()) == 1


def test_a_legacy_file_is_migrated_by_a_transaction_that_changes_nothing(
    tmp_path: Path,
) -> None:
    legacy = tmp_path / "sessions.json"
    data = record().__dict__ | {"status": "running", "session_id": "s1", "children": []}
    del data["server_id"]
    legacy.write_text(json.dumps({"sessions": {"s1": data}}), encoding="utf-8")
    reg = Registry(tmp_path / "servers.json", legacy_file=legacy, lock_timeout=2.0)
    with reg.transaction() as records:
        assert list(records) == ["s1"]
    assert not legacy.exists()
    assert list(json.loads(reg.file.read_text(encoding="utf-8"))["servers"]) == ["s1"]


def test_an_exception_inside_a_transaction_saves_nothing(registry: Registry) -> None:
    with registry.transaction() as records:
        records["s1"] = record()
    with pytest.raises(RuntimeError), registry.transaction() as records:
        records["s1"].status = CRASHED
        raise RuntimeError("boom")
    assert registry.snapshot()["s1"].status == RUNNING


@pytest.mark.allow_log(
    r"core\.storage\.atomic: .*(servers|sessions)\.json was unreadable",
    reason="the corrupt state file is the input",
)
def test_corrupt_state_file_gives_a_warning_and_an_empty_registry(registry: Registry) -> None:
    registry.file.parent.mkdir(parents=True)
    registry.file.write_text('{"sessions": {', encoding="utf-8")
    assert registry.snapshot() == {}
    assert len(registry.warnings) == 1
    assert "moved aside" in registry.warnings[0]
    asides = [p for p in registry.file.parent.iterdir() if ".corrupt-" in p.name]
    assert len(asides) == 1 and str(asides[0]) in registry.warnings[0]
    # The registry keeps working afterwards.
    with registry.transaction() as records:
        records["s1"] = record()
    assert list(registry.snapshot()) == ["s1"]


@pytest.mark.allow_log(
    r"core\.servers\.registry: dropping an unreadable server record",
    reason="the broken records are the input",
)
@pytest.mark.allow_log(
    r"core\.servers\.registry: (dropping an unreadable server record|the state was written by a "
    r"newer version)",
    reason="broken records are the input",
)
def test_unknown_fields_are_ignored_and_broken_records_dropped(registry: Registry) -> None:
    registry.file.parent.mkdir(parents=True)
    good = {
        "server_id": "s1",
        "workspace_path": "/ws/a",
        "status": RUNNING,
        "created_at": "t",
        "port": 3796,
        "added_by_a_newer_version": {"x": 1},
    }
    missing_status = {"server_id": "s2", "workspace_path": "/ws/b", "created_at": "t"}
    registry.file.write_text(
        json.dumps({"version": 99, "servers": {"s1": good, "s2": missing_status, "s3": "junk"}}),
        encoding="utf-8",
    )
    snap = registry.snapshot()
    assert list(snap) == ["s1"]
    assert snap["s1"].port == 3796 and snap["s1"].pid == 0
    assert registry.warnings == []


def test_servers_of_the_wrong_type_read_as_empty(registry: Registry) -> None:
    registry.file.parent.mkdir(parents=True)
    registry.file.write_text('{"sessions": [1, 2]}', encoding="utf-8")
    assert registry.snapshot() == {}


def test_public_view_has_no_secrets_or_internal_paths() -> None:
    rec = record()
    rec.password_store = "file"
    rec.exit_file = "/state/exit-s1"
    pub = rec.public()
    assert pub["server_id"] == "s1" and pub["url"] == "http://127.0.0.1:3795"
    assert "password_store" not in pub and "exit_file" not in pub
    assert "supervisor_pid" not in pub
    json.dumps(pub)  # printable as --json


def test_active_states() -> None:
    assert set(ACTIVE) == {"starting", "running", "stopping"}
    assert record(status=STARTING).active
    assert not record(status=ServerStatus("stopped")).active


def test_concurrent_transactions_do_not_lose_updates(registry: Registry) -> None:
    def add(i: int) -> None:
        reg = Registry(registry.file, lock_timeout=10.0)  # as if from another process
        with reg.transaction() as records:
            records[f"s{i}"] = record(f"s{i}", f"/ws/{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(registry.snapshot()) == sorted(f"s{i}" for i in range(8))


def test_a_stuck_lock_becomes_a_state_error(tmp_path: Path) -> None:
    holder = Registry(tmp_path / "sessions.json")
    waiter = Registry(tmp_path / "sessions.json", lock_timeout=0.1)
    # filelock locks are per-object within a process, like two processes.
    with holder.transaction(), pytest.raises(StateError) as ei, waiter.transaction():
        pass
    assert "stayed locked" in ei.value.problem
    assert "close it and try again" in ei.value.fix


def test_workspace_lock_is_per_workspace(registry: Registry) -> None:
    a1 = registry.workspace_lock("/ws/a", timeout=0.1)
    a2 = registry.workspace_lock("/ws/a", timeout=0.1)
    b = registry.workspace_lock("/ws/b", timeout=0.1)
    assert a1.lock_file == a2.lock_file != b.lock_file
    assert Path(a1.lock_file).parent == registry.lock_dir
    assert "/ws/a" not in a1.lock_file  # the path is hashed, not embedded
    with a1:
        with pytest.raises(Timeout):
            a2.acquire()
        with b:  # another workspace is not blocked
            assert b.is_locked
    with a2:
        assert a2.is_locked


def test_workspace_lock_accepts_undecodable_paths(registry: Registry) -> None:
    weird = os.fsdecode(b"/ws/caf\xe9")  # a Latin-1 folder name on a UTF-8 system
    with registry.workspace_lock(weird, timeout=0.1) as lock:
        assert lock.is_locked


def test_unwritable_state_file_is_a_state_error(registry: Registry) -> None:
    registry.file.mkdir(parents=True)  # a folder where the state file should be
    with pytest.raises(StateError) as ei, registry.transaction() as records:
        records["s1"] = record()
    assert str(registry.file) in ei.value.problem
    assert "--data-dir" in ei.value.fix


def test_unwritable_state_folder_is_a_state_error_with_a_fix(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        reg = Registry(folder / "sessions.json", lock_timeout=0.5)
        with pytest.raises(StateError) as ei, reg.transaction() as records:
            records["s1"] = record()
        assert "--data-dir" in ei.value.fix
    finally:
        folder.chmod(0o700)


def test_state_folder_that_cannot_be_created_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a folder", encoding="utf-8")
    reg = Registry(blocker / "sessions.json", lock_timeout=0.5)
    with pytest.raises(StateError) as ei, reg.transaction() as records:
        records["s1"] = record()
    assert "--data-dir" in ei.value.fix


def test_same_workspace_compares_paths_as_the_os_does() -> None:
    assert same_workspace("/ws/a", "/ws/a")
    assert not same_workspace("/ws/a", "/ws/b")
    assert same_workspace("/ws/A", "/ws/a") == (os.path.normcase("/ws/A") == "/ws/a")
