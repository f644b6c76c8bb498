"""The readiness checks (core/readiness.py), each state, without Qt: an injected backend (and the
real contract stand-in for the HTTP path), fake keyring stores, ``which`` and browser finders."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core import readiness as r
from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    BackendUnreachable,
    KeyringUnavailable,
    OpenCodeNotFound,
    OpenCodeVersionError,
    RateLimited,
)
from smartspec_desktop.core.opencode.binary import OpenCodeBinary
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.secrets import API_KEY_ENV, Credentials, MemoryStore
from smartspec_desktop.demo.backend import BackendStandIn
from smartspec_desktop.ui import notices

KEY = "sk-smartspec-" + "k" * 43


class FakeBackend(BackendClient):
    """Answers health and models as told, counting the calls."""

    calls: list[str] = []

    def __init__(
        self,
        url: str,
        *,
        health: Exception | None = None,
        models: list[str] | Exception | None = None,
    ) -> None:
        super().__init__(url)
        self._health = health
        self._models = ["smartspec/demo"] if models is None else models

    def gateway_health(self) -> dict[str, Any]:
        FakeBackend.calls.append("health")
        if self._health is not None:
            raise self._health
        return {"status": "healthy"}

    def models(self, api_key: str, source: str | None = None) -> list[str]:
        FakeBackend.calls.append("models")
        if isinstance(self._models, Exception):
            raise self._models
        return self._models


class NoKeyring(MemoryStore):
    def available(self) -> bool:
        return False


class LockedKeyring(MemoryStore):
    def get(self, name: str) -> str | None:
        raise KeyringUnavailable("The OS keyring is not available (LockedError).", "Unlock it.")


def creds(key: str | None = KEY, store: MemoryStore | None = None) -> Credentials:
    c = Credentials(store or MemoryStore(), MemoryStore(), environ={})
    if key:
        c.store.set("api-key", key)
    return c


@pytest.fixture(autouse=True)
def _reset_calls() -> Iterator[None]:
    FakeBackend.calls = []
    yield


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------- backend


def test_backend_ok_and_failed_states_name_the_url_and_offer_settings() -> None:
    ok = r.check_backend("http://b.test", lambda u: FakeBackend(u))
    assert ok.state == r.State.OK and "http://b.test" in ok.detail and ok.fix_action == ""

    down = BackendUnreachable("Cannot connect.", "Start it.")
    bad = r.check_backend("http://b.test", lambda u: FakeBackend(u, health=down))
    assert bad.state == r.State.FAILED
    assert "Not reachable at http://b.test: Cannot connect." in bad.detail
    assert bad.fix_action == r.FIX_SETTINGS
    assert notices.action_for_fix(bad.fix_action) == notices.OPEN_SETTINGS  # the window's words
    assert notices.OPEN_SETTINGS.label == "Open Settings"
    assert FakeBackend.calls == ["health", "health"]  # one request per check, no retry


def test_backend_really_unreachable_through_the_real_client() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    check = r.check_backend(url, BackendClient)
    assert check.state == r.State.FAILED and url in check.detail


def test_backend_rate_limited_is_reported_without_waiting() -> None:
    limited = RateLimited("Too many requests.", "Wait a minute.", retry_after=60)
    check = r.check_backend("http://b.test", lambda u: FakeBackend(u, health=limited))
    assert check.state == r.State.FAILED and "Too many requests" in check.detail


# ------------------------------------------------------------------------------- API key


def test_api_key_missing_offers_account() -> None:
    check = r.check_api_key(creds(None), "http://b.test", lambda u: FakeBackend(u))
    assert check.state == r.State.MISSING and check.fix_action == r.FIX_ACCOUNT
    assert "No SmartSpecPro API key" in check.detail
    assert FakeBackend.calls == []  # nothing to ask the backend


def test_api_key_malformed_fails_without_a_request() -> None:
    check = r.check_api_key(creds("sk-nope"), "http://b.test", lambda u: FakeBackend(u))
    assert check.state == r.State.FAILED and check.fix_action == r.FIX_ACCOUNT
    assert "not a SmartSpecPro API key" in check.detail and FakeBackend.calls == []


def test_api_key_accepted_says_where_it_comes_from() -> None:
    check = r.check_api_key(
        creds(), "http://b.test", lambda u: FakeBackend(u, models=["a/b", "c/d"])
    )
    assert check.state == r.State.OK
    assert "the OS keyring" in check.detail and "2 models" in check.detail
    assert FakeBackend.calls == ["models"]  # exactly one /models call


def test_api_key_from_the_environment_is_found() -> None:
    c = Credentials(NoKeyring(), MemoryStore(), environ={API_KEY_ENV: KEY})
    check = r.check_api_key(c, "http://b.test", lambda u: FakeBackend(u))
    assert check.state == r.State.OK and API_KEY_ENV in check.detail


def test_api_key_rejected_and_backend_down_and_no_models() -> None:
    rejected = ApiKeyRejected("The key was rejected (401).", "Paste a valid key.")
    check = r.check_api_key(creds(), "http://b.test", lambda u: FakeBackend(u, models=rejected))
    assert check.state == r.State.FAILED and check.fix_action == r.FIX_ACCOUNT
    assert "rejected" in check.detail

    down = BackendUnreachable("Cannot connect.", "Start it.")
    check = r.check_api_key(creds(), "http://b.test", lambda u: FakeBackend(u, models=down))
    assert check.state == r.State.FAILED and check.fix_action == r.FIX_SETTINGS
    assert "cannot be checked" in check.detail

    check = r.check_api_key(creds(), "http://b.test", lambda u: FakeBackend(u, models=[]))
    assert check.state == r.State.FAILED and "no models" in check.detail


def test_api_key_against_the_contract_stand_in() -> None:
    with BackendStandIn() as backend:
        backend.add_user("a@example.com", "Password-123")
        good = backend.issue_api_key("a@example.com")
        check = r.check_api_key(creds(good), backend.url, BackendClient)
        assert check.state == r.State.OK, check.detail
        backend.revoke_api_key(good)
        check = r.check_api_key(creds(good), backend.url, BackendClient)
        assert check.state == r.State.FAILED and check.fix_action == r.FIX_ACCOUNT
        assert r.check_backend(backend.url, BackendClient).state == r.State.OK


# ------------------------------------------------------------------------------- OpenCode


def test_opencode_states() -> None:
    def found() -> OpenCodeBinary:
        return OpenCodeBinary("/opt/oc/opencode", "1.18.33", "managed")

    ok = r.check_opencode(found)
    assert ok.state == r.State.OK and "1.18.33" in ok.detail and "/opt/oc/opencode" in ok.detail

    def missing() -> OpenCodeBinary:
        raise OpenCodeNotFound("OpenCode is not installed.", "Install it.")

    check = r.check_opencode(missing)
    assert check.state == r.State.MISSING and check.fix_action == r.FIX_INSTALL_OPENCODE
    assert notices.action_for_fix(check.fix_action) == notices.INSTALL_OPENCODE
    assert notices.INSTALL_OPENCODE.label == "Install OpenCode"

    def old() -> OpenCodeBinary:
        raise OpenCodeVersionError("OpenCode 1.2.0 is not supported.", "Install 1.18.33.")

    check = r.check_opencode(old)
    assert check.state == r.State.FAILED and check.fix_action == r.FIX_INSTALL_OPENCODE
    assert "1.2.0" in check.detail


def test_opencode_with_the_real_finder(tmp_path: Path) -> None:
    from smartspec_desktop.core.opencode.binary import VersionCache, find_opencode

    cache = VersionCache(tmp_path / "v.json")
    check = r.check_opencode(lambda: find_opencode("", tmp_path / "none", cache, which=no_which))
    assert check.state == r.State.MISSING

    fake = tmp_path / "bin" / "opencode"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 0.9.1\n")
    fake.chmod(0o755)
    check = r.check_opencode(lambda: find_opencode(str(fake), tmp_path / "none", cache))
    assert check.state == r.State.FAILED and "0.9.1" in check.detail


# -------------------------------------------------------------------------------- keyring


def test_keyring_states() -> None:
    assert r.check_keyring(MemoryStore()).state == r.State.OK
    check = r.check_keyring(NoKeyring())
    assert check.state == r.State.MISSING and check.fix_action == r.FIX_ACCOUNT
    assert API_KEY_ENV in check.detail
    check = r.check_keyring(LockedKeyring())
    assert check.state == r.State.FAILED and "LockedError" in check.detail


# ------------------------------------------------------------------------------- terminal


def no_which(_name: str) -> str | None:
    return None


def only(*names: str) -> r.Which:
    return lambda name: f"/usr/bin/{name}" if name in names else None


def test_terminal_auto_found_and_missing() -> None:
    ok = r.check_terminal("auto", platform="linux", which=only("xterm"), environ={})
    assert ok.state == r.State.OK and "xterm" in ok.detail

    check = r.check_terminal("auto", platform="linux", which=no_which, environ={})
    assert check.state == r.State.MISSING and check.fix_action == r.FIX_SETTINGS
    assert "No terminal found" in check.detail


def test_terminal_named_and_custom() -> None:
    ok = r.check_terminal("xterm", platform="linux", which=only("xterm", "konsole"), environ={})
    assert ok.state == r.State.OK
    check = r.check_terminal("kitty", platform="linux", which=only("xterm"), environ={})
    assert check.state == r.State.FAILED and "kitty" in check.detail and "xterm" in check.detail
    assert check.fix_action == r.FIX_SETTINGS

    ok = r.check_terminal("myterm -e {command}", platform="linux", which=only("myterm"))
    assert ok.state == r.State.OK
    check = r.check_terminal("myterm -e {command}", platform="linux", which=no_which)
    assert check.state == r.State.FAILED and "myterm" in check.detail


# -------------------------------------------------------------------------------- browser


def test_browser_states() -> None:
    assert r.check_browser(lambda: "firefox").state == r.State.OK
    check = r.check_browser(lambda: None)
    assert check.state == r.State.MISSING and "BROWSER" in check.detail


def test_default_browser_finder_honours_browser_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    monkeypatch.setattr(webbrowser, "_tryorder", None, raising=False)
    monkeypatch.setattr(webbrowser, "_browsers", {}, raising=False)
    monkeypatch.setenv("BROWSER", "/bin/true")
    assert r.default_find_browser()


# ------------------------------------------------------------------------------ together


@pytest.mark.allow_log(
    r"smartspec_desktop.core.readiness: readiness check opencode failed unexpectedly",
    reason="the broken check is the point of this test",
)
def test_readiness_runs_every_check_in_order_and_survives_a_broken_one() -> None:
    def boom() -> OpenCodeBinary:
        raise RuntimeError("disk on fire")

    ready = r.Readiness(
        Settings(backend_url="http://b.test"),
        creds(None),
        boom,
        backend_factory=lambda u: FakeBackend(u),
        which=only("xterm"),
        environ={},
        find_browser=lambda: None,
        platform="linux",
    )
    assert list(ready.checks()) == list(r.TITLES)
    results = {c.name: c for c in ready.run_all()}
    assert results[r.BACKEND].ok and results[r.TERMINAL].ok
    assert results[r.API_KEY].state == r.State.MISSING
    assert results[r.OPENCODE].state == r.State.FAILED
    assert "disk on fire" in results[r.OPENCODE].detail
    assert results[r.BROWSER].state == r.State.MISSING
    assert not r.all_ok(results) and r.checking(r.BACKEND).state == r.State.CHECKING
