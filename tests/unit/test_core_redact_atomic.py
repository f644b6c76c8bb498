"""Unit tests of core.errors, core.redact and core.atomic."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import threading
from pathlib import Path

import pytest

from smartspec_desktop.core.errors import (
    ApiKeyRejected,
    BackendError,
    RateLimited,
    SmartSpecError,
    WorkspaceError,
)
from smartspec_desktop.core.redact import MASK, LazyRedactor, Redactor, mask_key
from smartspec_desktop.core.storage.atomic import (
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)


def make_key() -> str:
    return "sk-smartspec-" + secrets.token_urlsafe(32)


# ------------------------------------------------------------------------------------- errors


def test_error_text_is_problem_then_fix_and_dict_has_a_stable_code() -> None:
    e = WorkspaceError("The folder is gone.", "Pick another one.", details="tail")
    assert str(e) == "The folder is gone. Pick another one."
    assert e.to_dict() == {
        "code": "workspace",
        "problem": "The folder is gone.",
        "fix": "Pick another one.",
        "details": "tail",
    }
    assert str(SmartSpecError("Only a problem.")) == "Only a problem."


def test_backend_errors_carry_status_and_rate_limit_carries_retry_after() -> None:
    rejected = ApiKeyRejected("no", "fix")
    assert isinstance(rejected, BackendError) and rejected.code == "api_key_rejected"
    limited = RateLimited("slow down", retry_after=7.0)
    assert limited.status == 429 and limited.retry_after == 7.0
    assert limited.to_dict()["code"] == "rate_limited"


# ------------------------------------------------------------------------------------- redact


def test_redactor_masks_anything_shaped_like_an_api_key() -> None:
    key = make_key()
    out = Redactor()(f"Authorization: Bearer {key} and again {key}.")
    assert key not in out
    assert out == f"Authorization: Bearer {MASK} and again {MASK}."


def test_redactor_masks_explicit_secrets_longest_first() -> None:
    password = "hunter2-very-secret"
    red = Redactor([password, "hunter2"])
    out = red(f"pw={password} short=hunter2")
    assert password not in out and "hunter2" not in out
    # The longer secret is replaced whole (no "***-very-secret" leftovers).
    assert out == f"pw={MASK} short={MASK}"


def test_redactor_ignores_short_and_empty_secrets() -> None:
    red = Redactor(["abc", "", None])  # type: ignore[list-item]
    red.add(None)
    red.add("12345")
    assert red("abc 12345 abcdef") == "abc 12345 abcdef"
    red.add("abcdef")
    assert red("abc 12345 abcdef") == f"abc 12345 {MASK}"


def test_redactor_leaves_ordinary_text_and_bare_prefix_alone() -> None:
    text = "keys look like sk-smartspec-… (see docs); sk-smartspec-short"
    assert Redactor()(text) == text


def test_lazy_redactor_asks_for_its_secrets_once_at_the_first_text() -> None:
    secret = "odd-secret-" + secrets.token_hex(8)  # not shaped like a key: known by value only
    asked: list[int] = []

    def fetch() -> list[str | None]:
        asked.append(1)
        return [secret, None, ""]

    red = LazyRedactor(fetch)
    assert asked == [] and not red.fetched
    key = make_key()
    assert red(f"a {secret} b {key}") == f"a {MASK} b {MASK}"
    assert red(f"again {secret}") == f"again {MASK}"
    assert asked == [1] and red.fetched


def test_lazy_redactor_cleans_a_text_logged_while_it_fetches_and_retries_a_failed_fetch() -> None:
    secret = "odd-secret-" + secrets.token_hex(8)
    key = make_key()
    inner: list[str] = []
    calls: list[int] = []

    def fetch() -> list[str]:
        calls.append(1)
        # The keyring logs while it is asked (a record that comes back to this redactor).
        inner.append(red(f"keyring said {key}"))
        if len(calls) == 1:
            raise RuntimeError("the keyring broke")
        return [secret]

    red = LazyRedactor(fetch)
    with pytest.raises(RuntimeError):
        red(f"text with {secret}")  # never handed back unredacted
    assert not red.fetched
    assert red(f"text with {secret}") == f"text with {MASK}"
    assert inner == [f"keyring said {MASK}"] * 2 and len(calls) == 2


def test_lazy_redactor_makes_another_thread_wait_for_the_secrets() -> None:
    secret = "odd-secret-" + secrets.token_hex(8)
    started, release = threading.Event(), threading.Event()

    def fetch() -> list[str]:
        started.set()
        assert release.wait(30)
        return [secret]

    red = LazyRedactor(fetch)
    first = threading.Thread(target=red, args=("first",))
    first.start()
    assert started.wait(30)
    out: list[str] = []
    second = threading.Thread(target=lambda: out.append(red(f"second {secret}")))
    second.start()
    second.join(0.2)  # (no bound on time: it may only wait longer, never return early)
    assert out == []  # still waiting for the secrets
    release.set()
    first.join(30)
    second.join(30)
    assert out == [f"second {MASK}"]


def test_mask_key_shows_a_recognisable_prefix_and_suffix_only() -> None:
    key = make_key()
    masked = mask_key(key)
    assert masked == f"{key[:16]}…{key[-4:]}"
    assert masked.startswith("sk-smartspec-")
    assert key[16:-4] not in masked
    assert len(masked) == 21


@pytest.mark.parametrize("short", ["", "sk-smartspec-", "x" * 23])
def test_mask_key_hides_short_values_completely(short: str) -> None:
    assert mask_key(short) == MASK


# ------------------------------------------------------------------------------------- atomic


def test_atomic_write_creates_parents_leaves_no_temp_and_is_0600(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": [1, 2], "b": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_atomic_write_replaces_existing_file_and_honours_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o644)
    atomic_write_text(target, "new ✓", mode=0o640)
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_failed_atomic_write_keeps_old_content_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text(encoding="utf-8")) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_read_missing_file_is_empty_without_warning(tmp_path: Path) -> None:
    assert read_json_object(tmp_path / "nope.json") == ({}, None)


def test_read_valid_object(tmp_path: Path) -> None:
    p = tmp_path / "ok.json"
    p.write_text('{"x": [1, "ü"]}', encoding="utf-8")
    assert read_json_object(p) == ({"x": [1, "ü"]}, None)


def test_corrupt_json_is_moved_aside_with_a_warning_naming_the_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "settings.json"
    p.write_text('{"half": ', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        data, warning = read_json_object(p)
    assert data == {}
    assert warning is not None
    assert not p.exists()
    asides = [q for q in tmp_path.iterdir() if q.name.startswith("settings.json.corrupt-")]
    assert len(asides) == 1
    assert asides[0].read_text(encoding="utf-8") == '{"half": '
    assert str(asides[0]) in warning
    assert str(p) in warning and "started afresh" in warning
    assert warning in caplog.text


@pytest.mark.allow_log(
    r"core\.storage\.atomic: .* was unreadable \(top level is not an object\)",
    reason="the corrupt file is the input",
)
@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "42", "null"])
def test_non_object_top_level_is_treated_as_corrupt(tmp_path: Path, content: str) -> None:
    p = tmp_path / "s.json"
    p.write_text(content, encoding="utf-8")
    data, warning = read_json_object(p)
    assert data == {}
    assert warning is not None and "not an object" in warning
    assert not p.exists()


@pytest.mark.allow_log(
    r"core\.storage\.atomic: .* was unreadable .* could not be moved aside",
    reason="the corrupt, unmovable file is the input",
)
def test_corrupt_file_that_cannot_be_moved_still_reads_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "s.json"
    p.write_text("garbage", encoding="utf-8")

    def no_replace(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_replace)
    data, warning = read_json_object(p)
    assert data == {}
    assert warning is not None and "could not be moved aside" in warning


@pytest.mark.allow_log(
    r"core\.storage\.atomic: .* was unreadable \('utf-8' codec",
    reason="the non-UTF-8 file is the input",
)
def test_non_utf8_file_is_treated_as_corrupt_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "settings.json"
    p.write_bytes(b'{"terminal": "caf\xe9"}')  # e.g. saved as Latin-1 by an editor
    data, warning = read_json_object(p)
    assert data == {}
    assert warning is not None
    assert not p.exists()
    assert os.listdir(tmp_path)[0].startswith("settings.json.corrupt-")
