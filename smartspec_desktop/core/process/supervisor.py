"""The supervisor: a small process that sits between us and ``opencode serve``.

Why it exists: servers must outlive the CLI (and the window), yet the server's output still has
to reach a rotated, redacted log file, and a crash must be reported with its exit code. Whoever
spawned the server may be gone by then, so this process (started in its own session/process
group, with the server as its child) pumps the output and writes the exit record.

Protocol: it prints one JSON line on stdout, ``{"pid": <server pid>}`` (or ``{"error": ...}``),
then closes stdout. On SIGTERM/SIGINT/SIGHUP it forwards SIGTERM to the server and keeps pumping
until the server is gone. It imports nothing heavy, so it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from smartspec_desktop.core.process.childenv import external_env
from smartspec_desktop.core.redact import Redactor

SECRET_ENV_VARS = (
    "SMARTSPEC_API_KEY",
    "OPENCODE_SERVER_PASSWORD",
    # openwork-server, which runs under this supervisor too (core/launchers.py)
    "OPENWORK_OPENCODE_PASSWORD",
    "OPENWORK_TOKEN",
    "OPENWORK_HOST_TOKEN",
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_MAX_BYTES = 2_000_000
LOG_BACKUPS = 3


def command_prefix() -> list[str]:
    """How to run the supervisor: the frozen app re-executes itself with a hidden flag."""
    if getattr(sys, "frozen", False):
        exe = Path(sys.executable)
        # A windowed Windows executable has no stdout for the handshake: use its console twin
        # (built beside it by build.spec; started with CREATE_NO_WINDOW, so no window flashes).
        twin = exe.with_name(exe.stem + "-cli" + exe.suffix)
        if sys.platform == "win32" and twin.exists():
            exe = twin
        return [str(exe), "--supervise"]
    return [sys.executable, "-m", "smartspec_desktop.core.process.supervisor"]


def supervised_command(argv: list[str], *, log_path: Path, exit_file: Path, cwd: str) -> list[str]:
    """The command that runs ``argv`` under a supervisor (its log, its exit record, its cwd)."""
    return command_prefix() + [
        "--log",
        str(log_path),
        "--exit-file",
        str(exit_file),
        "--cwd",
        cwd,
        "--",
        *argv,
    ]


def _writer(log_path: Path) -> logging.Logger:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("smartspec.supervisor")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def _write_exit(path: Path, record: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartspec-supervisor")
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--exit-file", required=True, type=Path)
    parser.add_argument("--cwd", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    redact = Redactor(os.environ.get(v, "") for v in SECRET_ENV_VARS)
    out = _writer(args.log)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    out.info("[smartspec %s] starting: %s (in %s)", stamp, redact(" ".join(command)), args.cwd)

    def handshake(payload: dict[str, object]) -> None:
        # Whoever started us may be gone (a CLI killed mid-start): keep supervising anyway, so
        # the server stays logged and the next run can adopt or reap it.
        try:
            sys.stdout.write(json.dumps(payload) + "\n")
            sys.stdout.flush()
        except OSError:
            out.info("[smartspec] the starter is gone; supervising on")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    child: subprocess.Popen[bytes] | None = None
    stop_requested = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        if child is not None and child.poll() is None:
            with contextlib.suppress(OSError):
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT) + (
        (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
    ):
        signal.signal(sig, on_signal)

    try:
        child = subprocess.Popen(
            command,
            cwd=args.cwd,
            env=external_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as e:
        message = redact(f"could not start {command[0] if command else '?'}: {e}")
        out.info("[smartspec] %s", message)
        _write_exit(args.exit_file, {"exit_code": 127, "error": message, "ended_at": time.time()})
        handshake({"error": message})
        return 127

    handshake({"pid": child.pid})
    assert child.stdout is not None
    for raw in iter(child.stdout.readline, b""):
        line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
        if line:
            out.info("%s", redact(line))
    code = child.wait()
    out.info(
        "[smartspec %s] %s exited with code %s%s",
        time.strftime("%Y-%m-%d %H:%M:%S"),
        os.path.basename(command[0]) if command else "opencode",
        code,
        " (stop requested)" if stop_requested else "",
    )
    _write_exit(
        args.exit_file,
        {"exit_code": code, "stop_requested": stop_requested, "ended_at": time.time()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
