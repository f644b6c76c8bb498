"""The Dev Mode "Agent" tab: OpenCode sessions, a prompt box and the live activity of a task."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    BudgetReached,
    GatewayError,
    InsufficientCredits,
    RateLimited,
    SmartSpecError,
    TaskAborted,
)
from smartspec_desktop.core.opencode.client import SessionInfo
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.servers.brokerlink import Usage
from smartspec_desktop.core.servers.registry import ServerRecord, same_workspace
from smartspec_desktop.services.review import ReviewService, WorktreeService
from smartspec_desktop.services.tasks import PasswordProvider, TaskService
from smartspec_desktop.ui import notices, viewmodels
from smartspec_desktop.ui.changes import ChangesView

TOOL_STATUS = {
    "pending": "… pending",
    "running": "▶ running",
    "completed": "✔ done",
    "error": "✖ failed",
}


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M") if epoch else "–"


def plain_error(e: SmartSpecError) -> str:
    """A gateway/task error in plain words: a headline, then the problem and the fix."""
    if isinstance(e, ApiKeyRejected):
        head = "Your SmartSpecPro API key was rejected (401)."
    elif isinstance(e, InsufficientCredits):
        head = "You are out of SmartSpecPro credits (402)."
    elif isinstance(e, RateLimited):
        head = "Too many requests: the gateway is rate limiting you (429)."
    elif isinstance(e, GatewayError):
        status = f" ({e.status})" if e.status else ""
        head = f"The SmartSpecPro gateway failed{status}."
    elif isinstance(e, TaskAborted):
        head = "Aborted."
    else:
        head = "The task failed."
    return f"{head} {notices.plain(e)}"  # the fix in the window's words


def permission_text(perm: dict[str, Any]) -> str:
    kind = str(perm.get("permission", "something"))
    patterns = [str(p) for p in perm.get("patterns") or []]
    verbs = {"edit": "edit", "bash": "run", "webfetch": "fetch", "external_directory": "use"}
    target = ", ".join(patterns) if patterns else "(no details)"
    return f"OpenCode asks to {verbs.get(kind, kind)}: {target}"


class _NumberItem(QTableWidgetItem):
    """Sorts by a number kept in UserRole instead of the shown text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a = self.data(Qt.ItemDataRole.UserRole)
        b = other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a < b
        return super().__lt__(other)


