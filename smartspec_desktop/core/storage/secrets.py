"""Secrets: the user's API key and each server's password.

They live in the OS keyring (service ``smartspec-desktop``), never in settings, state files, logs
or any child's argv. Where no keyring exists (headless Linux) the API key comes from the
``SMARTSPEC_API_KEY`` environment variable, and server passwords fall back to 0600 files in the
state dir so a later run can still re-adopt its servers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from smartspec_desktop import APP_NAME
from smartspec_desktop.core.errors import ApiKeyInvalid, ApiKeyMissing, KeyringUnavailable

log = logging.getLogger(__name__)

#: Tests (and a second profile) may use another keyring service name.
SERVICE_ENV = "SMARTSPEC_KEYRING_SERVICE"
API_KEY_ENV = "SMARTSPEC_API_KEY"
API_KEY_ENTRY = "api-key"
#: ``sk-smartspec-`` + token_urlsafe(32) (43 chars); accept 32 or more like the backend's format.
API_KEY_RE = re.compile(r"sk-smartspec-[A-Za-z0-9_-]{32,}")

SOURCE_KEYRING = "keyring"
SOURCE_THIS_RUN = "this run"

KEYRING_FIX = (
    "Unlock or install an OS keyring (e.g. GNOME Keyring / KWallet on Linux), or set the "
    f"{API_KEY_ENV} environment variable instead."
)


class SecretStore(Protocol):
    def available(self) -> bool: ...
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


def keyring_service() -> str:
    return os.environ.get(SERVICE_ENV) or APP_NAME


#: keyring's modules for the other platforms, skipped by :func:`choose_keyring_backend`.
_FOREIGN_BACKENDS = {"keyring.backends.macOS", "keyring.backends.Windows"}
_backend_chosen = False


def choose_keyring_backend() -> None:
    """keyring's choice of backend, without importing the other platforms' backends.

    keyring's own detection imports every backend it knows, and on Linux its macOS one looks for
    Apple's Security framework with ``ldconfig`` and three compiler runs: ~0.1 CPU-s and up to
    0.5 s in every process that touches the keyring (measured). The choice stays keyring's: the
    backend named by ``PYTHON_KEYRING_BACKEND`` or keyringrc, else the viable backend (third-party
    plugins included) of highest priority. Once per process.
    """
    global _backend_chosen
    if _backend_chosen:
        return
    _backend_chosen = True
    try:
        _choose_backend()
    except Exception as e:  # keyring's own detection then runs at the first use
        log.debug("keyring backend not chosen ahead: %s", e)


def _choose_backend() -> None:
    import keyring
    import keyring.core

    if getattr(keyring.core, "_keyring_backend", None) is not None:
        return  # one was set already (keyring.set_keyring): that one
    if sys.platform in ("darwin", "win32") or keyring.core.load_env() or keyring.core.load_config():
        return  # nothing foreign to skip there, or the user's own choice: keyring's detection
    from importlib import metadata

    from keyring import backend as kb
    from keyring.backends import chainer, fail

    for ep in metadata.entry_points(group="keyring.backends"):
        if ep.value.split(":")[0] in _FOREIGN_BACKENDS:
            continue
        try:
            init = ep.load()
            if callable(init):
                init()
        except Exception as e:  # a broken plugin must not break the others (keyring's rule)
            log.debug("keyring plugin %s not loaded: %s", ep.name, e)
    rings: list[kb.KeyringBackend] = []
    for cls in kb.KeyringBackend.get_viable_backends():
        if issubclass(cls, chainer.ChainerBackend):  # it would load every backend again
            continue
        with contextlib.suppress(TypeError):  # one that needs arguments (keyring's rule)
            rings.append(cls())
    none = fail.Keyring()  # type: ignore[no-untyped-call]
    keyring.set_keyring(max(rings, key=kb.by_priority, default=none))


#: ``PYTHON_KEYRING_BACKEND`` naming keyring's "no keyring" backend (headless machines, the
#: tests' CLI runs).
FAIL_BACKEND = "keyring.backends.fail.Keyring"


def keyring_disabled_by_env() -> bool:
    """Whether ``PYTHON_KEYRING_BACKEND`` names keyring's fail backend while keyring is not yet
    loaded in this process (nothing can have chosen another backend): keyring takes that variable
    first, so no keyring is available. Known without importing keyring (~25 ms, issue 11)."""
    return "keyring" not in sys.modules and os.environ.get("PYTHON_KEYRING_BACKEND") == FAIL_BACKEND


class KeyringStore:
    """The OS keyring via ``keyring``. Every failure becomes :class:`KeyringUnavailable`."""

    def __init__(self, service: str | None = None) -> None:
        self.service = service or keyring_service()

    def available(self) -> bool:
        if keyring_disabled_by_env():
            return False
        import keyring
        from keyring.backends import fail

        choose_keyring_backend()

        try:
            backend = keyring.get_keyring()
        except Exception as e:  # a broken keyring config must not crash the app
            log.warning("keyring backend could not be loaded: %s", e)
            return False
        return not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 1) > 0

    def _unavailable(self, e: Exception) -> KeyringUnavailable:
        return KeyringUnavailable(
            f"The OS keyring is not available ({type(e).__name__}).", KEYRING_FIX
        )

    def get(self, name: str) -> str | None:
        import keyring
        from keyring.errors import KeyringError

        choose_keyring_backend()
        try:
            return keyring.get_password(self.service, name)
        except KeyringError as e:
            raise self._unavailable(e) from None

    def set(self, name: str, value: str) -> None:
        import keyring
        from keyring.errors import KeyringError

        choose_keyring_backend()
        try:
            keyring.set_password(self.service, name, value)
        except KeyringError as e:
            raise self._unavailable(e) from None

    def delete(self, name: str) -> None:
        import keyring
        from keyring.errors import KeyringError, PasswordDeleteError

        choose_keyring_backend()
        try:
            keyring.delete_password(self.service, name)
        except PasswordDeleteError:
            pass
        except KeyringError as e:
            raise self._unavailable(e) from None


class MemoryStore:
    """For a key the user chose to use for this run only, and for unit tests."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    def available(self) -> bool:
        return True

    def get(self, name: str) -> str | None:
        return self._data.get(name)

    def set(self, name: str, value: str) -> None:
        self._data[name] = value

    def delete(self, name: str) -> None:
        self._data.pop(name, None)


