"""Shared fixtures: an isolated sandbox (HOME, XDG dirs, data dir, keyring service, a private
preferred port range), the backend stand-in on 127.0.0.1, the real ``opencode`` binary, a CLI
runner, a reaper that makes sure no process a test started outlives it, a check that the run
left the real HOME alone, and ``logfail`` (tests/logfail.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from smartspec_desktop.core.opencode.binary import VersionCache, read_version
from smartspec_desktop.core.storage.paths import Paths
from tests import opencode_config
from tests.backend_standin import BackendStandIn

pytest_plugins = ["tests.logfail", "pytester"]

ROOT = Path(__file__).resolve().parent.parent
OPENCODE_ENV = "SMARTSPEC_TEST_OPENCODE"
IN_CI = os.environ.get("CI") == "true"

# ------------------------------------------------------------------------------ slow tests

#: The timeout of a test marked ``slow`` (pyproject's default, 180 s, is for the others).
SLOW_TIMEOUT = 600
# The product's bound for a start that hangs (`Settings.start_timeout`, 30 s by default), as the
# tests' settings set it: a bound for a hang, not for speed. In a CI run beside other jobs
# OpenCode once took 26 s just to load its bundle, and 30 s ran out for 11 tests at once.
START_TIMEOUT_S = 120
# How long a test waits for a Start it asked for: that bound and a margin (ms, for qtbot).
START_MS = (START_TIMEOUT_S + 30) * 1000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (a minute or more under load) come first, in their order, so the
    workers start them early and the run never ends waiting on one started last (pytest-xdist's
    loadgroup deals the tests out in this order, a few at a time); each gets SLOW_TIMEOUT unless
    it names its own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # (a stable sort)


# ------------------------------------------------------------------------------ the real HOME

#: tests/run-tests gives the whole run a throw-away HOME and names the real one here.
REAL_HOME = Path(os.environ.get("SMARTSPEC_TESTS_REAL_HOME") or os.path.expanduser("~"))
#: Where the tools the tests drive would write into a HOME (globs, relative to it): nothing new
#: may appear in these, or directly in HOME, while the suite runs. Only new entries count, and
#: only here: the user's own desktop may change existing files, or other folders, meanwhile.
HOME_WATCHED = (
    ".local/share/keyrings",  # gnome-keyring-daemon's keyrings
    ".cache/keyring-*",  # its control socket when XDG_RUNTIME_DIR is unset
    ".config/chromium",
    ".cache/chromium",
    ".pki",  # Chromium's NSS database
    ".dbus",  # dbus-launch's autolaunch files
    ".npm",
    ".config/opencode",
    ".local/share/opencode",
    ".cache/opencode",
    ".local/state/opencode",
    ".config/smartspec-desktop",
    ".local/share/smartspec-desktop",
    ".local/state/smartspec-desktop",
    ".cache/smartspec-desktop",
)


def home_entries(home: Path) -> set[str]:
    """Every path (relative) matching or under ``HOME_WATCHED``, and HOME's direct children."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        found.update(os.listdir(home))
    for pattern in HOME_WATCHED:
        for base in home.glob(pattern):
            found.add(str(base.relative_to(home)))
            for dirpath, dirnames, filenames in os.walk(base):
                for n in dirnames + filenames:
                    found.add(str((Path(dirpath) / n).relative_to(home)))
    return found


@pytest.fixture(scope="session", autouse=True)
def real_home_untouched() -> Iterator[None]:
    """Fails the run if it created anything in the real HOME (keyrings, Chromium's profile,
    OpenCode's or the app's folders, …)."""
    before = home_entries(REAL_HOME)
    yield
    created = sorted(home_entries(REAL_HOME) - before)
    assert not created, (
        f"the tests wrote into the real HOME {REAL_HOME}: {created[:20]} (or another process did "
        "meanwhile, e.g. a test run without tests/run-tests' throw-away HOME)"
    )


# ------------------------------------------------------------------------------ private ports

#: Preferred port ranges for sandboxes come from here: away from the product's 3795-3800 (the
#: user's own servers) and below Linux's ephemeral range (where the OS picks fallback ports).
PORT_POOL = (20000, 30000)
PORT_BLOCK = 6


