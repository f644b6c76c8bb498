"""Removing secrets from text before it reaches a log, a state file, an error or the screen."""

from __future__ import annotations

import re
from collections.abc import Iterable

API_KEY_PATTERN = re.compile(r"sk-smartspec-[A-Za-z0-9_-]{8,}")
MASK = "***"


def mask_key(key: str) -> str:
    """``sk-smartspec-zDA…DpQ8``: enough to recognise a key, never enough to use it."""
    if len(key) < 24:
        return MASK
    return f"{key[:16]}…{key[-4:]}"


class Redactor:
    """Replaces known secret values, and anything shaped like an API key, by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        # Very short values would mangle ordinary text; real secrets here are long and random.
        if secret and len(secret) >= 6:
            # Copy on write: other threads may be redacting with the old set right now.
            self._secrets = self._secrets | {secret}

    def __call__(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, MASK)
        return API_KEY_PATTERN.sub(MASK, text)
