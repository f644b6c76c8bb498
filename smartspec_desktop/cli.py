"""The command line: the core without a window.

Every failure prints one line on stderr (``error: <problem> <fix>``) and exits non-zero; ``--json``
output goes to stdout and never contains a secret.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TextIO

from smartspec_desktop import __version__
from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.errors import (
    BackendUnreachable,
    ServerNotRunning,
    SmartSpecError,
    StateError,
)
from smartspec_desktop.core.launch.launchers import (
    OPENWORK_KIND,
    live_children,
    open_cli,
    open_openwork,
)
from smartspec_desktop.core.opencode.binary import PINNED_VERSION, install_opencode
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.opencode.tasks import run_task
from smartspec_desktop.core.redact import mask_key
from smartspec_desktop.core.servers.registry import CRASHED, ServerRecord
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import API_KEY_ENV, check_api_key_format
from smartspec_desktop.core.wiring import Core, build_core
from smartspec_desktop.logsetup import setup_logging

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smartspec-desktop",
        description="Launch OpenCode servers for your workspaces, billed to your SmartSpecPro "
        "account. Without a command, opens the window.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--data-dir", help="keep config, state and logs under this folder")
    p.add_argument(
        "--backend-url", help="SmartSpecPro backend (default: settings, else http://localhost:8000)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging to the app log")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("start", help="start (or reuse) the OpenCode server of a workspace")
    s.add_argument("workspace")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("status", help="list known servers")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("stop", help="stop the server of a workspace (or --all)")
    s.add_argument("workspace", nargs="?")
    s.add_argument("--all", action="store_true")

    s = sub.add_parser("sessions", help="list the OpenCode sessions of a workspace's server")
    s.add_argument("workspace")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser(
        "run",
        help="run one prompt through the workspace's OpenCode (answer on stdout, progress on "
        "stderr)",
    )
    s.add_argument("workspace")
    s.add_argument("prompt")
    s.add_argument("--session", help="continue this OpenCode session id (see `sessions`)")
    s.add_argument("--timeout", type=float, default=900.0, help="seconds (default 900)")

    s = sub.add_parser("logs", help="print the server log of a workspace")
    s.add_argument("workspace")
    s.add_argument("-n", "--lines", type=int, default=50)
    s.add_argument("--openwork", action="store_true", help="the openwork-server log instead")

    s = sub.add_parser("open-cli", help="open OpenCode's TUI for a workspace in a new terminal")
    s.add_argument("workspace")

    s = sub.add_parser(
        "open-openwork", help="open OpenWork (or OpenCode's web UI) for a workspace in the browser"
    )
    s.add_argument("workspace")

    k = sub.add_parser("key", help="the SmartSpecPro API key").add_subparsers(
        dest="key_command", metavar="ACTION", required=True
    )
    ks = k.add_parser("set", help="read a key from stdin, check it, store it in the OS keyring")
    ks.add_argument("--no-check", action="store_true", help="do not ask the backend")
    k.add_parser("show", help="show the key's source and a masked form")
    k.add_parser("delete", help="remove the key from the keyring")

    o = sub.add_parser("opencode", help="the OpenCode binary").add_subparsers(
        dest="opencode_command", metavar="ACTION", required=True
    )
    o.add_parser("install", help=f"install opencode-ai@{PINNED_VERSION} for this app with npm")
    o.add_parser("info", help="which opencode is used, and its version")
    return p


# ------------------------------------------------------------------------------------ helpers


def _print_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2) + "\n")


def _server_line(r: ServerRecord) -> str:
    bits = [f"{r.status:<9}", r.workspace_path]
    if r.port:
        bits.append(f"port {r.port}")
    if r.pid and r.status != CRASHED:
        bits.append(f"pid {r.pid}")
    if r.exit_code is not None:
        bits.append(f"exit code {r.exit_code}")
    for child in live_children(r):
        bits.append(f"{child.kind} {child.url} (pid {child.pid})")
    return "  ".join(bits)


def _say(err: TextIO) -> Callable[[str], None]:
    def say(message: str) -> None:
        if message:
            err.write(message + "\n")
            err.flush()

    return say


def _warn(messages: Sequence[str], err: TextIO) -> None:
    for m in messages:
        err.write(f"warning: {m}\n")


# ----------------------------------------------------------------------------------- commands


def cmd_start(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = core.servers.start(args.workspace, progress=_say(err))
    _warn(result.warnings, err)
    core.save_settings()
    rec = result.record
    if args.json:
        data = rec.public()
        data["reused"] = result.reused
        _print_json(data, out)
    else:
        verb = "Reusing" if result.reused else "Started"
        out.write(
            f"{verb} OpenCode {rec.opencode_version} for {rec.workspace_path} at {rec.url} "
            f"(pid {rec.pid}, model {rec.model}).\n"
        )
    return EXIT_OK


def cmd_status(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    records = core.servers.list_servers()
    _warn(core.servers.registry.drain_warnings(), err)
    if args.json:
        _print_json([r.public() for r in records], out)
    elif not records:
        out.write("No servers.\n")
    else:
        for r in records:
            out.write(_server_line(r) + "\n")
            if r.status == CRASHED:
                out.write(
                    f"          {r.error} Restart with `smartspec-desktop start "
                    f"{r.workspace_path}`; log: {r.log_path}\n"
                )
    return EXIT_OK


def cmd_stop(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.all:
        stopped = core.servers.stop_all()
        out.write(f"Stopped {len(stopped)} server(s).\n")
        _warn(core.servers.registry.drain_warnings(), err)  # e.g. a stop that was not recorded
        return EXIT_OK
    if not args.workspace:
        err.write("error: name a workspace to stop, or use --all.\n")
        return EXIT_USAGE
    rec = core.servers.stop(args.workspace)
    out.write(f"Stopped the server for {rec.workspace_path}.\n")
    _warn(core.servers.registry.drain_warnings(), err)  # e.g. a stop that was not recorded
    return EXIT_OK


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def cmd_sessions(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rec = core.servers.get(args.workspace)
    if rec is None or not rec.active:
        raise ServerNotRunning(
            f"No OpenCode server is running for {args.workspace}.",
            f"Start it with `smartspec-desktop start {args.workspace}`.",
        )
    with core.servers.client(rec, timeout=15.0) as client:
        infos = client.session_infos()
    if args.json:
        _print_json([i.public() for i in infos], out)
    elif not infos:
        out.write("No OpenCode sessions yet. Run a task with `smartspec-desktop run`.\n")
    else:
        head = ("ID", "CREATED", "LAST ACTIVITY", "TOKENS", "COST")
        out.write("{:<32} {:<16} {:<16} {:>8} {:>8}  TITLE\n".format(*head))
        for i in infos:
            out.write(
                f"{i.id:<32} {_when(i.created):<16} {_when(i.updated):<16} "
                f"{i.tokens_input + i.tokens_output:>8} {i.cost:>8.4f}  {i.title}\n"
            )
    return EXIT_OK


class _ProgressLine:
    """The live progress line on stderr: rewritten in place on a terminal, else one line per
    change (tool calls, todo n/m, retries)."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.tty = err.isatty()
        self.shown = False

    def update(self, state: TaskState, message: str) -> None:
        if self.tty:
            self.err.write("\r\x1b[K… " + state.progress_line())
            self.shown = True
        else:
            self.err.write(f"… {message}\n")
        self.err.flush()

    def end(self) -> None:
        if self.shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.shown = False


