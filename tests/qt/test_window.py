"""The real window driven with pytest-qt: Dev Mode, Account, Settings, quitting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from filelock import FileLock, Timeout
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from smartspec_desktop.core.storage.secrets import MemoryStore
from tests.backend_standin import Text
from tests.conftest import START_MS, seed_version_cache, server_processes
from tests.qt.conftest import Gui, Heartbeat

pytestmark = [pytest.mark.gui, pytest.mark.integration]


def status_text(gui: Gui) -> str:
    return gui.window.devmode.status_label.text()


@pytest.mark.slow
def test_start_a_task_and_stop_from_the_window_never_freeze_it(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    """Start, a task from the Agent tab (the balance refreshed once after it), Stop: one
    server for the window's whole main path."""
    gui.account.sign_in(gui.box.email, "correct horse")
    qtbot.waitUntil(lambda: "10,000 credits" in gui.window.account_chip.text(), timeout=5000)
    panel = gui.window.devmode
    agent = panel.agent_panel
    assert agent is not None
    ws = gui.box.workspace("alpha")
    assert panel.add_workspace(str(ws))
    assert panel.current == str(ws.resolve())
    assert panel.start_button.isEnabled() and not panel.stop_button.isEnabled()
    assert not agent.send_btn.isEnabled()  # no server yet
    settings_file = gui.core.paths.settings_file
    # Saved off the GUI thread (the file holds the sandbox's port range from the start).
    qtbot.waitUntil(
        lambda: "recent_workspaces" in json.loads(settings_file.read_text()), timeout=3000
    )
    assert json.loads(settings_file.read_text())["recent_workspaces"] == [str(ws.resolve())]

    with Heartbeat() as beat:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: panel.spinner.isVisible(), timeout=2000)
        qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    start_gap = beat.max_gap
    rec = gui.servers.record_for(str(ws.resolve()))
    assert rec is not None and rec.port
    assert panel.port_label.text() == f"Port {rec.port}"
    assert panel.url_label.text() == f"http://127.0.0.1:{rec.port}"
    assert f":{rec.port}" in panel.list.currentItem().text()
    assert len(server_processes(ws)) == 1
    qtbot.waitUntil(lambda: "listening" in panel.log_view.text(), timeout=10_000)
    assert gui.box.api_key not in panel.log_view.text()
    qtbot.mouseClick(panel.copy_button, Qt.MouseButton.LeftButton)
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == rec.url
    gui.screenshot("window-running")

    gui.box.backend.default_step = Text("Done.", prompt_tokens=2000, completion_tokens=1000)
    panel.tabs.setCurrentWidget(agent)
    agent.prompt.setPlainText("say done")
    balance_calls = len([r for r in gui.box.backend.requests if r.path == "/api/credits/balance"])
    with qtbot.waitSignal(agent.task_finished, timeout=START_MS) as done:
        qtbot.mouseClick(agent.send_btn, Qt.MouseButton.LeftButton)
    assert done.args[0] is True
    assert "Task finished" in gui.window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: "10,000 credits" not in gui.window.account_chip.text(), timeout=5000)
    after = [r for r in gui.box.backend.requests if r.path == "/api/credits/balance"]
    assert len(after) == balance_calls + 1

    with Heartbeat() as beat:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: status_text(gui) == "Stopped", timeout=20_000)
    stop_gap = beat.max_gap
    print(
        f"\nlongest event-loop gap: start {start_gap * 1000:.0f} ms, stop {stop_gap * 1000:.0f} ms"
    )
    # Never frozen: a bound load cannot reach (the benchmark measures the real gaps, ~20 ms).
    assert start_gap < 3.0 and stop_gap < 3.0
    assert server_processes(ws) == []
    assert not panel.stop_button.isEnabled() and panel.start_button.isEnabled()


