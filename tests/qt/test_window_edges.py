"""Rough edges of the window: a failed Restart of a CLI-started workspace keeps its row and its
error; Open OpenWork UI shows progress while the browser does not come, and Cancel stops it."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from PySide6.QtCore import Qt

from tests.qt.conftest import Gui

pytestmark = [pytest.mark.gui, pytest.mark.integration]

START_MS = 60_000


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
    gui.core.settings.openwork_mode = "web"
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
