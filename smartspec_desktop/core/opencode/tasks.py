"""Running a task through a workspace's OpenCode server: one prompt, followed until done.

``TaskRun`` (and the ``run_task`` shortcut) sends a prompt with ``prompt_async`` and follows the
events (:mod:`.events`) until the session is idle, so a gateway failure is reported with the
gateway's own message instead of OpenCode retrying silently for minutes. The CLI and the window
both use it; it is plain Python (no Qt) and blocks, so the window runs it on a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable

from smartspec_desktop.core.errors import (
    EmptyPrompt,
    GatewayError,
    NotFound,
    TaskAborted,
    TaskError,
)
from smartspec_desktop.core.opencode.client import Event, OpenCodeClient
from smartspec_desktop.core.opencode.events import (
    EventFollower,
    TaskState,
    TaskTracker,
    error_from_opencode,
)

log = logging.getLogger(__name__)

RATE_LIMIT_HINTS = ("429", "too many requests", "rate_limit", "rate limit")


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


def check_prompt(prompt: str) -> str:
    """The prompt, or :class:`EmptyPrompt` when it is empty or only whitespace (nothing is sent,
    so nothing is billed)."""
    if not prompt.strip():
        raise EmptyPrompt(
            "The prompt is empty.", "Write what the agent should do, then run it again."
        )
    return prompt


class NoSuchSession(TaskError):
    """``--session`` / the selected session is not one the server knows."""

    code = "no_such_session"


def check_session(client: OpenCodeClient, session_id: str, listing: str) -> None:
    """Raise :class:`NoSuchSession` (naming ``listing``, where the sessions are listed) unless
    the server knows ``session_id``."""
    try:
        client.get_session(session_id)
    except NotFound:
        raise NoSuchSession(
            f"There is no such session ({session_id}) on this workspace's server.",
            f"{listing} lists them.",
        ) from None


def title_for(prompt: str, limit: int = 60) -> str:
    """A session title from the prompt's first line. Naming the session ourselves also spares
    the extra LLM call (billed to the user) that OpenCode makes to invent a title."""
    line = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "") or "Task"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class TaskRun:
    """One prompt in one session, followed until the session is idle again.

    ``run()`` blocks and returns the final :class:`TaskState` or raises a typed error (gateway
    failures, :class:`TaskAborted` after ``cancel()``, a timeout). Callbacks run on the thread
    that called ``run()``: ``on_text(chunk)`` for streamed assistant text, ``on_update(state)``
    after every event that concerned the session, ``on_progress(state, message)`` when a tool
    call, the todo list or a retry changed (for one-line progress output). ``cancel()`` and
    ``reply_permission()`` may be called from any thread.
    """

    def __init__(
        self,
        client: OpenCodeClient,
        prompt: str,
        *,
        session_id: str | None = None,
        on_text: Callable[[str], None] | None = None,
        on_progress: Callable[[TaskState, str], None] | None = None,
        on_update: Callable[[TaskState], None] | None = None,
        timeout: float = 900.0,
        fail_on_gateway_retry: bool = True,
        backoff: tuple[float, float] = (0.5, 8.0),
        session_listing: str = "The session list",
    ) -> None:
        """``session_listing`` names where the user finds the sessions (for the error when
        ``session_id`` is unknown)."""
        self.session_listing = session_listing
        self.client = client
        self.prompt = prompt
        self.session_id = session_id
        self.on_text = on_text
        self.on_progress = on_progress
        self.on_update = on_update
        self.timeout = timeout
        self.fail_on_gateway_retry = fail_on_gateway_retry
        self.backoff = backoff
        self.tracker: TaskTracker | None = None
        self._cancel = threading.Event()
        self._detached = threading.Event()
        self._follower: EventFollower | None = None
        self._sent = False
        self._last_note = ""
        self._deadline = 0.0

    @property
    def state(self) -> TaskState | None:
        return self.tracker.state if self.tracker else None

    def cancel(self) -> None:
        """Abort the session on the server; ``run()`` then raises :class:`TaskAborted`."""
        self._cancel.set()
        if self.session_id and self._sent:
            with self.client.clone(timeout=10.0) as c:
                c.abort(self.session_id)
        elif self._follower is not None:
            self._follower.stop()

    def detach(self) -> None:
        """Stop following (the task keeps running on the server); ``run()`` returns the state
        as far as it got. Any thread."""
        self._detached.set()
        if self._follower is not None:
            self._follower.stop()

    def _note(self, msg: str) -> None:
        if self.on_progress and self.tracker and msg != self._last_note:
            self._last_note = msg
            self.on_progress(self.tracker.state, msg)

    def _on_connected(self, first: bool) -> None:
        assert self.tracker is not None and self.session_id is not None
        st = self.tracker.state
        st.connected = True
        if first and not self._sent:
            if self._cancel.is_set():
                raise TaskAborted("The task was aborted.", "Run it again when you are ready.")
            self.client.prompt_async(self.session_id, self.prompt)
            self._sent = True
        elif self._sent:
            self._catch_up()
        if self.on_update:
            self.on_update(st)

    def _on_disconnected(self, reason: str, delay: float) -> None:
        assert self.tracker is not None
        self.tracker.state.connected = False
        self._note(f"event stream dropped ({reason}); reconnecting")
        if self.on_update:
            self.on_update(self.tracker.state)
        self._check_deadline()

    def _catch_up(self) -> None:
        """After a reconnect: events may have been missed, so ask the server directly."""
        assert self.tracker is not None and self.session_id is not None
        st = self.tracker.state
        status = self.client.session_status().get(self.session_id)
        if isinstance(status, dict) and status.get("type") in ("busy", "retry"):
            st.status = str(status["type"])
            st.seen_busy = True
            return
        with contextlib.suppress(TaskError):
            st.todos = self.client.todos(self.session_id)
        msgs = self.client.messages(self.session_id)
        last = msgs[-1].get("info", {}) if msgs else {}
        if isinstance(last, dict) and last.get("role") == "assistant":
            st.status = "idle"
            st.done = True
            err = last.get("error")
            if isinstance(err, dict) and st.error is None:
                st.error = error_from_opencode(err)
                st.aborted = isinstance(st.error, TaskAborted)

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            if self.session_id:
                self.client.abort(self.session_id)
            raise TaskError(
                f"The task did not finish within {self.timeout:.0f} s and was aborted.",
                "Run it again with a larger timeout, or split it into smaller tasks.",
            )

    def _on_event(self, ev: Event) -> None:
        assert self.tracker is not None and self._follower is not None
        st = self.tracker.state
        if ev.session_id != st.session_id:
            self._check_deadline()
            return
        before = {k: v.status for k, v in st.tools.items()}
        had_todos = [(t.get("content"), t.get("status")) for t in st.todos]
        self.tracker.feed(ev)
        for k in st.tool_order:
            tool = st.tools[k]
            if before.get(k) != tool.status:
                self._note(
                    f"tool {tool.tool}: {tool.status}" + (f" – {tool.title}" if tool.title else "")
                )
        if ev.type == "todo.updated" and had_todos != [
            (t.get("content"), t.get("status")) for t in st.todos
        ]:
            done, total = st.todo_progress
            self._note(f"todo {done}/{total}")
        if ev.type == "permission.asked":
            self._note(f"permission asked: {ev.properties.get('permission', '?')}")
        if self.on_update:
            self.on_update(st)
        if st.status == "retry" and st.retry_message:
            if is_rate_limit(st.retry_message):
                wait = max(0.0, st.retry_at - time.time())
                self._note(f"rate limited, retrying in {wait:.0f} s")
            elif self.fail_on_gateway_retry:
                self.client.abort(st.session_id)
                raise _retry_error(st.retry_message)
        if st.error is not None:
            raise st.error
        if st.done:
            self._follower.stop()
            return
        self._check_deadline()

    def run(self) -> TaskState:
        if self._cancel.is_set():
            raise TaskAborted("The task was aborted.", "Run it again when you are ready.")
        check_prompt(self.prompt)
        if self.session_id:
            check_session(self.client, self.session_id, self.session_listing)
        else:
            self.session_id = str(self.client.create_session(title_for(self.prompt))["id"])
        self.tracker = TaskTracker(self.session_id, self.on_text)
        st = self.tracker.state
        self._deadline = time.monotonic() + self.timeout
        self._follower = EventFollower(
            self.client,
            self._on_event,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            backoff=self.backoff,
        )
        if self._cancel.is_set():
            raise TaskAborted("The task was aborted.", "Run it again when you are ready.")
        if self._detached.is_set():
            return st
        try:
            self._follower.run()
        finally:
            self._follower.stop()
        if self._detached.is_set():
            return st
        if self._cancel.is_set() and not st.done:
            st.aborted = True
            raise TaskAborted("The task was aborted.", "Run it again when you are ready.")
        if st.error is not None:
            raise st.error
        if not st.text:
            self._text_from_messages()
        return st

    def _text_from_messages(self) -> None:
        """Events can be missed across a reconnect; the stored messages are the record."""
        assert self.tracker is not None and self.session_id is not None
        st = self.tracker.state
        for msg in reversed(self.client.messages(self.session_id)):
            info = msg.get("info", {})
            if isinstance(info, dict) and info.get("role") == "assistant":
                text = "".join(
                    str(p.get("text", ""))
                    for p in msg.get("parts", [])
                    if isinstance(p, dict) and p.get("type") == "text"
                )
                if text:
                    st.text = text
                    if self.on_text:
                        self.on_text(text)
                break


def run_task(
    client: OpenCodeClient,
    prompt: str,
    *,
    session_id: str | None = None,
    on_text: Callable[[str], None] | None = None,
    on_progress: Callable[[TaskState, str], None] | None = None,
    on_update: Callable[[TaskState], None] | None = None,
    timeout: float = 900.0,
    fail_on_gateway_retry: bool = True,
    session_listing: str = "The session list",
) -> TaskState:
    """Send ``prompt`` and follow the session until it is idle. Raises typed errors."""
    return TaskRun(
        client,
        prompt,
        session_listing=session_listing,
        session_id=session_id,
        on_text=on_text,
        on_progress=on_progress,
        on_update=on_update,
        timeout=timeout,
        fail_on_gateway_retry=fail_on_gateway_retry,
    ).run()
