"""The window's view of the servers: start/stop on worker threads, a cheap poll of the registry.

``ServerService`` owns no process itself: the core's ``ServerManager`` does. It adds what a
window needs: per-workspace busy states ("starting", "stopping", "installing"), progress lines,
typed failures, and a ``records_changed`` signal fed by a registry poll (psutil only, no HTTP)
every ``poll_ms``, so servers started from the CLI appear and a crash is noticed within a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, QTimer, Signal

from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.opencode.binary import install_opencode
from smartspec_desktop.core.servers.manager import ServerManager, StartResult
from smartspec_desktop.core.servers.preflight import normalize_workspace
from smartspec_desktop.core.servers.registry import (
    CRASHED,
    STARTING,
    STOPPED,
    STOPPING,
    ServerRecord,
    ServerStatus,
    same_workspace,
)
from smartspec_desktop.core.servers.usage import Usage, UsageSampler
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkspaceState:
    """What the panel shows for one workspace."""

    path: str
    status: ServerStatus
    record: ServerRecord | None


class ServerService(QObject):
    records_changed = Signal(object)  # list[ServerRecord]
    busy_changed = Signal(str, str)  # workspace, busy state ("" when idle)
    progress = Signal(str, str)  # workspace, a progress line
    started = Signal(str, object)  # workspace, StartResult
    stopped = Signal(str)  # workspace
    failed = Signal(str, object)  # workspace ("" for app-wide), SmartSpecError
    crashed = Signal(object)  # ServerRecord that just became crashed
    models_loaded = Signal(object)  # list[str]
    install_progress = Signal(str)
    installed = Signal(str)  # path of the installed binary

    def __init__(
        self,
        manager: ServerManager,
        jobs: Jobs,
        *,
        poll_ms: int = 700,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.manager = manager
        self.jobs = jobs
        self.records: list[ServerRecord] = []
        self.busy: dict[str, str] = {}
        self._polling = False
        self._known_crashed: set[str] = set()
        self._first_poll = True
        #: Memory and CPU of each server's tree (issue 15), sampled with every poll (psutil).
        self.usage: dict[str, Usage] = {}
        self._sampler = UsageSampler()
        self.timer = QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.poll)

    # ----------------------------------------------------------------------------- state

    def start_polling(self) -> None:
        self.poll()
        self.timer.start()

    def record_for(self, workspace: str) -> ServerRecord | None:
        matches = [r for r in self.records if same_workspace(r.workspace_path, workspace)]
        active = [r for r in matches if r.active]
        best = active or matches
        return best[-1] if best else None

    def state_of(self, workspace: str) -> WorkspaceState:
        rec = self.record_for(workspace)
        busy = self.busy.get(workspace, "")
        if busy in (STARTING, STOPPING):
            return WorkspaceState(workspace, ServerStatus(busy), rec)
        if rec is None:
            return WorkspaceState(workspace, STOPPED, None)
        return WorkspaceState(workspace, rec.status, rec)

    def _set_busy(self, workspace: str, state: str) -> None:
        if state:
            self.busy[workspace] = state
        else:
            self.busy.pop(workspace, None)
        self.busy_changed.emit(workspace, state)

    # ------------------------------------------------------------------------------ poll

    def poll(self) -> None:
        if self._polling:
            return
        self._polling = True
        self.jobs.submit(self._refresh, on_done=self._polled, on_failed=self._poll_failed)

    def _refresh(self) -> list[ServerRecord]:
        """Worker thread: the records, and their usage (set before ``_polled`` runs)."""
        records = self.manager.refresh()
        self.usage = self._sampler.sample(records)
        return records

    def usage_of(self, workspace: str) -> Usage | None:
        """The usage of the workspace's server tree, once sampled."""
        rec = self.record_for(workspace)
        return self.usage.get(rec.server_id) if rec is not None else None

    def _polled(self, records: list[ServerRecord]) -> None:
        self._polling = False
        self.records = list(records)
        for rec in self.records:
            if rec.status == CRASHED and rec.server_id not in self._known_crashed:
                self._known_crashed.add(rec.server_id)
                if not self._first_poll:
                    self.crashed.emit(rec)
        self._first_poll = False
        self.records_changed.emit(self.records)

    def _poll_failed(self, e: BaseException) -> None:
        self._polling = False
        log.warning("could not refresh the servers: %s", e)

    # ------------------------------------------------------------------------- start/stop

    def start(self, workspace: str) -> None:
        if self.busy.get(workspace):
            return
        self._set_busy(workspace, STARTING)

        def say(message: str) -> None:
            if message:
                self.progress.emit(workspace, message)  # queued to the GUI thread

        def work() -> StartResult:
            return self.manager.start(workspace, progress=say)

        def done(result: StartResult) -> None:
            self._set_busy(workspace, "")
            self.started.emit(workspace, result)
            self.poll()

        def failed(e: BaseException) -> None:
            self._set_busy(workspace, "")
            self.failed.emit(workspace, as_error(e))
            self.poll()

        self.jobs.submit(work, on_done=done, on_failed=failed)

    def stop(self, workspace: str) -> None:
        if self.busy.get(workspace):
            return
        rec = self.record_for(workspace)
        if rec is None:
            return
        self._set_busy(workspace, STOPPING)

        def done(_rec: object) -> None:
            self._set_busy(workspace, "")
            self.stopped.emit(workspace)
            self.poll()

        def failed(e: BaseException) -> None:
            self._set_busy(workspace, "")
            self.failed.emit(workspace, as_error(e))
            self.poll()

        self.jobs.submit(lambda: self.manager.stop(rec.server_id), on_done=done, on_failed=failed)

    def clear(self, workspace: str) -> None:
        """Forget a crashed server (its log stays on disk)."""
        rec = self.record_for(workspace)
        if rec is None or rec.active:
            return
        self.jobs.submit(
            lambda: self.manager.stop(rec.server_id),
            on_done=lambda _r: self.poll(),
            on_failed=lambda e: self.poll(),
        )

    def owned_active(self) -> list[ServerRecord]:
        return [r for r in self.records if r.active and self.manager.owns(r.server_id)]

    def stop_owned(self, on_done: Callable[[], None]) -> None:
        """Stop the servers this window started (for quit); ``on_done`` runs on the GUI thread."""
        self.timer.stop()

        def work() -> None:
            self.manager.stop_all(owned_only=True, grace=3.0)

        def finish(_result: object = None) -> None:
            on_done()

        self.jobs.submit(work, on_done=finish, on_failed=lambda e: finish())

    # ----------------------------------------------------------------------- other calls

    def normalize(self, path: str) -> str:
        """Normalise a folder path (cheap local checks; raises WorkspaceError)."""
        return normalize_workspace(path)

    def load_models(self) -> None:
        settings = self.manager.settings
        creds = self.manager.credentials

        def work() -> list[str]:
            key, source = creds.api_key()
            with BackendClient(settings.backend_url) as backend:
                return backend.models(key, source=source)

        self.jobs.submit(
            work,
            on_done=self.models_loaded.emit,
            on_failed=lambda e: self.failed.emit("", as_error(e)),
        )

    def install_opencode(self) -> None:
        if self.busy.get("*install"):
            return
        self.busy["*install"] = "installing"
        target = self.manager.paths.managed_opencode_dir

        def work() -> str:
            return str(install_opencode(target, lambda m: self.install_progress.emit(m)))

        def done(path: str) -> None:
            self.busy.pop("*install", None)
            self.installed.emit(path)

        def failed(e: BaseException) -> None:
            self.busy.pop("*install", None)
            self.failed.emit("", as_error(e))

        self.jobs.submit(work, on_done=done, on_failed=failed)

    # ------------------------------------------------------------ remote workspaces (issue 15)

    @staticmethod
    def host_of(workspace: str) -> str:
        """A remote workspace's host as a person reads it (``user@host:port``); "" when local
        (cheap: parses the address, no connection)."""
        from smartspec_desktop.core.remote.address import is_remote, parse_remote

        return parse_remote(workspace).display_host if is_remote(workspace) else ""

    def install_remote_opencode(self, host: str) -> None:
        """``opencode install --host HOST`` on a worker: npm's lines on ``install_progress``,
        the remote binary's path on ``installed``, a failure on ``failed`` (workspace "")."""
        from smartspec_desktop.core.remote.engine import install_remote, parse_host

        key = f"*install:{host}"
        if self.busy.get(key):
            return
        self.busy[key] = "installing"
        environ = self.manager.environ

        def work() -> str:
            return install_remote(
                parse_host(host), lambda m: self.install_progress.emit(m), environ=environ
            )

        def done(path: str) -> None:
            self.busy.pop(key, None)
            self.installed.emit(path)

        def failed(e: BaseException) -> None:
            self.busy.pop(key, None)
            self.failed.emit("", as_error(e))

        self.jobs.submit(work, on_done=done, on_failed=failed)
