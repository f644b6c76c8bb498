"""Background jobs: every answer comes back once, to its own callback, on the GUI thread.

Many jobs finishing at once is what a busy window does (readiness checks, server polls, task
streams); 3000 of them here. With PySide6 6.12.0 on Python 3.11 the first test aborted the
interpreter (each emit dropped a reference to True: tests/qt/test_qt_binding.py).
"""

from __future__ import annotations

import logging
import threading
from functools import partial

import pytest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from smartspec_desktop.services.worker import Jobs

pytestmark = pytest.mark.gui

N = 3000


def test_thousands_of_jobs_each_answer_once_to_their_own_callback_on_the_gui_thread(
    qapp: QApplication, qtbot: QtBot
) -> None:
    gui = threading.get_ident()
    answers: dict[int, list[object]] = {}
    threads: set[int] = set()

    def record(key: int, value: object) -> None:
        threads.add(threading.get_ident())
        answers.setdefault(key, []).append(value)

    def work(i: int) -> int:
        if i % 7 == 0:
            raise ValueError(f"job {i} failed")
        return i * i

    jobs = Jobs(max_threads=8)
    for i in range(N):
        jobs.submit(partial(work, i), on_done=partial(record, i), on_failed=partial(record, i))
    assert jobs.wait(120_000)
    qtbot.waitUntil(lambda: len(answers) == N, timeout=120_000)
    qapp.processEvents()  # a duplicate answer would be queued by now

    assert threads == {gui}
    for i in range(N):
        (value,) = answers[i]
        if i % 7 == 0:
            assert isinstance(value, ValueError) and str(value) == f"job {i} failed"
        else:
            assert value == i * i
    assert not jobs._bridges, "finished jobs are kept"


def test_a_failing_callback_does_not_stop_later_answers_and_an_unhandled_failure_is_logged(
    qapp: QApplication, qtbot: QtBot, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[str] = []
    jobs = Jobs(max_threads=1)

    def broken(_: object) -> None:
        got.append("broken")
        raise RuntimeError("a slot that raises")

    def boom() -> None:
        raise OSError("no such thing")

    with (
        caplog.at_level(logging.ERROR, logger="smartspec_desktop.services.worker"),
        qtbot.captureExceptions() as raised,
    ):
        jobs.submit(lambda: 1, on_done=broken)
        jobs.submit(boom)
        jobs.submit(lambda: 2, on_done=lambda v: got.append(f"later {v}"))
        assert jobs.wait(60_000)
        qtbot.waitUntil(lambda: "later 2" in got, timeout=60_000)
    assert got == ["broken", "later 2"]
    assert [str(e[1]) for e in raised] == ["a slot that raises"]
    assert any("no such thing" in r.getMessage() for r in caplog.records), caplog.text
    assert not jobs._bridges
