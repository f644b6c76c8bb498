"""Unit tests of core.secrets: key sources and order, key format, stores and fallbacks."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import keyring.core
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import PasswordDeleteError

from smartspec_desktop.core.errors import ApiKeyInvalid, ApiKeyMissing, KeyringUnavailable
from smartspec_desktop.core.storage.secrets import (
    API_KEY_ENTRY,
    API_KEY_ENV,
    SERVICE_ENV,
    Credentials,
    FileStore,
    KeyringStore,
    MemoryStore,
    check_api_key_format,
    keyring_service,
)


def make_key() -> str:
    return "sk-smartspec-" + secrets.token_urlsafe(32)


class NoStore:
    """A store with no keyring behind it (headless Linux)."""

    def available(self) -> bool:
        return False

    def get(self, name: str) -> str | None:
        raise AssertionError("an unavailable store must not be read")

    def set(self, name: str, value: str) -> None:
        raise AssertionError("an unavailable store must not be written")

    def delete(self, name: str) -> None:
        raise AssertionError("an unavailable store must not be touched")


class LockedStore:
    """Claims to be available, but every call fails (a locked keyring)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def available(self) -> bool:
        return True

    def _fail(self, what: str) -> KeyringUnavailable:
        self.calls.append(what)
        return KeyringUnavailable("The OS keyring is not available (locked).", "Unlock it.")

    def get(self, name: str) -> str | None:
        raise self._fail("get")

    def set(self, name: str, value: str) -> None:
        raise self._fail("set")

    def delete(self, name: str) -> None:
        raise self._fail("delete")


