"""The workspace list's worktrees (issue 14): the selected repository with its worktrees under it
(branch, status, +/−, server), and Merge / Discard with a confirmation. A merge conflict is shown
with its files (the repository is untouched) and an offer to let the agent resolve it in the
worktree."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.worktrees import MergeConflict, MergeResult, Worktree
from smartspec_desktop.services.review import WorktreeService
from smartspec_desktop.services.servers import ServerService

ROLE_NAME = Qt.ItemDataRole.UserRole
STATUS_TEXT = {
    "clean": "nothing new",
    "uncommitted": "uncommitted work",
    "ahead": "ready to merge",
    "missing": "folder missing",
}


def resolve_prompt(into: str, files: list[str]) -> str:
    """The task that hands a merge conflict to the agent, in the worktree."""
    return (
        f"Merging this branch into {into} conflicts in: {', '.join(files)}. Run `git merge "
        f"{into}` here, resolve the conflicts so that both sides' intent is kept, and finish "
        "the merge."
    )


class WorktreesPanel(QWidget):
    """Follows one repository (``set_repository``); calls go through a :class:`WorktreeService`.

    ``ask(title, text, yes_label) -> bool`` and ``conflict_choice(text, files) -> bool`` ask the
    user (dialogs; tests replace them). ``open_requested(path)``: show that worktree's folder as
    the selected workspace (its own server, sessions and changes)."""

    open_requested = Signal(str)

    COLUMNS = ("Branch", "+/−", "Status", "Server")

    def __init__(
        self, service: WorktreeService, servers: ServerService, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.servers = servers
        self.repo = ""
        self.found: list[Worktree] = []
        self._build()
        service.listed.connect(self._on_listed)
        service.not_git.connect(self._on_not_git)
        service.merged.connect(self._on_merged)
        service.conflict.connect(self._on_conflict)
        service.discarded.connect(lambda _r, n: self.note.setText(f"Discarded {n}."))
        service.task_started.connect(lambda r, _w: self._refresh_if(r))
        service.task_done.connect(lambda r, _n, s: self._done(r, s))
        service.error.connect(self._on_error)
        servers.records_changed.connect(lambda _r: self._fill())

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Worktrees")
        title.setStyleSheet("font-weight:600;")
        lay.addWidget(title)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(self.COLUMNS))
        self.tree.setRootIsDecorated(True)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda _i, _c: self._open())
        lay.addWidget(self.tree, 1)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color:#4b5563;")
        self.note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        lay.addWidget(self.note)
        row = QHBoxLayout()
        self.merge_btn = QPushButton("Merge")
        self.merge_btn.setToolTip("Bring the branch into the repository's current branch")
        self.discard_btn = QPushButton("Discard…")
        self.discard_btn.setToolTip("Stop its server, remove the worktree and its branch")
        self.open_btn = QPushButton("Open")
        self.open_btn.setToolTip("Show it as a workspace: its server, sessions and changes")
        self.merge_btn.clicked.connect(self.merge_selected)
        self.discard_btn.clicked.connect(self.discard_selected)
        self.open_btn.clicked.connect(self._open)
        for b in (self.merge_btn, self.discard_btn, self.open_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self._update_buttons()

    # ----------------------------------------------------------------------------- driving

    def set_repository(self, path: str) -> None:
        if path != self.repo:
            self.repo, self.found = path, []
            self.note.clear()
            self._fill()
        if path:
            self.service.refresh(path)

    def _refresh_if(self, repo: str) -> None:
        if repo == self.repo:
            self.service.refresh(repo)

    def selected(self) -> Worktree | None:
        items = self.tree.selectedItems()
        name = items[0].data(0, ROLE_NAME) if items else None
        return next((w for w in self.found if w.name == name), None)

    def select(self, name: str) -> None:
        root = self.tree.topLevelItem(0)
        for i in range(root.childCount() if root else 0):
            child = root.child(i) if root else None
            if child is not None and child.data(0, ROLE_NAME) == name:
                self.tree.setCurrentItem(child)

    @staticmethod
    def ask(title: str, text: str, yes_label: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, title, text)
        yes = box.addButton(yes_label, QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is yes

    @staticmethod
    def conflict_choice(text: str, files: list[str]) -> bool:
        """True: ask the agent to resolve it."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Merge conflict", text)
        box.setInformativeText("Conflicting files:\n" + "\n".join(files))
        agent = box.addButton("Ask the agent to resolve", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Close)
        box.exec()
        return box.clickedButton() is agent

    def merge_selected(self) -> None:
        wt = self.selected()
        if wt is None:
            return
        if self.ask(
            "Merge worktree",
            f"Merge {wt.branch} (+{wt.additions} −{wt.deletions} in {wt.files} file(s)) into "
            f"the current branch of {self.repo}?",
            "Merge",
        ):
            self.note.setText(f"Merging {wt.branch}…")
            self.service.merge(self.repo, wt.name)

    def discard_selected(self) -> None:
        wt = self.selected()
        if wt is None:
            return
        if self.ask(
            "Discard worktree",
            f"Stop its server and delete the worktree {wt.path} and the branch {wt.branch}, "
            "with all the work on it? This cannot be undone.",
            "Discard",
        ):
            self.note.setText(f"Discarding {wt.name}…")
            self.service.discard(self.repo, wt.name)

    def _open(self) -> None:
        wt = self.selected()
        if wt is not None:
            self.open_requested.emit(wt.workspace or str(wt.path))

    # ---------------------------------------------------------------------------- results

    def _on_listed(self, repo: str, found: list[Worktree]) -> None:
        if repo == self.repo:
            self.found = list(found)
            self._fill()

    def _on_not_git(self, workspace: str, _e: SmartSpecError) -> None:
        if workspace == self.repo:
            self.found = []
            self._fill()
            self.tree.clear()  # no repository to show worktrees under
            self.note.setText("Not a git repository: no worktrees (Agent tab: Initialize git).")

    def _fill(self) -> None:
        keep = self.selected()
        self.tree.clear()
        if not self.repo:
            self._update_buttons()
            return
        root = QTreeWidgetItem(self.tree, [self.repo.rstrip("/").split("/")[-1] or self.repo])
        root.setToolTip(0, self.repo)
        running = self.service.running.get(self.repo, set())
        for wt in self.found:
            state = self.servers.state_of(wt.workspace or str(wt.path))
            status = STATUS_TEXT.get(wt.status, wt.status)
            if wt.name in running:
                status = "task running"
            item = QTreeWidgetItem(
                root, [wt.branch, f"+{wt.additions} −{wt.deletions}", status, state.status]
            )
            item.setData(0, ROLE_NAME, wt.name)
            item.setToolTip(0, f"{wt.branch}\n{wt.path}\n{wt.files} file(s) changed")
        root.setExpanded(True)
        for i in range(self.tree.columnCount()):
            self.tree.resizeColumnToContents(i)
        if keep is not None:
            self.select(keep.name)
        self._update_buttons()

    def _on_merged(self, repo: str, result: MergeResult) -> None:
        if repo != self.repo:
            return
        if not result.files:
            self.note.setText(f"{result.branch} had nothing new for {result.into}.")
            return
        how = "fast-forward" if result.fast_forward else "a merge commit"
        self.note.setText(
            f"Merged {result.branch} into {result.into} ({how}): {', '.join(result.files)}."
        )

    def _on_conflict(self, repo: str, name: str, e: MergeConflict) -> None:
        self.note.setText(str(e))
        if self.conflict_choice(str(e), e.files):
            into = getattr(e, "into", "") or "the repository's current branch"
            self.service.run(repo, resolve_prompt(into, e.files), name=name)
            self.note.setText(f"The agent is resolving the conflict in {name}…")

    def _done(self, repo: str, summary: str) -> None:
        if repo == self.repo:
            self.note.setText(f"Task finished: {summary}.")

    def _on_error(self, workspace: str, e: SmartSpecError) -> None:
        if workspace == self.repo:
            self.note.setText(str(e))

    def _update_buttons(self) -> None:
        wt = self.selected()
        busy = wt is not None and wt.name in self.service.running.get(self.repo, set())
        self.merge_btn.setEnabled(wt is not None and not busy)
        self.discard_btn.setEnabled(wt is not None and not busy)
        self.open_btn.setEnabled(wt is not None)
