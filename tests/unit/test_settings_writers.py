"""The settings file has two kinds of writer (the window and each CLI run): saving goes through
one locked, merging writer, and worker threads only ever get frozen snapshots."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from filelock import FileLock

from smartspec_desktop.core.errors import ConfigError
from smartspec_desktop.core.storage import config
from smartspec_desktop.core.storage.config import Settings, load_settings, save_settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.wiring import build_core


def test_a_second_writer_keeps_the_first_writers_unrelated_changes(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_settings(path, Settings(recent_workspaces=["/old"]))
    window, _ = load_settings(path)
    cli, _ = load_settings(path)
    window_base, cli_base = window.snapshot(), cli.snapshot()

    cli.model = "m-from-cli"
    cli.workspace_day_caps["/cli"] = 100
    cli.remember_workspace("/started-by-cli")
    save_settings(path, cli, base=cli_base)

    window.terminal = "kitty"
    window.workspace_day_caps["/win"] = 200
    window.idle_minutes_by_workspace["/win"] = 5.0
    window.forget_workspace("/old")
    window.remember_workspace("/added-in-window")
    merged = save_settings(path, window, base=window_base)

    on_disk, warnings = load_settings(path)
    assert warnings == []
    assert on_disk == merged
    assert on_disk.model == "m-from-cli"  # the CLI's change survived the window's save
    assert on_disk.terminal == "kitty"
    assert on_disk.workspace_day_caps == {"/cli": 100, "/win": 200}  # merged per workspace
    assert on_disk.idle_minutes_by_workspace == {"/win": 5.0}
    assert on_disk.recent_workspaces == ["/started-by-cli", "/added-in-window"]


def test_the_same_field_changed_by_both_is_the_last_writers(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_settings(path, Settings())
    a, _ = load_settings(path)
    b, _ = load_settings(path)
    base_a, base_b = a.snapshot(), b.snapshot()
    a.backend_url, b.backend_url = "https://a.example", "https://b.example"
    b.workspace_day_caps["/w"] = 1
    save_settings(path, b, base=base_b)
    a.workspace_day_caps["/w"] = 2
    save_settings(path, a, base=base_a)
    on_disk, _ = load_settings(path)
    assert on_disk.backend_url == "https://a.example"
    assert on_disk.workspace_day_caps == {"/w": 2}


def test_a_removal_by_one_writer_is_not_undone_by_the_other(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    save_settings(path, Settings(workspace_day_caps={"/a": 1, "/b": 2}))
    a, _ = load_settings(path)
    b, _ = load_settings(path)
    base_a, base_b = a.snapshot(), b.snapshot()
    del b.workspace_day_caps["/a"]
    save_settings(path, b, base=base_b)
    a.workspace_day_caps["/b"] = 3
    save_settings(path, a, base=base_a)
    assert load_settings(path)[0].workspace_day_caps == {"/b": 3}


def test_without_a_base_every_field_is_written_and_newer_keys_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model": "theirs", "from_a_newer_version": [1, 2]}))
    save_settings(path, Settings(terminal="xterm"))
    data = json.loads(path.read_text())
    assert data["model"] == "" and data["terminal"] == "xterm"
    assert data["from_a_newer_version"] == [1, 2]


def test_a_held_lock_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.json"
    monkeypatch.setattr(config, "SAVE_LOCK_TIMEOUT", 0.2)
    holder = subprocess.Popen(  # another process holds the lock (flock is per open file)
        [
            sys.executable,
            "-c",
            "import sys, filelock; l = filelock.FileLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); sys.stdin.read()",
            str(path) + ".lock",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError) as caught:
            save_settings(path, Settings())
    finally:
        holder.communicate("", timeout=10)
    assert str(path) in caught.value.problem and "another SmartSpec Desktop" in caught.value.problem
    assert caught.value.fix
    assert not path.exists()
    with FileLock(str(path) + ".lock", timeout=1):  # released: free again
        pass


WRITER = textwrap.dedent(
    """
    import copy
    import sys
    from pathlib import Path
    from smartspec_desktop.core.storage.config import load_settings, save_settings
    path, name, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    settings, _ = load_settings(path)
    base = settings.snapshot()
    for i in range(rounds):
        settings.workspace_day_caps[f"/{name}/{i}"] = i + 1
        if name == "cli":
            settings.model = f"model-{i}"
        else:
            settings.idle_minutes = float(i + 1)
        base = save_settings(path, settings, base=base)
        settings = copy.deepcopy(base)  # what the file holds now, to change further
    """
)


def test_two_processes_saving_at_once_lose_nothing(tmp_path: Path) -> None:
    """A window and a CLI run each save 25 times, at the same time: every entry of both is
    in the file at the end, and each one's own scalar field is its last value."""
    path = tmp_path / "settings.json"
    save_settings(path, Settings())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    rounds = 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(rounds)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("window", "cli")
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    on_disk, warnings = load_settings(path)
    assert warnings == []
    assert on_disk.workspace_day_caps == {
        f"/{name}/{i}": i + 1 for name in ("window", "cli") for i in range(rounds)
    }
    assert on_disk.model == f"model-{rounds - 1}"
    assert on_disk.idle_minutes == float(rounds)


def test_a_snapshot_is_a_frozen_deep_copy() -> None:
    live = Settings(recent_workspaces=["/a"], workspace_day_caps={"/a": 1})
    snap = live.snapshot()
    assert snap == live
    with pytest.raises(dataclasses.FrozenInstanceError, match="frozen snapshot"):
        snap.model = "x"
    live.recent_workspaces.append("/b")
    live.workspace_day_caps["/a"] = 2
    assert snap.recent_workspaces == ["/a"] and snap.workspace_day_caps == {"/a": 1}
    changed = dataclasses.replace(snap, model="y")  # a copy to edit is not frozen
    changed.terminal = "kitty"
    assert changed.model == "y" and snap.model == ""


def test_the_cli_core_remembers_fresh_starts_and_saves_merged(tmp_path: Path) -> None:
    paths = Paths.from_base(tmp_path / "data")
    first = build_core(paths)
    second = build_core(paths)  # another process, as far as the file is concerned
    second.settings.model = "m2"
    second.save_settings()
    first.servers.on_fresh_start("/started")  # what ServerManager.start calls
    assert first.settings.recent_workspaces == ["/started"]
    first.save_settings()
    assert first.settings.model == "m2"  # taken in from the file
    on_disk, _ = load_settings(paths.settings_file)
    assert on_disk.recent_workspaces == ["/started"] and on_disk.model == "m2"