def worker_port_pool(worker: str | None, count: str | None) -> tuple[int, int]:
    """This process's share of ``PORT_POOL``: under pytest-xdist (``PYTEST_XDIST_WORKER`` =
    ``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``) worker N gets the N-th of as many equal, disjoint
    slices, so two workers never hand out the same range; else the whole pool."""
    lo, hi = PORT_POOL
    try:
        n, total = int((worker or "").removeprefix("gw")), int(count or "")
    except ValueError:
        return lo, hi
    if not 0 <= n < total:
        return lo, hi
    size = (hi - lo) // total // PORT_BLOCK * PORT_BLOCK
    if size < 2 * PORT_BLOCK:  # hundreds of workers: share the pool (the ports are checked free)
        return lo, hi
    return lo + n * size, lo + (n + 1) * size


_pool = worker_port_pool(
    os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
)
_next_block = [random.randrange(_pool[0], _pool[1] - PORT_BLOCK)]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def private_port_range(n: int = PORT_BLOCK) -> tuple[int, int]:
    """A block of ``n`` consecutive ports of 127.0.0.1, free now, for one sandbox's preferred
    range. Blocks are handed out in turn from a random start within this worker's slice of the
    pool (``worker_port_pool``), so two workers never meet and two test runs at once (or a test
    and the user's servers) rarely do; if they do, the product's fallback still works."""
    lo, hi = _pool
    for _ in range((hi - lo) // n):
        start = _next_block[0]
        _next_block[0] = start + n if start + 2 * n <= hi else lo
        if all(_port_free(p) for p in range(start, start + n)):
            return start, start + n - 1
    raise RuntimeError(f"no {n} free consecutive ports in {lo}-{hi}")


def find_test_opencode() -> str | None:
    return os.environ.get(OPENCODE_ENV) or shutil.which("opencode")


@pytest.fixture(scope="session", autouse=True)
def _opencode_config_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where the warm OpenCode config dir is (tests/opencode_config.py): the tests' cache's
    when tests/run-tests names it and it is on the temp folders' file system (sandboxes
    hard-link its node_modules; a copy would be 64 MB for each), else this run's, in the folder
    its workers share (above each xdist worker's own)."""
    base = tmp_path_factory.getbasetemp()
    run_root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    opencode_config.run_root = run_root
    cache = os.environ.get(opencode_config.CACHE_ENV)
    with contextlib.suppress(OSError):
        if cache and os.stat(cache).st_dev == os.stat(run_root).st_dev:
            opencode_config.cache_root = Path(cache)


@pytest.fixture(scope="session")
def opencode_bin() -> str:
    path = find_test_opencode()
    if not path:
        pytest.fail(
            "The real `opencode` binary is needed: run `bash scripts/setup-tests` once, or "
            "`npm install -g opencode-ai@1.18.33`, or set SMARTSPEC_TEST_OPENCODE."
        )
    return path


@pytest.fixture(scope="session")
def opencode_version(opencode_bin: str) -> str:
    """The test opencode's version, probed once per test process (``opencode --version`` costs
    ~1 s of CPU: the sandboxes get it in their version cache, see ``seed_version_cache``)."""
    return read_version(opencode_bin)


def version_cache_file(data_dir: Path) -> Path:
    return Paths.from_base(data_dir).state_dir / "opencode-version.json"


def seed_version_cache(data_dir: Path, opencode: str, version: str) -> None:
    """Put ``opencode``'s version in a data dir's version cache, as on a machine where the app
    ran before (the cold probe is tested in test_cli_servers and the unit tests)."""
    path = version_cache_file(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    VersionCache(path).put(opencode, version)


@pytest.fixture
def backend() -> Iterator[BackendStandIn]:
    b = BackendStandIn().start()
    try:
        yield b
    finally:
        b.stop()


def processes_under(*markers: str) -> list[psutil.Process]:
    """Processes whose command line or cwd mentions one of ``markers`` (a test's tmp dir)."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if p.pid == me:
            continue
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            cwd = p.info["cwd"] or ""
        except (psutil.Error, TypeError):
            continue
        if any(m in cmd or cwd.startswith(m) for m in markers):
            found.append(p)
    return found


def reap(*markers: str) -> list[str]:
    """Kill whatever is left under ``markers``; return a description of it."""
    left = processes_under(*markers)
    desc = []
    for p in left:
        try:
            desc.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    return desc


@dataclass
class Sandbox:
    root: Path
    data_dir: Path
    env: dict[str, str]
    backend: BackendStandIn
    ports: tuple[int, int] = (0, 0)
    email: str = "dev@example.com"
    api_key: str = ""
    extra_args: list[str] = field(default_factory=list)

    def write_settings(self, **values: object) -> None:
        """Merge ``values`` into the data dir's settings.json (which always holds the sandbox's
        private preferred port range and, unless ``values`` names one, the tests' start
        timeout)."""
        path = self.data_dir / "config" / "settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(values)
        current.setdefault("start_timeout", START_TIMEOUT_S)
        current.setdefault("port_range_start", self.ports[0])
        current.setdefault("port_range_end", self.ports[1])
        path.write_text(json.dumps(current))

    def workspace(self, name: str = "ws") -> Path:
        p = self.root / "workspaces" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def cli(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = START_TIMEOUT_S + 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable,
            "-m",
            "smartspec_desktop",
            "--data-dir",
            str(self.data_dir),
            "--backend-url",
            self.backend.url,
            *self.extra_args,
            *args,
        ]
        return subprocess.run(
            cmd,
            env=env or self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def cli_json(self, *args: str, **kw: Any) -> Any:
        r = self.cli(*args, "--json", **kw)
        assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return json.loads(r.stdout)

    def state(self) -> dict[str, Any]:
        path = self.data_dir / "state" / "servers.json"
        return json.loads(path.read_text()) if path.exists() else {}


def sandbox_env(root: Path, opencode: str | None) -> dict[str, str]:
    home = root / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENCODE_", "SMARTSPEC_", "XDG_")) and k not in ("HOME",)
    }
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "PYTHONPATH": str(ROOT),
            # A private keyring service name, so tests never touch the user's real entries;
            # and no keyring at all unless a test asks for the real one.
            "SMARTSPEC_KEYRING_SERVICE": f"smartspec-desktop-test-{uuid.uuid4().hex[:8]}",
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        }
    )
    # Keep the D-Bus session (real keyring tests) but no display unless a test wants one.
    if opencode:
        env["PATH"] = os.path.dirname(opencode) + os.pathsep + env.get("PATH", "")
        # As on a machine where OpenCode ran before: its plugin package already installed.
        opencode_config.seed(home, opencode)
    return env


@pytest.fixture
def sandbox(
    tmp_path: Path, backend: BackendStandIn, opencode_bin: str, opencode_version: str
) -> Iterator[Sandbox]:
    root = tmp_path
    env = sandbox_env(root, opencode_bin)
    backend.add_user("dev@example.com", "correct horse")
    key = backend.issue_api_key("dev@example.com")
    env["SMARTSPEC_API_KEY"] = key
    box = Sandbox(root, root / "data", env, backend, ports=private_port_range(), api_key=key)
    box.write_settings()
    seed_version_cache(box.data_dir, opencode_bin, opencode_version)
    # A runtime directory of its own, as a desktop session has (shared ssh connections keep
    # their sockets there), outside tmp_path: a socket's path must stay short. Made last, so
    # a set-up step that fails leaves none behind.
    runtime = Path(tempfile.mkdtemp(prefix="ssrt-"))
    box.env["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield box
    finally:
        # Stop through the product first (the normal path), then reap anything left over. When
        # nothing of the test runs any more there is nothing to stop (and a CLI start is ~0.4 s
        # of CPU, for each of hundreds of tests).
        if processes_under(str(root), str(runtime)):
            stop_all(box)
        leftovers = reap(str(root), str(runtime))
        shutil.rmtree(runtime, ignore_errors=True)
        assert not leftovers, f"processes outlived the test: {leftovers}"


def stop_all(box: Sandbox) -> None:
    """``stop --all`` through the product, for the sandbox's teardown."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "smartspec_desktop",
            "--data-dir",
            str(box.data_dir),
            "stop",
            "--all",
        ],
        env=box.env,
        capture_output=True,
        timeout=60,
    )


def server_processes(workspace: Path) -> list[psutil.Process]:
    """``opencode serve`` processes running in ``workspace``."""
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = p.info["cmdline"] or []
            is_server = "serve" in cmd and any("opencode" in c for c in cmd[:2])
            if is_server and (p.info["cwd"] or "") == str(workspace.resolve()):
                out.append(p)
        except (psutil.Error, TypeError):
            continue
    return out
