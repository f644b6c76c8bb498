"""Open OpenCode CLI and Open OpenWork UI, for real: xterm under Xvfb, headless Chromium, the
real opencode, and a stand-in only for openwork-server (which cannot be installed here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from smartspec_desktop.core.errors import LaunchError
from smartspec_desktop.core.launch.launchers import (
    OPENWORK_NOTICE,
    live_children,
    open_openwork,
)
from smartspec_desktop.core.opencode.client import OpenCodeClient
from smartspec_desktop.core.process.procs import kill_tree
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials, FileStore
from tests.conftest import ROOT, START_TIMEOUT_S, Sandbox
from tests.handoff_browser import handoff_form, open_handoff

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def manager(box: Sandbox, **settings: object) -> ServerManager:
    """The core in this process, over the sandbox's data dir and environment."""
    paths = Paths.from_base(box.data_dir)
    paths.ensure()
    # No keyring, like the sandbox's CLI runs: passwords in the same 0600 files they read.
    files = FileStore(paths.state_dir / "secrets")
    creds = Credentials(files, files, environ=box.env)
    conf = Settings(
        backend_url=box.backend.url,
        port_range_start=box.ports[0],
        port_range_end=box.ports[1],
        **{"start_timeout": START_TIMEOUT_S, **settings},  # type: ignore[arg-type]
    )
    return ServerManager(paths, conf, creds, environ=box.env)


@pytest.fixture
def sm_stop() -> Iterator[list[ServerManager]]:
    managers: list[ServerManager] = []
    yield managers
    for sm in managers:
        sm.stop_all()


def visible_text(html: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def chromium_dom(url: str, profile: Path) -> str:
    assert CHROMIUM, "Debian's chromium is needed (apt-get install chromium)"
    r = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


# ---------------------------------------------------------------------------- OpenWork, path 2


def test_open_openwork_falls_back_to_opencode_web_ui_signed_in(
    sandbox: Sandbox, sm_stop: list[ServerManager], tmp_path: Path
) -> None:
    ws = sandbox.workspace("web ui")
    sm = manager(sandbox)
    sm_stop.append(sm)
    rec = sm.start(str(ws)).record
    password = sm.password(rec)
    with OpenCodeClient(rec.url, password) as c:
        c.create_session("launcher test session")
    opened: list[str] = []
    doms: list[str] = []

    def chromium_opener(url: str) -> bool:
        opened.append(url)
        doms.append(chromium_dom(url, tmp_path / "chromium-profile"))
        return True

    outcome = open_openwork(sm, str(ws), opener=chromium_opener)
    # Only a private page (0600, in a 0700 folder) was on the browser's command line, and it is
    # gone: it held a one-time token, never the password.
    assert len(opened) == 1 and password not in opened[0]
    assert re.fullmatch(r"file:///.+/open-[\w]+/open\.html", opened[0]), opened[0]
    assert not Path(opened[0][len("file://") :]).exists()
    assert outcome.warning is None
    text = visible_text(doms[0])
    assert "launcher test session" in text, text[:2000]
    assert "Something went wrong" not in text
    assert outcome.notice == OPENWORK_NOTICE
    assert outcome.url and outcome.url.startswith(rec.url) and password not in outcome.url
    assert password not in outcome.message

    # Second time: no notice; the link is one-shot (a replay gets 404, not the credentials).
    def http_opener(url: str) -> bool:
        assert password not in Path(url[len("file://") :]).read_text()
        action, token = handoff_form(url)
        first = open_handoff(url)
        assert first.status_code == 303
        assert first.headers["location"].startswith(f"http://opencode:{password}@127.0.0.1:")
        assert not Path(url[len("file://") :]).exists()  # used: deleted
        again = httpx.post(action, data={"token": token}, trust_env=False)
        assert again.status_code == 404 and password not in again.text
        return True

    assert open_openwork(sm, str(ws), opener=http_opener).notice is None

    # No browser at all: said so, with the fix (same server, to keep the test short).
    with pytest.raises(LaunchError) as e:
        open_openwork(sm, str(ws), opener=lambda _url: False)
    assert "No web browser" in e.value.problem and "BROWSER" in e.value.fix


def test_openwork_mode_requires_openwork_server(sandbox: Sandbox) -> None:
    # Nothing is started: the setting is checked before the server.
    r = sandbox.cli(
        "open-openwork", str(sandbox.workspace()), env=with_settings(sandbox, "openwork")
    )
    assert r.returncode == 1
    assert "openwork-server is not installed" in r.stderr
    assert "npm install -g openwork-server" not in r.stderr, "npm answers 404 for it here"
    assert "OpenWork desktop app" in r.stderr and "openwork-orchestrator" in r.stderr
    assert not sandbox.state().get("servers")


def with_settings(box: Sandbox, mode: str) -> dict[str, str]:
    box.write_settings(openwork_mode=mode)
    return box.env


# ---------------------------------------------------------------------------- OpenWork, path 1


def standin_binary(folder: Path) -> Path:
    path = folder / "openwork-server"
    path.write_text(
        f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "openwork_standin.py"} "$@"\n'
    )
    path.chmod(0o755)
    return path


