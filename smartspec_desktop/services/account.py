"""The SmartSpecPro account: sign-in, credit balance and API keys, off the GUI thread.

The sign-in token (30 minutes, no refresh token) lives only in this object's memory; the API key
lives only in the OS keyring (or, by the user's choice, in memory for this run). The balance is
fetched on demand and after a task, never polled: the backend allows 60 requests a minute per IP,
shared with OpenCode's LLM calls.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from smartspec_desktop.core.backend import BackendClient, CreatedKey, Login
from smartspec_desktop.core.errors import AuthRequired, KeyringUnavailable, SmartSpecError
from smartspec_desktop.core.redact import mask_key
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.secrets import Credentials, check_api_key_format
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)


class AccountService(QObject):
    signed_in = Signal(object)  # user dict
    signed_out = Signal()
    balance_changed = Signal(object)  # balance dict
    key_changed = Signal(str, str)  # masked key ("" when none), source
    keys_listed = Signal(object)  # list of key dicts
    keyring_missing = Signal(str)  # why the key could not be stored (offer "this run only")
    message = Signal(str)  # a success line for the status bar
    failed = Signal(object)  # SmartSpecError
    busy_changed = Signal(bool)

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        jobs: Jobs,
        *,
        backend_factory: Callable[[str], BackendClient] = BackendClient,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.credentials = credentials
        self.jobs = jobs
        self.backend_factory = backend_factory
        self._token: str | None = None
        self.user: dict[str, Any] | None = None
        self._busy = 0
        self._pending_key: str | None = None

    @property
    def is_signed_in(self) -> bool:
        return self._token is not None

    # --------------------------------------------------------------------------- plumbing

    def _run(self, work: Callable[[], Any], on_done: Callable[[Any], None]) -> None:
        self._busy += 1
        self.busy_changed.emit(True)

        def finish() -> None:
            self._busy -= 1
            if not self._busy:
                self.busy_changed.emit(False)

        def done(result: Any) -> None:
            finish()
            on_done(result)

        def failed(e: BaseException) -> None:
            finish()
            err = as_error(e)
            if isinstance(err, AuthRequired) and self._token is not None:
                self._token = None  # expired: ask to sign in again
                self.user = None
                self.signed_out.emit()
            self.failed.emit(err)

        self.jobs.submit(work, on_done=done, on_failed=failed)

    def _backend(self) -> BackendClient:
        return self.backend_factory(self.settings.backend_url)

    def _need_token(self) -> str:
        if self._token is None:
            raise AuthRequired("You are not signed in.", "Sign in under Account first.")
        return self._token

    # ---------------------------------------------------------------------------- sign in

    def sign_in(self, email: str, password: str) -> None:
        def work() -> Login:
            with self._backend() as b:
                return b.login(email.strip(), password)

        def done(login: Login) -> None:
            self._token = login.access_token
            self.user = login.user
            self.signed_in.emit(login.user)
            self.refresh_balance()

        self._run(work, done)

    def sign_out(self) -> None:
        self._token = None
        self.user = None
        self.signed_out.emit()

    def refresh_balance(self) -> None:
        if self._token is None:
            return

        def work() -> dict[str, Any]:
            with self._backend() as b:
                return b.balance(self._need_token())

        self._run(work, self.balance_changed.emit)

    # ---------------------------------------------------------------------------- API key

    def load_key_status(self) -> None:
        def work() -> tuple[str, str]:
            try:
                key, source = self.credentials.api_key()
            except SmartSpecError:
                return "", ""
            return mask_key(key), source

        self._run(work, lambda r: self.key_changed.emit(*r))

    def use_key(self, raw: str, *, this_run_only: bool = False) -> None:
        """Validate a pasted key with the backend, then store it (keyring) or keep it in memory."""
        try:
            key = check_api_key_format(raw)
        except SmartSpecError as e:
            self.failed.emit(e)
            return

        def work() -> tuple[str, str]:
            with self._backend() as b:
                b.models(key)
            if this_run_only:
                self.credentials.session_key = key
                return mask_key(key), "this run"
            try:
                self.credentials.store_api_key(key)
            except KeyringUnavailable as e:
                return "", e.problem
            self.credentials.session_key = None
            return mask_key(key), "keyring"

        def done(result: tuple[str, str]) -> None:
            masked, source = result
            if not masked:
                self._pending_key = key
                self.keyring_missing.emit(source)  # the UI offers "use for this run only"
                return
            self.key_changed.emit(masked, source)
            self.message.emit(f"API key {masked} accepted ({source}).")

        self._run(work, done)

    def use_pending_key_for_this_run(self) -> None:
        """After ``keyring_missing``: keep the validated key in memory for this run."""
        key, self._pending_key = self._pending_key, None
        if key:
            self.credentials.session_key = key
            self.key_changed.emit(mask_key(key), "this run")
            self.message.emit(f"Using {mask_key(key)} for this run only (not stored).")

    def forget_key(self) -> None:
        def work() -> None:
            self.credentials.forget_api_key()

        self._run(work, lambda _r: self.load_key_status())

    def list_keys(self) -> None:
        def work() -> list[dict[str, Any]]:
            with self._backend() as b:
                return b.list_keys(self._need_token())

        self._run(work, self.keys_listed.emit)

    def create_key(self) -> None:
        """Create a key for this computer and store it in the keyring at once."""
        name = f"SmartSpec Desktop on {socket.gethostname()}"

        def work() -> tuple[str, str]:
            with self._backend() as b:
                created: CreatedKey = b.create_key(self._need_token(), name)
            return self._keep(created.key)

        self._run(work, self._key_kept)

    def rotate_key(self, key_id: str) -> None:
        def work() -> tuple[str, str]:
            with self._backend() as b:
                created = b.rotate_key(self._need_token(), key_id)
            return self._keep(created.key)

        self._run(work, self._key_kept)

    def revoke_key(self, key_id: str) -> None:
        def work() -> list[dict[str, Any]]:
            with self._backend() as b:
                b.revoke_key(self._need_token(), key_id)
                return b.list_keys(self._need_token())

        def done(keys: list[dict[str, Any]]) -> None:
            self.keys_listed.emit(keys)
            self.message.emit("Key revoked.")
            self.load_key_status()

        self._run(work, done)

    def _keep(self, key: str) -> tuple[str, str]:
        try:
            self.credentials.store_api_key(key)
            self.credentials.session_key = None
            return mask_key(key), "keyring"
        except KeyringUnavailable:
            self.credentials.session_key = key
            return mask_key(key), "this run"

    def _key_kept(self, result: tuple[str, str]) -> None:
        masked, source = result
        self.key_changed.emit(masked, source)
        if source == "this run":
            self.message.emit(
                f"Created {masked}. No OS keyring is available, so it is used for this run only."
            )
        else:
            self.message.emit(f"Created {masked} and stored it in the OS keyring.")
        self.list_keys()
