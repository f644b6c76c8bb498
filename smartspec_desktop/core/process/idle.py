"""Idle servers sleep (issue 15): the supervisor-side watcher that stops an idle server.

An ``opencode serve`` costs ~300 MB for as long as it runs. The server's own supervisor (which
outlives the app and the CLI) watches it and stops it once it has been idle for N minutes:

* no busy OpenCode session (``GET /session/status`` with the server's password),
* no client connected to the server's port (the TUI, the web UI, OpenWork, the Agent tab's
  ``/event`` stream: ESTABLISHED TCP connections of the server process on its port, psutil
  only; the watcher's own probe is closed before it counts),
* no gateway call (in broker mode, the broker's last call; otherwise there is none to see),
* no use announced by the app: a start that reuses the server, or a client the app makes for
  it, touches ``<exit file>.active`` (:func:`mark_active`), so the short gap between "it is
  running" and the first request of a ``run`` or ``sessions`` cannot put it to sleep.

Then it stops the server (SIGTERM, a bounded wait, SIGKILL) and its exit record says
``"slept": true``; reconcile turns that into ``ServerStatus.SLEEPING``, and any action wakes it
(a start with the same workspace: OpenCode keeps its sessions in its own database).

The decision is the pure :func:`idle_decision` (and :class:`IdleClock` over time); the probes
are in :class:`IdleWatcher`. Standard library and psutil only (it runs inside the supervisor).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Settings → "Stop idle servers after N minutes": the default (0 = never).
DEFAULT_IDLE_MINUTES = 30.0
#: Overrides the setting (and a workspace's own value); fractions allowed (tests: 0.05).
IDLE_ENV = "SMARTSPEC_IDLE_MINUTES"
#: The supervisor's flag (``supervisor --idle-minutes N``).
IDLE_FLAG = "--idle-minutes"
#: How long the server gets after SIGTERM before SIGKILL.
STOP_GRACE = 5.0


def parse_minutes(value: object) -> float | None:
    """A number of minutes (>= 0, finite) from a setting or the environment, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def effective_minutes(
    default: float,
    by_workspace: Mapping[str, float],
    workspace: str,
    environ: Mapping[str, str],
) -> float:
    """The idle timeout of ``workspace``: ``SMARTSPEC_IDLE_MINUTES``, else the workspace's own
    value, else the setting. 0 means "never"."""
    env = environ.get(IDLE_ENV, "").strip()
    if env:
        parsed = parse_minutes(env)
        if parsed is not None:
            return parsed
        log.warning("ignoring %s=%r: not a number of minutes >= 0", IDLE_ENV, env)
    own = parse_minutes(by_workspace.get(workspace))
    if own is not None:
        return own
    return parse_minutes(default) or 0.0


def supervisor_args(minutes: float) -> list[str]:
    """The supervisor's arguments for ``minutes`` (none when it is 0: never sleep)."""
    return [IDLE_FLAG, repr(float(minutes))] if minutes > 0 else []


def port_of(argv: Sequence[str]) -> int:
    """The ``--port N`` of a server command (0 when there is none)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--port":
            with contextlib.suppress(ValueError):
                return int(argv[i + 1])
    return 0


def activity_file(exit_file: str | Path) -> Path:
    """The file whose modification time says "the app is about to use this server"."""
    return Path(str(exit_file) + ".active")


def mark_active(exit_file: str | Path) -> None:
    """Tell the server's idle watcher it is in use now (best effort: a failure only means the
    watcher goes by its other signs)."""
    if not exit_file:
        return
    path = activity_file(exit_file)
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        os.utime(path)


def last_marked(exit_file: str | Path | None, clock: Callable[[], float]) -> float | None:
    """When :func:`mark_active` was last called, on ``clock``'s scale (None: never)."""
    if not exit_file:
        return None
    try:
        age = max(0.0, time.time() - activity_file(exit_file).stat().st_mtime)
    except OSError:
        return None
    return clock() - age


# ------------------------------------------------------------------------------------ decision


def idle_decision(
    *,
    busy_sessions: int,
    clients: int,
    last_gateway_call: float | None,
    last_active: float,
    now: float,
    limit: float,
) -> bool:
    """Whether a server is idle enough to sleep (all times on one clock, in seconds).

    ``last_active`` is when it was last seen busy or with a client (or started);
    ``limit`` is the timeout in seconds (<= 0: never). Any busy session or connected client
    keeps it awake, and so does a gateway call less than ``limit`` ago.
    """
    if limit <= 0 or busy_sessions > 0 or clients > 0:
        return False
    since = last_active if last_gateway_call is None else max(last_active, last_gateway_call)
    return now - since >= limit


@dataclass
class IdleClock:
    """Folds observations over time: when was the server last active, and is it idle now."""

    limit: float
    last_active: float

    def observe(
        self,
        *,
        busy_sessions: int | None,
        clients: int | None,
        last_gateway_call: float | None,
        now: float,
    ) -> bool:
        """Record one observation; True when the server should sleep. ``None`` (a probe that
        failed) counts as activity: an unknown state never puts a server to sleep."""
        if busy_sessions is None or clients is None or busy_sessions or clients:
            self.last_active = now
            return False
        return idle_decision(
            busy_sessions=0,
            clients=0,
            last_gateway_call=last_gateway_call,
            last_active=self.last_active,
            now=now,
            limit=self.limit,
        )


