"""A program run under our supervisor, seen from the side that starts it.

:class:`Supervised` is the one way this app starts a long-lived program (``opencode serve``,
openwork-server): spawn the supervisor (:mod:`.supervisor`) in a new process group with the
program as its child, read its JSON handshake, know both identities (pid + create time), wait
until the program is ready while racing its exit, read its exit record, and kill the whole tree.
Used as a context manager, it kills everything it started unless :meth:`Supervised.keep` was
called, so a start that fails at any point leaves nothing behind::

    with Supervised.spawn(argv, name="OpenCode", log_path=..., exit_file=..., cwd=ws, env=env) as p:
        record(p.pid, p.supervisor_pid)
        p.wait_ready(probe, deadline)  # raises EarlyExit / NotReady
        p.keep()  # the program outlives this block (and this process)

The caller turns :class:`EarlyExit` and :class:`NotReady` into its own user-facing error: what to
tell the user, and whether a retry can help, depends on the program.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartspec_desktop.core.errors import ServerStartError
from smartspec_desktop.core.process.procs import ProcIdentity, kill_popen_tree
from smartspec_desktop.core.process.supervisor import supervised_command
from smartspec_desktop.core.storage.paths import make_private_dir

#: How long the supervisor may take to print its handshake line.
HANDSHAKE_TIMEOUT = 20.0


def log_tail(path: str | Path, lines: int = 30, *, missing_ok: bool = True) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read and ``missing_ok``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        if missing_ok:
            return ""
        raise


def last_line(tail: str, limit: int = 200) -> str:
    """The program's last output line in a log tail (the supervisor's own lines skipped)."""
    out = [ln for ln in tail.splitlines() if ln.strip() and not ln.startswith("[smartspec")]
    return out[-1][:limit] if out else "no output"


@dataclass(frozen=True)
class ExitRecord:
    """What the supervisor wrote when its program ended (``<exit file>``, JSON)."""

    exit_code: int | None = None
    stop_requested: bool = False
    #: Seconds since the epoch.
    ended_at: float | None = None
    #: Set when the program could not be started at all.
    error: str = ""
    #: The supervisor stopped an idle server (``--idle-minutes``, issue 15).
    slept: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExitRecord:
        code, ended, error = data.get("exit_code"), data.get("ended_at"), data.get("error")
        return cls(
            exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            stop_requested=data.get("stop_requested") is True,
            ended_at=float(ended) if isinstance(ended, int | float) else None,
            error=error if isinstance(error, str) else "",
            slept=data.get("slept") is True,
        )

    @classmethod
    def read(cls, path: str | Path) -> ExitRecord | None:
        """The record in ``path``, or None while there is none (or it cannot be read)."""
        if not path:
            return None
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls.from_json(data) if isinstance(data, dict) else None

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that killed the program (POSIX: a negative exit code)."""
        if self.exit_code is None or self.exit_code >= 0 or sys.platform == "win32":
            return None
        try:
            return signal.Signals(-self.exit_code)
        except ValueError:
            return None

    def __str__(self) -> str:
        sig = self.signal
        if sig is not None:
            return f"killed by {sig.name}"
        if self.exit_code is None:
            return "exit code unknown"
        return f"exit code {self.exit_code}"


@dataclass(frozen=True)
class Handshake:
    """The supervisor's first stdout line: ``{"pid": <program pid>, ...}``, parsed.

    ``fields`` holds the whole object, so a supervisor that reports more (e.g. a port it bound)
    needs no change here.
    """

    pid: int
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, line: bytes, *, name: str, log_path: Path) -> Handshake:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {}
        pid = msg.get("pid") if isinstance(msg, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool):
            problem = msg.get("error") if isinstance(msg, dict) else None
            raise ServerStartError(
                f"{name} could not be started: {problem or 'the supervisor did not answer'}.",
                f"See the log {log_path}.",
            )
        return cls(pid, dict(msg))


class EarlyExit(Exception):
    """The program ended before it was ready."""

    def __init__(self, name: str, outcome: ExitRecord | None, tail: str) -> None:
        self.outcome = outcome
        self.tail = tail
        super().__init__(f"{name} exited during start-up ({self.how}): {self.summary}")

    @property
    def how(self) -> str:
        return str(self.outcome if self.outcome is not None else ExitRecord())

    @property
    def summary(self) -> str:
        return last_line(self.tail)

    def mentions(self, markers: Iterable[str]) -> bool:
        low = self.tail.lower()
        return any(m.lower() in low for m in markers)


class NotReady(Exception):
    """The program was still not ready at the deadline (it is still running)."""

    def __init__(self, name: str, tail: str) -> None:
        self.tail = tail
        super().__init__(f"{name} was not ready in time")


