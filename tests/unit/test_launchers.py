"""Unit tests of core/launchers.py: what is handed to the terminal, the browser and
openwork-server, and the one-shot page. The real programs are driven in
tests/integration/test_launchers.py."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from smartspec_desktop.core.errors import LaunchError, NoTerminalError
from smartspec_desktop.core.launch import launchers
from smartspec_desktop.core.launch.launchers import (
    Handoff,
    find_openwork_server,
    open_cli,
    open_openwork,
    openwork_command,
    openwork_env,
    web_ui_path,
)
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.servers.registry import RUNNING, ChildRecord, ServerRecord
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials, MemoryStore
from tests.handoff_browser import handoff_form, open_handoff

PW = "server-password-0123456789abcdef"
KEY = "sk-smartspec-abcdefghijklmnopqrstuvwxyz"


def record(ws: str = "/work/my ws") -> ServerRecord:
    return ServerRecord(
        server_id="srv_1",
        workspace_path=ws,
        status=RUNNING,
        created_at="now",
        port=3795,
        url="http://127.0.0.1:3795",
        opencode_path="/opt/opencode/bin/opencode",
    )


@dataclass
class FakeStart:
    record: ServerRecord
    warnings: list[str] = field(default_factory=list)


class FakeServers:
    """Just what the launchers use of a ServerManager."""

    def __init__(self, settings: Settings, environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = environ or {
            "PATH": "/usr/bin:/bin",
            "SMARTSPEC_API_KEY": KEY,
            "OPENCODE_CONFIG_CONTENT": "{}",
            "OPENCODE_SERVER_PASSWORD": "someone-elses",
            "LANG": "C.UTF-8",
        }
        self.started: list[str] = []

    def start(self, workspace: str, *, progress: Any = None) -> FakeStart:
        self.started.append(workspace)
        return FakeStart(record(workspace))

    def password(self, rec: ServerRecord) -> str:
        return PW

    def find_opencode(self) -> Any:
        raise AssertionError("the record names the binary")


class FakeProc:
    def __init__(self, code: int | None) -> None:
        self.code = code

    def wait(self, timeout: float | None = None) -> int:
        if self.code is None and timeout is None:
            return 0  # the background reaper, once the window closes
        if self.code is None:
            raise subprocess.TimeoutExpired("term", timeout or 0)
        return self.code


# A "terminal" that exists everywhere: the custom template runs the command through Python.
CUSTOM_TERMINAL = f"{sys.executable} -c pass {{command}}"


def run_open_cli(code: int | None = None, **settings: Any) -> tuple[list[Any], dict[str, Any]]:
    calls: list[tuple[list[Any], dict[str, Any]]] = []

    def popen(argv: list[str], **kw: Any) -> FakeProc:
        calls.append((argv, kw))
        return FakeProc(code)

    sessions = FakeServers(Settings(terminal=settings.pop("terminal", CUSTOM_TERMINAL)))
    outcome = open_cli(sessions, "/work/my ws", popen=popen)  # type: ignore[arg-type]
    assert "Opened OpenCode CLI for /work/my ws" in outcome.message and PW not in outcome.message
    (call,) = calls
    return call


def test_open_cli_hands_the_password_through_the_environment_only() -> None:
    argv, kw = run_open_cli()
    assert argv[-5:] == [
        "/opt/opencode/bin/opencode",
        "attach",
        "http://127.0.0.1:3795",
        "--dir",
        "/work/my ws",
    ]
    assert not any(PW in a for a in argv)
    env = kw["env"]
    assert env["OPENCODE_SERVER_PASSWORD"] == PW
    assert "SMARTSPEC_API_KEY" not in env and "OPENCODE_CONFIG_CONTENT" not in env
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    assert kw["cwd"] == "/work/my ws"
    if sys.platform != "win32":
        assert kw["start_new_session"] is True


def test_open_cli_reports_a_terminal_that_fails_at_once() -> None:
    with pytest.raises(LaunchError) as e:
        run_open_cli(code=1)
    assert "exited at once with code 1" in e.value.problem
    assert "Settings → Terminal" in e.value.fix
    run_open_cli(code=0)  # gnome-terminal style: hands off to its server and exits 0


def test_open_cli_reports_a_terminal_that_cannot_start() -> None:
    def popen(argv: list[str], **kw: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory")

    sessions = FakeServers(Settings(terminal=CUSTOM_TERMINAL))
    with pytest.raises(LaunchError) as e:
        open_cli(sessions, "/work/my ws", popen=popen)  # type: ignore[arg-type]
    assert "could not be started (No such file or directory)" in e.value.problem
    assert "Settings → Terminal" in e.value.fix


def test_open_cli_without_the_chosen_terminal_names_the_setting() -> None:
    sessions = FakeServers(Settings(terminal="no-such-terminal-xyz -e {command}"))
    with pytest.raises(NoTerminalError) as e:
        open_cli(sessions, "/work/my ws", popen=lambda *a, **k: pytest.fail("no launch"))  # type: ignore[arg-type]
    assert "no-such-terminal-xyz" in e.value.problem and "Settings → Terminal" in str(e.value)


def test_openwork_command_and_env() -> None:
    rec = record()
    argv = openwork_command("/usr/bin/openwork-server", rec, 40123)
    assert argv == [
        "/usr/bin/openwork-server",
        "web",
        "--host",
        "127.0.0.1",
        "--port",
        "40123",
        "--workspace",
        "/work/my ws",
        "--opencode-base-url",
        "http://127.0.0.1:3795",
        "--opencode-directory",
        "/work/my ws",
        "--opencode-username",
        "opencode",
    ]
    base = {"PATH": "/bin", "SMARTSPEC_API_KEY": KEY, "OPENWORK_SERVER_CONFIG": "/x.json"}
    env = openwork_env(base, password=PW, opencode_bin="/opt/oc")
    assert env["OPENWORK_OPENCODE_PASSWORD"] == PW
    assert env["OPENWORK_OPENCODE_BIN"] == "/opt/oc" and env["OPENWORK_NO_UPDATE_CHECK"] == "1"
    assert len(env["OPENWORK_TOKEN"]) >= 24 and env["OPENWORK_TOKEN"] != env["OPENWORK_HOST_TOKEN"]
    assert "SMARTSPEC_API_KEY" not in env and "OPENWORK_SERVER_CONFIG" not in env
    again = openwork_env(base, password=PW, opencode_bin="/opt/oc")
    assert again["OPENWORK_TOKEN"] != env["OPENWORK_TOKEN"]  # fresh tokens per start


def test_find_openwork_server(tmp_path: Path) -> None:
    assert find_openwork_server("", lambda name: None) is None
    assert find_openwork_server("", lambda name: f"/bin/{name}") == "/bin/openwork-server"
    with pytest.raises(LaunchError) as e:
        find_openwork_server(str(tmp_path / "missing"), lambda name: None)
    assert "Settings → OpenWork server" in e.value.fix and "npm install -g" in e.value.fix
    plain = tmp_path / "openwork-server"
    plain.write_text("not executable")
    plain.chmod(0o644)
    with pytest.raises(LaunchError):
        find_openwork_server(str(plain), lambda name: None)
    plain.chmod(0o755)
    assert find_openwork_server(str(plain), lambda name: None) == str(plain)


def test_open_openwork_checks_the_mode_before_starting_anything() -> None:
    sessions = FakeServers(Settings(openwork_mode="fancy"))  # type: ignore[arg-type]
    with pytest.raises(LaunchError):
        open_openwork(sessions, "/w", opener=lambda u: True)  # type: ignore[arg-type]
    sessions = FakeServers(Settings(openwork_mode="openwork"), environ={"PATH": ""})
    with pytest.raises(LaunchError) as e:
        open_openwork(sessions, "/w", opener=lambda u: True)  # type: ignore[arg-type]
    assert "npm install -g openwork-server" not in e.value.fix, "npm has no such package here"
    assert "OpenWork desktop app" in e.value.fix and "Settings → OpenWork server" in e.value.fix
    assert sessions.started == []


def test_web_ui_path_matches_the_ui_route_encoding() -> None:
    # OpenCode's web UI routes a directory as base64url(UTF-8) without padding.
    path = web_ui_path("/home/dév/my ws", "ses_1")
    enc = path.split("/")[1]
    assert "=" not in enc and "+" not in enc and "/" not in enc
    assert base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode() == "/home/dév/my ws"
    assert path.endswith("/session/ses_1")


def test_handoff_redirects_exactly_once(tmp_path: Path) -> None:
    target = f"http://opencode:{PW}@127.0.0.1:3795/x/session/s"
    h = Handoff(target, tmp_path)
    try:
        # The browser gets a private file (0600 in a 0700 folder), holding only a one-time token.
        assert h.url.startswith("file://") and PW not in h.url
        assert stat.S_IMODE(h.page.stat().st_mode) == 0o600
        assert stat.S_IMODE(h.page.parent.stat().st_mode) == 0o700
        assert PW not in h.page.read_text() and h.token in h.page.read_text()
        action, token = handoff_form(h.url)
        assert action == f"http://127.0.0.1:{h.port}/open" and token == h.token
        wrong = httpx.post(action, data={"token": "x" + token}, trust_env=False)
        assert wrong.status_code == 404 and not h.used.is_set()
        assert httpx.get(f"{action}/{token}", trust_env=False).status_code == 404
        first = open_handoff(h.url)
        assert first.status_code == 303 and first.headers["location"] == target
        assert first.headers["cache-control"] == "no-store"
        assert first.headers["referrer-policy"] == "no-referrer"
        assert h.wait(5) and not h.page.exists()  # used: nothing of it stays on disk
        replay = httpx.post(action, data={"token": token}, trust_env=False)
        assert replay.status_code == 404 and PW not in replay.text
        assert h.refused == [] and h.warning is None
    finally:
        h.close()
    assert not h.page.parent.exists()
    # A page left by a killed run is swept by the next hand-off; a recent one is not.
    stale, recent = tmp_path / "open-stale", tmp_path / "open-recent"
    for d in (stale, recent):
        d.mkdir()
        (d / "open.html").write_text("token")
    os.utime(stale, (0, 0))
    Handoff(target, tmp_path).close()
    assert not stale.exists() and recent.exists()


@pytest.mark.allow_log(
    r"core\.launch\.launchers: refused a connection to the one-shot page",
    reason="the foreign peer is the input",
)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/net/tcp")
@pytest.mark.parametrize("owner", [None, 12345])
def test_handoff_refuses_a_peer_of_another_or_unknown_owner(
    tmp_path: Path, owner: int | None
) -> None:
    h = Handoff("http://opencode:pw@127.0.0.1:1/", tmp_path, peer_owner=lambda c, s: owner)
    try:
        action, token = handoff_form(h.url)
        with pytest.raises(httpx.TransportError):
            httpx.post(action, data={"token": token}, trust_env=False)
        assert not h.used.is_set() and len(h.refused) == 1
        assert h.warning and "Another user on this machine tried to open your server" in h.warning
    finally:
        h.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/net/tcp")
@pytest.mark.parametrize(
    ("family", "host"),
    [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::ffff:127.0.0.1")],
    ids=["ipv4", "ipv4-mapped"],
)
def test_socket_owner_finds_our_socket_in_either_table(family: int, host: str) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.socket(family) as client:
            client.connect((host, srv.getsockname()[1]))
            conn, peer = srv.accept()
            with conn:
                assert launchers.socket_owner(peer, srv.getsockname()) == os.getuid()
                # A socket that is not there (or not established) has no owner: refused.
                assert launchers.socket_owner(("127.0.0.1", 1), srv.getsockname()) is None


@pytest.mark.allow_log(
    r"core\.servers\.reconcile: forgetting the server of .*: pid 0 is gone",
    reason="the 'server gone' case records a dead pid on purpose",
)
@pytest.mark.parametrize("how", ["stop", "server gone"])
def test_the_servers_children_die_with_it(tmp_path: Path, how: str) -> None:
    paths = Paths.from_base(tmp_path / "data")
    paths.ensure()
    sm = ServerManager(paths, Settings(), Credentials(MemoryStore(), MemoryStore()))
    # Shaped like one of our supervisors (its flags): only processes we spawned are killed.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(120)",
            "--log",
            "l",
            "--exit-file",
            "e",
            "--cwd",
            "c",
            "--",
            "openwork-server",
        ],
        start_new_session=True,
    )
    reaper = threading.Thread(target=child.wait)
    reaper.start()
    try:
        proc = psutil.Process(child.pid)
        # Its argv as the product will read it (a loaded machine may show the pre-exec one).
        for _ in range(200):
            if "--exit-file" in proc.cmdline():
                break
            time.sleep(0.05)
        ctime = proc.create_time()
        rec = record()
        rec.children = [ChildRecord(kind="openwork", pid=child.pid, create_time=ctime)]
        if how == "stop":
            # stop() ends in terminate; called directly, as the record has no real server.
            assert sm.terminate(rec, grace=3.0) == []
        else:
            # The record's server (pid 0 here) is gone: refresh forgets it and kills the child.
            with sm.registry.transaction() as records:
                records[rec.server_id] = rec
            assert sm.refresh() == []
        reaper.join(timeout=10)
        assert child.poll() is not None
    finally:
        if child.poll() is None:
            child.kill()
        reaper.join(timeout=10)


def test_the_cli_shows_a_refused_attempt_as_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    from types import SimpleNamespace

    from smartspec_desktop import cli

    warning = "Another user on this machine tried to open your server (uid 1001 (eve); …)."
    monkeypatch.setattr(
        cli,
        "open_openwork",
        lambda *a, **k: launchers.LaunchOutcome("Opened OpenCode's web UI.", warning=warning),
    )
    core = SimpleNamespace(servers=None, save_settings=lambda: None)
    out, err = io.StringIO(), io.StringIO()
    args = SimpleNamespace(workspace="/w")
    assert cli.cmd_open_openwork(core, args, out, err) == 0  # type: ignore[arg-type]
    assert out.getvalue() == "Opened OpenCode's web UI.\n"
    assert f"warning: {warning}\n" in err.getvalue()


def test_open_cli_keeps_an_untrusted_folders_tui_plugins_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `opencode attach` loads the folder's own tui.json plugins unless project config is off.
    _argv, kw = run_open_cli()
    assert kw["env"]["OPENCODE_DISABLE_PROJECT_CONFIG"] == "1"

    def trusted_start(self: FakeServers, workspace: str, *, progress: Any = None) -> FakeStart:
        rec = record(workspace)
        rec.trusted = True
        return FakeStart(rec)

    monkeypatch.setattr(FakeServers, "start", trusted_start)
    _argv, kw = run_open_cli()
    assert "OPENCODE_DISABLE_PROJECT_CONFIG" not in kw["env"]
