"""Everything checked before a server is spawned, as named steps; each failure is its own error.

Steps, in order: the workspace folder, the opencode binary, the API key's format, the backend
(gateway health, then the key's models; a short rate limit is waited out), the model. The steps
that take time say so through ``progress``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.broker.modelids import safe_model_ids
from smartspec_desktop.core.errors import ApiKeyRejected, RateLimited, WorkspaceError
from smartspec_desktop.core.opencode.binary import OpenCodeBinary
from smartspec_desktop.core.remote.address import is_remote, parse_remote
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.secrets import Credentials, check_api_key_format

Progress = Callable[[str], None]
T = TypeVar("T")

RATE_LIMIT_RETRIES = 2


def normalize_workspace(path: str | os.PathLike[str]) -> str:
    """Absolute, symlinks resolved, no trailing slash; checked to be a readable folder."""
    raw = os.fspath(path)
    if is_remote(raw):
        # ssh://[user@]host[:port]/path: its canonical form is its identity (checked on the
        # host when it starts).
        return str(parse_remote(raw))
    if not raw.strip():
        raise WorkspaceError("No workspace folder was given.", "Pass the path of a project folder.")
    p = Path(raw).expanduser()
    if not p.exists():
        raise WorkspaceError(
            f"The workspace {raw} does not exist.", "Check the path, or create the folder first."
        )
    resolved = p.resolve()
    if not resolved.is_dir():
        raise WorkspaceError(
            f"The workspace {raw} is a file, not a folder.", "Choose the project's folder instead."
        )
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise WorkspaceError(
            f"The workspace {raw} cannot be read (permission denied).",
            "Fix the folder's permissions (e.g. chmod u+rx) or choose another folder.",
        )
    return str(resolved)


@dataclass
class Preflight:
    """What the checks found, all a start needs."""

    binary: OpenCodeBinary
    api_key: str
    models: list[str]
    model: str


def with_rate_limit_retry(call: Callable[[], T], say: Progress) -> T:
    """``call()``, waiting out up to :data:`RATE_LIMIT_RETRIES` short rate limits."""
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            return call()
        except RateLimited as e:
            if attempt == RATE_LIMIT_RETRIES or e.retry_after > 30:
                raise
            say(str(e.problem))
            time.sleep(e.retry_after)
    raise AssertionError("unreachable")


def check_key(credentials: Credentials) -> str:
    return check_key_source(credentials)[0]


def check_key_source(credentials: Credentials) -> tuple[str, str]:
    """The key in use and where it came from (keyring, SMARTSPEC_API_KEY, this run); a
    malformed key's error names that source and its fix."""
    api_key, source = credentials.api_key()
    return check_api_key_format(api_key, source), source


def check_backend(
    settings: Settings,
    api_key: str,
    backend_factory: Callable[[str], BackendClient],
    say: Progress,
    source: str | None = None,
) -> list[str]:
    """The gateway answers and lists models for the key; returns them (never empty). A
    rejected key's error names ``source``, where the key came from."""
    say(f"Checking the SmartSpecPro backend at {settings.backend_url} …")
    with backend_factory(settings.backend_url) as backend:
        with_rate_limit_retry(backend.gateway_health, say)
        listed = with_rate_limit_retry(lambda: backend.models(api_key, source=source), say)
    # Model ids are data, not config: one OpenCode would expand is dropped, with a warning (F5).
    models = safe_model_ids(listed)
    if listed and not models:
        raise ApiKeyRejected(
            "The SmartSpecPro gateway lists no model id that is safe to use "
            f"({len(listed)} listed, none a plain id).",
            "This is a defect of the backend's model list; report it to your administrator.",
        )
    if not models:
        raise ApiKeyRejected(
            "The SmartSpecPro gateway lists no models for this key.",
            "Check your account's plan, or try another key.",
        )
    return models


def choose_model(settings: Settings, models: list[str]) -> str:
    return settings.model if settings.model in models else models[0]


def run_preflight(
    settings: Settings,
    credentials: Credentials,
    find_opencode: Callable[[], OpenCodeBinary],
    backend_factory: Callable[[str], BackendClient],
    say: Progress,
) -> Preflight:
    """The binary, key, backend and model steps (the workspace is normalised before)."""
    binary = find_opencode()
    api_key, source = check_key_source(credentials)
    models = check_backend(settings, api_key, backend_factory, say, source)
    return Preflight(binary, api_key, models, choose_model(settings, models))
