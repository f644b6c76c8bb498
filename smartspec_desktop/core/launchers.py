"""The two rich UIs of a workspace: OpenCode's TUI in a terminal, and OpenWork in the browser.

Both functions block (the window calls them on a worker thread), start the workspace's server
first when it is not running, and raise :class:`LaunchError` (or :class:`NoTerminalError`) with
the problem and the fix.

**Open OpenCode CLI** opens a new terminal window (see :mod:`terminals`) running
``opencode attach http://127.0.0.1:<port> --dir <workspace>``. The server password reaches the TUI
only through ``OPENCODE_SERVER_PASSWORD`` in the terminal's environment (on macOS through a
private launcher script that deletes itself), never through argv. The terminal is not tracked
afterwards: the user owns that window, and ``/exit`` may close it.

**Open OpenWork UI**, path 1 (``openwork-server`` installed, or its path in Settings): run
``openwork-server web`` in front of *our* server (``--opencode-base-url``/``--opencode-directory``,
user ``opencode``; the password and OpenWork's own client/host tokens in its environment, not in
argv; ``OPENWORK_OPENCODE_BIN`` = our opencode; no update check; 127.0.0.1 and a free port), wait
until ``/health`` answers, open ``http://127.0.0.1:<port>/`` (openwork-server injects its client
token into that page). It runs under the same supervisor as the servers (own process group,
output in ``<log dir>/servers/<session>.openwork.log``, redacted), is recorded in the session's
``children``, reused while alive, shown by ``status`` and killed by ``stop``. Residual risk (by
OpenWork's design, which we use unmodified): any local user who can reach that loopback port gets
the page with the token in it.

**Path 2** (fallback): OpenCode 1.18.33's own web UI, served by the workspace's server. What that
UI accepts, read from its bundle and tried in headless Chromium: every path, the HTML and the
JS assets included, needs HTTP Basic auth (``WWW-Authenticate: Basic``); the server also takes
``?auth_token=base64(user:pw)`` on any request, and the UI strips that parameter from the address
bar, but it sets no cookie, so the page's own assets are then refused (a query string would also
put the password in history). A URL with ``opencode:<pw>@`` works (the browser keeps the
credentials for the origin), but a browser's argv is readable by every local user (``ps``).

So the app hands the credentials over through a **one-shot loopback page** it owns: it binds
``127.0.0.1:<random port>``, opens ``http://127.0.0.1:<port>/open/<random one-time token>`` (only
this token is in argv), and answers the first request for it with ``303 See Other`` to
``http://opencode:<pw>@127.0.0.1:<server port>/<workspace>/session/<id>`` (``no-store``,
``no-referrer``), then shuts down; every other request gets 404. On Linux the request is only
honoured when ``/proc/net/tcp`` says the connecting socket belongs to our own user. The page
opened is the workspace's latest session (a new, empty one is created when it has none: the UI's
project list lives in the browser's per-origin storage, so a bare ``/`` would show nothing, and
``/<workspace>`` without a session fails in 1.18.33's UI). Residual risk: on macOS/Windows another
local user who reads the token from ``ps`` before the browser requests it (a window of a second
or so) could fetch the redirect; the user then sees "already used" and should restart the
server. The browser keeps the password for the origin until it quits, and Chromium also writes
the redirected address (with the password) into the session-restore files of the user's own
profile (its history keeps the address without it; both verified); the password is fresh per
server start and useless once the server stops. Firefox asks once to confirm the sign-in as
"opencode".
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from smartspec_desktop.core import ports
from smartspec_desktop.core.errors import LaunchError, SmartSpecError
from smartspec_desktop.core.opencode_api import USERNAME, OpenCodeClient
from smartspec_desktop.core.procs import (
    ProcIdentity,
    kill_popen_tree,
    kill_recorded,
    recorded_identities,
)
from smartspec_desktop.core.registry import SessionRecord
from smartspec_desktop.core.sessions import SCRUBBED_ENV, SessionManager
from smartspec_desktop.core.supervisor import supervised_command
from smartspec_desktop.core.terminals import build_terminal_launch

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
Opener = Callable[[str], bool]

OPENWORK_KIND = "openwork"
OPENWORK_BINARY = "openwork-server"
OPENWORK_INSTALL = "npm install -g openwork-server"
#: OpenWork releases whose ``openwork-server web`` takes the flags used here.
OPENWORK_SUPPORTED = "openwork-server 0.18.x (OpenWork 0.18 line)"
OPENWORK_NOTICE = (
    "This is OpenCode's own web UI. For the full OpenWork experience install OpenWork's server "
    f"(`{OPENWORK_INSTALL}`, {OPENWORK_SUPPORTED}); the next Open OpenWork UI will use it."
)
OPENWORK_START_TIMEOUT = 30.0
#: How long the one-shot page waits for the browser to ask for it.
HANDOFF_TIMEOUT = 90.0
#: A terminal that exits within this time with an error code did not open a window.
TERMINAL_EARLY_EXIT = 1.0
#: Variables the terminal's environment never gets (the TUI needs none of them).
TERMINAL_DROPPED_ENV = (*SCRUBBED_ENV, "SMARTSPEC_API_KEY")


@dataclass(frozen=True)
class LaunchOutcome:
    message: str  # one line for a status bar / CLI stdout, no secrets
    url: str | None = None  # what was opened (never containing a password)
    notice: str | None = None  # a one-time hint, e.g. how to install OpenWork


def _quiet(_msg: str) -> None:
    pass


def _running_record(sessions: SessionManager, workspace: str, say: Progress) -> SessionRecord:
    say("Starting the workspace's server (or reusing it) …")
    result = sessions.start(workspace, progress=say)
    for w in result.warnings:
        log.warning("%s", w)
    return result.record


def _loopback_env(base: Mapping[str, str], drop: tuple[str, ...]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in drop}
    hosts = [h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h]
    for host in ("127.0.0.1", "localhost", "::1"):
        if host not in hosts:
            hosts.append(host)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
    return env


# ------------------------------------------------------------------------------- Open CLI


def open_cli(
    sessions: SessionManager,
    workspace: str,
    *,
    progress: Progress | None = None,
    popen: Callable[..., Any] = subprocess.Popen,
) -> LaunchOutcome:
    """Open a terminal window running ``opencode attach`` against the workspace's server."""
    say = progress or _quiet
    rec = _running_record(sessions, workspace, say)
    password = sessions.password(rec)
    opencode = rec.opencode_path or sessions.find_opencode().path
    ws = rec.workspace_path
    command = [opencode, "attach", rec.url, "--dir", ws]
    launch = build_terminal_launch(
        command,
        cwd=ws,
        title=f"OpenCode — {os.path.basename(ws) or ws}",
        secret_env={"OPENCODE_SERVER_PASSWORD": password},
        preference=sessions.settings.terminal,
        environ=_loopback_env(sessions.environ, TERMINAL_DROPPED_ENV),
    )
    say(f"Opening {launch.terminal} …")
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = launch.creationflags
    else:
        kwargs["start_new_session"] = True  # the window outlives us and our signals
    try:
        proc = popen(
            launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            **kwargs,
        )
    except OSError as e:
        if launch.script_path:
            with contextlib.suppress(OSError):
                os.unlink(launch.script_path)
        raise LaunchError(
            f"The terminal {launch.terminal} could not be started ({e.strerror or e}).",
            "Choose another terminal in Settings → Terminal (or a custom command such as "
            "`myterm -e {command}`).",
        ) from None
    code = _early_exit_code(proc)
    if code:
        if launch.script_path:  # never run, so it did not delete itself
            with contextlib.suppress(OSError):
                os.unlink(launch.script_path)
        raise LaunchError(
            f"The terminal {launch.terminal} exited at once with code {code}.",
            "Check that it can open a window here (a display is needed), or choose another "
            "terminal in Settings → Terminal.",
        )
    return LaunchOutcome(
        f"Opened OpenCode CLI for {ws} in {launch.terminal} (server {rec.url}).", url=rec.url
    )


