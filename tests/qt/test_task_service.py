"""TaskService without a server: batching of fast updates, error words, permission signals."""

from __future__ import annotations

import threading
import time

import pytest

from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    GatewayError,
    InsufficientCredits,
    RateLimited,
    ServerNotRunning,
)
from smartspec_desktop.core.opencode.events import TaskState, ToolCall
from smartspec_desktop.services.tasks import TaskService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.agent import AgentPanel, plain_error

pytestmark = pytest.mark.gui


def test_fast_events_are_batched_to_about_ten_updates_a_second(qtbot: object) -> None:
    jobs = Jobs()
    service = TaskService(jobs, update_interval_ms=100)
    panel = AgentPanel(service)
    qtbot.addWidget(panel)  # type: ignore[attr-defined]
    emitted: list[TaskState] = []
    asked: list[dict[str, object]] = []
    service.state_changed.connect(emitted.append)
    service.permission_requested.connect(asked.append)
    service._timer.start()
    done = threading.Event()
    stored = 0

    def flood() -> None:  # a worker thread feeding ~5,000 updates as fast as it can
        nonlocal stored
        st = TaskState("ses_x", status="busy")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            st.text += "x"
            st.tools[f"c{stored % 3}"] = ToolCall(f"c{stored % 3}", "write", "running")
            if stored == 100:
                st.permissions["per_1"] = {"id": "per_1", "permission": "edit", "patterns": []}
            service._store(st)
            stored += 1
            if stored % 50 == 0:
                time.sleep(0)  # yield the GIL: the GUI thread's timer must get its turns
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=flood, daemon=True).start()
    qtbot.waitUntil(done.is_set, timeout=10_000)  # type: ignore[attr-defined]
    qtbot.wait(250)  # type: ignore[attr-defined]
    elapsed = time.monotonic() - t0
    service._timer.stop()
    assert stored > 100
    assert 2 <= len(emitted) <= elapsed * 10 + 3, (len(emitted), elapsed, stored)
    assert emitted[-1].text == "x" * stored, "the last update must carry the latest state"
    assert [a["id"] for a in asked] == ["per_1"], "a permission request is announced once"
    assert panel.perm_box.isVisibleTo(panel)
    assert panel._shown_text == "x" * stored


def test_calls_without_a_target_report_a_clear_error(qtbot: object) -> None:
    jobs = Jobs()
    service = TaskService(jobs)
    with qtbot.waitSignal(service.error, timeout=10_000) as sig:  # type: ignore[attr-defined]
        service.refresh_sessions()
    assert isinstance(sig.args[0], ServerNotRunning)
    assert "Start the workspace's dev server" in str(sig.args[0])
    jobs.wait(5000)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ApiKeyRejected("k", "f"), "API key was rejected (401)"),
        (InsufficientCredits("c", "f", status=402), "out of SmartSpecPro credits (402)"),
        (RateLimited("r", "f", retry_after=5), "rate limiting you (429)"),
        (GatewayError("g", "f", status=502), "gateway failed (502)"),
    ],
)
def test_gateway_errors_in_plain_words(error: Exception, words: str) -> None:
    assert words in plain_error(error)  # type: ignore[arg-type]