def _popen(cmd: list[str], env: Mapping[str, str], cwd: str, stdin: int) -> subprocess.Popen[bytes]:
    kwargs: dict[str, object] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
    else:
        kwargs["start_new_session"] = True
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        cmd,
        cwd=cwd,
        env=dict(env),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        **kwargs,
    )


class Supervised:
    """A running supervisor and its program; build one with :meth:`spawn`."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        handshake: Handshake,
        *,
        name: str,
        log_path: Path,
        exit_file: Path,
    ) -> None:
        self.popen, self.handshake = popen, handshake
        self.name, self.log_path, self.exit_file = name, log_path, exit_file
        self.program = ProcIdentity.of(handshake.pid)
        self.supervisor = ProcIdentity.of(popen.pid)
        self._kept = False

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path,
        exit_file: Path,
        cwd: str,
        env: Mapping[str, str],
        supervisor_args: Sequence[str] = (),
        stdin_payload: bytes | None = None,
        on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
    ) -> Supervised:
        """Start ``argv`` under a supervisor and read its handshake.

        ``supervisor_args`` go to the supervisor (before ``--``); ``stdin_payload`` is written to
        its stdin, which is then closed (a secret never goes through argv). ``on_spawn`` sees the
        supervisor's Popen before the handshake (to keep it reaped). On any failure the tree is
        killed and the error raised: a :class:`ServerStartError` naming ``name`` when the
        supervisor reports no program.
        """
        make_private_dir(exit_file.parent)
        exit_file.unlink(missing_ok=True)
        cmd = supervised_command(list(argv), log_path=log_path, exit_file=exit_file, cwd=cwd)
        if supervisor_args:
            split = cmd.index("--")
            cmd[split:split] = list(supervisor_args)
        stdin = subprocess.PIPE if stdin_payload is not None else subprocess.DEVNULL
        popen = _popen(cmd, env, cwd, stdin)
        try:
            if on_spawn is not None:
                on_spawn(popen)
            if stdin_payload is not None:
                assert popen.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    popen.stdin.write(stdin_payload)
                with contextlib.suppress(OSError):
                    popen.stdin.close()
            handshake = Handshake.parse(_read_line(popen), name=name, log_path=log_path)
        except BaseException:
            kill_popen_tree(popen)
            raise
        return cls(popen, handshake, name=name, log_path=log_path, exit_file=exit_file)

    # ---------------------------------------------------------------------------- identities

    @property
    def pid(self) -> int:
        return self.handshake.pid

    @property
    def supervisor_pid(self) -> int:
        return self.popen.pid

    @property
    def create_time(self) -> float:
        return self.program.create_time if self.program else 0.0

    @property
    def supervisor_create_time(self) -> float:
        return self.supervisor.create_time if self.supervisor else 0.0

    def alive(self) -> bool:
        """Whether the supervisor runs and the program is still the one it started."""
        return self.popen.poll() is None and self.program is not None and self.program.alive()

    def poll(self) -> int | None:
        """The supervisor's exit status once it ended (it is reaped), else None."""
        return self.popen.poll()

    # ----------------------------------------------------------------------------- readiness

    def wait_ready(
        self, probe: Callable[[], bool], deadline: float, *, interval: float = 0.1
    ) -> None:
        """Call ``probe`` until it returns True, racing the program's exit.

        ``deadline`` is a :func:`time.monotonic` value. Raises :class:`EarlyExit` when the
        program ends first, :class:`NotReady` at the deadline; whatever ``probe`` raises
        propagates (e.g. a port answered by someone else).
        """
        while time.monotonic() < deadline:
            if not self.alive():
                raise EarlyExit(self.name, self.outcome(wait=1.0), self.log_tail())
            if probe():
                return
            time.sleep(interval)
        raise NotReady(self.name, self.log_tail())

    def outcome(self, *, wait: float = 0.0) -> ExitRecord | None:
        """The exit record, waiting up to ``wait`` s for the supervisor to write it."""
        end = time.monotonic() + wait
        while True:
            record = ExitRecord.read(self.exit_file)
            if record is not None or time.monotonic() >= end:
                return record
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    # ------------------------------------------------------------------------------- cleanup

    def kill(self) -> None:
        """Kill the supervisor's whole tree (the program included) and reap it."""
        kill_popen_tree(self.popen)

    def keep(self) -> None:
        """The start succeeded: leaving the ``with`` block no longer kills the program."""
        self._kept = True

    def __enter__(self) -> Supervised:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[1] is not None or not self._kept:
            self.kill()


def _read_line(popen: subprocess.Popen[bytes]) -> bytes:
    """The supervisor's handshake line; a supervisor silent for too long is killed."""
    assert popen.stdout is not None
    timer = threading.Timer(HANDSHAKE_TIMEOUT, popen.kill)
    timer.start()
    try:
        return popen.stdout.readline()
    finally:
        timer.cancel()
        popen.stdout.close()
