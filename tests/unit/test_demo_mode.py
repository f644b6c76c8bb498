"""Demo mode never touches the user's real key or settings (in-process, against the demo
gateway's code on 127.0.0.1 in this process; the detached process is tested in integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartspec_desktop.core.storage.config import Settings, save_settings
from smartspec_desktop.core.storage.paths import Paths
from smartspec_desktop.core.storage.secrets import API_KEY_ENTRY, MemoryStore
from smartspec_desktop.demo import mode
from smartspec_desktop.demo.backend import BackendStandIn

REAL_KEY = "sk-smartspec-" + "r" * 43


def test_demo_store_hides_and_protects_the_real_key() -> None:
    inner = MemoryStore()
    inner.set(API_KEY_ENTRY, REAL_KEY)
    store = mode.DemoSecretStore(inner)
    assert store.get(API_KEY_ENTRY) is None
    with pytest.raises(mode.DemoError, match="does not store API keys"):
        store.set(API_KEY_ENTRY, "sk-smartspec-" + "x" * 43)
    store.delete(API_KEY_ENTRY)
    assert inner.get(API_KEY_ENTRY) == REAL_KEY
    store.set("server-password:srv_1", "pw")  # server passwords pass through
    assert inner.get("server-password:srv_1") == "pw" == store.get("server-password:srv_1")


def test_demo_core_uses_the_demo_gateway_and_this_runs_key_only(tmp_path: Path) -> None:
    real = Paths.from_base(tmp_path / "data")
    real.ensure()
    save_settings(real.settings_file, Settings(backend_url="https://real.example", model="m1"))
    before = real.settings_file.read_bytes()
    keyring = MemoryStore()
    keyring.set(API_KEY_ENTRY, REAL_KEY)

    with BackendStandIn(gateway="demo") as backend:
        backend.add_user(mode.DEMO_EMAIL, mode.DEMO_PASSWORD)
        key, user = mode.demo_key(backend.url)
        info = mode.GatewayInfo(0, 0.0, backend.url)
        demo = mode.demo_paths(real)
        demo.ensure()
        session = mode.DemoSession(demo, info, key, user)
        core = mode.build_demo_core(real, session, store=keyring)

        assert core.demo is session and core.settings.backend_url == backend.url
        assert core.settings.model == "m1"  # a copy of the real settings otherwise
        assert core.credentials.api_key() == (key, "this run")
        assert key != REAL_KEY and user["email"] == mode.DEMO_EMAIL
        assert backend.api_keys(mode.DEMO_EMAIL)  # the key is the demo account's
        with pytest.raises(mode.DemoError):
            core.credentials.store_api_key("sk-smartspec-" + "n" * 43)
        core.credentials.forget_api_key()
        core.save_settings()

    assert keyring.get(API_KEY_ENTRY) == REAL_KEY  # never read, replaced or deleted
    assert real.settings_file.read_bytes() == before
    assert json.loads(demo.settings_file.read_text())["backend_url"] == info.url
    assert core.servers.registry.file == demo.state_dir / "servers.json"
    assert key not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "data").rglob("*") if p.is_file()
    )


def test_demo_cli_refuses_to_store_or_delete_a_key(tmp_path: Path) -> None:
    import io

    from smartspec_desktop.cli import build_parser, run_cli

    for action in ("set", "delete"):
        args = build_parser().parse_args(["--data-dir", str(tmp_path), "--demo", "key", action])
        out, err = io.StringIO(), io.StringIO()
        assert run_cli(args, out, err) == 1
        assert f"Run `smartspec-desktop key {action}` without --demo." in err.getvalue()
    assert not (tmp_path / "state" / "demo" / "gateway.json").exists()  # none was started
