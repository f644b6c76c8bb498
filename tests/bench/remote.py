"""Benchmark (8): start→ready of a remote workspace (through SSH to this machine) vs a local one
(issue 15).

The remote host is the tests' own sshd on 127.0.0.1 with a throw-away account
(``tests/remote_host.py``; needs root and openssh-server, else the row says skipped): the same
machine, so the difference is what the remote path adds — the probe over ssh (folder, OpenCode
version), the connection with its two forwards, the settings over the channel and the health
check through the forward. ``ServerManager.start`` until healthy, then ``stop`` (median of
``runs`` each, alternating, after one warm-up of each); also the stop time of the remote one.

``python -m tests.bench.remote [RUNS]`` runs only this one (the real ``opencode`` needed).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time

from tests.bench.run import Bench, fmt_s, print_table, sandbox_dir
from tests.conftest import find_test_opencode
from tests.remote_host import skip_reason, start_host


def rows(runs: int = 5) -> list[tuple[str, str, str, str]]:
    opencode = find_test_opencode()
    reason = skip_reason() or ("" if opencode else "no opencode")
    if reason or not opencode:
        return [("remote workspace start→ready", f"skipped: {reason}", "", "")]
    gen = start_host()
    host = next(gen)
    try:
        host.link_opencode(opencode)
        with sandbox_dir() as root:
            bench = Bench(root, opencode)
            bench.env["SMARTSPEC_SSH_CONFIG"] = str(host.ssh_config)
            try:
                remote_ws = host.address(host.workspace("bench"))
                local_ws = bench.workspace("local")
                remote_s: list[float] = []
                local_s: list[float] = []
                stop_s: list[float] = []
                servers = bench.core.servers

                def timed(ws: str) -> tuple[float, float]:
                    bench.use_private_ports(1)
                    t0 = time.perf_counter()
                    servers.start(ws)
                    ready = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    servers.stop(ws)
                    return ready, time.perf_counter() - t1

                for i in range(runs + 1):
                    if i % 2:
                        (r, st), (lo, _) = timed(remote_ws), timed(local_ws)
                    else:
                        (lo, _), (r, st) = timed(local_ws), timed(remote_ws)
                    if i:  # the first pair is a warm-up
                        remote_s.append(r)
                        local_s.append(lo)
                        stop_s.append(st)
                        print(f"  run {i}: remote {r:.2f} s, local {lo:.2f} s", flush=True)
                left = len(host.wait_no_servers(timeout=10))
            finally:
                bench.close()
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)
    ratio = statistics.median(remote_s) / statistics.median(local_s)
    return [
        (
            "remote workspace (ssh to this machine) start→ready / stop",
            f"{fmt_s(remote_s)} / stop {fmt_s(stop_s)}, {left} remote processes left",
            f"local {fmt_s(local_s)}",
            f"ratio {ratio:.2f}×",
        )
    ]


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print_table(["measure", "SmartSpec Desktop", "compared with", "note"], rows(runs))
