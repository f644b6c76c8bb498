"""Shared fixtures: an isolated sandbox (HOME, XDG dirs, data dir, keyring service), the backend
stand-in on 127.0.0.1, the real ``opencode`` binary, a CLI runner, and a reaper that makes sure
no process a test started outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.backend_standin import BackendStandIn

ROOT = Path(__file__).resolve().parent.parent
OPENCODE_ENV = "SMARTSPEC_TEST_OPENCODE"
IN_CI = os.environ.get("CI") == "true"


def find_test_opencode() -> str | None:
    return os.environ.get(OPENCODE_ENV) or shutil.which("opencode")


@pytest.fixture(scope="session")
def opencode_bin() -> str:
    path = find_test_opencode()
    if not path:
        pytest.fail(
            "The real `opencode` binary is needed: run `bash .ci/run` once, or "
            "`npm install -g opencode-ai@1.18.33`, or set SMARTSPEC_TEST_OPENCODE."
        )
    return path


@pytest.fixture
def backend() -> Iterator[BackendStandIn]:
    b = BackendStandIn().start()
    try:
        yield b
    finally:
        b.stop()


def processes_under(marker: str) -> list[psutil.Process]:
    """Processes whose command line or cwd mentions ``marker`` (a test's tmp dir)."""
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
        if marker in cmd or cwd.startswith(marker):
            found.append(p)
    return found


def reap(marker: str) -> list[str]:
    """Kill whatever is left under ``marker``; return a description of it."""
    left = processes_under(marker)
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
    email: str = "dev@example.com"
    api_key: str = ""
    extra_args: list[str] = field(default_factory=list)

    def workspace(self, name: str = "ws") -> Path:
        p = self.root / "workspaces" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def cli(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
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
    return env


@pytest.fixture
def sandbox(tmp_path: Path, backend: BackendStandIn, opencode_bin: str) -> Iterator[Sandbox]:
    root = tmp_path
    env = sandbox_env(root, opencode_bin)
    backend.add_user("dev@example.com", "correct horse")
    key = backend.issue_api_key("dev@example.com")
    env["SMARTSPEC_API_KEY"] = key
    box = Sandbox(root, root / "data", env, backend, api_key=key)
    try:
        yield box
    finally:
        # Stop through the product first (the normal path), then reap anything left over.
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
            env=env,
            capture_output=True,
            timeout=60,
        )
        leftovers = reap(str(root))
        assert not leftovers, f"processes outlived the test: {leftovers}"


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
