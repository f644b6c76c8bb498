"""Sessions belong to their workspace (OpenCode files every non-git folder under one "global"
project), and the CLI's rough edges: empty prompts, unknown session ids, logs after stop."""

from __future__ import annotations

import pytest

from tests.backend_standin import Text
from tests.conftest import Sandbox

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_sessions_list_only_this_workspace_with_two_plain_folders(sandbox: Sandbox) -> None:
    a, b = sandbox.workspace("alpha"), sandbox.workspace("beta")
    (a / "sub").mkdir()
    sandbox.backend.script(Text("A.", prompt_tokens=5, completion_tokens=1))
    r = sandbox.cli("run", str(a), "in alpha")
    assert r.returncode == 0, r.stderr
    sandbox.cli_json("start", str(b))
    sandbox.backend.script(Text("B.", prompt_tokens=5, completion_tokens=1))
    r = sandbox.cli("run", str(b), "in beta")
    assert r.returncode == 0, r.stderr

    (only_b,) = sandbox.cli_json("sessions", str(b))
    assert only_b["title"] == "in beta" and only_b["directory"] == str(b)
    (only_a,) = sandbox.cli_json("sessions", str(a))
    assert only_a["title"] == "in alpha" and only_a["directory"] == str(a)
    text = sandbox.cli("sessions", str(b)).stdout
    assert "in beta" in text and "in alpha" not in text
    sandbox.cli("stop", "--all")


def test_empty_prompt_is_refused_before_anything_starts_or_is_billed(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    r = sandbox.cli("run", str(ws), "  \n\t ")
    assert r.returncode == 1
    assert "error: The prompt is empty." in r.stderr and "Write what the agent" in r.stderr
    assert sandbox.backend.chat_requests() == []
    assert sandbox.cli("status").stdout.strip() == "No servers."


def test_unknown_session_says_so_and_names_the_listing(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    sandbox.cli_json("start", str(ws))
    r = sandbox.cli("run", str(ws), "hello", "--session", "ses_nosuchsession0000000000")
    assert r.returncode == 1
    assert "no such session (ses_nosuchsession0000000000)" in r.stderr
    assert f"`smartspec-desktop sessions {ws}` lists them" in r.stderr
    assert "404" not in r.stderr and "{" not in r.stderr, "no raw OpenCode JSON"
    assert sandbox.backend.chat_requests() == []
    sandbox.cli("stop", str(ws))


def test_logs_after_stop_show_the_last_servers_log(sandbox: Sandbox) -> None:
    ws = sandbox.workspace()
    started = sandbox.cli_json("start", str(ws))
    assert sandbox.cli("stop", str(ws)).returncode == 0
    r = sandbox.cli("logs", str(ws), "-n", "500")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "the log on disk is shown"
    assert "is stopped: its last log" in r.stderr
    with open(started["log_path"], encoding="utf-8") as f:
        assert r.stdout.splitlines()[-1] == f.read().splitlines()[-1]
    never = sandbox.workspace("never")
    r = sandbox.cli("logs", str(never))
    assert r.returncode == 1 and "no server ever ran" in r.stderr
    assert f"smartspec-desktop start {never}" in r.stderr


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("not-a-key", "The API key from the SMARTSPEC_API_KEY environment variable is not"),
        (
            "sk-smartspec-" + "N" * 43,
            "rejected the API key from the SMARTSPEC_API_KEY environment variable",
        ),
    ],
)
def test_key_errors_at_start_name_where_the_key_came_from(
    sandbox: Sandbox, key: str, says: str
) -> None:
    env = dict(sandbox.env, SMARTSPEC_API_KEY=key)
    r = sandbox.cli("start", str(sandbox.workspace()), env=env)
    assert r.returncode == 1
    assert says in r.stderr
    assert "Set SMARTSPEC_API_KEY to a valid key" in r.stderr, "the fix for that source"
    assert key not in r.stderr
