"""What the Dev Mode panel and the Agent tab show, computed from state: pure functions, no Qt.

The widgets only render these views (``DevModePanel._render_status``, ``AgentPanel._on_state``);
the rules (which buttons are enabled, which line of status is shown) are unit-tested here
without a window (tests/unit/test_viewmodels.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from smartspec_desktop.core.errors import BudgetReached, SmartSpecError
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.core.servers.usage import Usage as TreeUsage
from smartspec_desktop.core.servers.usage import format_usage

STATUS_LABELS: dict[ServerStatus, str] = {
    ServerStatus.STOPPED: "Stopped",
    ServerStatus.STARTING: "Starting…",
    ServerStatus.RUNNING: "Running",
    ServerStatus.STOPPING: "Stopping…",
    ServerStatus.CRASHED: "Crashed",
    ServerStatus.SLEEPING: "Sleeping",
}

OPENWORK_TIP = (
    "Open OpenWork (or OpenCode's web UI) on this workspace's server; starts it if needed."
)
CLI_TIP = "Open a terminal running the OpenCode TUI attached to this workspace's server."
NOT_IN_BUILD_TIP = "Not available in this build."


@dataclass(frozen=True)
class ServerView:
    """The selected workspace's server as the Dev Mode panel shows it."""

    status: ServerStatus
    status_text: str
    port_text: str
    url_text: str
    copy_visible: bool
    uptime_text: str
    usage_text: str
    spinner: bool
    start_enabled: bool
    start_text: str
    stop_enabled: bool
    #: Open OpenWork UI and Open CLI.
    launch_enabled: bool
    launch_tooltips: tuple[str, str]
    cancel_launch_visible: bool
    progress_text: str
    #: The record the Agent tab follows (a running server), else None.
    agent_target: ServerRecord | None
    #: A task wakes the server first (it is sleeping).
    wakes: bool


def server_view(
    workspace: str,
    status: ServerStatus,
    record: ServerRecord | None,
    *,
    launch_available: bool,
    launching: str = "",
    installing: bool = False,
    message: str = "",
    install_message: str = "",
    usage: TreeUsage | None = None,
    now: datetime | None = None,
) -> ServerView:
    """``launching``: the running launch's kind ("openwork", "cli") or ""; ``message``: the
    workspace's latest progress/outcome line; ``install_message``: the install's line."""
    has = bool(workspace)
    running = status == ServerStatus.RUNNING and record is not None
    launching = launching if has and launch_available else ""
    busy = status in (ServerStatus.STARTING, ServerStatus.STOPPING) or bool(launching)
    line = message
    if busy and not line:
        line = {ServerStatus.STARTING: "Starting …", ServerStatus.STOPPING: "Stopping …"}.get(
            status, "Opening …"
        )
    if status == ServerStatus.SLEEPING and record is not None and not busy:
        line = sleeping_note(record)  # an older line is stale
    return ServerView(
        status=status,
        status_text=STATUS_LABELS.get(status, status),
        port_text=f"Port {record.port}" if running and record else "",
        url_text=record.url if running and record else "",
        copy_visible=running,
        uptime_text=f"Up {uptime(record.created_at, now)}" if running and record else "",
        usage_text=format_usage(usage) if usage is not None else "",
        spinner=busy or installing,
        start_enabled=has
        and status in (ServerStatus.STOPPED, ServerStatus.CRASHED, ServerStatus.SLEEPING),
        start_text=(
            "Restart Dev Server"
            if status == ServerStatus.CRASHED
            else "Wake Dev Server"
            if status == ServerStatus.SLEEPING
            else "Start Dev Server"
        ),
        stop_enabled=has
        and status in (ServerStatus.RUNNING, ServerStatus.STARTING, ServerStatus.SLEEPING)
        and not busy,
        launch_enabled=has and launch_available and not busy,
        launch_tooltips=(OPENWORK_TIP, CLI_TIP)
        if launch_available
        else (NOT_IN_BUILD_TIP, NOT_IN_BUILD_TIP),
        cancel_launch_visible=launching == "openwork",
        progress_text=(install_message if installing else "") or line,
        agent_target=record if running else None,
        wakes=status == ServerStatus.SLEEPING,
    )


def uptime(created_at: str, now: datetime | None = None) -> str:
    try:
        start = datetime.fromisoformat(created_at)
    except ValueError:
        return ""
    now = now or datetime.now(timezone.utc)
    secs = max(0, int((now - start).total_seconds()))
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def sleeping_note(rec: ServerRecord) -> str:
    """The progress line of a sleeping server: since when, and that any action wakes it."""
    since = ""
    try:
        ended = datetime.fromisoformat(rec.ended_at).astimezone()
        since = f" since {ended:%H:%M}"
    except ValueError:
        pass
    return (
        f"Sleeping{since}: it was idle, so it was stopped to free its memory. Start, Open CLI, "
        "Open OpenWork UI or a task wakes it, with its sessions."
    )


@dataclass(frozen=True)
class TaskView:
    """The running task as the Agent tab shows it (its status line, counts, error)."""

    status_text: str
    usage_text: str
    todo_text: str
    #: An error to show in the error line (a budget stop has its own box), else None.
    error: SmartSpecError | None


def task_status(state: TaskState, *, running: bool, now: float) -> str:
    """The Agent tab's status line; ``running``: the service has a task (it may not have
    reported busy yet); ``now``: ``time.time()``, for the retry countdown."""
    if state.error is not None or state.aborted:
        status = "Aborted" if state.aborted else "Failed"
    elif state.status == "retry":
        wait = max(0.0, state.retry_at - now) if state.retry_at else 0.0
        status = f"Retrying in {wait:.0f} s: {state.retry_message}"
    elif state.busy:
        status = "Busy: the agent is working…"
    elif state.done:
        status = "Done"
    else:
        status = "Idle" if not running else "Starting…"
    if not state.connected:
        status += " (event stream lost, reconnecting…)"
    return status


def task_view(state: TaskState, *, running: bool, now: float) -> TaskView:
    if state.todos:
        done_n, total = state.todo_progress
        todo = f"Todo: {done_n} of {total} done"
    else:
        todo = "Todo"
    error = state.error if not isinstance(state.error, BudgetReached) else None
    return TaskView(
        status_text=task_status(state, running=running, now=now),
        # OpenCode's own count; no cost: OpenCode knows no price for this provider (issue 9).
        usage_text=f"{state.tokens_input:,} in / {state.tokens_output:,} out tokens",
        todo_text=todo,
        error=error,
    )
