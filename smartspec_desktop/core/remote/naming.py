"""How a workspace is named to a person, local folder or remote address alike (issue 15).

A workspace's identity is a string: a local folder's normalised path or a remote workspace's
canonical ``ssh://`` address. These helpers never touch the file system, so a remote address is
never resolved as a local path and a remembered folder that is gone is still named.
"""

from __future__ import annotations

import os

from smartspec_desktop.core.errors import WorkspaceError
from smartspec_desktop.core.remote.address import RemoteAddress, is_remote, parse_remote

#: What a local-only feature says on a remote workspace (``<feature> is not available…``).
NOT_YET_FIX = "Use it on a local folder, or run it on the host itself for now."


def remote_of(workspace: str) -> RemoteAddress | None:
    """The parsed address of a remote workspace; None for a local one (or a broken address)."""
    if not is_remote(workspace):
        return None
    try:
        return parse_remote(workspace)
    except WorkspaceError:
        return None


def canonical(workspace: str) -> str:
    """A remote address in its canonical form; anything else unchanged."""
    addr = remote_of(workspace)
    return str(addr) if addr is not None else workspace


def workspace_name(workspace: str) -> str:
    """The folder's own name (like ``Path(ws).name``), for a remote one its remote folder's."""
    addr = remote_of(workspace)
    if addr is not None:
        return addr.name
    if is_remote(workspace):
        return workspace.strip()
    return os.path.basename(workspace.rstrip(os.sep)) or workspace


def workspace_host(workspace: str) -> str:
    """``user@host:port`` of a remote workspace; "" for a local one."""
    addr = remote_of(workspace)
    return addr.display_host if addr is not None else ""


def workspace_label(workspace: str) -> str:
    """The name a list shows: ``proj`` for a local folder, ``proj — me@devbox`` for a remote."""
    host = workspace_host(workspace)
    name = workspace_name(workspace)
    return f"{name} — {host}" if host else name


def not_for_remote(workspace: str, feature: str) -> WorkspaceError | None:
    """The error a local-only ``feature`` gives on a remote workspace; None on a local one."""
    if not is_remote(workspace):
        return None
    return WorkspaceError(f"{feature} is not available for remote workspaces yet.", NOT_YET_FIX)