@pytest.mark.allow_log(
    r"core\.process\.procs: killing 2 process\(es\) that ignored SIGTERM",
    reason="the test suspends openwork-server (SIGSTOP): it and its supervisor outlive SIGTERM",
)
def test_open_openwork_runs_openwork_server_as_a_child_of_the_server(
    sandbox: Sandbox, sm_stop: list[ServerManager], tmp_path: Path
) -> None:
    ws = sandbox.workspace()
    binary = standin_binary(tmp_path)
    report = tmp_path / "standin-report.jsonl"
    sandbox.env["OPENWORK_STANDIN_REPORT"] = str(report)
    sm = manager(sandbox, openwork_server_path=str(binary))
    sm_stop.append(sm)
    sandbox.write_settings(openwork_server_path=str(binary))  # the same, for CLI runs
    opened: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        page = httpx.get(url, trust_env=False)
        assert page.status_code == 200 and "openwork-standin" in page.text
        assert str(ws) in page.text
        return True

    outcome = open_openwork(sm, str(ws), opener=opener)
    rec = sm.get(str(ws))
    assert rec is not None
    password = sm.password(rec)
    (child,) = live_children(rec, "openwork")
    port = child.port
    assert opened == [f"http://127.0.0.1:{port}/"] and outcome.url == f"http://127.0.0.1:{port}"
    assert outcome.notice is None

    got = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(got) == 1
    assert got[0]["argv"] == [
        "web",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workspace",
        str(ws),
        "--opencode-base-url",
        rec.url,
        "--opencode-directory",
        str(ws),
        "--opencode-username",
        "opencode",
    ]
    env = got[0]["env"]
    assert env["OPENWORK_OPENCODE_PASSWORD"] == password
    assert env["OPENWORK_OPENCODE_BIN"] == rec.opencode_path
    assert env["OPENWORK_NO_UPDATE_CHECK"] == "1"
    assert len(env["OPENWORK_TOKEN"]) >= 24 and len(env["OPENWORK_HOST_TOKEN"]) >= 24
    assert env["OPENWORK_TOKEN"] != env["OPENWORK_HOST_TOKEN"]
    assert got[0]["cwd"] == str(ws) and got[0]["opencode_health"] == 200
    for proc in (psutil.Process(child.pid), psutil.Process(child.supervisor_pid)):
        assert password not in " ".join(proc.cmdline())

    # Reused while alive: same process, no second start.
    again = open_openwork(sm, str(ws), opener=opener)
    assert again.url == outcome.url and len(report.read_text().splitlines()) == 1

    # The CLI command, with the default opener (webbrowser honours $BROWSER).
    browser = tmp_path / "browser"
    seen = tmp_path / "browser-urls"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {seen}\n')
    browser.chmod(0o755)
    r = sandbox.cli("open-openwork", str(ws), env=dict(sandbox.env, BROWSER=str(browser)))
    assert r.returncode == 0, r.stderr
    assert f"Opened OpenWork for {ws} at http://127.0.0.1:{port}/" in r.stdout
    assert seen.read_text().split() == [f"http://127.0.0.1:{port}/"]
    assert len(report.read_text().splitlines()) == 1

    # Shown in status, its (redacted) output in a log the log view and `logs --openwork` read.
    status = sandbox.cli("status")
    assert f"openwork http://127.0.0.1:{port} (pid {child.pid})" in status.stdout
    (public,) = sandbox.cli_json("status")
    assert public["children"][0]["url"] == f"http://127.0.0.1:{port}"
    log_text = Path(child.log_path).read_text()
    assert "client token: ***" in log_text and env["OPENWORK_TOKEN"] not in log_text
    logs = sandbox.cli("logs", str(ws), "--openwork")
    assert logs.returncode == 0 and "openwork-standin listening" in logs.stdout

    # One that stopped answering is replaced (and the old one killed), not left running.
    hung = psutil.Process(child.pid)
    hung.suspend()
    replaced = open_openwork(sm, str(ws), opener=lambda url: True)
    assert not hung.is_running() or hung.status() == psutil.STATUS_ZOMBIE
    rec = sm.get(str(ws))
    assert rec is not None
    (child,) = live_children(rec, "openwork")
    assert replaced.url == child.url and child.pid != hung.pid
    assert len(report.read_text().splitlines()) == 2

    # Stopping the session stops it too.
    procs = [psutil.Process(child.pid), psutil.Process(child.supervisor_pid)]
    sm.stop(str(ws))
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive


