"""The fault suite: kills, stolen ports, broken state, a hostile backend, broken opencode installs,
hostile workspaces. Each case checks what the user sees AND that nothing is left running or lost
(the sandbox fixture also fails a test whose processes outlive it).

Cases already covered end to end in tests/integration (marked ``faults`` there, not repeated here):
server SIGKILLed → crashed + restart, a reused pid is never killed, every preferred port busy,
half-written state file, opencode missing, backend down, bad keys (401), gateway 402/500/error
chunk without [DONE], missing/file workspaces, spaces and non-ASCII, the key absent from argv,
logs and state after a full run (test_cli_servers.py), no keyring backend (test_keyring.py).

Run alone: ``bash tests/run-tests -m faults``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from smartspec_desktop.core import ports
from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import BackendUnreachable, WorkspaceError
from smartspec_desktop.core.servers.preflight import normalize_workspace
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import MemoryStore
from smartspec_desktop.core.wiring import Core, build_core
from tests.conftest import Sandbox, server_processes

pytestmark = [pytest.mark.faults, pytest.mark.integration]


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture
def core(sandbox: Sandbox) -> Iterator[Core]:
    """The core in this process, wired like the CLI but with the sandbox's environment."""
    c = build_core(
        Paths.from_base(sandbox.data_dir), backend_url=sandbox.backend.url, store=MemoryStore()
    )
    c.credentials.session_key = sandbox.api_key
    c.servers.environ = sandbox.env
    try:
        yield c
    finally:
        c.servers.stop_all(grace=3.0)


