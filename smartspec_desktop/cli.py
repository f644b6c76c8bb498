"""The command line: the core without a window.

Every failure prints one line on stderr (``error: <problem> <fix>``) and exits non-zero; ``--json``
output goes to stdout and never contains a secret.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from smartspec_desktop import __version__
from smartspec_desktop.cli_budget import add_budget_parser, cmd_budget
from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.broker.meter import read_records
from smartspec_desktop.core.errors import (
    BackendUnreachable,
    BudgetReached,
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
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.opencode.binary import PINNED_VERSION, install_opencode
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.opencode.tasks import check_prompt, run_task, title_for
from smartspec_desktop.core.redact import mask_key
from smartspec_desktop.core.servers.brokerlink import (
    Usage,
    broker_files,
    new_task_id,
    summarize,
    usage_report,
    workspace_records,
)
from smartspec_desktop.core.servers.history import last_server
from smartspec_desktop.core.servers.preflight import normalize_workspace
from smartspec_desktop.core.servers.registry import CRASHED, RUNNING, SLEEPING, ServerRecord
from smartspec_desktop.core.servers.trust import (
    TAKES_EFFECT,
    UNTRUSTED_EFFECT,
    look_for_project_code,
    trust_key,
)
from smartspec_desktop.core.servers.usage import Usage as ProcessUsage
from smartspec_desktop.core.servers.usage import UsageSampler, format_usage, total
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import API_KEY_ENV, check_api_key_format
from smartspec_desktop.core.wiring import Core, build_core
from smartspec_desktop.logsetup import setup_logging

if TYPE_CHECKING:
    from smartspec_desktop.core import review, worktrees
else:  # only the review and worktree commands need them (issue 11)
    review = lazy_module("smartspec_desktop.core.review")
    worktrees = lazy_module("smartspec_desktop.core.worktrees")

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
    p.add_argument(
        "--demo",
        action="store_true",
        help="use a local demo backend (scripted answers, simulated credits, a key for this run "
        "only); your settings, key and servers are left alone",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("start", help="start (or reuse) the OpenCode server of a workspace")
    s.add_argument("workspace")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--trust",
        action="store_true",
        help="trust the workspace first: its own plugins and MCP servers may run (remembered)",
    )

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
    s.add_argument(
        "--worktree",
        nargs="?",
        const="",
        metavar="NAME",
        help="run it in a new git worktree (branch smartspec/NAME, a name is made up if none) "
        "with its own server; the agent's work is committed on that branch",
    )
    s.add_argument(
        "--budget",
        type=_tokens,
        metavar="N",
        help="stop the task once it has used N tokens (the gateway broker refuses further calls)",
    )

    s = sub.add_parser("usage", help="tokens and calls the gateway broker metered for a workspace")
    s.add_argument("workspace")
    s.add_argument("--json", action="store_true")

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

    s = sub.add_parser(
        "trust",
        help="let a workspace's own code (plugins, MCP servers) run; without PATH, list the "
        "trusted workspaces",
    )
    s.add_argument("workspace", nargs="?")
    s = sub.add_parser("untrust", help="revoke trust in a workspace")
    s.add_argument("workspace")

    k = sub.add_parser("key", help="the SmartSpecPro API key").add_subparsers(
        dest="key_command", metavar="ACTION", required=True
    )
    ks = k.add_parser("set", help="read a key from stdin, check it, store it in the OS keyring")
    ks.add_argument("--no-check", action="store_true", help="do not ask the backend")
    k.add_parser("show", help="show the key's source and a masked form")
    k.add_parser("delete", help="remove the key from the keyring")

    _add_review_parsers(sub)
    add_budget_parser(sub)

    o = sub.add_parser("opencode", help="the OpenCode binary").add_subparsers(
        dest="opencode_command", metavar="ACTION", required=True
    )
    inst = o.add_parser(
        "install", help=f"install opencode-ai@{PINNED_VERSION} for this app with npm"
    )
    inst.add_argument(
        "--host",
        help="install it on this ssh host instead ([user@]host[:port] or an ssh:// address), "
        "with the host's npm, for its remote workspaces",
    )
    o.add_parser("info", help="which opencode is used, and its version")
    return p


# ------------------------------------------------------------------------------------ helpers


def _tokens(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of tokens") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a budget must be at least 1 token")
    return value


def _print_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2) + "\n")


def _server_line(r: ServerRecord, usage: ProcessUsage | None = None) -> str:
    bits = [f"{r.status:<9}", r.workspace_path]
    if r.status == SLEEPING:
        return "  ".join(bits + [_sleep_note(r)])
    if r.port:
        bits.append(f"port {r.port}")
    if usage is not None and format_usage(usage):
        bits.append(format_usage(usage))
    if r.pid and r.status != CRASHED:
        bits.append(f"pid {r.pid}")
    if r.exit_code is not None:
        bits.append(f"exit code {r.exit_code}")
    bits.append("trusted" if r.trusted else "untrusted")
    for child in live_children(r):
        bits.append(f"{child.kind} {child.url} (pid {child.pid})")
    return "  ".join(bits)


def _sleep_note(r: ServerRecord) -> str:
    """``asleep since 14:02 (idle); any command wakes it`` for a sleeping server."""
    since = ""
    with contextlib.suppress(ValueError):
        since = " since " + datetime.fromisoformat(r.ended_at).astimezone().strftime("%H:%M")
    return f"asleep{since} (idle; start, run, sessions or open-cli wakes it, 0 MB)"


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


def _untrusted_note(core: Core, record: ServerRecord, err: TextIO) -> None:
    """Say what an untrusted workspace's server left out, when the folder has project code."""
    if record.trusted:
        return
    code = look_for_project_code(record.workspace_path)  # a remote one: listed on its host
    if not code.any:
        return
    err.write(f"note: {record.workspace_path} is not trusted, so {UNTRUSTED_EFFECT}. Not run:\n")
    for line in code.lines():
        err.write(f"  {line}\n")
    err.write(
        f"  Trust it if you trust its code: `smartspec-desktop trust {record.workspace_path}` "
        "(then stop and start its server), or `start --trust`.\n"
    )


