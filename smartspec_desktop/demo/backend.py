"""A contract-faithful SmartSpecPro backend on 127.0.0.1: the tests' stand-in and the demo gateway.

Standard library only (no Qt). It answers the routes, shapes and status codes of
``shared/notes/backend-contract.md``, including every point of its "Measured differences from the
happy path" (the real service, run locally): 429 without ``Retry-After`` from a fixed 60 requests
per 60 s bucket per IP, 415 for a non-JSON ``Content-Type``, the JWT routes' 403 "Not
authenticated" / 401 with ``WWW-Authenticate``, a validated, case-sensitive login e-mail,
registration, the forced key description and 90-day default, newest-first key lists, rotation of a
revoked key giving a dead key, inactive users whose keys still pass the gateway, positive integer
deductions with empty metadata, naive UTC timestamps and the real 19-id model list.

What the chat route does is the ``gateway`` mode:

- ``"scripted"`` (default, the happy path the contract describes): answers come from step objects
  queued with :meth:`BackendStandIn.script` (:class:`Text`, :class:`ToolCall`,
  :class:`ErrorChunk`, :class:`HttpError`, :class:`Delay`, :class:`Hang`), else ``default_step``.
- ``"real"``: what the real service does today: streaming answers 200 with one string-shaped
  ``data: {"error": "..."}`` line and no ``[DONE]``; non-streaming answers 500.

In every mode array or ``null`` message content is refused with 422, like the real service
(``strict_content=False`` turns that off).
- ``"demo"``: a scripted demo conversation for ``smartspec-desktop --demo`` (a greeting; a file
  written through a tool call; a todo list) with simulated credits; see :class:`DemoScript`.

Typical test use::

    with BackendStandIn() as backend:
        backend.add_user("a@example.com", "pw")
        key = backend.issue_api_key("a@example.com")
        backend.script(ToolCall("write", {"filePath": "x.txt", "content": "hi"}), Text("Done."))
        ...  # point the app / OpenCode at backend.url
        assert backend.chat_requests()[0].body["stream"] is True

Standalone: ``python -m smartspec_desktop.demo --port N`` (see ``__main__``).

The server never writes to stdout/stderr; unexpected handler exceptions are kept in ``errors``.
Raw API keys are never logged (only their SHA-256 is stored; recorded request headers are
redacted in ``repr``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import queue
import random
import secrets
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from smartspec_desktop.core import httpserve

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_KEY_DESCRIPTION",
    "DEFAULT_REPLY",
    "GATEWAY_MODES",
    "RATE_LIMIT_BODY",
    "REAL_CHAT_ERROR",
    "REAL_MODELS",
    "REAL_STREAM_ERROR",
    "UNSUPPORTED_MEDIA_BODY",
    "BackendStandIn",
    "Delay",
    "DemoScript",
    "ErrorChunk",
    "Hang",
    "HttpError",
    "RecordedRequest",
    "Step",
    "Text",
    "ToolCall",
]

API_KEY_PREFIX = "sk-smartspec-"
DEFAULT_REPLY = "Hello from the SmartSpecPro stand-in."
RATE_LIMIT_BODY: dict[str, Any] = {
    "error": "RATE_LIMIT_EXCEEDED",
    "message": "Too many requests. Please try again later.",
    "details": {},
}
INSUFFICIENT_CREDITS = "Insufficient credits. Please add credits to continue."
INACTIVE_USER = "User account is inactive"
REGISTRATION_CREDITS = 10000.0
CHAT_PATH = "/v1/opencode/chat/completions"
#: backend-contract.md, "Non-JSON Content-Type on a POST → 415 ...".
UNSUPPORTED_MEDIA_BODY: dict[str, Any] = {
    "error": "Unsupported Media Type",
    "supported": ["application/json"],
}
#: backend-contract.md, "Key create: description: null is replaced by ...".
DEFAULT_KEY_DESCRIPTION = "API key for OpenCode CLI and OpenWork integration"
#: backend-contract.md, "Known defect of the real service today": the one streamed line's text,
#: and the non-streaming 500's detail.
REAL_STREAM_ERROR = "'LLMGateway' object has no attribute 'chat_completion_stream'"
REAL_CHAT_ERROR = "'LLMGateway' object has no attribute 'chat_completion'"
#: backend-contract.md, "Real model list: 19 ids in short and vendor forms" (id, owned_by), as
#: the real service's gateway module lists them.
REAL_MODELS: tuple[tuple[str, str], ...] = (
    ("claude-3.5-sonnet", "anthropic"),
    ("claude-3-opus", "anthropic"),
    ("claude-3-haiku", "anthropic"),
    ("anthropic/claude-3.5-sonnet", "anthropic"),
    ("anthropic/claude-3-opus", "anthropic"),
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-4-turbo", "openai"),
    ("openai/gpt-4o", "openai"),
    ("openai/gpt-4o-mini", "openai"),
    ("deepseek-chat", "deepseek"),
    ("deepseek-coder", "deepseek"),
    ("deepseek/deepseek-chat", "deepseek"),
    ("gemini-pro", "google"),
    ("gemini-flash-1.5", "google"),
    ("google/gemini-pro", "google"),
    ("google/gemini-flash-1.5", "google"),
    ("meta-llama/llama-3.1-70b-instruct", "meta"),
    ("meta-llama/llama-3.1-8b-instruct", "meta"),
)
#: What the chat route does: see the module docstring.
GATEWAY_MODES = ("scripted", "real", "demo")


# --------------------------------------------------------------------------------------------
# Chat script steps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A text answer: a role chunk, a few ``delta.content`` chunks, ``finish_reason: "stop"``,
    a ``usage`` chunk, ``data: [DONE]``. ``chunk_delay`` waits between chunks (for aborts);
    ``pieces``: into how many ``delta.content`` chunks the text is split (about)."""

    text: str = DEFAULT_REPLY
    prompt_tokens: int = 100
    completion_tokens: int = 20
    chunk_delay: float = 0.0
    pieces: int = 3


