"""A small client for a running ``opencode serve`` (HTTP Basic auth, user ``opencode``).

The server is per workspace and runs with cwd = workspace, so no ``directory`` parameter is sent.
Requests to a server that is still starting can hang (verified on 1.18.33), so every call has a
timeout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from smartspec_desktop.core.errors import ServerNotRunning, TaskError

log = logging.getLogger(__name__)

USERNAME = "opencode"


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
        self.base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(USERNAME, password)
        self._http = httpx.Client(
            base_url=self.base_url, auth=self._auth, timeout=timeout, trust_env=False
        )

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
                "Check its status and log; restart it with Start Dev Server.",
            ) from None
        if r.status_code == 401:
            raise ServerNotRunning(
                f"The OpenCode server at {self.base_url} refused our credentials (401).",
                "Stop and start the server again so the app gets a fresh password.",
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

    def reply_permission(self, session_id: str, permission_id: str, response: str) -> None:
        """``response``: "once", "always" or "reject"."""
        self._call(
            "POST",
            f"/session/{session_id}/permissions/{permission_id}",
            json={"response": response},
        )

    def events(self, *, read_timeout: float = 15.0) -> Iterator[Event]:
        """Stream ``GET /event``. Raises ``httpx.ReadTimeout`` after ``read_timeout`` of silence."""
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with self._http.stream("GET", "/event", timeout=timeout) as r:
            if r.status_code != 200:
                raise ServerNotRunning(
                    f"OpenCode's event stream answered {r.status_code}.",
                    "Restart the server with Start Dev Server.",
                )
            yield from parse_sse(r.iter_lines())
