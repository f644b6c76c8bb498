"""The upstream side of a streamed answer: reading the backend's event stream through the watcher.

:class:`Upstream` reads ``resp`` (an ``http.client`` response) in pieces of up to
:data:`READ_SIZE` bytes through a :class:`~smartspec_desktop.core.broker.sse.StreamWatcher` and
hands the caller batches to forward. At first every read happens in the caller's thread: a
token-by-token answer (the usual kind) costs no extra thread. Once :meth:`Upstream.detach` is
called (the broker does so after :data:`DETACH_AFTER` bytes), a thread of its own reads ahead of
the caller, up to :data:`BACKLOG` bytes: then a backend that sends faster than OpenCode reads is
drained at its own pace instead of waiting for each write to OpenCode to finish, which is what
cost a serial relay its throughput (the backend's write blocks while the broker writes).

Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from smartspec_desktop.core.broker.sse import Parts, StreamWatcher

log = logging.getLogger(__name__)

#: ``read1`` returns what has arrived (up to this), so a big size adds no latency.
READ_SIZE = 1024 * 1024
#: Bytes forwarded after which reads move to a thread of their own (a bulk answer).
DETACH_AFTER = 256 * 1024
#: Most bytes read ahead of OpenCode (a slow reader makes the thread wait, not memory grow).
BACKLOG = 8 * 1024 * 1024


@dataclass
class Batch:
    """What to forward now, and what the watcher knew once it was read."""

    parts: Parts = field(default_factory=list)
    size: int = 0
    #: ``data: [DONE]`` was seen (the call must be metered before this batch goes out).
    done: bool = False
    usage: dict[str, Any] | None = None

    def add(self, other: Batch) -> None:
        self.parts.extend(other.parts)
        self.size += other.size
        self.done = self.done or other.done
        self.usage = other.usage if other.usage is not None else self.usage


class Upstream:
    def __init__(
        self,
        resp: http.client.HTTPResponse,
        watcher: StreamWatcher,
        *,
        idle_timeout: float,
        sock: socket.socket | None = None,
    ) -> None:
        self._resp = resp
        self.watcher = watcher
        self._idle_timeout = idle_timeout
        self._sock = sock  # to wake a read blocked in the thread when the caller gives up
        self._cond = threading.Condition()
        self._queue: deque[Batch] = deque()
        self._queued = 0
        self._ended = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def detached(self) -> bool:
        return self._thread is not None

    def _read(self) -> Batch | None:
        """One read through the watcher; None at the end (``watcher.error`` says if it failed)."""
        w = self.watcher
        if w.error is not None:
            return None
        try:
            chunk = self._resp.read1(READ_SIZE)
        except (OSError, http.client.HTTPException) as e:
            if w.error is None:
                w.error = (
                    f"its stream sent nothing for {self._idle_timeout:.0f} s"
                    if isinstance(e, TimeoutError)
                    else f"its stream broke off ({e})"
                )
            return None
        if not chunk:
            w.end()
            return None
        parts = w.feed_parts(chunk)
        return Batch(parts, sum(len(p) for p in parts), w.done, w.usage)

    def next(self) -> Batch | None:
        """The next batch to forward (all that was read ahead, as one), or None at the end."""
        if self._thread is None:
            return self._read()
        with self._cond:
            while not self._queue and not self._ended:
                self._cond.wait()
            if not self._queue:
                return None
            batch = self._queue.popleft()
            while self._queue:
                batch.add(self._queue.popleft())
            self._queued = 0
            self._cond.notify_all()
            return batch

    def detach(self) -> None:
        """Read ahead in a thread of its own from now on."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="broker-upstream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                batch = self._read()
                with self._cond:
                    if batch is None or self._stopping:
                        return
                    self._queue.append(batch)
                    self._queued += batch.size
                    self._cond.notify_all()
                    while self._queued > BACKLOG and not self._stopping:
                        self._cond.wait()
        except Exception:
            log.exception("broker: reading the backend's stream failed")
            if self.watcher.error is None:
                self.watcher.error = "reading its stream failed in the broker"
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def close(self) -> None:
        """Stop reading ahead (the stream is over, or OpenCode went away) and wait for it."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread.is_alive() and not self._ended and self._sock is not None:
            # A read blocked on the backend returns at once once the socket is shut down.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        thread.join(5.0)
