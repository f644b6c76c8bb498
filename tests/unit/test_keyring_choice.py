"""The keyring backend is keyring's own choice, made without its other platforms' modules (whose
macOS one runs ldconfig and a compiler on Linux in every process that touches the keyring)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

OURS = """
import subprocess, sys
def refuse(*a, **k):
    raise AssertionError(f"a process was started: {a[:1]}")
subprocess.Popen = refuse
from smartspec_desktop.core.storage.secrets import choose_keyring_backend
import keyring
choose_keyring_backend()
ring = keyring.get_keyring()
skipped = ("keyring.backends.macOS", "keyring.backends.Windows")
foreign = [m for m in sys.modules if m.startswith(skipped)]
assert not foreign, foreign
print(type(ring).__module__ + "." + type(ring).__name__)
"""

KEYRINGS_OWN = """
import keyring
ring = keyring.get_keyring()
print(type(ring).__module__ + "." + type(ring).__name__)
"""


def backend_in(code: str, tmp_path: os.PathLike[str], **env: str) -> str:
    home = os.fspath(tmp_path)
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON_KEYRING")}
    e.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"), PYTHONPATH=str(ROOT))
    e.update(env)
    r = subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="the skipped modules are the other platforms'")
def test_the_choice_is_keyrings_own_without_foreign_modules_or_processes(
    tmp_path: os.PathLike[str],
) -> None:
    # Under tests/run-tests a private D-Bus session holds a GNOME Keyring: both pick it.
    ours = backend_in(OURS, tmp_path)
    assert ours == backend_in(KEYRINGS_OWN, tmp_path)
    assert ours != "keyring.backends.fail.Keyring" or not os.environ.get("DBUS_SESSION_BUS_ADDRESS")


def test_the_environment_and_keyringrc_still_decide(tmp_path: os.PathLike[str]) -> None:
    named = "keyring.backends.null.Keyring"
    assert backend_in(OURS, tmp_path, PYTHON_KEYRING_BACKEND=named) == named
    rc = os.path.join(os.fspath(tmp_path), ".config", "python_keyring")
    os.makedirs(rc)
    with open(os.path.join(rc, "keyringrc.cfg"), "w") as f:
        f.write("[backend]\ndefault-keyring=keyring.backends.fail.Keyring\n")
    assert backend_in(OURS, tmp_path) == "keyring.backends.fail.Keyring"
