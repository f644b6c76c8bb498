"""Bad luck with the app's state, and what a server leaves on disk (issue 10: F6, F7, F14, F15,
F11).

- F6: ``stop`` and ``stop --all`` stop the server on a full disk (a tiny tmpfs as the data dir,
  filled), a read-only data dir (a read-only bind mount) and a vanished state folder: kill first,
  record after, a message that names the real problem and its fix, no logging traceback.
- F7: a truncated, garbage or deleted ``servers.json`` (or a damaged legacy ``sessions.json``):
  the running server is found again from its supervisor's argv, reported, reused (never a second
  server for the workspace) and stopped; stale password files, exit records and temp folders go.
- F14: the starting CLI SIGKILLed before the handshake, before "healthy", after "healthy" but
  before "running" was recorded: the next ``status`` adopts the healthy server or clears the
  dead start, never "starting" forever.
- F15: a server's temporary files (Bun's native library among them) go to a private folder of
  its own, removed when it stops; nothing lands in the system's temp folder.
- F11: OpenCode's own data (its conversation database) is not readable by another local user
  even with a 0755 HOME, and the server's umask is the user's.

The mounts need root (CI runs as root); every mount is undone in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests import opencode_config
from tests.conftest import Sandbox, server_processes
from tests.faults.conftest import Attacker
from tests.faults.test_faults import cli_start_proc, supervisors_of, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration]


# ------------------------------------------------------------------------------------ helpers


def password_file(box: Sandbox, server_id: str) -> Path:
    """Where the sandbox (no keyring) keeps a server's password."""
    return box.data_dir / "state" / "secrets" / f"server-password_{server_id}"


def health(url: str, password: str) -> bool:
    try:
        r = httpx.get(url + "/global/health", auth=("opencode", password), timeout=3)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.json().get("healthy") is True


def assert_all_gone(box: Sandbox, ws: Path, procs: list[psutil.Process]) -> None:
    psutil.wait_procs(procs, timeout=10)
    assert not server_processes(ws), "the server still runs"
    assert not supervisors_of(box.root), "a supervisor still runs"


