"""A remote workspace's server, seen from this machine: probe, serve command, identity, kill,
install. No Qt; everything blocks (the window calls it from worker threads).

How a remote server runs (the manager's remote branch, :mod:`.server`)::

    supervisor --broker --remote (this machine: log, exit record, the gateway broker with the key)
      └─ ssh -L 127.0.0.1:LOCAL:127.0.0.1:RPORT -R 127.0.0.1:BPORT:127.0.0.1:<broker port> HOST
           └─ sh -c SERVE (remote: settings from stdin, stdin EOF = stop)
                └─ opencode serve --hostname 127.0.0.1 --port RPORT   (cwd = the remote folder)

The app talks to ``http://127.0.0.1:LOCAL`` (the local forward) exactly as to a local server;
the remote server's provider base URL is ``http://127.0.0.1:BPORT/v1/opencode`` on the remote,
the reverse forward to this machine's broker, with the per-server token. The API key stays here.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smartspec_desktop.core.errors import WorkspaceError
from smartspec_desktop.core.opencode.binary import (
    ALLOW_UNTESTED_ENV,
    NPM_PACKAGE,
    PINNED_VERSION,
    SUPPORTED_SERIES,
    OpenCodeBinary,
    parse_version,
)
from smartspec_desktop.core.remote import scripts
from smartspec_desktop.core.remote.address import SCHEME, RemoteAddress, is_remote, parse_remote
from smartspec_desktop.core.remote.ssh import (
    RemoteError,
    RemoteOpenCodeMissing,
    run_remote,
    sh_command,
    ssh_argv,
    ssh_env,
)
from smartspec_desktop.core.servers.registry import ServerRecord

log = logging.getLogger(__name__)

#: Ports picked for the remote side (its server, and the reverse forward to our broker): below
#: Linux's ephemeral range and above the usual service ports. A port taken there makes the
#: start fail with a port conflict, and it is retried with others.
REMOTE_PORTS = (30000, 32767)
#: ssh's and the remote server's words for "that port is taken". OpenCode 1.18 says only
#: "Error: Unexpected error" and "ServeError" for a busy ``--port`` (anomalyco/opencode#46263),
#: as the local start knows (``PORT_CONFLICT_MARKERS``).
REMOTE_PORT_MARKERS = (
    "serveerror",
    "address already in use",
    "remote port forwarding failed",
    "could not request local forwarding",
    "cannot listen to port",
    "eaddrinuse",
    "port in use",
    "failed to start server on port",
)
IDENTITY = re.compile(re.escape(scripts.MARK) + r" pid=(\d+) start=(\d+)")
#: How often the host's wrapper samples the server's process tree (memory, CPU), in seconds;
#: ``SMARTSPEC_REMOTE_USAGE_SECONDS`` overrides it (0: never).
USAGE_SECONDS = 5.0
USAGE_ENV = "SMARTSPEC_REMOTE_USAGE_SECONDS"


def usage_seconds(environ: Mapping[str, str] | None = None) -> str:
    """The wrapper's sampling interval (``$6`` of :data:`scripts.SERVE`), as its argument."""
    raw = ({} if environ is None else environ).get(USAGE_ENV, "").strip()
    try:
        value = float(raw) if raw else USAGE_SECONDS
    except ValueError:
        log.warning("ignoring %s=%r: not a number of seconds", USAGE_ENV, raw)
        value = USAGE_SECONDS
    if not 0 <= value <= 3600:
        value = USAGE_SECONDS
    return f"{max(value, 0.5):g}" if value else "0"


def parse_host(text: str) -> RemoteAddress:
    """A host as the user names it (``[user@]host[:port]``, or a whole ``ssh://`` address)."""
    raw = text.strip()
    if is_remote(raw):
        return parse_remote(raw)
    return parse_remote(SCHEME + raw.rstrip("/") + "/")


def install_hint(addr: RemoteAddress) -> str:
    return f"smartspec-desktop opencode install --host {addr.display_host}"


@dataclass(frozen=True)
class Probe:
    folder: bool
    #: (path, version output or "=" for the known one, key) of every OpenCode found, install
    #: folder first.
    found: list[tuple[str, str, str]] = field(default_factory=list)
    npm: bool = False


