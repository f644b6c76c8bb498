"""The Dev Mode panel: workspaces on the left, the selected workspace's server on the right.

Widgets here only call service methods and render service state; every blocking call runs on a
worker thread inside the services.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.remote.address import is_remote, parse_remote
from smartspec_desktop.core.remote.naming import workspace_label, workspace_name
from smartspec_desktop.core.servers.manager import StartResult
from smartspec_desktop.core.servers.registry import (
    ACTIVE,
    SLEEPING,
    STOPPED,
    ServerRecord,
)
from smartspec_desktop.core.servers.trust import ProjectCode
from smartspec_desktop.core.servers.usage import format_usage, memory_text, total
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.services.launch import LaunchService
from smartspec_desktop.services.servers import ServerService
from smartspec_desktop.services.settings import SettingsService
from smartspec_desktop.services.trust import TrustService
from smartspec_desktop.ui import notices, viewmodels
from smartspec_desktop.ui.agent import AgentPanel
from smartspec_desktop.ui.remote import (
    HostCache,
    RemoteFolderDialog,
    remote_detail,
    workspace_tooltip,
)
from smartspec_desktop.ui.trust import TrustBanner
from smartspec_desktop.ui.widgets import Banner, LogView, status_icon

ROLE_PATH = Qt.ItemDataRole.UserRole

GATEWAY_NOTE = (
    "Dev Mode runs OpenCode through the SmartSpecPro gateway: every LLM call is charged to the "
    "credits of your one SmartSpecPro account. No other provider is reachable."
)


class DevModePanel(QWidget):
    account_requested = Signal()
    settings_requested = Signal()
    workspaces_changed = Signal()  # the list was edited (the settings service saved it)
    model_changed = Signal(str)

    def __init__(
        self,
        servers: ServerService,
        settings: SettingsService,
        *,
        launch: LaunchService | None = None,
        agent_panel: AgentPanel | None = None,
        trust: TrustService | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.servers = servers
        self.trust = trust
        #: Untrusted workspaces with project code: what their banner lists.
        self._untrusted_code: dict[str, ProjectCode] = {}
        self._just_trusted: set[str] = set()
        self._restart_pending: set[str] = set()
        #: Owns the settings: every change goes through it (it saves them).
        self.settings_service = settings
        self.launch = launch
        self.agent_panel = agent_panel
        self._agent_target: str | None = None  # server id the agent panel follows
        self.current = ""
        #: The latest line per workspace (progress while busy, then the outcome); "" = app-wide.
        self._messages: dict[str, str] = {}
        self._banners: dict[str, tuple[str, str, tuple[str, str] | None, str]] = {}
        self._build(agent_panel)
        servers.records_changed.connect(self._on_records)
        servers.busy_changed.connect(self._on_busy)
        servers.progress.connect(self._on_progress)
        servers.started.connect(self._on_started)
        servers.stopped.connect(self._on_stopped)
        servers.failed.connect(self._on_failed)
        servers.crashed.connect(self._on_crashed)
        servers.models_loaded.connect(self._on_models)
        servers.install_progress.connect(self._on_install_progress)
        servers.installed.connect(self._on_installed)
        if launch is not None:
            launch.progress.connect(self._on_progress)
            launch.opened.connect(self._on_opened)
            launch.failed.connect(self._on_failed)
            launch.busy_changed.connect(lambda ws, _w: self._render_detail())
        self.banner.action_clicked.connect(self._on_banner_action)
        if trust is not None:
            trust.checked.connect(self._on_trust_checked)
            trust.changed.connect(self._on_trust_changed)
            trust.failed.connect(self._on_failed)
            self.trust_banner.trust_clicked.connect(lambda ws: trust.set_trusted(ws, True))
            self.trust_banner.restart_clicked.connect(self._restart)
        if agent_panel is not None:
            agent_panel.open_session_requested.connect(self._open_session)
        self.uptime_timer = QTimer(self)
        self.uptime_timer.setInterval(1000)
        self.uptime_timer.timeout.connect(self._render_status)
        self.uptime_timer.start()
        self._reload_list()

    # ------------------------------------------------------------------------------ layout

    def _build(self, agent_panel: QWidget | None) -> None:
        # Left: workspaces
        self.list = QListWidget()
        self.list.setIconSize(QSize(14, 14))
        self.list.setAlternatingRowColors(False)
        self.list.setMinimumWidth(220)
        # Long names (a remote one's "proj — me@host") lose their middle, not their end.
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.currentItemChanged.connect(self._on_select)
        self.add_button = QPushButton("Add folder…")
        self.add_button.clicked.connect(self._add_dialog)
        # A folder on another machine over SSH (issue 15): see ui/remote.py.
        self.add_remote_button = QPushButton("Add remote folder…")
        self.add_remote_button.setObjectName("add-remote")
        self.add_remote_button.setToolTip(
            "A folder on another machine, reached with your OpenSSH client (~/.ssh/config)"
        )
        self.add_remote_button.clicked.connect(self._add_remote_dialog)
        self.remote_dialog: RemoteFolderDialog | None = None
        self._ssh_hosts = HostCache()
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove from the list (stops nothing, deletes nothing)")
        self.remove_button.clicked.connect(self._remove_current)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Workspaces")
        title.setStyleSheet("font-weight:600;")
        ll.addWidget(title)
        ll.addWidget(self.list, 1)
        self.total_label = QLabel("")  # memory and CPU of every running server (issue 15)
        self.total_label.setStyleSheet("color:#6b7280; font-size:11px;")
        ll.addWidget(self.total_label)
        lb = QHBoxLayout()
        lb.addWidget(self.add_button)
        lb.addWidget(self.remove_button)
        ll.addLayout(lb)
        ll.addWidget(self.add_remote_button)

        # Right: the selected workspace
        self.name_label = QLabel("No workspace selected")
        self.name_label.setStyleSheet("font-size:16px; font-weight:600;")
        self.path_label = QLabel("Add a project folder on the left to start.")
        self.path_label.setStyleSheet("color:#6b7280;")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner = Banner()
        self.trust_banner = TrustBanner()

        self.status_icon = QLabel()
        self.status_label = QLabel("Stopped")
        self.status_label.setStyleSheet("font-weight:600;")
        self.port_label = QLabel("")
        self.url_label = QLabel("")
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QToolButton()
        self.copy_button.setText("Copy URL")
        self.copy_button.clicked.connect(self._copy_url)
        self.uptime_label = QLabel("")
        self.uptime_label.setMinimumWidth(110)
        self.usage_label = QLabel("")
        self.usage_label.setToolTip("Memory and CPU of the server's processes")
        self.spinner = QProgressBar()
        self.spinner.setRange(0, 0)
        self.spinner.setMaximumWidth(90)
        self.spinner.setMaximumHeight(10)
        self.spinner.setTextVisible(False)
        self.spinner.hide()
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet("color:#4b5563;")
        self.progress_label.setWordWrap(True)

        status_row = QHBoxLayout()
        status_row.addWidget(self.status_icon)
        status_row.addWidget(self.status_label)
        status_row.addWidget(self.spinner)
        status_row.addSpacing(12)
        status_row.addWidget(self.port_label)
        status_row.addWidget(self.url_label)
        status_row.addWidget(self.copy_button)
        status_row.addSpacing(12)
        status_row.addWidget(self.uptime_label)
        status_row.addWidget(self.usage_label)
        status_row.addStretch(1)

        self.start_button = QPushButton("Start Dev Server")
        self.start_button.setObjectName("primary")
        self.start_button.clicked.connect(self._start)
        self.stop_button = QPushButton("Stop Server")
        self.stop_button.clicked.connect(self._stop)
        self.openwork_button = QPushButton("Open OpenWork UI")
        self.openwork_button.clicked.connect(self._open_openwork)
        self.cli_button = QPushButton("Open OpenCode CLI")
        self.cli_button.clicked.connect(self._open_cli)
        # Shown while Open OpenWork UI waits (e.g. for the browser): stops the wait.
        self.cancel_launch_button = QPushButton("Cancel")
        self.cancel_launch_button.setObjectName("cancel-launch")
        self.cancel_launch_button.setToolTip("Stop waiting for the browser to open the page.")
        self.cancel_launch_button.clicked.connect(self._cancel_launch)
        self.cancel_launch_button.hide()
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(220)
        self.model_combo.setPlaceholderText("Models load when a key is set")
        self.model_combo.setToolTip(
            "The model OpenCode uses, from the gateway's list. Applies to servers started after "
            "the change."
        )
        self.model_combo.currentTextChanged.connect(self._on_model_picked)
        buttons = QGridLayout()
        buttons.addWidget(self.start_button, 0, 0)
        buttons.addWidget(self.stop_button, 0, 1)
        buttons.addWidget(self.openwork_button, 0, 2)
        buttons.addWidget(self.cli_button, 0, 3)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("Model:"))
        model_row.addWidget(self.model_combo)
        model_row.addSpacing(16)
        self._build_idle_override(model_row)
        model_row.addStretch(1)

        self.log_view = LogView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.log_view, "Server log")
        if agent_panel is not None:
            self.tabs.addTab(agent_panel, "Agent")

        note = QLabel(GATEWAY_NOTE)
        note.setWordWrap(True)
        note.setStyleSheet("color:#6b7280; font-size:11px;")

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(8, 0, 0, 0)
        rl.addWidget(self.name_label)
        rl.addWidget(self.path_label)
        rl.addWidget(self.banner)
        rl.addWidget(self.trust_banner)
        rl.addLayout(status_row)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress_label, 1)
        progress_row.addWidget(self.cancel_launch_button)
        rl.addLayout(progress_row)
        rl.addLayout(buttons)
        rl.addLayout(model_row)
        rl.addWidget(self.tabs, 1)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet("color:#e5e7eb;")
        rl.addWidget(line)
        rl.addWidget(note)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 760])
        lay = QVBoxLayout(self)
        lay.addWidget(splitter)
        self._render_detail()

    def _build_idle_override(self, row: QHBoxLayout) -> None:
        """This workspace's own idle timeout (issue 15), else Settings' one."""
        self.idle_own = QCheckBox("Own idle timeout:")
        self.idle_own.setToolTip(
            "Stop this workspace's server after this many idle minutes instead of the Settings "
            "value (0 = never). Applies to its next start or wake."
        )
        self.idle_spin = QDoubleSpinBox()
        self.idle_spin.setRange(0, 24 * 60)
        self.idle_spin.setDecimals(1)
        self.idle_spin.setSuffix(" min")
        self.idle_spin.setSpecialValueText("never")
        self.idle_own.toggled.connect(self._on_idle_override)
        self.idle_spin.editingFinished.connect(self._on_idle_override)
        row.addWidget(self.idle_own)
        row.addWidget(self.idle_spin)

    def _render_idle_override(self) -> None:
        ws = self.current
        own = self.settings.idle_minutes_by_workspace.get(ws) if ws else None
        for w in (self.idle_own, self.idle_spin):
            w.blockSignals(True)
        self.idle_own.setEnabled(bool(ws))
        self.idle_own.setChecked(own is not None)
        self.idle_spin.setEnabled(own is not None)
        self.idle_spin.setValue(own if own is not None else self.settings.idle_minutes)
        for w in (self.idle_own, self.idle_spin):
            w.blockSignals(False)

    def _on_idle_override(self, *_args: object) -> None:
        ws = self.current
        if not ws:
            return
        own = float(self.idle_spin.value()) if self.idle_own.isChecked() else None
        self.idle_spin.setEnabled(self.idle_own.isChecked())
        if self.settings_service.set_idle_override(ws, own):  # saves the settings
            self.workspaces_changed.emit()

    @property
    def settings(self) -> Settings:
        """The live settings (read here; changed only through :attr:`settings_service`)."""
        return self.settings_service.settings

    # ------------------------------------------------------------------------ workspaces

    def workspaces(self) -> list[str]:
        """The list shown: remembered folders, plus any with a known server (e.g. from CLI)."""
        out = list(self.settings.recent_workspaces)
        for rec in self.servers.records:
            if rec.workspace_path not in out:
                out.append(rec.workspace_path)
        return out

    def _reload_list(self) -> None:
        wanted = self.workspaces()
        have = [self.list.item(i).data(ROLE_PATH) for i in range(self.list.count())]
        if set(have) != set(wanted):  # same folders in another order: keep rows where they are
            self.list.blockSignals(True)
            self.list.clear()
            for path in wanted:
                item = QListWidgetItem()
                item.setData(ROLE_PATH, path)
                item.setToolTip(workspace_tooltip(path))
                self.list.addItem(item)
            self.list.blockSignals(False)
            if self.current in wanted:
                self.list.setCurrentRow(wanted.index(self.current))
            elif wanted:
                self.list.setCurrentRow(0)
            else:
                self._select("")
        for i in range(self.list.count()):
            item = self.list.item(i)
            path = item.data(ROLE_PATH)
            state = self.servers.state_of(path)
            label = workspace_label(path)
            if state.record is not None and state.status in ACTIVE:
                label += f"  ·  :{state.record.port}" if state.record.port else ""
                usage = self.servers.usage.get(state.record.server_id)
                if usage is not None and usage.processes:
                    label += f"  ·  {memory_text(usage)}"
            elif state.status == SLEEPING:
                label += "  ·  sleeping"
            item.setText(label)
            item.setIcon(status_icon(state.status))
            item.setData(Qt.ItemDataRole.AccessibleTextRole, f"{label} {state.status}")
        self._render_total()

    def add_workspace(self, path: str) -> bool:
        """Add a folder (used by the dialog and by tests); returns False with a banner if bad."""
        try:
            ws = str(parse_remote(path)) if is_remote(path) else self.servers.normalize(path)
        except SmartSpecError as e:
            self._show_error("", e)
            return False
        self.settings_service.remember_workspace(ws)
        self.workspaces_changed.emit()
        self.current = ws
        self._reload_list()
        self._select(ws)
        return True

    def _add_dialog(self) -> None:
        local = self.current and not is_remote(self.current)  # never a remote address
        start = self.current if local else str(Path.home())
        path = QFileDialog.getExistingDirectory(self, "Choose a workspace folder", start)
        if path:
            self.add_workspace(path)

    def _add_remote_dialog(self) -> None:
        """Ask for a host and a folder on it; non-blocking (the dialog is window-modal)."""
        self._ssh_hosts.forget()  # the user may have edited the config since
        dialog = RemoteFolderDialog(self, jobs=self.servers.jobs, hosts=self._ssh_hosts)
        self.remote_dialog = dialog

        def added() -> None:
            if dialog.address is not None:
                self.add_workspace(str(dialog.address))

        def closed(_result: int) -> None:
            if self.remote_dialog is dialog:
                self.remote_dialog = None
            dialog.deleteLater()

        dialog.accepted.connect(added)
        dialog.finished.connect(closed)
        dialog.open()

    def _remove_current(self) -> None:
        if not self.current:
            return
        self.settings_service.forget_workspace(self.current)
        self.workspaces_changed.emit()
        self._reload_list()

    def _on_select(self, item: QListWidgetItem | None, _prev: object = None) -> None:
        self._select(item.data(ROLE_PATH) if item is not None else "")

    def select_workspace(self, path: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(ROLE_PATH) == path:
                self.list.setCurrentRow(i)
                return

    def _select(self, path: str) -> None:
        self.current = path
        self._render_detail()
        rec = self.servers.record_for(path)
        if self.trust is not None and rec is not None and rec.active and not rec.trusted:
            self.trust.check(path)  # e.g. started by the CLI: say what it left out

    # --------------------------------------------------------------------------- actions

    def _start(self) -> None:
        if self.current:
            self.banner.clear()
            self._banners.pop(self.current, None)
            self._keep_listed(self.current)
            self.servers.start(self.current)

    def _keep_listed(self, ws: str) -> None:
        """Remember a workspace the user acts on (e.g. Restart of a CLI-started one): a failed
        restart forgets its old server record, and the row (with its error banner) must stay."""
        if ws not in self.settings.recent_workspaces:
            self.settings_service.remember_workspace(ws)
            self.workspaces_changed.emit()

    def _stop(self) -> None:
        if self.current:
            self.servers.stop(self.current)

    def _open_openwork(self) -> None:
        if self.current and self.launch is not None:
            self.launch.open_openwork(self.current, self._agent_selected_session())

    def _agent_selected_session(self) -> str | None:
        """The session selected in the Agent tab when that tab follows this workspace's server
        (Open OpenWork UI then opens it), else None."""
        panel = self.agent_panel
        record = panel.service.record if panel is not None else None
        if panel is None or record is None or record.server_id != self._agent_target:
            return None
        state = self.servers.state_of(self.current) if self.current else None
        if state is None or state.record is None or state.record.server_id != record.server_id:
            return None
        return panel.selected_session()

    def _cancel_launch(self) -> None:
        if self.current and self.launch is not None and self.launch.cancel(self.current):
            self._say(self.current, "Cancelling …")

    def _open_cli(self) -> None:
        if self.current and self.launch is not None:
            self.launch.open_cli(self.current)

    def _open_session(self, session_id: str) -> None:
        if self.current and self.launch is not None:
            self.launch.open_openwork(self.current, session_id)

    def _copy_url(self) -> None:
        state = self.servers.state_of(self.current) if self.current else None
        if state and state.record and state.record.url:
            QGuiApplication.clipboard().setText(state.record.url)
            self._say(self.current, f"Copied {state.record.url}")

    def _on_banner_action(self, action: str) -> None:
        if action == notices.INSTALL:
            self.servers.install_opencode()
            self._say("", "Installing OpenCode 1.18.33 with npm …")
            self.spinner.show()
        elif action == notices.ACCOUNT:
            self.account_requested.emit()
        elif action == notices.SETTINGS:
            self.settings_requested.emit()
        elif action == notices.RESTART:
            self._start()

    def _on_model_picked(self, model: str) -> None:
        if self.settings_service.set_model(model):  # saves the settings
            self.model_changed.emit(model)

    # ------------------------------------------------------------------------ rendering

    def _render_detail(self) -> None:
        ws = self.current
        has = bool(ws)
        self.remove_button.setEnabled(has)
        if not has:
            self.name_label.setText("No workspace selected")
            self.path_label.setText("Add a project folder on the left to start.")
            self.log_view.follow("")
        else:
            self.name_label.setText(workspace_label(ws))
            self.path_label.setText(remote_detail(ws) if is_remote(ws) else ws)
        self._render_idle_override()
        saved = self._banners.get(ws)
        if saved:
            kind, text, action, details = saved
            self.banner.show_message(kind, text, action=action, details=details)
        elif self.banner.kind != "app":
            self.banner.clear()
        self._render_trust()
        self._render_status()

    def _render_status(self) -> None:
        ws = self.current
        state = self.servers.state_of(ws) if ws else None
        rec = state.record if state else None
        launch_busy = self.launch.busy.get(ws, "") if ws and self.launch is not None else ""
        installing = bool(self.servers.busy.get("*install"))
        view = viewmodels.server_view(
            ws,
            state.status if state else STOPPED,
            rec,
            launch_available=self.launch is not None,
            launching=launch_busy,
            installing=installing,
            message=self._messages.get(ws, ""),
            install_message=self._messages.get("", ""),
            usage=self.servers.usage_of(ws) if ws and rec is not None and rec.active else None,
        )
        self.status_icon.setPixmap(status_icon(view.status).pixmap(14, 14))
        self.status_label.setText(view.status_text)
        self.port_label.setText(view.port_text)
        self.url_label.setText(view.url_text)
        self.copy_button.setVisible(view.copy_visible)
        self.uptime_label.setText(view.uptime_text)
        self.usage_label.setText(view.usage_text)
        self.spinner.setVisible(view.spinner)
        self.start_button.setEnabled(view.start_enabled)
        self.start_button.setText(view.start_text)
        self.stop_button.setEnabled(view.stop_enabled)
        self.cancel_launch_button.setVisible(view.cancel_launch_visible)
        for b, tip in zip(
            (self.openwork_button, self.cli_button), view.launch_tooltips, strict=True
        ):
            b.setEnabled(view.launch_enabled)
            b.setToolTip(tip)
        self.progress_label.setText(view.progress_text)
        self._retarget_agent(view.agent_target)
        if self.agent_panel is not None:  # a task wakes a sleeping server first (issue 15)
            self.agent_panel.set_wake(self._start if view.wakes else None, ws)
        if rec is not None and rec.log_path:
            self.log_view.follow(rec.log_path)
        elif ws and rec is None:
            self.log_view.follow("")

    def _render_total(self) -> None:
        running = [u for u in self.servers.usage.values() if u.processes]
        if not running:
            self.total_label.setText("")
            return
        self.total_label.setText(f"All servers: {format_usage(total(running))}")

    # ------------------------------------------------------------------------- signals

    def _retarget_agent(self, rec: ServerRecord | None) -> None:
        """Point the agent panel at the selected workspace's server when that changes."""
        if self.agent_panel is None:
            return
        sid = rec.server_id if rec is not None else None
        if sid != self._agent_target:
            self._agent_target = sid
            self.agent_panel.set_server_target(rec, self.servers.manager.password)

    def _say(self, ws: str, line: str) -> None:
        self._messages[ws] = line
        if ws in (self.current, ""):
            self.progress_label.setText(line)

    def _on_records(self, _records: list[ServerRecord]) -> None:
        self._reload_list()
        self._render_status()

    def _on_busy(self, ws: str, _state: str) -> None:
        self._reload_list()
        if ws == self.current:
            self._render_status()

    def _on_progress(self, ws: str, line: str) -> None:
        self._say(ws, line)

    def _on_started(self, ws: str, result: StartResult) -> None:
        rec = result.record
        verb = "Reusing the running server" if result.reused else "Started"
        msg = f"{verb}: OpenCode {rec.opencode_version} on port {rec.port}, model {rec.model}."
        self._say(ws, msg)
        if result.warnings:
            self._set_banner(ws, "warning", " ".join(result.warnings), None, "")
        if self.trust is not None and not rec.trusted:
            self.trust.check(ws)
        self._reload_list()
        self._render_status()

    def _on_stopped(self, ws: str) -> None:
        self._say(ws, "Server stopped.")
        if ws in self._restart_pending:
            self._restart_pending.discard(ws)
            self.servers.start(ws)
        self._reload_list()
        self._render_status()

    def _on_failed(self, ws: str, error: SmartSpecError) -> None:
        if self.agent_panel is not None:
            self.agent_panel.drop_pending(ws)  # a task that waited for a wake
        self._messages.pop(ws, None)
        self.spinner.hide()
        self._show_error(ws, error)
        self._render_status()

    def _show_error(self, ws: str, error: SmartSpecError) -> None:
        n = notices.error_notice(error)  # the one code → words and button table
        target = ws or self.current
        self._set_banner(target, n.level, n.text, n.action.pair() if n.action else None, n.details)

    def _set_banner(
        self, ws: str, kind: str, text: str, action: tuple[str, str] | None, details: str
    ) -> None:
        self._banners[ws] = (kind, text, action, details)
        if ws == self.current:
            self.banner.show_message(kind, text, action=action, details=details)

    def _on_crashed(self, rec: ServerRecord) -> None:
        tail = ""
        try:
            with open(rec.log_path, encoding="utf-8", errors="replace") as f:
                tail = "".join(f.readlines()[-12:])
        except OSError:
            pass
        text = (
            f"<b>The server for {_esc(workspace_name(rec.workspace_path))} crashed "
            f"(exit code {rec.exit_code}).</b><br>The last log lines are below; "
            "Restart starts a fresh server."
        )
        self._set_banner(rec.workspace_path, "error", text, (notices.RESTART, "Restart"), tail)
        self._reload_list()
        self._render_status()

    def _on_models(self, models: list[str]) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(models)
        if self.settings.model in models:
            self.model_combo.setCurrentText(self.settings.model)
        elif models:
            self.model_combo.setCurrentIndex(0)
        self.model_combo.blockSignals(False)

    def _on_install_progress(self, line: str) -> None:
        self._say("", line)

    def _on_installed(self, path: str) -> None:
        self.spinner.hide()
        self.banner.clear()
        for ws, (_kind, _text, action, _details) in list(self._banners.items()):
            if action is not None and action[0] == notices.INSTALL:
                self._banners.pop(ws)
        self._messages.pop("", None)
        self._say(self.current, f"OpenCode installed at {path}. Start the server again.")
        self._render_status()

    def _render_trust(self) -> None:
        ws = self.current
        code = self._untrusted_code.get(ws)
        if code is not None:
            self.trust_banner.show_untrusted(ws, code)
        elif ws in self._just_trusted:
            rec = self.servers.state_of(ws).record
            running = rec is not None and rec.active and not rec.trusted
            self.trust_banner.show_trusted(ws, running=running)
        else:
            self.trust_banner.hide()

    def _on_trust_checked(self, ws: str, code: ProjectCode, trusted: bool) -> None:
        if not trusted and code.any:
            self._untrusted_code[ws] = code
        else:
            self._untrusted_code.pop(ws, None)
        if ws == self.current:
            self._render_trust()

    def _on_trust_changed(self, ws: str, trusted: bool) -> None:
        self._untrusted_code.pop(ws, None)
        if trusted:
            self._just_trusted.add(ws)
            self._say(ws, f"Trusted {ws}.")
        else:
            self._just_trusted.discard(ws)
        if ws == self.current:
            self._render_trust()

    def _restart(self, ws: str) -> None:
        """Stop the workspace's server and start it again (e.g. to apply a trust change)."""
        self._just_trusted.discard(ws)
        self._render_trust()
        if self.servers.record_for(ws) is None:
            self.servers.start(ws)
            return
        self._restart_pending.add(ws)
        self.servers.stop(ws)

    def _on_opened(self, ws: str, what: str, outcome: object) -> None:
        message = getattr(outcome, "message", "")
        notice = getattr(outcome, "notice", None)
        self._say(ws, message)
        if notice:
            self._set_banner(ws, "info", _esc(notice), None, "")
        if getattr(outcome, "warning", None):  # e.g. another local user tried to get in
            self._set_banner(ws, "warning", _esc(str(getattr(outcome, "warning", ""))), None, "")
        self._reload_list()

    # ---------------------------------------------------------------- worktrees (issue 14)

    def attach_worktrees(self, panel: QWidget) -> None:
        """Show ``panel`` (a WorktreesPanel) under the workspace list; it follows the selected
        workspace, and its Open shows a worktree as the selected workspace."""
        self.worktrees_panel = panel
        left = self.list.parentWidget()
        layout = left.layout() if left is not None else None
        assert isinstance(layout, QVBoxLayout)
        layout.insertWidget(layout.indexOf(self.list) + 1, panel, 1)
        follow = getattr(panel, "set_repository", None)
        opener = getattr(panel, "open_requested", None)
        if follow is not None:
            self.list.currentItemChanged.connect(
                lambda item, _prev: follow(item.data(ROLE_PATH) if item is not None else "")
            )
            follow(self.current)
        if opener is not None:
            opener.connect(self.add_workspace)
        service: Any = getattr(panel, "service", None)
        if hasattr(service, "forget_workspace"):  # a discarded worktree leaves the list
            service.forget_workspace = self.settings_service.forget_workspace
        discarded = getattr(service, "discarded", None)
        if discarded is not None:  # its folder left the remembered workspaces
            discarded.connect(self._on_worktree_discarded)

    def _on_worktree_discarded(self, _repo: str, _name: str) -> None:
        self.workspaces_changed.emit()
        self._reload_list()


sleeping_note = viewmodels.sleeping_note

_esc = notices.escape
