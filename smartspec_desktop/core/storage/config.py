"""User settings: a small JSON file under the config dir, written atomically.

Missing keys fall back to defaults; a value of the wrong type is dropped with a warning; a corrupt
file is moved aside. Secrets never live here (they go to the keyring).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from smartspec_desktop.core.errors import ConfigError
from smartspec_desktop.core.remote.naming import canonical
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

DEFAULT_BACKEND_URL = "http://localhost:8000"
DEFAULT_PORT_RANGE = (3795, 3800)
MAX_RECENT = 12

OpenWorkMode = Literal["auto", "openwork", "web"]
AgentPermissions = Literal["default", "ask"]
OPENWORK_MODES: tuple[OpenWorkMode, ...] = get_args(OpenWorkMode)
AGENT_PERMISSIONS: tuple[AgentPermissions, ...] = get_args(AgentPermissions)


@dataclass
class Settings:
    backend_url: str = DEFAULT_BACKEND_URL
    #: Explicit path to an ``opencode`` binary; empty means "managed install, then PATH".
    opencode_path: str = ""
    port_range_start: int = DEFAULT_PORT_RANGE[0]
    port_range_end: int = DEFAULT_PORT_RANGE[1]
    #: "auto", a terminal name (e.g. "kitty") or a template containing "{command}".
    terminal: str = "auto"
    #: "auto" (openwork-server if installed, else OpenCode's web UI), "openwork" or "web".
    openwork_mode: OpenWorkMode = "auto"
    openwork_server_path: str = ""
    stop_servers_on_quit: bool = True
    #: Preferred model id from the gateway's list; empty means "the first one listed".
    model: str = ""
    start_timeout: float = 30.0
    #: "default" (OpenCode's own rules: edits and commands run without asking) or "ask" (the
    #: agent asks before it edits a file or runs a shell command; answered in the activity view).
    agent_permissions: AgentPermissions = "default"
    recent_workspaces: list[str] = field(default_factory=list)
    #: Tokens a workspace may spend per day through its gateway broker (issue 9); absent: no cap.
    workspace_day_caps: dict[str, int] = field(default_factory=dict)
    #: "Stop idle servers after N minutes" (issue 15): 0 = never; fractions allowed.
    #: ``SMARTSPEC_IDLE_MINUTES`` overrides it (see core/process/idle.py).
    idle_minutes: float = 30.0
    #: Per-workspace overrides of ``idle_minutes`` (workspace path → minutes).
    idle_minutes_by_workspace: dict[str, float] = field(default_factory=dict)

    def port_range(self) -> tuple[int, int]:
        return self.port_range_start, self.port_range_end

    def remember_workspace(self, path: str) -> None:
        path = canonical(path)  # a remote address (issue 15) in one spelling; a path as is
        self.recent_workspaces = [path] + [p for p in self.recent_workspaces if p != path]
        del self.recent_workspaces[MAX_RECENT:]

    def forget_workspace(self, path: str) -> None:
        path = canonical(path)
        self.recent_workspaces = [p for p in self.recent_workspaces if p != path]

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if not self.backend_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"The backend URL {self.backend_url!r} is not an http(s) URL.",
                "Set it to something like http://localhost:8000 (Settings or --backend-url).",
            )
        if self.openwork_mode not in OPENWORK_MODES:
            raise ConfigError(
                f"Settings → OpenWork mode is “{self.openwork_mode}”.",
                "Set it to auto, openwork or web.",
            )
        if self.agent_permissions not in AGENT_PERMISSIONS:
            raise ConfigError(
                f"The agent permission mode {self.agent_permissions!r} is not known.",
                'Set agent_permissions to "default" or "ask" in the settings file.',
            )
        for where, minutes in [("", self.idle_minutes), *self.idle_minutes_by_workspace.items()]:
            if not _minutes_ok(minutes):
                raise ConfigError(
                    f"“Stop idle servers after”{' for ' + where if where else ''} is "
                    f"{minutes!r} minutes.",
                    "Use a number of minutes of 0 or more (0 = never).",
                )
        a, b = self.port_range()
        if not (1024 <= a <= b <= 65535):
            raise ConfigError(
                f"The port range {a}-{b} is not valid.",
                "Use two ports between 1024 and 65535, the first not above the second.",
            )


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _minutes_ok(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def load_settings(path: Path) -> tuple[Settings, list[str]]:
    """Load settings, returning them with any warnings for the user."""
    data, warning = read_json_object(path)
    warnings = [warning] if warning else []
    defaults = Settings()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            continue  # a newer version's key; keep quiet
        expected = type(getattr(defaults, key))
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if expected is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if key == "workspace_day_caps":
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in value.items()
            )
        elif expected is dict:  # idle_minutes_by_workspace
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and _minutes_ok(v) for k, v in value.items()
            )
            if ok:
                value = {k: float(v) for k, v in value.items()}
        if key == "idle_minutes" and ok and not _minutes_ok(value):
            ok = False
        if ok:
            values[key] = value
        else:
            warnings.append(f"Setting {key!r} in {path} has a bad value {value!r}; using default.")
    settings = Settings(**values)
    for w in warnings:
        log.warning(w)
    return settings, warnings


def save_settings(path: Path, settings: Settings) -> None:
    atomic_write_json(path, dataclasses.asdict(settings))
