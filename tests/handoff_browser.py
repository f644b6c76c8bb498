"""A stand-in browser for the one-shot hand-off page (see ``core.launchers.Handoff``): reads the
``file://`` page the app opened and submits its form like a browser would, without following the
redirect (so a test can read where it points)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx


def handoff_form(url: str) -> tuple[str, str]:
    """The form's action URL and token of the page at ``url`` (a ``file://`` URL)."""
    assert url.startswith("file://"), url
    html = Path(unquote(urlparse(url).path)).read_text(encoding="utf-8")
    action = re.search(r'action="([^"]+)"', html)
    token = re.search(r'name="token" value="([^"]+)"', html)
    assert action and token, html
    return action[1], token[1]


def handoff_port(url: str) -> int:
    """The loopback port the page posts to (or, for an ``http`` URL, the URL's port)."""
    if url.startswith("file://"):
        url = handoff_form(url)[0]
    port = urlparse(url).port
    assert port, url
    return port


def open_handoff(url: str) -> httpx.Response:
    """Submit the page's form once; the answer (a 303 to the server, credentials included)."""
    action, token = handoff_form(url)
    return httpx.post(
        action, data={"token": token}, follow_redirects=False, trust_env=False, timeout=10
    )
