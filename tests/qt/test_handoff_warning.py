"""The window tells the user when another local user tried to open their server (F1)."""

from __future__ import annotations

from smartspec_desktop.core.launch.launchers import LaunchOutcome
from tests.qt.conftest import Gui


def test_a_refused_hand_off_attempt_shows_a_warning_banner(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws = gui.box.workspace("web")
    panel.add_workspace(str(ws))
    warning = "Another user on this machine tried to open your server (uid 1001 (eve); 3 …)."
    outcome = LaunchOutcome("Opened OpenCode's web UI for it.", warning=warning)
    panel._on_opened(str(ws.resolve()), "openwork", outcome)
    qtbot.waitUntil(lambda: panel.banner.isVisible(), timeout=5000)
    assert "Another user on this machine tried to open your server" in panel.banner.text.text()
    assert panel.progress_label.text() == "Opened OpenCode's web UI for it."
