"""What a remote folder would have OpenCode load, listed on its host (issue 15: the trust
banner and the CLI's note for a remote workspace, like :func:`..servers.trust.find_project_code`
for a local one).

One remote command over the system ssh in batch mode (:data:`.scripts.PROJECT`, the folder as
its ``$1``, quoted): it walks the same folders and globs as the local finder and prints
NUL-separated fields (file names cannot hold a NUL, so a hostile repository cannot forge a
record), with each config file's text as base64. Here the names are kept as data (shown, never
run); the config files are parsed as JSONC by the same code as local ones. A connection that
fails leaves the list unknown (``remote=True`` with the reason), never empty.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping

from smartspec_desktop.core.errors import SmartSpecError
from smartspec_desktop.core.remote import scripts
from smartspec_desktop.core.remote.address import parse_remote
from smartspec_desktop.core.remote.ssh import run_remote
from smartspec_desktop.core.servers.trust import (
    MAX_LISTED,
    ProjectCode,
    read_config_text,
    trust_key,
)

log = logging.getLogger(__name__)

#: How long the listing may take (a slow host or a huge .opencode folder).
LIST_TIMEOUT = 30.0
KINDS = {"plugin": "plugins", "tool": "tools", "prompt": "prompts"}


def list_remote_code(
    address: str,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = LIST_TIMEOUT,
) -> ProjectCode:
    """The project code of the remote folder ``address`` (``ssh://…``), listed on its host."""
    key = trust_key(address)
    try:
        addr = parse_remote(address)
    except SmartSpecError as e:
        return ProjectCode(key, remote=True, unlisted=e.problem)
    try:
        result = run_remote(addr, scripts.PROJECT, addr.path, timeout=timeout, environ=environ)
    except SmartSpecError as e:
        log.info("could not list the project code of %s: %s", address, e.problem)
        return ProjectCode(key, remote=True, unlisted=e.problem)
    return parse_listing(key, addr.display_host, result.stdout, result.code)


def parse_listing(key: str, host: str, output: str, code: int = 0) -> ProjectCode:
    """:data:`.scripts.PROJECT`'s output as a :class:`ProjectCode` (unknown when it did not
    run through)."""
    fields = output.split("\0")
    if fields[:1] == ["nodir"]:
        return ProjectCode(key, remote=True, unlisted=f"the folder cannot be entered on {host}")
    if code != 0 or fields[:1] != ["ws"] or len(fields) < 2:
        return ProjectCode(key, remote=True, unlisted=f"the listing on {host} failed (exit {code})")
    found = ProjectCode(key, host=host, root=fields[1])
    lists: dict[str, set[str]] = {name: set() for name in KINDS.values()}
    i = 2
    while i + 1 < len(fields):
        kind, path = fields[i], fields[i + 1]
        if kind == "config" and i + 2 < len(fields):
            _config(found, path, fields[i + 2])
            i += 3
            continue
        if kind in KINDS and path.startswith("/"):
            lists[KINDS[kind]].add(path)
        i += 2
    for name, paths in lists.items():
        getattr(found, name).extend(sorted(paths)[:MAX_LISTED])
    return found


def _config(found: ProjectCode, path: str, encoded: str) -> None:
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as e:
        found.config_files.append(path)
        found.problems.append(f"{path}: cannot be read ({type(e).__name__})")
        return
    read_config_text(path, text, found)
