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
output in ``<log dir>/servers/<server id>.openwork.log``, redacted), is recorded in the server's
``children``, reused while alive, shown by ``status`` and killed by ``stop``. Reviewed for other
local users: it binds 127.0.0.1 only and no token or password is on its argv, but (by OpenWork's
design, which we use unmodified) any local user who connects to that loopback port gets the page
with its client token, and with that token ``/status`` returns the OpenCode password. A user
program cannot keep other accounts off a loopback port (that would take a firewall rule by uid or
a network namespace), so this stays a documented residual risk; on a shared machine the fix is
Settings → OpenWork mode ``web``.

**Path 2** (fallback): OpenCode 1.18.33's own web UI, served by the workspace's server. What that
UI accepts, read from its bundle and tried in headless Chromium: every path, the HTML and the
JS assets included, needs HTTP Basic auth (``WWW-Authenticate: Basic``); the server also takes
``?auth_token=base64(user:pw)`` on any request, and the UI strips that parameter from the address
bar, but it sets no cookie, so the page's own assets are then refused (a query string would also
put the password in history). A URL with ``opencode:<pw>@`` works (the browser keeps the
credentials for the origin), but a browser's argv is readable by every local user (``ps``).

So the app hands the credentials over through a **private hand-off page** (:class:`Handoff`):
a file ``open.html`` (0600, in a fresh 0700 folder under the state dir) whose form posts a random
one-time token to a listener of ours on ``127.0.0.1:<random port>``; the first request bearing it
gets ``303 See Other`` to ``http://opencode:<pw>@127.0.0.1:<server port>/<workspace>/session/<id>``
(``no-store``, ``no-referrer``) and the page is deleted; everything else gets 404. Only the page's
``file://`` URL is on the browser's argv (readable by every local user), and no other account can
read the file: **nothing on any argv is usable by another user.** As a second wall, on Linux each
connection is admitted only when ``/proc/net/tcp`` or ``/proc/net/tcp6`` show it is an established
socket of our own uid (an IPv6 socket connected to ``::ffff:127.0.0.1`` is listed only in tcp6);
another uid's, or one whose owner cannot be established, is closed at accept time — fail closed,
and nobody can hold the listener busy (it is threaded, 3 s per read, 30 s overall for the browser's
cold start, with progress every 5 s and Cancel). A refused attempt is logged and returned as
:attr:`LaunchOutcome.warning` ("Another user on this machine tried to open your server …"), shown
by the CLI and the window. Elsewhere (macOS, Windows) the owner of a loopback peer cannot be read
without extra tools, so the token, which only our own account can read, is the guard. Verified with
headless Chromium: a ``file://``
page posting to the loopback listener and following its redirect to a URL with credentials opens
the UI signed in. The page opened is the workspace's latest session (a new, empty one is created
when it has none: the UI's project list lives in the browser's per-origin storage, so a bare ``/``
would show nothing, and ``/<workspace>`` without a session fails in 1.18.33's UI). Residual risks:
the browser keeps the password for the origin until it quits, and Chromium also writes the
redirected address (with the password) into the session-restore files of the user's own profile
(its history keeps the address without it; both verified) — readable by the user only; the
password is fresh per server start and useless once the server stops. A browser confined by snap
or flatpak may not read the page in the app's (hidden) state folder: the timeout error says to set
``BROWSER``. Firefox asks once to confirm the sign-in as "opencode".
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import psutil

from smartspec_desktop.core import ports
from smartspec_desktop.core.errors import LaunchCancelled, LaunchError, PortInUse, SmartSpecError
from smartspec_desktop.core.launch.terminals import build_terminal_launch
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.opencode.client import (
    USERNAME,
    OpenCodeClient,
    in_workspace,
    server_directory,
)
from smartspec_desktop.core.process.procs import ProcIdentity, kill_recorded
from smartspec_desktop.core.process.supervised import EarlyExit, NotReady, Supervised, log_tail
from smartspec_desktop.core.servers.launch_config import SCRUBBED_ENV
from smartspec_desktop.core.servers.manager import ServerManager
from smartspec_desktop.core.servers.registry import ChildRecord, ServerRecord
from smartspec_desktop.core.servers.trust import apply_trust
from smartspec_desktop.core.storage.paths import check_trusted_program, make_private_dir

if TYPE_CHECKING:
    import http.server

    import httpx
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
Opener = Callable[[str], bool]

