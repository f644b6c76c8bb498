"""The files of a remote workspace's folder, read and written over ssh (issue 15): what undo and
redo in a plain (non-git) remote folder need, since OpenCode keeps no snapshot there and the
files are on the host.

The names come from the agent's tool calls, so they are untrusted data: a name is accepted only
as a path relative to the workspace folder without ``.``/``..`` or empty parts (an absolute name
or one that leaves the folder is :meth:`RemoteFiles.target` ``None``), it travels to the host as
a quoted argument of a fixed script (:data:`~.scripts.READ_FILES`,
:data:`~.scripts.WRITE_FILES`), never inside a command line, and the scripts refuse any name
with a symbolic link among its parts, so nothing outside the folder is read or written. File
contents go over the channel's stdin (base64). One ssh connection reads every file of an undo,
one writes them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.remote import scripts
from smartspec_desktop.core.remote.address import RemoteAddress
from smartspec_desktop.core.remote.ssh import run_remote

log = logging.getLogger(__name__)

#: What :meth:`RemoteFiles.read_many` gives for a name with a symbolic link among its parts, or
#: that is not a regular file: it matches no recorded version, so undo counts it as changed
#: after the agent (refused unless forced, and then left as it is).
NOT_A_FILE = b""


class RemoteFilesError(SmartSpecError):
    code = "remote_files"


class RemoteFiles:
    """The folder ``root`` (an absolute path on ``addr``'s host, the workspace's folder or one
    inside it) as undo/redo see it: names relative to ``root``."""

    def __init__(
        self,
        addr: RemoteAddress,
        root: str,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.addr = addr
        self.environ = environ
        self.timeout = timeout
        base = PurePosixPath(addr.path)
        want = PurePosixPath(root or addr.path)
        try:
            inner = want.relative_to(base)
        except ValueError:
            raise RemoteFilesError(
                f"The session's folder {root} is not inside the workspace {addr}.",
                "Review the session from the workspace it was started in.",
            ) from None
        if any(part in ("..", ".") for part in inner.parts):
            raise RemoteFilesError(
                f"The session's folder {root} is not inside the workspace {addr}.",
                "Review the session from the workspace it was started in.",
            )
        #: the session folder below the workspace folder ("." for the folder itself): every
        #: name is checked from the workspace folder on, links included
        self._inner = inner

    def target(self, name: str) -> str | None:
        """``name`` (relative to the session folder) relative to the workspace folder, or None
        when it is not a plain name inside it."""
        if not name or "\x00" in name or name.startswith("/"):
            return None
        raw = name.split("/")
        if any(part in ("", ".", "..") for part in raw):
            return None
        path = self._inner.joinpath(*raw)
        return path.as_posix()

    def inside(self, name: str) -> bool:
        return self.target(name) is not None

    def _checked(self, name: str) -> str:
        target = self.target(name)
        if target is None:
            raise RemoteFilesError(
                f"{name!r} is not a file inside the workspace {self.addr}.",
                "Only files inside the workspace folder are restored.",
            )
        return target

    def read_many(self, names: Iterable[str]) -> dict[str, str | None | bytes]:
        """Each file's text, None when absent, its bytes when it is not UTF-8, or
        :data:`NOT_A_FILE`; one ssh connection for all."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        targets = [self._checked(n) for n in wanted]
        result = run_remote(
            self.addr,
            scripts.READ_FILES,
            self.addr.path,
            *targets,
            timeout=self.timeout,
            environ=self.environ,
        )
        if result.code != 0:
            raise self._failed("read", result.code, result.stderr)
        lines = iter(result.stdout.split("\n"))
        out: dict[str, str | None | bytes] = {}
        for name in wanted:
            kind = next(lines, "")
            if kind == "none":
                out[name] = None
            elif kind in ("link", "other"):
                out[name] = NOT_A_FILE
            elif kind == "file":
                chunks = []
                for line in lines:
                    if line == ".":
                        break
                    chunks.append(line)
                else:
                    raise self._garbled()
                try:
                    data = base64.b64decode("".join(chunks), validate=True)
                except (binascii.Error, ValueError):
                    raise self._garbled() from None
                try:
                    out[name] = data.decode("utf-8")
                except UnicodeDecodeError:
                    out[name] = data
            else:
                raise self._garbled()
        return out

    def write(self, plan: Mapping[str, str | None]) -> None:
        """Write each file's new text (None: remove it), one ssh connection for all. Every name
        is checked on the host before anything is written: a link among its parts, or a
        directory where the file should be, refuses the whole plan."""
        if not plan:
            return
        names = list(plan)
        args: list[str] = []
        stdin: list[str] = []
        for name in names:
            text = plan[name]
            args += ["d" if text is None else "w", self._checked(name)]
            if text is not None:
                stdin.append(base64.encodebytes(text.encode("utf-8")).decode("ascii"))
                stdin.append(".\n")
        result = run_remote(
            self.addr,
            scripts.WRITE_FILES,
            self.addr.path,
            *args,
            stdin="".join(stdin),
            timeout=self.timeout,
            environ=self.environ,
        )
        refused = [ln for ln in result.stdout.splitlines() if ln.startswith("refused ")]
        if result.code == 3 and refused:
            index = refused[-1].split()[-1]
            name = names[int(index)] if index.isdigit() and int(index) < len(names) else "?"
            raise RemoteFilesError(
                f"{name} in {self.addr} is a symbolic link, lies behind one, or is not a "
                "regular file, so it was not restored (and neither was any other file).",
                "Look at that path on the host; the app never writes through a link.",
            )
        if result.code != 0 or "done" not in result.stdout.split():
            raise self._failed("write", result.code, result.stderr)
        log.info("restored %d file(s) in %s", len(plan), self.addr)

    def _failed(self, what: str, code: int, stderr: str) -> RemoteFilesError:
        return RemoteFilesError(
            f"Could not {what} the files to restore in {self.addr} (exit {code}): "
            f"{stderr.strip()[-300:] or 'no message'}.",
            f"Check the folder and its permissions on {self.addr.display_host} "
            f"(`ssh {self.addr.display_host}`); undo there needs coreutils (base64, stat).",
        )

    def _garbled(self) -> RemoteFilesError:
        return RemoteFilesError(
            f"The host {self.addr.display_host} answered the file read in an unexpected form.",
            "Check that the host has coreutils (base64) and a POSIX sh.",
        )
