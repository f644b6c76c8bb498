"""The readiness panel: rows render each state, checks run in workers (a slow one holds up only
its own row, and never the GUI thread), each fix calls the window's own action, it hides and comes
back from Help, and the demo's labels are on every page."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from PySide6.QtWidgets import QLabel

from smartspec_desktop.core import readiness as r
from smartspec_desktop.demo.mode import DEMO_LABEL
from smartspec_desktop.services.readiness import ReadinessService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.readiness import ReadinessPanel
from tests.qt.conftest import Gui, Heartbeat

pytestmark = pytest.mark.gui

WAIT = 15_000


class Checks:
    """Checks that answer as told; ``slow`` blocks its worker until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: set[int] = set()
        self.rounds = 0

    def _fixed(self, check: r.Check) -> Callable[[], r.Check]:
        def run() -> r.Check:
            self.threads.add(threading.get_ident())
            return check

        return run

    def _slow(self) -> r.Check:
        self.threads.add(threading.get_ident())
        self.release.wait(30)
        return r.Check(r.BROWSER, r.State.OK, "firefox.")

    def __call__(self) -> dict[str, Callable[[], r.Check]]:
        self.rounds += 1
        return {
            r.BACKEND: self._fixed(
                r.Check(r.BACKEND, r.State.FAILED, "Not reachable at http://x.", r.FIX_SETTINGS)
            ),
            r.API_KEY: self._fixed(r.Check(r.API_KEY, r.State.MISSING, "No key.", r.FIX_ACCOUNT)),
            r.OPENCODE: self._fixed(
                r.Check(r.OPENCODE, r.State.MISSING, "Not installed.", r.FIX_INSTALL_OPENCODE)
            ),
            r.KEYRING: self._fixed(r.Check(r.KEYRING, r.State.OK, "Available.")),
            r.TERMINAL: self._fixed(r.Check(r.TERMINAL, r.State.OK, "xterm.")),
            r.BROWSER: self._slow,
        }


@pytest.fixture
def checks() -> Iterator[Checks]:
    c = Checks()
    yield c
    c.release.set()


def test_rows_render_while_a_slow_check_runs_in_its_worker(qtbot, checks: Checks) -> None:  # type: ignore[no-untyped-def]
    jobs = Jobs()
    service = ReadinessService(checks, jobs)
    panel = ReadinessPanel(service)
    qtbot.addWidget(panel)
    panel.show()
    with Heartbeat() as beat:
        service.run()
        qtbot.waitUntil(lambda: panel.rows[r.TERMINAL].badge.text() == "✔ Ready", timeout=WAIT)
        assert panel.rows[r.BROWSER].badge.text() == "… Checking"
        assert not panel.check_again.isEnabled()
        assert "Checking" in panel.summary.text()
        qtbot.wait(300)
    assert beat.max_gap < 3.0  # the GUI thread never waited for a check
    assert threading.get_ident() not in checks.threads  # every check ran in a worker

    backend = panel.rows[r.BACKEND]
    assert backend.badge.text() == "✖ Problem" and "http://x" in backend.detail.text()
    assert backend.fix.isVisibleTo(panel) and backend.fix.text() == "Open Settings"
    assert panel.rows[r.API_KEY].badge.text() == "○ Missing"
    assert panel.rows[r.OPENCODE].fix.text() == "Install OpenCode"
    assert not panel.rows[r.KEYRING].fix.isVisibleTo(panel)
    assert panel.try_demo.objectName() == "primary"  # no backend: the demo is the way in

    with qtbot.waitSignal(service.finished, timeout=WAIT) as done:
        checks.release.set()
    assert set(done.args[0]) == set(r.TITLES)
    assert panel.rows[r.BROWSER].badge.text() == "✔ Ready"
    assert panel.summary.text().startswith("3 of 6 ready")
    assert panel.check_again.isEnabled()
    jobs.wait(5000)


def test_fixes_call_the_windows_actions_and_the_panel_comes_back(  # type: ignore[no-untyped-def]
    gui: Gui, qtbot, checks: Checks, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks.release.set()
    w = gui.window
    service = ReadinessService(checks, gui.jobs)
    installs: list[bool] = []
    monkeypatch.setattr(gui.servers, "install_opencode", lambda: installs.append(True))
    panel = w.attach_readiness(service)
    assert not panel.isVisible() and w.readiness_action.isEnabled()

    # Not the first launch, but something is missing: the panel shows by itself.
    with qtbot.waitSignal(service.finished, timeout=WAIT):
        w.check_readiness(show=False)
    qtbot.waitUntil(panel.isVisible, timeout=WAIT)
    gui.screenshot("readiness-panel")

    panel.rows[r.API_KEY].fix.click()
    assert w.tabs.currentWidget() is w.account_page
    panel.rows[r.BACKEND].fix.click()
    assert w.tabs.currentWidget() is w.settings_page
    panel.rows[r.OPENCODE].fix.click()
    assert w.tabs.currentWidget() is w.devmode and installs == [True]
    with qtbot.waitSignal(w.demo_requested, timeout=WAIT):
        panel.try_demo.click()

    panel.hide_button.click()
    assert not panel.isVisible()
    rounds = checks.rounds
    with qtbot.waitSignal(service.finished, timeout=WAIT):
        w.readiness_action.trigger()  # Help → Readiness check…
    assert panel.isVisible() and checks.rounds == rounds + 1
    with qtbot.waitSignal(service.finished, timeout=WAIT):
        panel.check_again.click()
    assert checks.rounds == rounds + 2


def test_everything_ready_keeps_the_panel_hidden(qtbot, gui: Gui) -> None:  # type: ignore[no-untyped-def]
    def fine(name: str) -> Callable[[], r.Check]:
        return lambda: r.Check(name, r.State.OK, "fine")

    def ready() -> dict[str, Callable[[], r.Check]]:
        return {n: fine(n) for n in r.TITLES}

    service = ReadinessService(ready, gui.jobs)
    panel = gui.window.attach_readiness(service)
    with qtbot.waitSignal(service.finished, timeout=WAIT):
        gui.window.check_readiness(show=False)
    assert not panel.isVisible()
    assert panel.summary.text() == "Everything is ready."


def test_the_demo_is_labelled_on_every_page(gui: Gui) -> None:
    w = gui.window
    w.mark_demo(DEMO_LABEL, "http://127.0.0.1:1234")
    assert DEMO_LABEL in w.windowTitle()
    assert w.demo_banner.isVisible() and DEMO_LABEL in w.demo_banner.text()
    for page in (w.account_page, w.devmode.agent_panel, w.settings_page):
        assert page is not None
        notes = [lab.text() for lab in page.findChildren(QLabel, "demo_note")]
        assert notes == [f"⚠ {DEMO_LABEL}"]
    assert w.settings_page.backend_url.isReadOnly()
    texts = [lab.text() for lab in w.devmode.findChildren(QLabel)]
    assert any(t.startswith("Demo mode: OpenCode runs through a local demo gateway") for t in texts)
    assert not any("charged to the credits" in t for t in texts)
