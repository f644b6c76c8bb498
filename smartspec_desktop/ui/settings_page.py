"""The Settings page: edits a copy of the settings, validates, then applies and saves."""

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

from smartspec_desktop.core.errors import ConfigError
from smartspec_desktop.core.launch.terminals import supported_terminals
from smartspec_desktop.core.storage.config import OPENWORK_MODES, OpenWorkMode, Settings
from smartspec_desktop.ui.widgets import Banner

TERMINALS = ["auto", *supported_terminals()]


class SettingsPage(QWidget):
    applied = Signal()  # settings changed and saved

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
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
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(revert)
        buttons.addWidget(save)
        lay = QVBoxLayout(self)
        lay.addWidget(self.banner)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addStretch(1)
        self.load()

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
        )
        try:
            candidate.validate()
        except ConfigError as e:
            self.banner.show_message("error", f"<b>{e.problem}</b><br>{e.fix}")
            return False
        # Apply in place: the core holds this very object.
        for f in dataclasses.fields(Settings):
            setattr(self.settings, f.name, getattr(candidate, f.name))
        self.banner.show_message("info", "Settings saved. Servers started from now on use them.")
        self.applied.emit()
        return True

    def _browse_opencode(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the opencode program")
        if path:
            self.opencode_path.setText(path)
