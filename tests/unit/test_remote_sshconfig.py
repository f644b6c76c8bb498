"""The hosts the window offers for a remote workspace, read from an ssh client config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from smartspec_desktop.core.remote.sshconfig import (
    SSH_CONFIG_ENV,
    SshHost,
    config_path,
    offered_hosts,
    user_ssh_dir,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_hosts_with_their_own_values_in_file_order(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config",
        """
# my hosts
Host devbox
    HostName devbox.example.com
    User me
    Port 2222

host build ci   # two aliases, one block
  hostname=10.0.0.7
  USER = builder

Host *.internal !bastion gateway-?
    User nobody

Host *
    User everyone
    Port 22
""",
    )
    assert offered_hosts(cfg, ssh_dir=tmp_path) == [
        SshHost("devbox", "devbox.example.com", "me", 2222),
        SshHost("build", "10.0.0.7", "builder"),
        SshHost("ci", "10.0.0.7", "builder"),
    ]


def test_first_value_wins_and_a_host_is_listed_once(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config",
        "Host a\n  User first\nHost A b\n  User second\n  HostName %h.lan\n  Port 99999\n",
    )
    assert offered_hosts(cfg, ssh_dir=tmp_path) == [
        SshHost("a", "a.lan", "first"),  # "a" and "A" are one host to ssh; bad port dropped
        SshHost("b", "b.lan", "second"),
    ]


def test_match_blocks_do_not_give_their_values_to_a_host(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config",
        "Host one\n  User u1\nMatch host one exec true\n  HostName elsewhere\n  User matched\n"
        "Host two\n  HostName two.example\n",
    )
    assert offered_hosts(cfg, ssh_dir=tmp_path) == [
        SshHost("one", "", "u1"),
        SshHost("two", "two.example"),
    ]


def test_includes_relative_absolute_globbed_and_cyclic(tmp_path: Path) -> None:
    ssh_dir = tmp_path / "dotssh"
    write(ssh_dir / "conf.d" / "10-work", "Host work\n  HostName work.example\n")
    write(ssh_dir / "conf.d" / "20-home", "Host home\n  Include ../config\n")  # a cycle
    other = write(tmp_path / "elsewhere" / "extra", "Host extra\n  Port 2200\n")
    cfg = write(
        ssh_dir / "config",
        f'Host first\n  Include conf.d/*\n  User kept\nInclude "{other}" missing-file\nHost last\n',
    )
    hosts = offered_hosts(cfg, ssh_dir=ssh_dir)
    assert [h.alias for h in hosts] == ["first", "work", "home", "extra", "last"]
    # After an Include the including block goes on (as in OpenSSH).
    assert hosts[0] == SshHost("first", "", "kept")
    assert hosts[3] == SshHost("extra", "", "", 2200)


def test_includes_nested_too_deeply_stop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(20):
        write(tmp_path / f"c{i}", f"Host h{i}\nInclude c{i + 1}\n")
    with caplog.at_level(logging.INFO, logger="smartspec_desktop.core.remote.sshconfig"):
        hosts = offered_hosts(tmp_path / "c0", ssh_dir=tmp_path)
    assert [h.alias for h in hosts] == [f"h{i}" for i in range(16)]
    assert "nested too deeply" in caplog.text


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\x02binary\xff\xfe", b"Host \xff\xfe\nHost 'unbalanced\n", b"random words here\n"],
)
def test_garbage_never_raises(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "config"
    cfg.write_bytes(content)
    with caplog.at_level(logging.INFO, logger="smartspec_desktop.core.remote.sshconfig"):
        hosts = offered_hosts(cfg, ssh_dir=tmp_path)
    assert all(isinstance(h, SshHost) for h in hosts)
    assert "'unbalanced" not in [h.alias for h in hosts]
    if b"\x00" in content:
        assert hosts == [] and "not a text config file" in caplog.text
    if b"unbalanced" in content:
        assert "unbalanced quotes" in caplog.text


def test_missing_and_unreadable_files_give_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert offered_hosts(tmp_path / "nope", ssh_dir=tmp_path) == []
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with caplog.at_level(logging.INFO, logger="smartspec_desktop.core.remote.sshconfig"):
        assert offered_hosts(folder, ssh_dir=tmp_path) == []
    assert "cannot read the ssh config" in caplog.text
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path / "locked", "Host x\n")
        locked.chmod(0)
        assert offered_hosts(locked, ssh_dir=tmp_path) == []


def test_the_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path / "cfg", "Host from-env\n  User e\n")
    monkeypatch.setenv(SSH_CONFIG_ENV, str(cfg))
    assert config_path() == cfg
    assert offered_hosts() == [SshHost("from-env", "", "e")]
    monkeypatch.delenv(SSH_CONFIG_ENV)
    assert config_path() == user_ssh_dir() / "config"


def test_labels() -> None:
    assert SshHost("devbox", "devbox.example.com", "me", 2222).label == (
        "devbox — me@devbox.example.com:2222"
    )
    assert SshHost("b", "", "builder").label == "b — builder@b"
    assert SshHost("same", "same").label == "same"
    assert SshHost("plain").summary == ""
