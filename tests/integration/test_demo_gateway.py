"""The demo gateway (smartspec_desktop.demo.backend, gateway="demo") drives the real OpenCode:
a greeting, a file written through a tool call, a todo list, with simulated credits."""

from __future__ import annotations

import pytest

from tests.conftest import Sandbox

pytestmark = pytest.mark.integration


def test_demo_gateway_greets_writes_a_file_and_keeps_a_todo_list(sandbox: Sandbox) -> None:
    sandbox.backend.gateway = "demo"
    ws = sandbox.workspace()
    before = sandbox.backend.balance(sandbox.email)
    sandbox.cli_json("start", str(ws))

    r = sandbox.cli("run", str(ws), "Hello there")
    assert r.returncode == 0, r.stderr
    assert "demo gateway" in r.stdout

    r = sandbox.cli("run", str(ws), "Please write a file")
    assert r.returncode == 0, r.stderr
    assert (ws / "hello.txt").read_text() == "Hello from the SmartSpec Desktop demo!\n"
    assert "tool write: completed" in r.stderr and "Done." in r.stdout

    r = sandbox.cli("run", str(ws), "Make a todo list")
    assert r.returncode == 0, r.stderr
    assert "todo 1/3" in r.stderr

    assert sandbox.backend.balance(sandbox.email) < before  # simulated credits were spent
    sandbox.cli("stop", "--all")
