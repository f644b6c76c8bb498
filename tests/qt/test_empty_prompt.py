"""An empty or whitespace prompt is refused in the Agent tab before anything is sent (billed)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from smartspec_desktop.core.errors import EmptyPrompt
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.services.tasks import TaskService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.agent import AgentPanel

pytestmark = pytest.mark.gui


def test_whitespace_prompt_is_refused_with_a_message_and_nothing_is_sent(qtbot: object) -> None:
    asked: list[str] = []
    jobs = Jobs()
    service = TaskService(jobs)
    panel = AgentPanel(service)
    qtbot.addWidget(panel)  # type: ignore[attr-defined]
    panel.show()
    # A server that does not exist: nothing may even try to reach it.
    record = ServerRecord(
        server_id="srv_x",
        workspace_path="/nowhere",
        status=ServerStatus.RUNNING,
        created_at="2026-01-01T00:00:00",
        port=9,
        url="http://127.0.0.1:9",
    )
    panel._update_buttons()

    def provider(r: ServerRecord) -> str:
        asked.append(r.server_id)
        return "pw"

    service.set_target(record, provider)
    panel._update_buttons()
    errors: list[object] = []
    service.error.connect(errors.append)
    panel.prompt.setPlainText("   \n\t  ")
    panel.prompt.setFocus()
    qtbot.keyClick(  # type: ignore[attr-defined]
        panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier
    )
    assert not service.running
    assert len(errors) == 1 and isinstance(errors[0], EmptyPrompt)
    assert "The prompt is empty." in panel.error_label.text()
    assert not panel.error_label.isHidden()
    assert service.run_prompt("") is False and asked == []
    service.shutdown(5000)