class RemoteVersions:
    """The version of each host's OpenCode, by its key (path, inode, mtime, size): asking a
    binary for its version takes seconds, so a start asks only when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, host: str) -> tuple[str, str]:
        from smartspec_desktop.core.storage.atomic import read_json_object

        data, _ = read_json_object(self.path)
        entry = data.get(host)
        if isinstance(entry, dict):
            key, version = entry.get("key"), entry.get("version")
            if isinstance(key, str) and isinstance(version, str):
                return key, version
        return "", ""

    def put(self, host: str, key: str, version: str) -> None:
        from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object

        try:
            data, _ = read_json_object(self.path)
            data[host] = {"key": key, "version": version}
            atomic_write_json(self.path, data)
        except OSError as e:
            log.info("could not remember the OpenCode version of %s: %s", host, e)


def probe(
    addr: RemoteAddress, environ: Mapping[str, str] | None = None, known_key: str = ""
) -> Probe:
    """What the host has: the folder, its OpenCode(s), npm. ssh failures raise."""
    result = run_remote(addr, scripts.PROBE, addr.path, known_key, timeout=60.0, environ=environ)
    folder, npm, found = False, False, []
    for line in result.stdout.splitlines():
        if line.startswith("dir "):
            folder = line == "dir yes"
        elif line.startswith("npm "):
            npm = line == "npm yes"
        elif line.startswith("oc\t"):
            parts = line.split("\t")
            if len(parts) >= 4:
                found.append((parts[1], parts[2].strip(), parts[3].strip()))
    if result.code != 0 and not found and not folder:
        raise RemoteError(
            f"Checking {addr.display_host} failed (exit {result.code}): "
            f"{result.stderr.strip()[-300:] or 'no message'}.",
            f"Check that `ssh {addr.display_host} sh -c true` works in a terminal.",
        )
    return Probe(folder, found, npm)


def remote_binary(
    addr: RemoteAddress,
    environ: Mapping[str, str] | None = None,
    versions: RemoteVersions | None = None,
) -> OpenCodeBinary:
    """The remote OpenCode to run for ``addr`` (its folder checked too), or a clear error."""
    env = {} if environ is None else environ
    host = addr.display_host
    known_key, known_version = versions.get(host) if versions is not None else ("", "")
    found = probe(addr, environ, known_key)
    if not found.folder:
        raise WorkspaceError(
            f"The folder {addr.path} does not exist on {addr.display_host} (or cannot be read "
            "by that account).",
            f"Check the path, or create it: ssh {addr.display_host} mkdir -p {addr.path}",
        )
    seen = []
    for path, text, key in found.found:
        if text == "=" and known_version:
            text = known_version
        version = parse_version(text)
        if version is not None and version[:2] == SUPPORTED_SERIES:
            shown = ".".join(map(str, version))
            if versions is not None and key != known_key:
                versions.put(host, key, shown)
            return OpenCodeBinary(path, shown, "remote")
        seen.append(f"{path} ({text or 'no version'})")
        if version is not None and env.get(ALLOW_UNTESTED_ENV) == "1":
            shown = ".".join(map(str, version))
            note = f"OpenCode {shown} on {addr.display_host} is untested."
            return OpenCodeBinary(path, shown, "remote", warning=note)
    what = ("only " + ", ".join(seen)) if seen else "none"
    npm = "" if found.npm else " (it needs npm there: install Node.js on the host first)"
    raise RemoteOpenCodeMissing(
        f"{addr.display_host} has no supported OpenCode ({what}); the app needs "
        f"{NPM_PACKAGE}@{PINNED_VERSION} there.",
        f"Install it with `{install_hint(addr)}`{npm}.",
    )


def pick_remote_ports(rng: random.Random | None = None) -> tuple[int, int]:
    """Two different ports for the remote side: its server's, the broker forward's."""
    r = rng or random.SystemRandom()
    a = r.randint(*REMOTE_PORTS)
    b = a
    while b == a:
        b = r.randint(*REMOTE_PORTS)
    return a, b


def serve_argv(
    addr: RemoteAddress,
    *,
    opencode: str,
    local_port: int,
    remote_port: int,
    broker_forward_port: int,
    server_id: str,
    broker_port: str = "@BROKER_PORT@",
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The ssh command the supervisor runs (``@BROKER_PORT@`` is replaced by the supervisor
    with its broker's port once it listens)."""
    forwards = [
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-L",
        f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
        "-R",
        f"127.0.0.1:{broker_forward_port}:127.0.0.1:{broker_port}",
    ]
    command = sh_command(
        scripts.SERVE,
        addr.path,
        str(remote_port),
        str(broker_forward_port),
        opencode,
        server_id,
        usage_seconds(environ),
    )
    return ssh_argv(addr, command, extra=forwards, environ=environ)


