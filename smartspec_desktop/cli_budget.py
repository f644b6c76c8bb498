"""``smartspec-desktop budget PATH [--daily N | --clear] [--json]``: a workspace's daily token cap.

The same path as Settings in the window: the cap is kept in the settings file
(``workspace_day_caps``, saved through ``core/storage/config``) and given at once to the running
server's gateway broker (``ServerManager.set_day_cap``, its control API), so it holds without a
restart. Without ``--daily``/``--clear`` it prints the caps (the daily one, and any task's) and
what was used today.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, TextIO

from smartspec_desktop.core.broker.budget import Budgets
from smartspec_desktop.core.errors import SmartSpecError, WorkspaceError
from smartspec_desktop.core.servers.brokerlink import broker_files
from smartspec_desktop.core.servers.preflight import normalize_workspace
from smartspec_desktop.core.servers.registry import RUNNING
from smartspec_desktop.core.wiring import Core


def daily_cap(text: str) -> int:
    """``--daily N``: a whole number of tokens ≥ 0 (``50,000`` and ``50_000`` are fine)."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    try:
        value = int(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of tokens (e.g. --daily 200000; --daily 0 or "
            "--clear removes the cap)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"a daily budget cannot be negative ({text}); use a number of tokens, or --daily 0 "
            "/ --clear to remove the cap"
        )
    return value


def add_budget_parser(sub: Any) -> None:
    s = sub.add_parser(
        "budget",
        help="a workspace's daily token budget (the gateway broker refuses calls beyond it): "
        "show it and today's use, or set it",
    )
    s.add_argument("workspace")
    how = s.add_mutually_exclusive_group()
    how.add_argument(
        "--daily",
        type=daily_cap,
        metavar="N",
        help="cap the workspace at N tokens a day (0: no cap); a running server takes it at once",
    )
    how.add_argument("--clear", action="store_true", help="remove the workspace's daily cap")
    s.add_argument("--json", action="store_true")


def _workspace(core: Core, raw: str, *, clearing: bool) -> str:
    try:
        return normalize_workspace(raw)
    except WorkspaceError:
        # A folder that is gone may still have a cap to remove.
        if clearing:
            for ws in (os.path.abspath(os.path.expanduser(raw)), raw.rstrip("/")):
                if ws in core.settings.workspace_day_caps:
                    return ws
        raise


def _state(core: Core, ws: str, err: TextIO) -> tuple[dict[str, Any], bool]:
    """The broker's budget state (running server) or its file's; and whether it is live."""
    rec = core.servers.get(ws)
    if rec is not None and rec.status == RUNNING and rec.broker_port:
        try:
            return core.servers.broker(rec).budget(), True
        except SmartSpecError as e:
            err.write(f"warning: {e}\n")
    path = broker_files(core.paths, ws).budget_file
    return (Budgets(path).state() if path.exists() else {"day": {}, "tasks": {}}), False


def cmd_budget(core: Core, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    changing = args.clear or args.daily is not None
    ws = _workspace(core, args.workspace, clearing=changing)
    if changing:
        cap = None if args.clear or not args.daily else int(args.daily)
        before = core.settings.workspace_day_caps.get(ws)
        warnings = core.servers.set_day_cap(ws, cap)
        core.save_settings()
        for w in warnings:
            err.write(f"warning: {w}\n")
        rec = core.servers.get(ws)
        running = rec is not None and rec.status == RUNNING
        if cap is None:
            said = "had no daily budget; nothing changed" if before is None else "no daily budget"
            line = f"{ws}: {said}"
        else:
            line = f"{ws}: daily budget {cap:,} tokens"
        if before is not None or cap is not None:
            line += (
                " (its running server has it now)."
                if running and not warnings
                else " (saved; its server takes it when it starts)."
            )
        if not args.json:
            out.write(line + "\n")
            return 0
        err.write(line + "\n")  # stdout is for the JSON
    state, live = _state(core, ws, err)
    cap = core.settings.workspace_day_caps.get(ws)
    day = state.get("day") if isinstance(state.get("day"), dict) else {}
    used = int(day.get("used") or 0) if isinstance(day, dict) else 0
    tasks = state.get("tasks") if isinstance(state.get("tasks"), dict) else {}
    capped = {t: v for t, v in (tasks or {}).items() if isinstance(v, dict) and v.get("cap")}
    if args.json:
        data = {
            "workspace": ws,
            "daily_cap": cap,
            "today": {"date": (day or {}).get("date") or time.strftime("%Y-%m-%d"), "used": used},
            "paused": day.get("paused") if isinstance(day, dict) else None,
            # What the running server's broker enforces (None when not running).
            "broker_cap": day.get("cap") if live and isinstance(day, dict) else None,
            "tasks": capped,
            "live": live,
        }
        out.write(json.dumps(data, indent=2) + "\n")
        return 0
    out.write(f"{ws}\n")
    if cap is None:
        out.write(f"  daily budget: none (today: {used:,} tokens used)\n")
    else:
        out.write(
            f"  daily budget: {cap:,} tokens (today: {used:,} used, {max(cap - used, 0):,} left)\n"
        )
    if isinstance(day, dict) and day.get("paused"):
        out.write(f"  {day['paused']}\n")
    for tid, t in capped.items():
        paused = " — paused" if t.get("paused") else ""
        out.write(
            f"  task {tid}: {int(t.get('used') or 0):,} of {int(t['cap']):,} tokens{paused}\n"
        )
    if not live:
        out.write("  (its server is not running: today's use is from the budget file)\n")
    return 0
