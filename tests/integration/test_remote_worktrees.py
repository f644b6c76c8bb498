"""Worktrees of a remote repository (issue 15), for real: the tests' sshd with a throw-away
remote account (tests/remote_host.py), git and the real OpenCode 1.18.33 on the "remote" side.
Each task runs in its own ``git worktree`` made on the host over ssh, with its own remote
server; what is checked is on the host: the worktree folders, their owner (made by the remote
account, so through ssh), the branches, the merge and the removal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smartspec_desktop.core.remote.address import parse_remote
from tests.backend_standin import Text, ToolCall
from tests.conftest import Sandbox
from tests.integration import test_remote_ssh as _ssh
from tests.remote_host import RemoteHost

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("git"), reason="git is needed"),
]

remote_host = _ssh.remote_host
remote = _ssh.remote


def _git(remote: RemoteHost, folder: Path, *args: str) -> str:
    argv = ["git", "-C", str(folder), "-c", "user.name=T", "-c", "user.email=t@example.com"]
    return remote.run_as(*argv, *args).stdout


def _repo(remote: RemoteHost, name: str) -> Path:
    folder = remote.workspace(name)
    remote.run_as("sh", "-c", 'printf "base\\n" > "$1"/keep.txt', "sh", str(folder))
    _git(remote, folder, "init", "-q", "-b", "main")
    _git(remote, folder, "add", ".")
    _git(remote, folder, "commit", "-qm", "initial")
    return folder


@pytest.mark.timeout(600)  # two tasks with their servers, each git call an ssh connection
@pytest.mark.slow
def test_remote_tasks_run_in_their_own_worktrees_on_the_host(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    repo = _repo(remote, "wtrepo")
    address = remote.address(repo)

    sandbox.backend.script(
        ToolCall("write", {"filePath": "a.txt", "content": "A\n"}), Text("Done.")
    )
    r = sandbox.cli("run", address, "write a.txt", "--worktree", "alpha")
    assert r.returncode == 0, r.stderr
    assert "branch smartspec/alpha" in r.stdout
    assert "Committed the agent's work on smartspec/alpha" in r.stderr, r.stderr
    sandbox.backend.script(
        ToolCall("write", {"filePath": "b.txt", "content": "B\n"}), Text("Done.")
    )
    r = sandbox.cli("run", address, "write b.txt", "--worktree", "beta")
    assert r.returncode == 0, r.stderr

    listed = sandbox.cli_json("worktrees", address)
    assert [(w["name"], w["branch"], w["status"], w["files"]) for w in listed] == [
        ("alpha", "smartspec/alpha", "ahead", 1),
        ("beta", "smartspec/beta", "ahead", 1),
    ]
    # Both worktrees' servers run at once, each a remote workspace of its own on the host.
    assert [w["server"] for w in listed] == ["running", "running"]
    assert len(remote.servers()) == 2
    base = remote.home / ".local" / "share" / "smartspec-desktop" / "worktrees"
    for w in listed:
        folder = Path(w["path"])
        assert base in folder.parents and folder.name == w["name"]
        assert folder.stat().st_uid == remote.uid  # made on the host, by the remote account
        assert w["workspace"] == str(parse_remote(f"ssh://alias{folder}"))
    # each worktree's server runs in its folder on the host
    cwds = {Path(f"/proc/{p.pid}/cwd").resolve() for p in remote.servers()}
    assert cwds == {Path(w["path"]) for w in listed}
    alpha, beta = (Path(w["path"]) for w in listed)
    assert (alpha / "a.txt").read_text() == "A\n" and not (alpha / "b.txt").exists()
    assert (beta / "b.txt").read_text() == "B\n" and not (beta / "a.txt").exists()
    assert not (repo / "a.txt").exists() and not (repo / "b.txt").exists()  # never touched
    assert "write a.txt" in _git(remote, repo, "log", "-1", "--format=%s", "smartspec/alpha")
    status = {row["workspace_path"]: row for row in sandbox.cli_json("status")}
    assert set(status) == {w["workspace"] for w in listed}
    assert all(row["host"] == "alias" for row in status.values())

    merged = sandbox.cli_json("merge", address, "alpha")
    assert merged["files"] == ["a.txt"] and merged["into"] == "main" and merged["fast_forward"]
    assert (repo / "a.txt").read_text() == "A\n"
    assert _git(remote, repo, "status", "--porcelain") == ""

    r = sandbox.cli("discard", address, "beta", "--yes")
    assert r.returncode == 0, r.stderr
    assert "Stopped the server of" in r.stderr
    assert not beta.exists()
    assert "smartspec/beta" not in _git(remote, repo, "branch", "--list")
    assert [w["name"] for w in sandbox.cli_json("worktrees", address)] == ["alpha"]
    assert len(remote.servers()) == 1

    missing = sandbox.cli("discard", address, "nope", "--yes")
    assert missing.returncode != 0 and "No worktree named 'nope'" in missing.stderr


def test_a_plain_remote_folder_offers_git_init_for_worktrees(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    folder = remote.workspace("wtplain")
    r = sandbox.cli("worktrees", remote.address(folder))
    assert r.returncode != 0 and "is not a git repository" in r.stderr, r.stderr
    assert remote.servers() == []
    assert not (folder / ".git").exists()  # nothing was made there


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_the_windows_worktree_service_runs_lists_and_discards_on_the_host(  # type: ignore[no-untyped-def]
    sandbox: Sandbox, remote: RemoteHost, monkeypatch: pytest.MonkeyPatch, qtbot
) -> None:
    """What the window's Worktrees panel and Agent tab call (services.review.WorktreeService),
    in process with the real ServerManager: a task in a new worktree of the remote repository,
    its server started as a remote workspace, its work committed on the host."""
    from smartspec_desktop.core.storage.paths import Paths
    from smartspec_desktop.core.storage.secrets import MemoryStore
    from smartspec_desktop.core.wiring import build_core
    from smartspec_desktop.core.worktrees import Worktree, app_base_dir
    from smartspec_desktop.services.review import WorktreeService
    from smartspec_desktop.services.worker import Jobs
    from tests.qt.conftest import use_sandbox_env

    repo = _repo(remote, "wtwindow")
    address = remote.address(repo)
    use_sandbox_env(monkeypatch, sandbox.env)
    core = build_core(
        Paths.from_base(sandbox.data_dir), backend_url=sandbox.backend.url, store=MemoryStore()
    )
    jobs = Jobs()
    service = WorktreeService(core.servers, jobs, app_base_dir(sandbox.data_dir))
    failures: list[object] = []
    service.error.connect(lambda _ws, e: failures.append(e))
    service.not_git.connect(lambda _ws, e: failures.append(e))
    sandbox.backend.script(
        ToolCall("write", {"filePath": "w.txt", "content": "from the window\n"}), Text("Done.")
    )
    try:
        with qtbot.waitSignal(service.task_started, timeout=60_000) as started:
            service.run(address, "write w.txt")
        assert started.args is not None
        wt = started.args[1]
        assert isinstance(wt, Worktree) and wt.workspace.startswith("ssh://alias/")
        with qtbot.waitSignal(service.task_done, timeout=180_000) as done:
            pass
        assert done.args is not None and "committed" in done.args[2], done.args
        assert failures == []
        folder = Path(wt.path)
        assert (folder / "w.txt").read_text() == "from the window\n"
        assert folder.stat().st_uid == remote.uid
        assert "write w.txt" in _git(remote, repo, "log", "-1", "--format=%s", wt.branch)
        rec = core.servers.get(wt.workspace)
        assert rec is not None and rec.active and rec.host == "alias"

        with qtbot.waitSignal(service.listed, timeout=60_000) as listed:
            service.refresh(address)
        assert listed.args is not None
        assert [(w.name, w.status, w.workspace) for w in listed.args[1]] == [
            (wt.name, "ahead", wt.workspace)
        ]
        with qtbot.waitSignal(service.discarded, timeout=60_000):
            service.discard(address, wt.name)
        assert not folder.exists() and wt.branch not in _git(remote, repo, "branch", "--list")
        stopped = core.servers.get(wt.workspace)
        assert stopped is None or not stopped.active
        assert failures == []
    finally:
        jobs.wait(60_000)
        core.servers.stop_all()
