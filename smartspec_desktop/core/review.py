"""Review and undo what the agent changed in a session (issue 14). No Qt; blocking HTTP and file
I/O, so the window calls it from a worker thread.

API (for the CLI's ``changes``/``undo``/``redo`` and the Agent tab)::

    turns(client, session_id) -> list[Turn]
    changes(client, session_id, turn="all" | "last") -> list[FileChange]
    diff_page(change, start=0, count=DEFAULT_PAGE) -> DiffPage     # paged unified diff
    undo_last_turn(client, session_id, *, force=False) -> UndoResult
    redo(client, session_id, *, force=False, everything=False) -> UndoResult
    discard_session_changes(client, session_id, *, force=False) -> UndoResult
    working_tree_changes(client, mode="git" | "branch") -> list[FileChange]   # the git view

``FileChange.public()`` is the CLI's JSON ``{path, status, additions, deletions, binary}``. Errors
are :class:`ReviewError` subclasses with ``problem`` + ``fix``: :class:`NothingToUndo`,
:class:`NothingToRedo`, :class:`UserEditsFound` (``.files``: retry with ``force=True`` to
overwrite them), :class:`UndoUnavailable` (``.files``: what cannot be restored and why),
:class:`SessionBusy`.

What OpenCode 1.18.33's server really does (verified against a running ``opencode serve`` and
its ``GET /doc``):

- ``GET /session/{id}/diff?messageID=msg_…`` (the id of a *user* message) lists that turn's files
  as ``[{file, patch, additions, deletions, status: added|modified|deleted}]``. The patch is a
  unified diff with the *whole file* as context (one hunk), so both versions can be rebuilt from it;
  binary files come with ``patch: ""`` and 0/0. Without ``messageID`` it answered ``[]`` even
  after a finished session, so the whole session is composed here from its turns. The same list
  is on the user message as ``info.summary.diffs``.
- ``GET /vcs/diff`` needs ``mode=git|branch`` (400 without it): the working tree against HEAD,
  untracked files included, real ``git diff`` patches ("Binary files … differ").
- ``POST /session/{id}/revert`` ``{"messageID": user message, "partID"?}`` restores the files
  changed from that turn on (git projects) and sets ``session.revert = {messageID, snapshot,
  diff}``; the messages stay listed by ``GET /session/{id}/message`` until the next prompt, which
  drops them for good (and clears ``revert``). A second revert to an earlier message moves the
  point back. ``POST /session/{id}/unrevert`` restores files and conversation. Revert does not
  check for the user's own edits: it overwrites them (hence the check here).
- **A plain folder (no git): OpenCode keeps no snapshots** (``projectID`` is ``"global"``, the
  diffs are ``[]``, no ``snapshot`` on step parts) and revert only hides the conversation: the
  files stay as they are. Here the files are then restored from the tool calls recorded in the
  messages: a ``write`` that created a file (``metadata.exists == false``) is undone by removing
  it, an ``edit`` by applying its ``metadata.filediff.patch`` backwards. A ``write`` over an
  existing file, a shell command or another editing tool cannot be undone there (the earlier
  content was never recorded): :class:`UndoUnavailable` says so and proposes ``git init``.
  In a remote workspace (the client's ``remote_workspace``, an ``ssh://`` address) the files
  are read and written on the host over ssh (:mod:`smartspec_desktop.core.remote.files`: only
  names inside the folder, never through a symbolic link); a name it refuses is left as it is,
  like an unrecorded change.
- ``/experimental/worktree`` (GET list of directories, POST ``{name, startCommand?}`` →
  ``{name, branch, directory}``, DELETE ``{directory}``) answers ``WorktreeNotGitError`` outside
  git; it places worktrees itself, so :mod:`smartspec_desktop.core.worktrees` uses git directly.
- ``GET /session/status`` maps a working session to ``{type: "busy"|"retry", …}`` (an idle one is
  absent); undo is refused then (:class:`SessionBusy`, tested). The document also lists a 409
  ``SessionBusyError`` for revert/unrevert.
"""

from __future__ import annotations

import difflib
import enum
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.opencode.client import OpenCodeClient, server_directory

log = logging.getLogger(__name__)

DEFAULT_PAGE = 400
SUMMARY_WAIT = 10.0  # s
Status = Literal["added", "modified", "deleted"]

