"""Unit tests of core.opencode: finding, version-checking and installing the binary.

Every ``opencode`` here is a small shell script written to tmp_path.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smartspec_desktop.core.errors import (
    OpenCodeInstallError,
    OpenCodeNotFound,
    OpenCodeVersionError,
)
from smartspec_desktop.core.opencode import binary as binary_module
from smartspec_desktop.core.opencode.binary import (
    ALLOW_UNTESTED_ENV,
    NPM_PACKAGE,
    PINNED_VERSION,
    VersionCache,
    cancel_probes,
    check_supported,
    find_opencode,
    install_opencode,
    managed_binary,
    parse_version,
    read_version,
)


def script(path: Path, body: str, *, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)
    return path


def counting_opencode(path: Path, version: str, counter: Path) -> Path:
    """An opencode that prints ``version`` and appends a line to ``counter`` per run."""
    return script(path, f'echo run >> "{counter}"\necho "{version}"')


def runs(counter: Path) -> int:
    return len(counter.read_text(encoding="utf-8").splitlines()) if counter.exists() else 0


def no_which(name: str) -> str | None:
    return None


@pytest.fixture(autouse=True)
def _no_untested_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)


@pytest.fixture
def cache(tmp_path: Path) -> VersionCache:
    return VersionCache(tmp_path / "cache" / "opencode-version.json")


# ------------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.18.33", (1, 18, 33)), ("opencode v1.18.0\n", (1, 18, 0)), ("none", None), ("1.18", None)],
)
def test_parse_version(text: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == expected


def test_read_version_of_a_working_binary(tmp_path: Path) -> None:
    oc = script(tmp_path / "opencode", 'echo "1.18.33"')
    assert read_version(str(oc)) == "1.18.33"


def test_read_version_of_garbage_output(tmp_path: Path) -> None:
    oc = script(tmp_path / "opencode", "echo 'hello there'")
    with pytest.raises(OpenCodeVersionError) as ei:
        read_version(str(oc))
    assert "exit 0: hello there" in ei.value.problem
    assert "Reinstall OpenCode" in ei.value.fix


def test_read_version_of_a_failing_binary_shows_the_last_stderr_line(tmp_path: Path) -> None:
    oc = script(
        tmp_path / "opencode", "echo 1.18.33\necho first >&2\necho 'last words' >&2\nexit 3"
    )
    with pytest.raises(OpenCodeVersionError) as ei:
        read_version(str(oc))
    assert "exit 3: last words" in ei.value.problem


def test_read_version_of_a_silent_failure(tmp_path: Path) -> None:
    oc = script(tmp_path / "opencode", "exit 5")
    with pytest.raises(OpenCodeVersionError, match="exit 5: no output"):
        read_version(str(oc))


def test_read_version_of_a_non_executable_file(tmp_path: Path) -> None:
    oc = script(tmp_path / "opencode", "echo 1.18.33", executable=False)
    with pytest.raises(OpenCodeNotFound) as ei:
        read_version(str(oc))
    assert "is not executable" in ei.value.problem
    assert "chmod +x" in ei.value.fix


def test_read_version_of_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(OpenCodeNotFound, match="cannot be run"):
        read_version(str(tmp_path / "missing"))


def test_read_version_of_a_hanging_binary_times_out(tmp_path: Path) -> None:
    oc = script(tmp_path / "opencode", "exec sleep 30")
    with pytest.raises(OpenCodeVersionError, match="did not finish within"):
        read_version(str(oc), timeout=1.0)


def test_quitting_cancels_a_running_version_probe(tmp_path: Path) -> None:
    """The window's shutdown kills a probe it would otherwise wait for (up to minutes on a
    loaded machine); the probe's caller gets an error, never a version."""
    started = tmp_path / "started"
    oc = script(tmp_path / "opencode", f'touch "{started}"\nexec sleep 300')
    outcome: list[BaseException | str] = []

    def probe() -> None:
        try:
            outcome.append(read_version(str(oc), timeout=250, busy_timeout=250))
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=probe)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the probe never ran"
        assert cancel_probes() == 1
        worker.join(timeout=120)  # instead of the 250 s the probe would wait
        assert not worker.is_alive()
    finally:  # a failed check above leaves no `sleep 300` behind
        cancel_probes()
        worker.join(timeout=120)
    (error,) = outcome
    assert isinstance(error, OpenCodeVersionError), error
    assert "failed (exit -9" in str(error)
    assert cancel_probes() == 0, "a finished probe is forgotten"


