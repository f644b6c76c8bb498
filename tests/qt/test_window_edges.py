"""Rough edges of the window: a failed Restart of a CLI-started workspace keeps its row and its
error; Open OpenWork UI shows progress while the browser does not come, and Cancel stops it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from tests.conftest import START_MS
from tests.integration.test_launchers import standin_binary
from tests.qt.conftest import Gui

pytestmark = [pytest.mark.gui, pytest.mark.integration]


def status_text(gui: Gui) -> str:
    return gui.window.devmode.status_label.text()


def test_restart_of_a_crashed_cli_workspace_with_the_backend_down_keeps_it_listed(
    gui: Gui, qtbot: Any
) -> None:
    ws = gui.box.workspace("from-cli")
    info = gui.box.cli_json("start", str(ws))
    panel = gui.window.devmode
    qtbot.waitUntil(lambda: panel.list.count() == 1, timeout=3000)
    panel.select_workspace(info["workspace_path"])
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=3000)
    os.kill(info["pid"], signal.SIGKILL)
    qtbot.waitUntil(lambda: status_text(gui) == "Crashed", timeout=3000)
    qtbot.waitUntil(lambda: panel.banner.action.text() == "Restart", timeout=2000)
    gui.box.backend.stop()
    try:
        qtbot.mouseClick(panel.banner.action, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: panel.banner.isVisible() and "backend" in panel.banner.text.text().lower(),
            timeout=30_000,
        )
        assert panel.list.count() == 1, "the workspace stays in the list"
        assert panel.current == info["workspace_path"]
        assert panel.banner.kind == "error"
        qtbot.wait(1500)  # a few registry polls later, it is still there, with its error
        assert panel.list.count() == 1 and panel.current == info["workspace_path"]
        assert panel.banner.isVisible() and "backend" in panel.banner.text.text().lower()
    finally:
        gui.box.backend.start()


def test_open_openwork_waiting_for_the_browser_shows_progress_and_cancel_stops_it(
    gui: Gui, qtbot: Any
) -> None:
    panel = gui.window.devmode
    launch = panel.launch
    assert launch is not None
    opened: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        return True  # "opened", but it never fetches the page

    launch.opener = opener
    gui.window.settings.update(openwork_mode="web")  # what worker threads read: its snapshot
    ws = gui.box.workspace("slow-browser")
    panel.add_workspace(str(ws))
    assert not panel.cancel_launch_button.isVisible()
    qtbot.mouseClick(panel.openwork_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.cancel_launch_button.isVisible(), timeout=5000)
    qtbot.waitUntil(
        lambda: panel.progress_label.text().startswith("Waiting for the browser"),
        timeout=START_MS,
    )
    assert opened and opened[0].startswith("file://")
    assert "of 30 s" in panel.progress_label.text()
    gui.screenshot("openwork-waiting-for-the-browser")
    with qtbot.waitSignal(launch.failed, timeout=5000) as blocker:
        qtbot.mouseClick(panel.cancel_launch_button, Qt.MouseButton.LeftButton)
    assert blocker.args[1].code == "launch_cancelled"
    qtbot.waitUntil(lambda: not panel.cancel_launch_button.isVisible(), timeout=3000)
    assert "Cancelled" in panel.banner.text.text()
    assert panel.openwork_button.isEnabled()


def test_open_openwork_ui_opens_the_session_selected_in_the_agent_tab(
    gui: Gui, qtbot: Any, tmp_path: Path
) -> None:
    binary = standin_binary(tmp_path)
    gui.window.settings.update(openwork_server_path=str(binary))
    panel = gui.window.devmode
    ws = gui.box.workspace("deep-link")
    panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: status_text(gui) == "Running", timeout=START_MS)
    agent = panel.agent_panel
    assert agent is not None
    qtbot.waitUntil(lambda: agent.new_btn.isEnabled(), timeout=10_000)
    with qtbot.waitSignal(agent.service.session_created, timeout=20_000) as made:
        qtbot.mouseClick(agent.new_btn, Qt.MouseButton.LeftButton)
    session_id = made.args[0]
    qtbot.waitUntil(lambda: agent.selected_session() == session_id, timeout=10_000)
    qtbot.mouseClick(panel.openwork_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(gui.browser.responses), timeout=START_MS)
    (url,) = gui.browser.urls
    assert url.endswith(f"/workspace/ws_1/session/{session_id}"), url
    assert gui.browser.responses[0].status_code == 200
    qtbot.waitUntil(lambda: not (panel.launch and panel.launch.busy), timeout=5000)
    assert f"(session {session_id})" in panel.progress_label.text()


def test_load_models_names_where_a_rejected_key_came_from(
    gui: Gui, qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTSPEC_API_KEY", "sk-smartspec-" + "x" * 43)  # well-formed, unknown
    with qtbot.waitSignal(gui.servers.failed, timeout=10_000) as blocker:
        gui.servers.load_models()
    error = blocker.args[1]
    assert "from the SMARTSPEC_API_KEY environment variable" in error.problem
    assert "Set SMARTSPEC_API_KEY to a valid key" in error.fix
