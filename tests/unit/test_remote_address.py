"""The remote workspace address: parsing, canonical form, and clear refusals."""

from __future__ import annotations

import pytest

from smartspec_desktop.core.errors import WorkspaceError
from smartspec_desktop.core.remote.address import RemoteAddress, is_remote, parse_remote


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh://devbox/home/me/p", RemoteAddress("devbox", "/home/me/p")),
        ("ssh://me@devbox:2222/srv/x/", RemoteAddress("devbox", "/srv/x", "me", 2222)),
        ("  SSH://me@10.0.0.2/a/./b/../c  ", RemoteAddress("10.0.0.2", "/a/c", "me")),
        ("ssh://[::1]:22/w", RemoteAddress("[::1]", "/w", "", 22)),
        ("ssh://h//w", RemoteAddress("h", "/w")),
    ],
)
def test_parse_gives_the_canonical_address(text: str, expected: RemoteAddress) -> None:
    got = parse_remote(text)
    assert got == expected
    assert parse_remote(str(got)) == got


def test_destination_and_display() -> None:
    a = parse_remote("ssh://me@[::1]:2200/w/proj")
    assert a.destination == "me@::1"
    assert a.display_host == "me@::1:2200"
    assert a.name == "proj"
    assert str(a) == "ssh://me@[::1]:2200/w/proj"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/home/me/p", "not a remote"),
        ("ssh://devbox", "names no folder"),
        ("ssh:///path", "names no folder"),
        ("ssh://-oProxyCommand=x/p", "invalid host"),
        ("ssh://-x@h/p", "invalid user"),
        ("ssh://h:0/p", "invalid port"),
        ("ssh://h:99999/p", "invalid port"),
        ("ssh://h:ab/p", "invalid port"),
        ("ssh://[::1/p", "unclosed"),
        ("ssh://h/p\nq", "control character"),
    ],
)
def test_bad_addresses_are_refused_with_the_fix(text: str, says: str) -> None:
    with pytest.raises(WorkspaceError) as err:
        parse_remote(text)
    assert says in str(err.value.problem)
    assert "ssh://[user@]host[:port]/absolute/path" in str(err.value.fix)


def test_is_remote() -> None:
    assert is_remote("ssh://h/p")
    assert not is_remote("/ssh:/h")
    assert not is_remote("relative/ssh://")
