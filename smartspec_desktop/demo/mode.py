"""Demo mode: ``smartspec-desktop --demo …`` runs against a local demo gateway, never the real one.

Nothing of demo mode touches the user's real set-up:

- **Its own state.** :func:`demo_paths` keeps settings, server records and logs in ``demo``
  folders next to the real ones (OpenCode's managed install is shared). Its settings start as a
  copy of the real ones; the backend URL is always the demo gateway's, in memory only.
- **Its own key, for this run only.** Each process signs in to the demo account and creates a
  throw-away key (:func:`demo_key`), used as the "this run" key: it is never written to the
  keyring, and the keyring's own API key is neither read nor replaced (:class:`DemoSecretStore`;
  server passwords still go to the keyring, under their own entries, as for real servers).
- **One gateway per demo state folder**, a detached process (``smartspec-desktop
  --demo-gateway STATE_DIR``: :func:`gateway_main`) on 127.0.0.1 and a free port, recorded in
  ``gateway.json`` (pid, start time, URL). The window and each CLI command register as its
  *holders* while they run; the gateway exits by itself once no holder is alive and no demo
  server is running (after :data:`IDLE_GRACE` seconds), and ``--demo stop --all`` stops it at
  once. So the CLI's ``--demo start`` then ``--demo run`` share it, and nothing is left behind.

The gateway is :class:`~smartspec_desktop.demo.backend.BackendStandIn` with ``gateway="demo"``:
scripted answers (a greeting, ``hello.txt`` written through a tool call, a 3-item todo list) and
simulated credits. No real model, no real credits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from filelock import FileLock, Timeout

from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import SmartSpecError, StateError
from smartspec_desktop.core.process.procs import ProcIdentity
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.servers.registry import ACTIVE, Registry
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object
from smartspec_desktop.core.storage.config import Settings, load_settings
from smartspec_desktop.core.storage.paths import Paths, make_private_dir
from smartspec_desktop.core.storage.secrets import (
    API_KEY_ENTRY,
    Credentials,
    FileStore,
    KeyringStore,
    SecretStore,
)

if TYPE_CHECKING:
    from smartspec_desktop.core.wiring import Core

log = logging.getLogger(__name__)

#: What the window shows wherever the demo gateway is in use.
DEMO_LABEL = "Demo backend — no real model, no real credits"
GATEWAY_FLAG = "--demo-gateway"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "Demo-password-1"
DEMO_CREDITS = 1000.0
#: Seconds with no holder and no running demo server before the gateway exits by itself.
IDLE_GRACE = 5.0
START_TIMEOUT = 15.0


class DemoError(SmartSpecError):
    code = "demo_gateway"


def demo_paths(paths: Paths) -> Paths:
    """The demo's own config, state and log folders; OpenCode's managed install is shared."""
    return Paths(
        paths.config_dir / "demo",
        paths.data_dir,
        paths.state_dir / "demo",
        paths.log_dir / "demo",
        base=paths.base,
    )


class DemoSecretStore:
    """The keyring for server passwords, but no API key: the demo key is this run's only, and
    the user's real key in the keyring is neither read, replaced nor deleted."""

    def __init__(self, inner: SecretStore) -> None:
        self.inner = inner

    def available(self) -> bool:
        return self.inner.available()

    def get(self, name: str) -> str | None:
        return None if name == API_KEY_ENTRY else self.inner.get(name)

    def set(self, name: str, value: str) -> None:
        if name == API_KEY_ENTRY:
            raise DemoError(
                "Demo mode does not store API keys (it uses a throw-away key of the demo "
                "backend for this run only).",
                "Quit demo mode and start SmartSpec Desktop without --demo to use your own key.",
            )
        self.inner.set(name, value)

    def delete(self, name: str) -> None:
        if name != API_KEY_ENTRY:
            self.inner.delete(name)


# ------------------------------------------------------------------------------ the gateway


@dataclass(frozen=True)
class GatewayInfo:
    pid: int
    create_time: float
    url: str

    def alive(self) -> bool:
        proc = ProcIdentity(self.pid, self.create_time).process()
        if proc is None:
            return False
        with contextlib.suppress(psutil.Error):
            return GATEWAY_FLAG in proc.cmdline()
        return False


def _gateway_file(state_dir: Path) -> Path:
    return state_dir / "gateway.json"


def _holders_dir(state_dir: Path) -> Path:
    return state_dir / "holders"


def read_gateway(state_dir: Path) -> GatewayInfo | None:
    data, _warning = read_json_object(_gateway_file(state_dir))
    try:
        info = GatewayInfo(int(data["pid"]), float(data["create_time"]), str(data["url"]))
    except (KeyError, TypeError, ValueError):
        return None
    return info if info.url.startswith("http://127.0.0.1:") else None


def gateway_command(state_dir: Path, port: int = 0) -> list[str]:
    """How to run the gateway process: the frozen app re-executes itself with a hidden flag."""
    args = [GATEWAY_FLAG, str(state_dir), str(port)]
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "smartspec_desktop", *args]


