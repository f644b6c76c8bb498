"""The address of a remote workspace: ``ssh://[user@]host[:port]/absolute/path``.

A workspace is either a local folder (a path) or a remote one (this address). The address is
the workspace's identity everywhere a local path would be (the registry, settings, the CLI), in
its canonical form (:meth:`RemoteAddress.__str__`). ``host`` may be an alias of the user's
``~/.ssh/config``; OpenSSH resolves it, so the user's hosts, keys, agent and ProxyJump apply.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from smartspec_desktop.core.errors import WorkspaceError

SCHEME = "ssh://"

# What OpenSSH itself accepts as a user and as a host (or alias), minus anything a shell or
# ssh's own option parser would read as syntax: no leading "-", no spaces, no quotes.
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]+\]")
_FIX = "Write it as ssh://[user@]host[:port]/absolute/path, e.g. ssh://me@devbox/home/me/project."


@dataclass(frozen=True)
class RemoteAddress:
    host: str
    path: str
    user: str = ""
    port: int | None = None

    def __str__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{SCHEME}{who}{self.host}{port}{self.path}"

    @property
    def destination(self) -> str:
        """What to give ``ssh`` as its destination (``[user@]host``; the port goes in ``-p``)."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return f"{self.user}@{host}" if self.user else host

    @property
    def display_host(self) -> str:
        """The host as a person reads it (``user@host:port``)."""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.destination}{port}"

    @property
    def name(self) -> str:
        """The folder's own name, like ``Path.name`` of a local workspace."""
        return posixpath.basename(self.path) or self.path


def is_remote(workspace: str) -> bool:
    return workspace.strip().lower().startswith(SCHEME)


def parse_remote(text: str) -> RemoteAddress:
    """``text`` as a :class:`RemoteAddress`, in canonical form; a clear error if it is not one."""
    raw = text.strip()
    if not is_remote(raw):
        raise WorkspaceError(f"{raw!r} is not a remote workspace address.", _FIX)
    rest = raw[len(SCHEME) :]
    slash = rest.find("/")
    if slash <= 0:
        raise WorkspaceError(f"The remote workspace {raw} names no folder on the host.", _FIX)
    authority, path = rest[:slash], rest[slash:]
    user, _, hostport = authority.rpartition("@")
    if user and not _USER.fullmatch(user):
        raise WorkspaceError(f"The remote workspace {raw} has an invalid user name {user!r}.", _FIX)
    host, port = _split_port(hostport, raw)
    if not _HOST.fullmatch(host):
        raise WorkspaceError(f"The remote workspace {raw} has an invalid host {host!r}.", _FIX)
    if "\x00" in path or "\n" in path:
        problem = f"The remote workspace {raw!r} has a control character in its path."
        raise WorkspaceError(problem, _FIX)
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return RemoteAddress(host=host, path=norm, user=user, port=port)


def _split_port(hostport: str, raw: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise WorkspaceError(f"The remote workspace {raw} has an unclosed [ in its host.", _FIX)
        host, tail = hostport[: end + 1], hostport[end + 1 :]
    else:
        host, sep, port_text = hostport.partition(":")
        tail = f":{port_text}" if sep else ""
    if not tail:
        return host, None
    digits = tail[1:]
    if not tail.startswith(":") or not digits.isdigit() or not 0 < int(digits) < 65536:
        raise WorkspaceError(f"The remote workspace {raw} has an invalid port {digits!r}.", _FIX)
    return host, int(digits)
