"""Remote workspaces, continued (issue 15), against the tests' own sshd (tests/remote_host.py):
the memory and CPU of the server's tree on the host, the idle watcher after a lost
connection, and the trust note's list of a remote folder's code."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import psutil
import pytest

from smartspec_desktop.core.servers.trust import look_for_project_code
from tests.conftest import Sandbox
from tests.integration.test_remote_ssh import remote, remote_host  # noqa: F401 - fixtures
from tests.remote_host import RemoteHost

MB = 1024 * 1024


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.3)


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MB


@pytest.mark.slow
def test_status_shows_the_memory_and_cpu_of_the_remote_servers_tree_on_its_host(
    sandbox: Sandbox,
    remote: RemoteHost,  # noqa: F811 - the fixture
) -> None:
    sandbox.env["SMARTSPEC_REMOTE_USAGE_SECONDS"] = "1"
    address = remote.address(remote.workspace("stats"))
    started = sandbox.cli_json("start", address)
    (server,) = remote.servers()  # the host's `opencode serve` (this machine, another user)
    local = _tree_rss_mb(started["pid"])  # what runs here: ssh (and its supervisor above)

    def measured() -> bool:
        (row,) = sandbox.cli_json("status")
        return row["rss_mb"] is not None and row["cpu_percent"] is not None

    _wait(measured, 30, "the host's figures arrived")
    time.sleep(1.5)  # settled after its start-up
    (row,) = sandbox.cli_json("status")
    on_host = _tree_rss_mb(server.pid)
    assert row["usage_host"] == "alias" and row["host"] == "alias"
    # The remote tree's memory (hundreds of MB), as psutil sees it on the "host", not the
    # ~30 MB of our ssh and supervisor.
    assert row["rss_mb"] > 100 and row["rss_mb"] > 3 * local, (row["rss_mb"], local)
    assert abs(row["rss_mb"] - on_host) < 0.15 * on_host + 20, (row["rss_mb"], on_host)
    assert 0 <= row["cpu_percent"] < 400
    plain = sandbox.cli("status").stdout
    assert f"{row['rss_mb']:.0f} MB · CPU" in plain or " MB · CPU " in plain, plain
    assert " on alias" in plain, plain

    # Status reads a file: no ssh of its own, so it stays fast whatever the network does.
    began = time.monotonic()
    sandbox.cli_json("status")
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "ssh"]
    assert time.monotonic() - began < 30

    # Stopped: nothing runs, no figure (and no stale one from the file).
    assert sandbox.cli("stop", address).returncode == 0
    assert remote.wait_no_servers(timeout=10) == []


@pytest.mark.slow
def test_an_idle_remote_server_still_sleeps_after_a_reconnection(
    sandbox: Sandbox,
    remote: RemoteHost,  # noqa: F811 - the fixture
) -> None:
    """After a lost connection the supervisor connects again with a new ssh: the idle watcher
    follows it (counts its clients, stops it), so the server still goes to sleep."""
    sandbox.env["SMARTSPEC_IDLE_MINUTES"] = repr(9.0 / 60)
    sandbox.env["SMARTSPEC_REMOTE_USAGE_SECONDS"] = "1"
    address = remote.address(remote.workspace("idle-again"))
    started = sandbox.cli_json("start", address)
    (first,) = remote.servers()
    port = urlsplit(started["url"]).port
    assert port
    # A client holds the server awake until the connection is lost (so it cannot sleep
    # before that, whatever the load).
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        remote.session_of(first).kill()  # the connection drops on the host's side: ssh exits 255
        assert remote.wait_no_servers(timeout=15) == []
    finally:
        client.close()

    def reconnected() -> bool:
        (row,) = sandbox.cli_json("status")
        servers = remote.servers()
        return not row["disconnected"] and len(servers) == 1 and servers[0].pid != first.pid

    _wait(reconnected, 60, "reconnected")
    (second,) = remote.servers()
    assert _gone(started["pid"])  # the first ssh is gone: a new one holds the forward

    # The figures follow the new remote server too.
    def measured_again() -> bool:
        (row,) = sandbox.cli_json("status")
        return row["status"] != "running" or row["rss_mb"] is not None

    _wait(measured_again, 30, "the new server's figures")

    def asleep() -> bool:
        if remote.servers():
            return False
        (row,) = sandbox.cli_json("status")
        return bool(row["status"] == "sleeping")

    try:
        _wait(asleep, 120, "the reconnected idle server slept")
    except AssertionError as e:  # what the supervisor saw, for a failure on a loaded CI
        log = sandbox.cli("logs", address).stdout[-4000:]
        raise AssertionError(f"{e}\nstatus: {sandbox.cli_json('status')}\nlog:\n{log}") from None
    (row,) = sandbox.cli_json("status")
    assert row["server_id"] == started["server_id"] and row["rss_mb"] == 0
    assert _gone(second.pid)
    r = sandbox.cli("start", address)  # wakes it
    assert r.returncode == 0, r.stderr
    assert len(remote.servers()) == 1
    assert sandbox.cli("stop", address).returncode == 0
    assert remote.wait_no_servers(timeout=15) == []


def test_the_trust_note_lists_a_remote_folders_code_listed_on_its_host(
    sandbox: Sandbox,
    remote: RemoteHost,  # noqa: F811 - the fixture
) -> None:
    """An untrusted remote folder with a plugin, an MCP server and a hostile file name: the
    CLI's note (and the window's banner, through the same look_for_project_code) lists them as
    for a local folder, made on the host over ssh; nothing in the names runs there."""
    folder = remote.workspace("trusty")
    config = {"mcp": {"db": {"type": "local", "command": ["node", "db.js"]}}}
    remote.run_as("mkdir", "-p", f"{folder}/.opencode/plugins")
    remote.run_as("sh", "-c", f"echo > {folder}/.opencode/plugins/helper.ts")
    remote.run_as("touch", f"{folder}/.opencode/plugins/$(touch pwned).js")
    remote.run_as("sh", "-c", f"echo '{json.dumps(config)}' > {folder}/opencode.json")
    address = remote.address(folder)

    code = look_for_project_code(address, environ=sandbox.env)
    assert code.host == "alias" and not code.remote, code.unlisted
    assert code.runs_code and code.plugins == sorted(
        [f"{folder}/.opencode/plugins/$(touch pwned).js", f"{folder}/.opencode/plugins/helper.ts"]
    )
    assert not (folder / "pwned").exists() and not (remote.home / "pwned").exists()

    r = sandbox.cli("start", address)
    assert r.returncode == 0, r.stderr
    assert f"note: {address} is not trusted" in r.stderr, r.stderr
    assert "  plugin .opencode/plugins/helper.ts\n" in r.stderr, r.stderr
    assert "  plugin .opencode/plugins/$(touch pwned).js\n" in r.stderr, r.stderr
    assert "  MCP server 'db': node db.js  (in opencode.json)\n" in r.stderr, r.stderr
    assert "not listed" not in r.stderr
    assert not (folder / "pwned").exists()
    assert sandbox.cli("stop", address).returncode == 0

    # A host that refuses us: the list is unknown, with the reason, not empty.
    refused = look_for_project_code(remote.address(folder, host="nokey"), environ=sandbox.env)
    assert refused.remote and "could not log in to nokey" in refused.unlisted
