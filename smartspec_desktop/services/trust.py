"""Workspace trust for the window: look for project code, trust, revoke, list (off the GUI thread).

The core (:mod:`..core.servers.trust`) holds the store and the finder; this service runs them on
the worker pool and reports through signals, so a slow disk or a lock held by a CLI run never
freezes the window.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from smartspec_desktop.core.servers.trust import (
    ProjectCode,
    TrustEntry,
    TrustStore,
    look_for_project_code,
)
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)


class TrustService(QObject):
    #: workspace, ProjectCode, whether it is trusted now
    checked = Signal(str, object, bool)
    #: workspace, trusted (after trust/untrust succeeded)
    changed = Signal(str, bool)
    entries_loaded = Signal(object)  # list[TrustEntry]
    failed = Signal(str, object)  # workspace, SmartSpecError

    def __init__(self, store: TrustStore, jobs: Jobs, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.jobs = jobs

    def check(self, workspace: str) -> None:
        """Find the workspace's project code and whether it is trusted (→ ``checked``); a
        remote folder's is listed on its host over ssh (still off the GUI thread)."""

        def work() -> tuple[ProjectCode, bool]:
            return look_for_project_code(workspace), self.store.is_trusted(workspace)

        self.jobs.submit(
            work,
            on_done=lambda r: self.checked.emit(workspace, r[0], r[1]),
            on_failed=lambda e: self.failed.emit(workspace, as_error(e)),
        )

    def set_trusted(self, workspace: str, trusted: bool) -> None:
        def work() -> bool:
            if trusted:
                self.store.trust(workspace)
            else:
                self.store.untrust(workspace)
            return trusted

        def done(_r: object) -> None:
            self.changed.emit(workspace, trusted)
            self.load()

        self.jobs.submit(
            work, on_done=done, on_failed=lambda e: self.failed.emit(workspace, as_error(e))
        )

    def load(self) -> None:
        def work() -> list[TrustEntry]:
            return self.store.entries()

        self.jobs.submit(
            work,
            on_done=self.entries_loaded.emit,
            on_failed=lambda e: self.failed.emit("", as_error(e)),
        )
