"""The Settings page: edits a copy of the settings, validates, then hands it to the settings
service (which applies and saves it)."""

from __future__ import annotations

import dataclasses
from typing import cast

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.errors import ConfigError, SmartSpecError
from smartspec_desktop.core.launch.terminals import supported_terminals
from smartspec_desktop.core.storage.config import OPENWORK_MODES, OpenWorkMode, Settings
from smartspec_desktop.services.settings import SettingsService
from smartspec_desktop.services.trust import TrustService
from smartspec_desktop.ui.trust import TrustedFolders
from smartspec_desktop.ui.widgets import Banner

TERMINALS = ["auto", *supported_terminals()]


class SettingsPage(QWidget):
    applied = Signal()  # settings changed and saved

    def __init__(
        self,
        settings: SettingsService,
        parent: QWidget | None = None,
        *,
        trust: TrustService | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = settings
        self.trust = trust
        self.trusted_folders = TrustedFolders()
        self.banner = Banner()
        self.backend_url = QLineEdit()
        self.opencode_path = QLineEdit()
        self.opencode_path.setPlaceholderText("empty: the app's own install, then PATH")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_opencode)
        self.port_start = QSpinBox()
        self.port_end = QSpinBox()
        for box in (self.port_start, self.port_end):
            box.setRange(1, 65535)
        self.terminal = QComboBox()
        self.terminal.setEditable(True)
        self.terminal.addItems(TERMINALS)
        self.terminal.setToolTip(
            "A terminal name, or your own command with {command}, e.g. myterm -e {command}"
        )
        self.openwork_mode = QComboBox()
        self.openwork_mode.addItems(list(OPENWORK_MODES))
        self.openwork_mode.setToolTip(
            "auto: openwork-server if installed, else OpenCode's web UI; openwork; web"
        )
        self.openwork_path = QLineEdit()
        self.openwork_path.setPlaceholderText("empty: openwork-server on PATH")
        self.stop_on_quit = QCheckBox("Stop the servers this window started when I quit")
        self.ask_permissions = QCheckBox(
            "Ask me before the agent edits files or runs commands (servers started from now on)"
        )
        # Daily token budget per workspace (issue 9): the broker refuses calls past it.
        self._caps: dict[str, int] = {}
        self.cap_workspace = QComboBox()
        self.cap_workspace.setObjectName("day-cap-workspace")
        self.cap_workspace.setMinimumWidth(260)
        self.day_cap = QSpinBox()
        self.day_cap.setObjectName("day-cap")
        self.day_cap.setRange(0, 1_000_000_000)
        self.day_cap.setSingleStep(50_000)
        self.day_cap.setSpecialValueText("no daily budget")
        self.day_cap.setSuffix(" tokens/day")
        self.day_cap.setGroupSeparatorShown(True)
        self.day_cap.setToolTip(
            "Tokens this workspace's agent may use per day; calls past it are refused "
            "(Paused: budget reached). Applies to a running server at once."
        )
        self.cap_workspace.currentTextChanged.connect(self._show_cap)
        self.day_cap.valueChanged.connect(self._keep_cap)
        self.start_timeout = QDoubleSpinBox()
        self.start_timeout.setRange(5, 600)
        self.start_timeout.setSuffix(" s")
        self.idle_minutes = QDoubleSpinBox()  # idle servers sleep (issue 15)
        self.idle_minutes.setRange(0, 24 * 60)
        self.idle_minutes.setDecimals(1)
        self.idle_minutes.setSuffix(" min")
        self.idle_minutes.setSpecialValueText("never")
        self.idle_minutes.setToolTip(
            "A server with no busy session, no client connected and no gateway call for this "
            "long is stopped to free its memory; its workspace shows Sleeping and any action "
            "wakes it. 0 = never. Servers started from now on."
        )
        save = QPushButton("Save")
        save.setObjectName("primary")
        save.clicked.connect(self.apply)
        revert = QPushButton("Revert")
        revert.clicked.connect(self.load)

        form = QFormLayout()
        form.addRow("Backend URL", self.backend_url)
        oc = QHBoxLayout()
        oc.addWidget(self.opencode_path, 1)
        oc.addWidget(browse)
        form.addRow("OpenCode path", oc)
        ports = QHBoxLayout()
        ports.addWidget(self.port_start)
        ports.addWidget(self.port_end)
        ports.addStretch(1)
        form.addRow("Preferred ports", ports)
        form.addRow("Start timeout", self.start_timeout)
        form.addRow("Stop idle servers after", self.idle_minutes)
        form.addRow("Terminal", self.terminal)
        form.addRow("OpenWork mode", self.openwork_mode)
        form.addRow("openwork-server path", self.openwork_path)
        form.addRow("", self.stop_on_quit)
        form.addRow("", self.ask_permissions)
        caps = QHBoxLayout()
        caps.addWidget(self.cap_workspace, 1)
        caps.addWidget(self.day_cap)
        form.addRow("Daily token budget", caps)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(revert)
        buttons.addWidget(save)
        lay = QVBoxLayout(self)
        lay.addWidget(self.banner)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.trusted_folders)
        self.trusted_folders.setVisible(trust is not None)
        if trust is not None:
            trust.entries_loaded.connect(self.trusted_folders.set_entries)
            trust.changed.connect(self._on_trust_changed)
            trust.failed.connect(self._on_trust_failed)
            self.trusted_folders.revoke_clicked.connect(lambda ws: trust.set_trusted(ws, False))
            trust.load()
        lay.addStretch(1)
        self.load()

    @property
    def settings(self) -> Settings:
        """The live settings (read here; changed only through :attr:`service`)."""
        return self.service.settings

    def load(self) -> None:
        s = self.settings
        self.backend_url.setText(s.backend_url)
        self.opencode_path.setText(s.opencode_path)
        self.port_start.setValue(s.port_range_start)
        self.port_end.setValue(s.port_range_end)
        self.start_timeout.setValue(s.start_timeout)
        self.idle_minutes.setValue(s.idle_minutes)
        self.terminal.setCurrentText(s.terminal)
        self.openwork_mode.setCurrentText(s.openwork_mode)
        self.openwork_path.setText(s.openwork_server_path)
        self.stop_on_quit.setChecked(s.stop_servers_on_quit)
        self.ask_permissions.setChecked(s.agent_permissions == "ask")
        self._caps = dict(s.workspace_day_caps)
        names = list(dict.fromkeys([*s.recent_workspaces, *sorted(self._caps)]))
        self.cap_workspace.blockSignals(True)
        self.cap_workspace.clear()
        self.cap_workspace.addItems(names)
        self.cap_workspace.blockSignals(False)
        self.cap_workspace.setEnabled(bool(names))
        self.day_cap.setEnabled(bool(names))
        self.cap_workspace.setPlaceholderText("no workspace yet")
        self._show_cap(self.cap_workspace.currentText())

    def apply(self) -> bool:
        candidate = dataclasses.replace(
            self.settings,
            backend_url=self.backend_url.text().strip().rstrip("/"),
            opencode_path=self.opencode_path.text().strip(),
            port_range_start=self.port_start.value(),
            port_range_end=self.port_end.value(),
            start_timeout=float(self.start_timeout.value()),
            idle_minutes=float(self.idle_minutes.value()),
            terminal=self.terminal.currentText().strip() or "auto",
            # validate() below refuses anything else.
            openwork_mode=cast(OpenWorkMode, self.openwork_mode.currentText()),
            openwork_server_path=self.openwork_path.text().strip(),
            stop_servers_on_quit=self.stop_on_quit.isChecked(),
            agent_permissions="ask" if self.ask_permissions.isChecked() else "default",
            workspace_day_caps={ws: cap for ws, cap in self._caps.items() if cap > 0},
        )
        try:
            candidate.validate()
        except ConfigError as e:
            self.banner.show_message("error", f"<b>{e.problem}</b><br>{e.fix}")
            return False
        self.service.replace(candidate)  # applies, publishes to the workers, saves
        self.banner.show_message("info", "Settings saved. Servers started from now on use them.")
        self.applied.emit()
        return True

    def _browse_opencode(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the opencode program")
        if path:
            self.opencode_path.setText(path)

    def _show_cap(self, workspace: str) -> None:
        self.day_cap.blockSignals(True)
        self.day_cap.setValue(self._caps.get(workspace, 0))
        self.day_cap.blockSignals(False)

    def _keep_cap(self, value: int) -> None:
        ws = self.cap_workspace.currentText()
        if ws:
            self._caps[ws] = value

    # ---------------------------------------------------------------------------- trust

    def _on_trust_changed(self, ws: str, trusted: bool) -> None:
        if not trusted:
            self.banner.show_message(
                "info",
                f"Revoked trust in {_esc(ws)}. Its own plugins and MCP servers stay off from the "
                "next start of its server (restart it if it is running).",
            )

    def _on_trust_failed(self, ws: str, error: SmartSpecError) -> None:
        self.banner.show_message("error", f"<b>{_esc(error.problem)}</b><br>{_esc(error.fix)}")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
