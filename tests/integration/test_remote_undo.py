"""Undo and redo in a plain (non-git) remote folder (issue 15), for real: the tests' sshd with a
throw-away remote account (tests/remote_host.py), the real OpenCode 1.18.33 on the "remote"
side; the backend stand-in scripts the agent's ``write``/``edit`` tool calls. OpenCode keeps no
snapshot outside git, so the app restores the files from the tool calls, reading and writing
them on the host over ssh (core/remote/files.py). What the tests check is on the host's side:
the files, their owner (written by the remote account, so through ssh), their mode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartspec_desktop.core import review
from smartspec_desktop.core.opencode.client import OpenCodeClient
from smartspec_desktop.core.remote.address import parse_remote
from smartspec_desktop.core.remote.files import NOT_A_FILE, RemoteFiles, RemoteFilesError
from smartspec_desktop.core.servers.registry import ServerRecord, ServerStatus
from smartspec_desktop.core.storage.secrets import FileStore
from tests.backend_standin import Text, ToolCall
from tests.conftest import Sandbox
from tests.integration import test_remote_ssh as _ssh
from tests.remote_host import RemoteHost

# The real host and its per-test view (no remote server outlives a test), as the SSH tests'.
remote_host = _ssh.remote_host
remote = _ssh.remote

pytestmark = pytest.mark.integration

KEEP = "".join(f"line{i}\n" for i in range(40))
WRITE_OUT = ToolCall("write", {"filePath": "out.txt", "content": "one\ntwo\nthree\n"})
EDIT_KEEP = ToolCall(
    "edit", {"filePath": "keep.txt", "oldString": "line20\n", "newString": "B\nBB\n"}
)
WRITE_SECOND = ToolCall("write", {"filePath": "sub/second.txt", "content": "2nd\n"})


def _as_remote(host: RemoteHost, path: Path, text: str, mode: int = 0o644) -> None:
    """A file of the remote account's (made by this test, as the user would have)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    os.chown(path, host.uid, host.uid)


def _owner(path: Path) -> int:
    return os.stat(path, follow_symlinks=False).st_uid


def _in_process(
    sandbox: Sandbox, remote: RemoteHost, monkeypatch: pytest.MonkeyPatch, *local_io: str
) -> tuple[dict[str, Any], str]:
    """The one running server's record and password, for core code run in this process (with
    the host's ssh config); ``local_io`` names core.review's file functions that must not run
    here: calling one fails the test."""
    (info,) = sandbox.cli_json("status")
    password = FileStore(sandbox.data_dir / "state" / "secrets").get(
        f"server-password:{info['server_id']}"
    )
    assert password
    monkeypatch.setenv("SMARTSPEC_SSH_CONFIG", str(remote.ssh_config))

    def here(*_a: object, **_k: object) -> None:
        raise AssertionError("a remote folder's file was read or written on this machine")

    for name in local_io:
        monkeypatch.setattr(review, name, here)
    return info, password


def _plain_folder(remote: RemoteHost, name: str) -> tuple[Path, str]:
    folder = remote.workspace(name)
    _as_remote(remote, folder / "keep.txt", KEEP, 0o750)
    return folder, remote.address(folder)


def _two_turns(sandbox: Sandbox, address: str) -> str:
    sandbox.backend.script(WRITE_OUT, EDIT_KEEP, Text("Done."))
    r = sandbox.cli("run", address, "write out.txt and edit keep.txt")
    assert r.returncode == 0, r.stderr
    (session,) = sandbox.cli_json("sessions", address)
    sid = str(session["id"])
    sandbox.backend.script(WRITE_SECOND, Text("Done."))
    r = sandbox.cli("run", address, "write sub/second.txt", "--session", sid)
    assert r.returncode == 0, r.stderr
    return sid


