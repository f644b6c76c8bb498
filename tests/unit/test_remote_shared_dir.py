"""Where the shared ssh connections keep their control sockets (issue 11/15): only in a private
folder of the runtime directory, and not at all where ssh could not use the path."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartspec_desktop.core.remote import engine
from smartspec_desktop.core.remote.address import parse_remote
from smartspec_desktop.core.remote.ssh import (
    SHARED_DIR_NAME,
    command_options,
    shared_dir,
    shared_options,
)

ADDR = parse_remote("ssh://me@devbox:2222/home/me/project")


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A runtime directory with a short path (tmp_path's is too long for a socket)."""
    folder = Path(tempfile.mkdtemp(prefix="ssu-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_commands_share_a_connection_through_a_private_folder_of_the_runtime_dir(
    runtime: Path,
) -> None:
    opts = _opts(command_options(ADDR, {"XDG_RUNTIME_DIR": str(runtime)}))
    assert opts["ControlMaster"] == "auto" and opts["ControlPersist"] == "60"
    assert opts["ClearAllForwardings"] == "yes"
    sock = Path(opts["ControlPath"])
    assert sock.parent == runtime / SHARED_DIR_NAME
    st = sock.parent.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    # One socket per host, port and ssh config; the same again for the same three.
    other = parse_remote("ssh://me@devbox:2223/home/me/project")
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    assert _opts(shared_options(other, env))["ControlPath"] != str(sock)
    with_cfg = env | {"SMARTSPEC_SSH_CONFIG": "/x/cfg"}
    assert _opts(shared_options(ADDR, with_cfg))["ControlPath"] != str(sock)
    assert _opts(shared_options(ADDR, env))["ControlPath"] == str(sock)


@pytest.mark.parametrize(
    "runtime_dir",
    [
        "",  # no runtime directory (a plain ssh session, cron)
        "relative/run",  # not a path the XDG spec allows
        "/tmp/" + "r" * 80,  # a socket path too long for ssh: every command would fail
        "/tmp/with space",  # ssh would split the option
        "/tmp/100%",  # ssh would expand it
    ],
)
def test_no_sharing_where_the_socket_could_not_be_used(runtime_dir: str) -> None:
    env = {"XDG_RUNTIME_DIR": runtime_dir} if runtime_dir else {}
    assert shared_dir(env) is None
    assert shared_options(ADDR, env) == []
    assert _opts(command_options(ADDR, env)) == {"ClearAllForwardings": "yes"}
    assert not runtime_dir or not os.path.exists(os.path.join(runtime_dir, SHARED_DIR_NAME))


def test_a_runtime_dir_others_can_write_is_not_used(runtime: Path) -> None:
    os.chmod(runtime, 0o777)  # anyone could swap the socket folder for their own
    assert shared_dir({"XDG_RUNTIME_DIR": str(runtime)}) is None
    (runtime / SHARED_DIR_NAME).mkdir(exist_ok=True)
    os.chmod(runtime, 0o700)
    os.chmod(runtime / SHARED_DIR_NAME, 0o777)
    assert shared_dir({"XDG_RUNTIME_DIR": str(runtime)}) is None


def test_a_servers_own_connection_is_never_shared(runtime: Path) -> None:
    """Its forwards live and die with the server, so it is a connection of its own even where
    commands share one."""
    argv = engine.serve_argv(
        ADDR,
        opencode="/opt/opencode",
        local_port=30001,
        remote_port=30002,
        broker_forward_port=40001,
        server_id="srv1",
        environ={"XDG_RUNTIME_DIR": str(runtime)},
    )
    opts = _opts(argv[: argv.index("--")])
    assert opts["ControlMaster"] == "no" and opts["ControlPath"] == "none"
    assert "ControlPersist" not in opts
