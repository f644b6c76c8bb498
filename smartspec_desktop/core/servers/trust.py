"""Workspace trust: a workspace's own code runs only after the user said so.

A workspace can carry code that OpenCode runs by itself, inside or under ``opencode serve`` with
the server's environment: plugins and tools (``.opencode/plugin(s)/*.js|ts``,
``.opencode/tool(s)/*``), local MCP servers, LSP servers and formatters and npm plugins declared
in its ``opencode.json``/``opencode.jsonc``. Until the user trusts the workspace its server starts
with ``OPENCODE_DISABLE_PROJECT_CONFIG=1``. On OpenCode 1.18.33 that makes OpenCode ignore, for
the workspace and every folder up to its git root: ``opencode.json``/``opencode.jsonc``, the
``.opencode/`` folders (plugins, tools, agents, commands, modes) and the instruction files
(``AGENTS.md``, ``CLAUDE.md``, ``CONTEXT.md``) (read in the binary's config loader; plugins and
local MCP servers verified end to end by tests/integration/test_trust.py). The user's global
config (``~/.config/opencode``, ``~/.opencode``) still applies.

Trust is kept per workspace in ``trust.json`` in the app's state folder (0600, written atomically
under a file lock, since the CLI and the window both write it), keyed by the normalised path
(absolute, symlinks resolved). A git worktree or a subfolder of a trusted folder is *not*
trusted: it is another checkout (another branch, maybe a stranger's pull request), so it is
asked about on its own. A change takes effect at the next start of the workspace's server.

:func:`find_project_code` lists what a workspace would run, without running anything (the JSON
is parsed as JSONC; a broken file is reported, never raised).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from smartspec_desktop.core.errors import StateError, WorkspaceError
from smartspec_desktop.core.remote.address import is_remote, parse_remote
from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

#: Set to "1" in the environment of an untrusted workspace's server.
DISABLE_PROJECT_CONFIG_ENV = "OPENCODE_DISABLE_PROJECT_CONFIG"
TRUST_VERSION = 1
#: What an untrusted start leaves out, in the words the window and the CLI use.
UNTRUSTED_EFFECT = (
    "OpenCode ignores this folder's opencode.json, its .opencode/ plugins, tools, agents, "
    "commands and modes, its MCP servers and its AGENTS.md/CLAUDE.md instructions"
)
TAKES_EFFECT = "A trust change takes effect at the next start of the folder's server."


def trust_key(path: str | os.PathLike[str]) -> str:
    """The normalised path trust is kept under: absolute, ``~`` expanded, symlinks resolved,
    case-folded where the file system is (Windows). Works for a folder that no longer exists."""
    raw = os.fspath(path)
    if is_remote(raw):
        with contextlib.suppress(WorkspaceError):
            return str(parse_remote(raw))  # a remote folder: its canonical address
    return os.path.normcase(os.path.realpath(os.path.expanduser(raw)))


# ------------------------------------------------------------------------------------ store


@dataclass(frozen=True)
class TrustEntry:
    path: str
    trusted_at: str


class TrustStore:
    """The trusted workspaces, in one JSON file shared by every CLI run and the window."""

    def __init__(self, file: Path, *, lock_timeout: float = 10.0) -> None:
        self.file = file
        self.lock = FileLock(str(file) + ".lock", timeout=lock_timeout)
        self.warnings: list[str] = []

    def _load(self) -> dict[str, dict[str, Any]]:
        data, warning = read_json_object(self.file)
        if warning:
            self.warnings.append(warning)
        raw = data.get("trusted", {})
        if not isinstance(raw, dict):
            return {}
        return {k: v if isinstance(v, dict) else {} for k, v in raw.items() if isinstance(k, str)}

    def _update(self, change: Any) -> bool:
        self.file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with self.lock:
                trusted = self._load()
                changed = bool(change(trusted))
                if changed:
                    atomic_write_json(self.file, {"version": TRUST_VERSION, "trusted": trusted})
                return changed
        except Timeout:
            raise StateError(
                f"The trust list {self.file} is locked by another run of the app.",
                "Try again in a moment; if it stays locked, delete the .lock file next to it.",
            ) from None

    def drain_warnings(self) -> list[str]:
        """The warnings gathered since the last call (e.g. a corrupt file moved aside)."""
        out, self.warnings = self.warnings, []
        return out

    def is_trusted(self, workspace: str | os.PathLike[str]) -> bool:
        return trust_key(workspace) in self._load()

    def entries(self) -> list[TrustEntry]:
        return [
            TrustEntry(path, str(info.get("trusted_at", "")))
            for path, info in sorted(self._load().items())
        ]

    def trust(self, workspace: str | os.PathLike[str]) -> bool:
        """Trust ``workspace``; False when it already was."""
        key = trust_key(workspace)

        def add(trusted: MutableMapping[str, dict[str, Any]]) -> bool:
            if key in trusted:
                return False
            trusted[key] = {"trusted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            return True

        changed = self._update(add)
        if changed:
            log.info("trusted the workspace %s", key)
        return changed

    def untrust(self, workspace: str | os.PathLike[str]) -> bool:
        """Revoke trust in ``workspace``; False when it was not trusted."""
        key = trust_key(workspace)
        changed = self._update(lambda trusted: trusted.pop(key, None) is not None)
        if changed:
            log.info("revoked trust in the workspace %s", key)
        return changed


def apply_trust(env: MutableMapping[str, str], trusted: bool) -> None:
    """Make ``env`` (a server's environment) load the project's config only when trusted.

    The user's own ``OPENCODE_DISABLE_PROJECT_CONFIG`` is replaced: trust is decided here."""
    if trusted:
        env.pop(DISABLE_PROJECT_CONFIG_ENV, None)
    else:
        env[DISABLE_PROJECT_CONFIG_ENV] = "1"


# ----------------------------------------------------------------------------------- finder

MAX_LISTED = 50
CONFIG_NAMES = ("opencode.jsonc", "opencode.json")
#: The line of a remote workspace's project code when it was not listed (issue 15).
REMOTE_UNLISTED = (
    "whatever the remote folder holds (not listed from here: look on the host before you trust it)"
)


@dataclass(frozen=True)
class ConfigCommand:
    """A program a config file would have OpenCode start (an MCP server, an LSP, a formatter)."""

    kind: str  # "MCP server", "LSP server", "formatter"
    name: str
    command: tuple[str, ...]
    source: str

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}': {' '.join(self.command)}  ({self.source})"


