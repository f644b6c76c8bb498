"""Benchmark (6): a streamed chat answer through the gateway broker vs straight to the stand-in.

Time to first byte (request sent → first body byte) and total time of a streamed answer, small
(one short text) and ~10 MB (in 3 big events, and in 40,000 small ones), direct and broker calls
interleaved in the same run (in ABBA order, so neither side always runs right after the other's
clean-up); medians, the added TTFB and the throughput lost (from the medians, and run by run: the
median of each broker call's loss against the direct call made next to it). Both sides use the
same client: one kept-alive ``http.client`` connection per side, reading what has arrived (up to
1 MB) whatever its chunks, as OpenCode keeps its connection to the provider alive (the broker
keeps its own to the backend). Also the CPU time the broker and the stand-in spent per call
(load-independent: the figure to compare between machines) and the load average during the run:
the stand-in runs on the same cores as the broker here, so on a busy machine the broker's CPU is
taken from the stand-in and the throughput figure reflects the load as much as the broker.
Goals (issue 9): ≤ 2 ms added to TTFB (median), ≤ 1 % throughput lost.

``python -m tests.bench.broker`` runs only this one (no ``opencode`` needed).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from smartspec_desktop.core.broker.body import UpstreamBody

ROOT = Path(__file__).resolve().parents[2]

MODEL = "openai/gpt-4o-mini"


@dataclass
class Figures:
    label: str
    direct_ttfb: float  # ms, median
    broker_ttfb: float
    direct_total: float  # ms, median
    broker_total: float
    size: int  # bytes of the answer
    broker_cpu: float = 0.0  # ms of CPU (user + system) the broker process spent per call
    standin_cpu: float = 0.0  # ms of CPU the stand-in spent per call (both sides' calls)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    #: Median over the runs of each run's own loss (its broker call against its direct call,
    #: made one right after the other): steadier than the ratio of the medians when the load
    #: changes during the run.
    paired_lost: float = 0.0

    @property
    def added_ttfb(self) -> float:
        return self.broker_ttfb - self.direct_ttfb

    @property
    def throughput_lost(self) -> float:
        """Fraction of throughput lost through the broker (negative: faster)."""
        return 1.0 - self.direct_total / self.broker_total


def _call(
    conn: http.client.HTTPConnection, path: str, token: str, body: bytes
) -> tuple[float, float, int]:
    """One streamed call on ``conn`` (kept alive): (TTFB ms, total ms, body bytes).

    The body is read as it arrives, whatever its chunks (``UpstreamBody``, 1 MB reads), as
    OpenCode's fetch does: ``http.client``'s ``read1`` returns at most one HTTP chunk a call, so
    an answer of many small chunks cost the client a Python read per chunk straight from the
    stand-in, but not through the broker (which sends what it read at once as one chunk)."""
    t0 = time.perf_counter()
    conn.request(
        "POST",
        path,
        body=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    reader = UpstreamBody(resp, _BUFFER)
    t1 = 0.0
    size = 0
    while spans := reader.read():
        if not t1:
            t1 = time.perf_counter()
        size += sum(end - start for start, end in spans)
    t2 = time.perf_counter()
    resp.close()
    if resp.status != 200 or size == 0 or not reader.complete:
        raise RuntimeError(f"HTTP {resp.status}")
    return (t1 - t0) * 1000, (t2 - t0) * 1000, size


_BUFFER = bytearray(1 << 20)


def _cpu_ms(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system) * 1000


# The stand-in and the broker each run in a process of their own, as in real use (the broker
# lives in the supervisor): in one process they would fight over the GIL and the figures
# would measure that instead.
_STANDIN = """
import sys
from tests.backend_standin import BackendStandIn, Text
b = BackendStandIn().start()
b.rate_limit_per_minute = None
b.add_user("bench@example.com", "pw", credits=1e12)
b.default_step = Text("x" * int(sys.argv[1]), pieces=int(sys.argv[2]))
print(b.port, b.issue_api_key("bench@example.com"), flush=True)
sys.stdin.read()
"""
_BROKER = """
import sys, tempfile
from pathlib import Path
from smartspec_desktop.core.broker.server import Broker, BrokerConfig
tmp = Path(tempfile.mkdtemp())
key = sys.stdin.readline().strip()
b = Broker(BrokerConfig(key=key, token="bench-token", control_token="bench-control",
    upstream=sys.argv[1], meter_file=tmp / "usage.jsonl", budget_file=tmp / "budget.json")).start()
