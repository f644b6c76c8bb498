"""What the window tells the user about a failure and which button it offers: one table.

The core says what is wrong and the generic fix (the CLI prints the same text); a core error
carries a stable ``code`` and a readiness check a fix id (``core.readiness.FIX_*``). This module
alone maps those to the window's own words and actions (Open Settings, Open Account, Install
OpenCode, Try again); widgets render the :class:`Notice` it builds (``Banner.show_notice``). Pure:
no Qt, so the table is unit-tested without a window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from smartspec_desktop.core import readiness
from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.opencode.binary import PINNED_VERSION
from smartspec_desktop.core.storage.secrets import API_KEY_ENV

Level = Literal["error", "warning", "info"]

#: Action ids a banner button emits (``Banner.action_clicked``).
SETTINGS, ACCOUNT, INSTALL, RESTART = "settings", "account", "install", "restart"


@dataclass(frozen=True)
class Action:
    id: str
    label: str

    def pair(self) -> tuple[str, str]:
        """(id, button label), what ``Banner.show_message`` takes."""
        return self.id, self.label


OPEN_SETTINGS = Action(SETTINGS, "Open Settings")
OPEN_ACCOUNT = Action(ACCOUNT, "Open Account")
INSTALL_OPENCODE = Action(INSTALL, "Install OpenCode")

#: Error codes → the button the window offers with the error.
ERROR_ACTIONS: dict[str, Action] = {
    "opencode_missing": INSTALL_OPENCODE,
    "opencode_version": Action(INSTALL, f"Install OpenCode {PINNED_VERSION}"),
    "api_key_missing": OPEN_ACCOUNT,
    "api_key_invalid": OPEN_ACCOUNT,
    "api_key_rejected": OPEN_ACCOUNT,
    "insufficient_credits": OPEN_ACCOUNT,
    "keyring_unavailable": OPEN_ACCOUNT,
    "backend_unreachable": OPEN_SETTINGS,
    "config": OPEN_SETTINGS,
    "no_terminal": OPEN_SETTINGS,
    "server_start": Action(RESTART, "Try again"),
}

#: Readiness fix ids (core) → the button the readiness panel offers.
FIX_ACTIONS: dict[str, Action] = {
    readiness.FIX_SETTINGS: OPEN_SETTINGS,
    readiness.FIX_ACCOUNT: OPEN_ACCOUNT,
    readiness.FIX_INSTALL_OPENCODE: INSTALL_OPENCODE,
}

#: Error codes whose fix the window words itself (the core's names a command of the CLI).
UI_FIXES: dict[str, str] = {
    "server_not_running": "Start it with Start Dev Server in Dev Mode (its log is shown there).",
    "auth_required": "Sign in again under Account (sessions last 30 minutes).",
}


@dataclass(frozen=True)
class Notice:
    """One message for the user: rich text (already escaped), an optional action, details."""

    level: Level
    text: str
    action: Action | None = None
    details: str = ""


def action_for(error: SmartSpecError) -> Action | None:
    return ERROR_ACTIONS.get(error.code)


def action_for_fix(fix_id: str) -> Action | None:
    return FIX_ACTIONS.get(fix_id)


#: A rejected key: the window's words, unless the key came from the environment (which the
#: Account page cannot change).
KEY_FIX = "Paste a valid key under Account."


def fix_text(error: SmartSpecError) -> str:
    """The fix in the window's words."""
    if error.code == "api_key_rejected" and API_KEY_ENV not in error.fix:
        return KEY_FIX + (" Then restart the server." if "restart the server" in error.fix else "")
    return UI_FIXES.get(error.code, error.fix)


def plain(error: SmartSpecError) -> str:
    """The error as one plain line in the window's words (problem, then fix)."""
    return f"{error.problem} {fix_text(error)}".strip()


def error_notice(error: SmartSpecError, *, level: Level = "error") -> Notice:
    """A core error as the window shows it: the problem in bold, the fix, its button."""
    text = f"<b>{escape(error.problem)}</b><br>{escape(fix_text(error))}"
    return Notice(level, text, action_for(error), error.details)


def text_notice(level: Level, text: str, action: Action | None = None) -> Notice:
    """A plain-text message (escaped here)."""
    return Notice(level, escape(text), action)


def escape(text: str) -> str:
    """Plain text for a rich-text label: escaped once, line breaks kept."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace(os.linesep, "<br>")
    )
