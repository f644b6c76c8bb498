"""Review and undo (issue 14) against the real ``opencode serve`` and the backend stand-in: the
stand-in scripts ``write``/``edit``/``bash`` tool calls, core.review lists, undoes and redoes them,
in a git repository (OpenCode's snapshots) and in a plain folder (restored from tool calls)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smartspec_desktop.core import review, worktrees
from smartspec_desktop.core.opencode.client import OpenCodeClient
from tests.backend_standin import BackendStandIn, Delay, Text, ToolCall
from tests.conftest import START_TIMEOUT_S, processes_under, sandbox_env

pytestmark = pytest.mark.integration

KEEP = "".join(f"line{i}\n" for i in range(40))


@dataclass
class Server:
    client: OpenCodeClient
    workspace: Path
    backend: BackendStandIn

    def turn(self, prompt: str, *steps: ToolCall | Text, session_id: str = "") -> str:
        """Send ``prompt`` (the stand-in answers with ``steps``) and wait until the agent is
        done; returns the session id."""
        if not session_id:
            session_id = str(self.client.create_session(title="review test")["id"])
        self.backend.script(*steps, Text("Done."))
        before = len(self.client.messages(session_id))
        self.client.prompt_async(session_id, prompt)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msgs = self.client.messages(session_id)
            last = msgs[-1]["info"] if len(msgs) > before else {}
            done = last.get("role") == "assistant" and last.get("finish") == "stop"
            if done and not self.client.session_status().get(session_id):
                return session_id
            time.sleep(0.2)
        raise AssertionError(f"the agent did not finish: {json.dumps(msgs)[:2000]}")


def _config(gateway_url: str, model: str) -> str:
    return json.dumps(
        {
            "provider": {
                "smartspec": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "SmartSpecPro",
                    "options": {"baseURL": gateway_url, "apiKey": "{env:SMARTSPEC_API_KEY}"},
                    "models": {model: {"name": model}},
                }
            },
            "enabled_providers": ["smartspec"],
            "model": f"smartspec/{model}",
            "small_model": f"smartspec/{model}",
            "autoupdate": False,
            "share": "disabled",
        }
    )


def _git(ws: Path, env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        ["git", "-C", str(ws), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _api_key(backend: BackendStandIn) -> str:
    backend.add_user("dev@example.com", "pw")
    return backend.issue_api_key("dev@example.com")


def _env(tmp_path: Path, opencode_bin: str) -> dict[str, str]:
    env = sandbox_env(tmp_path, opencode_bin)
    env["GIT_CONFIG_GLOBAL"] = os.devnull
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


def _workspace(tmp_path: Path, env: dict[str, str], git: bool) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "keep.txt").write_text(KEEP)
    if git:
        _git(ws, env, "init", "-q")
        _git(ws, env, "add", ".")
        _git(ws, env, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "i")
    return ws


@contextlib.contextmanager
def _serve(
    ws: Path, env: dict[str, str], backend: BackendStandIn, opencode_bin: str, api_key: str
) -> Iterator[Server]:
    """A real ``opencode serve`` in ``ws`` (its own process group, stopped at the end)."""
    password = "review-test-password"
    env = dict(env)
    env.update(
        {
            "OPENCODE_CONFIG_CONTENT": _config(backend.gateway_url, backend.models[0]),
            "SMARTSPEC_API_KEY": api_key,
            "OPENCODE_SERVER_PASSWORD": password,
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
        }
    )
    proc = subprocess.Popen(
        [opencode_bin, "serve", "--port", "0", "--hostname", "127.0.0.1"],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        url = ""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not url and time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"http://127\.0\.0\.1:\d+", line)
            url = m.group(0) if m else ""
        sel.close()
        assert url, "opencode serve did not start"
        with OpenCodeClient(url, password, timeout=60) as client:
            yield Server(client, ws, backend)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _start(
    tmp_path: Path, backend: BackendStandIn, opencode_bin: str, git: bool
) -> Iterator[Server]:
    env = _env(tmp_path, opencode_bin)
    key = _api_key(backend)
    with _serve(_workspace(tmp_path, env, git), env, backend, opencode_bin, key) as srv:
        yield srv


@pytest.fixture
def git_server(tmp_path: Path, backend: BackendStandIn, opencode_bin: str) -> Iterator[Server]:
    yield from _start(tmp_path, backend, opencode_bin, git=True)


@pytest.fixture
def plain_server(tmp_path: Path, backend: BackendStandIn, opencode_bin: str) -> Iterator[Server]:
    yield from _start(tmp_path, backend, opencode_bin, git=False)


WRITE_OUT = ToolCall("write", {"filePath": "out.txt", "content": "one\ntwo\nthree\n"})
EDIT_KEEP = ToolCall(
    "edit", {"filePath": "keep.txt", "oldString": "line20\n", "newString": "B\nBB\n"}
)
WRITE_SECOND = ToolCall("write", {"filePath": "second.txt", "content": "2nd\n"})


def _listing(changes: list[review.FileChange]) -> list[tuple[str, str, int, int]]:
    return [(c.path, c.status, c.additions, c.deletions) for c in changes]


def _two_turns(srv: Server) -> str:
    sid = srv.turn("write out.txt and edit keep.txt", WRITE_OUT, EDIT_KEEP)
    srv.turn("write second.txt", WRITE_SECOND, session_id=sid)
    return sid


def test_git_changes_undo_redo(git_server: Server) -> None:
    srv, ws = git_server, git_server.workspace
    sid = _two_turns(srv)

    assert _listing(review.changes(srv.client, sid)) == [
        ("keep.txt", "modified", 2, 1),
        ("out.txt", "added", 3, 0),
        ("second.txt", "added", 1, 0),
    ]
    assert _listing(review.changes(srv.client, sid, turn="last")) == [("second.txt", "added", 1, 0)]
    keep = next(c for c in review.changes(srv.client, sid) if c.path == "keep.txt")
    page = review.diff_page(keep, 0, 4)
    assert page.total > 4 and page.more and len(page.lines) == 4
    whole = review.diff_page(keep, 0, 1000).lines
    assert "-line20" in whole and "+B" in whole and "+BB" in whole
    assert "line0" not in " ".join(whole), "3 lines of context, not the whole file"

    git_view = review.working_tree_changes(srv.client)
    assert _listing(git_view) == _listing(review.changes(srv.client, sid))
    assert "-line20" in review.diff_page(git_view[0]).lines

    result = review.undo_last_turn(srv.client, sid)
    assert result.snapshots and result.files == ["second.txt"] and result.turns_undone == 1
    assert not (ws / "second.txt").exists() and (ws / "out.txt").exists()
    assert [t.reverted for t in review.turns(srv.client, sid)] == [False, True]
    assert [c.path for c in review.changes(srv.client, sid)] == ["keep.txt", "out.txt"]

    review.redo(srv.client, sid)
    assert (ws / "second.txt").read_text() == "2nd\n"
    assert [t.reverted for t in review.turns(srv.client, sid)] == [False, False]
    with pytest.raises(review.NothingToRedo):
        review.redo(srv.client, sid)

    # Two undos back to the start, then one redo step, then the rest.
    review.undo_last_turn(srv.client, sid)
    review.undo_last_turn(srv.client, sid)
    assert not (ws / "out.txt").exists() and (ws / "keep.txt").read_text() == KEEP
    with pytest.raises(review.NothingToUndo):
        review.undo_last_turn(srv.client, sid)
    review.redo(srv.client, sid)
    assert (ws / "out.txt").exists() and not (ws / "second.txt").exists()
    assert [t.reverted for t in review.turns(srv.client, sid)] == [False, True]
    review.redo(srv.client, sid)
    assert (ws / "second.txt").exists()


def test_git_undo_refuses_over_user_edits_and_redo_restores_them(git_server: Server) -> None:
    srv, ws = git_server, git_server.workspace
    sid = _two_turns(srv)
    (ws / "second.txt").write_text("my own edit\n")
    with pytest.raises(review.UserEditsFound) as err:
        review.undo_last_turn(srv.client, sid)
    assert err.value.files == ["second.txt"] and "--force" in err.value.fix
    assert (ws / "second.txt").read_text() == "my own edit\n", "refusing touches nothing"
    assert not any(t.reverted for t in review.turns(srv.client, sid))

    result = review.undo_last_turn(srv.client, sid, force=True)
    assert result.overwritten == ["second.txt"] and not (ws / "second.txt").exists()
    review.redo(srv.client, sid)
    assert (ws / "second.txt").read_text() == "my own edit\n", "redo brings the user's edit back"

    # Discard everything (over the user's edit again, so only with force), then bring it back.
    with pytest.raises(review.UserEditsFound, match="second.txt"):
        review.discard_session_changes(srv.client, sid)
    discarded = review.discard_session_changes(srv.client, sid, force=True)
    assert discarded.turns_undone == 2 and discarded.overwritten == ["second.txt"]
    assert (ws / "keep.txt").read_text() == KEEP and not (ws / "out.txt").exists()
    assert review.changes(srv.client, sid) == []
    review.redo(srv.client, sid, everything=True)
    assert (ws / "out.txt").exists() and "BB\n" in (ws / "keep.txt").read_text()
    assert (ws / "second.txt").read_text() == "my own edit\n"


def test_plain_folder_changes_undo_redo(plain_server: Server) -> None:
    srv, ws = plain_server, plain_server.workspace
    sid = _two_turns(srv)
    assert _listing(review.changes(srv.client, sid)) == [
        ("keep.txt", "modified", 2, 1),
        ("out.txt", "added", 3, 0),
        ("second.txt", "added", 1, 0),
    ]
    result = review.undo_last_turn(srv.client, sid)
    assert not result.snapshots and result.files == ["second.txt"]
    assert not (ws / "second.txt").exists()
    review.redo(srv.client, sid)
    assert (ws / "second.txt").read_text() == "2nd\n"

    (ws / "out.txt").write_text("mine\n")
    with pytest.raises(review.UserEditsFound) as err:
        review.discard_session_changes(srv.client, sid)
    assert err.value.files == ["out.txt"]
    (ws / "out.txt").write_text("one\ntwo\nthree\n")
    review.discard_session_changes(srv.client, sid)
    assert (ws / "keep.txt").read_text() == KEEP
    assert not (ws / "out.txt").exists() and not (ws / "second.txt").exists()
    review.redo(srv.client, sid, everything=True)
    assert (ws / "second.txt").exists() and "BB\n" in (ws / "keep.txt").read_text()

    # A shell command in a plain folder: OpenCode recorded nothing to restore.
    srv.turn(
        "run a command",
        ToolCall("bash", {"command": "echo x > made.txt", "description": "x"}),
        session_id=sid,
    )
    assert (ws / "made.txt").exists()
    with pytest.raises(review.UndoUnavailable) as unavailable:
        review.undo_last_turn(srv.client, sid)
    assert "git init" in unavailable.value.fix and "bash" in unavailable.value.files[0]
    forced = review.undo_last_turn(srv.client, sid, force=True)
    assert forced.not_restored and (ws / "made.txt").exists()
    assert review.turns(srv.client, sid)[-1].reverted

    # While the agent works, undo is refused (not raced against the running turn).
    srv.backend.script(Delay(6.0))
    srv.client.prompt_async(sid, "a slow one")
    deadline = time.monotonic() + 30
    while not srv.client.session_status().get(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(review.SessionBusy):
        review.undo_last_turn(srv.client, sid)


@pytest.mark.slow
def test_two_worktree_tasks_stay_apart_and_one_merges(
    tmp_path: Path, backend: BackendStandIn, opencode_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worktrees, a server in each at the same time; each agent writes its own file there,
    nothing lands in the main tree; commit_all puts it on the branch; merge brings one in; the
    agent's changes are reviewed per worktree (OpenCode's snapshots work in a worktree)."""
    env = _env(tmp_path, opencode_bin)
    for var in ("HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM"):
        monkeypatch.setenv(var, env[var])
    repo = _workspace(tmp_path, env, git=True)
    base = tmp_path / "data" / "worktrees"
    key = _api_key(backend)
    a = worktrees.create(repo, base, "task-a")
    b = worktrees.create(repo, base, "task-b")
    with (
        _serve(a.path, env, backend, opencode_bin, key) as srv_a,
        _serve(b.path, env, backend, opencode_bin, key) as srv_b,
    ):
        sid_a = srv_a.turn("A", ToolCall("write", {"filePath": "a.txt", "content": "A\n"}))
        sid_b = srv_b.turn("B", ToolCall("write", {"filePath": "b.txt", "content": "B\n"}))
        assert _listing(review.changes(srv_a.client, sid_a)) == [("a.txt", "added", 1, 0)]
        assert _listing(review.changes(srv_b.client, sid_b)) == [("b.txt", "added", 1, 0)]
    assert (a.path / "a.txt").exists() and not (a.path / "b.txt").exists()
    assert (b.path / "b.txt").exists() and not (b.path / "a.txt").exists()
    assert not (repo / "a.txt").exists() and not (repo / "b.txt").exists()
    assert _git(repo, env, "status", "--porcelain") == ""
    assert worktrees.commit_all(a.path, "A") and worktrees.commit_all(b.path, "B")
    listed = {w.name: (w.status, w.additions) for w in worktrees.list_worktrees(repo, base)}
    assert listed == {"task-a": ("ahead", 1), "task-b": ("ahead", 1)}
    worktrees.merge(repo, base, "task-a")
    assert (repo / "a.txt").read_text() == "A\n" and not (repo / "b.txt").exists()
    worktrees.discard(repo, base, "task-b")
    assert [w.name for w in worktrees.list_worktrees(repo, base)] == ["task-a"]
    assert not b.path.exists() and "smartspec/task-b" not in _git(repo, env, "branch")
    assert processes_under(str(tmp_path)) == [], "no server or process outlives its worktree"