def test_supported_series_has_no_warning() -> None:
    assert check_supported("/x/opencode", "1.18.33", {}) == ""
    assert check_supported("/x/opencode", "1.18.0", {}) == ""


@pytest.mark.parametrize("version", ["1.17.2", "1.19.0", "2.18.1", "garbage"])
def test_unsupported_versions_are_refused_with_the_way_out(version: str) -> None:
    with pytest.raises(OpenCodeVersionError) as ei:
        check_supported("/x/opencode", version, {})
    assert f"OpenCode {version} at /x/opencode is not supported" in ei.value.problem
    assert "1.18.x" in ei.value.problem and PINNED_VERSION in ei.value.problem
    assert "opencode install" in ei.value.fix and ALLOW_UNTESTED_ENV in ei.value.fix


@pytest.mark.allow_log(
    r"core\.opencode: OpenCode 1\.17\.2 .* is not supported",
    reason="the untested version is the input",
)
@pytest.mark.allow_log(
    r"core\.opencode\.binary: OpenCode 1\.17\.2 .* is not supported",
    reason="the untested version is the input",
)
def test_allow_untested_turns_the_refusal_into_a_warning() -> None:
    warning = check_supported("/x/opencode", "1.17.2", {ALLOW_UNTESTED_ENV: "1"})
    assert "1.17.2" in warning and "not supported" in warning
    with pytest.raises(OpenCodeVersionError):
        check_supported("/x/opencode", "1.17.2", {ALLOW_UNTESTED_ENV: "yes"})


# ------------------------------------------------------------------------------- find_opencode


def test_configured_path_is_used_and_reported(tmp_path: Path, cache: VersionCache) -> None:
    oc = script(tmp_path / "bin" / "opencode", "echo 1.18.33")
    found = find_opencode(str(oc), tmp_path / "managed", cache, which=no_which)
    assert (found.path, found.version, found.source, found.warning) == (
        str(oc),
        "1.18.33",
        "settings",
        "",
    )