def tree_of(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def need_root() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a tmpfs / read-only bind mount (CI runs as root)")


@contextlib.contextmanager
def mounted(*argv: str, target: Path) -> Iterator[None]:
    r = subprocess.run(["mount", *argv, str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here: {r.stderr.strip()}")
    try:
        yield
    finally:
        r = subprocess.run(["umount", str(target)], capture_output=True, text=True)
        if r.returncode != 0:  # still busy (a process the test is about): detach it
            subprocess.run(["umount", "-l", str(target)], capture_output=True, text=True)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte (and its last inodes)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        for i in range(100_000):
            os.close(os.open(folder / f"filler-{i}", os.O_WRONLY | os.O_CREAT, 0o600))


# ------------------------------------------------------------------------ F6: stop always stops


@pytest.mark.parametrize("command", ["stop", "stop-all"])
@pytest.mark.parametrize("blocker", ["full-disk", "read-only", "state-vanished"])
def test_stop_stops_the_server_whatever_the_state_folder(
    sandbox: Sandbox, blocker: str, command: str
) -> None:
    ws = sandbox.workspace()
    with contextlib.ExitStack() as undo:
        if blocker == "full-disk":
            need_root()
            sandbox.data_dir.mkdir(parents=True, exist_ok=True)
            undo.enter_context(
                mounted("-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", target=sandbox.data_dir)
            )
            sandbox.write_settings()  # the tmpfs hides the sandbox's settings
        info = sandbox.cli_json("start", str(ws))
        procs = tree_of(info["pid"])
        sid = info["server_id"]
        if blocker == "full-disk":
            fill(sandbox.data_dir)
        elif blocker == "read-only":
            need_root()
            undo.enter_context(mounted("--bind", str(sandbox.data_dir), target=sandbox.data_dir))
            ro = subprocess.run(
                ["mount", "-o", "remount,bind,ro", str(sandbox.data_dir)],
                capture_output=True,
                text=True,
            )
            assert ro.returncode == 0, ro.stderr
        else:
            shutil.rmtree(sandbox.data_dir / "state")

        args = ("stop", str(ws)) if command == "stop" else ("stop", "--all")
        r = sandbox.cli(*args, timeout=90)

        # The server is stopped, whatever the state folder allowed.
        assert_all_gone(sandbox, ws, procs)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and "Logging error" not in r.stderr, r.stderr
        if command == "stop":
            assert r.stdout == f"Stopped the server for {ws}.\n"
        else:
            assert r.stdout == "Stopped 1 server(s).\n"
        if blocker == "full-disk":
            assert "the disk is full" in r.stderr and "Free some space" in r.stderr, r.stderr
            assert "was stopped, but the stop could not be recorded" in r.stderr
        elif blocker == "read-only":
            assert "read-only" in r.stderr and "Remount it read-write" in r.stderr, r.stderr
            assert "was stopped, but the stop could not be recorded" in r.stderr
        else:
            assert "missing from the state file" in r.stderr, r.stderr
    # Once the disk is usable again, nothing is left over: no record, no secret of it.
    r = sandbox.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    assert not password_file(sandbox, sid).exists()


# ------------------------------------------------------------- F7: a damaged registry loses none


def plant_stale_leftovers(box: Sandbox) -> list[Path]:
    """What a server forgotten long ago left: a password file, an exit record, a temp folder."""
    state = box.data_dir / "state"
    sid = "srv_" + "0123456789abcdef"
    paths = [password_file(box, sid), state / "exits" / f"{sid}.json", state / "tmp" / sid]
    paths[0].write_text("old password")
    paths[1].write_text(json.dumps({"exit_code": 0}))
    paths[2].mkdir(parents=True, mode=0o700)
    (paths[2] / "lib.so").write_bytes(b"\0" * 1024)
    old = time.time() - 3600
    for p in paths:
        os.utime(p, (old, old))
    return paths


def damage_registry(box: Sandbox, damage: str) -> None:
    state_file = box.data_dir / "state" / "servers.json"
    if damage == "truncated":
        state_file.write_bytes(state_file.read_bytes()[:57])
    elif damage == "garbage":
        state_file.write_bytes(b"\x00\xff garbage \x80{")
    elif damage == "deleted":
        state_file.unlink()
    else:  # an old install's file, damaged, and no servers.json yet
        state_file.unlink()
        (state_file.parent / "sessions.json").write_text('{"version": 1, "sessions": {"srv_')


@pytest.mark.allow_log(
    r".*: found the server of .* missing from the state file", reason="the damage is the input"
)
@pytest.mark.slow
def test_a_damaged_registry_loses_no_server(sandbox: Sandbox) -> None:
    """Each damage in turn, to the registry of one running server: it is found again each time,
    with its secret, and the stale leftovers of an old one go."""
    ws = sandbox.workspace()
    info = sandbox.cli_json("start", str(ws))
    procs = tree_of(info["pid"])
    secret = password_file(sandbox, info["server_id"])
    assert secret.exists()
    for damage in ["truncated", "garbage", "deleted", "legacy-garbage"]:
        stale = plant_stale_leftovers(sandbox)
        damage_registry(sandbox, damage)

        r = sandbox.cli("status", "--json")
        assert r.returncode == 0, (damage, r.stderr)
        (found,) = json.loads(r.stdout)
        assert (found["server_id"], found["pid"], found["port"]) == (
            info["server_id"],
            info["pid"],
            info["port"],
        ), damage
        assert found["status"] == "running" and found["workspace_path"] == str(ws), damage
        assert "missing from the state file" in r.stderr, (damage, r.stderr)
        assert secret.exists(), f"{damage}: the live server's password was removed"
        assert [p for p in stale if p.exists()] == [], f"{damage}: stale secrets or files kept"

        again = sandbox.cli_json("start", str(ws))
        assert again["reused"] is True and again["pid"] == info["pid"], damage
        assert [p.pid for p in server_processes(ws)] == [info["pid"]], f"{damage}: a second server"
        assert len(supervisors_of(sandbox.root)) == 1, damage

    r = sandbox.cli("stop", str(ws))
    assert r.returncode == 0 and r.stdout == f"Stopped the server for {ws}.\n", r.stderr
    assert_all_gone(sandbox, ws, procs)
    assert not secret.exists()
    assert sandbox.cli_json("status") == []


# ------------------------------------------------------------------ F14: truthful states


@pytest.mark.parametrize("moment", ["before-handshake", "before-healthy", "after-healthy"])
def test_a_start_whose_cli_was_killed_never_stays_starting(sandbox: Sandbox, moment: str) -> None:
    ws = sandbox.workspace()
    cli = cli_start_proc(sandbox, ws)

    def record() -> dict[str, Any] | None:
        try:
            servers = sandbox.state().get("servers", {})
        except ValueError:
            return None  # caught mid-write
        return next(iter(servers.values()), None)

    try:
        if moment == "before-handshake":

            def spawned() -> bool:
                with contextlib.suppress(psutil.Error):
                    for k in psutil.Process(cli.pid).children():
                        with contextlib.suppress(psutil.Error):
                            if "supervisor" in " ".join(k.cmdline()):
                                return True
                return False

            wait_for(spawned, 60, "the CLI to spawn the supervisor", interval=0.002)
            cli.send_signal(signal.SIGSTOP)
            rec = record()
            assert rec is not None and rec["pid"] == 0, rec
        else:
            found = wait_for(
                lambda: (r := record()) and r["pid"] and r, 60, "the server's pid to be recorded"
            )
            assert isinstance(found, dict)
            rec = found
            if moment == "after-healthy":
                cli.send_signal(signal.SIGSTOP)
                password = password_file(sandbox, rec["server_id"]).read_text()
                wait_for(lambda: health(rec["url"], password), 60, "the server to be healthy")
                now = record()
                assert now is not None and now["status"] == "starting", now
        cli.send_signal(signal.SIGKILL)
    finally:
        cli.kill()
        cli.communicate(timeout=30)

    def settled() -> dict[str, list[dict[str, Any]]] | None:
        r = sandbox.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        servers: list[dict[str, Any]] = json.loads(r.stdout)
        return None if any(s["status"] == "starting" for s in servers) else {"servers": servers}

    outcome = wait_for(settled, 90, "status to stop saying 'starting'", interval=0.5)
    assert isinstance(outcome, dict)
    servers = outcome["servers"]
    if moment == "before-handshake":
        assert servers == []  # its supervisor was reaped
        assert_all_gone(sandbox, ws, [])
        return
    (server,) = servers
    assert server["status"] == "running", server
    assert health(server["url"], password_file(sandbox, server["server_id"]).read_text())
    assert [p.pid for p in server_processes(ws)] == [server["pid"]]
    procs = tree_of(server["pid"])
    assert sandbox.cli("stop", str(ws)).returncode == 0
    assert_all_gone(sandbox, ws, procs)


# ------------------------------------------- F15: no litter; F11: private conversations


READ_OPENCODE_DATA = r"""
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            out[path] = ["listed", os.listdir(path)]
        else:
            with open(path, "rb") as f:
                out[path] = ["read", f.read(16).decode("latin-1")]
    except OSError as e:
        out[path] = ["refused", e.__class__.__name__]
print(json.dumps(out))
"""


def test_a_servers_files_are_private_even_with_an_open_home_and_temp_folder(
    sandbox: Sandbox, attacker: Attacker, opencode_bin: str
) -> None:
    """F15: the server's temp files (Bun extracts a native library for the terminal API) are
    in a private folder of its own, gone with it, none in the system's temp folder. F11:
    OpenCode's data (the conversations) is the user's alone, even in a HOME other users can
    enter and a data folder an earlier run made 0755."""
    system_tmp = sandbox.root / "system-tmp"
    system_tmp.mkdir(mode=0o1777)
    home = Path(tempfile.mkdtemp(prefix="ssf11-home-"))
    try:
        home.chmod(0o755)  # Debian's useradd default
        xdg = {
            "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_STATE_HOME": home / ".local" / "state",
            "XDG_CACHE_HOME": home / ".cache",
            "XDG_CONFIG_HOME": home / ".config",
        }
        for folder in xdg.values():
            folder.mkdir(parents=True, mode=0o755)
        # An earlier OpenCode run made its data folder with the umask's 0755.
        (xdg["XDG_DATA_HOME"] / "opencode").mkdir(mode=0o755)
        opencode_config.seed(home, opencode_bin)  # and installed its plugin package
        sandbox.env = dict(
            sandbox.env,
            HOME=str(home),
            TMPDIR=str(system_tmp),
            TMP=str(system_tmp),
            **{k: str(v) for k, v in xdg.items()},
        )
        ws = sandbox.workspace()
        info = sandbox.cli_json("start", str(ws))
        procs = tree_of(info["pid"])
        private = sandbox.data_dir / "state" / "tmp" / info["server_id"]
        try:
            password = password_file(sandbox, info["server_id"]).read_text()
            # The terminal API (the web UI and the TUI use it) makes Bun extract its library.
            r = httpx.get(
                info["url"] + "/pty",
                params={"directory": str(ws)},
                auth=("opencode", password),
                timeout=30,
            )
            assert r.status_code == 200, r.text
            maps = Path(f"/proc/{info['pid']}/maps").read_text()
            extracted = {ln.split()[-1] for ln in maps.splitlines() if ln.rstrip().endswith(".so")}
            extracted = {p for p in extracted if not p.startswith(("/usr/", "/lib"))}
            assert extracted, "the native library was not loaded: the test no longer covers F15"
            assert list(system_tmp.iterdir()) == [], "the server wrote into the system's temp"
            assert all(Path(p).parent == private for p in extracted), extracted
            assert stat.S_IMODE(private.stat().st_mode) == 0o700

            r = httpx.post(
                info["url"] + "/session",
                params={"directory": str(ws)},
                json={"title": "secret plans"},
                auth=("opencode", password),
                timeout=30,
            )
            assert r.status_code == 200, r.text
            data = xdg["XDG_DATA_HOME"] / "opencode"
            db = data / "opencode.db"
            assert db.exists(), sorted(p.name for p in data.iterdir())
            targets = [
                data,
                db,
                xdg["XDG_STATE_HOME"] / "opencode",
                xdg["XDG_CACHE_HOME"] / "opencode",
            ]
            seen = json.loads(attacker.run(READ_OPENCODE_DATA, *map(str, targets)).stdout)
            assert {how for how, _ in seen.values()} == {"refused"}, seen
            for folder in (data, targets[2], targets[3]):
                assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            # The server itself runs with the user's umask (its workspace files are as usual).
            umask = os.umask(0)
            os.umask(umask)
            status = Path(f"/proc/{info['pid']}/status").read_text()
            assert f"Umask:\t{umask:04o}" in status
        finally:
            assert sandbox.cli("stop", str(ws)).returncode == 0
            assert_all_gone(sandbox, ws, procs)
        assert not private.exists(), "the server's temp folder outlived it"
        assert list(system_tmp.iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
