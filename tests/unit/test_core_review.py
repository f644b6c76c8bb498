"""core.review without a server: unified-diff handling, paging, how turns compose, and the
user-edit check, against canned answers shaped like OpenCode 1.18.33's (recorded from a real
server: whole-file patches per turn, ``session.revert``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core import review
from smartspec_desktop.core.opencode.client import OpenCodeClient


def whole_file_patch(path: str, before: str | None, after: str | None) -> str:
    """What OpenCode sends: one hunk with the whole file as context."""
    a = (before or "").splitlines()
    b = (after or "").splitlines()
    body = []
    import difflib

    for line in difflib.ndiff(a, b):
        if line.startswith("? "):
            continue
        body.append({" ": " ", "-": "-", "+": "+"}[line[0]] + line[2:])
    head = f"@@ -{1 if a else 0},{len(a)} +{1 if b else 0},{len(b)} @@"
    return (
        f"Index: {path}\n{'=' * 67}\n--- {path}\t\n+++ {path}\t\n{head}\n" + "\n".join(body) + "\n"
    )


class FakeClient:
    """The few OpenCodeClient calls core.review makes, over an in-memory session."""

    def __init__(self, workspace: Path, turns: list[dict[str, list[dict[str, Any]]]]) -> None:
        self.workspace = workspace
        self.diffs: dict[str, list[dict[str, Any]]] = {}
        self.msgs: list[dict[str, Any]] = []
        for i, turn in enumerate(turns):
            uid = f"msg_u{i}"
            user = {"id": uid, "role": "user", "summary": {"diffs": turn["diff"]}}
            self.msgs.append({"info": user, "parts": []})
            self.msgs.append(
                {"info": {"id": f"msg_a{i}", "role": "assistant", "parentID": uid}, "parts": []}
            )
            self.diffs[uid] = turn["diff"]
        self.revert_id = ""
        self.project = "abc"
        self.calls: list[tuple[str, str]] = []

    def get_session(self, session_id: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": session_id,
            "projectID": self.project,
            "directory": str(self.workspace),
        }
        if self.revert_id:
            info["revert"] = {"messageID": self.revert_id}
        return info

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        return self.msgs

    def session_diff(self, session_id: str, message_id: str | None = None) -> list[dict[str, Any]]:
        return self.diffs.get(message_id or "", [])

    def session_status(self) -> dict[str, Any]:
        return {}

    def revert(
        self, session_id: str, message_id: str, part_id: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("revert", message_id))
        self.revert_id = message_id
        return {}

    def unrevert(self, session_id: str) -> dict[str, Any]:
        self.calls.append(("unrevert", ""))
        self.revert_id = ""
        return {}


def entry(path: str, status: str, before: str | None, after: str | None) -> dict[str, Any]:
    patch = whole_file_patch(path, before, after)
    adds = sum(1 for ln in patch.splitlines()[5:] if ln.startswith("+"))
    dels = sum(1 for ln in patch.splitlines()[5:] if ln.startswith("-"))
    return {"file": path, "patch": patch, "additions": adds, "deletions": dels, "status": status}


def as_client(fake: FakeClient) -> OpenCodeClient:
    return fake  # type: ignore[return-value]


def test_patches_apply_both_ways_and_rebuild_whole_files() -> None:
    before = "a\nb\nc\nd\n"
    after = "a\nB\nc\nd\ne"
    patch = review.unified_diff("f.txt", before, after, context=1)
    assert "\\ No newline at end of file" in patch
    assert review.apply_patch(before, patch) == after
    assert review.apply_patch(after, patch, reverse=True) == before
    with pytest.raises(review._PatchMismatch):
        review.apply_patch("a\nX\nc\nd\n", patch)
    # The next file's headers are not taken for a removed line.
    assert review.parse_hunks(patch + "--- a/g.txt\n+++ b/g.txt\n") == review.parse_hunks(patch)
    assert review._count(patch + "--- a/g.txt\n") == (2, 1)
    full = whole_file_patch("f.txt", "one\ntwo\n", "one\n2\nthree\n")
    assert review._full_versions(full) == ("one\ntwo\n", "one\n2\nthree\n")
    assert review._full_versions(whole_file_patch("n.txt", None, "new\n")) == (None, "new\n")
    ten = "".join(f"{i}\n" for i in range(10))
    partial = review.unified_diff("t.txt", ten, ten.replace("5\n", "five\n"), context=1)
    assert review._full_versions(partial) is None, "a hunk from line 4 is not the whole file"


def test_diff_pages_and_binary_files() -> None:
    text = "".join(f"{i}\n" for i in range(1000))
    change = review.FileChange(
        "big.txt", "added", 1000, 0, False, review.unified_diff("big.txt", None, text)
    )
    first = review.diff_page(change, 0, 100)
    assert len(first.lines) == 100 and first.total == 1003 and first.more
    last = review.diff_page(change, 1000, 100)
    assert last.lines == ["+997", "+998", "+999"] and not last.more
    binary = review.FileChange("logo.png", "added", 0, 0, True)
    page = review.diff_page(binary)
    assert page.binary and page.lines == [] and binary.public()["binary"] is True


def test_turns_compose_into_session_changes(tmp_path: Path) -> None:
    fake = FakeClient(
        tmp_path,
        [
            {
                "diff": [
                    entry("a.txt", "modified", "1\n2\n3\n", "1\nTWO\n3\n"),
                    entry("tmp.txt", "added", None, "scratch\n"),
                    {
                        "file": "img.bin",
                        "patch": "",
                        "additions": 0,
                        "deletions": 0,
                        "status": "added",
                    },
                ]
            },
            {
                "diff": [
                    entry("a.txt", "modified", "1\nTWO\n3\n", "1\n2\n3\n4\n"),
                    entry("tmp.txt", "deleted", "scratch\n", None),
                ]
            },
        ],
    )
    client = as_client(fake)
    listing = [
        (c.path, c.status, c.additions, c.deletions, c.binary)
        for c in review.changes(client, "ses_1")
    ]
    # a.txt: the net change is one added line; tmp.txt came and went; the image is named.
    assert listing == [("a.txt", "modified", 1, 0, False), ("img.bin", "added", 0, 0, True)]
    last = review.changes(client, "ses_1", turn="last")
    assert [(c.path, c.status) for c in last] == [("a.txt", "modified"), ("tmp.txt", "deleted")]
    with pytest.raises(ValueError):
        review.changes(client, "ses_1", turn="first")  # type: ignore[arg-type]


def test_undo_checks_for_user_edits_and_redo_steps_one_turn(tmp_path: Path) -> None:
    fake = FakeClient(
        tmp_path,
        [
            {"diff": [entry("a.txt", "added", None, "agent 1\n")]},
            {"diff": [entry("b.txt", "added", None, "agent 2\n")]},
        ],
    )
    client = as_client(fake)
    (tmp_path / "a.txt").write_text("agent 1\n")
    (tmp_path / "b.txt").write_text("edited by the user\n")
    with pytest.raises(review.UserEditsFound) as err:
        review.undo_last_turn(client, "ses_1")
    assert err.value.files == ["b.txt"] and fake.calls == []
    (tmp_path / "b.txt").write_text("agent 2\n")
    review.undo_last_turn(client, "ses_1")
    assert fake.calls == [("revert", "msg_u1")]
    (tmp_path / "b.txt").unlink()  # what OpenCode's revert does to the file
    review.undo_last_turn(client, "ses_1")
    assert fake.calls[-1] == ("revert", "msg_u0")
    (tmp_path / "a.txt").unlink()
    with pytest.raises(review.NothingToUndo):
        review.undo_last_turn(client, "ses_1")
    assert [t.reverted for t in review.turns(client, "ses_1")] == [True, True]

    # Redo one turn = unrevert everything, then revert again from the turn after it.
    (tmp_path / "a.txt").write_text("the user's file now\n")
    with pytest.raises(review.UserEditsFound, match="a.txt"):
        review.redo(client, "ses_1")
    (tmp_path / "a.txt").unlink()
    fake.calls.clear()
    result = review.redo(client, "ses_1")
    assert fake.calls == [("unrevert", ""), ("revert", "msg_u1")] and result.turns_undone == 1
    result = review.redo(client, "ses_1")
    assert fake.calls[-1] == ("unrevert", "") and result.turns_undone == 0
    with pytest.raises(review.NothingToRedo):
        review.redo(client, "ses_1")


def test_undo_waits_for_opencode_to_record_the_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClient(tmp_path, [{"diff": []}])
    del fake.msgs[0]["info"]["summary"]  # the turn has just ended: no summary yet
    fake.msgs[1]["parts"] = [{"type": "patch", "hash": "h", "files": [str(tmp_path / "x.txt")]}]
    monkeypatch.setattr(review, "SUMMARY_WAIT", 0.3)
    with pytest.raises(review.ReviewError, match="not finished recording") as err:
        review.undo_last_turn(as_client(fake), "ses_1")
    assert "x.txt" in err.value.problem and fake.calls == []
    # Listing waits as long, then shows what there is.
    assert review.changes(as_client(fake), "ses_1") == []


def tool(name: str, inp: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool",
        "tool": name,
        "state": {"status": "completed", "input": inp, "metadata": meta},
    }


def test_plain_folder_undo_and_redo_from_tool_calls(tmp_path: Path) -> None:
    fake = FakeClient(tmp_path, [{"diff": []}])
    fake.project = "global"  # what OpenCode reports outside git: no snapshots
    script = tmp_path / "run.sh"
    before = "#!/bin/sh\necho one\necho two\n"
    after = "#!/bin/sh\necho ONE\necho two\n"
    script.write_text(after)
    script.chmod(0o755)
    (tmp_path / "new.txt").write_text("created\n")
    fake.msgs[1]["parts"] = [
        tool("read", {"filePath": "run.sh"}, {}),
        tool(
            "write",
            {"filePath": "new.txt", "content": "created\n"},
            {"filepath": str(tmp_path / "new.txt"), "exists": False},
        ),
        tool(
            "edit",
            {"filePath": "run.sh"},
            {
                "filediff": {
                    "file": str(script),
                    "patch": review.unified_diff("run.sh", before, after),
                }
            },
        ),
    ]
    client = as_client(fake)
    listing = [
        (c.path, c.status, c.additions, c.deletions) for c in review.changes(client, "ses_1")
    ]
    assert listing == [("new.txt", "added", 1, 0), ("run.sh", "modified", 1, 1)]
    result = review.undo_last_turn(client, "ses_1")
    assert not result.snapshots and result.files == ["new.txt", "run.sh"]
    assert script.read_text() == before and script.stat().st_mode & 0o111
    assert not (tmp_path / "new.txt").exists()
    review.redo(client, "ses_1")
    assert script.read_text() == after and (tmp_path / "new.txt").read_text() == "created\n"

    # A shell command recorded nothing to undo from: said plainly, forced only on request.
    fake.msgs[1]["parts"].append(tool("bash", {"command": "make"}, {}))
    with pytest.raises(review.UndoUnavailable, match="not a git repository") as err:
        review.undo_last_turn(client, "ses_1")
    assert err.value.files == ["(bash: make)"] and "git init" in err.value.fix
    forced = review.undo_last_turn(client, "ses_1", force=True)
    assert forced.not_restored == ["(bash: make)"] and script.read_text() == before
