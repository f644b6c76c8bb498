"""Workspace trust in the window: the banner of an untrusted folder with project code, and the
Settings list of trusted folders. Both only render what :mod:`..services.trust` reports."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.remote.naming import workspace_host, workspace_name
from smartspec_desktop.core.servers.trust import (
    TAKES_EFFECT,
    UNTRUSTED_EFFECT,
    ProjectCode,
    TrustEntry,
)

MAX_LINES = 8


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class TrustBanner(QFrame):
    """ "This folder is not trusted" with what it would run, **Trust this folder**, then Restart."""

    trust_clicked = Signal(str)  # workspace
    restart_clicked = Signal(str)  # workspace

    STYLE = "QFrame#trustBanner { background:#fff7ed; border:1px solid #fdba74; }"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trustBanner")
        self.setStyleSheet(self.STYLE)
        self.workspace = ""
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setStyleSheet("color:#7c2d12;")
        self.trust_button = QPushButton("Trust this folder")
        self.trust_button.setObjectName("primary")
        self.trust_button.setToolTip(
            "Let this folder's own plugins, MCP servers, agents and instructions load. "
            "Revoke it any time in Settings."
        )
        self.trust_button.clicked.connect(lambda: self.trust_clicked.emit(self.workspace))
        self.restart_button = QPushButton("Restart")
        self.restart_button.setToolTip("Stop this folder's server and start it again")
        self.restart_button.clicked.connect(lambda: self.restart_clicked.emit(self.workspace))
        self.close_button = QPushButton("Dismiss")
        self.close_button.clicked.connect(self.hide)
        buttons = QVBoxLayout()
        buttons.addWidget(self.trust_button)
        buttons.addWidget(self.restart_button)
        buttons.addWidget(self.close_button)
        buttons.addStretch(1)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 8)
        lay.addWidget(self.text, 1)
        lay.addLayout(buttons)
        self.hide()

    def show_untrusted(self, workspace: str, code: ProjectCode) -> None:
        """The folder is untrusted and has project code: say what it would run."""
        self.workspace = workspace
        if code.remote:
            self._show_remote_untrusted(workspace, code.unlisted)
            return
        lines = code.lines()
        shown = "".join(f"<li>{_esc(line)}</li>" for line in lines[:MAX_LINES])
        if len(lines) > MAX_LINES:
            shown += f"<li>… and {len(lines) - MAX_LINES} more</li>"
        what = "runs code of its own" if code.runs_code else "has its own OpenCode setup"
        # A remote folder's list was made on its host (issue 15): say so.
        where = f" on {_esc(code.host)}" if code.host else ""
        self.text.setText(
            f"<b>This folder{where} {what}, and you have not trusted it, so none of it was "
            f"loaded.</b><br>{_esc(UNTRUSTED_EFFECT)}. It would load:<ul style='margin:2px'>"
            f"{shown}</ul>Trust it only if you trust its code: it would run with your "
            f"account's access. {_esc(TAKES_EFFECT)}"
        )
        self.trust_button.show()
        self.restart_button.hide()
        self.show()

    def _show_remote_untrusted(self, workspace: str, why: str = "") -> None:
        """A remote folder (issue 15) whose files could not be listed on its host."""
        reason = f"It could not be listed ({_esc(why)})" if why else "It was not listed"
        self.text.setText(
            f"<b>This remote folder is not trusted, so {_esc(UNTRUSTED_EFFECT)}.</b>"
            f"<br>{reason}: look at {_esc(workspace_name(workspace))} on "
            f"{_esc(workspace_host(workspace))} before you trust it; trust it only if you "
            f"trust its code, it would run with your account's access. {_esc(TAKES_EFFECT)}"
        )
        self.trust_button.show()
        self.restart_button.hide()
        self.show()

    def show_trusted(self, workspace: str, *, running: bool) -> None:
        """Just trusted: offer Restart when the running server does not load it yet."""
        self.workspace = workspace
        if running:
            self.text.setText(
                "<b>Trusted.</b> The running server was started without the folder's own "
                "plugins and MCP servers: restart it to load them."
            )
        else:
            self.text.setText("<b>Trusted.</b> Its own code loads at the next start.")
        self.trust_button.hide()
        self.restart_button.setVisible(running)
        self.show()


class TrustedFolders(QGroupBox):
    """Settings: the trusted folders, each revocable."""

    revoke_clicked = Signal(str)  # workspace

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Trusted folders", parent)
        self.list = QListWidget()
        self.list.setMinimumHeight(72)
        self.list.setMaximumHeight(140)
        self.list.currentItemChanged.connect(lambda *_a: self._enable())
        self.revoke_button = QPushButton("Revoke")
        self.revoke_button.clicked.connect(self._revoke)
        self.empty = QLabel("No folder is trusted: no workspace's own plugins or MCP servers run.")
        self.empty.setStyleSheet("color:#6b7280;")
        note = QLabel(
            f"A trusted folder's own plugins, MCP servers, agents and instructions load when its "
            f"server starts; an untrusted one's are ignored. {TAKES_EFFECT} A git worktree or a "
            "subfolder of a trusted folder is trusted separately."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color:#6b7280; font-size:11px;")
        note.setMinimumHeight(note.sizeHint().height() * 2)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        side = QVBoxLayout()
        side.addWidget(self.revoke_button)
        side.addStretch(1)
        row.addLayout(side)
        lay = QVBoxLayout(self)
        lay.addWidget(self.empty)
        lay.addLayout(row)
        lay.addWidget(note)
        self.set_entries([])

    def set_entries(self, entries: list[TrustEntry]) -> None:
        self.list.clear()
        for e in entries:
            host = workspace_host(e.path)  # a remote folder (issue 15): say on which host
            text = f"{workspace_name(e.path)} on {host}  ({e.path})" if host else e.path
            item = QListWidgetItem(text)
            item.setToolTip(f"Trusted {e.trusted_at}" if e.trusted_at else e.path)
            item.setData(Qt.ItemDataRole.UserRole, e.path)
            self.list.addItem(item)
        self.empty.setVisible(not entries)
        self._enable()

    def _enable(self) -> None:
        self.revoke_button.setEnabled(self.list.currentItem() is not None)
        self.revoke_button.setVisible(self.list.count() > 0)

    def _revoke(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.revoke_clicked.emit(str(item.data(Qt.ItemDataRole.UserRole)))
