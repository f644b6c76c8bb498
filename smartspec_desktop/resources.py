"""Where the bundled ``resources/`` folder is: beside the package in a checkout, inside the
PyInstaller bundle (``sys._MEIPASS``) when frozen."""

from __future__ import annotations

import sys
from pathlib import Path


def resource_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(name: str) -> Path:
    return resource_dir() / name
