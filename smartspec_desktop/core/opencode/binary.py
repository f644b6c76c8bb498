"""Finding, checking and installing the ``opencode`` binary.

Order: the path in settings → the app's managed install (``opencode install``) → ``PATH``.
Supported: OpenCode 1.18.x (tested with 1.18.33). ``opencode --version`` takes ~0.5 s, so its
answer is cached per (real path, mtime, size).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from smartspec_desktop.core.errors import (
    OpenCodeInstallError,
    OpenCodeNotFound,
    OpenCodeVersionError,
)
from smartspec_desktop.core.process.childenv import external_env
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object
from smartspec_desktop.core.storage.paths import check_trusted_program, make_private_dir

log = logging.getLogger(__name__)

NPM_PACKAGE = "opencode-ai"
PINNED_VERSION = "1.18.33"
SUPPORTED_SERIES = (1, 18)
ALLOW_UNTESTED_ENV = "SMARTSPEC_ALLOW_UNTESTED_OPENCODE"
INSTALL_HINT = (
    "Run `smartspec-desktop opencode install` (installs "
    f"opencode-ai@{PINNED_VERSION} with npm for this app) "
    f"or `npm install -g opencode-ai@{PINNED_VERSION}`, or set the OpenCode path in Settings."
)


@dataclass(frozen=True)
class OpenCodeBinary:
    path: str
    version: str
    source: str  # "settings", "managed" or "PATH"
    #: Set when the version is outside the supported series but allowed by the user.
    warning: str = ""


def managed_bin_dir(managed_dir: Path) -> Path:
    return managed_dir / "node_modules" / ".bin"


def managed_binary(managed_dir: Path) -> Path:
    name = "opencode.cmd" if sys.platform == "win32" else "opencode"
    return managed_bin_dir(managed_dir) / name


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


class VersionCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def _key(binary: str) -> str:
        real = os.path.realpath(binary)
        st = os.stat(real)
        return f"{real}|{st.st_mtime_ns}|{st.st_size}"

    def get(self, binary: str) -> str | None:
        data, _ = read_json_object(self.path)
        try:
            v = data.get(self._key(binary))
        except OSError:
            return None
        return v if isinstance(v, str) else None

    def put(self, binary: str, version: str) -> None:
        data, _ = read_json_object(self.path)
        data[self._key(binary)] = version
        try:
            atomic_write_json(self.path, dict(list(data.items())[-20:]))
        except OSError as e:
            log.debug("could not cache the opencode version: %s", e)


#: ``opencode --version`` is given this long (it needs ~1 CPU-s: well under it on any machine)…
VERSION_TIMEOUT = 15.0
#: …and, while it is still using CPU (starved on a loaded machine, not hung), up to this long.
VERSION_BUSY_TIMEOUT = 120.0


#: The ``--version`` probes running now, so that quitting need not wait for them.
_probes: set[subprocess.Popen[str]] = set()
_probes_lock = threading.Lock()


def cancel_probes() -> int:
    """Kill every ``--version`` probe still running (the app is quitting: nobody waits for the
    answer, which would hold the exit up to VERSION_BUSY_TIMEOUT on a loaded machine). Their
    ``read_version`` fails, and nothing is cached. Returns how many were killed."""
    with _probes_lock:
        running = [p for p in _probes if p.poll() is None]
    for proc in running:
        with contextlib.suppress(OSError):
            proc.kill()
    return len(running)


def read_version(
    binary: str, *, timeout: float = VERSION_TIMEOUT, busy_timeout: float = VERSION_BUSY_TIMEOUT
) -> str:
    """The version ``binary --version`` prints. A program still running after ``timeout`` is
    waited for only while it keeps using CPU (OpenCode starting on a busy machine), at most
    ``busy_timeout`` in all; one that sits idle (hung) fails at ``timeout``."""
    try:
        # Its temp files (OpenCode makes $TMPDIR/opencode) go with the probe (F15).
        with (
            tempfile.TemporaryDirectory(prefix="smartspec-probe-") as tmp,
            subprocess.Popen(
                [binary, "--version"],
                env={**external_env(), "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            ) as proc,
        ):
            with _probes_lock:
                _probes.add(proc)
            try:
                stdout, stderr = _communicate(proc, timeout, max(busy_timeout, timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            finally:
                with _probes_lock:
                    _probes.discard(proc)
    except PermissionError:
        raise OpenCodeNotFound(
            f"{binary} is not executable.", f"Make it executable (chmod +x) or {INSTALL_HINT}"
        ) from None
    except OSError as e:
        raise OpenCodeNotFound(
            f"{binary} cannot be run ({e.strerror or e}).", INSTALL_HINT
        ) from None
    except subprocess.TimeoutExpired as e:
        raise OpenCodeVersionError(
            f"`{binary} --version` did not finish within {e.timeout:.0f} s.",
            f"That program does not behave like OpenCode. {INSTALL_HINT}",
        ) from None
    p = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    version = parse_version(p.stdout) if p.returncode == 0 else None
    if version is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        raise OpenCodeVersionError(
            f"`{binary} --version` failed (exit {p.returncode}: {tail[0][:200]}).",
            f"Reinstall OpenCode: {INSTALL_HINT}",
        )
    return ".".join(map(str, version))


#: A program waited for past its timeout must have used at least this share of a CPU meanwhile.
BUSY_SHARE = 0.02


def _communicate(
    proc: subprocess.Popen[str], timeout: float, busy_timeout: float
) -> tuple[str, str]:
    """``proc.communicate()`` within ``timeout``, then on while ``proc`` keeps using CPU (at
    least BUSY_SHARE of the time, checked every few seconds), up to ``busy_timeout``;
    TimeoutExpired (with the time waited) when it sits idle or runs out of time."""
    began = time.monotonic()
    step = timeout
    cpu = 0.0
    while True:
        try:
            return proc.communicate(timeout=step)
        except subprocess.TimeoutExpired:
            waited = time.monotonic() - began
            used = _cpu_seconds(proc.pid)
            if used is None or used - cpu < BUSY_SHARE * step or waited >= busy_timeout:
                raise subprocess.TimeoutExpired(proc.args, waited) from None
            cpu = used
            step = max(0.1, min(5.0, timeout, busy_timeout - waited))


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its children so far (None once it is gone),
    those that ended included: a child that finished (a wrapper script's own program) must not
    make the tree look idle."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total
    except psutil.Error:
        return None


def check_supported(binary: str, version: str, environ: dict[str, str] | None = None) -> str:
    """Return a warning ("" if none); raise for an unsupported version."""
    env = os.environ if environ is None else environ
    parsed = parse_version(version)
    if parsed and parsed[:2] == SUPPORTED_SERIES:
        return ""
    message = (
        f"OpenCode {version} at {binary} is not supported; SmartSpec Desktop needs "
        f"{SUPPORTED_SERIES[0]}.{SUPPORTED_SERIES[1]}.x (tested with {PINNED_VERSION})."
    )
    if env.get(ALLOW_UNTESTED_ENV) == "1":
        log.warning("%s Continuing because %s=1.", message, ALLOW_UNTESTED_ENV)
        return message
    raise OpenCodeVersionError(
        message,
        f"Run `smartspec-desktop opencode install` to get {PINNED_VERSION} for this app "
        f"(or set {ALLOW_UNTESTED_ENV}=1 to try this version anyway).",
    )


def find_opencode(
    configured: str,
    managed_dir: Path,
    cache: VersionCache,
    *,
    which: Callable[[str], str | None] = shutil.which,
) -> OpenCodeBinary:
    candidates: list[tuple[str, str]] = []
    if configured:
        path = os.path.expanduser(configured)
        if not os.path.exists(path):
            raise OpenCodeNotFound(
                f"The OpenCode path set in Settings ({configured}) does not exist.",
                "Fix or clear Settings → OpenCode path (cleared, the app uses its own install "
                "or PATH).",
            )
        candidates.append((path, "settings"))
    else:
        managed = managed_binary(managed_dir)
        if managed.exists():
            candidates.append((str(managed), "managed"))
        on_path = which("opencode")
        if on_path:
            candidates.append((on_path, "PATH"))
    if not candidates:
        raise OpenCodeNotFound("OpenCode is not installed (no `opencode` on PATH).", INSTALL_HINT)
    path, source = candidates[0]
    check_trusted_program(path, "Settings → OpenCode path (or PATH)")
    if not os.access(path, os.X_OK):
        raise OpenCodeNotFound(
            f"{path} is not executable.", f"Make it executable (chmod +x) or {INSTALL_HINT}"
        )
    version = cache.get(path)
    if version is None:
        version = read_version(path)
        cache.put(path, version)
    warning = check_supported(path, version)
    return OpenCodeBinary(path, version, source, warning)


def install_opencode(
    managed_dir: Path,
    progress: Callable[[str], None],
    *,
    version: str = PINNED_VERSION,
    which: Callable[[str], str | None] = shutil.which,
) -> Path:
    """``npm install opencode-ai@<pinned>`` into the app's data dir, streaming npm's output."""
    npm = which("npm")
    if not npm:
        raise OpenCodeInstallError(
            "npm was not found, so OpenCode cannot be installed automatically.",
            "Install Node.js (it includes npm) from nodejs.org or your package manager, "
            "then try again.",
        )
    make_private_dir(managed_dir)
    cmd = [
        npm,
        "install",
        "--prefix",
        str(managed_dir),
        "--no-audit",
        "--no-fund",
        "--no-save",
        "--loglevel",
        "http",
        f"{NPM_PACKAGE}@{version}",
    ]
    progress(f"Installing {NPM_PACKAGE}@{version} into {managed_dir} …")
    tail: list[str] = []
    proc = subprocess.Popen(
        cmd,
        env=external_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        umask=0o077,  # what npm writes into the data dir is ours alone
    )
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-15:]
                progress(line)
    if proc.returncode != 0:
        raise OpenCodeInstallError(
            f"npm install {NPM_PACKAGE}@{version} failed (exit {proc.returncode}).",
            "Check your network access to the npm registry and try again.",
            details="\n".join(tail),
        )
    binary = managed_binary(managed_dir)
    if not binary.exists():
        raise OpenCodeInstallError(
            f"npm finished but {binary} is missing.",
            "Your platform may not have an OpenCode build; see https://opencode.ai/docs.",
            details="\n".join(tail),
        )
    progress(f"Installed OpenCode {version}: {binary}")
    return binary
