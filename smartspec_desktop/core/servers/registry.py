"""The session registry: one JSON state file shared by every CLI run and the window.

Read-modify-write happens under a cross-process file lock; writes are atomic. Records carry the
server's pid *and* create-time, so a reused pid is never mistaken for our server.
"""

from __future__ import annotations

import dataclasses
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

log = logging.getLogger(__name__)

STARTING, RUNNING, STOPPING, STOPPED, CRASHED = (
    "starting",
    "running",
    "stopping",
    "stopped",
    "crashed",
)
ACTIVE = (STARTING, RUNNING, STOPPING)
STATE_VERSION = 1


@dataclass
class SessionRecord:
    session_id: str
    workspace_path: str
    status: str
    created_at: str
    port: int = 0
    url: str = ""
    pid: int = 0
    create_time: float = 0.0
    supervisor_pid: int = 0
    supervisor_create_time: float = 0.0
    #: The process that is starting this session (a CLI run or the window).
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
    children: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def public(self) -> dict[str, Any]:
        """What `start --json` / `status --json` print: never a secret."""
        return {
            "session_id": self.session_id,
            "workspace_path": self.workspace_path,
            "port": self.port,
            "url": self.url,
            "pid": self.pid,
            "status": self.status,
            "created_at": self.created_at,
            "opencode_version": self.opencode_version,
            "model": self.model,
            "log_path": self.log_path,
            "exit_code": self.exit_code,
            "error": self.error,
            "port_note": self.port_note,
            "children": [
                {k: c.get(k) for k in ("kind", "pid", "port", "url", "log_path")}
                for c in self.children
            ],
        }


_FIELDS = {f.name for f in dataclasses.fields(SessionRecord)}


def _record_from(data: dict[str, Any]) -> SessionRecord | None:
    try:
        return SessionRecord(**{k: v for k, v in data.items() if k in _FIELDS})
    except TypeError as e:
        log.warning("dropping an unreadable session record: %s", e)
        return None


class Registry:
    def __init__(self, state_file: Path, *, lock_timeout: float = 30.0) -> None:
        self.file = state_file
        self.lock = FileLock(str(state_file) + ".lock", timeout=lock_timeout)
        self.lock_dir = state_file.parent / "locks"
        self.warnings: list[str] = []

    def _load(self) -> dict[str, SessionRecord]:
        data, warning = read_json_object(self.file)
        if warning:
            self.warnings.append(warning)
        sessions = data.get("sessions", {})
        out: dict[str, SessionRecord] = {}
        if isinstance(sessions, dict):
            for sid, raw in sessions.items():
                rec = _record_from(raw) if isinstance(raw, dict) else None
                if rec is not None:
                    out[sid] = rec
        return out

    def _save(self, records: dict[str, SessionRecord]) -> None:
        payload = {
            "version": STATE_VERSION,
            "sessions": {sid: dataclasses.asdict(r) for sid, r in records.items()},
        }
        try:
            atomic_write_json(self.file, payload)
        except OSError as e:
            raise StateError(
                f"Cannot write the session state file {self.file} ({e.strerror or e}).",
                "Make that folder writable, or run with --data-dir pointing to a writable folder.",
            ) from None

    def snapshot(self) -> dict[str, SessionRecord]:
        """A consistent read without taking the lock (writes are atomic renames)."""
        return self._load()

    @contextmanager
    def transaction(self) -> Iterator[dict[str, SessionRecord]]:
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.lock:
                records = self._load()
                before = {k: dataclasses.asdict(v) for k, v in records.items()}
                yield records
                after = {k: dataclasses.asdict(v) for k, v in records.items()}
                if after != before or not self.file.exists():
                    self._save(records)
        except Timeout:
            raise StateError(
                f"The session state {self.file} stayed locked for {self.lock.timeout:.0f} s.",
                "Another SmartSpec Desktop process may be stuck; close it and try again.",
            ) from None
        except OSError as e:
            # PermissionError, a read-only file system, a file where a folder should be, a
            # folder where the state file should be: all the same to the user.
            raise StateError(
                f"Cannot use the state file {self.file} ({e.strerror or e}).",
                "Make that folder writable, or run with --data-dir pointing to a writable folder.",
            ) from None

    def workspace_lock(self, workspace: str, timeout: float) -> FileLock:
        """Held for a whole start: two concurrent starts of one workspace yield one server."""
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256(workspace.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        return FileLock(str(self.lock_dir / f"{digest}.lock"), timeout=timeout)


def same_workspace(a: str, b: str) -> bool:
    return os.path.normcase(a) == os.path.normcase(b)