# -------------------------------------------------------------------------------------- probes


def busy_sessions(port: int, password: str, *, timeout: float = 5.0) -> tuple[int | None, int]:
    """(number of non-idle OpenCode sessions, or None when the server did not answer; the local
    port the probe used, 0 if none)."""
    import http.client  # here: the supervisor probes, a CLI run does not (issue 11)

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    local_port = 0
    try:
        auth = base64.b64encode(f"opencode:{password}".encode()).decode("ascii")
        conn.connect()
        with contextlib.suppress(OSError):
            local_port = int(conn.sock.getsockname()[1]) if conn.sock is not None else 0
        conn.request("GET", "/session/status", headers={"Authorization": f"Basic {auth}"})
        resp = conn.getresponse()
        body = resp.read(1_000_000)
        if resp.status != 200:
            return None, local_port
        data = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None, local_port
    finally:
        conn.close()
    if not isinstance(data, dict):
        return None, local_port
    busy = 0
    for value in data.values():
        kind = value.get("type") if isinstance(value, dict) else value
        if kind != "idle":
            busy += 1
    return busy, local_port


def connected_clients(
    server_pid: int, port: int, *, exclude_ports: Sequence[int] = ()
) -> int | None:
    """ESTABLISHED connections to ``port`` held by the server process and its descendants (the
    listener's accepted sockets), minus those from ``exclude_ports``; None when unknown."""
    import psutil

    try:
        root = psutil.Process(server_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    seen: set[tuple[object, object]] = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            return None
        for c in conns:
            if c.status != psutil.CONN_ESTABLISHED or not c.laddr or not c.raddr:
                continue
            if c.laddr.port != port or c.raddr.port in exclude_ports:
                continue
            seen.add((tuple(c.laddr), tuple(c.raddr)))
    return len(seen)


class IdleWatcher:
    """A daemon thread that calls ``on_idle`` once, when the server has been idle ``minutes``.

    ``last_gateway_call`` returns the broker's last call (``time.monotonic()``), or None;
    ``exit_file`` names the server's exit record, whose :func:`activity_file` the app touches.
    """

    def __init__(
        self,
        *,
        minutes: float,
        port: int,
        password: str,
        server_pid: int,
        on_idle: Callable[[], None],
        last_gateway_call: Callable[[], float | None] = lambda: None,
        exit_file: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        server_pid_of: Callable[[], int] | None = None,
    ) -> None:
        self.limit = minutes * 60.0
        self.port, self.password, self.server_pid = port, password, server_pid
        #: The process that holds the port *now*, when it can change (a remote server's ssh,
        #: replaced by the supervisor after a lost connection); ``server_pid`` otherwise.
        self.server_pid_of = server_pid_of
        self.on_idle = on_idle
        self.last_gateway_call = last_gateway_call
        self.exit_file = exit_file
        self.clock = clock
        #: How often it looks: often enough for a fraction of a minute, at most every 10 s.
        self.interval = max(0.25, min(10.0, self.limit / 8))
        self.idle = IdleClock(self.limit, clock())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-watcher", daemon=True)

    def start(self) -> IdleWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """One observation (both probes); True when the server should sleep now."""
        busy, probe_port = busy_sessions(self.port, self.password)
        pid = self.server_pid_of() if self.server_pid_of is not None else self.server_pid
        clients = connected_clients(
            pid, self.port, exclude_ports=(probe_port,) if probe_port else ()
        )
        used = [self.last_gateway_call(), last_marked(self.exit_file, self.clock)]
        known = [t for t in used if t is not None]
        return self.idle.observe(
            busy_sessions=busy,
            clients=clients,
            last_gateway_call=max(known) if known else None,
            now=self.clock(),
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.check():
                    if self._stop.is_set():
                        return
                    self.on_idle()
                    return
            except Exception:  # a watcher bug must never take the server down
                log.exception("the idle watcher failed; the server stays up")
                return


def stop_tree(child: subprocess.Popen[bytes], *, grace: float = STOP_GRACE) -> None:
    """Stop our ``child`` and its descendants: SIGTERM, wait up to ``grace`` s, then SIGKILL.

    The child itself is only polled through its ``Popen`` (never waited for by psutil), so the
    supervisor's own ``wait()`` still gets its exit code.
    """
    import psutil

    try:
        below = psutil.Process(child.pid).children(recursive=True)
    except psutil.Error:
        below = []
    with contextlib.suppress(OSError):
        child.send_signal(signal.SIGTERM)
    for p in below:
        with contextlib.suppress(psutil.Error):
            p.terminate()

    def alive() -> list[psutil.Process]:
        out = []
        for p in below:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (child.poll() is None or alive()):
        time.sleep(0.05)
    if child.poll() is None:
        log.warning("the idle server ignored SIGTERM for %.0f s; killing it", grace)
        with contextlib.suppress(OSError):
            child.kill()
    for p in alive():
        with contextlib.suppress(psutil.Error):
            p.kill()
