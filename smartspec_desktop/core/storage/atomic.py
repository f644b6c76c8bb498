"""Atomic JSON files: a reader never sees half a file, a crash never leaves one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write to a temp file in the same folder, fsync, then ``os.replace`` over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any, *, mode: int = 0o600) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=mode)


def read_json_object(path: Path) -> tuple[dict[str, Any], str | None]:
    """Read a JSON object. A missing file is ``{}``; a corrupt one is moved aside.

    Returns the data and, when the file was corrupt, a warning for the user naming where the bad
    copy went. Never raises for bad content.
    """
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        return {}, None
    try:
        data = json.loads(raw_bytes.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
        return data, None
    except ValueError as e:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, aside)
            where = f"moved aside to {aside}"
        except OSError as move_error:
            where = f"could not be moved aside ({move_error})"
        warning = f"{path} was unreadable ({e}); {where} and started afresh."
        log.warning(warning)
        return {}, warning