@pytest.mark.slow
def test_cli_undo_and_redo_restore_a_plain_remote_folder_on_the_host(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    folder, address = _plain_folder(remote, "plain")
    _two_turns(sandbox, address)
    assert (folder / "out.txt").read_text() == "one\ntwo\nthree\n"
    assert (folder / "sub" / "second.txt").read_text() == "2nd\n"
    assert "B\nBB\n" in (folder / "keep.txt").read_text()
    assert not (folder / ".git").exists()  # a plain folder: OpenCode keeps no snapshot

    listed = sandbox.cli_json("changes", address)
    assert [(c["path"], c["status"], c["additions"], c["deletions"]) for c in listed] == [
        ("keep.txt", "modified", 2, 1),
        ("out.txt", "added", 3, 0),
        ("sub/second.txt", "added", 1, 0),
    ]
    diff = sandbox.cli("changes", address, "--diff")
    assert diff.returncode == 0 and "+BB" in diff.stdout and "-line20" in diff.stdout

    undone = sandbox.cli_json("undo", address)
    assert undone["files"] == ["sub/second.txt"], undone
    assert not (folder / "sub" / "second.txt").exists()
    assert (folder / "out.txt").exists()

    redone = sandbox.cli("redo", address)
    assert redone.returncode == 0, redone.stderr
    assert "Redid turn" in redone.stdout and "sub/second.txt" in redone.stdout
    assert (folder / "sub" / "second.txt").read_text() == "2nd\n"
    assert _owner(folder / "sub" / "second.txt") == remote.uid  # written on the host, by ssh

    # The user edits a file on the host after the agent: undo refuses and touches nothing.
    assert sandbox.cli("undo", address).returncode == 0  # sub/second.txt again
    _as_remote(remote, folder / "out.txt", "mine\n")
    refused = sandbox.cli("undo", address)
    assert refused.returncode != 0
    assert "out.txt" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert (folder / "out.txt").read_text() == "mine\n"
    assert "B\nBB\n" in (folder / "keep.txt").read_text()

    # Put the agent's version back: the first turn is undone (the edit applied backwards, the
    # created file removed), the file keeps its mode; redo applies it again.
    _as_remote(remote, folder / "out.txt", "one\ntwo\nthree\n")
    assert sandbox.cli("undo", address).returncode == 0
    assert (folder / "keep.txt").read_text() == KEEP
    assert stat.S_IMODE(os.stat(folder / "keep.txt").st_mode) == 0o750
    assert _owner(folder / "keep.txt") == remote.uid
    assert not (folder / "out.txt").exists()
    assert sandbox.cli_json("changes", address) == []
    nothing = sandbox.cli("undo", address)
    assert nothing.returncode != 0 and "nothing to undo" in nothing.stderr.lower()

    assert sandbox.cli("redo", address).returncode == 0
    assert (folder / "out.txt").read_text() == "one\ntwo\nthree\n"
    assert "B\nBB\n" in (folder / "keep.txt").read_text()
    assert stat.S_IMODE(os.stat(folder / "keep.txt").st_mode) == 0o750


@pytest.mark.slow
def test_undo_never_follows_a_link_out_of_the_remote_folder(
    sandbox: Sandbox, remote: RemoteHost
) -> None:
    folder, address = _plain_folder(remote, "links")
    _two_turns(sandbox, address)
    # On the host, sub/ becomes a link to a folder outside the workspace holding a file with
    # the agent's very content: following the link, undo would remove that file.
    outside = remote.workspace("outside")
    _as_remote(remote, outside / "second.txt", "2nd\n")
    (folder / "sub" / "second.txt").unlink()
    (folder / "sub").rmdir()
    remote.run_as("ln", "-s", str(outside), str(folder / "sub"))

    refused = sandbox.cli("undo", address)
    assert refused.returncode != 0 and "sub/second.txt" in refused.stderr, refused.stderr
    forced = sandbox.cli("undo", address, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "left as they are: sub/second.txt" in forced.stderr
    assert (outside / "second.txt").read_text() == "2nd\n", "nothing outside was touched"
    assert (folder / "sub").is_symlink()


@pytest.mark.slow
def test_review_core_and_the_window_service_work_on_the_host_not_here(  # type: ignore[no-untyped-def]
    sandbox: Sandbox, remote: RemoteHost, monkeypatch: pytest.MonkeyPatch, qtbot
) -> None:
    """In process: core.review with the manager's kind of client, the window's ReviewService
    and the Changes view's Undo/Redo buttons on it; reading or writing the remote path on this
    machine fails the test."""
    from smartspec_desktop.services.review import ReviewService
    from smartspec_desktop.services.worker import Jobs

    folder, address = _plain_folder(remote, "inproc")
    sid = _two_turns(sandbox, address)
    info, password = _in_process(sandbox, remote, monkeypatch, "_read", "_write_plan")

    with OpenCodeClient(info["url"], password, timeout=60) as client:
        client.remote_host, client.remote_workspace = "alias", address
        result = review.undo_last_turn(client, sid)
        assert result.files == ["sub/second.txt"] and not result.snapshots
        assert not (folder / "sub" / "second.txt").exists()

    record = ServerRecord(
        info["server_id"], address, ServerStatus.RUNNING, "now", url=info["url"], host="alias"
    )
    jobs = Jobs()
    service = ReviewService(jobs)
    service.set_target(record, lambda _r: password)
    failures: list[object] = []
    service.error.connect(failures.append)
    service.refused.connect(lambda _a, e: failures.append(e))
    try:
        with qtbot.waitSignal(service.action_done, timeout=60_000) as done:
            service.redo(sid)
        assert done.args is not None and done.args[0].files == ["sub/second.txt"]
        assert (folder / "sub" / "second.txt").read_text() == "2nd\n"
        assert _owner(folder / "sub" / "second.txt") == remote.uid
        loaded: list[list[review.FileChange]] = []
        service.changes_loaded.connect(lambda _s, _t, found: loaded.append(found))
        with qtbot.waitSignal(service.changes_loaded, timeout=60_000):
            service.load(sid)
        assert [c.path for c in loaded[-1]] == ["keep.txt", "out.txt", "sub/second.txt"]
        assert failures == []

        # The Changes view itself (Agent tab), its buttons on the same service.
        from smartspec_desktop.ui.changes import ChangesView

        view = ChangesView(service)
        qtbot.addWidget(view)
        view.set_session(sid)
        qtbot.waitUntil(
            lambda: len(view.changes) == 3 and view.undo_btn.isEnabled(), timeout=60_000
        )
        view.undo_btn.click()
        qtbot.waitUntil(lambda: view.result_label.text().startswith("Undone"), timeout=60_000)
        assert view.result_label.text() == "Undone: sub/second.txt."
        assert not (folder / "sub" / "second.txt").exists()
        qtbot.waitUntil(lambda: view.redo_btn.isEnabled(), timeout=60_000)
        view.redo_btn.click()
        qtbot.waitUntil(lambda: view.result_label.text().startswith("Redone"), timeout=60_000)
        assert (folder / "sub" / "second.txt").read_text() == "2nd\n"
        qtbot.waitUntil(lambda: len(view.changes) == 3, timeout=60_000)
        assert failures == []
    finally:
        jobs.wait(30_000)


@pytest.fixture
def files(remote: RemoteHost, monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteFiles]:
    monkeypatch.setenv("SMARTSPEC_SSH_CONFIG", str(remote.ssh_config))
    folder = remote.workspace("files")
    yield RemoteFiles(parse_remote(remote.address(folder)), str(folder))


def test_remote_file_names_are_data_never_shell(files: RemoteFiles, remote: RemoteHost) -> None:
    folder = Path(files.addr.path)
    hostile = [
        "a b.txt",
        "-rf",
        "it's.txt",
        '$(touch "$HOME/pwned1")',
        "`touch pwned2`; touch pwned3",
        "new\nline.txt",
        "deep/er/*.txt",
    ]
    files.write({name: f"content of {name}\n" for name in hostile})
    for name in hostile:
        assert (folder / name).read_text() == f"content of {name}\n"
        assert _owner(folder / name) == remote.uid
    ran = [p for p in remote.home.rglob("pwned*") if p.name in ("pwned1", "pwned2", "pwned3")]
    assert ran == [], "a name was run as a command"
    assert files.read_many([*hostile, "absent.txt"]) == {
        **{name: f"content of {name}\n" for name in hostile},
        "absent.txt": None,
    }
    files.write(dict.fromkeys(hostile))  # None: remove
    assert not any((folder / name).exists() for name in hostile)

    for bad in ("../escape.txt", "/etc/passwd", "a/../../b", "", "./x", "a//b"):
        assert not files.inside(bad)
        with pytest.raises(RemoteFilesError, match="not a file inside the workspace"):
            files.write({bad: "x"})
    assert not (folder.parent / "escape.txt").exists()


def test_remote_files_refuse_links_and_write_nothing_then(
    files: RemoteFiles, remote: RemoteHost
) -> None:
    folder = Path(files.addr.path)
    outside = remote.workspace("files-outside")
    _as_remote(remote, outside / "secret.txt", "outside\n")
    remote.run_as("ln", "-s", str(outside), str(folder / "dir-link"))
    remote.run_as("ln", "-s", str(outside / "secret.txt"), str(folder / "file-link"))
    assert files.read_many(["dir-link/secret.txt", "file-link"]) == {
        "dir-link/secret.txt": NOT_A_FILE,
        "file-link": NOT_A_FILE,
    }
    for name in ("dir-link/secret.txt", "file-link", "dir-link/new.txt"):
        with pytest.raises(RemoteFilesError, match="symbolic link"):
            files.write({"fine.txt": "fine\n", name: "overwritten\n"})
        assert not (folder / "fine.txt").exists(), "nothing is written when one name is refused"
    with pytest.raises(RemoteFilesError, match="symbolic link"):
        files.write({"dir-link/secret.txt": None})
    assert (outside / "secret.txt").read_text() == "outside\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]

    binary = bytes(range(256))
    _as_remote(remote, folder / "bin.dat", "")
    (folder / "bin.dat").write_bytes(binary)
    (folder / "a-dir").mkdir()
    assert files.read_many(["bin.dat", "a-dir"]) == {"bin.dat": binary, "a-dir": NOT_A_FILE}
    with pytest.raises(RemoteFilesError, match="not a regular file"):
        files.write({"a-dir": "x"})


@pytest.mark.slow
def test_a_remote_git_folder_checks_the_hosts_files_before_undo(
    sandbox: Sandbox, remote: RemoteHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a git folder OpenCode's snapshots undo on the host; the app's check for the user's
    own edits reads the files there too (not this machine's path of the same name)."""
    folder, address = _plain_folder(remote, "gitproj")
    git = ["git", "-C", str(folder), "-c", "user.name=T", "-c", "user.email=t@example.com"]
    remote.run_as(*git, "init", "-q")
    remote.run_as(*git, "add", ".")
    remote.run_as(*git, "commit", "-qm", "initial")
    sid = _two_turns(sandbox, address)
    info, password = _in_process(sandbox, remote, monkeypatch, "_read")
    with OpenCodeClient(info["url"], password, timeout=60) as client:
        client.remote_host, client.remote_workspace = "alias", address
        _as_remote(remote, folder / "sub" / "second.txt", "my own edit\n")
        with pytest.raises(review.UserEditsFound) as err:
            review.undo_last_turn(client, sid)
        assert err.value.files == ["sub/second.txt"]
        _as_remote(remote, folder / "sub" / "second.txt", "2nd\n")
        result = review.undo_last_turn(client, sid)
        assert result.snapshots and result.files == ["sub/second.txt"]
        assert not (folder / "sub" / "second.txt").exists()
        review.redo(client, sid)
        assert (folder / "sub" / "second.txt").read_text() == "2nd\n"
