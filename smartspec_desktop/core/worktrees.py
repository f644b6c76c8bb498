"""Parallel tasks, each in its own git worktree (issue 14). Pure git (``git`` subprocess calls
with bounded timeouts), no OpenCode, no Qt; blocking, so the window calls it from a worker.

API (for the CLI's ``worktrees``/``merge``/``discard``/``run --worktree`` and the workspace list)::

    repo_root(path) -> Path                              # NotAGitRepository outside git
    worktrees_dir(base_dir, repo) -> Path                # <base_dir>/<repo hash>
    create(repo, base_dir, name=None, base="HEAD") -> Worktree
    list_worktrees(repo, base_dir) -> list[Worktree]     # only ours
    get(repo, base_dir, name) -> Worktree                # WorktreeNotFound
    commit_all(worktree_path, message) -> str | None     # commit id, None when clean
    merge(repo, base_dir, name) -> MergeResult           # MergeConflict, DirtyTree
    discard(repo, base_dir, name) -> None                # removes worktree + branch
    git_init(path) -> Path                               # the offer for a plain folder

A repository is a local path or a remote workspace's ``ssh://`` address (issue 15): then git and
the few file operations run on its host (a :class:`GitHost`,
:class:`smartspec_desktop.core.remote.git.RemoteGit`), the worktrees live there in the app's
folder of the host (``~/.local/share/smartspec-desktop/worktrees``) and
:attr:`Worktree.workspace` is each one's ``ssh://`` address, the workspace its server runs for.

``base_dir`` is a folder the app manages, e.g. ``<data dir>/worktrees``; each repository gets
``<base_dir>/<12 hex of sha256(repo path)>/<name>``, on branch ``smartspec/<name>``. It must lie
outside the repository. "Ours" = a worktree on a ``smartspec/`` branch whose folder is there, so a
worktree the user made by hand is never listed, merged or removed.

The commits made here (``commit_all``, a merge commit) use the user's git identity when git has
one, else ``SmartSpec Desktop <smartspec-desktop@localhost>``; they skip commit hooks and signing
(``--no-verify``, ``commit.gpgsign=false``) so that an automated commit cannot hang on a prompt or
fail on a linter: the branch always holds what the agent did. Every git failure is a
:class:`WorktreeError` with problem + fix; git's stderr goes into ``details``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from smartspec_desktop.core.errors import SmartSpecError

log = logging.getLogger(__name__)

BRANCH_PREFIX = "smartspec/"
#: The folder under the app's data dir that holds every worktree it makes (``base_dir``).
DATA_SUBDIR = "worktrees"
GIT_TIMEOUT = 60.0
FALLBACK_NAME = "SmartSpec Desktop"
FALLBACK_EMAIL = "smartspec-desktop@localhost"
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,46}[a-z0-9])?$")
_ADJECTIVES = ("amber", "brisk", "calm", "clever", "eager", "gentle", "keen", "lucky", "quiet")
_NOUNS = ("otter", "falcon", "maple", "harbor", "comet", "willow", "badger", "river", "lantern")

Status = Literal["clean", "uncommitted", "ahead", "missing"]


# -- errors --------------------------------------------------------------------------------------


class WorktreeError(SmartSpecError):
    code = "worktree"


class GitMissing(WorktreeError):
    code = "git_missing"


class GitError(WorktreeError):
    code = "git"


class NotAGitRepository(WorktreeError):
    """The workspace is a plain folder: worktrees are disabled; offer :func:`git_init`."""

    code = "not_git"
    offer = "git init"


class InvalidWorktreeName(WorktreeError):
    code = "worktree_name"


class WorktreeExists(WorktreeError):
    code = "worktree_exists"


class WorktreeNotFound(WorktreeError):
    code = "worktree_not_found"


class DirtyTree(WorktreeError):
    """Uncommitted changes (of the user, or in the worktree) are in the way."""

    code = "dirty_tree"

    def __init__(self, problem: str, fix: str, *, files: list[str]) -> None:
        super().__init__(problem, fix, details="\n".join(files))
        self.files = files


class MergeConflict(WorktreeError):
    """The merge conflicted; it was aborted and the repository is as before."""

    code = "merge_conflict"

    def __init__(self, problem: str, fix: str, *, files: list[str], details: str = "") -> None:
        super().__init__(problem, fix, details=details or "\n".join(files))
        self.files = files


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worktree:
    name: str
    path: Path
    branch: str  # "smartspec/<name>"
    status: Status  # uncommitted work, commits not yet in the current branch, or nothing new
    additions: int = 0  # lines against the base (merge base with the repository's HEAD)
    deletions: int = 0
    files: int = 0
    head: str = ""
    #: the worktree as a workspace: its folder, or a remote one's ``ssh://`` address (issue 15)
    workspace: str = ""

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "branch": self.branch,
            "status": self.status,
            "additions": self.additions,
            "deletions": self.deletions,
            "files": self.files,
            "head": self.head,
            "workspace": self.workspace or str(self.path),
        }


@dataclass(frozen=True)
class MergeResult:
    name: str
    branch: str
    into: str  # the repository's current branch
    fast_forward: bool
    commit: str  # HEAD after the merge
    files: list[str] = field(default_factory=list)  # files the merge brought in

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "branch": self.branch,
            "into": self.into,
            "fast_forward": self.fast_forward,
            "commit": self.commit,
            "files": self.files,
        }


# -- running git ---------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_EDITOR": "true"})
    return env


class GitHost(Protocol):
    """Where a repository's git and files are: this machine (:data:`LOCAL`) or a remote
    workspace's host over ssh (:class:`smartspec_desktop.core.remote.git.RemoteGit`). Paths are
    that machine's absolute paths."""

    def run(
        self, args: list[str], cwd: Path, *, timeout: float = GIT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]: ...

    def is_dir(self, path: Path) -> bool: ...

    def resolve(self, path: Path) -> Path: ...

    def names(self, folder: Path) -> set[str]: ...

    def text_lines(self, cwd: Path, rels: list[str]) -> int: ...

    def exists(self, path: Path) -> bool: ...

    def remove_tree(self, path: Path) -> None: ...

    def base_folder(self, base_dir: Path) -> Path: ...

    def workspace(self, path: Path) -> str: ...


