"""Agent sessions and live task progress for the window, on top of the Qt-free core.

:class:`TaskService` talks to one workspace's OpenCode server (the *target*). Short calls (list,
new, rename, abort, delete, permission replies) run on the :class:`Jobs` thread pool; a task's
long event follow runs on its own ``QThread``. Every signal is delivered on the GUI thread.

Task state is batched: the worker thread only stores the latest :class:`TaskState` snapshot, and
a GUI-thread timer publishes it at most every ``update_interval_ms`` (100 ms → at most ~10 UI
updates per second however fast events arrive).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from smartspec_desktop.core.errors import (
    BudgetReached,
    EmptyPrompt,
    ServerNotRunning,
    TaskAborted,
    TaskError,
)
from smartspec_desktop.core.opencode.client import PERMISSION_REPLIES, OpenCodeClient
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.opencode.tasks import TaskRun, check_prompt, title_for
from smartspec_desktop.core.servers.brokerlink import (
    BrokerControl,
    Usage,
    new_task_id,
    summarize,
    usage_report,
)
from smartspec_desktop.core.servers.registry import ServerRecord
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)

PasswordProvider = Callable[[ServerRecord], str]


def summary_of(state: TaskState) -> str:
    """A one-line summary of a finished task (for notifications)."""
    bits = []
    text = " ".join(state.text.split())
    if text:
        bits.append(text if len(text) <= 120 else text[:119] + "…")
    if state.tools:
        bits.append(f"{len(state.tools)} tool call(s)")
    if state.todos:
        done, total = state.todo_progress
        bits.append(f"{done} of {total} todos done")
    bits.append(f"{state.tokens_input + state.tokens_output} tokens")
    return " · ".join(bits)


class _RunThread(QThread):
    """Runs one :class:`TaskRun` (blocking HTTP + event follow) off the GUI thread."""

    succeeded = Signal(object)  # TaskState
    failed = Signal(object)  # BaseException

    def __init__(self, make_run: Callable[[], TaskRun], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._make_run = make_run
        self.run_obj: TaskRun | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self.run_obj = self._make_run()
            self.ready.set()
            state = self.run_obj.run()
        except BaseException as e:
            self.ready.set()
            self.failed.emit(e)
        else:
            self.succeeded.emit(state)
        finally:
            if self.run_obj is not None:
                self.run_obj.client.close()


class TaskService(QObject):
    """Sessions and tasks of one workspace server; see the module docstring.

    Signals (all on the GUI thread):

    - ``sessions_listed(list[SessionInfo])`` after :meth:`refresh_sessions` (and after New,
      Rename, Delete, Abort and every finished task), most recently active first.
    - ``session_created(str)``: the id of a session made by :meth:`new_session` or a run.
    - ``state_changed(TaskState)``: a snapshot of the running task, at most every
      ``update_interval_ms``; the last one is sent before ``finished``.
    - ``permission_requested(dict)``: a new permission request (``id``, ``permission``,
      ``patterns``, ``metadata``…); answer it with :meth:`reply_permission`.
    - ``running_changed(bool)``; ``finished(ok, summary)`` when a task ends (aborted → False).
    - ``error(SmartSpecError)`` for every failed call, gateway failures of a task included.
    """

    sessions_listed = Signal(list)
    session_created = Signal(str)
    state_changed = Signal(object)
    permission_requested = Signal(dict)
    running_changed = Signal(bool)
    finished = Signal(bool, str)
    error = Signal(object)
    #: The running (then the last) task's calls and tokens as the gateway broker metered them.
    usage_changed = Signal(object)  # brokerlink.Usage
    #: Metered usage per OpenCode session (dict id → Usage.as_json()), before sessions_listed.
    sessions_usage = Signal(dict)
    #: The broker refused a call: a task or day budget is used up (BudgetReached).
    budget_paused = Signal(object)

    def __init__(
        self,
        jobs: Jobs,
        parent: QObject | None = None,
        *,
        update_interval_ms: int = 100,
        task_timeout: float = 3600.0,
    ) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.task_timeout = task_timeout
        self._record: ServerRecord | None = None
        self._password_provider: PasswordProvider | None = None
        self._password: str | None = None
        self._pw_lock = threading.Lock()
        self._generation = 0
        self._thread: _RunThread | None = None
        self._run_id = 0
        self._pending: TaskState | None = None
        self._pending_lock = threading.Lock()
        self._asked: set[str] = set()
        self.last_state: TaskState | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(update_interval_ms)
        self._timer.timeout.connect(self._flush)
        #: How to reach the target's gateway broker (None: no metering, no budgets).
        self.broker_access: BrokerAccess | None = None
        #: The budget task of the running (or last) task, for Continue (+N).
        self.task_id: str | None = None
        self.task_budget: int | None = None
        self._task_started = 0.0
        self._usage_busy = False
        self._usage_timer = QTimer(self)
        self._usage_timer.setInterval(1000)
        self._usage_timer.timeout.connect(self.poll_usage)

    # ------------------------------------------------------------------------------ target

    @property
    def record(self) -> ServerRecord | None:
        return self._record

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def running_session(self) -> str | None:
        st = self.last_state
        return st.session_id if self._thread is not None and st is not None else None

    def set_target(
        self, record: ServerRecord | None, password_provider: PasswordProvider | None
    ) -> None:
        """Point the service at a running workspace server (or at nothing). The password
        provider (e.g. ``core.servers.password``) is called on a worker thread, once."""
        same = (
            record is not None
            and self._record is not None
            and record.server_id == self._record.server_id
            and record.url == self._record.url
        )
        if same:
            self._password_provider = password_provider or self._password_provider
            return
        self.detach()
        self._generation += 1
        self._record = record
        self._password_provider = password_provider
        with self._pw_lock:
            self._password = None

    def _client(
        self,
        timeout: float = 15.0,
        target: tuple[ServerRecord | None, PasswordProvider | None] | None = None,
    ) -> OpenCodeClient:
        """A new client for the target (worker threads only: may ask the keyring)."""
        record, provider = target or (self._record, self._password_provider)
        if record is None or provider is None:
            raise ServerNotRunning(
                "No workspace server is selected.",
                "Start the workspace's dev server first.",
            )
        with self._pw_lock:
            if record is not self._record:
                password = provider(record)  # the target changed meanwhile: do not cache
            else:
                if self._password is None:
                    self._password = provider(record)
                password = self._password
        return OpenCodeClient(record.url, password, timeout=timeout)

    def _submit(
        self,
        fn: Callable[[OpenCodeClient], Any],
        on_done: Callable[[Any], None] | None = None,
        *,
        refresh: bool = False,
    ) -> None:
        gen = self._generation
        target = (self._record, self._password_provider)

        access = self.broker_access

        def job() -> Any:
            with self._client(target=target) as client:
                result = fn(client)
                record = target[0]
                ws = record.workspace_path if record is not None else None
                infos = client.session_infos(workspace=ws) if refresh else None
            metered = None
            if refresh and access is not None and target[0] is not None:
                metered = usage_report(access.records(target[0]))["by_session"]
            return result, infos, metered

        def done(value: Any) -> None:
            if gen != self._generation:
                return  # the target changed meanwhile
            result, infos, metered = value
            if on_done is not None:
                on_done(result)
            if metered is not None:
                self.sessions_usage.emit(metered)
            if infos is not None:
                self.sessions_listed.emit(infos)

        def failed(e: BaseException) -> None:
            if gen == self._generation:
                self.error.emit(as_error(e))

        self.jobs.submit(job, on_done=done, on_failed=failed)

    # ---------------------------------------------------------------------------- sessions

    def refresh_sessions(self) -> None:
        self._submit(lambda c: None, refresh=True)

    def new_session(self, title: str = "") -> None:
        def made(data: Any) -> None:
            self.session_created.emit(str(data["id"]))

        self._submit(lambda c: c.create_session(title or None), made, refresh=True)

    def rename_session(self, session_id: str, title: str) -> None:
        self._submit(lambda c: c.rename_session(session_id, title), refresh=True)

    def delete_session(self, session_id: str) -> None:
        if session_id == self.running_session:
            self.error.emit(
                TaskError(
                    "That session is running a task.", "Abort the task first, then delete it."
                )
            )
            return
        self._submit(lambda c: c.delete_session(session_id), refresh=True)

    def abort(self, session_id: str) -> None:
        """Abort whatever the session is doing (a task of ours ends with finished(False))."""
        if self._thread is not None and session_id == self.running_session:
            self.abort_running()
            return
        self._submit(lambda c: c.abort(session_id), refresh=True)

    def abort_running(self) -> None:
        """Abort the task this service is following; it ends with ``finished(False, …)``."""
        thread = self._thread
        if thread is None:
            return

        def cancel() -> None:
            thread.ready.wait(30)
            if thread.run_obj is not None:
                thread.run_obj.cancel()

        self.jobs.submit(cancel, on_failed=lambda e: self.error.emit(as_error(e)))

    def reply_permission(self, request_id: str, reply: str) -> None:
        """``reply``: "once", "always" or "reject"."""
        if reply not in PERMISSION_REPLIES:
            raise ValueError(f"unknown permission reply {reply!r}")
        self._submit(lambda c: c.reply_permission(request_id, reply))

    # ------------------------------------------------------------------------------- tasks

    def run_prompt(
        self,
        text: str,
        session_id: str | None = None,
        *,
        budget: int | None = None,
        task_id: str | None = None,
    ) -> bool:
        """Run ``text`` in ``session_id`` (or a new session). False if a task is running.

        ``budget`` caps the task in tokens (the broker refuses calls past it: ``budget_paused``);
        ``task_id`` continues the budget task of an earlier run (Continue (+N)).
        """
        if self._thread is not None:
            self.error.emit(
                TaskError("A task is already running.", "Wait for it to finish, or abort it.")
            )
            return False
        try:
            check_prompt(text)  # refused before anything is sent, so nothing is billed
        except EmptyPrompt as e:
            self.error.emit(e)
            return False
        gen = self._generation
        self._run_id += 1
        run_id = self._run_id
        self._asked = set()
        with self._pending_lock:
            self._pending = None
        self.last_state = TaskState(session_id or "")
        self.last_state.status = "busy"

        def store(state: TaskState) -> None:
            if run_id == self._run_id:  # a detached run keeps quiet
                self._store(state)

        target = (self._record, self._password_provider)
        access = self.broker_access
        if budget is not None and task_id is None:
            task_id = new_task_id()
        self.task_id, self.task_budget = task_id, budget
        self._task_started = time.time()

        def make_run() -> TaskRun:
            client = self._client(timeout=30.0, target=target)
            sid = session_id
            if task_id is not None and access is not None and target[0] is not None:
                # The broker charges the task through its session: make it first.
                sid = sid or str(client.create_session(title_for(text))["id"])
                if budget is not None:
                    access.control(target[0]).set_task(task_id, budget, [sid])
            return TaskRun(
                client,
                text,
                session_id=sid,
                session_listing="The Agent tab's session list (Refresh)",
                on_update=store,
                timeout=self.task_timeout,
            )

        thread = _RunThread(make_run, self)
        thread.succeeded.connect(lambda st: self._ended(gen, thread, st, None))
        thread.failed.connect(lambda e: self._ended(gen, thread, None, e))
        thread.finished.connect(thread.deleteLater)
        self._thread = thread
        thread.start()
        self._timer.start()
        if access is not None:
            self._usage_timer.start()
        self.running_changed.emit(True)
        self.state_changed.emit(self.last_state)
        return True

    def _store(self, state: TaskState) -> None:
        """Worker thread: keep only the latest snapshot; the GUI timer publishes it."""
        snap = state.snapshot()
        with self._pending_lock:
            self._pending = snap

    def _flush(self) -> None:
        with self._pending_lock:
            snap, self._pending = self._pending, None
        if snap is None:
            return
        if self.last_state is not None and snap.session_id != self.last_state.session_id:
            self.session_created.emit(snap.session_id)
            self.refresh_sessions()  # the new session shows up in the table while it runs
        self.last_state = snap
        self.state_changed.emit(snap)
        for pid, perm in snap.permissions.items():
            if pid not in self._asked:
                self._asked.add(pid)
                self.permission_requested.emit(perm)

    def _ended(
        self,
        gen: int,
        thread: _RunThread,
        state: TaskState | None,
        exc: BaseException | None,
    ) -> None:
        if thread is not self._thread:
            return
        self._flush()
        self._timer.stop()
        self._usage_timer.stop()
        self._thread = None
        self.poll_usage()
        if state is not None:
            self.last_state = state.snapshot()
            self.state_changed.emit(self.last_state)
        self.running_changed.emit(False)
        if gen != self._generation:
            return
        if exc is None and state is not None:
            self.finished.emit(True, summary_of(state))
        elif isinstance(exc, TaskAborted):
            if self.last_state is not None:
                self.last_state.aborted = True
                self.last_state.status = "idle"
                self.state_changed.emit(self.last_state)
            self.finished.emit(False, "The task was aborted.")
        else:
            err = as_error(exc or RuntimeError("no result"))
            if self.last_state is not None:
                self.last_state.error = err
                self.last_state.status = "idle"
                self.state_changed.emit(self.last_state)
            if isinstance(err, BudgetReached):
                self.budget_paused.emit(err)
            else:
                self.error.emit(err)
            self.finished.emit(False, str(err))
        self.refresh_sessions()

    def detach(self, wait_ms: int = 0) -> None:
        """Stop following the running task (it keeps running on the server), e.g. when the
        target changes. Does not block unless ``wait_ms`` > 0 (use :meth:`shutdown` on quit)."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._run_id += 1
        self._timer.stop()

        def stop() -> None:
            thread.ready.wait(30)
            if thread.run_obj is not None:
                thread.run_obj.detach()

        if thread.ready.is_set():
            stop()
        else:
            threading.Thread(target=stop, daemon=True).start()
        if wait_ms > 0:
            thread.wait(wait_ms)
        self.running_changed.emit(False)

    def shutdown(self, wait_ms: int = 5000) -> None:
        """For the window's close: stop following and wait (bounded) for the follow thread."""
        self.detach(wait_ms=wait_ms)
        self.jobs.wait(wait_ms)

    # ------------------------------------------------------------ metering and budgets (issue 9)

    @property
    def task_started(self) -> float:
        """When the running (or last) task was sent (epoch seconds; 0 before any)."""
        return self._task_started

    def poll_usage(self) -> None:
        """Read the running (or last) task's metered usage off the GUI thread; emits
        ``usage_changed``. At most one read in flight."""
        access, record, st = self.broker_access, self._record, self.last_state
        if access is None or record is None or st is None or not st.session_id:
            return
        if self._usage_busy:
            return
        self._usage_busy = True
        gen, sid, since = self._generation, st.session_id, self._task_started - 1.0

        def work() -> Usage:
            return summarize(access.records(record), sessions=[sid], since=since)

        def done(usage: Usage) -> None:
            self._usage_busy = False
            if gen == self._generation:
                self.usage_changed.emit(usage)

        def failed(e: BaseException) -> None:
            self._usage_busy = False
            log.info("could not read the metered usage: %s", e)

        self.jobs.submit(work, on_done=done, on_failed=failed)

    def continue_budget(self, add: int, paused: BudgetReached, prompt: str = "Continue.") -> None:
        """**Continue (+add)**: raise the budget that stopped the task, then go on in its
        session."""
        access, record, st = self.broker_access, self._record, self.last_state
        if access is None or record is None or st is None or not st.session_id:
            return
        task, sid = self.task_id, st.session_id

        def work() -> None:
            control = access.control(record)
            if paused.task is not None and paused.task == task:
                control.raise_task(paused.task, add)
            else:
                control.raise_day(add)

        def done(_: object) -> None:
            self.run_prompt(prompt, sid, task_id=task)

        self.jobs.submit(work, on_done=done, on_failed=lambda e: self.error.emit(as_error(e)))


@dataclass(frozen=True)
class BrokerAccess:
    """How the window reaches a server's gateway broker: its control API, its meter records."""

    control: Callable[[ServerRecord], BrokerControl]
    records: Callable[[ServerRecord], list[dict[str, Any]]]