def test_a_crash_shows_the_banner_and_restart_works(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws = gui.box.workspace("crashy")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    rec = gui.servers.record_for(str(ws.resolve()))
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: status_text(gui) == "Crashed", timeout=3000)
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=1000)
    assert "crashed (exit code" in panel.banner.text.text()
    assert panel.banner.action.text() == "Restart"
    assert panel.start_button.text() == "Restart Dev Server"
    qtbot.mouseClick(panel.banner.action, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    assert not panel.banner.isVisible(), (panel.banner.kind, panel.banner.text.text())
    assert len(server_processes(ws)) == 1


def test_a_rejected_key_points_to_account(gui: Gui, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    monkeypatch.setenv("SMARTSPEC_API_KEY", "sk-smartspec-" + "x" * 43)  # well-formed, unknown
    ws = gui.box.workspace("badkey")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert status_text(gui) == "Starting…"
    qtbot.waitUntil(lambda: status_text(gui) == "Stopped", timeout=20_000)
    assert panel.banner.isVisible() and "rejected" in panel.banner.text.text().lower()
    assert panel.banner.action.text() == "Open Account"
    assert status_text(gui) == "Stopped" and server_processes(ws) == []
    qtbot.mouseClick(panel.banner.action, Qt.MouseButton.LeftButton)
    assert gui.window.tabs.currentWidget() is gui.window.account_page


def test_a_missing_workspace_is_refused_with_a_message(gui: Gui) -> None:
    panel = gui.window.devmode
    assert not panel.add_workspace(str(gui.box.root / "nope"))
    assert panel.banner.isVisible() and "does not exist" in panel.banner.text.text()
    assert panel.list.count() == 0


def test_account_sign_in_balance_and_keys(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = gui.window.account_page
    gui.window.tabs.setCurrentWidget(page)
    qtbot.waitUntil(lambda: "from SMARTSPEC_API_KEY" in page.key_label.text(), timeout=5000)
    page.email.setText(gui.box.email)
    page.password.setText("wrong")
    qtbot.mouseClick(page.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=5000)
    assert "Incorrect email or password" in page.banner.text.text()

    page.password.setText("correct horse")
    qtbot.mouseClick(page.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "credits" in page.balance_label.text(), timeout=5000)
    assert page.balance_label.text().startswith("10,000 credits")
    assert gui.box.email in gui.window.account_chip.text()
    qtbot.waitUntil(lambda: page.keys_table.rowCount() == 1, timeout=5000)

    qtbot.mouseClick(page.create_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.keys_table.rowCount() == 2, timeout=5000)
    assert "from keyring" in page.key_label.text()
    stored = gui.core.credentials.store.get("api-key")
    assert stored and stored.startswith("sk-smartspec-") and stored not in page.key_label.text()

    page.key_input.setText("not-a-key")
    qtbot.mouseClick(page.use_key_button, Qt.MouseButton.LeftButton)
    assert "not a SmartSpecPro API key" in page.banner.text.text()
    page.key_input.setText("sk-smartspec-" + "y" * 43)
    qtbot.mouseClick(page.use_key_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "rejected" in page.banner.text.text().lower(), timeout=5000)


def test_settings_are_validated_and_saved(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    page = gui.window.settings_page
    page.backend_url.setText("localhost:8000")
    assert not page.apply()
    assert "not an http(s) URL" in page.banner.text.text()
    assert gui.core.settings.backend_url == gui.box.backend.url
    page.port_start.setValue(3900)
    page.port_end.setValue(3800)
    page.backend_url.setText(gui.box.backend.url)
    assert not page.apply()
    page.port_end.setValue(3905)
    page.stop_on_quit.setChecked(False)
    page.ask_permissions.setChecked(True)
    assert page.apply()
    settings_file = gui.core.paths.settings_file
    qtbot.waitUntil(
        lambda: (
            settings_file.exists()
            and json.loads(settings_file.read_text()).get("port_range_start") == 3900
        ),
        timeout=3000,
    )
    assert gui.core.settings.stop_servers_on_quit is False
    assert gui.core.settings.agent_permissions == "ask"


def test_quitting_stops_the_servers_the_window_started(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws = gui.box.workspace("quit")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    other = gui.box.workspace("cli-owned")
    gui.box.cli_json("start", str(other))
    with qtbot.waitSignal(gui.window.quit_ready, timeout=15_000):
        gui.window.close()
    assert server_processes(ws) == []
    assert len(server_processes(other)) == 1  # not ours: left running


def test_second_launch_raises_the_first(gui: Gui, tmp_path, opencode_bin, opencode_version) -> None:  # type: ignore[no-untyped-def]
    """Two real app processes on one data folder: the second one hands over and exits."""
    data = tmp_path / "single"
    # As after an earlier run: the first launch's readiness check finds OpenCode's version
    # known, instead of asking `opencode --version` (~1 CPU-s, which quitting waits for).
    seed_version_cache(data, opencode_bin, opencode_version)
    env = dict(gui.box.env, QT_QPA_PLATFORM="offscreen")
    cmd = [
        sys.executable,
        "-m",
        "smartspec_desktop",
        "--data-dir",
        str(data),
        "--backend-url",
        gui.box.backend.url,
    ]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lock = FileLock(str(data / "state" / "window.lock"), timeout=0)
        deadline = time.monotonic() + 30
        while True:  # until the first window holds the instance lock
            assert first.poll() is None and time.monotonic() < deadline
            try:
                lock.acquire()
                lock.release()
                time.sleep(0.1)
            except (Timeout, FileNotFoundError):
                break
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "already running" in r.stdout
        assert first.poll() is None  # the first one is still there
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.communicate(timeout=90)  # ~0.2 s; a bound no load reaches
        except subprocess.TimeoutExpired:
            first.kill()
            first.communicate()
            raise
    assert first.returncode == 0
    assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"


# npm reads the lowercase name; the capitalised one ruff suggests is not the same variable.
REAL_NPM_CACHE = os.environ.get("npm_config_cache") or os.path.expanduser("~/.npm")  # noqa: SIM112


@pytest.mark.slow
def test_missing_opencode_is_installed_from_the_banner(gui: Gui, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No opencode anywhere → the banner offers Install; a real `npm install` (offline, from the
    tests' npm cache scripts/setup-tests filled) puts the pinned OpenCode in the app's data dir;
    Start works."""
    assert os.path.isdir(os.path.join(REAL_NPM_CACHE, "_cacache")), (
        f"no npm cache at {REAL_NPM_CACHE}: run `bash scripts/setup-tests` first"
    )
    bare_path = os.pathsep.join(
        d
        for d in os.environ["PATH"].split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, "opencode"))
    )
    monkeypatch.setenv("PATH", bare_path)
    monkeypatch.setenv("npm_config_cache", REAL_NPM_CACHE)
    monkeypatch.setenv("npm_config_offline", "true")
    panel = gui.window.devmode
    ws = gui.box.workspace("fresh")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.banner.action.text() == "Install OpenCode", timeout=20_000)
    assert "OpenCode is not installed" in panel.banner.text.text()
    assert status_text(gui) == "Stopped"
    lines: list[str] = []
    gui.servers.install_progress.connect(lines.append)
    with qtbot.waitSignal(gui.servers.installed, timeout=120_000) as blocker:
        qtbot.mouseClick(panel.banner.action, Qt.MouseButton.LeftButton)
    assert blocker.args[0].startswith(str(gui.core.paths.managed_opencode_dir))
    assert any("opencode-ai@1.18.33" in ln for ln in lines)
    assert not panel.banner.isVisible()
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    rec = gui.servers.record_for(str(ws.resolve()))
    assert rec is not None and rec.opencode_path.startswith(
        str(gui.core.paths.managed_opencode_dir)
    )


def test_quit_can_leave_servers_running_for_the_next_launch(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    gui.core.settings.stop_servers_on_quit = False
    panel = gui.window.devmode
    ws = gui.box.workspace("keep")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    with qtbot.waitSignal(gui.window.quit_ready, timeout=5000):
        gui.window.close()
    assert len(server_processes(ws)) == 1
    # The next launch (the CLI here, another process) adopts it: running, same port.
    status = gui.box.cli_json("status")
    assert [(s["workspace_path"], s["status"]) for s in status] == [(str(ws.resolve()), "running")]


class NoKeyring(MemoryStore):
    def available(self) -> bool:
        return False


def test_without_a_keyring_a_key_can_be_used_for_this_run(gui: Gui, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gui.core.credentials.store = NoKeyring()
    asked: list[str] = []

    def answer_yes(_parent: object, _title: str, text: str, *a: object) -> object:
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer_yes)
    monkeypatch.delenv("SMARTSPEC_API_KEY")
    page = gui.window.account_page
    fresh = gui.box.backend.issue_api_key(gui.box.email, name="pasted")
    page.key_input.setText(fresh)
    qtbot.mouseClick(page.use_key_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "from this run" in page.key_label.text(), timeout=5000)
    assert asked and "No OS keyring" in asked[0]
    assert fresh not in page.key_label.text()
    assert gui.core.credentials.api_key() == (fresh, "this run")


def test_open_openwork_ui_starts_the_server_and_signs_the_browser_in(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws = gui.box.workspace("web")
    panel.add_workspace(str(ws))
    assert panel.openwork_button.isEnabled()
    qtbot.mouseClick(panel.openwork_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(gui.browser.responses), timeout=START_MS)
    rec = gui.servers.record_for(str(ws.resolve()))
    assert rec is not None and rec.status == "running"  # started on the way
    password = gui.core.servers.password(rec)
    (url,), (resp,) = gui.browser.urls, gui.browser.responses
    assert url.startswith("file://") and password not in url
    assert resp.status_code == 303
    assert resp.headers["location"].startswith(f"http://opencode:{password}@127.0.0.1:{rec.port}/")
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=5000)  # once: how to get OpenWork
    assert "OpenWork desktop app" in panel.banner.text.text()
    assert "npm install -g openwork-server" not in panel.banner.text.text()
    assert panel.progress_label.text().startswith("Opened OpenCode's web UI for ")


def test_open_cli_without_a_terminal_points_to_settings(gui: Gui, qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    opencode_dir = os.path.dirname(shutil.which("opencode") or "")
    monkeypatch.setenv("PATH", opencode_dir)  # opencode, and no terminal program at all
    monkeypatch.delenv("TERMINAL", raising=False)
    panel = gui.window.devmode
    ws = gui.box.workspace("tui")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.cli_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.banner.action.isVisible(), timeout=START_MS)
    assert panel.banner.action.text() == "Open Settings"
    assert "Terminal" in panel.banner.text.text()
    qtbot.mouseClick(panel.banner.action, Qt.MouseButton.LeftButton)
    assert gui.window.tabs.currentWidget() is gui.window.settings_page


def test_a_server_started_from_the_cli_appears_and_takes_budgets_and_keys(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    ws = gui.box.workspace("from-cli")
    info = gui.box.cli_json("start", str(ws))
    panel = gui.window.devmode
    qtbot.waitUntil(lambda: panel.list.count() == 1, timeout=3000)
    panel.select_workspace(info["workspace_path"])
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=3000)
    assert panel.port_label.text() == f"Port {info['port']}"
    # A second Start from the window reuses it (one workspace = one session)
    assert not panel.start_button.isEnabled()
    with qtbot.waitSignal(gui.servers.started, timeout=20_000) as blocker:
        gui.servers.start(info["workspace_path"])
    assert blocker.args[1].reused is True
    assert len(server_processes(ws)) == 1

    path = str(ws.resolve())
    gui.core.settings.remember_workspace(path)
    rec = gui.core.servers.get(path)
    assert rec is not None and rec.broker_port
    broker = gui.core.servers.broker(rec)

    # Settings → Daily token budget: applied to the running broker at once.
    page = gui.window.settings_page
    page.load()
    page.cap_workspace.setCurrentText(path)
    page.day_cap.setValue(12_345)
    assert page.apply()
    qtbot.waitUntil(lambda: broker.budget()["day"]["cap"] == 12_345, timeout=10_000)
    assert gui.core.settings.workspace_day_caps == {path: 12_345}

    # A new key on the Account page: the running server's next call uses it (no restart).
    new_key = gui.box.backend.issue_api_key(gui.box.email, name="new")
    with qtbot.waitSignal(gui.account.message, timeout=10_000):
        gui.account.use_key(new_key)
    gui.jobs.wait(10_000)  # the push to the brokers runs off the GUI thread
    gui.box.backend.script(Text("hello"))
    r = gui.box.cli("run", str(ws), "hi")  # the CLI's own env still holds the old key
    assert r.returncode == 0, r.stderr
    assert gui.box.backend.chat_requests()[-1].bearer_token == new_key
