"""The Account page and AccountService against the backend stand-in behaving like the real
service (backend-contract.md "Measured differences"): dead keys from rotation, revoking this
computer's key, login messages, the paste rule with the backend down, which key wins."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.secrets import API_KEY_ENTRY, Credentials, MemoryStore
from smartspec_desktop.services.account import AccountService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.account import AccountPage
from tests.backend_standin import BackendStandIn

pytestmark = pytest.mark.gui

EMAIL = "dev@example.com"
PASSWORD = "correct horse"
WAIT = 10_000


@dataclass
class Page:
    backend: BackendStandIn
    store: MemoryStore
    creds: Credentials
    account: AccountService
    page: AccountPage
    jobs: Jobs
    environ: dict[str, str]

    def banner(self) -> str:
        return self.page.banner.text.text() if self.page.banner.isVisible() else ""


@pytest.fixture
def page(qtbot: Any) -> Iterator[Page]:
    backend = BackendStandIn().start()
    backend.add_user(EMAIL, PASSWORD)
    store = MemoryStore()
    environ: dict[str, str] = {}
    creds = Credentials(store, MemoryStore(), environ)
    settings = Settings()
    settings.backend_url = backend.url
    jobs = Jobs()
    account = AccountService(settings, creds, jobs)
    widget = AccountPage(account)
    qtbot.addWidget(widget)
    widget.show()
    try:
        yield Page(backend, store, creds, account, widget, jobs, environ)
    finally:
        jobs.wait(30_000)
        backend.stop()
    assert backend.errors == []


def sign_in(p: Page, qtbot: Any) -> None:
    p.page.email.setText(EMAIL)
    p.page.password.setText(PASSWORD)
    qtbot.mouseClick(p.page.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: p.account.is_signed_in, timeout=WAIT)
    qtbot.waitUntil(lambda: not p.account._busy, timeout=WAIT)


def use_stored_key(p: Page, qtbot: Any, name: str = "desktop") -> str:
    key = p.backend.issue_api_key(EMAIL, name=name)
    p.store.set(API_KEY_ENTRY, key)
    p.account.load_key_status()
    qtbot.waitUntil(lambda: "from keyring" in p.page.key_label.text(), timeout=WAIT)
    return key


def click_in_modal(button_text: str) -> None:
    """Click a button of the modal dialog that is about to open."""

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, click)
            return
        for b in box.findChildren(QPushButton):
            if b.text() == button_text:
                b.click()
                return
        raise AssertionError(f"no button {button_text!r} in {[b.text() for b in box.buttons()]}")

    QTimer.singleShot(50, click)


# ------------------------------------------------------------------------------------ sign-in


def test_a_login_that_is_not_an_email_asks_for_the_email(page: Page, qtbot: Any) -> None:
    page.page.email.setText("admin")
    page.page.password.setText(PASSWORD)
    qtbot.mouseClick(page.page.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(page.banner()), timeout=WAIT)
    assert "enter your account's e-mail address" in page.banner().lower()
    assert "backend URL" not in page.banner() and "app version" not in page.banner()


def test_a_failed_login_says_the_email_is_case_sensitive(page: Page, qtbot: Any) -> None:
    page.page.email.setText(EMAIL.upper())
    page.page.password.setText(PASSWORD)
    qtbot.mouseClick(page.page.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(page.banner()), timeout=WAIT)
    assert "Incorrect email or password" in page.banner() and "case-sensitive" in page.banner()


# ------------------------------------------------------------------------------ rotate, create


def test_rotating_a_revoked_key_keeps_the_working_key(page: Page, qtbot: Any) -> None:
    # backend-contract.md "Rotating a revoked key answers 200 with a fresh raw key that stays
    # inactive ... Check a rotated or created key with /v1/opencode/models".
    working = use_stored_key(page, qtbot)
    page.backend.issue_api_key(EMAIL, name="old")
    sign_in(page, qtbot)
    qtbot.waitUntil(lambda: page.page.keys_table.rowCount() == 2, timeout=WAIT)
    token = page.account._need_token()
    old = next(k for k in page.backend.api_keys(EMAIL) if k["name"] == "old")
    httpx.delete(
        f"{page.backend.url}/v1/opencode/api-keys/{old['id']}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with qtbot.waitSignal(page.account.failed, timeout=WAIT) as blocker:
        page.account.rotate_key(old["id"])
    assert "does not work" in blocker.args[0].problem
    assert page.store.get(API_KEY_ENTRY) == working  # the working key was kept
    assert "current key was kept" in page.banner()


def test_create_stores_a_checked_key(page: Page, qtbot: Any) -> None:
    sign_in(page, qtbot)
    qtbot.mouseClick(page.page.create_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "from keyring" in page.page.key_label.text(), timeout=WAIT)
    stored = page.store.get(API_KEY_ENTRY)
    assert stored
    checks = [r for r in page.backend.requests if r.path == "/v1/opencode/models"]
    assert checks and checks[-1].bearer_token == stored and checks[-1].status == 200


# ------------------------------------------------------------------------------------- revoke


def test_revoking_this_computers_key_warns_and_offers_a_new_key(page: Page, qtbot: Any) -> None:
    old = use_stored_key(page, qtbot)
    sign_in(page, qtbot)
    qtbot.waitUntil(lambda: page.page.keys_table.rowCount() == 1, timeout=WAIT)
    status = page.page.keys_table.item(0, 2)
    assert status is not None and status.text() == "active (this computer)"
    page.page.keys_table.selectRow(0)
    texts: list[str] = []

    def read_and_click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, read_and_click)
            return
        texts.append(box.text() + " " + box.informativeText())
        for b in box.buttons():
            if b.text() == "Revoke and create a new key":
                b.click()

    QTimer.singleShot(50, read_and_click)
    qtbot.mouseClick(page.page.revoke_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.store.get(API_KEY_ENTRY) not in (None, old), timeout=WAIT)
    assert "running servers" in texts[0] and "new key" in texts[0]
    qtbot.waitUntil(lambda: page.page.keys_table.rowCount() == 1, timeout=WAIT)
    new = page.store.get(API_KEY_ENTRY)
    assert new and page.backend.api_keys(EMAIL, include_inactive=False)[0]["is_active"]
    states = {k["key_prefix"]: k["is_active"] for k in page.backend.api_keys(EMAIL)}
    assert states[f"{old[:16]}...{old[-4:]}"] is False and states[f"{new[:16]}...{new[-4:]}"]


def test_revoke_only_warns_that_servers_stop(page: Page, qtbot: Any) -> None:
    use_stored_key(page, qtbot)
    sign_in(page, qtbot)
    qtbot.waitUntil(lambda: page.page.keys_table.rowCount() == 1, timeout=WAIT)
    page.page.keys_table.selectRow(0)
    click_in_modal("Revoke only")
    with qtbot.waitSignal(page.account.warned, timeout=WAIT) as blocker:
        qtbot.mouseClick(page.page.revoke_button, Qt.MouseButton.LeftButton)
    assert "running servers stop getting answers" in blocker.args[0]
    assert page.page.banner.kind == "warning"


# ------------------------------------------------------------------------ paste, remove, wins


def test_pasting_a_key_with_the_backend_down_stores_it_with_a_warning(
    page: Page, qtbot: Any
) -> None:
    # One rule with `key set`: stored with a warning when the backend cannot be reached.
    key = page.backend.issue_api_key(EMAIL)
    page.backend.stop()
    page.page.key_input.setText(key)
    with qtbot.waitSignal(page.account.warned, timeout=30_000) as blocker:
        qtbot.mouseClick(page.page.use_key_button, Qt.MouseButton.LeftButton)
    assert page.store.get(API_KEY_ENTRY) == key
    assert "without checking it" in blocker.args[0] and "Cannot reach" in blocker.args[0]
    assert key not in blocker.args[0]
    page.backend.start()  # the fixture stops it again


def test_a_rejected_paste_is_not_stored(page: Page, qtbot: Any) -> None:
    page.page.key_input.setText("sk-smartspec-" + "y" * 43)
    with qtbot.waitSignal(page.account.failed, timeout=WAIT):
        qtbot.mouseClick(page.page.use_key_button, Qt.MouseButton.LeftButton)
    assert page.store.get(API_KEY_ENTRY) is None


def test_remove_says_removed_only_when_something_was_stored(page: Page, qtbot: Any) -> None:
    with qtbot.waitSignal(page.account.message, timeout=WAIT) as blocker:
        page.account.forget_key()
    assert "nothing was removed" in blocker.args[0]
    use_stored_key(page, qtbot)
    with qtbot.waitSignal(page.account.message, timeout=WAIT) as blocker:
        page.account.forget_key()
    assert blocker.args[0].startswith("Removed")


def test_the_page_says_which_key_wins(page: Page, qtbot: Any) -> None:
    page.environ["SMARTSPEC_API_KEY"] = page.backend.issue_api_key(EMAIL, name="env")
    page.account.load_key_status()
    qtbot.waitUntil(lambda: "from SMARTSPEC_API_KEY" in page.page.key_label.text(), timeout=WAIT)
    assert page.page.key_note_label.isHidden()
    use_stored_key(page, qtbot)
    qtbot.waitUntil(lambda: page.page.key_note_label.isVisible(), timeout=WAIT)
    note = page.page.key_note_label.text()
    assert "SMARTSPEC_API_KEY environment variable" in note and "OS keyring wins" in note
