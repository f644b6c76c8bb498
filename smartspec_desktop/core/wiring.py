"""Composition of the core for one process (CLI run or window): no globals, built once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.storage.config import Settings, load_settings, save_settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials, FileStore, KeyringStore, SecretStore

if TYPE_CHECKING:
    from smartspec_desktop.demo.mode import DemoSession


@dataclass
class Core:
    paths: Paths
    settings: Settings
    credentials: Credentials
    servers: ServerManager
    warnings: list[str]
    #: Set in demo mode (``--demo``): the demo gateway and this run's key; None otherwise.
    demo: DemoSession | None = None
    #: What the settings file held when this process last read or wrote it (the base of the
    #: merge in :func:`save_settings`); None: this process's settings are written whole.
    saved: Settings | None = None

    def save_settings(self) -> None:
        """Save (merged with what another process saved meanwhile) and take the merge in.

        For a one-thread user of the core (the CLI); the window saves through its
        ``SettingsService`` instead."""
        merged = save_settings(self.paths.settings_file, self.settings, base=self.saved)
        for name, value in dataclasses.asdict(merged).items():
            setattr(self.settings, name, value)
        self.saved = merged

    def remember_workspace(self, workspace: str) -> None:
        """A server was started for ``workspace``: list it first in the recent workspaces
        (saved by the command's own :meth:`save_settings`)."""
        self.settings.remember_workspace(workspace)


def build_core(
    paths: Paths, *, backend_url: str | None = None, store: SecretStore | None = None
) -> Core:
    paths.ensure()
    settings, warnings = load_settings(paths.settings_file)
    saved = settings.snapshot()  # what the file holds (defaults when there is none)
    if backend_url:
        settings.backend_url = backend_url.rstrip("/")
    credentials = Credentials(store or KeyringStore(), FileStore(paths.state_dir / "secrets"))
    servers = ServerManager(paths, settings, credentials)
    core = Core(paths, settings, credentials, servers, warnings, saved=saved)
    servers.on_fresh_start = core.remember_workspace
    return core
