"""F4: the data folder is trusted only when it is ours and private.

Another user's data dir (or one inside another user's folder), a world-writable one, a program in
a folder anyone can write, and a registry whose records name a stranger's process: each is refused
or left alone, with the problem and the fix, and nothing planted ever runs or gets killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from smartspec_desktop.core.opencode.binary import VersionCache, find_opencode
from smartspec_desktop.core.storage.paths import Paths, UnsafeFolder
from tests.conftest import Sandbox
from tests.faults.conftest import Attacker

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def cli(
    box: Sandbox, data_dir: Path, *args: str, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    """The CLI over another data dir than the sandbox's (same environment otherwise)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "smartspec_desktop",
            "--data-dir",
            str(data_dir),
            "--backend-url",
            box.backend.url,
            *args,
        ],
        env=box.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=box.root,
        umask=umask,
    )


PLANT = r"""
import os, sys
os.umask(0)
data = sys.argv[1]
bin_dir = os.path.join(data, "data", "opencode", "node_modules", ".bin")
os.makedirs(bin_dir, mode=0o777)
for d in ("config", "state", "log"):
    os.makedirs(os.path.join(data, d), mode=0o777)
fake = os.path.join(bin_dir, "opencode")
with open(fake, "w") as f:
    f.write("#!/bin/sh\necho ran as $(id -u) >> " + sys.argv[2] + "\necho 1.18.33\n")
os.chmod(fake, 0o777)
open(sys.argv[2], "w").close()
os.chmod(sys.argv[2], 0o666)
print("planted")
"""


def test_a_data_dir_made_by_another_user_is_refused_and_nothing_in_it_runs(
    sandbox: Sandbox, attacker: Attacker
) -> None:
    data = attacker.home / "data"
    marker = attacker.home / "ran"
    planted = attacker.run(PLANT, str(data), str(marker))
    assert planted.stdout.strip() == "planted", planted.stderr
    ws = sandbox.workspace("victim")
    for args in (("status",), ("start", str(ws))):
        r = cli(sandbox, data, *args)
        assert r.returncode != 0, r.stdout
        assert "belongs to another user" in r.stderr, r.stderr
        assert "--data-dir" in r.stderr  # the fix
        assert "Traceback" not in r.stderr
    assert marker.read_text() == "", "the planted opencode ran as the victim"
    assert not list((data / "state").iterdir())  # nothing recorded, nothing started


def test_folders_are_created_0700_whatever_the_umask(sandbox: Sandbox, tmp_path: Path) -> None:
    data = tmp_path / "new" / "deeper" / "data"
    r = cli(sandbox, data, "status", umask=0)
    assert r.returncode == 0, r.stderr
    made = [tmp_path / "new", tmp_path / "new" / "deeper", data]
    made += [p for p in data.rglob("*") if p.is_dir()]
    modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made}
    assert set(modes.values()) == {"0o700"}, modes
    assert {"config", "data", "state", "log"} <= {p.name for p in data.iterdir()}


