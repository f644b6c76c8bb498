"""The supervisor's ``--broker`` mode with a stand-in child, and bounded output (F12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from smartspec_desktop.core.broker.payload import broker_payload
from smartspec_desktop.core.process.supervisor import LOG_BACKUPS, LOG_MAX_BYTES, supervised_command
from tests.backend_standin import BackendStandIn
from tests.conftest import ROOT, reap

pytestmark = pytest.mark.integration

TOKEN = "server-token-" + "t" * 30
CONTROL = "control-token-" + "c" * 30
PASSWORD = "server-password-" + "p" * 20

# The child: reports its env, then prints a line of ``BIG`` bytes, then waits to be stopped.
CHILD = r"""
import json, os, sys, time
with open(sys.argv[1], "w") as f:
    json.dump(dict(os.environ), f)
sys.stdout.write("hello " + os.environ.get("SMARTSPEC_BROKER_TOKEN", "") + "\n")
big = int(sys.argv[2])
chunk = "y" * 65536
for _ in range(big // 65536):
    sys.stdout.write(chunk)
sys.stdout.write("\nEND" + "MARK\n")
sys.stdout.flush()
while True:
    time.sleep(0.2)
"""


@dataclass
class Supervised:
    sup: subprocess.Popen[bytes]
    hello: dict[str, object]
    log: Path
    env_dump: Path


Start = Callable[..., Supervised]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    started: list[subprocess.Popen[bytes]] = []

    def run(
        key: str,
        upstream: str,
        *,
        big: int = 0,
        payload: bytes | None = None,
        broker: bool = True,
    ) -> Supervised:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSPEC_")}
        env["PYTHONPATH"] = str(ROOT)
        env["OPENCODE_SERVER_PASSWORD"] = PASSWORD
        env_dump = tmp_path / "child-env.json"
        log = tmp_path / "logs" / "server.log"
        child = [sys.executable, "-c", CHILD, str(env_dump), str(big)]
        cmd = supervised_command(
            child, log_path=log, exit_file=tmp_path / "exit.json", cwd=str(tmp_path), broker=broker
        )
        sup = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(sup)
        assert sup.stdin is not None and sup.stdout is not None
        if broker:
            sup.stdin.write(
                payload
                if payload is not None
                else broker_payload(
                    key=key,
                    token=TOKEN,
                    control_token=CONTROL,
                    upstream=upstream,
                    meter_file=tmp_path / "state" / "usage.jsonl",
                    budget_file=tmp_path / "state" / "budget.json",
                    redact=[PASSWORD],
                )
            )
        sup.stdin.close()
        hello = json.loads(sup.stdout.readline())
        sup.stdout.close()
        return Supervised(sup, hello, log, env_dump)

    yield run
    for sup in started:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGTERM)
            sup.wait(10)
    assert not reap(str(tmp_path))


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_size == 0:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_broker_mode_keeps_the_key_out_of_every_process(
    start: Start, backend: BackendStandIn, tmp_path: Path
) -> None:
    backend.add_user("a@example.com", "pw")
    key = backend.issue_api_key("a@example.com")
    s = start(key, backend.url)
    port = s.hello["broker_port"]
    assert isinstance(port, int) and isinstance(s.hello["pid"], int)
    _wait_for(s.env_dump)
    time.sleep(0.3)
    child_env = json.loads(s.env_dump.read_text())
    assert child_env["SMARTSPEC_BROKER_URL"] == f"http://127.0.0.1:{port}/v1/opencode"
    assert child_env["SMARTSPEC_BROKER_TOKEN"] == TOKEN
    assert "SMARTSPEC_API_KEY" not in child_env
    server_pid = s.hello["pid"]
    assert isinstance(server_pid, int)
    for pid in (s.sup.pid, server_pid):
        p = psutil.Process(pid)
        assert key not in json.dumps(p.environ()), f"key in environ of {pid}"
        assert key not in " ".join(p.cmdline()), f"key in cmdline of {pid}"
    assert CONTROL not in json.dumps(psutil.Process(server_pid).environ())
    # The child's token works, the call reaches the backend with the real key.
    r = httpx.get(
        f"http://127.0.0.1:{port}/v1/opencode/models",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200
    assert backend.requests[-1].bearer_token == key
    r = httpx.get(
        f"http://127.0.0.1:{port}/_control/usage",
        headers={"Authorization": f"Bearer {CONTROL}"},
        timeout=10,
    )
    assert r.json()["calls"] == 1
    # Stop: the broker goes with the server.
    os.killpg(s.sup.pid, signal.SIGTERM)
    s.sup.wait(15)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_control/health", timeout=2)
    log_text = s.log.read_text()
    assert "hello ***" in log_text
    assert "gateway broker on" in log_text and "broker: GET /models → 200" in log_text
    for secret in (key, TOKEN, CONTROL, PASSWORD):
        assert secret not in log_text
    for f in (tmp_path / "state").iterdir():
        assert key not in f.read_text()


def test_no_payload_is_a_clear_start_error(start: Start, tmp_path: Path) -> None:
    s = start("", "http://127.0.0.1:9", payload=b"")
    assert "broker could not start: no broker payload arrived on stdin" in str(s.hello["error"])
    assert s.sup.wait(10) == 126


@pytest.mark.parametrize("broker", [False, True])
def test_a_400_mb_line_stays_within_the_log_bound(
    start: Start, backend: BackendStandIn, tmp_path: Path, broker: bool
) -> None:
    backend.add_user("a@example.com", "pw")
    size = 400 * 1024 * 1024
    s = start(backend.issue_api_key("a@example.com"), backend.url, big=size, broker=broker)
    sup = psutil.Process(s.sup.pid)
    peak = 0
    deadline = time.monotonic() + 120
    while "ENDMARK" not in s.log.read_text(errors="replace"):
        peak = max(peak, sup.memory_info().rss)
        assert time.monotonic() < deadline, "the supervisor did not get through the big line"
        time.sleep(0.1)
    assert peak < 200 * 1024 * 1024, f"supervisor RSS reached {peak >> 20} MB"
    files = sorted(s.log.parent.iterdir())
    assert len(files) <= LOG_BACKUPS + 1
    assert all(f.stat().st_size <= LOG_MAX_BYTES for f in files)
    text = s.log.read_text()
    assert "bytes cut]" in text and str(size - 64 * 1024) in text
