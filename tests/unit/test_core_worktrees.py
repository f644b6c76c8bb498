"""core.worktrees with real git in temp folders (no global or system git config, HOME in tmp)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from smartspec_desktop.core import worktrees as wt


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EMAIL", "")


def git(cwd: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def commit(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "-c", "user.name=U", "-c", "user.email=u@example.com", "commit", "-qm", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "README.md").write_text("hello\n")
    (r / "shared.txt").write_text("a\nb\nc\n")
    commit(r, "init")
    return r


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "data" / "worktrees"


def status(cwd: Path) -> str:
    return git(cwd, "status", "--porcelain", "--untracked-files=all")


def test_two_worktrees_write_apart_and_merge_brings_one_in(repo: Path, base: Path) -> None:
    one = wt.create(repo, base, "one")
    two = wt.create(repo, base)  # a generated, readable name
    assert one.branch == "smartspec/one" and one.path == wt.worktrees_dir(base, repo) / "one"
    assert two.name != "one" and wt.validate_name(two.name) == two.name
    for w in (one, two):
        assert repo.resolve() not in w.path.parents and base.resolve() in w.path.parents
    (one.path / "from-one.txt").write_text("1\n2\n")
    (two.path / "from-two.txt").write_text("two\n")
    (two.path / "shared.txt").write_text("a\nB\nc\n")
    listed = {w.name: w for w in wt.list_worktrees(repo, base)}
    assert listed["one"].status == "uncommitted" and listed["one"].additions == 2
    assert (listed[two.name].additions, listed[two.name].deletions) == (2, 1)

    # The agent's work is committed on its branch (no git identity configured here).
    assert wt.commit_all(one.path, "Task one: add a file") is not None
    assert wt.commit_all(two.path, "Task two") is not None
    assert wt.commit_all(two.path, "nothing left") is None, "clean → no-op"
    author = git(one.path, "log", "-1", "--format=%an <%ae>|%s")
    assert author == f"{wt.FALLBACK_NAME} <{wt.FALLBACK_EMAIL}>|Task one: add a file\n"
    assert not (repo / "from-one.txt").exists() and not (repo / "from-two.txt").exists()
    assert status(repo) == "", "the main tree is never touched"
    listed = {w.name: w for w in wt.list_worktrees(repo, base)}
    assert listed["one"].status == "ahead" and listed["one"].files == 1

    merged = wt.merge(repo, base, "one")
    assert merged.fast_forward and merged.into == "main" and merged.files == ["from-one.txt"]
    assert (repo / "from-one.txt").read_text() == "1\n2\n" and status(repo) == ""
    # main moved on: the second one needs a merge commit
    result = wt.merge(repo, base, two.name)
    assert not result.fast_forward and "Merge smartspec/" in git(repo, "log", "-1", "--format=%s")
    assert (repo / "shared.txt").read_text() == "a\nB\nc\n" and status(repo) == ""


def test_conflicting_merge_is_aborted_and_reports_the_file(repo: Path, base: Path) -> None:
    w = wt.create(repo, base, "clash")
    (w.path / "shared.txt").write_text("a\nfrom the agent\nc\n")
    wt.commit_all(w.path, "agent edit")
    (repo / "shared.txt").write_text("a\nfrom the user\nc\n")
    commit(repo, "user edit")
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(wt.MergeConflict) as err:
        wt.merge(repo, base, "clash")
    assert err.value.files == ["shared.txt"] and "aborted" in err.value.problem
    assert git(repo, "rev-parse", "HEAD") == head and status(repo) == ""
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert (repo / "shared.txt").read_text() == "a\nfrom the user\nc\n"


def test_merge_refuses_when_user_changes_are_in_the_way(repo: Path, base: Path) -> None:
    w = wt.create(repo, base, "busy")
    (w.path / "shared.txt").write_text("agent\n")
    (w.path / "new.txt").write_text("new\n")
    wt.commit_all(w.path, "agent")
    (repo / "shared.txt").write_text("user, not committed\n")
    with pytest.raises(wt.DirtyTree) as err:
        wt.merge(repo, base, "busy")
    assert err.value.files == ["shared.txt"] and "stash" in err.value.fix
    assert (repo / "shared.txt").read_text() == "user, not committed\n"
    # An unrelated uncommitted change does not block it.
    git(repo, "checkout", "--", "shared.txt")
    (repo / "README.md").write_text("user's own work\n")
    wt.merge(repo, base, "busy")
    assert (repo / "new.txt").exists() and (repo / "README.md").read_text() == "user's own work\n"


def test_discard_leaves_no_worktree_or_branch(repo: Path, base: Path) -> None:
    w = wt.create(repo, base, "gone")
    (w.path / "wip.txt").write_text("uncommitted\n")
    wt.discard(repo, base, "gone")
    assert not w.path.exists()
    assert "smartspec/gone" not in git(repo, "branch", "--list")
    assert str(w.path) not in git(repo, "worktree", "list")
    assert wt.list_worktrees(repo, base) == []
    with pytest.raises(wt.WorktreeNotFound):
        wt.discard(repo, base, "gone")

    # A worktree folder deleted by hand: it shows as missing and can still be discarded.
    lost = wt.create(repo, base, "lost")
    subprocess.run(["rm", "-rf", str(lost.path)], check=True, timeout=30)
    assert [w.status for w in wt.list_worktrees(repo, base)] == ["missing"]
    wt.discard(repo, base, "lost")
    assert wt.list_worktrees(repo, base) == [] and "smartspec/lost" not in git(repo, "branch")


def test_only_our_worktrees_are_listed(repo: Path, base: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", "-b", "smartspec/byhand", str(tmp_path / "byhand"))
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tmp_path / "feature"))
    mine = wt.create(repo, base, "mine")
    assert [w.name for w in wt.list_worktrees(repo, base)] == ["mine"]
    with pytest.raises(wt.WorktreeNotFound):
        wt.merge(repo, base, "byhand")
    assert mine.status == "clean"


def test_names_bases_and_plain_folders(repo: Path, base: Path, tmp_path: Path) -> None:
    for bad in ("", "../x", "Upper", "a b", "x.lock", "-x", "a..b", "x/y", "a" * 49):
        with pytest.raises(wt.InvalidWorktreeName):
            wt.create(repo, base, bad)
    wt.create(repo, base, "dup")
    with pytest.raises(wt.WorktreeExists):
        wt.create(repo, base, "dup")
    with pytest.raises(wt.GitError, match="not a commit"):
        wt.create(repo, base, "nobase", base="no-such-branch")
    first = git(repo, "rev-list", "--max-parents=0", "HEAD").strip()
    (repo / "later.txt").write_text("x\n")
    commit(repo, "later")
    old = wt.create(repo, base, "old", base=first)
    assert not (old.path / "later.txt").exists()
    with pytest.raises(wt.WorktreeError, match="inside the repository"):
        wt.create(repo, repo / ".smartspec", "inside")

    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(wt.NotAGitRepository) as err:
        wt.create(plain, base, "x")
    assert "git init" in err.value.fix and err.value.offer == "git init"
    wt.git_init(plain)
    with pytest.raises(wt.GitError, match="no commit yet"):
        wt.create(plain, base, "x")
