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
