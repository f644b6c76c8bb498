"""How an OpenCode server is configured: its config, its environment, its command (all pure)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from smartspec_desktop.core import ports
from smartspec_desktop.core.broker.modelids import broker_config_content
from smartspec_desktop.core.process.childenv import external_env

#: Variables of the user's environment that would change what the server does behind our back.
SCRUBBED_ENV = (
    "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR",
    "OPENCODE_CONFIG_CONTENT",
    "OPENCODE_SERVER_USERNAME",
    "OPENCODE_SERVER_PASSWORD",
    "OPENCODE_PERMISSION",
    # set by the supervisor only (its broker), never inherited
    "SMARTSPEC_BROKER_URL",
    "SMARTSPEC_BROKER_TOKEN",
)
#: Where the user may keep the key: the server (and so the agent) must never see it.
KEY_ENV = ("SMARTSPEC_API_KEY",)


def opencode_config(model: str, *, agent_permissions: str = "default") -> str:
    """The OPENCODE_CONFIG_CONTENT that makes the gateway broker the only provider.

    The provider's ``baseURL``/``apiKey`` are ``{env:SMARTSPEC_BROKER_URL}`` and
    ``{env:SMARTSPEC_BROKER_TOKEN}``, which the supervisor sets to its broker and the server's
    own token: the real key is never in the server's environment or config (issue 9). This
    wins over a workspace's own opencode.json (verified on 1.18.33). The model list is not
    here but in the file of :func:`server_env`'s ``models_file`` (F8). With
    ``agent_permissions="ask"`` OpenCode asks (``permission.asked`` event, answered through
    ``POST /permission/{id}/reply``) before it edits a file or runs a shell command (verified).
    """
    return broker_config_content(model, agent_permissions=agent_permissions)


def server_env(
    base: Mapping[str, str], *, password: str, config: str, models_file: Path
) -> dict[str, str]:
    """The server's environment: never the API key (the broker holds it)."""
    env = {
        k: v for k, v in external_env(base).items() if k not in SCRUBBED_ENV and k not in KEY_ENV
    }
    no_proxy = [h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h]
    for host in ("127.0.0.1", "localhost", "::1"):
        if host not in no_proxy:
            no_proxy.append(host)
    env.update(
        {
            "OPENCODE_CONFIG": str(models_file),
            "OPENCODE_CONFIG_CONTENT": config,
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