class _Local:
    """This machine."""

    def run(
        self, args: list[str], cwd: Path, *, timeout: float = GIT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return _run_local(args, cwd, timeout=timeout)

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def resolve(self, path: Path) -> Path:
        return path.resolve()

    def names(self, folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()

    def text_lines(self, cwd: Path, rels: list[str]) -> int:
        lines = 0
        for rel in rels:
            try:
                data = (cwd / rel).read_bytes()
            except OSError:
                continue
            if b"\0" not in data:
                lines += len(data.splitlines())
        return lines

    def exists(self, path: Path) -> bool:
        return path.exists()

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def base_folder(self, base_dir: Path) -> Path:
        return Path(base_dir).resolve()

    def workspace(self, path: Path) -> str:
        return str(path)


LOCAL: GitHost = _Local()


def _target(repo: Path | str, host: GitHost | None) -> tuple[GitHost, Path]:
    """The host and the path of ``repo``: a local path, or a remote workspace's ``ssh://``
    address (also as ``Path()`` made it, ``ssh:/host/dir``), whose git runs on its host."""
    text = str(repo)
    if text.startswith("ssh:/") and not text.startswith("ssh://"):
        text = "ssh://" + text[len("ssh:/") :]
    if text.lower().startswith("ssh://"):
        from smartspec_desktop.core.remote.address import parse_remote
        from smartspec_desktop.core.remote.git import RemoteGit

        addr = parse_remote(text)
        return (host or RemoteGit(addr)), Path(addr.path)
    return (host or LOCAL), Path(repo)


def _run(
    h: GitHost, args: list[str], cwd: Path, *, timeout: float = GIT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return h.run(args, cwd, timeout=timeout)


def _run_local(
    args: list[str], cwd: Path, *, timeout: float = GIT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise GitMissing(
            "git is not installed (or not on PATH).",
            "Install git (https://git-scm.com) and try again.",
        ) from None
    except subprocess.TimeoutExpired:
        raise GitError(
            f"git {args[0]} did not finish within {timeout:.0f} s in {cwd}.",
            "Check the repository (a lock file, a huge tree, a network filesystem) and retry.",
        ) from None
    except NotADirectoryError:
        raise WorktreeError(f"{cwd} is not a folder.", "Pick an existing folder.") from None


def _git(h: GitHost, args: list[str], cwd: Path, problem: str, fix: str, **kw: Any) -> str:
    r = _run(h, args, cwd, **kw)
    if r.returncode != 0:
        raise GitError(problem, fix, details=f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _ok(h: GitHost, args: list[str], cwd: Path) -> bool:
    return _run(h, args, cwd).returncode == 0


def _identity(h: GitHost, cwd: Path) -> list[str]:
    """``-c`` options: a fallback identity when git has none, and no signing prompt."""
    opts = ["-c", "commit.gpgsign=false"]
    if not _ok(h, ["var", "GIT_COMMITTER_IDENT"], cwd) or not _ok(
        h, ["var", "GIT_AUTHOR_IDENT"], cwd
    ):
        opts += ["-c", f"user.name={FALLBACK_NAME}", "-c", f"user.email={FALLBACK_EMAIL}"]
    return opts


# -- repositories --------------------------------------------------------------------------------


def repo_root(path: Path | str, *, host: GitHost | None = None) -> Path:
    """The top folder of the git repository holding ``path`` (on its host)."""
    h, path = _target(path, host)
    if not h.is_dir(path):
        raise WorktreeError(f"{path} is not a folder.", "Pick an existing workspace folder.")
    r = _run(h, ["rev-parse", "--show-toplevel"], path)
    if r.returncode != 0:
        raise NotAGitRepository(
            f"{path} is not a git repository, so tasks cannot run in their own worktree.",
            "Run `git init` there (and make a first commit) to enable worktrees.",
            details=r.stderr.strip(),
        )
    return h.resolve(Path(r.stdout.strip()))


def git_init(path: Path | str, *, host: GitHost | None = None) -> Path:
    """The offer for a plain folder: ``git init`` (a first commit is still the user's call)."""
    h, folder = _target(path, host)
    _git(h, ["init", "-q"], folder, f"git init failed in {folder}.", "See the details.")
    return repo_root(folder, host=h)


def worktrees_dir(base_dir: Path, repo: Path | str, *, host: GitHost | None = None) -> Path:
    """Where this repository's worktrees live: ``<base_dir>/<12 hex of sha256(repo path)>``.
    A remote repository's are on its host, in the app's folder there
    (``~/.local/share/smartspec-desktop/worktrees``): ``base_dir`` is this machine's."""
    h, _ = _target(repo, host)
    root = repo_root(repo, host=h)
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    folder = h.base_folder(Path(base_dir)) / digest
    if folder == root or root in folder.parents:
        raise WorktreeError(
            f"The worktree folder {folder} would be inside the repository {root}.",
            "Use a data folder outside the workspace (e.g. --data-dir elsewhere).",
        )
    return folder


def app_base_dir(data_dir: Path) -> Path:
    """The app's ``base_dir``: ``<data dir>/worktrees``."""
    return Path(data_dir) / DATA_SUBDIR


def path_for(repo: Path | str, base_dir: Path, name: str) -> Path:
    """Where the worktree ``name`` of ``repo`` lives (whether or not it exists), on its host."""
    return worktrees_dir(base_dir, repo) / validate_name(name)


def workspace_for(repo: Path | str, base_dir: Path, name: str) -> str:
    """The worktree ``name`` of ``repo`` as a workspace: its folder, or for a remote
    repository its ``ssh://`` address on the same host."""
    h, _ = _target(repo, None)
    return h.workspace(worktrees_dir(base_dir, repo, host=h) / validate_name(name))


def validate_name(name: str) -> str:
    """A safe branch component: lower-case letters, digits, ``.``, ``_``, ``-`` (≤ 48)."""
    if not _NAME.match(name) or ".." in name or name.endswith(".lock"):
        raise InvalidWorktreeName(
            f"{name!r} cannot be a worktree name.",
            "Use 1–48 lower-case letters, digits, '.', '_' or '-', starting and ending with a "
            "letter or digit (e.g. fix-login).",
        )
    return name


def _generate_name(taken: set[str]) -> str:
    for _ in range(50):
        name = (
            f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(90) + 10}"
        )
        if name not in taken:
            return name
    return f"task-{secrets.token_hex(4)}"


def _branches(h: GitHost, root: Path) -> set[str]:
    out = _git(
        h,
        ["for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}"],
        root,
        "Could not list the branches.",
        "See the details.",
    )
    return {b[len(BRANCH_PREFIX) :] for b in out.split() if b.startswith(BRANCH_PREFIX)}


def branch_exists(repo: Path | str, name: str) -> bool:
    """Is there a ``smartspec/NAME`` branch (with or without its worktree)?"""
    h, _ = _target(repo, None)
    return validate_name(name) in _branches(h, repo_root(repo, host=h))


def _registered(h: GitHost, root: Path) -> list[tuple[Path, str]]:
    """(path, branch) for every worktree git knows about, branch "" if detached."""
    out = _git(
        h,
        ["worktree", "list", "--porcelain"],
        root,
        "Could not list worktrees.",
        "See the details.",
    )
    result: list[tuple[Path, str]] = []
    path: Path | None = None
    branch = ""
    for line in [*out.splitlines(), ""]:
        if line.startswith("worktree "):
            path, branch = Path(line[len("worktree ") :]), ""
        elif line.startswith("branch refs/heads/"):
            branch = line[len("branch refs/heads/") :]
        elif not line and path is not None:
            result.append((path, branch))
            path = None
    return result


def create(
    repo: Path | str, base_dir: Path, name: str | None = None, base: str = "HEAD"
) -> Worktree:
    """A new worktree on branch ``smartspec/NAME`` from ``base`` (default: the current HEAD)."""
    h, _ = _target(repo, None)
    root = repo_root(repo, host=h)
    folder = worktrees_dir(base_dir, root, host=h)
    taken = _branches(h, root) | h.names(folder)
    name = validate_name(name) if name is not None else _generate_name(taken)
    branch = BRANCH_PREFIX + name
    if name in taken:
        raise WorktreeExists(
            f"A worktree or branch named {branch} already exists.",
            "Pick another name, or discard the old one first.",
        )
    r = _run(h, ["rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], root)
    if r.returncode != 0:
        if base == "HEAD":
            raise GitError(
                f"The repository {root} has no commit yet, so there is nothing to branch from.",
                "Make a first commit, then run the task in a worktree.",
            )
        raise GitError(
            f"{base!r} is not a commit or branch of {root}.",
            "Pick an existing branch, tag or commit as the base.",
        )
    base_commit = r.stdout.strip()
    if h is LOCAL:
        folder.mkdir(parents=True, exist_ok=True)  # (on a host, `git worktree add` makes it)
    path = folder / name
    _git(
        h,
        ["worktree", "add", "-q", "-b", branch, str(path), base_commit],
        root,
        f"Could not create the worktree {path}.",
        "See the details; free disk space or pick another name.",
    )
    log.info("created worktree %s on %s from %s", path, branch, base_commit[:12])
    return _describe(h, root, path, name)


def _head_branch(h: GitHost, root: Path) -> str:
    r = _run(h, ["symbolic-ref", "--quiet", "--short", "HEAD"], root)
    if r.returncode != 0:
        raise GitError(
            f"The repository {root} is not on a branch (detached HEAD).",
            "Check out the branch to merge into (e.g. `git switch main`).",
        )
    return r.stdout.strip()


def current_branch(repo: Path | str) -> str:
    """The branch the repository has checked out (what :func:`merge` merges into)."""
    h, _ = _target(repo, None)
    return _head_branch(h, repo_root(repo, host=h))


def _porcelain(h: GitHost, cwd: Path) -> list[str]:
    """Paths with uncommitted changes (untracked included), as `git status` names them."""
    out = _git(
        h,
        ["status", "--porcelain", "-z", "--untracked-files=all"],
        cwd,
        f"Could not read the status of {cwd}.",
        "See the details.",
    )
    paths: list[str] = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename carries the old path next
            paths.append(entries[i])
            i += 1
    return paths


def _numstat(h: GitHost, cwd: Path, base: str) -> tuple[int, int, int]:
    out = _run(h, ["diff", "--numstat", base], cwd).stdout
    adds = dels = files = 0
    for line in out.splitlines():
        a, d, *_ = line.split("\t") + ["", ""]
        files += 1
        adds += int(a) if a.isdigit() else 0
        dels += int(d) if d.isdigit() else 0
    untracked = _run(h, ["ls-files", "--others", "--exclude-standard", "-z"], cwd).stdout
    rels = list(filter(None, untracked.split("\0")))
    files += len(rels)
    adds += h.text_lines(cwd, rels) if rels else 0
    return adds, dels, files


def _describe(h: GitHost, root: Path, path: Path, name: str) -> Worktree:
    branch = BRANCH_PREFIX + name
    if not h.is_dir(path):
        return Worktree(name, path, branch, "missing", workspace=h.workspace(path))
    head = _run(h, ["rev-parse", "HEAD"], path).stdout.strip()
    mb = _run(h, ["merge-base", "HEAD", branch], root)
    base = mb.stdout.strip() if mb.returncode == 0 else head
    adds, dels, files = _numstat(h, path, base)
    if _porcelain(h, path):
        status: Status = "uncommitted"
    elif head and head != base:
        status = "ahead"
    else:
        status = "clean"
    return Worktree(name, path, branch, status, adds, dels, files, head, h.workspace(path))


def list_worktrees(repo: Path | str, base_dir: Path) -> list[Worktree]:
    """This repository's worktrees made by the app (``smartspec/`` branch in our folder)."""
    h, _ = _target(repo, None)
    root = repo_root(repo, host=h)
    folder = worktrees_dir(base_dir, root, host=h)
    out: list[Worktree] = []
    for path, branch in _registered(h, root):
        if not branch.startswith(BRANCH_PREFIX):
            continue
        name = branch[len(BRANCH_PREFIX) :]
        path = h.resolve(path)
        if path.parent != folder or path.name != name:
            continue
        out.append(_describe(h, root, path, name))
    return sorted(out, key=lambda w: w.name)


def get(repo: Path | str, base_dir: Path, name: str) -> Worktree:
    validate_name(name)
    for wt in list_worktrees(repo, base_dir):
        if wt.name == name:
            return wt
    raise WorktreeNotFound(
        f"No worktree named {name!r} for {repo_root(repo)}.",
        "List them with `smartspec-desktop worktrees PATH`.",
    )


def commit_all(worktree: Path | str, message: str) -> str | None:
    """Commit everything in the worktree (the task's title as ``message``); None when clean.
    ``worktree``: its folder, or a remote one's ``ssh://`` address (:attr:`Worktree.workspace`)."""
    h, path = _target(worktree, None)
    if not _porcelain(h, path):
        return None
    _git(h, ["add", "-A"], path, f"Could not stage the changes in {path}.", "See the details.")
    subject = " ".join(message.split()) or "SmartSpec task"
    _git(
        h,
        [*_identity(h, path), "commit", "-q", "--no-verify", "-m", subject],
        path,
        f"Could not commit the agent's work in {path}.",
        "See the details; the changes are still in the worktree.",
    )
    commit = _run(h, ["rev-parse", "HEAD"], path).stdout.strip()
    log.info("committed %s in %s", commit[:12], path)
    return commit


def _merging(h: GitHost, root: Path) -> bool:
    return _ok(h, ["rev-parse", "-q", "--verify", "MERGE_HEAD"], root)


def merge(repo: Path | str, base_dir: Path, name: str) -> MergeResult:
    """Merge ``smartspec/NAME`` into the repository's current branch: a fast-forward when
    possible, else a merge commit. A conflict is aborted (:class:`MergeConflict` lists the files,
    the repository is left as it was); uncommitted changes of the user that the merge would touch
    refuse it (:class:`DirtyTree`)."""
    h, _ = _target(repo, None)
    root = repo_root(repo, host=h)
    wt = get(repo, base_dir, name)
    if wt.status == "uncommitted":
        raise DirtyTree(
            f"The worktree {name} has uncommitted changes.",
            "Let the task finish (its work is committed then), or discard the worktree.",
            files=_porcelain(h, wt.path),
        )
    into = _head_branch(h, root)
    if _merging(h, root):
        raise GitError(
            f"A merge is already in progress in {root}.",
            "Finish it or run `git merge --abort` there, then merge again.",
        )
    incoming = _git(
        h,
        ["diff", "--name-only", "-z", f"HEAD...{wt.branch}"],
        root,
        f"Could not compare {wt.branch} with {into}.",
        "See the details.",
    )
    files = sorted(filter(None, incoming.split("\0")))
    if not files and _ok(h, ["merge-base", "--is-ancestor", wt.branch, "HEAD"], root):
        head = _run(h, ["rev-parse", "HEAD"], root).stdout.strip()
        return MergeResult(name, wt.branch, into, True, head, [])
    touched = sorted(set(files) & set(_porcelain(h, root)))
    if touched:
        raise DirtyTree(
            f"Your uncommitted changes in {root} touch files this merge brings in: "
            + ", ".join(touched[:5])
            + ("…" if len(touched) > 5 else "")
            + ".",
            "Commit or stash them (git stash), then merge again.",
            files=touched,
        )
    fast_forward = _ok(h, ["merge-base", "--is-ancestor", "HEAD", wt.branch], root)
    if fast_forward:
        args = ["merge", "--ff-only", "-q", wt.branch]
    else:
        message = f"Merge {wt.branch} (SmartSpec task) into {into}"
        args = [
            *_identity(h, root),
            "merge",
            "--no-ff",
            "--no-edit",
            "-q",
            "-m",
            message,
            wt.branch,
        ]
    r = _run(h, args, root)
    if r.returncode != 0:
        conflicts = sorted(
            filter(
                None,
                _run(h, ["diff", "--name-only", "-z", "--diff-filter=U"], root).stdout.split("\0"),
            )
        )
        if _merging(h, root) or conflicts:
            _run(h, ["merge", "--abort"], root)
        details = f"git {' '.join(args)}: {(r.stdout + r.stderr).strip()}"
        if conflicts:
            raise MergeConflict(
                f"Merging {wt.branch} into {into} conflicts in: {', '.join(conflicts)}. "
                "The merge was aborted; your repository is unchanged.",
                "Let the agent resolve it in the worktree (rebase or merge there), or edit the "
                "files yourself.",
                files=conflicts,
                details=details,
            )
        raise GitError(
            f"Could not merge {wt.branch} into {into}.",
            "See the details; the repository was left as it was.",
            details=details,
        )
    head = _run(h, ["rev-parse", "HEAD"], root).stdout.strip()
    log.info("merged %s into %s (%s)", wt.branch, into, "ff" if fast_forward else "merge commit")
    return MergeResult(name, wt.branch, into, fast_forward, head, files)


def discard(repo: Path | str, base_dir: Path, name: str) -> None:
    """Remove the worktree (its uncommitted changes too) and delete its branch. Stopping a server
    running in it is the caller's job, before this."""
    h, _ = _target(repo, None)
    root = repo_root(repo, host=h)
    validate_name(name)
    folder = worktrees_dir(base_dir, root, host=h)
    path = folder / name
    branch = BRANCH_PREFIX + name
    known = {h.resolve(p): b for p, b in _registered(h, root)}
    if path in known and not h.exists(path):
        _run(h, ["worktree", "prune"], root)  # removed by hand: git only needs to forget it
    elif path in known:
        if known[path] != branch:
            raise WorktreeError(
                f"{path} is not on {branch}; it was not made by the app.",
                "Remove it yourself with `git worktree remove`.",
            )
        _git(
            h,
            ["worktree", "remove", "--force", str(path)],
            root,
            f"Could not remove the worktree {path}.",
            "Stop any program using that folder (its server, an editor), then retry.",
        )
    elif name not in _branches(h, root):
        raise WorktreeNotFound(
            f"No worktree named {name!r} for {root}.",
            "List them with `smartspec-desktop worktrees PATH`.",
        )
    _run(h, ["worktree", "prune"], root)
    if h.exists(path) and folder in h.resolve(path).parents:
        h.remove_tree(path)
    if name in _branches(h, root):
        _git(
            h,
            ["branch", "-D", branch],
            root,
            f"Could not delete the branch {branch}.",
            "See the details.",
        )
    log.info("discarded worktree %s and branch %s", path, branch)
