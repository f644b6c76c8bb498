"""What a short CLI command does not do: import modules only other commands need, read the
keyring when nothing needs the key, or rewrite the state file when nothing changed (issue 11:
each of the suite's ~500 CLI runs, and a user's `status`, pays for what it loads and does).

No timing here: each cut is checked by what it avoids."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


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


def test_the_broker_package_still_exports_its_names() -> None:
    from smartspec_desktop.core import broker
    from smartspec_desktop.core.broker import payload, server

    assert broker.Broker is server.Broker
    assert broker.BrokerConfig is server.BrokerConfig
    assert broker.read_payload is payload.read_payload
    assert broker.broker_payload is payload.broker_payload
    assert broker.new_token is payload.new_token
    assert sorted(broker.__all__) == sorted(broker._LAZY)