def _last_port(state_dir: Path) -> int:
    """The port the gateway had last time: demo servers still configured for it work again."""
    data, _ = read_json_object(state_dir / "gateway-port.json")
    port = data.get("port")
    return port if isinstance(port, int) and 1024 <= port <= 65535 else 0


def _healthy(url: str) -> bool:
    try:
        with BackendClient(url, timeout=3.0) as backend:
            backend.gateway_health()
    except SmartSpecError:
        return False
    return True


def ensure_gateway(state_dir: Path, *, timeout: float = START_TIMEOUT) -> GatewayInfo:
    """The running demo gateway of ``state_dir``, started (detached) when there is none."""
    make_private_dir(state_dir)
    with FileLock(str(state_dir / "gateway.lock"), timeout=timeout + 10):
        info = read_gateway(state_dir)
        if info is not None and info.alive() and _healthy(info.url):
            return info
        _gateway_file(state_dir).unlink(missing_ok=True)
        log_file = state_dir / "gateway.log"
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                gateway_command(state_dir, _last_port(state_dir)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # it outlives this command (a CLI `start`)
                close_fds=True,
            )
        # Reap it if it exits while we live (no zombie); it is not ours to wait for otherwise.
        threading.Thread(target=proc.wait, name="demo-gateway-reaper", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = read_gateway(state_dir)
            if info is not None and info.pid == proc.pid:
                return info
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            proc.kill()
        tail = ""
        with contextlib.suppress(OSError):
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:][0]
        raise DemoError(
            "The demo backend did not start"
            + (f" ({tail[:200]})." if tail else f" within {timeout:.0f} s."),
            f"See {log_file}, and try again.",
        )


def stop_gateway(state_dir: Path, *, grace: float = 5.0) -> bool:
    """Stop the demo gateway of ``state_dir``; True when one was running."""
    info = read_gateway(state_dir)
    if info is None or not info.alive():
        _gateway_file(state_dir).unlink(missing_ok=True)
        return False
    proc = ProcIdentity(info.pid, info.create_time).process()
    if proc is None:
        return False
    with contextlib.suppress(psutil.Error):
        proc.terminate()
        try:
            proc.wait(grace)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    _gateway_file(state_dir).unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def holding(state_dir: Path) -> Iterator[None]:
    """Keep the demo gateway alive while this process runs (the window, a CLI command)."""
    me = ProcIdentity.of(os.getpid())
    folder = _holders_dir(state_dir)
    make_private_dir(folder)
    path = folder / f"{os.getpid()}.json"
    atomic_write_json(path, {"pid": os.getpid(), "create_time": me.create_time if me else 0.0})
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _someone_holds(state_dir: Path) -> bool:
    folder = _holders_dir(state_dir)
    held = False
    for path in folder.glob("*.json") if folder.is_dir() else []:
        data, _ = read_json_object(path)
        try:
            ident = ProcIdentity(int(data["pid"]), float(data["create_time"]))
        except (KeyError, TypeError, ValueError):
            ident = None
        if ident is not None and ident.alive():
            held = True
        else:
            path.unlink(missing_ok=True)  # a holder that died without cleaning up
    return held


def _servers_running(state_dir: Path) -> bool:
    for rec in Registry(state_dir / "servers.json").snapshot().values():
        if rec.status not in ACTIVE:
            continue
        pairs = [(rec.supervisor_pid, rec.supervisor_create_time), (rec.pid, rec.create_time)]
        ids = [(pid, ct) for pid, ct in pairs if pid]
        if not ids or any(ProcIdentity(pid, ct).alive() for pid, ct in ids):
            return True
    return False


def _retire(state_dir: Path) -> bool:
    """Withdraw this gateway's record unless someone started using it meanwhile. Under the lock
    :func:`ensure_gateway` holds while it picks a gateway, so a command never gets the URL of a
    gateway that is about to go (a command registers as holder before it asks)."""
    try:
        with FileLock(str(state_dir / "gateway.lock"), timeout=1):
            if _someone_holds(state_dir) or _servers_running(state_dir):
                return False
            info = read_gateway(state_dir)
            if info is not None and info.pid == os.getpid():
                _gateway_file(state_dir).unlink(missing_ok=True)
            return True
    except Timeout:  # a command is choosing a gateway right now: it may well be this one
        return False


