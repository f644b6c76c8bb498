"""Reconciling server records with the process table: what became of each recorded server.

Pure decisions over a :class:`ProcessTable` (the real one is :class:`LiveProcesses`; tests pass
a fake) and the supervisor's exit records: a record is kept (possibly turned ``crashed``, or
``sleeping`` when its supervisor stopped it for being idle) or forgotten; an interrupted
start's unrecorded supervisor is reaped.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Protocol

import psutil

from smartspec_desktop.core.process.procs import ProcIdentity, kill_tree
from smartspec_desktop.core.process.supervised import ExitRecord
from smartspec_desktop.core.servers.registry import (
    ACTIVE,
    CRASHED,
    SLEEPING,
    STARTING,
    STOPPING,
    ServerRecord,
)

log = logging.getLogger(__name__)


class ProcessTable(Protocol):
    def alive(self, pid: int, create_time: float) -> bool:
        """Whether ``pid`` runs and is still the process created at ``create_time``."""

    def kill_supervisor_of(self, exit_file: str) -> bool:
        """Kill the tree of the supervisor whose argv names ``exit_file``; True if one ran."""


class LiveProcesses:
    """The machine's process table."""

    def alive(self, pid: int, create_time: float) -> bool:
        return bool(pid) and ProcIdentity(pid, create_time).alive()

    def kill_supervisor_of(self, exit_file: str) -> bool:
        # ``--exit-file <this server's file>`` is the only identity an unrecorded supervisor
        # has, and one no other program carries, so a reused pid is never hit.
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            for i, arg in enumerate(cmd[:-1]):
                if arg == "--exit-file" and cmd[i + 1] == exit_file:
                    kill_tree(proc, grace=3.0)
                    return True
        return False


def reconcile(rec: ServerRecord, table: ProcessTable) -> bool:
    """Update ``rec`` in place from the processes; False means "forget it"."""
    if rec.status not in ACTIVE:
        return True  # crashed records stay until cleared, so the user sees why
    server_alive = bool(rec.pid) and table.alive(rec.pid, rec.create_time)
    if rec.status == STARTING and not rec.pid:
        if table.alive(rec.owner_pid, rec.owner_create_time):
            return True
        # Its starter died before it could record the server: a supervisor (and server) it
        # spawned may be running unrecorded. Reap them, or they would be orphans for good.
        if rec.exit_file and table.kill_supervisor_of(rec.exit_file):
            log.warning(
                "reaped the unrecorded server of %s (its start was interrupted)",
                rec.workspace_path,
            )
        return False
    if server_alive:
        return True
    outcome = ExitRecord.read(rec.exit_file)
    if outcome is None:
        sup_alive = bool(rec.supervisor_pid) and table.alive(
            rec.supervisor_pid, rec.supervisor_create_time
        )
        if sup_alive:
            return True  # about to write the exit record
        log.warning(
            "forgetting the server of %s: pid %s is gone and left no exit record "
            "(reboot or killed supervisor)",
            rec.workspace_path,
            rec.pid,
        )
        return False
    if rec.status == STOPPING or outcome.stop_requested:
        return False
    if outcome.slept:
        # Idle servers sleep (issue 15): keep the record (and its password), not a crash.
        rec.status = SLEEPING
        rec.exit_code = None
        rec.error = ""
        if outcome.ended_at is not None:
            ended = datetime.fromtimestamp(outcome.ended_at, timezone.utc)
            rec.ended_at = ended.isoformat(timespec="seconds")
        return True
    rec.status = CRASHED
    rec.exit_code = outcome.exit_code
    if outcome.ended_at is not None:
        ended = datetime.fromtimestamp(outcome.ended_at, timezone.utc)
        rec.ended_at = ended.isoformat(timespec="seconds")
    rec.error = f"OpenCode exited unexpectedly ({outcome})."
    if rec.host:
        rec.error = disconnected_error(rec.host, outcome)
    return True


def disconnected_error(host: str, outcome: ExitRecord) -> str:
    """What a remote server's end says (issue 15): its ssh connection ended (255: ssh's own
    failure, e.g. the connection was lost), which also stopped the remote server."""
    if outcome.exit_code == 255:
        return (
            f"Disconnected from {host}: the ssh connection was lost and could not be made "
            "again, and the remote server stopped with it (its sessions are kept there). Start "
            "it again to reconnect."
        )
    return (
        f"Disconnected from {host}: the connection or OpenCode there ended ({outcome}; see "
        "the log for why), and the remote server stopped with it. Start it again to reconnect."
    )
