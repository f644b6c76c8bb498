"""What the Dev Mode panel and the Agent tab show, and the window's notice table: pure, no Qt."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from smartspec_desktop.core import readiness
from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    AuthRequired,
    BudgetReached,
    OpenCodeNotFound,
    ServerNotRunning,
    ServerStartError,
    SmartSpecError,
)
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.ui import notices, viewmodels
from smartspec_desktop.ui.viewmodels import server_view, task_status, task_view

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=timezone.utc)
S = ServerStatus


def rec(status: ServerStatus, **kw: object) -> ServerRecord:
    base: dict[str, object] = {
        "server_id": "srv_x",
        "workspace_path": "/ws",
        "status": status,
        "created_at": (NOW - timedelta(minutes=3, seconds=7)).isoformat(),
        "port": 3795,
        "url": "http://127.0.0.1:3795",
    }
    return ServerRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_no_qt_is_imported() -> None:
    """In a fresh interpreter (pytest-qt has loaded Qt into this one)."""
    code = (
        "import sys, smartspec_desktop.ui.viewmodels, smartspec_desktop.ui.notices; "
        "print(sorted(m for m in sys.modules if m.startswith('PySide6')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_selected_enables_nothing() -> None:
    v = server_view("", S.STOPPED, None, launch_available=True, now=NOW)
    assert v.status_text == "Stopped" and v.start_text == "Start Dev Server"
    assert not (v.start_enabled or v.stop_enabled or v.launch_enabled or v.copy_visible)
    assert v.progress_text == "" and v.agent_target is None and not v.spinner


def test_a_running_server_shows_port_url_uptime_and_is_the_agents_target() -> None:
    r = rec(S.RUNNING)
    v = server_view("/ws", S.RUNNING, r, launch_available=True, message="Started.", now=NOW)
    assert v.status_text == "Running"
    assert (v.port_text, v.url_text, v.uptime_text) == (
        "Port 3795",
        "http://127.0.0.1:3795",
        "Up 3m 07s",
    )
    assert v.copy_visible and v.stop_enabled and v.launch_enabled and not v.start_enabled
    assert v.agent_target is r and not v.wakes and not v.spinner
    assert v.progress_text == "Started."


@pytest.mark.parametrize(
    ("status", "text", "start", "stop"),
    [
        (S.STOPPED, "Start Dev Server", True, False),
        (S.CRASHED, "Restart Dev Server", True, False),
        (S.SLEEPING, "Wake Dev Server", True, True),
        (S.STARTING, "Start Dev Server", False, False),  # busy: no stop while it starts
        (S.STOPPING, "Start Dev Server", False, False),
    ],
)
def test_start_and_stop_follow_the_status(
    status: ServerStatus, text: str, start: bool, stop: bool
) -> None:
    v = server_view("/ws", status, rec(status), launch_available=True, now=NOW)
    assert (v.start_text, v.start_enabled, v.stop_enabled) == (text, start, stop)
    assert v.port_text == "" and v.agent_target is None  # only a running server has them


def test_busy_states_spin_and_say_what_they_do_until_a_line_arrives() -> None:
    v = server_view("/ws", S.STARTING, rec(S.STARTING), launch_available=True, now=NOW)
    assert v.spinner and v.progress_text == "Starting …" and not v.launch_enabled
    v = server_view("/ws", S.STARTING, None, launch_available=True, message="Port …", now=NOW)
    assert v.progress_text == "Port …"


def test_a_launch_in_progress_disables_launches_and_offers_cancel_for_openwork() -> None:
    r = rec(S.RUNNING)
    v = server_view("/ws", S.RUNNING, r, launch_available=True, launching="openwork", now=NOW)
    assert v.spinner and not v.launch_enabled and not v.stop_enabled
    assert v.cancel_launch_visible and v.progress_text == "Opening …"
    v = server_view("/ws", S.RUNNING, r, launch_available=True, launching="cli", now=NOW)
    assert not v.cancel_launch_visible and not v.launch_enabled


def test_without_a_launch_service_the_buttons_say_so() -> None:
    v = server_view("/ws", S.RUNNING, rec(S.RUNNING), launch_available=False, now=NOW)
    assert not v.launch_enabled
    assert v.launch_tooltips == (viewmodels.NOT_IN_BUILD_TIP,) * 2
    v = server_view("/ws", S.RUNNING, rec(S.RUNNING), launch_available=True, now=NOW)
    assert v.launch_tooltips == (viewmodels.OPENWORK_TIP, viewmodels.CLI_TIP)


def test_a_sleeping_server_replaces_a_stale_line_and_wakes_for_a_task() -> None:
    r = rec(S.SLEEPING, ended_at=NOW.isoformat())
    v = server_view("/ws", S.SLEEPING, r, launch_available=True, message="Started.", now=NOW)
    assert v.progress_text.startswith("Sleeping since ") and "wakes it" in v.progress_text
    assert v.wakes and v.start_enabled


def test_an_install_shows_its_line_and_spins() -> None:
    v = server_view(
        "/ws",
        S.STOPPED,
        None,
        launch_available=True,
        installing=True,
        message="old",
        install_message="npm …",
        now=NOW,
    )
    assert v.spinner and v.progress_text == "npm …"
    v = server_view("/ws", S.STOPPED, None, launch_available=True, installing=True, now=NOW)
    assert v.progress_text == ""


def test_uptime_counts_hours_and_tolerates_a_bad_time() -> None:
    assert viewmodels.uptime((NOW - timedelta(hours=2, minutes=5)).isoformat(), NOW) == "2h 05m"
    assert viewmodels.uptime("not a time", NOW) == ""


def test_task_status_lines() -> None:
    st = TaskState("ses_1")
    assert task_status(st, running=False, now=0) == "Idle"
    assert task_status(st, running=True, now=0) == "Starting…"
    st.status = "busy"
    assert task_status(st, running=True, now=0) == "Busy: the agent is working…"
    st.status, st.retry_at, st.retry_message = "retry", 112.4, "overloaded"
    assert task_status(st, running=True, now=100) == "Retrying in 12 s: overloaded"
    st.status, st.done = "idle", True
    assert task_status(st, running=True, now=0) == "Done"
    st.connected = False
    assert task_status(st, running=True, now=0) == "Done (event stream lost, reconnecting…)"
    st.connected, st.error = True, SmartSpecError("x", "y")
    assert task_status(st, running=True, now=0) == "Failed"
    st.aborted = True
    assert task_status(st, running=True, now=0) == "Aborted"


def test_task_view_counts_tokens_todos_and_leaves_a_budget_stop_to_its_box() -> None:
    st = TaskState("ses_1", tokens_input=12_345, tokens_output=6)
    st.todos = [{"content": "a", "status": "completed"}, {"content": "b", "status": "pending"}]
    v = task_view(st, running=True, now=0)
    assert v.usage_text == "12,345 in / 6 out tokens" and v.todo_text == "Todo: 1 of 2 done"
    assert v.error is None
    st.todos, st.error = [], BudgetReached("Budget reached.", "Continue or stop.", cap=10)
    v = task_view(st, running=True, now=0)
    assert v.todo_text == "Todo" and v.error is None
    st.error = ApiKeyRejected("rejected", "fix")
    assert task_view(st, running=True, now=0).error is st.error


# ------------------------------------------------------------------------------ notices


def test_error_codes_map_to_the_windows_buttons() -> None:
    missing = notices.error_notice(OpenCodeNotFound("OpenCode is not <installed>.", "npm …"))
    assert missing.level == "error" and missing.action == notices.INSTALL_OPENCODE
    assert missing.text == "<b>OpenCode is not &lt;installed&gt;.</b><br>npm …"
    assert notices.action_for(ApiKeyRejected("p", "f")) == notices.OPEN_ACCOUNT
    assert notices.action_for(ServerStartError("p", "f")) == notices.Action("restart", "Try again")
    assert notices.action_for(SmartSpecError("p", "f")) is None
    for fix_id in (readiness.FIX_SETTINGS, readiness.FIX_ACCOUNT, readiness.FIX_INSTALL_OPENCODE):
        action = notices.action_for_fix(fix_id)
        assert action is not None and action.label.startswith(("Open ", "Install "))
    assert notices.action_for_fix("") is None


def test_the_window_words_the_fixes_the_core_words_for_the_cli() -> None:
    e = ServerNotRunning("The server for /ws is stopped.", "Start it: `smartspec-desktop start`.")
    assert "Start Dev Server" in notices.fix_text(e) and "smartspec-desktop" not in notices.plain(e)
    assert "Start Dev Server" in notices.error_notice(e).text
    auth = AuthRequired("Not signed in.", "Sign in again.")
    assert "under Account" in notices.fix_text(auth)
    other = SmartSpecError("p", "the core's fix")
    assert (
        notices.fix_text(other) == "the core's fix" and notices.plain(other) == "p the core's fix"
    )


def test_a_rejected_key_is_fixed_under_account_unless_it_came_from_the_environment() -> None:
    stored = ApiKeyRejected("rejected", "Store a valid key (`smartspec-desktop key set`).")
    assert notices.fix_text(stored) == notices.KEY_FIX
    from_env = ApiKeyRejected("rejected", "Set SMARTSPEC_API_KEY to a valid key, or unset it.")
    assert notices.fix_text(from_env) == from_env.fix
    gateway = ApiKeyRejected("rejected", "Store a valid key (…) and restart the server.")
    assert notices.fix_text(gateway) == notices.KEY_FIX + " Then restart the server."
