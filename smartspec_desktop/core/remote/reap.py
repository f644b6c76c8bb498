"""Remote servers that must not run unowned: killed at stop, else reaped by the next run.

A remote server this app started is recorded with its remote pid and start time (field 22 of
``/proc/PID/stat``) and the server id in its environment. When its record goes (stopped,
crashed, disconnected, replaced) and it could not be killed right then (the host was
unreachable), it waits in ``remote-reap.json`` (state folder) and every later ``status``/start
(:meth:`ServerManager.refresh`) tries again, with a growing pause per host. Only a process with
that pid, that start time *and* that server id in its environment is ever signalled
(:data:`.scripts.KILL`): never one that is not provably ours.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from smartspec_desktop.core.errors import SmartSpecError, WorkspaceError
from smartspec_desktop.core.remote.address import parse_remote
from smartspec_desktop.core.remote.engine import kill_remote
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

#: Pause before the n-th retry of an unreachable host: 5 s, 10 s, … at most 5 minutes.
BACKOFF = (5.0, 300.0)
#: How long a reap may take (an unreachable host fails faster: ssh's ConnectTimeout).
REAP_TIMEOUT = 20.0


@dataclass
class Pending:
    server_id: str
    address: str
    pid: int
    start: int
    tries: int = 0
    next_try: float = 0.0


class ReapQueue:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = FileLock(str(path) + ".lock", timeout=10)

    def _load(self) -> dict[str, Pending]:
        data, _warning = read_json_object(self.path)
        out: dict[str, Pending] = {}
        entries = data.get("pending")
        if isinstance(entries, list):
            for raw in entries:
                with contextlib.suppress(TypeError, ValueError):
                    p = Pending(**raw)
                    if isinstance(p.pid, int) and isinstance(p.start, int) and p.pid > 0:
                        out[p.server_id] = p
        return out

    def _save(self, entries: dict[str, Pending]) -> None:
        if not entries and not self.path.exists():
            return
        atomic_write_json(self.path, {"pending": [asdict(p) for p in entries.values()]})

    def add(self, server_id: str, address: str, pid: int, start: int) -> None:
        if not pid or not start:
            return
        try:
            with self.lock:
                entries = self._load()
                entries[server_id] = Pending(server_id, address, pid, start)
                self._save(entries)
        except (Timeout, OSError) as e:
            log.warning(
                "could not queue the remote server %s on %s for stopping: %s",
                server_id,
                address,
                e,
            )

    def pending(self) -> list[Pending]:
        try:
            return list(self._load().values())
        except OSError:
            return []

    def run(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Try every due entry; returns what happened (for the log and tests)."""
        if not self.path.exists():
            return []
        now = time.time()
        due = [p for p in self.pending() if p.next_try <= now]
        done: list[str] = []
        retry: dict[str, Pending] = {}
        for p in due:
            try:
                addr = parse_remote(p.address)
                outcome = kill_remote(
                    addr, p.pid, p.start, p.server_id, environ=environ, timeout=REAP_TIMEOUT
                )
            except WorkspaceError:
                outcome = "unusable address"
            except SmartSpecError as e:
                p.tries += 1
                p.next_try = now + min(BACKOFF[1], BACKOFF[0] * 2 ** (p.tries - 1))
                retry[p.server_id] = p
                log.info("cannot reach %s to stop its server yet: %s", p.address, e.problem)
                continue
            if outcome in ("stopped", "killed"):
                log.warning(
                    "stopped the remote server %s on %s (pid %s): it was running unowned",
                    p.server_id,
                    p.address,
                    p.pid,
                )
            done.append(f"{p.server_id}: {outcome}")
        if due:
            try:
                with self.lock:
                    entries = self._load()
                    for p in due:
                        entries.pop(p.server_id, None)
                    entries.update(retry)
                    self._save(entries)
            except (Timeout, OSError) as e:
                log.info("could not update %s: %s", self.path, e)
        return done