class FileStore:
    """0600 files in a 0700 folder: the fallback for server passwords when there is no keyring."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def available(self) -> bool:
        return True

    def _path(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return self.folder / safe

    def get(self, name: str) -> str | None:
        try:
            return self._path(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def set(self, name: str, value: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


def source_text(source: str | None) -> str:
    """Where a key came from, in words: ``"the OS keyring"``, ``"the SMARTSPEC_API_KEY
    environment variable"``, ``"this run only (not stored)"``."""
    if source == SOURCE_KEYRING:
        return "the OS keyring"
    if source == API_KEY_ENV:
        return f"the {API_KEY_ENV} environment variable"
    if source == SOURCE_THIS_RUN:
        return "this run only (not stored)"
    return str(source or "an unknown place")


def key_fix(source: str | None) -> str:
    """How to replace a bad key, for where it came from."""
    if source == API_KEY_ENV:
        return (
            f"Set {API_KEY_ENV} to a valid key, or unset it and store a valid key "
            "(`smartspec-desktop key set`)."
        )
    if source == SOURCE_THIS_RUN:
        return "Give a valid key (this one was for this run only)."
    return "Store a valid key (`smartspec-desktop key set`)."


def check_api_key_format(key: str, source: str | None = None) -> str:
    key = key.strip()
    if not API_KEY_RE.fullmatch(key):
        where = f"The API key from {source_text(source)}" if source else "That"
        raise ApiKeyInvalid(
            f"{where} is not a SmartSpecPro API key (expected sk-smartspec- followed by 32 or "
            "more letters, digits, '-' or '_').",
            (key_fix(source) + " " if source else "")
            + "Copy the whole key from SmartSpecPro (Account → API keys), or create a new one.",
        )
    return key


@dataclass(frozen=True)
class KeyStatus:
    """The key in use and where it comes from, plus any other key it overrides."""

    key: str
    source: str
    #: Other places that also hold a key and lose (e.g. SMARTSPEC_API_KEY under a keyring key).
    overridden: tuple[str, ...] = ()

    def note(self) -> str:
        """One sentence saying which key wins, or "" when there is only one."""
        if not self.overridden:
            return ""
        others = " and ".join(source_text(s) for s in self.overridden)
        extra = "s" if len(self.overridden) > 1 else ""
        verb = "are" if len(self.overridden) > 1 else "is"
        hint = ""
        if self.source == SOURCE_KEYRING and self.overridden == (API_KEY_ENV,):
            hint = " (`smartspec-desktop key delete` removes the keyring's key to use it)"
        return (
            f"A key is also set in {others}; the one from {source_text(self.source)} wins, "
            f"so that other key{extra} {verb} ignored{hint}."
        )


