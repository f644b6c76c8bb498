"""A remote folder's project code, listed on its host (issue 15): the host's script
(:data:`scripts.PROJECT`, run here with ``sh`` as ssh would run it there) finds what the local
finder finds, and a hostile repository's names stay data: nothing in them runs, and none can
forge a record."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from smartspec_desktop.core.remote import scripts
from smartspec_desktop.core.remote.projectcode import parse_listing
from smartspec_desktop.core.servers.trust import (
    REMOTE_UNLISTED,
    find_project_code,
    look_for_project_code,
)

KEY = "ssh://devbox/srv/proj"


def _listing(folder: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """The script as the host runs it (``sh -c SCRIPT smartspec FOLDER``)."""
    return subprocess.run(
        ["sh", "-c", scripts.PROJECT, "smartspec", str(folder)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
        cwd="/",
    )


def _tree(root: Path) -> Path:
    """A git checkout with code at the root and in the workspace (a subfolder)."""
    (root / ".git").mkdir(parents=True)
    (root / "opencode.json").write_text(
        json.dumps({"mcp": {"db": {"type": "local", "command": ["node", "db.js"]}}})
    )
    ws = root / "sub" / "ws"
    (ws / ".opencode" / "plugins").mkdir(parents=True)
    (ws / ".opencode" / "plugins" / "p.ts").write_text("export default {}")
    (ws / ".opencode" / "tool").mkdir()
    (ws / ".opencode" / "tool" / "t.js").write_text("")
    (ws / ".opencode" / "agent" / "deep").mkdir(parents=True)
    (ws / ".opencode" / "agent" / "deep" / "a.md").write_text("x")
    (ws / "AGENTS.md").write_text("be nice")
    (ws / ".opencode" / "opencode.jsonc").write_text(
        '{\n  // comment\n  "plugin": ["some-npm-plugin"],\n  "formatter": {"f": '
        '{"command": ["fmt", "$FILE"]}},\n}\n'
    )
    return ws


def test_the_hosts_listing_finds_what_the_local_finder_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ws = _tree(tmp_path / "repo")
    r = _listing(ws, tmp_path / "home")
    assert r.returncode == 0, r.stderr
    remote = parse_listing(KEY, "devbox", r.stdout)
    local = find_project_code(ws)
    assert not remote.remote and remote.host == "devbox" and remote.root == str(ws.resolve())
    for name in ("plugins", "tools", "prompts", "npm_plugins", "commands", "config_files"):
        assert sorted(map(str, getattr(remote, name))) == sorted(map(str, getattr(local, name)))
    assert remote.problems == [] and remote.runs_code
    assert sorted(remote.lines()) == sorted(local.lines())
    assert "plugin .opencode/plugins/p.ts" in remote.lines()
    assert any(line.startswith("MCP server 'db': node db.js") for line in remote.lines())

    # Without a git checkout only the folder itself counts, as locally.
    (tmp_path / "repo" / ".git").rmdir()
    alone = parse_listing(KEY, "devbox", _listing(ws, tmp_path / "home").stdout)
    assert alone.commands == find_project_code(ws).commands
    assert not any(c.name == "db" for c in alone.commands)


def test_hostile_names_are_data_not_commands(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plugins = ws / ".opencode" / "plugin"
    plugins.mkdir(parents=True)
    names = [
        "$(touch pwned).js",
        "`touch pwned`.js",
        "a;b|c&d %s %n.js",
        "nl\nplugin\nevil.js",  # a newline cannot start a record
        "quote'\"q.js",
        "-n.js",
    ]
    for name in names:
        (plugins / name).write_text("")
    # A config whose text holds the field separator's look-alikes and a forged record.
    (ws / "opencode.json").write_text('{"plugin": ["ok\\u0000tool"], "x": "\\nconfig\\n"}')
    r = _listing(ws, tmp_path / "home")
    assert r.returncode == 0, r.stderr
    code = parse_listing(KEY, "devbox", r.stdout)
    assert not (ws / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert sorted(Path(p).name for p in code.plugins) == sorted(names)
    assert code.tools == [] and code.problems == []
    assert code.npm_plugins == [f"ok\0tool  ({ws.resolve()}/opencode.json)"]


def test_a_folder_that_cannot_be_listed_is_unknown_not_empty(tmp_path: Path) -> None:
    gone = _listing(tmp_path / "missing", tmp_path)
    code = parse_listing(KEY, "devbox", gone.stdout, gone.returncode)
    assert code.remote and code.any and "cannot be entered on devbox" in code.unlisted
    assert parse_listing(KEY, "devbox", "", 1).remote
    broken = parse_listing(KEY, "devbox", "ws\0/srv/proj\0config\0/srv/proj/opencode.json\0@@\0")
    assert broken.problems == ["/srv/proj/opencode.json: cannot be read (Error)"]
    # Junk kinds and relative paths are ignored.
    junk = parse_listing(KEY, "devbox", "ws\0/srv/proj\0run\0rm -rf /\0plugin\0rel.js\0")
    assert not junk.any


@pytest.mark.allow_log(r"core\.remote\.projectcode: could not list", reason="no such host")
def test_an_unreachable_host_leaves_the_list_unknown_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host nowhere\n  HostName 127.0.0.1\n  Port 1\n")
    code = look_for_project_code(
        "ssh://nowhere/srv/p", environ={"SMARTSPEC_SSH_CONFIG": str(config), "PATH": "/usr/bin"}
    )
    assert code.remote and "nowhere cannot be reached" in code.unlisted, code.unlisted
    (line,) = code.lines()
    assert line.startswith("whatever the remote folder holds (it could not be listed: ")
    assert find_project_code("ssh://nowhere/srv/p").lines() == [REMOTE_UNLISTED]  # no ssh
