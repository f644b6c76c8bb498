"""Following a workspace's OpenCode server live: its event stream and what the events mean.

``TaskTracker`` folds OpenCode's server-sent events for one session into a small state (text so
far, tool calls, todo list, tokens/cost, status, error, pending permission requests).
``EventFollower`` follows ``GET /event`` and reconnects with backoff when the stream drops.
:mod:`.tasks` runs a prompt on top of them. Plain Python (no Qt); the follower blocks, so the
window runs it on a worker thread.

Event names and shapes were checked on opencode 1.18.33 (``GET /doc`` and recordings in
``tests/fixtures/events``): ``session.status`` ``{type: busy|idle|retry}``, ``session.idle``,
``session.error``, ``message.updated``, ``message.part.updated`` / ``message.part.delta``,
``todo.updated`` ``{todos: [{content, status, priority}]}``, ``permission.asked``
``{id: per_…, permission, patterns, metadata, tool}``, ``permission.replied``
``{requestID, reply}``, ``server.connected`` and ``server.heartbeat`` (about every 10 s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smartspec_desktop.core.errors import (
    ApiKeyMissing,
    ApiKeyRejected,
    BudgetReached,
    GatewayError,
    InsufficientCredits,
    RateLimited,
    ServerNotRunning,
    SmartSpecError,
    TaskAborted,
)
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.opencode.client import Event, OpenCodeClient, Unauthorized

if TYPE_CHECKING:
    import httpx
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")

log = logging.getLogger(__name__)


@dataclass
class ToolCall:
    call_id: str
    tool: str
    status: str  # pending, running, completed, error
    title: str = ""
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "error")


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
    aborted: bool = False
    #: The event stream is connected (False while it reconnects).
    connected: bool = True
    #: Order in which tool calls were first seen (dicts keep it too; this survives updates).
    tool_order: list[str] = field(default_factory=list)

    @property
    def todo_progress(self) -> tuple[int, int]:
        done = sum(1 for t in self.todos if t.get("status") == "completed")
        return done, len(self.todos)

    @property
    def busy(self) -> bool:
        return self.status in ("busy", "retry")

    def snapshot(self) -> TaskState:
        """A copy another thread may read while this one keeps changing (the error is shared:
        exceptions are not changed after they are made)."""
        return dataclasses.replace(
            self,
            tools={k: dataclasses.replace(v) for k, v in self.tools.items()},
            todos=[dict(t) for t in self.todos],
            permissions={k: dict(v) for k, v in self.permissions.items()},
            tool_order=list(self.tool_order),
        )

    def progress_line(self) -> str:
        """One short line: status, the latest tool call, todo n/m, tokens."""
        bits = ["working" if self.busy else ("done" if self.done else self.status)]
        if self.tool_order:
            last = self.tools[self.tool_order[-1]]
            bits.append(f"{last.tool} {last.status}" + (f" ({last.title})" if last.title else ""))
            if len(self.tool_order) > 1:
                bits.append(f"{len(self.tool_order)} tool calls")
        if self.todos:
            done, total = self.todo_progress
            bits.append(f"todo {done}/{total}")
        if self.tokens_input or self.tokens_output:
            bits.append(f"{self.tokens_input + self.tokens_output} tokens")
        if self.permissions:
            bits.append("waiting for permission")
        return " · ".join(bits)


def error_from_opencode(err: dict[str, Any]) -> SmartSpecError:
    """OpenCode's error object (``session.error`` / a message's ``error``) → a typed error."""
    name = str(err.get("name", "Error"))
    data = err.get("data") if isinstance(err.get("data"), dict) else {}
    assert isinstance(data, dict)
    message = str(data.get("message") or name)
    status = data.get("statusCode")
    if name == "MessageAbortedError":
        return TaskAborted("The task was aborted.", "Run it again when you are ready.")
    made = broker_error(data)
    if made is not None:
        return made
    if status == 401 or name == "ProviderAuthError":
        return ApiKeyRejected(
            f"The SmartSpecPro gateway rejected the API key: {message}",
            "Store a valid key (`smartspec-desktop key set`) and restart the server.",
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


_BUDGET = re.compile(r"budget of ([\d,]+) tokens")
_BUDGET_TASK = re.compile(r"\(task (\S+):")


def _smartspec_error(text: str) -> dict[str, Any] | None:
    """The first ``{"code": "smartspec_…", "message": …}`` object in ``text`` (or its
    ``"error"`` member), wherever it sits (OpenCode wraps the answer body in its own text)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(50):
        if start < 0:
            return None
        try:
            obj, _end = decoder.raw_decode(text, start)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            code = err.get("code") if isinstance(err, dict) else None
            if isinstance(code, str) and code.startswith("smartspec_"):
                return err  # type: ignore[no-any-return]
        start = text.find("{", start + 1)
    return None