#: Tools that never change files (anything else in a plain folder is assumed to maybe have).
READ_ONLY_TOOLS = frozenset(
    {
        "read",
        "glob",
        "grep",
        "list",
        "ls",
        "todowrite",
        "todoread",
        "webfetch",
        "websearch",
        "codesearch",
        "skill",
        "question",
        "lsp",
        "invalid",
    }
)

GIT_FIX = (
    "Put the folder under git (`git init` and a first commit) before the next task: OpenCode "
    "then keeps snapshots and every turn can be undone."
)


# -- errors --------------------------------------------------------------------------------------


class ReviewError(SmartSpecError):
    code = "review"


class NothingToUndo(ReviewError):
    code = "nothing_to_undo"


class NothingToRedo(ReviewError):
    code = "nothing_to_redo"


class SessionBusy(ReviewError):
    code = "session_busy"


class UserEditsFound(ReviewError):
    """Files were changed after the agent's last version: undo/redo would overwrite them."""

    code = "user_edits"

    def __init__(self, problem: str, fix: str, *, files: list[str]) -> None:
        super().__init__(problem, fix, details="\n".join(files))
        self.files = files


class UndoUnavailable(ReviewError):
    """OpenCode recorded too little to restore these files (plain folder)."""

    code = "undo_unavailable"

    def __init__(self, problem: str, fix: str, *, files: list[str]) -> None:
        super().__init__(problem, fix, details="\n".join(files))
        self.files = files


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One file the agent changed; ``patch`` is a unified diff ("" for a binary file)."""

    path: str
    status: Status
    additions: int
    deletions: int
    binary: bool = False
    patch: str = field(default="", repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "additions": self.additions,
            "deletions": self.deletions,
            "binary": self.binary,
        }


@dataclass(frozen=True)
class DiffPage:
    """``lines`` of a diff from line ``start`` (0-based) of ``total``; ``binary``: nothing shown."""

    lines: list[str]
    start: int
    total: int
    binary: bool = False

    @property
    def more(self) -> bool:
        return self.start + len(self.lines) < self.total


@dataclass(frozen=True)
class Turn:
    """A user message and the agent's answers to it."""

    message_id: str
    index: int  # 1-based in the session
    prompt: str
    reverted: bool  # hidden by an undo (until redo, or dropped by the next prompt)


@dataclass(frozen=True)
class UndoResult:
    action: Literal["undo", "redo", "discard"]
    message_id: str  # the turn undone or redone
    files: list[str]  # paths restored
    turns_undone: int  # turns now hidden by undo (0 after a full redo)
    snapshots: bool  # True: OpenCode's own snapshots (git); False: restored from tool calls
    #: git, force=True: user edits replaced; OpenCode's revert snapshot keeps them, so redo
    #: brings the user's version back (verified)
    overwritten: list[str] = field(default_factory=list)
    #: plain folder, force=True: left as they are (user-edited, or changed by an unrecorded tool)
    not_restored: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "message_id": self.message_id,
            "files": self.files,
            "turns_undone": self.turns_undone,
            "snapshots": self.snapshots,
            "overwritten": self.overwritten,
            "not_restored": self.not_restored,
        }


# -- unified diffs -------------------------------------------------------------------------------

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class _Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[str, ...]  # with their " ", "-", "+" prefix; "\\ No newline" folded in

    def side(self, new: bool) -> list[str]:
        """The hunk's old or new lines, each with its line end."""
        keep = "+" if new else "-"
        out: list[str] = []
        for line in self.lines:
            tag, text = line[:1], line[1:]
            if tag == "\\":
                if out and out[-1].endswith("\n") and self._last_tag_kept(line, keep):
                    out[-1] = out[-1][:-1]
                continue
            if tag in (" ", keep):
                out.append(text + "\n")
        return out

    def _last_tag_kept(self, marker: str, keep: str) -> bool:
        idx = self.lines.index(marker)
        prev = self.lines[idx - 1][:1] if idx else ""
        return prev in (" ", keep)


