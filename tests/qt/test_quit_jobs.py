"""Quitting the window does not wait on `opencode --version` probes its background jobs run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.opencode.binary import read_version
from smartspec_desktop.services.worker import Jobs
from smartspec_desktop.ui.app import finish_jobs

pytestmark = pytest.mark.gui


def test_a_probe_a_job_starts_after_the_quit_began_is_killed_too(
    tmp_path: Path, qapp: QApplication
) -> None:
    """A readiness check queued before the quit may start its probe only while the app waits
    for its jobs: that probe is killed as well (before, the wait ran out with it running)."""
    oc = tmp_path / "opencode"
    oc.write_text("#!/bin/sh\nexec sleep 300\n")
    oc.chmod(0o755)
    go = threading.Event()
    outcome: list[BaseException | str] = []

    def check() -> None:
        go.wait(60)  # the quit has begun
        try:
            outcome.append(read_version(str(oc), timeout=250, busy_timeout=250))
        except SmartSpecError as e:
            outcome.append(e)

    jobs = Jobs()
    jobs.submit(check)
    threading.Timer(0.3, go.set).start()
    try:
        assert finish_jobs(jobs, 120_000), "the jobs did not finish"
    finally:  # a failed check above leaves no `sleep 300` behind
        go.set()
        finish_jobs(jobs, 120_000)
    (error,) = outcome
    assert isinstance(error, SmartSpecError) and "failed (exit -9" in str(error), error


def test_finishing_jobs_that_do_not_end_gives_up_at_its_bound(qapp: QApplication) -> None:
    release = threading.Event()
    jobs = Jobs()
    jobs.submit(lambda: release.wait(60))
    try:
        assert finish_jobs(jobs, 300) is False
    finally:
        release.set()
        assert jobs.wait(60_000)