def cmd_trust(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = core.servers.trust
    if args.command == "trust" and not args.workspace:
        entries = store.entries()
        _warn(store.drain_warnings(), err)
        if not entries:
            out.write("No trusted workspaces.\n")
        for e in entries:
            out.write(f"{e.path}  (trusted {e.trusted_at})\n")
        return EXIT_OK
    if args.command == "trust":
        ws = normalize_workspace(args.workspace)
        changed = store.trust(ws)
        out.write(
            f"Trusted {ws}: its own plugins, MCP servers, agents and instructions will load.\n"
            if changed
            else f"{ws} was already trusted.\n"
        )
    else:
        ws = trust_key(args.workspace)
        changed = store.untrust(ws)
        out.write(
            f"Revoked trust in {ws}: OpenCode will ignore its own plugins and MCP servers.\n"
            if changed
            else f"{ws} was not trusted; nothing changed.\n"
        )
    rec = core.servers.get(ws)
    if rec is not None and rec.active and rec.trusted != store.is_trusted(ws):
        err.write(f"note: {core.servers.trust_mismatch(rec)}\n")
    elif changed:
        out.write(TAKES_EFFECT + "\n")
    return EXIT_OK


def cmd_start(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.trust and core.servers.trust.trust(normalize_workspace(args.workspace)):
        err.write(f"Trusted {normalize_workspace(args.workspace)}.\n")
    result = core.servers.start(args.workspace, progress=_say(err))
    _warn(result.warnings, err)
    _untrusted_note(core, result.record, err)
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
    usage = UsageSampler().sample_settled(records)  # psutil only, no HTTP (issue 15)
    if args.json:
        _print_json([_with_usage(core, r) | usage[r.server_id].public() for r in records], out)
    elif not records:
        out.write("No servers.\n")
    else:
        for r in records:
            out.write(_server_line(r, usage.get(r.server_id)) + "\n")
            if r.status == CRASHED:
                out.write(
                    f"          {r.error} Restart with `smartspec-desktop start "
                    f"{r.workspace_path}`; log: {r.log_path}\n"
                )
            elif r.disconnected:
                out.write(f"          {r.error}\n")  # a remote server reconnecting (issue 15)
        running = [u for u in usage.values() if u.processes]
        if running:
            out.write(f"Total: {format_usage(total(running))} ({len(running)} server(s))\n")
    return EXIT_OK


def cmd_stop(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.all:
        stopped = core.servers.stop_all()
        out.write(f"Stopped {len(stopped)} server(s).\n")
        if core.demo is None:
            _stop_demo_too(core, out)
        else:
            from smartspec_desktop.demo import mode

            mode.stop_gateway(core.paths.state_dir)
            out.write("Stopped the demo backend.\n")
        from smartspec_desktop.core.remote.ssh import close_shared

        if shared := close_shared():
            out.write(f"Closed {shared} shared ssh connection(s).\n")
        _warn(core.servers.registry.drain_warnings(), err)  # e.g. a stop that was not recorded
        return EXIT_OK
    if not args.workspace:
        err.write("error: name a workspace to stop, or use --all.\n")
        return EXIT_USAGE
    rec = core.servers.stop(args.workspace)
    out.write(f"Stopped the server for {rec.workspace_path}.\n")
    _warn(core.servers.registry.drain_warnings(), err)  # e.g. a stop that was not recorded
    return EXIT_OK


def _stop_demo_too(core: Core, out: TextIO) -> None:
    """``stop --all`` also stops what ``--demo`` left running (its servers, its gateway)."""
    from smartspec_desktop.demo import mode

    servers, gateway = mode.stop_everything(core.paths)
    if servers or gateway:
        out.write(f"Stopped {servers} demo server(s) and the demo backend.\n")


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def cmd_sessions(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rec = core.servers.get(args.workspace)
    if rec is not None and rec.status == SLEEPING:  # wake it first (issue 15)
        result = core.servers.start(args.workspace, progress=_say(err))
        _warn(result.warnings, err)
        rec = result.record
    if rec is None or not rec.active:
        raise ServerNotRunning(
            f"No OpenCode server is running for {args.workspace}.",
            f"Start it with `smartspec-desktop start {args.workspace}`.",
        )
    with core.servers.client(rec, timeout=15.0) as client:
        infos = client.session_infos(workspace=rec.workspace_path)
    # Tokens and calls as the gateway broker metered them (what the account is charged for).
    metered = usage_report(workspace_records(core.paths, rec.workspace_path))["by_session"]
    none = Usage().as_json()
    if args.json:
        _print_json([dict(i.public(), usage=metered.get(i.id, none)) for i in infos], out)
    elif not infos:
        out.write("No OpenCode sessions yet. Run a task with `smartspec-desktop run`.\n")
    else:
        head = ("ID", "CREATED", "LAST ACTIVITY", "TOKENS", "CALLS")
        out.write("{:<32} {:<16} {:<16} {:>8} {:>6}  TITLE\n".format(*head))
        for i in infos:
            u = metered.get(i.id, none)
            out.write(
                f"{i.id:<32} {_when(i.created):<16} {_when(i.updated):<16} "
                f"{u['total_tokens']:>8} {u['calls']:>6}  {i.title}\n"
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
    check_prompt(args.prompt)  # before any start or call: an empty prompt bills nothing
    if getattr(args, "worktree", None) is not None:
        return cmd_run_worktree(core, args, out, err)
    result = core.servers.start(args.workspace, progress=_say(err))
    _warn(result.warnings, err)
    _untrusted_note(core, result.record, err)
    line = _ProgressLine(err)

    def on_text(chunk: str) -> None:
        line.end()  # a terminal shows stdout and stderr together: no half-overwritten lines
        out.write(chunk)
        out.flush()

    rec = result.record
    started = time.time()
    with core.servers.client(rec, timeout=30.0) as client:
        session_id = args.session or str(client.create_session(title_for(args.prompt))["id"])
        if args.budget is not None:
            task = new_task_id()
            core.servers.broker(rec).set_task(task, args.budget, [session_id])
        try:
            state = run_task(
                client,
                args.prompt,
                session_id=session_id,
                on_text=on_text,
                on_progress=line.update,
                timeout=args.timeout,
                session_listing=f"`smartspec-desktop sessions {result.record.workspace_path}`",
            )
        except BudgetReached as e:
            line.end()
            _print_task_usage(core, rec, session_id, started, err)
            fix = (
                f"Go on with a larger budget: smartspec-desktop run {rec.workspace_path} "
                f'"continue" --session {session_id} --budget N'
                if e.task is not None
                else "Raise the workspace's daily budget in Settings, or go on tomorrow."
            )
            raise BudgetReached(e.problem, fix, task=e.task, cap=e.cap) from None
        finally:
            line.end()
    if state.text and not state.text.endswith("\n"):
        out.write("\n")
    _print_task_usage(core, rec, session_id, started, err)
    summary = f"session {state.session_id}: {state.tokens_input} input / {state.tokens_output} "
    summary += "output tokens"
    if state.tools:
        summary += f", {len(state.tools)} tool call(s)"
    if state.todos:
        done, total = state.todo_progress
        summary += f", todo {done}/{total} done"
    err.write(summary + "\n")
    return EXIT_OK


def _with_usage(core: Core, r: ServerRecord) -> dict[str, Any]:
    data = r.public()
    report = usage_report(workspace_records(core.paths, r.workspace_path))
    data["usage"] = {"total": report["total"], "today": report["today"]}
    return data


def _print_task_usage(
    core: Core, rec: ServerRecord, session_id: str, started: float, err: TextIO
) -> None:
    """The task's metered calls and tokens (this run's window, this session), on stderr."""
    records = workspace_records(core.paths, rec.workspace_path)
    used = summarize(records, sessions=[session_id], since=started - 1.0)
    err.write(f"usage: {used.line()} (metered by the gateway broker)\n")


def cmd_usage(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ws = normalize_workspace(args.workspace)
    files = broker_files(core.paths, ws)
    report = usage_report(read_records(files.meter_file))
    budget: dict[str, Any] | None = None
    rec = core.servers.get(ws)
    if rec is not None and rec.status == RUNNING and rec.broker_port:
        try:
            budget = core.servers.broker(rec).budget()
        except SmartSpecError as e:
            err.write(f"warning: {e}\n")
    if args.json:
        _print_json(
            dict(report, workspace=ws, meter_file=str(files.meter_file), budget=budget), out
        )
        return EXIT_OK
    if not report["total"]["calls"]:
        out.write(f"No gateway calls were metered for {ws} yet.\n")
        return EXIT_OK
    total, today = Usage(), Usage()
    for src, dst in ((report["total"], total), (report["today"], today)):
        for k in ("calls", "errors", "refused", "prompt_tokens", "completion_tokens"):
            setattr(dst, k, src[k])
    out.write(f"{ws}\n  all time: {total.line()}\n  today:    {today.line()}\n")
    if budget is not None:
        day = budget.get("day", {})
        if isinstance(day, dict) and day.get("cap") is not None:
            out.write(f"  daily budget: {day.get('used', 0):,} of {day['cap']:,} tokens used\n")
    out.write("  by session:\n")
    for sid, u in sorted(report["by_session"].items(), key=lambda kv: -kv[1]["total_tokens"]):
        out.write(f"    {sid:<32} {u['total_tokens']:>10,} tokens {u['calls']:>5} calls\n")
    return EXIT_OK


def cmd_logs(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rec = core.servers.get(args.workspace) or last_server(core.paths, args.workspace)
    if rec is None:
        err.write(
            f"error: no server ever ran for {args.workspace}. Start one with "
            f"`smartspec-desktop start {args.workspace}`.\n"
        )
        return EXIT_ERROR
    log_path = rec.log_path
    if not rec.active and rec.status != CRASHED:
        err.write(f"(the server for {rec.workspace_path} is stopped: its last log)\n")
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
        _push_key(core, out, err)
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
    _push_key(core, out, err)
    return EXIT_OK


def _push_key(core: Core, out: TextIO, err: TextIO) -> None:
    """Running servers use the key in effect now (or none), without a restart."""
    running = [r for r in core.servers.list_servers() if r.status == RUNNING and r.broker_port]
    if not running:
        return
    key = core.servers.current_key()
    warnings = core.servers.push_key(key)
    _warn(warnings, err)
    told = len(running) - len(warnings)
    if told and key is not None:
        out.write(f"{told} running server(s) use it from their next call (no restart).\n")
    elif told:
        out.write(
            f"{told} running server(s) no longer have a key: their calls fail until you set "
            "one (`smartspec-desktop key set`).\n"
        )


def cmd_opencode(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.opencode_command == "install" and getattr(args, "host", None):
        from smartspec_desktop.core.remote import engine

        addr = engine.parse_host(args.host)
        remote_path = engine.install_remote(addr, _say(err), environ=core.servers.environ)
        out.write(f"OpenCode {PINNED_VERSION} installed on {addr.display_host} at {remote_path}.\n")
        return EXIT_OK
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


# --------------------------------------------------------- review, undo and worktrees (issue 14)


def _add_review_parsers(sub: Any) -> None:
    s = sub.add_parser("changes", help="the files an OpenCode session changed (and their diffs)")
    s.add_argument("workspace")
    s.add_argument("--session", help="an OpenCode session id (default: the workspace's latest)")
    s.add_argument("--turn", choices=("all", "last"), default="all", help="default: all")
    s.add_argument("--diff", action="store_true", help="print the diffs too")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("undo", help="undo the last turn of a session (files and conversation)")
    s.add_argument("workspace")
    s.add_argument("--session", help="an OpenCode session id (default: the workspace's latest)")
    s.add_argument(
        "--force", action="store_true", help="undo even over files you edited since (redo-able)"
    )
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("redo", help="bring back the turn undone last")
    s.add_argument("workspace")
    s.add_argument("--session", help="an OpenCode session id (default: the workspace's latest)")
    s.add_argument("--force", action="store_true", help="redo even over files you edited since")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("worktrees", help="the worktrees the app made for a git workspace")
    s.add_argument("workspace")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("merge", help="merge a worktree's branch into the repository's branch")
    s.add_argument("workspace")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("discard", help="stop a worktree's server, remove it and its branch")
    s.add_argument("workspace")
    s.add_argument("name")
    s.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")


def _review_client(core: Core, args: argparse.Namespace, err: TextIO) -> tuple[Any, str]:
    """A client for the workspace's server (started if needed) and the session to work on."""
    result = core.servers.start(args.workspace, progress=_say(err))
    _warn(result.warnings, err)
    client = core.servers.client(result.record, timeout=60.0)
    try:
        sid = args.session or review.latest_session_id(client, result.record.workspace_path)
    except BaseException:
        client.close()
        raise
    return client, sid


def _change_line(c: review.FileChange) -> str:
    stats = "binary" if c.binary else f"+{c.additions} -{c.deletions}"
    return f"{c.status:<9} {stats:>12}  {c.path}"


def cmd_changes(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client, sid = _review_client(core, args, err)
    with client:
        found = review.changes(client, sid, turn=args.turn)
    if args.json:
        data = []
        for c in found:
            item = c.public()
            if args.diff:
                item["patch"] = c.patch
            data.append(item)
        _print_json(data, out)
        return EXIT_OK
    scope = "its last turn" if args.turn == "last" else "the session"
    if not found:
        out.write(f"No file changed in {scope} ({sid}).\n")
        return EXIT_OK
    out.write(f"{len(found)} file(s) changed in {scope} ({sid}):\n")
    for c in found:
        out.write(_change_line(c) + "\n")
    if args.diff:
        for c in found:
            out.write("\n")
            if c.binary:
                out.write(f"{c.path}: binary file, not shown\n")
                continue
            page = review.diff_page(c, 0, 1_000_000)
            out.writelines(line + "\n" for line in page.lines)
    return EXIT_OK


def _undo_report(result: review.UndoResult, out: TextIO, err: TextIO, as_json: bool) -> None:
    if as_json:
        _print_json(result.public(), out)
        return
    verb = {"undo": "Undid", "redo": "Redid", "discard": "Discarded"}[result.action]
    files = ", ".join(result.files) if result.files else "no file"
    out.write(f"{verb} turn {result.message_id}: {files}.\n")
    if result.overwritten:
        out.write(
            f"note: your edits to {', '.join(result.overwritten)} were replaced; "
            f"`smartspec-desktop {'redo' if result.action != 'redo' else 'undo'}` brings them "
            "back.\n"
        )
    if result.not_restored:
        err.write(f"warning: left as they are: {', '.join(result.not_restored)}.\n")
    if result.action != "redo" and result.turns_undone:
        out.write(f"{result.turns_undone} turn(s) undone; `smartspec-desktop redo` restores.\n")


def _refusal(e: review.UserEditsFound | review.UndoUnavailable, err: TextIO) -> int:
    err.write(f"error: {e}\n")
    for f in e.files:
        err.write(f"  {f}\n")
    return EXIT_ERROR


def cmd_undo(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _review_step(core, args, out, err, review.undo_last_turn)


def cmd_redo(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _review_step(core, args, out, err, review.redo)


def _review_step(
    core: Core,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    step: Callable[..., review.UndoResult],
) -> int:
    """Undo or redo (``step``) a turn of the session, with the refusals and report of both."""
    client, sid = _review_client(core, args, err)
    with client:
        try:
            result = step(client, sid, force=args.force)
        except (review.UserEditsFound, review.UndoUnavailable) as e:
            return _refusal(e, err)
    _undo_report(result, out, err, args.json)
    return EXIT_OK


def _worktree_base(core: Core) -> Path:
    return worktrees.app_base_dir(core.paths.data_dir)


def _not_git(e: worktrees.NotAGitRepository, workspace: str, err: TextIO) -> int:
    err.write(f"error: {e}\n")
    err.write(
        f"  To enable worktrees: git -C {workspace} init && git -C {workspace} add -A && "
        f'git -C {workspace} commit -m "first commit"\n'
    )
    return EXIT_ERROR


def cmd_worktrees(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        found = worktrees.list_worktrees(Path(args.workspace), _worktree_base(core))
    except worktrees.NotAGitRepository as e:
        return _not_git(e, args.workspace, err)
    servers = {}
    for w in found:
        rec = core.servers.get(w.workspace or str(w.path))
        servers[w.name] = rec.status if rec is not None and rec.active else None
    if args.json:
        _print_json([{**w.public(), "server": servers[w.name]} for w in found], out)
        return EXIT_OK
    if not found:
        out.write(
            f'No worktrees. Run a task in one with `smartspec-desktop run {args.workspace} "…" '
            "--worktree`.\n"
        )
        return EXIT_OK
    for w in found:
        server = f"  server {servers[w.name]}" if servers[w.name] else ""
        out.write(
            f"{w.name:<24} {w.branch:<34} {w.status:<11} +{w.additions} -{w.deletions}"
            f"{server}  {w.path}\n"
        )
    return EXIT_OK


def cmd_merge(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        result = worktrees.merge(Path(args.workspace), _worktree_base(core), args.name)
    except worktrees.MergeConflict as e:
        err.write(f"error: {e}\n")
        for f in e.files:
            err.write(f"  conflict: {f}\n")
        wt = worktrees.workspace_for(Path(args.workspace), _worktree_base(core), args.name)
        err.write(
            f'  Ask the agent: smartspec-desktop run {wt} "Merge the branch '
            f"{worktrees.repo_root(Path(args.workspace)).name}'s current branch into this one "
            'and resolve the conflicts"\n'
        )
        return EXIT_ERROR
    if args.json:
        _print_json(result.public(), out)
        return EXIT_OK
    how = "fast-forward" if result.fast_forward else f"merge commit {result.commit[:12]}"
    if not result.files:
        out.write(f"{result.branch} has nothing new for {result.into}.\n")
    else:
        out.write(
            f"Merged {result.branch} into {result.into} ({how}): {', '.join(result.files)}.\n"
        )
    return EXIT_OK


def cmd_discard(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    repo, base = Path(args.workspace), _worktree_base(core)
    path = worktrees.path_for(repo, base, args.name)
    branch = worktrees.BRANCH_PREFIX + args.name
    listed = {w.name for w in worktrees.list_worktrees(repo, base)}
    if args.name not in listed and not worktrees.branch_exists(repo, args.name):
        raise worktrees.WorktreeNotFound(
            f"No worktree named {args.name!r} for {worktrees.repo_root(repo)}.",
            f"List them with `smartspec-desktop worktrees {args.workspace}`.",
        )
    if not args.yes:
        if not sys.stdin.isatty():
            err.write(
                f"error: discarding {path} deletes the worktree and the branch {branch} with "
                "all its work. Pass --yes to confirm (there is no terminal to ask on).\n"
            )
            return EXIT_USAGE
        answer = input(f"Delete the worktree {path} and the branch {branch}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.write("Nothing was discarded.\n")
            return EXIT_OK
    workspace = worktrees.workspace_for(repo, base, args.name)  # (remote: its ssh:// address)
    rec = core.servers.get(workspace)
    if rec is not None and rec.active:
        core.servers.stop(rec.server_id)
        err.write(f"Stopped the server of {workspace}.\n")
    worktrees.discard(repo, base, args.name)
    if workspace in core.settings.recent_workspaces:  # remembered by a window: gone now
        core.settings.forget_workspace(workspace)
        core.save_settings()
    out.write(f"Discarded the worktree {args.name} and the branch {branch}.\n")
    return EXIT_OK


def cmd_run_worktree(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``run PATH "…" --worktree [NAME]``: a new worktree, its own server, the task, a commit."""
    if args.session:
        err.write(
            "error: --session continues a session of the workspace, not of a new "
            "worktree. Drop --session, or run in the worktree's folder.\n"
        )
        return EXIT_USAGE
    try:
        wt = worktrees.create(Path(args.workspace), _worktree_base(core), args.worktree or None)
    except worktrees.NotAGitRepository as e:
        return _not_git(e, args.workspace, err)
    err.write(f"Worktree {wt.workspace or wt.path} on branch {wt.branch}.\n")
    task = argparse.Namespace(**{**vars(args), "workspace": wt.workspace, "worktree": None})
    try:
        code = cmd_run(core, task, out, err)
    except BaseException:
        err.write(
            f"note: the worktree {wt.path} is kept (branch {wt.branch}); remove it with "
            f"`smartspec-desktop discard {args.workspace} {wt.name}`.\n"
        )
        raise
    finally:
        commit = worktrees.commit_all(wt.workspace, title_for(args.prompt))
        if commit:
            err.write(f"Committed the agent's work on {wt.branch} ({commit[:12]}).\n")
        else:
            err.write(f"The agent changed no file; {wt.branch} is as it started.\n")
    out.write(f"branch {wt.branch}\n")
    return code


COMMANDS: dict[str, Callable[[Core, argparse.Namespace, TextIO, TextIO], int]] = {
    "start": cmd_start,
    "status": cmd_status,
    "stop": cmd_stop,
    "sessions": cmd_sessions,
    "run": cmd_run,
    "usage": cmd_usage,
    "logs": cmd_logs,
    "key": cmd_key,
    "trust": cmd_trust,
    "untrust": cmd_trust,
    "opencode": cmd_opencode,
    "open-cli": cmd_open_cli,
    "open-openwork": cmd_open_openwork,
    "changes": cmd_changes,
    "undo": cmd_undo,
    "redo": cmd_redo,
    "worktrees": cmd_worktrees,
    "merge": cmd_merge,
    "discard": cmd_discard,
    "budget": cmd_budget,
}


def _run_demo(paths: Paths, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A command against the demo gateway (see :mod:`smartspec_desktop.demo.mode`)."""
    from smartspec_desktop.demo import mode

    demo = mode.demo_paths(paths)
    try:
        paths.ensure()
        demo.ensure()
    except OSError as e:
        raise StateError(
            f"Cannot create the app's folders under {paths.state_dir.parent} ({e.strerror or e}).",
            "Make that folder writable, or pass --data-dir with a writable folder.",
        ) from None
    if args.backend_url:
        err.write("warning: --backend-url is ignored with --demo (the demo backend is local).\n")
    if args.command == "key" and args.key_command in ("set", "delete"):
        raise mode.DemoError(
            f"`key {args.key_command}` manages your own API key; demo mode never stores or "
            "removes one (it uses a throw-away key of the demo backend for each run).",
            f"Run `smartspec-desktop key {args.key_command}` without --demo.",
        )
    with mode.holding(demo.state_dir):
        if args.command == "stop" and args.all:  # no gateway needed to stop everything
            servers, gateway = mode.stop_everything(paths)
            out.write(f"Stopped {servers} demo server(s)")
            out.write(" and the demo backend.\n" if gateway else ".\n")
            return EXIT_OK
        session = mode.start_demo(paths)
        core = mode.build_demo_core(paths, session)
        setup_logging(demo.log_dir, core.servers.redactor(), verbose=args.verbose)
        err.write(f"note: {mode.describe(session)}\n")
        _warn(core.warnings, err)
        if args.command != "stop":
            mode.retire_stale_servers(core, _say(err))
        core.settings.validate()
        return COMMANDS[args.command](core, args, out, err)


def run_cli(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        paths = Paths.resolve(args.data_dir)
        if getattr(args, "demo", False):
            return _run_demo(paths, args, out, err)
        try:
            core = build_core(paths, backend_url=args.backend_url)
        except OSError as e:
            raise StateError(
                f"Cannot create the app's folders under {paths.state_dir.parent} "
                f"({e.strerror or e}).",
                "Make that folder writable, or pass --data-dir with a writable folder.",
            ) from None
        setup_logging(paths.log_dir, core.servers.lazy_redactor(), verbose=args.verbose)
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
