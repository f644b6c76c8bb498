"""A remote server's memory and CPU (issue 15): the host's wrapper samples the server's tree
from /proc (:data:`scripts.USAGE_AWK`), the supervisor turns the lines into ``<exit
file>.usage`` (``_remote_lines``), and usage.py reads that file without any ssh: unknown (not
0) when it is missing, stale or about another remote process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from smartspec_desktop.core.process.supervisor import _remote_lines
from smartspec_desktop.core.remote import engine, scripts
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.core.servers.usage import (
    Usage,
    UsageSampler,
    format_usage,
    memory_text,
    read_remote_usage,
    remote_usage_file,
    total,
)


def _sample(root: int) -> str:
    """One line of the wrapper's sampler for ``root`` (the same sh and awk as on a host)."""
    script = (
        'read -r up rest < /proc/uptime; cat /proc/[0-9]*/stat 2>/dev/null | awk -v r="$1" '
        '-v pg="$(getconf PAGESIZE)" -v hz="$(getconf CLK_TCK)" -v up="$up" -v every=5 '
        '-v mark="[smartspec remote]" "$2"'
    )
    r = subprocess.run(
        ["sh", "-c", script, "sh", str(root), scripts.USAGE_AWK],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.strip()


def test_the_hosts_sampler_sums_the_servers_tree_as_psutil_does(tmp_path: Path) -> None:
    # A tree: a parent (with a space and a parenthesis in its name) holding 40 MB, a child
    # holding 60 MB and burning CPU.
    ready = tmp_path / "ready"
    code = (
        "import os, sys, time\n"
        "b = bytearray(40 * 1024 * 1024)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "if os.fork() == 0:\n"
        "    c = bytearray(60 * 1024 * 1024)\n"
        "    for i in range(0, len(c), 4096): c[i] = 1\n"
        "    open(sys.argv[1], 'w').close()\n"
        "    end = time.time() + 60\n"
        "    while time.time() < end: pass\n"
        "    os._exit(0)\n"
        "time.sleep(60)\n"
    )
    odd = tmp_path / "srv (x) y"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", code, str(ready)])
    try:
        root = psutil.Process(proc.pid)
        end = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < end, "the test tree did not grow"
            time.sleep(0.1)
        tree = [root, *root.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree)
        assert len(tree) == 2 and rss > 100 * 1024 * 1024
        first = _sample(proc.pid)
        fields = dict(w.split("=", 1) for w in first.split()[3:])
        assert first.startswith(f"[smartspec remote] usage pid={proc.pid} procs=2 ")
        assert abs(int(fields["rss_kb"]) * 1024 - rss) < 8 * 1024 * 1024, (first, rss)

        # The supervisor's side: the first line gives memory, the next one the CPU share.
        usage_file = tmp_path / "srv.json.usage"
        link_lines: list[str] = []
        on_line = _remote_lines(link_lines.append, usage_file)
        assert on_line(first) is True  # kept in the file, not in the log
        data = json.loads(usage_file.read_text())
        assert data["pid"] == proc.pid and data["processes"] == 2 and data["every"] == 5
        assert data["cpu_percent"] is None and abs(data["rss_mb"] * 1024 * 1024 - rss) < 8e6

        def cpu_seconds() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in tree)

        before, began = cpu_seconds(), time.monotonic()
        time.sleep(1.5)
        on_line(_sample(proc.pid))
        share = (cpu_seconds() - before) / (time.monotonic() - began) * 100
        data = json.loads(usage_file.read_text())
        # What psutil saw over (nearly) the same time; the child spins, so it is well above 0.
        assert data["cpu_percent"] is not None and share > 5, (data, share)
        assert abs(data["cpu_percent"] - share) < 15 + share / 5, (data, share)
        assert on_line("INFO server listening on http://127.0.0.1:1") is False
        assert link_lines == ["INFO server listening on http://127.0.0.1:1"]
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True):
            p.kill()
        proc.kill()
        proc.wait()
    assert _sample(proc.pid) == ""  # gone: no line at all


def _remote_record(tmp_path: Path, remote_pid: int = 4242) -> ServerRecord:
    me = psutil.Process()
    return ServerRecord(
        server_id="srv_r",
        workspace_path="ssh://devbox/home/me/p",
        status=ServerStatus.RUNNING,
        created_at="2026-12-01T00:00:00+00:00",
        port=1,
        url="http://127.0.0.1:1",
        supervisor_pid=me.pid,
        supervisor_create_time=me.create_time(),
        exit_file=str(tmp_path / "srv_r.json"),
        host="devbox",
        remote_pid=remote_pid,
    )


def _write(rec: ServerRecord, **kw: object) -> None:
    data: dict[str, object] = {
        "pid": 4242,
        "processes": 3,
        "rss_mb": 412.5,
        "cpu_percent": 1.5,
        "every": 5,
    }
    data |= {"at": time.time()} | kw
    remote_usage_file(rec.exit_file).write_text(json.dumps(data))


