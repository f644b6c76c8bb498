"""Is this machine ready? The checks behind the window's readiness panel (no Qt).

Each check is a plain blocking function that returns a :class:`Check` (it never raises): its
state (``ok``, ``missing``, ``failed``; ``checking`` while it runs), one line of detail and the
fix the window offers (:data:`FIX_SETTINGS`, :data:`FIX_ACCOUNT`, :data:`FIX_INSTALL_OPENCODE`).
:class:`Readiness` holds what the checks need (injectable: a backend factory, a secret store,
``which``, a browser finder) and gives each check as its own callable, so the window runs them
in parallel off the GUI thread. The backend gets one health call and one ``/models`` call per
round (it allows 60 requests a minute per IP): no retries, no polling.
"""

from __future__ import annotations

import enum
import logging
import os
import shlex
import shutil
import sys
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import (
    ApiKeyInvalid,
    ApiKeyMissing,
    ApiKeyRejected,
    BackendError,
    BackendUnreachable,
    OpenCodeNotFound,
    OpenCodeVersionError,
    RateLimited,
    SmartSpecError,
)
from smartspec_desktop.core.opencode.binary import PINNED_VERSION, OpenCodeBinary
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.secrets import (
    API_KEY_ENTRY,
    KEYRING_FIX,
    Credentials,
    check_api_key_format,
    source_text,
)

log = logging.getLogger(__name__)

Which = Callable[[str], str | None]


class State(str, enum.Enum):
    OK = "ok"
    MISSING = "missing"
    FAILED = "failed"
    CHECKING = "checking"


#: The fixes a row can offer; the window maps each to one of its own actions and button labels
#: (``ui/notices.FIX_ACTIONS``).
FIX_SETTINGS = "settings"
FIX_ACCOUNT = "account"
FIX_INSTALL_OPENCODE = "install_opencode"

BACKEND, API_KEY, OPENCODE, KEYRING, TERMINAL, BROWSER = (
    "backend",
    "api_key",
    "opencode",
    "keyring",
    "terminal",
    "browser",
)
#: Every check, in the order the panel lists them, with its title.
TITLES: dict[str, str] = {
    BACKEND: "SmartSpecPro backend",
    API_KEY: "API key",
    OPENCODE: "OpenCode",
    KEYRING: "OS keyring",
    TERMINAL: "Terminal (Open CLI)",
    BROWSER: "Web browser (Open OpenWork UI)",
}


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str
    #: One of the FIX_* names, or "" when there is no fix to offer.
    fix_action: str = ""

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    @property
    def ok(self) -> bool:
        return self.state == State.OK


def checking(name: str) -> Check:
    return Check(name, State.CHECKING, "Checking …")


def all_ok(checks: Mapping[str, Check] | list[Check]) -> bool:
    values = list(checks.values()) if isinstance(checks, Mapping) else checks
    return all(c.ok for c in values)


def _text(e: SmartSpecError) -> str:
    return str(e).strip()


# ------------------------------------------------------------------------------- the checks


def check_backend(url: str, backend_factory: Callable[[str], BackendClient]) -> Check:
    """``/v1/opencode/health`` answers at the configured URL (one request)."""
    try:
        with backend_factory(url) as backend:
            backend.gateway_health()
    except BackendUnreachable as e:
        return Check(
            BACKEND,
            State.FAILED,
            (e.problem if url in e.problem else f"Not reachable at {url}: {e.problem}")
            + " Start the backend, or set its URL in Settings (or try the demo backend).",
            FIX_SETTINGS,
        )
    except RateLimited as e:
        return Check(BACKEND, State.FAILED, _text(e), "")
    except BackendError as e:
        return Check(BACKEND, State.FAILED, f"{url}: {_text(e)}", FIX_SETTINGS)
    return Check(BACKEND, State.OK, f"Reachable at {url}.")


def check_api_key(
    credentials: Credentials, url: str, backend_factory: Callable[[str], BackendClient]
) -> Check:
    """A key is configured and the gateway accepts it (one ``/v1/opencode/models`` call)."""
    try:
        status = credentials.key_status()
        key = check_api_key_format(status.key, status.source)
    except ApiKeyMissing as e:
        return Check(API_KEY, State.MISSING, _text(e), FIX_ACCOUNT)
    except (ApiKeyInvalid, SmartSpecError) as e:
        return Check(API_KEY, State.FAILED, _text(e), FIX_ACCOUNT)
    where = source_text(status.source)
    try:
        with backend_factory(url) as backend:
            models = backend.models(key, status.source)
    except BackendUnreachable:
        return Check(
            API_KEY,
            State.FAILED,
            f"A key is set (from {where}) but cannot be checked: the backend at {url} is not "
            "reachable.",
            FIX_SETTINGS,
        )
    except RateLimited as e:
        return Check(API_KEY, State.FAILED, f"Not checked: {_text(e)}", "")
    except ApiKeyRejected as e:
        return Check(API_KEY, State.FAILED, _text(e), FIX_ACCOUNT)
    except BackendError as e:
        return Check(API_KEY, State.FAILED, _text(e), FIX_ACCOUNT)
    if not models:
        return Check(
            API_KEY,
            State.FAILED,
            f"The key from {where} is accepted but the gateway lists no models for it. Check "
            "your account's plan, or use another key.",
            FIX_ACCOUNT,
        )
    n = len(models)
    return Check(API_KEY, State.OK, f"Accepted (from {where}; {n} model{'s' * (n != 1)}).")


