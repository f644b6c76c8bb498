"""``--demo``: the CLI against the local demo gateway with the real OpenCode (start, then run in
another process: the detached gateway is shared, and stops once nothing uses it), and the user's
real settings, key and servers are left exactly as they were."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from smartspec_desktop.demo.mode import DEMO_LABEL, GATEWAY_FLAG, read_gateway
from tests.conftest import Sandbox

pytestmark = pytest.mark.integration


def gateways(root: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if GATEWAY_FLAG in cmd and any(str(root) in c for c in cmd):
            out.append(p)
    return out


@pytest.mark.slow
def test_demo_start_and_run_write_hello_txt_and_leave_the_real_setup_alone(
    sandbox: Sandbox,
) -> None:
    settings = sandbox.data_dir / "config" / "settings.json"
    before = settings.read_bytes()
    ws = sandbox.workspace()

    r = sandbox.cli("--demo", "start", str(ws), "--json")
    assert r.returncode == 0, r.stderr
    assert DEMO_LABEL in r.stderr
    info = json.loads(r.stdout)
    gateway = read_gateway(sandbox.data_dir / "state" / "demo")
    assert gateway is not None and gateway.alive()
    assert gateway.url.startswith("http://127.0.0.1:")
    lo, hi = sandbox.ports
    assert lo <= info["port"] <= hi  # the demo copies the real settings (the port range too)

    # The user's own (real) backend never hears of the demo.
    assert not any("/v1/opencode/models" in q.path for q in sandbox.backend.requests)

    r = sandbox.cli("--demo", "run", str(ws), "Please write a file")
    assert r.returncode == 0, r.stderr
    assert (ws / "hello.txt").read_text() == "Hello from the SmartSpec Desktop demo!\n"
    assert "tool write: completed" in r.stderr
    assert read_gateway(sandbox.data_dir / "state" / "demo") == gateway  # the same gateway

    # Real settings, real server list, real backend: untouched.
    assert settings.read_bytes() == before
    assert sandbox.cli_json("status") == []
    assert not sandbox.backend.chat_requests()
    demo_settings = json.loads((sandbox.data_dir / "config" / "demo" / "settings.json").read_text())
    assert demo_settings["backend_url"] == gateway.url
    assert json.loads(before).get("backend_url", "") != gateway.url

    # The demo key is this run's only: it is in no file of the data dir.
    for path in sandbox.data_dir.rglob("*"):
        if path.is_file():
            assert "sk-smartspec-" not in path.read_text(errors="replace"), path

    # Stopping the last demo server lets the gateway go by itself (no orphan).
    r = sandbox.cli("--demo", "stop", str(ws))
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while gateways(sandbox.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not gateways(sandbox.root)


def test_plain_stop_all_also_stops_the_demo(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    r = sandbox.cli("--demo", "start", str(ws))
    assert r.returncode == 0, r.stderr
    assert gateways(sandbox.root)
    r = sandbox.cli("stop", "--all")
    assert r.returncode == 0, r.stderr
    assert "Stopped 1 demo server(s) and the demo backend." in r.stdout
    assert not gateways(sandbox.root)


def test_demo_open_openwork_opens_opencodes_web_ui_on_the_demo_server(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Open OpenWork UI (OpenCode's web UI path) from the CLI works against the demo gateway: the
    browser gets the hand-off page, and its redirect signs it in to the demo server."""
    import sys

    import httpx

    sandbox.write_settings(openwork_mode="web")
    ws = sandbox.workspace()
    seen = tmp_path / "redirect"
    browser = tmp_path / "browser"
    browser.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from tests.handoff_browser import open_handoff\n"
        "r = open_handoff(sys.argv[1])\n"
        f"open({str(seen)!r}, 'w').write(r.headers.get('location', ''))\n"
    )
    browser.chmod(0o755)
    r = sandbox.cli("--demo", "open-openwork", str(ws), env=dict(sandbox.env, BROWSER=str(browser)))
    assert r.returncode == 0, r.stderr
    assert DEMO_LABEL in r.stderr
    location = seen.read_text()
    assert location.startswith("http://opencode:") and "@127.0.0.1:" in location
    page = httpx.get(location, timeout=15, trust_env=False)
    assert page.status_code == 200 and "<html" in page.text.lower()
    r = sandbox.cli("--demo", "stop", "--all")
    assert r.returncode == 0 and "demo backend" in r.stdout, r.stdout + r.stderr
