"""The Account page: sign in, credit balance, the API key and the account's keys."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.services.account import AccountService
from smartspec_desktop.ui.widgets import Banner


def format_credits(balance: dict[str, Any]) -> str:
    credits = balance.get("balance_credits")
    usd = balance.get("balance_usd")
    if not isinstance(credits, int | float):
        return "—"
    text = f"{credits:,.0f} credits"
    if isinstance(usd, int | float):
        text += f" (${usd:,.2f})"
    return text


def _short_time(value: object) -> str:
    """``2026-11-26T15:23:31.41+00:00`` → ``2026-11-26 15:23`` (UTC, as the backend sends it)."""
    text = str(value or "")
    return text[:16].replace("T", " ") + " UTC" if len(text) >= 16 else text


class AccountPage(QWidget):
    key_accepted = Signal()  # a new key is in place: reload models

    def __init__(self, account: AccountService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.account = account
        self.banner = Banner()

        # Sign in
        self.email = QLineEdit()
        self.email.setPlaceholderText("you@example.com")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.returnPressed.connect(self._sign_in)
        self.sign_in_button = QPushButton("Sign in")
        self.sign_in_button.clicked.connect(self._sign_in)
        self.sign_out_button = QPushButton("Sign out")
        self.sign_out_button.clicked.connect(account.sign_out)
        self.user_label = QLabel("Not signed in.")
        self.balance_label = QLabel("—")
        self.balance_label.setStyleSheet("font-size:15px; font-weight:600;")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(account.refresh_balance)
        sign = QGroupBox("SmartSpecPro account")
        form = QFormLayout(sign)
        form.addRow("Email", self.email)
        form.addRow("Password", self.password)
        row = QHBoxLayout()
        row.addWidget(self.sign_in_button)
        row.addWidget(self.sign_out_button)
        row.addStretch(1)
        form.addRow("", row)
        form.addRow("Signed in as", self.user_label)
        bal = QHBoxLayout()
        bal.addWidget(self.balance_label)
        bal.addWidget(self.refresh_button)
        bal.addStretch(1)
        form.addRow("Credit balance", bal)

        # API key
        self.key_label = QLabel("No key configured.")
        #: Which key wins when the keyring and SMARTSPEC_API_KEY both hold one.
        self.key_note_label = QLabel("")
        self.key_note_label.setWordWrap(True)
        self.key_note_label.setStyleSheet("color:#78350f;")
        self.key_note_label.hide()
        self.key_input = QLineEdit()
        self.key_input.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_input.setPlaceholderText("Paste an sk-smartspec-… key")
        self.key_input.returnPressed.connect(self._use_key)
        self.use_key_button = QPushButton("Check and save")
        self.use_key_button.clicked.connect(self._use_key)
        self.forget_button = QPushButton("Remove key")
        self.forget_button.clicked.connect(account.forget_key)
        self.create_button = QPushButton("Create a key for this computer")
        self.create_button.clicked.connect(account.create_key)
        self.keys_table = QTableWidget(0, 4)
        self.keys_table.setHorizontalHeaderLabels(["Name", "Key", "Status", "Last used"])
        self.keys_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.keys_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.keys_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.rotate_button = QPushButton("Rotate")
        self.rotate_button.clicked.connect(self._rotate)
        self.revoke_button = QPushButton("Revoke")
        self.revoke_button.clicked.connect(self._revoke)
        keybox = QGroupBox("API key (used by OpenCode through the gateway)")
        kl = QVBoxLayout(keybox)
        kl.addWidget(self.key_label)
        kl.addWidget(self.key_note_label)
        kr = QHBoxLayout()
        kr.addWidget(self.key_input, 1)
        kr.addWidget(self.use_key_button)
        kr.addWidget(self.forget_button)
        kl.addLayout(kr)
        kl.addWidget(self.create_button, 0, Qt.AlignmentFlag.AlignLeft)
        kl.addWidget(self.keys_table)
        kb = QHBoxLayout()
        kb.addWidget(self.rotate_button)
        kb.addWidget(self.revoke_button)
        kb.addStretch(1)
        kl.addLayout(kb)

        lay = QVBoxLayout(self)
        lay.addWidget(self.banner)
        lay.addWidget(sign)
        lay.addWidget(keybox, 1)

        self._keys: list[dict[str, Any]] = []
        account.signed_in.connect(self._on_signed_in)
        account.signed_out.connect(self._on_signed_out)
        account.balance_changed.connect(lambda b: self.balance_label.setText(format_credits(b)))
        account.key_changed.connect(self._on_key)
        account.keys_listed.connect(self._on_keys)
        account.keyring_missing.connect(self._on_keyring_missing)
        account.key_note.connect(self._on_key_note)
        account.message.connect(lambda m: self.banner.show_message("info", m))
        account.warned.connect(lambda m: self.banner.show_message("warning", m))
        account.failed.connect(self._on_failed)
        account.busy_changed.connect(self._on_busy)
        self._on_signed_out()

    # ------------------------------------------------------------------------ actions

    def _sign_in(self) -> None:
        if not self.email.text().strip() or not self.password.text():
            self.banner.show_message("error", "Enter your email and password to sign in.")
            return
        self.banner.clear()
        self.account.sign_in(self.email.text(), self.password.text())

    def _use_key(self) -> None:
        raw = self.key_input.text()
        if not raw.strip():
            self.banner.show_message("error", "Paste a key first (it starts with sk-smartspec-).")
            return
        self.banner.clear()
        self.account.use_key(raw)

    def _selected_key_id(self) -> str:
        row = self.keys_table.currentRow()
        if 0 <= row < len(self._keys):
            return str(self._keys[row].get("id", ""))
        self.banner.show_message("error", "Select a key in the table first.")
        return ""

    def _rotate(self) -> None:
        key_id = self._selected_key_id()
        if key_id:
            self.account.rotate_key(key_id)

    def _revoke(self) -> None:
        key_id = self._selected_key_id()
        if not key_id:
            return
        row = self.keys_table.currentRow()
        if self._keys[row].get("this_computer"):
            choice = self.ask_revoke_this_computers_key()
            if choice != "cancel":
                self.account.revoke_key(key_id, create_new=choice == "create")
            return
        answer = QMessageBox.question(
            self,
            "Revoke key",
            "Revoke this key? Servers using it stop getting answers until they use another key.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.account.revoke_key(key_id)

    def ask_revoke_this_computers_key(self) -> str:
        """The confirmation for revoking the key this computer uses: ``"create"`` (revoke, then
        create a new key for this computer), ``"only"`` or ``"cancel"``."""
        box = QMessageBox(self)
        box.setObjectName("revoke-this-computers-key")
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Revoke this computer's key")
        box.setText("This is the key this computer uses.")
        box.setInformativeText(
            "Revoking it stops the running servers from getting answers: the gateway rejects "
            "the key at once. Create a new key for this computer now (restart the servers to "
            "use it)?"
        )
        create = box.addButton("Revoke and create a new key", QMessageBox.ButtonRole.AcceptRole)
        only = box.addButton("Revoke only", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(create)
        box.exec()
        clicked = box.clickedButton()
        if clicked is create:
            return "create"
        if clicked is only:
            return "only"
        return "cancel"

    # ----------------------------------------------------------------------- rendering

    def _on_signed_in(self, user: dict[str, Any]) -> None:
        self.password.clear()
        name = user.get("full_name") or ""
        email = user.get("email") or ""
        self.user_label.setText(f"{name} <{email}>" if name else str(email))
        self._set_signed_in(True)
        self.account.list_keys()

    def _on_signed_out(self) -> None:
        self.user_label.setText("Not signed in.")
        self.balance_label.setText("—")
        self.keys_table.setRowCount(0)
        self._keys = []
        self._set_signed_in(False)

    def _set_signed_in(self, signed_in: bool) -> None:
        self.sign_in_button.setEnabled(not signed_in)
        self.email.setEnabled(not signed_in)
        self.password.setEnabled(not signed_in)
        for w in (
            self.sign_out_button,
            self.refresh_button,
            self.create_button,
            self.rotate_button,
            self.revoke_button,
        ):
            w.setEnabled(signed_in)
        tip = "" if signed_in else "Sign in first."
        for w in (self.create_button, self.rotate_button, self.revoke_button):
            w.setToolTip(tip)

    def _on_key(self, masked: str, source: str) -> None:
        if masked:
            self.key_label.setText(f"Using <b>{masked}</b> (from {source}).")
            self.key_input.clear()
            self.key_accepted.emit()
        else:
            self.key_label.setText("No key configured: paste one, or sign in and create one.")
        self.forget_button.setEnabled(bool(masked))

    def _on_keys(self, keys: list[dict[str, Any]]) -> None:
        self._keys = list(keys)
        self.keys_table.setRowCount(len(keys))
        for row, k in enumerate(keys):
            status = "active" if k.get("is_active", True) else "revoked"
            if k.get("this_computer"):
                status += " (this computer)"
            values = [
                str(k.get("name", "")),
                str(k.get("key_prefix", "")),
                status,
                _short_time(k.get("last_used_at")) or "never",
            ]
            for col, value in enumerate(values):
                self.keys_table.setItem(row, col, QTableWidgetItem(value))

    def _on_key_note(self, note: str) -> None:
        self.key_note_label.setText(note)
        self.key_note_label.setVisible(bool(note))

    def _on_keyring_missing(self, reason: str) -> None:
        answer = QMessageBox.question(
            self,
            "No OS keyring",
            f"{reason}\n\nThe key is valid. Use it for this run only? (It will not be stored; "
            "you will need to paste it again next time, or set SMARTSPEC_API_KEY.)",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.account.use_pending_key_for_this_run()

    def _on_failed(self, error: SmartSpecError) -> None:
        self.banner.show_message("error", f"<b>{error.problem}</b><br>{error.fix}")

    def _on_busy(self, busy: bool) -> None:
        self.setCursor(Qt.CursorShape.BusyCursor if busy else Qt.CursorShape.ArrowCursor)