def test_configured_path_with_tilde_is_expanded(
    tmp_path: Path, cache: VersionCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    script(tmp_path / "tools" / "opencode", "echo 1.18.33")
    found = find_opencode("~/tools/opencode", tmp_path / "managed", cache, which=no_which)
    assert found.path == str(tmp_path / "tools" / "opencode")


def test_missing_configured_path_says_to_fix_settings(tmp_path: Path, cache: VersionCache) -> None:
    on_path = script(tmp_path / "path" / "opencode", "echo 1.18.33")
    with pytest.raises(OpenCodeNotFound) as ei:
        find_opencode(
            str(tmp_path / "nope"), tmp_path / "managed", cache, which=lambda n: str(on_path)
        )
    assert f"({tmp_path / 'nope'}) does not exist" in ei.value.problem
    assert "Settings" in ei.value.fix


def test_non_executable_configured_path(tmp_path: Path, cache: VersionCache) -> None:
    oc = script(tmp_path / "opencode", "echo 1.18.33", executable=False)
    with pytest.raises(OpenCodeNotFound, match="is not executable"):
        find_opencode(str(oc), tmp_path / "managed", cache, which=no_which)


def test_managed_install_wins_over_path(tmp_path: Path, cache: VersionCache) -> None:
    managed_dir = tmp_path / "managed"
    managed = script(managed_binary(managed_dir), "echo 1.18.33")
    on_path = script(tmp_path / "path" / "opencode", "echo 1.18.1")
    found = find_opencode("", managed_dir, cache, which=lambda n: str(on_path))
    assert (found.path, found.source) == (str(managed), "managed")


def test_path_is_used_last(tmp_path: Path, cache: VersionCache) -> None:
    on_path = script(tmp_path / "path" / "opencode", "echo 1.18.2")
    asked: list[str] = []

    def which(name: str) -> str | None:
        asked.append(name)
        return str(on_path)

    found = find_opencode("", tmp_path / "managed", cache, which=which)
    assert (found.path, found.version, found.source) == (str(on_path), "1.18.2", "PATH")
    assert asked == ["opencode"]


def test_nothing_installed_gives_the_install_hint(tmp_path: Path, cache: VersionCache) -> None:
    with pytest.raises(OpenCodeNotFound) as ei:
        find_opencode("", tmp_path / "managed", cache, which=no_which)
    assert "not installed" in ei.value.problem
    assert "smartspec-desktop opencode install" in ei.value.fix
    assert f"opencode-ai@{PINNED_VERSION}" in ei.value.fix


@pytest.mark.allow_log(
    r"core\.opencode: OpenCode 1\.17\.2 .* is not supported",
    reason="the untested version is the input",
)
@pytest.mark.allow_log(
    r"core\.opencode\.binary: OpenCode 1\.17\.2 .* is not supported",
    reason="the untested version is the input",
)
def test_wrong_version_is_refused_unless_allowed(
    tmp_path: Path, cache: VersionCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    oc = script(tmp_path / "opencode", "echo 1.17.2")
    with pytest.raises(OpenCodeVersionError, match="1.17.2"):
        find_opencode(str(oc), tmp_path / "m", cache, which=no_which)
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    found = find_opencode(str(oc), tmp_path / "m", cache, which=no_which)
    assert found.version == "1.17.2"
    assert "not supported" in found.warning


def test_version_is_cached_until_the_binary_changes(tmp_path: Path, cache: VersionCache) -> None:
    counter = tmp_path / "runs.txt"
    oc = counting_opencode(tmp_path / "opencode", "1.18.33", counter)
    assert find_opencode(str(oc), tmp_path / "m", cache, which=no_which).version == "1.18.33"
    assert runs(counter) == 1
    assert find_opencode(str(oc), tmp_path / "m", cache, which=no_which).version == "1.18.33"
    assert runs(counter) == 1  # answered from the cache
    # A fresh cache object over the same file also answers without running the binary.
    assert VersionCache(cache.path).get(str(oc)) == "1.18.33"

    counting_opencode(oc, "1.18.34 (updated build)", counter)  # new size and mtime
    assert find_opencode(str(oc), tmp_path / "m", cache, which=no_which).version == "1.18.34"
    assert runs(counter) == 2


def test_cache_key_follows_symlinks(tmp_path: Path, cache: VersionCache) -> None:
    counter = tmp_path / "runs.txt"
    real = counting_opencode(tmp_path / "real" / "opencode", "1.18.33", counter)
    link = tmp_path / "link-opencode"
    link.symlink_to(real)
    find_opencode(str(real), tmp_path / "m", cache, which=no_which)
    find_opencode(str(link), tmp_path / "m", cache, which=no_which)
    assert runs(counter) == 1


@pytest.mark.allow_log(
    r"opencode-version\.json was unreadable", reason="the corrupt cache is the input"
)
def test_cache_is_bounded_and_tolerates_a_corrupt_file(tmp_path: Path, cache: VersionCache) -> None:
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text("{{{", encoding="utf-8")
    binaries = [script(tmp_path / f"oc{i}", "echo 1.18.33") for i in range(25)]
    assert cache.get(str(binaries[0])) is None
    for b in binaries:
        cache.put(str(b), "1.18.33")
    data = json.loads(cache.path.read_text(encoding="utf-8"))
    assert len(data) == 20
    assert cache.get(str(binaries[-1])) == "1.18.33"
    assert cache.get(str(tmp_path / "gone")) is None  # a vanished binary is simply a miss


# ------------------------------------------------------------------------------- install


FAKE_NPM = """
all_args="$*"
prefix=""
while [ $# -gt 0 ]; do
  case "$1" in --prefix) prefix="$2"; shift;; esac
  shift
done
echo "npm http fetch GET 200 https://registry.npmjs.org/opencode-ai"
echo ""
echo "added 2 packages in 1s"
mkdir -p "$prefix/node_modules/.bin"
printf '#!/bin/sh\\necho 1.18.33\\n' > "$prefix/node_modules/.bin/opencode"
chmod +x "$prefix/node_modules/.bin/opencode"
"""


def test_install_without_npm_names_npm_and_node(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(OpenCodeInstallError) as ei:
        install_opencode(tmp_path / "managed", lines.append, which=no_which)
    assert "npm was not found" in ei.value.problem
    assert "Node.js" in ei.value.fix
    assert lines == []


def test_install_with_npm_streams_progress_and_returns_the_binary(
    tmp_path: Path, cache: VersionCache
) -> None:
    npm = script(tmp_path / "bin" / "npm", FAKE_NPM + 'echo "$all_args" > "$prefix/args.txt"')
    managed_dir = tmp_path / "data" / "opencode"
    lines: list[str] = []
    binary = install_opencode(managed_dir, lines.append, which=lambda n: str(npm))
    assert binary == managed_binary(managed_dir)
    assert os.access(binary, os.X_OK)
    assert lines[0].startswith(f"Installing {NPM_PACKAGE}@{PINNED_VERSION} into {managed_dir}")
    assert "npm http fetch GET 200 https://registry.npmjs.org/opencode-ai" in lines
    assert "added 2 packages in 1s" in lines
    assert "" not in lines  # blank npm lines are not forwarded
    assert lines[-1] == f"Installed OpenCode {PINNED_VERSION}: {binary}"
    args = (managed_dir / "args.txt").read_text(encoding="utf-8").split()
    assert args[:3] == ["install", "--prefix", str(managed_dir)]
    assert args[-1] == f"opencode-ai@{PINNED_VERSION}"
    # The fresh install is then what find_opencode picks.
    found = find_opencode("", managed_dir, cache, which=no_which)
    assert (found.path, found.source) == (str(binary), "managed")


def test_failing_npm_reports_exit_code_and_output_tail(tmp_path: Path) -> None:
    body = 'i=0\nwhile [ $i -lt 30 ]; do echo "npm http line $i"; i=$((i+1)); done\n'
    body += "echo 'npm ERR! code ENOTFOUND' >&2\nexit 1"
    npm = script(tmp_path / "npm", body)
    lines: list[str] = []
    with pytest.raises(OpenCodeInstallError) as ei:
        install_opencode(tmp_path / "managed", lines.append, which=lambda n: str(npm))
    assert "failed (exit 1)" in ei.value.problem
    details = ei.value.details.splitlines()
    assert len(details) == 15
    assert details[-1] == "npm ERR! code ENOTFOUND"  # stderr is streamed too
    assert "npm http line 0" not in details
    assert "npm ERR! code ENOTFOUND" in lines


def test_npm_success_without_a_binary_is_an_error(tmp_path: Path) -> None:
    npm = script(tmp_path / "npm", "echo 'up to date'")
    with pytest.raises(OpenCodeInstallError) as ei:
        install_opencode(tmp_path / "managed", lambda s: None, which=lambda n: str(npm))
    assert "is missing" in ei.value.problem
    assert ei.value.details == "up to date"


def test_scripts_written_here_really_are_not_executable(tmp_path: Path) -> None:
    # Guards the non-executable tests above (root can still execute files with an x bit).
    oc = script(tmp_path / "opencode", "echo 1.18.33", executable=False)
    assert not stat.S_IMODE(oc.stat().st_mode) & 0o111
    assert not os.access(oc, os.X_OK)


def test_read_version_waits_for_a_binary_that_is_busy_starting(tmp_path: Path) -> None:
    """Past its timeout a probe still using CPU (OpenCode starting on a loaded machine) is
    waited for; one that sits idle is not (the test above)."""
    oc = script(
        tmp_path / "opencode",
        f'"{sys.executable}" -c "import time\nend = time.process_time() + 1.5\n'
        'while time.process_time() < end: pass"\necho 1.18.33',
    )
    assert read_version(str(oc), timeout=0.3, busy_timeout=600) == "1.18.33"


def test_a_probes_cpu_keeps_what_its_finished_children_used(tmp_path: Path) -> None:
    """A wrapper whose program has finished still counts that program's CPU (before, the tree's
    total dropped when the child ended, and a loaded machine's probe looked idle)."""
    done = tmp_path / "done"
    wrapper = subprocess.Popen(
        [
            "sh",
            "-c",
            f'"{sys.executable}" -c "import time\nend = time.process_time() + 0.5\n'
            f'while time.process_time() < end: pass"; touch "{done}"; exec sleep 60',
        ]
    )
    try:
        deadline = time.monotonic() + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.exists(), "the child never finished"
        used = binary_module._cpu_seconds(wrapper.pid)
        assert used is not None and used >= 0.5, used
    finally:
        wrapper.kill()
        wrapper.wait()


def test_read_version_of_a_busy_binary_stops_at_the_busy_timeout(tmp_path: Path) -> None:
    oc = script(tmp_path / "opencode", f'exec "{sys.executable}" -c "while True: pass"')
    with pytest.raises(OpenCodeVersionError, match="did not finish within"):
        read_version(str(oc), timeout=0.3, busy_timeout=1.0)
