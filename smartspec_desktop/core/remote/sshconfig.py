"""The hosts to offer for a remote workspace, read from the user's OpenSSH client config.

Only for the window's "Add remote folder…" host list: ``ssh`` itself still resolves whatever
the user types (aliases, ``Match`` rules, ProxyJump, keys). What is read, as OpenSSH reads it:

- the file: ``SMARTSPEC_SSH_CONFIG`` when set (tests), else ``~/.ssh/config`` of the user this
  process runs as (OpenSSH takes the home folder from the password database, not ``$HOME``);
- keywords are case-insensitive, ``Keyword value`` or ``Keyword=value``, ``#`` starts a comment,
  arguments may be quoted;
- ``Host a b`` offers ``a`` and ``b``; patterns (``*``, ``?``) and negations (``!x``) are not
  hosts one can pick, so they are skipped (``Host *`` blocks set defaults for every host);
- ``Include`` is followed (globs, ``~``; a relative path is relative to ``~/.ssh``), at most
  16 levels deep, each file once;
- a ``Match`` block ends the current ``Host`` block: its ``HostName``/``User``/``Port`` are
  conditional, so they are not shown as a host's;
- the first value of a keyword wins, as in OpenSSH, so a host named in two blocks shows the
  first ``HostName``/``User``/``Port`` given.

Nothing here raises: an unreadable or garbled file gives what could be read (maybe nothing) and
an info in the log.
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: When set, the ssh config file to use instead of ``~/.ssh/config`` (shared with the engine).
SSH_CONFIG_ENV = "SMARTSPEC_SSH_CONFIG"
MAX_INCLUDE_DEPTH = 16
MAX_FILE_BYTES = 1_000_000
_WILDCARDS = frozenset("*?!")


@dataclass(frozen=True)
class SshHost:
    """A ``Host`` alias of the config, with what its own block says (for display)."""

    alias: str
    hostname: str = ""
    user: str = ""
    port: int | None = None

    @property
    def summary(self) -> str:
        """``user@hostname:port`` as far as the config gives it ("" when it gives nothing)."""
        target = self.hostname if self.hostname and self.hostname != self.alias else ""
        if not (target or self.user or self.port):
            return ""
        who = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{who}{target or self.alias}{port}"

    @property
    def label(self) -> str:
        """What the host list shows: ``alias — user@hostname:port``."""
        return f"{self.alias} — {self.summary}" if self.summary else self.alias


def user_ssh_dir() -> Path:
    """``~/.ssh`` of the user this process runs as (as OpenSSH finds it)."""
    home = ""
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError, AttributeError):
        pass
    return Path(home or os.path.expanduser("~")) / ".ssh"


def config_path() -> Path:
    """The ssh client config the app reads (and the engine passes to ``ssh -F``)."""
    override = os.environ.get(SSH_CONFIG_ENV, "").strip()
    return Path(override).expanduser() if override else user_ssh_dir() / "config"


@dataclass
class _Draft:
    hostname: str = ""
    user: str = ""
    port: int | None = None


@dataclass
class _Reader:
    ssh_dir: Path
    order: list[str] = field(default_factory=list)  # aliases, first spelling, in order
    drafts: dict[str, _Draft] = field(default_factory=dict)  # lower-cased alias → values
    seen: set[str] = field(default_factory=set)

    def read(self, path: Path, depth: int) -> None:
        key = os.path.realpath(path)
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            if depth == 0:
                log.debug("no ssh config at %s", path)
            return
        except OSError as e:
            log.info("cannot read the ssh config %s: %s", path, e)
            return
        if len(raw) > MAX_FILE_BYTES or b"\x00" in raw:
            log.info("ignoring the ssh config %s: not a text config file", path)
            return
        text = raw.decode("utf-8", errors="replace")
        current: list[_Draft] = []  # the drafts the current Host block writes to
        bad = 0
        for number, line in enumerate(text.splitlines(), 1):
            words = _split(line)
            if words is None:
                bad += 1
                log.info("ssh config %s line %d: unbalanced quotes; skipped", path, number)
                continue
            if not words:
                continue
            keyword, args = words[0].lower(), words[1:]
            if keyword == "host":
                current = [self._draft(a) for a in args if not (_WILDCARDS & set(a))]
            elif keyword == "match":
                current = []
            elif keyword == "include":
                if depth + 1 >= MAX_INCLUDE_DEPTH:
                    log.info("ssh config %s: Include nested too deeply; skipped", path)
                    continue
                for pattern in args:
                    for included in self._expand(pattern):
                        self.read(included, depth + 1)
            elif args and current:
                for draft in current:
                    _set(draft, keyword, args[0])

    def _draft(self, alias: str) -> _Draft:
        low = alias.lower()
        if low not in self.drafts:
            self.drafts[low] = _Draft()
            self.order.append(alias)
        return self.drafts[low]

    def _expand(self, pattern: str) -> list[Path]:
        full = os.path.expanduser(pattern)
        if not os.path.isabs(full):
            full = str(self.ssh_dir / full)
        return [Path(p) for p in sorted(glob.glob(full)) if os.path.isfile(p)]

    def hosts(self) -> list[SshHost]:
        out = []
        for alias in self.order:
            d = self.drafts[alias.lower()]
            hostname = d.hostname.replace("%h", alias).replace("%%", "%")
            out.append(SshHost(alias, hostname, d.user, d.port))
        return out


def _split(line: str) -> list[str] | None:
    """The words of one config line (``Keyword=value`` too); None when its quotes are broken."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return []
    keyword, sep, rest = stripped.partition("=")
    if sep and keyword.strip() and " " not in keyword.strip() and "\t" not in keyword.strip():
        stripped = f"{keyword.strip()} {rest.strip()}"
    try:
        lexer = shlex.shlex(stripped, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:
        return None


def _set(draft: _Draft, keyword: str, value: str) -> None:
    if keyword == "hostname" and not draft.hostname:
        draft.hostname = value
    elif keyword == "user" and not draft.user:
        draft.user = value
    elif keyword == "port" and draft.port is None and value.isdigit():
        port = int(value)
        if 0 < port < 65536:
            draft.port = port


def offered_hosts(path: Path | None = None, *, ssh_dir: Path | None = None) -> list[SshHost]:
    """The hosts of the ssh config at ``path`` (default :func:`config_path`), in file order.

    ``ssh_dir`` is where relative ``Include`` paths point (default ``~/.ssh``). Never raises."""
    reader = _Reader(ssh_dir if ssh_dir is not None else user_ssh_dir())
    try:
        reader.read(path if path is not None else config_path(), 0)
    except RecursionError:  # pragma: no cover - bounded by MAX_INCLUDE_DEPTH
        log.info("the ssh config's Includes are nested too deeply")
    return reader.hosts()
