"""A small client for a running ``opencode serve`` (HTTP Basic auth, user ``opencode``).

The server is per workspace and runs with cwd = workspace, so no ``directory`` parameter is sent.
Requests to a server that is still starting can hang (verified on 1.18.33), so every call has a
timeout.

Routes and shapes were checked against the OpenAPI document (``GET /doc``) of opencode 1.18.33:
``GET /session`` lists ``Session`` objects (``id``, ``title``, ``parentID``, ``cost``, ``tokens``
``{input, output, reasoning, cache}``, ``time {created, updated}`` in ms); permissions are
answered with ``POST /permission/{requestID}/reply`` ``{"reply": "once"|"always"|"reject"}``
(the older ``/session/{id}/permissions/{id}`` route is deprecated); ``GET /permission`` lists the
pending ones; ``GET /session/{id}/todo`` the todo list.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartspec_desktop.core.errors import NotFound, ServerNotRunning, SmartSpecError, TaskError
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.loopback import verify_for
from smartspec_desktop.core.remote.address import SCHEME, parse_remote

if TYPE_CHECKING:
    import httpx
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")

log = logging.getLogger(__name__)

USERNAME = "opencode"
PERMISSION_REPLIES = ("once", "always", "reject")


class Unauthorized(ServerNotRunning):
    """The server refused our password (401): retrying cannot help."""


@dataclass(frozen=True)
class SessionInfo:
    """One OpenCode session (conversation) as listed by ``GET /session``."""

    id: str
    title: str
    created: float  # epoch seconds
    updated: float
    tokens_input: int = 0
    tokens_output: int = 0
    cost: float = 0.0
    parent_id: str = ""
    #: The folder the session was created in (OpenCode files every non-git folder under one
    #: "global" project, so a server lists other folders' sessions too).
    directory: str = ""

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SessionInfo:
        time_ = data.get("time") if isinstance(data.get("time"), dict) else {}
        tokens = data.get("tokens") if isinstance(data.get("tokens"), dict) else {}
        assert isinstance(time_, dict) and isinstance(tokens, dict)
        created = _num(time_.get("created")) / 1000
        return cls(
            id=str(data.get("id", "")),
            title=str(data.get("title") or ""),
            created=created,
            updated=_num(time_.get("updated")) / 1000 or created,
            tokens_input=int(_num(tokens.get("input"))),
            tokens_output=int(_num(tokens.get("output"))),
            cost=_num(data.get("cost")),
            parent_id=str(data.get("parentID") or ""),
            directory=str(data.get("directory") or ""),
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "created": self.created,
            "updated": self.updated,
            "tokens_input": self.tokens_input,
            "tokens_output": self.tokens_output,
            "parent_id": self.parent_id,
            "directory": self.directory,
        }


def server_directory(workspace: str) -> str:
    """The folder the workspace's server runs in, as OpenCode names it in sessions: the path
    itself, or a remote workspace's path on its host."""
    if workspace.startswith(SCHEME):
        with contextlib.suppress(SmartSpecError):
            return parse_remote(workspace).path
    return workspace


def in_workspace(directory: str, workspace: str) -> bool:
    """Whether a session's ``directory`` is ``workspace`` or a folder inside it (for a remote
    workspace, its folder on the host)."""
    workspace = server_directory(workspace)
    if not directory:
        return False
    d = os.path.normcase(os.path.normpath(directory))
    w = os.path.normcase(os.path.normpath(workspace))
    return d == w or d.startswith(w.rstrip(os.sep) + os.sep)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