class DictKeyring(KeyringBackend):
    """A working in-memory keyring backend."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.data.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.data[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.data:
            raise PasswordDeleteError("not found")
        del self.data[(service, username)]


@pytest.fixture
def restore_keyring() -> Iterator[None]:
    saved = keyring.core._keyring_backend
    try:
        yield
    finally:
        keyring.core._keyring_backend = saved


def creds(store: object, fallback_dir: Path, env: dict[str, str] | None = None) -> Credentials:
    return Credentials(store, FileStore(fallback_dir), environ=env or {})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- key format


def test_a_real_shaped_key_is_accepted_and_stripped() -> None:
    key = make_key()
    assert len(key) == len("sk-smartspec-") + 43
    assert check_api_key_format(f"  {key}\n") == key


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sk-smartspec-",
        "sk-smartspec-" + "a" * 31,
        "sk-other-" + "a" * 43,
        "SK-SMARTSPEC-" + "a" * 43,
        "sk-smartspec-" + "a" * 20 + " " + "b" * 20,
        "sk-smartspec-" + "a" * 40 + "!",
        "Bearer sk-smartspec-" + "a" * 43,
        "garbage",
    ],
)
def test_malformed_keys_are_rejected_without_echoing_them(bad: str) -> None:
    with pytest.raises(ApiKeyInvalid) as ei:
        check_api_key_format(bad)
    text = str(ei.value) + ei.value.details
    assert "sk-smartspec-" in text  # says what a key looks like…
    if len(bad) > 13:
        assert bad.strip() not in text  # …but never repeats the input


# ---------------------------------------------------------------------------------- api key order


def test_session_key_wins_over_store_and_env(tmp_path: Path) -> None:
    store = MemoryStore()
    store.set(API_KEY_ENTRY, "from-store")
    c = creds(store, tmp_path, {API_KEY_ENV: "from-env"})
    c.session_key = "from-session"
    assert c.api_key() == ("from-session", "this run")


def test_store_wins_over_env(tmp_path: Path) -> None:
    store = MemoryStore()
    store.set(API_KEY_ENTRY, "from-store")
    c = creds(store, tmp_path, {API_KEY_ENV: "from-env"})
    assert c.api_key() == ("from-store", "keyring")


def test_env_is_used_when_the_store_is_empty_and_is_stripped(tmp_path: Path) -> None:
    c = creds(MemoryStore(), tmp_path, {API_KEY_ENV: "  from-env \n"})
    assert c.api_key() == ("from-env", API_KEY_ENV)


def test_env_is_used_without_a_keyring(tmp_path: Path) -> None:
    c = creds(NoStore(), tmp_path, {API_KEY_ENV: "from-env"})
    assert c.api_key() == ("from-env", API_KEY_ENV)


def test_env_is_used_when_the_keyring_read_fails(tmp_path: Path) -> None:
    store = LockedStore()
    c = creds(store, tmp_path, {API_KEY_ENV: "from-env"})
    assert c.api_key() == ("from-env", API_KEY_ENV)
    assert store.calls == ["get"]


def test_credentials_read_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "process-env")
    c = Credentials(MemoryStore(), FileStore(tmp_path))
    assert c.api_key() == ("process-env", API_KEY_ENV)


def test_missing_key_with_a_keyring_suggests_key_set(tmp_path: Path) -> None:
    c = creds(MemoryStore(), tmp_path, {API_KEY_ENV: "   "})
    with pytest.raises(ApiKeyMissing) as ei:
        c.api_key()
    assert ei.value.code == "api_key_missing"
    assert "smartspec-desktop key set" in ei.value.fix
    assert API_KEY_ENV in ei.value.fix


def test_missing_key_without_a_keyring_points_to_the_env_variable_only(tmp_path: Path) -> None:
    c = creds(NoStore(), tmp_path)
    with pytest.raises(ApiKeyMissing) as ei:
        c.api_key()
    assert "No OS keyring" in ei.value.fix
    assert API_KEY_ENV in ei.value.fix
    assert "key set" not in ei.value.fix


def test_store_api_key_validates_then_stores_the_clean_key(tmp_path: Path) -> None:
    store = MemoryStore()
    c = creds(store, tmp_path)
    key = make_key()
    assert c.store_api_key(f" {key} ") == key
    assert store.get(API_KEY_ENTRY) == key
    assert c.api_key() == (key, "keyring")
    with pytest.raises(ApiKeyInvalid):
        c.store_api_key("nope")
    assert store.get(API_KEY_ENTRY) == key  # a bad key does not replace a good one


def test_store_api_key_without_keyring_raises_keyring_unavailable(tmp_path: Path) -> None:
    c = creds(NoStore(), tmp_path)
    with pytest.raises(KeyringUnavailable) as ei:
        c.store_api_key(make_key())
    assert API_KEY_ENV in ei.value.fix


def test_forget_api_key_clears_the_session_key_and_the_store(tmp_path: Path) -> None:
    store = MemoryStore()
    c = creds(store, tmp_path)
    c.store_api_key(make_key())
    c.session_key = "temp"
    c.forget_api_key()
    assert c.session_key is None and store.get(API_KEY_ENTRY) is None
    creds(NoStore(), tmp_path).forget_api_key()  # nothing to forget: no error


def test_forget_api_key_says_whether_anything_was_stored(tmp_path: Path) -> None:
    store = MemoryStore()
    c = creds(store, tmp_path, {API_KEY_ENV: make_key()})
    assert c.forget_api_key() is False  # only the variable: nothing stored to remove
    c.store_api_key(make_key())
    assert c.forget_api_key() is True
    assert c.forget_api_key() is False
    c.session_key = "temp"
    assert c.forget_api_key() is True
    assert creds(NoStore(), tmp_path).forget_api_key() is False


def test_key_status_says_which_key_wins(tmp_path: Path) -> None:
    store = MemoryStore()
    store.set(API_KEY_ENTRY, "from-store")
    c = creds(store, tmp_path, {API_KEY_ENV: "from-env"})
    status = c.key_status()
    assert (status.key, status.source, status.overridden) == (
        "from-store",
        "keyring",
        (API_KEY_ENV,),
    )
    note = status.note()
    assert "SMARTSPEC_API_KEY environment variable" in note and "OS keyring wins" in note
    assert "key delete" in note
    only_env = creds(MemoryStore(), tmp_path, {API_KEY_ENV: "from-env"}).key_status()
    assert only_env.overridden == () and only_env.note() == ""
    same = creds(store, tmp_path, {API_KEY_ENV: "from-store"}).key_status()
    assert same.overridden == ()  # the same key twice is not a conflict


def test_a_malformed_key_names_where_it_came_from() -> None:
    with pytest.raises(ApiKeyInvalid) as ei:
        check_api_key_format("sk-smartspec-short", source=API_KEY_ENV)
    assert "from the SMARTSPEC_API_KEY environment variable" in ei.value.problem
    assert f"Set {API_KEY_ENV} to a valid key" in ei.value.fix
    with pytest.raises(ApiKeyInvalid) as ei:
        check_api_key_format("nope", source="keyring")
    assert "from the OS keyring" in ei.value.problem


# ---------------------------------------------------------------------------- server passwords


def test_server_password_goes_to_the_keyring_when_available(tmp_path: Path) -> None:
    store = MemoryStore()
    c = creds(store, tmp_path / "secrets")
    assert c.save_server_password("S1", "pw-123456") == "keyring"
    assert c.server_password("S1") == "pw-123456"
    assert not (tmp_path / "secrets").exists()
    c.delete_server_password("S1")
    assert c.server_password("S1") is None


def test_server_password_falls_back_to_a_0600_file_without_keyring(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "secrets"
    c = creds(NoStore(), folder)
    assert c.save_server_password("sess-1", "pw-abcdef") == "file"
    files = list(folder.iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert files[0].read_text(encoding="utf-8") == "pw-abcdef"
    # A later run (new Credentials) finds it again.
    assert creds(NoStore(), folder).server_password("sess-1") == "pw-abcdef"
    c.delete_server_password("sess-1")
    assert list(folder.iterdir()) == []
    assert c.server_password("sess-1") is None


def test_server_password_falls_back_to_file_when_the_keyring_write_fails(tmp_path: Path) -> None:
    store = LockedStore()
    c = creds(store, tmp_path / "secrets")
    assert c.save_server_password("S2", "pw-locked") == "file"
    assert c.server_password("S2") == "pw-locked"
    c.delete_server_password("S2")  # the keyring failure is swallowed
    assert c.server_password("S2") is None
    assert store.calls == ["set", "get", "delete", "get"]


def test_file_store_names_are_made_safe_and_overwrites_replace(tmp_path: Path) -> None:
    fs = FileStore(tmp_path / "s")
    assert fs.available()
    fs.set("server-password:../../etc/passwd", "one")
    fs.set("server-password:../../etc/passwd", "two")
    names = [p.name for p in (tmp_path / "s").iterdir()]
    assert len(names) == 1 and "/" not in names[0] and ":" not in names[0]
    assert fs.get("server-password:../../etc/passwd") == "two"
    assert fs.get("other") is None
    fs.delete("other")  # missing: no error


# --------------------------------------------------------------------------------- KeyringStore


def test_keyring_service_name_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVICE_ENV, raising=False)
    assert keyring_service() == "smartspec-desktop"
    monkeypatch.setenv(SERVICE_ENV, "smartspec-test")
    assert keyring_service() == "smartspec-test"
    assert KeyringStore().service == "smartspec-test"
    assert KeyringStore("explicit").service == "explicit"


def test_fail_keyring_is_unavailable_and_raises_keyring_unavailable(
    monkeypatch: pytest.MonkeyPatch, restore_keyring: None
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.core._keyring_backend = None  # make keyring load the backend from the env
    store = KeyringStore("smartspec-test")
    assert store.available() is False
    assert isinstance(keyring.get_keyring(), fail.Keyring)
    calls: list[Callable[[], object]] = [
        lambda: store.get(API_KEY_ENTRY),
        lambda: store.set(API_KEY_ENTRY, "v"),
        lambda: store.delete(API_KEY_ENTRY),
    ]
    for call in calls:
        with pytest.raises(KeyringUnavailable) as ei:
            call()
        assert API_KEY_ENV in ei.value.fix


def test_credentials_over_a_fail_keyring_use_env_and_file(
    tmp_path: Path, restore_keyring: None
) -> None:
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    c = Credentials(KeyringStore("smartspec-test"), FileStore(tmp_path), environ={})
    with pytest.raises(ApiKeyMissing, match="No SmartSpecPro API key"):
        c.api_key()
    assert c.save_server_password("S", "pw-file-1") == "file"
    assert c.server_password("S") == "pw-file-1"


def test_a_working_keyring_round_trips_under_the_service_name(restore_keyring: None) -> None:
    backend = DictKeyring()
    keyring.set_keyring(backend)
    store = KeyringStore("smartspec-test")
    assert store.available() is True
    assert store.get(API_KEY_ENTRY) is None
    store.set(API_KEY_ENTRY, "value-1")
    assert backend.data == {("smartspec-test", API_KEY_ENTRY): "value-1"}
    assert store.get(API_KEY_ENTRY) == "value-1"
    store.delete(API_KEY_ENTRY)
    store.delete(API_KEY_ENTRY)  # deleting a missing entry is not an error
    assert backend.data == {}
