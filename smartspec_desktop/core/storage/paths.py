"""Where the app keeps its files, computed once.

By default the platform's directories (via platformdirs); with ``--data-dir DIR`` (or the
``SMARTSPEC_DATA_DIR`` environment variable) everything lives under one folder instead, which is
what tests and portable installs use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from smartspec_desktop import APP_NAME

DATA_DIR_ENV = "SMARTSPEC_DATA_DIR"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    state_dir: Path
    log_dir: Path

    @classmethod
    def from_base(cls, base: str | os.PathLike[str]) -> Paths:
        root = Path(base).expanduser().absolute()
        return cls(root / "config", root / "data", root / "state", root / "log")

    @classmethod
    def default(cls) -> Paths:
        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        return cls(
            Path(dirs.user_config_dir),
            Path(dirs.user_data_dir),
            Path(dirs.user_state_dir),
            Path(dirs.user_log_dir),
        )

    @classmethod
    def resolve(cls, data_dir: str | os.PathLike[str] | None = None) -> Paths:
        """``--data-dir`` wins, then ``$SMARTSPEC_DATA_DIR``, then the platform's directories."""
        base = data_dir or os.environ.get(DATA_DIR_ENV)
        return cls.from_base(base) if base else cls.default()

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def servers_file(self) -> Path:
        return self.state_dir / "servers.json"

    @property
    def legacy_servers_file(self) -> Path:
        """Where state version 1 kept the server records (read and migrated while needed)."""
        return self.state_dir / "sessions.json"

    @property
    def server_log_dir(self) -> Path:
        return self.log_dir / "servers"

    @property
    def managed_opencode_dir(self) -> Path:
        return self.data_dir / "opencode"

    def ensure(self) -> None:
        for d in (
            self.config_dir,
            self.data_dir,
            self.state_dir,
            self.log_dir,
            self.server_log_dir,
        ):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
