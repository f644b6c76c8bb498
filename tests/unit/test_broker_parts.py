"""The broker's pure parts: stream watcher, payload, model ids, budgets, bounded output lines."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from smartspec_desktop.core.broker.budget import Budgets
from smartspec_desktop.core.broker.modelids import (
    broker_config_content,
    safe_model_ids,
    write_models_config,
)
from smartspec_desktop.core.broker.payload import PayloadError, broker_payload, parse_payload
from smartspec_desktop.core.broker.sse import StreamWatcher
from smartspec_desktop.core.process.supervisor import MAX_LINE, LinePump


def _chunk(content: str, finish: str | None = None) -> bytes:
    obj = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_watcher_forwards_whole_lines_and_reads_usage() -> None:
    w = StreamWatcher()
    stream = (
        _chunk("Hel")
        + _chunk("lo", "stop")
        + b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
        + b"data: [DONE]\n\n"
    )
    out = b""
    for i in range(0, len(stream), 7):  # split anywhere, even inside a line
        out += w.feed(stream[i : i + 7])
    w.end()
    assert out == stream
    assert w.usage == {"prompt_tokens": 3, "completion_tokens": 2}
    assert w.done and w.finished and w.error is None


def test_watcher_stops_at_an_error_line() -> None:
    w = StreamWatcher()
    out = w.feed(_chunk("a") + b'data: {"error": "boom"}\n\n' + _chunk("b"))
    assert out == _chunk("a")
    assert w.error == "boom"
    assert w.feed(_chunk("c")) == b""


def test_watcher_does_not_hold_or_parse_huge_lines() -> None:
    w = StreamWatcher()
    big = _chunk("x" * 3_000_000)
    out = w.feed(big[:200_000])
    assert out == big[:200_000]  # forwarded before its newline arrived
    out += w.feed(big[200_000:])
    out += w.feed(b"data: [DONE]\n\n")
    w.end()
    assert out == big + b"data: [DONE]\n\n"
    assert w.error is None


def test_watcher_cut_short_and_empty() -> None:
    w = StreamWatcher()
    w.feed(_chunk("a"))
    w.end()
    assert w.error and "ended before" in w.error
    w = StreamWatcher()
    w.end()
    assert w.error and "empty" in w.error


def test_payload_round_trip_and_errors(tmp_path: Path) -> None:
    line = broker_payload(
        key="sk-smartspec-" + "a" * 43,
        token="t" * 20,
        control_token="c" * 20,
        upstream="http://localhost:8000",
        meter_file=tmp_path / "m.jsonl",
        budget_file=tmp_path / "b.json",
        day_cap=1000,
        redact=["password-123456"],
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    p = parse_payload(line)
    assert p.config.key.startswith("sk-smartspec-")
    assert p.config.meter_file == tmp_path / "m.jsonl"
    assert p.day_cap == 1000
    assert {"password-123456", "t" * 20, "c" * 20, p.config.key} <= set(p.redact)
    assert "sk-smartspec" not in repr(p)
    for bad in (b"", b"not json\n", b'{"broker": {"key": "k"}}\n', b"[1]\n"):
        with pytest.raises(PayloadError):
            parse_payload(bad)
    with pytest.raises(ValueError):
        broker_payload(key="k", token="same", control_token="same", upstream="http://x")


def test_model_ids_that_opencode_would_expand_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids: list[object] = [
        "anthropic/claude-3.5-sonnet",
        "{file:/etc/passwd}",
        "{env:HOME}",
        "ok}",
        "with space",
        "x" * 201,
        42,
        "gpt-4o-mini",
        "gpt-4o-mini",
        "meta-llama/llama-3.1-8b-instruct:free",
    ]
    with caplog.at_level(logging.WARNING):
        kept = safe_model_ids(ids)
    assert kept == [
        "anthropic/claude-3.5-sonnet",
        "gpt-4o-mini",
        "meta-llama/llama-3.1-8b-instruct:free",
    ]
    assert "Ignored 6 model id(s)" in caplog.text


@pytest.mark.allow_log(
    r"core\.broker\.modelids: Ignored 1 model id",
    reason="the {file:} model id is the input",
)
def test_models_file_is_0600_and_big_catalogues_fit(tmp_path: Path) -> None:
    models = [f"vendor/model-{i:05d}" for i in range(5000)] + ["{file:/secret}"]
    path = write_models_config(tmp_path / "state" / "models.json", models)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "{file:" not in text
    assert len(json.loads(text)["provider"]["smartspec"]["models"]) == 5000
    content = broker_config_content("vendor/model-00001")
    assert len(content) < 2048
    cfg = json.loads(content)
    assert cfg["enabled_providers"] == ["smartspec"]
    assert cfg["provider"]["smartspec"]["options"]["baseURL"] == "{env:SMARTSPEC_BROKER_URL}"
    with pytest.raises(ValueError):
        broker_config_content("{file:/x}")


def test_budget_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    days = iter(["2026-12-01"] * 6 + ["2026-12-02"] * 10)
    b = Budgets(path, today=lambda: next(days))
    b.set_day_cap(100)
    b.set_task("t", 50, ["s1", "s2"])
    b.charge("s2", 60)
    assert b.check("s1") is not None and b.check("s1").scope == "task"  # type: ignore[union-attr]
    assert b.check("zzz") is None
    b.charge(None, 40)
    refusal = b.check(None)
    assert refusal is not None and refusal.scope == "day" and refusal.used == 100
    again = Budgets(path, today=lambda: "2026-12-01")
    assert again.state()["tasks"]["t"] == {
        "cap": 50,
        "used": 60,
        "sessions": ["s1", "s2"],
        "paused": again.check("s1").message,  # type: ignore[union-attr]
    }
    assert again.raise_task("t", 10) == 70
    # a new day starts from zero
    assert Budgets(path, today=lambda: "2026-12-02").check(None) is None


def test_line_pump_bounds_every_line() -> None:
    pump = LinePump(max_line=10)
    assert pump.feed(b"short\nabcdefghijklmnop") == [b"short"]
    assert pump.feed(b"qrstuvwxyz" * 1000) == []  # nothing kept past the bound
    lines = pump.feed(b"\nnext\n")
    assert lines[0].startswith(b"abcdefghij [") and b"10006 bytes cut]" in lines[0]
    assert lines[1] == b"next"
    assert pump.feed(b"tail") == []
    assert pump.flush() == [b"tail"]
    assert MAX_LINE == 64 * 1024


def test_watcher_forwards_the_same_whatever_the_read_sizes() -> None:
    """The hot path hands back slices of each read: split anywhere (inside the "data:" prefix, a
    big line, a blank line), the bytes forwarded and what was noted are those of one read."""
    import random

    usage = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}\r\n\r\n'
    stream = (
        b": keep-alive\n\n"
        + _chunk("")
        + _chunk("x" * 70_000)  # over the inspect limit: forwarded unparsed
        + _chunk("y" * 300_000)
        + _chunk("z", "stop")
        + usage
        + b"data: [DONE]\n\n"
    )
    whole = StreamWatcher()
    assert whole.feed(stream) == stream
    rng = random.Random(9)
    for _ in range(200):
        out: list[bytes] = []
        w, i = StreamWatcher(), 0
        while i < len(stream):
            n = rng.choice([1, 3, 5, 6, 64, 4096, 65_536, 70_001, 1 << 20])
            out.extend(bytes(p) for p in w.feed_parts(stream[i : i + n]))
            i += n
        w.end()
        assert b"".join(out) == stream
        assert (w.usage, w.done, w.finished, w.error) == (
            {"prompt_tokens": 7, "completion_tokens": 5},
            True,
            True,
            None,
        )
    # An error line after a big one: what came before it is forwarded, nothing after.
    w = StreamWatcher()
    bad = _chunk("x" * 100_000) + b'data: {"error": "boom"}\n\n' + _chunk("after")
    out = [bytes(p) for i in range(0, len(bad), 30_000) for p in w.feed_parts(bad[i : i + 30_000])]
    assert b"".join(out) == _chunk("x" * 100_000) and w.error == "boom"