@dataclass
class ProjectCode:
    """What a workspace would have OpenCode load. Paths are absolute."""

    workspace: str
    plugins: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    #: npm packages named in a config's ``plugin`` list (installed and run at start).
    npm_plugins: list[str] = field(default_factory=list)
    commands: list[ConfigCommand] = field(default_factory=list)
    #: Markdown that changes the agent's prompt: agents, commands, modes, instructions.
    prompts: list[str] = field(default_factory=list)
    config_files: list[str] = field(default_factory=list)
    #: Files that could not be read or parsed (OpenCode may refuse them, or run them).
    problems: list[str] = field(default_factory=list)
    #: A remote workspace (issue 15) whose files were not listed (see ``unlisted``), so what
    #: it would load is unknown (an untrusted one still loads none of it).
    remote: bool = False
    #: The host a remote folder's files were listed on, over ssh (``look_for_project_code``).
    host: str = ""
    #: The folder the paths are shown relative to, when it is not ``workspace`` (a remote
    #: folder's path on its host).
    root: str = ""
    #: Why a remote folder's files could not be listed (the connection failed, no folder).
    unlisted: str = ""

    @property
    def runs_code(self) -> bool:
        """Whether trusting the folder would let it run programs of its own."""
        return bool(self.plugins or self.tools or self.npm_plugins or self.commands)

    @property
    def any(self) -> bool:
        return bool(
            self.runs_code or self.prompts or self.config_files or self.problems or self.remote
        )

    def lines(self) -> list[str]:
        """One line per thing it would run or load, for the banner and the CLI (paths inside
        the workspace are shown relative to it)."""
        rel = self._relative
        out = [f"plugin {rel(p)}" for p in self.plugins]
        out += [f"tool {rel(p)}" for p in self.tools]
        out += [f"npm plugin {rel(p)}" for p in self.npm_plugins]
        out += [
            f"{c.kind} '{c.name}': {' '.join(c.command)}  (in {rel(c.source)})"
            for c in self.commands
        ]
        out += [f"agent/command/instructions {rel(p)}" for p in self.prompts]
        out += [f"cannot check {rel(p)}" for p in self.problems]
        if self.remote and self.unlisted:
            out.append(
                f"whatever the remote folder holds (it could not be listed: {self.unlisted}; "
                "look on the host before you trust it)"
            )
        elif self.remote:
            out.append(REMOTE_UNLISTED)
        return out

    def _relative(self, text: str) -> str:
        sep = "/" if self.root else os.sep
        prefix = (self.root or self.workspace).rstrip(sep) + sep
        return text.replace(prefix, "")


def project_folders(workspace: str | os.PathLike[str]) -> list[Path]:
    """The folders OpenCode reads project config from: the workspace and each folder above it
    up to the git root (the first holding ``.git``), never the home folder or ``/``; just the
    workspace when it is not in a git checkout. None for a remote folder (not looked into
    from here: it is on another machine)."""
    if is_remote(os.fspath(workspace)):
        return []
    ws = Path(trust_key(workspace))
    home = Path(trust_key("~"))
    chain: list[Path] = []
    for folder in [ws, *ws.parents]:
        if folder in (home, Path(folder.anchor)) and folder != ws:
            break
        chain.append(folder)
        if (folder / ".git").exists():
            return chain
    return [ws]