def parse_hunks(patch: str) -> list[_Hunk]:
    """The hunks of a one-file unified diff; each ends when its line counts are used up, so the
    headers of a following file (``--- a/x``) are never taken for removed lines."""
    hunks: list[_Hunk] = []
    current: list[str] = []
    header: tuple[int, int, int, int] | None = None
    old_left = new_left = 0
    for line in patch.splitlines():
        m = _HUNK.match(line)
        if m:
            if header is not None:
                hunks.append(_Hunk(*header, tuple(current)))
            header = (
                int(m.group(1)),
                int(m.group(2) if m.group(2) is not None else 1),
                int(m.group(3)),
                int(m.group(4) if m.group(4) is not None else 1),
            )
            current = []
            old_left, new_left = header[1], header[3]
            continue
        if header is None:
            continue
        tag = line[:1] if line else " "  # an empty line: context whose single space was lost
        if tag == "\\" and current:
            current.append(line)
        elif tag == " " and old_left and new_left:
            current.append(line or " ")
            old_left, new_left = old_left - 1, new_left - 1
        elif tag == "-" and old_left:
            current.append(line)
            old_left -= 1
        elif tag == "+" and new_left:
            current.append(line)
            new_left -= 1
    if header is not None:
        hunks.append(_Hunk(*header, tuple(current)))
    return hunks


def _full_versions(patch: str) -> tuple[str | None, str | None] | None:
    """Both versions from a whole-file patch (OpenCode's session diffs), or None if partial.

    A single hunk from line 1 is taken as the whole file; were it not, the rebuilt version is
    shorter than the file, so the user-edit check refuses (the safe side), never loses edits."""
    hunks = parse_hunks(patch)
    if len(hunks) != 1:
        return None
    h = hunks[0]
    if h.old_start > 1 or h.new_start > 1:
        return None
    before = "".join(h.side(new=False))
    after = "".join(h.side(new=True))
    return (before if h.old_len else None), (after if h.new_len else None)


class _PatchMismatch(Exception):
    pass


def apply_patch(text: str, patch: str, *, reverse: bool = False) -> str:
    """Apply a unified diff to ``text`` exactly (no fuzz); raises ``_PatchMismatch``."""
    lines = text.splitlines(keepends=True)
    offset = 0
    for h in parse_hunks(patch):
        old = h.side(new=reverse)
        new = h.side(new=not reverse)
        start = (h.new_start if reverse else h.old_start) - 1 + offset
        if not old:
            start += 1  # a pure insertion after line N
        start = max(start, 0)
        if lines[start : start + len(old)] != old:
            raise _PatchMismatch
        lines[start : start + len(old)] = new
        offset += len(new) - len(old)
    return "".join(lines)


def unified_diff(path: str, before: str | None, after: str | None, *, context: int = 3) -> str:
    a = (before or "").splitlines(keepends=True)
    b = (after or "").splitlines(keepends=True)
    out = []
    for line in difflib.unified_diff(
        a,
        b,
        "/dev/null" if before is None else f"a/{path}",
        "/dev/null" if after is None else f"b/{path}",
        n=context,
    ):
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out)


def _count(patch: str) -> tuple[int, int]:
    adds = dels = 0
    for h in parse_hunks(patch):
        for line in h.lines:
            adds += line.startswith("+")
            dels += line.startswith("-")
    return adds, dels


def diff_page(change: FileChange, start: int = 0, count: int = DEFAULT_PAGE) -> DiffPage:
    """A page of ``change``'s diff: at most ``count`` lines from ``start``, and the total.

    A binary file gives no lines (``binary=True``): the UI names it instead of dumping bytes."""
    if change.binary:
        return DiffPage([], 0, 0, binary=True)
    lines = change.patch.splitlines()
    start = max(0, min(start, len(lines)))
    return DiffPage(lines[start : start + max(count, 0)], start, len(lines))


# -- reading a session ---------------------------------------------------------------------------


class _Unknown(enum.Enum):
    UNKNOWN = 0


UNKNOWN = _Unknown.UNKNOWN
#: A file's content: its text, None (absent), or UNKNOWN (binary, or not recorded)
Version = str | None | Literal[_Unknown.UNKNOWN]


@dataclass
class _Edit:
    """One turn's change to one file, with the file's version before and after it."""

    path: str  # relative to the workspace, "/" separated
    status: Status
    additions: int
    deletions: int
    patch: str
    binary: bool
    before: Version = UNKNOWN
    after: Version = UNKNOWN
    # Plain folder: how to redo/undo it from the tool call
    kind: Literal["snapshot", "created", "edited", "unknown"] = "snapshot"
    content: str = ""  # what a creating `write` wrote


