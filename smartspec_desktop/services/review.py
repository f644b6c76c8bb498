"""Review and undo for the window (issue 14): core.review and core.worktrees calls on the
:class:`Jobs` thread pool, results as signals on the GUI thread.

``ReviewService`` follows one workspace's server (``set_target(record, password_provider)``, like
the task service) and works on one session at a time: ``load(session_id, turn)`` lists the files
(``changes_loaded``), ``undo``/``redo``/``discard`` change them (``action_done``; a refusal over
the user's own edits or an unrecordable change arrives as ``refused`` with the typed error, so
the window can ask and retry with ``force=True``; anything else as ``error``).

``WorktreeService`` lists a repository's worktrees (``listed``), merges and discards them
(stopping the worktree's server first), and runs a prompt in a new worktree: create it, start its
own server through the :class:`ServerManager`, run the task, commit the agent's work on its branch
(``task_done``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from PySide6.QtCore import QObject, Signal

from smartspec_desktop.core import review as core_review
from smartspec_desktop.core import worktrees as core_worktrees
from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.opencode.client import OpenCodeClient
from smartspec_desktop.core.opencode.tasks import run_task, title_for
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.servers.registry import ServerRecord
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)

PasswordProvider = Callable[[ServerRecord], str]


class ReviewService(QObject):
    changes_loaded = Signal(str, str, object)  # session id, "all"|"last", list[FileChange]
    turns_loaded = Signal(str, object)  # session id, list[Turn]
    action_done = Signal(object)  # UndoResult
    refused = Signal(str, object)  # action ("undo"|"redo"|"discard"), UserEditsFound/Unavailable
    error = Signal(object)  # SmartSpecError
    busy_changed = Signal(bool)

    def __init__(self, jobs: Jobs, api: ModuleType | Any = core_review) -> None:
        super().__init__()
        self.jobs = jobs
        #: core.review, or a stand-in with the same functions (tests)
        self.api = api
        self.record: ServerRecord | None = None
        self._password: PasswordProvider | None = None
        self._busy = 0

    def set_target(self, record: ServerRecord | None, password: PasswordProvider | None) -> None:
        self.record, self._password = record, password

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def _client(self) -> OpenCodeClient:
        rec, pw = self.record, self._password
        if rec is None or pw is None:
            raise SmartSpecError(
                "No dev server is running for this workspace.", "Start it, then review."
            )
        client = OpenCodeClient(rec.url, pw(rec), timeout=60.0)
        if rec.host:  # a remote workspace: undo and redo reach its files over ssh
            client.remote_host, client.remote_workspace = rec.host, rec.workspace_path
        return client

    def _submit(
        self,
        work: Callable[[OpenCodeClient], Any],
        on_done: Callable[[Any], None],
        on_refused: Callable[[SmartSpecError], None] | None = None,
    ) -> None:
        if self.record is None:
            return
        self._busy += 1
        self.busy_changed.emit(True)

        def job() -> Any:
            with self._client() as client:
                return work(client)

        def finish() -> None:
            self._busy -= 1
            self.busy_changed.emit(self.busy)

        def done(result: Any) -> None:
            finish()
            on_done(result)

        def failed(e: BaseException) -> None:
            finish()
            err = as_error(e)
            refusal = isinstance(err, core_review.UserEditsFound | core_review.UndoUnavailable)
            if refusal and on_refused is not None:
                on_refused(err)
            else:
                self.error.emit(err)

        self.jobs.submit(job, on_done=done, on_failed=failed)

    def latest_session(self, on_found: Callable[[str], None]) -> None:
        """The workspace's latest session id ("" when none) to ``on_found``."""
        rec = self.record
        if rec is None:
            return

        def work(client: OpenCodeClient) -> str:
            try:
                return str(self.api.latest_session_id(client, rec.workspace_path))
            except core_review.ReviewError:
                return ""

        self._submit(work, on_found)

    def load(self, session_id: str, turn: str = "all") -> None:
        def work(client: OpenCodeClient) -> tuple[list[Any], list[Any]]:
            return self.api.changes(client, session_id, turn=turn), self.api.turns(
                client, session_id
            )

        def done(result: tuple[list[Any], list[Any]]) -> None:
            found, turns = result
            self.turns_loaded.emit(session_id, turns)
            self.changes_loaded.emit(session_id, turn, found)

        self._submit(work, done)

    def _act(self, action: str, session_id: str, force: bool) -> None:
        def work(client: OpenCodeClient) -> Any:
            if action == "undo":
                return self.api.undo_last_turn(client, session_id, force=force)
            if action == "redo":
                return self.api.redo(client, session_id, force=force)
            return self.api.discard_session_changes(client, session_id, force=force)

        self._submit(work, self.action_done.emit, lambda e: self.refused.emit(action, e))

    def undo(self, session_id: str, *, force: bool = False) -> None:
        self._act("undo", session_id, force)

    def redo(self, session_id: str, *, force: bool = False) -> None:
        self._act("redo", session_id, force)

    def discard(self, session_id: str, *, force: bool = False) -> None:
        self._act("discard", session_id, force)