@dataclass(frozen=True)
class Event:
    type: str
    properties: dict[str, Any]

    @property
    def session_id(self) -> str | None:
        sid = self.properties.get("sessionID")
        if isinstance(sid, str):
            return sid
        for key in ("info", "part"):
            inner = self.properties.get(key)
            if isinstance(inner, dict) and isinstance(inner.get("sessionID"), str):
                return str(inner["sessionID"])
        return None


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events → :class:`Event`. Tolerates comments, CRLF and multi-line data."""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield from _decode("\n".join(data))
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield from _decode("\n".join(data))


def _decode(payload: str) -> Iterator[Event]:
    try:
        obj = json.loads(payload)
    except ValueError:
        log.debug("skipping a non-JSON event: %.120s", payload)
        return
    if isinstance(obj, dict) and isinstance(obj.get("type"), str):
        props = obj.get("properties")
        yield Event(obj["type"], props if isinstance(props, dict) else {})


class OpenCodeClient:
    def __init__(self, base_url: str, password: str, *, timeout: float = 30.0) -> None:
        #: The host of a remote workspace's server ("" for a local one) and the workspace's
        #: ``ssh://`` address: undo and redo read and write its files there (issue 15).
        self.remote_host = ""
        self.remote_workspace = ""
        self.base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(USERNAME, password)
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=self._auth,
            timeout=timeout,
            trust_env=False,
            verify=verify_for(self.base_url),
        )

    def clone(self, *, timeout: float | None = None) -> OpenCodeClient:
        """A new client for the same server (its own connections: safe for another thread)."""
        c = OpenCodeClient.__new__(OpenCodeClient)
        c.remote_host = self.remote_host
        c.remote_workspace = self.remote_workspace
        c.base_url = self.base_url
        c._auth = self._auth
        c._http = httpx.Client(
            base_url=self.base_url,
            auth=self._auth,
            timeout=self._http.timeout if timeout is None else timeout,
            trust_env=False,
            verify=verify_for(self.base_url),
        )
        return c

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenCodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ServerNotRunning(
                f"The OpenCode server at {self.base_url} did not answer ({type(e).__name__}).",
                "Check its status and log (`smartspec-desktop status`, `smartspec-desktop logs "
                "PATH`), then start it again.",
            ) from None
        if r.status_code == 401:
            raise Unauthorized(
                f"The OpenCode server at {self.base_url} refused our credentials (401).",
                "Stop and start the server again so the app gets a fresh password.",
            )
        if r.status_code == 404:
            raise NotFound(
                f"OpenCode answered 404 for {method} {path}: {r.text[:300]}",
                "See the server log for details.",
            )
        if r.status_code >= 400:
            raise TaskError(
                f"OpenCode answered {r.status_code} for {method} {path}: {r.text[:300]}",
                "See the server log for details.",
            )
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def health(self, timeout: float = 1.0) -> dict[str, Any]:
        data = self._call("GET", "/global/health", timeout=timeout)
        return data if isinstance(data, dict) else {}

    def providers(self) -> dict[str, Any]:
        data = self._call("GET", "/config/providers")
        return data if isinstance(data, dict) else {}

    def list_sessions(self) -> list[dict[str, Any]]:
        data = self._call("GET", "/session")
        return data if isinstance(data, list) else []

    def session_infos(
        self, *, include_children: bool = False, workspace: str | None = None
    ) -> list[SessionInfo]:
        """Sessions, most recently updated first; sub-agent sessions only if asked for; with
        ``workspace``, only those whose directory is that folder or inside it (OpenCode lists
        every non-git folder's sessions under one "global" project)."""
        infos = [SessionInfo.from_api(d) for d in self.list_sessions() if isinstance(d, dict)]
        if workspace is not None:
            infos = [i for i in infos if in_workspace(i.directory, workspace)]
        if not include_children:
            infos = [i for i in infos if not i.parent_id]
        return sorted(infos, key=lambda i: i.updated, reverse=True)

    def create_session(self, title: str | None = None) -> dict[str, Any]:
        data = self._call("POST", "/session", json={"title": title} if title else {})
        if not isinstance(data, dict) or "id" not in data:
            raise TaskError("OpenCode did not return a session.", "See the server log.")
        return data

    def get_session(self, session_id: str) -> dict[str, Any]:
        data = self._call("GET", f"/session/{session_id}")
        return data if isinstance(data, dict) else {}

    def rename_session(self, session_id: str, title: str) -> dict[str, Any]:
        data = self._call("PATCH", f"/session/{session_id}", json={"title": title})
        return data if isinstance(data, dict) else {}

    def delete_session(self, session_id: str) -> None:
        self._call("DELETE", f"/session/{session_id}")

    def session_status(self) -> dict[str, Any]:
        data = self._call("GET", "/session/status")
        return data if isinstance(data, dict) else {}

    def messages(self, session_id: str) -> list[dict[str, Any]]:
        data = self._call("GET", f"/session/{session_id}/message")
        return data if isinstance(data, list) else []

    def prompt_async(self, session_id: str, text: str, model: str | None = None) -> None:
        body: dict[str, Any] = {"parts": [{"type": "text", "text": text}]}
        if model:
            provider, _, model_id = model.partition("/")
            body["model"] = {"providerID": provider, "modelID": model_id}
        self._call("POST", f"/session/{session_id}/prompt_async", json=body)

    def abort(self, session_id: str) -> None:
        self._call("POST", f"/session/{session_id}/abort", json={})

    def todos(self, session_id: str) -> list[dict[str, Any]]:
        data = self._call("GET", f"/session/{session_id}/todo")
        return [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []

    def pending_permissions(self) -> list[dict[str, Any]]:
        data = self._call("GET", "/permission")
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []

    def reply_permission(self, request_id: str, reply: str) -> None:
        """Answer a permission request: ``reply`` is "once", "always" or "reject"."""
        if reply not in PERMISSION_REPLIES:
            raise ValueError(f"unknown permission reply {reply!r}")
        self._call("POST", f"/permission/{request_id}/reply", json={"reply": reply})

    def events(
        self,
        *,
        read_timeout: float = 15.0,
        on_open: Callable[[httpx.Response], None] | None = None,
    ) -> Iterator[Event]:
        """Stream ``GET /event``. Raises ``httpx.ReadTimeout`` after ``read_timeout`` of silence
        (the server sends ``server.heartbeat`` about every 10 s). ``on_open`` gets the response
        so another thread can close it to end the stream at once."""
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with self._http.stream("GET", "/event", timeout=timeout) as r:
            if r.status_code == 401:
                raise Unauthorized(
                    f"The OpenCode server at {self.base_url} refused our credentials (401).",
                    "Stop and start the server again so the app gets a fresh password.",
                )
            if r.status_code != 200:
                raise ServerNotRunning(
                    f"OpenCode's event stream answered {r.status_code}.",
                    "Stop the server and start it again.",
                )
            if on_open is not None:
                on_open(r)
            yield from parse_sse(r.iter_lines())

    # -- review and undo (issue 14); shapes verified on 1.18.33, see core/review.py ------------
    def session_diff(self, session_id: str, message_id: str | None = None) -> list[dict[str, Any]]:
        """``GET /session/{id}/diff[?messageID=]``: ``[{file, patch, additions, deletions,
        status}]`` for the turn started by user message ``message_id``. Without it 1.18.33
        answered ``[]`` (verified), so callers ask per turn."""
        params = {"messageID": message_id} if message_id else None
        data = self._call("GET", f"/session/{session_id}/diff", params=params)
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    def vcs_diff(self, mode: str = "git") -> list[dict[str, Any]]:
        """``GET /vcs/diff?mode=git|branch`` (``mode`` is required: 400 without it): the git
        working tree against HEAD (``git``, untracked files included) or against the default
        branch (``branch``); ``[]`` outside git."""
        if mode not in ("git", "branch"):
            raise ValueError(f"unknown vcs diff mode {mode!r}")
        data = self._call("GET", "/vcs/diff", params={"mode": mode})
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    def revert(
        self, session_id: str, message_id: str, part_id: str | None = None
    ) -> dict[str, Any]:
        """``POST /session/{id}/revert`` ``{messageID, partID?}``: hide the conversation from that
        message on and (in a git project) restore the files; returns the Session, whose
        ``revert`` is ``{messageID, snapshot?, diff?}``. 409 while the session is busy."""
        body: dict[str, Any] = {"messageID": message_id}
        if part_id:
            body["partID"] = part_id
        data = self._call("POST", f"/session/{session_id}/revert", json=body)
        return data if isinstance(data, dict) else {}

    def unrevert(self, session_id: str) -> dict[str, Any]:
        """``POST /session/{id}/unrevert``: bring back everything reverted; returns the Session
        (without ``revert``)."""
        data = self._call("POST", f"/session/{session_id}/unrevert", json={})
        return data if isinstance(data, dict) else {}
