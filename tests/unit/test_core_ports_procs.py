"""Unit tests of core.ports (choosing a port) and core.procs (identity, killing trees)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from smartspec_desktop.core.ports import os_assigned_port, pick_port, port_is_free
from smartspec_desktop.core.process.procs import (
    ProcIdentity,
    is_supervisor,
    kill_recorded,
    kill_tree,
    spawned_by_us,
    tree,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


# ------------------------------------------------------------------------------------------ ports


def listen(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def free_block(size: int) -> int:
    """The first port of ``size`` consecutive ports that are free right now."""
    for _ in range(200):
        base = os_assigned_port()
        if base + size < 65535 and all(port_is_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no block of free ports found")


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_port_is_free_sees_a_listening_socket(held: list[socket.socket]) -> None:
    base = free_block(1)
    assert port_is_free(base)
    held.append(listen(base))
    assert not port_is_free(base)


def test_pick_port_returns_the_first_free_port_in_range(held: list[socket.socket]) -> None:
    base = free_block(3)
    assert pick_port((base, base + 2)) == (base, True)
    held.append(listen(base))
    assert pick_port((base, base + 2)) == (base + 1, True)


def test_pick_port_respects_ports_claimed_by_other_servers() -> None:
    base = free_block(3)
    assert pick_port((base, base + 2), exclude={base, base + 1}) == (base + 2, True)


def test_busy_range_falls_back_to_an_os_assigned_port(held: list[socket.socket]) -> None:
    base = free_block(3)
    held.extend(listen(p) for p in range(base, base + 3))
    port, in_range = pick_port((base, base + 2))
    assert in_range is False
    assert not base <= port <= base + 2
    assert port_is_free(port)


def test_fallback_port_is_never_an_excluded_one(monkeypatch: pytest.MonkeyPatch) -> None:
    offered = iter([5001, 5002, 5003])
    monkeypatch.setattr(
        "smartspec_desktop.core.ports.os_assigned_port", lambda host="": next(offered)
    )
    monkeypatch.setattr("smartspec_desktop.core.ports.port_is_free", lambda p, host="": False)
    assert pick_port((4000, 4001), exclude={5001, 5002}) == (5003, False)


# ------------------------------------------------------------------------------------------ procs


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; whatever is left is killed (with its group) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.kill()
            p.wait(5)


def start(cmd: str, spawned: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sh", "-c", cmd], start_new_session=True, stdin=subprocess.DEVNULL)
    spawned.append(p)
    return p


def wait_children(pid: int, count: int, timeout: float = 5.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        if len(kids) >= count:
            return list(kids)
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not start {count} children")


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_identity_matches_the_live_process(spawned: list[subprocess.Popen[bytes]]) -> None:
    p = start("sleep 30", spawned)
    ident = ProcIdentity.of(p.pid)
    assert ident is not None and ident.pid == p.pid
    proc = ident.process()
    assert proc is not None and proc.pid == p.pid
    assert ident.alive()


def test_identity_with_another_create_time_is_not_our_process(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    p = start("sleep 30", spawned)
    ident = ProcIdentity.of(p.pid)
    assert ident is not None
    reused = ProcIdentity(p.pid, ident.create_time - 100.0)  # same pid, different program
    assert reused.process() is None
    assert not reused.alive()


def test_identity_of_an_exited_process(spawned: list[subprocess.Popen[bytes]]) -> None:
    p = start("exit 0", spawned)
    ident = ProcIdentity.of(p.pid)
    assert ident is not None
    deadline = time.monotonic() + 5
    while ident.alive() and time.monotonic() < deadline:  # a zombie counts as dead
        time.sleep(0.01)
    assert not ident.alive()
    p.wait(5)
    assert ident.process() is None
    assert ProcIdentity.of(p.pid) is None


def test_kill_tree_kills_grandchildren(spawned: list[subprocess.Popen[bytes]]) -> None:
    p = start("sleep 60 & sleep 60 & wait", spawned)
    root = psutil.Process(p.pid)
    kids = wait_children(p.pid, 2)
    members = tree(root)
    assert {k.pid for k in kids} | {p.pid} <= {m.pid for m in members}

    left = kill_tree(root, grace=3.0)
    assert left == []
    assert all(gone(k) for k in kids)
    assert gone(root)


def test_kill_tree_also_reaches_detached_group_members(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    # The middle shell exits at once, so the sleep is re-parented: only its group links it.
    p = start("sh -c 'sleep 60 &' ; sleep 60", spawned)
    deadline = time.monotonic() + 5
    group: list[psutil.Process] = []
    while time.monotonic() < deadline:
        group = [q for q in psutil.process_iter() if q.pid != p.pid and _pgid(q.pid) == p.pid]
        if len(group) >= 2 and any(q.ppid() != p.pid for q in group):
            break
        time.sleep(0.01)
    orphans = [q for q in group if q.ppid() != p.pid]
    assert orphans, "the detached sleep did not appear"
    assert {q.pid for q in orphans} <= {m.pid for m in tree(psutil.Process(p.pid))}
    assert kill_tree(psutil.Process(p.pid), grace=3.0) == []
    assert all(gone(q) for q in group)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


@pytest.mark.allow_log(
    r"core\.process\.procs: killing 2 process\(es\) that ignored SIGTERM",
    reason="the children ignore SIGTERM on purpose",
)
def test_processes_ignoring_sigterm_are_killed_after_the_grace(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    p = start('trap "" TERM; sleep 60 & wait', spawned)
    kids = wait_children(p.pid, 1)  # the trap is set before the sleep starts
    root = psutil.Process(p.pid)
    started = time.monotonic()
    left = kill_tree(root, grace=0.5)
    elapsed = time.monotonic() - started
    assert left == []
    assert elapsed >= 0.5  # SIGTERM was tried first
    assert elapsed < 30, "kill_tree waited for the child (sleep 60) instead of killing it"
    assert all(gone(k) for k in kids)
    assert gone(root)


def test_a_recorded_process_that_ends_while_it_is_checked_is_skipped_quietly(
    spawned: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed server's supervisor can exit between the identity check and the look at its
    command line (which a zombie's reads as empty): nothing to kill, and no warning about a
    process that is "not one this app started" (which the log check fails a test on)."""
    p = start("exec sleep 60", spawned)
    ident = ProcIdentity.of(p.pid)
    assert ident is not None
    checked = psutil.Process(p.pid)  # what the identity check saw, alive
    monkeypatch.setattr(ProcIdentity, "process", lambda self: checked)
    os.kill(p.pid, signal.SIGKILL)  # it ends now, unreaped: a zombie
    deadline = time.monotonic() + 30
    while checked.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checked.status() == psutil.STATUS_ZOMBIE
    assert kill_recorded([(ident.pid, ident.create_time)], grace=1.0) == []


