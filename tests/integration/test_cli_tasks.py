"""The CLI's `sessions` command and `run` with tool calls, progress on stderr and --session."""

from __future__ import annotations

import pytest

from tests.backend_standin import Text, ToolCall
from tests.conftest import Sandbox

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_run_shows_progress_and_sessions_lists_and_continues(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    r = sandbox.cli("sessions", str(ws))
    assert r.returncode == 1 and "smartspec-desktop start" in r.stderr

    sandbox.cli_json("start", str(ws))
    sandbox.backend.script(
        ToolCall(
            "todowrite",
            {"todos": [{"content": "write", "status": "completed", "priority": "high"}]},
        ),
        ToolCall("write", {"filePath": "out.txt", "content": "from the agent\n"}),
        Text("Wrote out.txt.", prompt_tokens=200, completion_tokens=30),
    )
    r = sandbox.cli("run", str(ws), "Write out.txt please")
    assert r.returncode == 0, r.stderr
    assert "Wrote out.txt." in r.stdout
    assert "tool" not in r.stdout, "progress belongs on stderr"
    assert "… tool write: completed" in r.stderr and "… todo 1/1" in r.stderr
    assert "2 tool call(s), todo 1/1 done" in r.stderr
    assert (ws / "out.txt").read_text() == "from the agent\n"
    assert len(sandbox.backend.chat_requests()) == 3, "no extra call to invent a title"

    (first,) = sandbox.cli_json("sessions", str(ws))
    assert first["title"] == "Write out.txt please"
    assert first["tokens_input"] == 400 and first["tokens_output"] == 70
    assert first["created"] <= first["updated"]

    sandbox.backend.script(Text("Again.", prompt_tokens=50, completion_tokens=5))
    r = sandbox.cli("run", str(ws), "once more", "--session", first["id"])
    assert r.returncode == 0, r.stderr
    assert "Again." in r.stdout and f"session {first['id']}" in r.stderr
    (again,) = sandbox.cli_json("sessions", str(ws))
    assert again["id"] == first["id"] and again["tokens_input"] == 450
    assert again["updated"] >= first["updated"]

    text = sandbox.cli("sessions", str(ws))
    assert text.returncode == 0
    assert "LAST ACTIVITY" in text.stdout and "Write out.txt please" in text.stdout
