"""Event-stream parsing and the task tracker on streams recorded from opencode 1.18.33, and the
event follower's reconnect with backoff against a local SSE server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core.errors import (
    GatewayError,
    InsufficientCredits,
    ServerNotRunning,
    TaskAborted,
)
from smartspec_desktop.core.opencode.client import Event, OpenCodeClient, SessionInfo, parse_sse
from smartspec_desktop.core.opencode.events import EventFollower, TaskTracker
from smartspec_desktop.core.opencode.tasks import title_for

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "events"


def recorded(name: str) -> list[Event]:
    with open(EVENTS / name, encoding="utf-8") as f:
        return list(parse_sse(iter(f)))


def session_of(events: list[Event]) -> str:
    for ev in events:
        if ev.type == "session.status":
            return str(ev.properties["sessionID"])
    raise AssertionError("no session in the recording")


def fold(events: list[Event]) -> TaskTracker:
    tracker = TaskTracker(session_of(events))
    for ev in events:
        tracker.feed(ev)
    return tracker


def test_parse_sse_handles_comments_crlf_multiline_and_junk() -> None:
    lines = [
        ": keep-alive\r\n",
        'data: {"type":"a",\r\n',
        'data: "properties":{"x":1}}\r\n',
        "\r\n",
        "data: not json\n",
        "\n",
        "event: ignored\n",
        'data: {"type":"b"}\n',
        "\n",
        'data: {"no_type": 1}\n',
        "\n",
        'data: {"type":"c","properties":{}}',  # no trailing blank line
    ]
    events = list(parse_sse(iter(lines)))
    assert [(e.type, e.properties) for e in events] == [("a", {"x": 1}), ("b", {}), ("c", {})]


def test_recorded_text_stream_gives_text_tokens_and_done() -> None:
    events = recorded("text.sse")
    assert events[0].type == "server.connected"
    chunks: list[str] = []
    tracker = TaskTracker(session_of(events), chunks.append)
    for ev in events:
        tracker.feed(ev)
    st = tracker.state
    assert st.done and st.status == "idle" and st.error is None
    assert st.text and "".join(chunks) == st.text
    assert st.tokens_input > 0 and st.tokens_output > 0


def test_recorded_tool_calls_and_todos() -> None:
    events = recorded("tools_todo.sse")
    seen_todos: list[tuple[int, int]] = []
    tracker = TaskTracker(session_of(events))
    for ev in events:
        tracker.feed(ev)
        if ev.type == "todo.updated":
            seen_todos.append(tracker.state.todo_progress)
    st = tracker.state
    assert st.done and st.error is None
    names = [st.tools[k].tool for k in st.tool_order]
    assert names == ["write", "todowrite"]
    write = st.tools[st.tool_order[0]]
    assert write.status == "completed" and write.title.endswith("hello.txt")
    assert seen_todos == [(2, 2)] and st.todo_progress == (2, 2)
    assert [t["content"] for t in st.todos] == ["write hello", "report"]
    assert "Wrote hello.txt." in st.text
    # the three agent turns that carried usage (400+50, 100+20, 500+60 tokens)
    assert (st.tokens_input, st.tokens_output) == (1000, 130)
    line = st.progress_line()
    assert "todo 2/2" in line and "todowrite completed" in line and "2 tool calls" in line


def test_recorded_permission_request_and_reply_then_abort() -> None:
    events = recorded("permission_abort.sse")
    sid = session_of(events)
    tracker = TaskTracker(sid)
    asked: dict[str, Any] = {}
    for ev in events:
        tracker.feed(ev)
        if ev.type == "permission.asked":
            asked = dict(tracker.state.permissions)
        if ev.type == "session.error":
            break
    (perm,) = asked.values()
    assert perm["id"].startswith("per_") and perm["permission"] == "edit"
    assert perm["patterns"][0].endswith("p.txt") and perm["tool"]["callID"]
    assert tracker.state.permissions == {}, "permission.replied must clear the request"
    assert isinstance(tracker.state.error, TaskAborted) and tracker.state.aborted


@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        ("402.sse", InsufficientCredits, "Insufficient credits"),
        ("500.sse", GatewayError, "boom internal"),
        ("errchunk.sse", GatewayError, "upstream exploded"),
    ],
)
def test_recorded_gateway_failures(name: str, kind: type, words: str) -> None:
    st = fold(recorded(name)).state
    if st.error is not None:
        assert isinstance(st.error, kind) and words in str(st.error)
    else:  # OpenCode retries 5xx: the retry status carries the gateway's words
        assert words in st.retry_message and st.seen_busy


def test_events_of_other_sessions_are_ignored() -> None:
    tracker = TaskTracker("ses_mine")
    tracker.feed(Event("session.status", {"sessionID": "ses_other", "status": {"type": "busy"}}))
    tracker.feed(Event("todo.updated", {"sessionID": "ses_other", "todos": [{"status": "x"}]}))
    assert tracker.state.status == "idle" and not tracker.state.todos


def test_snapshot_is_independent() -> None:
    st = fold(recorded("tools_todo.sse")).state
    snap = st.snapshot()
    st.todos.append({"content": "new", "status": "pending"})
    st.tools[st.tool_order[0]].status = "error"
    assert len(snap.todos) == 2 and snap.tools[snap.tool_order[0]].status == "completed"


def test_session_info_from_api() -> None:
    info = SessionInfo.from_api(
        {
            "id": "ses_1",
            "title": "Fix it",
            "cost": 0.25,
            "tokens": {"input": 10, "output": 5, "reasoning": 0, "cache": {"read": 0, "write": 0}},
            "time": {"created": 1795702445658, "updated": 1795702462658},
        }
    )
    assert (info.id, info.title, info.tokens_input, info.tokens_output) == (
        "ses_1",
        "Fix it",
        10,
        5,
    )
    assert info.cost == 0.25 and info.updated - info.created == pytest.approx(17.0)
    assert SessionInfo.from_api({"id": "x"}).created == 0.0


def test_title_for() -> None:
    assert title_for("\n  Write hello.txt\nthen more") == "Write hello.txt"
    assert len(title_for("x" * 200)) == 60 and title_for("   ") == "Task"


# ------------------------------------------------------------------ the follower's reconnects


class _Flaky:
    """An SSE endpoint that drops the first ``drops`` connections after one event each."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.connections += 1
                n = outer.connections
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.write(b'data: {"type":"server.connected","properties":{}}\n\n')
                body = {"type": "tick", "properties": {"n": n}}
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                self.wfile.flush()
                if n > outer.drops:
                    outer.release.wait(10)  # stay open until the test ends

        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Flaky:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def test_follower_reconnects_with_backoff_and_stops() -> None:
    with _Flaky(drops=3) as flaky, OpenCodeClient(flaky.url, "pw") as client:
        ticks: list[int] = []
        firsts: list[bool] = []
        delays: list[float] = []

        def on_event(ev: Event) -> None:
            if ev.type == "tick":
                ticks.append(ev.properties["n"])
                if len(ticks) == 4:
                    follower.stop()

        follower = EventFollower(
            client,
            on_event,
            on_connected=firsts.append,
            on_disconnected=lambda _r, d: delays.append(d),
            backoff=(0.01, 0.04),
        )
        t = threading.Thread(target=follower.run)
        t.start()
        t.join(20)
        assert not t.is_alive()
    assert ticks == [1, 2, 3, 4]
    assert firsts == [True, False, False, False]
    # every connection delivered events, so the delay resets to the first step each time
    assert delays == [0.01, 0.01, 0.01]


