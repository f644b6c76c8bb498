"""Composition root of the window: build the core, the services and the window; run Qt.

One window per data folder: a second launch finds the first through a local socket, asks it to
raise its window, and exits.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil
from filelock import FileLock, Timeout
from PySide6.QtCore import QDeadlineTimer, QEventLoop, QObject, QProcess, QTimer, Signal, qVersion
from PySide6.QtGui import QIcon
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QApplication

from smartspec_desktop import APP_NAME
from smartspec_desktop.core import worktrees
from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.opencode.binary import cancel_probes
from smartspec_desktop.core.readiness import Readiness
from smartspec_desktop.core.redact import Redactor
from smartspec_desktop.core.servers.brokerlink import workspace_records
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.wiring import Core, build_core
from smartspec_desktop.logsetup import setup_logging
from smartspec_desktop.resources import resource_path
from smartspec_desktop.services.account import AccountService
from smartspec_desktop.services.launch import LaunchService
from smartspec_desktop.services.readiness import ReadinessService
from smartspec_desktop.services.review import ReviewService, WorktreeService
from smartspec_desktop.services.servers import ServerService
from smartspec_desktop.services.settings import SettingsService
from smartspec_desktop.services.tasks import BrokerAccess, TaskService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.agent import AgentPanel
from smartspec_desktop.ui.main_window import MainWindow
from smartspec_desktop.ui.worktrees import WorktreesPanel

if TYPE_CHECKING:
    from smartspec_desktop.demo.mode import DemoSession

log = logging.getLogger(__name__)

#: With this set to 1 the app prints ``window-shown-ms=<ms since process start>`` once the window
#: is shown, then quits: used by the packaging smoke test and the cold-start benchmark.
EXIT_AFTER_SHOWN_ENV = "SMARTSPEC_EXIT_AFTER_SHOWN"
#: How often a second launch tries the first one's socket while that one starts up.
RAISE_RETRY_MS = 100

STYLE = """
QPushButton#primary { background:#2563eb; color:white; border:none; padding:6px 14px;
                      border-radius:4px; font-weight:600; }
