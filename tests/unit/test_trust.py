"""Workspace trust: the finder of project code and the trust store (core, no Qt)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from smartspec_desktop.core.servers.trust import (
    DISABLE_PROJECT_CONFIG_ENV,
    ConfigCommand,
    TrustStore,
    apply_trust,
    find_project_code,
    loads_jsonc,
    trust_key,
)

# ----------------------------------------------------------------------------------- finder


def test_plain_folder_has_no_project_code(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print(1)\n")
    code = find_project_code(tmp_path)
    assert not code.any and not code.runs_code and code.lines() == []


def test_finds_plugins_tools_and_prompts(tmp_path: Path) -> None:
    dot = tmp_path / ".opencode"
    for rel in (
        "plugin/a.js",
        "plugins/b.ts",
        "plugin/readme.txt",
        "tool/t.js",
        "agent/sub/rev.md",
        "commands/go.md",
    ):
        (dot / rel).parent.mkdir(parents=True, exist_ok=True)
        (dot / rel).write_text("x")
    (tmp_path / "AGENTS.md").write_text("be nice")
    code = find_project_code(tmp_path)
    assert code.plugins == [str(dot / "plugin/a.js"), str(dot / "plugins/b.ts")]
    assert code.tools == [str(dot / "tool/t.js")]
    assert set(code.prompts) == {
        str(dot / "agent/sub/rev.md"),
        str(dot / "commands/go.md"),
        str(tmp_path / "AGENTS.md"),
    }
    assert code.runs_code
    assert any(line.startswith("plugin ") and "a.js" in line for line in code.lines())


def test_finds_local_mcp_commands_in_jsonc(tmp_path: Path) -> None:
    (tmp_path / "opencode.jsonc").write_text(
        """{
  // a comment with "quotes" and a URL http://x
  "mcp": {
    "local-one": {"type": "local", "command": ["node", "srv.js", "--flag=//not-a-comment"]},
    /* block
       comment */
    "remote": {"type": "remote", "url": "https://example.invalid/mcp"},
    "off": {"type": "local", "command": ["never"], "enabled": false},
  },
  "plugin": ["opencode-some-plugin@1.0.0",],
  "lsp": {"py": {"command": ["pylsp"]}},
  "formatter": {"fmt": {"command": ["./fmt.sh", "$FILE"]}}
}
"""
    )
    code = find_project_code(tmp_path)
    src = str(tmp_path / "opencode.jsonc")
    assert code.problems == []
    assert code.commands == [
        ConfigCommand("MCP server", "local-one", ("node", "srv.js", "--flag=//not-a-comment"), src),
        ConfigCommand("LSP server", "py", ("pylsp",), src),
        ConfigCommand("formatter", "fmt", ("./fmt.sh", "$FILE"), src),
    ]
    assert code.npm_plugins == [f"opencode-some-plugin@1.0.0  ({src})"]
    assert code.runs_code


def test_broken_config_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "opencode.json").write_text('{"mcp": {"x": {"type": "local", "command": ["a"]}')
    (tmp_path / ".opencode").mkdir()
    (tmp_path / ".opencode" / "opencode.jsonc").write_text("/* never closed")
    code = find_project_code(tmp_path)
    assert len(code.problems) == 2
    assert any("opencode.json" in p and "line 1" in p for p in code.problems)
    assert any("unterminated" in p for p in code.problems)
    assert code.any and any(line.startswith("cannot check") for line in code.lines())


def test_non_object_config_and_binary_garbage(tmp_path: Path) -> None:
    (tmp_path / "opencode.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / ".opencode").mkdir()
    (tmp_path / ".opencode" / "opencode.json").write_text("[1, 2]")
    code = find_project_code(tmp_path)
    assert len(code.problems) == 2


def test_looks_up_to_the_git_root_only(tmp_path: Path) -> None:
    above = tmp_path / "above"
    repo = above / "repo"
    ws = repo / "sub" / "ws"
    ws.mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "opencode.json").write_text(json.dumps({"mcp": {"r": {"command": ["r"]}}}))
    (above / "opencode.json").write_text(json.dumps({"mcp": {"a": {"command": ["a"]}}}))
    assert [c.name for c in find_project_code(ws).commands] == ["r"]


def test_loads_jsonc_keeps_strings_intact() -> None:
    assert loads_jsonc('{"a": "x // y /* z */", "b": [1, 2,], }') == {
        "a": "x // y /* z */",
        "b": [1, 2],
    }
    assert loads_jsonc('{"q": "say \\"hi\\" // still"}') == {"q": 'say "hi" // still'}
    with pytest.raises(ValueError, match="line 3"):
        loads_jsonc('{\n "a": 1\n "b": 2}')


def test_apply_trust_sets_or_clears_the_switch() -> None:
    env = {DISABLE_PROJECT_CONFIG_ENV: "0"}
    apply_trust(env, trusted=False)
    assert env[DISABLE_PROJECT_CONFIG_ENV] == "1"
    apply_trust(env, trusted=True)
    assert DISABLE_PROJECT_CONFIG_ENV not in env


# ------------------------------------------------------------------------------------ store


def test_store_trust_revoke_and_file_mode(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    store = TrustStore(tmp_path / "state" / "trust.json")
    assert not store.is_trusted(ws) and store.entries() == []
    assert store.trust(ws) is True
    assert store.trust(str(ws) + "/") is False, "the same folder, however it is spelled"
    assert store.is_trusted(ws)
    assert [e.path for e in store.entries()] == [str(ws.resolve())]
    assert stat.S_IMODE(os.stat(store.file).st_mode) == 0o600
    data = json.loads(store.file.read_text())
    assert data["version"] == 1 and str(ws.resolve()) in data["trusted"]
    # Another store on the same file (another process) sees it.
    assert TrustStore(store.file).is_trusted(ws)
    assert store.untrust(ws) is True and store.untrust(ws) is False
    assert not store.is_trusted(ws)


def test_symlink_and_subfolder_and_worktree_are_separate(tmp_path: Path) -> None:
    ws = tmp_path / "repo"
    (ws / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(ws)
    store = TrustStore(tmp_path / "trust.json")
    store.trust(link)
    assert store.is_trusted(ws), "a symlink is the folder it points to"
    assert not store.is_trusted(ws / "sub")
    assert not store.is_trusted(tmp_path / "repo-worktree")


def test_untrust_a_deleted_folder(tmp_path: Path) -> None:
    ws = tmp_path / "gone"
    ws.mkdir()
    store = TrustStore(tmp_path / "trust.json")
    store.trust(ws)
    ws.rmdir()
    assert store.untrust(ws) is True and store.entries() == []


@pytest.mark.allow_log(r"storage.atomic: .*unreadable", reason="the corrupt file is the test")
def test_corrupt_store_trusts_nothing_and_warns(tmp_path: Path) -> None:
    f = tmp_path / "trust.json"
    f.write_text("{not json")
    store = TrustStore(f)
    assert not store.is_trusted(tmp_path)
    (warning,) = store.drain_warnings()
    assert "unreadable" in warning and "moved aside" in warning
    assert store.drain_warnings() == []
    assert store.trust(tmp_path) and store.is_trusted(tmp_path)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TrustStore(tmp_path / "trust.json")
    store.trust(tmp_path / "a")
    before = store.file.read_text()

    def crash(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.trust(tmp_path / "b")
    assert store.file.read_text() == before, "the old file is intact"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _trust_many(file: str, base: str, start: int) -> None:
    store = TrustStore(Path(file))
    for i in range(start, start + 15):
        store.trust(os.path.join(base, f"ws{i}"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    file = tmp_path / "trust.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_trust_many, args=(str(file), str(tmp_path), n * 100)) for n in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entries = {e.path for e in TrustStore(file).entries()}
    expected = {trust_key(tmp_path / f"ws{n * 100 + i}") for n in range(4) for i in range(15)}
    assert entries == expected