def supervisors_of(root: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any("supervisor" in c or c == "--supervise" for c in cmd[:4]) and any(
            str(root) in c for c in cmd
        ):
            out.append(p)
    return out


def fake_opencode(folder: Path, body: str) -> Path:
    """A stand-in ``opencode`` (broken installs only): a shell script with ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "opencode"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def assert_nothing_spawned(box: Sandbox, ws: Path) -> None:
    assert not server_processes(ws)
    assert not supervisors_of(box.root)
    assert box.state().get("servers", {}) == {}


def cli_start_proc(box: Sandbox, ws: Path) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "smartspec_desktop",
        "--data-dir",
        str(box.data_dir),
        "--backend-url",
        box.backend.url,
        "start",
        str(ws),
        "--json",
    ]
    return subprocess.Popen(
        cmd, env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=box.root
    )


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.005) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------- the CLI killed mid-start


@pytest.mark.parametrize("moment", ["supervisor-spawned", "server-recorded"])
def test_cli_killed_mid_start_leaves_no_orphans(sandbox: Sandbox, moment: str) -> None:
    """SIGKILL the starting CLI right after it spawned the supervisor (before it could record
    the server's pid), or once the server is recorded but not yet healthy. The next run must
    adopt or reap what was left: no orphan, one working server."""
    ws = sandbox.workspace()
    cli = cli_start_proc(sandbox, ws)
    try:
        if moment == "supervisor-spawned":

            def spawned() -> bool:
                try:
                    kids = psutil.Process(cli.pid).children()
                except psutil.Error:
                    return False
                for k in kids:
                    try:
                        if "supervisor" in " ".join(k.cmdline()):
                            return True
                    except psutil.Error:  # e.g. the `opencode --version` check, a zombie
                        continue
                return False

            wait_for(spawned, 60, "the CLI to spawn the supervisor", interval=0.002)
            cli.send_signal(signal.SIGSTOP)  # freeze it inside the window this case is about
            (record,) = sandbox.state()["servers"].values()
            assert record["status"] == "starting" and record["pid"] == 0, record
        else:

            def recorded() -> bool:
                try:
                    sessions = sandbox.state().get("servers", {})
                except ValueError:
                    return False  # caught mid-write
                return any(s["pid"] and s["status"] == "starting" for s in sessions.values())

            wait_for(recorded, 60, "the server's pid to be recorded")
        cli.send_signal(signal.SIGKILL)
    finally:
        cli.kill()
        cli.communicate(timeout=30)

    # The next run: status reaps (or keeps a live start), start adopts or starts afresh.
    assert sandbox.cli("status").returncode == 0
    info = sandbox.cli_json("start", str(ws))
    assert info["status"] == "running"
    servers = server_processes(ws)
    assert [p.pid for p in servers] == [info["pid"]], "an orphaned server survived"
    assert len(supervisors_of(sandbox.root)) == 1
    assert sandbox.cli("stop", str(ws)).returncode == 0
    psutil.wait_procs(servers, timeout=10)
    assert not server_processes(ws) and not supervisors_of(sandbox.root)


def test_starting_record_of_a_dead_cli_never_kills_a_foreign_pid(sandbox: Sandbox) -> None:
    """A start whose CLI died, recorded with pids that now belong to another program."""
    ws = sandbox.workspace()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ctime = psutil.Process(victim.pid).create_time()
        state = sandbox.data_dir / "state"
        state.mkdir(parents=True, exist_ok=True)  # it holds the version cache
        base = {
            "workspace_path": str(ws),
            "status": "starting",
            "created_at": "2026-01-01T00:00:00+00:00",
            "port": 3799,
            "url": "http://127.0.0.1:3799",
            "owner_pid": victim.pid,
            "owner_create_time": ctime - 500,
            "exit_file": str(state / "exits" / "srv_x.json"),
        }
        records = {
            # the starter died before the server was spawned; its pid was reused
            "srv_a": dict(base, session_id="srv_a"),
            # server and supervisor pids reused by the victim
            "srv_b": dict(
                base,
                session_id="srv_b",
                pid=victim.pid,
                create_time=ctime - 1000,
                supervisor_pid=victim.pid,
                supervisor_create_time=ctime - 1000,
            ),
        }
        (state / "sessions.json").write_text(json.dumps({"version": 1, "sessions": records}))
        assert sandbox.cli_json("status") == []  # both records forgotten, nothing killed
        assert victim.poll() is None, "a process that is not ours was killed"
        assert sandbox.state()["servers"] == {}
    finally:
        victim.kill()
        victim.wait()


# -------------------------------------------------------------------------------------- ports


def test_port_stolen_between_discovery_and_bind_is_retried(
    sandbox: Sandbox, core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = sandbox.workspace()
    real_pick = ports.pick_port
    thief: list[socket.socket] = []

    def pick_then_steal(preferred: tuple[int, int], exclude: object = ()) -> tuple[int, bool]:
        port, in_range = real_pick(preferred, exclude)  # type: ignore[arg-type]
        if not thief:  # another program grabs the port right after we found it free
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be TIME_WAIT
            s.bind(("127.0.0.1", port))
            s.listen()
            thief.append(s)
        return port, in_range

    monkeypatch.setattr(ports, "pick_port", pick_then_steal)
    try:
        result = core.servers.start(str(ws))
        stolen = thief[0].getsockname()[1]
        assert result.record.status == "running"
        assert result.record.port != stolen
        r = httpx.get(
            result.record.url + "/global/health",
            auth=("opencode", core.servers.password(result.record)),
            timeout=5,
        )
        assert r.status_code == 200
        assert [p.pid for p in server_processes(ws)] == [result.record.pid]
        assert len(core.servers.list_servers()) == 1
        assert len(supervisors_of(sandbox.root)) == 1, "the failed attempt left a supervisor"
    finally:
        for s in thief:
            s.close()


# --------------------------------------------------------------------------------- state file


def test_damaged_state_file_is_survived(sandbox: Sandbox) -> None:
    state = sandbox.data_dir / "state"
    state.mkdir(parents=True, exist_ok=True)  # it holds the version cache
    for content in (b"", b"\x00\xff\xfe garbage \x80", b"[1, 2, 3]"):  # truncated, binary, list
        (state / "servers.json").write_bytes(content)
        r = sandbox.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [], content
        assert "unreadable" in r.stderr and "moved aside" in r.stderr
        # Started afresh: a valid, empty state was written back (a later start records into it;
        # test_corrupt_state_file_is_moved_aside starts a server after the same recovery).
        assert sandbox.state() == {"version": 2, "servers": {}}
    assert len(list(state.glob("servers.json.corrupt-*"))) >= 1  # kept for a bug report


@pytest.mark.parametrize("blocker", ["state-dir-is-a-file", "state-file-is-a-dir"])
def test_unwritable_state_fails_clearly_and_spawns_nothing(sandbox: Sandbox, blocker: str) -> None:
    # Root ignores chmod, so block writes with a file where a folder should be (and vice versa).
    ws = sandbox.workspace()
    sandbox.data_dir.mkdir(parents=True, exist_ok=True)  # holds config/ (the port range)
    if blocker == "state-dir-is-a-file":
        shutil.rmtree(sandbox.data_dir / "state")  # only the sandbox's version cache so far
        (sandbox.data_dir / "state").write_text("not a folder")
    else:
        (sandbox.data_dir / "state" / "servers.json").mkdir(parents=True)
    r = sandbox.cli("start", str(ws))
    assert r.returncode == 1
    assert r.stderr.startswith("error: Cannot "), r.stderr
    assert "writable" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not server_processes(ws) and not supervisors_of(sandbox.root)
    r = sandbox.cli("status")
    assert r.returncode == 1 and "writable" in r.stderr


# ------------------------------------------------------------------------------------ backend


def test_slow_backend_times_out_with_a_clear_message(sandbox: Sandbox, core: Core) -> None:
    ws = sandbox.workspace()
    core.servers.backend_factory = lambda url: BackendClient(url, timeout=1.0)
    sandbox.backend.delay_all(120)
    t0 = time.monotonic()
    with pytest.raises(BackendUnreachable) as ei:
        core.servers.start(str(ws))
    assert time.monotonic() - t0 < 60, "start waited for the 120 s answer"
    assert "did not answer in time" in ei.value.problem
    assert "backend is running" in ei.value.fix
    sandbox.backend.delay_all(0)
    assert_nothing_spawned(sandbox, ws)


def test_short_rate_limits_are_waited_out_with_or_without_retry_after(sandbox: Sandbox) -> None:
    """One start (a server is ~4 CPU-s): a 429 asking for 1 s, then two without Retry-After
    (backend-contract.md: the real 429 carries none), waited out with backoff."""
    ws = sandbox.workspace()
    sandbox.backend.force_429(1, retry_after=1)
    sandbox.backend.force_429(2)
    r = sandbox.cli("start", str(ws), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "running"
    statuses = [q.status for q in sandbox.backend.requests]
    assert statuses[:4] == [429, 429, 429, 200], statuses  # waited, then really retried
    assert "retrying in 60 s" not in r.stderr


def test_rate_limit_that_does_not_end_fails_clearly(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    sandbox.backend.force_429(1, retry_after=120)
    t0 = time.monotonic()
    r = sandbox.cli("start", str(ws))
    assert r.returncode == 1
    assert time.monotonic() - t0 < 60, "must not sleep through a long Retry-After"
    assert "Rate limited" in r.stderr and "120 s" in r.stderr
    assert_nothing_spawned(sandbox, ws)


# ----------------------------------------------------------------------------------- opencode


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('echo "1.2.3"', "1.2.3"),
        (
            'case "$1" in --version) echo 1.18.33;; *) echo "fatal: cannot open db" >&2; exit 3;; '
            "esac",
            "OpenCode exited during start-up (exit code 3): fatal: cannot open db",
        ),
    ],
    ids=["wrong-version", "exits-at-once"],
)
def test_broken_opencode_fails_clearly_and_spawns_nothing(
    sandbox: Sandbox, body: str, expected: str
) -> None:
    ws = sandbox.workspace()
    fake = fake_opencode(sandbox.root / "fakebin", body)
    env = dict(sandbox.env, PATH=f"{fake.parent}:/usr/bin:/bin")
    r = sandbox.cli("start", str(ws), env=env)
    assert r.returncode == 1
    assert expected in r.stderr, r.stderr
    assert any(line.startswith("error: ") for line in r.stderr.splitlines())
    assert_nothing_spawned(sandbox, ws)
    assert sandbox.api_key not in r.stderr


#: How the real opencode 1.18.33 failed when another one migrated its database at the same time.
MIGRATION_RACES = {
    "locked": 'echo "database is locked" >&2',
    # Seen with two `run --worktree` tasks at once on a loaded machine (parallel test workers).
    "create-table": "printf 'Failed query: \\n        CREATE TABLE `workspace` (\\n' >&2; "
    "echo '          `id` text PRIMARY KEY' >&2; echo 'params: ' >&2",
}


@pytest.mark.parametrize("race", sorted(MIGRATION_RACES))
def test_opencode_database_locked_at_start_is_retried(
    sandbox: Sandbox, opencode_bin: str, race: str
) -> None:
    """Two servers starting at once on a fresh install both migrate OpenCode's SQLite database
    and one exits with "database is locked", or with the failed ``CREATE TABLE`` of a migration
    the other one ran (both seen with the real opencode 1.18.33). A wrapper makes the first
    serve fail that way, then runs the real opencode."""
    ws = sandbox.workspace()
    marker = sandbox.root / "failed-once"
    fake = fake_opencode(
        sandbox.root / "fakebin",
        f'if [ "$1" = serve ] && [ ! -e "{marker}" ]; then touch "{marker}"; '
        f'echo "Error: Unexpected error" >&2; {MIGRATION_RACES[race]}; exit 1; fi\n'
        f'exec "{opencode_bin}" "$@"',
    )
    env = dict(sandbox.env, PATH=f"{fake.parent}:/usr/bin:/bin")
    r = sandbox.cli("start", str(ws), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert marker.exists(), "the wrapper never failed: the case was not exercised"
    info = json.loads(r.stdout)
    assert info["status"] == "running"
    assert [p.pid for p in server_processes(ws)] == [info["pid"]]
    assert len(supervisors_of(sandbox.root)) == 1


def test_opencode_that_is_not_executable_is_named(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    fake = fake_opencode(sandbox.root / "fakebin", "echo 1.18.33")
    fake.chmod(0o644)
    assert not os.access(fake, os.X_OK)
    sandbox.write_settings(opencode_path=str(fake))
    r = sandbox.cli("start", str(ws))
    assert r.returncode == 1
    assert str(fake) in r.stderr and "is not executable" in r.stderr
    assert_nothing_spawned(sandbox, ws)


# --------------------------------------------------------------------------------- workspaces


def test_unreadable_workspace_is_refused(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sandbox.workspace("locked")
    ws.chmod(0)
    try:
        if os.geteuid() == 0:
            # Root reads any folder: simulate the permission check failing as for a user.
            real_access = os.access
            monkeypatch.setattr(
                os,
                "access",
                lambda p, mode, **kw: False if str(p) == str(ws) else real_access(p, mode, **kw),
            )
        with pytest.raises(WorkspaceError) as ei:
            normalize_workspace(str(ws))
        assert "cannot be read (permission denied)" in ei.value.problem
        assert "chmod" in ei.value.fix
    finally:
        ws.chmod(stat.S_IRWXU)


# ------------------------------------------------------------------------- what gets exposed


def test_two_servers_run_side_by_side_each_wanting_its_password_on_loopback_only(
    sandbox: Sandbox,
) -> None:
    procs = [cli_start_proc(sandbox, sandbox.workspace(n)) for n in ("a", "b")]  # in parallel
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    infos = [json.loads(o[0]) for o in outs]
    assert infos[0]["server_id"] != infos[1]["server_id"] and infos[0]["port"] != infos[1]["port"]
    statuses = sandbox.cli_json("status")
    assert {s["status"] for s in statuses} == {"running"} and len(statuses) == 2
    for info in infos:
        assert httpx.get(info["url"] + "/global/health", timeout=5).status_code == 401
        wrong = httpx.get(info["url"] + "/global/health", auth=("opencode", "nope"), timeout=5)
        assert wrong.status_code == 401
        assert httpx.get(info["url"] + "/session", timeout=5).status_code == 401
        server = psutil.Process(info["pid"])
        listening = [
            c
            for p in (server, *server.children(recursive=True))
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, "the server listens nowhere?"
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
        assert info["port"] in {c.laddr.port for c in listening}
