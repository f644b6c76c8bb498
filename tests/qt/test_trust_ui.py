"""Workspace trust in the real window: the banner of an untrusted folder, Trust, Restart, and
Revoke in Settings (real opencode, backend stand-in)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.conftest import START_MS
from tests.integration.test_trust import project_with_code
from tests.qt.conftest import Gui

pytestmark = [pytest.mark.gui, pytest.mark.integration]


def test_untrusted_banner_trust_and_restart(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws, _plugin_marker, _mcp_marker = project_with_code(gui.box)
    assert panel.add_workspace(str(ws))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.trust_banner.isVisible(), timeout=START_MS)
    text = panel.trust_banner.text.text()
    assert "you have not trusted it" in text
    assert "plugin .opencode/plugin/marker.js" in text
    assert "MCP server 'marker'" in text and "mcp_marker.py" in text
    assert "AGENTS.md" in text, "the UI says what else is ignored"
    assert panel.trust_banner.trust_button.isVisible()
    assert not panel.trust_banner.restart_button.isVisible()
    rec = gui.servers.record_for(str(ws))
    assert rec is not None and rec.trusted is False
    gui.screenshot("trust-banner-untrusted")

    qtbot.mouseClick(panel.trust_banner.trust_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: gui.core.servers.trust.is_trusted(ws), timeout=5000)
    qtbot.waitUntil(lambda: panel.trust_banner.restart_button.isVisible(), timeout=5000)
    assert "restart it to load them" in panel.trust_banner.text.text()
    assert not panel.trust_banner.trust_button.isVisible()
    settings_list = gui.window.settings_page.trusted_folders.list
    qtbot.waitUntil(lambda: settings_list.count() == 1, timeout=5000)
    gui.screenshot("trust-banner-trusted")

    old_id = rec.server_id
    qtbot.mouseClick(panel.trust_banner.restart_button, Qt.MouseButton.LeftButton)

    def restarted() -> bool:
        r = gui.servers.record_for(str(ws))
        return r is not None and r.server_id != old_id and r.status == "running"

    qtbot.waitUntil(restarted, timeout=START_MS)
    new = gui.servers.record_for(str(ws))
    assert new is not None and new.trusted is True
    qtbot.waitUntil(lambda: not panel.trust_banner.isVisible(), timeout=5000)


def test_settings_lists_and_revokes_trust(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    a, b = gui.box.workspace("a"), gui.box.workspace("b")
    store = gui.core.servers.trust
    store.trust(a)
    store.trust(b)
    page = gui.window.settings_page
    box = page.trusted_folders
    gui.window.trust.load()
    qtbot.waitUntil(lambda: box.list.count() == 2, timeout=5000)
    gui.window.tabs.setCurrentWidget(page)
    assert box.isVisible() and not box.empty.isVisible()
    assert not box.revoke_button.isEnabled(), "nothing selected yet"
    box.list.setCurrentRow(0)
    assert box.list.currentItem().text() == str(a.resolve())
    gui.screenshot("trust-settings")
    qtbot.mouseClick(box.revoke_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.list.count() == 1, timeout=5000)
    assert not store.is_trusted(a) and store.is_trusted(b)
    assert "Revoked trust in" in page.banner.text.text()
    assert "next start" in page.banner.text.text()
    box.list.setCurrentRow(0)
    qtbot.mouseClick(box.revoke_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.list.count() == 0, timeout=5000)
    assert box.empty.isVisible() and store.entries() == []


def test_a_cli_started_untrusted_server_shows_the_banner_when_selected(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    ws, _plugin_marker, _mcp_marker = project_with_code(gui.box)
    assert gui.box.cli("start", str(ws)).returncode == 0
    qtbot.waitUntil(lambda: gui.servers.record_for(str(ws)) is not None, timeout=10_000)
    assert panel.add_workspace(str(ws))
    panel.select_workspace(str(ws.resolve()))
    qtbot.waitUntil(lambda: panel.trust_banner.isVisible(), timeout=10_000)
    assert "plugin .opencode/plugin/marker.js" in panel.trust_banner.text.text()
    qtbot.mouseClick(panel.trust_banner.close_button, Qt.MouseButton.LeftButton)
    assert not panel.trust_banner.isVisible()
    assert not gui.core.servers.trust.is_trusted(ws), "dismissing trusts nothing"
