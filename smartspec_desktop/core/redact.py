"""Removing secrets from text before it reaches a log, a state file, an error or the screen."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

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


class LazyRedactor(Redactor):
    """A :class:`Redactor` that asks ``fetch`` for its secrets when it first has text to clean.

    For the CLI's log: the API key comes from the OS keyring (D-Bus calls, ~70 ms), and most
    commands log nothing. Every text is still redacted with the secrets: the first call waits for
    them (another thread's too). A record logged while ``fetch`` runs (on its thread) is cleaned
    of what is known so far and of anything shaped like a key. When ``fetch`` raises, the error
    goes to the caller and the next call asks again: never a text let through unredacted.
    """

    def __init__(self, fetch: Callable[[], Iterable[str | None]]) -> None:
        super().__init__()
        self._fetch: Callable[[], Iterable[str | None]] | None = fetch
        self._lock = threading.RLock()
        self._fetching = False

    @property
    def fetched(self) -> bool:
        """Whether the secrets were asked for (and given)."""
        return self._fetch is None

    def _resolve(self) -> None:
        with self._lock:
            fetch = self._fetch
            if fetch is None or self._fetching:
                return
            self._fetching = True
            try:
                for secret in fetch():
                    self.add(secret)
                self._fetch = None
            finally:
                self._fetching = False

    def __call__(self, text: str) -> str:
        if self._fetch is not None:
            self._resolve()
        return super().__call__(text)
