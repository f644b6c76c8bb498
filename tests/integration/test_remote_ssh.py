"""Remote workspaces over SSH, for real (issue 15): a real sshd, a throw-away remote account,
the real OpenCode 1.18.33 on the "remote" side, the gateway broker on this side.

The remote host is this machine through OpenSSH (tests/remote_host.py): the remote account is
another user, so its processes, environment and files are told apart from ours and searched for
the key. Skipped (with the reason) only when sshd cannot be run here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from smartspec_desktop.core.remote.ssh import close_shared
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import FileStore
from tests.backend_standin import Text, ToolCall
from tests.conftest import Sandbox
from tests.remote_host import RemoteHost, skip_reason, start_host

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remote_host(opencode_bin: str) -> Iterator[RemoteHost]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        gen = start_host()
        host = next(gen)
    except RuntimeError as e:
        pytest.skip(f"the test sshd could not be started: {e}")
    host.link_opencode(opencode_bin)
    try:
        yield host
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)


@pytest.fixture
def remote(
    remote_host: RemoteHost, sandbox: Sandbox, opencode_version: str
) -> Iterator[RemoteHost]:
    """The host, with the sandbox's CLI pointed at its ssh config (and knowing its OpenCode's
    version, as after an earlier start); no remote server may outlive the test."""
    sandbox.env = remote_host.env(sandbox.env)
    remote_host.link_opencode(os.environ.get("SMARTSPEC_TEST_OPENCODE") or _which_opencode())
    remote_host.seed_known_version(Paths.from_base(sandbox.data_dir).state_dir, opencode_version)
    yield remote_host
    sandbox.cli("stop", "--all")
    close_shared()  # what the test itself ran over ssh (in this process's runtime directory)
    left = remote_host.wait_no_servers(timeout=15)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not left, f"remote servers outlived the test: {[p.pid for p in left]}"


def _which_opencode() -> str:
    import shutil

    path = shutil.which("opencode")
    assert path
    return path


def _secret_scan(host: RemoteHost, secret: str) -> list[str]:
    """Where ``secret`` appears on the remote side: its processes' environ and argv, its
    files (the whole home)."""
    hits = []
    for p in host.processes():
        with contextlib.suppress(psutil.Error, OSError):
            for name in ("environ", "cmdline"):
                data = Path(f"/proc/{p.pid}/{name}").read_bytes()
                if secret.encode() in data:
                    hits.append(f"/proc/{p.pid}/{name} ({' '.join(p.cmdline())[:80]})")
    for root, _dirs, files in os.walk(host.home):
        for f in files:
            path = Path(root) / f
            with contextlib.suppress(OSError):
                if path.is_symlink() or path.stat().st_size > 50_000_000:
                    continue
                if secret.encode() in path.read_bytes():
                    hits.append(str(path))
    return hits


@pytest.mark.slow
def test_a_remote_workspace_starts_runs_through_the_broker_and_stops(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    folder = remote.workspace("proj")
    # The folder's own config tries to add a provider and route around the gateway.
    hostile = {
        "provider": {
            "other": {
                "npm": "@ai-sdk/openai-compatible",
                "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "x"},
                "models": {"m": {"name": "m"}},
            }
        },
        "enabled_providers": ["other"],
        "model": "other/m",
    }
    remote.run_as("sh", "-c", f"echo '{json.dumps(hostile)}' > {folder}/opencode.json")
    address = remote.address(folder)
    started = sandbox.cli_json("start", address)
    assert started["workspace_path"] == address
    assert started["host"] == "alias"
    assert started["url"].startswith("http://127.0.0.1:")
    (server,) = remote.servers()
    assert Path(f"/proc/{server.pid}/cwd").resolve() == folder  # in the remote folder
    env = dict(
        line.split("=", 1)
        for line in Path(f"/proc/{server.pid}/environ").read_text().split("\0")
        if "=" in line
    )
    assert env["OPENCODE_DISABLE_PROJECT_CONFIG"] == "1"  # untrusted: the folder's code is off
    assert env["SMARTSPEC_BROKER_URL"].startswith("http://127.0.0.1:")
    assert "SMARTSPEC_API_KEY" not in env
    models = Path(env["OPENCODE_CONFIG"])
    assert models.stat().st_mode & 0o777 == 0o600 and models.stat().st_uid == remote.uid
    password = FileStore(sandbox.data_dir / "state" / "secrets").get(
        f"server-password:{started['server_id']}"
    )
    assert password and password not in models.read_text()
    assert password.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    # The first request for the folder waits while OpenCode makes its instance there: 10 s was
    # not enough beside 4 busy processes (a bound for a hang, not for speed).
    with httpx.Client(auth=("opencode", password), trust_env=False, timeout=120) as c:
        providers = c.get(started["url"] + "/config/providers").json()
    assert [p["id"] for p in providers["providers"]] == ["smartspec"]

    # The remote server's only provider is our broker, through the reverse forward; the
    # stand-in gets the call with the real key, the remote side has only the token.
    sandbox.backend.script(
        ToolCall("write", {"filePath": "hello.txt", "content": "hi from remote"}),
        Text("Wrote it.", prompt_tokens=120, completion_tokens=5),
    )
    r = sandbox.cli("run", address, "Write hello.txt please")
    assert r.returncode == 0, r.stderr
    assert (folder / "hello.txt").read_text() == "hi from remote"
    assert os.stat(folder / "hello.txt").st_uid == remote.uid  # written by the remote account
    chats = sandbox.backend.chat_requests()
    assert chats and all(c.bearer_token == sandbox.api_key for c in chats)
    assert _secret_scan(remote, sandbox.api_key) == []

    status = sandbox.cli_json("status")
    (entry,) = status
    assert entry["host"] == "alias" and entry["status"] == "running"
    plain = sandbox.cli("status")
    assert address in plain.stdout, plain.stdout
    usage = sandbox.cli_json("usage", address)
    assert usage["total"]["calls"] == len(chats)

    r = sandbox.cli("stop", address)
    assert r.returncode == 0, r.stderr
    assert remote.wait_no_servers(timeout=10) == []
    assert sandbox.cli_json("status") == []
    end = time.monotonic() + 10
    while models.parent.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert not models.parent.exists()  # its private run folder went with it
    logs = sandbox.cli("logs", address)  # the last server's log, also after stop
    assert logs.returncode == 0 and "server listening on" in logs.stdout, logs.stderr
    assert password not in logs.stdout and sandbox.api_key not in logs.stdout
    worktree = sandbox.cli("run", address, "x", "--worktree")
    # (a plain folder: worktrees need git there, as locally; test_remote_worktrees.py)
    assert worktree.returncode != 0 and "is not a git repository" in worktree.stderr


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.3)


def test_a_lost_connection_shows_disconnected_then_reconnects(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    address = remote.address(remote.workspace("lost"))
    started = sandbox.cli_json("start", address)
    (first,) = remote.servers()
    password = FileStore(sandbox.data_dir / "state" / "secrets").get(
        f"server-password:{started['server_id']}"
    )
    assert password
    ssh = psutil.Process(started["pid"])  # the supervised program is the ssh connection
    assert ssh.name() == "ssh"
    keys = remote.folder / "authorized_keys"
    good = keys.read_text()
    keys.write_text("")  # the host refuses us for now: reconnecting cannot succeed yet
    try:
        # The connection drops: its server-side end dies (as when the network goes), so our
        # ssh sees the connection closed (exit 255), not a kill of its own.
        session = remote.session_of(first)  # (not another session still closing)
        session.kill()
        # Disconnect = stop: the remote side stopped its server when the channel closed.
        assert remote.wait_no_servers(timeout=15) == []

        def disconnected() -> bool:
            (entry,) = sandbox.cli_json("status")
            return bool(entry["disconnected"]) and entry["status"] == "running"

        _wait(disconnected, 30, "status says disconnected")
        (entry,) = sandbox.cli_json("status")
        assert entry["error"].startswith("Disconnected from alias: connecting again"), entry
        plain = sandbox.cli("status")
        assert "Disconnected from alias" in plain.stdout, plain.stdout
    finally:
        keys.write_text(good)

    # The supervisor connects again (with backoff): a new remote server behind the same URL.
    def reconnected() -> bool:
        (entry,) = sandbox.cli_json("status")
        return not entry["disconnected"] and len(remote.servers()) == 1

    _wait(reconnected, 60, "reconnected")
    (second,) = remote.servers()
    assert second.pid != first.pid
    with httpx.Client(auth=("opencode", password), trust_env=False, timeout=10) as c:
        assert c.get(started["url"] + "/global/health").json()["healthy"] is True
    assert sandbox.cli("stop", address).returncode == 0
    assert remote.wait_no_servers(timeout=10) == []


def test_a_killed_ssh_leaves_no_remote_server_and_the_next_start_recovers(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    address = remote.address(remote.workspace("killed"))
    started = sandbox.cli_json("start", address)
    assert len(remote.servers()) == 1
    psutil.Process(started["pid"]).kill()  # our ssh itself dies: no reconnect, disconnected
    assert remote.wait_no_servers(timeout=15) == []  # disconnect = stop, nothing unowned
    (entry,) = sandbox.cli_json("status")
    assert entry["status"] == "crashed" and entry["disconnected"] is True
    assert entry["error"].startswith("Disconnected from alias"), entry["error"]
    again = sandbox.cli_json("start", address)
    assert again["status"] == "running" and again["server_id"] != started["server_id"]
    assert len(remote.servers()) == 1
    assert sandbox.cli("stop", address).returncode == 0
    assert remote.wait_no_servers(timeout=10) == []


def test_a_remote_server_is_found_again_after_the_state_file_is_lost(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    address = remote.address(remote.workspace("f7"))
    started = sandbox.cli_json("start", address)
    (sandbox.data_dir / "state" / "servers.json").unlink()
    r = sandbox.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(r.stdout)
    assert entry["server_id"] == started["server_id"] and entry["host"] == "alias"
    assert entry["workspace_path"] == address and entry["port"] == started["port"]
    assert "missing from the state file" in r.stderr
    assert sandbox.cli("stop", address).returncode == 0
    assert remote.wait_no_servers(timeout=10) == []


@pytest.mark.timeout(600)  # a real npm install on the "remote" (~20-60 s)
@pytest.mark.slow
def test_missing_remote_opencode_names_the_install_command_which_works(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    address = remote.address(remote.workspace("inst"))
    remote.unlink_opencode()
    r = sandbox.cli("start", address)
    assert r.returncode != 0
    assert "alias has no supported OpenCode" in r.stderr, r.stderr
    assert "smartspec-desktop opencode install --host alias" in r.stderr, r.stderr
    assert sandbox.cli_json("status") == []

    # The install command, for real, with the remote's npm (the tests' npm cache copied there).
    remote.seed_npm_cache(Path(os.environ.get("npm_config_cache", "")))  # noqa: SIM112
    r = sandbox.cli("opencode", "install", "--host", "alias", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Installing opencode-ai@1.18.33 on alias" in r.stderr
    assert "installed on alias" in r.stdout, r.stdout
    binary = remote.install_dir() / "node_modules" / ".bin" / "opencode"
    assert binary.exists() and os.stat(remote.install_dir()).st_uid == remote.uid
    started = sandbox.cli_json("start", address)
    assert started["opencode_version"] == "1.18.33"
    assert sandbox.cli("stop", address).returncode == 0


def test_a_host_key_mismatch_is_a_clear_error(sandbox: Sandbox, remote: RemoteHost) -> None:
    folder = remote.workspace("hk")
    began = time.monotonic()
    r = sandbox.cli("start", remote.address(folder, host="badkey"), timeout=60)
    assert r.returncode != 0
    assert "host key" in r.stderr and "badkey" in r.stderr, r.stderr
    assert "ssh-keygen -R" in r.stderr, r.stderr
    assert time.monotonic() - began < 45  # never a hidden prompt
    assert remote.servers() == []


def test_an_auth_failure_is_a_clear_error(sandbox: Sandbox, remote: RemoteHost) -> None:
    folder = remote.workspace("auth")
    r = sandbox.cli("start", remote.address(folder, host="nokey"), timeout=60)
    assert r.returncode != 0
    assert "could not log in to nokey" in r.stderr and "ssh-copy-id nokey" in r.stderr, r.stderr
    assert remote.servers() == []


@pytest.mark.skipif(not shutil.which("xterm"), reason="Debian's xterm is needed")
def test_open_cli_attaches_the_local_tui_through_the_forward(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    assert os.environ.get("DISPLAY"), "run through tests/run-tests (it provides Xvfb)"
    folder = remote.workspace("tui")
    address = remote.address(folder)
    sandbox.write_settings(terminal="xterm")
    env = dict(sandbox.env, DISPLAY=os.environ["DISPLAY"])
    home = Path(sandbox.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)  # as a user's is (nothing else made it here)
    r = sandbox.cli("open-cli", address, env=env)
    assert r.returncode == 0, r.stderr
    (info,) = sandbox.cli_json("status")
    log = Path(info["log_path"])  # the remote server's output comes back over ssh
    try:
        _wait(
            lambda: "global event connected" in log.read_text(),
            60,
            "the TUI connected to the remote server",
        )
        attach = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "attach" in (p.info["cmdline"] or []) and str(folder) in p.info["cmdline"]
        ]
        assert attach, "no local `opencode attach` for the remote folder"
        cmd = attach[0].cmdline()
        assert cmd[cmd.index("attach") + 1] == info["url"]  # the local forwarded port
        assert cmd[cmd.index("--dir") + 1] == str(folder)  # the folder on the host
        assert Path(attach[0].cwd()) == home  # not a local copy of the remote path
    finally:
        for p in psutil.process_iter(["name", "cwd"]):
            with contextlib.suppress(psutil.Error):
                if p.info["name"] == "xterm" and p.info["cwd"] == str(home):
                    for c in p.children(recursive=True):
                        c.kill()
                    p.kill()


@pytest.mark.slow
def test_an_idle_remote_server_sleeps_leaves_nothing_on_the_host_and_wakes(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    """The supervisor's idle watcher works through the forward: nobody connected, no busy
    session, no gateway call for the idle time → the connection is stopped, the host's
    wrapper stops OpenCode, the workspace sleeps; the next action wakes it over ssh."""
    sandbox.env["SMARTSPEC_IDLE_MINUTES"] = repr(9.0 / 60)
    address = remote.address(remote.workspace("idle"))
    started = sandbox.cli_json("start", address)
    assert started["status"] == "running" and len(remote.servers()) == 1

    def asleep() -> bool:
        if remote.servers():
            return False
        rows = sandbox.cli_json("status")
        return bool(rows) and rows[0]["status"] == "sleeping"

    _wait(asleep, 120, "the idle remote server slept")
    (row,) = sandbox.cli_json("status")
    assert row["host"] and row["server_id"] == started["server_id"]
    assert not psutil.pid_exists(started["pid"]) or (
        psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    sandbox.backend.default_step = Text("Awake again.", prompt_tokens=3, completion_tokens=2)
    r = sandbox.cli("run", address, "are you there?")
    assert r.returncode == 0, r.stderr
    assert "Waking the sleeping server" in r.stderr and "Awake again." in r.stdout
    assert len(remote.servers()) == 1
    assert sandbox.cli("stop", address).returncode == 0
    assert remote.wait_no_servers(timeout=15) == []
