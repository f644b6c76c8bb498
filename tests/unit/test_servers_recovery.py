"""Pure parts of core/servers/recovery.py and privacy.py: reading a supervisor's argv, adding
lost records, tidying leftovers, the private folders."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from smartspec_desktop.core.process.procs import ProcIdentity
from smartspec_desktop.core.process.supervisor import supervised_command
from smartspec_desktop.core.servers.privacy import (
    make_opencode_dirs_private,
    make_server_tmp_dir,
    opencode_data_dirs,
    temp_env,
)
from smartspec_desktop.core.servers.recovery import (
    FoundServer,
    find_our_servers,
    parse_supervisor,
    recover_lost,
    tidy_leftovers,
)
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus

SID = "srv_0123456789abcdef"


def argv(exits: Path, name: str = f"{SID}.json", program: list[str] | None = None) -> list[str]:
    serve = ["/opt/oc/opencode", "serve", "--hostname", "127.0.0.1", "--port", "3797"]
    return supervised_command(
        program or serve,
        log_path=Path("/logs/srv.log"),
        exit_file=exits / name,
        cwd="/work/my ws",
    )


def test_a_supervisor_argv_names_its_server(tmp_path: Path) -> None:
    exits = tmp_path / "state" / "exits"
    assert parse_supervisor(argv(exits), exits) == (
        SID,
        "/work/my ws",
        "/logs/srv.log",
        str(exits / f"{SID}.json"),
        3797,
        "/opt/oc/opencode",
    )
    # Another data folder's server, a child (openwork) of ours, not a server, not a supervisor.
    assert parse_supervisor(argv(tmp_path / "other" / "exits"), exits) is None
    assert parse_supervisor(argv(exits, f"{SID}.openwork.json"), exits) is None
    assert parse_supervisor(argv(exits, program=["/bin/sleep", "9"]), exits) is None
    assert parse_supervisor(["python", "-m", "x", "--exit-file", str(exits / SID)], exits) is None


def test_a_live_process_with_a_supervisor_argv_is_found(tmp_path: Path) -> None:
    """The process-table scan (on Linux a pre-filter of /proc's argv) finds a live process whose
    argv is our supervisor's for this data folder, and only for this one."""
    exits = tmp_path / "state" / "exits"
    cmd = argv(exits)
    flags = next(i for i, a in enumerate(cmd) if a.startswith("--"))
    # Not a supervisor, just its argv: Python ignores what follows -c's code.
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", *cmd[flags:]]
    proc = subprocess.Popen(sleeper)
    try:
        # Popen may return before the new argv shows in /proc (seen: empty for a moment).
        deadline = time.monotonic() + 30
        while psutil.Process(proc.pid).cmdline() != sleeper and time.monotonic() < deadline:
            time.sleep(0.01)
        mine = [f for f in find_our_servers(exits) if f.supervisor.pid == proc.pid]
        assert [(f.server_id, f.workspace, f.port, f.program) for f in mine] == [
            (SID, "/work/my ws", 3797, None)
        ]
        assert not [f for f in find_our_servers(tmp_path / "other") if f.supervisor.pid == proc.pid]
    finally:
        proc.kill()
        proc.wait(30)


def found(sid: str = SID, *, program: bool = True) -> FoundServer:
    return FoundServer(
        sid,
        "/w",
        "/l.log",
        f"/s/exits/{sid}.json",
        ProcIdentity(10, 1000.0),
        ProcIdentity(11, 1001.0) if program else None,
        3797,
        "/oc",
    )


@pytest.mark.allow_log(
    r"core\.servers\.recovery: found the server of", reason="a lost server is the input"
)
def test_lost_servers_are_recorded_again_as_orphaned_starts() -> None:
    known = ServerRecord("srv_known000000000", "/k", ServerStatus.RUNNING, "t")
    records = {known.server_id: known}
    added = recover_lost(
        records, [found(), found(known.server_id), found("srv_" + "f" * 16, program=False)]
    )
    assert [r.server_id for r in added] == [SID]
    rec = records[SID]
    assert rec.status == ServerStatus.STARTING and rec.owner_pid == 0  # adopted once healthy
    assert (rec.pid, rec.supervisor_pid, rec.port, rec.url) == (
        11,
        10,
        3797,
        "http://127.0.0.1:3797",
    )
    assert rec.workspace_path == "/w" and rec.exit_file == f"/s/exits/{SID}.json"
    assert records[known.server_id] is known


def test_leftovers_of_unknown_servers_go_after_the_grace(tmp_path: Path) -> None:
    secrets, exits, tmp = tmp_path / "secrets", tmp_path / "exits", tmp_path / "tmp"
    for d in (secrets, exits, tmp):
        d.mkdir()
    old, new, alive = "srv_" + "1" * 16, "srv_" + "2" * 16, "srv_" + "3" * 16
    files = {}
    for sid in (old, new, alive):
        files[sid] = [secrets / f"server-password_{sid}", exits / f"{sid}.json", tmp / sid]
        files[sid][0].write_text("pw")
        files[sid][1].write_text("{}")
        files[sid][2].mkdir()
        (files[sid][2] / "lib.so").write_bytes(b"x")
    other = secrets / "api-key-something"
    other.write_text("not ours to tidy")
    past = time.time() - 3600
    for sid in (old, alive):
        for p in files[sid]:
            os.utime(p, (past, past))
    os.utime(other, (past, past))
    removed = tidy_leftovers(
        secrets_dir=secrets, exits_dir=exits, tmp_root=tmp, keep={alive}, keep_tmp={alive}
    )
    assert sorted(removed) == sorted(files[old])
    assert all(p.exists() for p in files[new] + files[alive]) and other.exists()
    # A crashed server keeps its record (and exit record) but not its temp files.
    removed = tidy_leftovers(
        secrets_dir=secrets, exits_dir=exits, tmp_root=tmp, keep={alive}, keep_tmp=set()
    )
    assert removed == [files[alive][2]]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_private_folders(tmp_path: Path) -> None:
    tmp = make_server_tmp_dir(tmp_path / "state", SID)
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o700
    assert temp_env(tmp) == {"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": "rel"}
    dirs = opencode_data_dirs(env)
    assert dirs == [
        tmp_path / "data" / "opencode",
        home / ".local" / "state" / "opencode",
        home / ".cache" / "opencode",  # a relative XDG value is ignored
    ]
    dirs[0].mkdir(parents=True, mode=0o755)
    dirs[0].chmod(0o755)
    make_opencode_dirs_private(env)
    assert [stat.S_IMODE(d.stat().st_mode) for d in dirs] == [0o700] * 3
