"""The system ``ssh``, as this app runs it: the command lines and what its failures mean.

Every connection uses the user's OpenSSH client and its configuration (hosts, users, keys, the
agent, ProxyJump) in **batch mode**: ssh never asks for a password or a host key confirmation
where no one can see it; a host key or authentication problem fails at once and
:func:`ssh_error` turns ssh's message into an error naming the host and the fix. The agent and X11
are never forwarded to the remote host. ``SMARTSPEC_SSH_CONFIG``, when set, is the ssh config
file to use (``ssh -F FILE``; the tests set it, as ssh reads ``~/.ssh`` from the passwd entry,
not ``$HOME``).

A remote command is always ``exec sh -c '<script>' smartspec <args>…`` (see :func:`sh_command`):
whatever the remote user's login shell, the script runs under POSIX ``sh``. Arguments go through
argv (remote users can read them: never a secret); secrets go over the channel's stdin.

**Shared connections.** A remote operation is often many commands (a worktree is a dozen git
calls; a review reads and writes files). Each one's own ssh costs a key exchange: ~0.3 s and
~0.2 CPU-s here, seconds on a slow link. So the commands share one connection per host
(OpenSSH's ``ControlMaster=auto``, as Ansible does), whose control socket lives in a private
folder of the user's runtime directory (``$XDG_RUNTIME_DIR/smartspec-ssh``, 0700, checked like
the app's own folders): another user cannot connect to it. Code of the same user can, but it could
equally use the user's keys and agent. The connection closes after 60 s without a command, or at
``stop --all`` (:func:`close_shared`). Without a usable runtime directory every command connects
on its own, as before. The long-lived connection of a remote *server* (its port forwards) is
never shared: its end must be the server's end.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.process.childenv import external_env
from smartspec_desktop.core.remote.address import RemoteAddress

log = logging.getLogger(__name__)

SSH_CONFIG_ENV = "SMARTSPEC_SSH_CONFIG"
CONNECT_TIMEOUT = 10
#: ssh's own exit code for its errors (connection, authentication, host key, forwarding).
SSH_FAILED = 255
#: The folder of the shared connections' control sockets, under ``$XDG_RUNTIME_DIR``.
SHARED_DIR_NAME = "smartspec-ssh"
#: Seconds a shared connection stays open after its last command.
SHARED_IDLE_S = 60
#: A socket's name in that folder: this many hex digits of a hash of the host.
_SOCKET_NAME_LEN = 16
#: A Unix socket's path holds 107 bytes, and ssh first binds the control path plus "." and 16
#: random characters; a longer path would make every command fail, so it is not shared then.
_MAX_CONTROL_PATH = 107 - 17


class RemoteError(SmartSpecError):
    code = "remote"


class RemoteHostKeyError(RemoteError):
    code = "remote_host_key"


class RemoteAuthError(RemoteError):
    code = "remote_auth"


class RemoteUnreachable(RemoteError):
    code = "remote_unreachable"


class RemoteOpenCodeMissing(RemoteError):
    """The remote has no supported OpenCode: ``opencode install --host HOST`` installs one."""

    code = "remote_opencode_missing"


def ssh_options(environ: Mapping[str, str] | None = None) -> list[str]:
    """The options every ssh of this app gets (before the destination)."""
    env = os.environ if environ is None else environ
    opts: list[str] = []
    config = env.get(SSH_CONFIG_ENV, "")
    if config:
        opts += ["-F", config]
    for option in (
        "BatchMode=yes",  # never a hidden prompt: fail and say so
        f"ConnectTimeout={CONNECT_TIMEOUT}",
        "ServerAliveInterval=15",
        "ServerAliveCountMax=3",
        "ForwardAgent=no",
        "ForwardX11=no",
        "PermitLocalCommand=no",
    ):
        opts += ["-o", option]
    return opts + ["-T"]


def shared_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The private folder of the shared connections' sockets, made if need be; None when there
    is no usable one (no runtime directory, a path ssh cannot take, a folder not safely ours)."""
    from smartspec_desktop.core.storage.paths import UnsafeFolder, make_private_dir

    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if os.name != "posix" or not os.path.isabs(runtime):
        return None
    folder = Path(runtime, SHARED_DIR_NAME)
    control_path = len(os.fsencode(folder)) + 1 + _SOCKET_NAME_LEN
    if control_path > _MAX_CONTROL_PATH or re.search(r"[\s\"'%]", str(folder)):
        return None
    try:
        return make_private_dir(folder)
    except (UnsafeFolder, OSError) as e:
        log.info("ssh connections are not shared: %s", e)
        return None