def _early_exit_code(proc: Any) -> int | None:
    """The exit code if the terminal failed within a second; the rest is reaped in the
    background (terminals such as gnome-terminal hand off and exit 0 at once)."""
    wait = getattr(proc, "wait", None)
    if wait is None:
        return None
    try:
        code = wait(timeout=TERMINAL_EARLY_EXIT)
    except subprocess.TimeoutExpired:
        threading.Thread(target=proc.wait, name="terminal-reaper", daemon=True).start()
        return None
    return int(code) if isinstance(code, int) and code != 0 else None


# -------------------------------------------------------------------------- Open OpenWork


def open_openwork(
    sessions: SessionManager,
    workspace: str,
    *,
    progress: Progress | None = None,
    opener: Opener | None = None,
    session_id: str | None = None,
) -> LaunchOutcome:
    """Open OpenWork (or, without openwork-server, OpenCode's web UI) for the workspace.

    ``opener`` defaults to :func:`webbrowser.open`; it gets a URL without any password. On the
    web UI path this returns once the browser fetched the one-shot page (at most
    ``HANDOFF_TIMEOUT`` seconds). ``session_id`` deep-links OpenCode's web UI to that session
    (OpenWork opens on its own session list: it has no deep link for a session of a server it is
    attached to).
    """
    say = progress or _quiet
    open_url = opener or _default_opener
    mode = (sessions.settings.openwork_mode or "auto").strip().lower()
    if mode not in ("auto", "openwork", "web"):
        raise LaunchError(
            f"Settings → OpenWork mode is “{mode}”.", "Set it to auto, openwork or web."
        )
    binary = (
        None
        if mode == "web"
        else find_openwork_server(
            sessions.settings.openwork_server_path,
            lambda name: shutil.which(name, path=sessions.environ.get("PATH")),
        )
    )
    if binary is None and mode == "openwork":
        raise LaunchError(
            "openwork-server is not installed (Settings → OpenWork mode is “openwork”).",
            f"Install it with `{OPENWORK_INSTALL}` ({OPENWORK_SUPPORTED}), set its path in "
            "Settings → OpenWork server, or set the mode to auto.",
        )
    rec = _running_record(sessions, workspace, say)
    if binary is not None:
        return _open_with_openwork_server(sessions, rec, binary, say, open_url)
    return _open_web_ui(sessions, rec, say, open_url, notice=mode == "auto", session_id=session_id)


