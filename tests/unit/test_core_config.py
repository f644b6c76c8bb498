"""Unit tests of core.config: defaults, round-trip, bad values, validation, recent workspaces."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core.errors import ConfigError
from smartspec_desktop.core.storage.config import (
    DEFAULT_BACKEND_URL,
    DEFAULT_PORT_RANGE,
    MAX_RECENT,
    Settings,
    load_settings,
    save_settings,
)


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_missing_file_gives_defaults_without_warnings(tmp_path: Path) -> None:
    settings, warnings = load_settings(tmp_path / "settings.json")
    assert settings == Settings()
    assert warnings == []
    assert settings.backend_url == DEFAULT_BACKEND_URL == "http://localhost:8000"
    assert settings.port_range() == DEFAULT_PORT_RANGE == (3795, 3800)
    assert settings.terminal == "auto" and settings.stop_servers_on_quit is True
    assert settings.recent_workspaces == []
    settings.validate()  # the defaults are valid


def test_round_trip_keeps_every_value_and_writes_0600(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "settings.json"
    original = Settings(
        backend_url="https://smartspec.example.com",
        opencode_path="/opt/opencode",
        port_range_start=4000,
        port_range_end=4010,
        terminal="kitty",
        openwork_mode="web",
        openwork_server_path="/x/ow",
        stop_servers_on_quit=False,
        model="openai/gpt-4o-mini",
        start_timeout=12.5,
        recent_workspaces=["/a", "/b é"],
    )
    save_settings(path, original)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded, warnings = load_settings(path)
    assert warnings == []
    assert loaded == original


def test_saved_file_is_plain_json_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_settings(path, Settings())
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {f.name for f in dataclasses.fields(Settings)}


def test_a_save_that_changes_nothing_does_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    saved = save_settings(path, Settings())
    before = path.stat()
    again = save_settings(path, saved, base=saved)
    after = path.stat()
    assert again == saved
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # A value of the wrong type that compares equal (1.0 == 1) is rewritten, and so is an open
    # file mode.
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(data | {"port_range_end": float(data["port_range_end"])}))
    path.chmod(0o600)
    save_settings(path, saved)
    assert json.loads(path.read_text(encoding="utf-8")) == data
    assert isinstance(json.loads(path.read_text())["port_range_end"], int)
    path.chmod(0o644)
    save_settings(path, saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("backend_url", 8000),
        ("port_range_start", "3795"),
        ("port_range_start", True),  # a bool is not an int setting
        ("port_range_end", 3800.0),
        ("stop_servers_on_quit", 1),
        ("start_timeout", "30"),
        ("start_timeout", True),
        ("recent_workspaces", "/just/one"),
        ("recent_workspaces", ["/ok", 3]),
        ("terminal", None),
    ],
)
@pytest.mark.allow_log(
    r"core\.storage\.config: Setting '\w+' in .* has a bad value",
    reason="the bad value is the input; the test checks the warning returned",
)
def test_bad_types_are_dropped_with_a_warning(tmp_path: Path, key: str, bad: Any) -> None:
    path = write(tmp_path / "settings.json", {key: bad, "model": "kept"})
    settings, warnings = load_settings(path)
    assert getattr(settings, key) == getattr(Settings(), key)
    assert settings.model == "kept"  # the other values survive
    assert len(warnings) == 1
    assert repr(key) in warnings[0] and str(path) in warnings[0]
    assert "using default" in warnings[0]


def test_int_is_accepted_for_a_float_setting(tmp_path: Path) -> None:
    settings, warnings = load_settings(write(tmp_path / "s.json", {"start_timeout": 45}))
    assert warnings == []
    assert settings.start_timeout == 45.0 and isinstance(settings.start_timeout, float)


def test_unknown_keys_are_ignored_quietly(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"future_option": {"x": 1}, "terminal": "foot"})
    settings, warnings = load_settings(path)
    assert warnings == []
    assert settings.terminal == "foot"
    assert not hasattr(settings, "future_option")


@pytest.mark.allow_log(
    r"settings\.json was unreadable",
    reason="the corrupt file is the input (logged by atomic and by config)",
)
def test_corrupt_file_gives_defaults_and_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("{not json", encoding="utf-8")
    settings, warnings = load_settings(path)
    assert settings == Settings()
    assert len(warnings) == 1 and "moved aside" in warnings[0]
    assert not path.exists()


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://x", "", "HTTP//x"])
def test_validate_rejects_a_non_http_backend_url(url: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Settings(backend_url=url).validate()
    assert repr(url) in ei.value.problem
    assert "http://localhost:8000" in ei.value.fix
    assert ei.value.code == "config"


@pytest.mark.parametrize(
    ("start", "end"), [(80, 3800), (3800, 3795), (60000, 70000), (0, 0), (1023, 1024)]
)
def test_validate_rejects_a_bad_port_range(start: int, end: int) -> None:
    with pytest.raises(ConfigError, match=f"port range {start}-{end} is not valid"):
        Settings(port_range_start=start, port_range_end=end).validate()


@pytest.mark.parametrize(("start", "end"), [(1024, 1024), (3795, 3800), (65535, 65535)])
def test_validate_accepts_edge_port_ranges(start: int, end: int) -> None:
    Settings(backend_url="https://x", port_range_start=start, port_range_end=end).validate()


def test_recent_workspaces_newest_first_deduplicated_and_bounded() -> None:
    s = Settings()
    for i in range(MAX_RECENT + 5):
        s.remember_workspace(f"/ws/{i}")
    assert len(s.recent_workspaces) == MAX_RECENT
    assert s.recent_workspaces[0] == f"/ws/{MAX_RECENT + 4}"
    assert "/ws/0" not in s.recent_workspaces

    s.remember_workspace("/ws/10")  # already listed: moves to the front, not duplicated
    assert s.recent_workspaces[0] == "/ws/10"
    assert s.recent_workspaces.count("/ws/10") == 1
    assert len(s.recent_workspaces) == MAX_RECENT

    s.forget_workspace("/ws/10")
    s.forget_workspace("/not/listed")
    assert "/ws/10" not in s.recent_workspaces
    assert len(s.recent_workspaces) == MAX_RECENT - 1


def test_default_recent_lists_are_not_shared_between_instances() -> None:
    a, b = Settings(), Settings()
    a.remember_workspace("/a")
    assert b.recent_workspaces == []