def gateway_main(argv: Sequence[str]) -> int:
    """The detached gateway process: serve until stopped, or idle for :data:`IDLE_GRACE` s."""
    from smartspec_desktop.demo.backend import BackendStandIn

    if len(argv) not in (1, 2) or not (argv[1:] or ["0"])[0].isdigit():
        sys.stderr.write(f"usage: smartspec-desktop {GATEWAY_FLAG} STATE_DIR [PORT]\n")
        return 2
    state_dir = Path(argv[0])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    backend = BackendStandIn(gateway="demo", port=int((argv[1:] or ["0"])[0]))
    backend.rate_limit_per_minute = None  # one local user: the demo never waits a minute
    try:
        backend.start()
    except OSError:  # last time's port is taken now: any free one
        backend = BackendStandIn(gateway="demo", port=0)
        backend.rate_limit_per_minute = None
        backend.start()
    try:
        backend.add_user(DEMO_EMAIL, DEMO_PASSWORD, credits=DEMO_CREDITS, full_name="Demo")
        me = ProcIdentity.of(os.getpid())
        atomic_write_json(
            _gateway_file(state_dir),
            {"pid": os.getpid(), "create_time": me.create_time if me else 0.0, "url": backend.url},
        )
        atomic_write_json(state_dir / "gateway-port.json", {"port": backend.port})
        print(f"demo gateway on {backend.url}", flush=True)
        idle_since: float | None = None
        while not stop.wait(0.5):
            if _someone_holds(state_dir) or _servers_running(state_dir):
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE_GRACE and _retire(state_dir):
                print("no demo server and nobody using the demo: stopping", flush=True)
                break
    finally:
        info = read_gateway(state_dir)
        if info is not None and info.pid == os.getpid():
            _gateway_file(state_dir).unlink(missing_ok=True)
        backend.stop()
    return 0


# ------------------------------------------------------------------------- the demo's core


def demo_key(url: str) -> tuple[str, dict[str, Any]]:
    """Sign in to the demo account and create a key for this run; returns (key, user)."""
    with BackendClient(url) as backend:
        login = backend.login(DEMO_EMAIL, DEMO_PASSWORD)
        created = backend.create_key(login.access_token, "demo run", expires_in_days=1)
    return created.key, dict(login.user)


def demo_settings(paths: Paths, demo: Paths) -> tuple[Settings, list[str]]:
    """The demo's settings file when there is one, else a copy of the real settings."""
    source = demo.settings_file if demo.settings_file.exists() else paths.settings_file
    return load_settings(source)


@dataclass
class DemoSession:
    """What a demo process uses: the gateway's URL and this run's key."""

    paths: Paths
    gateway: GatewayInfo
    api_key: str
    user: dict[str, Any]

    @property
    def url(self) -> str:
        return self.gateway.url


def start_demo(real: Paths) -> DemoSession:
    """Make sure the gateway runs (this process must hold it, see :func:`holding`) and get a key."""
    demo = demo_paths(real)
    try:
        demo.ensure()
    except OSError as e:
        raise StateError(
            f"Cannot create the demo folders under {demo.state_dir} ({e.strerror or e}).",
            "Make that folder writable, or pass --data-dir with a writable folder.",
        ) from None
    info = ensure_gateway(demo.state_dir)
    key, user = demo_key(info.url)
    return DemoSession(demo, info, key, user)


def build_demo_core(real: Paths, session: DemoSession, *, store: SecretStore | None = None) -> Core:
    """The demo's :class:`~smartspec_desktop.core.wiring.Core`: its own paths and settings, the
    gateway's URL, this run's key."""
    from smartspec_desktop.core.wiring import Core

    demo = session.paths
    settings, warnings = demo_settings(real, demo)
    settings.backend_url = session.url
    credentials = Credentials(
        DemoSecretStore(store or KeyringStore()),
        FileStore(demo.state_dir / "secrets"),
        environ={},  # a SMARTSPEC_API_KEY of the user's is not for the demo gateway
    )
    credentials.session_key = session.api_key
    servers = ServerManager(demo, settings, credentials)
    core = Core(demo, settings, credentials, servers, warnings, demo=session)
    servers.on_fresh_start = core.remember_workspace
    return core


def retire_stale_servers(core: Core, say: Callable[[str], None]) -> int:
    """Stop demo servers made for an earlier gateway on another port (they cannot reach it)."""
    stale = [
        rec
        for rec in core.servers.refresh()
        if rec.active and rec.backend_url and rec.backend_url != core.settings.backend_url
    ]
    for rec in stale:
        say(f"Restarting the demo server of {rec.workspace_path} (its demo backend is gone) …")
        core.servers.stop(rec.server_id)
    return len(stale)


def stop_everything(real: Paths) -> tuple[int, bool]:
    """Stop every demo server and the gateway (for ``stop --all``); (servers, gateway)."""
    demo = demo_paths(real)
    if not demo.state_dir.is_dir():
        return 0, False
    settings, _ = demo_settings(real, demo)
    credentials = Credentials(
        DemoSecretStore(KeyringStore()), FileStore(demo.state_dir / "secrets"), environ={}
    )
    stopped = ServerManager(demo, settings, credentials).stop_all()
    return len(stopped), stop_gateway(demo.state_dir)


def describe(session: DemoSession) -> str:
    return f"{DEMO_LABEL} ({session.url}, signed in as {DEMO_EMAIL})."


__all__ = [
    "DEMO_LABEL",
    "DemoSecretStore",
    "DemoSession",
    "build_demo_core",
    "demo_paths",
    "ensure_gateway",
    "gateway_main",
    "holding",
    "start_demo",
    "stop_everything",
    "stop_gateway",
]
