"""The Agent tab end to end: the real opencode, the backend stand-in scripted with tool calls,
the TaskService and the AgentPanel driven with pytest-qt."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
)

from smartspec_desktop.core.backend import BackendClient
from smartspec_desktop.core.opencode.events import TaskState
from smartspec_desktop.core.servers.brokerlink import (
    BrokerControl,
    charged_in_window,
    workspace_records,
)
from smartspec_desktop.core.servers.registry import ServerRecord
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.services.tasks import BrokerAccess, TaskService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.agent import AgentPanel
from tests.backend_standin import Text, ToolCall
from tests.conftest import START_MS, Sandbox

pytestmark = [pytest.mark.gui, pytest.mark.integration]

WAIT = START_MS  # ms: a real opencode start or turn on a busy 2-core machine


def cell(table: QTableWidget, row: int, column: int) -> QTableWidgetItem:
    item = table.item(row, column)
    assert item is not None, f"no item at ({row}, {column})"
    return item


def top_item(tree: QTreeWidget, index: int) -> QTreeWidgetItem:
    item = tree.topLevelItem(index)
    assert item is not None, f"no top-level item {index}"
    return item


def password_of(box: Sandbox, server_id: str) -> str:
    return (box.data_dir / "state" / "secrets" / f"server-password_{server_id}").read_text()


@dataclass
class Rig:
    box: Sandbox
    ws: Path
    record: ServerRecord
    service: TaskService
    panel: AgentPanel
    jobs: Jobs

    def client(self) -> httpx.Client:
        pw = password_of(self.box, self.record.server_id)
        return httpx.Client(base_url=self.record.url, auth=("opencode", pw), timeout=10)


def start_rig(box: Sandbox, qtbot: object, *, permissions: str = "default") -> Iterator[Rig]:
    if permissions != "default":
        box.write_settings(agent_permissions=permissions)
    ws = box.workspace()
    info = box.cli_json("start", str(ws))
    record = ServerRecord(
        server_id=info["server_id"],
        workspace_path=info["workspace_path"],
        status=info["status"],
        created_at=info["created_at"],
        port=info["port"],
        url=info["url"],
        pid=info["pid"],
    )
    jobs = Jobs()
    service = TaskService(jobs)
    # As the app wires it: the server's broker (control API) and the workspace's meter file.
    control = BrokerControl(
        info["broker_port"],
        (box.data_dir / "state" / "secrets" / f"broker-control_{record.server_id}").read_text(),
    )
    service.broker_access = BrokerAccess(
        control=lambda _rec: control,
        records=lambda rec: workspace_records(Paths.from_base(box.data_dir), rec.workspace_path),
    )
    panel = AgentPanel(service)
    qtbot.addWidget(panel)  # type: ignore[attr-defined]
    panel.resize(1000, 800)
    panel.show()
    with qtbot.waitSignal(service.sessions_listed, timeout=WAIT):  # type: ignore[attr-defined]
        panel.set_server_target(record, lambda r: password_of(box, r.server_id))
    rig = Rig(box, ws, record, service, panel, jobs)
    try:
        yield rig
    finally:
        service.shutdown(10_000)


@pytest.fixture
def rig(sandbox: Sandbox, qtbot: object) -> Iterator[Rig]:
    yield from start_rig(sandbox, qtbot)


@pytest.fixture
def asking_rig(sandbox: Sandbox, qtbot: object) -> Iterator[Rig]:
    yield from start_rig(sandbox, qtbot, permissions="ask")


def send(rig: Rig, qtbot: object, text: str) -> None:
    rig.panel.prompt.setPlainText(text)
    rig.panel.prompt.setFocus()
    qtbot.keyClick(  # type: ignore[attr-defined]
        rig.panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier
    )
    assert rig.service.running, "Ctrl+Enter did not start the task"


def todos(*statuses: str) -> dict[str, object]:
    names = ["write hello.txt", "report back"]
    return {
        "todos": [
            {"content": n, "status": s, "priority": "high"}
            for n, s in zip(names, statuses, strict=True)
        ]
    }


@pytest.mark.slow
def test_tool_call_todos_and_completion_show_in_the_activity_view(rig: Rig, qtbot: object) -> None:
    backend = rig.box.backend
    before = backend.balance(rig.box.email)
    usage = [(300, 40), (400, 50), (350, 30), (500, 60)]
    backend.script(
        ToolCall(
            "todowrite", todos("in_progress", "pending"), prompt_tokens=300, completion_tokens=40
        ),
        ToolCall(
            "write",
            {"filePath": "hello.txt", "content": "hi there\n"},
            prompt_tokens=400,
            completion_tokens=50,
        ),
        ToolCall(
            "todowrite", todos("completed", "completed"), prompt_tokens=350, completion_tokens=30
        ),
        Text("All done: wrote hello.txt.", prompt_tokens=500, completion_tokens=60),
    )
    progress: list[tuple[int, int]] = []
    stamps: list[float] = []

    def seen(st: TaskState) -> None:
        stamps.append(time.monotonic())
        if st.todos and (not progress or progress[-1] != st.todo_progress):
            progress.append(st.todo_progress)

    rig.service.state_changed.connect(seen)
    # Signed in: the ledger's deductions in the task's window, as AccountService reads them.
    token = backend.issue_token(rig.box.email)

    def lookup(since: float, until: float, on_result: Callable[[float | None], None]) -> None:
        with BackendClient(backend.url) as b:
            listed = b.transactions(token, limit=100)["transactions"]
        on_result(charged_in_window(listed, since, until))

    rig.panel.credits_lookup = lookup
    finished: list[tuple[bool, str]] = []
    rig.panel.task_finished.connect(lambda ok, s: finished.append((ok, s)))
    with qtbot.waitSignal(rig.panel.task_finished, timeout=WAIT):  # type: ignore[attr-defined]
        send(rig, qtbot, "Write hello.txt and tell me")
    assert finished[0][0] is True, finished
    assert "All done" in finished[0][1]

    assert (rig.ws / "hello.txt").read_text() == "hi there\n"
    p = rig.panel
    rows = [
        (top_item(p.tools_view, i).text(0), top_item(p.tools_view, i).text(1))
        for i in range(p.tools_view.topLevelItemCount())
    ]
    assert rows == [("todowrite", "✔ done"), ("write", "✔ done"), ("todowrite", "✔ done")]
    assert top_item(p.tools_view, 1).text(2).endswith("hello.txt")
    assert p.todo_label.text() == "Todo: 2 of 2 done"
    assert [p.todo_list.item(i).checkState() for i in range(2)] == [Qt.CheckState.Checked] * 2
    assert progress[0] == (0, 2) and progress[-1] == (2, 2), progress
    assert "All done: wrote hello.txt." in p.text_view.toPlainText()
    assert p.status_label.text() == "Done" and not p.error_label.isVisible()
    assert "1,550 in / 180 out tokens" in p.usage_label.text()
    # at most ~10 UI updates per second (plus the final ones)
    span = max(stamps[-1] - stamps[0], 0.1)
    assert len(stamps) <= span * 10 + 5, (len(stamps), span)

    # credits went down by exactly the usage the stand-in reported
    total_tokens = sum(a + b for a, b in usage)
    expected = backend.credits_per_1k_tokens * total_tokens / 1000
    assert len(backend.chat_requests()) == len(usage), "an unexpected extra LLM call"
    assert before - backend.balance(rig.box.email) == pytest.approx(expected)

    # the sessions table lists the session, titled after the prompt, with its tokens (the
    # refresh after the task; the one while it ran showed it as running: "▶ …")
    def listed() -> bool:
        item = p.table.item(0, 0)
        return p.table.rowCount() == 1 and item is not None and not item.text().startswith("▶")

    qtbot.waitUntil(listed, timeout=WAIT)  # type: ignore[attr-defined]
    assert cell(p.table, 0, 0).text() == "Write hello.txt and tell me"
    assert cell(p.table, 0, 3).text() == f"{total_tokens:,}"
    assert cell(p.table, 0, 4).text() == "4", "calls metered by the broker"
    metered = f"4 calls · {total_tokens:,} tokens (1,550 in / 180 out)"
    charged = f"· {expected:,.0f} credits charged by SmartSpecPro"
    qtbot.waitUntil(  # type: ignore[attr-defined]
        lambda: metered in p.metered_label.text() and charged in p.metered_label.text(),
        timeout=WAIT,
    )
    assert "$" not in p.usage_label.text() + p.metered_label.text(), "no made-up cost"


def test_a_task_budget_pauses_and_continue_goes_on(rig: Rig, qtbot: object) -> None:
    backend = rig.box.backend
    backend.script(
        *[
            ToolCall("bash", {"command": f"echo {i} >> loop.txt", "description": f"step {i}"})
            for i in range(3)
        ],
        Text("Finished after the budget was raised."),
    )
    p = rig.panel
    p.budget_box.setValue(200)
    with qtbot.waitSignal(rig.service.budget_paused, timeout=WAIT):  # type: ignore[attr-defined]
        send(rig, qtbot, "Loop a while")
    qtbot.waitUntil(lambda: not rig.service.running, timeout=WAIT)  # type: ignore[attr-defined]
    # 120 tokens a call: the second call crossed 200, the third was refused.
    assert len(backend.chat_requests()) == 2
    assert p.paused_box.isVisible() and not p.error_label.isVisible()
    assert p.status_label.text() == "Paused: budget of 200 tokens reached"
    assert p.continue_btn.text() == "Continue (+200)"
    assert p.paused_stop_btn.isVisible()

    with qtbot.waitSignal(p.task_finished, timeout=WAIT) as blocker:  # type: ignore[attr-defined]
        qtbot.mouseClick(p.continue_btn, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    assert blocker.args[0] is True, blocker.args
    assert not p.paused_box.isVisible()
    assert "Finished after the budget was raised." in p.text_view.toPlainText()
    assert (rig.ws / "loop.txt").read_text().split() == ["0", "1", "2"]
    access = rig.service.broker_access
    assert access is not None
    ((task, state),) = access.control(rig.record).budget()["tasks"].items()
    assert task == rig.service.task_id and state["cap"] == 440 and state["used"] == 480


def test_permission_request_is_answered_from_the_ui(asking_rig: Rig, qtbot: object) -> None:
    rig = asking_rig
    rig.box.backend.script(
        ToolCall("write", {"filePath": "p.txt", "content": "perm\n"}), Text("Wrote p.txt.")
    )
    asked: list[dict[str, object]] = []
    rig.service.permission_requested.connect(asked.append)
    send(rig, qtbot, "write p.txt")
    qtbot.waitUntil(lambda: rig.panel.perm_box.isVisible(), timeout=WAIT)  # type: ignore[attr-defined]
    assert asked and asked[0]["permission"] == "edit"
    assert not (rig.ws / "p.txt").exists(), "OpenCode wrote before it was allowed"
    buttons = rig.panel.perm_box.findChildren(QPushButton, "permission-once")
    assert len(buttons) == 1
    texts = [lbl.text() for lbl in rig.panel.perm_box.findChildren(QLabel)]
    assert any("asks to edit" in t and "p.txt" in t for t in texts), texts
    with qtbot.waitSignal(rig.panel.task_finished, timeout=WAIT) as sig:  # type: ignore[attr-defined]
        qtbot.mouseClick(buttons[0], Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    assert sig.args[0] is True
    assert (rig.ws / "p.txt").read_text() == "perm\n"
    qtbot.waitUntil(lambda: not rig.panel.perm_box.isVisible(), timeout=WAIT)  # type: ignore[attr-defined]


def test_abort_stops_a_long_task_and_sessions_can_be_managed(
    rig: Rig, qtbot: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = rig.box.backend
    backend.script(Text("slow " * 40, chunk_delay=10.0))  # ~40 s unless aborted
    send(rig, qtbot, "a long task")
    p = rig.panel
    qtbot.waitUntil(  # type: ignore[attr-defined]
        lambda: p.status_label.text().startswith("Busy") and p.selected_session() is not None,
        timeout=WAIT,
    )
    sid = p.selected_session()
    assert sid and sid == rig.service.running_session
    t0 = time.monotonic()
    with qtbot.waitSignal(p.task_finished, timeout=WAIT) as sig:  # type: ignore[attr-defined]
        qtbot.mouseClick(p.abort_btn, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    assert sig.args == [False, "The task was aborted."]
    assert time.monotonic() - t0 < 20, "abort must not wait for the slow answer to end"
    assert p.status_label.text() == "Aborted"
    with rig.client() as c:
        assert sid not in c.get("/session/status").json(), "the session is still busy"

    # New, Rename and Delete through the table's buttons
    def ids() -> list[str]:
        return [
            cell(p.table, r, 0).data(Qt.ItemDataRole.UserRole) for r in range(p.table.rowCount())
        ]

    def title_of(session_id: str) -> str:
        return next(
            cell(p.table, r, 0).text()
            for r in range(p.table.rowCount())
            if cell(p.table, r, 0).data(Qt.ItemDataRole.UserRole) == session_id
        )

    qtbot.mouseClick(p.new_btn, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: len(ids()) == 2, timeout=WAIT)  # type: ignore[attr-defined]
    p._select(sid)
    monkeypatch.setattr(
        "smartspec_desktop.ui.agent.QInputDialog.getText", lambda *a, **k: ("Renamed", True)
    )
    qtbot.mouseClick(p.rename_btn, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: title_of(sid) == "Renamed", timeout=WAIT)  # type: ignore[attr-defined]
    p._select(sid)
    monkeypatch.setattr(
        "smartspec_desktop.ui.agent.QMessageBox.question",
        lambda *a, **k: QMessageBox.StandardButton.Yes,
    )
    qtbot.mouseClick(p.delete_btn, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: sid not in ids(), timeout=WAIT)  # type: ignore[attr-defined]
    remaining = ids()
    assert len(remaining) == 1
    opened: list[str] = []
    p.open_session_requested.connect(opened.append)
    pos = p.table.visualItemRect(cell(p.table, 0, 0)).center()
    vp = p.table.viewport()
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=pos)  # type: ignore[attr-defined]
    qtbot.mouseDClick(vp, Qt.MouseButton.LeftButton, pos=pos)  # type: ignore[attr-defined]
    assert opened == remaining