def test_openwork_server_that_fails_is_reported_and_cleaned_up(
    sandbox: Sandbox, sm_stop: list[ServerManager], tmp_path: Path
) -> None:
    binary = tmp_path / "openwork-server"
    binary.write_text("#!/bin/sh\necho 'Error: unsupported engine version' >&2\nexit 3\n")
    binary.chmod(0o755)
    sm = manager(sandbox, openwork_server_path=str(binary))
    sm_stop.append(sm)
    ws = sandbox.workspace()
    with pytest.raises(LaunchError) as e:
        open_openwork(sm, str(ws), opener=lambda _u: pytest.fail("nothing to open"))
    assert "unsupported engine version" in e.value.problem
    assert "Settings → OpenWork mode" in e.value.fix
    rec = sm.get(str(ws))
    assert rec is not None and rec.children == []


# ------------------------------------------------------------------------------- Open CLI


def attach_processes(ws: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "attach" in cmd and str(ws) in cmd and any("opencode" in c for c in cmd[:1]):
            found.append(p)
    return found


@pytest.mark.skipif(not shutil.which("xterm"), reason="Debian's xterm is needed")
def test_open_cli_in_xterm_connects_the_tui_with_the_password_in_env_only(
    sandbox: Sandbox,
) -> None:
    assert os.environ.get("DISPLAY"), "run through tests/run-tests (it provides Xvfb)"
    ws = sandbox.workspace()
    sandbox.write_settings(terminal="xterm")
    env = dict(sandbox.env, DISPLAY=os.environ["DISPLAY"])
    r = sandbox.cli("open-cli", str(ws), env=env)
    assert r.returncode == 0, r.stderr
    assert "Opened OpenCode CLI" in r.stdout and "xterm" in r.stdout
    info = sandbox.cli_json("status")[0]
    port = info["port"]
    pw = (
        sandbox.data_dir / "state" / "secrets" / f"server-password_{info['server_id']}"
    ).read_text()
    deadline = time.monotonic() + 60
    attach: psutil.Process | None = None
    connected = False
    try:
        while time.monotonic() < deadline and not connected:
            procs = attach_processes(ws)
            attach = procs[0] if procs else None
            if attach is not None:
                conns = attach.net_connections(kind="tcp")
                connected = any(
                    c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                    for c in conns
                )
            time.sleep(0.2)
        assert attach is not None, "no `opencode attach` process appeared"
        assert connected, "the TUI never connected to the workspace's server"
        parent = attach.parent()
        assert parent is not None and parent.name() == "xterm"
        # The password is in the TUI's environment, in nobody's argv, and it is the right one.
        assert attach.environ().get("OPENCODE_SERVER_PASSWORD") == pw
        assert "SMARTSPEC_API_KEY" not in attach.environ()
        for p in (parent, attach):
            assert pw not in " ".join(p.cmdline())
        # The server saw the TUI subscribe to its event stream (only after a 200 with our
        # password; with a wrong one attach exits on a 401) and open the workspace.
        log = Path(info["log_path"])
        while time.monotonic() < deadline and "global event connected" not in log.read_text():
            time.sleep(0.2)
        text = log.read_text()
        assert "global event connected" in text
        assert f'message="creating instance" directory={ws}' in text
        assert attach.is_running()
    finally:
        for p in psutil.process_iter(["name", "cwd"]):
            if p.info["name"] == "xterm" and p.info["cwd"] == str(ws):
                kill_tree(p, grace=3.0)
