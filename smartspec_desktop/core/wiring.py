"""Composition of the core for one process (CLI run or window): no globals, built once."""

from __future__ import annotations

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

    def save_settings(self) -> None:
        save_settings(self.paths.settings_file, self.settings)


def build_core(
    paths: Paths, *, backend_url: str | None = None, store: SecretStore | None = None
) -> Core:
    paths.ensure()
    settings, warnings = load_settings(paths.settings_file)
    if backend_url:
        settings.backend_url = backend_url.rstrip("/")
    credentials = Credentials(store or KeyringStore(), FileStore(paths.state_dir / "secrets"))
    return Core(paths, settings, credentials, ServerManager(paths, settings, credentials), warnings)
