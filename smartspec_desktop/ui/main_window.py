"""The main window: Dev Mode, Account and Settings tabs, a tray icon, and an orderly quit."""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMenu,
    QSystemTrayIcon,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop import __version__
from smartspec_desktop.core import readiness
from smartspec_desktop.core.remote.naming import workspace_label
from smartspec_desktop.core.servers.registry import CRASHED, RUNNING, SLEEPING, STOPPED
from smartspec_desktop.core.wiring import Core
from smartspec_desktop.services.account import AccountService
from smartspec_desktop.services.readiness import ReadinessService
from smartspec_desktop.services.servers import ServerService
from smartspec_desktop.services.settings import SettingsService
from smartspec_desktop.services.trust import TrustService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui import notices
from smartspec_desktop.ui.account import AccountPage, format_credits
from smartspec_desktop.ui.agent import AgentPanel
from smartspec_desktop.ui.devmode import GATEWAY_NOTE, DevModePanel
from smartspec_desktop.ui.readiness import ReadinessPanel
from smartspec_desktop.ui.settings_page import SettingsPage
from smartspec_desktop.ui.widgets import STATUS_LABELS

log = logging.getLogger(__name__)

#: How long quitting waits for owned servers to stop before leaving them to the next launch.
QUIT_WAIT_MS = 10_000


DEMO_BANNER_STYLE = (
    "background:#fef3c7; color:#78350f; border:1px solid #f59e0b; border-radius:4px; "
    "padding:6px 10px; font-weight:600;"
)


