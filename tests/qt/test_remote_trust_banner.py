"""The trust banner of a remote folder (issue 15): its code as listed on the host, said to be
the host's; the reason when it could not be listed."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from smartspec_desktop.core.remote.projectcode import parse_listing
from smartspec_desktop.core.servers.trust import ProjectCode
from smartspec_desktop.ui.trust import TrustBanner

ADDRESS = "ssh://alias/home/me/proj"


def test_the_banner_lists_a_remote_folders_code_on_its_host(qtbot: QtBot) -> None:
    banner = TrustBanner()
    qtbot.addWidget(banner)
    banner.resize(760, 200)
    listing = "\0".join(
        ["ws", "/home/me/proj", "plugin", "/home/me/proj/.opencode/plugins/<b>x</b>.ts", ""]
    )
    code = parse_listing(ADDRESS, "alias", listing)
    banner.show_untrusted(ADDRESS, code)
    text = banner.text.text()
    assert "This folder on alias runs code of its own, and you have not trusted it" in text
    assert "plugin .opencode/plugins/&lt;b&gt;x&lt;/b&gt;.ts" in text  # a name is text
    assert banner.isVisible() and banner.trust_button.isVisible()

    unknown = ProjectCode(ADDRESS, remote=True, unlisted="ssh could not log in to alias")
    banner.show_untrusted(ADDRESS, unknown)
    text = banner.text.text()
    assert "This remote folder is not trusted" in text
    assert "It could not be listed (ssh could not log in to alias): look at proj on alias" in text