@dataclass
class _Session:
    client: OpenCodeClient
    id: str
    info: dict[str, Any]
    messages: list[dict[str, Any]]
    _files: _Files | None = None

    @property
    def workspace(self) -> Path:
        return Path(str(self.info.get("directory") or "."))

    @property
    def files(self) -> _Files:
        """Where the workspace's files are read and written: here, or on a remote workspace's
        host over ssh (its folder, checked names only)."""
        if self._files is None:
            address = getattr(self.client, "remote_workspace", "")  # (a fake client has none)
            if address:
                from smartspec_desktop.core.remote.address import parse_remote
                from smartspec_desktop.core.remote.files import RemoteFiles

                self._files = RemoteFiles(parse_remote(address), self.workspace.as_posix())
            else:
                self._files = _LocalFiles(self.workspace)
        return self._files

    @property
    def snapshots(self) -> bool:
        """OpenCode keeps snapshots only for git projects; a plain folder is project "global"."""
        return str(self.info.get("projectID") or "global") != "global"

    @property
    def revert_id(self) -> str:
        rev = self.info.get("revert")
        return str(rev.get("messageID") or "") if isinstance(rev, dict) else ""

    def turns(self) -> list[Turn]:
        out: list[Turn] = []
        reverted = False
        for m in self.messages:
            info = m.get("info") if isinstance(m.get("info"), dict) else {}
            assert isinstance(info, dict)
            mid = str(info.get("id") or "")
            if mid and mid == self.revert_id:
                reverted = True
            if info.get("role") != "user":
                continue
            text = " ".join(
                str(p.get("text") or "")
                for p in m.get("parts") or []
                if isinstance(p, dict) and p.get("type") == "text" and not p.get("synthetic")
            )
            out.append(Turn(mid, len(out) + 1, text.strip(), reverted))
        return out

    def edits(self, turn: Turn, *, strict: bool = False, latest: bool = False) -> list[_Edit]:
        """``latest``: the turn that may just have ended (worth waiting for its summary)."""
        if self.snapshots:
            return self._snapshot_edits(turn, strict=strict, wait=strict or latest)
        return self._tool_edits(turn)

    def _patched_files(self, turn: Turn) -> set[str]:
        """Files the turn's ``patch`` parts name (OpenCode's record of what a step touched)."""
        out: set[str] = set()
        for m in self.messages:
            info = m.get("info") if isinstance(m.get("info"), dict) else {}
            assert isinstance(info, dict)
            if info.get("parentID") != turn.message_id:
                continue
            for part in m.get("parts") or []:
                if isinstance(part, dict) and part.get("type") == "patch":
                    out.update(self._rel(str(f)) for f in part.get("files") or [])
        return out

    def _summarised(self, turn: Turn) -> bool:
        for m in self.messages:
            info = m.get("info") if isinstance(m.get("info"), dict) else {}
            assert isinstance(info, dict)
            if info.get("id") == turn.message_id:
                summary = info.get("summary")
                return isinstance(summary, dict) and "diffs" in summary
        return False

    def _snapshot_edits(self, turn: Turn, *, strict: bool, wait: bool) -> list[_Edit]:
        """The turn's diff. OpenCode records it (the user message's ``summary``) when the turn
        ends, a moment *after* the session turns idle (seen: the last turn's new file missing
        right after idle). So, for the latest turn and unless the agent is still working, wait
        for it within SUMMARY_WAIT. ``strict`` (before undo/redo, whose user-edit check needs
        every file): still not recorded then → :class:`ReviewError`; else take what is there."""
        deadline = time.monotonic() + SUMMARY_WAIT
        wait = strict or (wait and not self.busy())
        while True:
            edits = [_snapshot_edit(d) for d in self.client.session_diff(self.id, turn.message_id)]
            missing = self._patched_files(turn) - {e.path for e in edits}
            summarised = self._summarised(turn)
            if (summarised and not missing) or not wait:
                return edits
            if time.monotonic() >= deadline:
                break
            time.sleep(0.25)
            self.messages = self.client.messages(self.id)
        if summarised or not strict:
            return edits  # summarised: a file a step touched and a later one put back
        raise ReviewError(
            "OpenCode has not finished recording the changes of this turn"
            + (f" ({', '.join(sorted(missing)[:3])})" if missing else "")
            + ".",
            "Wait until the task has ended, then try again.",
        )

    def busy(self) -> bool:
        status = self.client.session_status().get(self.id)
        return isinstance(status, dict) and status.get("type") not in (None, "idle")

    def _tool_edits(self, turn: Turn) -> list[_Edit]:
        """A plain folder: the file changes recorded in the turn's tool calls, in order."""
        out: list[_Edit] = []
        for m in self.messages:
            info = m.get("info") if isinstance(m.get("info"), dict) else {}
            assert isinstance(info, dict)
            if info.get("role") != "assistant" or info.get("parentID") != turn.message_id:
                continue
            for part in m.get("parts") or []:
                if isinstance(part, dict) and part.get("type") == "tool":
                    edit = self._tool_edit(part)
                    if edit is not None:
                        out.append(edit)
        return out

    def _tool_edit(self, part: dict[str, Any]) -> _Edit | None:
        tool = str(part.get("tool") or "")
        state = part.get("state") if isinstance(part.get("state"), dict) else {}
        assert isinstance(state, dict)
        if tool in READ_ONLY_TOOLS or state.get("status") in ("error", "pending"):
            return None
        inp = state.get("input") if isinstance(state.get("input"), dict) else {}
        meta = state.get("metadata") if isinstance(state.get("metadata"), dict) else {}
        assert isinstance(inp, dict) and isinstance(meta, dict)
        if tool == "write":
            content = str(inp.get("content") or "")
            path = self._rel(str(meta.get("filepath") or inp.get("filePath") or ""))
            adds = len(content.splitlines())
            if meta.get("exists") is False:
                patch = unified_diff(path, None, content)
                return _Edit(
                    path, "added", adds, 0, patch, False, None, content, "created", content
                )
            return _Edit(path, "modified", adds, 0, "", False, UNKNOWN, content, "unknown", content)
        if tool == "edit":
            fd = meta.get("filediff") if isinstance(meta.get("filediff"), dict) else {}
            assert isinstance(fd, dict)
            path = self._rel(str(fd.get("file") or inp.get("filePath") or ""))
            patch = str(fd.get("patch") or meta.get("diff") or "")
            adds, dels = _count(patch)
            kind: Literal["edited", "unknown"] = "edited" if patch else "unknown"
            return _Edit(path, "modified", adds, dels, patch, False, kind=kind)
        # bash, apply_patch, multiedit, MCP tools…: no record of what they changed.
        label = str(inp.get("command") or state.get("title") or tool)
        return _Edit(f"({tool}: {label[:80]})", "modified", 0, 0, "", False, kind="unknown")

    def _rel(self, path: str) -> str:
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.workspace)
            except ValueError:
                return p.as_posix()
        return p.as_posix()


