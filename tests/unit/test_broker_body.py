"""The broker's body reader (``body.py``): framing decoded from a reused buffer, read by read."""

from __future__ import annotations

import http.client
import io
import json
import random

import pytest

from smartspec_desktop.core.broker.body import BufferPool, UpstreamBody
from smartspec_desktop.core.broker.sse import StreamWatcher


class _Trickle(io.RawIOBase):
    """A socket stand-in that hands out ``data`` in pieces of the given sizes (a read returns at
    most what has "arrived"), then end of file."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._pos = 0
        self._sizes = sizes
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self._pos >= len(self._data):
            return 0
        n = min(len(b), self._sizes[self.reads % len(self._sizes)], len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        self.reads += 1
        return n


class _Sock:
    def __init__(self, raw: _Trickle) -> None:
        self._raw = raw

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self._raw)


def _response(wire: bytes, sizes: list[int]) -> http.client.HTTPResponse:
    resp = http.client.HTTPResponse(_Sock(_Trickle(wire, sizes)))  # type: ignore[arg-type]
    resp.begin()
    return resp


def _chunked(body: bytes, pieces: list[int], ext: bool = False) -> bytes:
    out, i, k = [], 0, 0
    while i < len(body):
        n = pieces[k % len(pieces)]
        part = body[i : i + n]
        out.append(b"%x%s\r\n%s\r\n" % (len(part), b";x=1" if ext else b"", part))
        i, k = i + n, k + 1
    return b"".join(out) + b"0\r\nX-Trailer: t\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


def _read_all(body: UpstreamBody) -> bytes:
    got = b""
    while spans := body.read():
        got += b"".join(bytes(body.buffer[a:z]) for a, z in spans)
    return got


def _stream() -> bytes:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}\n\n'
    content = {"choices": [{"index": 0, "delta": {"content": "y" * 200_000}}]}
    return (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        + b"data: "
        + json.dumps(content).encode()
        + b"\n\n"
        + b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        + usage
        + b"data: [DONE]\n\n"
    )


def test_chunked_body_split_anywhere_comes_out_whole() -> None:
    body = _stream()
    rng = random.Random(5)
    for trial in range(60):
        pieces = [rng.choice([1, 2, 7, 100, 5000, 70_000, 300_000]) for _ in range(5)]
        sizes = [rng.choice([1, 3, 5, 17, 4096, 65_536, 1 << 20]) for _ in range(7)]
        resp = _response(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, pieces, trial % 2 == 0),
            sizes,
        )
        reader = UpstreamBody(resp, bytearray(64 * 1024))
        assert _read_all(reader) == body
        assert reader.complete
        assert reader.read() == []


def test_watcher_over_a_reused_buffer_sees_the_same_as_over_bytes() -> None:
    """Spans of a buffer read into again and again (stale bytes after each span): the watcher
    forwards the same bytes and notes the same usage as when fed the whole stream."""
    body = _stream()
    rng = random.Random(7)
    for _ in range(40):
        pieces = [rng.choice([1, 9, 80, 4096, 100_000]) for _ in range(4)]
        sizes = [rng.choice([1, 6, 50, 8192, 1 << 20]) for _ in range(5)]
        resp = _response(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, pieces), sizes
        )
        buffer = bytearray(b"\n" * (128 * 1024))  # stale newlines must never be taken as lines
        reader = UpstreamBody(resp, buffer)
        w = StreamWatcher()
        out: list[bytes] = []
        while spans := reader.read():
            for a, z in spans:
                out.extend(bytes(p) for p in w.feed_span(buffer, a, z))
        w.end()
        assert b"".join(out) == body
        assert (w.usage, w.done, w.finished, w.error) == (
            {"prompt_tokens": 7, "completion_tokens": 5},
            True,
            True,
            None,
        )


def test_read_run_squeezes_the_framing_out_in_place() -> None:
    """Many small chunks per read: one run a read, the same bytes in the same order, and the
    watcher over those runs notes what it notes over the whole stream."""
    body = _stream()
    rng = random.Random(11)
    for _ in range(40):
        pieces = [rng.choice([1, 2, 30, 90, 100_000]) for _ in range(4)]
        sizes = [rng.choice([7, 500, 8192, 1 << 20]) for _ in range(4)]
        resp = _response(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, pieces), sizes
        )
        buffer = bytearray(256 * 1024)
        reader = UpstreamBody(resp, buffer)
        w = StreamWatcher()
        out: list[bytes] = []
        runs = 0
        while (run := reader.read_run()) is not None:
            runs += 1
            out.extend(bytes(p) for p in w.feed_span(buffer, *run))
        w.end()
        assert b"".join(out) == body
        assert (w.usage, w.done, w.error) == (
            {"prompt_tokens": 7, "completion_tokens": 5},
            True,
            None,
        )
        assert reader.complete
    # 20,000-odd chunks of 10 bytes, read 256 kB at a time: one run per read, not per chunk.
    resp = _response(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, [10]), [1 << 20])
    reader = UpstreamBody(resp, bytearray(256 * 1024))
    got, runs = b"", 0
    while (run := reader.read_run()) is not None:
        got += bytes(reader.buffer[run[0] : run[1]])
        runs += 1
    assert got == body and runs <= 4


def test_content_length_and_close_delimited_bodies() -> None:
    body = _stream()
    resp = _response(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body + b"extra", [9000])
    reader = UpstreamBody(resp, bytearray(100_000))
    assert _read_all(reader) == body  # not a byte past Content-Length
    assert reader.complete

    resp = _response(HEAD + b"Connection: close\r\n\r\n" + body, [3, 70_000])
    reader = UpstreamBody(resp, bytearray(100_000))
    assert _read_all(reader) == body
    assert reader.complete


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "IncompleteRead"),  # no last chunk
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel", "IncompleteRead"),  # cut inside a chunk
        (b"Content-Length: 10\r\n\r\nhello", "IncompleteRead"),
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n", "not HTTP"),
    ],
)
def test_a_broken_body_raises(wire: bytes, error: str) -> None:
    reader = UpstreamBody(_response(HEAD + wire, [4]), bytearray(1024))
    with pytest.raises(http.client.HTTPException) as e:
        _read_all(reader)
    assert error in f"{type(e.value).__name__} {e.value}"
    assert not reader.complete


def test_buffer_pool_reuses_and_bounds() -> None:
    pool = BufferPool(16, keep=1)
    a, b = pool.get(), pool.get()
    assert a is not b and len(a) == 16
    pool.put(a)
    pool.put(b)  # over ``keep``: dropped
    assert pool.get() is a
    assert pool.get() is not b
