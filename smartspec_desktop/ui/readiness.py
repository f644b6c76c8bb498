"""The readiness panel: every check in one place, each row with its state and its fix.

It renders :class:`~smartspec_desktop.core.readiness.Check` results from a
:class:`~smartspec_desktop.services.readiness.ReadinessService` and asks for fixes through
signals; the main window maps them to its own actions (Settings, Account, Install OpenCode).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.readiness import BACKEND, TITLES, Check, State, checking
from smartspec_desktop.services.readiness import ReadinessService
from smartspec_desktop.ui import notices

#: (badge text, colour) per state.
BADGES: dict[State, tuple[str, str]] = {
    State.OK: ("✔ Ready", "#15803d"),
    State.MISSING: ("○ Missing", "#b45309"),
    State.FAILED: ("✖ Problem", "#b91c1c"),
    State.CHECKING: ("… Checking", "#6b7280"),
}

STYLE = """
QFrame#readiness { background:#f8fafc; border:1px solid #cbd5e1; border-radius:6px; }
QFrame#readiness QLabel#title { font-size:15px; font-weight:600; }
QFrame#readiness QLabel#rowtitle { font-weight:600; }
"""


class _Row:
    def __init__(self, grid: QGridLayout, row: int, name: str, panel: ReadinessPanel) -> None:
        self.name = name
        self.badge = QLabel()
        self.badge.setMinimumWidth(90)
        self.title = QLabel(TITLES.get(name, name))
        self.title.setObjectName("rowtitle")
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action = ""
        self.fix = QPushButton()
        self.fix.setVisible(False)
        self.fix.clicked.connect(lambda: panel.fix_requested.emit(self.action))
        grid.addWidget(self.badge, row, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.title, row, 1, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.detail, row, 2)
        grid.addWidget(self.fix, row, 3, Qt.AlignmentFlag.AlignTop)

    def render(self, check: Check) -> None:
        text, colour = BADGES[check.state]
        self.badge.setText(text)
        self.badge.setStyleSheet(f"color:{colour}; font-weight:600;")
        self.detail.setText(check.detail)
        self.action = check.fix_action if check.state != State.OK else ""
        fix = notices.action_for_fix(check.fix_action)  # the window's words for the fix
        self.fix.setText(fix.label if fix is not None else "")
        self.fix.setVisible(bool(self.action))


class ReadinessPanel(QFrame):
    fix_requested = Signal(str)  # a FIX_* action name
    demo_requested = Signal()
    dismissed = Signal()

    def __init__(
        self,
        service: ReadinessService,
        *,
        demo_available: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.setObjectName("readiness")
        self.setStyleSheet(STYLE)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 10, 14, 12)

        head = QHBoxLayout()
        self.title = QLabel("Before you start")
        self.title.setObjectName("title")
        self.summary = QLabel()
        self.check_again = QPushButton("Check again")
        self.try_demo = QPushButton("Try without a backend")
        self.try_demo.setToolTip(
            "Opens a second window on a local demo backend: scripted answers, simulated "
            "credits. Your settings and key are left alone."
        )
        self.try_demo.setVisible(demo_available)
        self.hide_button = QPushButton("Hide")
        head.addWidget(self.title)
        head.addSpacing(12)
        head.addWidget(self.summary, 1)
        head.addWidget(self.check_again)
        head.addWidget(self.try_demo)
        head.addWidget(self.hide_button)
        lay.addLayout(head)

        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(6)
        grid.setColumnStretch(2, 1)
        self.rows: dict[str, _Row] = {}
        for i, name in enumerate(TITLES):
            self.rows[name] = _Row(grid, i, name, self)
            self.rows[name].render(checking(name))
        lay.addLayout(grid)

        self.check_again.clicked.connect(service.run)
        self.try_demo.clicked.connect(self.demo_requested.emit)
        self.hide_button.clicked.connect(self._dismiss)
        service.check_changed.connect(self._on_check)
        self._render_summary()

    def _dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()

    def _on_check(self, check: Check) -> None:
        row = self.rows.get(check.name)
        if row is not None:
            row.render(check)
        if check.name == BACKEND and check.state != State.CHECKING:
            # No backend: the demo is the way to try the app now.
            self.try_demo.setObjectName("primary" if check.state == State.FAILED else "")
            self.try_demo.setStyle(self.try_demo.style())
        self._render_summary()

    def _render_summary(self) -> None:
        results = self.service.results
        self.check_again.setEnabled(not self.service.running)
        if not results or self.service.running:
            self.summary.setText("Checking what this computer has …")
            return
        ready = sum(1 for c in results.values() if c.ok)
        if ready == len(results):
            self.summary.setText("Everything is ready.")
        else:
            hint = ", or try the demo backend" if self.try_demo.isVisibleTo(self) else ""
            self.summary.setText(f"{ready} of {len(results)} ready: fix the rows below{hint}.")