print(b.port, flush=True)
sys.stdin.read()
"""


def _spawn(code: str, *args: str, stdin_line: str = "") -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert p.stdin is not None and p.stdout is not None
    if stdin_line:
        p.stdin.write(stdin_line + "\n")
        p.stdin.flush()
    return p, p.stdout.readline().strip()


def measure(text_size: int, runs: int, label: str, pieces: int = 3) -> Figures:
    """Streamed answers of ``text_size`` characters in ``pieces`` content chunks (events)."""
    standin, line = _spawn(_STANDIN, str(text_size), str(pieces))
    port_s, key = line.split()
    backend_port = int(port_s)
    broker, broker_line = _spawn(_BROKER, f"http://127.0.0.1:{backend_port}", stdin_line=key)
    broker_port = int(broker_line)
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    path = "/v1/opencode/chat/completions"
    direct = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=60)
    via = http.client.HTTPConnection("127.0.0.1", broker_port, timeout=60)
    sides = {"direct": (direct, key), "broker": (via, "bench-token")}
    ttfb: dict[str, list[float]] = {"direct": [], "broker": []}
    total: dict[str, list[float]] = {"direct": [], "broker": []}
    sizes: dict[str, int] = {}
    try:
        for _ in range(3):  # warm-up (and the kept-alive connections opened)
            for conn, token in sides.values():
                _call(conn, path, token, body)
        broker_proc, standin_proc = psutil.Process(broker.pid), psutil.Process(standin.pid)
        load0 = os.getloadavg()[0]
        cpu0 = _cpu_ms(broker_proc), _cpu_ms(standin_proc)
        for i in range(runs):
            # ABBA: direct, broker, broker, direct, … (no side always goes first)
            for side in ("direct", "broker") if i % 2 == 0 else ("broker", "direct"):
                conn, token = sides[side]
                t, whole, sizes[side] = _call(conn, path, token, body)
                ttfb[side].append(t)
                total[side].append(whole)
            if abs(sizes["broker"] - sizes["direct"]) > 64:  # chunk ids differ by a few bytes
                raise RuntimeError(
                    f"sizes differ: {sizes['direct']} direct vs {sizes['broker']} via broker"
                )
        cpu1 = _cpu_ms(broker_proc), _cpu_ms(standin_proc)
        load1 = os.getloadavg()[0]
    finally:
        direct.close()
        via.close()
        for p in (broker, standin):
            assert p.stdin is not None
            p.stdin.close()
            p.terminate()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()
    med = statistics.median
    return Figures(
        label,
        med(ttfb["direct"]),
        med(ttfb["broker"]),
        med(total["direct"]),
        med(total["broker"]),
        sizes["direct"],
        paired_lost=med(1 - d / b for d, b in zip(total["direct"], total["broker"], strict=True)),
        broker_cpu=(cpu1[0] - cpu0[0]) / runs,
        standin_cpu=(cpu1[1] - cpu0[1]) / (2 * runs),
        load=(load0, load1),
    )


def run(small_runs: int = 200, big_runs: int = 30, many_runs: int = 8) -> list[Figures]:
    """The small answer, 10 MB in 3 events of 3.3 MB, and 10 MB in 40,000 events of ~260
    characters (closer to a real stream's many small events; the stand-in then spends most of
    its time per event, so it is slower and fewer runs fit)."""
    return [
        measure(40, small_runs, "small answer"),
        measure(10 * 1024 * 1024, big_runs, "~10 MB answer (3 events)"),
        measure(
            10 * 1024 * 1024, many_runs, "answer of 10 MB of text in 40,000 events", pieces=40_000
        ),
    ]


def rows(
    small_runs: int = 200, big_runs: int = 30, many_runs: int = 8
) -> list[tuple[str, str, str, str]]:
    """(measure, broker, direct, note) rows for ``tests.bench.run``'s table."""
    out = []
    for f in run(small_runs, big_runs, many_runs):
        if f.size < 1_000_000:  # per-call overhead; a throughput figure would mean nothing
            cost = f"total +{f.broker_total - f.direct_total:.2f} ms per call"
        else:
            cost = (
                f"total ×{f.broker_total / f.direct_total:.3f}, throughput lost "
                f"{100 * f.throughput_lost:.1f} % (goal ≤ 1 %), run by run "
                f"{100 * f.paired_lost:.1f} %"
            )
        out.append(
            (
                f"broker: streamed {f.label} ({f.size:,} bytes), TTFB / total",
                f"{f.broker_ttfb:.2f} ms / {f.broker_total:.1f} ms",
                f"{f.direct_ttfb:.2f} ms / {f.direct_total:.1f} ms",
                f"TTFB +{f.added_ttfb:.2f} ms (goal ≤ 2 ms); {cost}; CPU per call: broker "
                f"{f.broker_cpu:.1f} ms, stand-in {f.standin_cpu:.1f} ms; load average "
                f"{f.load[0]:.1f}→{f.load[1]:.1f} on {os.cpu_count()} cores",
            )
        )
    return out


if __name__ == "__main__":
    from tests.bench.run import print_table

    print_table(["measure", "through the broker", "straight to the stand-in", "note"], rows())
