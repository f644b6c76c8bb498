"""“Add remote folder…” (issue 15): a host from the user's ssh config (or any host ssh knows),
an optional user and port, and the folder's absolute path on the host, checked as typed.

The result is a :class:`RemoteAddress`; its canonical ``ssh://`` text is the workspace's identity
(the list, the settings, the registry). The hosts are read from the ssh config on a worker
thread (a home folder on a network file system can be slow), and kept for the next dialog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.errors import WorkspaceError
from smartspec_desktop.core.remote.address import SCHEME, RemoteAddress, parse_remote
from smartspec_desktop.core.remote.naming import remote_of, workspace_host, workspace_name
from smartspec_desktop.core.remote.sshconfig import (
    SshHost,
    config_path,
    offered_hosts,
    user_ssh_dir,
)
from smartspec_desktop.services.worker import Jobs

log = logging.getLogger(__name__)

#: The separator between a host alias and what the config says of it, in the host list.
_SEP = " — "
ERROR_STYLE = "color:#b91c1c;"
HINT_STYLE = "color:#6b7280; font-size:11px;"


def remote_detail(workspace: str) -> str:
    """The details line of a remote workspace: its folder, its host, its address."""
    addr = remote_of(workspace)
    if addr is None:  # e.g. a hand-edited settings file
        return workspace
    return f"Remote folder over SSH: {addr}"


def workspace_tooltip(workspace: str) -> str:
    host = workspace_host(workspace)
    return f"{workspace}\n{workspace_name(workspace)} on {host} (over SSH)" if host else workspace


def _short(path: Path) -> str:
    """``path`` with the home folder as ``~`` (the ssh config is usually ``~/.ssh/config``)."""
    home = user_ssh_dir().parent
    try:
        return "~/" + path.relative_to(home).as_posix()
    except ValueError:
        return str(path)


class HostCache:
    """The ssh config's hosts, read once off the GUI thread and shared by every dialog."""

    def __init__(self, read: Callable[[], list[SshHost]] = offered_hosts) -> None:
        self.read = read
        self.hosts: list[SshHost] | None = None
        #: Where they were read from, for the hint ("~/.ssh/config"); set with ``hosts``.
        self.where = ""
        self._waiting: list[Callable[[list[SshHost]], None]] = []

    def get(self, jobs: Jobs | None, deliver: Callable[[list[SshHost]], None]) -> None:
        """``deliver(hosts)`` on the GUI thread: at once when known, else after the read."""
        if self.hosts is not None:
            deliver(self.hosts)
            return
        self._waiting.append(deliver)
        if len(self._waiting) > 1:
            return  # a read is under way
        if jobs is None:
            self._done(self._read())
        else:
            jobs.submit(self._read, on_done=self._done, on_failed=self._failed)

    def _read(self) -> tuple[list[SshHost], str]:
        """Worker thread: the hosts, and the config's path (the password database may be slow)."""
        return self.read(), _short(config_path())

    def _failed(self, e: BaseException) -> None:
        log.error("could not read the ssh config's hosts", exc_info=e)
        self._done(([], ""))

    def _done(self, result: tuple[list[SshHost], str]) -> None:
        hosts, self.where = result
        self.hosts = list(hosts)
        waiting, self._waiting = self._waiting, []
        for deliver in waiting:
            deliver(self.hosts)

    def forget(self) -> None:
        """Read the config again next time (e.g. the user edited it)."""
        if not self._waiting:
            self.hosts = None


