"""How an OpenCode server is configured: its config, its environment, its command (all pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from smartspec_desktop.core import ports
from smartspec_desktop.core.process.childenv import external_env

#: Variables of the user's environment that would change what the server does behind our back.
SCRUBBED_ENV = (
    "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR",
    "OPENCODE_CONFIG_CONTENT",
    "OPENCODE_SERVER_USERNAME",
    "OPENCODE_SERVER_PASSWORD",
    "OPENCODE_PERMISSION",
)


def opencode_config(
    gateway_url: str, models: list[str], model: str, *, agent_permissions: str = "default"
) -> str:
    """The OPENCODE_CONFIG_CONTENT that makes the SmartSpecPro gateway the only provider.

    The key is referenced as ``{env:SMARTSPEC_API_KEY}`` so it travels only in the environment.
    This wins over a workspace's own opencode.json (verified on 1.18.33). With
    ``agent_permissions="ask"`` OpenCode asks (``permission.asked`` event, answered through
    ``POST /permission/{id}/reply``) before it edits a file or runs a shell command (verified).
    """
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "smartspec": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "SmartSpecPro",
                "options": {"baseURL": gateway_url, "apiKey": "{env:SMARTSPEC_API_KEY}"},
                "models": {m: {"name": m} for m in models},
            }
        },
        "enabled_providers": ["smartspec"],
        "model": f"smartspec/{model}",
        "small_model": f"smartspec/{model}",
        "autoupdate": False,
        "share": "disabled",
    }
    if agent_permissions == "ask":
        config["permission"] = {"edit": "ask", "bash": "ask"}
    return json.dumps(config)


def server_env(
    base: Mapping[str, str], *, api_key: str, password: str, config: str
) -> dict[str, str]:
    env = {k: v for k, v in external_env(base).items() if k not in SCRUBBED_ENV}
    no_proxy = [h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h]
    for host in ("127.0.0.1", "localhost", "::1"):
        if host not in no_proxy:
            no_proxy.append(host)
    env.update(
        {
            "OPENCODE_CONFIG_CONTENT": config,
            "SMARTSPEC_API_KEY": api_key,
            "OPENCODE_SERVER_PASSWORD": password,
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "NO_PROXY": ",".join(no_proxy),
            "no_proxy": ",".join(no_proxy),
        }
    )
    return env


def serve_argv(binary: str, port: int) -> list[str]:
    """``opencode serve`` on 127.0.0.1:``port``, logging to stdout (the supervisor's log)."""
    return [
        binary,
        "serve",
        "--hostname",
        ports.HOST,
        "--port",
        str(port),
        "--print-logs",
        "--log-level",
        "INFO",
    ]
