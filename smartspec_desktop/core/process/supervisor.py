"""The supervisor: a small process that sits between us and ``opencode serve``.

Why it exists: servers must outlive the CLI (and the window), yet the server's output still has
to reach a rotated, redacted log file, and a crash must be reported with its exit code. Whoever
spawned the server may be gone by then, so this process (started in its own session/process
group, with the server as its child) pumps the output and writes the exit record.

Protocol: it prints one JSON line on stdout, ``{"pid": <server pid>}`` (or ``{"error": ...}``),
then closes stdout. On SIGTERM/SIGINT/SIGHUP it forwards SIGTERM to the server and keeps pumping
until the server is gone. It imports nothing heavy, so it starts fast.

With ``--broker`` (issue 9) it first reads one JSON line from stdin (``core/broker/payload.py``:
the real API key, the server's token, the control token, the backend URL, the meter and budget
files, more secrets to redact), starts the gateway broker on 127.0.0.1 *before* spawning the
server, and gives the server ``SMARTSPEC_BROKER_URL=http://127.0.0.1:<port>/v1/opencode`` and
``SMARTSPEC_BROKER_TOKEN=<token>``; never the key (``SMARTSPEC_API_KEY`` is removed from the
server's environment even if the parent left it in ours). The handshake then reads
``{"pid": <server pid>, "broker_port": <port>}``. The broker stops, and the key is dropped, when
the server exits.

Output is pumped in chunks with a bound on each line (``MAX_LINE`` bytes, then
``[… N bytes cut]``), so one huge line can neither take the memory nor grow a log file past the
rotation bound (``LOG_MAX_BYTES`` × ``LOG_BACKUPS``) (F12).

With ``--idle-minutes N`` (issue 15) a watcher (:mod:`.idle`) stops the server once it has been
idle for N minutes (no busy session, no client on its port, no gateway call) and the exit
record says ``"slept": true``.
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

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
#: The longest output line kept whole (F12); the rest of a longer line is counted, not kept.
MAX_LINE = 64 * 1024
READ_CHUNK = 64 * 1024
BROKER_URL_ENV = "SMARTSPEC_BROKER_URL"
BROKER_TOKEN_ENV = "SMARTSPEC_BROKER_TOKEN"


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


def supervised_command(
    argv: list[str], *, log_path: Path, exit_file: Path, cwd: str, broker: bool = False
) -> list[str]:
    """The command that runs ``argv`` under a supervisor (its log, its exit record, its cwd).

    ``broker=True`` adds ``--broker``: the supervisor then reads the broker payload from its
    stdin first (start it with ``stdin=PIPE`` and write ``broker_payload(...)``).
    """
    return command_prefix() + [
        "--log",
        str(log_path),
        "--exit-file",
        str(exit_file),
        "--cwd",
        cwd,
        *(["--broker"] if broker else []),
        "--",
        *argv,
    ]


class LinePump:
    """Splits a byte stream into lines with a bound on each (see ``MAX_LINE``, F12).

    ``feed`` returns the complete lines so far (without their newline); a line over
    ``max_line`` bytes is returned cut, marked ``[… N bytes cut]``, once its end arrives (or at
    ``flush``). Memory stays within ``max_line`` plus one read.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._dropped = 0

    def _emit(self, part: bytes | bytearray) -> bytes:
        room = self.max_line - len(self._buf)
        if room > 0:
            self._buf += part[:room]
        self._dropped += max(0, len(part) - max(room, 0))
        line = bytes(self._buf)
        if self._dropped:
            line += b" [\xe2\x80\xa6 %d bytes cut]" % self._dropped
        self._buf.clear()
        self._dropped = 0
        return line

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            lines.append(self._emit(data[start:nl]))
            start = nl + 1
        rest = data[start:]
        room = self.max_line - len(self._buf)
        if room > 0:
            self._buf += rest[:room]
        self._dropped += max(0, len(rest) - max(room, 0))
        return lines

    def flush(self) -> list[bytes]:
        if self._buf or self._dropped:
            return [self._emit(b"")]
        return []


