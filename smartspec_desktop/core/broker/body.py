"""Reading a streamed upstream answer's body into one reusable buffer.

``http.client``'s ``read1`` allocates a new ``bytes`` object for every read (for a 1 MB read, fresh
pages the kernel must fault in and zero, then give back), and walks the chunked framing in Python
per chunk. :class:`UpstreamBody` reads the socket straight into a buffer taken from a
:class:`BufferPool` (``readinto1``: one ``recv`` a call, no allocation) and decodes the framing
itself, handing back the spans of the buffer that are body bytes (or one run of them:
:meth:`UpstreamBody.read_run`); the caller looks into them and
forwards them (as memoryviews: nothing is copied) before the next read overwrites the buffer.

Framing: ``Transfer-Encoding: chunked`` (sizes, extensions and trailers), ``Content-Length``, or
until the connection closes. A body that ends before its framing says (a cut connection) raises
``http.client.IncompleteRead``; a malformed chunk size raises ``http.client.HTTPException``.
:attr:`UpstreamBody.complete` tells whether the whole body was read (so the connection may carry
another request).

Standard library only.
"""

from __future__ import annotations

import http.client
import threading

_SIZE, _DATA, _CRLF, _TRAILER = range(4)
#: A chunk-size or trailer line longer than this is not HTTP.
_MAX_LINE = 8192


class BufferPool:
    """A few reusable read buffers of ``size`` bytes (at most ``keep`` are kept when idle)."""

    def __init__(self, size: int, keep: int = 4) -> None:
        self.size = size
        self._keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def get(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(self.size)

    def put(self, buffer: bytearray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffer)


class UpstreamBody:
    """The body of ``resp`` (headers already read), read into ``buffer`` piece by piece."""

    def __init__(self, resp: http.client.HTTPResponse, buffer: bytearray) -> None:
        if resp.fp is None:
            raise ValueError("the response has no body to read")
        self._resp = resp  # (its file closes when it is collected)
        self._fp = resp.fp
        self.buffer = buffer
        self._view = memoryview(buffer)
        self._chunked = bool(resp.chunked)
        #: Content-Length bytes still to come (None: chunked, or until the connection closes).
        self._left: int | None = None if self._chunked else resp.length
        self._state = _SIZE
        self._chunk_left = 0
        self._line = b""  # a framing line split between two reads
        self._started = False
        self.complete = self._left == 0

    def read(self) -> list[tuple[int, int]]:
        """The ``(start, end)`` spans of :attr:`buffer` that hold the body bytes of one read
        (it blocks until something arrives; a read of framing only is followed by another);
        ``[]`` once the body is complete. The spans are valid until the next call."""
        while not self.complete:
            n = self._fill()
            if n == 0:
                if self._chunked or self._left is not None:
                    raise http.client.IncompleteRead(b"")
                self.complete = True  # an answer that ends when the connection closes
                break
            if not self._chunked:
                if self._left is not None:
                    self._left -= n
                    self.complete = self._left <= 0
                return [(0, n)]
            spans = self._dechunk(n)
            if spans:
                return spans
        return []

    def read_run(self) -> tuple[int, int] | None:
        """Like :meth:`read`, as one run ``(start, end)`` of :attr:`buffer`: the framing between
        the chunks of one read is squeezed out in place (a few small moves: a read holds many
        chunks only when they are small), so the caller looks into and sends one piece a read,
        not one a chunk. None once the body is complete."""
        spans = self.read()
        if not spans:
            return None
        start, end = spans[0]
        view = self._view
        for a, z in spans[1:]:
            view[end : end + z - a] = view[a:z]  # (memmove: overlapping is fine)
            end += z - a
        return start, end

    def _fill(self) -> int:
        limit = len(self.buffer) if self._left is None else min(len(self.buffer), self._left)
        if not self._started:
            # What reading the headers left in the file's own buffer comes first (read1 returns
            # only that when there is some); after this, that buffer stays empty, and readinto1
            # with more room than it has reads the socket straight into ours, once a call.
            self._started = True
            first = self._fp.read1(min(limit, 65536))
            self.buffer[: len(first)] = first
            return len(first)
        return self._fp.readinto1(self._view[:limit])

    def _dechunk(self, n: int) -> list[tuple[int, int]]:
        buf = self.buffer
        spans: list[tuple[int, int]] = []
        pos = 0
        while pos < n:
            if self._state == _DATA:
                take = min(self._chunk_left, n - pos)
                spans.append((pos, pos + take))
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._state = _CRLF
                continue
            nl = buf.find(b"\n", pos, n)
            if nl < 0:
                self._line += buf[pos:n]
                if len(self._line) > _MAX_LINE:
                    raise http.client.HTTPException("its chunked framing is not HTTP")
                break
            line = (self._line + buf[pos:nl]).rstrip(b"\r")
            self._line = b""
            pos = nl + 1
            if self._state == _CRLF:
                if line:
                    raise http.client.HTTPException("its chunked framing is not HTTP")
                self._state = _SIZE
            elif self._state == _SIZE:
                text = line.split(b";", 1)[0].strip()
                try:
                    size = int(text, 16)
                except ValueError:
                    raise http.client.HTTPException(
                        f"its chunked framing has a bad chunk size {text[:20]!r}"
                    ) from None
                if size < 0:
                    raise http.client.HTTPException("its chunked framing is not HTTP")
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._chunk_left = size
                    self._state = _DATA
            elif not line:  # _TRAILER: the empty line that ends the trailers ends the body
                self.complete = True
                break
        return spans
