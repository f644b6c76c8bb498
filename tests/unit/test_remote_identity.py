"""A remote workspace's address as its identity outside the server engine (issue 15): names,
settings, trust. Nothing resolves it as a local path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smartspec_desktop.core.remote.naming import (
    canonical,
    not_for_remote,
    remote_of,
    workspace_host,
    workspace_label,
    workspace_name,
)
from smartspec_desktop.core.servers.trust import (
    REMOTE_UNLISTED,
    TrustStore,
    find_project_code,
    trust_key,
)
from smartspec_desktop.core.storage.config import Settings, load_settings, save_settings

REMOTE = "ssh://me@devbox:2222/home/me/proj"


def test_names_of_local_and_remote_workspaces(tmp_path: Path) -> None:
    assert workspace_name(REMOTE) == "proj"
    assert workspace_host(REMOTE) == "me@devbox:2222"
    assert workspace_label(REMOTE) == "proj — me@devbox:2222"
    assert workspace_label("ssh://devbox/") == "/ — devbox"
    local = str(tmp_path / "gone" / "alpha")  # no such folder: still named, nothing touched
    assert workspace_name(local) == workspace_label(local) == "alpha"
    assert workspace_host(local) == ""
    # A broken address (a hand-edited file) is shown as it is, never as a local path.
    assert remote_of("ssh://bad host/x") is None
    assert workspace_label("ssh://bad host/x") == "ssh://bad host/x"
    assert canonical("  SSH://me@devbox:2222/home/me/./proj/ ") == REMOTE
    assert canonical(local) == local


def test_local_only_features_say_so_on_a_remote_workspace(tmp_path: Path) -> None:
    err = not_for_remote(REMOTE, "Git worktree support")
    assert err is not None
    assert err.problem == "Git worktree support is not available for remote workspaces yet."
    assert err.fix
    assert not_for_remote(str(tmp_path), "Git worktree support") is None


def test_settings_keep_remote_workspaces_in_canonical_form(tmp_path: Path) -> None:
    s = Settings()
    s.remember_workspace(str(tmp_path))
    s.remember_workspace("ssh://me@devbox:2222/home/me/proj/")
    s.remember_workspace(REMOTE)  # the same workspace: listed once, first
    assert s.recent_workspaces == [REMOTE, str(tmp_path)]
    s.idle_minutes_by_workspace[REMOTE] = 2.5
    s.workspace_day_caps[REMOTE] = 1000
    file = tmp_path / "settings.json"
    save_settings(file, s)
    loaded, warnings = load_settings(file)
    assert warnings == []
    # Kept though no local folder of that name exists.
    assert loaded.recent_workspaces == [REMOTE, str(tmp_path)]
    assert loaded.idle_minutes_by_workspace == {REMOTE: 2.5}
    assert loaded.workspace_day_caps == {REMOTE: 1000}
    loaded.forget_workspace("SSH://me@devbox:2222/home/me/proj")
    assert loaded.recent_workspaces == [str(tmp_path)]


def test_trust_keeps_a_remote_address_unresolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A local folder that looks like the address resolved from here must not be what counts.
    decoy = tmp_path / "ssh:" / "me@devbox:2222" / "home" / "me" / "proj" / ".opencode"
    (decoy / "plugin").mkdir(parents=True)
    (decoy / "plugin" / "evil.js").write_text("x")
    assert trust_key(REMOTE) == REMOTE
    assert trust_key("ssh://me@devbox:2222/home/me/proj/") == REMOTE
    store = TrustStore(tmp_path / "trust.json")
    assert store.trust("ssh://me@devbox:2222//home/me/proj") is True
    assert store.is_trusted(REMOTE)
    assert [e.path for e in store.entries()] == [REMOTE]
    assert not store.is_trusted(os.path.realpath(REMOTE))
    code = find_project_code(REMOTE)
    assert code.remote and code.any and not code.runs_code
    assert code.plugins == [] and code.workspace == REMOTE
    assert code.lines() == [REMOTE_UNLISTED]
    assert store.untrust(REMOTE) is True
    assert store.entries() == []