def supervisor_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The base environment of a remote server's supervisor (ssh's, plus what the supervisor
    itself reads; it strips its own settings before running ssh)."""
    return ssh_env(environ)


def read_identity(log_path: str | Path) -> tuple[int, int] | None:
    """The remote server's (pid, start time) from the wrapper's line in the server log."""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = IDENTITY.findall(text)
    if not found:
        return None
    pid, start = found[-1]
    return int(pid), int(start)


def link_file(exit_file: str | Path) -> Path:
    """The supervisor's connection state of a remote server (``--reconnect``)."""
    return Path(str(exit_file) + ".link")


def apply_link(rec: ServerRecord) -> None:
    """Bring a running remote server's record up to date with its connection (issue 15):
    "Disconnected from HOST: connecting again (attempt n of N) …" while the supervisor
    reconnects; the new remote server's identity once it is connected again."""
    import json

    try:
        data = json.loads(link_file(rec.exit_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(data, dict):
        return
    if data.get("state") == "reconnecting":
        rec.error = (
            f"Disconnected from {rec.host}: connecting again (attempt {data.get('attempt')} of "
            f"{data.get('of')}) …"
        )
    elif data.get("state") == "connected":
        if rec.error.startswith("Disconnected"):
            rec.error = ""
        pid, start = data.get("pid"), data.get("start")
        if isinstance(pid, int) and isinstance(start, int) and pid > 0:
            rec.remote_pid, rec.remote_start = pid, start


def kill_remote(
    addr: RemoteAddress,
    pid: int,
    start: int,
    server_id: str,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Kill the remote server (pid, start time) when it is provably ours; what happened:
    ``gone``, ``not-ours``, ``stopped`` or ``killed``. ssh failures raise."""
    result = run_remote(
        addr, scripts.KILL, str(pid), str(start), server_id, timeout=timeout, environ=environ
    )
    outcome = (result.stdout.strip().splitlines() or ["?"])[-1]
    log.info("remote server %s on %s (pid %s): %s", server_id, addr.display_host, pid, outcome)
    return outcome


def install_remote(
    addr: RemoteAddress,
    progress: Callable[[str], None],
    *,
    version: str = PINNED_VERSION,
    environ: Mapping[str, str] | None = None,
    timeout: float = 900.0,
) -> str:
    """``npm install opencode-ai@VERSION`` into the host's remote install folder, with npm's
    progress; returns the remote path of the installed binary."""
    import subprocess

    from smartspec_desktop.core.errors import OpenCodeInstallError
    from smartspec_desktop.core.remote.ssh import SSH_FAILED, command_options, ssh_error

    argv = ssh_argv(
        addr,
        sh_command(scripts.INSTALL, version),
        extra=command_options(addr, environ),
        environ=environ,
    )
    progress(f"Installing {NPM_PACKAGE}@{version} on {addr.display_host} …")
    tail: list[str] = []
    installed = ""
    try:
        proc = subprocess.Popen(
            argv,
            env=ssh_env(environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise RemoteError(
            "The ssh client was not found.",
            "Install OpenSSH's client (Debian/Ubuntu: sudo apt-get install openssh-client).",
        ) from None
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail = (tail + [line])[-15:]
            if line.startswith(scripts.MARK + " installed "):
                installed = line[len(scripts.MARK + " installed ") :]
            progress(line)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if proc.returncode == SSH_FAILED:
        raise ssh_error(addr, "\n".join(tail))
    if proc.returncode == 93:
        raise OpenCodeInstallError(
            f"{addr.display_host} has no npm, so OpenCode cannot be installed there.",
            f"Install Node.js (with npm) on {addr.display_host} (Debian/Ubuntu: sudo apt-get "
            "install -y npm), then run the install again.",
        )
    if proc.returncode != 0:
        raise OpenCodeInstallError(
            f"npm install {NPM_PACKAGE}@{version} on {addr.display_host} failed "
            f"(exit {proc.returncode}).",
            "Check that host's network access to the npm registry and try again.",
            details="\n".join(tail),
        )
    path, _, shown = installed.partition(" ")
    if parse_version(shown) != parse_version(version):
        raise OpenCodeInstallError(
            f"npm finished on {addr.display_host} but {path or 'the binary'} does not run "
            f"as OpenCode {version} ({shown or 'no version'}).",
            "That host's platform may have no OpenCode build; see https://opencode.ai/docs.",
            details="\n".join(tail),
        )
    progress(f"Installed OpenCode {version} on {addr.display_host}: {path}")
    return path
