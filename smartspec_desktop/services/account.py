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

from smartspec_desktop.core.backend import BackendClient, CreatedKey, Login, key_matches_prefix
from smartspec_desktop.core.errors import (
    AuthRequired,
    BackendUnreachable,
    KeyringUnavailable,
    SmartSpecError,
)
from smartspec_desktop.core.redact import mask_key
from smartspec_desktop.core.servers.brokerlink import charged_in_window
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.secrets import Credentials, check_api_key_format, source_text
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)


class AccountService(QObject):
    signed_in = Signal(object)  # user dict
    signed_out = Signal()
    balance_changed = Signal(object)  # balance dict
    key_changed = Signal(str, str)  # masked key ("" when none), source
    keys_listed = Signal(object)  # list of key dicts
    key_note = Signal(str)  # which key wins when several places hold one ("" when one)
    keyring_missing = Signal(str)  # why the key could not be stored (offer "this run only")
    message = Signal(str)  # a success line for the status bar
    warned = Signal(str)  # done, but with a caveat the user should read
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
        #: The key this computer uses (only to tell which listed key it is; never shown).
        self._current_key: str | None = None
        self._listed: list[dict[str, Any]] = []
        #: Gives running servers' gateway brokers a key (None: drop it); returns warnings.
        #: Set by the app to ``ServerManager.push_key`` (issue 9: no restart after a change).
        self.push_key: Callable[[str | None], list[str]] | None = None

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
        def work() -> tuple[str, str, str, str | None]:
            try:
                status = self.credentials.key_status()
            except SmartSpecError:
                return "", "", "", None
            return mask_key(status.key), status.source, status.note(), status.key

        def done(result: tuple[str, str, str, str | None]) -> None:
            masked, source, note, key = result
            self._current_key = key
            self.key_changed.emit(masked, source)
            self.key_note.emit(note)

        self._run(work, done)

    def is_this_computers_key(self, listed: dict[str, Any]) -> bool:
        """Whether a key from the account's list is the one this computer uses."""
        key = self._current_key
        return bool(key) and key_matches_prefix(str(key), str(listed.get("key_prefix", "")))

    def use_key(self, raw: str, *, this_run_only: bool = False) -> None:
        """Validate a pasted key with the backend, then store it (keyring) or keep it in memory."""
        try:
            key = check_api_key_format(raw)
        except SmartSpecError as e:
            self.failed.emit(e)
            return

        def work() -> tuple[str, str, str]:
            # One rule with `key set`: a backend that cannot be reached does not block storing
            # the key; it is stored with a warning (a rejected key is never stored).
            unchecked = ""
            try:
                with self._backend() as b:
                    b.models(key)
            except BackendUnreachable as e:
                unchecked = e.problem
            if this_run_only:
                self.credentials.session_key = key
                return mask_key(key), "this run", unchecked
            try:
                self.credentials.store_api_key(key)
            except KeyringUnavailable as e:
                return "", e.problem, unchecked
            self.credentials.session_key = None
            return mask_key(key), "keyring", unchecked

        def done(result: tuple[str, str, str]) -> None:
            masked, source, unchecked = result
            if not masked:
                self._pending_key = key
                self.keyring_missing.emit(source)  # the UI offers "use for this run only"
                return
            self._current_key = key
            self._push_key_to_servers()
            if unchecked:
                self.warned.emit(
                    f"Stored {masked} in {source_text(source)} without checking it: {unchecked} "
                    "It is checked when a server starts."
                )
            else:
                self.message.emit(f"API key {masked} accepted ({source}).")
            self.load_key_status()

        self._run(work, done)

    def use_pending_key_for_this_run(self) -> None:
        """After ``keyring_missing``: keep the validated key in memory for this run."""
        key, self._pending_key = self._pending_key, None
        if key:
            self.credentials.session_key = key
            self._current_key = key
            self.key_changed.emit(mask_key(key), "this run")
            self.message.emit(f"Using {mask_key(key)} for this run only (not stored).")
            self._push_key_to_servers()

    def forget_key(self) -> None:
        def work() -> bool:
            return self.credentials.forget_api_key()

        def done(removed: bool) -> None:
            if removed:
                self.message.emit("Removed the API key from this computer.")
            else:
                self.message.emit("No API key was stored on this computer; nothing was removed.")
            self.load_key_status()
            self._push_key_to_servers()

        self._run(work, done)

    def list_keys(self) -> None:
        def work() -> list[dict[str, Any]]:
            with self._backend() as b:
                return b.list_keys(self._need_token())

        self._run(work, self._emit_keys)

    def _emit_keys(self, keys: list[dict[str, Any]]) -> None:
        """The account's keys, the one this computer uses marked ``this_computer: True``."""
        self._listed = [dict(k, this_computer=self.is_this_computers_key(k)) for k in keys]
        self.keys_listed.emit(list(self._listed))

    def create_key(self) -> None:
        """Create a key for this computer and store it in the keyring at once."""
        name = f"SmartSpec Desktop on {socket.gethostname()}"

        def work() -> tuple[str, str, str]:
            with self._backend() as b:
                created: CreatedKey = b.create_key(self._need_token(), name)
                b.check_new_key(created, "created")  # a dead key never replaces a working one
            return (*self._keep(created.key), "Created")

        self._run(work, self._key_kept)

    def rotate_key(self, key_id: str) -> None:
        def work() -> tuple[str, str, str]:
            with self._backend() as b:
                created = b.rotate_key(self._need_token(), key_id)
                b.check_new_key(created, "rotated")  # rotating a revoked key gives a dead key
            return (*self._keep(created.key), "Rotated to")

        self._run(work, self._key_kept)

    def revoke_key(self, key_id: str, *, create_new: bool = False) -> None:
        """Revoke a key. ``create_new``: then create (and check, and store) a new key for this
        computer, for when the revoked key was the one it used."""

        def work() -> list[dict[str, Any]]:
            with self._backend() as b:
                b.revoke_key(self._need_token(), key_id)
                return b.list_keys(self._need_token())

        was_ours = any(k.get("id") == key_id and k.get("this_computer") for k in self._listed)

        def done(keys: list[dict[str, Any]]) -> None:
            self._emit_keys(keys)
            if create_new:
                self.message.emit("Key revoked; creating a new key for this computer …")
                self.create_key()
            elif was_ours:
                self._push_key_to_servers(drop=True)
                self.warned.emit(
                    "Revoked the key this computer uses: running servers stop getting answers "
                    "(the gateway rejects it). Create a new key for this computer, then restart "
                    "them."
                )
            else:
                self.message.emit("Key revoked.")
            self.load_key_status()

        self._run(work, done)

    def _keep(self, key: str) -> tuple[str, str]:
        try:
            self.credentials.store_api_key(key)
            self.credentials.session_key = None
            self._current_key = key
            return mask_key(key), "keyring"
        except KeyringUnavailable:
            self.credentials.session_key = key
            self._current_key = key
            return mask_key(key), "this run"

    def _key_kept(self, result: tuple[str, str, str]) -> None:
        masked, source, verb = result
        self._push_key_to_servers()
        if source == "this run":
            self.message.emit(
                f"{verb} {masked}. No OS keyring is available, so it is used for this run only."
            )
        else:
            self.message.emit(f"{verb} {masked} and stored it in the OS keyring.")
        self.load_key_status()
        self.list_keys()

    def _push_key_to_servers(self, *, drop: bool = False) -> None:
        """Running servers use the key in effect now (``drop``: none), without a restart."""
        push = self.push_key
        if push is None:
            return

        def work() -> list[str]:
            key: str | None = None
            if not drop:
                try:
                    key = self.credentials.api_key()[0]
                except SmartSpecError:
                    key = None
            return push(key)

        def done(warnings: list[str]) -> None:
            for w in warnings:
                self.warned.emit(f"A running server did not get the new key: {w}")

        self.jobs.submit(work, on_done=done, on_failed=lambda e: self.failed.emit(as_error(e)))

    def credits_charged(
        self, since: float, until: float, on_result: Callable[[float | None], None]
    ) -> None:
        """The credits the backend deducted in ``[since, until]`` (a task's window), from its
        ledger; ``on_result(None)`` when not signed in or the ledger cannot be read."""
        token = self._token
        if token is None:
            on_result(None)
            return

        def work() -> float:
            with self._backend() as b:
                data = b.transactions(token, limit=100)
            listed = data.get("transactions")
            return charged_in_window(listed if isinstance(listed, list) else [], since, until)

        def failed(e: BaseException) -> None:
            log.info("could not read the credit transactions: %s", e)
            on_result(None)

        self.jobs.submit(work, on_done=on_result, on_failed=failed)
