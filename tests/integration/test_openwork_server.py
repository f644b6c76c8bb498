"""Open OpenWork UI against openwork-server as the real one behaves (shared/notes/openwork.md,
"The real openwork-server, measured"), with the stand-in (tests/openwork_standin.py) and the real
opencode: the version gate, the probe through its OpenCode proxy, the port it really bound, the
session deep link, and finding an installed one where OpenWork's own routes put it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smartspec_desktop.core import ports
from smartspec_desktop.core.errors import LaunchError
from smartspec_desktop.core.launch import launchers
from smartspec_desktop.core.launch.launchers import live_children, open_openwork
from smartspec_desktop.core.servers.manager import ServerManager
from tests.conftest import Sandbox
from tests.integration.test_launchers import manager, standin_binary

pytestmark = pytest.mark.integration


@pytest.fixture
def sm_stop() -> Iterator[list[ServerManager]]:
    managers: list[ServerManager] = []
    yield managers
    for sm in managers:
        sm.stop_all()


def setup(box: Sandbox, tmp_path: Path, stop: list[ServerManager]) -> tuple[ServerManager, Path]:
    binary = standin_binary(tmp_path)
    sm = manager(box, openwork_server_path=str(binary))
    stop.append(sm)
    return sm, box.workspace()


def test_each_openwork_server_failure_is_an_error_with_its_fix(
    sandbox: Sandbox, sm_stop: list[ServerManager], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A too old openwork-server, a wrong OpenCode password, a wrong OpenCode URL: in turn, on
    one OpenCode server (a start is ~4 CPU-s), which each failure leaves untouched."""
    sm, ws = setup(sandbox, tmp_path, sm_stop)

    def refused() -> LaunchError:
        with pytest.raises(LaunchError) as e:
            open_openwork(sm, str(ws), opener=lambda _u: pytest.fail("nothing to open"))
        rec = sm.get(str(ws))
        assert rec is not None and rec.status == "running"
        assert rec.children == [], "the failed one is killed, not recorded"
        return e.value

    # openwork.md: 0.18.0–0.18.49 ignore `web`: /health is 200, then `/` is a JSON 404.
    with monkeypatch.context() as m:
        m.setitem(sandbox.env, "OPENWORK_STANDIN_VERSION", "0.18.13")
        old = refused()
    assert "openwork-server 0.18.13" in old.problem and "too old" in old.problem
    assert "0.18.50 or newer" in old.problem
    assert "OpenWork desktop app" in old.fix and "openwork-orchestrator" in old.fix

    # What openwork-server is given as OpenCode's password (nothing checks it at its start).
    real = sm.password
    with monkeypatch.context() as m:
        m.setattr(sm, "password", lambda rec: "not-the-password")
        wrong_password = refused()
    assert "refused the password" in wrong_password.problem
    assert "(401)" in wrong_password.problem and "start it again" in wrong_password.fix
    rec = sm.get(str(ws))
    assert rec is not None and real(rec)  # the server itself is untouched

    dead = ports.os_assigned_port()
    original = launchers.openwork_command

    def command(binary: str, rec: object, port: int) -> list[str]:
        argv = original(binary, rec, port)  # type: ignore[arg-type]
        i = argv.index("--opencode-base-url")
        argv[i + 1] = f"http://127.0.0.1:{dead}"
        return argv

    with monkeypatch.context() as m:
        m.setattr(launchers, "openwork_command", command)
        wrong_url = refused()
    assert "cannot reach the workspace's OpenCode server" in wrong_url.problem
    assert "502" in wrong_url.problem and "start it again" in wrong_url.fix


def test_it_uses_the_port_openwork_server_really_bound_when_the_asked_one_is_taken(
    sandbox: Sandbox, sm_stop: list[ServerManager], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, ws = setup(sandbox, tmp_path, sm_stop)
    squatter = socket.socket()
    squatter.bind((ports.HOST, 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    monkeypatch.setattr(ports, "os_assigned_port", lambda: taken)
    opened: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        page = httpx.get(url, trust_env=False)
        assert page.status_code == 200 and "openwork-standin" in page.text
        return True

    try:
        outcome = open_openwork(sm, str(ws), opener=opener)
    finally:
        squatter.close()
    rec = sm.get(str(ws))
    assert rec is not None
    (child,) = live_children(rec, "openwork")
    assert child.port != taken and child.url == f"http://127.0.0.1:{child.port}"
    assert opened == [child.url + "/"] and outcome.url == child.url
    assert f"listening on http://127.0.0.1:{child.port}" in Path(child.log_path).read_text()


def test_the_selected_session_is_deep_linked_on_start_and_on_reuse(
    sandbox: Sandbox, sm_stop: list[ServerManager], tmp_path: Path
) -> None:
    sm, ws = setup(sandbox, tmp_path, sm_stop)
    opened: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        assert httpx.get(url, trust_env=False).status_code == 200
        return True

    first = open_openwork(sm, str(ws), opener=opener, session_id="ses_abc")
    rec = sm.get(str(ws))
    assert rec is not None
    (child,) = live_children(rec, "openwork")
    assert child.workspace_id == "ws_1"  # the stand-in's /workspaces id
    link = f"{child.url}/workspace/ws_1/session/ses_abc"
    assert opened == [link] and first.url == link and "session ses_abc" in first.message
    again = open_openwork(sm, str(ws), opener=opener, session_id="ses_def")
    assert opened[-1] == f"{child.url}/workspace/ws_1/session/ses_def" == again.url
    plain = open_openwork(sm, str(ws), opener=opener)
    assert opened[-1] == child.url + "/" and plain.url == child.url


def test_an_installed_openwork_server_is_found_where_openworks_routes_put_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The CLI finds and runs the one OpenWork's orchestrator downloaded into its sidecar cache
    on its first run (every other place it searches: tests/unit/test_openwork_discovery.py)."""
    where = ".openwork/openwork-orchestrator/sidecars/0.18.50/openwork-server"
    home = Path(sandbox.env["HOME"])
    target = home / where
    target.parent.mkdir(parents=True)
    target.write_bytes(standin_binary(tmp_path).read_bytes())
    target.chmod(0o755)
    browser = tmp_path / "browser"
    seen = tmp_path / "browser-urls"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {seen}\n')
    browser.chmod(0o755)
    ws = sandbox.workspace()
    r = sandbox.cli("open-openwork", str(ws), env=dict(sandbox.env, BROWSER=str(browser)))
    try:
        assert r.returncode == 0, r.stderr
        assert "Opened OpenWork for" in r.stdout
        (public,) = sandbox.cli_json("status")
        (child,) = public["children"]
        assert seen.read_text().split() == [child["url"] + "/"]
    finally:
        sandbox.cli("stop", "--all")
