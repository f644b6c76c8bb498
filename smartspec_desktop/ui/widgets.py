"""Small reusable widgets: status dots, the error banner, the live log view."""

from __future__ import annotations

import collections
import os
from typing import ClassVar

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.redact import Redactor
from smartspec_desktop.core.servers.registry import ServerStatus
from smartspec_desktop.ui import viewmodels

STATUS_COLORS: dict[ServerStatus, str] = {
    ServerStatus.STOPPED: "#9ca3af",
    ServerStatus.STARTING: "#f59e0b",
    ServerStatus.RUNNING: "#10b981",
    ServerStatus.STOPPING: "#f59e0b",
    ServerStatus.CRASHED: "#ef4444",
    ServerStatus.SLEEPING: "#6366f1",
}
#: Shown for each status (the view-models' table, re-exported for the widgets).
STATUS_LABELS = viewmodels.STATUS_LABELS


_dot_cache: dict[ServerStatus, QIcon] = {}


def status_icon(status: ServerStatus) -> QIcon:
    if status not in _dot_cache:
        pix = QPixmap(16, 16)
        pix.fill(Qt.GlobalColor.transparent)
        p = QPainter(pix)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setBrush(QColor(STATUS_COLORS.get(status, "#9ca3af")))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawEllipse(3, 3, 10, 10)
        p.end()
        _dot_cache[status] = QIcon(pix)
    return _dot_cache[status]


class Banner(QFrame):
    """A coloured strip with a message (problem + fix), an optional action and a close button."""

    action_clicked = Signal(str)  # the action id

    STYLES: ClassVar[dict[str, str]] = {
        "error": "background:#fef2f2; border:1px solid #fca5a5; color:#7f1d1d;",
        "warning": "background:#fffbeb; border:1px solid #fcd34d; color:#78350f;",
        "info": "background:#eff6ff; border:1px solid #93c5fd; color:#1e3a8a;",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(110)
        self.details.setFont(QFont("monospace", 8))
        self.details.hide()
        self.action = QPushButton()
        self.action.hide()
        self.close_button = QPushButton("Dismiss")
        self.close_button.setFlat(True)
        self.close_button.clicked.connect(self.clear)
        self._action_id = ""
        self.action.clicked.connect(lambda: self.action_clicked.emit(self._action_id))
        row = QHBoxLayout()
        row.addWidget(self.text, 1)
        row.addWidget(self.action)
        row.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 8)
        lay.addLayout(row)
        lay.addWidget(self.details)
        self.kind = ""
        self.hide()

    def show_message(
        self,
        kind: str,
        text: str,
        *,
        action: tuple[str, str] | None = None,
        details: str = "",
    ) -> None:
        """``action`` is (id, button label)."""
        self.kind = kind
        self.setStyleSheet(f"QFrame#banner {{{self.STYLES.get(kind, '')}}}")
        self.text.setText(text)
        if action:
            self._action_id, label = action
            self.action.setText(label)
            self.action.show()
        else:
            self._action_id = ""
            self.action.hide()
        self.details.setPlainText(details.rstrip())
        self.details.setVisible(bool(details.strip()))
        self.show()

    def clear(self) -> None:
        self.kind = ""
        self.text.clear()
        self.details.clear()
        self.hide()


class LogView(QWidget):
    """Follows a server's log file: appends new lines, filters by a search term, redacts keys.

    Reads are incremental (only the bytes added since the last tick, at most ``MAX_READ``), so a
    tick costs microseconds even for a long log.
    """

    MAX_LINES = 5000
    MAX_READ = 256 * 1024

    def __init__(self, parent: QWidget | None = None, *, interval_ms: int = 400) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter log lines…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._render)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setFont(QFont("monospace", 9))
        self.view.setMaximumBlockCount(self.MAX_LINES)
        self.view.setPlaceholderText("The server's output appears here while it runs.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.search)
        lay.addWidget(self.view)
        self.lines: collections.deque[str] = collections.deque(maxlen=self.MAX_LINES)
        self.path = ""
        self._offset = 0
        self._partial = ""
        self._redact = Redactor()
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)
        self.timer.start()

    def follow(self, path: str) -> None:
        if path == self.path:
            return
        self.path = path
        self._offset = 0
        self._partial = ""
        self.lines.clear()
        self.view.clear()
        if path:
            try:  # show the tail of a long log, not its beginning
                size = os.path.getsize(path)
                self._offset = max(0, size - self.MAX_READ)
            except OSError:
                self._offset = 0
            self.poll()

    def poll(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if size < self._offset:  # rotated: start over
                    self._offset, self._partial = 0, ""
                f.seek(self._offset)
                chunk = f.read(self.MAX_READ)
        except OSError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        new_lines = text.split("\n")
        self._partial = new_lines.pop()
        new_lines = [self._redact(ln.rstrip("\r")) for ln in new_lines]
        self.lines.extend(new_lines)
        term = self.search.text().strip().lower()
        shown = [ln for ln in new_lines if term in ln.lower()] if term else new_lines
        if shown:
            bar = self.view.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 4
            self.view.appendPlainText("\n".join(shown))
            if at_end:
                bar.setValue(bar.maximum())

    def _render(self) -> None:
        term = self.search.text().strip().lower()
        shown = [ln for ln in self.lines if term in ln.lower()] if term else list(self.lines)
        self.view.setPlainText("\n".join(shown))
        self.view.verticalScrollBar().setValue(self.view.verticalScrollBar().maximum())

    def text(self) -> str:
        return self.view.toPlainText()