class WorktreeService(QObject):
    listed = Signal(str, object)  # repository, list[Worktree] ([] for a plain folder)
    not_git = Signal(str, object)  # workspace, NotAGitRepository
    merged = Signal(str, object)  # repository, MergeResult
    conflict = Signal(str, str, object)  # repository, worktree name, MergeConflict
    discarded = Signal(str, str)  # repository, worktree name
    initialized = Signal(str)  # workspace now under git
    task_started = Signal(str, object)  # repository, Worktree
    task_done = Signal(str, str, str)  # repository, worktree name, summary
    error = Signal(str, object)  # workspace, SmartSpecError

    def __init__(self, manager: ServerManager, jobs: Jobs, base_dir: Path) -> None:
        super().__init__()
        self.manager = manager
        self.jobs = jobs
        self.base_dir = base_dir
        #: worktree names with a task running, per repository
        self.running: dict[str, set[str]] = {}
        #: Drops a discarded worktree's folder from the recent workspaces (GUI thread): the
        #: window's settings service sets it; by default nothing is remembered here.
        self.forget_workspace: Callable[[str], None] = lambda _path: None

    def _fail(self, workspace: str) -> Callable[[BaseException], None]:
        def failed(e: BaseException) -> None:
            err = as_error(e)
            if isinstance(err, core_worktrees.NotAGitRepository):
                self.not_git.emit(workspace, err)
            else:
                self.error.emit(workspace, err)

        return failed

    def refresh(self, repo: str) -> None:
        def work() -> list[core_worktrees.Worktree]:
            return core_worktrees.list_worktrees(Path(repo), self.base_dir)

        self.jobs.submit(
            work, on_done=lambda found: self.listed.emit(repo, found), on_failed=self._fail(repo)
        )

    def git_init(self, workspace: str) -> None:
        self.jobs.submit(
            lambda: core_worktrees.git_init(Path(workspace)),
            on_done=lambda _root: self.initialized.emit(workspace),
            on_failed=self._fail(workspace),
        )

    def merge(self, repo: str, name: str) -> None:
        def failed(e: BaseException) -> None:
            err = as_error(e)
            if isinstance(err, core_worktrees.MergeConflict):
                self.conflict.emit(repo, name, err)
            else:
                self.error.emit(repo, err)

        def done(result: core_worktrees.MergeResult) -> None:
            self.merged.emit(repo, result)
            self.refresh(repo)

        def work() -> core_worktrees.MergeResult:
            try:
                return core_worktrees.merge(Path(repo), self.base_dir, name)
            except core_worktrees.MergeConflict as e:
                e.into = core_worktrees.current_branch(Path(repo))  # type: ignore[attr-defined]
                raise

        self.jobs.submit(work, on_done=done, on_failed=failed)

    def discard(self, repo: str, name: str) -> None:
        def work() -> str:
            # (a remote repository's worktree is a remote workspace: its ssh:// address)
            workspace = core_worktrees.workspace_for(Path(repo), self.base_dir, name)
            rec = self.manager.get(workspace)
            if rec is not None and rec.active:
                self.manager.stop(rec.server_id)
            core_worktrees.discard(Path(repo), self.base_dir, name)
            return workspace

        def done(path: str) -> None:
            # The folder is gone: it no longer belongs in the workspace list.
            self.forget_workspace(path)
            self.discarded.emit(repo, name)
            self.refresh(repo)

        self.jobs.submit(work, on_done=done, on_failed=self._fail(repo))

    def run(self, repo: str, prompt: str, name: str | None = None) -> None:
        """A new worktree (or the existing ``name``, to continue there), its own server, the
        task, then a commit of the agent's work on its branch."""

        def start(wt: core_worktrees.Worktree) -> None:
            self.running.setdefault(repo, set()).add(wt.name)
            self.task_started.emit(repo, wt)
            self.refresh(repo)
            self.jobs.submit(lambda: task(wt), on_done=finish(wt), on_failed=fail(wt))

        def create() -> core_worktrees.Worktree:
            if name is not None:
                return core_worktrees.get(Path(repo), self.base_dir, name)
            return core_worktrees.create(Path(repo), self.base_dir)

        def task(wt: core_worktrees.Worktree) -> str:
            try:
                rec = self.manager.start(wt.workspace or str(wt.path)).record
                with self.manager.client(rec, timeout=30.0) as client:
                    state = run_task(client, prompt)
                summary = f"{wt.branch}: {state.tokens_input + state.tokens_output:,} tokens"
            finally:
                commit = core_worktrees.commit_all(wt.workspace or wt.path, title_for(prompt))
            return summary + (f", committed {commit[:12]}" if commit else ", no file changed")

        def finish(wt: core_worktrees.Worktree) -> Callable[[str], None]:
            def done(summary: str) -> None:
                self.running.get(repo, set()).discard(wt.name)
                self.task_done.emit(repo, wt.name, summary)
                self.refresh(repo)

            return done

        def fail(wt: core_worktrees.Worktree) -> Callable[[BaseException], None]:
            def failed(e: BaseException) -> None:
                self.running.get(repo, set()).discard(wt.name)
                self.error.emit(repo, as_error(e))
                self.refresh(repo)

            return failed

        self.jobs.submit(create, on_done=start, on_failed=self._fail(repo))