def check_opencode(find_opencode: Callable[[], OpenCodeBinary]) -> Check:
    """OpenCode is found (Settings path, the app's install, PATH) and its version is supported."""
    try:
        binary = find_opencode()
    except OpenCodeNotFound as e:
        return Check(OPENCODE, State.MISSING, _text(e), FIX_INSTALL_OPENCODE)
    except OpenCodeVersionError as e:
        return Check(OPENCODE, State.FAILED, _text(e), FIX_INSTALL_OPENCODE)
    except SmartSpecError as e:  # e.g. a program another user could replace
        return Check(OPENCODE, State.FAILED, _text(e), FIX_SETTINGS)
    detail = f"OpenCode {binary.version} at {binary.path} (from {binary.source})."
    if binary.warning:
        detail += f" {binary.warning} Tested with {PINNED_VERSION}."
    return Check(OPENCODE, State.OK, detail)


def check_keyring(store: object) -> Check:
    """An OS keyring answers (a read of our entry: a locked or broken one fails here)."""
    available = getattr(store, "available", None)
    get = getattr(store, "get", None)
    try:
        if available is None or get is None or not available():
            return Check(
                KEYRING,
                State.MISSING,
                f"No OS keyring is available. {KEYRING_FIX} (Account can also use a key for "
                "this run only.)",
                FIX_ACCOUNT,
            )
        get(API_KEY_ENTRY)
    except SmartSpecError as e:
        return Check(KEYRING, State.FAILED, _text(e), FIX_ACCOUNT)
    return Check(KEYRING, State.OK, "Available: the API key and server passwords are kept there.")


def check_terminal(
    preference: str,
    *,
    platform: str = sys.platform,
    which: Which = shutil.which,
    environ: Mapping[str, str] | None = None,
) -> Check:
    """A terminal for Open OpenCode CLI: the one Settings names, or any "auto" finds."""
    from smartspec_desktop.core.launch.terminals import available_terminals

    pref = (preference or "").strip()
    if "{command}" in pref:
        try:
            program = shlex.split(pref, posix=platform != "win32")[0]
        except (ValueError, IndexError):
            program = ""
        if program and (which(program) or os.path.isfile(program)):
            return Check(TERMINAL, State.OK, f"Custom command: {pref}")
        return Check(
            TERMINAL,
            State.FAILED,
            f"Settings → Terminal runs “{program or pref}”, which is not installed.",
            FIX_SETTINGS,
        )
    found = available_terminals(platform, which, environ)
    if pref and pref.lower() != "auto":
        if pref in found:
            return Check(TERMINAL, State.OK, f"{pref} (Settings → Terminal).")
        others = f" Found: {', '.join(found)}." if found else ""
        return Check(
            TERMINAL,
            State.FAILED,
            f"Settings → Terminal is “{pref}”, which is not installed.{others}",
            FIX_SETTINGS,
        )
    if not found:
        return Check(
            TERMINAL,
            State.MISSING,
            "No terminal found for Open OpenCode CLI. Install one (e.g. xterm, GNOME Terminal, "
            "Konsole), or set a command in Settings → Terminal.",
            FIX_SETTINGS,
        )
    more = f" (also: {', '.join(found[1:4])})" if len(found) > 1 else ""
    return Check(TERMINAL, State.OK, f"{found[0]}{more}.")


def default_find_browser() -> str | None:
    """The browser Python's ``webbrowser`` would open (``$BROWSER`` first), or None."""
    try:
        controller = webbrowser.get()
    except webbrowser.Error:
        return None
    return str(getattr(controller, "name", "") or type(controller).__name__)


def check_browser(find_browser: Callable[[], str | None] = default_find_browser) -> Check:
    """A web browser for Open OpenWork UI (OpenCode's web UI)."""
    name = find_browser()
    if not name:
        return Check(
            BROWSER,
            State.MISSING,
            "No web browser found for Open OpenWork UI. Install one (e.g. Firefox or "
            "Chromium), or set the BROWSER environment variable.",
        )
    return Check(BROWSER, State.OK, f"{name}.")


# -------------------------------------------------------------------------------- together


def _guarded(name: str, fn: Callable[[], Check]) -> Callable[[], Check]:
    def run() -> Check:
        try:
            return fn()
        except Exception as e:  # a check must never take the panel down with it
            log.exception("readiness check %s failed unexpectedly", name)
            return Check(
                name,
                State.FAILED,
                f"The check itself failed ({type(e).__name__}: {e}). See the app log.",
            )

    return run


@dataclass
class Readiness:
    """What the checks need; every part can be replaced in tests."""

    settings: Settings
    credentials: Credentials
    find_opencode: Callable[[], OpenCodeBinary]
    backend_factory: Callable[[str], BackendClient] = BackendClient
    which: Which = shutil.which
    environ: Mapping[str, str] | None = None
    find_browser: Callable[[], str | None] = default_find_browser
    platform: str = sys.platform

    def checks(self) -> dict[str, Callable[[], Check]]:
        """Each check as its own callable (run them in parallel), in the panel's order."""
        url = self.settings.backend_url
        fns: dict[str, Callable[[], Check]] = {
            BACKEND: lambda: check_backend(url, self.backend_factory),
            API_KEY: lambda: check_api_key(self.credentials, url, self.backend_factory),
            OPENCODE: lambda: check_opencode(self.find_opencode),
            KEYRING: lambda: check_keyring(self.credentials.store),
            TERMINAL: lambda: check_terminal(
                self.settings.terminal,
                platform=self.platform,
                which=self.which,
                environ=self.environ,
            ),
            BROWSER: lambda: check_browser(self.find_browser),
        }
        return {name: _guarded(name, fn) for name, fn in fns.items()}

    def run_all(self) -> list[Check]:
        """Every check, one after the other (the CLI and tests; the window runs them apart)."""
        return [fn() for fn in self.checks().values()]
