"""Benchmarks: ``python -m tests.bench.run`` prints figures (a markdown table); no assertions.

Everything runs in a throw-away sandbox like the tests' (own HOME/XDG dirs, data dir, no keyring),
against the backend stand-in on 127.0.0.1 and the real ``opencode`` (``$SMARTSPEC_TEST_OPENCODE``
or PATH; ``bash tests/run-tests`` puts the pinned one first, or run
``PATH=~/.cache/smartspec-desktop-tests/data/opencode/node_modules/.bin:$PATH python -m
tests.bench.run``).

1. click→ready: ``ServerManager.start`` until healthy vs bare ``opencode serve`` until healthy
   (median of ``--runs`` each, alternating; one warm-up of each first), and the ratio. Both sides
   get ports nobody else uses (a private preferred range for ours, an OS-picked one for bare),
   so programs on 3795-3800 (e.g. tests running at the same time) cannot force retries;
2. stop: ``ServerManager.stop`` until stopped, and processes of the tree left afterwards;
3. GUI event-loop gap while 3 workspaces start/stop at once, through the real window's services;
4. app cold start to window shown (``SMARTSPEC_EXIT_AFTER_SHOWN=1`` hook) and the app process's
   peak RSS up to then; skipped while ``smartspec_desktop.ui.app`` does not exist;
5. scale: 5 workspaces started together (threads on one ServerManager, as the window does):
   total time, and RSS of each server;
6. the gateway broker: time to first byte and total time of a streamed answer (small, ~10 MB)
   through the broker vs straight to the stand-in (:mod:`tests.bench.broker`, which also runs
   alone: ``python -m tests.bench.broker``).
7. idle servers sleep: wake of a sleeping server vs a cold start, and RSS of ``--scale`` idle
   workspaces before and after their sleep timeout (:mod:`tests.bench.idle`, which also runs
   alone: ``python -m tests.bench.idle``).
8. a remote workspace (through SSH to this machine, the tests' own sshd) start→ready vs a local
   one (:mod:`tests.bench.remote`, which also runs alone: ``python -m tests.bench.remote``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from smartspec_desktop.core import ports
from smartspec_desktop.core.broker.modelids import write_models_config
from smartspec_desktop.core.process.procs import ProcIdentity
from smartspec_desktop.core.servers.launch_config import opencode_config, server_env
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import MemoryStore
from smartspec_desktop.core.wiring import Core, build_core
from tests.backend_standin import BackendStandIn
from tests.conftest import find_test_opencode, reap, sandbox_env

MB = 1024 * 1024


class _PortConflict(Exception):
    pass


@dataclass
class Row:
    number: str
    measure: str
    ours: str
    bare: str = ""
    note: str = ""


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = psutil.virtual_memory().total / (1024**3)
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {ram:.0f} GB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


class Bench:
    def __init__(self, root: Path, opencode: str) -> None:
        self.root = root
        self.opencode = opencode
        self.env = sandbox_env(root, opencode)
        self.backend = BackendStandIn().start()
        self.backend.rate_limit_per_minute = None  # the bench makes many preflight calls
        self.backend.add_user("bench@example.com", "pw")
        self.key = self.backend.issue_api_key("bench@example.com")
        self.env["SMARTSPEC_API_KEY"] = self.key
        self.core = self.make_core()

    def make_core(self) -> Core:
        core = build_core(
            Paths.from_base(self.root / "data"), backend_url=self.backend.url, store=MemoryStore()
        )
        core.credentials.session_key = self.key
        core.servers.environ = self.env
        return core

    def workspace(self, name: str) -> str:
        p = self.root / "workspaces" / name
        p.mkdir(parents=True, exist_ok=True)
        return str(p)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.core.servers.stop_all(grace=3.0)
        self.backend.stop()

    # --------------------------------------------------------------------- 1 and 2: ours

    def use_private_ports(self, n: int) -> None:
        """Point the preferred range at ``n`` free ports of our own: other programs using
        3795-3800 (tests running at the same time) would otherwise make starts retry."""
        for _ in range(100):
            base = random.randrange(40000, 60000)
            if all(ports.port_is_free(p) for p in range(base, base + n)):
                self.core.settings.port_range_start = base
                self.core.settings.port_range_end = base + n - 1
                return
        raise RuntimeError("no block of free ports found")

    def ours_start_stop(self, ws: str) -> tuple[float, float, int]:
        """(seconds to healthy, seconds to stopped, processes left after stop)."""
        self.use_private_ports(1)
        t0 = time.perf_counter()
        result = self.core.servers.start(ws)
        ready = time.perf_counter() - t0
        rec = result.record
        sup = ProcIdentity(rec.supervisor_pid, rec.supervisor_create_time).process()
        tree = [sup, *sup.children(recursive=True)] if sup else []
        t0 = time.perf_counter()
        self.core.servers.stop(ws)
        stopped = time.perf_counter() - t0
        left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        return ready, stopped, len(left)

    # ------------------------------------------------------------------------- 1: bare

    def bare_start(self, ws: str) -> float:
        """Bare ``opencode serve`` (same config and password) until healthy. The port is one the
        OS picks, so other programs using 3795-3800 do not collide with it; a failed attempt
        (port taken between pick and bind) is retried, like the app does."""
        for _ in range(3):
            try:
                return self._bare_start_once(ws, ports.os_assigned_port())
            except _PortConflict as e:
                print(f"  bare: {e}; retrying on another port", file=sys.stderr)
        raise RuntimeError("bare opencode failed three times")

    def _bare_start_once(self, ws: str, port: int) -> float:
        password = "bench-" + os.urandom(8).hex()
        gateway = self.backend.url + "/v1/opencode"
        models = self.backend.models
        # Straight to the stand-in, no supervisor and no broker: the provider's variables
        # point at the gateway itself.
        env = server_env(
            self.env,
            password=password,
            config=opencode_config(models[0]),
            models_file=write_models_config(self.root / "bare-models.json", models),
        )
        env.update(SMARTSPEC_BROKER_URL=gateway, SMARTSPEC_BROKER_TOKEN=self.key)
        cmd = [self.opencode, "serve", "--hostname", "127.0.0.1", "--port", str(port)]
        logf = open(self.root / "bare.log", "ab")  # noqa: SIM115
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=ws,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            with httpx.Client(auth=("opencode", password), timeout=1.0, trust_env=False) as c:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if proc.poll() is not None:
                        tail = (self.root / "bare.log").read_text(errors="replace")[-800:]
                        if "ServeError" in tail or "EADDRINUSE" in tail:
                            raise _PortConflict(f"port {port} was taken")
                        raise RuntimeError(f"bare opencode exited with {proc.returncode}: {tail}")
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        r = c.get(f"http://127.0.0.1:{port}/global/health")
                        if r.status_code == 200 and r.json().get("healthy") is True:
                            return time.perf_counter() - t0
                    time.sleep(0.05)
            raise RuntimeError("bare opencode did not become healthy within 60 s")
        finally:
            logf.close()
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # ------------------------------------------------------------------------------ 5

    def scale(self, n: int) -> tuple[float, list[float], list[float], int]:
        """(total s, server-tree RSS MB each, supervisor RSS MB each, failures)."""
        workspaces = [self.workspace(f"scale-{i}") for i in range(n)]
        self.use_private_ports(n + 1)
        errors: list[BaseException] = []

        def one(ws: str) -> None:
            try:
                self.core.servers.start(ws)
            except BaseException as e:  # reported as a count
                errors.append(e)

        threads = [threading.Thread(target=one, args=(ws,)) for ws in workspaces]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.perf_counter() - t0
        time.sleep(2.0)  # let the servers settle before reading memory
        server_rss, sup_rss = [], []
        for rec in self.core.servers.list_servers():
            server = ProcIdentity(rec.pid, rec.create_time).process()
            sup = ProcIdentity(rec.supervisor_pid, rec.supervisor_create_time).process()
            if server:
                tree = [server, *server.children(recursive=True)]
                server_rss.append(sum(_rss(p) for p in tree) / MB)
            if sup:
                sup_rss.append(_rss(sup) / MB)
        for e in errors:
            print(f"  scale: a start failed: {e}", file=sys.stderr)
        self.core.servers.stop_all(grace=5.0)
        return total, server_rss, sup_rss, len(errors)


def _rss(p: psutil.Process) -> int:
    try:
        return int(p.memory_info().rss)
    except psutil.Error:
        return 0


# ------------------------------------------------------------------------------------ 3


def bench_gui_event_loop_gap(bench: Bench) -> Row:
    """The longest gap of a 10 ms heartbeat in the real window's event loop while 3 workspaces
    start and then stop at once through its services (see :mod:`tests.bench.gui_gap`)."""
    from tests.bench.gui_gap import event_loop_gap

    print("(3) GUI event-loop gap, 3 workspaces at once …", flush=True)
    bench.use_private_ports(3)
    workspaces = [bench.workspace(f"gui-{i}") for i in range(3)]
    try:
        g = event_loop_gap(bench.core, workspaces)
    except RuntimeError as e:
        return Row("3", "GUI event-loop gap, 3 start/stop at once", f"failed: {e}")
    return Row(
        "3",
        "GUI event-loop gap, 3 start/stop at once",
        f"{g['start_gap_ms']:.0f} ms while starting ({g['start_s']:.1f} s), "
        f"{g['stop_gap_ms']:.0f} ms while stopping ({g['stop_s']:.1f} s)",
        "",
        "goal < 50 ms",
    )


# ------------------------------------------------------------------------------------ 4


def gui_available() -> bool:
    """Whether this checkout has the window (not a namespace path from another install)."""
    import smartspec_desktop

    return (Path(smartspec_desktop.__file__).parent / "ui" / "app.py").exists()


def cold_start(root: Path, env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """(window-shown ms per run, peak RSS MB per run) of ``python -m smartspec_desktop``."""
    shown, peak = [], []
    for i in range(runs):
        wenv = dict(env, SMARTSPEC_EXIT_AFTER_SHOWN="1", QT_QPA_PLATFORM="offscreen")
        cmd = [sys.executable, "-m", "smartspec_desktop", "--data-dir", str(root / f"gui-{i}")]
        proc = subprocess.Popen(cmd, env=wenv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timer = threading.Timer(90, proc.kill)
        timer.start()
        try:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            # wait4 gives this child's own rusage: ru_maxrss is its peak RSS (KiB on Linux).
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            timer.cancel()
        m = re.search(r"^window-shown-ms=(\d+(?:\.\d+)?)", out, re.M)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"the window run failed (exit {proc.returncode}): {err[-500:]}")
        shown.append(float(m[1]))
        scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes
        peak.append(usage.ru_maxrss * scale / MB)
    return shown, peak


def idle_rss(root: Path, env: dict[str, str], idle_s: float = 5.0) -> float:
    """RSS (MB) of the window process after ``idle_s`` of idling; then SIGTERM (orderly quit)."""
    wenv = dict(env, QT_QPA_PLATFORM="offscreen")
    cmd = [sys.executable, "-m", "smartspec_desktop", "--data-dir", str(root / "gui-idle")]
    proc = subprocess.Popen(cmd, env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(idle_s)
        if proc.poll() is not None:
            raise RuntimeError(f"the window exited early (exit {proc.returncode})")
        rss = psutil.Process(proc.pid).memory_info().rss / MB
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return float(rss)


# --------------------------------------------------------------------------------- main


def fmt_s(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.2f} s (n={len(values)}, {min(values):.2f}–{max(values):.2f})"
    )


def print_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A Markdown table, as the README's benchmark table has it."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


@contextlib.contextmanager
def sandbox_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="smartspec-bench-"))
    try:
        yield root
    finally:
        left = reap(str(root))
        if left:
            print(f"warning: reaped leftovers: {left}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    ap.add_argument("--runs", type=int, default=5, help="runs per side for (1)/(2) (default 5)")
    ap.add_argument("--scale", type=int, default=5, help="workspaces for (5) (default 5)")
    ap.add_argument("--gui-runs", type=int, default=3, help="cold starts for (4) (default 3)")
    args = ap.parse_args(argv)
    opencode = find_test_opencode()
    if not opencode:
        print("error: the real opencode is needed (bash scripts/setup-tests, or put it on PATH)")
        return 1
    rows: list[Row] = []
    print(f"machine: {machine()}", flush=True)
    print(f"opencode: {opencode}", flush=True)
    with sandbox_dir() as root:
        bench = Bench(root, opencode)
        try:
            ws = bench.workspace("click")
            print("(1)/(2) warm-up …", flush=True)
            bench.ours_start_stop(ws)
            bench.bare_start(ws)
            ours, bare, stops, left = [], [], [], []
            for i in range(args.runs):
                r, s, n = bench.ours_start_stop(ws)
                b = bench.bare_start(ws)
                print(f"  run {i + 1}: ours {r:.2f} s, bare {b:.2f} s, stop {s:.2f} s", flush=True)
                ours.append(r)
                bare.append(b)
                stops.append(s)
                left.append(n)
            ratio = statistics.median(ours) / statistics.median(bare)
            rows.append(
                Row(
                    "1",
                    "click→ready (start until healthy)",
                    fmt_s(ours),
                    fmt_s(bare),
                    f"ratio {ratio:.2f}× (goal ≤ 1.10×)",
                )
            )
            rows.append(
                Row(
                    "2",
                    "stop (until stopped) / processes left",
                    f"{fmt_s(stops)} / {max(left)} left",
                    "",
                    "goal ≤ 2 s, 0 left",
                )
            )
            rows.append(bench_gui_event_loop_gap(bench))
            if gui_available():
                print("(4) app cold start …", flush=True)
                try:
                    shown, peak = cold_start(root, bench.env, args.gui_runs)
                    idle = idle_rss(root, bench.env)
                    rows.append(
                        Row(
                            "4",
                            "app cold start to window shown / idle RSS after 5 s",
                            f"{statistics.median(shown):.0f} ms (n={len(shown)}) / "
                            f"{idle:.0f} MB (peak to shown {statistics.median(peak):.0f} MB)",
                            "",
                            "goals ≤ 1.5 s, ≤ 150 MB",
                        )
                    )
                except RuntimeError as e:
                    rows.append(Row("4", "app cold start to window shown", f"failed: {e}"))
            else:
                print("(4) skipped: smartspec_desktop.ui.app does not exist yet", flush=True)
                rows.append(
                    Row(
                        "4",
                        "app cold start to window shown / RSS",
                        "skipped: smartspec_desktop.ui.app does not exist yet",
                    )
                )
            print(f"(5) {args.scale} workspaces at once …", flush=True)
            total, srv, sup, failed = bench.scale(args.scale)
            per = ", ".join(f"{x:.0f}" for x in srv)
            rows.append(
                Row(
                    "5",
                    f"{args.scale} workspaces started together",
                    f"{total:.2f} s total; server RSS {per} MB; supervisor "
                    f"{statistics.median(sup) if sup else 0:.0f} MB each",
                    "",
                    f"{failed} failed",
                )
            )
        finally:
            bench.close()
    print("(6) the gateway broker …", flush=True)
    from tests.bench import broker as broker_bench

    for measure, via, direct, note in broker_bench.rows():
        rows.append(Row("6", measure, via, direct, note))
    print("(7) idle servers sleep …", flush=True)
    from tests.bench import idle as idle_bench

    for measure, mine, other, note in idle_bench.rows(args.runs, args.scale):
        rows.append(Row("7", measure, mine, other, note))
    print("(8) remote workspace over SSH vs local …", flush=True)
    from tests.bench import remote as remote_bench

    for measure, mine, other, note in remote_bench.rows(args.runs):
        rows.append(Row("8", measure, mine, other, note))
    print()
    print_table(
        ["#", "measure", "SmartSpec Desktop", "bare `opencode serve`", "note"],
        [(r.number, r.measure, r.ours, r.bare, r.note) for r in rows],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
