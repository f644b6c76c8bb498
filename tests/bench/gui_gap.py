"""Benchmark (3): the window's event loop while 3 workspaces start and stop at once.

The real services (``ServerService`` on a ``Jobs`` pool, as the window has them) and a visible
``MainWindow`` (offscreen unless a display is set); a 10 ms ``QTimer`` heartbeat records the
longest gap between its ticks, i.e. how long the GUI thread was ever busy at a stretch.
"""

from __future__ import annotations

import os
import time
from typing import Any

from smartspec_desktop.core.wiring import Core


def event_loop_gap(
    core: Core, workspaces: list[str], *, timeout_s: float = 180.0
) -> dict[str, float]:
    """Start then stop ``workspaces`` at once through the window's services; gaps in ms."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from smartspec_desktop.services.account import AccountService
    from smartspec_desktop.services.servers import ServerService
    from smartspec_desktop.services.worker import Jobs
    from smartspec_desktop.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    jobs = Jobs()
    servers = ServerService(core.servers, jobs, poll_ms=700)
    account = AccountService(core.settings, core.credentials, jobs)
    window = MainWindow(core, jobs, servers, account, tray=False)
    window.show()
    for ws in workspaces:
        window.devmode.add_workspace(ws)
    servers.start_polling()

    gaps = {"start": 0.0, "stop": 0.0}
    phase: dict[str, Any] = {"name": "start", "last": 0.0}

    def tick() -> None:
        now = time.perf_counter()
        if phase["last"]:
            gaps[phase["name"]] = max(gaps[phase["name"]], (now - phase["last"]) * 1000)
        phase["last"] = now

    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(tick)

    def wait_for(status: str) -> None:
        loop = QEventLoop()
        deadline = time.monotonic() + timeout_s

        def check() -> None:
            states = [servers.state_of(ws).status for ws in workspaces]
            if all(s == status for s in states) or time.monotonic() > deadline:
                loop.quit()

        poll = QTimer()
        poll.setInterval(50)
        poll.timeout.connect(check)
        poll.start()
        loop.exec()
        poll.stop()
        states = [servers.state_of(ws).status for ws in workspaces]
        if any(s != status for s in states):
            raise RuntimeError(f"not all {status} within {timeout_s:.0f} s: {states}")

    resolved = [servers.normalize(ws) for ws in workspaces]
    workspaces = resolved
    heartbeat.start()
    t0 = time.perf_counter()
    for ws in workspaces:
        servers.start(ws)
    wait_for("running")
    started = time.perf_counter() - t0
    phase.update(name="stop", last=0.0)
    t0 = time.perf_counter()
    for ws in workspaces:
        servers.stop(ws)
    wait_for("stopped")
    stopped = time.perf_counter() - t0
    heartbeat.stop()
    servers.timer.stop()
    window.devmode.log_view.timer.stop()
    jobs.wait(30_000)
    window.close()
    app.processEvents()
    return {
        "start_gap_ms": gaps["start"],
        "stop_gap_ms": gaps["stop"],
        "start_s": started,
        "stop_s": stopped,
    }