class AgentPanel(QWidget):
    """Sessions, a prompt box and the live activity view of one workspace's OpenCode server.

    Construct with ``AgentPanel(service)`` where ``service`` is a :class:`TaskService`; then call
    ``set_server_target(record, password_provider)`` whenever the selected workspace or its
    server changes: ``record`` is the workspace's running :class:`ServerRecord` (or ``None``
    when no server runs: the panel is disabled and says so) and ``password_provider`` a callable
    ``(ServerRecord) -> str`` giving the server password (e.g. ``core.servers.password``); it is
    called off the GUI thread.

    Signals: ``open_session_requested(session_id)`` on a double-click in the sessions table (wire
    it to OpenWork / the web UI); ``task_finished(ok, summary)`` when a task ends (notify, refresh
    credits once). The panel never blocks the GUI thread: every call goes through the service.
    """

    open_session_requested = Signal(str)
    task_finished = Signal(bool, str)

    COLUMNS = ("Title", "Created", "Last activity", "Tokens", "Calls")

    #: Wakes the selected workspace's sleeping server (issue 15); None when it is not asleep.
    _wake: Callable[[], None] | None = None
    _wake_workspace = ""
    #: (workspace, prompt) sent while its server slept: run once the woken server is the target.
    _pending: tuple[str, str] | None = None

    def __init__(self, service: TaskService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.changes_view: ChangesView | None = None  # see attach_review
        self.worktree_box: QCheckBox | None = None
        self._sessions: list[SessionInfo] = []
        self._shown_text = ""
        self._select_after_refresh: str | None = None
        self._perm_rows: dict[str, QWidget] = {}
        self._build()
        service.sessions_listed.connect(self._on_sessions)
        service.session_created.connect(self._on_session_created)
        service.state_changed.connect(self._on_state)
        service.running_changed.connect(self._on_running)
        service.finished.connect(self._on_finished)
        service.error.connect(self._on_error)
        service.usage_changed.connect(self._on_usage)
        service.sessions_usage.connect(self._on_sessions_usage)
        service.budget_paused.connect(self._on_budget_paused)
        self._metered: dict[str, dict[str, int]] = {}
        self._paused: BudgetReached | None = None
        self._metered_text = ""
        self._charged: float | None = None
        #: ``(since, until, on_result)``: the credits the backend charged in a task's window
        #: (set by the app to ``AccountService.credits_charged``; None: not shown).
        self.credits_lookup: (
            Callable[[float, float, Callable[[float | None], None]], None] | None
        ) = None
        self.set_server_target(None, None)

    # ------------------------------------------------------------------------------ layout

    def _build(self) -> None:
        root = QVBoxLayout(self)
        self.target_label = QLabel()
        self.target_label.setWordWrap(True)
        root.addWidget(self.target_label)

        split = QSplitter(Qt.Orientation.Vertical)
        root.addWidget(split, 1)

        # sessions
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(self.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemDoubleClicked.connect(self._on_double_click)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        tl.addWidget(self.table)
        row = QHBoxLayout()
        self.new_btn = QPushButton("New")
        self.rename_btn = QPushButton("Rename…")
        self.abort_btn = QPushButton("Abort")
        self.delete_btn = QPushButton("Delete")
        self.refresh_btn = QPushButton("Refresh")
        for b, slot in (
            (self.new_btn, self._new),
            (self.rename_btn, self._rename),
            (self.abort_btn, self._abort_selected),
            (self.delete_btn, self._delete),
            (self.refresh_btn, self.service.refresh_sessions),
        ):
            b.clicked.connect(slot)
            row.addWidget(b)
        row.addStretch(1)
        tl.addLayout(row)
        split.addWidget(top)

        # prompt
        mid = QWidget()
        ml = QVBoxLayout(mid)
        ml.setContentsMargins(0, 0, 0, 0)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Describe a task for the agent… (Ctrl+Enter runs it)")
        self.prompt.setMaximumHeight(110)
        ml.addWidget(self.prompt)
        prow = QHBoxLayout()
        self.runs_in_label = QLabel()
        self.send_btn = QPushButton("Run (Ctrl+Enter)")
        self.send_btn.clicked.connect(self.send)
        self.stop_btn = QPushButton("Stop task")
        self.stop_btn.clicked.connect(self.service.abort_running)
        prow.addWidget(self.runs_in_label, 1)
        # A token budget for the task (issue 9): the broker refuses calls past it.
        self.budget_box = QSpinBox()
        self.budget_box.setObjectName("task-budget")
        self.budget_box.setRange(0, 100_000_000)
        self.budget_box.setSingleStep(10_000)
        self.budget_box.setSpecialValueText("no budget")
        self.budget_box.setSuffix(" tokens")
        self.budget_box.setGroupSeparatorShown(True)
        self.budget_box.setToolTip(
            "Stop the task once it has used this many tokens (0: no budget). "
            "You can continue it with a larger budget."
        )
        prow.addWidget(QLabel("Budget:"))
        prow.addWidget(self.budget_box)
        prow.addWidget(self.stop_btn)
        prow.addWidget(self.send_btn)
        ml.addLayout(prow)
        self.prompt.installEventFilter(self)  # Ctrl+Enter sends (see eventFilter)
        split.addWidget(mid)

        # activity
        act = QWidget()
        al = QVBoxLayout(act)
        al.setContentsMargins(0, 0, 0, 0)
        srow = QHBoxLayout()
        self.status_label = QLabel("Idle")
        self.usage_label = QLabel("")
        srow.addWidget(self.status_label, 1)
        srow.addWidget(self.usage_label)
        al.addLayout(srow)
        # What the gateway broker metered for this task (the calls the account pays for).
        self.metered_label = QLabel("")
        self.metered_label.setObjectName("metered-usage")
        al.addWidget(self.metered_label)
        self.paused_box = QFrame()
        self.paused_box.setObjectName("budget-paused")
        self.paused_box.setStyleSheet(
            "QFrame#budget-paused { background: #fff4ce; border-radius: 4px; }"
        )
        pl = QHBoxLayout(self.paused_box)
        self.paused_label = QLabel()
        self.paused_label.setWordWrap(True)
        pl.addWidget(self.paused_label, 1)
        self.continue_btn = QPushButton("Continue")
        self.continue_btn.setObjectName("budget-continue")
        self.continue_btn.clicked.connect(self._continue_budget)
        self.paused_stop_btn = QPushButton("Stop")
        self.paused_stop_btn.setObjectName("budget-stop")
        self.paused_stop_btn.clicked.connect(self._stop_at_budget)
        pl.addWidget(self.continue_btn)
        pl.addWidget(self.paused_stop_btn)
        self.paused_box.hide()
        al.addWidget(self.paused_box)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(
            "QLabel { background: #fde2e1; color: #7a1010; padding: 6px; border-radius: 4px; }"
        )
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        al.addWidget(self.error_label)
        self.perm_box = QFrame()
        self.perm_box.setFrameShape(QFrame.Shape.StyledPanel)
        self.perm_layout = QVBoxLayout(self.perm_box)
        self.perm_box.hide()
        al.addWidget(self.perm_box)
        lower = QSplitter(Qt.Orientation.Horizontal)
        self.text_view = QPlainTextEdit()
        self.text_view.setReadOnly(True)
        self.text_view.setPlaceholderText("The agent's answer appears here as it streams.")
        lower.addWidget(self.text_view)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        self.tools_view = QTreeWidget()
        self.tools_view.setHeaderLabels(["Tool", "Status", "Detail"])
        self.tools_view.setRootIsDecorated(False)
        sl.addWidget(self.tools_view, 1)
        self.todo_label = QLabel("Todo")
        sl.addWidget(self.todo_label)
        self.todo_list = QListWidget()
        sl.addWidget(self.todo_list, 1)
        lower.addWidget(side)
        al.addWidget(lower, 1)
        split.addWidget(act)
        split.setStretchFactor(2, 1)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.prompt
            and event.type() == QEvent.Type.KeyPress
            and isinstance(event, QKeyEvent)
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        ):
            self.send()
            return True
        return super().eventFilter(watched, event)

    # ------------------------------------------------------------------------------ target

    def set_server_target(
        self, record: ServerRecord | None, password_provider: PasswordProvider | None
    ) -> None:
        """Follow ``record``'s server (see the class docstring); ``None`` disables the panel."""
        previous = self.service.record
        self.service.set_target(record, password_provider)
        changed = previous is None or record is None or previous.server_id != record.server_id
        if record is None:
            self.target_label.setText(
                "No dev server is running for this workspace. Start it to run agent tasks."
            )
            self._sessions = []
            self.table.setRowCount(0)
        else:
            self.target_label.setText(f"OpenCode sessions of {record.workspace_path}")
            if changed:
                self._sessions = []
                self.table.setRowCount(0)
                self._reset_activity()
            self.service.refresh_sessions()
        self._update_buttons()
        if self.changes_view is not None:
            self._retarget_review(record, password_provider)
        self._run_pending(record)

    # ----------------------------------------------------------------- sleeping (issue 15)

    def set_wake(self, wake: Callable[[], None] | None, workspace: str = "") -> None:
        """While the selected workspace's server sleeps, ``wake`` starts it: a task sent then
        wakes it first and runs once it is up. ``None``: the server is not asleep."""
        was = self._wake is not None
        self._wake, self._wake_workspace = wake, workspace if wake is not None else ""
        if (wake is not None) == was:
            return
        if self.service.record is None:
            self.target_label.setText(
                "This workspace's server is sleeping (it was idle, so it was stopped to free its "
                "memory). Run a task to wake it: it starts again with its sessions."
                if wake is not None
                else "Waking the sleeping server; the task runs once it is up."
                if self._pending is not None
                else "No dev server is running for this workspace. Start it to run agent tasks."
            )
        self._update_buttons()

    def drop_pending(self, workspace: str) -> None:
        """The wake of ``workspace`` failed: forget the task that was waiting for it."""
        if self._pending is not None and same_workspace(self._pending[0], workspace):
            self._pending = None
            self.status_label.setText("Idle")
            self._update_buttons()

    def _wake_and_send(self, text: str) -> None:
        assert self._wake is not None
        self._pending = (self._wake_workspace, text)
        self._reset_activity()
        self.prompt.clear()
        self.status_label.setText("Waking the sleeping server…")
        self._wake()
        self._update_buttons()

    def _run_pending(self, record: ServerRecord | None) -> None:
        if record is None or self._pending is None:
            return
        workspace, text = self._pending
        self._pending = None
        if same_workspace(record.workspace_path, workspace):
            self._reset_activity()
            self.service.run_prompt(text, None)

    # ---------------------------------------------------------------------------- sessions

    def selected_session(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return str(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def _on_sessions(self, infos: list[SessionInfo]) -> None:
        keep = self._select_after_refresh or self.selected_session()
        self._select_after_refresh = None
        self._sessions = list(infos)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(infos))
        running = self.service.running_session
        for r, info in enumerate(infos):
            title = info.title or info.id
            if info.id == running:
                title = "▶ " + title
            t = QTableWidgetItem(title)
            t.setData(Qt.ItemDataRole.UserRole, info.id)
            t.setToolTip(info.id)
            self.table.setItem(r, 0, t)
            for col, (text, value) in enumerate(
                (
                    (when(info.created), info.created),
                    (when(info.updated), info.updated),
                    _tokens_cell(info, self._metered.get(info.id)),
                    _calls_cell(self._metered.get(info.id)),
                ),
                start=1,
            ):
                it = _NumberItem(text)
                it.setData(Qt.ItemDataRole.UserRole, value)
                if col >= 3:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, col, it)
        if keep:
            self._select(keep)
        self._update_buttons()

    def _select(self, session_id: str) -> None:
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == session_id:
                self.table.selectRow(r)
                return

    def _on_session_created(self, session_id: str) -> None:
        self._select_after_refresh = session_id
        self._select(session_id)

    def _on_double_click(self, item: QTableWidgetItem) -> None:
        first = self.table.item(item.row(), 0)
        sid = first.data(Qt.ItemDataRole.UserRole) if first is not None else None
        if sid:
            self.open_session_requested.emit(str(sid))

    def _new(self) -> None:
        self.service.new_session("")

    def _rename(self) -> None:
        sid = self.selected_session()
        if not sid:
            return
        current = next((i.title for i in self._sessions if i.id == sid), "")
        title, ok = QInputDialog.getText(self, "Rename session", "Title:", text=current)
        if ok and title.strip():
            self.service.rename_session(sid, title.strip())

    def _abort_selected(self) -> None:
        sid = self.selected_session()
        if sid:
            self.service.abort(sid)

    def _delete(self) -> None:
        sid = self.selected_session()
        if not sid:
            return
        title = next((i.title for i in self._sessions if i.id == sid), sid)
        answer = QMessageBox.question(
            self, "Delete session", f"Delete the session “{title}” and its history?"
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.service.delete_session(sid)

    def _update_buttons(self) -> None:
        has_target = self.service.record is not None
        selected = self.selected_session() is not None
        running = self.service.running
        self.new_btn.setEnabled(has_target)
        self.refresh_btn.setEnabled(has_target)
        self.rename_btn.setEnabled(has_target and selected)
        self.abort_btn.setEnabled(has_target and selected)
        self.delete_btn.setEnabled(has_target and selected)
        self.send_btn.setEnabled(has_target and not running)
        self.stop_btn.setEnabled(running)
        self.prompt.setEnabled(has_target)
        if self._wake is not None and not has_target:  # a task wakes the sleeping server
            self.prompt.setEnabled(self._pending is None)
            self.send_btn.setEnabled(self._pending is None)
        sid = self.selected_session()
        if sid:
            title = next((i.title for i in self._sessions if i.id == sid), sid)
            self.runs_in_label.setText(f"Runs in: {title}")
        else:
            self.runs_in_label.setText("Runs in: a new session")

    # ------------------------------------------------------------------------------- tasks

    def send(self) -> None:
        text = self.prompt.toPlainText().strip()
        if text and self.service.record is None and self._wake is not None:
            if self._pending is None:
                self._wake_and_send(text)
            return
        if self.service.running or self.service.record is None:
            return
        if not text:
            self.service.run_prompt(text)  # refused with "The prompt is empty." (nothing billed)
            return
        if self.worktree_box is not None and self.worktree_box.isChecked():
            self._send_in_worktree(text)
            return
        self._reset_activity()
        budget = self.budget_box.value() or None
        if self.service.run_prompt(text, self.selected_session(), budget=budget):
            self.prompt.clear()

    def _reset_activity(self) -> None:
        self._shown_text = ""
        self.text_view.clear()
        self.tools_view.clear()
        self.todo_list.clear()
        self.todo_label.setText("Todo")
        self.usage_label.clear()
        self.metered_label.clear()
        self._metered_text, self._charged = "", None
        self.paused_box.hide()
        self._paused = None
        self.error_label.hide()
        self.status_label.setText("Idle")
        self._set_permissions({})

    def _on_running(self, running: bool) -> None:
        self._update_buttons()

    def _on_state(self, st: TaskState) -> None:
        view = viewmodels.task_view(st, running=self.service.running, now=time.time())
        self.status_label.setText(view.status_text)
        self.usage_label.setText(view.usage_text)
        # streamed text: append only what is new
        if st.text != self._shown_text:
            if st.text.startswith(self._shown_text):
                cursor = self.text_view.textCursor()
                cursor.movePosition(QTextCursor.MoveOperation.End)
                cursor.insertText(st.text[len(self._shown_text) :])
            else:
                self.text_view.setPlainText(st.text)
            self._shown_text = st.text
            self.text_view.moveCursor(QTextCursor.MoveOperation.End)
        # tools
        for i, call_id in enumerate(st.tool_order):
            tool = st.tools[call_id]
            item = self.tools_view.topLevelItem(i)
            if item is None:
                item = QTreeWidgetItem(self.tools_view)
            detail = tool.error or tool.title
            item.setText(0, tool.tool)
            item.setText(1, TOOL_STATUS.get(tool.status, tool.status))
            item.setText(2, detail)
            item.setToolTip(2, detail)
        # todos
        self.todo_list.clear()
        for todo in st.todos:
            it = QListWidgetItem(str(todo.get("content", "")))
            it.setFlags(Qt.ItemFlag.ItemIsEnabled)
            done = todo.get("status") == "completed"
            it.setCheckState(Qt.CheckState.Checked if done else Qt.CheckState.Unchecked)
            if todo.get("status") == "in_progress":
                it.setText("▶ " + it.text())
            elif todo.get("status") == "cancelled":
                it.setText(it.text() + " (cancelled)")
            self.todo_list.addItem(it)
        self.todo_label.setText(view.todo_text)
        # errors and permissions
        if view.error is not None:
            self._show_error(view.error)
        self._set_permissions(st.permissions)

    def _show_error(self, e: SmartSpecError) -> None:
        self.error_label.setText(plain_error(e))
        self.error_label.show()

    def _set_permissions(self, perms: dict[str, dict[str, Any]]) -> None:
        for pid in list(self._perm_rows):
            if pid not in perms:
                self._perm_rows.pop(pid).deleteLater()
        for pid, perm in perms.items():
            if pid in self._perm_rows:
                continue
            row = QWidget()
            row.setObjectName(f"permission-{pid}")
            lay = QHBoxLayout(row)
            lay.setContentsMargins(0, 0, 0, 0)
            label = QLabel(permission_text(perm))
            label.setWordWrap(True)
            lay.addWidget(label, 1)
            for text, reply in (("Allow once", "once"), ("Always", "always"), ("Deny", "reject")):
                b = QPushButton(text)
                b.setObjectName(f"permission-{reply}")
                b.clicked.connect(lambda _=False, p=pid, r=reply, w=row: self._answer(p, r, w))
                lay.addWidget(b)
            self.perm_layout.addWidget(row)
            self._perm_rows[pid] = row
        self.perm_box.setVisible(bool(self._perm_rows))

    def _answer(self, request_id: str, reply: str, row: QWidget) -> None:
        row.setEnabled(False)  # until the server confirms with permission.replied
        self.service.reply_permission(request_id, reply)

    def _on_finished(self, ok: bool, summary: str) -> None:
        if ok:
            self.status_label.setText("Done")
        self._show_charged()
        self._update_buttons()
        self.task_finished.emit(ok, summary)

    def _on_error(self, e: SmartSpecError) -> None:
        self._show_error(e)
        self._update_buttons()

    # ------------------------------------------------------- review, undo, worktrees (issue 14)

    def attach_review(self, review: ReviewService, worktrees: WorktreeService | None) -> None:
        """Add the Changes view under the activity, and the "Run in a new worktree" option by
        the prompt (when ``worktrees`` is given). Call once, right after construction."""
        self.review = review
        self.worktrees = worktrees
        self.changes_view = ChangesView(review)
        self.changes_view.setObjectName("changes-view")
        # The activity pane's answer/tools splitter and the Changes view become two tabs.
        lower = self.text_view.parentWidget()
        activity = lower.parentWidget() if lower is not None else None
        layout = activity.layout() if activity is not None else None
        assert isinstance(layout, QVBoxLayout) and lower is not None
        index = layout.indexOf(lower)
        layout.removeWidget(lower)
        self.activity_tabs = QTabWidget()
        self.activity_tabs.setObjectName("activity-tabs")
        self.activity_tabs.addTab(lower, "Activity")
        self.activity_tabs.addTab(self.changes_view, "Changes")
        layout.insertWidget(index, self.activity_tabs, 1)
        review.changes_loaded.connect(self._count_changes)
        self._live_timer = QTimer(self)
        self._live_timer.setInterval(3000)  # the Changes view follows a running task
        self._live_timer.timeout.connect(self.changes_view.refresh)
        self.table.itemSelectionChanged.connect(self._follow_session)
        self.service.session_created.connect(self.changes_view.set_session)
        self.service.running_changed.connect(self._on_running_review)
        self.service.finished.connect(lambda _ok, _s: self.changes_view.refresh())
        if worktrees is not None:
            self._build_worktree_option(worktrees)

    def _build_worktree_option(self, worktrees: WorktreeService) -> None:
        row = QHBoxLayout()
        self.worktree_box = QCheckBox("Run in a new worktree")
        self.worktree_box.setToolTip(
            "A new git worktree on its own branch, with its own server: the task runs there, "
            "your working tree is not touched; its work is committed on the branch."
        )
        self.worktree_reason = QLabel("")
        self.worktree_reason.setWordWrap(True)
        self.git_init_btn = QPushButton("Initialize git")
        self.git_init_btn.hide()
        self.git_init_btn.clicked.connect(self._git_init)
        row.addWidget(self.worktree_box)
        row.addWidget(self.worktree_reason, 1)
        row.addWidget(self.git_init_btn)
        mid = self.prompt.parentWidget()
        layout = mid.layout() if mid is not None else None
        assert isinstance(layout, QVBoxLayout)
        layout.addLayout(row)
        worktrees.listed.connect(self._on_worktrees_listed)
        worktrees.not_git.connect(self._on_not_git)
        worktrees.initialized.connect(lambda ws: worktrees.refresh(ws))
        worktrees.task_started.connect(self._on_worktree_started)
        worktrees.task_done.connect(lambda _r, _n, summary: self.status_label.setText(summary))
        worktrees.error.connect(lambda _ws, e: self._show_error(e))

    def _retarget_review(
        self, record: ServerRecord | None, password_provider: PasswordProvider | None
    ) -> None:
        assert self.changes_view is not None
        self.review.set_target(record, password_provider)
        if record is None:
            self.changes_view.set_session("")
            if self.worktree_box is not None:
                self.worktree_box.setEnabled(False)
            return
        self._follow_session()
        if self.worktrees is not None:  # (a remote one's too: git runs on its host, issue 15)
            self.worktrees.refresh(record.workspace_path)

    def _follow_session(self) -> None:
        if self.changes_view is None:
            return
        sid = self.selected_session()
        if sid:
            self.changes_view.set_session(sid)
        elif self.review.record is not None:
            self.review.latest_session(
                lambda found: self.changes_view.set_session(found) if self.changes_view else None
            )

    def _count_changes(self, session_id: str, _turn: str, found: list[object]) -> None:
        if self.changes_view is not None and session_id == self.changes_view.session_id:
            self.activity_tabs.setTabText(1, f"Changes ({len(found)})" if found else "Changes")

    def _on_running_review(self, running: bool) -> None:
        if running:
            self._live_timer.start()
        else:
            self._live_timer.stop()

    def _on_worktrees_listed(self, repo: str, _found: object) -> None:
        rec = self.review.record
        if self.worktree_box is None or rec is None or rec.workspace_path != repo:
            return
        self.worktree_box.setEnabled(True)
        self.worktree_reason.setText("")
        self.git_init_btn.hide()

    def _on_not_git(self, workspace: str, e: SmartSpecError) -> None:
        rec = self.review.record
        if self.worktree_box is None or rec is None or rec.workspace_path != workspace:
            return
        self.worktree_box.setChecked(False)
        self.worktree_box.setEnabled(False)
        self.worktree_reason.setText("Not a git repository: worktrees need git.")
        self.worktree_reason.setToolTip(str(e))
        self.git_init_btn.show()

    def _git_init(self) -> None:
        rec = self.review.record
        if rec is None or self.worktrees is None:
            return
        answer = QMessageBox.question(
            self,
            "Initialize git",
            f"Run `git init` in {rec.workspace_path}? Make a first commit afterwards (worktrees "
            "branch from it); OpenCode then also keeps snapshots, so every turn can be undone.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.worktrees.git_init(rec.workspace_path)

    def _send_in_worktree(self, text: str) -> None:
        rec = self.review.record
        if rec is None or self.worktrees is None:
            return
        self.worktrees.run(rec.workspace_path, text)
        self.prompt.clear()
        self.status_label.setText("Creating a worktree for the task…")

    def _on_worktree_started(self, _repo: str, wt: object) -> None:
        branch = getattr(wt, "branch", "")
        self.status_label.setText(
            f"Running in the worktree on {branch} with its own server (see the workspace list)."
        )

    # ------------------------------------------------------------ metering and budgets (issue 9)

    def _on_usage(self, usage: Usage) -> None:
        self._metered_text = f"Metered by the gateway broker: {usage.line()}"
        self._render_metered()

    def _render_metered(self) -> None:
        text = self._metered_text
        if text and self._charged is not None:
            text += f" · {self._charged:,.0f} credits charged by SmartSpecPro"
        self.metered_label.setText(text)

    def _show_charged(self) -> None:
        """After a task: the credits the backend really charged in its window (signed in)."""
        lookup = self.credits_lookup
        started = self.service.task_started
        if lookup is None or not started:
            return
        until = time.time()

        def shown(credits: float | None) -> None:
            if started == self.service.task_started:  # still the task shown
                self._charged = credits
                self._render_metered()

        lookup(started, until, shown)

    def _on_sessions_usage(self, metered: dict[str, dict[str, int]]) -> None:
        self._metered = dict(metered)

    def _on_budget_paused(self, e: BudgetReached) -> None:
        self._paused = e
        step = self.budget_box.value() or e.cap or 10_000
        self.continue_btn.setText(f"Continue (+{step:,})")
        cap = f"{e.cap:,} tokens" if e.cap else "tokens"
        head = e.problem if e.problem.startswith("Paused") else f"Paused: {e.problem}"
        self.paused_label.setText(
            f"{head} Continue raises the budget by {step:,} tokens and goes on in this session; "
            "Stop leaves the task here."
        )
        self.status_label.setText(f"Paused: budget of {cap} reached")
        self.error_label.hide()
        self.paused_box.show()
        self._update_buttons()

    def _continue_budget(self) -> None:
        e = self._paused
        if e is None or self.service.running:
            return
        step = self.budget_box.value() or e.cap or 10_000
        self.paused_box.hide()
        self._paused = None
        self.status_label.setText("Continuing…")
        self.service.continue_budget(step, e)

    def _stop_at_budget(self) -> None:
        self.paused_box.hide()
        self._paused = None
        self.status_label.setText("Stopped at the budget")


def _tokens_cell(info: SessionInfo, metered: dict[str, int] | None) -> tuple[str, float]:
    """The broker's count when it metered the session, else OpenCode's own."""
    if metered is not None:
        total = metered.get("total_tokens", 0)
    else:
        total = info.tokens_input + info.tokens_output
    return f"{total:,}", total


def _calls_cell(metered: dict[str, int] | None) -> tuple[str, float]:
    if metered is None:
        return "–", -1
    calls = metered.get("calls", 0)
    return f"{calls:,}", calls
