"""Runs the readiness checks (core/readiness.py) off the GUI thread, all at once.

``run()`` puts every check in ``checking`` state and submits each to the thread pool as its own
job, so a slow keyring or an unreachable backend holds up only its own row. Results of an older
round (a "Check again" clicked while one runs) are dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from smartspec_desktop.core.readiness import Check, State, checking
from smartspec_desktop.services.worker import Jobs


class ReadinessService(QObject):
    check_changed = Signal(object)  # Check
    finished = Signal(object)  # dict[str, Check], every check done

    def __init__(
        self,
        checks: Callable[[], dict[str, Callable[[], Check]]],
        jobs: Jobs,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        #: Called on each round, so a check sees the settings as they are now.
        self._checks = checks
        self.jobs = jobs
        self.results: dict[str, Check] = {}
        self._round = 0

    @property
    def running(self) -> bool:
        return any(c.state == State.CHECKING for c in self.results.values())

    def run(self) -> None:
        self._round += 1
        this_round = self._round
        checks = self._checks()
        self.results = {name: checking(name) for name in checks}
        for name in checks:
            self.check_changed.emit(self.results[name])
        for fn in checks.values():
            self.jobs.submit(fn, on_done=self._receiver(this_round))

    def _receiver(self, this_round: int) -> Callable[[object], None]:
        def receive(check: object) -> None:
            self._done(this_round, check)

        return receive

    def _done(self, this_round: int, check: object) -> None:
        if this_round != self._round or not isinstance(check, Check):
            return
        self.results[check.name] = check
        self.check_changed.emit(check)
        if not self.running:
            self.finished.emit(dict(self.results))
