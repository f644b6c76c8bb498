"""Start failures that are decided before anything is spawned (no OpenCode, a bad or missing
key, the backend down or refusing the key, a bad workspace), in-process with an injected backend:
each names the problem and the fix, and no server is spawned or recorded. The CLI's wording of
each is checked once in tests/integration/test_cli_sessions.py."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import (
    ApiKeyInvalid,
    ApiKeyMissing,
    ApiKeyRejected,
    BackendUnreachable,
    OpenCodeNotFound,
    SmartSpecError,
    WorkspaceError,
)
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials, MemoryStore

KEY = "sk-smartspec-" + "k" * 43


class ScriptedBackend(BackendClient):
    """The gateway's health and model list without a server: answers or raises as told."""

    def __init__(self, url: str, *, models: list[str] | Exception) -> None:
        super().__init__(url)
        self._models = models

    def gateway_health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def models(self, api_key: str, source: str | None = None) -> list[str]:
        if isinstance(self._models, Exception):
            raise self._models
        return self._models


def fake_opencode(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "opencode"
    path.write_text("#!/bin/sh\necho 1.18.33\n")
    path.chmod(0o755)
    return path


def manager(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    key: str | None = KEY,
    models: list[str] | Exception | None = None,
    backend_url: str = "http://127.0.0.1:9",
    opencode: bool = True,
) -> ServerManager:
    paths = Paths.from_base(tmp_path / "data")
    settings = Settings(backend_url=backend_url)
    if opencode:
        settings.opencode_path = str(fake_opencode(tmp_path / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    environ = {"SMARTSPEC_API_KEY": key} if key else {}
    creds = Credentials(MemoryStore(), MemoryStore(), environ=environ)
    sm = ServerManager(paths, settings, creds, environ=environ)
    if models is not None:
        answer = models
        sm.backend_factory = lambda url: ScriptedBackend(url, models=answer)

    def spawned(*args: object, **kwargs: object) -> None:
        raise AssertionError("a server was spawned despite a failed preflight")

    monkeypatch.setattr(sm, "_spawn_and_wait", spawned)
    return sm


def start_fails(sm: ServerManager, ws: Path) -> SmartSpecError:
    with pytest.raises(SmartSpecError) as ei:
        sm.start(str(ws))
    assert sm.refresh() == [], "nothing may be recorded"
    assert ei.value.problem and ei.value.fix, "every failure names the problem and the fix"
    return ei.value


def test_missing_opencode_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm = manager(tmp_path, monkeypatch, opencode=False, models=["m"])
    e = start_fails(sm, tmp_path)
    assert isinstance(e, OpenCodeNotFound)
    assert "OpenCode is not installed" in e.problem
    assert "smartspec-desktop opencode install" in e.fix


@pytest.mark.parametrize(
    ("key", "error", "words"),
    [
        (None, ApiKeyMissing, "No SmartSpecPro API key"),
        ("sk-nope", ApiKeyInvalid, "not a SmartSpecPro API key"),
    ],
    ids=["missing", "malformed"],
)
def test_a_missing_or_malformed_key_spawns_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str | None,
    error: type[SmartSpecError],
    words: str,
) -> None:
    sm = manager(tmp_path, monkeypatch, key=key, models=AssertionError("backend asked"))
    e = start_fails(sm, tmp_path)
    assert isinstance(e, error) and words in e.problem
    assert "sk-nope" not in str(e)
    if key is None:
        assert "SMARTSPEC_API_KEY" in e.fix


def test_a_key_the_gateway_rejects_spawns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rejected = ApiKeyRejected("The SmartSpecPro backend rejected the API key.", "Get a new key.")
    sm = manager(tmp_path, monkeypatch, models=rejected)
    assert start_fails(sm, tmp_path) is rejected


def test_a_gateway_with_no_models_for_the_key_spawns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = start_fails(manager(tmp_path, monkeypatch, models=[]), tmp_path)
    assert isinstance(e, ApiKeyRejected) and "lists no models" in e.problem


def test_backend_down_spawns_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    # The real client against a closed port: refused at once, no stand-in needed.
    e = start_fails(manager(tmp_path, monkeypatch, backend_url=dead), tmp_path)
    assert isinstance(e, BackendUnreachable)
    assert f"Cannot reach the SmartSpecPro backend at {dead}" in e.problem


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("missing", "does not exist"), ("file", "is a file, not a folder")],
)
def test_workspace_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, expected: str
) -> None:
    target = tmp_path / "nothing-here"
    if kind == "file":
        target.write_text("x")
    e = start_fails(manager(tmp_path, monkeypatch, models=["m"]), target)
    assert isinstance(e, WorkspaceError) and expected in e.problem
