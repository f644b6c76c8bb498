"""Remote commands share one ssh connection per host (issue 11, suite CPU; issue 15, a remote
operation's speed), against the tests' own sshd: the host sees one login for many commands, the
control socket is out of another local user's reach, ``stop --all`` ends the connection, and
without a runtime directory every command still works on a connection of its own."""

from __future__ import annotations

import concurrent.futures
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from smartspec_desktop.core.remote.address import parse_remote
from smartspec_desktop.core.remote.ssh import SHARED_DIR_NAME, close_shared, run_remote
from tests.conftest import Sandbox
from tests.integration.test_remote_ssh import remote, remote_host  # noqa: F401 - fixtures
from tests.remote_host import RemoteHost
from tests.throwaway import add_user, remove_user

ECHO = 'printf "%s\\n" "$1"'


def _logins(host: RemoteHost) -> int:
    """Connections the host's sshd has let in so far."""
    return (host.folder / "sshd.log").read_text(errors="replace").count("Accepted publickey")


def _sockets(runtime: str) -> list[Path]:
    folder = Path(runtime, SHARED_DIR_NAME)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]


def _wait_for_sleep(host: RemoteHost) -> None:
    end = time.monotonic() + 60
    while not any(_cmd(p)[:1] == ["sleep"] for p in host.processes()):
        assert time.monotonic() < end, "the command never started on the host"
        time.sleep(0.05)


def _cmd(p: psutil.Process) -> list[str]:
    try:
        return list(p.cmdline())
    except psutil.Error:
        return []


@pytest.fixture
def other_user() -> Iterator[str]:
    try:
        name, _entry, home = add_user("ssmx", "/bin/sh")
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        remove_user(name, home)


def test_commands_share_one_connection_that_no_other_user_can_use(
    sandbox: Sandbox,
    remote: RemoteHost,  # noqa: F811 - the fixture
    other_user: str,
) -> None:
    env = sandbox.env
    addr = parse_remote(remote.address(remote.workspace("shared")))
    before = _logins(remote)
    answers = [run_remote(addr, ECHO, f"call {i}", environ=env).stdout for i in range(5)]
    assert answers == [f"call {i}\n" for i in range(5)]
    assert _logins(remote) - before == 1, "five commands, one login on the host"

    (sock,) = _sockets(env["XDG_RUNTIME_DIR"])
    folder = sock.parent.stat()
    assert folder.st_uid == os.getuid() and stat.S_IMODE(folder.st_mode) == 0o700
    check = ["ssh", "-F", os.devnull, "-o", f"ControlPath={sock}", "-O", "check", "smartspec"]
    mine = subprocess.run(check, capture_output=True, text=True, timeout=30)
    m = re.search(r"pid=(\d+)", mine.stderr)
    assert m, mine.stderr
    master = psutil.Process(int(m.group(1)))

    # Another local user can neither reach the socket nor run anything through it.
    theirs = subprocess.run(
        ["runuser", "-u", other_user, "--", *check], capture_output=True, text=True, timeout=30
    )
    assert theirs.returncode == 255 and "Permission denied" in theirs.stderr, theirs.stderr
    hijack = ["runuser", "-u", other_user, "--", "ssh", "-F", os.devnull, "-o"]
    hijack += [f"ControlPath={sock}", "-o", "ControlMaster=no", "-o", "BatchMode=yes"]
    hijack += ["-o", "ConnectTimeout=5", "smartspec", "id"]
    took = subprocess.run(hijack, capture_output=True, text=True, timeout=30)
    assert took.returncode == 255 and remote.user not in took.stdout, took

    # `stop --all` closes it: a command still running on it finishes first (another window's,
    # say), then the master is gone and so is its socket; the next command connects anew.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_remote, addr, 'sleep 2; printf "%s\\n" "$1"', "done", environ=env)
        _wait_for_sleep(remote)  # it runs on the host
        out = sandbox.cli("stop", "--all")
        assert running.result(timeout=60).stdout == "done\n"
    assert "Closed 1 shared ssh connection(s)." in out.stdout, out
    assert not master.is_running() or master.status() == psutil.STATUS_ZOMBIE
    assert _sockets(env["XDG_RUNTIME_DIR"]) == []
    assert run_remote(addr, ECHO, "again", environ=env).stdout == "again\n"
    assert _logins(remote) - before == 2
    assert close_shared(env) == 1


def test_without_a_runtime_directory_every_command_connects_on_its_own(
    sandbox: Sandbox,
    remote: RemoteHost,  # noqa: F811 - the fixture
) -> None:
    env = {k: v for k, v in sandbox.env.items() if k != "XDG_RUNTIME_DIR"}
    addr = parse_remote(remote.address(remote.workspace("unshared")))
    before = _logins(remote)
    answers = [run_remote(addr, ECHO, f"call {i}", environ=env).stdout for i in range(3)]
    assert answers == [f"call {i}\n" for i in range(3)]
    assert _logins(remote) - before == 3
    assert _sockets(sandbox.env["XDG_RUNTIME_DIR"]) == []
