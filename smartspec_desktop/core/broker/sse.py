"""Watching an OpenAI chat-completions event stream as it is forwarded, without slowing it.

:class:`StreamWatcher` is fed the upstream bytes; it hands back what may be forwarded now
(whole lines only, so a line is never split between "inspect" and "forward") and notes, from
small lines only (a big content chunk is forwarded unparsed):

* the ``usage`` object of the final chunk;
* whether a ``finish_reason`` or ``data: [DONE]`` was seen (a stream that ends without either
  was cut short);
* an error: a ``data:`` line whose JSON has a top-level ``error`` (a string — the real backend's
  defect — or an object), or a ``data:`` line that is not JSON at all. Forwarding stops at the
  error; the caller turns it into a clean error (see ``errors.py``).

The hot path is cheap: :meth:`StreamWatcher.feed_parts` (and :meth:`~StreamWatcher.feed_span`, for
a span of a reused buffer) hands back slices (memoryviews) of the bytes it was fed, copying only a
line that straddles two reads; lines are found with ``bytes.find`` (``memchr``), and a line is
looked into with bounded ``find``/regex calls — it is JSON-decoded only when it holds ``"usage"``
or ``"error"``. A line longer than :data:`INSPECT_LIMIT` is not looked into at all (never usage
or error lines).

Standard library only.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Lines longer than this are forwarded without being parsed (never usage or error lines).
INSPECT_LIMIT = 64 * 1024
#: A partial line longer than this is forwarded as it is (too long to be inspected anyway).
HOLD_LIMIT = INSPECT_LIMIT
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
#: A ``data:`` payload that does not start with ``{`` (anywhere, not only at a line start).
_ODD = re.compile(rb"data:[ \t\r\x0b\x0c]*[^{ \t\r\n\x0b\x0c]")
#: Complete lines up to this many bytes at once are first scanned for anything to look into
#: (a read of many small events); bigger spans hold big lines, which are walked cheaply.
FAST_LIMIT = 256 * 1024
#: Bytes ``bytes.strip()`` removes around a ``data:`` payload.
_WS = frozenset(b" \t\r\n\x0b\x0c")
_LBRACE = ord("{")

#: What :meth:`StreamWatcher.feed_parts` returns: pieces to forward, in order.
Parts = list[bytes | memoryview]


class StreamWatcher:
    def __init__(self) -> None:
        self._pending = b""
        self._passthrough = False  # inside an over-long line: forward until its newline
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.done = False
        self.error: str | None = None
        self.data_lines = 0

    def feed(self, data: bytes) -> bytes:
        """Bytes that may be forwarded now. After an error, returns what came before it only."""
        parts = self.feed_parts(data)
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def feed_parts(self, data: bytes) -> Parts:
        """Like :meth:`feed`, as pieces (mostly memoryviews of ``data``, not copies)."""
        return self.feed_span(data, 0, len(data))

    def feed_span(self, data: bytes | bytearray, pos: int, size: int) -> Parts:
        """Like :meth:`feed_parts` for ``data[pos:size]``, without slicing it: the pieces are
        memoryviews of ``data`` (valid until the caller reuses it) or copies of held lines."""
        if self.error is not None or pos >= size:
            return []
        out: Parts = []
        view = memoryview(data)
        if self._passthrough:  # (nothing is pending then)
            nl = data.find(b"\n", pos, size)
            if nl < 0:
                return [view[pos:size]]
            self._passthrough = False
            out.append(view[pos : nl + 1])
            pos = nl + 1
        if self._pending:
            nl = data.find(b"\n", pos, size)
            held = self._pending
            if nl < 0:
                if len(held) + size - pos > HOLD_LIMIT:
                    self._pending = b""
                    self._start_passthrough(held[:5] + data[pos : min(pos + 5, size)])
                    out.append(held)
                    out.append(view[pos:size])
                else:
                    self._pending = held + data[pos:size]
                return out
            self._pending = b""
            if len(held) + nl + 1 - pos > INSPECT_LIMIT:
                self.data_lines += (held[:5] + data[pos : min(pos + 5, nl)]).startswith(b"data:")
                out.append(held)
                out.append(view[pos : nl + 1])
            else:
                line = held + data[pos : nl + 1]
                if line.startswith(b"data:") and not self._inspect(line, 0, len(line) - 1):
                    return out
                out.append(line)
            pos = nl + 1
        end = data.rfind(b"\n", pos, size)
        if end >= 0 and end - pos < FAST_LIMIT and self._plain(data, pos, end + 1):
            # Many small lines, none of them one to look into: counted, not walked in Python.
            self.data_lines += data.startswith(b"data:", pos, end + 1) + data.count(
                b"\ndata:", pos, end + 1
            )
            out.append(view[pos : end + 1])
            pos = end + 1
        elif end >= 0:
            # Complete lines data[pos:end + 1]: look into the small data: lines only.
            start = line_start = pos
            while line_start <= end:
                nl = data.find(b"\n", line_start, end + 1)
                if data.startswith(b"data:", line_start, nl):
                    if nl - line_start < INSPECT_LIMIT:
                        if not self._inspect(data, line_start, nl):
                            if line_start > start:
                                out.append(view[start:line_start])
                            return out
                    else:
                        self.data_lines += 1
                line_start = nl + 1
            out.append(view[start : end + 1])
            pos = end + 1
        if pos < size:
            if size - pos > HOLD_LIMIT:
                self._start_passthrough(data[pos : pos + 5])
                out.append(view[pos:size])
            else:
                self._pending = bytes(view[pos:size])
        return out

    def _plain(self, data: bytes | bytearray, start: int, end: int) -> bool:
        """True when no line of ``data[start:end]`` (whole lines) can be one :meth:`_inspect`
        would act on: no ``"error"`` or ``"usage"``, no ``finish_reason`` string while none was
        seen, and every ``data:`` payload starts with ``{`` (an ``[DONE]`` does not). Found by a
        few scans in C; a false alarm (say ``data: x`` inside a content string) only means the
        lines are walked one by one."""
        return (
            data.find(b'"error"', start, end) < 0
            and data.find(b'"usage"', start, end) < 0
            and _ODD.search(data, start, end) is None
            and (self.finished or _FINISH.search(data, start, end) is None)
        )

    def _start_passthrough(self, head: bytes | bytearray) -> None:
        self._passthrough = True
        self.data_lines += head.startswith(b"data:")

    def _inspect(self, buf: bytes | bytearray, start: int, nl: int) -> bool:
        """Look into the ``data:`` line ``buf[start:nl]`` (``nl``: its newline, or its end).
        False when it is an error (``self.error`` set)."""
        self.data_lines += 1
        p, q = start + 5, nl
        while p < q and buf[p] in _WS:
            p += 1
        while q > p and buf[q - 1] in _WS:
            q -= 1
        if p == q:
            return True
        if buf[p] != _LBRACE:
            if q - p == 6 and buf.startswith(b"[DONE]", p):
                self.done = True
                return True
            self.error = "its stream sent a line that is not JSON: " + _show(buf[p:q])
            return False
        if buf.find(b'"error"', p, q) >= 0 or buf.find(b'"usage"', p, q) >= 0:
            payload = buf[p:q]
            try:
                obj = json.loads(payload)
            except ValueError:
                self.error = "its stream sent a line that is not JSON: " + _show(payload)
                return False
            if isinstance(obj, dict):
                if "error" in obj and obj["error"] is not None and "choices" not in obj:
                    self.error = error_text(obj["error"])
                    return False
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    self.usage = usage
        if not self.finished and _FINISH.search(buf, p, q):
            self.finished = True
        return True

    def end(self) -> None:
        """The upstream stream ended: note a cut-short stream as an error."""
        if self.error is None and not (self.done or self.finished):
            if self.data_lines == 0:
                self.error = "it answered with an empty stream"
            else:
                self.error = "its stream ended before the answer was complete"


def error_text(error: object) -> str:
    """The message of an ``error`` value: a string, or an object with ``message``."""
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        msg = error.get("message")
        if isinstance(msg, str) and msg:
            return msg
        return json.dumps(error)[:300]
    return json.dumps(error)[:300]


def _show(payload: bytes | bytearray) -> str:
    return payload[:120].decode("utf-8", "replace")
