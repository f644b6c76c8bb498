"""The window's one owner of the settings: changes on the GUI thread, saves merged with another
process's writes, and worker threads read only frozen snapshots."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from smartspec_desktop.core.storage.config import load_settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import MemoryStore
from smartspec_desktop.core.wiring import build_core
from smartspec_desktop.services.settings import SettingsService
from smartspec_desktop.services.worker import Jobs

pytestmark = pytest.mark.gui


def test_the_service_owns_saves_and_publishes_snapshots(qtbot: QtBot, tmp_path: Path) -> None:
    paths = Paths.from_base(tmp_path / "data")
    core = build_core(paths, store=MemoryStore())
    cli = build_core(paths, store=MemoryStore())  # another process, for the file
    jobs = Jobs()
    service = SettingsService.for_core(core, jobs)

    # Worker threads read a frozen snapshot, refreshed on every change.
    with pytest.raises(dataclasses.FrozenInstanceError):
        core.servers.settings.terminal = "xterm"
    service.update(terminal="kitty")
    assert core.servers.settings.terminal == "kitty"
    assert core.servers.settings is service.snapshot() and core.settings.terminal == "kitty"

    # A fresh start reported on a worker thread lands on the GUI thread, then in the file.
    threads: list[str] = []
    service.changed.connect(lambda: threads.append(threading.current_thread().name))
    ws = str(tmp_path / "ws")
    worker = threading.Thread(target=core.servers.on_fresh_start, args=(ws,), name="worker")
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: core.settings.recent_workspaces == [ws], timeout=5000)
    assert threads and "worker" not in threads
    assert core.servers.settings.recent_workspaces == [ws]

    # The CLI saves a change meanwhile: the window's next save keeps it and takes it in.
    cli.settings.model = "from-the-cli"
    cli.save_settings()
    with qtbot.waitSignal(service.saved, timeout=5000):
        assert service.set_idle_override(ws, 2.5)
    # Saves coalesce: an earlier change's save may report first, so wait for the file itself.
    qtbot.waitUntil(
        lambda: load_settings(paths.settings_file)[0].idle_minutes_by_workspace == {ws: 2.5},
        timeout=5000,
    )
    qtbot.waitUntil(lambda: core.settings.model == "from-the-cli", timeout=5000)
    assert core.servers.settings.model == "from-the-cli"
    on_disk, _ = load_settings(paths.settings_file)
    assert on_disk.model == "from-the-cli" and on_disk.terminal == "kitty"
    assert on_disk.recent_workspaces == [ws] and on_disk.idle_minutes_by_workspace == {ws: 2.5}
    assert not service.set_idle_override(ws, 2.5)  # no change: no save

    service.forget_workspace(ws)
    qtbot.waitUntil(
        lambda: json.loads(paths.settings_file.read_text())["recent_workspaces"] == [],
        timeout=5000,
    )
    jobs.wait(5000)


def test_a_failed_save_is_reported(qtbot: QtBot, tmp_path: Path) -> None:
    paths = Paths.from_base(tmp_path / "data")
    core = build_core(paths, store=MemoryStore())
    jobs = Jobs()
    service = SettingsService.for_core(core, jobs)
    paths.settings_file.mkdir(parents=True)  # a folder where the file must go: the write fails
    with qtbot.waitSignal(service.save_failed, timeout=5000) as failed:
        service.set_model("m1")
    error = failed.args[0]
    assert error.code == "config" and str(paths.settings_file) in error.problem and error.fix
    assert core.settings.model == "m1"  # kept in memory for the next save
    jobs.wait(5000)


def test_a_save_still_wanted_at_quit_reaches_the_file(qtbot: QtBot, tmp_path: Path) -> None:
    paths = Paths.from_base(tmp_path / "data")
    core = build_core(paths, store=MemoryStore())
    jobs = Jobs()
    service = SettingsService.for_core(core, jobs)
    service.update(terminal="kitty")  # a save runs ...
    service.update(terminal="xterm")  # ... and this one waits for it (coalesced)
    jobs.wait(5000)  # the quit: the pool drains, but no event loop runs the results any more
    service.flush()
    on_disk, _ = load_settings(paths.settings_file)
    assert on_disk.terminal == "xterm"
    service.deleteLater()
    qtbot.wait(50)  # the first save's result now meets a deleted service: no error
