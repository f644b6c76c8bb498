"""Memory and CPU of each server's process tree (issue 15), cheaply: psutil only, no HTTP.

A server's tree is its supervisor, the server and everything under them, plus the supervisors
(and programs) of its recorded children (openwork-server). Every root is identity-checked
(pid *and* create time), so a reused pid is never counted. CPU needs two samples of the same
process: :class:`UsageSampler` keeps the ``psutil.Process`` objects between calls, and reports
``cpu_percent=None`` for a tree none of whose processes it has seen before.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from smartspec_desktop.core.process.procs import ProcIdentity
from smartspec_desktop.core.servers.registry import ServerRecord

MB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """One server's tree: resident memory in MB, CPU in percent of one core (None: unknown
    yet), and how many processes it has (0: nothing runs, e.g. a sleeping server)."""

    rss_mb: float
    cpu_percent: float | None
    processes: int

    def public(self) -> dict[str, float | None]:
        cpu = None if self.cpu_percent is None else round(self.cpu_percent, 1)
        return {"rss_mb": round(self.rss_mb, 1), "cpu_percent": cpu}


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
        for key in set(self._cache) - seen:
            del self._cache[key]
        return out

    def sample_settled(
        self, records: list[ServerRecord], *, wait: float = 0.25
    ) -> dict[str, Usage]:
        """:meth:`sample`, and once more after ``wait`` s when a CPU figure is still unknown
        (a one-shot caller such as ``status``)."""
        first = self.sample(records)
        if all(u.cpu_percent is not None for u in first.values()):
            return first
        time.sleep(wait)
        return self.sample(records)


def total(usages: Iterable[Usage]) -> Usage:
    """The sum over servers (CPU None only when every figure is unknown)."""
    items = list(usages)
    cpus = [u.cpu_percent for u in items if u.cpu_percent is not None]
    return Usage(
        rss_mb=sum(u.rss_mb for u in items),
        cpu_percent=sum(cpus) if cpus or not items else None,
        processes=sum(u.processes for u in items),
    )


def format_usage(u: Usage) -> str:
    """``"318 MB · CPU 1.2 %"`` (``"CPU …"`` while unknown); ``""`` when nothing runs."""
    if not u.processes:
        return ""
    cpu = "…" if u.cpu_percent is None else f"{u.cpu_percent:.1f} %"
    return f"{u.rss_mb:.0f} MB · CPU {cpu}"
