"""The manager's remote branch: start a remote workspace's server under our supervisor.

Same shape as a local start (:meth:`ServerManager._spawn_and_wait`): a fresh password, a
per-server broker token, the key only in the local supervisor's broker, the record written
before the spawn, "started" meaning "healthy" (here: the forwarded local port answers as
OpenCode with our password), and nothing half-started left behind. What differs is the program
(``ssh``, see :mod:`.engine`) and where the settings go (over the ssh channel, never on an argv
or into a remote file but the 0600 model list, which holds no secret).
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import TYPE_CHECKING

from smartspec_desktop.core import ports
from smartspec_desktop.core.errors import (
    PortInUse,
    ServerStartError,
    SmartSpecError,
)
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.loopback import verify_for
from smartspec_desktop.core.opencode.binary import OpenCodeBinary
from smartspec_desktop.core.process import idle
from smartspec_desktop.core.process.supervised import EarlyExit, NotReady, Supervised
from smartspec_desktop.core.remote import engine
from smartspec_desktop.core.remote.address import RemoteAddress, parse_remote
from smartspec_desktop.core.remote.ssh import SSH_FAILED, RemoteError, ssh_error
from smartspec_desktop.core.servers.launch_config import opencode_config, server_env
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.core.servers.trust import apply_trust

if TYPE_CHECKING:
    import httpx

    from smartspec_desktop.core.servers.manager import ServerManager
    from smartspec_desktop.core.servers.preflight import Preflight
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")

SERVER_ID_ENV = "SMARTSPEC_SERVER_ID"
#: How often the supervisor connects again after a lost connection (pauses 1, 2, 4 … 30 s).
RECONNECT_ATTEMPTS = 8


def remote_finder(manager: ServerManager, ws: str) -> OpenCodeBinary:
    """The preflight's "find opencode" step for a remote workspace: the host's OpenCode."""
    versions = engine.RemoteVersions(manager.paths.state_dir / "remote-opencode.json")
    return engine.remote_binary(parse_remote(ws), manager.environ, versions)


def spawn_remote(
    manager: ServerManager, ws: str, port: int, note: str, pre: Preflight
) -> ServerRecord:
    from smartspec_desktop.core.servers.manager import _now_iso

    addr = parse_remote(ws)
    server_id = "srv_" + uuid.uuid4().hex[:16]
    password = secrets.token_urlsafe(24)
    paths = manager.paths
    paths.ensure()
    log_path = paths.server_log_dir / f"{server_id}.log"
    exit_file = paths.state_dir / "exits" / f"{server_id}.json"
    store = manager.credentials.save_server_password(server_id, password)
    # The model list is sent over the channel (0600 on the host); the key stays in the broker.
    files, control, payload = manager.broker_setup(ws, server_id, pre, password)
    # What the supervisor hands to the remote side (core/process/supervisor.py, --remote) and
    # then removes from ssh's environment; the key is not among it (the broker keeps it).
    env = server_env(
        engine.supervisor_env(manager.environ),
        password=password,
        config=opencode_config(pre.model, agent_permissions=manager.settings.agent_permissions),
        models_file=files.models_file,
    )
    env[SERVER_ID_ENV] = server_id
    trusted = manager.trust.is_trusted(ws)
    apply_trust(env, trusted)
    remote_port, forward_port = engine.pick_remote_ports()
    argv = engine.serve_argv(
        addr,
        opencode=pre.binary.path,
        local_port=port,
        remote_port=remote_port,
        broker_forward_port=forward_port,
        server_id=server_id,
        environ=manager.environ,
    )
    me = manager.me
    record = ServerRecord(
        server_id=server_id,
        workspace_path=ws,
        status=ServerStatus.STARTING,
        created_at=_now_iso(),
        port=port,
        url=f"http://{ports.HOST}:{port}",
        owner_pid=me.pid if me else 0,
        owner_create_time=me.create_time if me else 0.0,
        opencode_version=pre.binary.version,
        opencode_path=pre.binary.path,
        model=pre.model,
        backend_url=manager.settings.backend_url,
        log_path=str(log_path),
        exit_file=str(exit_file),
        password_store=store,
        port_note=note,
        trusted=trusted,
        host=addr.display_host,
    )
    with manager.registry.transaction() as records:
        records[server_id] = record
    try:
        with Supervised.spawn(
            argv,
            name=f"OpenCode on {addr.display_host}",
            log_path=log_path,
            exit_file=exit_file,
            cwd=str(paths.state_dir),
            env=env,
            supervisor_args=[
                "--broker",
                "--remote",
                "--reconnect",
                str(RECONNECT_ATTEMPTS),
                "--workspace",
                ws,
                # Idle remote servers sleep too (the watcher looks through the forward); the
                # ssh it stops closes the channel, so the host's wrapper stops OpenCode.
                *idle.supervisor_args(manager.idle_minutes(ws)),
            ],
            stdin_payload=payload,
            on_spawn=lambda popen: manager.track(server_id, popen),
        ) as proc:
            del payload
            record = manager.record_spawn(server_id, proc)
            _wait_ready(manager, proc, record, password, addr)
            manager._sync_day_cap(record, control)
            proc.keep()
    except BaseException as e:
        _kill_started(manager, addr, server_id, log_path)
        with manager.registry.transaction() as records:
            manager._forget(records, server_id, reason="its start failed")
        if isinstance(e, SmartSpecError | KeyboardInterrupt):
            raise
        raise ServerStartError(
            f"Starting OpenCode on {addr.display_host} for {ws} failed unexpectedly "
            f"({type(e).__name__}: {e}).",
            "See the app log for details.",
        ) from e
    return manager.mark_running(server_id)


def _kill_started(
    manager: ServerManager, addr: RemoteAddress, server_id: str, log_path: object
) -> None:
    """A failed start: the remote server it may have started goes too (ssh's end already
    stopped it, normally; this makes sure, identity-checked)."""
    ident = engine.read_identity(str(log_path))
    if ident is None:
        return
    try:
        engine.kill_remote(addr, ident[0], ident[1], server_id, environ=manager.environ)
    except SmartSpecError:
        manager.reap_queue.add(server_id, str(addr), ident[0], ident[1])


def _wait_ready(
    manager: ServerManager,
    proc: Supervised,
    record: ServerRecord,
    password: str,
    addr: RemoteAddress,
) -> None:
    from smartspec_desktop.core.servers.manager import answers_healthy

    timeout = manager.settings.start_timeout
    with httpx.Client(
        auth=("opencode", password),
        timeout=httpx.Timeout(2.0),
        trust_env=False,
        verify=verify_for(record.url),
    ) as http:

        def healthy() -> bool:
            return answers_healthy(
                http,
                record.url,
                PortInUse(
                    f"The remote port behind {record.url} is answered by a server that "
                    "rejects our password (another program on the host?).",
                    "Try again (another port is picked).",
                ),
            )

        try:
            proc.wait_ready(healthy, time.monotonic() + timeout + 10)
        except EarlyExit as e:
            outcome = e.outcome
            if e.mentions(engine.REMOTE_PORT_MARKERS):
                raise PortInUse(
                    f"A port for {addr.display_host} was taken ({e.summary}).",
                    "Try again.",
                    details=e.tail,
                ) from None
            if outcome is not None and outcome.exit_code == SSH_FAILED:
                err = ssh_error(addr, e.tail)
                if type(err) is not RemoteError:
                    raise err from None
            raise ServerStartError(
                f"OpenCode on {addr.display_host} exited during start-up ({e.how}): {e.summary}",
                f"See the server log {record.log_path}; check the folder and OpenCode on the host.",
                details=e.tail,
            ) from None
        except NotReady as e:
            raise ServerStartError(
                f"OpenCode on {addr.display_host} did not become ready within "
                f"{timeout + 10:.0f} s.",
                "See the server log below; raise the start timeout in Settings for a slow host.",
                details=e.tail,
            ) from None
    # The remote identity (for stop and the reaper), from the wrapper's line in the log.
    deadline = time.monotonic() + 5.0
    ident = engine.read_identity(record.log_path)
    while ident is None and time.monotonic() < deadline:
        time.sleep(0.05)
        ident = engine.read_identity(record.log_path)
    if ident is not None:
        with manager.registry.transaction() as records:
            rec = records[record.server_id]
            rec.remote_pid, rec.remote_start = ident
            record.remote_pid, record.remote_start = ident
    idle.mark_active(record.exit_file)
