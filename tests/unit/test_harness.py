"""The test harness itself: logfail, the real-HOME check, private port ranges, and the set-up
scripts' pin (so a broken guard cannot pass silently)."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

import pytest

from smartspec_desktop.core.opencode.binary import PINNED_VERSION
from tests import conftest
from tests.logfail import unexpected

ROOT = Path(__file__).resolve().parents[2]


def record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_logfail_reports_records_no_pattern_allows() -> None:
    records = [
        record("smartspec_desktop.core.storage.config", logging.WARNING, "bad value 8000"),
        record("smartspec_desktop.core.process.procs", logging.ERROR, "killing 2 process(es)"),
    ]
    allowed = [re.compile(r"core\.storage\.config: bad value")]
    assert unexpected(records, allowed) == [
        "ERROR smartspec_desktop.core.process.procs: killing 2 process(es)"
    ]
    assert unexpected(records, []) and not unexpected(records, [re.compile("smartspec")])


@pytest.mark.allow_log(r"^x: ", reason="the inner, in-process run's own records reach us too")
def test_logfail_fails_a_test_that_logs_an_unexpected_warning(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.logfail"]')
    pytester.makepyfile(
        """
        import logging
        import pytest

        def test_quiet():
            logging.getLogger("x").info("fine")

        def test_warns():
            logging.getLogger("x").warning("surprise")

        @pytest.mark.allow_log(r"x: surprise", reason="provoked on purpose")
        def test_warns_expected():
            logging.getLogger("x").warning("surprise")

        def test_claimed_by_caplog(caplog):
            with caplog.at_level(logging.WARNING):
                logging.getLogger("x").warning("checked below")
            assert "checked below" in caplog.text
        """
    )
    pytester.syspathinsert(ROOT)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-o", "markers=allow_log: expected log records"
    )
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*unexpected log records*", "*WARNING x: surprise*"])


def test_home_check_sees_a_new_keyring_and_browser_profile(tmp_path: Path) -> None:
    (tmp_path / ".local" / "share" / "keyrings").mkdir(parents=True)
    (tmp_path / ".config").mkdir()
    (tmp_path / ".cache" / "smartspec-desktop-tests").mkdir(parents=True)
    before = conftest.home_entries(tmp_path)
    (tmp_path / ".local" / "share" / "keyrings" / "login.keyring").write_text("x")
    (tmp_path / ".config" / "chromium" / "Default").mkdir(parents=True)
    (tmp_path / ".cache" / "keyring-AB12CD").mkdir()
    (tmp_path / ".cache" / "smartspec-desktop-tests" / "npm").mkdir()  # the tests' own cache
    (tmp_path / ".config" / "some-desktop-app").mkdir()  # not ours to watch
    (tmp_path / ".Xauthority").write_text("x")
    created = conftest.home_entries(tmp_path) - before
    assert created == {
        ".config/chromium",
        ".config/chromium/Default",
        ".cache/keyring-AB12CD",
        ".local/share/keyrings/login.keyring",
        ".Xauthority",
    }


def test_private_port_ranges_are_free_distinct_and_away_from_the_products() -> None:
    a, b = conftest.private_port_range(), conftest.private_port_range()
    for lo, hi in (a, b):
        assert hi - lo + 1 == conftest.PORT_BLOCK
        assert conftest.PORT_POOL[0] <= lo and hi < conftest.PORT_POOL[1]
        assert hi < 3795 or lo > 3800
    assert set(range(a[0], a[1] + 1)).isdisjoint(range(b[0], b[1] + 1))


def test_each_xdist_worker_hands_out_ports_from_its_own_slice() -> None:
    slices = [conftest.worker_port_pool(f"gw{n}", "4") for n in range(4)]
    for (lo, hi), (lo2, _hi2) in zip(slices, slices[1:], strict=False):
        assert lo < hi <= lo2  # disjoint, in order
    assert slices[0][0] == conftest.PORT_POOL[0] and slices[-1][1] <= conftest.PORT_POOL[1]
    assert all(hi - lo >= 100 * conftest.PORT_BLOCK for lo, hi in slices)
    # Not under xdist (or a value it never sets): the whole pool.
    for worker, count in ((None, None), ("master", "4"), ("gw4", "4"), ("gw0", "")):
        assert conftest.worker_port_pool(worker, count) == conftest.PORT_POOL
    # This process's blocks come from its own slice.
    lo, hi = conftest.worker_port_pool(
        os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    )
    a, b = conftest.private_port_range()
    assert lo <= a < b < hi


def test_a_busy_port_is_never_handed_out() -> None:
    lo, hi = conftest.private_port_range()
    with socket.socket() as s:
        s.bind(("127.0.0.1", lo))
        s.listen()
        conftest._next_block[0] = lo  # the next block would contain the busy port
        lo2, hi2 = conftest.private_port_range()
        assert not lo2 <= lo <= hi2


def test_setup_scripts_pin_the_apps_opencode_version() -> None:
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    assert f"OPENCODE_VERSION={PINNED_VERSION}\n" in lib
