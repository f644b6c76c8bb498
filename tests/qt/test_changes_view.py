"""The Agent tab's Changes view (issue 14) driven with pytest-qt over a fake of core.review: the
file list for the session and its last turn, a coloured, paged diff, binary files named, Undo /
Redo / Discard, and the user-edit refusal dialog with "Undo anyway". The core itself is tested
against the real opencode in tests/integration/test_review_undo.py and test_cli_review.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from smartspec_desktop.core import review
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.services.review import ReviewService
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.changes import ChangesView

pytestmark = pytest.mark.gui

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
BIG = "".join(f"+line {i}\n" for i in range(900))


def _change(path: str, status: review.Status, patch: str, binary: bool = False) -> Any:
    adds, dels = (0, 0) if binary else review._count(patch)
    return review.FileChange(path, status, adds, dels, binary, patch)


class FakeReview:
    """Two turns: the first adds big.txt and a binary logo.png, the second edits keep.txt."""

    def __init__(self) -> None:
        self.reverted = 0  # turns undone, from the end
        self.user_edit = False
        self.calls: list[tuple[str, bool]] = []
        header = "--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1,900 @@\n"
        keep = "--- a/keep.txt\n+++ b/keep.txt\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n"
        self.per_turn = [
            [_change("big.txt", "added", header + BIG), _change("logo.png", "added", "", True)],
            [_change("keep.txt", "modified", keep)],
        ]

    def latest_session_id(self, _client: object, _ws: str) -> str:
        return "ses_1"

    def turns(self, _client: object, sid: str) -> list[review.Turn]:
        n = len(self.per_turn)
        return [review.Turn(f"msg_{i}", i + 1, f"p{i}", i >= n - self.reverted) for i in range(n)]

    def changes(self, _client: object, sid: str, turn: str = "all") -> list[review.FileChange]:
        active = self.per_turn[: len(self.per_turn) - self.reverted]
        chosen = active[-1:] if turn == "last" else active
        return sorted((c for t in chosen for c in t), key=lambda c: c.path)

    def _result(self, action: Any, files: list[str]) -> review.UndoResult:
        return review.UndoResult(action, "msg", files, self.reverted, True)

    def undo_last_turn(self, _c: object, sid: str, *, force: bool = False) -> review.UndoResult:
        self.calls.append(("undo", force))
        if self.user_edit and not force:
            raise review.UserEditsFound(
                "keep.txt changed.", "Undo anyway (--force).", files=["keep.txt"]
            )
        if self.reverted >= len(self.per_turn):
            raise review.NothingToUndo("Nothing to undo.", "Run a task first.")
        self.reverted += 1
        return self._result("undo", [c.path for c in self.per_turn[-self.reverted]])

    def redo(self, _c: object, sid: str, *, force: bool = False) -> review.UndoResult:
        self.calls.append(("redo", force))
        self.reverted -= 1
        return self._result("redo", [c.path for c in self.per_turn[-self.reverted - 1]])

    def discard_session_changes(
        self, _c: object, sid: str, *, force: bool = False
    ) -> review.UndoResult:
        self.calls.append(("discard", force))
        self.reverted = len(self.per_turn)
        return self._result("discard", ["big.txt", "keep.txt", "logo.png"])


class _Service(ReviewService):
    @contextlib.contextmanager
    def _fake_client(self) -> Iterator[None]:
        yield None

    def _client(self) -> Any:
        return self._fake_client()


@pytest.fixture
def view(qtbot: QtBot) -> Iterator[tuple[ChangesView, FakeReview]]:
    jobs = Jobs()
    fake = FakeReview()
    service = _Service(jobs, api=fake)
    rec = ServerRecord("srv", "/ws", ServerStatus.RUNNING, "now", url="http://127.0.0.1:1")
    service.set_target(rec, lambda _r: "pw")
    v = ChangesView(service)
    qtbot.addWidget(v)
    v.resize(1000, 520)
    v.show()
    yield v, fake
    jobs.wait(5000)


def _rows(v: ChangesView) -> list[tuple[str, int, int, bool]]:
    return [(c.path, c.additions, c.deletions, c.binary) for c in v.changes]


def test_lists_diffs_pages_and_binary(qtbot: QtBot, view: tuple[ChangesView, FakeReview]) -> None:
    v, _fake = view
    v.set_session("ses_1")
    qtbot.waitUntil(lambda: len(v.changes) == 3)
    assert _rows(v) == [
        ("big.txt", 900, 0, False),
        ("keep.txt", 1, 1, False),
        ("logo.png", 0, 0, True),
    ]
    stats = [item.text() if (item := v.files.item(r, 1)) else "" for r in range(3)]
    assert stats == ["+900 −0", "+1 −1", "binary"]
    assert "3 files" in v.title.text()
    assert v.undo_btn.isEnabled() and not v.redo_btn.isEnabled()

    # big.txt is selected first: paged, with "More"
    assert v.more_btn.isVisible() and "of 903" in v.page_label.text()
    first = v.diff.toPlainText().count("\n")
    v.more_btn.click()
    assert v.diff.toPlainText().count("\n") > first
    v.more_btn.click()
    assert not v.more_btn.isVisible() and "+line 899" in v.diff.toPlainText()

    v.files.selectRow(1)
    html = v.diff.toHtml()
    assert "#e6ffec" in html and "#ffebe9" in html, "added and removed lines are coloured"
    assert "+B" in v.diff.toPlainText() and "-b" in v.diff.toPlainText()
    ARTIFACTS.mkdir(exist_ok=True)
    v.grab().save(str(ARTIFACTS / "changes-view.png"))

    v.files.selectRow(2)
    assert "logo.png is a binary file" in v.diff.toPlainText()

    v.scope.setCurrentIndex(1)  # last turn
    qtbot.waitUntil(lambda: [c.path for c in v.changes] == ["keep.txt"])
    assert "last turn" in v.title.text()


def test_undo_redo_discard_and_user_edit_dialog(
    qtbot: QtBot, view: tuple[ChangesView, FakeReview]
) -> None:
    v, fake = view
    asked: list[tuple[str, list[str], str]] = []
    answer = {"value": False}

    def ask(title: str, text: str, files: list[str], yes_label: str) -> bool:
        asked.append((title, files, yes_label))
        return answer["value"]

    v.ask = ask  # type: ignore[method-assign]
    v.set_session("ses_1")
    qtbot.waitUntil(lambda: len(v.changes) == 3)

    v.undo_btn.click()
    qtbot.waitUntil(lambda: [c.path for c in v.changes] == ["big.txt", "logo.png"])
    assert "Undone: keep.txt." in v.result_label.text()
    qtbot.waitUntil(lambda: v.redo_btn.isEnabled())
    v.redo_btn.click()
    qtbot.waitUntil(lambda: len(v.changes) == 3)
    assert "Redone" in v.result_label.text()

    # Over a user edit: the dialog lists the file; Cancel changes nothing, "Undo anyway" forces.
    fake.user_edit = True
    qtbot.waitUntil(lambda: v.undo_btn.isEnabled())
    v.undo_btn.click()
    qtbot.waitUntil(lambda: len(asked) == 1)
    assert asked[0][1:] == (["keep.txt"], "Undo anyway") and fake.reverted == 0
    answer["value"] = True
    qtbot.waitUntil(lambda: v.undo_btn.isEnabled())
    v.undo_btn.click()
    qtbot.waitUntil(lambda: fake.reverted == 1)
    assert fake.calls[-2:] == [("undo", False), ("undo", True)]

    # Discard asks first; No leaves everything.
    answer["value"] = False
    qtbot.waitUntil(lambda: v.discard_btn.isEnabled())
    v.discard_btn.click()
    assert asked[-1][2] == "Discard all" and fake.calls[-1][0] == "undo"
    answer["value"] = True
    v.discard_btn.click()
    qtbot.waitUntil(lambda: v.changes == [])
    assert fake.calls[-1] == ("discard", False) and not v.undo_btn.isEnabled()
    qtbot.waitUntil(lambda: v.redo_btn.isEnabled())
