"""User settings: a small JSON file under the config dir, written atomically.

Missing keys fall back to defaults; a value of the wrong type is dropped with a warning; a corrupt
file is moved aside. Secrets never live here (they go to the keyring).

Two kinds of process write the file (the window and each CLI run), so :func:`save_settings` is the
one writer: it takes a file lock, re-reads the file and keeps what another writer changed since
this one read it (only the fields this writer changed are its own), then writes atomically.
Threads other than the owner's get a :meth:`Settings.snapshot`, a frozen copy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from filelock import FileLock, Timeout

from smartspec_desktop.core.errors import ConfigError
from smartspec_desktop.core.remote.naming import canonical
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

DEFAULT_BACKEND_URL = "http://localhost:8000"
DEFAULT_PORT_RANGE = (3795, 3800)
MAX_RECENT = 12
#: How long a save waits for another process's save of the same file.
SAVE_LOCK_TIMEOUT = 10.0

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

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(
                f"cannot set {name!r}: this is a frozen snapshot of the settings; change them "
                "through their owner (the settings service in the window)"
            )
        object.__setattr__(self, name, value)

    def snapshot(self) -> Settings:
        """A deep copy for another thread to read; assigning any of its fields raises."""
        out = Settings(**{name: copy.deepcopy(getattr(self, name)) for name in _FIELDS})
        out.__dict__["_frozen"] = True
        return out

    def port_range(self) -> tuple[int, int]:
        return self.port_range_start, self.port_range_end

    def remember_workspace(self, path: str) -> None:
        self.recent_workspaces = remembered(self.recent_workspaces, path)

    def forget_workspace(self, path: str) -> None:
        self.recent_workspaces = forgotten(self.recent_workspaces, path)

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


def remembered(recent: list[str], path: str) -> list[str]:
    """The recent-workspaces rule: ``path`` first, no duplicates, at most :data:`MAX_RECENT`.

    A remote address (issue 15) is kept in its one canonical spelling; a path as it is.
    """
    path = canonical(path)
    return ([path] + [p for p in recent if p != path])[:MAX_RECENT]


def forgotten(recent: list[str], path: str) -> list[str]:
    path = canonical(path)
    return [p for p in recent if p != path]


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
    settings, warnings = _parse(data, path)
    warnings = ([warning] if warning else []) + warnings
    for w in warnings:
        log.warning(w)
    return settings, warnings


def _parse(data: dict[str, Any], path: Path) -> tuple[Settings, list[str]]:
    warnings: list[str] = []
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
    return Settings(**values), warnings


def _holds(path: Path, data: dict[str, Any], out: dict[str, Any]) -> bool:
    """Whether the file (read as ``data``) holds ``out`` already, private: then a save (each CLI
    ``start``) does not write it again (issue 11). Compared as JSON: ``1``, ``1.0`` and ``true``
    differ there, and a value of the wrong type is rewritten."""
    if json.dumps(data, sort_keys=True) != json.dumps(out, sort_keys=True):
        return False
    try:
        return stat.S_IMODE(path.stat().st_mode) == 0o600
    except OSError:
        return False


def save_settings(path: Path, settings: Settings, *, base: Settings | None = None) -> Settings:
    """Write ``settings`` to ``path``: the one writer of the settings file. Returns what the file
    holds now (the writer's next ``base``).

    ``base`` is what this writer last read from (or wrote to) the file. With it, only the fields
    that differ from ``base`` are this writer's changes; every other field keeps what the file
    holds now, so a change another process saved meanwhile is not lost. For the dict fields
    (per-workspace values) and the recent workspaces the merge is per entry. Without ``base``
    every field is written (a new file, or one this writer owns alone, e.g. the demo's copy).
    Keys of a newer version of the app are kept. Raises :class:`ConfigError` when another
    process holds the file's lock for longer than :data:`SAVE_LOCK_TIMEOUT`, or the file
    cannot be written.
    """
    lock = FileLock(str(path) + ".lock", timeout=SAVE_LOCK_TIMEOUT)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with lock:
            data, _warning = read_json_object(path)
            merged = settings
            if base is not None:
                theirs, _ = _parse(data, path)
                merged = Settings(
                    **{
                        name: _merge(
                            getattr(base, name), getattr(settings, name), getattr(theirs, name)
                        )
                        for name in _FIELDS
                    }
                )
            out = {k: v for k, v in data.items() if k not in _FIELDS}
            out.update(dataclasses.asdict(merged))
            if not _holds(path, data, out):
                atomic_write_json(path, out)
    except Timeout:
        raise ConfigError(
            f"Could not save the settings: another SmartSpec Desktop process has been writing "
            f"{path} for over {SAVE_LOCK_TIMEOUT:.0f} s (it holds {lock.lock_file}).",
            "Try again in a moment. If it keeps failing, end the stuck smartspec-desktop process.",
        ) from None
    except OSError as e:
        raise ConfigError(
            f"Could not save the settings to {path} ({e.strerror or e}).",
            "Make that folder writable (or free some disk space); the next change saves again.",
        ) from e
    return Settings(**{name: copy.deepcopy(getattr(merged, name)) for name in _FIELDS})


def _merge(base: Any, ours: Any, theirs: Any) -> Any:
    """One field of a three-way merge: ours where we changed it, else theirs."""
    if ours == base:
        return copy.deepcopy(theirs)
    if theirs in (base, ours) or type(ours) is not type(theirs) or type(base) is not type(ours):
        return copy.deepcopy(ours)
    if isinstance(ours, dict):  # per workspace: our changed entries over theirs
        out = dict(theirs)
        for key in base.keys() | ours.keys():
            if key not in ours:
                out.pop(key, None)
            elif base.get(key, _MISSING) != ours[key]:
                out[key] = ours[key]
        return out
    if isinstance(ours, list):  # recent workspaces: ours, plus what they added, minus removals
        added = [p for p in theirs if p not in base and p not in ours]
        removed = {p for p in base if p not in theirs}
        kept = [p for p in ours if p not in removed or p not in base]
        return (added + kept)[:MAX_RECENT]
    return copy.deepcopy(ours)


_MISSING = object()
