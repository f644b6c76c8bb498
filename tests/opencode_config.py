"""A warm OpenCode config dir for the tests' throw-away HOMEs.

On the first directory request a server makes in a fresh ``$XDG_CONFIG_HOME/opencode``, OpenCode
installs its plugin package there from the npm registry (~64 MB of node_modules, ~5 CPU-s of the
server's in the 15 s after its start, measured). A user pays that once per machine; the suite paid
it for each of its ~130 servers, one fresh HOME each. So it is made once, with the real OpenCode,
and every sandbox HOME starts from a copy (node_modules hard-linked, the files OpenCode writes
itself copied): as on a machine where OpenCode ran before.

scripts/setup-tests makes it in the tests' cache (``$SMARTSPEC_TESTS_CONFIG_CACHE``, set by
tests/run-tests; one per OpenCode binary), kept there like the tests' OpenCode install:
otherwise each run waited ~30 s for it before its first server test could start. The tests only
read it; a run whose cache lacks it (OpenCode reinstalled since, the cache on another file
system) makes its own in its temp folder.

``python -m tests.opencode_config OPENCODE DIR`` makes it in DIR (scripts/setup-tests).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import filelock
import httpx
import psutil

#: tests/run-tests names the tests' cache for it here.
CACHE_ENV = "SMARTSPEC_TESTS_CONFIG_CACHE"
#: Set by the session fixture in conftest: where scripts/setup-tests keeps the warm config dirs
#: (only read by the tests), and the folder this run's workers share (where a run makes one the
#: cache lacks, or notes that it could not).
cache_root: Path | None = None
run_root: Path | None = None


def template_for(opencode: str) -> Path | None:
    """The warm config dir for ``opencode``: the tests' cache's, else this run's (built by the
    first worker that asks), or None outside a pytest session or when it could not be built
    (sandboxes then start cold)."""
    name = template_name(opencode)
    if cache_root is not None and (cache_root / name).is_dir():
        return cache_root / name
    if run_root is None:
        return None
    dest, failed = run_root / name, run_root / (name + ".failed")
    with filelock.FileLock(str(dest) + ".lock", timeout=300):
        if not dest.is_dir() and not failed.exists():
            try:
                build(dest, opencode)
            except Exception as e:  # noted once; every sandbox then installs for itself
                failed.write_text(f"{type(e).__name__}: {e}\n")
    return dest if dest.is_dir() else None


def template_name(opencode: str) -> str:
    """One per binary: a reinstalled OpenCode is a new file, and gets a config dir of its own."""
    st = os.stat(opencode)
    return f"opencode-config-{st.st_ino}-{st.st_size}-{int(st.st_mtime)}"


def _place(src: str, dst: str) -> None:
    # node_modules is only ever read; what OpenCode may rewrite is copied.
    if f"{os.sep}node_modules{os.sep}" in src:
        with contextlib.suppress(OSError):
            os.link(src, dst)
            return
    shutil.copy2(src, dst)


def seed(home: Path, opencode: str) -> None:
    """Give ``home`` the warm ``.config/opencode`` (no-op when there is none)."""
    template = template_for(opencode)
    target = home / ".config" / "opencode"
    if template is None or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, target, symlinks=True, copy_function=_place)


#: What OpenCode's plugin install leaves in a config dir, beside the dir's own config files.
KIT = ("package.json", "package-lock.json", ".gitignore", "node_modules")


def seed_project(workspace: Path, opencode: str) -> None:
    """Give ``workspace/.opencode`` the plugin kit OpenCode installs there the first time a
    trusted workspace with plugins starts (~15 CPU-s and ~13 s on 2 idle cores, measured), as on
    a machine where the project was opened before. Only the kit: the project's own config,
    plugins and agents stay the test's."""
    template = template_for(opencode)
    if template is None:
        return
    target = workspace / ".opencode"
    target.mkdir(parents=True, exist_ok=True)
    for name in KIT:
        src = template / name
        if src.is_dir():
            shutil.copytree(src, target / name, symlinks=True, copy_function=_place)
        elif src.exists():
            shutil.copy2(src, target / name)


def build(dest: Path, opencode: str) -> None:
    """Run the real ``opencode serve`` once in a fresh HOME until its install is done."""
    work = dest.with_name(dest.name + ".build")
    shutil.rmtree(work, ignore_errors=True)
    home, ws = work / "home", work / "ws"
    ws.mkdir(parents=True)
    password = secrets.token_urlsafe(16)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_SERVER_PASSWORD": password,
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
    }
    # tests/run-tests: the tests' own npm cache (npm reads the lower-case name)
    env.update({k: v for k, v in os.environ.items() if k == "npm_config_cache"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [opencode, "serve", "--hostname", "127.0.0.1", "--port", str(port)],
        cwd=ws,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    config = home / ".config" / "opencode"
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(auth=("opencode", password), timeout=5, trust_env=False) as http:
            deadline = time.monotonic() + 180
            while True:  # ready, and the workspace's instance made (which starts the install)
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"opencode serve ended or never answered (see {log.name})")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url + "/config", params={"directory": str(ws)}).is_success:
                        break
                time.sleep(0.2)
        server = psutil.Process(proc.pid)
        server.cpu_percent(None)
        while True:  # installed, then quiet (nothing more being written)
            if time.monotonic() > deadline:
                raise RuntimeError("OpenCode's plugin install did not finish")
            time.sleep(1.0)
            done = (config / "node_modules" / ".package-lock.json").exists()
            if done and server.cpu_percent(None) < 10:
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    config.rename(dest)
    shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Make the warm config dir for OPENCODE in DIR, and drop those of other binaries there."""
    if len(argv) != 2:
        print("usage: python -m tests.opencode_config OPENCODE DIR")
        return 2
    opencode, folder = argv[0], Path(argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    global run_root
    run_root = folder
    keep = template_name(opencode)
    failed = folder / (keep + ".failed")
    # A failure noted by an earlier set-up (the registry unreachable, say) is tried again here.
    failed.unlink(missing_ok=True)
    for old in folder.glob("opencode-config-*"):
        if old.name.startswith(keep):
            continue
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    made = template_for(opencode)
    if made is None:
        why = failed.read_text().strip() if failed.exists() else "no reason noted"
        print(
            f"could not make OpenCode's warm config dir in {folder}: {why}. OpenCode installs"
            " its plugin package there from the npm registry: run scripts/setup-tests again"
            " once the registry can be reached.",
            file=sys.stderr,
        )
        return 1
    print(f"tests' warm OpenCode config: {made}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
