"""The window shows a remote server's memory and CPU as its host's (issue 15): the workspace
list ("… MB on host") and the details ("… MB · CPU … on alias"), from the figures the
host sends over the server's own connection (the tests' sshd, the real OpenCode)."""

from __future__ import annotations

import re

import pytest
from pytestqt.qtbot import QtBot

from tests.integration.test_remote_ssh import remote, remote_host  # noqa: F401 - fixtures
from tests.qt.conftest import Gui
from tests.remote_host import RemoteHost

pytestmark = [pytest.mark.gui, pytest.mark.integration]


def test_the_window_shows_a_remote_servers_memory_on_its_host(
    remote: RemoteHost,  # noqa: F811 - the fixture (first: it sets the ssh config)
    gui: Gui,
    qtbot: QtBot,
) -> None:
    gui.box.env["SMARTSPEC_REMOTE_USAGE_SECONDS"] = "1"
    address = remote.address(remote.workspace("win"))
    panel = gui.window.devmode
    assert panel.add_workspace(address)
    r = gui.box.cli("start", address)  # started from the command line: the window notices it
    assert r.returncode == 0, r.stderr

    def item_text() -> str:
        for i in range(panel.list.count()):
            item = panel.list.item(i)
            if item.text().startswith("win"):
                return str(item.text())
        return ""

    qtbot.waitUntil(lambda: re.search(r"\d+ MB on host", item_text()) is not None, timeout=30_000)
    mb = int(re.search(r"(\d+) MB on host", item_text())[1])  # type: ignore[index]
    assert mb > 100, item_text()  # the host's OpenCode tree, not our ssh
    qtbot.waitUntil(lambda: " on alias" in panel.usage_label.text(), timeout=10_000)
    assert re.fullmatch(r"\d+ MB · CPU (\d+\.\d %|…) on alias", panel.usage_label.text())
    qtbot.wait(300)  # (the layout settles)
    label = panel.usage_label
    assert label.width() >= label.sizeHint().width(), "the figures are cut off"
    gui.screenshot("remote-usage")
    assert gui.box.cli("stop", address).returncode == 0