def _listed(folder: Path, patterns: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        try:
            found.update(str(p) for p in folder.glob(pattern) if p.is_file())
        except OSError as e:
            log.info("cannot list %s/%s: %s", folder, pattern, e)
    return sorted(found)[:MAX_LISTED]


def _code_globs(kind: str) -> list[str]:
    return [f"{folder}/*.{ext}" for folder in (kind, kind + "s") for ext in ("js", "ts")]


def find_project_code(workspace: str | os.PathLike[str]) -> ProjectCode:
    """List the project code of ``workspace`` (see the module docstring). Runs nothing; never
    raises for the folder's content. A remote workspace is not looked into (``remote``)."""
    if is_remote(os.fspath(workspace)):
        return ProjectCode(trust_key(workspace), remote=True)
    code = ProjectCode(trust_key(workspace))
    for folder in project_folders(workspace):
        dot = folder / ".opencode"
        if dot.is_dir():
            code.plugins += _listed(dot, _code_globs("plugin"))
            code.tools += _listed(dot, _code_globs("tool"))
            code.prompts += _listed(
                dot,
                ("agent/**/*.md", "agents/**/*.md", "command/**/*.md", "commands/**/*.md")
                + ("mode/*.md", "modes/*.md"),
            )
            for name in CONFIG_NAMES:
                if (dot / name).is_file():
                    _read_config(dot / name, code)
        for name in CONFIG_NAMES:
            if (folder / name).is_file():
                _read_config(folder / name, code)
        for name in ("AGENTS.md", "CLAUDE.md", "CONTEXT.md"):
            if (folder / name).is_file():
                code.prompts.append(str(folder / name))
    return code


def look_for_project_code(
    workspace: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> ProjectCode:
    """:func:`find_project_code`, and for a remote workspace the same list made on its host
    over ssh (one remote command, batch mode: see core/remote/projectcode.py). Blocks (a
    worker thread's call); never raises for the folder's content or the connection."""
    if is_remote(os.fspath(workspace)):
        from smartspec_desktop.core.remote.projectcode import list_remote_code

        return list_remote_code(os.fspath(workspace), environ=environ)
    return find_project_code(workspace)


def _read_config(path: Path, code: ProjectCode) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        code.config_files.append(str(path))
        code.problems.append(f"{path}: {e}")
        return
    read_config_text(str(path), text, code)


def read_config_text(source: str, text: str, code: ProjectCode) -> None:
    """Add what the config file ``source`` (its ``text``) would run to ``code``."""
    code.config_files.append(source)
    try:
        data = loads_jsonc(text)
    except ValueError as e:
        code.problems.append(f"{source}: {e}")
        return
    if not isinstance(data, dict):
        code.problems.append(f"{source}: the top level is not an object")
        return
    plugins = data.get("plugin")
    if isinstance(plugins, list):
        code.npm_plugins += [f"{p}  ({source})" for p in plugins if isinstance(p, str)]
    for kind, key, entry_ok in (
        ("MCP server", "mcp", lambda e: e.get("type", "local") == "local"),
        ("LSP server", "lsp", lambda e: True),
        ("formatter", "formatter", lambda e: True),
    ):
        section = data.get(key)
        if not isinstance(section, dict):
            continue
        for name, entry in section.items():
            if not isinstance(entry, dict) or not entry_ok(entry):
                continue
            if entry.get("enabled") is False or entry.get("disabled") is True:
                continue
            command = entry.get("command")
            if isinstance(command, str):
                command = [command]
            if isinstance(command, list) and command:
                words = tuple(str(w) for w in command)
                code.commands.append(ConfigCommand(kind, str(name), words, source))


def _skip_blank(text: str, j: int) -> int:
    """The index of the next character of ``text`` from ``j`` on that is not blank or a comment."""
    n = len(text)
    while j < n:
        if text[j].isspace():
            j += 1
        elif text.startswith("//", j):
            k = text.find("\n", j)
            j = n if k < 0 else k
        elif text.startswith("/*", j):
            k = text.find("*/", j + 2)
            j = n if k < 0 else k + 2
        else:
            break
    return j


def loads_jsonc(text: str) -> Any:
    """Parse JSON with comments (``//``, ``/* */``) and trailing commas, as OpenCode accepts.
    Raises ValueError (with a line number) for anything else."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                line = text.count("\n", 0, i) + 1
                raise ValueError(f"unterminated /* comment */ starting on line {line}")
            out.append("\n" * text.count("\n", i, j))  # keep line numbers for errors
            i = j + 2
        elif c == ",":
            if _skip_blank(text, i + 1) < n and text[_skip_blank(text, i + 1)] in "]}":
                i += 1  # a trailing comma: drop it
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    try:
        return json.loads("".join(out))
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON/JSONC ({e.msg} on line {e.lineno})") from None
