"""Open OpenWork / the OpenCode TUI for a workspace, off the GUI thread (core: ``launchers``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from smartspec_desktop.core.launch import launchers
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.services.worker import Jobs, as_error

OPENWORK, CLI = "openwork", "cli"


class LaunchService(QObject):
    progress = Signal(str, str)  # workspace, line
    opened = Signal(str, str, object)  # workspace, what (OPENWORK/CLI), LaunchOutcome
    failed = Signal(str, object)  # workspace, SmartSpecError
    busy_changed = Signal(str, str)  # workspace, what ("" when done)

    def __init__(
        self,
        manager: ServerManager,
        jobs: Jobs,
        parent: QObject | None = None,
        *,
        opener: launchers.Opener | None = None,
        popen: Callable[..., Any] | None = None,
    ) -> None:
        """``opener`` (browser) and ``popen`` (terminal) default to the system's."""
        super().__init__(parent)
        self.manager = manager
        self.jobs = jobs
        self.opener = opener
        self._popen: dict[str, Any] = {"popen": popen} if popen is not None else {}
        self.busy: dict[str, str] = {}
        #: Per workspace, the event that cancels its running Open OpenWork UI.
        self._cancel: dict[str, threading.Event] = {}

    def open_openwork(self, workspace: str, session_id: str | None = None) -> None:
        """``session_id``: deep-link to that OpenCode session where the UI allows it."""
        self._launch(workspace, OPENWORK, session_id)

    def cancel(self, workspace: str) -> bool:
        """Stop waiting in the workspace's running Open OpenWork UI (it then fails with
        :class:`LaunchCancelled`). False when nothing is waiting there."""
        event = self._cancel.get(workspace)
        if event is None:
            return False
        event.set()
        return True

    def open_cli(self, workspace: str) -> None:
        self._launch(workspace, CLI)

    def _launch(self, workspace: str, what: str, session_id: str | None = None) -> None:
        if self.busy.get(workspace):
            return
        self.busy[workspace] = what
        self.busy_changed.emit(workspace, what)
        if what == OPENWORK:
            cancel = self._cancel[workspace] = threading.Event()
            call = lambda: launchers.open_openwork(  # noqa: E731
                self.manager,
                workspace,
                progress=say,
                opener=self.opener,
                session_id=session_id,
                cancel=cancel,
            )
        else:
            call = lambda: launchers.open_cli(  # noqa: E731
                self.manager, workspace, progress=say, **self._popen
            )

        def say(line: str) -> None:
            if line:
                self.progress.emit(workspace, line)

        def finish() -> None:
            self._cancel.pop(workspace, None)
            self.busy.pop(workspace, None)
            self.busy_changed.emit(workspace, "")

        def done(outcome: object) -> None:
            finish()
            self.opened.emit(workspace, what, outcome)

        def failed(e: BaseException) -> None:
            finish()
            self.failed.emit(workspace, as_error(e))

        self.jobs.submit(call, on_done=done, on_failed=failed)
