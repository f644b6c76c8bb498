"""git on a remote workspace's host (issue 15): what :mod:`smartspec_desktop.core.worktrees`
needs to make, list, commit, merge and remove worktrees of a remote repository, with the same
code and guarantees as locally. Each git call or file operation is one ssh connection running a
fixed script (:data:`~.scripts.GIT`, :data:`~.scripts.FS`) with its arguments quoted; the
worktrees live on the host in ``~/.local/share/smartspec-desktop/worktrees/<repo hash>/<name>``
(its XDG data dir), and each one is a remote workspace of its own
(``ssh://host/<that folder>``), with its own server.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from smartspec_desktop.core.remote import scripts
from smartspec_desktop.core.remote.address import RemoteAddress
from smartspec_desktop.core.remote.ssh import run_remote

GIT_TIMEOUT = 60.0


class RemoteGit:
    """The :class:`~smartspec_desktop.core.worktrees.GitHost` of ``addr``'s host."""

    def __init__(self, addr: RemoteAddress, environ: Mapping[str, str] | None = None) -> None:
        self.addr = addr
        self.environ = environ
        self._base: Path | None = None
        # One operation (a create, a listing) asks for the same folders several times: each
        # answer costs an ssh connection, so the instance (one operation's) keeps them.
        self._dirs: dict[str, bool] = {}
        self._toplevel: dict[str, subprocess.CompletedProcess[str]] = {}

    def _posix(self, path: Path) -> str:
        return PurePosixPath(path.as_posix()).as_posix()

    def run(
        self, args: list[str], cwd: Path, *, timeout: float = GIT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        from smartspec_desktop.core.worktrees import GitError, GitMissing, WorktreeError

        if args == ["rev-parse", "--show-toplevel"] and self._posix(cwd) in self._toplevel:
            return self._toplevel[self._posix(cwd)]
        r = run_remote(
            self.addr, scripts.GIT, self._posix(cwd), *args, timeout=timeout, environ=self.environ
        )
        host = self.addr.display_host
        if r.code == 201:
            raise WorktreeError(f"{cwd} is not a folder on {host}.", "Pick an existing folder.")
        if r.code == 202:
            raise GitMissing(
                f"git is not installed on {host} (or not on its PATH).",
                f"Install git there (Debian/Ubuntu: ssh {host} sudo apt-get install -y git).",
            )
        if r.code == 124:  # (not ours: a `timeout` wrapper of the user's)
            raise GitError(f"git {args[0]} timed out on {host}.", "Check the repository there.")
        done = subprocess.CompletedProcess(["git", *args], r.code, r.stdout, r.stderr)
        if args == ["rev-parse", "--show-toplevel"]:
            self._toplevel[self._posix(cwd)] = done
        return done

    def _fs(self, op: str, path: Path, *more: str) -> str:
        from smartspec_desktop.core.worktrees import WorktreeError

        r = run_remote(self.addr, scripts.FS, op, self._posix(path), *more, environ=self.environ)
        if r.code != 0:
            raise WorktreeError(
                f"Could not {op} {path} on {self.addr.display_host} (exit {r.code}): "
                f"{r.stderr.strip()[-300:] or 'no message'}.",
                f"Check that folder and its permissions (`ssh {self.addr.display_host}`).",
            )
        return r.stdout

    def is_dir(self, path: Path) -> bool:
        key = self._posix(path)
        if key not in self._dirs:
            self._dirs[key] = self._fs("isdir", path).strip() == "yes"
        return self._dirs[key]

    def exists(self, path: Path) -> bool:
        return self._fs("exists", path).strip() == "yes"

    def resolve(self, path: Path) -> Path:
        """The path itself: git reports physical paths (``--show-toplevel``, and the worktree
        paths it was given, made from the physical base folder), so no connection is spent."""
        return path

    def names(self, folder: Path) -> set[str]:
        return set(filter(None, self._fs("names", folder).split("\n")))

    def text_lines(self, cwd: Path, rels: list[str]) -> int:
        out = self._fs("lines", cwd, *(f"./{r}" for r in rels)).strip()
        return int(out) if out.isdigit() else 0

    def remove_tree(self, path: Path) -> None:
        self._fs("rmtree", path)

    def base_folder(self, base_dir: Path) -> Path:
        """The app's worktree folder on the host (``base_dir`` is this machine's: unused)."""
        if self._base is None:
            self._base = Path(self._fs("base", Path("/")).rstrip("\n"))
            if not self._base.is_absolute():
                from smartspec_desktop.core.worktrees import WorktreeError

                raise WorktreeError(
                    f"{self.addr.display_host} gave no folder for the worktrees.",
                    "Check the home folder of that account.",
                )
        return self._base

    def workspace(self, path: Path) -> str:
        return str(RemoteAddress(self.addr.host, self._posix(path), self.addr.user, self.addr.port))
