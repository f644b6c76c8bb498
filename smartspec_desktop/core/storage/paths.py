"""Where the app keeps its files, computed once.

By default the platform's directories (via platformdirs); with ``--data-dir DIR`` (or the
``SMARTSPEC_DATA_DIR`` environment variable) everything lives under one folder instead, which is
what tests and portable installs use.

**The folders are private and trusted only when they are ours** (POSIX). :meth:`Paths.ensure`
creates each missing level itself, 0700 whatever the umask (``mkdir(parents=True)`` ignores the
mode of the parents it makes), and refuses, naming the problem and the fix, a folder of the app (the
``--data-dir`` folder, each of the four folders, and every folder under them) that is not owned by
the current user or is group/world-writable: another user could have planted a program or a
registry there. Folders of ours that others can merely read are tightened to 0700. Every folder
above them must be ours or root's and not world-writable unless sticky (like /tmp). Before running
a program (OpenCode, openwork-server) :func:`check_trusted_program` refuses one that another user
could have replaced: the file, or any folder from it up to /, owned by another user (not root), or
writable by everyone without the sticky bit.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from smartspec_desktop import APP_NAME
from smartspec_desktop.core.errors import StateError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SMARTSPEC_DATA_DIR"


class UnsafeFolder(StateError):
    """A folder or program another local user controls (or could)."""

    code = "unsafe_path"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    state_dir: Path
    log_dir: Path
    #: The ``--data-dir`` folder holding the four, when one was given.
    base: Path | None = field(default=None, compare=False)

    @classmethod
    def from_base(cls, base: str | os.PathLike[str]) -> Paths:
        root = Path(base).expanduser().absolute()
        return cls(root / "config", root / "data", root / "state", root / "log", base=root)

    @classmethod
    def default(cls) -> Paths:
        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        return cls(
            Path(dirs.user_config_dir),
            Path(dirs.user_data_dir),
            Path(dirs.user_state_dir),
            Path(dirs.user_log_dir),
        )

    @classmethod
    def resolve(cls, data_dir: str | os.PathLike[str] | None = None) -> Paths:
        """``--data-dir`` wins, then ``$SMARTSPEC_DATA_DIR``, then the platform's directories."""
        base = data_dir or os.environ.get(DATA_DIR_ENV)
        return cls.from_base(base) if base else cls.default()

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def servers_file(self) -> Path:
        return self.state_dir / "servers.json"

    @property
    def trust_file(self) -> Path:
        """The trusted workspaces (:mod:`..servers.trust`)."""
        return self.state_dir / "trust.json"

    @property
    def legacy_servers_file(self) -> Path:
        """Where state version 1 kept the server records (read and migrated while needed)."""
        return self.state_dir / "sessions.json"

    @property
    def server_log_dir(self) -> Path:
        return self.log_dir / "servers"

    @property
    def managed_opencode_dir(self) -> Path:
        return self.data_dir / "opencode"

    def roots(self) -> list[Path]:
        """The app's own top folders (everything under them is the app's too)."""
        if self.base is not None:
            return [self.base]
        return [self.config_dir, self.data_dir, self.state_dir, self.log_dir]

    def ensure(self) -> None:
        """Create the folders (0700) and check that they are ours and private; raise
        :class:`UnsafeFolder` (problem and fix) otherwise. See the module's docstring."""
        for root in self.roots():
            make_private_dir(root, check_tree=True)
        for d in (
            self.config_dir,
            self.data_dir,
            self.state_dir,
            self.log_dir,
            self.server_log_dir,
        ):
            make_private_dir(d)


POSIX = os.name == "posix"