OPENWORK_KIND = "openwork"
OPENWORK_BINARY = "openwork-server"
#: The first openwork-server whose ``web`` serves the UI (older 0.18.x answer /health, then 404).
OPENWORK_MIN_VERSION = (0, 18, 50)
OPENWORK_SUPPORTED = "openwork-server 0.18.50 or newer"
#: How a user really gets openwork-server (npm answers 404 for `openwork-server` on the
#: registries these machines reach): every route below is one :func:`openwork_locations` checks.
OPENWORK_INSTALL = (
    "install the OpenWork desktop app (0.18.50 or newer: its server is found in the app), or "
    "run OpenWork's orchestrator once online (`npm install -g openwork-orchestrator`, then "
    "`openwork start`: it downloads openwork-server into ~/.openwork/openwork-orchestrator/"
    "sidecars, where this app finds it), or set its path in Settings → OpenWork server"
)
OPENWORK_NOTICE = (
    "This is OpenCode's own web UI. For the full OpenWork experience get OpenWork's server "
    f"({OPENWORK_SUPPORTED}): {OPENWORK_INSTALL}. The next Open OpenWork UI will use it."
)
OPENWORK_START_TIMEOUT = 30.0
#: What openwork-server (Node) prints when its port was taken before it could bind it.
PORT_CONFLICT_MARKERS = ("EADDRINUSE", "address already in use")
#: How long the one-shot page waits for the browser to ask for it (a browser's cold start
#: takes a few seconds; past this it did not start, or cannot read the page).
HANDOFF_TIMEOUT = 30.0
#: How often the wait says how long it has been waiting.
HANDOFF_PROGRESS_EVERY = 5.0
#: How long one connection to it may take per read: a silent client loses its turn.
HANDOFF_CONNECTION_TIMEOUT = 3.0
#: A terminal that exits within this time with an error code did not open a window.
TERMINAL_EARLY_EXIT = 1.0
#: Variables the terminal's environment never gets (the TUI needs none of them).
TERMINAL_DROPPED_ENV = (*SCRUBBED_ENV, "SMARTSPEC_API_KEY")


@dataclass(frozen=True)
class LaunchOutcome:
    message: str  # one line for a status bar / CLI stdout, no secrets
    url: str | None = None  # what was opened (never containing a password)
    notice: str | None = None  # a one-time hint, e.g. how to install OpenWork
    #: Something the user must know, e.g. another local user tried to open the server.
    warning: str | None = None


def _quiet(_msg: str) -> None:
    pass


def _running_record(servers: ServerManager, workspace: str, say: Progress) -> ServerRecord:
    say("Starting the workspace's server (or reusing it) …")
    result = servers.start(workspace, progress=say)
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
    servers: ServerManager,
    workspace: str,
    *,
    progress: Progress | None = None,
    popen: Callable[..., Any] = subprocess.Popen,
) -> LaunchOutcome:
    """Open a terminal window running ``opencode attach`` against the workspace's server."""
    say = progress or _quiet
    rec = _running_record(servers, workspace, say)
    password = servers.password(rec)
    opencode = rec.opencode_path or servers.find_opencode().path
    ws = rec.workspace_path
    cwd = ws
    if rec.host:
        # A remote workspace (issue 15): the local TUI attaches through the forwarded port; its
        # folder is the one on the host, and this machine has no such folder to start in.
        opencode = servers.find_opencode().path
        ws = server_directory(ws)
        home = os.path.expanduser("~")
        cwd = home if os.path.isdir(home) else os.path.abspath(os.sep)  # HOME may not exist
    command = [opencode, "attach", rec.url, "--dir", ws]
    terminal_env = _loopback_env(servers.environ, TERMINAL_DROPPED_ENV)
    # The TUI loads the folder's own tui.json plugins unless told not to: only when trusted.
    apply_trust(terminal_env, rec.trusted)
    launch = build_terminal_launch(
        command,
        cwd=cwd,
        title=f"OpenCode — {os.path.basename(ws) or ws}",
        secret_env={"OPENCODE_SERVER_PASSWORD": password},
        preference=servers.settings.terminal,
        environ=terminal_env,
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
    servers: ServerManager,
    workspace: str,
    *,
    progress: Progress | None = None,
    opener: Opener | None = None,
    session_id: str | None = None,
    cancel: threading.Event | None = None,
) -> LaunchOutcome:
    """Open OpenWork (or, without openwork-server, OpenCode's web UI) for the workspace.

    ``cancel``, when set (from any thread) while this waits for the browser, ends the wait with
    :class:`LaunchCancelled`.

    ``opener`` defaults to :func:`webbrowser.open`; it gets a URL without any password. On the
    web UI path this returns once the browser fetched the one-shot page (at most
    ``HANDOFF_TIMEOUT`` seconds). ``session_id`` deep-links OpenCode's web UI to that session
    (OpenWork opens on its own session list: it has no deep link for a session of a server it is
    attached to).
    """
    say = progress or _quiet
    open_url = opener or _default_opener
    mode = (servers.settings.openwork_mode or "auto").strip().lower()
    if mode not in ("auto", "openwork", "web"):
        raise LaunchError(
            f"Settings → OpenWork mode is “{mode}”.", "Set it to auto, openwork or web."
        )
    binary = (
        None
        if mode == "web"
        else find_openwork_server(
            servers.settings.openwork_server_path,
            lambda name: shutil.which(name, path=servers.environ.get("PATH")),
            locations=openwork_locations(servers.environ),
        )
    )
    if binary is None and mode == "openwork":
        raise LaunchError(
            "openwork-server is not installed (Settings → OpenWork mode is “openwork”).",
            f"To get it ({OPENWORK_SUPPORTED}): {OPENWORK_INSTALL}; or set the mode to auto.",
        )
    open_url = _display_checked(open_url, servers.environ)
    rec = _running_record(servers, workspace, say)
    if binary is not None and rec.host and mode == "openwork":
        raise LaunchError(
            f"OpenWork's server cannot open a remote workspace ({rec.host}): it works on a "
            "local folder.",
            "Set Settings → OpenWork mode to auto or web: OpenCode's web UI then opens through "
            "the forwarded port.",
        )
    if binary is not None and not rec.host:
        return _open_with_openwork_server(servers, rec, binary, say, open_url, session_id)
    return _open_web_ui(
        servers,
        rec,
        say,
        open_url,
        notice=mode == "auto",
        session_id=session_id,
        cancel=cancel,
    )


