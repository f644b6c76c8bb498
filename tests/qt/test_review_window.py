"""Review, undo and worktrees in the real window (issue 14), over the real core, the real opencode
and the backend stand-in: a task's file in the Changes view, Undo / Redo clicked; "Run in a new
worktree" runs a task with its own server and commits it on its branch; the workspace list's
worktrees with Merge, a conflict (repository untouched, files reported) and Discard; the option
disabled with "Initialize git" in a plain folder."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from smartspec_desktop.core import worktrees
from smartspec_desktop.services.review import ReviewService, WorktreeService
from smartspec_desktop.ui.agent import AgentPanel
from smartspec_desktop.ui.worktrees import WorktreesPanel
from tests.conftest import START_MS
from tests.integration.test_cli_review import _WriteWhatIsAsked
from tests.qt.conftest import Gui

pytestmark = [pytest.mark.gui, pytest.mark.integration]

WAIT = START_MS + 60_000  # ms: a real opencode start and turn on a busy 2-core machine


def _click_until(qtbot: QtBot, view: Any, button: Any, done: Callable[[], bool]) -> None:
    """Click ``button`` and wait for ``done``. A refusal the view shows while OpenCode still
    finishes the turn (busy, or its diff not recorded yet) is answered by clicking again once
    the button is enabled, as a user would; any other outcome fails with what the view said."""
    deadline = time.monotonic() + WAIT / 1000
    button.click()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done; the view says: {view.result_label.text()!r}")
        said = view.result_label.text().lower()
        if button.isEnabled() and ("busy" in said or "working" in said or "not recorded" in said):
            view.result_label.setText("")
            button.click()
        qtbot.wait(200)


IDENT = ["-c", "user.name=T", "-c", "user.email=t@example.com"]


def _git(ws: Path, gui: Gui, *args: str) -> str:
    r = subprocess.run(
        ["git", "-C", str(ws), *args], env=gui.box.env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _repo(gui: Gui, name: str = "repo") -> Path:
    ws = gui.box.workspace(name)
    (ws / "keep.txt").write_text("keep\n")
    _git(ws, gui, "init", "-q", "-b", "main")
    _git(ws, gui, "add", ".")
    _git(ws, gui, *IDENT, "commit", "-qm", "first")
    return ws


def _attach(gui: Gui) -> tuple[AgentPanel, WorktreesPanel]:
    agent = gui.window.devmode.agent_panel
    assert agent is not None
    service = WorktreeService(
        gui.core.servers, gui.jobs, worktrees.app_base_dir(gui.core.paths.data_dir)
    )
    agent.attach_review(ReviewService(gui.jobs), service)
    panel = WorktreesPanel(service, gui.servers)
    gui.window.devmode.attach_worktrees(panel)
    return agent, panel


def _start(gui: Gui, qtbot: QtBot, ws: Path) -> None:
    devmode = gui.window.devmode
    assert devmode.add_workspace(str(ws))
    devmode.start_button.click()
    qtbot.waitUntil(lambda: devmode.status_label.text() == "Running", timeout=WAIT)


@pytest.mark.slow
def test_changes_view_undo_redo_and_a_worktree_task(gui: Gui, qtbot: QtBot) -> None:
    gui.box.backend.gateway = "demo"
    gui.box.backend.demo = _WriteWhatIsAsked()
    repo = _repo(gui)
    agent, panel = _attach(gui)
    _start(gui, qtbot, repo)
    view = agent.changes_view
    assert view is not None and agent.worktree_box is not None
    qtbot.waitUntil(lambda: agent.worktree_box is not None and agent.worktree_box.isEnabled())

    agent.prompt.setPlainText("write out.txt")
    agent.send()
    qtbot.waitUntil(lambda: [c.path for c in view.changes] == ["out.txt"], timeout=WAIT)
    assert view.changes[0].status == "added" and view.changes[0].additions == 1
    qtbot.waitUntil(lambda: "+OUT.TXT" in view.diff.toPlainText())
    qtbot.waitUntil(lambda: view.undo_btn.isEnabled())
    gui.window.devmode.tabs.setCurrentWidget(agent)
    agent.activity_tabs.setCurrentWidget(view)
    assert agent.activity_tabs.tabText(1) == "Changes (1)"
    gui.screenshot("review-agent-tab")

    _click_until(qtbot, view, view.undo_btn, lambda: not (repo / "out.txt").exists())
    qtbot.waitUntil(lambda: view.changes == [] and view.redo_btn.isEnabled(), timeout=WAIT)
    _click_until(qtbot, view, view.redo_btn, lambda: (repo / "out.txt").exists())
    qtbot.waitUntil(lambda: len(view.changes) == 1, timeout=WAIT)

    # A task in a new worktree: its own server, committed on its branch, main tree untouched.
    agent.worktree_box.setChecked(True)
    agent.prompt.setPlainText("write wt.txt")
    agent.send()
    qtbot.waitUntil(lambda: [w.status for w in panel.found] == ["ahead"], timeout=WAIT * 2)
    (wt,) = panel.found
    assert (wt.path / "wt.txt").read_text() == "WT.TXT\n" and not (repo / "wt.txt").exists()
    assert _git(wt.path, gui, "log", "-1", "--format=%s").strip() == "write wt.txt"

    def row() -> list[str]:
        root = panel.tree.topLevelItem(0)
        child = root.child(0) if root is not None else None
        return [child.text(c) for c in range(4)] if child is not None else []

    root = panel.tree.topLevelItem(0)
    assert root is not None and root.text(0) == "repo"
    assert row()[:3] == [wt.branch, "+1 −0", "ready to merge"]
    qtbot.waitUntil(lambda: row()[3:] == ["running"], timeout=WAIT)
    gui.screenshot("review-worktrees")

    panel.ask = lambda title, text, yes_label: True  # type: ignore[method-assign]
    panel.select(wt.name)
    panel.merge_btn.click()
    qtbot.waitUntil(lambda: (repo / "wt.txt").exists(), timeout=WAIT)
    qtbot.waitUntil(lambda: "Merged" in panel.note.text())
    panel.select(wt.name)
    panel.discard_btn.click()
    qtbot.waitUntil(lambda: panel.found == [], timeout=WAIT)
    assert not wt.path.exists()
    qtbot.waitUntil(lambda: str(wt.path) not in gui.window.devmode.workspaces(), timeout=10_000)
    rec = gui.core.servers.get(str(wt.path))
    assert rec is None or not rec.active, "its server was stopped"


def test_worktree_conflict_and_plain_folder(
    gui: Gui, qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only git here (no agent): a conflicting merge is reported with its file and leaves the
    repository as it was; Discard removes worktree and branch; a plain folder offers git init."""
    repo = _repo(gui)
    agent, panel = _attach(gui)
    base = worktrees.app_base_dir(gui.core.paths.data_dir)
    wt = worktrees.create(repo, base, "clash")
    (wt.path / "keep.txt").write_text("theirs\n")
    _git(wt.path, gui, *IDENT, "commit", "-qam", "theirs")
    (repo / "keep.txt").write_text("ours\n")
    _git(repo, gui, *IDENT, "commit", "-qam", "ours")
    head = _git(repo, gui, "rev-parse", "HEAD")

    gui.window.devmode.add_workspace(str(repo))
    qtbot.waitUntil(lambda: [w.name for w in panel.found] == ["clash"])
    conflicts: list[list[str]] = []
    panel.ask = lambda title, text, yes_label: True  # type: ignore[method-assign]

    def choose(text: str, files: list[str]) -> bool:
        conflicts.append(files)
        return False

    panel.conflict_choice = choose  # type: ignore[method-assign]
    panel.select("clash")
    panel.merge_btn.click()
    qtbot.waitUntil(lambda: conflicts == [["keep.txt"]], timeout=20_000)
    assert "keep.txt" in panel.note.text() and "unchanged" in panel.note.text()
    assert _git(repo, gui, "status", "--porcelain") == ""
    assert _git(repo, gui, "rev-parse", "HEAD") == head
    assert (repo / "keep.txt").read_text() == "ours\n"

    panel.select("clash")
    panel.discard_btn.click()
    qtbot.waitUntil(lambda: panel.found == [], timeout=20_000)
    assert not wt.path.exists() and "smartspec/clash" not in _git(repo, gui, "branch")

    # A plain folder: the option is disabled with the reason and the git init offer.
    plain = gui.box.workspace("plain")
    gui.window.devmode.add_workspace(str(plain))
    qtbot.waitUntil(lambda: "Not a git repository" in panel.note.text())
    _start(gui, qtbot, plain)
    box = agent.worktree_box
    assert box is not None
    qtbot.waitUntil(lambda: not agent.git_init_btn.isHidden(), timeout=WAIT)
    assert not box.isEnabled() and "Not a git repository" in agent.worktree_reason.text()
    gui.window.devmode.tabs.setCurrentWidget(agent)
    gui.screenshot("review-plain-folder")
    monkeypatch.setattr(QMessageBox, "question", lambda *_a, **_k: QMessageBox.StandardButton.Yes)
    agent.git_init_btn.click()
    qtbot.waitUntil(lambda: box.isEnabled(), timeout=20_000)
    assert (plain / ".git").is_dir() and agent.git_init_btn.isHidden()