QPushButton#primary:disabled { background:#e5e7eb; color:#9ca3af; }
QPushButton { padding:5px 12px; }
"""


def instance_name(paths: Paths) -> str:
    digest = hashlib.sha256(str(paths.state_dir).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{APP_NAME}-{digest[:16]}"


def ask_running_instance_to_raise(name: str, *, wait_s: float = 5.0) -> bool:
    """Ask the window that holds the instance lock to come to the front.

    It may be starting up and not listening yet, so keep trying (every 100 ms) for ``wait_s``.
    Runs before the app's event loop, in a local one: the socket's signals drive it and a timer
    spaces the tries, so nothing sleeps.
    """
    loop = QEventLoop()
    sock = QLocalSocket()
    deadline = QDeadlineTimer(int(wait_s * 1000))
    retry = QTimer()
    retry.setSingleShot(True)
    retry.setInterval(RAISE_RETRY_MS)
    handed_over: list[bool] = []

    def attempt() -> None:
        sock.connectToServer(name)

    def connected() -> None:
        sock.write(b"raise\n")
        sock.flush()

    def written(_n: int) -> None:
        if not sock.bytesToWrite():
            handed_over.append(True)
            sock.disconnectFromServer()
            loop.quit()

    def failed(_error: QLocalSocket.LocalSocketError) -> None:
        if handed_over:
            return
        if deadline.hasExpired():
            loop.quit()
        elif not retry.isActive():
            retry.start()

    retry.timeout.connect(attempt)
    sock.connected.connect(connected)
    sock.bytesWritten.connect(written)
    sock.errorOccurred.connect(failed)
    give_up = QTimer()  # whatever the socket does, the wait ends
    give_up.setSingleShot(True)
    give_up.timeout.connect(loop.quit)
    give_up.start(int(wait_s * 1000) + 2000)
    QTimer.singleShot(0, attempt)
    loop.exec()
    give_up.stop()
    retry.stop()
    if not handed_over:
        sock.abort()
    return bool(handed_over)


def instance_lock(paths: Paths) -> FileLock:
    """Held while a window runs on this data folder (released by the OS if it dies)."""
    paths.ensure()  # private folders of ours, or UnsafeFolder (problem and fix)
    return FileLock(str(paths.state_dir / "window.lock"), timeout=0)


def wire_broker(core: Core, account: AccountService, tasks: TaskService, agent: AgentPanel) -> None:
    """Connect the window's services to the servers' gateway brokers (issue 9): key changes
    reach running servers, tasks are metered and capped, the ledger shows what they cost."""
    account.push_key = core.servers.push_key
    tasks.broker_access = BrokerAccess(
        control=core.servers.broker,
        records=lambda rec: workspace_records(core.paths, rec.workspace_path),
    )
    agent.credits_lookup = account.credits_charged


class Application:
    """Owns the objects of one window process (no globals)."""

    def __init__(self, qapp: QApplication, core: Core, *, tray: bool = True) -> None:
        self.qapp = qapp
        self.core = core
        self.jobs = Jobs(qapp)
        #: The one owner of the settings: first, so the manager's workers read its snapshots.
        self.settings = SettingsService.for_core(core, self.jobs, qapp)
        self.servers = ServerService(core.servers, self.jobs)
        self.account = AccountService(core.settings, core.credentials, self.jobs)
        self.launch = LaunchService(core.servers, self.jobs)
        self.tasks = TaskService(self.jobs)
        self.agent_panel = AgentPanel(self.tasks)
        self.review = ReviewService(self.jobs)
        self.worktrees = WorktreeService(
            core.servers, self.jobs, worktrees.app_base_dir(core.paths.data_dir)
        )
        self.agent_panel.attach_review(self.review, self.worktrees)
        wire_broker(core, self.account, self.tasks, self.agent_panel)
        icon = QIcon(str(resource_path("icon.svg")))
        self.window = MainWindow(
            core,
            self.jobs,
            self.servers,
            self.account,
            launch=self.launch,
            agent_panel=self.agent_panel,
            icon=icon,
            tray=tray,
            settings=self.settings,
        )
        self.window.quit_ready.connect(self.qapp.quit)
        self.window.devmode.attach_worktrees(WorktreesPanel(self.worktrees, self.servers))
        self.server: QLocalServer | None = None
        self.readiness = ReadinessService(self._readiness_checks, self.jobs, self.window)
        self.window.attach_readiness(self.readiness, demo_available=core.demo is None)
        self.window.demo_requested.connect(self.launch_demo)
        if core.demo is not None:
            from smartspec_desktop.demo.mode import DEMO_LABEL

            self.window.mark_demo(DEMO_LABEL, f"{core.demo.url} · your settings and key are unused")

    def _readiness_checks(self) -> dict[str, Any]:
        core = self.core
        return Readiness(
            self.settings.snapshot(),  # the checks run on worker threads
            core.credentials,
            core.servers.find_opencode,
            backend_factory=core.servers.backend_factory,
        ).checks()

    def demo_command(self) -> list[str]:
        """``smartspec-desktop [--data-dir D] --demo``: the demo in a window of its own."""
        base = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m"]
        cmd = base + ([] if getattr(sys, "frozen", False) else ["smartspec_desktop"])
        real = self.core.paths.base
        if real is not None:
            cmd += ["--data-dir", str(real)]
        return cmd + ["--demo"]

    def launch_demo(self) -> None:
        """ "Try without a backend": the demo window, a process of its own (its own folders, the
        demo gateway, a key for that run only); this window and its settings stay as they are."""
        cmd = self.demo_command()
        ok, _pid = QProcess.startDetached(cmd[0], cmd[1:])
        if ok:
            self.window.statusBar().showMessage(
                "Opening the demo window (a local demo backend: no real model, no real credits) …",
                8000,
            )
        else:
            self.window.statusBar().showMessage(
                f"Could not start the demo window ({' '.join(cmd)}). Run `smartspec-desktop "
                "--demo` from a terminal to see why.",
                10_000,
            )

    def listen(self, name: str) -> None:
        """Become the single instance for this data folder."""
        self.server = QLocalServer(self.qapp)
        # We hold the instance lock, so a socket left by that name is a dead instance's.
        QLocalServer.removeServer(name)
        if not self.server.listen(name):
            log.warning("single-instance socket %s: %s", name, self.server.errorString())
        self.server.newConnection.connect(self._on_peer)

    def _on_peer(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            conn = self.server.nextPendingConnection()
            conn.readyRead.connect(lambda c=conn: self._raise_for(c))
            conn.disconnected.connect(conn.deleteLater)

    def _raise_for(self, conn: QLocalSocket) -> None:
        conn.readAll()
        self.window.raise_window()

    def start(self, *, first_launch: bool = False) -> None:
        self.window.show()
        self.servers.start_polling()
        self.account.load_key_status()
        # The panel shows on first launch, else only when a check finds something missing.
        self.window.check_readiness(show=first_launch)
        if self.core.demo is not None:
            from smartspec_desktop.demo.mode import DEMO_EMAIL, DEMO_PASSWORD

            self.account.sign_in(DEMO_EMAIL, DEMO_PASSWORD)

    def shutdown(self) -> None:
        self.servers.timer.stop()
        self.tasks.shutdown(wait_ms=3000)
        finish_jobs(self.jobs, 5000)
        self.window.settings.flush()  # a save still wanted when the event loop stopped
        if self.server is not None:
            self.server.close()


def finish_jobs(jobs: Jobs, msecs: int) -> bool:
    """Wait up to ``msecs`` for the background jobs, killing meanwhile every ``opencode
    --version`` probe they run: its answer is not wanted once the app quits, and a readiness
    check queued before the quit may start one only now. True when every job finished."""
    deadline = time.monotonic() + msecs / 1000
    while True:
        cancel_probes()
        left_ms = int((deadline - time.monotonic()) * 1000)
        if jobs.wait(max(0, min(100, left_ms))):
            return True
        if left_ms <= 0:
            return False


def process_age_s() -> float:
    """Seconds since this process started.

    On Linux from the boot clock and /proc (psutil's create_time adds the boot time, which VMs
    report up to a second off); elsewhere psutil.
    """
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return time.clock_gettime(time.CLOCK_BOOTTIME) - started
        except (OSError, ValueError, IndexError):
            pass
    return time.time() - float(psutil.Process().create_time())


def _install_signal_handlers(window: MainWindow) -> QTimer:
    """Route SIGINT/SIGTERM into the event loop so quitting stops owned servers cleanly."""

    def handler(_signum: int, _frame: object) -> None:
        QTimer.singleShot(0, window.close)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # Python runs signal handlers only when it gets control: wake it up regularly.
    timer = QTimer()
    timer.start(250)
    timer.timeout.connect(lambda: None)
    return timer


def _folders_error(paths: Paths, e: OSError | SmartSpecError) -> int:
    if isinstance(e, SmartSpecError):  # e.g. a data dir another user controls
        sys.stderr.write(f"error: {e}\n")
        return 1
    sys.stderr.write(
        f"error: cannot create the app's folders under {paths.state_dir.parent} ({e}). "
        "Make that folder writable, or pass --data-dir with a writable folder.\n"
    )
    return 1


def no_display_error(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """On Linux/BSD without a display Qt aborts the process: say so instead, with the fix."""
    if sys.platform in ("win32", "darwin") or environ.get("QT_QPA_PLATFORM"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "error: no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set). "
        "Run it from a desktop session, or use the command line: smartspec-desktop --help "
        "(start, status, run, stop …).\n"
    )


class _Probe(QObject):
    ping = Signal()


def broken_binding_error(emit: Callable[[], object] | None = None) -> str | None:
    """PySide6 6.12.0 on Python < 3.12 drops a reference to ``True`` on every ``Signal.emit()``
    (``True`` is not immortal there): once its references are gone (~570 in a bare script, ~2,850
    with the window's modules loaded) the interpreter aborts or crashes.
    Measured, not looked up by version, so a later release with the same fault is caught too."""
    probe = _Probe()  # held here: a signal of a deleted object raises instead of emitting
    if emit is None:
        emit = probe.ping.emit
    emits = 8
    before = sys.getrefcount(True)
    for _ in range(emits):
        emit()
    if before - sys.getrefcount(True) < emits:  # the fault costs one each; a stray drop is not it
        return None
    import PySide6

    return (
        f"error: this PySide6 ({PySide6.__version__}, Qt {qVersion()}) loses a reference to True "
        f"each time a signal is emitted on Python {sys.version_info.major}."
        f"{sys.version_info.minor}, and the window would crash after a few thousand signals. "
        "Install the locked version (bash scripts/setup-app, or pip install "
        "'PySide6-Essentials!=6.12.0'), or use Python 3.12 or newer.\n"
    )


def run_gui(args: argparse.Namespace) -> int:
    paths = Paths.resolve(getattr(args, "data_dir", None))
    problem = no_display_error() or broken_binding_error()
    if problem:
        sys.stderr.write(problem)
        return 1
    if getattr(args, "demo", False):
        return _run_demo_gui(args, paths)
    first_launch = not paths.settings_file.exists()
    return _run_gui(args, paths, first_launch=first_launch)


def _run_demo_gui(args: argparse.Namespace, real: Paths) -> int:
    """The window on the demo gateway: the demo's own folders (and single instance), the
    gateway held for as long as the window runs."""
    from smartspec_desktop.demo import mode

    demo = mode.demo_paths(real)
    try:
        real.ensure()
        demo.ensure()
    except (OSError, SmartSpecError) as e:
        return _folders_error(demo, e)
    with mode.holding(demo.state_dir):
        try:
            session = mode.start_demo(real)
        except SmartSpecError as e:
            sys.stderr.write(f"error: {e}\n")
            return 1
        return _run_gui(args, demo, session=session, real=real)


def _run_gui(
    args: argparse.Namespace,
    paths: Paths,
    *,
    first_launch: bool = False,
    session: DemoSession | None = None,
    real: Paths | None = None,
) -> int:
    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qapp, QApplication)
    qapp.setApplicationName("SmartSpec Desktop")
    qapp.setOrganizationName("SmartSpecPro")
    qapp.setDesktopFileName(APP_NAME)
    qapp.setStyleSheet(STYLE)
    qapp.setQuitOnLastWindowClosed(False)  # quitting is MainWindow's job (servers first)

    name = instance_name(paths)
    try:
        lock = instance_lock(paths)
        lock.acquire()
    except Timeout:
        if ask_running_instance_to_raise(name):
            sys.stdout.write("SmartSpec Desktop is already running; raised its window.\n")
            return 0
        sys.stderr.write(
            f"error: another SmartSpec Desktop holds {paths.state_dir / 'window.lock'} but does "
            "not answer. Close it (or end its process) and start again.\n"
        )
        return 1
    except (OSError, SmartSpecError) as e:
        return _folders_error(paths, e)
    try:
        if session is not None and real is not None:
            from smartspec_desktop.demo.mode import build_demo_core

            core = build_demo_core(real, session)
        else:
            core = build_core(paths, backend_url=getattr(args, "backend_url", None))
    except (OSError, SmartSpecError) as e:
        return _folders_error(paths, e)
    # The key joins the redactor once read off the GUI thread (a keyring read can take 0.3 s).
    redactor = Redactor()
    setup_logging(paths.log_dir, redactor, verbose=getattr(args, "verbose", False))
    try:
        core.settings.validate()
    except SmartSpecError as e:
        core.warnings.append(str(e))

    app = Application(qapp, core)
    app.jobs.submit(lambda: redactor.add(core.servers.redactor_key()))
    app.listen(name)
    _keepalive = _install_signal_handlers(app.window)
    if os.environ.get(EXIT_AFTER_SHOWN_ENV) == "1":

        def report() -> None:
            sys.stdout.write(f"window-shown-ms={process_age_s() * 1000:.0f}\n")
            sys.stdout.flush()
            app.window.close()

        QTimer.singleShot(0, report)
    app.start(first_launch=first_launch)
    code = qapp.exec()
    app.shutdown()
    del _keepalive
    lock.release()
    return int(code)