def find_openwork_server(
    configured: str,
    which: Callable[[str], str | None] = shutil.which,
    *,
    locations: list[tuple[Path, str]] | None = None,
) -> str | None:
    """The openwork-server to run: the path from Settings (which must work), else PATH, else
    the first of ``locations`` (:func:`openwork_locations`) that holds one."""
    if configured.strip():
        path = os.path.expanduser(configured.strip())
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise LaunchError(
                f"The OpenWork server path in Settings ({configured}) is not an executable file.",
                f"Fix or clear Settings → OpenWork server (to get one: {OPENWORK_INSTALL}).",
            )
        check_trusted_program(path, "Settings → OpenWork server")
        return path
    found = which(OPENWORK_BINARY)
    if found:
        check_trusted_program(found, "PATH (or set Settings → OpenWork server)")
        return found
    for folder, route in locations or []:
        program = _openwork_in(folder)
        if program is not None:
            check_trusted_program(program, f"{route} (or set Settings → OpenWork server)")
            log.info("using the openwork-server of %s: %s", route, program)
            return program
    return None


def openwork_locations(
    environ: Mapping[str, str], platform: str = sys.platform
) -> list[tuple[Path, str]]:
    """Where an installed openwork-server lives besides PATH, with the route that put it there.

    - The OpenWork desktop app ships it as a sidecar in its resources (its build script copies
      the sidecars to ``resources/sidecars`` of the Electron app, some builds name them with the
      target triple): ``/opt/OpenWork/resources`` (the .deb/.rpm; also ``/usr/lib/openwork``
      and ``~/Applications/OpenWork``, where unpacked builds go),
      ``[~]/Applications/OpenWork.app/Contents/Resources`` (macOS),
      ``%LOCALAPPDATA%\\Programs\\OpenWork\\resources`` (Windows). Its .deb also links
      ``/usr/bin/openwork-server``, which PATH finds.
    - OpenWork's orchestrator (``openwork`` from npm ``openwork-orchestrator``) downloads it on
      its first run into its sidecar cache: ``$OPENWORK_SIDECAR_DIR``, else
      ``$OPENWORK_DATA_DIR/sidecars``, else ``~/.openwork/openwork-orchestrator/sidecars``
      (a version/target folder below is searched too).
    """
    home_text = environ.get("HOME") or environ.get("USERPROFILE") or ""
    home = Path(home_text) if home_text else None  # no home in that environment: none of it
    out: list[tuple[Path, str]] = []
    app = "the OpenWork desktop app"
    if platform == "darwin":
        for base in (Path("/Applications"), *([home / "Applications"] if home else [])):
            out.append((base / "OpenWork.app" / "Contents" / "Resources", app))
            out.append((base / "OpenWork.app" / "Contents" / "MacOS", app))
    elif platform == "win32":
        local = environ.get("LOCALAPPDATA")
        if local:
            out.append((Path(local) / "Programs" / "OpenWork" / "resources", app))
    else:
        bases = [Path("/opt/OpenWork"), Path("/usr/lib/openwork")]
        if home:
            bases.append(home / "Applications" / "OpenWork")
        for base in bases:
            out.append((base / "resources", app))
            out.append((base, app))
    orchestrator = "OpenWork's orchestrator (its downloaded sidecar)"
    if environ.get("OPENWORK_SIDECAR_DIR"):
        out.append((Path(environ["OPENWORK_SIDECAR_DIR"]), orchestrator))
    if environ.get("OPENWORK_DATA_DIR"):
        out.append((Path(environ["OPENWORK_DATA_DIR"]) / "sidecars", orchestrator))
    if home:
        out.append((home / ".openwork" / "openwork-orchestrator" / "sidecars", orchestrator))
    return out


def _version_key(text: str) -> tuple[int, ...]:
    """``"v0.18.50"`` → ``(0, 18, 50)``; text without digits → ``()``."""
    return tuple(int(n) for n in re.findall(r"\d+", text))


def _openwork_in(folder: Path, depth: int = 3) -> str | None:
    """An executable ``openwork-server`` (or ``openwork-server-<target>``, ``.exe``) in
    ``folder`` or up to ``depth`` levels below it (the highest version folder first); None when
    there is none."""
    if depth < 0 or not folder.is_dir():
        return None
    try:
        entries = sorted(folder.iterdir(), key=lambda p: _version_key(p.name), reverse=True)
    except OSError:
        return None
    for entry in entries:
        name = entry.name.lower().removesuffix(".exe")
        named = name == OPENWORK_BINARY or name.startswith(OPENWORK_BINARY + "-")
        if named and entry.is_file() and os.access(entry, os.X_OK):
            return str(entry)
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            found = _openwork_in(entry, depth - 1)
            if found:
                return found
    return None