def shared_options(addr: RemoteAddress, environ: Mapping[str, str] | None = None) -> list[str]:
    """The options that make a command's ssh share the host's connection (none without a
    :func:`shared_dir`). One socket per destination, port and ssh config file."""
    folder = shared_dir(environ)
    if folder is None:
        return []
    env = os.environ if environ is None else environ
    key = "\0".join([addr.destination, str(addr.port or ""), env.get(SSH_CONFIG_ENV, "")])
    socket = folder / hashlib.sha256(key.encode()).hexdigest()[:_SOCKET_NAME_LEN]
    return [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={socket}",
        "-o",
        f"ControlPersist={SHARED_IDLE_S}",
    ]


def close_shared(environ: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
    """Close the shared connections (``stop --all``); how many. Each master is asked over its own
    socket for its pid, then to stop (``-O stop``): it removes its socket at once, so the next
    command makes a new connection, and ends when the commands still running on it are done
    (another window's, say). That end is waited for up to ``timeout``. A socket nobody answers
    on is removed."""
    import time

    from smartspec_desktop.core.process.procs import ProcIdentity

    folder = shared_dir(environ)
    if folder is None:
        return 0
    sockets = []
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):  # (one that went meanwhile)
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    sockets.append(entry.path)
    masters: list[ProcIdentity] = []
    for socket in sockets:
        answer = _control(socket, "check", timeout)
        m = re.search(r"Master running \(pid=(\d+)\)", answer or "")
        if m is None:
            if answer is not None:  # nobody there: a master that is gone left it
                with contextlib.suppress(OSError):
                    os.unlink(socket)
            continue
        master = ProcIdentity.of(int(m.group(1)))
        if master is not None:
            masters.append(master)
        _control(socket, "stop", timeout)
    closed = len(masters)
    end = time.monotonic() + timeout
    while masters and time.monotonic() < end:
        masters = [p for p in masters if p.alive()]
        if masters:
            time.sleep(0.05)
    return closed


