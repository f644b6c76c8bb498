"""The manager of per-workspace OpenCode servers: start (or reuse), look up, stop.

Rule: one workspace = one active server. A start holds a per-workspace file lock from the
registry check to "healthy", so two concurrent starts (two CLI runs, or the CLI and the window)
yield one server. Everything here blocks; the window calls it from worker threads.

Flow of a start: normalise the workspace → preflight (:mod:`.preflight`) → pick a port → run
``opencode serve`` under our supervisor (:class:`~..process.supervised.Supervised`, config and
environment from :mod:`.launch_config`) → wait until ``/global/health`` answers with our
password, racing the child's exit → record ``running``. A start that fails with
:class:`PortInUse` is retried on the next port, one with :class:`StartBusy` after a pause.
:mod:`.reconcile` keeps the records true to the process table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from filelock import Timeout

from smartspec_desktop.core import ports
from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.broker.modelids import write_models_config
from smartspec_desktop.core.broker.payload import broker_payload, new_token
from smartspec_desktop.core.errors import (
    BrokerUnavailable,
    PortInUse,
    ServerNotRunning,
    ServerStartError,
    SmartSpecError,
    StartBusy,
    StateError,
)
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.loopback import verify_for
from smartspec_desktop.core.opencode.binary import OpenCodeBinary, VersionCache, find_opencode
from smartspec_desktop.core.opencode.client import OpenCodeClient
from smartspec_desktop.core.process import idle
from smartspec_desktop.core.process.procs import ProcIdentity, kill_recorded
from smartspec_desktop.core.process.supervised import EarlyExit, NotReady, Supervised
from smartspec_desktop.core.redact import LazyRedactor, Redactor
from smartspec_desktop.core.remote import engine as remote_engine
from smartspec_desktop.core.remote.address import is_remote, parse_remote
from smartspec_desktop.core.remote.reap import ReapQueue
from smartspec_desktop.core.remote.server import remote_finder, spawn_remote
from smartspec_desktop.core.servers import history, preflight
from smartspec_desktop.core.servers.brokerlink import BrokerControl, BrokerFiles, broker_files
from smartspec_desktop.core.servers.launch_config import opencode_config, serve_argv, server_env
from smartspec_desktop.core.servers.preflight import Preflight, Progress
from smartspec_desktop.core.servers.privacy import (
    make_opencode_dirs_private,
    make_server_tmp_dir,
    remove_server_tmp_dir,
    server_tmp_root,
    temp_env,
)
from smartspec_desktop.core.servers.reconcile import LiveProcesses, ProcessTable, reconcile
from smartspec_desktop.core.servers.recovery import (
    FoundServer,
    find_our_servers,
    recover_lost,
    tidy_leftovers,
)
from smartspec_desktop.core.servers.registry import (
    Registry,
    ServerRecord,
    ServerStatus,
    same_workspace,
)
from smartspec_desktop.core.servers.trust import TAKES_EFFECT, TrustStore, apply_trust
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials

if TYPE_CHECKING:
    import httpx
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")

PORT_CONFLICT_MARKERS = ("ServeError", "EADDRINUSE", "address already in use", "port in use")
#: OpenCode's own SQLite database (in its data dir, shared by every server) is busy: two servers
#: starting at once on a fresh install both migrate it, and one exits ("database is locked", or
#: a failed ``CREATE TABLE`` of the migration the other one just ran). Worth another try.
TRANSIENT_MARKERS = ("database is locked", "CREATE TABLE")
MAX_PORT_ATTEMPTS = 4
#: How often (s) the process table is scanned for servers missing from the registry (F7) while
#: the state file does not change.
RESCAN_INTERVAL = 10.0

log = logging.getLogger(__name__)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def answers_healthy(http: httpx.Client, url: str, rejected: SmartSpecError) -> bool:
    """One start-up health probe of the server at ``url``: True once OpenCode says healthy;
    ``rejected`` is raised when something there refuses our password (not our server)."""
    try:
        r = http.get(url + "/global/health")
        if r.status_code == 401:
            raise rejected
        return r.status_code == 200 and r.json().get("healthy") is True
    except (httpx.HTTPError, ValueError):
        return False


def _pick(records: list[ServerRecord], workspace_or_id: str) -> ServerRecord | None:
    """The record with that server id, else the (active, latest) one of that workspace."""
    for r in records:
        if r.server_id == workspace_or_id:
            return r
    try:
        if is_remote(workspace_or_id):
            ws = str(parse_remote(workspace_or_id))  # a remote workspace (issue 15)
        else:
            ws = str(Path(workspace_or_id).expanduser().resolve())
    except (OSError, SmartSpecError):
        return None
    matches = [r for r in records if same_workspace(r.workspace_path, ws)]
    active = [r for r in matches if r.active]
    best = active or matches
    return best[-1] if best else None


def _age(rec: ServerRecord) -> float:
    """Seconds since the record was created (infinite when its time cannot be read)."""
    try:
        created = datetime.fromisoformat(rec.created_at)
    except ValueError:
        return float("inf")
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - created).total_seconds()


@dataclass
class StartResult:
    record: ServerRecord
    reused: bool
    warnings: list[str] = field(default_factory=list)


class ServerManager:
    def __init__(
        self,
        paths: Paths,
        settings: Settings,
        credentials: Credentials,
        *,
        environ: Mapping[str, str] | None = None,
        backend_factory: Callable[[str], BackendClient] = BackendClient,
        processes: ProcessTable | None = None,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.credentials = credentials
        self.environ = os.environ if environ is None else environ
        self.backend_factory = backend_factory
        self.processes: ProcessTable = processes or LiveProcesses()
        self.registry = Registry(paths.servers_file, legacy_file=paths.legacy_servers_file)
        self.trust = TrustStore(paths.trust_file)
        self.version_cache = VersionCache(paths.state_dir / "opencode-version.json")
        self.me = ProcIdentity.of(os.getpid())
        #: Supervisors this process spawned, so they are reaped (no zombies) while we live.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()
        #: Finds our live server supervisors from their argv (F7: a damaged registry).
        self.find_servers: Callable[[Path], list[FoundServer]] = find_our_servers
        #: The last scan: (state file signature, monotonic time, what it found).
        self._last_scan: tuple[object, float, list[FoundServer]] | None = None
        #: Told the workspace of each server this manager started afresh (not reused), on the
        #: starting thread: the recent-workspaces list is its owner's (the CLI's core, the
        #: window's settings service), not the manager's.
        self.on_fresh_start: Callable[[str], None] = lambda _ws: None
        #: Remote servers to kill that could not be reached yet (issue 15), and the ids of
        #: those this process already stopped on their host.
        self.reap_queue = ReapQueue(paths.state_dir / "remote-reap.json")
        self._remote_done: set[str] = set()

    # ------------------------------------------------------------------------------ queries

    def find_opencode(self) -> OpenCodeBinary:
        return find_opencode(
            self.settings.opencode_path, self.paths.managed_opencode_dir, self.version_cache
        )

    def refresh(self) -> list[ServerRecord]:
        """Bring every record up to date with the processes (no HTTP); return them all."""
        self._reap_children()
        with self.registry.transaction() as records:
            found = self._recover(records)
            for sid in list(records):
                rec = records[sid]
                keep = reconcile(rec, self.processes)
                if rec.children and not (keep and rec.active):
                    # A child (openwork-server) is useless once its server is gone.
                    self._kill_children(rec)
                if not keep:
                    self._forget(records, sid, reason="its processes are gone")
                elif rec.host and rec.status == ServerStatus.CRASHED and rec.remote_pid:
                    self._queue_remote_reap(rec)  # disconnected: its remote side must go too
                elif rec.host and rec.status == ServerStatus.RUNNING:
                    remote_engine.apply_link(rec)  # reconnecting, or connected again
            self._tidy(records, found)
            current = sorted(records.values(), key=lambda r: r.created_at)
        self.reap_queue.run(self.environ)  # remote servers left unowned (issue 15)
        return self._settle_orphaned_starts(current)

    # ------------------------------------------------ lost servers, orphaned starts (F7, F14)

    @property
    def exits_dir(self) -> Path:
        return self.paths.state_dir / "exits"

    def _recover(self, records: dict[str, ServerRecord]) -> list[FoundServer]:
        """Record again every live server of ours the registry lost (F7); the live ones.

        The process table is scanned when the state file changed (or vanished) since the last
        scan, and at most every ``RESCAN_INTERVAL`` s otherwise (the window polls often)."""
        try:
            st = self.registry.file.stat()
            signature: object = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            signature = None
        now = time.monotonic()
        last = self._last_scan
        if last is not None and last[0] == signature and now - last[1] < RESCAN_INTERVAL:
            return last[2]
        found = self.find_servers(self.exits_dir)
        self._last_scan = (signature, now, found)
        added = recover_lost(records, found)
        if added:
            self.registry.warnings.append(
                f"Found {len(added)} running server(s) missing from the state file "
                f"{self.registry.file} (damaged or deleted?): "
                + ", ".join(r.workspace_path for r in added)
                + ". They are listed again and can be stopped as usual."
            )
        return found

    def _tidy(self, records: dict[str, ServerRecord], found: list[FoundServer]) -> None:
        """Remove password files, exit records and temp folders no server owns (F7, F15)."""
        live = {f.server_id for f in found}
        tidy_leftovers(
            secrets_dir=self.paths.state_dir / "secrets",
            exits_dir=self.exits_dir,
            tmp_root=server_tmp_root(self.paths.state_dir),
            keep=live | set(records),
            keep_tmp=live | {sid for sid, r in records.items() if r.active},
        )

    def _settle_orphaned_starts(self, current: list[ServerRecord]) -> list[ServerRecord]:
        """A ``starting`` server whose starter is gone (a CLI killed mid-start, or one found
        again by :meth:`_recover`) is adopted as ``running`` once healthy, or cleared when it
        never becomes healthy: never "starting" forever (F14)."""
        out = []
        for rec in current:
            orphan = (
                rec.status == ServerStatus.STARTING
                and rec.pid
                and not self.processes.alive(rec.owner_pid, rec.owner_create_time)
            )
            if not orphan:
                out.append(rec)
            elif not self.credentials.server_password(rec.server_id):
                # Nobody can use it, but it runs (and may hold work): say so, do not kill it.
                out.append(
                    self._adopt(
                        rec,
                        "Its password was lost with the state file: stop it and start it again "
                        "to use it.",
                    )
                )
            elif self._healthy(rec, tries=1):
                log.info("adopting the server of %s: its start was interrupted", rec.workspace_path)
                out.append(self._adopt(rec))
            elif _age(rec) > self.settings.start_timeout + 30:
                log.warning(
                    "clearing the server of %s: its start was interrupted and it never "
                    "became ready",
                    rec.workspace_path,
                )
                self.terminate(rec, grace=3.0)
                with self.registry.transaction() as records:
                    self._forget(records, rec.server_id, reason="its start never finished")
            else:
                out.append(rec)  # still starting up: truthfully "starting", for now
        return out

    def _adopt(self, rec: ServerRecord, error: str = "") -> ServerRecord:
        with self.registry.transaction() as records:
            if rec.server_id in records:
                rec = records[rec.server_id]
                rec.status, rec.error = ServerStatus.RUNNING, error
                rec.owner_pid, rec.owner_create_time = 0, 0.0
        return rec

    def list_servers(self) -> list[ServerRecord]:
        return self.refresh()

    def get(self, workspace_or_id: str) -> ServerRecord | None:
        return _pick(self.refresh(), workspace_or_id)

    def password(self, record: ServerRecord) -> str:
        pw = self.credentials.server_password(record.server_id)
        if not pw:
            raise ServerNotRunning(
                f"The password of the server for {record.workspace_path} is gone "
                "(keyring cleared?).",
                "Stop the server and start it again.",
            )
        return pw

    def client(self, record: ServerRecord, *, timeout: float = 30.0) -> OpenCodeClient:
        if record.status != ServerStatus.RUNNING:
            raise ServerNotRunning(
                f"The server for {record.workspace_path} is {record.status}.",
                "Start it first (`smartspec-desktop start PATH`).",
            )
        idle.mark_active(record.exit_file)
        client = OpenCodeClient(record.url, self.password(record), timeout=timeout)
        client.remote_host = record.host
        if record.host:
            client.remote_workspace = record.workspace_path
        return client

    # ------------------------------------------------------------------------------- start

    def start(self, workspace: str, *, progress: Progress | None = None) -> StartResult:
        say = progress or (lambda _msg: None)
        ws = preflight.normalize_workspace(workspace)
        warnings = self.registry.drain_warnings()
        lock = self.registry.workspace_lock(ws, timeout=self.settings.start_timeout + 60)
        try:
            # The lock is another process's as often as ours: only a try tells.
            lock.acquire(timeout=0)
        except Timeout:
            say(f"Waiting for other starts of {ws} …")
            lock.acquire()
        else:
            say("")
        try:
            record, reused = self._start_locked(ws, say, warnings)
            idle.mark_active(record.exit_file)  # about to be used: not the moment to sleep
        finally:
            lock.release()
        if not reused:
            self.on_fresh_start(ws)
        elif record.trusted != self.trust.is_trusted(ws):
            warnings.append(self.trust_mismatch(record))
        warnings += self.trust.drain_warnings()
        return StartResult(record, reused, warnings + self.registry.drain_warnings())

    def _start_locked(
        self, ws: str, say: Progress, warnings: list[str]
    ) -> tuple[ServerRecord, bool]:
        reused = self._reuse_or_clear(ws, say)
        if reused is not None:
            return reused, True
        # Everything that can be checked before spawning; each failure is its own error.
        finder = (lambda: remote_finder(self, ws)) if is_remote(ws) else self.find_opencode
        if is_remote(ws):
            say(f"Connecting to {parse_remote(ws).display_host} …")
        pre = preflight.run_preflight(
            self.settings, self.credentials, finder, self.backend_factory, say
        )
        if pre.binary.warning:
            warnings.append(pre.binary.warning)
        exclude = {r.port for r in self.refresh() if r.active}
        last_error: SmartSpecError | None = None
        for _attempt in range(MAX_PORT_ATTEMPTS):
            port, preferred = ports.pick_port(self.settings.port_range(), exclude)
            note = ""
            if not preferred:
                a, b = self.settings.port_range()
                note = f"ports {a}-{b} were busy; using {port} instead"
                warnings.append(note[0].upper() + note[1:] + ".")
            say(f"Starting OpenCode {pre.binary.version} on 127.0.0.1:{port} …")
            try:
                return self._spawn_and_wait(ws, port, note, pre), False
            except PortInUse as e:
                last_error = e
                log.info("port %s was taken before the server bound it; retrying", port)
                exclude.add(port)
            except StartBusy as e:
                last_error = e
                log.info("OpenCode hit a transient error; retrying: %s", e)
                time.sleep(0.5)
        assert last_error is not None
        raise last_error

    @staticmethod
    def trust_mismatch(record: ServerRecord) -> str:
        """Why a running server does not (yet) follow the workspace's trust setting."""
        was = "with" if record.trusted else "without"
        return (
            f"The running server for {record.workspace_path} was started {was} the folder's own "
            f"plugins and MCP servers. {TAKES_EFFECT} Stop it and start it again."
        )

    def _reuse_or_clear(self, ws: str, say: Progress) -> ServerRecord | None:
        """Return the live server of ``ws`` (adopting an orphaned start), or clear stale ones."""
        for rec in self.refresh():
            if not same_workspace(rec.workspace_path, ws):
                continue
            if rec.status in (ServerStatus.RUNNING, ServerStatus.STARTING) and self._healthy(rec):
                if rec.status == ServerStatus.STARTING:
                    say("Adopting a server whose start was interrupted …")
                    with self.registry.transaction() as records:
                        if rec.server_id in records:
                            records[rec.server_id].status = ServerStatus.RUNNING
                            rec = records[rec.server_id]
                return rec
            if rec.status == ServerStatus.SLEEPING:
                say("Waking the sleeping server …")
            elif rec.active:
                say("Clearing a server that does not answer …")
            self.terminate(rec)
            with self.registry.transaction() as records:
                self._forget(records, rec.server_id, reason="replaced by a new start")
        return None

    def _healthy(self, rec: ServerRecord, tries: int = 3) -> bool:
        pw = self.credentials.server_password(rec.server_id)
        if not pw or not rec.url:
            return False
        with OpenCodeClient(rec.url, pw) as c:
            for _ in range(tries):
                try:
                    return bool(c.health(timeout=2.0).get("healthy"))
                except SmartSpecError:
                    time.sleep(0.2)
        return False

    def _spawn_and_wait(self, ws: str, port: int, note: str, pre: Preflight) -> ServerRecord:
        if is_remote(ws):
            return spawn_remote(self, ws, port, note, pre)  # over ssh (core/remote, issue 15)
        server_id = "srv_" + uuid.uuid4().hex[:16]
        password = secrets.token_urlsafe(24)
        self.paths.ensure()
        log_path = self.paths.server_log_dir / f"{server_id}.log"
        exit_file = self.paths.state_dir / "exits" / f"{server_id}.json"
        tmp_dir = make_server_tmp_dir(self.paths.state_dir, server_id)  # F15
        store = self.credentials.save_server_password(server_id, password)
        files, control, payload = self.broker_setup(ws, server_id, pre, password)
        env = server_env(
            self.environ,
            password=password,
            config=opencode_config(pre.model, agent_permissions=self.settings.agent_permissions),
            models_file=files.models_file,
        )
        trusted = self.trust.is_trusted(ws)
        apply_trust(env, trusted)
        env.update(temp_env(tmp_dir))  # its temp files go, and are removed, with it (F15)
        make_opencode_dirs_private(env)  # its conversations are no one else's (F11)
        url = f"http://{ports.HOST}:{port}"
        record = ServerRecord(
            server_id=server_id,
            workspace_path=ws,
            status=ServerStatus.STARTING,
            created_at=_now_iso(),
            port=port,
            url=url,
            owner_pid=self.me.pid if self.me else 0,
            owner_create_time=self.me.create_time if self.me else 0.0,
            opencode_version=pre.binary.version,
            opencode_path=pre.binary.path,
            model=pre.model,
            backend_url=self.settings.backend_url,
            log_path=str(log_path),
            exit_file=str(exit_file),
            password_store=store,
            port_note=note,
            trusted=trusted,
        )
        with self.registry.transaction() as records:
            records[server_id] = record
        idle_args = idle.supervisor_args(self.idle_minutes(ws))  # idle servers sleep (issue 15)
        try:
            with Supervised.spawn(
                serve_argv(pre.binary.path, port),
                name="OpenCode",
                log_path=log_path,
                exit_file=exit_file,
                cwd=ws,
                env=env,
                supervisor_args=["--broker", *idle_args],
                stdin_payload=payload,
                on_spawn=lambda popen: self.track(server_id, popen),
            ) as proc:
                del payload
                record = self.record_spawn(server_id, proc)
                self._wait_ready(proc, record, password)
                self._sync_day_cap(record, control)
                proc.keep()
        except BaseException as e:
            # Nothing half-started survives: the handle killed what it spawned; drop the
            # record and the secret.
            with self.registry.transaction() as records:
                self._forget(records, server_id, reason="its start failed")
            if isinstance(e, SmartSpecError | KeyboardInterrupt):
                raise
            log.exception("unexpected error while starting %s", ws)
            raise ServerStartError(
                f"Starting OpenCode for {ws} failed unexpectedly ({type(e).__name__}: {e}).",
                "See the app log for details.",
            ) from e
        return self.mark_running(server_id)

    def broker_setup(
        self, ws: str, server_id: str, pre: Preflight, password: str
    ) -> tuple[BrokerFiles, str, bytes]:
        """A new server's gateway broker: its files (the model list written), its control
        token (saved), and the payload for its supervisor. The key goes to the broker over a
        pipe; the server gets a token of its own for the broker (issue 9)."""
        files = broker_files(self.paths, ws, server_id)
        write_models_config(files.models_file, pre.models)
        token, control = new_token(), new_token()
        self.credentials.save_broker_control(server_id, control)
        payload = broker_payload(
            key=pre.api_key,
            token=token,
            control_token=control,
            upstream=self.settings.backend_url,
            meter_file=files.meter_file,
            budget_file=files.budget_file,
            day_cap=self.settings.workspace_day_caps.get(ws),
            redact=[password],
        )
        return files, control, payload

    def record_spawn(self, server_id: str, proc: Supervised) -> ServerRecord:
        """Record what a start just spawned (the supervisor, its program, its broker)."""
        with self.registry.transaction() as records:
            rec = records[server_id]
            rec.pid, rec.create_time = proc.pid, proc.create_time
            rec.broker_port = _port(proc.handshake.fields.get("broker_port"))
            rec.supervisor_pid = proc.supervisor_pid
            rec.supervisor_create_time = proc.supervisor_create_time
            return rec

    def mark_running(self, server_id: str) -> ServerRecord:
        """A start succeeded: the server is running and no longer held by a starting process."""
        with self.registry.transaction() as records:
            rec = records[server_id]
            rec.status = ServerStatus.RUNNING
            rec.owner_pid, rec.owner_create_time = 0, 0.0
            return rec

    def _wait_ready(self, proc: Supervised, record: ServerRecord, password: str) -> None:
        timeout = self.settings.start_timeout
        # Requests sent while the server initialises can hang: short timeouts, many tries.
        with httpx.Client(
            auth=("opencode", password),
            timeout=httpx.Timeout(1.0),
            trust_env=False,
            verify=verify_for(record.url),
        ) as http:

            def healthy() -> bool:
                return answers_healthy(
                    http,
                    record.url,
                    PortInUse(
                        f"Port {record.port} is answered by a server that rejects our "
                        "password (another program?).",
                        "Free that port or change the preferred port range in Settings.",
                    ),
                )

            try:
                proc.wait_ready(healthy, time.monotonic() + timeout)
            except EarlyExit as e:
                kind = (
                    PortInUse
                    if e.mentions(PORT_CONFLICT_MARKERS)
                    else StartBusy
                    if e.mentions(TRANSIENT_MARKERS)
                    else ServerStartError
                )
                raise kind(
                    f"OpenCode exited during start-up ({e.how}): {e.summary}",
                    f"See the server log {record.log_path}; check the workspace and OpenCode "
                    "install.",
                    details=e.tail,
                ) from None
            except NotReady as e:
                raise ServerStartError(
                    f"OpenCode did not become ready within {timeout:.0f} s.",
                    "See the server log below; raise the start timeout in Settings if your "
                    "machine is slow.",
                    details=e.tail,
                ) from None

    # -------------------------------------------------------------------------------- stop

    def stop(self, workspace_or_id: str, *, grace: float = 5.0) -> ServerRecord:
        """Stop a server: kill first, record after (F6), so a full disk, a read-only or a
        vanished state folder never keeps a server running. When the stop cannot be recorded,
        the server is still stopped and a warning (the real problem and its fix) is queued
        in ``registry.warnings``."""
        rec, problem = self._find_to_stop(workspace_or_id)
        if rec is None:
            if problem is not None:
                raise problem
            raise ServerNotRunning(
                f"No server is known for {workspace_or_id}.",
                "See `smartspec-desktop status` for the running ones.",
            )
        if problem is None:
            # "stopping" first (when it can be recorded), so no other run calls it crashed.
            problem = self._try_record(rec.server_id, self._mark_stopping)
        leftovers = self.terminate(rec, grace=grace)
        if problem is None:
            problem = self._try_record(rec.server_id, self._forget_stopped)
        if problem is not None:
            # Its secret, exit record and temp folder go anyway (each best effort).
            self._forget({rec.server_id: rec}, rec.server_id, reason="stopped (not recorded)")
            self.registry.warnings.append(
                f"The server for {rec.workspace_path} was stopped, but the stop could not be "
                f"recorded: {problem}"
            )
        if leftovers:
            raise ServerStartError(
                f"{len(leftovers)} process(es) of the server for {rec.workspace_path} "
                "would not exit.",
                f"Kill them by hand: pids {', '.join(str(p.pid) for p in leftovers)}.",
            )
        rec.status = ServerStatus.STOPPED
        return rec

    def _find_to_stop(self, workspace_or_id: str) -> tuple[ServerRecord | None, StateError | None]:
        """The server to stop, and the state problem met while looking (then read-only: the
        registry as it is on disk, plus the servers found from their argv)."""
        try:
            return self.get(workspace_or_id), None
        except StateError as e:
            return _pick(self._read_only_view(), workspace_or_id), e

    def _read_only_view(self) -> list[ServerRecord]:
        """The records on disk plus the servers found from their argv, changing nothing."""
        try:
            records = self.registry.snapshot()
        except OSError:
            records = {}
        recover_lost(records, self.find_servers(self.exits_dir))
        return sorted(records.values(), key=lambda r: r.created_at)

    def _try_record(
        self, server_id: str, change: Callable[[dict[str, ServerRecord], str], None]
    ) -> StateError | None:
        try:
            with self.registry.transaction() as records:
                change(records, server_id)
        except StateError as e:
            log.info("could not record a stop: %s", e)
            return e
        return None

    @staticmethod
    def _mark_stopping(records: dict[str, ServerRecord], server_id: str) -> None:
        if server_id in records and records[server_id].active:
            records[server_id].status = ServerStatus.STOPPING

    def _forget_stopped(self, records: dict[str, ServerRecord], server_id: str) -> None:
        self._forget(records, server_id, reason="stopped")

    def stop_all(self, *, owned_only: bool = False, grace: float = 5.0) -> list[ServerRecord]:
        stopped = []
        try:
            current = self.refresh()
        except StateError:
            # Stop them anyway (F6); each stop queues the warning that names the problem.
            current = self._read_only_view()
        for rec in current:
            if owned_only and not self.owns(rec.server_id):
                continue
            if rec.active or rec.status == ServerStatus.SLEEPING:
                stopped.append(self.stop(rec.server_id, grace=grace))
        return stopped

    def terminate(self, rec: ServerRecord, grace: float = 5.0) -> list[psutil.Process]:
        """Kill the server's whole tree, but only processes that are provably ours."""
        # Children first (e.g. openwork-server, in process groups of their own), then the server.
        leftovers = self._kill_children(rec, grace=grace)
        leftovers += kill_recorded(
            [(rec.supervisor_pid, rec.supervisor_create_time), (rec.pid, rec.create_time)],
            grace=grace,
        )
        self._reap_children()
        if rec.host and rec.remote_pid:
            self._kill_remote(rec)
        return leftovers

    def _kill_remote(self, rec: ServerRecord) -> None:
        """Make sure a remote server is gone (its wrapper stops it when the connection closes;
        this checks, identity-checked), else queue it for the next run (issue 15)."""
        self._remote_done.add(rec.server_id)
        try:
            remote_engine.kill_remote(
                parse_remote(rec.workspace_path),
                rec.remote_pid,
                rec.remote_start,
                rec.server_id,
                environ=self.environ,
            )
        except SmartSpecError as e:
            log.info("could not reach %s to stop its server: %s", rec.host, e.problem)
            self.reap_queue.add(rec.server_id, rec.workspace_path, rec.remote_pid, rec.remote_start)

    def _queue_remote_reap(self, rec: ServerRecord) -> None:
        if rec.server_id not in self._remote_done:
            self.reap_queue.add(rec.server_id, rec.workspace_path, rec.remote_pid, rec.remote_start)
        rec.remote_pid, rec.remote_start = 0, 0  # queued once

    @staticmethod
    def _kill_children(rec: ServerRecord, grace: float = 5.0) -> list[psutil.Process]:
        """Kill the processes recorded in ``rec.children`` (identity-checked)."""
        return kill_recorded(
            [ident for child in rec.children for ident in child.identities()], grace=grace
        )

    def track(self, key: str, popen: subprocess.Popen[bytes]) -> None:
        """Keep a supervisor this process spawned, so it is reaped (no zombie) while we live.

        ``key`` is a server id, or ``<server id>/<kind>/<pid>`` for a server's child.
        """
        with self._children_lock:
            self._children[key] = popen

    def _reap_children(self) -> None:
        with self._children_lock:
            for sid, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[sid]

    def owns(self, server_id: str) -> bool:
        """Whether this process spawned the server (the window stops only its own on quit)."""
        with self._children_lock:
            return server_id in self._children

    def idle_minutes(self, workspace: str) -> float:
        """The idle timeout of ``workspace``'s server in minutes (0 = never; issue 15)."""
        return idle.effective_minutes(
            self.settings.idle_minutes,
            self.settings.idle_minutes_by_workspace,
            workspace,
            self.environ,
        )

    # ---------------------------------------------------------------------------- upkeep

    def _forget(self, records: dict[str, ServerRecord], sid: str, *, reason: str) -> None:
        rec = records.pop(sid, None)
        if rec is None:
            return
        log.info("forgetting server %s of %s: %s", sid, rec.workspace_path, reason)
        if rec.host and rec.remote_pid:
            self._queue_remote_reap(rec)
        if rec.host and rec.exit_file:
            with contextlib.suppress(OSError):
                remote_engine.link_file(rec.exit_file).unlink(missing_ok=True)
        history.remember(self.paths, rec)  # `logs PATH` still finds its log afterwards
        with contextlib.suppress(SmartSpecError, OSError):
            self.credentials.delete_server_password(sid)
        with contextlib.suppress(SmartSpecError, OSError):
            self.credentials.delete_broker_control(sid)
        with contextlib.suppress(OSError):
            broker_files(self.paths, rec.workspace_path, sid).models_file.unlink(missing_ok=True)
        remove_server_tmp_dir(self.paths.state_dir, sid)
        for exit_file in [rec.exit_file] + [c.exit_file for c in rec.children]:
            if exit_file:
                with contextlib.suppress(OSError):
                    Path(exit_file).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    idle.activity_file(exit_file).unlink(missing_ok=True)

    def redactor_key(self) -> str:
        """The API key to redact from logs, or "" when none is configured."""
        try:
            return self.credentials.api_key()[0]
        except SmartSpecError:
            return ""

    def redactor(self) -> Redactor:
        return Redactor([self.redactor_key()])

    def lazy_redactor(self) -> Redactor:
        """:meth:`redactor`, asking for the key only once there is a text to redact: a command
        that logs nothing (a plain ``status``) never touches the keyring (issue 11)."""
        return LazyRedactor(lambda: [self.redactor_key()])

    # ------------------------------------------------------------------ gateway broker (issue 9)

    def broker(self, record: ServerRecord, *, timeout: float = 5.0) -> BrokerControl:
        """The control API of ``record``'s gateway broker."""
        token = self.credentials.broker_control(record.server_id)
        if not record.broker_port or not token:
            raise BrokerUnavailable(
                f"The server for {record.workspace_path} has no gateway broker this app can "
                "reach (started by an older version, or its secrets were cleared).",
                "Stop the server and start it again.",
            )
        return BrokerControl(record.broker_port, token, timeout=timeout)

    def _sync_day_cap(self, record: ServerRecord, control: str) -> None:
        """Settings are the truth for the day's cap (also when it was removed)."""
        cap = self.settings.workspace_day_caps.get(record.workspace_path)
        if record.broker_port:
            BrokerControl(record.broker_port, control).set_day_cap(cap)

    def set_day_cap(self, workspace: str, cap: int | None) -> list[str]:
        """Remember the workspace's daily token cap and give it to its running broker.

        Returns warnings (the running server could not be told). The caller saves settings.
        """
        ws = preflight.normalize_workspace(workspace)
        if cap is None:
            self.settings.workspace_day_caps.pop(ws, None)
        else:
            self.settings.workspace_day_caps[ws] = cap
        rec = self.get(ws)
        if rec is None or rec.status != ServerStatus.RUNNING:
            return []
        try:
            self.broker(rec).set_day_cap(cap)
        except BrokerUnavailable as e:
            return [str(e)]
        return []

    def apply_day_caps(self) -> list[str]:
        """Give every running server's broker its workspace's daily cap from the settings."""
        warnings = []
        for rec in self.refresh():
            if rec.status != ServerStatus.RUNNING or not rec.broker_port:
                continue
            try:
                self.broker(rec).set_day_cap(
                    self.settings.workspace_day_caps.get(rec.workspace_path)
                )
            except BrokerUnavailable as e:
                warnings.append(str(e))
        return warnings

    def push_key(self, key: str | None) -> list[str]:
        """Give every running server's broker the new key (None: drop it), no restart.

        Returns one warning per server that could not be told.
        """
        warnings = []
        for rec in self.refresh():
            if rec.status != ServerStatus.RUNNING or not rec.broker_port:
                continue
            try:
                self.broker(rec).set_key(key)
            except BrokerUnavailable as e:
                warnings.append(str(e))
        return warnings

    def current_key(self) -> str | None:
        """The key a new start would use (None when there is none)."""
        try:
            return self.credentials.api_key()[0]
        except SmartSpecError:
            return None


def _port(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    return 0
