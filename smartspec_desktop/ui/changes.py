"""The Agent tab's Changes view (issue 14): the files a session changed, a readable diff of the
selected one, and Undo last turn / Redo / Discard all changes of this session."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core import review
from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.services.review import ReviewService

PAGE = review.DEFAULT_PAGE
STATUS_MARK = {"added": "A  added", "modified": "M  modified", "deleted": "D  deleted"}
ADDED_BG, REMOVED_BG, HUNK_FG = "#e6ffec", "#ffebe9", "#6f42c1"


def diff_html(lines: list[str]) -> str:
    """Diff lines as HTML rows: added green, removed red, hunk headers purple (no syntax)."""
    out = []
    for line in lines:
        text = html.escape(line) or "&nbsp;"
        if line.startswith("+") and not line.startswith("+++"):
            out.append(f'<div style="background:{ADDED_BG}; color:#116329">{text}</div>')
        elif line.startswith("-") and not line.startswith("---"):
            out.append(f'<div style="background:{REMOVED_BG}; color:#82071e">{text}</div>')
        elif line.startswith("@@"):
            out.append(f'<div style="color:{HUNK_FG}">{text}</div>')
        else:
            out.append(f"<div>{text}</div>")
    return "".join(out)


class ChangesView(QWidget):
    """Follows one session (``set_session``); everything goes through a :class:`ReviewService`.

    ``ask(title, text, files, yes_label) -> bool`` asks the user (a dialog; tests replace it)."""

    def __init__(self, service: ReviewService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.session_id = ""
        self.changes: list[review.FileChange] = []
        self.turns: list[review.Turn] = []
        self._page: review.DiffPage | None = None
        self._build()
        service.changes_loaded.connect(self._on_changes)
        service.turns_loaded.connect(self._on_turns)
        service.action_done.connect(self._on_action)
        service.refused.connect(self._on_refused)
        service.error.connect(self._on_error)
        service.busy_changed.connect(lambda _b: self._update_buttons())
        self._update_buttons()

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.title = QLabel("Changes")
        self.scope = QComboBox()
        self.scope.addItem("Whole session", "all")
        self.scope.addItem("Last turn", "last")
        self.scope.currentIndexChanged.connect(lambda _i: self.refresh())
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.clicked.connect(self.refresh)
        top.addWidget(self.title, 1)
        top.addWidget(self.scope)
        top.addWidget(self.refresh_btn)
        root.addLayout(top)

        split = QSplitter(Qt.Orientation.Horizontal)
        self.files = QTableWidget(0, 3)
        self.files.setHorizontalHeaderLabels(["Status", "+/−", "File"])
        self.files.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.files.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.files.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.files.verticalHeader().setVisible(False)
        header = self.files.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.files.itemSelectionChanged.connect(self._show_selected)
        split.addWidget(self.files)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.diff = QTextEdit()
        self.diff.setReadOnly(True)
        self.diff.setLineWrapMode(QTextEdit.LineWrapMode.NoWrap)
        self.diff.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.diff.setPlaceholderText("Select a file to see what changed.")
        rl.addWidget(self.diff, 1)
        more_row = QHBoxLayout()
        self.page_label = QLabel("")
        self.more_btn = QPushButton("More")
        self.more_btn.clicked.connect(self.more)
        self.more_btn.hide()
        more_row.addWidget(self.page_label, 1)
        more_row.addWidget(self.more_btn)
        rl.addLayout(more_row)
        split.addWidget(right)
        split.setStretchFactor(1, 2)
        root.addWidget(split, 1)

        row = QHBoxLayout()
        self.undo_btn = QPushButton("Undo last turn")
        self.redo_btn = QPushButton("Redo")
        self.discard_btn = QPushButton("Discard all changes of this session…")
        self.undo_btn.clicked.connect(lambda: self.undo())
        self.redo_btn.clicked.connect(lambda: self.redo())
        self.discard_btn.clicked.connect(lambda: self.discard())
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        for b in (self.undo_btn, self.redo_btn, self.discard_btn):
            row.addWidget(b)
        row.addWidget(self.result_label, 1)
        root.addLayout(row)

    # ----------------------------------------------------------------------------- driving

    def set_session(self, session_id: str) -> None:
        if session_id != self.session_id:
            self.session_id = session_id
            self.changes, self.turns = [], []
            self.result_label.clear()
            self._fill()
        self.refresh()

    def refresh(self) -> None:
        if self.session_id and self.service.record is not None:
            self.service.load(self.session_id, str(self.scope.currentData()))
        self._update_buttons()

    @staticmethod
    def ask(title: str, text: str, files: list[str], yes_label: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text)
        if files:
            box.setDetailedText("\n".join(files))
            box.setInformativeText("\n".join(files[:12]) + ("\n…" if len(files) > 12 else ""))
        yes = box.addButton(yes_label, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is yes

    def undo(self, force: bool = False) -> None:
        if self.session_id:
            self.service.undo(self.session_id, force=force)

    def redo(self, force: bool = False) -> None:
        if self.session_id:
            self.service.redo(self.session_id, force=force)

    def discard(self, force: bool = False, confirmed: bool = False) -> None:
        if not self.session_id:
            return
        if not confirmed and not self.ask(
            "Discard all changes of this session",
            "Restore every file this session changed to how it was before its first turn? "
            "The conversation is rewound too. Redo brings it all back until the next prompt.",
            [c.path for c in self.changes],
            "Discard all",
        ):
            return
        self.service.discard(self.session_id, force=force)

    def more(self) -> None:
        change = self._selected_change()
        if change is None or self._page is None:
            return
        nxt = review.diff_page(change, self._page.start + len(self._page.lines), PAGE)
        self._page = review.DiffPage(
            self._page.lines + nxt.lines, self._page.start, nxt.total, nxt.binary
        )
        self._render_page()

    # ---------------------------------------------------------------------------- results

    def _on_changes(self, session_id: str, turn: str, found: list[review.FileChange]) -> None:
        if session_id != self.session_id or turn != self.scope.currentData():
            return
        self.changes = list(found)
        self._fill()

    def _on_turns(self, session_id: str, turns: list[review.Turn]) -> None:
        if session_id == self.session_id:
            self.turns = list(turns)
            self._update_buttons()

    def _fill(self) -> None:
        keep = self._selected_change()
        self.files.setRowCount(len(self.changes))
        for r, c in enumerate(self.changes):
            self.files.setItem(r, 0, QTableWidgetItem(STATUS_MARK.get(c.status, c.status)))
            stats = QTableWidgetItem("binary" if c.binary else f"+{c.additions} −{c.deletions}")
            stats.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.files.setItem(r, 1, stats)
            self.files.setItem(r, 2, QTableWidgetItem(c.path))
        scope = "last turn" if self.scope.currentData() == "last" else "whole session"
        n = len(self.changes)
        self.title.setText(f"Changes ({scope}): {n} file{'s' if n != 1 else ''}")
        if keep is not None:
            for r, c in enumerate(self.changes):
                if c.path == keep.path:
                    self.files.selectRow(r)
                    break
        if self._selected_change() is None:
            if self.changes:
                self.files.selectRow(0)
            else:
                self._page = None
                self.diff.clear()
                self.page_label.clear()
                self.more_btn.hide()
        self._update_buttons()

    def _selected_change(self) -> review.FileChange | None:
        rows = self.files.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.changes):
            return None
        return self.changes[rows[0].row()]

    def _show_selected(self) -> None:
        change = self._selected_change()
        if change is None:
            return
        self._page = review.diff_page(change, 0, PAGE)
        self._render_page()

    def _render_page(self) -> None:
        change, page = self._selected_change(), self._page
        if change is None or page is None:
            return
        if page.binary:
            self.diff.setPlainText(f"{change.path} is a binary file ({change.status}); not shown.")
            self.page_label.clear()
            self.more_btn.hide()
            return
        if not page.lines:
            self.diff.setPlainText(f"{change.path}: no diff was recorded for this change.")
        else:
            self.diff.setHtml(f'<div style="white-space:pre">{diff_html(page.lines)}</div>')
        shown = page.start + len(page.lines)
        self.page_label.setText(f"lines 1–{shown} of {page.total}" if page.more else "")
        self.more_btn.setVisible(page.more)

    def _on_action(self, result: review.UndoResult) -> None:
        verb = {"undo": "Undone", "redo": "Redone", "discard": "Discarded"}[result.action]
        files = ", ".join(result.files) or "no file"
        text = f"{verb}: {files}."
        if result.overwritten:
            text += f" Your edits to {', '.join(result.overwritten)} were replaced (Redo restores)."
        if result.not_restored:
            text += f" Left as they are: {', '.join(result.not_restored)}."
        self.result_label.setText(text)
        self.refresh()

    def _on_refused(self, action: str, e: SmartSpecError) -> None:
        files: list[str] = list(getattr(e, "files", []))
        label = {"undo": "Undo anyway", "redo": "Redo anyway", "discard": "Discard anyway"}[action]
        if self.ask("Your edits would be overwritten", str(e), files, label):
            {"undo": self.undo, "redo": self.redo}.get(action, self._discard_forced)(force=True)

    def _discard_forced(self, force: bool = True) -> None:
        self.discard(force=force, confirmed=True)

    def _on_error(self, e: SmartSpecError) -> None:
        self.result_label.setText(str(e))

    def _update_buttons(self) -> None:
        ready = bool(self.session_id) and self.service.record is not None
        idle = not self.service.busy
        active = [t for t in self.turns if not t.reverted]
        hidden = [t for t in self.turns if t.reverted]
        self.undo_btn.setEnabled(ready and idle and bool(active))
        self.redo_btn.setEnabled(ready and idle and bool(hidden))
        self.discard_btn.setEnabled(ready and idle and bool(active))
        self.refresh_btn.setEnabled(ready)

    def public_rows(self) -> list[dict[str, Any]]:
        """What the file list shows (for tests and accessibility tools)."""
        return [c.public() for c in self.changes]