def _control(socket: str, command: str, timeout: float) -> str | None:
    """``ssh -O COMMAND`` to the master on ``socket``: its answer (stderr), None if ssh failed."""
    argv = ["ssh", "-F", os.devnull, "-o", f"ControlPath={socket}", "-O", command, "smartspec"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.info("could not reach the shared ssh connection %s: %s", socket, e)
        return None
    return r.stderr


def sh_command(script: str, *args: str) -> str:
    """The remote command line that runs ``script`` under ``sh`` with ``args`` as ``$1``…"""
    if "'" in script:
        raise ValueError("remote scripts are written without single quotes")
    return " ".join(["exec", "sh", "-c", shlex.quote(script), "smartspec", *map(shlex.quote, args)])


def ssh_argv(
    addr: RemoteAddress,
    remote_command: str,
    *,
    extra: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    ssh: str = "ssh",
) -> list[str]:
    """``ssh <our options> <extra> [-p PORT] -- DEST <remote command>``."""
    argv = [ssh, *ssh_options(environ), *extra]
    if addr.port is not None:
        argv += ["-p", str(addr.port)]
    return [*argv, "--", addr.destination, remote_command]


def ssh_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an ssh this app runs: the user's (their agent socket included), minus
    anything of ours (ssh could send it with a ``SendEnv`` of the user's config)."""
    return {
        k: v
        for k, v in external_env(environ).items()
        if not k.startswith(("SMARTSPEC_", "OPENCODE_")) or k == SSH_CONFIG_ENV
    }


@dataclass(frozen=True)
class RemoteResult:
    code: int
    stdout: str
    stderr: str


def command_options(addr: RemoteAddress, environ: Mapping[str, str] | None = None) -> list[str]:
    """The options of a remote command's ssh: no forwards, the host's shared connection."""
    return ["-o", "ClearAllForwardings=yes", *shared_options(addr, environ)]


def run_remote(
    addr: RemoteAddress,
    script: str,
    *args: str,
    stdin: str = "",
    timeout: float = 60.0,
    environ: Mapping[str, str] | None = None,
) -> RemoteResult:
    """Run ``script`` on the host and wait; ssh's own failures raise :func:`ssh_error`."""
    argv = ssh_argv(
        addr, sh_command(script, *args), extra=command_options(addr, environ), environ=environ
    )
    try:
        proc = subprocess.run(
            argv,
            input=stdin.encode(),
            capture_output=True,
            timeout=timeout,
            env=ssh_env(environ),
            check=False,
        )
    except FileNotFoundError:
        raise RemoteError(
            "The ssh client was not found, so remote workspaces cannot be reached.",
            "Install OpenSSH's client (Debian/Ubuntu: sudo apt-get install openssh-client).",
        ) from None
    except subprocess.TimeoutExpired:
        raise RemoteUnreachable(
            f"{addr.display_host} did not finish answering over ssh within {timeout:.0f} s.",
            f"Check the connection with `ssh {addr.display_host}` in a terminal.",
        ) from None
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == SSH_FAILED:
        raise ssh_error(addr, err)
    return RemoteResult(proc.returncode, out, err)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message"


def ssh_error(addr: RemoteAddress, stderr: str) -> RemoteError:
    """What ssh's messages on ``stderr`` mean for the user, with the fix."""
    host = addr.display_host
    low = stderr.lower()
    if "remote host identification has changed" in low:
        return RemoteHostKeyError(
            f"The host key of {host} has CHANGED since you last connected (ssh refused it: "
            "someone may be intercepting the connection, or the host was reinstalled).",
            f"Find out why before going on; if the change is expected, remove the old key with "
            f"`ssh-keygen -R {addr.host}` and run `ssh {host}` once in a terminal to accept the "
            "new one.",
            details=stderr,
        )
    if "host key verification failed" in low or "no matching host key" in low:
        return RemoteHostKeyError(
            f"The host key of {host} is not known to ssh (Host key verification failed), and "
            "the app never accepts one without you.",
            f"Run `ssh {host}` once in a terminal to check and accept its host key, then try "
            "again.",
            details=stderr,
        )
    if "permission denied" in low or "too many authentication failures" in low:
        return RemoteAuthError(
            f"ssh could not log in to {host} ({_last(stderr)}); the app uses ssh in batch mode, "
            "so it cannot ask for a password or a key's passphrase.",
            f"Add your key to the host with `ssh-copy-id {host}`, or load it into your agent "
            "(`ssh-add`), and check that `ssh -o BatchMode=yes "
            f"{host} true` works.",
            details=stderr,
        )
    if "could not resolve hostname" in low:
        return RemoteUnreachable(
            f"The host {addr.host} is unknown ({_last(stderr)}).",
            "Check its name, or add a Host entry for it to ~/.ssh/config.",
            details=stderr,
        )
    if any(
        m in low
        for m in ("connection refused", "timed out", "no route to host", "network is unreachable")
    ):
        return RemoteUnreachable(
            f"{host} cannot be reached over ssh ({_last(stderr)}).",
            f"Check that the host is up and runs an ssh server (`ssh {host}` in a terminal).",
            details=stderr,
        )
    return RemoteError(
        f"ssh to {host} failed: {_last(stderr)}.",
        f"Check the connection with `ssh {host}` in a terminal.",
        details=stderr,
    )
