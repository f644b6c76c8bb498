"""The request body reader the broker and the demo backend share."""

from __future__ import annotations

import io
from email.message import Message

import pytest

from smartspec_desktop.core.httpserve import BodyTooLarge, read_body


def headers(**kw: str) -> Message:
    m = Message()
    for k, v in kw.items():
        m[k.replace("_", "-")] = v
    return m


def test_a_content_length_body_and_none() -> None:
    assert read_body(io.BytesIO(b"hello+rest"), headers(Content_Length="5")) == b"hello"
    assert read_body(io.BytesIO(b"ignored"), headers()) == b""
    with pytest.raises(ValueError, match="negative"):
        read_body(io.BytesIO(b""), headers(Content_Length="-1"))


def test_a_chunked_body_with_extensions_and_trailers() -> None:
    raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\nNEXT"
    rfile = io.BytesIO(raw)
    assert read_body(rfile, headers(Transfer_Encoding="chunked")) == b"hello world"
    assert rfile.read() == b"NEXT"  # the next request on the connection is left alone


def test_the_limit_holds_for_both_framings() -> None:
    with pytest.raises(BodyTooLarge):
        read_body(io.BytesIO(b"x" * 10), headers(Content_Length="10"), limit=9)
    chunked = io.BytesIO(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n")
    with pytest.raises(BodyTooLarge):
        read_body(chunked, headers(Transfer_Encoding="chunked"), limit=8)
    ok = io.BytesIO(b"5\r\nhello\r\n0\r\n\r\n")
    assert read_body(ok, headers(Transfer_Encoding="chunked"), limit=5) == b"hello"
