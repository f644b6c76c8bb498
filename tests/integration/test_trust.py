"""End to end: workspace trust with the real opencode (security review F2).

The workspace carries a project plugin and a local MCP server; each writes a marker file with its
environment when OpenCode starts it. Untrusted, neither runs through a whole `sessions` + `run`;
trusted (`start --trust`), both run on the same triggers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import opencode_config
from tests.conftest import Sandbox, find_test_opencode
from tests.integration.test_cli_servers import password_of

pytestmark = pytest.mark.integration

MCP_SERVER = """\
import json, os, sys
with open(sys.argv[1], "w") as f:
    json.dump(dict(os.environ), f)
# and exit: OpenCode reports the server as failed instead of waiting for its handshake
"""


def project_with_code(box: Sandbox) -> tuple[Path, Path, Path]:
    """A workspace whose plugin and MCP server would each write a marker (their env), opened
    before (OpenCode's plugin kit in its .opencode)."""
    ws = box.workspace("project")
    opencode = find_test_opencode()
    if opencode:
        opencode_config.seed_project(ws, opencode)
    markers = box.root / "markers"
    markers.mkdir(exist_ok=True)
    plugin_marker, mcp_marker = markers / "plugin.json", markers / "mcp.json"
    (ws / ".opencode" / "plugin").mkdir(parents=True, exist_ok=True)
    (ws / ".opencode" / "plugin" / "marker.js").write_text(
        'import { writeFileSync } from "node:fs";\n'
        "export const Marker = async () => {\n"
        f"  writeFileSync({json.dumps(str(plugin_marker))}, JSON.stringify(process.env));\n"
        "  return {};\n"
        "};\n"
    )
    (ws / "mcp_marker.py").write_text(MCP_SERVER)
    (ws / ".opencode" / "agent").mkdir()
    (ws / ".opencode" / "agent" / "spy.md").write_text(
        "---\ndescription: a project agent\nmode: subagent\n---\nYou are the project's agent.\n"
    )
    (ws / "opencode.jsonc").write_text(
        "{\n  // the project's own MCP server\n"
        '  "mcp": {"marker": {"type": "local", "command": '
        + json.dumps([sys.executable, str(ws / "mcp_marker.py"), str(mcp_marker)])
        + "}},\n}\n"
    )
    return ws, plugin_marker, mcp_marker


def wait_for(path: Path, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return True
        time.sleep(0.2)
    return False


def mcp_status(box: Sandbox, info: dict[str, object]) -> dict[str, object]:
    pw = password_of(box, str(info["server_id"]))
    r = httpx.get(f"{info['url']}/mcp", auth=("opencode", pw), timeout=30)
    r.raise_for_status()
    data = r.json()
    assert isinstance(data, dict)
    return data


def first_request(box: Sandbox, ws: Path) -> dict[str, object]:
    """The first request of a workspace with plugins waits while OpenCode loads them (and would
    npm-install its plugin kit into .opencode/, were it not there): make it here, with more
    patience than `sessions`. Returns the server's `status --json` entry."""
    info: dict[str, object] = box.cli_json("status", "--json")[0]
    first = httpx.get(
        f"{info['url']}/session",
        auth=("opencode", password_of(box, str(info["server_id"]))),
        timeout=240,
    )
    assert first.status_code == 200, box.cli("logs", str(ws), "-n", "60").stdout
    return info


def agent_names(box: Sandbox, info: dict[str, object]) -> set[str]:
    pw = password_of(box, str(info["server_id"]))
    r = httpx.get(f"{info['url']}/agent", auth=("opencode", pw), timeout=30)
    r.raise_for_status()
    return {a["name"] for a in r.json()}


@pytest.mark.slow
def test_untrusted_workspace_runs_none_of_its_code(sandbox: Sandbox) -> None:
    ws, plugin_marker, mcp_marker = project_with_code(sandbox)
    r = sandbox.cli("start", str(ws))
    assert r.returncode == 0, r.stderr
    assert "is not trusted" in r.stderr
    assert "plugin .opencode/plugin/marker.js" in r.stderr
    assert "MCP server 'marker'" in r.stderr and "mcp_marker.py" in r.stderr
    assert f"smartspec-desktop trust {ws}" in r.stderr

    status = sandbox.cli("status")
    assert "untrusted" in status.stdout, status.stdout
    assert sandbox.cli("sessions", str(ws)).returncode == 0
    run = sandbox.cli("run", str(ws), "hello")
    assert run.returncode == 0, run.stderr
    info = sandbox.cli_json("status", "--json")[0]
    assert info["trusted"] is False
    assert mcp_status(sandbox, info) == {}, "OpenCode knows no MCP server of the project"
    names = agent_names(sandbox, info)
    assert "build" in names and "spy" not in names, "nor its agents"
    assert not plugin_marker.exists() and not mcp_marker.exists()


@pytest.mark.slow
def test_trusted_workspace_runs_its_plugin_and_mcp_server(sandbox: Sandbox) -> None:
    ws, plugin_marker, mcp_marker = project_with_code(sandbox)
    r = sandbox.cli("start", "--trust", str(ws))
    assert r.returncode == 0, r.stderr
    assert f"Trusted {ws.resolve()}." in r.stderr and "is not trusted" not in r.stderr
    assert "  trusted" in sandbox.cli("status").stdout
    info = first_request(sandbox, ws)
    assert sandbox.cli("sessions", str(ws)).returncode == 0
    assert sandbox.cli("run", str(ws), "hello").returncode == 0
    assert wait_for(plugin_marker), "the trusted plugin ran"
    assert wait_for(mcp_marker), "the trusted MCP server ran"
    assert info["trusted"] is True and "marker" in mcp_status(sandbox, info)
    assert "spy" in agent_names(sandbox, info)
    for marker in (plugin_marker, mcp_marker):
        env = json.loads(marker.read_text())
        assert "OPENCODE_DISABLE_PROJECT_CONFIG" not in env


@pytest.mark.slow
def test_trust_untrust_messages_and_restart_note(sandbox: Sandbox) -> None:
    ws, _plugin_marker, _mcp_marker = project_with_code(sandbox)
    assert sandbox.cli("trust").stdout == "No trusted workspaces.\n"
    bad = sandbox.cli("trust", str(sandbox.root / "nope"))
    assert bad.returncode == 1 and "does not exist" in bad.stderr

    assert sandbox.cli("start", str(ws)).returncode == 0
    t = sandbox.cli("trust", str(ws))
    assert t.returncode == 0 and f"Trusted {ws.resolve()}" in t.stdout
    assert "was started without the folder's own plugins" in t.stderr
    assert "next start" in t.stderr and "Stop it and start it again" in t.stderr
    assert str(ws.resolve()) in sandbox.cli("trust").stdout
    again = sandbox.cli("start", str(ws))
    assert again.returncode == 0 and "next start" in again.stderr, "reused, still untrusted"

    assert sandbox.cli("stop", str(ws)).returncode == 0
    assert sandbox.cli_json("start", str(ws))["trusted"] is True

    u = sandbox.cli("untrust", str(ws))
    assert u.returncode == 0 and f"Revoked trust in {ws.resolve()}" in u.stdout
    assert "was started with the folder's own plugins" in u.stderr
    assert sandbox.cli("untrust", str(ws)).stdout.endswith("was not trusted; nothing changed.\n")
    assert sandbox.cli("stop", str(ws)).returncode == 0


@pytest.mark.slow
def test_trusted_code_does_not_see_the_key(sandbox: Sandbox) -> None:
    ws, plugin_marker, mcp_marker = project_with_code(sandbox)
    assert sandbox.cli("start", "--trust", str(ws)).returncode == 0
    first_request(sandbox, ws)
    # OpenCode starts MCP servers for a prompt: a turn through the gateway broker.
    assert sandbox.cli("run", str(ws), "hello").returncode == 0
    assert wait_for(plugin_marker) and wait_for(mcp_marker)
    for marker in (plugin_marker, mcp_marker):
        env = json.loads(marker.read_text())
        assert "SMARTSPEC_API_KEY" in env or "PATH" in env, "a real environment dump"
        assert sandbox.api_key not in marker.read_text()