class Credentials:
    """Where the API key and server passwords come from, in order of preference."""

    def __init__(
        self,
        store: SecretStore,
        password_fallback: SecretStore,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.password_fallback = password_fallback
        self.environ = os.environ if environ is None else environ
        #: A key the user chose to use for this run only (not stored anywhere).
        self.session_key: str | None = None

    def api_key(self) -> tuple[str, str]:
        """Return ``(key, source)``; source is "this run", "keyring" or the env variable name."""
        status = self.key_status()
        return status.key, status.source

    def key_status(self) -> KeyStatus:
        """The key in use (this run > keyring > SMARTSPEC_API_KEY) and the keys it overrides.
        Raises :class:`ApiKeyMissing` when there is none."""
        found: list[tuple[str, str]] = []
        if self.session_key:
            found.append((self.session_key, SOURCE_THIS_RUN))
        if self.store.available():
            try:
                key = self.store.get(API_KEY_ENTRY)
            except KeyringUnavailable as e:
                log.info("keyring read failed, trying %s: %s", API_KEY_ENV, e)
                key = None
            if key:
                found.append((key, SOURCE_KEYRING))
        env_key = self.environ.get(API_KEY_ENV, "").strip()
        if env_key:
            found.append((env_key, API_KEY_ENV))
        if found:
            (key, source), rest = found[0], found[1:]
            overridden = tuple(s for k, s in rest if k != key)
            return KeyStatus(key, source, overridden)
        if self.store.available():
            fix = (
                "Run `smartspec-desktop key set` (reads the key from stdin) or paste it under "
                f"Account, or set {API_KEY_ENV}."
            )
        else:
            fix = f"No OS keyring is available here: set the {API_KEY_ENV} environment variable."
        raise ApiKeyMissing("No SmartSpecPro API key is configured.", fix)

    def store_api_key(self, key: str) -> str:
        """Validate the format and store the key in the keyring; returns the cleaned key."""
        key = check_api_key_format(key)
        if not self.store.available():
            raise KeyringUnavailable("No OS keyring is available to store the key.", KEYRING_FIX)
        self.store.set(API_KEY_ENTRY, key)
        return key

    def forget_api_key(self) -> bool:
        """Remove the stored key (and this run's); True when there was one to remove."""
        removed = bool(self.session_key)
        self.session_key = None
        if self.store.available():
            removed = bool(self.store.get(API_KEY_ENTRY)) or removed
            self.store.delete(API_KEY_ENTRY)
        return removed

    # Server passwords -------------------------------------------------------------------------

    @staticmethod
    def _password_entry(server_id: str) -> str:
        return f"server-password:{server_id}"

    def save_server_password(self, server_id: str, password: str) -> str:
        """Store it; returns where ("keyring" or "file")."""
        name = self._password_entry(server_id)
        if self.store.available():
            try:
                self.store.set(name, password)
                return "keyring"
            except KeyringUnavailable as e:
                log.info("keyring write failed, using a 0600 file: %s", e)
        self.password_fallback.set(name, password)
        return "file"

    def server_password(self, server_id: str) -> str | None:
        name = self._password_entry(server_id)
        if self.store.available():
            try:
                pw = self.store.get(name)
                if pw:
                    return pw
            except KeyringUnavailable:
                pass
        return self.password_fallback.get(name)

    def delete_server_password(self, server_id: str) -> None:
        name = self._password_entry(server_id)
        if self.store.available():
            with contextlib.suppress(KeyringUnavailable):
                self.store.delete(name)
        self.password_fallback.delete(name)

    # A server broker's control token: kept exactly like the server password ---------------

    @staticmethod
    def _broker_entry(server_id: str) -> str:
        return f"broker-control:{server_id}"

    def save_broker_control(self, server_id: str, token: str) -> str:
        """Store the control token of a server's gateway broker; returns where."""
        name = self._broker_entry(server_id)
        if self.store.available():
            try:
                self.store.set(name, token)
                return "keyring"
            except KeyringUnavailable as e:
                log.info("keyring write failed, using a 0600 file: %s", e)
        self.password_fallback.set(name, token)
        return "file"

    def broker_control(self, server_id: str) -> str | None:
        name = self._broker_entry(server_id)
        if self.store.available():
            try:
                token = self.store.get(name)
                if token:
                    return token
            except KeyringUnavailable:
                pass
        return self.password_fallback.get(name)

    def delete_broker_control(self, server_id: str) -> None:
        name = self._broker_entry(server_id)
        if self.store.available():
            with contextlib.suppress(KeyringUnavailable):
                self.store.delete(name)
        self.password_fallback.delete(name)
