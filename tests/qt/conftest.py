"""The real window in-process (pytest-qt), over the real core, the real opencode and the backend
stand-in. The app's environment is the sandbox's (isolated HOME/XDG dirs and data dir); secrets go
to an in-memory store so tests never touch a keyring."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import MemoryStore
from smartspec_desktop.core.wiring import Core, build_core
from smartspec_desktop.services.account import AccountService
from smartspec_desktop.services.launch import LaunchService
from smartspec_desktop.services.servers import ServerService
from smartspec_desktop.services.tasks import TaskService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.agent import AgentPanel
from smartspec_desktop.ui.app import wire_broker
from smartspec_desktop.ui.main_window import MainWindow
from tests.conftest import Sandbox
from tests.handoff_browser import open_handoff

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


class Heartbeat:
    """A 10 ms QTimer; the longest gap between its ticks is how long the event loop froze."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.max_gap = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now

    def __enter__(self) -> Heartbeat:
        self.last, self.max_gap = 0.0, 0.0
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.stop()


class BrowserStandIn:
    """Replaces the opener only: records each URL and opens it like a browser would (the app's
    private hand-off page: its form is submitted; without following the redirect, so the test can
    read where it points)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.responses: list[httpx.Response] = []

    def __call__(self, url: str) -> bool:
        self.urls.append(url)
        if url.startswith("file://"):
            self.responses.append(open_handoff(url))
        else:
            self.responses.append(
                httpx.get(url, timeout=10, follow_redirects=False, trust_env=False)
            )
        return True


@dataclass
class Gui:
    box: Sandbox
    core: Core
    jobs: Jobs
    servers: ServerService
    account: AccountService
    window: MainWindow
    browser: BrowserStandIn

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.window.grab().save(str(path))
        return path


def use_sandbox_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k in list(os.environ):
        if k.startswith(("OPENCODE_", "SMARTSPEC_", "XDG_")) and k not in env:
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k not in ("PYTHONPATH",):
            monkeypatch.setenv(k, v)


@pytest.fixture
def gui(qtbot, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gui]:  # type: ignore[no-untyped-def]
    use_sandbox_env(monkeypatch, sandbox.env)
    core = build_core(
        Paths.from_base(sandbox.data_dir), backend_url=sandbox.backend.url, store=MemoryStore()
    )
    app = QApplication.instance()
    assert app is not None
    jobs = Jobs()
    servers = ServerService(core.servers, jobs, poll_ms=250)
    account = AccountService(core.settings, core.credentials, jobs)
    browser = BrowserStandIn()
    launch = LaunchService(core.servers, jobs, opener=browser)
    tasks = TaskService(jobs)
    agent = AgentPanel(tasks)
    wire_broker(core, account, tasks, agent)  # as Application does
    window = MainWindow(core, jobs, servers, account, launch=launch, agent_panel=agent, tray=False)
    qtbot.addWidget(window)
    window.show()
    servers.start_polling()
    account.load_key_status()
    g = Gui(sandbox, core, jobs, servers, account, window, browser)
    try:
        yield g
    finally:
        servers.timer.stop()
        tasks.shutdown(wait_ms=5000)
        window.devmode.log_view.timer.stop()
        jobs.wait(60_000)
        core.servers.stop_all()