class _RedactingFormatter(logging.Formatter):
    """Redacts every line; the broker's lines (one per call, warnings) get a prefix."""

    def __init__(self, redact: Redactor | None) -> None:
        super().__init__("%(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name.startswith("smartspec_desktop.core.broker"):
            text = "[smartspec broker] " + text
        return self._redact(text) if self._redact is not None else text


def _writer(log_path: Path, redact: Redactor | None = None) -> logging.Logger:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(_RedactingFormatter(redact))
    logger = logging.getLogger("smartspec.supervisor")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    # One handler (thread-safe, one rotation) for the broker's threads too.
    broker_log = logging.getLogger("smartspec_desktop.core.broker")
    broker_log.propagate = False
    broker_log.setLevel(logging.INFO)
    broker_log.addHandler(handler)
    return logger


def _write_exit(path: Path, record: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _read_broker_payload() -> tuple[Any, str | None]:
    """The broker payload from stdin (``--broker``), or the reason it could not be read."""
    from smartspec_desktop.core.broker.payload import PayloadError, read_payload

    try:
        payload = read_payload(sys.stdin.buffer)
    except (PayloadError, OSError) as e:
        return None, str(e)
    finally:
        # Nothing else ever comes that way: do not keep the pipe (or the key in its buffer).
        with contextlib.suppress(OSError):
            sys.stdin.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    return payload, None


def _pump(
    stream: IO[bytes],
    out: logging.Logger,
    redact: Redactor,
    on_line: Callable[[str], bool | None] | None = None,
) -> None:
    """Copy the server's output to the log, line by line, each line bounded (F12).
    ``on_line`` sees each line first; a line it returns True for is not logged."""
    pump = LinePump()
    fd = stream.fileno()

    def write(lines: list[bytes]) -> None:
        for raw in lines:
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r")
            if line:
                if on_line is not None and on_line(line):
                    continue
                out.info("%s", redact(line))

    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except InterruptedError:
            continue
        if not data:
            break
        write(pump.feed(data))
    write(pump.flush())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartspec-supervisor")
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--exit-file", required=True, type=Path)
    parser.add_argument("--cwd", required=True)
    parser.add_argument(
        "--broker",
        action="store_true",
        help="read the broker payload (one JSON line) from stdin and run the gateway broker",
    )
    parser.add_argument(
        "--idle-minutes",
        type=float,
        default=0.0,
        help="stop the server after this many idle minutes (0: never); the record says slept",
    )
    parser.add_argument(
        "--remote",
        action="store_true",
        help="the program is an ssh to a remote server's wrapper (core/remote): its settings go "
        "over its stdin, which stays open (closing it stops the remote server)",
    )
    parser.add_argument(
        "--reconnect",
        type=int,
        default=0,
        help="with --remote: when the connection is lost (ssh exit 255), connect again up to N "
        "times, with a growing pause (the state is in <exit file>.link)",
    )
    parser.add_argument(
        "--workspace",
        default="",
        help="with --remote: the remote workspace's address (not used here: it lets the app "
        "find this server again from the process table, F7)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    payload, payload_error = _read_broker_payload() if args.broker else (None, None)
    redact = Redactor(os.environ.get(v, "") for v in SECRET_ENV_VARS)
    if payload is not None:
        for secret in payload.redact:
            redact.add(secret)
    out = _writer(args.log, redact)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    out.info("[smartspec %s] starting: %s (in %s)", stamp, redact(" ".join(command)), args.cwd)

    def handshake(message: dict[str, object]) -> None:
        # Whoever started us may be gone (a CLI killed mid-start): keep supervising anyway, so
        # the server stays logged and the next run can adopt or reap it.
        try:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()
        except OSError:
            out.info("[smartspec] the starter is gone; supervising on")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    def fail(message: str, code: int) -> int:
        message = redact(message)
        out.info("[smartspec] %s", message)
        _write_exit(args.exit_file, {"exit_code": code, "error": message, "ended_at": time.time()})
        handshake({"error": message})
        return code

    env = external_env()
    password = env.get("OPENCODE_SERVER_PASSWORD", "")
    broker: Any = None
    if args.broker:
        if payload is None:
            return fail(f"the gateway broker could not start: {payload_error}", 126)
        from smartspec_desktop.core.broker.server import Broker

        key = payload.config.key
        try:
            broker = Broker(payload.config)
            if payload.day_cap is not None:
                broker.budgets.set_day_cap(payload.day_cap)
            broker.start()
        except (OSError, ValueError) as e:
            return fail(f"the gateway broker could not start: {e}", 126)
        # The key never reaches the server, whatever the parent left in our environment.
        for name in [k for k, v in env.items() if k == "SMARTSPEC_API_KEY" or key in v]:
            del env[name]
        del key
        env[BROKER_URL_ENV] = broker.url
        env[BROKER_TOKEN_ENV] = payload.config.token
        payload.config.token = ""
        out.info("[smartspec] gateway broker on %s → %s", broker.url, broker.upstream)
        _attribute_sub_agents(broker, command, password)

    remote_settings = b""
    if args.remote:
        command, remote_settings = _remote_handover(command, env, broker)

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
            env=env,
            stdin=subprocess.PIPE if args.remote else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as e:
        if broker is not None:
            broker.stop()
        return fail(f"could not start {command[0] if command else '?'}: {e}", 127)
    respawn_env = dict(env) if args.remote else {}
    del env
    if args.remote and child.stdin is not None:
        # The remote wrapper's settings; the pipe then stays open for the server's whole life
        # (held by this process): when it closes, the remote side stops the server.
        with contextlib.suppress(OSError):
            child.stdin.write(remote_settings)
            child.stdin.flush()
    if not args.reconnect:
        del remote_settings

    hello: dict[str, object] = {"pid": child.pid}
    if broker is not None:
        hello["broker_port"] = broker.port
    handshake(hello)
    # The watcher follows ``child``: after a reconnection it is the new ssh (issue 15).
    slept = _watch_idle(
        args.idle_minutes, command, password, lambda: child, broker, out, args.exit_file
    )
    del password
    assert child.stdout is not None
    link = Path(str(args.exit_file) + ".link")
    usage_file = Path(str(args.exit_file) + ".usage")
    on_line = _remote_lines(_link_writer(link), usage_file) if args.remote else None
    _pump(child.stdout, out, redact, on_line)
    code = child.wait()
    # A remote server's lost connection (issue 15): connect again, with a growing pause; the
    # remote side stopped its server when the channel closed, the new connection starts it
    # again on the same ports (so the app's URL stays valid) and OpenCode's sessions are kept.
    attempt = 0

    def lost() -> bool:  # not put to sleep by the idle watcher (ssh exits 255 on its SIGTERM too)
        return code == 255 and not stop_requested and not (slept is not None and slept.is_set())

    while args.remote and lost() and attempt < args.reconnect:
        attempt += 1
        delay = min(30.0, 2.0 ** (attempt - 1))
        _write_exit(link, {"state": "reconnecting", "attempt": attempt, "of": args.reconnect})
        with contextlib.suppress(OSError):
            usage_file.unlink(missing_ok=True)  # that server is gone
        out.info(
            "[smartspec %s] the connection was lost (ssh exit 255): connecting again in %g s "
            "(attempt %d of %d)",
            time.strftime("%Y-%m-%d %H:%M:%S"),
            delay,
            attempt,
            args.reconnect,
        )
        end = time.monotonic() + delay
        while time.monotonic() < end and not stop_requested:
            time.sleep(0.1)
        if stop_requested:
            break
        try:
            child = subprocess.Popen(
                command,
                cwd=args.cwd,
                env=respawn_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            out.info("[smartspec] could not connect again: %s", e)
            break
        if stop_requested:
            child.terminate()
        assert child.stdin is not None and child.stdout is not None
        with contextlib.suppress(OSError):
            child.stdin.write(remote_settings)
            child.stdin.flush()
        connected = threading.Event()
        _pump(child.stdout, out, redact, _remote_lines(_link_writer(link, connected), usage_file))
        code = child.wait()
        if connected.is_set():
            attempt = 0  # it was connected again: a later loss starts the count anew
    with contextlib.suppress(OSError):
        link.unlink(missing_ok=True)
        usage_file.unlink(missing_ok=True)
    if broker is not None:
        broker.stop()  # drops the key
    out.info(
        "[smartspec %s] %s exited with code %s%s",
        time.strftime("%Y-%m-%d %H:%M:%S"),
        os.path.basename(command[0]) if command else "opencode",
        code,
        " (stop requested)" if stop_requested else "",
    )
    record: dict[str, object] = {
        "exit_code": code,
        "stop_requested": stop_requested,
        "ended_at": time.time(),
    }
    if slept is not None and slept.is_set():
        record["slept"] = True
    _write_exit(args.exit_file, record)
    return 0


def _attribute_sub_agents(broker: Any, command: list[str], password: str) -> None:
    """Let the broker ask the server for a session's parent (a sub-agent's calls count toward
    the task of the session that started it)."""
    from smartspec_desktop.core.broker.sessions import SessionRoots
    from smartspec_desktop.core.process.idle import port_of

    port = port_of(command) or _forwarded_port(command)
    if port and password:
        broker.session_roots = SessionRoots(port, password).root


def _forwarded_port(command: list[str]) -> int:
    """A remote server's local end: the port of ssh's ``-L 127.0.0.1:LOCAL:127.0.0.1:REMOTE``
    (0 when there is none); the remote port itself is not reachable here."""
    for flag, spec in zip(command, command[1:], strict=False):
        parts = spec.split(":")
        if flag == "-L" and len(parts) == 4 and parts[0] == "127.0.0.1" and parts[1].isdigit():
            return int(parts[1])
    return 0


#: What a remote server's wrapper (core/remote/scripts.py SERVE) gets over the ssh channel.
REMOTE_ENV_PREFIXES = ("OPENCODE_DISABLE_",)
REMOTE_ENV_NAMES = (
    "OPENCODE_SERVER_PASSWORD",
    "OPENCODE_CONFIG_CONTENT",
    "OPENCODE_PERMISSION",
    BROKER_TOKEN_ENV,
    "SMARTSPEC_SERVER_ID",
)
BROKER_PORT_PLACEHOLDER = "@BROKER_PORT@"


def _remote_handover(
    command: list[str], env: dict[str, str], broker: Any
) -> tuple[list[str], bytes]:
    """For ``--remote``: the ssh command with the broker's port in its reverse forward, and the
    settings for the remote side (``NAME=value`` lines, ``@models=<json>``, an empty line).

    Every setting of ours leaves ``env`` (ssh could send variables with a ``SendEnv`` of the
    user's config): the ssh process itself carries none; the key never was there."""
    port = str(broker.port) if broker is not None else "0"
    command = [arg.replace(BROKER_PORT_PLACEHOLDER, port) for arg in command]
    lines = []
    for name in sorted(env):
        value = env[name]
        wanted = name in REMOTE_ENV_NAMES or name.startswith(REMOTE_ENV_PREFIXES)
        if wanted and "\n" not in value and "\r" not in value:
            lines.append(f"{name}={value}")
    models = env.get("OPENCODE_CONFIG", "")
    if models:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(Path(models).read_text(encoding="utf-8"))
            lines.append("@models=" + json.dumps(doc, separators=(",", ":")))
    for name in [k for k in env if k.startswith(("OPENCODE_", "SMARTSPEC_"))]:
        del env[name]
    return command, ("\n".join(lines) + "\n\n").encode("utf-8")


REMOTE_IDENTITY = re.compile(r"^\[smartspec remote\] pid=(\d+) start=(\d+)")


def _link_writer(link: Path, connected: threading.Event | None = None) -> Callable[[str], None]:
    """Watches a remote server's output: its wrapper's identity line (that is the remote
    server now), then OpenCode's "listening on" line (the connection is up and the server
    answers): ``<exit file>.link`` then says connected, with the pid and start time."""
    ident: dict[str, int] = {}

    def on_line(line: str) -> None:
        m = REMOTE_IDENTITY.match(line)
        if m is not None:
            ident.update(pid=int(m[1]), start=int(m[2]))
            return
        if ident and "server listening on" in line:
            with contextlib.suppress(OSError):
                _write_exit(link, {"state": "connected", **ident})
            if connected is not None:
                connected.set()

    return on_line


REMOTE_USAGE = re.compile(
    r"^\[smartspec remote\] usage pid=(\d+) procs=(\d+) rss_kb=(\d+) ticks=(\d+) "
    r"up=([0-9.]+) hz=(\d+) every=([0-9.]+)$"
)


def _remote_lines(
    link_writer: Callable[[str], None], usage_file: Path
) -> Callable[[str], bool | None]:
    """A remote server's output lines: the connection's (:func:`_link_writer`), and the host's
    samples of the server's tree, kept in ``usage_file`` (read by core/servers/usage.py) and
    not logged (one every few seconds)."""
    last: dict[int, tuple[float, float]] = {}  # pid → (ticks, uptime) of the previous sample

    def on_line(line: str) -> bool:
        m = REMOTE_USAGE.match(line)
        if m is None:
            link_writer(line)
            return False
        pid, procs, rss_kb, ticks = int(m[1]), int(m[2]), int(m[3]), int(m[4])
        up, hz, every = float(m[5]), int(m[6]) or 100, float(m[7])
        cpu: float | None = None
        before = last.get(pid)
        if before is not None and up > before[1]:
            # CPU time of the tree between two samples, over the host's own clock; a child
            # that ended takes its ticks along (never below 0).
            cpu = max(0.0, (ticks - before[0]) / hz / (up - before[1]) * 100.0)
        last.clear()
        last[pid] = (ticks, up)
        record: dict[str, object] = {
            "pid": pid,
            "processes": procs,
            "rss_mb": round(rss_kb / 1024, 1),
            "cpu_percent": None if cpu is None else round(cpu, 1),
            "every": every,
            "at": time.time(),
        }
        with contextlib.suppress(OSError):
            _write_exit(usage_file, record)
        return True

    return on_line


def _watch_idle(
    minutes: float,
    command: list[str],
    password: str,
    current: Callable[[], subprocess.Popen[bytes] | None],
    broker: Any,
    out: logging.Logger,
    exit_file: Path,
) -> threading.Event | None:
    """Start the idle watcher (``--idle-minutes``); the event is set once the server slept.

    ``current`` is the supervised program now: a remote server's ssh is replaced after a lost
    connection, and the watcher counts the clients of, and stops, the new one."""
    from smartspec_desktop.core.process import idle

    # A remote server (issue 15) is watched through its forward's local end: the sessions asked
    # there, the clients those connected to the ssh that listens there.
    port = idle.port_of(command) or _forwarded_port(command)
    if minutes <= 0 or not port or not password:
        return None
    slept = threading.Event()

    def last_call() -> float | None:
        return getattr(broker, "last_call", None) if broker is not None else None

    def sleep_now() -> None:
        slept.set()
        out.info(
            "[smartspec %s] idle for %g min (no busy session, no client, no gateway call): "
            "stopping the server; it sleeps, and any action wakes it",
            time.strftime("%Y-%m-%d %H:%M:%S"),
            minutes,
        )
        child = current()
        if child is not None:
            idle.stop_tree(child)

    def pid_now() -> int:
        child = current()
        return child.pid if child is not None else 0

    idle.IdleWatcher(
        minutes=minutes,
        port=port,
        password=password,
        server_pid=pid_now(),
        on_idle=sleep_now,
        last_gateway_call=last_call,
        exit_file=exit_file,
        server_pid_of=pid_now,
    ).start()
    return slept


if __name__ == "__main__":
    sys.exit(main())
