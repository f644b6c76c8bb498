"""Metering: one JSON line per gateway call in a 0600 file, plus in-memory totals.

Line format (one object per line, UTF-8, appended; never contains a key or a token)::

    {"time": 1764572400.12, "status": 200, "path": "/v1/opencode/chat/completions",
     "model": "anthropic/claude-3.5-sonnet", "session": "ses_…" | null,
     "root": "ses_…" | null, "stream": true,
     "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
     "duration": 0.84, "error": null | "<one line>", "refused": null | "budget" | "auth"}

``session`` is the OpenCode session the call served: OpenCode 1.18.33 sends it to providers as
the ``x-session-id`` header (also ``x-session-affinity``; verified by capturing a real request).
``root`` is, for a sub-agent's call (an OpenCode child session), the root of that session's parent
chain (``sessions.py``), else null: the call counts toward the root's task.
Token counts come from the ``usage`` object of the final stream chunk (or of a non-streamed
answer); a call without one counts 0 tokens and ``usage: false`` is recorded.

Standard library only (runs inside the supervisor).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class CallRecord:
    path: str
    status: int = 0
    model: str | None = None
    session: str | None = None
    #: The root of ``session``'s parent chain when it is a sub-agent's (child) session.
    root: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    has_usage: bool = False
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    error: str | None = None
    refused: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def set_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int) and not isinstance(p, bool) and p >= 0:
            self.prompt_tokens = p
            self.has_usage = True
        if isinstance(c, int) and not isinstance(c, bool) and c >= 0:
            self.completion_tokens = c
            self.has_usage = True

    def as_json(self) -> dict[str, Any]:
        return {
            "time": round(self.started, 3),
            "status": self.status,
            "path": self.path,
            "model": self.model,
            "session": self.session,
            "root": self.root,
            "stream": self.stream,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "usage": self.has_usage,
            "duration": round(self.duration, 4),
            "error": self.error,
            "refused": self.refused,
        }


@dataclass
class Counts:
    """Calls and tokens of a set of gateway calls: the one counting rule, for the broker's
    running :class:`Totals` and the app's summaries of the ledger (``brokerlink.Usage``)."""

    calls: int = 0
    errors: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def count(
        self, *, refused: bool, failed: bool, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """One call: refused by the broker, else failed (an error or an HTTP error status)."""
        self.calls += 1
        if refused:
            self.refused += 1
        elif failed:
            self.errors += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def as_json(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "refused": self.refused,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class Totals(Counts):
    def add(self, rec: CallRecord) -> None:
        self.count(
            refused=bool(rec.refused),
            failed=bool(rec.error) or rec.status >= 400,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
        )


class Meter:
    """Appends :class:`CallRecord` lines to ``path`` (0600) and keeps totals since start.

    ``path=None`` keeps totals only. A write failure (full disk) is logged once per kind and never
    fails the call.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._totals = Totals()
        self._by_session: dict[str, Totals] = {}
        self._write_failed = False

    def record(self, rec: CallRecord) -> None:
        line = json.dumps(rec.as_json(), separators=(",", ":")) + "\n"
        with self._lock:
            self._totals.add(rec)
            if rec.session:
                self._by_session.setdefault(rec.session, Totals()).add(rec)
            if self.path is None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode("utf-8"))
                finally:
                    os.close(fd)
            except OSError as e:
                if not self._write_failed:
                    log.warning("could not write the usage record to %s: %s", self.path, e)
                self._write_failed = True

    def totals(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = self._totals.as_json()
            out["by_session"] = {s: t.as_json() for s, t in self._by_session.items()}
            return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a meter file (for the parent side: ``usage PATH``); bad lines skipped."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