@dataclass(frozen=True)
class ToolCall:
    """One streamed tool call (``delta.tool_calls`` index 0, arguments JSON split over 2+
    chunks), ``finish_reason: "tool_calls"``, ``usage``, ``[DONE]``."""

    name: str
    arguments: dict[str, Any]
    call_id: str | None = None
    prompt_tokens: int = 100
    completion_tokens: int = 20


@dataclass(frozen=True)
class ErrorChunk:
    """One ``data: {"error": ...}`` line, then the stream ends without ``[DONE]``; no credits
    are deducted (non-streaming: 500 ``{"detail": message}``).

    ``shape="string"`` is what the real service sends (``{"error": "<message>"}``, see
    backend-contract.md "Known defect"); ``shape="object"`` (the default, kept for existing
    tests) sends an OpenAI-style ``{"error": {"message", "type"}}``."""

    message: str = "Upstream provider error"
    shape: str = "object"


@dataclass(frozen=True)
class HttpError:
    """Answer ``status`` with ``body`` as JSON (and optional extra headers)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (ends early when the server stops), then perform ``then_step``
    (default: the default text reply)."""

    seconds: float
    then_step: Step | None = None


@dataclass(frozen=True)
class Hang:
    """Keep the connection open and send nothing until the server stops. With
    ``after_headers=True`` the 200 SSE headers are sent first, then nothing."""

    after_headers: bool = False


Step = Text | ToolCall | ErrorChunk | HttpError | Delay | Hang


# --------------------------------------------------------------------------------------------
# The demo conversation (gateway="demo")
# --------------------------------------------------------------------------------------------

DEMO_FILE = "hello.txt"
DEMO_FILE_CONTENT = "Hello from the SmartSpec Desktop demo!\n"
DEMO_GREETING = (
    "Hello! I am the SmartSpec demo gateway: scripted answers, simulated credits, no real model. "
    "Ask me to write a file, or to make a todo list."
)


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


class DemoScript:
    """Scripted answers for the demo gateway, chosen from the conversation so far.

    - after a tool result (the last message has ``role: "tool"``): a short closing text;
    - a last user message about a todo list / plan: a ``todowrite`` tool call with three items;
    - one about writing / creating a file: a ``write`` tool call creating ``hello.txt``;
    - anything else: a greeting that says what the demo can do.
    """

    def __init__(self, file_path: str = DEMO_FILE, file_content: str = DEMO_FILE_CONTENT) -> None:
        self.file_path = file_path
        self.file_content = file_content

    def answer(self, messages: list[Any]) -> Step:
        last = messages[-1] if messages else {}
        if isinstance(last, dict) and last.get("role") == "tool":
            return Text("Done. That was the demo gateway: every answer here is scripted.")
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = _message_text(user[-1]).lower() if user else ""
        if "todo" in prompt or "plan" in prompt:
            todos = [
                {"content": "Read the workspace", "status": "completed", "priority": "high"},
                {"content": f"Write {self.file_path}", "status": "in_progress", "priority": "high"},
                {"content": "Summarise the result", "status": "pending", "priority": "medium"},
            ]
            return ToolCall("todowrite", {"todos": todos})
        if any(word in prompt for word in ("file", "write", "create")):
            return ToolCall("write", {"filePath": self.file_path, "content": self.file_content})
        return Text(DEMO_GREETING)


# --------------------------------------------------------------------------------------------
# Recorded requests and internal records
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as received (recorded before any check, so 429/401/... are included)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None (no body / not JSON)
    client_ip: str
    status: int | None = None  # status code answered (None if the connection was dropped)
    time: float = field(default_factory=time.time)

    @property
    def bearer_token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth.split(" ", 1)[1].strip()
        return None

    def __repr__(self) -> str:  # never show credentials
        headers = {
            k: ("<redacted>" if k in ("authorization", "cookie") else v)
            for k, v in self.headers.items()
        }
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, query={self.query!r}, "
            f"status={self.status!r}, client_ip={self.client_ip!r}, headers={headers!r})"
        )


@dataclass
class _User:
    id: str
    email: str
    full_name: str
    password_sha256: str
    balance: float
    is_admin: bool
    active: bool
    email_verified: bool = True
    created_at: datetime = field(default_factory=lambda: _now())

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "full_name": self.full_name,
            "credits_balance": float(self.balance),
            "is_admin": self.is_admin,
            "email_verified": self.email_verified,
        }


@dataclass
class _ApiKey:
    id: str
    email: str
    name: str
    key_sha256: str
    key_prefix: str
    created_at: datetime
    expires_at: datetime | None
    description: str | None
    is_active: bool = True
    last_used_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "key_prefix": self.key_prefix,
            "is_active": self.is_active,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "description": self.description,
        }


@dataclass
class _Transaction:
    id: str
    email: str
    type: str
    amount: float
    description: str
    balance_before: float
    balance_after: float
    metadata: dict[str, Any]
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "amount": _num(self.amount),
            "amount_usd": _num(self.amount / 1000.0),
            "description": self.description,
            "balance_before": _num(self.balance_before),
            "balance_after": _num(self.balance_after),
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat(),
        }


class _HttpResponse(Exception):
    """Raised inside a handler to answer a JSON error and stop processing."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class _ClientGone(Exception):
    """The client closed the connection, or the server is stopping."""


def _num(value: float) -> float | int:
    """Credits as JSON numbers: an int when integral (like the real service), else a float."""
    rounded = round(float(value), 6)
    return int(rounded) if rounded.is_integer() else rounded


def _now() -> datetime:
    """Naive UTC, like the real service (backend-contract.md: "Timestamps are naive ISO (no
    offset), UTC")."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _missing(loc: list[str], value: Any = None) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": value}


def _not_a_string(loc: list[str], value: Any) -> dict[str, Any]:
    return {
        "type": "string_type",
        "loc": loc,
        "msg": "Input should be a valid string",
        "input": value,
    }


