"""The small pieces the app's two stdlib HTTP servers share (the gateway broker and the demo
backend): every verb to one ``_dispatch``, and a request body read whole, chunked or not."""

from __future__ import annotations

from email.message import Message
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase


class BodyTooLarge(Exception):
    """The request body is larger than the server takes."""


def read_body(rfile: BufferedIOBase, headers: Message, *, limit: int | None = None) -> bytes:
    """The whole body: ``Transfer-Encoding: chunked`` or ``Content-Length`` (none: empty).

    Raises :class:`BodyTooLarge` past ``limit`` bytes (None: no limit), ``ValueError`` for a
    malformed length."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            n = int(rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
            if n == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            size += n
            if limit is not None and size > limit:
                raise BodyTooLarge(f"over {limit} bytes")
            parts.append(rfile.read(n))
            rfile.readline(16)  # the CRLF after the chunk
    length = int(headers.get("Content-Length") or 0)
    if length < 0:
        raise ValueError("negative Content-Length")
    if limit is not None and length > limit:
        raise BodyTooLarge(f"{length} bytes, over {limit}")
    return rfile.read(length) if length else b""


class DispatchingHandler(BaseHTTPRequestHandler):
    """Sends GET, POST, PUT, PATCH and DELETE to :meth:`_dispatch` (which routes by path)."""

    def _dispatch(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()
