"""Processes we own: identity that survives pid reuse, and killing a whole tree.

A pid alone is not an identity: after a crash or reboot the number may belong to another program.
We record (pid, create_time) and only ever signal a process whose both match. That pair is public
(anyone can read a process's start time), so a recorded process is also killed only when it is
provably one we spawned (:func:`spawned_by_us`): our own user's, and with the command line of our
supervisor, a program under it, or one of the programs we supervise. A process group is signalled
(and its members swept) only when the recorded root leads it.
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
    """The root, its descendants, and (POSIX) every process still in its process group when the
    root leads that group (we start supervisors in a session of their own); a root inside
    someone else's group never drags that group in."""
    procs: dict[int, psutil.Process] = {root.pid: root}
    with contextlib.suppress(psutil.Error):
        for c in root.children(recursive=True):
            procs[c.pid] = c
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            pgid = os.getpgid(root.pid)
            if pgid != root.pid:
                return list(procs.values())
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

    A pid of 0 (never recorded), a pid now owned by another program, and a process that matches
    the record but is not one we spawned (:func:`spawned_by_us`: a planted or damaged record) are
    skipped. Returns what would not die.
    """
    leftovers: list[psutil.Process] = []
    for pid, ctime in identities:
        if not pid:
            continue
        proc = ProcIdentity(pid, ctime).process()
        if proc is None:
            continue
        if not spawned_by_us(proc):
            if _ended(proc):  # it ended after the identity check (a crashed server's exit)
                continue
            log.warning(
                "not killing pid %s: it matches a recorded process but is not one this app "
                "started (another user's, or another program's command line)",
                pid,
            )
            continue
        leftovers += kill_tree(proc, grace=grace)
    return leftovers


def _ended(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited (a zombie too: its command line reads as empty)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


#: The flags every supervisor we start carries (core.process.supervisor.supervised_command).
SUPERVISOR_FLAGS = ("--log", "--exit-file", "--cwd")
#: The programs we run under a supervisor (what an orphan, whose supervisor died, looks like).
SUPERVISED_PROGRAMS = ("opencode", "openwork")


def is_supervisor(cmdline: list[str]) -> bool:
    """Whether an argv is one of our supervisors' (its flags, in order, before ``--``)."""
    head = cmdline[: cmdline.index("--")] if "--" in cmdline else cmdline
    try:
        places = [head.index(flag) for flag in SUPERVISOR_FLAGS]
    except ValueError:
        return False
    return places == sorted(places)


def spawned_by_us(proc: psutil.Process) -> bool:
    """Whether ``proc`` is provably one we spawned: our own user's (POSIX), and a supervisor of
    ours, a process under one, or one of the programs we supervise (its first two argv
    entries name ``opencode`` or ``openwork``: a server whose supervisor died)."""
    try:
        if sys.platform != "win32" and proc.uids().real != os.getuid():
            return False
        cmdline = proc.cmdline()
        if is_supervisor(cmdline):
            return True
        for parent in proc.parents():
            with contextlib.suppress(psutil.Error):
                if is_supervisor(parent.cmdline()):
                    return True
    except psutil.Error:
        return False
    names = [os.path.basename(arg).lower() for arg in cmdline[:2]]
    return any(program in name for name in names for program in SUPERVISED_PROGRAMS)


def kill_popen_tree(proc: subprocess.Popen[bytes], *, grace: float = 3.0) -> None:
    """Kill the tree of a process we just spawned, and reap it (no zombie)."""
    ident = ProcIdentity.of(proc.pid)
    root = ident.process() if ident else None
    if root is not None:
        kill_tree(root, grace=grace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