def _default_opener(url: str) -> bool:
    try:
        return bool(webbrowser.open(url, new=2))
    except webbrowser.Error:
        return False


def has_display(environ: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Whether a browser window can open: always on macOS and Windows; elsewhere (X11 or
    Wayland) only with DISPLAY or WAYLAND_DISPLAY set."""
    if platform == "darwin" or platform == "win32":
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


NO_DISPLAY = (
    "There is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set, e.g. an SSH or "
    "console session), so no browser window can open.",
    "Run this from your desktop session (or set DISPLAY), or use `smartspec-desktop open-cli "
    "PATH` (OpenCode's TUI) in a terminal instead.",
)


def _display_checked(open_url: Opener, environ: Mapping[str, str]) -> Opener:
    """``open_url``, whose failure is explained as "no display" when there is none."""

    def opener(url: str) -> bool:
        if open_url(url):
            return True
        if not has_display(environ):
            raise LaunchError(*NO_DISPLAY)
        return False

    return opener


def _open_in_browser(open_url: Opener, url: str) -> None:
    if not open_url(url):
        raise LaunchError(
            "No web browser could be opened.",
            "Install a browser or set the BROWSER environment variable (e.g. BROWSER=firefox), "
            "then try again.",
        )


# -- path 1: openwork-server ------------------------------------------------------------------


def openwork_command(binary: str, rec: ServerRecord, port: int) -> list[str]:
    """The argv of ``openwork-server web`` for a server: no secret in it."""
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


def live_children(rec: ServerRecord, kind: str | None = None) -> list[ChildRecord]:
    """The server's recorded children whose process is still the one we started."""
    return [c for c in rec.children if (kind is None or c.kind == kind) and _child_alive(c)]


def _answers(url: str) -> bool:
    try:
        r = httpx.get(url + "/health", timeout=2.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code < 500


def _open_with_openwork_server(
    servers: ServerManager,
    rec: ServerRecord,
    binary: str,
    say: Progress,
    open_url: Opener,
    session_id: str | None = None,
) -> LaunchOutcome:
    for child in live_children(rec, OPENWORK_KIND):
        if child.url and _answers(child.url):
            say("Reusing the running OpenWork server …")
            return _open_openwork_page(rec, child, open_url, session_id)
        say("Replacing an OpenWork server that does not answer …")
        kill_recorded(child.identities(), grace=3.0)
    _drop_children(servers, rec.server_id, OPENWORK_KIND)
    password = servers.password(rec)
    opencode_bin = rec.opencode_path or servers.find_opencode().path
    last: SmartSpecError | None = None
    for _attempt in range(3):
        port = ports.os_assigned_port()
        say(f"Starting openwork-server (asking for 127.0.0.1:{port}) …")
        try:
            child = _spawn_openwork(servers, rec, binary, port, password, opencode_bin, say)
        except PortInUse as e:
            last = LaunchError(e.problem, e.fix, details=e.details)
            continue
        return _open_openwork_page(rec, child, open_url, session_id)
    assert last is not None
    raise last


def openwork_page(child: ChildRecord, session_id: str | None) -> str:
    """The page to open: the session's deep link ``/workspace/<id>/session/<id>`` when both are
    known, else the start page."""
    if session_id and child.workspace_id:
        return (
            f"{child.url}/workspace/{quote(child.workspace_id, safe='')}"
            f"/session/{quote(session_id, safe='')}"
        )
    return child.url + "/"


def _open_openwork_page(
    rec: ServerRecord, child: ChildRecord, open_url: Opener, session_id: str | None
) -> LaunchOutcome:
    page = openwork_page(child, session_id)
    _open_in_browser(open_url, page)
    if page == child.url + "/":
        return LaunchOutcome(f"Opened OpenWork for {rec.workspace_path} at {page}.", url=child.url)
    return LaunchOutcome(
        f"Opened OpenWork for {rec.workspace_path} at {page} (session {session_id}).", url=page
    )


def _spawn_openwork(
    servers: ServerManager,
    rec: ServerRecord,
    binary: str,
    port: int,
    password: str,
    opencode_bin: str,
    say: Progress = _quiet,
) -> ChildRecord:
    paths = servers.paths
    paths.ensure()
    log_path = paths.server_log_dir / f"{rec.server_id}.openwork.log"
    exit_file = paths.state_dir / "exits" / f"{rec.server_id}.openwork.json"
    env = openwork_env(servers.environ, password=password, opencode_bin=opencode_bin)
    url = f"http://{ports.HOST}:{port}"
    try:
        log_start = log_path.stat().st_size  # the log is appended to: read this run's lines
    except OSError:
        log_start = 0
    try:
        with Supervised.spawn(
            openwork_command(binary, rec, port),
            name="openwork-server",
            log_path=log_path,
            exit_file=exit_file,
            cwd=rec.workspace_path,
            env=env,
            # Kept so it is reaped while we live (no zombie, no ResourceWarning).
            on_spawn=lambda sup: servers.track(f"{rec.server_id}/{OPENWORK_KIND}/{sup.pid}", sup),
        ) as proc:
            child = ChildRecord(
                kind=OPENWORK_KIND,
                pid=proc.pid,
                create_time=proc.create_time,
                supervisor_pid=proc.supervisor_pid,
                supervisor_create_time=proc.supervisor_create_time,
                port=port,
                url=url,
                log_path=str(log_path),
                exit_file=str(exit_file),
            )
            # Recorded before the wait, so a stop in the meantime kills it too.
            with servers.registry.transaction() as records:
                if rec.server_id not in records:
                    raise LaunchError(
                        f"The server for {rec.workspace_path} was stopped meanwhile.",
                        "Start it again and retry.",
                    )
                records[rec.server_id].children.append(child)
            bound = _wait_openwork(proc, port, log_start)
            if bound != port:
                say(f"openwork-server took port {bound} ({port} was taken).")
            child.port, child.url = bound, f"http://{ports.HOST}:{bound}"
            _check_openwork_version(child.url, binary)
            child.workspace_id = _check_openwork_handoff(
                proc, child.url, env["OPENWORK_TOKEN"], rec
            )
            with servers.registry.transaction() as records:
                if rec.server_id not in records:
                    raise LaunchError(
                        f"The server for {rec.workspace_path} was stopped meanwhile.",
                        "Start it again and retry.",
                    )
                for c in records[rec.server_id].children:
                    if c.kind == OPENWORK_KIND and c.pid == child.pid:
                        c.port, c.url, c.workspace_id = child.port, child.url, child.workspace_id
            proc.keep()
    except BaseException:
        _drop_children(servers, rec.server_id, OPENWORK_KIND)
        raise
    return child


#: How openwork-server says where it listens. The real server's wording is not recorded in
#: shared/notes/openwork.md (only that it logs the port it bound), so this takes any line that
#: says "listen…" with a loopback address and port (the stand-in's: ``openwork-standin
#: listening on http://127.0.0.1:<port>``); when no such line appears, the listening socket of
#: the process itself is read (psutil), which does not depend on any wording.
LISTEN_LINE = re.compile(
    r"listen\w*\b.*?(?:127\.0\.0\.1|localhost|\[::1\]|0\.0\.0\.0):(\d{2,5})\b", re.IGNORECASE
)


def bound_port_from_log(text: str) -> int | None:
    """The last port a ``listening on …:<port>`` line of ``text`` names, or None."""
    found = LISTEN_LINE.findall(text)
    return int(found[-1]) if found else None


def _listening_port(pid: int) -> int | None:
    """The one loopback TCP port process ``pid`` listens on (None: none, or several)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    found = {
        c.laddr.port
        for c in conns
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip in ("127.0.0.1", "::1")
    }
    return found.pop() if len(found) == 1 else None


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) < offset:
                offset = 0  # rotated meanwhile
            f.seek(offset)
            return f.read(1_000_000).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _wait_openwork(proc: Supervised, asked: int, log_start: int) -> int:
    """Wait until openwork-server answers ``/health`` on the port it really bound (it silently
    takes another one when ``asked`` is taken); return that port."""
    bound: list[int] = []
    with httpx.Client(timeout=httpx.Timeout(1.0), trust_env=False) as http:

        def healthy() -> bool:
            port = bound_port_from_log(_read_from(proc.log_path, log_start))
            if port is None:
                port = _listening_port(proc.pid)
            if port is None:
                return False
            try:
                ok = http.get(f"http://{ports.HOST}:{port}/health").status_code == 200
            except httpx.HTTPError:
                return False
            if ok:
                bound.append(port)
            return ok

        try:
            proc.wait_ready(healthy, time.monotonic() + OPENWORK_START_TIMEOUT)
        except EarlyExit as e:
            kind = PortInUse if e.mentions(PORT_CONFLICT_MARKERS) else LaunchError
            raise kind(
                f"openwork-server exited during start-up: {e.summary}",
                f"See its log {proc.log_path}; check the install ({OPENWORK_SUPPORTED}; to "
                f"get one: {OPENWORK_INSTALL}) or set Settings → OpenWork mode to web.",
                details=log_tail(proc.log_path, 20),
            ) from None
        except NotReady:
            raise LaunchError(
                f"openwork-server did not answer within {OPENWORK_START_TIMEOUT:.0f} s "
                f"(it was asked for port {asked}).",
                f"See its log {proc.log_path}, or set Settings → OpenWork mode to web.",
                details=log_tail(proc.log_path, 20),
            ) from None
    return bound[-1] if bound else asked


def openwork_version(health: Any) -> str:
    """The version ``/health`` reports (``{"version": …}``), or "" when it does not say."""
    if isinstance(health, dict):
        v = health.get("version")
        if isinstance(v, str | int | float) and str(v).strip():
            return str(v).strip()
    return ""


def _check_openwork_version(url: str, binary: str) -> None:
    """Refuse an openwork-server older than 0.18.50: 0.18.0–0.18.49 ignore ``web`` silently
    (``/health`` 200, then a JSON 404 on ``/``)."""
    try:
        r = httpx.get(url + "/health", timeout=5.0, trust_env=False)
        version = openwork_version(r.json())
    except (httpx.HTTPError, ValueError):
        version = ""
    got = _version_key(version)
    if got and got >= OPENWORK_MIN_VERSION:
        return
    said = f"openwork-server {version}" if version else "openwork-server (no version given)"
    raise LaunchError(
        f"{said} ({binary}) is too old: the web UI needs {OPENWORK_SUPPORTED} "
        "(older ones answer, then serve no page).",
        f"Get a newer one: {OPENWORK_INSTALL}; or set Settings → OpenWork mode to web.",
    )


def _check_openwork_handoff(proc: Supervised, url: str, token: str, rec: ServerRecord) -> str:
    """Probe ``/opencode/global/health`` through openwork-server with its client token: it
    answers ``/health`` even when the OpenCode password or URL it was given is wrong (then every
    proxied call fails). Returns the workspace id from ``/workspaces`` ("" if none is listed)."""
    headers = {"Authorization": f"Bearer {token}"}
    fix_restart = (
        "Stop the workspace's server and start it again (it gets a fresh password), then retry; "
        f"if it persists, see openwork-server's log {proc.log_path} or set Settings → "
        "OpenWork mode to web."
    )
    with httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False, headers=headers) as http:
        try:
            r = http.get(url + "/opencode/global/health")
        except httpx.HTTPError as e:
            raise LaunchError(
                f"openwork-server did not answer its OpenCode proxy ({type(e).__name__}).",
                fix_restart,
            ) from None
        if r.status_code == 401 and "basic" in r.headers.get("www-authenticate", "").lower():
            raise LaunchError(
                "openwork-server cannot sign in to the workspace's OpenCode server: OpenCode "
                "refused the password it was given (401).",
                fix_restart,
            )
        if r.status_code == 401:
            raise LaunchError(
                "openwork-server refused its own client token (401), or OpenCode refused the "
                "password it was given.",
                fix_restart,
            )
        if r.status_code >= 400:
            raise LaunchError(
                f"openwork-server cannot reach the workspace's OpenCode server at {rec.url} "
                f"({r.status_code}: {r.text[:200]}).",
                fix_restart,
            )
        try:
            data = http.get(url + "/workspaces").json()
        except (httpx.HTTPError, ValueError):
            return ""
    return _workspace_id(data, rec.workspace_path)


def _workspace_id(data: Any, workspace: str) -> str:
    """The id of ``workspace`` in a ``/workspaces`` answer (``{"items": [{"id", "path"}]}``);
    the only one listed when none matches by path; "" when unknown."""
    items = data.get("items") or data.get("workspaces") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return ""
    listed = [i for i in items if isinstance(i, dict) and i.get("id")]
    for item in listed:
        path = str(item.get("path") or item.get("directory") or "")
        if path and os.path.normcase(path) == os.path.normcase(workspace):
            return str(item["id"])
    return str(listed[0]["id"]) if len(listed) == 1 else ""


def _drop_children(servers: ServerManager, server_id: str, kind: str) -> None:
    with servers.registry.transaction() as records:
        rec = records.get(server_id)
        if rec is None:
            return
        keep = []
        for child in rec.children:
            if child.kind == kind and not _child_alive(child):
                if child.exit_file:
                    with contextlib.suppress(OSError):
                        Path(child.exit_file).unlink(missing_ok=True)
                continue
            keep.append(child)
        rec.children = keep


def _child_alive(child: ChildRecord) -> bool:
    return bool(child.pid) and ProcIdentity(child.pid, child.create_time).alive()


# -- path 2: OpenCode's web UI through a one-shot page ---------------------------------------


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def web_ui_path(workspace: str, session_id: str) -> str:
    """The UI's route of a session: ``/<base64url(directory)>/session/<id>``."""
    return f"/{_b64url(server_directory(workspace))}/session/{session_id}"


def _latest_session(client: OpenCodeClient, workspace: str) -> str:
    sessions = [
        s
        for s in client.list_sessions()
        if isinstance(s, dict)
        and in_workspace(str(s.get("directory") or ""), workspace)
        and not s.get("parentID")
    ]

    def updated(s: dict[str, Any]) -> float:
        t = s.get("time") or {}
        value = t.get("updated") or t.get("created") or 0
        return float(value) if isinstance(value, int | float) else 0.0

    if sessions:
        return str(max(sessions, key=updated)["id"])
    return str(client.create_session()["id"])


def _open_web_ui(
    servers: ServerManager,
    rec: ServerRecord,
    say: Progress,
    open_url: Opener,
    *,
    notice: bool,
    session_id: str | None = None,
    cancel: threading.Event | None = None,
) -> LaunchOutcome:
    password = servers.password(rec)
    if not session_id:
        with OpenCodeClient(rec.url, password, timeout=15.0) as client:
            session_id = _latest_session(client, rec.workspace_path)
    path = web_ui_path(rec.workspace_path, session_id)
    host = rec.url.split("://", 1)[1]
    target = f"http://{USERNAME}:{quote(password, safe='')}@{host}{path}"
    servers.paths.ensure()
    handoff = Handoff(target, servers.paths.state_dir)
    try:
        say("Opening OpenCode's web UI in the browser …")
        _open_in_browser(open_url, handoff.url)
        if not _wait_for_browser(handoff, say, cancel):
            raise LaunchError(
                f"The browser did not open the page within {HANDOFF_TIMEOUT:.0f} s: it did not "
                "start, or it cannot read the app's private page."
                + (f" {handoff.warning}" if handoff.warning else ""),
                "Check that a browser opens at all here (or set BROWSER); a browser confined "
                "by snap or flatpak may not read the app's private page: set BROWSER to one "
                "that is not, then try again.",
            )
    finally:
        handoff.close()
    warning = handoff.warning
    if warning:
        log.warning("%s", warning)
    shown = _notice_once(servers) if notice else None
    return LaunchOutcome(
        f"Opened OpenCode's web UI for {rec.workspace_path} at {rec.url}{path}.",
        url=rec.url + path,
        notice=shown,
        warning=warning,
    )


def _wait_for_browser(handoff: Handoff, say: Progress, cancel: threading.Event | None) -> bool:
    """Wait (at most ``HANDOFF_TIMEOUT``) for the browser to fetch the page, saying every few
    seconds how long it has been; :class:`LaunchCancelled` once ``cancel`` is set."""
    started = time.monotonic()
    next_note = HANDOFF_PROGRESS_EVERY
    while True:
        waited = time.monotonic() - started
        if waited >= HANDOFF_TIMEOUT:
            return False
        if handoff.wait(min(0.2, HANDOFF_TIMEOUT - waited)):
            return True
        if cancel is not None and cancel.is_set():
            raise LaunchCancelled(
                "Cancelled: the browser had not opened the page yet.",
                "Use Open OpenWork UI again when you are ready.",
            )
        if time.monotonic() - started >= next_note:
            say(
                f"Waiting for the browser to open the page … {next_note:.0f} s of "
                f"{HANDOFF_TIMEOUT:.0f} s (Cancel stops waiting)"
            )
            next_note += HANDOFF_PROGRESS_EVERY


def _notice_once(servers: ServerManager) -> str | None:
    marker = servers.paths.state_dir / "openwork-notice-shown"
    if marker.exists():
        return None
    with contextlib.suppress(OSError):
        make_private_dir(marker.parent)
        marker.write_text("1\n", encoding="utf-8")
    return OPENWORK_NOTICE


class Handoff:
    """A private page that hands the browser its credentials once, to our own user only.

    The page is a file (``open.html``, 0600, in a fresh 0700 folder under ``folder``) that posts a
    random one-time token to a loopback listener of ours, which answers the first request bearing
    it with ``303 See Other`` to ``target`` (which carries the credentials). The browser's argv
    holds only that file's ``file://`` URL, useless to anyone who cannot read the file. The
    listener (threaded, 127.0.0.1 only, a few seconds per connection) also checks who connects: on
    Linux a connection is accepted only when ``/proc/net/tcp`` or ``/proc/net/tcp6`` show that its
    socket is an established one of our own uid; another uid's, or one whose owner cannot be
    established, is closed at once and counted in :attr:`refused` (so nobody can hold the page
    busy). Lives until :meth:`close` (used or not), which deletes the page and its folder.
    """

    def __init__(
        self,
        target: str,
        folder: Path,
        *,
        peer_owner: Callable[[tuple[str, int], tuple[str, int]], int | None] | None = None,
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        self.used = threading.Event()
        #: One line per refused connection ("uid 1001 over IPv4"), for the log and the warning.
        self.refused: list[str] = []
        self._target = target
        self._peer_owner = peer_owner or socket_owner
        self._lock = threading.Lock()
        handoff = self
        import http.server  # here: only a hand-off serves a page (issue 11)

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = HANDOFF_CONNECTION_TIMEOUT  # per read: a silent client loses its turn

            def do_POST(self) -> None:
                handoff._answer(self)

            def do_GET(self) -> None:
                handoff._plain(self, 404, "Nothing here. Use Open OpenWork UI in the app.")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                return handoff._admit(request, client_address)

        self._server = Server((ports.HOST, 0), Handler)
        self.port = int(self._server.server_address[1])
        _sweep_stale_pages(folder)
        self._folder = Path(tempfile.mkdtemp(prefix="open-", dir=folder))  # 0700
        self.page = self._folder / "open.html"
        _write_private(self.page, _handoff_page(self.port, self.token))
        self.url = self.page.as_uri()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    # -- who connects ---------------------------------------------------------------------
    def _admit(self, request: Any, client_address: Any) -> bool:
        if not sys.platform.startswith("linux"):
            return True  # no owner to read here: the token (in a 0600 file only) is the guard
        client = (str(client_address[0]), int(client_address[1]))
        server = (ports.HOST, self.port)
        uid = self._peer_owner(client, server)
        if uid == os.getuid():
            return True
        # Refused: socketserver closes it at once, before any thread reads from it.
        who = f"uid {uid} ({_user_name(uid)})" if uid is not None else "an unknown owner"
        with self._lock:
            self.refused.append(f"{who} from port {client[1]}")
        log.warning("refused a connection to the one-shot page from %s (port %s)", who, client[1])
        return False

    @property
    def warning(self) -> str | None:
        """What the user is told when someone else tried: None when nobody did."""
        with self._lock:
            refused = list(self.refused)
        if not refused:
            return None
        uids = sorted({r.split(" from ")[0] for r in refused})
        return (
            "Another user on this machine tried to open your server "
            f"({', '.join(uids)}; {len(refused)} connection(s) refused). They got nothing: the "
            "link only works from your own account. If this is unexpected, tell whoever runs "
            "this machine."
        )

    # -- the one request ------------------------------------------------------------------
    def _answer(self, req: http.server.BaseHTTPRequestHandler) -> None:
        if req.path != "/open":
            self._plain(req, 404, "Nothing here. Use Open OpenWork UI in the app.")
            return
        try:
            length = int(req.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= 4096:
            self._plain(req, 400, "Bad request.")
            return
        try:
            body = req.rfile.read(length).decode("ascii", errors="replace")
        except OSError:
            return
        given = (parse_qs(body).get("token") or [""])[0]
        with self._lock:
            ok = secrets.compare_digest(given, self.token) and not self.used.is_set()
            if ok:
                self.used.set()
        if not ok:
            self._plain(req, 404, "This link was already used. Use Open OpenWork UI again.")
            return
        with contextlib.suppress(OSError):
            self.page.unlink()  # done: nothing of it stays on disk
        req.send_response(303)
        req.send_header("Location", self._target)
        req.send_header("Cache-Control", "no-store")
        req.send_header("Referrer-Policy", "no-referrer")
        req.send_header("Content-Length", "0")
        req.end_headers()

    @staticmethod
    def _plain(req: http.server.BaseHTTPRequestHandler, code: int, text: str) -> None:
        body = text.encode("utf-8")
        req.send_response(code)
        req.send_header("Content-Type", "text/plain; charset=utf-8")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        with contextlib.suppress(OSError):
            req.wfile.write(body)

    def wait(self, timeout: float) -> bool:
        return self.used.wait(timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        shutil.rmtree(self._folder, ignore_errors=True)


HANDOFF_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<title>Opening OpenCode …</title></head>
<body><form id="open" method="post" action="http://{host}:{port}/open">
<input type="hidden" name="token" value="{token}">
<noscript><button type="submit">Open OpenCode</button></noscript></form>
<script>document.getElementById("open").submit();</script></body></html>
"""


def _sweep_stale_pages(folder: Path) -> None:
    """Remove pages left by a run that was killed (their tokens are worthless: the listener
    is gone); one that may still be in use (younger than the overall window) stays."""
    with contextlib.suppress(OSError):
        for old in folder.glob("open-*"):
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > 2 * HANDOFF_TIMEOUT:
                    shutil.rmtree(old, ignore_errors=True)


def _handoff_page(port: int, token: str) -> str:
    return HANDOFF_PAGE.format(host=ports.HOST, port=port, token=token)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by us only (0600 whatever the umask; never through a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if hasattr(os, "fchmod"):
            os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _user_name(uid: int | None) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name if uid is not None else "?"
    except (ImportError, KeyError):
        return "?"


def _proc_net_address(hex_addr: str) -> str:
    """An address of /proc/net/tcp[6] (host-order 32-bit words in hex) as text; an IPv4-mapped
    IPv6 address comes out as its IPv4 form, so both families compare alike."""
    words = [int(hex_addr[i : i + 8], 16) for i in range(0, len(hex_addr), 8)]
    raw = b"".join(struct.pack("=I", w) for w in words)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    v6 = ipaddress.IPv6Address(raw)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped else str(v6)


def socket_owner(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """Linux: the uid owning the established TCP socket ``client`` → ``server``, from both
    /proc/net/tcp and /proc/net/tcp6 (an IPv6 socket connected to ``::ffff:127.0.0.1`` is listed
    only in the latter). None when no live row says so (not found, closing, unreadable): the
    caller refuses such a peer."""
    want = (
        _normal_ip(client[0]),
        client[1],
        _normal_ip(server[0]),
        server[1],
    )
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] != "01":  # 01 = ESTABLISHED
                continue
            try:
                local_ip, local_port = cols[1].rsplit(":", 1)
                remote_ip, remote_port = cols[2].rsplit(":", 1)
                got = (
                    _proc_net_address(local_ip),
                    int(local_port, 16),
                    _proc_net_address(remote_ip),
                    int(remote_port, 16),
                )
            except ValueError:
                continue
            if got == want and cols[9] != "0":  # inode 0: no longer a process's socket
                return int(cols[7])
    return None


def _normal_ip(text: str) -> str:
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)
