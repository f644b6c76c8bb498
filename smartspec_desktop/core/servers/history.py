"""The last server of each workspace, kept after it is forgotten (stopped), so that
``logs PATH`` still finds its log on disk.

``last-servers.json`` in the state folder maps each workspace (normcased) to the public fields of
its last record (no secret: the password lives in the keyring or its own file, and is deleted
when the record is forgotten). Written by :meth:`ServerManager._forget`, which runs inside the
registry's file-locked transaction, so writers never race.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from smartspec_desktop.core.errors import WorkspaceError
from smartspec_desktop.core.remote.address import is_remote, parse_remote
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus, record_from_json
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object
from smartspec_desktop.core.storage.paths import Paths

log = logging.getLogger(__name__)

#: How many workspaces are remembered (the oldest are dropped).
KEEP = 50


def history_file(paths: Paths) -> Path:
    return paths.state_dir / "last-servers.json"


def _key(workspace: str) -> str:
    return os.path.normcase(workspace)


def remember(paths: Paths, rec: ServerRecord) -> None:
    """Keep ``rec`` as its workspace's last server (call inside the registry's transaction)."""
    data, _warning = read_json_object(history_file(paths))
    servers = data.get("servers") if isinstance(data.get("servers"), dict) else {}
    assert isinstance(servers, dict)
    servers.pop(_key(rec.workspace_path), None)
    entry = dataclasses.asdict(rec)
    entry["status"] = rec.status.value
    servers[_key(rec.workspace_path)] = entry
    while len(servers) > KEEP:
        servers.pop(next(iter(servers)))
    try:
        atomic_write_json(history_file(paths), {"version": 1, "servers": servers})
    except OSError as e:
        log.info("could not remember the last server of %s: %s", rec.workspace_path, e)


def last_server(paths: Paths, workspace: str) -> ServerRecord | None:
    """The last (forgotten) server of ``workspace``, marked stopped; None if none was kept."""
    try:
        if is_remote(workspace):
            ws = str(parse_remote(workspace))  # a remote workspace (issue 15)
        else:
            ws = str(Path(workspace).expanduser().resolve())
    except (OSError, WorkspaceError):
        return None
    data, _warning = read_json_object(history_file(paths))
    servers = data.get("servers")
    raw = servers.get(_key(ws)) if isinstance(servers, dict) else None
    if not isinstance(raw, dict):
        return None
    rec = record_from_json(raw)
    if rec is not None and rec.active:
        rec.status = ServerStatus.STOPPED
    return rec
