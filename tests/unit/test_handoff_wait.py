"""Open OpenWork UI when the browser never fetches the hand-off page: progress, Cancel, a sooner
give-up with the reason; and no display at all said as such."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core.errors import LaunchCancelled, LaunchError
from smartspec_desktop.core.launch import launchers
from smartspec_desktop.core.launch.launchers import NO_DISPLAY, has_display, open_openwork
from smartspec_desktop.core.storage.config import Settings
from smartspec_desktop.core.storage.paths import Paths
from tests.unit.test_launchers import FakeServers


class WebServers(FakeServers):
    def __init__(self, root: Path, environ: dict[str, str]) -> None:
        super().__init__(Settings(openwork_mode="web"), environ)
        self.paths = Paths.from_base(root)


def pages(root: Path) -> list[Path]:
    return list((root / "state").glob("open-*"))


def test_a_browser_that_never_comes_shows_progress_and_cancel_stops_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launchers, "HANDOFF_PROGRESS_EVERY", 0.3)
    servers = WebServers(tmp_path, {"PATH": "/bin", "DISPLAY": ":9"})
    cancel = threading.Event()
    said: list[str] = []

    def progress(line: str) -> None:
        said.append(line)
        if line.startswith("Waiting for the browser"):
            assert pages(tmp_path), "the page exists while it waits"
            cancel.set()

    with pytest.raises(LaunchCancelled) as e:
        open_openwork(
            servers,  # type: ignore[arg-type]
            "/w",
            progress=progress,
            opener=lambda _url: True,  # "opened", but never fetches the page
            session_id="ses_1",
            cancel=cancel,
        )
    assert "Cancelled" in e.value.problem and "Open OpenWork UI again" in e.value.fix
    waiting = [s for s in said if s.startswith("Waiting for the browser")]
    assert waiting and "of 30 s" in waiting[0] and "Cancel" in waiting[0]
    assert pages(tmp_path) == [], "the page is deleted"


def test_it_gives_up_within_30_s_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert launchers.HANDOFF_TIMEOUT <= 30.0, "sooner than the 90 s it used to wait"
    monkeypatch.setattr(launchers, "HANDOFF_TIMEOUT", 0.5)
    servers = WebServers(tmp_path, {"PATH": "/bin", "DISPLAY": ":9"})
    with pytest.raises(LaunchError) as e:
        open_openwork(
            servers,  # type: ignore[arg-type]
            "/w",
            opener=lambda _url: True,
            session_id="ses_1",
        )
    assert "did not open the page within" in e.value.problem
    assert "did not start, or it cannot read the app's private page" in e.value.problem
    assert "BROWSER" in e.value.fix and pages(tmp_path) == []


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"PATH": "/bin"}, NO_DISPLAY[0]),
        ({"PATH": "/bin", "WAYLAND_DISPLAY": "wayland-0"}, "No web browser could be opened."),
        ({"PATH": "/bin", "DISPLAY": ":0"}, "No web browser could be opened."),
    ],
)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY matters on X11/Wayland")
def test_without_a_display_it_says_so_not_no_browser(
    tmp_path: Path, environ: dict[str, str], says: str
) -> None:
    servers = WebServers(tmp_path, environ)
    opened: list[Any] = []

    def no_browser(url: str) -> bool:
        opened.append(url)
        return False

    with pytest.raises(LaunchError) as e:
        open_openwork(
            servers,  # type: ignore[arg-type]
            "/w",
            opener=no_browser,
            session_id="ses_1",
        )
    assert e.value.problem == says and len(opened) == 1


def test_has_display() -> None:
    assert not has_display({}, "linux") and has_display({"DISPLAY": ":1"}, "linux")
    assert has_display({}, "darwin") and has_display({}, "win32")