def broker_error(data: dict[str, Any]) -> SmartSpecError | None:
    """The typed error for an answer the gateway broker made itself (issue 9), else None.

    The broker answers ``{"error": {"message", "code": "smartspec_…"}}`` (HTTP 400/401, or one
    error chunk in a stream already under way); OpenCode keeps it in ``responseBody`` or shows
    it as the message. Its message is already the one line to show (word joiners that keep
    OpenCode from retrying are removed).
    """
    err = None
    for field_name in ("responseBody", "message"):
        value = data.get(field_name)
        if isinstance(value, str) and "smartspec_" in value:
            err = _smartspec_error(value)
            if err is not None:
                break
    if err is None:
        return None
    code = str(err.get("code"))
    message = " ".join(str(err.get("message") or "").replace("\u2060", "").split())
    if code == "smartspec_budget_reached":
        problem = message.split(" Raise the budget")[0]
        cap = _BUDGET.search(problem)
        task = _BUDGET_TASK.search(problem)
        return BudgetReached(
            problem,
            "Continue (+N) raises the budget and goes on; Stop ends the task.",
            task=task.group(1) if task else None,
            cap=int(cap.group(1).replace(",", "")) if cap else 0,
        )
    if code == "smartspec_no_key":
        return ApiKeyMissing(message, "")
    if code == "smartspec_broker_auth":
        return GatewayError(message, "Stop the server and start it again.")
    return GatewayError(message, "")


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
            elif st.status == "idle" and st.seen_busy:
                st.done = True  # 1.18.33 sends status idle; session.idle may come later or not
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
                st.aborted = isinstance(st.error, TaskAborted)
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
                    st.aborted = isinstance(st.error, TaskAborted)
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
        elif ev.type == "permission.asked":
            pid = str(p.get("id", ""))
            if pid:
                st.permissions[pid] = dict(p)
        elif ev.type == "permission.replied":
            st.permissions.pop(str(p.get("requestID", "")), None)

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
            if call_id not in self.state.tools:
                self.state.tool_order.append(call_id)
            self.state.tools[call_id] = ToolCall(
                call_id,
                str(part.get("tool", "?")),
                str(state.get("status", "pending")),
                str(state.get("title", "") or ""),
                str(state.get("error", "") or ""),
            )


def _interrupt(response: httpx.Response) -> None:
    """Unblock a thread reading ``response``: shut its socket down (wakes a blocked ``recv``
    at once), then close the response on a helper thread (closing can wait for the reader)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close() -> None:
        try:
            response.close()
        except Exception:
            log.debug("closing the event stream raised", exc_info=True)

    threading.Thread(target=close, name="close-event-stream", daemon=True).start()


class EventFollower:
    """Follows ``GET /event`` of one server, reconnecting with backoff when the stream drops.

    ``run()`` blocks (call it on a worker thread) and calls ``on_event`` for every event,
    ``on_connected(first)`` after each (re)connection (``first`` is True only once) and
    ``on_disconnected(reason, delay)`` before waiting ``delay`` seconds to reconnect. Delays grow
    ``backoff[0]`` → ×2 → ``backoff[1]`` and reset after a connection that delivered events. After
    ``give_up_after`` seconds without a connection it raises :class:`ServerNotRunning`.
    ``stop()`` may be called from any thread (or from a callback) and ends ``run()`` promptly.
    Exceptions raised by a callback end ``run()`` and propagate.
    """

    def __init__(
        self,
        client: OpenCodeClient,
        on_event: Callable[[Event], None],
        *,
        on_connected: Callable[[bool], None] | None = None,
        on_disconnected: Callable[[str, float], None] | None = None,
        read_timeout: float = 15.0,
        backoff: tuple[float, float] = (0.5, 8.0),
        give_up_after: float = 60.0,
    ) -> None:
        self.client = client
        self.on_event, self.on_connected, self.on_disconnected = (
            on_event,
            on_connected,
            on_disconnected,
        )
        self.read_timeout, self.backoff, self.give_up_after = read_timeout, backoff, give_up_after
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """End ``run()`` soon; never blocks the caller (safe on the GUI thread)."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            _interrupt(response)

    def _opened(self, response: httpx.Response) -> None:
        with self._lock:
            self._response = response
        if self._stop.is_set():
            response.close()

    def run(self) -> None:
        delay = self.backoff[0]
        down_since: float | None = None
        while not self._stop.is_set():
            got_events = False
            try:
                for ev in self.client.events(read_timeout=self.read_timeout, on_open=self._opened):
                    if self._stop.is_set():
                        break
                    if not got_events:
                        got_events, down_since, delay = True, None, self.backoff[0]
                        self.connections += 1
                        if self.on_connected:
                            self.on_connected(self.connections == 1)
                    self.on_event(ev)
                    if self._stop.is_set():
                        break
                reason = "the server closed the event stream"
            except httpx.ReadTimeout:
                reason = f"no event for {self.read_timeout:.0f} s"
            except Unauthorized:
                raise  # a wrong password does not get better by retrying
            except (httpx.HTTPError, ServerNotRunning) as e:
                reason = f"{type(e).__name__}: {e}"
            finally:
                with self._lock:
                    self._response = None
            if self._stop.is_set():
                break
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if now - down_since > self.give_up_after:
                raise ServerNotRunning(
                    f"Lost the event stream of {self.client.base_url} for "
                    f"{self.give_up_after:.0f} s ({reason}).",
                    "Check that the server is still running (status), then run the task again.",
                )
            wait = 0.0 if got_events and reason.startswith("no event") else delay
            log.info("event stream dropped (%s); reconnecting in %.1f s", reason, wait)
            if self.on_disconnected:
                self.on_disconnected(reason, wait)
            if wait and self._stop.wait(wait):
                break
            delay = min(delay * 2, self.backoff[1])
