"""The server registry: one JSON state file shared by every CLI run and the window.

Read-modify-write happens under a cross-process file lock; writes are atomic. Records carry the
server's pid *and* create-time, so a reused pid is never mistaken for our server. Records are
loaded through one validating converter (:func:`..storage.convert.from_json`); the file's
``version`` is read and older layouts migrated (version 1 was ``sessions.json`` with
``sessions``/``session_id`` keys).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from smartspec_desktop.core.errors import StateError
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object
from smartspec_desktop.core.storage.convert import from_json

log = logging.getLogger(__name__)


class ServerStatus(str, enum.Enum):
    """Where a server is in its life; str-valued, so the JSON keeps plain strings."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    #: Stopped by its supervisor after N idle minutes (issue 15); any action wakes it.
    SLEEPING = "sleeping"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __hash__(self) -> int:  # equal to its string, so hash like it too
        return hash(self.value)


STARTING, RUNNING, STOPPING, STOPPED, CRASHED = (
    ServerStatus.STARTING,
    ServerStatus.RUNNING,
    ServerStatus.STOPPING,
    ServerStatus.STOPPED,
    ServerStatus.CRASHED,
)
SLEEPING = ServerStatus.SLEEPING
ACTIVE = (STARTING, RUNNING, STOPPING)
#: 1: sessions.json, {"sessions": {id: {"session_id": …}}}; 2: servers.json, "servers"/"server_id".
STATE_VERSION = 2


@dataclass
class ChildRecord:
    """A program run under a supervisor on behalf of a server (e.g. openwork-server)."""

    kind: str
    url: str = ""
    port: int = 0
    log_path: str = ""
    exit_file: str = ""
    pid: int = 0
    create_time: float = 0.0
    supervisor_pid: int = 0
    supervisor_create_time: float = 0.0
    #: openwork-server's id of the workspace (from its ``/workspaces``), for deep links.
    workspace_id: str = ""

    def identities(self) -> list[tuple[int, float]]:
        """(pid, create_time) of the supervisor and the program, those that were recorded."""
        pairs = [(self.supervisor_pid, self.supervisor_create_time), (self.pid, self.create_time)]
        return [(pid, ctime) for pid, ctime in pairs if pid]


@dataclass
class ServerRecord:
    server_id: str
    workspace_path: str
    status: ServerStatus
    created_at: str
    port: int = 0
    url: str = ""
    pid: int = 0
    create_time: float = 0.0
    supervisor_pid: int = 0
    supervisor_create_time: float = 0.0
    #: The process that is starting this server (a CLI run or the window).
    owner_pid: int = 0
    owner_create_time: float = 0.0
    opencode_version: str = ""
    opencode_path: str = ""
    model: str = ""
    backend_url: str = ""
    log_path: str = ""
    exit_file: str = ""
    #: "keyring" or "file": where the server password is kept.
    password_store: str = ""
    exit_code: int | None = None
    ended_at: str = ""
    error: str = ""
    #: e.g. "ports 3795-3800 were busy; using 41233 instead"
    port_note: str = ""
    #: Whether it was started with the workspace's own config (plugins, MCP servers): trust.
    trusted: bool = False
    children: list[ChildRecord] = field(default_factory=list)
    #: The port of the server's gateway broker (issue 9); 0 for a server started without one.
    broker_port: int = 0
    #: A remote workspace's host as a person reads it (``user@host:port``); "" for a local one.
    host: str = ""
    #: The remote ``opencode serve``'s pid and start time (field 22 of ``/proc/PID/stat``), so
    #: stop and the reaper kill only that process (core/remote/reap.py); 0 when local.
    remote_pid: int = 0
    remote_start: int = 0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def disconnected(self) -> bool:
        """A remote server whose connection is lost: reconnecting (still ``running``) or
        ended (``crashed``); ``error`` says which (issue 15)."""
        return bool(self.host) and self.error.startswith("Disconnected")

    def public(self) -> dict[str, Any]:
        """What `start --json` / `status --json` print: never a secret."""
        return {
            "server_id": self.server_id,
            "workspace_path": self.workspace_path,
            "port": self.port,
            "url": self.url,
            "pid": self.pid,
            "status": self.status.value,
            "created_at": self.created_at,
            "opencode_version": self.opencode_version,
            "model": self.model,
            "log_path": self.log_path,
            "exit_code": self.exit_code,
            "error": self.error,
            "port_note": self.port_note,
            "trusted": self.trusted,
            "broker_port": self.broker_port,
            "host": self.host or None,
            "disconnected": self.disconnected,
            "children": [
                {k: getattr(c, k) for k in ("kind", "pid", "port", "url", "log_path")}
                for c in self.children
            ],
        }


