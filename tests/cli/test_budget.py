"""``smartspec-desktop budget PATH [--daily N | --clear]``: the daily cap from the command line,
kept in the settings like the window's, and given to a running server's broker at once."""

from __future__ import annotations

import json

import pytest

from tests.backend_standin import Text
from tests.conftest import Sandbox


def _settings(box: Sandbox) -> dict[str, object]:
    return dict(json.loads((box.data_dir / "config" / "settings.json").read_text()))


@pytest.mark.slow
def test_bad_input_says_what_is_wrong(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    for value, words in (("-5", "cannot be negative"), ("lots", "not a whole number of tokens")):
        r = sandbox.cli("budget", str(ws), "--daily", value)
        assert r.returncode == 2, r
        assert words in r.stderr and "--clear" in r.stderr, r.stderr
    r = sandbox.cli("budget", str(ws), "--daily", "10", "--clear")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    missing = sandbox.root / "no-such-project"
    r = sandbox.cli("budget", str(missing), "--daily", "1000")
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: The workspace {missing} does not exist."), r.stderr
    assert "Check the path" in r.stderr
    assert "workspace_day_caps" not in (sandbox.data_dir / "config" / "settings.json").read_text()


def test_set_show_and_clear_without_a_server(sandbox: Sandbox) -> None:
    ws = str(sandbox.workspace().resolve())
    r = sandbox.cli("budget", ws)
    assert r.returncode == 0
    assert "daily budget: none (today: 0 tokens used)" in r.stdout
    r = sandbox.cli("budget", ws, "--daily", "50,000")
    assert r.returncode == 0, r.stderr
    assert "daily budget 50,000 tokens (saved; its server takes it when it starts)" in r.stdout
    assert _settings(sandbox)["workspace_day_caps"] == {ws: 50000}
    data = sandbox.cli_json("budget", ws)
    assert data["daily_cap"] == 50000 and data["live"] is False and data["broker_cap"] is None
    r = sandbox.cli("budget", ws)
    assert "daily budget: 50,000 tokens (today: 0 used, 50,000 left)" in r.stdout
    assert "not running" in r.stdout
    r = sandbox.cli("budget", ws, "--daily", "0")  # 0 removes it, like --clear
    assert r.returncode == 0 and "no daily budget" in r.stdout
    assert _settings(sandbox)["workspace_day_caps"] == {}
    r = sandbox.cli("budget", ws, "--clear")
    assert r.returncode == 0 and "had no daily budget; nothing changed" in r.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_a_running_servers_broker_takes_the_cap_at_once(sandbox: Sandbox) -> None:
    ws = str(sandbox.workspace().resolve())
    info = sandbox.cli_json("start", ws)
    r = sandbox.cli("budget", ws, "--daily", "100")
    assert r.returncode == 0, r.stderr
    assert "daily budget 100 tokens (its running server has it now)." in r.stdout
    data = sandbox.cli_json("budget", ws)
    assert data["live"] is True and data["broker_cap"] == 100 and data["daily_cap"] == 100
    # The broker enforces it: one answer (120 tokens) crosses the cap, the next is refused.
    sandbox.backend.script(Text("one"), Text("two"))
    assert sandbox.cli("run", ws, "first").returncode == 0
    r = sandbox.cli("run", ws, "second")
    assert r.returncode == 1
    assert "Paused: budget of 100 tokens reached (today's workspace budget" in r.stderr, r.stderr
    r = sandbox.cli("budget", ws)
    assert "daily budget: 100 tokens (today: " in r.stdout and "Paused: budget of 100" in r.stdout
    # Clearing it reaches the broker too: the next run goes through, no restart.
    r = sandbox.cli("budget", ws, "--clear")
    assert "no daily budget (its running server has it now)." in r.stdout, r.stdout
    assert sandbox.cli_json("budget", ws)["broker_cap"] is None
    assert sandbox.cli("run", ws, "third").returncode == 0
    assert sandbox.cli_json("status")[0]["pid"] == info["pid"]  # the same server all along
    assert sandbox.cli("stop", ws).returncode == 0
