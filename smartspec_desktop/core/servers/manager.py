"""Per-workspace OpenCode servers: start (or reuse), watch, stop.

Rule: one workspace = one active session. A start holds a per-workspace file lock from the
registry check to "healthy", so two concurrent starts (two CLI runs, or the CLI and the window)
yield one server. Everything here blocks; the window calls it from worker threads.

Flow of a start: normalise the workspace → preflight (workspace, opencode, key, backend) → pick a
port → spawn the supervisor, which spawns ``opencode serve`` in a new process group → wait until
``/global/health`` answers with our password, racing the child's exit → record ``running``.
A child that dies with "port in use" is retried on the next port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

from smartspec_desktop.core import ports
from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    RateLimited,
    ServerNotRunning,
    ServerStartError,
    SmartSpecError,
    WorkspaceError,
)
from smartspec_desktop.core.opencode.binary import OpenCodeBinary, VersionCache, find_opencode
from smartspec_desktop.core.opencode.client import OpenCodeClient
from smartspec_desktop.core.process.childenv import external_env
from smartspec_desktop.core.process.procs import (
    ProcIdentity,
    kill_popen_tree,
    kill_recorded,
    kill_tree,
    recorded_identities,
)
from smartspec_desktop.core.process.supervisor import supervised_command
from smartspec_desktop.core.redact import Redactor
from smartspec_desktop.core.servers.registry import (
    ACTIVE,
    CRASHED,
    RUNNING,
    STARTING,
    STOPPING,
    Registry,
    SessionRecord,
    same_workspace,
)
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import Credentials, check_api_key_format

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
T = TypeVar("T")

#: Variables of the user's environment that would change what the server does behind our back.
SCRUBBED_ENV = (
    "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR",
    "OPENCODE_CONFIG_CONTENT",
    "OPENCODE_SERVER_USERNAME",
    "OPENCODE_SERVER_PASSWORD",
    "OPENCODE_PERMISSION",
)
PORT_CONFLICT_MARKERS = ("ServeError", "EADDRINUSE", "address already in use", "port in use")
#: OpenCode's own SQLite database (in its data dir, shared by every server) is busy: two servers
#: starting at once on a fresh install both migrate it, and one exits. Worth another try.
TRANSIENT_MARKERS = ("database is locked",)
MAX_PORT_ATTEMPTS = 4
RATE_LIMIT_RETRIES = 2


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def normalize_workspace(path: str | os.PathLike[str]) -> str:
    """Absolute, symlinks resolved, no trailing slash; checked to be a readable folder."""
    raw = os.fspath(path)
    if not raw.strip():
        raise WorkspaceError("No workspace folder was given.", "Pass the path of a project folder.")
    p = Path(raw).expanduser()
    if not p.exists():
        raise WorkspaceError(
            f"The workspace {raw} does not exist.", "Check the path, or create the folder first."
        )
    resolved = p.resolve()
    if not resolved.is_dir():
        raise WorkspaceError(
            f"The workspace {raw} is a file, not a folder.", "Choose the project's folder instead."
        )
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise WorkspaceError(
            f"The workspace {raw} cannot be read (permission denied).",
            "Fix the folder's permissions (e.g. chmod u+rx) or choose another folder.",
        )
    return str(resolved)


def opencode_config(
    gateway_url: str, models: list[str], model: str, *, agent_permissions: str = "default"
) -> str:
    """The OPENCODE_CONFIG_CONTENT that makes the SmartSpecPro gateway the only provider.

    The key is referenced as ``{env:SMARTSPEC_API_KEY}`` so it travels only in the environment.
    This wins over a workspace's own opencode.json (verified on 1.18.33). With
    ``agent_permissions="ask"`` OpenCode asks (``permission.asked`` event, answered through
    ``POST /permission/{id}/reply``) before it edits a file or runs a shell command (verified).
    """
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "smartspec": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "SmartSpecPro",
                "options": {"baseURL": gateway_url, "apiKey": "{env:SMARTSPEC_API_KEY}"},
                "models": {m: {"name": m} for m in models},
            }
        },
        "enabled_providers": ["smartspec"],
        "model": f"smartspec/{model}",
        "small_model": f"smartspec/{model}",
        "autoupdate": False,
        "share": "disabled",
    }
    if agent_permissions == "ask":
        config["permission"] = {"edit": "ask", "bash": "ask"}
    return json.dumps(config)


def server_env(
    base: Mapping[str, str], *, api_key: str, password: str, config: str
) -> dict[str, str]:
    env = {k: v for k, v in external_env(base).items() if k not in SCRUBBED_ENV}
    no_proxy = [h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h]
    for host in ("127.0.0.1", "localhost", "::1"):
        if host not in no_proxy:
            no_proxy.append(host)
    env.update(
        {
            "OPENCODE_CONFIG_CONTENT": config,
            "SMARTSPEC_API_KEY": api_key,
            "OPENCODE_SERVER_PASSWORD": password,
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "NO_PROXY": ",".join(no_proxy),
            "no_proxy": ",".join(no_proxy),
        }
    )
    return env


@dataclass
class StartResult:
    record: SessionRecord
    reused: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class Preflight:
    binary: OpenCodeBinary
    api_key: str
    models: list[str]
    model: str


class _StartFailed(Exception):
    def __init__(self, error: SmartSpecError, port_conflict: bool, transient: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.port_conflict = port_conflict
        self.transient = transient


class SessionManager:
    def __init__(
        self,
        paths: Paths,
        settings: Settings,
        credentials: Credentials,
        *,
        environ: Mapping[str, str] | None = None,
        backend_factory: Callable[[str], BackendClient] = BackendClient,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.credentials = credentials
        self.environ = os.environ if environ is None else environ
        self.backend_factory = backend_factory
        self.registry = Registry(paths.sessions_file)
        self.version_cache = VersionCache(paths.state_dir / "opencode-version.json")
        self.me = ProcIdentity.of(os.getpid())
        #: Supervisors this process spawned, so they are reaped (no zombies) while we live.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()

    # ------------------------------------------------------------------------------ queries

    def find_opencode(self) -> OpenCodeBinary:
        return find_opencode(
            self.settings.opencode_path, self.paths.managed_opencode_dir, self.version_cache
        )

    def refresh(self) -> list[SessionRecord]:
        """Bring every record up to date with the processes (no HTTP); return them all."""
        self._reap_children()
        with self.registry.transaction() as records:
            for sid in list(records):
                rec = records[sid]
                keep = self._refresh_record(rec)
                if rec.children and not (keep and rec.active):
                    # A child (openwork-server) is useless once its server is gone.
                    self._kill_children(rec)
                if not keep:
                    self._forget(records, sid, reason="its processes are gone")
            return sorted(records.values(), key=lambda r: r.created_at)

    def list_sessions(self) -> list[SessionRecord]:
        return self.refresh()

    def get(self, workspace_or_id: str) -> SessionRecord | None:
        records = self.refresh()
        for r in records:
            if r.session_id == workspace_or_id:
                return r
        try:
            ws = str(Path(workspace_or_id).expanduser().resolve())
        except OSError:
            return None
        matches = [r for r in records if same_workspace(r.workspace_path, ws)]
        active = [r for r in matches if r.active]
        best = active or matches
        return best[-1] if best else None

    def password(self, record: SessionRecord) -> str:
        pw = self.credentials.server_password(record.session_id)
        if not pw:
            raise ServerNotRunning(
                f"The password of the server for {record.workspace_path} is gone "
                "(keyring cleared?).",
                "Stop the server and start it again.",
            )
        return pw

    def client(self, record: SessionRecord, *, timeout: float = 30.0) -> OpenCodeClient:
        if record.status != RUNNING:
            raise ServerNotRunning(
                f"The server for {record.workspace_path} is {record.status}.",
                "Start it first (Start Dev Server, or `smartspec-desktop start PATH`).",
            )
        return OpenCodeClient(record.url, self.password(record), timeout=timeout)

    # ------------------------------------------------------------------------------- start

    def start(self, workspace: str, *, progress: Progress | None = None) -> StartResult:
        say = progress or (lambda _msg: None)
        ws = normalize_workspace(workspace)
        warnings = list(self.registry.warnings)
        lock = self.registry.workspace_lock(ws, timeout=self.settings.start_timeout + 60)
        say(f"Waiting for other starts of {ws} …" if self._lock_busy(lock) else "")
        with lock:
            reused = self._reuse_or_clear(ws, say)
            if reused is not None:
                return StartResult(reused, True, warnings + self._drain_registry_warnings())
            pre = self.preflight(ws, say)
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
                    record = self._spawn_and_wait(ws, port, note, pre)
                except _StartFailed as failed:
                    last_error = failed.error
                    if failed.port_conflict:
                        log.info("port %s was taken before the server bound it; retrying", port)
                        exclude.add(port)
                        continue
                    if failed.transient:
                        log.info("OpenCode hit a transient error; retrying: %s", failed.error)
                        time.sleep(0.5)
                        continue
                    raise failed.error from None
                self._remember(ws)
                return StartResult(record, False, warnings + self._drain_registry_warnings())
            assert last_error is not None
            raise last_error

    @staticmethod
    def _lock_busy(lock: object) -> bool:
        return bool(getattr(lock, "is_locked", False))

    def _drain_registry_warnings(self) -> list[str]:
        out, self.registry.warnings = self.registry.warnings, []
        return out

    def _remember(self, ws: str) -> None:
        # The window persists settings; the core only keeps the list in memory.
        self.settings.remember_workspace(ws)

    def _reuse_or_clear(self, ws: str, say: Progress) -> SessionRecord | None:
        """Return the live session of ``ws`` (adopting an orphaned start), or clear stale ones."""
        for rec in self.refresh():
            if not same_workspace(rec.workspace_path, ws):
                continue
            if rec.status in (RUNNING, STARTING) and self._healthy(rec):
                if rec.status == STARTING:
                    say("Adopting a server whose start was interrupted …")
                    with self.registry.transaction() as records:
                        if rec.session_id in records:
                            records[rec.session_id].status = RUNNING
                            rec = records[rec.session_id]
                return rec
            if rec.active:
                say("Clearing a server that does not answer …")
            self._terminate(rec)
            with self.registry.transaction() as records:
                self._forget(records, rec.session_id, reason="replaced by a new start")
        return None

    def _healthy(self, rec: SessionRecord, tries: int = 3) -> bool:
        pw = self.credentials.server_password(rec.session_id)
        if not pw or not rec.url:
            return False
        with OpenCodeClient(rec.url, pw) as c:
            for _ in range(tries):
                try:
                    return bool(c.health(timeout=2.0).get("healthy"))
                except SmartSpecError:
                    time.sleep(0.2)
        return False

    def preflight(self, ws: str, say: Progress) -> Preflight:
        """Everything that can be checked before spawning; each failure is its own error."""
        binary = self.find_opencode()
        api_key, _source = self.credentials.api_key()
        api_key = check_api_key_format(api_key)
        say(f"Checking the SmartSpecPro backend at {self.settings.backend_url} …")
        with self.backend_factory(self.settings.backend_url) as backend:
            self._with_rate_limit_retry(backend.gateway_health, say)
            models = self._with_rate_limit_retry(lambda: backend.models(api_key), say)
        if not models:
            raise ApiKeyRejected(
                "The SmartSpecPro gateway lists no models for this key.",
                "Check your account's plan, or try another key.",
            )
        model = self.settings.model if self.settings.model in models else models[0]
        return Preflight(binary, api_key, models, model)

    @staticmethod
    def _with_rate_limit_retry(call: Callable[[], T], say: Progress) -> T:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                return call()
            except RateLimited as e:
                if attempt == RATE_LIMIT_RETRIES or e.retry_after > 30:
                    raise
                say(str(e.problem))
                time.sleep(e.retry_after)
        raise AssertionError("unreachable")

    def _spawn_and_wait(self, ws: str, port: int, note: str, pre: Preflight) -> SessionRecord:
        session_id = "srv_" + uuid.uuid4().hex[:16]
        password = secrets.token_urlsafe(24)
        self.paths.ensure()
        log_path = self.paths.server_log_dir / f"{session_id}.log"
        exit_file = self.paths.state_dir / "exits" / f"{session_id}.json"
        exit_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        exit_file.unlink(missing_ok=True)
        store = self.credentials.save_server_password(session_id, password)
        gateway = self.settings.backend_url.rstrip("/") + "/v1/opencode"
        env = server_env(
            self.environ,
            api_key=pre.api_key,
            password=password,
            config=opencode_config(
                gateway,
                pre.models,
                pre.model,
                agent_permissions=self.settings.agent_permissions,
            ),
        )
        serve = [
            pre.binary.path,
            "serve",
            "--hostname",
            ports.HOST,
            "--port",
            str(port),
            "--print-logs",
            "--log-level",
            "INFO",
        ]
        cmd = supervised_command(serve, log_path=log_path, exit_file=exit_file, cwd=ws)
        url = f"http://{ports.HOST}:{port}"
        record = SessionRecord(
            session_id=session_id,
            workspace_path=ws,
            status=STARTING,
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
        )
        with self.registry.transaction() as records:
            records[session_id] = record
        sup: subprocess.Popen[bytes] | None = None
        try:
            sup = self._spawn_supervisor(cmd, env, ws)
            with self._children_lock:
                self._children[session_id] = sup
            server_pid = self._handshake(sup, log_path)
            ident = ProcIdentity.of(server_pid)
            sup_ident = ProcIdentity.of(sup.pid)
            with self.registry.transaction() as records:
                rec = records[session_id]
                rec.pid = server_pid
                rec.create_time = ident.create_time if ident else 0.0
                rec.supervisor_pid = sup.pid
                rec.supervisor_create_time = sup_ident.create_time if sup_ident else 0.0
                record = rec
            self._wait_ready(record, password, sup, ident)
        except BaseException as e:
            # Nothing half-started survives: kill what we spawned, drop the record and secret.
            if sup is not None:
                kill_popen_tree(sup)
            with self.registry.transaction() as records:
                self._forget(records, session_id, reason="its start failed")
            if isinstance(e, _StartFailed | SmartSpecError | KeyboardInterrupt):
                raise
            log.exception("unexpected error while starting %s", ws)
            raise ServerStartError(
                f"Starting OpenCode for {ws} failed unexpectedly ({type(e).__name__}: {e}).",
                "See the app log for details.",
            ) from e
        with self.registry.transaction() as records:
            rec = records[session_id]
            rec.status = RUNNING
            rec.owner_pid, rec.owner_create_time = 0, 0.0
            return rec

    @staticmethod
    def _spawn_supervisor(cmd: list[str], env: dict[str, str], ws: str) -> subprocess.Popen[bytes]:
        kwargs: dict[str, object] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = (
                subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
            )
        else:
            kwargs["start_new_session"] = True
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            cmd,
            cwd=ws,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            **kwargs,
        )

    @staticmethod
    def _handshake(sup: subprocess.Popen[bytes], log_path: Path) -> int:
        assert sup.stdout is not None
        timer = threading.Timer(20.0, sup.kill)
        timer.start()
        try:
            line = sup.stdout.readline()
        finally:
            timer.cancel()
            sup.stdout.close()
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {}
        if not isinstance(msg, dict) or not isinstance(msg.get("pid"), int):
            problem = msg.get("error") if isinstance(msg, dict) else None
            raise ServerStartError(
                f"OpenCode could not be started: {problem or 'the supervisor did not answer'}.",
                f"See the log {log_path}.",
            )
        return int(msg["pid"])

    def _wait_ready(
        self,
        record: SessionRecord,
        password: str,
        sup: subprocess.Popen[bytes],
        ident: ProcIdentity | None,
    ) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        # Requests sent while the server initialises can hang: short timeouts, many tries.
        with httpx.Client(
            auth=("opencode", password), timeout=httpx.Timeout(1.0), trust_env=False
        ) as http:
            while time.monotonic() < deadline:
                if sup.poll() is not None or ident is None or not ident.alive():
                    raise self._early_exit(record)
                try:
                    r = http.get(record.url + "/global/health")
                    if r.status_code == 200 and r.json().get("healthy") is True:
                        return
                    if r.status_code == 401:
                        raise _StartFailed(
                            ServerStartError(
                                f"Port {record.port} is answered by a server that rejects our "
                                "password (another program?).",
                                "Free that port or change the preferred port range in Settings.",
                            ),
                            port_conflict=True,
                        )
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.1)
        tail = self._log_tail(record)
        raise _StartFailed(
            ServerStartError(
                f"OpenCode did not become ready within {self.settings.start_timeout:.0f} s.",
                "See the server log below; raise the start timeout in Settings if your "
                "machine is slow.",
                details=tail,
            ),
            port_conflict=False,
        )

    def _early_exit(self, record: SessionRecord) -> _StartFailed:
        # Give the supervisor a moment to write the exit record and flush the log.
        code: object = None
        for _ in range(20):
            info = self._read_exit(record)
            if info is not None:
                code = info.get("exit_code")
                break
            time.sleep(0.05)
        tail = self._log_tail(record)
        conflict = any(m.lower() in tail.lower() for m in PORT_CONFLICT_MARKERS)
        transient = any(m.lower() in tail.lower() for m in TRANSIENT_MARKERS)
        last = [ln for ln in tail.splitlines() if ln.strip() and not ln.startswith("[smartspec")]
        summary = last[-1][:200] if last else "no output"
        return _StartFailed(
            ServerStartError(
                f"OpenCode exited during start-up (exit code {code}): {summary}",
                f"See the server log {record.log_path}; check the workspace and OpenCode install.",
                details=tail,
            ),
            port_conflict=conflict,
            transient=transient,
        )

    @staticmethod
    def _log_tail(record: SessionRecord, lines: int = 30) -> str:
        try:
            with open(record.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def _read_exit(record: SessionRecord) -> dict[str, object] | None:
        try:
            data = json.loads(Path(record.exit_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -------------------------------------------------------------------------------- stop

    def stop(self, workspace_or_id: str, *, grace: float = 5.0) -> SessionRecord:
        rec = self.get(workspace_or_id)
        if rec is None:
            raise ServerNotRunning(
                f"No session is known for {workspace_or_id}.",
                "See `smartspec-desktop status` for the running ones.",
            )
        with self.registry.transaction() as records:
            if rec.session_id in records and records[rec.session_id].active:
                records[rec.session_id].status = STOPPING
        leftovers = self._terminate(rec, grace=grace)
        with self.registry.transaction() as records:
            self._forget(records, rec.session_id, reason="stopped")
        if leftovers:
            raise ServerStartError(
                f"{len(leftovers)} process(es) of the server for {rec.workspace_path} "
                "would not exit.",
                f"Kill them by hand: pids {', '.join(str(p.pid) for p in leftovers)}.",
            )
        rec.status = "stopped"
        return rec

    def stop_all(self, *, owned_only: bool = False, grace: float = 5.0) -> list[SessionRecord]:
        stopped = []
        for rec in self.refresh():
            if owned_only and rec.session_id not in self._children:
                continue
            if rec.active:
                stopped.append(self.stop(rec.session_id, grace=grace))
        return stopped

    def _terminate(self, rec: SessionRecord, grace: float = 5.0) -> list[psutil.Process]:
        """Kill the server's whole tree, but only processes that are provably ours."""
        # Children first (e.g. openwork-server, in process groups of their own), then the server.
        leftovers = self._kill_children(rec, grace=grace)
        leftovers += kill_recorded(
            [(rec.supervisor_pid, rec.supervisor_create_time), (rec.pid, rec.create_time)],
            grace=grace,
        )
        self._reap_children()
        return leftovers

    @staticmethod
    def _kill_children(rec: SessionRecord, grace: float = 5.0) -> list[psutil.Process]:
        """Kill the processes recorded in ``rec.children`` (identity-checked)."""
        return kill_recorded(
            [ident for child in rec.children for ident in recorded_identities(child)],
            grace=grace,
        )

    def _reap_children(self) -> None:
        with self._children_lock:
            for sid, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[sid]

    def owns(self, session_id: str) -> bool:
        """Whether this process spawned the session (the window stops only its own on quit)."""
        with self._children_lock:
            return session_id in self._children

    # ---------------------------------------------------------------------------- upkeep

    def _refresh_record(self, rec: SessionRecord) -> bool:
        """Update ``rec`` in place from the processes; False means "forget it"."""
        if rec.status not in ACTIVE:
            return True  # crashed records stay until cleared, so the user sees why
        server_alive = bool(rec.pid) and ProcIdentity(rec.pid, rec.create_time).alive()
        if rec.status == STARTING and not rec.pid:
            owner = ProcIdentity(rec.owner_pid, rec.owner_create_time)
            if owner.alive():
                return True
            # Its starter died before it could record the server: a supervisor (and server) it
            # spawned may be running unrecorded. Reap them, or they would be orphans for good.
            self._reap_unrecorded(rec)
            return False
        if server_alive:
            return True
        info = self._read_exit(rec)
        if info is None:
            sup_alive = (
                bool(rec.supervisor_pid)
                and ProcIdentity(rec.supervisor_pid, rec.supervisor_create_time).alive()
            )
            if sup_alive:
                return True  # about to write the exit record
            log.warning(
                "forgetting the session of %s: pid %s is gone and left no exit record "
                "(reboot or killed supervisor)",
                rec.workspace_path,
                rec.pid,
            )
            return False
        if rec.status == STOPPING or info.get("stop_requested"):
            return False
        code = info.get("exit_code")
        rec.status = CRASHED
        rec.exit_code = code if isinstance(code, int) else None
        ended = info.get("ended_at")
        if isinstance(ended, int | float):
            rec.ended_at = datetime.fromtimestamp(ended, timezone.utc).isoformat(timespec="seconds")
        rec.error = f"OpenCode exited unexpectedly (exit code {rec.exit_code})."
        return True

    @staticmethod
    def _reap_unrecorded(rec: SessionRecord) -> None:
        """Kill the supervisor of ``rec`` found by its argv (``--exit-file <this session's
        file>``): the only identity an unrecorded supervisor has, and one no other program
        carries, so a reused pid is never hit."""
        if not rec.exit_file:
            return
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            for i, arg in enumerate(cmd[:-1]):
                if arg == "--exit-file" and cmd[i + 1] == rec.exit_file:
                    log.warning(
                        "reaping the unrecorded server of %s (its start was interrupted)",
                        rec.workspace_path,
                    )
                    kill_tree(proc, grace=3.0)
                    break

    def _forget(self, records: dict[str, SessionRecord], sid: str, *, reason: str) -> None:
        rec = records.pop(sid, None)
        if rec is None:
            return
        log.info("forgetting session %s of %s: %s", sid, rec.workspace_path, reason)
        with contextlib.suppress(SmartSpecError, OSError):
            self.credentials.delete_server_password(sid)
        for exit_file in [rec.exit_file] + [str(c.get("exit_file", "")) for c in rec.children]:
            if exit_file:
                with contextlib.suppress(OSError):
                    Path(exit_file).unlink(missing_ok=True)

    def redactor_key(self) -> str:
        """The API key to redact from logs, or "" when none is configured."""
        try:
            return self.credentials.api_key()[0]
        except SmartSpecError:
            return ""

    def redactor(self) -> Redactor:
        return Redactor([self.redactor_key()])
