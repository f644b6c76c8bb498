"""The app process itself: no display, cold start hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
        and not k.startswith(("SMARTSPEC_", "OPENCODE_", "XDG_"))
    }
    env.update(
        HOME=str(tmp_path / "home"),
        PYTHONPATH=str(ROOT),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        **extra,
    )
    return env


def test_without_a_display_the_window_says_what_to_do(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "smartspec_desktop", "--data-dir", str(tmp_path / "d")],
        env=app_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "no display" in r.stderr and "smartspec-desktop --help" in r.stderr
    assert "Aborted" not in r.stderr and "Traceback" not in r.stderr


def test_window_opens_and_quits_cleanly(tmp_path: Path) -> None:
    """The hook the packaging smoke test and the cold-start benchmark use."""
    r = subprocess.run(
        [sys.executable, "-m", "smartspec_desktop", "--data-dir", str(tmp_path / "d")],
        env=app_env(tmp_path, QT_QPA_PLATFORM="offscreen", SMARTSPEC_EXIT_AFTER_SHOWN="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    shown = [ln for ln in r.stdout.splitlines() if ln.startswith("window-shown-ms=")]
    assert len(shown) == 1 and int(shown[0].split("=")[1]) > 0
    assert (tmp_path / "d" / "config").is_dir()  # it really ran on that data folder


def test_demo_window_opens_on_its_own_gateway_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """``smartspec-desktop --demo``: the demo gateway starts for the window, the real settings
    file is never created, and the gateway goes once the window has quit."""
    import time

    import psutil

    data = tmp_path / "d"
    r = subprocess.run(
        [sys.executable, "-m", "smartspec_desktop", "--data-dir", str(data), "--demo"],
        env=app_env(tmp_path, QT_QPA_PLATFORM="offscreen", SMARTSPEC_EXIT_AFTER_SHOWN="1"),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    assert any(ln.startswith("window-shown-ms=") for ln in r.stdout.splitlines())
    assert (
        "demo gateway on http://127.0.0.1:" in (data / "state" / "demo" / "gateway.log").read_text()
    )
    assert not (data / "config" / "settings.json").exists()  # the real settings: untouched

    def gateways() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if "--demo-gateway" in cmd and any(str(data) in c for c in cmd):
                found.append(p)
        return found

    deadline = time.monotonic() + 30
    while gateways() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not gateways()
