"""The gateway broker: an HTTP forwarder on 127.0.0.1 that holds the real API key.

OpenCode's provider points at ``http://127.0.0.1:<port>/v1/opencode`` with a per-server random
token as its API key. The broker:

* accepts only ``Authorization: Bearer <token>`` (constant-time compare; else 401 with an
  OpenAI-style error), and only paths under ``/v1/opencode/`` except ``api-keys`` (whoever holds
  the token must not mint or rotate account keys); anything else is 404;
* replaces the token by the real key and forwards to ``{upstream}/v1/opencode/…`` (HTTP or HTTPS,
  certificate checked), dropping hop-by-hop headers, asking for an uncompressed answer, never
  following a redirect (a 3xx becomes a 502-free 400 error naming where it pointed);
* streams ``text/event-stream`` answers piece by piece as they arrive (never whole), watching them
  (``body.py``: each read lands in a reused buffer, the chunked framing squeezed out in place;
  ``sse.py``: forwarded as slices of that buffer, only small lines looked into): usage is
  metered, and an error-only, malformed or cut-short stream becomes the one clean error of
  ``errors.py`` (a 400 JSON answer if nothing was sent yet, else one error chunk);
* keeps its connection to the backend alive between calls (``keepalive_idle``, under 2 s), never
  using one the server has closed; a call that meets the server closing it as it goes out is
  sent again on a new connection (the server got no request);
* buffers other answers up to ``max_response`` bytes within ``request_timeout`` seconds; status
  codes (401/402/429/5xx included) and bodies pass through unchanged;
* refuses a call when a budget is used up (``budget.py``), and meters every call (``meter.py``);
* serves a control API on the same port under ``/_control/`` for a second token (below).

Control API (``Authorization: Bearer <control_token>``, JSON in and out)::

    GET    /_control/health                 {"ok": true, "has_key": bool, "upstream": url}
    GET    /_control/usage                  meter totals (+ "by_session")
    GET    /_control/budget                 {"day": {...}, "tasks": {...}} (see budget.py)
    PUT    /_control/budget/day             {"cap": N | null}
    POST   /_control/budget/day/raise       {"add": N}
    PUT    /_control/budget/tasks/<id>      {"cap": N | null, "sessions": ["ses_…", …]}
    POST   /_control/budget/tasks/<id>/raise {"add": N}          (Continue (+N))
    PUT    /_control/key                    {"key": "sk-smartspec-…"}  (rotation, no restart)
    DELETE /_control/key                    drop the key (calls then get 401 "no key")

Standard library only: it runs inside the supervisor, which must start fast.
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from smartspec_desktop.core import httpserve
from smartspec_desktop.core.broker import errors
from smartspec_desktop.core.broker.body import BufferPool, UpstreamBody
from smartspec_desktop.core.broker.budget import Budgets
from smartspec_desktop.core.broker.meter import CallRecord, Meter
from smartspec_desktop.core.broker.sse import Parts, StreamWatcher

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PREFIX = "/v1/opencode"
CONTROL = "/_control"
#: Header names that belong to one connection only (RFC 9110 §7.6.1), plus ones we set ourselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_DROP_REQUEST = HOP_BY_HOP | {
    "host",
    "authorization",
    "content-length",
    "accept-encoding",
    "cookie",
}
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "server", "date", "set-cookie"}
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_SAFE_PATH = re.compile(r"[A-Za-z0-9._~:@!$&'()*+,;=/-]*")
READ_SIZE = 64 * 1024
#: Streams: a read returns what has arrived (up to this), so a big size adds no latency.
STREAM_READ_SIZE = 1024 * 1024
#: The budget file is written at most this long after a call's charge (``Budgets.flush_soon``).
BUDGET_WRITE_DELAY = 0.5
TOO_LARGE = errors.TOO_LARGE


@dataclass
class BrokerConfig:
    """What a broker needs. ``key`` is the real API key; it is never logged or written."""

    key: str
    token: str
    control_token: str
    upstream: str  # the backend's base URL, e.g. http://localhost:8000
    meter_file: Path | None = None
    budget_file: Path | None = None
    connect_timeout: float = 10.0
    #: A stream that sends nothing for this long is ended with an error.
    idle_timeout: float = 300.0
    #: Total deadline of a non-streamed answer.
    request_timeout: float = 120.0
    max_request: int = 64 * 1024 * 1024
    max_response: int = 32 * 1024 * 1024
    #: A connection to the backend is kept for the next call this long after its answer ended
    #: (0: a new connection per call). Shorter than servers' own idle limits (uvicorn: 5 s,
    #: gunicorn: 2 s), so the server rarely closes one just as a call goes out on it.
    keepalive_idle: float = 1.5
    #: At most this many idle connections are kept.
    keepalive_max: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show secrets
        return f"BrokerConfig(upstream={self.upstream!r}, meter_file={self.meter_file!r})"


class _Refused(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Broker:
    """One server's broker. ``start()`` binds 127.0.0.1 (OS-picked port), serves in threads."""

    def __init__(self, config: BrokerConfig) -> None:
        parts = urlsplit(config.upstream.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the backend URL {config.upstream!r} is not an http(s) URL")
        self.config = config
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._base_path = parts.path.rstrip("/")
        self.upstream = f"{parts.scheme}://{parts.netloc}{self._base_path}"
        self._key: str | None = config.key or None
        self._token = config.token.encode("utf-8")
        self._control_token = config.control_token.encode("utf-8")
        self.meter = Meter(config.meter_file)
        self.budgets = Budgets(config.budget_file)
        #: Read buffers of streamed answers, reused from call to call (``body.py``).
        self.buffers = BufferPool(STREAM_READ_SIZE)
        #: Idle kept-alive connections to the backend, oldest first: (connection, idle since).
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._idle_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ssl_context: Any = None
        #: ``session id → its root session id`` (None: a root session), for a sub-agent's calls
        #: (OpenCode child sessions) to count toward the task of the session that started it;
        #: the supervisor sets it (``sessions.SessionRoots``). None: every session is a root.
        self.session_roots: Callable[[str], str | None] | None = None
        #: When the last gateway call began or ended (``time.monotonic()``; None: none yet),
        #: for the supervisor's idle watcher (issue 15).
        self.last_call: float | None = None
        config.key = ""  # the broker keeps the only copy

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Broker:
        if self._server is not None:
            raise RuntimeError("broker already started")
        if self._scheme == "https":
            import ssl  # only when needed: it is the slowest import here

            self._ssl_context = ssl.create_default_context()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="gateway-broker",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop the key."""
        self._key = None
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        self.budgets.flush()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("broker not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """OpenCode's provider ``baseURL``."""
        return f"http://{HOST}:{self.port}{PREFIX}"

    # -- key -----------------------------------------------------------------------------------
    def set_key(self, key: str | None) -> None:
        self._key = key or None

    @property
    def has_key(self) -> bool:
        return self._key is not None

    # -- helpers for the handler ---------------------------------------------------------------
    def token_ok(self, header: str | None) -> bool:
        return _bearer_ok(header, self._token)

    def control_ok(self, header: str | None) -> bool:
        return _bearer_ok(header, self._control_token)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return conn

    def take_idle(self) -> http.client.HTTPConnection | None:
        """A kept-alive connection to the backend that is still good, else None. One the server
        has closed (or sent anything on while idle) is readable: it is dropped."""
        now = time.monotonic()
        while True:
            with self._idle_lock:
                if not self._idle:
                    return None
                conn, since = self._idle.pop()
            sock = conn.sock
            if sock is not None and now - since < self.config.keepalive_idle:
                try:
                    readable, _, _ = select.select([sock], [], [], 0)
                except (OSError, ValueError):
                    readable = [sock]
                if not readable:
                    return conn
            conn.close()

    def keep_idle(self, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn`` (its answer fully read) for a next call, or close it."""
        if conn.sock is None or self.config.keepalive_idle <= 0 or self._server is None:
            conn.close()
            return
        with self._idle_lock:
            self._idle.append((conn, time.monotonic()))
            drop = self._idle[: -self.config.keepalive_max]
            del self._idle[: -self.config.keepalive_max]
        for old, _ in drop:
            old.close()


def _bearer_ok(header: str | None, expected: bytes) -> bool:
    if not header or not expected:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "replace"), expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 64

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        super().__init__((HOST, 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("broker: unexpected error while serving a request")


class _Handler(httpserve.DispatchingHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smartspec-broker"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection.settimeout(self.server.broker.config.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per call is logged by _forward instead (never with a secret)

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def broker(self) -> Broker:
        return self.server.broker

    def _send_json(self, status: int, body: bytes | dict[str, Any]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            # Said, not only done: a client that pools connections (OpenCode's) would otherwise
            # send its next call on this one as it closes, fail it with a network error, and
            # retry the turn (seen under load: "retry" after a gateway defect's one clean 400).
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, code: str) -> None:
        self._send_json(status, errors.error_body(message, code))

    def _read_body(self) -> bytes:
        try:
            return httpserve.read_body(
                self.rfile, self.headers, limit=self.broker.config.max_request
            )
        except httpserve.BodyTooLarge:
            raise _Refused(
                413, "The request is too large for the broker.", errors.TOO_LARGE
            ) from None

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            if path == CONTROL or path.startswith(CONTROL + "/"):
                self._control(path[len(CONTROL) :])
            elif path == PREFIX or path.startswith(PREFIX + "/"):
                self._forward(path, query)
            else:
                self.close_connection = True
                self._send_error(
                    404,
                    f"The SmartSpec broker only forwards {PREFIX}/…, not {path[:100]}.",
                    errors.NOT_ALLOWED,
                )
        except _Refused as e:
            self.close_connection = True
            self._send_error(e.status, e.message, e.code)
        except (ValueError, json.JSONDecodeError) as e:
            self.close_connection = True
            self._send_error(400, f"The request is not valid: {e}.", "smartspec_bad_request")

    # -- control API ---------------------------------------------------------------------------
    def _control(self, path: str) -> None:
        b = self.broker
        if not b.control_ok(self.headers.get("Authorization")):
            self.close_connection = True
            self._send_error(401, "The control token is missing or wrong.", errors.BROKER_AUTH)
            return
        body = self._read_body()
        data: Any = json.loads(body) if body.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        m, parts = self.command, [p for p in path.split("/") if p]
        if m == "GET" and parts == ["health"]:
            self._send_json(200, {"ok": True, "has_key": b.has_key, "upstream": b.upstream})
        elif m == "GET" and parts == ["usage"]:
            self._send_json(200, b.meter.totals())
        elif m == "GET" and parts == ["budget"]:
            self._send_json(200, b.budgets.state())
        elif m == "PUT" and parts == ["budget", "day"]:
            b.budgets.set_day_cap(_cap(data.get("cap")))
            self._send_json(200, b.budgets.state())
        elif m == "POST" and parts == ["budget", "day", "raise"]:
            b.budgets.raise_day(_positive(data.get("add")))
            self._send_json(200, b.budgets.state())
        elif m == "PUT" and len(parts) == 3 and parts[:2] == ["budget", "tasks"]:
            sessions = data.get("sessions", [])
            if not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions):
                raise ValueError("sessions must be a list of session ids")
            b.budgets.set_task(unquote(parts[2]), _cap(data.get("cap")), sessions)
            self._send_json(200, b.budgets.state())
        elif m == "POST" and len(parts) == 4 and parts[:2] == ["budget", "tasks"]:
            if parts[3] != "raise":
                raise _Refused(404, "No such control route.", "smartspec_not_found")
            try:
                b.budgets.raise_task(unquote(parts[2]), _positive(data.get("add")))
            except KeyError:
                raise _Refused(
                    404, f"No task {parts[2]!r} has a budget.", "smartspec_not_found"
                ) from None
            self._send_json(200, b.budgets.state())
        elif m == "PUT" and parts == ["key"]:
            key = data.get("key")
            if not isinstance(key, str) or not key.strip():
                raise ValueError("key must be a non-empty string")
            b.set_key(key.strip())
            log.info("broker: the API key was replaced")
            self._send_json(200, {"ok": True, "has_key": True})
        elif m == "DELETE" and parts == ["key"]:
            b.set_key(None)
            log.info("broker: the API key was dropped")
            self._send_json(200, {"ok": True, "has_key": False})
        else:
            raise _Refused(404, "No such control route.", "smartspec_not_found")

    # -- forwarding ----------------------------------------------------------------------------
    def _forward(self, path: str, query: str) -> None:
        session = (self.headers.get("x-session-id") or "")[:200] or None
        rec = CallRecord(path=path, session=session)
        self._t0 = self.broker.last_call = time.monotonic()
        self._done = False
        try:
            self._forward_call(path, query, rec)
        except _Refused as e:
            rec.status, rec.error = e.status, e.message
            rec.refused = rec.refused or ("auth" if e.status == 401 else None)
            self.close_connection = True
            self._finish(rec)
            self._send_error(e.status, e.message, e.code)
        finally:
            self._finish(rec)
            # The charge's file write, after the answer's last byte (the charge itself counted
            # before it), for all the calls of BUDGET_WRITE_DELAY at once; Broker.stop() writes
            # what is left.
            self.broker.budgets.flush_soon(BUDGET_WRITE_DELAY)

    def _finish(self, rec: CallRecord) -> None:
        """Meter and charge the call: once, and *before* its last byte goes out, so the next
        call OpenCode makes is checked against a budget that already counts this one (the
        budget file is written after that byte: see _forward)."""
        if self._done:
            return
        self._done = True
        b = self.broker
        b.last_call = time.monotonic()
        rec.duration = b.last_call - self._t0
        if rec.refused != "auth":
            b.meter.record(rec)
            b.budgets.charge(rec.session, rec.total_tokens, root=rec.root, save=False)
        log.info(
            "broker: %s %s → %s in %.2f s%s%s",
            self.command,
            rec.path[len(PREFIX) :] or "/",
            rec.status or "-",
            rec.duration,
            f", {rec.total_tokens} tokens" if rec.has_usage else "",
            f" ({rec.refused or rec.error})" if (rec.refused or rec.error) else "",
        )

    def _forward_call(self, path: str, query: str, rec: CallRecord) -> None:
        b = self.broker
        if not b.token_ok(self.headers.get("Authorization")):
            raise _Refused(
                401,
                "The SmartSpec broker refused the call: its token is missing or wrong.",
                errors.BROKER_AUTH,
            )
        rest = path[len(PREFIX) :]
        decoded = unquote(rest)
        segments = [s for s in decoded.split("/") if s]
        if (
            not _SAFE_PATH.fullmatch(rest)
            or any(s in (".", "..") for s in segments)
            or "\\" in decoded
            or (segments and segments[0].lower() == "api-keys")
        ):
            raise _Refused(
                404, f"The SmartSpec broker does not forward {path[:100]}.", errors.NOT_ALLOWED
            )
        body = self._read_body()
        head = body[:4096]
        m = _MODEL.search(head)
        rec.model = m.group(1).decode("utf-8", "replace") if m else None
        rec.stream = bool(_STREAM.search(head))
        if rec.session and b.session_roots is not None:
            rec.root = b.session_roots(rec.session)
        if self.command == "POST":
            refusal = b.budgets.check(rec.session, root=rec.root)
            if refusal is not None:
                rec.refused = "budget"
                raise _Refused(400, refusal.message, errors.BUDGET_REACHED)
        key = b._key
        if key is None:
            raise _Refused(
                401,
                "The SmartSpec broker has no API key (signed out, or the key was revoked). "
                "Sign in again on the Account page.",
                errors.NO_KEY,
            )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROP_REQUEST}
        headers["Authorization"] = f"Bearer {key}"
        headers["Accept-Encoding"] = "identity"
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        target = b._base_path + path + (f"?{query}" if query else "")
        conn = b.take_idle()
        reused = conn is not None
        reusable = False
        try:
            try:
                resp, conn = self._send_upstream(conn, target, body, headers)
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                if not reused:
                    raise
                # The server closed the kept-alive connection as the call went out (it got no
                # request, so none was answered or charged): once more on a new connection.
                assert conn is not None
                conn.close()
                resp, conn = self._send_upstream(None, target, body, headers)
        except (OSError, http.client.HTTPException) as e:
            raise _Refused(
                400,
                errors.gateway_failure(f"it could not be reached ({e})", b.upstream),
                errors.BACKEND_UNREACHABLE,
            ) from None
        try:
            rec.status = resp.status
            if 300 <= resp.status < 400:
                where = resp.getheader("Location", "?")
                raise _Refused(
                    400,
                    errors.gateway_failure(
                        f"it answered with a redirect to {where[:200]}, which is not followed",
                        b.upstream,
                    ),
                    errors.GATEWAY_DEFECT,
                )
            ctype = (resp.getheader("Content-Type") or "").lower()
            encoded = (resp.getheader("Content-Encoding") or "identity").lower() != "identity"
            if resp.status == 200 and ctype.startswith("text/event-stream") and not encoded:
                reusable = self._stream(resp, rec)
            else:
                reusable = self._buffered(resp, rec)
        finally:
            if reusable and not resp.will_close:
                resp.close()  # (its file only: the socket stays open)
                b.keep_idle(conn)
            else:
                conn.close()

    def _send_upstream(
        self,
        conn: http.client.HTTPConnection | None,
        target: str,
        body: bytes,
        headers: dict[str, str],
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """Send the call on ``conn`` (kept alive) or on a new connection; its answer's head."""
        b = self.broker
        fresh = conn is None
        if conn is None:
            conn = b.connect(b.config.connect_timeout)
        try:
            if fresh:
                conn.connect()
                assert conn.sock is not None
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                assert conn.sock is not None
                conn.sock.settimeout(b.config.connect_timeout)
            conn.request(self.command, target, body=body or None, headers=headers)
            assert conn.sock is not None
            conn.sock.settimeout(b.config.idle_timeout)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        return resp, conn

    def _response_headers(self, resp: http.client.HTTPResponse) -> list[tuple[str, str]]:
        drop = set(_DROP_RESPONSE)
        for token in (resp.getheader("Connection") or "").split(","):
            drop.add(token.strip().lower())
        return [(k, v) for k, v in resp.getheaders() if k.lower() not in drop]

    def _buffered(self, resp: http.client.HTTPResponse, rec: CallRecord) -> bool:
        """Forward a whole answer; True when the backend connection may carry another call."""
        b = self.broker
        deadline = time.monotonic() + b.config.request_timeout
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise _Refused(
                        400,
                        errors.gateway_failure(
                            f"its answer took longer than {b.config.request_timeout:.0f} s",
                            b.upstream,
                        ),
                        errors.GATEWAY_DEFECT,
                    )
                chunk = resp.read1(READ_SIZE)
                if not chunk:
                    break
                size += len(chunk)
                if size > b.config.max_response:
                    raise _Refused(
                        400,
                        errors.gateway_failure(
                            f"its answer is larger than {b.config.max_response >> 20} MB",
                            b.upstream,
                        ),
                        errors.TOO_LARGE,
                    )
                parts.append(chunk)
        except (OSError, http.client.HTTPException) as e:
            raise _Refused(
                400,
                errors.gateway_failure(f"its answer broke off ({e})", b.upstream),
                errors.GATEWAY_DEFECT,
            ) from None
        data = b"".join(parts)
        if resp.status >= 400:
            rec.error = f"HTTP {resp.status}"
        if data[:1] == b"{" and len(data) < 4 * 1024 * 1024 and b'"usage"' in data:
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                rec.set_usage(obj.get("usage"))
        self._finish(rec)
        self.send_response(resp.status)
        for k, v in self._response_headers(resp):
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return resp.isclosed() or resp.length == 0  # (read to its end)

    def _stream(self, resp: http.client.HTTPResponse, rec: CallRecord) -> bool:
        """Forward a stream as it comes; True when the backend connection may carry another
        call (its answer was read to the end)."""
        b = self.broker
        watcher = StreamWatcher()
        started = False
        write = self.wfile.write
        sock = self.connection
        buffer = b.buffers.get()
        body = UpstreamBody(resp, buffer)

        def send_chunk(parts: Parts) -> None:
            # One chunk of the chunked encoding, scatter-gather: nothing big is copied.
            size = sum(len(p) for p in parts)
            _send_all(sock, [b"%x\r\n" % size, *parts, b"\r\n"])

        def begin() -> None:
            nonlocal started
            started = True
            self.send_response(200)
            for k, v in self._response_headers(resp):
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        try:
            while True:
                try:
                    run = body.read_run()
                except (OSError, http.client.HTTPException) as e:
                    watcher.error = watcher.error or (
                        f"its stream sent nothing for {b.config.idle_timeout:.0f} s"
                        if isinstance(e, TimeoutError)
                        else f"its stream broke off ({e})"
                    )
                    break
                if run is None:
                    watcher.end()
                    break
                parts = watcher.feed_span(buffer, *run)
                if watcher.done and not self._done:
                    rec.set_usage(watcher.usage)
                    self._finish(rec)  # before [DONE] goes out (see _finish)
                if parts:
                    if not started:
                        begin()
                    send_chunk(parts)
                del parts  # (views of the buffer: gone before it is read into again)
                if watcher.error is not None:
                    break
            rec.set_usage(watcher.usage)
            if watcher.error is not None:
                message = errors.gateway_failure(watcher.error, b.upstream)
                rec.error = watcher.error
                if not started:
                    rec.status = 400
                    self.close_connection = True
                    self._finish(rec)
                    self._send_error(400, message, errors.GATEWAY_DEFECT)
                    return body.complete
                send_chunk([errors.error_chunk(message, errors.GATEWAY_DEFECT)])
            if not started:
                begin()
            self._finish(rec)
            write(b"0\r\n\r\n")
            return body.complete
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            rec.error = rec.error or "OpenCode closed the connection"
            self.close_connection = True
            return False
        finally:
            b.buffers.put(buffer)


#: At most this many buffers per ``sendmsg`` (the OS limit, IOV_MAX, is 1024 on Linux).
_IOV_MAX = 512


def _send_all(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def _cap(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError("cap must be a whole number of tokens ≥ 0, or null")


def _positive(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError("add must be a whole number of tokens > 0")
