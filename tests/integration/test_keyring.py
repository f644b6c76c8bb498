"""Secrets in a real OS keyring (Secret Service via GNOME Keyring, started by tests/run-tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import IN_CI, Sandbox

pytestmark = pytest.mark.integration


def _secret_service_works(env: dict[str, str]) -> bool:
    probe = (
        "import keyring, sys; from keyring.backends import fail; "
        "k = keyring.get_keyring(); "
        "sys.exit(1 if isinstance(k, fail.Keyring) else 0)"
    )
    return subprocess.run([sys.executable, "-c", probe], env=env, timeout=30).returncode == 0


@pytest.fixture
def keyring_env(sandbox: Sandbox) -> dict[str, str]:
    env = dict(sandbox.env)
    env.pop("PYTHON_KEYRING_BACKEND")
    env.pop("SMARTSPEC_API_KEY")
    if not _secret_service_works(env):
        if IN_CI:
            pytest.fail("no Secret Service in CI: tests/run-tests must start gnome-keyring")
        pytest.skip("no OS keyring here; run through tests/run-tests")
    return env


def test_key_set_stores_in_keyring_and_start_uses_it(
    sandbox: Sandbox, keyring_env: dict[str, str]
) -> None:
    r = sandbox.cli("key", "set", input=sandbox.api_key + "\n", env=keyring_env)
    assert r.returncode == 0, r.stderr
    assert sandbox.api_key not in r.stdout + r.stderr
    shown = sandbox.cli("key", "show", env=keyring_env)
    assert shown.returncode == 0 and "(from keyring)" in shown.stdout
    assert sandbox.api_key not in shown.stdout and shown.stdout.startswith("sk-smartspec-")

    r = sandbox.cli("start", str(sandbox.workspace()), "--json", env=keyring_env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    # With a keyring, the server password is kept there, not in a file.
    assert not (sandbox.data_dir / "state" / "secrets").exists() or not any(
        (sandbox.data_dir / "state" / "secrets").iterdir()
    )
    assert sandbox.state()["servers"][info["server_id"]]["password_store"] == "keyring"
    assert sandbox.cli("stop", "--all", env=keyring_env).returncode == 0

    r = sandbox.cli("key", "delete", env=keyring_env)
    assert r.returncode == 0
    r = sandbox.cli("key", "show", env=keyring_env)
    assert r.returncode == 1 and "No SmartSpecPro API key" in r.stderr


@pytest.mark.slow
def test_key_set_rejects_a_key_the_backend_refuses(
    sandbox: Sandbox, keyring_env: dict[str, str]
) -> None:
    bad = "sk-smartspec-" + "B" * 43
    r = sandbox.cli("key", "set", input=bad, env=keyring_env)
    assert r.returncode == 1 and "rejected the API key" in r.stderr
    assert bad not in r.stderr
    assert sandbox.cli("key", "show", env=keyring_env).returncode == 1


@pytest.mark.faults
def test_without_a_keyring_key_set_says_what_to_do(sandbox: Sandbox) -> None:
    env = dict(sandbox.env)
    env.pop("SMARTSPEC_API_KEY")
    r = sandbox.cli("key", "set", input=sandbox.api_key, env=env)
    assert r.returncode == 1
    assert "No OS keyring is available" in r.stderr and "SMARTSPEC_API_KEY" in r.stderr


@pytest.mark.slow
def test_key_delete_says_removed_only_when_something_was_stored(
    sandbox: Sandbox, keyring_env: dict[str, str]
) -> None:
    r = sandbox.cli("key", "delete", env=keyring_env)
    assert r.returncode == 0 and "nothing was removed" in r.stdout and "Removed" not in r.stdout
    assert sandbox.cli("key", "set", input=sandbox.api_key, env=keyring_env).returncode == 0
    r = sandbox.cli("key", "delete", env=keyring_env)
    assert r.returncode == 0 and r.stdout.startswith("Removed the API key from the keyring.")
    r = sandbox.cli("key", "delete", env=keyring_env)
    assert "nothing was removed" in r.stdout
    with_env = dict(keyring_env, SMARTSPEC_API_KEY=sandbox.api_key)
    r = sandbox.cli("key", "delete", env=with_env)
    assert "nothing was removed" in r.stdout and "SMARTSPEC_API_KEY is set" in r.stdout


def test_key_show_says_which_key_wins(sandbox: Sandbox, keyring_env: dict[str, str]) -> None:
    assert sandbox.cli("key", "set", input=sandbox.api_key, env=keyring_env).returncode == 0
    other = sandbox.backend.issue_api_key(sandbox.email, name="env")
    shown = sandbox.cli("key", "show", env=dict(keyring_env, SMARTSPEC_API_KEY=other))
    assert shown.returncode == 0 and "(from keyring)" in shown.stdout
    assert "SMARTSPEC_API_KEY environment variable" in shown.stdout
    assert "the one from the OS keyring wins" in shown.stdout
    assert other not in shown.stdout and sandbox.api_key not in shown.stdout
    alone = sandbox.cli("key", "show", env=keyring_env)
    assert "note:" not in alone.stdout
