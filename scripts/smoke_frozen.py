"""Smoke-test the frozen app (dist/smartspec-desktop/smartspec-desktop); used by scripts/build-app.

Checks, each printed as PASS/SKIP/FAIL:
  1. ``--version`` prints the package version;
  2. ``status --json`` on an empty ``--data-dir`` prints ``[]``;
  3. the frozen app sees a real OS keyring (the keyring backends were bundled), when
     ``dbus-run-session`` and ``gnome-keyring-daemon`` exist;
  4. a real ``start``/``stop`` of a workspace against the backend stand-in and the real opencode:
     the supervisor is the frozen executable re-run with ``--supervise``, the server answers its
     health check, and after ``stop`` nothing is left running;
  5. the window opens and quits offscreen (``SMARTSPEC_EXIT_AFTER_SHOWN=1`` prints
     ``window-shown-ms=…``); skipped while ``smartspec_desktop/ui/app.py`` does not exist.

Run: ``python scripts/smoke_frozen.py [path/to/frozen/executable]``. Exit 0 when nothing FAILed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smartspec_desktop import __version__  # noqa: E402
from tests.backend_standin import BackendStandIn  # noqa: E402
from tests.conftest import (  # noqa: E402
    find_test_opencode,
    private_port_range,
    reap,
    sandbox_env,
)

results: list[tuple[str, str, str]] = []


def check(name: str, fn: Callable[[], str | None]) -> None:
    try:
        note = fn()
    except Skip as s:
        results.append(("SKIP", name, str(s)))
    except Exception as e:  # report every failure, keep going
        results.append(("FAIL", name, f"{type(e).__name__}: {e}"))
    else:
        results.append(("PASS", name, note or ""))
    status, _, note = results[-1]
    print(f"{status:4}  {name}{'  — ' + note if note else ''}", flush=True)


class Skip(Exception):
    pass


def run(
    exe: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def main() -> int:
    default = ROOT / "dist" / "smartspec-desktop" / "smartspec-desktop"
    exe = (Path(sys.argv[1]) if len(sys.argv) > 1 else default).absolute()
    if not exe.exists():
        print(f"FAIL  no frozen app at {exe}: build it first (scripts/build-app)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="smartspec-smoke-"))
    opencode = find_test_opencode()
    env = sandbox_env(tmp, opencode)
    env.pop("PYTHONPATH", None)  # the frozen app must not need the source tree
    data = tmp / "data"
    backend = BackendStandIn().start()
    try:

        def version() -> str:
            r = run(exe, "--version", env=env)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == f"smartspec-desktop {__version__}", r.stdout
            return r.stdout.strip()

        def status_empty() -> str:
            r = run(exe, "--data-dir", str(tmp / "empty"), "status", "--json", env=env)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout) == [], r.stdout
            return "[]"

        def keyring_bundled() -> str:
            if not (shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon")):
                raise Skip("no dbus-run-session/gnome-keyring-daemon here")
            kenv = {k: v for k, v in env.items() if k not in ("PYTHON_KEYRING_BACKEND",)}
            kenv.pop("SMARTSPEC_API_KEY", None)
            kenv.pop("DBUS_SESSION_BUS_ADDRESS", None)
            for d in (".cache", ".local/share", ".config"):  # gnome-keyring needs them
                (Path(kenv["HOME"]) / d).mkdir(parents=True, exist_ok=True)
            key = "sk-smartspec-" + "k" * 43
            script = (
                "printf smoke | gnome-keyring-daemon --unlock --components=secrets >/dev/null; "
                'printf %s "$2" | "$0" --data-dir "$1" key set --no-check && '
                'exec "$0" --data-dir "$1" key show'
            )
            r = subprocess.run(
                ["dbus-run-session", "--", "sh", "-c", script, str(exe), str(tmp / "kr"), key],
                env=kenv,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr[-1000:]
            assert "(from keyring)" in r.stdout and key not in r.stdout, r.stdout
            return "the frozen app found the Secret Service keyring"

        def start_stop() -> str:
            if not opencode:
                raise Skip("no opencode on PATH (bash scripts/setup-tests installs it)")
            backend.add_user("smoke@example.com", "pw")
            senv = dict(env, SMARTSPEC_API_KEY=backend.issue_api_key("smoke@example.com"))
            ws = tmp / "workspace"
            ws.mkdir()
            base = ["--data-dir", str(data), "--backend-url", backend.url]
            # A private preferred port range: never the product's 3795-3800 (the user's servers).
            lo, hi = private_port_range()
            (data / "config").mkdir(parents=True, exist_ok=True)
            (data / "config" / "settings.json").write_text(
                json.dumps({"port_range_start": lo, "port_range_end": hi})
            )
            r = run(exe, *base, "start", str(ws), "--json", env=senv)
            assert r.returncode == 0, f"start failed: {r.stderr}"
            info = json.loads(r.stdout)
            server = psutil.Process(info["pid"])
            sup = server.parent()
            assert sup is not None and sup.cmdline()[:2] == [str(exe), "--supervise"], (
                f"supervisor is not the frozen app: {sup and sup.cmdline()[:3]}"
            )
            # The bundle's library paths must not reach opencode (it would load our libs).
            leaked = {
                k: v
                for k, v in server.environ().items()
                if str(exe.parent) in v or k.startswith("_PYI_")
            }
            assert not leaked, f"the frozen app's environment reached opencode: {leaked}"
            pw = (data / "state" / "secrets" / f"server-password_{info['server_id']}").read_text()
            h = httpx.get(info["url"] + "/global/health", auth=("opencode", pw), timeout=5)
            assert h.status_code == 200 and h.json().get("healthy") is True, h.text
            tree = [sup, *sup.children(recursive=True)]
            r = run(exe, *base, "stop", str(ws), env=senv)
            assert r.returncode == 0, f"stop failed: {r.stderr}"
            _, alive = psutil.wait_procs(tree, timeout=10)
            assert not alive, f"left running: {[p.pid for p in alive]}"
            version, port = info["opencode_version"], info["port"]
            return f"opencode {version} on port {port} via the frozen supervisor"

        def window() -> str:
            if not (ROOT / "smartspec_desktop" / "ui" / "app.py").exists():
                raise Skip("smartspec_desktop/ui/app.py is not on this branch yet")
            wenv = dict(env, SMARTSPEC_EXIT_AFTER_SHOWN="1", QT_QPA_PLATFORM="offscreen")
            t0 = time.monotonic()
            r = run(exe, "--data-dir", str(tmp / "gui"), env=wenv, timeout=90)
            wall = time.monotonic() - t0
            assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("window-shown-ms=")]
            assert lines, f"no window-shown-ms line in stdout: {r.stdout!r}"
            return f"{lines[0]} (wall {wall:.1f} s)"

        check("--version", version)
        check("status --json on an empty data dir", status_empty)
        check("keyring backends bundled", keyring_bundled)
        check("start/stop through the frozen supervisor", start_stop)
        check("window opens and quits offscreen", window)
    finally:
        subprocess.run(
            [str(exe), "--data-dir", str(data), "stop", "--all"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        left = reap(str(tmp))
        backend.stop()
        if left:
            results.append(("FAIL", "no leftovers", "; ".join(left)))
            print(f"FAIL  processes left running: {left}")
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r for r in results if r[0] == "FAIL"]
    print(f"smoke: {len(results) - len(failed)} ok (incl. skips), {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
