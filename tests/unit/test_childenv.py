"""external_env: what a frozen app's bootloader set for itself never reaches other programs."""

from __future__ import annotations

import sys

import pytest

from smartspec_desktop.core.process.childenv import external_env

BUNDLE = "/opt/smartspec-desktop/_internal"


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", BUNDLE, raising=False)


def test_unfrozen_is_a_plain_copy() -> None:
    base = {"LD_LIBRARY_PATH": BUNDLE, "_PYI_ARCHIVE_FILE": "x", "PATH": "/bin"}
    env = external_env(base)
    assert env == base and env is not base


def test_frozen_restores_the_users_library_path(frozen: None) -> None:
    env = external_env(
        {
            "LD_LIBRARY_PATH": BUNDLE,
            "LD_LIBRARY_PATH_ORIG": "/home/me/lib",
            "QT_PLUGIN_PATH": BUNDLE + "/PySide6/Qt/plugins",
            "_PYI_ARCHIVE_FILE": BUNDLE + "/x",
            "_PYI_PARENT_PROCESS_LEVEL": "1",
            "PATH": "/usr/bin",
        }
    )
    assert env == {"LD_LIBRARY_PATH": "/home/me/lib", "PATH": "/usr/bin"}


def test_frozen_drops_the_bundle_path_the_user_never_had(frozen: None) -> None:
    env = external_env({"LD_LIBRARY_PATH": BUNDLE, "DYLD_LIBRARY_PATH": BUNDLE, "HOME": "/h"})
    assert env == {"HOME": "/h"}


def test_frozen_keeps_the_users_own_qt_plugin_path(frozen: None) -> None:
    env = external_env({"QT_PLUGIN_PATH": "/usr/lib/qt6/plugins"})
    assert env == {"QT_PLUGIN_PATH": "/usr/lib/qt6/plugins"}