def test_follower_stop_from_another_thread_unblocks_a_quiet_stream() -> None:
    with _Flaky(drops=0) as flaky, OpenCodeClient(flaky.url, "pw") as client:
        got = threading.Event()
        follower = EventFollower(client, lambda ev: got.set(), read_timeout=60)
        t = threading.Thread(target=follower.run)
        t.start()
        assert got.wait(10)
        follower.stop()
        t.join(10)
        assert not t.is_alive()


def test_follower_gives_up_when_the_server_is_gone() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    delays: list[float] = []
    with OpenCodeClient(dead, "pw") as client:
        follower = EventFollower(
            client,
            lambda ev: None,
            on_disconnected=lambda _r, d: delays.append(d),
            backoff=(0.01, 0.04),
            give_up_after=0.3,
        )
        with pytest.raises(ServerNotRunning) as e:
            follower.run()
    assert "Lost the event stream" in str(e.value) and "status" in str(e.value)
    assert delays[:3] == [0.01, 0.02, 0.04] and max(delays) == 0.04


def test_follower_does_not_retry_a_refused_password() -> None:
    class Refuse(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with OpenCodeClient(url, "wrong") as client:
            follower = EventFollower(client, lambda ev: None, backoff=(5.0, 5.0))
            with pytest.raises(ServerNotRunning) as e:
                follower.run()  # would sleep 5 s per retry if it retried
        assert "refused our credentials (401)" in str(e.value)
    finally:
        server.shutdown()
        server.server_close()