def _snapshot_edit(d: dict[str, Any]) -> _Edit:
    path = str(d.get("file") or "")
    status_raw = str(d.get("status") or "modified")
    status: Status = status_raw if status_raw in ("added", "deleted") else "modified"  # type: ignore[assignment]
    patch = str(d.get("patch") or "")
    adds = int(d.get("additions") or 0)
    dels = int(d.get("deletions") or 0)
    binary = not patch.strip() or "Binary files" in patch
    edit = _Edit(path, status, adds, dels, patch, binary)
    full = None if binary else _full_versions(patch)
    if full is not None:
        edit.before, edit.after = full
        if status == "added":
            edit.before = None
        if status == "deleted":
            edit.after = None
    else:
        edit.before = None if status == "added" else UNKNOWN
        edit.after = None if status == "deleted" else UNKNOWN
    return edit


def _load(client: OpenCodeClient, session_id: str) -> _Session:
    return _Session(client, session_id, client.get_session(session_id), client.messages(session_id))


def turns(client: OpenCodeClient, session_id: str) -> list[Turn]:
    """The session's turns (user prompts), oldest first, with ``reverted`` for undone ones."""
    return _load(client, session_id).turns()


def _active(s: _Session) -> list[Turn]:
    return [t for t in s.turns() if not t.reverted]


def _compose(per_turn: Iterable[list[_Edit]]) -> dict[str, list[_Edit]]:
    by_path: dict[str, list[_Edit]] = {}
    for edits in per_turn:
        for e in edits:
            by_path.setdefault(e.path, []).append(e)
    return by_path


