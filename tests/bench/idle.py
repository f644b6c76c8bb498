"""Benchmark (7): idle servers sleep (issue 15).

a. Wake of a sleeping server vs a cold start: ``ServerManager.start`` until healthy, on a
   workspace whose server the supervisor put to sleep (``SMARTSPEC_IDLE_MINUTES=0.05``) vs on one
   with no server at all (medians of ``runs`` each, alternating, after one warm-up).
b. RSS of ``n`` idle workspaces' process trees (supervisor + server + children) before and after
   their sleep timeout (``SMARTSPEC_IDLE_MINUTES=0.5``); the goal is 0 MB for the sleeping ones.

``python -m tests.bench.idle`` runs only this one (the real ``opencode`` needed, as for run.py).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from smartspec_desktop.core.process.idle import IDLE_ENV
from smartspec_desktop.core.servers.registry import SLEEPING
from smartspec_desktop.core.servers.usage import UsageSampler
from tests.bench.run import Bench, fmt_s, print_table, sandbox_dir
from tests.conftest import find_test_opencode


def wait_sleeping(bench: Bench, workspaces: list[str], timeout: float = 180.0) -> float:
    """Seconds until every workspace's server sleeps (the supervisor exited, too)."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [r for r in bench.core.servers.refresh() if r.workspace_path in workspaces]
        asleep = [r for r in records if r.status == SLEEPING]
        if len(asleep) == len(workspaces):
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise RuntimeError(f"the servers did not all fall asleep within {timeout:.0f} s")


def wake_vs_cold(bench: Bench, runs: int) -> tuple[list[float], list[float]]:
    bench.env[IDLE_ENV] = "0.05"  # the servers' environment
    sleepy, cold = bench.workspace("sleepy"), bench.workspace("cold")
    bench.use_private_ports(3)
    wake_s: list[float] = []
    cold_s: list[float] = []
    servers = bench.core.servers
    ws_sleepy = servers.start(sleepy).record.workspace_path  # normalised
    for i in range(runs + 1):
        wait_sleeping(bench, [ws_sleepy])

        def timed_wake() -> float:
            t0 = time.perf_counter()
            servers.start(sleepy)  # wakes it
            return time.perf_counter() - t0

        def timed_cold() -> float:
            t0 = time.perf_counter()
            servers.start(cold)
            took = time.perf_counter() - t0
            servers.stop(cold)
            return took

        # Alternate which goes first, so neither always pays for the other.
        if i % 2:
            wake, cold_start = timed_wake(), timed_cold()
        else:
            cold_start, wake = timed_cold(), timed_wake()
        if i:  # the first pair is a warm-up
            wake_s.append(wake)
            cold_s.append(cold_start)
            print(f"  run {i}: wake {wake:.2f} s, cold start {cold_start:.2f} s", flush=True)
    servers.stop_all(grace=3.0)
    return wake_s, cold_s


def rss_before_after(bench: Bench, n: int) -> tuple[list[float], list[float], float, int]:
    """(RSS MB per idle server before, after the timeout; seconds until all slept; processes
    left of the sleeping servers' trees)."""
    bench.env[IDLE_ENV] = "0.5"
    workspaces = [bench.workspace(f"idle-{i}") for i in range(n)]
    bench.use_private_ports(n + 1)
    normalised: list[str] = []
    lock = threading.Lock()

    def one(ws: str) -> None:
        rec = bench.core.servers.start(ws).record
        with lock:
            normalised.append(rec.workspace_path)

    threads = [threading.Thread(target=one, args=(ws,)) for ws in workspaces]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(2.0)  # settled, still well inside the 30 s timeout
    sampler = UsageSampler()
    records = bench.core.servers.refresh()
    before = [u.rss_mb or 0.0 for u in sampler.sample(records).values()]
    slept_after = wait_sleeping(bench, normalised)
    # A supervisor exits just after writing its record: give the trees a moment to be gone.
    deadline = time.monotonic() + 10
    while True:
        records = bench.core.servers.refresh()
        after_usage = sampler.sample(records)
        if not any(u.processes for u in after_usage.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    bench.core.servers.stop_all(grace=3.0)
    after = [u.rss_mb or 0.0 for u in after_usage.values()]
    left = sum(u.processes for u in after_usage.values())
    return before, after, slept_after, left


def rows(runs: int = 5, n: int = 5) -> list[tuple[str, str, str, str]]:
    """(measure, ours, compared with, note) rows for ``tests.bench.run``'s table."""
    opencode = find_test_opencode()
    if not opencode:
        return [("idle servers sleep", "skipped: no opencode", "", "")]
    with sandbox_dir() as root:
        bench = Bench(root, opencode)
        try:
            print("(7a) wake of a sleeping server vs a cold start …", flush=True)
            wake, cold = wake_vs_cold(bench, runs)
            print(f"(7b) RSS of {n} idle workspaces before/after their sleep timeout …", flush=True)
            before, after, slept, left = rss_before_after(bench, n)
        finally:
            bench.close()
    ratio = statistics.median(wake) / statistics.median(cold)
    return [
        (
            "wake of a sleeping server (start until healthy)",
            fmt_s(wake),
            f"cold start {fmt_s(cold)}",
            f"ratio {ratio:.2f}×",
        ),
        (
            f"RSS of {n} idle workspaces before / after their sleep timeout (30 s)",
            f"{sum(before):.0f} MB ({', '.join(f'{x:.0f}' for x in before)}) / "
            f"{sum(after):.0f} MB, {left} processes left",
            "",
            f"goal 0 MB asleep; all asleep {slept:.0f} s after measuring",
        ),
    ]


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print_table(["measure", "SmartSpec Desktop", "compared with", "note"], rows(runs))