def test_a_remote_servers_figures_are_the_hosts_and_unknown_when_missing_or_stale(
    tmp_path: Path,
) -> None:
    rec = _remote_record(tmp_path)
    sampler = UsageSampler()
    # No sample yet: unknown, not 0 (the local supervisor and ssh are not the server).
    unknown = sampler.sample([rec])["srv_r"]
    assert unknown.rss_mb is None and unknown.cpu_percent is None and unknown.host == "devbox"
    assert unknown.public() == {"rss_mb": None, "cpu_percent": None, "usage_host": "devbox"}
    assert format_usage(unknown) == "? MB · CPU … on devbox"
    assert memory_text(unknown) == "? MB on host"

    _write(rec)
    got = sampler.sample([rec])["srv_r"]
    assert got == Usage(rss_mb=412.5, cpu_percent=1.5, processes=3, host="devbox")
    assert got.public() == {"rss_mb": 412.5, "cpu_percent": 1.5, "usage_host": "devbox"}
    assert format_usage(got) == "412 MB · CPU 1.5 % on devbox"
    assert memory_text(got) == "412 MB on host"
    assert UsageSampler().sample_settled([rec], wait=5.0)["srv_r"] == got  # no waiting for it

    _write(rec, at=time.time() - 60)  # three intervals and 15 s old: stale
    assert read_remote_usage(rec) is None
    _write(rec, every=30, at=time.time() - 60)  # a slower sampler: still fresh
    assert read_remote_usage(rec) is not None
    _write(rec, pid=999)  # an earlier connection's server
    assert read_remote_usage(rec) is None
    remote_usage_file(rec.exit_file).write_text("{not json")
    assert read_remote_usage(rec) is None
    _write(rec, rss_mb="lots")
    assert read_remote_usage(rec) is None

    # The total counts what is known; unknown figures are not zeros.
    local = Usage(rss_mb=300.0, cpu_percent=2.0, processes=2)
    both = total([local, unknown])
    assert (both.rss_mb, both.cpu_percent) == (300.0, 2.0)
    assert total([unknown]).rss_mb is None


def test_a_stopped_remote_server_has_no_figures(tmp_path: Path) -> None:
    rec = _remote_record(tmp_path)
    rec.supervisor_pid, rec.supervisor_create_time = 0, 0.0  # nothing runs here any more
    _write(rec)
    gone = UsageSampler().sample([rec])["srv_r"]
    assert gone.processes == 0 and format_usage(gone) == ""


@pytest.mark.parametrize(
    ("value", "expected"), [("", "5"), ("1", "1"), ("0", "0"), ("0.1", "0.5"), ("x", "5")]
)
@pytest.mark.allow_log(r"core\.remote\.engine: ignoring SMARTSPEC_REMOTE_USAGE_SECONDS", reason="x")
def test_the_sampling_interval(value: str, expected: str) -> None:
    assert engine.usage_seconds({engine.USAGE_ENV: value}) == expected
    assert engine.usage_seconds(None) == "5"


def _serve_wrapper(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The host's wrapper (:data:`scripts.SERVE`) with ``args``, given its handshake on stdin,
    which stays open as the ssh channel does."""
    proc = subprocess.Popen(
        ["sh", "-c", scripts.SERVE, "smartspec", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"OPENCODE_SERVER_PASSWORD=pw\nSMARTSPEC_BROKER_TOKEN=t\n\n")
    proc.stdin.flush()
    return proc


def test_the_wrapper_samples_while_the_server_runs_and_ends_with_it(tmp_path: Path) -> None:
    """The real wrapper with a stand-in server: its first sample comes at once, and when the
    server ends the wrapper's output closes at once too, although the sampler was asleep for
    20 s and the channel's stdin is still open (its sleep holds no stdout, so the ssh session
    would end with the server)."""
    fake = tmp_path / "opencode"
    fake.write_text("#!/bin/sh\nsleep 2\nexit 0\n")
    fake.chmod(0o755)
    folder = tmp_path / "ws"
    folder.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    args = [str(folder), "31000", "31001", str(fake), "srv_t", "20"]
    proc = _serve_wrapper(args, env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        began = time.monotonic()
        out = proc.stdout.read().decode()  # to EOF
        took = time.monotonic() - began
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
    ((pid, _start),) = engine.IDENTITY.findall(out)
    usage = [ln for ln in out.splitlines() if " usage " in ln]
    assert len(usage) == 1 and usage[0].startswith(f"[smartspec remote] usage pid={pid} ")
    assert " every=20" in usage[0]
    assert took < 12, f"the output stayed open {took:.1f} s after the server ended"


def test_a_wrapper_ended_by_a_signal_takes_its_sampler_along(tmp_path: Path) -> None:
    """The channel closes and sshd signals the wrapper: its sampler (asleep for 20 s, holding
    the channel's stdout) goes with it, so the session ends at once, not 20 s later."""
    fake = tmp_path / "opencode"
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    (tmp_path / "ws").mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    args = [str(tmp_path / "ws"), "31000", "31001", str(fake), "srv_s", "20"]
    proc = _serve_wrapper(args, env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        seen = b""
        while b" usage " not in seen:  # the sampler took its first sample and sleeps now
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        began = time.monotonic()
        proc.stdin.close()  # the channel closes …
        proc.terminate()  # … and the wrapper is told to go
        rest = proc.stdout.read()  # to EOF: every holder of the channel's stdout is gone
        took = time.monotonic() - began
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.stdout.close()
    assert b" usage " not in rest
    assert took < 12, f"the output stayed open {took:.1f} s after the wrapper ended"