class MainWindow(QMainWindow):
    quit_ready = Signal()  # servers handled; the app may exit
    demo_requested = Signal()  # "Try without a backend" on the readiness panel

    def __init__(
        self,
        core: Core,
        jobs: Jobs,
        servers: ServerService,
        account: AccountService,
        *,
        launch: Any | None = None,
        agent_panel: AgentPanel | None = None,
        icon: QIcon | None = None,
        tray: bool = True,
        settings: SettingsService | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        #: The one owner of the settings (saves them; worker threads get frozen copies).
        self.settings = settings or SettingsService.for_core(core, jobs, self)
        self.jobs = jobs
        self.servers = servers
        self.account = account
        self.setWindowTitle("SmartSpec Desktop")
        if icon is not None:
            self.setWindowIcon(icon)
        self.resize(1120, 720)

        self.trust = TrustService(core.servers.trust, jobs)
        self.devmode = DevModePanel(
            servers, self.settings, launch=launch, agent_panel=agent_panel, trust=self.trust
        )
        self.account_page = AccountPage(account)
        self.settings_page = SettingsPage(self.settings, trust=self.trust)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.devmode, "Dev Mode")
        self.tabs.addTab(self.account_page, "Account")
        self.tabs.addTab(self.settings_page, "Settings")
        # Above the tabs: the demo banner (demo mode only) and the readiness panel (attached by
        # the app), so both are seen whatever tab is open.
        central = QWidget()
        self.central_layout = QVBoxLayout(central)
        self.central_layout.setContentsMargins(8, 8, 8, 0)
        self.demo_banner = QLabel()
        self.demo_banner.setStyleSheet(DEMO_BANNER_STYLE)
        self.demo_banner.setVisible(False)
        self.central_layout.addWidget(self.demo_banner)
        self.central_layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.readiness_panel: ReadinessPanel | None = None
        self.readiness_action = (
            self.menuBar().addMenu("&Help").addAction("Readiness check…", self.show_readiness)
        )
        self.readiness_action.setEnabled(False)
        self.demo_label = ""

        self.account_chip = QLabel("Not signed in")
        self.statusBar().addPermanentWidget(self.account_chip)
        self.statusBar().showMessage(f"SmartSpec Desktop {__version__}", 4000)

        self.devmode.account_requested.connect(
            lambda: self.tabs.setCurrentWidget(self.account_page)
        )
        self.devmode.settings_requested.connect(
            lambda: self.tabs.setCurrentWidget(self.settings_page)
        )
        self.settings.save_failed.connect(self._save_failed)
        self.settings_page.applied.connect(self._settings_applied)
        self.account_page.key_accepted.connect(servers.load_models)
        account.signed_in.connect(self._render_account)
        account.signed_out.connect(self._render_account)
        account.balance_changed.connect(self._on_balance)
        account.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        servers.records_changed.connect(self._update_tray)
        servers.crashed.connect(self._notify_crash)
        if agent_panel is not None:
            agent_panel.task_finished.connect(self._task_finished)

        for w in core.warnings:
            self.devmode.banner.show_message("warning", w)
            self.devmode.banner.kind = "app"

        self._quitting = False
        self.tray: QSystemTrayIcon | None = None
        if tray and QSystemTrayIcon.isSystemTrayAvailable() and icon is not None:
            self._build_tray(icon)

    # ----------------------------------------------------------------------- readiness

    def attach_readiness(
        self, service: ReadinessService, *, demo_available: bool = True
    ) -> ReadinessPanel:
        """Put the readiness panel above the tabs (hidden until :meth:`check_readiness`)."""
        panel = ReadinessPanel(service, demo_available=demo_available)
        panel.setVisible(False)
        panel.fix_requested.connect(self._readiness_fix)
        panel.demo_requested.connect(self.demo_requested.emit)
        service.finished.connect(self._readiness_done)
        self.central_layout.insertWidget(1, panel)
        self.readiness_panel = panel
        self.readiness_action.setEnabled(True)
        # What a fix changes is checked again (only while the panel is shown: each round costs
        # two backend requests of the 60 a minute).
        self.servers.installed.connect(lambda _p: self._recheck_if_shown())
        self.settings_page.applied.connect(self._recheck_if_shown)
        self.account_page.key_accepted.connect(self._recheck_if_shown)
        return panel

    def check_readiness(self, *, show: bool) -> None:
        """Run every check; the panel shows when ``show`` or as soon as one is not ready."""
        if self.readiness_panel is None:
            return
        if show:
            self.readiness_panel.show()
        self.readiness_panel.service.run()

    def show_readiness(self) -> None:
        self.check_readiness(show=True)

    def _recheck_if_shown(self, *_args: object) -> None:
        if self.readiness_panel is not None and self.readiness_panel.isVisible():
            self.readiness_panel.service.run()

    def _readiness_done(self, results: dict[str, readiness.Check]) -> None:
        if self.readiness_panel is not None and not readiness.all_ok(results):
            self.readiness_panel.show()

    def _readiness_fix(self, fix_id: str) -> None:
        action = notices.action_for_fix(fix_id)  # the one fix → action table
        if action is None:
            return
        if action.id == notices.SETTINGS:
            self.tabs.setCurrentWidget(self.settings_page)
        elif action.id == notices.ACCOUNT:
            self.tabs.setCurrentWidget(self.account_page)
        elif action.id == notices.INSTALL:
            self.tabs.setCurrentWidget(self.devmode)
            self.servers.install_opencode()

    # ---------------------------------------------------------------------------- demo

    def mark_demo(self, label: str, detail: str = "") -> None:
        """Say on every page that the demo backend is in use: a banner above the tabs, the
        title, the Account page and the Agent tab."""
        self.demo_label = label
        self.setWindowTitle(f"SmartSpec Desktop — {label}")
        self.demo_banner.setText(f"⚠ {label}" + (f"  ·  {detail}" if detail else ""))
        self.demo_banner.setVisible(True)
        # The backend is the demo's for this run: not editable here (settings.json keeps yours).
        self.settings_page.backend_url.setReadOnly(True)
        self.settings_page.backend_url.setToolTip(
            "The local demo backend, for this run only. Start SmartSpec Desktop without --demo "
            "to use (and change) your own backend URL."
        )
        for note in self.devmode.findChildren(QLabel):
            if note.text() == GATEWAY_NOTE:
                note.setText(
                    "Demo mode: OpenCode runs through a local demo gateway with scripted answers "
                    "and simulated credits. Nothing is charged; your own key is not used."
                )
        for page in (self.account_page, self.devmode.agent_panel, self.settings_page):
            lay = page.layout() if page is not None else None
            if isinstance(lay, QVBoxLayout):
                note = QLabel(f"⚠ {label}")
                note.setObjectName("demo_note")
                note.setStyleSheet(DEMO_BANNER_STYLE)
                lay.insertWidget(0, note)

    # ------------------------------------------------------------------------ settings

    def _save_failed(self, e: object) -> None:
        self.statusBar().showMessage(str(e), 10_000)  # names the file, the cause and the fix

    def _settings_applied(self) -> None:
        self.account.load_key_status()
        self._push_day_caps()

    def _push_day_caps(self) -> None:
        """Running servers' brokers take the workspaces' daily budgets at once (issue 9)."""

        def shown(warnings: list[str]) -> None:
            for w in warnings:
                self.statusBar().showMessage(
                    f"A daily budget did not reach its server: {w}", 10_000
                )

        self.jobs.submit(self.core.servers.apply_day_caps, on_done=shown)

    # ------------------------------------------------------------------------- account

    def _render_account(self, *_args: object) -> None:
        user = self.account.user
        self.account_chip.setText(str(user.get("email", "")) if user else "Not signed in")

    def _on_balance(self, balance: dict[str, Any]) -> None:
        user = self.account.user or {}
        self.account_chip.setText(f"{user.get('email', '')}  ·  {format_credits(balance)}")

    # ---------------------------------------------------------------------------- tray

    def _build_tray(self, icon: QIcon) -> None:
        self.tray = QSystemTrayIcon(icon, self)
        self.tray.setToolTip("SmartSpec Desktop")
        self.tray_menu = QMenu()
        self.tray.setContextMenu(self.tray_menu)
        self.tray.activated.connect(lambda _reason: self.raise_window())
        self._update_tray()
        self.tray.show()

    def _update_tray(self, *_args: object) -> None:
        if self.tray is None:
            return
        menu = self.tray_menu
        menu.clear()
        menu.addAction("Show SmartSpec Desktop", self.raise_window)
        menu.addSeparator()
        running = 0
        for ws in self.devmode.workspaces()[:8]:
            state = self.servers.state_of(ws)
            name = workspace_label(ws)
            label = f"{name} — {STATUS_LABELS.get(state.status, state.status)}"
            action = QAction(label, menu)
            if state.status == RUNNING:
                running += 1
                action.triggered.connect(lambda _c=False, w=ws: self.servers.stop(w))
                action.setText(label + " (click to stop)")
            elif state.status in (STOPPED, CRASHED, SLEEPING):
                action.triggered.connect(lambda _c=False, w=ws: self.servers.start(w))
                verb = "wake" if state.status == SLEEPING else "start"
                action.setText(label + f" (click to {verb})")
            else:
                action.setEnabled(False)
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction("Quit", self.close)
        self.tray.setToolTip(f"SmartSpec Desktop — {running} server(s) running")

    def notify(self, title: str, message: str) -> None:
        """A desktop notification when the window is not in front; else the status bar."""
        if self.tray is not None and not self.isActiveWindow():
            self.tray.showMessage(title, message, QSystemTrayIcon.MessageIcon.Information, 8000)
        else:
            self.statusBar().showMessage(f"{title}: {message}", 8000)

    def _task_finished(self, ok: bool, summary: str) -> None:
        self.notify("Task finished" if ok else "Task did not finish", summary)
        self.account.refresh_balance()  # once per task: the backend's rate limit is shared

    def _notify_crash(self, rec: Any) -> None:
        self.notify(
            "OpenCode server crashed",
            f"{workspace_label(rec.workspace_path)}: exit code {rec.exit_code}. Restart it in "
            "Dev Mode.",
        )

    def raise_window(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # ---------------------------------------------------------------------------- quit

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._quitting:
            event.ignore()
            return
        owned = self.servers.owned_active()
        if not (self.settings.settings.stop_servers_on_quit and owned):
            self._finish_quit()
            event.accept()
            return
        # Stop owned servers off the GUI thread, with a bounded wait, then quit.
        event.ignore()
        self._quitting = True
        self.setEnabled(False)
        self.statusBar().showMessage(f"Stopping {len(owned)} server(s) before quitting …")
        QTimer.singleShot(QUIT_WAIT_MS, self._finish_quit)
        self.servers.stop_owned(self._finish_quit)

    def _finish_quit(self) -> None:
        if getattr(self, "_quit_done", False):
            return
        self._quit_done = True
        self.servers.timer.stop()
        if self.tray is not None:
            self.tray.hide()
        self.hide()
        self.quit_ready.emit()