def _to_change(path: str, edits: list[_Edit]) -> FileChange | None:
    first, last = edits[0], edits[-1]
    binary = any(e.binary for e in edits)
    if first.status == "added" or first.kind == "created":
        status: Status = "deleted" if last.status == "deleted" else "added"
        if status == "deleted":
            return None  # created and removed again: nothing changed
    else:
        status = "deleted" if last.status == "deleted" else "modified"
    if len(edits) == 1:
        e = edits[0]
        patch = e.patch
        if not e.binary and e.before is not UNKNOWN and e.after is not UNKNOWN:
            patch = unified_diff(path, e.before, e.after)
        return FileChange(path, status, e.additions, e.deletions, binary, "" if binary else patch)
    before, after = first.before, last.after
    if not binary and before is not UNKNOWN and after is not UNKNOWN:
        if before == after:
            return None
        patch = unified_diff(path, before, after)
        adds, dels = _count(patch)
        return FileChange(path, status, adds, dels, False, patch)
    adds = sum(e.additions for e in edits)
    dels = sum(e.deletions for e in edits)
    patch = "" if binary else "".join(e.patch for e in edits)
    return FileChange(path, status, adds, dels, binary, patch)


def changes(
    client: OpenCodeClient, session_id: str, turn: Literal["all", "last"] = "all"
) -> list[FileChange]:
    """Files changed by the session's turns that are not undone (``all``) or by its last one.

    In a git project the figures are OpenCode's snapshots (shell commands included); in a plain
    folder only what its ``write``/``edit`` tools recorded (a tool it cannot read shows as a
    line like ``(bash: …)`` with 0/0). Sorted by path. Right after a turn ends this can wait up
    to SUMMARY_WAIT for OpenCode to record it; while the agent works, the running turn's files
    may be missing."""
    s = _load(client, session_id)
    active = _active(s)
    if turn == "last":
        active = active[-1:]
    elif turn != "all":
        raise ValueError(f"turn must be 'all' or 'last', not {turn!r}")
    composed = _compose(s.edits(t, latest=t is active[-1]) for t in active)
    out = [c for p, e in composed.items() if (c := _to_change(p, e)) is not None]
    return sorted(out, key=lambda c: c.path)


# -- undo / redo ---------------------------------------------------------------------------------


def _read(path: Path) -> str | None | bytes:
    """Text, None (absent), or bytes when it is not UTF-8."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class _Files(Protocol):
    """The workspace's files as undo/redo read and write them (names relative to it)."""

    def inside(self, name: str) -> bool: ...

    def read_many(self, names: Iterable[str]) -> dict[str, str | None | bytes]: ...

    def write(self, plan: Mapping[str, str | None]) -> None: ...


class _LocalFiles:
    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def inside(self, name: str) -> bool:
        return True

    def read_many(self, names: Iterable[str]) -> dict[str, str | None | bytes]:
        return {n: _read(self.workspace / n) for n in names}

    def write(self, plan: Mapping[str, str | None]) -> None:
        _write_plan(self.workspace, dict(plan))


def _differs(current: str | None | bytes, expected: Version) -> bool:
    """Does the file on disk (``current``) differ from ``expected`` (the agent's version)?
    Unknown content (a binary file) cannot be compared: restoring it loses nothing the
    snapshot lacks."""
    if expected is UNKNOWN:
        return False
    if expected is None:
        return current is not None
    return current != expected


def _check_busy(s: _Session) -> None:
    if s.busy():
        raise SessionBusy(
            "The agent is still working in this session.",
            "Wait until the task ends (or stop it), then undo.",
        )


_WORDING = {
    "undo": ("Undo", "undo"),
    "redo": ("Redo", "redo"),
    "discard": ("Discarding the session's changes", "discard them"),
}


def _refuse_edits(files: list[str], action: Literal["undo", "redo", "discard"]) -> None:
    if files:
        noun, verb = _WORDING[action]
        raise UserEditsFound(
            f"{len(files)} file(s) changed after the agent's version: {', '.join(files[:5])}"
            + ("…" if len(files) > 5 else "")
            + f". {noun} would overwrite these edits.",
            f"Save your edits elsewhere (or commit them), or {verb} anyway (--force).",
            files=files,
        )