def cmd_run(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = core.servers.start(args.workspace, progress=_say(err))
    _warn(result.warnings, err)
    line = _ProgressLine(err)

    def on_text(chunk: str) -> None:
        line.end()  # a terminal shows stdout and stderr together: no half-overwritten lines
        out.write(chunk)
        out.flush()

    with core.servers.client(result.record, timeout=30.0) as client:
        try:
            state = run_task(
                client,
                args.prompt,
                session_id=args.session,
                on_text=on_text,
                on_progress=line.update,
                timeout=args.timeout,
            )
        finally:
            line.end()
    if state.text and not state.text.endswith("\n"):
        out.write("\n")
    summary = f"session {state.session_id}: {state.tokens_input} input / {state.tokens_output} "
    summary += "output tokens"
    if state.tools:
        summary += f", {len(state.tools)} tool call(s)"
    if state.todos:
        done, total = state.todo_progress
        summary += f", todo {done}/{total} done"
    err.write(summary + "\n")
    return EXIT_OK


def cmd_logs(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rec = core.servers.get(args.workspace)
    if rec is None:
        err.write(f"error: no server is known for {args.workspace}.\n")
        return EXIT_ERROR
    log_path = rec.log_path
    if args.openwork:
        logs = [c.log_path for c in rec.children if c.kind == OPENWORK_KIND]
        if not logs:
            err.write(f"error: no openwork-server ran for {rec.workspace_path}.\n")
            return EXIT_ERROR
        log_path = logs[-1]
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()[-args.lines :]
    except OSError as e:
        err.write(f"error: cannot read {log_path}: {e.strerror}\n")
        return EXIT_ERROR
    out.writelines(lines)
    return EXIT_OK


def cmd_key(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    creds = core.credentials
    if args.key_command == "show":
        status = creds.key_status()
        out.write(f"{mask_key(status.key)} (from {status.source})\n")
        if status.note():
            out.write(f"note: {status.note()}\n")
        return EXIT_OK
    if args.key_command == "delete":
        if creds.forget_api_key():
            out.write("Removed the API key from the keyring.\n")
        else:
            out.write("No API key was stored in the keyring; nothing was removed.\n")
        if creds.environ.get(API_KEY_ENV, "").strip():
            out.write(f"note: {API_KEY_ENV} is set in the environment, so its key is used.\n")
        return EXIT_OK
    # set: from stdin only, never argv (argv is visible to every user through ps)
    raw = getpass.getpass("SmartSpecPro API key: ") if sys.stdin.isatty() else sys.stdin.read()
    key = check_api_key_format(raw)
    if not args.no_check:
        try:
            with BackendClient(core.settings.backend_url) as backend:
                backend.models(key)
        except BackendUnreachable as e:
            err.write(f"warning: could not verify the key now ({e.problem}); storing it anyway.\n")
    creds.store_api_key(key)
    out.write(f"Stored {mask_key(key)} in the OS keyring.\n")
    note = creds.key_status().note()
    if note:
        out.write(f"note: {note}\n")
    return EXIT_OK


def cmd_opencode(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.opencode_command == "install":
        path = install_opencode(core.paths.managed_opencode_dir, _say(err))
        if core.settings.opencode_path:
            err.write(
                f"warning: Settings → OpenCode path ({core.settings.opencode_path}) still "
                "takes priority over the installed copy.\n"
            )
        out.write(f"OpenCode {PINNED_VERSION} installed at {path}.\n")
        return EXIT_OK
    binary = core.servers.find_opencode()
    out.write(f"{binary.path}\nversion {binary.version} (from {binary.source})\n")
    _warn([binary.warning] if binary.warning else [], err)
    return EXIT_OK


def cmd_open_cli(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    outcome = open_cli(core.servers, args.workspace, progress=_say(err))
    core.save_settings()
    out.write(outcome.message + "\n")
    return EXIT_OK


def cmd_open_openwork(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    outcome = open_openwork(core.servers, args.workspace, progress=_say(err))
    core.save_settings()
    out.write(outcome.message + "\n")
    if outcome.notice:
        err.write(f"note: {outcome.notice}\n")
    _warn([outcome.warning] if outcome.warning else [], err)
    return EXIT_OK


COMMANDS: dict[str, Callable[[Core, argparse.Namespace, TextIO, TextIO], int]] = {
    "start": cmd_start,
    "status": cmd_status,
    "stop": cmd_stop,
    "sessions": cmd_sessions,
    "run": cmd_run,
    "logs": cmd_logs,
    "key": cmd_key,
    "opencode": cmd_opencode,
    "open-cli": cmd_open_cli,
    "open-openwork": cmd_open_openwork,
}


def run_cli(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        paths = Paths.resolve(args.data_dir)
        try:
            core = build_core(paths, backend_url=args.backend_url)
        except OSError as e:
            raise StateError(
                f"Cannot create the app's folders under {paths.state_dir.parent} "
                f"({e.strerror or e}).",
                "Make that folder writable, or pass --data-dir with a writable folder.",
            ) from None
        setup_logging(paths.log_dir, core.servers.redactor(), verbose=args.verbose)
        _warn(core.warnings, err)
        core.settings.validate()
        return COMMANDS[args.command](core, args, out, err)
    except SmartSpecError as e:
        log.info("command %s failed: %s", args.command, e)
        err.write(f"error: {e}\n")
        if e.details:
            err.write("--- details ---\n" + e.details.rstrip() + "\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
