"""Which task a sub-agent's call belongs to: the root of an OpenCode session's parent chain.

OpenCode runs a sub-agent (its ``task`` tool) in a child session: ``GET /session/{id}`` of the
server answers ``{"id": …, "parentID": "ses_…"}`` for it (verified on 1.18.33), and the child's
LLM calls carry the child's id in ``x-session-id``. :class:`SessionRoots` asks the server once per
session id (HTTP Basic auth with the server password; the broker lives in the supervisor, which
knows both) and follows ``parentID`` up to the root; answers are cached for the server's life
(a session's parent never changes). When the server cannot be asked, the session is taken as its
own root for this call and asked again next time (nothing wrong is cached).

Standard library only (runs inside the supervisor).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
from urllib.parse import quote

log = logging.getLogger(__name__)

#: A parent chain longer than this is cut (sub-agents of sub-agents are rare; loops impossible).
MAX_DEPTH = 16
#: Most session ids remembered (a long-lived server with a great many sessions stays small).
MAX_CACHED = 20_000


class SessionRoots:
    """``root(session)``: the id of the session's root ancestor, or None for a root session."""

    def __init__(self, port: int, password: str, *, timeout: float = 3.0) -> None:
        self._port = port
        auth = base64.b64encode(f"opencode:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {auth}", "Accept": "application/json"}
        self._timeout = timeout
        self._lock = threading.Lock()
        self._parent: dict[str, str | None] = {}
        self._told = False

    def __repr__(self) -> str:  # never show the password
        return f"SessionRoots(port={self._port})"

    def root(self, session: str) -> str | None:
        seen = {session}
        current, root = session, None
        for _ in range(MAX_DEPTH):
            parent = self.parent(current)
            if parent is None or parent in seen:
                break
            seen.add(parent)
            current = root = parent
        return root

    def parent(self, session: str) -> str | None:
        with self._lock:
            if session in self._parent:
                return self._parent[session]
        try:
            parent = self._ask(session)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if not self._told:  # once: a server that cannot be asked stays so for a while
                self._told = True
                log.info("broker: could not ask OpenCode for session %s's parent: %s", session, e)
            return None
        with self._lock:
            if len(self._parent) >= MAX_CACHED:
                self._parent.clear()
            self._parent[session] = parent
        return parent

    def _ask(self, session: str) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout)
        try:
            conn.request("GET", f"/session/{quote(session, safe='')}", headers=self._headers)
            resp = conn.getresponse()
            body = resp.read(1024 * 1024)
        finally:
            conn.close()
        if resp.status == 404:
            return None  # not a session of this server (a made-up id): its own root
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        data = json.loads(body)
        parent = data.get("parentID") if isinstance(data, dict) else None
        return parent if isinstance(parent, str) and parent else None
