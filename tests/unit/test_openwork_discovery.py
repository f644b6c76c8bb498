"""openwork-server: where an installed one is found, the port it says it bound, its version."""

from __future__ import annotations

from pathlib import Path

from smartspec_desktop.core.launch.launchers import (
    OPENWORK_INSTALL,
    OPENWORK_NOTICE,
    bound_port_from_log,
    find_openwork_server,
    openwork_locations,
    openwork_version,
)


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def none(_name: str) -> str | None:
    return None


def found_with(env: dict[str, str], platform: str) -> str | None:
    """What is found with nothing on PATH and nothing in Settings."""
    return find_openwork_server("", none, locations=openwork_locations(env, platform))


def test_the_orchestrators_sidecar_cache_is_searched_highest_version_first(
    tmp_path: Path,
) -> None:
    env = {"HOME": str(tmp_path)}
    cache = tmp_path / ".openwork" / "openwork-orchestrator" / "sidecars"
    assert found_with(env, "linux") is None
    executable(cache / "0.18.9" / "openwork-server")
    newest = executable(cache / "0.18.50" / "x86_64-linux" / "openwork-server")
    (cache / "0.18.60").mkdir()
    (cache / "0.18.60" / "openwork-server").write_text("not executable")
    assert found_with(env, "linux") == str(newest)
    # PATH wins over the cache, Settings over both.
    assert find_openwork_server("", lambda n: f"/usr/bin/{n}") == "/usr/bin/openwork-server"


def test_the_sidecar_dir_variables_and_the_desktop_apps_resources_are_searched(
    tmp_path: Path,
) -> None:
    side = executable(tmp_path / "side" / "openwork-server")
    env = {"HOME": str(tmp_path / "h"), "OPENWORK_SIDECAR_DIR": str(tmp_path / "side")}
    assert found_with(env, "linux") == str(side)
    data = executable(tmp_path / "data" / "sidecars" / "openwork-server")
    env = {"HOME": str(tmp_path / "h"), "OPENWORK_DATA_DIR": str(tmp_path / "data")}
    assert found_with(env, "linux") == str(data)
    home = tmp_path / "mac"
    app = executable(
        home / "Applications/OpenWork.app/Contents/Resources/sidecars/openwork-server-aarch64"
    )
    assert found_with({"HOME": str(home)}, "darwin") == str(app)
    # The desktop app's Linux build unpacked into ~/Applications, its sidecar named by target.
    home = tmp_path / "linux"
    unpacked = executable(
        home / "Applications/OpenWork/resources/sidecars/openwork-server-x86_64-unknown-linux-gnu"
    )
    assert found_with({"HOME": str(home)}, "linux") == str(unpacked)
    local = tmp_path / "local"
    exe = executable(local / "Programs/OpenWork/resources/sidecars/openwork-server.exe")
    assert found_with({"LOCALAPPDATA": str(local)}, "win32") == str(exe)
    assert openwork_locations({}, "linux") == [
        (Path("/opt/OpenWork/resources"), "the OpenWork desktop app"),
        (Path("/opt/OpenWork"), "the OpenWork desktop app"),
        (Path("/usr/lib/openwork/resources"), "the OpenWork desktop app"),
        (Path("/usr/lib/openwork"), "the OpenWork desktop app"),
    ], "no home in the environment: nothing of anyone's home is searched"


def test_the_port_it_bound_is_read_from_its_listening_line() -> None:
    log = (
        "client token: ***\n"
        "openwork-standin listening on http://127.0.0.1:41234\n"
        "request GET /health\n"
    )
    assert bound_port_from_log(log) == 41234
    assert bound_port_from_log("Listening at localhost:5001 (asked 8787)\n") == 5001
    assert bound_port_from_log("starting on port 8787\n") is None
    assert bound_port_from_log("") is None


def test_the_version_comes_from_health() -> None:
    assert openwork_version({"ok": True, "version": "0.18.50"}) == "0.18.50"
    assert openwork_version({"ok": True}) == "" and openwork_version([]) == ""


def test_the_hints_name_routes_that_exist_here() -> None:
    for text in (OPENWORK_INSTALL, OPENWORK_NOTICE):
        assert "npm install -g openwork-server" not in text
        assert "OpenWork desktop app" in text and "Settings → OpenWork server" in text
        assert "npm install -g openwork-orchestrator" in text
