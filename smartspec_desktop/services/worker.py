"""Run a blocking core call off the GUI thread and get its result back on the GUI thread.

``Jobs.submit(fn, on_done=..., on_failed=...)`` runs ``fn()`` on a ``QThreadPool`` thread. The
result (or the exception) is delivered through a signal of a bridge object that lives in the GUI
thread, so the callbacks always run there (queued connection) and may touch widgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from smartspec_desktop.core.errors import SmartSpecError

log = logging.getLogger(__name__)


def as_error(e: BaseException) -> SmartSpecError:
    """Every failure the window shows is a SmartSpecError with a problem and a fix."""
    if isinstance(e, SmartSpecError):
        return e
    log.error("unexpected error in a background job", exc_info=e)
    return SmartSpecError(
        f"Something went wrong: {type(e).__name__}: {e}",
        "See the app log for details, and report it if it happens again.",
    )


class _Bridge(QObject):
    done = Signal(object)
    failed = Signal(object)


class _Runnable(QRunnable):
    def __init__(self, fn: Callable[[], Any], bridge: _Bridge) -> None:
        super().__init__()
        self.fn = fn
        self.bridge = bridge
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as e:
            if not isinstance(e, Exception):
                log.warning("worker interrupted: %r", e)
            self._deliver(self.bridge.failed, e)
        else:
            self._deliver(self.bridge.done, result)

    @staticmethod
    def _deliver(signal: Any, value: object) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the app quit while this job ran: nobody is left to tell
            log.info("a background job finished after the window closed")


class Jobs(QObject):
    """A thread pool for core calls; create it on the GUI thread."""

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 8) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._bridges: set[_Bridge] = set()

    def submit(
        self,
        fn: Callable[[], Any],
        *,
        on_done: Callable[[Any], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        bridge = _Bridge()  # lives in the caller's (GUI) thread: its signals are queued there
        self._bridges.add(bridge)

        def finish() -> None:
            self._bridges.discard(bridge)
            bridge.deleteLater()

        def done(result: object) -> None:
            try:
                if on_done is not None:
                    on_done(result)
            finally:
                finish()

        def failed(error: object) -> None:
            try:
                if on_failed is not None:
                    on_failed(error)  # type: ignore[arg-type]
                else:
                    log.error("background job failed: %s", error, exc_info=error)  # type: ignore[arg-type]
            finally:
                finish()

        bridge.done.connect(done)
        bridge.failed.connect(failed)
        self.pool.start(_Runnable(fn, bridge))

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until every job finished (shutdown and tests only, never from a slot)."""
        return self.pool.waitForDone(msecs)