def _plain_plan(
    s: _Session, edits: list[_Edit], *, forward: bool
) -> tuple[dict[str, str | None], list[str], list[str]]:
    """New contents for a plain folder: ({path: text or None to remove}, user-edited, unknown).

    ``forward=False`` undoes ``edits`` (applied in reverse order), True redoes them."""
    plan: dict[str, str | None] = {}
    edited: list[str] = []
    unknown: list[str] = []
    seq = edits if forward else list(reversed(edits))
    files = s.files
    on_disk = files.read_many(
        sorted({e.path for e in seq if e.kind != "unknown" and files.inside(e.path)})
    )
    for e in seq:
        if e.kind == "unknown" or not files.inside(e.path):
            unknown.append(e.path)  # (a remote name outside the folder is never touched)
            continue
        current: str | None | bytes
        current = plan[e.path] if e.path in plan else on_disk[e.path]
        if e.kind == "created":
            if forward:
                if current is not None and e.path not in plan:
                    edited.append(e.path)
                plan[e.path] = e.content
            else:
                if current != e.content:
                    edited.append(e.path)
                plan[e.path] = None
            continue
        # "edited": apply the recorded patch
        if not isinstance(current, str):
            edited.append(e.path)
            continue
        try:
            plan[e.path] = apply_patch(current, e.patch, reverse=not forward)
        except _PatchMismatch:
            edited.append(e.path)
    return plan, sorted(set(edited)), unknown


def _write_plan(workspace: Path, plan: dict[str, str | None]) -> None:
    for rel, text in plan.items():
        target = workspace / rel
        if text is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.smartspec-tmp")
        tmp.write_bytes(text.encode("utf-8"))
        if target.exists():
            shutil.copymode(target, tmp)  # keep an executable script executable
        os.replace(tmp, target)


def _unavailable(unknown: list[str], action: str) -> None:
    raise UndoUnavailable(
        f"Cannot {action} here: this folder is not a git repository, so OpenCode kept no "
        f"snapshot, and {len(unknown)} change(s) were made in a way that recorded no earlier "
        f"version: {', '.join(unknown[:3])}" + ("…" if len(unknown) > 3 else "") + ".",
        GIT_FIX + f" To {action} the rest and keep these as they are, use --force.",
        files=unknown,
    )


def _undo_to(
    s: _Session,
    target: Turn,
    undone: list[Turn],
    *,
    force: bool,
    action: Literal["undo", "discard"],
) -> UndoResult:
    """Revert the session to before ``target``; ``undone``: the active turns this hides."""
    _check_busy(s)
    edits = [e for t in undone for e in s.edits(t, strict=True)]
    verb = "undo" if action == "undo" else "discard these changes"
    if s.snapshots:
        final = _compose([edits])
        now = s.files.read_many(
            p for p, es in final.items() if es[-1].after is not UNKNOWN and s.files.inside(p)
        )
        edited = sorted(p for p, es in final.items() if p in now and _differs(now[p], es[-1].after))
        if edited and not force:
            _refuse_edits(edited, action)
        s.client.revert(s.id, target.message_id)
        overwritten, kept = edited, []
    else:
        plan, edited, unknown = _plain_plan(s, edits, forward=False)
        if unknown and not force:
            _unavailable(unknown, verb)
        if edited and not force:
            _refuse_edits(edited, action)
        s.client.revert(s.id, target.message_id)
        s.files.write({p: t for p, t in plan.items() if p not in edited})
        overwritten, kept = [], sorted(set(edited) | set(unknown))
    files = sorted({e.path for e in edits if e.kind != "unknown"} - set(kept))
    log.info("%s: session %s reverted to before turn %d", action, s.id, target.index)
    hidden = len(s.turns()) - target.index + 1
    return UndoResult(action, target.message_id, files, hidden, s.snapshots, overwritten, kept)


def undo_last_turn(client: OpenCodeClient, session_id: str, *, force: bool = False) -> UndoResult:
    """Restore files and conversation to before the last turn that is not undone yet.

    Refuses with :class:`UserEditsFound` when a file differs from the agent's last version
    (``force=True`` overwrites them: in a git project OpenCode snapshots the tree before it
    reverts, so redo brings the user's version back; in a plain folder they are left as they
    are and named in ``not_restored``). Can be repeated to go back further; :func:`redo` undoes
    it."""
    s = _load(client, session_id)
    active = _active(s)
    if not active:
        raise NothingToUndo(
            "There is nothing to undo: the session has no turn left.",
            "Run a task first, or Redo what was undone.",
        )
    return _undo_to(s, active[-1], [active[-1]], force=force, action="undo")