class RemoteFolderDialog(QDialog):
    """Host, user, port and folder → :attr:`address` (valid whenever OK is enabled)."""

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        jobs: Jobs | None = None,
        hosts: HostCache | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add remote folder")
        self.setObjectName("remote-folder-dialog")
        self.setMinimumWidth(520)
        self.address: RemoteAddress | None = None
        self._hosts: list[SshHost] = []
        self.cache = hosts if hosts is not None else HostCache()

        self.host = QComboBox()
        self.host.setObjectName("remote-host")
        self.host.setEditable(True)
        self.host.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        line = self.host.lineEdit()
        assert line is not None
        line.setPlaceholderText("a host or alias, e.g. devbox or me@build.example.com")
        self.host_hint = QLabel("Reading your ssh config …")
        self.host_hint.setStyleSheet(HINT_STYLE)
        self.host_hint.setWordWrap(True)
        # Room for a wrapped hint: a form row does not grow with its label's text.
        self.host_hint.setMinimumHeight(self.host_hint.fontMetrics().lineSpacing() * 2 + 4)
        self.user = QLineEdit()
        self.user.setObjectName("remote-user")
        self.user.setPlaceholderText("optional: as in your ssh config, else your login name")
        self.port = QLineEdit()
        self.port.setObjectName("remote-port")
        self.port.setValidator(QIntValidator(1, 65535, self.port))
        self.port.setPlaceholderText("optional: as in your ssh config, else 22")
        self.port.setMaximumWidth(260)
        self.path = QLineEdit()
        self.path.setObjectName("remote-path")
        self.path.setPlaceholderText("its absolute path on the host, e.g. /home/me/project")
        self.error = QLabel("")
        self.error.setObjectName("remote-error")
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.setWordWrap(True)
        self.preview = QLabel("")
        self.preview.setObjectName("remote-preview")
        self.preview.setStyleSheet(HINT_STYLE)
        self.preview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        note = QLabel(
            "The app connects with your own OpenSSH client (your ~/.ssh/config, keys and "
            "agent). Your SmartSpecPro key stays on this machine."
        )
        note.setStyleSheet(HINT_STYLE)
        note.setWordWrap(True)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = self.ok_button
        ok.setText("Add")
        ok.setObjectName("primary")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Host", self.host)
        form.addRow("", self.host_hint)
        form.addRow("User", self.user)
        form.addRow("Port", self.port)
        form.addRow("Remote folder", self.path)
        form.addRow("", self.error)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.preview)
        lay.addWidget(note)
        lay.addWidget(self.buttons)

        self.host.activated.connect(self._on_host_picked)
        self.host.editTextChanged.connect(lambda _t: self._on_host_typed())
        for edit in (self.user, self.port, self.path):
            edit.textChanged.connect(lambda _t: self.validate())
        self.validate()
        self.cache.get(jobs, self._set_hosts)

    @property
    def ok_button(self) -> QPushButton:
        button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert button is not None
        return button

    # ---------------------------------------------------------------------------- hosts

    def _set_hosts(self, hosts: list[SshHost]) -> None:
        typed = self.host.currentText()
        self._hosts = list(hosts)
        self.host.blockSignals(True)
        self.host.clear()
        for h in hosts:
            self.host.addItem(h.label, h.alias)
        self.host.setCurrentIndex(-1)
        self.host.setEditText(typed)
        self.host.blockSignals(False)
        self._on_host_typed()

    def _on_host_picked(self, index: int) -> None:
        alias = self.host.itemData(index)
        if isinstance(alias, str):
            self.host.setEditText(alias)
        self.path.setFocus()

    def _on_host_typed(self) -> None:
        """The hint under the host: what the config says of it, else where hosts come from."""
        typed = self.host_text().rpartition("@")[2].lower()
        known = next((h for h in self._hosts if h.alias.lower() == typed), None)
        where = self.cache.where or "your ssh config"
        if known is not None and known.summary:
            self.host_hint.setText(f"{known.alias}: {known.summary} (from your ssh config)")
        elif known is not None:
            self.host_hint.setText(f"{known.alias} (from your ssh config)")
        elif self._hosts:
            self.host_hint.setText(
                f"{len(self._hosts)} host(s) from {where}; or type any host ssh can reach."
            )
        else:
            self.host_hint.setText(f"No hosts in {where}; type any host ssh can reach.")
        self.validate()

    def host_text(self) -> str:
        """The host as typed, without the config's details of a picked list entry."""
        return self.host.currentText().split(_SEP, 1)[0].strip()

    # ------------------------------------------------------------------------- checking

    def validate(self) -> RemoteAddress | None:
        """Check the fields; shows the problem under them and enables OK only when valid."""
        self.address = None
        try:
            self.address = self._parse()
        except WorkspaceError as e:
            self.error.setText(e.problem)
        else:
            self.error.setText("")
        self.ok_button.setEnabled(self.address is not None)
        self.preview.setText(f"Workspace: {self.address}" if self.address else "")
        return self.address

    def _parse(self) -> RemoteAddress:
        host, user = self.host_text(), self.user.text().strip()
        port, path = self.port.text().strip(), self.path.text().strip()
        if not host:
            raise WorkspaceError("Enter the host (or an alias from your ssh config).")
        if "/" in host or " " in host:
            raise WorkspaceError(f"The host {host!r} has a “/” or a space in it.")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        if not path:
            raise WorkspaceError("Enter the folder's absolute path on the host.")
        if not path.startswith("/"):
            raise WorkspaceError(
                f"The remote folder {path!r} is not an absolute path: start it with /."
            )
        who = f"{user}@" if user else ""
        colon = f":{port}" if port else ""
        return parse_remote(f"{SCHEME}{who}{host}{colon}{path}")

    def accept(self) -> None:
        if self.validate() is not None:
            super().accept()
