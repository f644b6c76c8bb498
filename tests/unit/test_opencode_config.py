"""The tests' warm OpenCode config set-up (``python -m tests.opencode_config``, run by
scripts/setup-tests): a failure an earlier set-up noted is tried again, and a failure says why
and what to do. The build itself (a real ``opencode serve``) is stubbed here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import opencode_config


@pytest.fixture
def binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # main() sets the module's run root; the session's own is put back afterwards.
    monkeypatch.setattr(opencode_config, "run_root", opencode_config.run_root)
    monkeypatch.setattr(opencode_config, "cache_root", None)
    oc = tmp_path / "opencode"
    oc.write_text("#!/bin/sh\n")
    return oc


def test_setup_tries_again_what_an_earlier_setup_could_not_make(
    binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    name = opencode_config.template_name(str(binary))
    (folder / (name + ".failed")).write_text("RuntimeError: the registry was unreachable\n")
    built: list[Path] = []

    def build(dest: Path, opencode: str) -> None:
        built.append(dest)
        dest.mkdir()

    monkeypatch.setattr(opencode_config, "build", build)
    assert opencode_config.main([str(binary), str(folder)]) == 0
    assert built == [folder / name]
    assert not (folder / (name + ".failed")).exists()
    assert str(folder / name) in capsys.readouterr().out


def test_a_failed_setup_says_why_and_what_to_do(
    binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def build(dest: Path, opencode: str) -> None:
        raise RuntimeError("opencode serve ended or never answered")

    monkeypatch.setattr(opencode_config, "build", build)
    assert opencode_config.main([str(binary), str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: opencode serve ended or never answered" in err
    assert "run scripts/setup-tests again" in err