def find_openwork_server(
    configured: str, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """The openwork-server to run: the path from Settings (which must work), else PATH."""
    if configured.strip():
        path = os.path.expanduser(configured.strip())
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise LaunchError(
                f"The OpenWork server path in Settings ({configured}) is not an executable file.",
                f"Fix or clear Settings → OpenWork server (install: `{OPENWORK_INSTALL}`).",
            )
        return path
    return which(OPENWORK_BINARY)


def _default_opener(url: str) -> bool:
    try:
        return bool(webbrowser.open(url, new=2))
    except webbrowser.Error:
        return False


def _open_in_browser(open_url: Opener, url: str) -> None:
    if not open_url(url):
        raise LaunchError(
            "No web browser could be opened.",
            "Install a browser or set the BROWSER environment variable (e.g. BROWSER=firefox), "
            "then try again.",
        )


# -- path 1: openwork-server ------------------------------------------------------------------


def openwork_command(binary: str, rec: SessionRecord, port: int) -> list[str]:
    """The argv of ``openwork-server web`` for a session: no secret in it."""
    return [
        binary,
        "web",
        "--host",
        ports.HOST,
        "--port",
        str(port),
        "--workspace",
        rec.workspace_path,
        "--opencode-base-url",
        rec.url,
        "--opencode-directory",
        rec.workspace_path,
        "--opencode-username",
        USERNAME,
    ]


def openwork_env(base: Mapping[str, str], *, password: str, opencode_bin: str) -> dict[str, str]:
    """Its environment: our server's password and OpenWork's own fresh tokens."""
    env = _loopback_env(base, (*TERMINAL_DROPPED_ENV, "OPENWORK_SERVER_CONFIG"))
    env.update(
        {
            "OPENWORK_OPENCODE_PASSWORD": password,
            "OPENWORK_TOKEN": secrets.token_urlsafe(24),
            "OPENWORK_HOST_TOKEN": secrets.token_urlsafe(24),
            "OPENWORK_OPENCODE_BIN": opencode_bin,
            "OPENWORK_NO_UPDATE_CHECK": "1",
        }
    )
    return env


def live_children(rec: SessionRecord, kind: str | None = None) -> list[dict[str, Any]]:
    """The session's recorded children whose process is still the one we started."""
    return [c for c in rec.children if (kind is None or c.get("kind") == kind) and _child_alive(c)]


def _answers(url: str) -> bool:
    try:
        r = httpx.get(url + "/health", timeout=2.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code < 500


def _open_with_openwork_server(
    sessions: SessionManager, rec: SessionRecord, binary: str, say: Progress, open_url: Opener
) -> LaunchOutcome:
    for child in live_children(rec, OPENWORK_KIND):
        url = str(child.get("url", ""))
        if url and _answers(url):
            say("Reusing the running OpenWork server …")
            _open_in_browser(open_url, url + "/")
            return LaunchOutcome(f"Opened OpenWork for {rec.workspace_path} at {url}/.", url=url)
        say("Replacing an OpenWork server that does not answer …")
        kill_recorded(recorded_identities(child), grace=3.0)
    _drop_children(sessions, rec.session_id, OPENWORK_KIND)
    password = sessions.password(rec)
    opencode_bin = rec.opencode_path or sessions.find_opencode().path
    last: SmartSpecError | None = None
    for _attempt in range(3):
        port = ports.os_assigned_port()
        say(f"Starting openwork-server on 127.0.0.1:{port} …")
        try:
            child = _spawn_openwork(sessions, rec, binary, port, password, opencode_bin)
        except _PortTaken as e:
            last = e.error
            continue
        _open_in_browser(open_url, child["url"] + "/")
        return LaunchOutcome(
            f"Opened OpenWork for {rec.workspace_path} at {child['url']}/.", url=child["url"]
        )
    assert last is not None
    raise last


class _PortTaken(Exception):
    def __init__(self, error: SmartSpecError) -> None:
        super().__init__(str(error))
        self.error = error


def _spawn_openwork(
    sessions: SessionManager,
    rec: SessionRecord,
    binary: str,
    port: int,
    password: str,
    opencode_bin: str,
) -> dict[str, Any]:
    paths = sessions.paths
    paths.ensure()
    log_path = paths.server_log_dir / f"{rec.session_id}.openwork.log"
    exit_file = paths.state_dir / "exits" / f"{rec.session_id}.openwork.json"
    exit_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    exit_file.unlink(missing_ok=True)
    cmd = supervised_command(
        openwork_command(binary, rec, port),
        log_path=log_path,
        exit_file=exit_file,
        cwd=rec.workspace_path,
    )
    env = openwork_env(sessions.environ, password=password, opencode_bin=opencode_bin)
    sup = SessionManager._spawn_supervisor(cmd, env, rec.workspace_path)
    # Kept so it is reaped while we live (no zombie, no ResourceWarning); stop() drops it.
    with sessions._children_lock:
        sessions._children[f"{rec.session_id}/{OPENWORK_KIND}/{sup.pid}"] = sup
    url = f"http://{ports.HOST}:{port}"
    try:
        pid = SessionManager._handshake(sup, log_path)
        ident, sup_ident = ProcIdentity.of(pid), ProcIdentity.of(sup.pid)
        child = {
            "kind": OPENWORK_KIND,
            "pid": pid,
            "create_time": ident.create_time if ident else 0.0,
            "supervisor_pid": sup.pid,
            "supervisor_create_time": sup_ident.create_time if sup_ident else 0.0,
            "port": port,
            "url": url,
            "log_path": str(log_path),
            "exit_file": str(exit_file),
        }
        # Recorded before the wait, so a stop in the meantime kills it too.
        with sessions.registry.transaction() as records:
            if rec.session_id not in records:
                raise LaunchError(
                    f"The server for {rec.workspace_path} was stopped meanwhile.",
                    "Start it again and retry.",
                )
            records[rec.session_id].children.append(child)
        _wait_openwork(url, sup, ident, log_path)
    except BaseException:
        kill_popen_tree(sup)
        _drop_children(sessions, rec.session_id, OPENWORK_KIND)
        raise
    return child


def _wait_openwork(
    url: str, sup: subprocess.Popen[bytes], ident: ProcIdentity | None, log_path: Path
) -> None:
    deadline = time.monotonic() + OPENWORK_START_TIMEOUT
    with httpx.Client(timeout=httpx.Timeout(1.0), trust_env=False) as http:
        while time.monotonic() < deadline:
            if sup.poll() is not None or ident is None or not ident.alive():
                tail = _tail(log_path)
                error = LaunchError(
                    f"openwork-server exited during start-up: {_last_line(tail)}",
                    f"See its log {log_path}; check the install (`{OPENWORK_INSTALL}`, "
                    f"{OPENWORK_SUPPORTED}) or set Settings → OpenWork mode to web.",
                    details=tail,
                )
                low = tail.lower()
                if "eaddrinuse" in low or "address already in use" in low:
                    raise _PortTaken(error)
                raise error
            try:
                if http.get(url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise LaunchError(
        f"openwork-server did not answer within {OPENWORK_START_TIMEOUT:.0f} s.",
        f"See its log {log_path}, or set Settings → OpenWork mode to web.",
        details=_tail(log_path),
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("[smartspec")]
    return lines[-1][:200] if lines else "no output"


def _drop_children(sessions: SessionManager, session_id: str, kind: str) -> None:
    with sessions.registry.transaction() as records:
        rec = records.get(session_id)
        if rec is None:
            return
        keep = []
        for child in rec.children:
            if child.get("kind") == kind and not _child_alive(child):
                with contextlib.suppress(OSError):
                    Path(str(child.get("exit_file", ""))).unlink(missing_ok=True)
                continue
            keep.append(child)
        rec.children = keep


def _child_alive(child: Mapping[str, Any]) -> bool:
    pid, ctime = child.get("pid"), child.get("create_time")
    return (
        isinstance(pid, int)
        and isinstance(ctime, int | float)
        and bool(pid)
        and ProcIdentity(pid, float(ctime)).alive()
    )


# -- path 2: OpenCode's web UI through a one-shot page ---------------------------------------


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def web_ui_path(workspace: str, session_id: str) -> str:
    """The UI's route of a session: ``/<base64url(directory)>/session/<id>``."""
    return f"/{_b64url(workspace)}/session/{session_id}"


def _latest_session(client: OpenCodeClient, workspace: str) -> str:
    sessions = [
        s
        for s in client.list_sessions()
        if isinstance(s, dict) and s.get("directory") == workspace and not s.get("parentID")
    ]

    def updated(s: dict[str, Any]) -> float:
        t = s.get("time") or {}
        value = t.get("updated") or t.get("created") or 0
        return float(value) if isinstance(value, int | float) else 0.0

    if sessions:
        return str(max(sessions, key=updated)["id"])
    return str(client.create_session()["id"])


def _open_web_ui(
    sessions: SessionManager,
    rec: SessionRecord,
    say: Progress,
    open_url: Opener,
    *,
    notice: bool,
    session_id: str | None = None,
) -> LaunchOutcome:
    password = sessions.password(rec)
    if not session_id:
        with OpenCodeClient(rec.url, password, timeout=15.0) as client:
            session_id = _latest_session(client, rec.workspace_path)
    path = web_ui_path(rec.workspace_path, session_id)
    host = rec.url.split("://", 1)[1]
    target = f"http://{USERNAME}:{quote(password, safe='')}@{host}{path}"
    handoff = Handoff(target)
    try:
        say("Opening OpenCode's web UI in the browser …")
        _open_in_browser(open_url, handoff.url)
        if not handoff.wait(HANDOFF_TIMEOUT):
            raise LaunchError(
                f"The browser did not open the page within {HANDOFF_TIMEOUT:.0f} s.",
                "Check that a browser opens at all here (or set BROWSER), then try again.",
            )
    finally:
        handoff.close()
    if handoff.refused:
        log.warning("the one-shot page was requested by another user's socket first")
    shown = _notice_once(sessions) if notice else None
    return LaunchOutcome(
        f"Opened OpenCode's web UI for {rec.workspace_path} at {rec.url}{path}.",
        url=rec.url + path,
        notice=shown,
    )


def _notice_once(sessions: SessionManager) -> str | None:
    marker = sessions.paths.state_dir / "openwork-notice-shown"
    if marker.exists():
        return None
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("1\n", encoding="utf-8")
    return OPENWORK_NOTICE


class Handoff:
    """A loopback page that answers one request for ``/open/<token>`` with a redirect.

    The redirect target (which carries the credentials) is never in any argv; the token is,
    and it is worthless once used. Lives until :meth:`close` (used or not).
    """

    def __init__(self, target: str, *, check_peer: Callable[[int, int], bool] | None = None):
        self.token = secrets.token_urlsafe(32)
        self.used = threading.Event()
        self.refused = False
        self._target = target
        self._check_peer = check_peer or _peer_is_us
        handoff = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5.0  # a client that connects and says nothing cannot hold the page

            def do_GET(self) -> None:
                handoff._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the path holds the token

        self._server = http.server.HTTPServer((ports.HOST, 0), Handler)
        port = self._server.server_address[1]
        self.url = f"http://{ports.HOST}:{port}/open/{self.token}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    def _answer(self, req: http.server.BaseHTTPRequestHandler) -> None:
        server_port = self._server.server_address[1]
        if req.path != f"/open/{self.token}" or self.used.is_set():
            self._plain(req, 404, "This link was already used. Use Open OpenWork UI again.")
            return
        if not self._check_peer(req.client_address[1], server_port):
            self.refused = True
            self._plain(req, 403, "This link belongs to another user.")
            return
        req.send_response(303)
        req.send_header("Location", self._target)
        req.send_header("Cache-Control", "no-store")
        req.send_header("Referrer-Policy", "no-referrer")
        req.send_header("Content-Length", "0")
        req.end_headers()
        self.used.set()

    @staticmethod
    def _plain(req: http.server.BaseHTTPRequestHandler, code: int, text: str) -> None:
        body = text.encode("utf-8")
        req.send_response(code)
        req.send_header("Content-Type", "text/plain; charset=utf-8")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def wait(self, timeout: float) -> bool:
        return self.used.wait(timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _peer_is_us(client_port: int, server_port: int) -> bool:
    """Linux: whether the connecting loopback socket belongs to our uid (/proc/net/tcp).

    Elsewhere, or when the table cannot be read, there is nothing to check: True.
    """
    if not sys.platform.startswith("linux"):
        return True
    want_local = f":{client_port:04X}"
    want_remote = f":{server_port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return True
    for row in rows:
        cols = row.split()
        if len(cols) > 7 and cols[1].endswith(want_local) and cols[2].endswith(want_remote):
            return cols[7] == str(os.getuid())
    return True
