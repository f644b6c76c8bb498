"""Running a task through a workspace's OpenCode server and following it live.

``TaskTracker`` folds OpenCode's server-sent events for one session into a small state (text so
far, tool calls, todo list, tokens/cost, status, error). ``run_task`` sends a prompt with
``prompt_async`` and follows ``/event`` until the session is idle, so a gateway failure is
reported with the gateway's own message instead of OpenCode retrying silently for minutes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    GatewayError,
    InsufficientCredits,
    RateLimited,
    SmartSpecError,
    TaskError,
)
from smartspec_desktop.core.opencode_api import Event, OpenCodeClient

log = logging.getLogger(__name__)

RATE_LIMIT_HINTS = ("429", "too many requests", "rate_limit", "rate limit")


@dataclass
class ToolCall:
    call_id: str
    tool: str
    status: str  # pending, running, completed, error
    title: str = ""
    error: str = ""


@dataclass
class TaskState:
    session_id: str
    status: str = "idle"  # idle, busy, retry
    text: str = ""
    tools: dict[str, ToolCall] = field(default_factory=dict)
    todos: list[dict[str, Any]] = field(default_factory=list)
    tokens_input: int = 0
    tokens_output: int = 0
    cost: float = 0.0
    retry_message: str = ""
    retry_at: float = 0.0
    error: SmartSpecError | None = None
    permissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_busy: bool = False
    done: bool = False

    @property
    def todo_progress(self) -> tuple[int, int]:
        done = sum(1 for t in self.todos if t.get("status") == "completed")
        return done, len(self.todos)


def error_from_opencode(err: dict[str, Any]) -> SmartSpecError:
    """OpenCode's error object (``session.error`` / a message's ``error``) → a typed error."""
    name = str(err.get("name", "Error"))
    data = err.get("data") if isinstance(err.get("data"), dict) else {}
    assert isinstance(data, dict)
    message = str(data.get("message") or name)
    status = data.get("statusCode")
    if name == "MessageAbortedError":
        return TaskError("The task was aborted.", "Run it again when you are ready.")
    if status == 401 or name == "ProviderAuthError":
        return ApiKeyRejected(
            f"The SmartSpecPro gateway rejected the API key: {message}",
            "Paste a valid key under Account (or `smartspec-desktop key set`) and restart the "
            "server.",
        )
    if status == 402:
        return InsufficientCredits(
            f"The SmartSpecPro gateway refused the call: {message}",
            "Add credits to your SmartSpecPro account.",
            status=402,
        )
    if status == 429:
        return RateLimited(
            f"Rate limited by the SmartSpecPro gateway: {message}",
            "Wait a minute and run the task again.",
            retry_after=60.0,
        )
    return GatewayError(
        f"The SmartSpecPro gateway failed: {message}",
        "This is a problem of the gateway, not of OpenCode; try again later.",
        status=status if isinstance(status, int) else None,
    )


class TaskTracker:
    """Folds the events of one session into :class:`TaskState`; feed it every event."""

    def __init__(self, session_id: str, on_text: Callable[[str], None] | None = None) -> None:
        self.state = TaskState(session_id)
        self._on_text = on_text
        self._roles: dict[str, str] = {}
        self._text_parts: dict[str, str] = {}
        self._emitted: dict[str, int] = {}
        #: (input tokens, output tokens, cost) per assistant message; the state holds the sums.
        self._usage: dict[str, tuple[int, int, float]] = {}

    def _emit(self, part_id: str) -> None:
        text = self._text_parts.get(part_id, "")
        new = text[self._emitted.get(part_id, 0) :]
        if new:
            self._emitted[part_id] = len(text)
            self.state.text += new
            if self._on_text:
                self._on_text(new)

    def feed(self, ev: Event) -> None:
        if ev.session_id != self.state.session_id:
            return
        p = ev.properties
        st = self.state
        if ev.type == "session.status":
            status = p.get("status") if isinstance(p.get("status"), dict) else {}
            assert isinstance(status, dict)
            st.status = str(status.get("type", st.status))
            if st.status in ("busy", "retry"):
                st.seen_busy = True
            if st.status == "retry":
                st.retry_message = str(status.get("message", ""))
                nxt = status.get("next")
                st.retry_at = float(nxt) / 1000 if isinstance(nxt, int | float) else 0.0
        elif ev.type == "session.idle":
            st.status = "idle"
            if st.seen_busy:
                st.done = True
        elif ev.type == "session.error":
            err = p.get("error")
            if isinstance(err, dict):
                st.error = error_from_opencode(err)
        elif ev.type == "message.updated":
            info = p.get("info") if isinstance(p.get("info"), dict) else {}
            assert isinstance(info, dict)
            mid = str(info.get("id", ""))
            self._roles[mid] = str(info.get("role", ""))
            if info.get("role") == "assistant":
                st.seen_busy = True
                tokens = info.get("tokens") if isinstance(info.get("tokens"), dict) else {}
                assert isinstance(tokens, dict)
                self._usage[mid] = (
                    int(tokens.get("input", 0) or 0),
                    int(tokens.get("output", 0) or 0),
                    float(info.get("cost", 0) or 0),
                )
                st.tokens_input = sum(u[0] for u in self._usage.values())
                st.tokens_output = sum(u[1] for u in self._usage.values())
                st.cost = sum(u[2] for u in self._usage.values())
                err = info.get("error")
                if isinstance(err, dict) and st.error is None:
                    st.error = error_from_opencode(err)
        elif ev.type == "message.part.updated":
            part = p.get("part") if isinstance(p.get("part"), dict) else {}
            assert isinstance(part, dict)
            self._part(part)
        elif ev.type == "message.part.delta":
            pid = str(p.get("partID", ""))
            if p.get("field") == "text" and self._roles.get(str(p.get("messageID"))) == "assistant":
                self._text_parts[pid] = self._text_parts.get(pid, "") + str(p.get("delta", ""))
                self._emit(pid)
        elif ev.type == "todo.updated":
            todos = p.get("todos")
            if isinstance(todos, list):
                st.todos = [t for t in todos if isinstance(t, dict)]
        elif ev.type in ("permission.updated", "permission.asked"):
            pid = str(p.get("id", ""))
            if pid:
                st.permissions[pid] = p
        elif ev.type == "permission.replied":
            st.permissions.pop(str(p.get("permissionID", p.get("requestID", ""))), None)

    def _part(self, part: dict[str, Any]) -> None:
        kind = part.get("type")
        pid = str(part.get("id", ""))
        if kind == "text" and self._roles.get(str(part.get("messageID"))) == "assistant":
            text = str(part.get("text", ""))
            if len(text) >= len(self._text_parts.get(pid, "")):
                self._text_parts[pid] = text
            self._emit(pid)
        elif kind == "tool":
            state = part.get("state") if isinstance(part.get("state"), dict) else {}
            assert isinstance(state, dict)
            call_id = str(part.get("callID") or pid)
            self.state.tools[call_id] = ToolCall(
                call_id,
                str(part.get("tool", "?")),
                str(state.get("status", "pending")),
                str(state.get("title", "") or ""),
                str(state.get("error", "") or ""),
            )


def is_rate_limit(message: str) -> bool:
    low = message.lower()
    return any(h in low for h in RATE_LIMIT_HINTS)


def _retry_error(message: str) -> GatewayError:
    clean = re.sub(r"\s+", " ", message).strip()
    return GatewayError(
        f"The SmartSpecPro gateway failed: {clean}",
        "OpenCode would keep retrying; the task was aborted. This is a problem of the gateway, "
        "not of OpenCode: try again later.",
    )


def run_task(
    client: OpenCodeClient,
    prompt: str,
    *,
    session_id: str | None = None,
    on_text: Callable[[str], None] | None = None,
    on_progress: Callable[[TaskState, str], None] | None = None,
    timeout: float = 900.0,
    fail_on_gateway_retry: bool = True,
) -> TaskState:
    """Send ``prompt`` and follow the session until it is idle. Raises typed errors."""
    sid = session_id or str(client.create_session()["id"])
    tracker = TaskTracker(sid, on_text)
    st = tracker.state
    deadline = time.monotonic() + timeout
    sent = False
    last_note = ""

    def note(msg: str) -> None:
        nonlocal last_note
        if on_progress and msg != last_note:
            last_note = msg
            on_progress(st, msg)

    while not st.done:
        try:
            for ev in client.events(read_timeout=15.0):
                if ev.type == "server.connected" and not sent:
                    client.prompt_async(sid, prompt)
                    sent = True
                    continue
                before_tools = {k: v.status for k, v in st.tools.items()}
                tracker.feed(ev)
                for k, tool in st.tools.items():
                    if before_tools.get(k) != tool.status:
                        note(
                            f"tool {tool.tool}: {tool.status}"
                            + (f" – {tool.title}" if tool.title else "")
                        )
                if ev.type == "todo.updated" and st.todos:
                    done, total = st.todo_progress
                    note(f"todo {done}/{total}")
                if st.status == "retry" and st.retry_message:
                    if is_rate_limit(st.retry_message):
                        wait = max(0.0, st.retry_at - time.time())
                        note(f"rate limited, retrying in {wait:.0f} s")
                    elif fail_on_gateway_retry:
                        client.abort(sid)
                        raise _retry_error(st.retry_message)
                if st.error is not None:
                    raise st.error
                if st.done or time.monotonic() > deadline:
                    break
        except httpx.ReadTimeout:
            pass  # quiet stream: check the status below and reconnect
        except httpx.HTTPError as e:
            log.info("event stream dropped (%s); reconnecting", e)
            time.sleep(0.5)
        if st.done:
            break
        if time.monotonic() > deadline:
            client.abort(sid)
            raise TaskError(
                f"The task did not finish within {timeout:.0f} s and was aborted.",
                "Run it again with a larger --timeout, or split it into smaller tasks.",
            )
        if sent:
            status = client.session_status().get(sid)
            busy = isinstance(status, dict) and status.get("type") in ("busy", "retry")
            if not busy and st.seen_busy:
                st.done = True
    if st.error is not None:
        raise st.error
    if not st.text:
        # Events can be missed across a reconnect; the stored messages are the record.
        for msg in reversed(client.messages(sid)):
            info = msg.get("info", {})
            if isinstance(info, dict) and info.get("role") == "assistant":
                text = "".join(
                    str(p.get("text", "")) for p in msg.get("parts", []) if p.get("type") == "text"
                )
                if text:
                    st.text = text
                    if on_text:
                        on_text(text)
                break
    return st