def discard_session_changes(
    client: OpenCodeClient, session_id: str, *, force: bool = False
) -> UndoResult:
    """Undo every turn of the session at once (files and conversation); redo (``everything``)
    brings them back until the next prompt is sent."""
    s = _load(client, session_id)
    active = _active(s)
    if not active:
        raise NothingToUndo(
            "There is nothing to discard: every turn of this session is already undone.",
            "Redo to bring them back.",
        )
    return _undo_to(s, active[0], active, force=force, action="discard")


def redo(
    client: OpenCodeClient, session_id: str, *, force: bool = False, everything: bool = False
) -> UndoResult:
    """Bring back the turn undone last (``everything``: all undone turns).

    OpenCode only restores everything at once (``unrevert``), so one step is an unrevert followed
    by a revert to the turn after the redone one. After a new prompt the undone turns are gone
    for good (OpenCode drops them): :class:`NothingToRedo`."""
    s = _load(client, session_id)
    all_turns = s.turns()
    hidden = [t for t in all_turns if t.reverted]
    if not s.revert_id or not hidden:
        raise NothingToRedo(
            "There is nothing to redo in this session.",
            "Undone turns can be redone until the next prompt is sent; after that they are gone.",
        )
    _check_busy(s)
    redone = hidden if everything else hidden[:1]
    rest = hidden[len(redone) :]
    edits = [e for t in redone for e in s.edits(t, strict=True)]
    if s.snapshots:
        first = _compose([edits])
        now = s.files.read_many(
            p for p, es in first.items() if es[0].before is not UNKNOWN and s.files.inside(p)
        )
        edited = sorted(p for p, es in first.items() if p in now and _differs(now[p], es[0].before))
        unknown: list[str] = []
        plan: dict[str, str | None] = {}
    else:
        plan, edited, unknown = _plain_plan(s, edits, forward=True)
        if unknown and not force:
            _unavailable(unknown, "redo")
    if edited and not force:
        _refuse_edits(edited, "redo")
    client.unrevert(session_id)
    if rest:
        client.revert(session_id, rest[0].message_id)
    kept: list[str] = []
    if not s.snapshots:
        s.files.write({p: t for p, t in plan.items() if p not in edited})
        kept = sorted(set(edited) | set(unknown))
    files = sorted({e.path for e in edits if e.kind != "unknown"} - set(kept))
    overwritten = edited if s.snapshots else []
    return UndoResult(
        "redo", redone[-1].message_id, files, len(rest), s.snapshots, overwritten, kept
    )


def working_tree_changes(
    client: OpenCodeClient, mode: Literal["git", "branch"] = "git"
) -> list[FileChange]:
    """The git view (``GET /vcs/diff``): the working tree against HEAD (``git``, untracked files
    included) or the branch against the default branch (``branch``); ``[]`` outside git."""
    out: list[FileChange] = []
    for d in client.vcs_diff(mode):
        e = _snapshot_edit(d)
        out.append(FileChange(e.path, e.status, e.additions, e.deletions, e.binary, e.patch))
    return sorted(out, key=lambda c: c.path)


def latest_session_id(client: OpenCodeClient, workspace: str | os.PathLike[str]) -> str:
    """The most recently updated top-level session of ``workspace`` (OpenCode lists a
    repository's sessions for all its worktrees: only this folder's count). Raises
    :class:`ReviewError` when there is none."""
    directory_of = server_directory(os.fspath(workspace))
    remote = directory_of != os.fspath(workspace)
    want = PurePosixPath(directory_of) if remote else Path(workspace).resolve()
    best: tuple[float, str] | None = None
    for s in client.list_sessions():
        if not isinstance(s, dict) or s.get("parentID"):
            continue
        directory = s.get("directory")
        if directory and remote and PurePosixPath(str(directory)) != want:
            continue
        if directory and not remote and Path(str(directory)).resolve() != want:
            continue
        t = s.get("time") if isinstance(s.get("time"), dict) else {}
        assert isinstance(t, dict)
        updated = float(t.get("updated") or t.get("created") or 0)
        if best is None or updated > best[0]:
            best = (updated, str(s.get("id") or ""))
    if best is None or not best[1]:
        raise ReviewError(
            f"There is no OpenCode session in {want} yet.",
            f'Run a task first (`smartspec-desktop run {want} "…"`).',
        )
    return best[1]
