"""The attacker: a throw-away second local account that runs a given script.

``attacker`` creates a user with ``useradd`` (unique name, a temporary home of its own, no login
shell), runs scripts as it with ``runuser -u <user> -- /usr/bin/python3`` (the system Python, which
every user can read; the scripts use the standard library only), and at the end kills the
processes it started as that user (by pid) and removes the account with ``userdel``. It skips,
saying why, when the tests do not run as root or the tools are missing (CI runs as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.throwaway import add_user, remove_user

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class AttackerRun:
    """A script running as the attacker: its output lines arrive while it runs."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _new_line: threading.Condition = field(default_factory=threading.Condition)
    _pumps: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.stderr)):
            pump = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, stream: object, sink: list[str]) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            with self._new_line:
                sink.append(line.rstrip("\n"))
                self._new_line.notify_all()

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """The first output line starting with ``prefix`` (fails after ``timeout`` s)."""
        with self._new_line:
            ok = self._new_line.wait_for(
                lambda: (
                    any(ln.startswith(prefix) for ln in self.lines) or self.proc.poll() is not None
                ),
                timeout=timeout,
            )
            found = [ln for ln in self.lines if ln.startswith(prefix)]
        assert ok and found, (
            f"the attacker never printed {prefix!r}; output: {self.lines[-20:]}, "
            f"errors: {self.stderr[-20:]}"
        )
        return found[0]

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Ask it to stop (SIGTERM), wait, and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pump in self._pumps:  # the rest of its output
            pump.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        with self._new_line:
            return list(self.lines)


@dataclass
class Attacker:
    name: str
    uid: int
    gid: int
    home: Path
    runs: list[AttackerRun] = field(default_factory=list)

    def _argv(self, script: str, args: list[str]) -> list[str]:
        path = self.home / f"script-{uuid.uuid4().hex[:8]}.py"
        path.write_text(script, encoding="utf-8")
        os.chown(path, self.uid, self.gid)
        return ["runuser", "-u", self.name, "--", SYSTEM_PYTHON, "-u", str(path), *args]

    def run(
        self, script: str, *args: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` as the attacker to its end; its output."""
        return subprocess.run(
            self._argv(script, list(args)),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
        )

    def start(self, script: str, *args: str) -> AttackerRun:
        """Start ``script`` as the attacker in the background (see :class:`AttackerRun`)."""
        proc = subprocess.Popen(
            self._argv(script, list(args)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.home,
        )
        run = AttackerRun(proc)
        self.runs.append(run)
        return run

    def processes(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["uids"]):
            uids = p.info["uids"]
            if uids is not None and self.uid in (uids.real, uids.effective):
                out.append(p)
        return out


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create a second local user (CI runs as root)"
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian: apt-get install passwd util-linux)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing (the attacker's scripts run with the system Python)"
    return None


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        name, entry, home = add_user("ssatk", "/usr/sbin/nologin")
    except RuntimeError as e:
        pytest.skip(str(e))
    who = Attacker(name, entry.pw_uid, entry.pw_gid, home)
    try:
        yield who
    finally:
        for run in who.runs:
            run.finish(timeout=5)
        left = who.processes()
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)
        remove_user(name, home)