def _email_problem(email: str) -> str | None:
    """What pydantic's ``EmailStr`` (email-validator) says about a malformed address."""
    if "@" not in email:
        return "An email address must have an @-sign."
    local, _, domain = email.rpartition("@")
    if not local:
        return "There must be something before the @-sign."
    if not domain:
        return "There must be something after the @-sign."
    if "." not in domain or domain.startswith(".") or domain.endswith("."):
        return "The part after the @-sign is not valid. It should have a period."
    if any(c.isspace() for c in email):
        return "The email address contains invalid characters."
    return None


def _valid_email(value: Any) -> str:
    """backend-contract.md "Login e-mail": validated as an e-mail (``"admin"`` → 422 with
    pydantic's message), surrounding spaces stripped."""
    if not isinstance(value, str):
        raise _HttpResponse(422, {"detail": [_not_a_string(["body", "email"], value)]})
    email = value.strip()
    problem = _email_problem(email)
    if problem:
        raise _HttpResponse(
            422,
            {
                "detail": [
                    {
                        "type": "value_error",
                        "loc": ["body", "email"],
                        "msg": f"value is not a valid email address: {problem}",
                        "input": value,
                        "ctx": {"reason": problem},
                    }
                ]
            },
        )
    return email


_SPECIAL = set('!@#$%^&*(),.?":{}|<>')
_COMMON_PASSWORDS = {"password", "12345678", "qwerty", "abc123", "password123", "admin"}


def _password_problem(password: str) -> str | None:
    if len(password) < 8:
        return "Password must be at least 8 characters long"
    if not any(c.isupper() for c in password):
        return "Password must contain at least one uppercase letter"
    if not any(c.islower() for c in password):
        return "Password must contain at least one lowercase letter"
    if not any(c.isdigit() for c in password):
        return "Password must contain at least one digit"
    if not any(c in _SPECIAL for c in password):
        return 'Password must contain at least one special character (!@#$%^&*(),.?":{}|<>)'
    if password.lower() in _COMMON_PASSWORDS:
        return "Password is too common. Please choose a stronger password."
    return None


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, standin: BackendStandIn, port: int = 0) -> None:
        self.standin = standin
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="backend-standin-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._conns[cast(socket.socket, request)] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._conns.pop(cast(socket.socket, request), None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Never print tracebacks; keep them for tests to inspect.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            self.standin.errors.append(exc)

    def drop_connections(self, timeout: float) -> None:
        """Shut down every open connection (unblocks reads/writes) and join their threads."""
        with self._conn_lock:
            items = list(self._conns.items())
        for sock, _thread in items:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _sock, thread in items:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(httpserve.DispatchingHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    timeout = 60  # idle keep-alive connections do not live forever

    _record: RecordedRequest | None = None

    def setup(self) -> None:
        super().setup()
        # No Nagle: headers and small SSE chunks go out at once (no 40 ms delayed-ACK stalls).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- quiet ---------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    @property
    def standin(self) -> BackendStandIn:
        return cast(_Server, self.server).standin

    # -- verbs (GET … DELETE: httpserve.DispatchingHandler) ------------------------------------
    def do_OPTIONS(self) -> None:
        self._dispatch()

    # -- low-level writing ---------------------------------------------------------------------
    def send_response(self, code: int, message: str | None = None) -> None:
        if self._record is not None:
            self._record.status = code
        super().send_response(code, message)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8")
        drip, pad = self.standin._misbehaviour(self._record.path if self._record else "")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload) + pad))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if drip > 0:  # one byte every `drip` seconds (a slow-drip answer)
            self._write(b"")
            for i in range(len(payload)):
                self._write(payload[i : i + 1])
                if self.standin._stopping.wait(drip):
                    raise _ClientGone()
        else:
            self._write(payload)
        block = b" " * 65536  # trailing whitespace keeps the JSON valid, however large
        while pad > 0:
            self._write(block[: min(pad, len(block))])
            pad -= len(block)

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            self.close_connection = True
            raise _ClientGone() from exc

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._write(b"")

    def _sse(self, data: str) -> None:
        raw = f"data: {data}\n\n".encode()
        self._write(f"{len(raw):x}\r\n".encode("ascii") + raw + b"\r\n")

    def _end_chunked(self) -> None:
        self._write(b"0\r\n\r\n")

    def _read_body(self) -> bytes:
        return httpserve.read_body(self.rfile, self.headers)

    # -- dispatch ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        standin = self.standin
        split = urlsplit(self.path)
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        body: Any = None
        body_error: str | None = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = str(exc)
        record = RecordedRequest(
            method=self.command,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_ip=str(self.client_address[0]),
        )
        self._record = record
        standin._record(record)
        try:
            try:
                self._route(record, body_error)
            except _HttpResponse as resp:
                self._send_json(resp.status, resp.body, resp.headers)
        except _ClientGone:
            self.close_connection = True
        finally:
            self._record = None

    def _route(self, rec: RecordedRequest, body_error: str | None) -> None:
        standin = self.standin
        limited = standin._rate_check(rec.client_ip)
        if limited is not None:
            # backend-contract.md: "429 carries no Retry-After" (a test may force one).
            raise _HttpResponse(429, RATE_LIMIT_BODY, limited)
        if standin._delay_all > 0 and standin._stopping.wait(standin._delay_all):
            raise _ClientGone()
        if rec.method in ("POST", "PUT", "PATCH"):
            kind = rec.headers.get("content-type")
            if not kind:
                raise _HttpResponse(400, {"error": "Missing Content-Type header"})
            # backend-contract.md: "Non-JSON Content-Type on a POST → 415".
            if kind.split(";", 1)[0].strip().lower() != "application/json":
                raise _HttpResponse(415, UNSUPPORTED_MEDIA_BODY)

        handler = standin._match(rec.method, rec.path)  # raises 404 / 405
        if body_error is not None:
            raise _HttpResponse(
                422,
                {
                    "detail": [
                        {
                            "type": "json_invalid",
                            "loc": ["body", 0],
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": {"error": body_error},
                        }
                    ]
                },
            )
        handler(self, rec)


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------

