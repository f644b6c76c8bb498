"""The window's one owner of the settings: changes them (GUI thread only), saves them off the GUI
thread, and hands worker threads a frozen snapshot.

Only this service changes the window's :class:`Settings`; every change goes through one of its
methods, which publishes a new :meth:`Settings.snapshot` to the server manager (what worker
threads read) and saves. Saving goes through :func:`core.storage.config.save_settings`, the one
writer of ``settings.json`` (a file lock, a merge with what the CLI saved meanwhile, an atomic
write); what another process changed is taken in here.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from shiboken6 import isValid

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.storage.config import Settings, forgotten, remembered, save_settings
from smartspec_desktop.core.wiring import Core
from smartspec_desktop.services.worker import Jobs, as_error

log = logging.getLogger(__name__)


class SettingsService(QObject):
    changed = Signal()  # the settings changed (GUI thread); the snapshot is published
    saved = Signal()  # a save reached the file
    save_failed = Signal(object)  # SmartSpecError: the save did not reach the file
    #: A worker thread's manager started a server afresh (queued to the GUI thread).
    _fresh_start = Signal(str)

    def __init__(
        self,
        settings: Settings,
        path: Path,
        jobs: Jobs,
        *,
        manager: ServerManager | None = None,
        base: Settings | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings, self._snapshot = settings, settings.snapshot()
        self.path, self.jobs, self.manager = path, jobs, manager
        #: What the file held at the last load or save (the merge's base); None: write whole.
        self._base = base
        #: A save is running / another one is wanted after it (bursts coalesce, in order).
        self._saving = self._save_again = False
        # The manager runs on worker threads: it tells us through a queued signal, and the
        # recent-workspaces list is changed here, on the GUI thread.
        self._fresh_start.connect(self.remember_workspace, Qt.ConnectionType.QueuedConnection)
        if manager is not None:
            manager.on_fresh_start = self._fresh_start.emit
        self._publish()

    @classmethod
    def for_core(cls, core: Core, jobs: Jobs, parent: QObject | None = None) -> SettingsService:
        return cls(
            core.settings,
            core.paths.settings_file,
            jobs,
            manager=core.servers,
            base=core.saved,
            parent=parent,
        )

    # ---------------------------------------------------------------------------- reading

    @property
    def settings(self) -> Settings:
        """The live settings, for the GUI thread to read (change them through this service)."""
        return self._settings

    def snapshot(self) -> Settings:
        """The frozen copy of the settings as they are now, for a worker thread."""
        return self._snapshot

    # --------------------------------------------------------------------------- changing

    def update(self, **changes: Any) -> None:
        """Set some fields (names of :class:`Settings`), publish and save."""
        for name, value in changes.items():
            if not hasattr(self._settings, name):
                raise AttributeError(f"Settings has no field {name!r}")
            setattr(self._settings, name, value)
        self._changed()

    def replace(self, candidate: Settings) -> None:
        """Take every field of ``candidate`` (e.g. the Settings page's validated copy)."""
        self.update(**{f.name: getattr(candidate, f.name) for f in dataclasses.fields(Settings)})

    def remember_workspace(self, workspace: str) -> None:
        """Put ``workspace`` first in the recent workspaces (the rule: ``config.remembered``)."""
        self.update(recent_workspaces=remembered(self._settings.recent_workspaces, workspace))

    def forget_workspace(self, workspace: str) -> None:
        if workspace in self._settings.recent_workspaces:
            self.update(recent_workspaces=forgotten(self._settings.recent_workspaces, workspace))

    def set_idle_override(self, workspace: str, minutes: float | None) -> bool:
        """The workspace's own idle timeout (None: the general one). True when it changed."""
        overrides = dict(self._settings.idle_minutes_by_workspace)
        before = overrides.get(workspace)
        if minutes is None:
            overrides.pop(workspace, None)
        else:
            overrides[workspace] = float(minutes)
        if overrides.get(workspace) == before:
            return False
        self.update(idle_minutes_by_workspace=overrides)
        return True

    def set_model(self, model: str) -> bool:
        if not model or model == self._settings.model:
            return False
        self.update(model=model)
        return True

    # ----------------------------------------------------------------------------- saving

    def save(self) -> None:
        """Write the settings off the GUI thread; coalesces bursts, never reorders writes."""
        if self._saving:
            self._save_again = True
            return
        self._saving = True
        ours = self._snapshot
        base = self._base
        path = self.path

        def done(merged: object) -> None:
            assert isinstance(merged, Settings)
            if not isValid(self):
                return  # the window closed while the file was written: nothing to tell
            self._saving = False
            self._base = merged
            # What another process saved meanwhile, in fields not changed here since.
            taken = {
                f.name: getattr(merged, f.name)
                for f in dataclasses.fields(Settings)
                if getattr(merged, f.name) != getattr(ours, f.name)
                and getattr(self._settings, f.name) == getattr(ours, f.name)
            }
            for name, value in taken.items():
                setattr(self._settings, name, value)
            if taken:
                self._publish()
                self.changed.emit()
            self.saved.emit()
            self._next()

        def failed(e: BaseException) -> None:
            if not isValid(self):
                log.warning("settings were not saved at quit: %s", as_error(e).problem)
                return
            self._saving = False
            self.save_failed.emit(as_error(e))
            self._next()

        self.jobs.submit(
            lambda: save_settings(path, ours, base=base), on_done=done, on_failed=failed
        )

    def flush(self) -> None:
        """At quit, after the jobs drained: write what no save has taken yet (synchronously).

        A save's result reaches the GUI thread through the event loop, which no longer runs
        then, so a coalesced save still wanted would otherwise be lost.
        """
        if not self._save_again:
            return
        self._save_again = False
        try:
            save_settings(self.path, self._snapshot, base=self._base)
        except SmartSpecError as e:
            log.warning("settings were not saved at quit: %s", e.problem)

    def _next(self) -> None:
        if self._save_again:
            self._save_again = False
            self.save()

    def _changed(self) -> None:
        self._publish()
        self.changed.emit()
        self.save()

    def _publish(self) -> None:
        self._snapshot = self._settings.snapshot()
        if self.manager is not None:
            self.manager.settings = self._snapshot  # worker threads read only frozen copies