def make_private_dir(path: Path, *, check_tree: bool = False) -> Path:
    """Create ``path`` and each missing parent 0700 (whatever the umask), then check it: ours and
    not group/world-writable (tightened to 0700 when others can merely read it), every folder
    above it ours or root's and not world-writable unless sticky; with ``check_tree``, every
    folder under it as strictly as itself. Raises :class:`UnsafeFolder`."""
    path = Path(path).absolute()
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for level in reversed(missing):
        try:
            os.mkdir(level, 0o700)
        except FileExistsError:
            pass
        else:
            if POSIX:
                os.chmod(level, 0o700)
    if not POSIX:
        return path
    _check_own(path)
    for parent in path.parents:
        _check_above(parent, path)
    if check_tree:
        for top, dirs, _files in os.walk(path):
            for name in dirs:
                _check_own(Path(top) / name, root=path)
    return path


def _check_own(folder: Path, root: Path | None = None) -> None:
    st = os.stat(folder)
    where = f"{folder}" if root is None else f"{folder} (inside the app's folder {root})"
    fix_other = (
        "Another user may have put files there. Use a folder of your own (pass --data-dir with "
        "a new folder, or set SMARTSPEC_DATA_DIR), or have that folder removed."
    )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFolder(
            f"Cannot use {where}: it is not a folder.",
            "Remove or rename it so the app can make a writable folder there, or pass "
            "--data-dir with another folder.",
        )
    if st.st_uid != os.getuid():
        raise UnsafeFolder(
            f"The app's folder {where} belongs to another user (uid {st.st_uid}), not to you.",
            fix_other,
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UnsafeFolder(
            f"The app's folder {where} is writable by other users (mode {mode:04o}).",
            "Check that nothing in it was put there by someone else, then make it private "
            f"(`chmod 700 '{folder}'`), or use a new folder (--data-dir).",
        )
    if mode & 0o077:
        try:
            os.chmod(folder, 0o700)  # ours, and only readable by others: tighten
        except OSError as e:  # e.g. a read-only file system: readable is not a reason to stop
            log.warning("could not make %s private (%s)", folder, e.strerror or e)


def _check_above(parent: Path, path: Path) -> None:
    try:
        st = os.stat(parent)
    except OSError:
        return  # an unreadable folder above ours: its owner keeps others out
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.getuid(), 0):
        raise UnsafeFolder(
            f"The app's folder {path} is inside {parent}, which belongs to another user "
            f"(uid {st.st_uid}): that user can replace it.",
            "Use a folder under your own home (pass --data-dir, or set SMARTSPEC_DATA_DIR).",
        )
    if mode & 0o002 and not mode & stat.S_ISVTX:
        raise UnsafeFolder(
            f"The app's folder {path} is inside {parent}, which every user can write "
            f"(mode {mode:04o}, no sticky bit): anyone can replace it.",
            f"Use a folder under your own home (--data-dir), or `chmod o-w '{parent}'`.",
        )


def check_trusted_program(program: str | os.PathLike[str], setting: str) -> None:
    """Refuse to run ``program`` when another user could have replaced it: the file or a
    folder from it up to / (of the path as given and of the file it resolves to) owned by
    another user than us or root, or writable by everyone (folders: without the sticky bit).
    ``setting`` names where the path came from, for the fix. POSIX only."""
    if not POSIX:
        return
    given = Path(os.path.abspath(os.path.expanduser(os.fspath(program))))
    real = Path(os.path.realpath(given))
    for target in dict.fromkeys([given, real]):
        for i, item in enumerate([target, *target.parents]):
            try:
                st = os.stat(item)
            except OSError:
                continue
            mode = stat.S_IMODE(st.st_mode)
            foreign = st.st_uid not in (os.getuid(), 0)
            writable = bool(mode & 0o002) and (i == 0 or not mode & stat.S_ISVTX)
            if i == 0 and mode & 0o020 and foreign:
                writable = True
            if foreign or writable:
                what = "the program" if i == 0 else "the folder"
                why = (
                    f"belongs to another user (uid {st.st_uid})"
                    if foreign
                    else f"is writable by every user (mode {mode:04o})"
                )
                raise UnsafeFolder(
                    f"Refusing to run {given}: {what} {item} {why}, so another user could "
                    "replace it.",
                    f"Install it where only you or root can write (e.g. `smartspec-desktop "
                    f"opencode install`, or npm install -g), or fix {setting}.",
                )
