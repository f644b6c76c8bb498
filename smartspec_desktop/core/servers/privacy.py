"""What a server keeps on disk stays private, and goes when the server goes.

**No litter (F15).** Each server gets a private temp folder (0700) of its own under the app's
state folder, ``<state>/tmp/<server id>``, named to the server's child through ``TMPDIR``,
``TMP`` and ``TEMP``: Bun extracts a ~5.5 MB native library into the temp folder on every start,
and OpenCode's own temp files land there too. The folder is removed when the server is
forgotten (stopped, failed, cleared) and by :func:`.recovery.tidy_leftovers` when a crashed or
lost server left it.

**Private conversations (F11).** OpenCode keeps its conversations (a SQLite database), its state
and its cache under ``$XDG_DATA_HOME/opencode``, ``$XDG_STATE_HOME/opencode`` and
``$XDG_CACHE_HOME/opencode``, made with the user's umask: readable by every local user when HOME
is 0755 (Debian's default). :func:`make_opencode_dirs_private` creates (or tightens) those
folders 0700 before a server starts, without touching the umask the server (and the files it
writes in the workspace) runs with.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from smartspec_desktop.core.storage.paths import POSIX, make_private_dir

log = logging.getLogger(__name__)

TEMP_ENV_VARS = ("TMPDIR", "TMP", "TEMP")
#: (XDG variable, its default under HOME) of the folders where OpenCode keeps its own data.
OPENCODE_XDG_DIRS = (
    ("XDG_DATA_HOME", (".local", "share")),
    ("XDG_STATE_HOME", (".local", "state")),
    ("XDG_CACHE_HOME", (".cache",)),
)


def server_tmp_root(state_dir: Path) -> Path:
    return state_dir / "tmp"


def make_server_tmp_dir(state_dir: Path, server_id: str) -> Path:
    """Create the server's private temp folder (0700, checked like the app's own folders)."""
    return make_private_dir(server_tmp_root(state_dir) / server_id)


def remove_server_tmp_dir(state_dir: Path, server_id: str) -> None:
    shutil.rmtree(server_tmp_root(state_dir) / server_id, ignore_errors=True)


def temp_env(folder: Path) -> dict[str, str]:
    """The variables that send a program's temporary files to ``folder``."""
    return {name: str(folder) for name in TEMP_ENV_VARS}


def opencode_data_dirs(environ: Mapping[str, str]) -> list[Path]:
    """OpenCode's own folders for a server run with ``environ`` (absolute XDG values only, as
    the XDG spec says; a relative one is ignored in favour of the default)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    out = []
    for var, default in OPENCODE_XDG_DIRS:
        base = environ.get(var, "")
        root = Path(base) if os.path.isabs(base) else Path(home, *default)
        out.append(root / "opencode")
    return out


def make_opencode_dirs_private(environ: Mapping[str, str]) -> None:
    """Create OpenCode's own folders 0700, or tighten ours to 0700 (POSIX). Best effort: a
    folder that cannot be made is left to OpenCode, which reports its own error."""
    if not POSIX:
        return
    for folder in opencode_data_dirs(environ):
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o700)
            st = os.stat(folder)
            if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(folder, 0o700)
        except OSError as e:
            log.info("could not make %s private: %s", folder, e.strerror or e)
