"""Fail a test on an unexpected WARNING or ERROR log record (after qutebrowser's logfail).

Every record of level WARNING or above that reaches the root logger while a test (its fixtures
included) runs fails that test, with the records listed. Expected ones are declared:

- ``@pytest.mark.allow_log(r"regex", reason="…")`` — records whose ``"logger: message"`` matches
  the regex (``re.search``) are allowed; the reason is mandatory, so each exception says why;
- records load alone can cause are allowed everywhere (``ALWAYS_ALLOWED``, each with its reason);
- or the test takes ``caplog`` and raises its level explicitly (``caplog.set_level`` /
  ``caplog.at_level``) to or below the record's level: it checks those records itself.

Qt's own warnings are failed by pytest-qt (``qt_log_level_fail = "WARNING"`` in pyproject.toml;
``@pytest.mark.qt_log_ignore(regex)`` there).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import pytest
from _pytest.logging import LogCaptureHandler

#: Records load alone can cause, allowed in every test (pattern, why). Keep this short.
ALWAYS_ALLOWED: tuple[tuple[str, str], ...] = (
    (
        r"^smartspec_desktop\.core\.process\.procs: killing \d+ process\(es\) that ignored SIGTERM",
        "on a loaded machine a server can take longer than the stop's grace to exit and is "
        "killed; every test still fails if any process it started outlives it (the reaper)",
    ),
)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if _claimed_by_caplog(record):
            return
        with self._lock_records:
            self.records.append(record)


def _claimed_by_caplog(record: logging.LogRecord) -> bool:
    """The test raised ``caplog``'s level to this record's (checked when the record is made:
    ``caplog.at_level`` restores the level on exit)."""
    return any(
        isinstance(h, LogCaptureHandler) and 0 < h.level <= record.levelno
        for h in logging.getLogger().handlers
    )


def _describe(record: logging.LogRecord) -> str:
    return f"{record.name}: {record.getMessage()}"


def unexpected(records: list[logging.LogRecord], allowed: list[re.Pattern[str]]) -> list[str]:
    """The records no ``allow_log`` pattern allows."""
    out = []
    for r in records:
        text = _describe(r)
        if any(p.search(text) for p in allowed):
            continue
        out.append(f"{r.levelname} {text}")
    return out


@pytest.fixture(autouse=True)
def logfail(request: pytest.FixtureRequest) -> Iterator[None]:
    allowed = [re.compile(pattern) for pattern, _why in ALWAYS_ALLOWED]
    for mark in request.node.iter_markers("allow_log"):
        if not mark.args or not mark.kwargs.get("reason"):
            raise pytest.UsageError(
                f"{request.node.nodeid}: allow_log needs a pattern and reason='why it is expected'"
            )
        allowed.extend(re.compile(p) for p in mark.args)
    collector = _Collector()
    root = logging.getLogger()
    # Records must reach the root logger even if the app raised its level (setup_logging).
    old_level = root.level
    if root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
    bad = unexpected(collector.records, allowed)
    if bad:
        pytest.fail(
            "unexpected log records (fix the cause, or declare them with "
            "@pytest.mark.allow_log(pattern, reason=...)):\n  " + "\n  ".join(bad),
            pytrace=False,
        )
