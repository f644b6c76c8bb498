"""Throw-away local accounts for the tests that need another uid (root only): a unique name, a
temporary 0700 home of its own, removed again with its home."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


def add_user(prefix: str, shell: str) -> tuple[str, pwd.struct_passwd, Path]:
    """A new account ``<prefix><random>`` with ``shell``: (name, its passwd entry, its home).
    Raises RuntimeError with useradd's own words when it cannot be made."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-home-"))
    r = subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", shell]
        + ["--user-group", name],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        raise RuntimeError(f"useradd failed: {r.stderr.strip()}")
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        os.chmod(home, 0o700)
    except BaseException:
        remove_user(name, home)  # made, then a step failed: it must not stay behind
        raise
    return name, entry, home


def remove_user(name: str, home: Path) -> None:
    subprocess.run(["userdel", name], capture_output=True, text=True)
    shutil.rmtree(home, ignore_errors=True)
