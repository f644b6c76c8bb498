"""Processes we own: identity that survives pid reuse, and killing a whole tree.

A pid alone is not an identity: after a crash or reboot the number may belong to another program.
We record (pid, create_time) and only ever signal a process whose both match.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcIdentity:
    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcIdentity | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def process(self) -> psutil.Process | None:
        """The live process if it is still the one we started, else None."""
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > 0.05:
                return None
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


def tree(root: psutil.Process) -> list[psutil.Process]:
    """The root, its descendants, and (POSIX) every process still in its process group."""
    procs: dict[int, psutil.Process] = {root.pid: root}
    with contextlib.suppress(psutil.Error):
        for c in root.children(recursive=True):
            procs[c.pid] = c
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            pgid = os.getpgid(root.pid)
            for p in psutil.process_iter():
                with contextlib.suppress(OSError, psutil.Error):
                    if p.pid not in procs and os.getpgid(p.pid) == pgid:
                        procs[p.pid] = p
    return list(procs.values())


def kill_tree(root: psutil.Process, *, grace: float = 5.0) -> list[psutil.Process]:
    """Terminate ``root`` and everything under it; SIGKILL what is left after ``grace`` seconds.

    Returns the processes that were still alive at the end (should be empty).
    """
    procs = tree(root)
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            pgid = os.getpgid(root.pid)
            # Only signal the group when the root leads it (we started it in a new session).
            if pgid == root.pid:
                os.killpg(pgid, signal.SIGTERM)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    if alive:
        log.warning("killing %d process(es) that ignored SIGTERM", len(alive))
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        _, alive = psutil.wait_procs(alive, timeout=3.0)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def kill_recorded(
    identities: Iterable[tuple[int, float]], *, grace: float = 5.0
) -> list[psutil.Process]:
    """Kill the tree of each recorded (pid, create_time) that is still provably that process.

    A pid of 0 (never recorded) and a pid now owned by another program are skipped. Returns what
    would not die.
    """
    leftovers: list[psutil.Process] = []
    for pid, ctime in identities:
        if not pid:
            continue
        proc = ProcIdentity(pid, ctime).process()
        if proc is not None:
            leftovers += kill_tree(proc, grace=grace)
    return leftovers


def kill_popen_tree(proc: subprocess.Popen[bytes], *, grace: float = 3.0) -> None:
    """Kill the tree of a process we just spawned, and reap it (no zombie)."""
    ident = ProcIdentity.of(proc.pid)
    root = ident.process() if ident else None
    if root is not None:
        kill_tree(root, grace=grace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
