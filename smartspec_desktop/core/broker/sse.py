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
        if self.error is not None:
            return b""
        buf = self._pending + data if self._pending else data
        out: list[bytes] = []
        start = 0
        if self._passthrough:
            nl = buf.find(b"\n")
            if nl < 0:
                self._pending = b""
                return buf
            out.append(buf[: nl + 1])
            start = nl + 1
            self._passthrough = False
        end = buf.rfind(b"\n")
        if end < start:
            rest = buf[start:]
            if len(rest) > HOLD_LIMIT:
                self._passthrough = True
                self.data_lines += rest.startswith(b"data:")
                self._pending = b""
                out.append(rest)
            else:
                self._pending = rest
            return b"".join(out)
        complete = buf[start : end + 1]
        self._pending = buf[end + 1 :]
        if len(self._pending) > HOLD_LIMIT:
            self._passthrough = True
            self.data_lines += self._pending.startswith(b"data:")
            tail, self._pending = self._pending, b""
        else:
            tail = b""
        # Inspect line by line; only small ``data:`` lines with a telling key are parsed.
        pos = 0
        while pos < len(complete):
            nl = complete.find(b"\n", pos)
            if not self._inspect(complete[pos : nl + 1]):
                # Keep what came before the bad line; drop it and everything after.
                out.append(complete[:pos])
                self._pending = b""
                return b"".join(out)
            pos = nl + 1
        out.append(complete)
        if tail:
            out.append(tail)
        return b"".join(out)

    def _inspect(self, line: bytes) -> bool:
        """False when ``line`` is an error (``self.error`` set)."""
        if not line.startswith(b"data:"):
            return True
        self.data_lines += 1
        if len(line) > INSPECT_LIMIT:
            return True
        payload = line[5:].strip()
        if not payload:
            return True
        if payload == b"[DONE]":
            self.done = True
            return True
        if payload[:1] != b"{":
            self.error = "its stream sent a line that is not JSON: " + _show(payload)
            return False
        if b'"error"' in payload or b'"usage"' in payload:
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
        if not self.finished and _FINISH.search(payload):
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


def _show(payload: bytes) -> str:
    return payload[:120].decode("utf-8", "replace")