def test_a_world_writable_subfolder_is_refused_and_a_readable_one_tightened(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    assert cli(sandbox, data, "status").returncode == 0
    (data / "log").chmod(0o755)
    (data / "state" / "exits").mkdir(exist_ok=True)
    (data / "state" / "exits").chmod(0o777)
    r = cli(sandbox, data, "status")
    assert r.returncode != 0
    assert f"{data / 'state' / 'exits'}" in r.stderr and "writable by other users" in r.stderr
    assert "chmod 700" in r.stderr and "Traceback" not in r.stderr
    (data / "state" / "exits").chmod(0o700)
    assert cli(sandbox, data, "status").returncode == 0
    assert stat.S_IMODE((data / "log").stat().st_mode) == 0o700  # ours: tightened


def test_a_program_in_a_folder_anyone_can_write_is_never_run(
    tmp_path: Path, opencode_bin: str
) -> None:
    open_dir = tmp_path / "shared-bin"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # world-writable, no sticky bit: anyone may swap the program
    marker = tmp_path / "ran"
    fake = open_dir / "opencode"
    fake.write_text(f"#!/bin/sh\necho ran >> {marker}\necho 1.18.33\n")
    fake.chmod(0o755)
    cache = VersionCache(tmp_path / "cache.json")
    with pytest.raises(UnsafeFolder) as e:
        find_opencode(str(fake), tmp_path / "managed", cache)
    assert f"the folder {open_dir} is writable by every user" in e.value.problem
    assert "Settings → OpenCode path" in e.value.fix
    assert not marker.exists()
    # The same folder with the sticky bit (like /tmp) and a program of ours is fine.
    open_dir.chmod(0o1777)
    assert find_opencode(str(fake), tmp_path / "managed", cache).version == "1.18.33"
    # A world-writable program is refused wherever it is.
    fake.chmod(0o777)
    with pytest.raises(UnsafeFolder):
        find_opencode(str(fake), tmp_path / "managed", cache)


def test_another_users_program_is_never_run(attacker: Attacker, tmp_path: Path) -> None:
    marker = attacker.home / "ran"
    r = attacker.run(
        "import os, sys\n"
        "p = os.path.join(os.getcwd(), 'opencode')\n"
        f"open(p, 'w').write('#!/bin/sh\\necho ran >> {marker}\\necho 1.18.33\\n')\n"
        "os.chmod(p, 0o755)\n"
        "os.chmod(os.getcwd(), 0o755)\n"
        "print(p)\n"
    )
    fake = Path(r.stdout.strip())
    assert fake.exists(), r.stderr
    with pytest.raises(UnsafeFolder) as e:
        find_opencode(str(fake), tmp_path / "managed", VersionCache(tmp_path / "c.json"))
    assert f"uid {attacker.uid}" in e.value.problem
    assert not marker.exists()


# ------------------------------------------------------------------ a registry naming a stranger


@pytest.fixture
def stranger() -> Iterator[psutil.Process]:
    """A process of ours (root here) that the app did not start: its own process group, with a
    second member, and a command line that is none of the app's."""
    p = subprocess.Popen(
        ["sh", "-c", "sleep 300 & exec sleep 300"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while not psutil.Process(p.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        yield psutil.Process(p.pid)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(p.pid, 9)
        p.wait(5)


def plant_registry(data_dir: Path, victim: psutil.Process, ws: Path) -> None:
    """Records as a damaged (or, before the folder checks, planted) ``sessions.json`` may hold:
    one whose server is gone but whose child names the victim, and one whose server and
    supervisor are the victim."""
    ctime = victim.create_time()
    child = {
        "kind": "openwork",
        "pid": victim.pid,
        "create_time": ctime,
        "supervisor_pid": victim.pid,
        "supervisor_create_time": ctime,
    }
    base = {"workspace_path": str(ws), "status": "running", "created_at": "2026-12-01T00:00:00Z"}
    sessions = {
        "srv_gone": dict(base, session_id="srv_gone", pid=0, children=[child]),
        "srv_victim": dict(
            base,
            session_id="srv_victim",
            workspace_path=str(ws) + "-2",
            pid=victim.pid,
            create_time=ctime,
            supervisor_pid=victim.pid,
            supervisor_create_time=ctime,
            port=1,
            url="http://127.0.0.1:1",
        ),
    }
    state = data_dir / "state"
    # An old install's only state file (a servers.json, once written, wins over it).
    (state / "servers.json").unlink(missing_ok=True)
    (state / "sessions.json").write_text(json.dumps({"version": 1, "sessions": sessions}))


def test_a_registry_naming_a_strangers_process_never_kills_it(
    sandbox: Sandbox, stranger: psutil.Process
) -> None:
    assert sandbox.cli("status").returncode == 0  # the folders exist, private
    members = [stranger, *stranger.children()]
    assert os.getpgid(stranger.pid) == stranger.pid != os.getpgid(os.getpid())
    plant_registry(sandbox.data_dir, stranger, sandbox.workspace("w"))
    status = sandbox.cli("status")
    assert status.returncode == 0, status.stderr
    stop = sandbox.cli("stop", "--all")
    assert "Traceback" not in stop.stderr
    time.sleep(0.5)
    for p in members:
        assert p.is_running() and p.status() != psutil.STATUS_ZOMBIE, f"{p.pid} was killed"
    # The refusal is logged, so the user can see why a recorded pid was left alone.
    log = (sandbox.data_dir / "log" / "smartspec-desktop.log").read_text()
    assert f"not killing pid {stranger.pid}" in log


def test_paths_refuse_a_data_dir_inside_another_users_folder(
    attacker: Attacker, tmp_path: Path
) -> None:
    # The data dir itself would be ours (created now), but its parent is the attacker's.
    os.chmod(attacker.home, 0o777)
    with pytest.raises(UnsafeFolder) as e:
        Paths.from_base(attacker.home / "ours").ensure()
    assert "belongs to another user" in e.value.problem and "--data-dir" in e.value.fix
    shutil.rmtree(attacker.home / "ours", ignore_errors=True)
