"""Remote workspaces in the window (issue 15): "Add remote folder…" with the hosts of an ssh
config, live checks, the workspace listed with its host and kept across a restart; local-only
parts say so. (Starting one is the SSH engine's, tested with a real sshd elsewhere.)"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import cast

import pytest
from PySide6.QtCore import Qt

from smartspec_desktop.core import review
from smartspec_desktop.core.remote.sshconfig import SSH_CONFIG_ENV, SshHost
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.servers.registry import RUNNING, ServerRecord
from smartspec_desktop.core.servers.trust import find_project_code
from smartspec_desktop.core.storage.config import load_settings
from smartspec_desktop.core.worktrees import app_base_dir
from smartspec_desktop.services.review import ReviewService, WorktreeService
from smartspec_desktop.services.tasks import TaskService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.agent import AgentPanel
from smartspec_desktop.ui.changes import ChangesView
from smartspec_desktop.ui.remote import HostCache, RemoteFolderDialog
from smartspec_desktop.ui.worktrees import WorktreesPanel
from tests.qt.conftest import ARTIFACTS, Gui
from tests.qt.test_changes_view import FakeReview, _Service

pytestmark = [pytest.mark.gui]

ADDRESS = "ssh://me@devbox.example.com:2222/home/me/proj"


def ssh_config(folder: Path) -> Path:
    extra = folder / "ssh.d" / "work"
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text("Host build\n  HostName 10.0.0.7\n  User builder\n", encoding="utf-8")
    cfg = folder / "ssh_config"
    cfg.write_text(
        "Host devbox\n  HostName devbox.example.com\n  User me\n  Port 2222\n"
        f"Include {extra}\nHost *\n  ServerAliveInterval 30\n",
        encoding="utf-8",
    )
    return cfg


def open_dialog(gui: Gui, qtbot) -> RemoteFolderDialog:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    qtbot.mouseClick(panel.add_remote_button, Qt.MouseButton.LeftButton)
    dialog = panel.remote_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.host.count() == 2, timeout=5000)  # read off the GUI thread
    return dialog


def test_add_a_remote_folder_from_the_ssh_config(  # type: ignore[no-untyped-def]
    gui: Gui, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_CONFIG_ENV, str(ssh_config(gui.box.root)))
    panel = gui.window.devmode
    dialog = open_dialog(gui, qtbot)
    labels = [dialog.host.itemText(i) for i in range(dialog.host.count())]
    assert labels == ["devbox — me@devbox.example.com:2222", "build — builder@10.0.0.7"]
    assert "2 host(s) from" in dialog.host_hint.text()
    assert not dialog.ok_button.isEnabled()
    assert dialog.error.text() == "Enter the host (or an alias from your ssh config)."

    # Pick a host as a user does: open the list, choose it with the keyboard.
    dialog.host.setFocus()
    qtbot.keyClick(dialog.host, Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier)
    popup = dialog.host.view()
    qtbot.waitUntil(popup.isVisible, timeout=3000)
    qtbot.keyClick(popup, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: dialog.host.currentText() == "devbox", timeout=3000)
    assert "me@devbox.example.com:2222 (from your ssh config)" in dialog.host_hint.text()
    assert dialog.error.text() == "Enter the folder's absolute path on the host."
    assert not dialog.ok_button.isEnabled()

    qtbot.keyClicks(dialog.path, "home/me/proj")
    assert "is not an absolute path: start it with /" in dialog.error.text()
    assert not dialog.ok_button.isEnabled()
    dialog.path.clear()
    qtbot.keyClicks(dialog.path, "/home/me/proj/")
    assert dialog.ok_button.isEnabled() and dialog.error.text() == ""
    assert dialog.preview.text() == "Workspace: ssh://devbox/home/me/proj"

    # Invalid user or port: the address's own refusal is shown, OK disabled.
    qtbot.keyClicks(dialog.user, "-oProxyCommand=x")
    assert "invalid user name" in dialog.error.text() and not dialog.ok_button.isEnabled()
    dialog.user.setText("me")
    dialog.port.setText("0")
    assert "invalid port '0'" in dialog.error.text() and not dialog.ok_button.isEnabled()
    dialog.host.setEditText("devbox.example.com")
    assert "2 host(s) from" in dialog.host_hint.text()  # not an alias of the config
    dialog.port.setText("2222")
    assert dialog.ok_button.isEnabled()
    assert dialog.preview.text() == f"Workspace: {ADDRESS}"
    ARTIFACTS.mkdir(exist_ok=True)
    dialog.grab().save(str(ARTIFACTS / "remote-folder-dialog.png"))

    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.current == ADDRESS, timeout=3000)
    item = panel.list.currentItem()
    assert item is not None and item.text() == "proj — me@devbox.example.com:2222"
    assert "over SSH" in item.toolTip()
    assert panel.name_label.text() == "proj — me@devbox.example.com:2222"
    assert panel.path_label.text() == f"Remote folder over SSH: {ADDRESS}"
    assert panel.start_button.isEnabled()  # Start goes to the same ServerService call
    assert panel.idle_own.isEnabled()
    gui.window.grab().save(str(ARTIFACTS / "window-remote-workspace.png"))

    # Remembered in its canonical form, though no local folder of that name exists.
    settings_file = gui.core.paths.settings_file
    qtbot.waitUntil(
        lambda: ADDRESS in json.loads(settings_file.read_text()).get("recent_workspaces", []),
        timeout=3000,
    )
    loaded, _warnings = load_settings(settings_file)
    assert loaded.recent_workspaces[0] == ADDRESS
    # Its own idle timeout is kept under the address too.
    panel.idle_own.setChecked(True)
    panel.idle_spin.setValue(4.0)
    panel.idle_spin.editingFinished.emit()
    assert gui.core.settings.idle_minutes_by_workspace == {ADDRESS: 4.0}
    assert panel.workspaces()[0] == ADDRESS


def test_the_dialog_refuses_what_is_not_an_address(  # type: ignore[no-untyped-def]
    gui: Gui, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_CONFIG_ENV, str(ssh_config(gui.box.root)))
    panel = gui.window.devmode
    dialog = open_dialog(gui, qtbot)
    dialog.path.setText("/srv/x")
    for host, problem in [
        ("dev/box", "has a “/” or a space in it"),
        ("dev box", "has a “/” or a space in it"),
        ("-oProxyCommand=evil", "invalid host"),
        ("", "Enter the host"),
    ]:
        dialog.host.setEditText(host)
        assert problem in dialog.error.text(), host
        assert not dialog.ok_button.isEnabled()
        dialog.accept()  # Return in the dialog: still refused
        assert dialog.isVisible()
    dialog.host.setEditText("::1")  # an IPv6 address gets its brackets
    assert dialog.preview.text() == "Workspace: ssh://[::1]/srv/x"
    qtbot.mouseClick(
        dialog.buttons.button(dialog.buttons.StandardButton.Cancel), Qt.MouseButton.LeftButton
    )
    assert panel.remote_dialog is None  # closed: it goes away
    assert panel.workspaces() == [] and panel.current == ""


def test_no_ssh_config_still_lets_a_host_be_typed(  # type: ignore[no-untyped-def]
    gui: Gui, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_CONFIG_ENV, str(gui.box.root / "no-such-config"))
    panel = gui.window.devmode
    qtbot.mouseClick(panel.add_remote_button, Qt.MouseButton.LeftButton)
    dialog = panel.remote_dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: "No hosts in" in dialog.host_hint.text(), timeout=5000)
    qtbot.keyClicks(dialog.host.lineEdit(), "me@10.1.2.3")
    qtbot.keyClicks(dialog.path, "/w")
    qtbot.keyClick(dialog.path, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: panel.current == "ssh://me@10.1.2.3/w", timeout=3000)
    assert panel.list.currentItem().text() == "w — me@10.1.2.3"


def test_local_only_parts_say_so_for_a_remote_workspace(  # type: ignore[no-untyped-def]
    gui: Gui, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worktrees of a remote repository are asked of its host (git runs there over ssh, off the
    # GUI thread; tests/integration/test_remote_worktrees.py does it for real): a host that
    # cannot be reached says so in the panel, with the fix.
    config = gui.box.root / "ssh_config"
    config.write_text("Host devbox.example.com\n  ProxyCommand false\n")
    monkeypatch.setenv(SSH_CONFIG_ENV, str(config))
    panel = gui.window.devmode
    worktrees = WorktreeService(gui.core.servers, gui.jobs, app_base_dir(gui.core.paths.data_dir))
    wt_panel = WorktreesPanel(worktrees, gui.servers)
    panel.attach_worktrees(wt_panel)
    wt_panel.show()  # attached after the window was shown (the app attaches it before)
    local = gui.box.workspace("here")
    assert panel.add_workspace(str(local))
    assert panel.add_workspace(ADDRESS)
    qtbot.waitUntil(
        lambda: "ssh to me@devbox.example.com:2222" in wt_panel.note.text(), timeout=20_000
    )
    assert "ssh me@devbox.example.com:2222" in wt_panel.note.text()  # the fix: try it
    root = wt_panel.tree.topLevelItem(0)
    assert root is not None and root.text(0) == "proj" and root.childCount() == 0

    # Trust: the banner says the remote folder's files are not listed, and offers Trust.
    gui.window.trust.checked.emit(ADDRESS, find_project_code(ADDRESS), False)
    banner = panel.trust_banner
    assert banner.isVisible() and banner.trust_button.isVisible()
    assert "This remote folder is not trusted" in banner.text.text()
    assert "look at proj on me@devbox.example.com:2222" in banner.text.text()
    note = wt_panel.note  # the whole message shows, not one clipped line
    qtbot.waitUntil(lambda: note.height() >= note.heightForWidth(note.width()), timeout=3000)
    gui.window.grab().save(str(ARTIFACTS / "window-remote-trust.png"))
    qtbot.mouseClick(banner.trust_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: gui.core.servers.trust.is_trusted(ADDRESS), timeout=5000)
    trusted = gui.window.settings_page.trusted_folders.list
    qtbot.waitUntil(lambda: trusted.count() == 1, timeout=5000)
    assert trusted.item(0).text() == f"proj on me@devbox.example.com:2222  ({ADDRESS})"

    # Back on the local folder, worktrees are asked for again.
    panel.select_workspace(str(local.resolve()))
    qtbot.waitUntil(lambda: "not available" not in wt_panel.note.text(), timeout=3000)
    assert wt_panel.tree.isVisible()


def test_the_agent_tab_asks_the_host_for_worktrees_of_a_remote_workspace(  # type: ignore[no-untyped-def]
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ssh_config"  # a host that cannot be reached: its ssh fails at once
    config.write_text("Host devbox.example.com\n  ProxyCommand false\n")
    monkeypatch.setenv(SSH_CONFIG_ENV, str(config))
    jobs = Jobs()
    tasks = TaskService(jobs)
    agent = AgentPanel(tasks)
    qtbot.addWidget(agent)
    worktrees = WorktreeService(cast(ServerManager, None), jobs, tmp_path / "worktrees")
    agent.attach_review(ReviewService(jobs), worktrees)
    errors: list[object] = []
    worktrees.error.connect(lambda _ws, e: errors.append(e))
    worktrees.not_git.connect(lambda _ws, e: errors.append(e))
    with socket.socket() as s:  # a port nothing listens on: the sessions list just fails
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record = ServerRecord(
        "srv-remote",
        ADDRESS,
        RUNNING,
        "2026-12-01T00:00:00+00:00",
        port=port,
        url=f"http://127.0.0.1:{port}",
    )
    try:
        agent.set_server_target(record, lambda _r: "pw")
        assert agent.target_label.text() == f"OpenCode sessions of {ADDRESS}"
        qtbot.waitUntil(lambda: len(errors) == 1, timeout=20_000)
        (err,) = errors
        assert str(getattr(err, "problem", "")).startswith("ssh to me@devbox.example.com:2222")
        assert agent.worktree_box is not None and not agent.worktree_box.isChecked()
    finally:
        tasks.shutdown(wait_ms=5000)
        jobs.wait(10_000)


def test_settings_budget_lists_a_remote_workspace_by_its_address(gui: Gui, qtbot) -> None:  # type: ignore[no-untyped-def]
    panel = gui.window.devmode
    assert panel.add_workspace("SSH://me@devbox.example.com:2222/home/me/proj/")
    page = gui.window.settings_page
    page.load()
    combo = page.cap_workspace
    assert [combo.itemText(i) for i in range(combo.count())] == [ADDRESS]
    combo.setCurrentText(ADDRESS)
    page.day_cap.setValue(100_000)
    assert page.apply()
    assert gui.core.settings.workspace_day_caps == {ADDRESS: 100_000}
    assert gui.core.settings.recent_workspaces == [ADDRESS]


class _RemotePlainFolder(FakeReview):
    """Undo on a remote plain folder after a shell command: the engine restores what the tool
    calls recorded, on the host (tests/integration/test_remote_undo.py), and says what it
    cannot restore; forcing restores the rest, as in a local folder."""

    def undo_last_turn(self, _c: object, sid: str, *, force: bool = False) -> review.UndoResult:
        self.calls.append(("undo", force))
        if not force:
            raise review.UndoUnavailable(
                "Cannot undo here: this folder is not a git repository, so OpenCode kept no "
                "snapshot, and 1 change(s) were made in a way that recorded no earlier "
                "version: (bash: make).",
                review.GIT_FIX + " To undo the rest and keep these as they are, use --force.",
                files=["(bash: make)"],
            )
        return review.UndoResult("undo", "msg_2", ["keep.txt"], 1, False, [], ["(bash: make)"])


def test_changes_view_offers_undo_anyway_on_a_remote_plain_folder(qtbot) -> None:  # type: ignore[no-untyped-def]
    jobs = Jobs()
    fake = _RemotePlainFolder()
    service = _Service(jobs, api=fake)
    rec = ServerRecord("srv", ADDRESS, RUNNING, "now", url="http://127.0.0.1:1")
    service.set_target(rec, lambda _r: "pw")
    view = ChangesView(service)
    qtbot.addWidget(view)
    asked: list[list[str]] = []

    def ask(title: str, text: str, files: list[str], yes_label: str) -> bool:
        asked.append(files)
        return True

    view.ask = ask  # type: ignore[method-assign]
    try:
        view.set_session("ses_1")
        qtbot.waitUntil(lambda: len(view.changes) == 3, timeout=5000)
        view.undo_btn.click()
        qtbot.waitUntil(lambda: "Left as they are" in view.result_label.text(), timeout=5000)
        assert "(bash: make)" in view.result_label.text()
        assert asked == [["(bash: make)"]]
        assert fake.calls[:2] == [("undo", False), ("undo", True)]
    finally:
        jobs.wait(5000)


def test_the_hosts_are_read_off_the_gui_thread_once_for_waiting_dialogs(qtbot) -> None:  # type: ignore[no-untyped-def]
    """A config on a hung network home folder: the dialog is usable meanwhile."""
    release = threading.Event()
    reads: list[str] = []

    def slow_read() -> list[SshHost]:
        reads.append(threading.current_thread().name)
        release.wait(30)
        return [SshHost("devbox", "devbox.example.com", "me")]

    jobs = Jobs()
    cache = HostCache(slow_read)
    first = RemoteFolderDialog(jobs=jobs, hosts=cache)
    second = RemoteFolderDialog(jobs=jobs, hosts=cache)
    for d in (first, second):
        qtbot.addWidget(d)
    try:
        assert first.host_hint.text() == "Reading your ssh config …"
        qtbot.keyClicks(first.host.lineEdit(), "other")  # typing works while it reads
        qtbot.keyClicks(first.path, "/x")
        assert first.ok_button.isEnabled()
        assert first.host.count() == 0 and second.host.count() == 0
        release.set()
        qtbot.waitUntil(lambda: first.host.count() == second.host.count() == 1, timeout=10_000)
        assert len(reads) == 1 and reads[0] != threading.main_thread().name
        assert first.host.currentText() == "other", "what the user typed is kept"
        third = RemoteFolderDialog(jobs=jobs, hosts=cache)  # cached: at once
        qtbot.addWidget(third)
        assert third.host.itemText(0) == "devbox — me@devbox.example.com" and len(reads) == 1
    finally:
        release.set()
        jobs.wait(10_000)
