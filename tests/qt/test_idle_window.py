"""Idle servers sleep (issue 15) in the window: memory shown, "Sleeping", a task wakes it."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from tests.backend_standin import Text
from tests.conftest import START_MS, server_processes
from tests.qt.conftest import Gui

pytestmark = [pytest.mark.gui, pytest.mark.integration]

#: The server sleeps ~6 s after its last activity (later under load): long enough for the window
#: to show it running with its CPU figure first on a loaded machine (parallel test workers).
IDLE_MINUTES = "0.1"
SLEEP_MS = 90_000


@pytest.mark.slow
def test_a_sleeping_workspace_shows_sleeping_and_a_task_wakes_it(  # type: ignore[no-untyped-def]
    gui: Gui, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTSPEC_IDLE_MINUTES", IDLE_MINUTES)
    panel = gui.window.devmode
    agent = panel.agent_panel
    assert agent is not None
    ws = gui.box.workspace("sleepy")
    assert panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.status_label.text() == "Running", timeout=START_MS)
    # Memory and CPU of its process tree: in the details, the list and the total.
    qtbot.waitUntil(lambda: "CPU" in panel.usage_label.text(), timeout=10_000)
    assert " MB · CPU " in panel.usage_label.text()
    assert " MB" in panel.list.currentItem().text()
    assert panel.total_label.text().startswith("All servers: ")

    qtbot.waitUntil(lambda: panel.status_label.text() == "Sleeping", timeout=SLEEP_MS)
    assert "sleeping" in panel.list.currentItem().text()
    assert panel.start_button.text() == "Wake Dev Server" and panel.start_button.isEnabled()
    assert panel.stop_button.isEnabled()
    assert panel.progress_label.text().startswith("Sleeping since ")
    # Nothing of it runs any more (its supervisor exits just after writing the record).
    qtbot.waitUntil(lambda: panel.total_label.text() == "", timeout=10_000)
    assert panel.usage_label.text() == ""
    assert server_processes(ws) == []
    assert "sleeping" in agent.target_label.text() and agent.send_btn.isEnabled()
    gui.screenshot("window-sleeping")

    # A task in the Agent tab wakes it first, then runs.
    gui.box.backend.default_step = Text("Awake again.", prompt_tokens=5, completion_tokens=3)
    agent.prompt.setPlainText("are you there?")
    agent.send()
    assert "Waking the sleeping server" in agent.target_label.text()
    assert not agent.send_btn.isEnabled()  # one task waits for the wake, not two
    qtbot.waitUntil(lambda: panel.status_label.text() == "Running", timeout=START_MS)
    qtbot.waitUntil(lambda: "Awake again." in agent.text_view.toPlainText(), timeout=START_MS)
    assert len(server_processes(ws)) == 1


def test_a_workspace_can_have_its_own_idle_timeout(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws = gui.box.workspace("own")
    assert panel.add_workspace(str(ws))
    key = str(ws.resolve())
    assert not panel.idle_own.isChecked() and not panel.idle_spin.isEnabled()
    assert panel.idle_spin.value() == gui.core.settings.idle_minutes == 30.0
    panel.idle_own.setChecked(True)
    panel.idle_spin.setValue(2.5)
    panel.idle_spin.editingFinished.emit()
    assert gui.core.settings.idle_minutes_by_workspace == {key: 2.5}
    assert gui.core.servers.idle_minutes(key) == 2.5
    settings_file = gui.core.paths.settings_file
    qtbot.waitUntil(
        lambda: (
            json.loads(settings_file.read_text()).get("idle_minutes_by_workspace") == {key: 2.5}
        ),
        timeout=3000,
    )
    panel.idle_own.setChecked(False)
    assert gui.core.settings.idle_minutes_by_workspace == {}
    assert gui.core.servers.idle_minutes(key) == 30.0
