"""The CLI's review, undo and worktree commands (issue 14) with the real ``opencode serve`` and the
backend stand-in scripting ``write`` tool calls: ``changes``/``undo``/``redo`` in a git repository
and in a plain folder; ``run --worktree`` twice at once, ``worktrees``, ``merge`` (clean and
conflicting) and ``discard``."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.demo.backend import DemoScript, Step, _message_text
from tests.backend_standin import Text, ToolCall
from tests.conftest import Sandbox, processes_under, server_processes

pytestmark = pytest.mark.integration

KEEP = "".join(f"line{i}\n" for i in range(10))
IDENT = ["-c", "user.name=T", "-c", "user.email=t@example.com"]


def _git(ws: Path, env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        ["git", "-C", str(ws), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _workspace(box: Sandbox, git: bool) -> Path:
    ws = box.workspace("repo" if git else "plain")
    (ws / "keep.txt").write_text(KEEP)
    if git:
        _git(ws, box.env, "init", "-q", "-b", "main")
        _git(ws, box.env, "add", ".")
        _git(ws, box.env, *IDENT, "commit", "-qm", "first")
    return ws


def _ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


@pytest.mark.parametrize("git", [True, False], ids=["git", "plain"])
@pytest.mark.slow
def test_changes_undo_redo(sandbox: Sandbox, git: bool) -> None:
    ws = _workspace(sandbox, git)
    none = sandbox.cli("changes", str(ws))
    assert none.returncode == 1 and "no OpenCode session" in none.stderr and "run" in none.stderr
    sandbox.backend.script(
        ToolCall("write", {"filePath": "out.txt", "content": "one\ntwo\nthree\n"}), Text("Done.")
    )
    _ok(sandbox.cli("run", str(ws), "write out.txt"))
    assert (ws / "out.txt").read_text() == "one\ntwo\nthree\n"

    listed = sandbox.cli_json("changes", str(ws))
    assert listed == [
        {"path": "out.txt", "status": "added", "additions": 3, "deletions": 0, "binary": False}
    ]
    assert sandbox.cli_json("changes", str(ws), "--turn", "last") == listed
    text = _ok(sandbox.cli("changes", str(ws), "--diff")).stdout
    assert "added" in text and "+3 -0" in text and "+two" in text

    undone = sandbox.cli_json("undo", str(ws))
    assert undone["files"] == ["out.txt"] and undone["snapshots"] is git
    assert not (ws / "out.txt").exists()
    assert sandbox.cli_json("changes", str(ws)) == []
    again = sandbox.cli("undo", str(ws))
    assert again.returncode == 1 and "nothing to undo" in again.stderr

    redone = _ok(sandbox.cli("redo", str(ws)))
    assert "Redid" in redone.stdout and "out.txt" in redone.stdout
    assert (ws / "out.txt").read_text() == "one\ntwo\nthree\n"
    assert sandbox.cli("redo", str(ws)).returncode == 1

    # Nothing lost silently: undo over the user's own edit refuses and lists the file.
    (ws / "out.txt").write_text("my edit\n")
    refused = sandbox.cli("undo", str(ws))
    assert refused.returncode == 1
    assert "  out.txt" in refused.stderr and "--force" in refused.stderr
    assert (ws / "out.txt").read_text() == "my edit\n"
    forced = _ok(sandbox.cli("undo", str(ws), "--force"))
    if git:
        assert not (ws / "out.txt").exists() and "redo" in forced.stdout
        _ok(sandbox.cli("redo", str(ws)))
        assert (ws / "out.txt").read_text() == "my edit\n", "redo brings the user's edit back"
    else:
        assert (ws / "out.txt").read_text() == "my edit\n", "a plain folder keeps the edit"
        assert "left as they are: out.txt" in forced.stderr

    # --session picks a session explicitly; a wrong one is a clear error.
    (session,) = sandbox.cli_json("sessions", str(ws))
    assert sandbox.cli("changes", str(ws), "--session", session["id"]).returncode == 0


class _WriteWhatIsAsked(DemoScript):
    """Answers "write NAME" with a ``write`` of NAME (content: NAME upper-cased), so that tasks
    running at the same time each get their own tool call whatever the order of requests."""

    def answer(self, messages: list[Any]) -> Step:
        last = messages[-1] if messages else {}
        if isinstance(last, dict) and last.get("role") == "tool":
            return Text("Done.")
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        m = re.search(r"write (\S+)", _message_text(user[-1]) if user else "")
        if not m:
            return Text("Nothing to write.")
        return ToolCall("write", {"filePath": m.group(1), "content": m.group(1).upper() + "\n"})


@pytest.mark.slow
def test_worktree_tasks_merge_conflict_and_discard(sandbox: Sandbox) -> None:
    box, env = sandbox, sandbox.env
    repo = _workspace(box, git=True)
    box.backend.gateway = "demo"
    box.backend.demo = _WriteWhatIsAsked()

    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(name: str) -> None:
        results[name] = box.cli("run", str(repo), f"write {name}.txt", "--worktree", name)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("task-a", "task-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    for name in ("task-a", "task-b"):
        r = _ok(results[name])
        assert f"branch smartspec/{name}" in r.stdout and "Committed" in r.stderr

    listed = {w["name"]: w for w in box.cli_json("worktrees", str(repo))}
    assert set(listed) == {"task-a", "task-b"}
    a, b = Path(listed["task-a"]["path"]), Path(listed["task-b"]["path"])
    assert (a / "task-a.txt").read_text() == "TASK-A.TXT\n" and not (a / "task-b.txt").exists()
    assert (b / "task-b.txt").read_text() == "TASK-B.TXT\n" and not (b / "task-a.txt").exists()
    assert not (repo / "task-a.txt").exists() and not (repo / "task-b.txt").exists()
    assert _git(repo, env, "status", "--porcelain") == "", "the main tree is never touched"
    assert box.data_dir.resolve() in a.resolve().parents, "worktrees live in the app's data dir"
    for w in listed.values():
        assert (w["branch"], w["status"], w["additions"], w["deletions"]) == (
            f"smartspec/{w['name']}",
            "ahead",
            1,
            0,
        )
        assert w["server"] == "running"
    assert _git(a, env, "log", "-1", "--format=%s").strip() == "write task-a.txt"
    assert "task-a" in _ok(box.cli("worktrees", str(repo))).stdout

    # Each worktree is its own workspace: its session and changes, none of the repository's.
    assert [c["path"] for c in box.cli_json("changes", str(a))] == ["task-a.txt"]
    main = box.cli("changes", str(repo))
    assert main.returncode == 1 and "no OpenCode session" in main.stderr

    merged = _ok(box.cli("merge", str(repo), "task-a"))
    assert "Merged smartspec/task-a into main" in merged.stdout
    assert (repo / "task-a.txt").read_text() == "TASK-A.TXT\n"

    # A conflict: the user and the worktree both changed keep.txt.
    (b / "keep.txt").write_text("from the worktree\n")
    _git(b, env, *IDENT, "commit", "-qam", "worktree side")
    (repo / "keep.txt").write_text("from the user\n")
    _git(repo, env, *IDENT, "commit", "-qam", "user side")
    head = _git(repo, env, "rev-parse", "HEAD")
    conflict = box.cli("merge", str(repo), "task-b")
    assert conflict.returncode == 1
    assert "conflict: keep.txt" in conflict.stderr and "unchanged" in conflict.stderr
    assert "Ask the agent" in conflict.stderr
    assert (
        _git(repo, env, "status", "--porcelain") == ""
        and _git(repo, env, "rev-parse", "HEAD") == head
    ), "the repository is left as it was"

    refused = box.cli("discard", str(repo), "task-b")
    assert refused.returncode == 2 and "--yes" in refused.stderr and b.exists()
    _ok(box.cli("discard", str(repo), "task-b", "--yes"))
    assert not b.exists() and "smartspec/task-b" not in _git(repo, env, "branch")
    assert [w["name"] for w in box.cli_json("worktrees", str(repo))] == ["task-a"]
    assert server_processes(b) == [] and processes_under(str(b)) == []
    assert all(s["workspace_path"] != str(b) for s in box.cli_json("status"))


def test_worktree_needs_git(sandbox: Sandbox) -> None:
    plain = _workspace(sandbox, git=False)
    r = sandbox.cli("run", str(plain), "write x.txt", "--worktree")
    assert r.returncode == 1
    assert "not a git repository" in r.stderr and "git init" in r.stderr
    r = sandbox.cli("worktrees", str(plain))
    assert r.returncode == 1 and "git init" in r.stderr
    assert not (plain / ".git").exists()