_RouteFn = Callable[["BackendStandIn", _Handler, RecordedRequest], None]


class BackendStandIn:
    """A SmartSpecPro backend on 127.0.0.1 (see the module docstring).

    ``gateway`` is ``"scripted"`` (default), ``"real"`` or ``"demo"``; ``port`` 0 lets the OS
    pick one. ``strict_content`` (default on, in every mode) answers 422 to array or ``null``
    message content, as the real service does; OpenCode 1.18.33 sends string content on every
    turn, tool-call turns included (checked with tests/integration/test_cli_tasks.py). Turn it
    off to try a client that sends OpenAI's array/``null`` content."""

    def __init__(
        self,
        *,
        gateway: str = "scripted",
        port: int = 0,
        strict_content: bool = True,
    ) -> None:
        if gateway not in GATEWAY_MODES:
            raise ValueError(f"gateway must be one of {GATEWAY_MODES}, not {gateway!r}")
        self.gateway = gateway
        self.strict_content = strict_content
        self._port = port
        self.demo = DemoScript()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        # Tunables (plain attributes; change them at any time).
        self.token_ttl: float = 1800.0
        self.rate_limit_per_minute: int | None = 60  # None or 0 disables the limit
        self.rate_window_seconds: float = 60.0
        #: The model ids ``/v1/opencode/models`` lists (the real 19, short and vendor forms).
        self.models: list[str] = [m for m, _owner in REAL_MODELS]
        #: Deductions are positive integers (rounded up), like the real service's.
        self.credits_per_1k_tokens: float = 100.0
        self.default_step: Step = Text()
        self.chat_script: queue.Queue[Step] = queue.Queue()
        self.errors: list[BaseException] = []  # unexpected handler exceptions (should stay [])

        self._users: dict[str, _User] = {}
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (email, monotonic expiry)
        self._keys: dict[str, _ApiKey] = {}  # key id -> record
        self._transactions: list[_Transaction] = []
        self._requests: list[RecordedRequest] = []
        self._hits: dict[str, list[float]] = {}  # ip -> [window start, count]
        self._forced_429: deque[int | None] = deque()
        self._drip: tuple[float, str | None] = (0.0, None)
        self._pad: tuple[int, str | None] = (0, None)
        self._health_ok = True
        self._delay_all = 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> BackendStandIn:
        if self._server is not None:
            raise RuntimeError("BackendStandIn already started")
        self._stopping.clear()
        self._server = _Server(self, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="backend-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes Delay / Hang / delay_all waits
        server.shutdown()
        if thread is not None:
            thread.join(2.0)
        server.drop_connections(timeout=1.0)
        server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> BackendStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("BackendStandIn not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        """The OpenCode provider ``baseURL``: ``<url>/v1/opencode``."""
        return f"{self.url}/v1/opencode"

    # -- accounts ------------------------------------------------------------------------------
    def add_user(
        self,
        email: str,
        password: str,
        credits: float = 10000.0,
        is_admin: bool = False,
        active: bool = True,
        full_name: str | None = None,
    ) -> dict[str, Any]:
        """Create a user; returns the public user object (as in login / ``/api/auth/me``)."""
        user = _User(
            id=str(uuid.uuid4()),
            email=email,
            full_name=full_name if full_name is not None else email.split("@", 1)[0],
            password_sha256=_sha256(password),
            balance=float(credits),
            is_admin=is_admin,
            active=active,
        )
        with self._lock:
            self._users[email] = user
            return user.public()

    def _user(self, email: str) -> _User:
        """A user by e-mail, for test helpers (exact first, then any case; the login route
        itself is case-sensitive)."""
        with self._lock:
            user = self._users.get(email)
            if user is None:
                user = next((u for k, u in self._users.items() if k.lower() == email.lower()), None)
            if user is None:
                raise KeyError(f"no such user: {email}")
            return user

    def balance(self, email: str) -> float:
        with self._lock:
            return self._user(email).balance

    def set_balance(self, email: str, credits: float) -> None:
        with self._lock:
            self._user(email).balance = float(credits)

    def set_active(self, email: str, active: bool) -> None:
        with self._lock:
            self._user(email).active = active

    def transactions(self, email: str) -> list[dict[str, Any]]:
        """The user's transactions, newest first, in the route's shape."""
        with self._lock:
            return [
                t.public()
                for t in reversed(self._transactions)
                if t.email == self._user(email).email
            ]

    def issue_token(self, email: str) -> str:
        """A JWT-looking access token for ``email`` (what login returns), valid ``token_ttl``."""
        with self._lock:
            user = self._user(email)
            header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            claims = {
                "sub": user.email,
                "user_id": user.id,
                "exp": int(time.time() + self.token_ttl),
                "jti": secrets.token_hex(8),
            }
            payload = _b64url(json.dumps(claims).encode())
            token = f"{header}.{payload}.{secrets.token_urlsafe(32)}"
            self._tokens[token] = (user.email, time.monotonic() + self.token_ttl)
            return token

    def expire_tokens(self) -> None:
        """Make every access token issued so far invalid (as if 30 minutes had passed)."""
        with self._lock:
            self._tokens.clear()

    def issue_api_key(
        self,
        email: str,
        name: str = "test",
        expires_in_days: int | None = 90,
        description: str | None = None,
    ) -> str:
        """Create an API key for ``email`` without HTTP; returns the raw key."""
        with self._lock:
            user = self._user(email)
            _record, raw = self._create_key(user, name, expires_in_days, description)
            return raw

    def api_keys(self, email: str, include_inactive: bool = True) -> list[dict[str, Any]]:
        """The user's keys in the route's shape, newest first (backend-contract.md: "Key list
        is newest first")."""
        with self._lock:
            owner = self._user(email).email
            mine = [
                k
                for k in reversed(list(self._keys.values()))
                if k.email == owner and (include_inactive or k.is_active)
            ]
            mine.sort(key=lambda k: k.created_at, reverse=True)  # stable: ties stay newest first
            return [k.public() for k in mine]

    def revoke_api_key(self, raw: str) -> bool:
        """Revoke a key by its raw value without HTTP; False if it is unknown."""
        digest = _sha256(raw)
        with self._lock:
            for key in self._keys.values():
                if secrets.compare_digest(key.key_sha256, digest):
                    key.is_active = False
                    return True
        return False

    def _create_key(
        self,
        user: _User,
        name: str,
        expires_in_days: int | None,
        description: str | None,
    ) -> tuple[_ApiKey, str]:
        raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
        now = _now()
        record = _ApiKey(
            id=str(uuid.uuid4()),
            email=user.email,
            name=name,
            key_sha256=_sha256(raw),
            key_prefix=f"{raw[:16]}...{raw[-4:]}",
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            description=description or DEFAULT_KEY_DESCRIPTION,
        )
        self._keys[record.id] = record
        return record, raw

    # -- test controls -------------------------------------------------------------------------
    def script(self, *steps: Step) -> None:
        """Queue chat-completion answers, in order. An empty queue answers ``default_step``."""
        for step in steps:
            self.chat_script.put(step)

    def clear_script(self) -> None:
        while True:
            try:
                self.chat_script.get_nowait()
            except queue.Empty:
                return

    def force_429(self, count: int, retry_after: int | None = None) -> None:
        """The next ``count`` requests (any route) answer 429. Like the real service, without
        ``Retry-After`` unless ``retry_after`` is given (for the app's header path)."""
        with self._lock:
            self._forced_429.extend([retry_after] * count)

    def drip_answers(self, seconds_per_byte: float, path: str | None = None) -> None:
        """JSON answers (of ``path``, or all) are sent one byte every ``seconds_per_byte``
        (0 turns it off): a backend that never quite stops answering."""
        with self._lock:
            self._drip = (max(0.0, float(seconds_per_byte)), path)

    def pad_answers(self, nbytes: int, path: str | None = None) -> None:
        """JSON answers (of ``path``, or all) get ``nbytes`` of trailing whitespace (still valid
        JSON; streamed, so it costs the stand-in no memory). 0 turns it off."""
        with self._lock:
            self._pad = (max(0, int(nbytes)), path)

    def reset_rate_limit(self) -> None:
        with self._lock:
            self._hits.clear()
            self._forced_429.clear()

    def set_health_ok(self, ok: bool) -> None:
        with self._lock:
            self._health_ok = ok

    def delay_all(self, seconds: float) -> None:
        """Every request waits ``seconds`` before being handled (0 to turn off)."""
        with self._lock:
            self._delay_all = max(0.0, float(seconds))

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == CHAT_PATH]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- internals: bookkeeping ----------------------------------------------------------------
    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)

    def _misbehaviour(self, path: str) -> tuple[float, int]:
        with self._lock:
            drip, drip_path = self._drip
            pad, pad_path = self._pad
        return (
            drip if drip_path in (None, path) else 0.0,
            pad if pad_path in (None, path) else 0,
        )

    def _rate_check(self, ip: str) -> dict[str, str] | None:
        """None if the request may proceed, else the 429's extra headers.

        backend-contract.md: "fixed 60 requests per 60 s per IP": a fixed window that starts at
        the first request and holds ``rate_limit_per_minute`` requests, across all routes."""
        with self._lock:
            if self._forced_429:
                forced = self._forced_429.popleft()
                return {} if forced is None else {"Retry-After": str(forced)}
            limit = self.rate_limit_per_minute
            if not limit:
                return None
            now = time.monotonic()
            window = self._hits.get(ip)
            if window is None or now - window[0] >= self.rate_window_seconds:
                window = self._hits[ip] = [now, 0.0]
            window[1] += 1
            return {} if window[1] > limit else None

    def _deduct(
        self, user: _User, model: str, usage: dict[str, int], request_id: str, stream: bool
    ) -> None:
        # backend-contract.md "Transactions": a positive integer amount, type "deduction",
        # metadata always {}, description "OpenCode: <model> (<n> tokens)".
        total = usage["total_tokens"]
        cost = math.ceil(round(self.credits_per_1k_tokens * total / 1000.0, 6))
        with self._lock:
            before = user.balance
            user.balance = before - cost
            self._transactions.append(
                _Transaction(
                    id=str(uuid.uuid4()),
                    email=user.email,
                    type="deduction",
                    amount=cost,
                    description=f"OpenCode: {model} ({total} tokens)",
                    balance_before=before,
                    balance_after=user.balance,
                    metadata={},
                    created_at=_now(),
                )
            )

    # -- internals: auth -----------------------------------------------------------------------
    def _bearer(self, rec: RecordedRequest) -> str:
        auth = rec.headers.get("authorization")
        if auth is None:
            raise _HttpResponse(422, {"detail": [_missing(["header", "authorization"])]})
        if not auth.lower().startswith("bearer "):
            raise _HttpResponse(401, {"detail": "Invalid authorization header"})
        return auth.split(" ", 1)[1].strip()

    def _user_from_jwt(self, token: str, *, check_active: bool = False) -> _User | None:
        """The token's user, or None when the token is unknown or expired."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None or entry[1] <= time.monotonic():
                self._tokens.pop(token, None)
                return None
            user = self._users.get(entry[0])
            if user is not None and check_active and not user.active:
                raise _HttpResponse(403, {"detail": INACTIVE_USER})
            return user

    def _user_from_key(self, raw: str) -> _User:
        digest = _sha256(raw)
        with self._lock:
            now = _now()
            for key in self._keys.values():
                if secrets.compare_digest(key.key_sha256, digest):
                    if not key.is_active or (key.expires_at is not None and key.expires_at <= now):
                        break
                    user = self._users.get(key.email)
                    if user is None:  # an inactive user's key still passes (contract note)
                        break
                    key.last_used_at = now
                    return user
        raise _HttpResponse(401, {"detail": "Invalid API key"})

    def _auth_jwt(self, rec: RecordedRequest) -> _User:
        """The JWT-only routes (``/api/auth/me``, ``/api/credits/*``): FastAPI's HTTPBearer.
        backend-contract.md "JWT routes": no header → 403 "Not authenticated"; a bad or expired
        token (or an API key) → 401 "Invalid authentication credentials" with
        ``WWW-Authenticate: Bearer``; an inactive user → 403 "User account is inactive"."""
        auth = rec.headers.get("authorization")
        if not auth:
            raise _HttpResponse(403, {"detail": "Not authenticated"})
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _HttpResponse(403, {"detail": "Invalid authentication credentials"})
        user = self._user_from_jwt(token.strip(), check_active=True)
        if user is None:
            raise _HttpResponse(
                401,
                {"detail": "Invalid authentication credentials"},
                {"WWW-Authenticate": "Bearer"},
            )
        return user

    def _auth_any(self, rec: RecordedRequest) -> _User:
        """The key and gateway routes: a Bearer API key or a JWT (contract "Auth failures")."""
        token = self._bearer(rec)
        if token.startswith(API_KEY_PREFIX):
            return self._user_from_key(token)
        user = self._user_from_jwt(token)
        if user is None:
            raise _HttpResponse(401, {"detail": "Invalid token"})
        return user

    # -- internals: routing --------------------------------------------------------------------
    def _match(self, method: str, path: str) -> Callable[[_Handler, RecordedRequest], None]:
        if len(path) > 1:
            path = path.rstrip("/")
        table: dict[str, dict[str, _RouteFn]] = {
            "/health": {"GET": BackendStandIn._r_health},
            "/v1/opencode/health": {"GET": BackendStandIn._r_gateway_health},
            "/api/auth/login": {"POST": BackendStandIn._r_login},
            "/api/auth/register": {"POST": BackendStandIn._r_register},
            "/api/auth/me": {"GET": BackendStandIn._r_me},
            "/api/credits/balance": {"GET": BackendStandIn._r_balance},
            "/api/credits/transactions": {"GET": BackendStandIn._r_transactions},
            "/v1/opencode/api-keys": {
                "GET": BackendStandIn._r_list_keys,
                "POST": BackendStandIn._r_create_key,
            },
            "/v1/opencode/models": {"GET": BackendStandIn._r_models},
            CHAT_PATH: {"POST": BackendStandIn._r_chat},
        }
        methods = table.get(path)
        if methods is None:
            parts = path.split("/")
            # /v1/opencode/api-keys/{id}[/rotate]
            if len(parts) == 5 and path.startswith("/v1/opencode/api-keys/") and parts[4]:
                methods = {"DELETE": BackendStandIn._r_delete_key}
            elif (
                len(parts) == 6
                and path.startswith("/v1/opencode/api-keys/")
                and (parts[5] == "rotate" and parts[4])
            ):
                methods = {"POST": BackendStandIn._r_rotate_key}
            else:
                raise _HttpResponse(404, {"detail": "Not Found"})
        fn = methods.get(method)
        if fn is None:
            raise _HttpResponse(405, {"detail": "Method Not Allowed"})
        return lambda h, rec: fn(self, h, rec)

    # -- routes: health / auth / credits -------------------------------------------------------
    def _r_health(self, h: _Handler, rec: RecordedRequest) -> None:
        status = "healthy" if self._health_ok else "degraded"
        h._send_json(
            200,
            {"status": status, "version": "1.0.0", "timestamp": _now().isoformat()},
        )

    def _r_gateway_health(self, h: _Handler, rec: RecordedRequest) -> None:
        ok = self._health_ok
        h._send_json(
            200 if ok else 503,
            {
                "status": "ok" if ok else "degraded",
                "service": "opencode-gateway",
                "version": "1.0.0",
                "timestamp": _now().isoformat(),
            },
        )

    def _r_login(self, h: _Handler, rec: RecordedRequest) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        errors = [
            _missing(["body", f], body or None) for f in ("email", "password") if f not in body
        ]
        if errors:
            raise _HttpResponse(422, {"detail": errors})
        email = _valid_email(body["email"])
        password = body["password"]
        if not isinstance(password, str):
            raise _HttpResponse(422, {"detail": [_not_a_string(["body", "password"], password)]})
        with self._lock:
            # backend-contract.md "Login e-mail": the lookup is case-sensitive.
            user = self._users.get(email)
            if user is None or not secrets.compare_digest(user.password_sha256, _sha256(password)):
                raise _HttpResponse(401, {"detail": "Incorrect email or password"})
            if not user.active:
                raise _HttpResponse(403, {"detail": INACTIVE_USER})
            answer = self._token_answer(user)
        h._send_json(200, answer)

    def _token_answer(self, user: _User) -> dict[str, Any]:
        return {
            "access_token": self.issue_token(user.email),
            "token_type": "bearer",
            "expires_in": int(self.token_ttl),
            "user": user.public(),
        }

    def _r_register(self, h: _Handler, rec: RecordedRequest) -> None:
        """backend-contract.md "Registration": 201 with 10,000 credits; the password needs an
        upper- and a lower-case letter, a digit and a special character (and 8 characters)."""
        body = rec.body if isinstance(rec.body, dict) else {}
        fields = ("email", "password", "full_name")
        errors = [_missing(["body", f], body or None) for f in fields if f not in body]
        if errors:
            raise _HttpResponse(422, {"detail": errors})
        email = _valid_email(body["email"])
        password, full_name = body["password"], body["full_name"]
        for name, value in (("password", password), ("full_name", full_name)):
            if not isinstance(value, str):
                raise _HttpResponse(422, {"detail": [_not_a_string(["body", name], value)]})
        problem = _password_problem(str(password))
        if problem:
            raise _HttpResponse(
                422,
                {
                    "detail": [
                        {
                            "type": "value_error",
                            "loc": ["body", "password"],
                            "msg": f"Value error, {problem}",
                            "input": "<redacted>",
                            "ctx": {"error": problem},
                        }
                    ]
                },
            )
        if not str(full_name).strip():
            raise _HttpResponse(
                422,
                {
                    "detail": [
                        {
                            "type": "string_too_short",
                            "loc": ["body", "full_name"],
                            "msg": "String should have at least 1 character",
                            "input": full_name,
                            "ctx": {"min_length": 1},
                        }
                    ]
                },
            )
        with self._lock:
            if email in self._users:
                raise _HttpResponse(400, {"detail": "Email already registered"})
            self.add_user(
                email, str(password), credits=REGISTRATION_CREDITS, full_name=str(full_name)
            )
            answer = self._token_answer(self._users[email])
        h._send_json(201, answer)

    def _r_me(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_jwt(rec)
        with self._lock:
            # backend-contract.md: "/api/auth/me adds created_at".
            answer = dict(user.public(), created_at=user.created_at.isoformat())
        h._send_json(200, answer)

    def _r_balance(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_jwt(rec)
        with self._lock:
            mine = [t for t in self._transactions if t.email == user.email]
            added = sum(t.amount for t in mine if t.type != "deduction")
            deducted = sum(t.amount for t in mine if t.type == "deduction")
            # backend-contract.md: "Balance stats has more keys than listed above".
            answer = {
                "balance_credits": _num(user.balance),
                "balance_usd": round(user.balance / 1000.0, 6),
                "stats": {
                    "total_added_credits": _num(added),
                    "total_added_usd": round(added / 1000.0, 6),
                    "total_deducted_credits": _num(deducted),
                    "total_deducted_usd": round(deducted / 1000.0, 6),
                    "transaction_count": len(mine),
                    "current_balance_credits": _num(user.balance),
                    "current_balance_usd": round(user.balance / 1000.0, 6),
                },
            }
        h._send_json(200, answer)

    def _r_transactions(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_jwt(rec)
        values: dict[str, int] = {"limit": 100, "offset": 0}
        for name in values:
            if name in rec.query:
                try:
                    values[name] = int(rec.query[name])
                except ValueError:
                    raise _HttpResponse(
                        422,
                        {
                            "detail": [
                                {
                                    "type": "int_parsing",
                                    "loc": ["query", name],
                                    "msg": "Input should be a valid integer, unable to parse "
                                    "string as an integer",
                                    "input": rec.query[name],
                                }
                            ]
                        },
                    ) from None
        with self._lock:
            mine = [t for t in reversed(self._transactions) if t.email == user.email]
            start = max(0, values["offset"])
            page = mine[start : start + max(0, values["limit"])]
            # The real service reports the page's length as "total".
            answer = {"transactions": [t.public() for t in page], "total": len(page)}
        h._send_json(200, answer)

    # -- routes: API keys ----------------------------------------------------------------------
    def _key_of(self, user: _User, rec: RecordedRequest, index: int) -> _ApiKey:
        key_id = rec.path.rstrip("/").split("/")[index]
        with self._lock:
            key = self._keys.get(key_id)
            if key is None or key.email != user.email:
                raise _HttpResponse(404, {"detail": "API key not found"})
            return key

    @staticmethod
    def _created(record: _ApiKey, raw: str) -> dict[str, Any]:
        return {
            "id": record.id,
            "name": record.name,
            "key": raw,
            "key_prefix": record.key_prefix,
            "created_at": record.created_at.isoformat(),
            "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            "description": record.description,
        }

    def _r_create_key(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_any(rec)
        body = rec.body if isinstance(rec.body, dict) else {}
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _HttpResponse(422, {"detail": [_missing(["body", "name"], body or None)]})
        days = body.get("expires_in_days")
        if days is not None and (not isinstance(days, int) or isinstance(days, bool)):
            raise _HttpResponse(
                422,
                {
                    "detail": [
                        {
                            "type": "int_type",
                            "loc": ["body", "expires_in_days"],
                            "msg": "Input should be a valid integer",
                            "input": days,
                        }
                    ]
                },
            )
        description = body.get("description")
        with self._lock:
            # backend-contract.md "Key create": a null description is replaced, and
            # expires_in_days null → 90 days.
            record, raw = self._create_key(
                user,
                name,
                days or 90,
                description if isinstance(description, str) and description else None,
            )
            answer = self._created(record, raw)
        h._send_json(200, answer)

    def _r_list_keys(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_any(rec)
        include = rec.query.get("include_inactive", "false").lower() in ("true", "1", "yes", "on")
        h._send_json(200, self.api_keys(user.email, include_inactive=include))

    def _r_delete_key(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_any(rec)
        with self._lock:
            key = self._key_of(user, rec, 4)
            key.is_active = False
            answer = {"status": "revoked", "key_id": key.id}
        h._send_json(200, answer)

    def _r_rotate_key(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_any(rec)
        with self._lock:
            key = self._key_of(user, rec, 4)
            # backend-contract.md "Rotating a revoked key answers 200 with a fresh raw key that
            # stays inactive": is_active is left as it was.
            raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
            key.key_sha256 = _sha256(raw)
            key.key_prefix = f"{raw[:16]}...{raw[-4:]}"
            answer = self._created(key, raw)
        h._send_json(200, answer)

    # -- routes: gateway -----------------------------------------------------------------------
    def _r_models(self, h: _Handler, rec: RecordedRequest) -> None:
        self._auth_any(rec)
        created = int(time.time())
        owners = dict(REAL_MODELS)
        data = [
            {
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": owners.get(m) or (m.split("/", 1)[0] if "/" in m else "smartspec"),
            }
            for m in list(self.models)
        ]
        h._send_json(200, {"object": "list", "data": data})

    def _r_chat(self, h: _Handler, rec: RecordedRequest) -> None:
        user = self._auth_any(rec)
        body = rec.body if isinstance(rec.body, dict) else {}
        errors = []
        if not isinstance(body.get("model"), str):
            errors.append(_missing(["body", "model"], body or None))
        if not isinstance(body.get("messages"), list):
            errors.append(_missing(["body", "messages"], body or None))
        if not errors and self.strict_content:
            errors = _content_errors(body["messages"])
        if errors:
            raise _HttpResponse(422, {"detail": errors})
        model = str(body["model"])
        with self._lock:
            if user.balance <= 0:
                raise _HttpResponse(402, {"detail": INSUFFICIENT_CREDITS})
        models = list(self.models)
        # backend-contract.md "Chat validation": a model id that is a substring of a listed id
        # (or contains one) passes; the 400 lists all ids in random order.
        if not any(model in m or m in model for m in models):
            shuffled = random.sample(models, len(models))
            raise _HttpResponse(
                400, {"detail": f"Invalid model. Available models: {', '.join(shuffled)}"}
            )
        stream = body.get("stream") is True
        step: Step
        if self.gateway == "real":
            # backend-contract.md "Known defect": a string-shaped error line, no [DONE]; 500
            # without streaming.
            step = ErrorChunk(REAL_STREAM_ERROR if stream else REAL_CHAT_ERROR, shape="string")
        elif self.gateway == "demo":
            step = self.demo.answer(body["messages"])
        else:
            try:
                step = self.chat_script.get_nowait()
            except queue.Empty:
                step = self.default_step
        _ChatRun(self, h, user, model, stream=stream).run(step)


def _content_errors(messages: list[Any]) -> list[dict[str, Any]]:
    """backend-contract.md "Chat validation": ``messages[].content`` must be a string (array
    content or ``null`` → 422)."""
    errors: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        loc: list[Any] = ["body", "messages", i]
        if not isinstance(message, dict):
            errors.append(
                {
                    "type": "model_attributes_type",
                    "loc": loc,
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": message,
                }
            )
            continue
        for name in ("role", "content"):
            if name not in message:
                errors.append(_missing([*loc, name], message))
            elif not isinstance(message[name], str):
                errors.append(_not_a_string([*loc, name], message[name]))
    return errors


class _ChatRun:
    """Plays one script step as an OpenAI Chat Completions answer."""

    def __init__(
        self, standin: BackendStandIn, h: _Handler, user: _User, model: str, stream: bool
    ) -> None:
        self.standin = standin
        self.h = h
        self.user = user
        self.model = model
        self.stream = stream
        self.request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.standin._stopping.wait(seconds):
            raise _ClientGone()

    def _chunk(
        self,
        delta: dict[str, Any] | None,
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> str:
        data: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage is not None:
            data["usage"] = usage
        return json.dumps(data)

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def run(self, step: Step) -> None:
        h = self.h
        if isinstance(step, Delay):
            self._wait(step.seconds)
            self.run(step.then_step if step.then_step is not None else Text())
        elif isinstance(step, Hang):
            if step.after_headers:
                h._start_sse()
            self.standin._stopping.wait()
            raise _ClientGone()
        elif isinstance(step, HttpError):
            h._send_json(step.status, step.body, step.headers)
        elif isinstance(step, ErrorChunk):
            if self.stream:
                h._start_sse()
                error: Any = step.message
                if step.shape != "string":
                    error = {"message": step.message, "type": "server_error"}
                h._sse(json.dumps({"error": error}))
                h._end_chunked()
            else:
                h._send_json(500, {"detail": step.message})
        elif isinstance(step, Text):
            self._text(step)
        elif isinstance(step, ToolCall):
            self._tool_call(step)
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"unknown script step: {step!r}")

    def _text(self, step: Text) -> None:
        usage = self._usage(step.prompt_tokens, step.completion_tokens)
        if not self.stream:
            self._complete({"role": "assistant", "content": step.text}, "stop", usage)
            return
        h = self.h
        h._start_sse()
        h._sse(self._chunk({"role": "assistant", "content": ""}))
        for piece in _split_text(step.text, step.pieces):
            self._wait(step.chunk_delay)
            h._sse(self._chunk({"content": piece}))
        self._wait(step.chunk_delay)
        h._sse(self._chunk({}, "stop"))
        self.standin._deduct(self.user, self.model, usage, self.request_id, stream=True)
        h._sse(self._chunk(None, usage=usage))
        h._sse("[DONE]")
        h._end_chunked()

    def _tool_call(self, step: ToolCall) -> None:
        usage = self._usage(step.prompt_tokens, step.completion_tokens)
        call_id = step.call_id or f"call_{uuid.uuid4().hex[:24]}"
        arguments = json.dumps(step.arguments)
        if not self.stream:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": step.name, "arguments": arguments},
                    }
                ],
            }
            self._complete(message, "tool_calls", usage)
            return
        h = self.h
        h._start_sse()
        first = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": step.name, "arguments": ""},
                }
            ],
        }
        h._sse(self._chunk(first))
        for piece in _split_text(arguments, 3, min_parts=2):
            h._sse(self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        h._sse(self._chunk({}, "tool_calls"))
        self.standin._deduct(self.user, self.model, usage, self.request_id, stream=True)
        h._sse(self._chunk(None, usage=usage))
        h._sse("[DONE]")
        h._end_chunked()

    def _complete(self, message: dict[str, Any], finish: str, usage: dict[str, int]) -> None:
        self.standin._deduct(self.user, self.model, usage, self.request_id, stream=False)
        self.h._send_json(
            200,
            {
                "id": self.request_id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            },
        )


def _split_text(text: str, parts: int, min_parts: int = 1) -> Iterator[str]:
    """Split ``text`` into about ``parts`` non-empty pieces (at least ``min_parts`` if the text
    has that many characters)."""
    count = max(min_parts, min(parts, len(text)))
    if count <= 1 or len(text) <= 1:
        if text:
            yield text
        return
    size = math.ceil(len(text) / count)
    for i in range(0, len(text), size):
        yield text[i : i + size]
