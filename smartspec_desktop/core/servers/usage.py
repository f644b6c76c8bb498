"""Memory and CPU of each server's process tree (issue 15), cheaply: psutil only, no HTTP.

A server's tree is its supervisor, the server and everything under them, plus the supervisors
(and programs) of its recorded children (openwork-server). Every root is identity-checked
(pid *and* create time), so a reused pid is never counted. CPU needs two samples of the same
process: :class:`UsageSampler` keeps the ``psutil.Process`` objects between calls, and reports
``cpu_percent=None`` for a tree none of whose processes it has seen before.

A remote workspace's server runs on its host: what runs here is only its supervisor and ssh.
Its figures are the host's ``opencode serve`` tree, which the wrapper there samples from
``/proc`` every few seconds and sends over the server's own ssh channel; the supervisor keeps
the latest in ``<exit file>.usage`` (:func:`remote_usage_file`). Reading them costs one small
file, never a connection; a missing or stale file (older than three of its own intervals), or
one about another remote process, is *unknown* (``rss_mb=None``), never 0. Such a figure
carries its ``host``, and every text says "on HOST".
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from smartspec_desktop.core.process.procs import ProcIdentity
from smartspec_desktop.core.servers.registry import ServerRecord

MB = 1024 * 1024


#: How old a remote server's figures may be, in its sampling intervals, before they are unknown.
STALE_INTERVALS = 3
#: ... and at least this many seconds (a busy host or a slow link delays a sample).
STALE_MIN = 15.0


@dataclass(frozen=True)
class Usage:
    """One server's tree: resident memory in MB (None: unknown), CPU in percent of one core
    (None: unknown yet), and how many processes it has (0: nothing runs, e.g. a sleeping
    server). ``host`` is set when the figures are of a remote server's tree on that host."""

    rss_mb: float | None
    cpu_percent: float | None
    processes: int
    host: str = ""

    def public(self) -> dict[str, float | str | None]:
        cpu = None if self.cpu_percent is None else round(self.cpu_percent, 1)
        rss = None if self.rss_mb is None else round(self.rss_mb, 1)
        return {"rss_mb": rss, "cpu_percent": cpu, "usage_host": self.host or None}


def remote_usage_file(exit_file: str | Path) -> Path:
    """Where a remote server's supervisor keeps the host's latest figures."""
    return Path(str(exit_file) + ".usage")


def read_remote_usage(rec: ServerRecord, *, now: float | None = None) -> Usage | None:
    """The host's figures of a remote server's tree, or None when missing, stale or about
    another remote process than the record's."""
    try:
        data = json.loads(remote_usage_file(rec.exit_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    at, every, rss = data.get("at"), data.get("every"), data.get("rss_mb")
    cpu, procs, pid = data.get("cpu_percent"), data.get("processes"), data.get("pid")
    if not isinstance(at, int | float) or not isinstance(every, int | float):
        return None
    if not isinstance(rss, int | float) or not isinstance(procs, int):
        return None
    if rec.remote_pid and pid != rec.remote_pid:
        return None  # an earlier connection's server (it reconnected since)
    age = (time.time() if now is None else now) - at
    if age > max(STALE_MIN, STALE_INTERVALS * float(every)):
        return None
    return Usage(
        rss_mb=float(rss),
        cpu_percent=float(cpu) if isinstance(cpu, int | float) else None,
        processes=procs,
        host=rec.host,
    )


def _roots(rec: ServerRecord) -> list[tuple[int, float]]:
    pairs = [(rec.supervisor_pid, rec.supervisor_create_time), (rec.pid, rec.create_time)]
    for child in rec.children:
        pairs += child.identities()
    return [(pid, ctime) for pid, ctime in pairs if pid]


class UsageSampler:
    """Samples server trees; keep one per process (the window's service, one CLI run)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, float], psutil.Process] = {}

    def sample(self, records: Iterable[ServerRecord]) -> dict[str, Usage]:
        """Usage per server id. Processes no longer seen are dropped from the cache."""
        out: dict[str, Usage] = {}
        seen: set[tuple[int, float]] = set()
        for rec in records:
            procs: dict[int, psutil.Process] = {}
            for pid, ctime in _roots(rec):
                root = ProcIdentity(pid, ctime).process()
                if root is None:
                    continue
                procs[root.pid] = root
                with contextlib.suppress(psutil.Error):
                    for p in root.children(recursive=True):
                        procs[p.pid] = p
            rss, cpu, known = 0, 0.0, False
            for p in procs.values():
                try:
                    key = (p.pid, p.create_time())
                    cached = self._cache.get(key)
                    if cached is None:
                        cached = self._cache[key] = p
                        cached.cpu_percent(None)  # the first sample: no figure yet
                    else:
                        cpu += cached.cpu_percent(None)
                        known = True
                    rss += cached.memory_info().rss
                    seen.add(key)
                except psutil.Error:
                    continue
            out[rec.server_id] = Usage(
                rss_mb=rss / MB,
                cpu_percent=cpu if known or not procs else None,
                processes=len(procs),
            )
            if rec.host and procs:
                # A remote server: what runs here is its supervisor and ssh; its figures are
                # the host's (unknown until the first sample arrives, or when stale).
                out[rec.server_id] = read_remote_usage(rec) or Usage(
                    rss_mb=None, cpu_percent=None, processes=len(procs), host=rec.host
                )
        for key in set(self._cache) - seen:
            del self._cache[key]
        return out

    def sample_settled(
        self, records: list[ServerRecord], *, wait: float = 0.25
    ) -> dict[str, Usage]:
        """:meth:`sample`, and once more after ``wait`` s when a CPU figure is still unknown
        (a one-shot caller such as ``status``)."""
        first = self.sample(records)
        # (a remote server's CPU comes from its host's samples: waiting here would not help)
        if all(u.cpu_percent is not None or u.host for u in first.values()):
            return first
        time.sleep(wait)
        return self.sample(records)


def total(usages: Iterable[Usage]) -> Usage:
    """The sum over servers, on every host (a figure is None only when every one is unknown;
    unknown ones count as nothing, not as 0)."""
    items = list(usages)
    cpus = [u.cpu_percent for u in items if u.cpu_percent is not None]
    rss = [u.rss_mb for u in items if u.rss_mb is not None]
    return Usage(
        rss_mb=sum(rss) if rss or not items else None,
        cpu_percent=sum(cpus) if cpus or not items else None,
        processes=sum(u.processes for u in items),
    )


def format_usage(u: Usage) -> str:
    """``"318 MB · CPU 1.2 %"`` (``"CPU …"`` while unknown; ``"… on devbox"`` for a remote
    server's, measured on its host); ``""`` when nothing runs."""
    if not u.processes:
        return ""
    cpu = "…" if u.cpu_percent is None else f"{u.cpu_percent:.1f} %"
    mem = "? MB" if u.rss_mb is None else f"{u.rss_mb:.0f} MB"
    return f"{mem} · CPU {cpu}" + (f" on {u.host}" if u.host else "")


def memory_text(u: Usage) -> str:
    """The memory alone, for the workspace list: ``"318 MB"``, ``"318 MB on host"``
    (the list names the host already), ``"? MB on host"`` while unknown."""
    mem = "? MB" if u.rss_mb is None else f"{u.rss_mb:.0f} MB"
    return mem + (" on host" if u.host else "")
