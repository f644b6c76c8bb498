"""Servers found from the process table alone, and what forgotten servers left behind.

**A damaged registry loses no server (F7).** Every server we start runs under a supervisor whose
argv is unique to it: ``--log <log> --exit-file <state>/exits/<server id>.json --cwd <workspace>
-- opencode serve … --port <port>``. :func:`find_our_servers` reads those argvs (our own user's
supervisors only, :func:`..process.procs.is_supervisor`), so a truncated, garbage or deleted
``servers.json`` (or ``sessions.json``) still lets the app report, reuse and stop every server it
started: :func:`recovered_record` turns one into a record again.

**No litter (F15, F7).** :func:`tidy_leftovers` removes what belongs to no known and no running
server: password files, exit records and private temp folders (:mod:`.privacy`). A start writes
its password file and temp folder a moment before its record, so only files older than
``grace`` seconds are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from smartspec_desktop.core import ports
from smartspec_desktop.core.process.procs import ProcIdentity, is_supervisor
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus

log = logging.getLogger(__name__)

#: A server's exit record is ``<state>/exits/<server id>.json`` (its children's have more dots).
SERVER_EXIT_FILE = re.compile(r"^(srv_[0-9a-f]{16})\.json$")
#: The password file of a server in the fallback store (:class:`..storage.secrets.FileStore`).
PASSWORD_FILE = re.compile(r"^server-password_(srv_[0-9a-f]{16})$")
#: Files younger than this may belong to a start that has not recorded its server yet.
LEFTOVER_GRACE = 120.0


@dataclass(frozen=True)
class FoundServer:
    """One of our server supervisors, as its argv describes it."""

    server_id: str
    workspace: str
    log_path: str
    exit_file: str
    supervisor: ProcIdentity
    #: The supervised ``opencode serve`` (None when it has already ended).
    program: ProcIdentity | None
    port: int
    opencode_path: str


def _flag(cmd: list[str], flag: str) -> str:
    head = cmd[: cmd.index("--")] if "--" in cmd else cmd
    for i, arg in enumerate(head[:-1]):
        if arg == flag:
            return head[i + 1]
    return ""


def parse_supervisor(cmd: list[str], exits_dir: Path) -> tuple[str, str, str, str, int, str] | None:
    """``(server id, workspace, log, exit file, port, opencode path)`` from a supervisor's argv
    when it runs one of our servers whose exit record is in ``exits_dir``; else None."""
    if not is_supervisor(cmd) or "--" not in cmd:
        return None
    exit_file = _flag(cmd, "--exit-file")
    match = SERVER_EXIT_FILE.match(os.path.basename(exit_file))
    if match is None or os.path.normpath(os.path.dirname(exit_file)) != os.path.normpath(
        str(exits_dir)
    ):
        return None
    program = cmd[cmd.index("--") + 1 :]
    remote = _flag(cmd, "--workspace") if "--remote" in cmd[: cmd.index("--")] else ""
    if "serve" not in program and not remote:
        return None
    port = 0
    with contextlib.suppress(ValueError, IndexError):
        if remote:
            # A remote workspace's ssh (issue 15): its local forward is the server's URL.
            port = int(program[program.index("-L") + 1].split(":")[1])
        else:
            port = int(program[program.index("--port") + 1])
    return (
        match[1],
        remote or _flag(cmd, "--cwd"),
        _flag(cmd, "--log"),
        exit_file,
        port,
        program[0] if program else "",
    )


#: What every supervisor argv :func:`parse_supervisor` accepts holds (``--exit-file``), as it
#: reads in ``/proc/PID/cmdline``.
_ARGV_MARK = b"\0--exit-file\0"


def _candidates(attrs: list[str]) -> Iterator[tuple[psutil.Process, dict[str, Any]]]:
    """The processes that may be our supervisors, with ``attrs`` (as ``process_iter`` gives).

    On Linux only those whose argv has ``--exit-file``, read straight from ``/proc`` (one small
    read each instead of psutil's three files: the scan runs in every CLI command, issue 11)."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        for proc in psutil.process_iter(attrs):
            yield proc, proc.info
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if _ARGV_MARK not in b"\0" + f.read():
                    continue
            proc = psutil.Process(int(entry))
            info = proc.as_dict(attrs)
        except (OSError, psutil.Error):  # gone meanwhile, or not ours to read
            continue
        yield proc, info


def find_our_servers(exits_dir: Path) -> list[FoundServer]:
    """Every live supervisor of ours (this user's) running a server of this data folder."""
    found: list[FoundServer] = []
    for proc, info in _candidates(["cmdline", "uids", "create_time"]):
        try:
            uids = info["uids"]
            if sys.platform != "win32" and (uids is None or uids.real != os.getuid()):
                continue
            parsed = parse_supervisor(info["cmdline"] or [], exits_dir)
            if parsed is None or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            program = None
            for child in proc.children():
                with contextlib.suppress(psutil.Error):
                    if child.status() != psutil.STATUS_ZOMBIE:
                        program = ProcIdentity(child.pid, child.create_time())
                        break
        except psutil.Error:
            continue
        sid, ws, log_path, exit_file, port, binary = parsed
        supervisor = ProcIdentity(proc.pid, info["create_time"])
        found.append(FoundServer(sid, ws, log_path, exit_file, supervisor, program, port, binary))
    return found


def recovered_record(found: FoundServer) -> ServerRecord:
    """A record for a server the registry lost: ``starting`` with no owner, so the next refresh
    asks it for its health and adopts it as ``running`` (or clears it)."""
    created = datetime.fromtimestamp(found.supervisor.create_time, timezone.utc)
    program = found.program
    return ServerRecord(
        server_id=found.server_id,
        workspace_path=found.workspace,
        host=_host_of(found.workspace),
        status=ServerStatus.STARTING,
        created_at=created.isoformat(timespec="seconds"),
        port=found.port,
        url=f"http://{ports.HOST}:{found.port}" if found.port else "",
        pid=program.pid if program else 0,
        create_time=program.create_time if program else 0.0,
        supervisor_pid=found.supervisor.pid,
        supervisor_create_time=found.supervisor.create_time,
        opencode_path=found.opencode_path,
        log_path=found.log_path,
        exit_file=found.exit_file,
        error="",
    )


def _host_of(workspace: str) -> str:
    from smartspec_desktop.core.errors import WorkspaceError
    from smartspec_desktop.core.remote.address import is_remote, parse_remote

    if not is_remote(workspace):
        return ""
    try:
        return parse_remote(workspace).display_host
    except WorkspaceError:
        return ""


def recover_lost(
    records: dict[str, ServerRecord], found: Iterable[FoundServer]
) -> list[ServerRecord]:
    """Add to ``records`` every running server missing from them; return those added."""
    added = []
    for server in found:
        if server.server_id in records or server.program is None:
            continue
        rec = recovered_record(server)
        records[rec.server_id] = rec
        added.append(rec)
        log.warning(
            "found the server of %s (pid %s) running but missing from the state file; "
            "recorded it again",
            rec.workspace_path,
            rec.pid,
        )
    return added


def _old(path: Path, now: float, grace: float) -> bool:
    try:
        return now - path.lstat().st_mtime > grace
    except OSError:
        return False


def tidy_leftovers(
    *,
    secrets_dir: Path,
    exits_dir: Path,
    tmp_root: Path,
    keep: Collection[str],
    keep_tmp: Collection[str],
    grace: float = LEFTOVER_GRACE,
) -> list[Path]:
    """Remove password files and exit records of servers not in ``keep`` (the known and the
    running ones), and temp folders of servers not in ``keep_tmp`` (the active and the running
    ones: a crashed server's record stays, its temp files need not), older than ``grace``
    seconds; return what went."""
    now = time.time()
    removed: list[Path] = []
    for folder, pattern in ((secrets_dir, PASSWORD_FILE), (exits_dir, SERVER_EXIT_FILE)):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                match = pattern.match(entry.name)
                if match and match[1] not in keep and _old(Path(entry.path), now, grace):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp_root):
            if entry.name not in keep_tmp and _old(Path(entry.path), now, grace):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                removed.append(Path(entry.path))
    for path in removed:
        log.info("removed %s: it belonged to a server that is gone", path)
    return removed
