"""What a short CLI command does not do: import modules only other commands need, read the
keyring when nothing needs the key, or rewrite the state file when nothing changed (issue 11:
each of the suite's ~500 CLI runs, and a user's `status`, pays for what it loads and does).

No timing here: each cut is checked by what it avoids."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from smartspec_desktop.core.loopback import verify_for
from smartspec_desktop.core.opencode.client import OpenCodeClient
from tests.conftest import ROOT, sandbox_env


def _imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_the_cli_does_not_import_the_broker_server() -> None:
    """The gateway broker (http.server, email parsing) runs in the supervisor, not the CLI."""
    mods = _imported_after("import smartspec_desktop.cli")
    assert "smartspec_desktop.core.broker.meter" in mods  # the check sees the package
    assert "smartspec_desktop.core.broker.server" not in mods
    assert "smartspec_desktop.core.broker.body" not in mods
    # Nor what only HTTP talk, the supervisor's probes or a launch hand-off need.
    assert "smartspec_desktop.core.launch.launchers" in mods
    assert "smartspec_desktop.core.process.idle" in mods
    assert not {"httpx", "http.client", "http.server", "ssl", "keyring"} & mods
    # Nor the review and worktree commands' modules.
    assert not {"smartspec_desktop.core.review", "smartspec_desktop.core.worktrees"} & mods


def test_the_broker_package_still_exports_its_names() -> None:
    from smartspec_desktop.core import broker
    from smartspec_desktop.core.broker import payload, server

    assert broker.Broker is server.Broker
    assert broker.BrokerConfig is server.BrokerConfig
    assert broker.read_payload is payload.read_payload
    assert broker.broker_payload is payload.broker_payload
    assert broker.new_token is payload.new_token
    assert sorted(broker.__all__) == sorted(broker._LAZY)


# ------------------------------------------------------------------ the keyring, the state file

TRIPWIRE = '''
import os
from pathlib import Path

from keyring.backend import KeyringBackend


def _mark(what: str) -> None:
    with Path(os.environ["TRIPWIRE_FILE"]).open("a", encoding="utf-8") as f:
        f.write(what + "\\n")


class Keyring(KeyringBackend):
    """A keyring that notes every use (its creation included) in $TRIPWIRE_FILE."""

    priority = 1

    def __init__(self):
        super().__init__()
        _mark("created")

    def get_password(self, service, username):
        _mark(f"get {username}")
        return os.environ.get("TRIPWIRE_KEY") if username == "api-key" else None

    def set_password(self, service, username, password):
        _mark(f"set {username}")

    def delete_password(self, service, username):
        _mark(f"delete {username}")
'''


@dataclass
class Cli:
    root: Path
    data_dir: Path
    env: dict[str, str]
    tripwire: Path

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "smartspec_desktop", "--data-dir", str(self.data_dir)]
        return subprocess.run(
            [*cmd, *args], env=self.env, capture_output=True, text=True, cwd=self.root, timeout=120
        )

    def keyring_uses(self) -> list[str]:
        return self.tripwire.read_text().split("\n")[:-1] if self.tripwire.exists() else []


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The CLI in a sandboxed HOME and data dir, with a keyring that notes every use."""
    (tmp_path / "tripwire_keyring.py").write_text(TRIPWIRE)
    env = sandbox_env(tmp_path, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    env["PYTHON_KEYRING_BACKEND"] = "tripwire_keyring.Keyring"
    env["TRIPWIRE_FILE"] = str(tmp_path / "keyring-uses.txt")
    env["TRIPWIRE_KEY"] = "sk-smartspec-" + secrets.token_urlsafe(32)
    return Cli(tmp_path, tmp_path / "data", env, tmp_path / "keyring-uses.txt")


def test_status_without_servers_does_not_touch_the_keyring(cli: Cli) -> None:
    r = cli("status")
    assert (r.returncode, r.stdout, r.stderr) == (0, "No servers.\n", "")
    assert cli.keyring_uses() == []
    r = cli("status", "--json")
    assert (r.returncode, r.stdout.strip()) == (0, "[]")
    assert cli.keyring_uses() == []
    state = cli.data_dir / "state" / "servers.json"
    assert not state.exists()  # nothing to save: not written
    state.write_text('{"servers": {}, "version": 2}\n', encoding="utf-8")
    before = state.stat()
    r = cli("status")
    assert (r.returncode, r.stdout) == (0, "No servers.\n")
    after = state.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # The tripwire works: a command that needs the key asks the keyring for it.
    r = cli("key", "show")
    assert r.returncode == 0, r.stderr
    assert "get api-key" in cli.keyring_uses()


def test_status_imports_neither_httpx_nor_keyring(cli: Cli) -> None:
    """status talks no HTTP and needs no key: httpx and keyring stay unimported."""
    code = (
        "import sys\n"
        "from smartspec_desktop.__main__ import main\n"
        f"assert main(['--data-dir', {str(cli.data_dir)!r}, 'status']) == 0\n"
        "print(' '.join(m for m in ('httpx', 'keyring', 'secretstorage') if m in sys.modules))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=cli.env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "No servers.\n\n"
    assert cli.keyring_uses() == []


def test_httpx_is_imported_at_its_first_use() -> None:
    code = (
        "import sys\n"
        "from smartspec_desktop.core import backend\n"
        "assert 'httpx' not in sys.modules\n"
        "c = backend.BackendClient('http://127.0.0.1:9')\n"
        "import httpx\n"
        "assert isinstance(c._timeout, httpx.Timeout) and c._timeout.connect == 5.0\n"
        "assert c._timeout.read == 10.0\n"
        "c.close()\n"
        "print(backend.httpx)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "<lazy module 'httpx' (imported)>\n"


def test_a_command_that_logs_still_redacts_the_keyring_key(cli: Cli) -> None:
    """The key is asked for once a text is logged, and never reaches the log in clear: here a
    failing command's error (logged at INFO) that quotes the stored key."""
    key = cli.env["TRIPWIRE_KEY"]
    odd = "not-shaped-like-a-key-" + secrets.token_hex(8)  # only known as a secret, by value
    for stored in (key, odd):
        cli.env["TRIPWIRE_KEY"] = stored
        r = cli("stop", f"/nowhere/{stored}")  # no server there: an error, logged
        assert r.returncode != 0 and stored in r.stderr  # the user's own input, on their screen
        log = (cli.data_dir / "log" / "smartspec-desktop.log").read_text()
        assert "command stop failed" in log
        assert stored not in log
    assert "get api-key" in cli.keyring_uses()


# ----------------------------------------------------------------------------- loopback clients


def test_plain_http_clients_skip_the_ca_bundle_but_never_go_unverified() -> None:
    context = verify_for("http://127.0.0.1:4096")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0  # trusts no CA: TLS would fail, closed
    assert verify_for("HTTP://localhost:1") is not True
    assert verify_for("https://backend.example.com") is True  # httpx's own, with certifi
    assert verify_for("ssh://host/ws") is True


def test_an_opencode_client_uses_the_no_ca_context_for_its_http_url() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"healthy": True, "version": "1.18.33"})

    with OpenCodeClient("http://127.0.0.1:9", "pw") as client:
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert pool._ssl_context.cert_store_stats()["x509_ca"] == 0
        for c in (client, client.clone(timeout=2.0)):
            c._http._transport = httpx.MockTransport(handler)
            assert c._http.get("/global/health").json()["healthy"] is True
    assert [r.headers["authorization"].startswith("Basic ") for r in seen] == [True, True]


def test_the_fail_backend_named_in_the_environment_is_known_without_keyring() -> None:
    code = """
import os, sys
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
from smartspec_desktop.core.storage.secrets import Credentials, KeyringStore, MemoryStore
store = KeyringStore()
assert store.available() is False
creds = Credentials(store, MemoryStore(), environ={"SMARTSPEC_API_KEY": "sk-smartspec-" + "k" * 40})
assert creds.api_key() == ("sk-smartspec-" + "k" * 40, "SMARTSPEC_API_KEY")
assert creds.save_server_password("srv_1", "pw-123456") == "file"
assert "keyring" not in sys.modules
# Once keyring is loaded, keyring decides (here: a backend set by the program wins).
import keyring
from keyring.backend import KeyringBackend
class Ring(KeyringBackend):
    priority = 1
    def get_password(self, service, username): return None
    def set_password(self, service, username, password): pass
    def delete_password(self, service, username): pass
keyring.set_keyring(Ring())
assert store.available() is True
print("ok")
"""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
