"""The tests' throw-away accounts and test sshd clean up after a failed set-up step: a step
that fails after ``useradd`` (``usermod``, a key, sshd) must not leave the account behind."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import remote_host, throwaway


def _fail(what: str) -> object:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError(f"{what} failed (made to fail by the test)")

    return boom


@pytest.mark.parametrize("step", ["_unlock", "_keygen"])
def test_a_failed_step_after_useradd_still_removes_the_account(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    home = tmp_path / "home"
    home.mkdir()
    removed: list[tuple[str, Path]] = []
    # An account nobody uses (no process of it can exist): the fake useradd's result.
    entry = SimpleNamespace(pw_uid=2**31 - 7, pw_gid=2**31 - 7)
    monkeypatch.setattr(remote_host, "add_user", lambda prefix, shell: ("ssrmx", entry, home))
    monkeypatch.setattr(remote_host, "remove_user", lambda n, h: removed.append((n, h)))
    monkeypatch.setattr(remote_host, "_unlock", lambda name: None)
    monkeypatch.setattr(remote_host, step, _fail(step))
    gen = remote_host.start_host()
    with pytest.raises(RuntimeError, match=f"{step} failed"):
        next(gen)
    assert removed == [("ssrmx", home)]
    assert [p.name for p in tmp_path.iterdir()] == ["home"]  # sshd's folder went too


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd needs root")
def test_a_real_account_is_removed_when_usermod_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "ssrt" + uuid.uuid4().hex[:4]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made: list[str] = []
    real_add = throwaway.add_user

    def add(_prefix: str, shell: str) -> tuple[str, pwd.struct_passwd, Path]:
        out = real_add(prefix, shell)
        made.append(out[0])
        return out

    def failing_usermod(name: str) -> None:
        assert pwd.getpwnam(name)  # the account exists at this point
        subprocess.run(["usermod", "--no-such-option", name], check=True, capture_output=True)

    monkeypatch.setattr(remote_host, "add_user", add)
    monkeypatch.setattr(remote_host, "_unlock", failing_usermod)
    with pytest.raises(subprocess.CalledProcessError):
        next(remote_host.start_host())
    assert len(made) == 1
    with pytest.raises(KeyError):
        pwd.getpwnam(made[0])
    assert list(tmp_path.iterdir()) == []  # its home and sshd's folder are gone


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd needs root")
def test_add_user_removes_the_account_when_a_step_after_useradd_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "ssrt" + uuid.uuid4().hex[:4]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(os, "chown", _fail("chown"))
    with pytest.raises(RuntimeError, match="chown failed"):
        throwaway.add_user(prefix, "/bin/sh")
    assert not [e.pw_name for e in pwd.getpwall() if e.pw_name.startswith(prefix)]
    assert list(tmp_path.iterdir()) == []