def record_from_json(data: dict[str, Any]) -> ServerRecord | None:
    """The record in ``data`` (current layout), or None (logged) when it is unusable."""
    try:
        return from_json(ServerRecord, data)
    except ValueError as e:
        log.warning("dropping an unreadable server record: %s", e)
        return None


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """The state in ``data`` brought to :data:`STATE_VERSION`'s layout."""
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        version = 1
    if version > STATE_VERSION:
        log.warning("the state was written by a newer version (%s); reading what we know", version)
    if version < 2:
        servers = data.get("sessions", {})
        if isinstance(servers, dict):
            servers = {
                sid: (
                    {("server_id" if k == "session_id" else k): v for k, v in raw.items()}
                    if isinstance(raw, dict)
                    else raw
                )
                for sid, raw in servers.items()
            }
        data = {"version": STATE_VERSION, "servers": servers}
    return data


class Registry:
    def __init__(
        self, state_file: Path, *, legacy_file: Path | None = None, lock_timeout: float = 30.0
    ) -> None:
        self.file = state_file
        #: The version-1 state file, read (and then removed) while ``state_file`` is missing.
        self.legacy_file = legacy_file
        self.lock = FileLock(str(state_file) + ".lock", timeout=lock_timeout)
        self.lock_dir = state_file.parent / "locks"
        self.warnings: list[str] = []

    def drain_warnings(self) -> list[str]:
        """The warnings gathered since the last call (each reported once)."""
        out, self.warnings = self.warnings, []
        return out

    def _source(self) -> Path:
        if self.legacy_file is not None and not self.file.exists() and self.legacy_file.exists():
            return self.legacy_file
        return self.file

    def _load(self) -> dict[str, ServerRecord]:
        data, warning = read_json_object(self._source())
        if warning:
            self.warnings.append(warning)
        servers = migrate(data).get("servers", {})
        out: dict[str, ServerRecord] = {}
        if isinstance(servers, dict):
            for sid, raw in servers.items():
                rec = record_from_json(raw) if isinstance(raw, dict) else None
                if rec is not None:
                    out[sid] = rec
        return out

    def _save(self, records: dict[str, ServerRecord]) -> None:
        payload = {
            "version": STATE_VERSION,
            "servers": {sid: _to_json(r) for sid, r in records.items()},
        }
        try:
            atomic_write_json(self.file, payload)
        except OSError as e:
            raise state_error("write the server state file", self.file, e) from None
        if self.legacy_file is not None:
            with contextlib.suppress(OSError):
                self.legacy_file.unlink(missing_ok=True)

    def snapshot(self) -> dict[str, ServerRecord]:
        """A consistent read without taking the lock (writes are atomic renames)."""
        return self._load()

    @contextmanager
    def transaction(self) -> Iterator[dict[str, ServerRecord]]:
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.lock:
                existed, source = self.file.exists(), self._source()
                records = self._load()
                before = {k: _to_json(v) for k, v in records.items()}
                yield records
                after = {k: _to_json(v) for k, v in records.items()}
                # A damaged file (moved aside by the load) or the legacy one is saved anew; an
                # unchanged state, also "no servers" with no file yet, is not written (issue 11).
                if after != before or (not self.file.exists() and (existed or source != self.file)):
                    self._save(records)
        except Timeout:
            raise StateError(
                f"The server state {self.file} stayed locked for {self.lock.timeout:.0f} s.",
                "Another SmartSpec Desktop process may be stuck; close it and try again.",
            ) from None
        except OSError as e:
            # PermissionError, a file where a folder should be, a folder where the state file
            # should be: the same fix; a full disk and a read-only file system have their own.
            raise state_error("use the state file", self.file, e) from None

    def workspace_lock(self, workspace: str, timeout: float) -> FileLock:
        """Held for a whole start: two concurrent starts of one workspace yield one server."""
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256(workspace.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        return FileLock(str(self.lock_dir / f"{digest}.lock"), timeout=timeout)


def state_error(action: str, file: Path, e: OSError) -> StateError:
    """The user-facing error for an OSError on the state file: the real problem, its fix."""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StateError(
            f"Cannot {action} {file}: the disk is full ({reason}).",
            f"Free some space on the disk that holds {file.parent} (see `df -h '{file.parent}'`), "
            "or run with --data-dir pointing to a folder on another disk.",
        )
    if e.errno == errno.EROFS:
        return StateError(
            f"Cannot {action} {file}: its file system is read-only ({reason}).",
            "Remount it read-write, or run with --data-dir pointing to a writable folder.",
        )
    return StateError(
        f"Cannot {action} {file} ({reason}).",
        "Make that folder writable, or run with --data-dir pointing to a writable folder.",
    )


def _to_json(record: ServerRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["status"] = record.status.value
    return data


def same_workspace(a: str, b: str) -> bool:
    return os.path.normcase(a) == os.path.normcase(b)