def test_a_root_that_does_not_lead_its_group_never_drags_the_group_in(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    # A group leader with two members; the "recorded root" is one member, not the leader.
    p = start("sleep 60 & sleep 60 & wait", spawned)
    a, b = wait_children(p.pid, 2)
    assert tree(a) == [a]  # not its leader, nor its sibling
    assert kill_tree(a, grace=3.0) == []
    assert gone(a) and psutil.Process(p.pid).is_running() and b.is_running()
    assert not gone(b)


@pytest.mark.allow_log(
    r"core\.process\.procs: not killing pid \d+",
    reason="the stranger's process is the input",
)
def test_only_processes_we_spawned_are_killed_from_a_record(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    # Same pid and create time as "recorded", but a command line that is none of ours: spared.
    stranger = start("sleep 60", spawned)
    ident = ProcIdentity.of(stranger.pid)
    assert ident is not None and not spawned_by_us(psutil.Process(stranger.pid))
    assert kill_recorded([(ident.pid, ident.create_time)], grace=1.0) == []
    assert psutil.Process(stranger.pid).status() != psutil.STATUS_ZOMBIE
    # Shaped like one of our supervisors (its flags before "--"), and a program under it: killed.
    sup = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.run(['sleep', '60'])",
            "--log",
            "l",
            "--exit-file",
            "e",
            "--cwd",
            "c",
            "--",
            "opencode",
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    spawned.append(sup)
    (child,) = wait_children(sup.pid, 1)
    assert spawned_by_us(psutil.Process(sup.pid)) and spawned_by_us(child)
    assert is_supervisor(["py", "--log", "l", "--exit-file", "e", "--cwd", "c", "--", "x"])
    assert not is_supervisor(["py", "--", "--log", "l", "--exit-file", "e", "--cwd", "c"])
    sup_ident = ProcIdentity.of(sup.pid)
    assert sup_ident is not None
    assert kill_recorded([(sup_ident.pid, sup_ident.create_time)], grace=3.0) == []
    sup.wait(5)
    assert gone(child)
