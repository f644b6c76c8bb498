"""Model ids from the backend are data, not config (security review F5, F8).

OpenCode expands ``{env:NAME}`` and ``{file:PATH}`` in the *text* of every config it reads
(``OPENCODE_CONFIG_CONTENT`` and config files alike) before parsing it as JSON, so JSON escaping
does not help: a listed model id ``{file:/home/u/.ssh/id_rsa}`` became the file's content and was
sent back as ``"model"`` in every chat request. :func:`safe_model_ids` therefore *drops* any id
outside a plain alphabet (no braces at all), with one logged warning naming what was dropped.

A catalogue of thousands of models does not fit in one environment string (Linux caps one at
128 KiB: 1,350 ids were enough to make every start fail with "Argument list too long").
:func:`write_models_config` writes the model list to a 0600 file in the app's state dir that the
server reads through ``OPENCODE_CONFIG``; it holds no secret. The small, security-relevant part
(provider base URL, ``enabled_providers``, the default model) stays in ``OPENCODE_CONFIG_CONTENT``,
which OpenCode merges last, so a workspace ``opencode.json`` cannot override it (verified with
OpenCode 1.18.33 in ``tests/integration/test_broker_opencode.py``).

Standard library only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smartspec_desktop.core.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: What a model id may contain: letters, digits and ``. _ : / @ + -``; no braces, no spaces.
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@+-]{1,200}")
PROVIDER_ID = "smartspec"


def is_safe_model_id(model_id: object) -> bool:
    """True when ``model_id`` is a string OpenCode takes literally (see the module docstring)."""
    return isinstance(model_id, str) and MODEL_ID_PATTERN.fullmatch(model_id) is not None


def safe_model_ids(ids: Iterable[object]) -> list[str]:
    """The ids that are safe to put in an OpenCode config, in order, without duplicates.

    Anything else (braces that OpenCode would expand, spaces, control characters, over 200
    characters, not a string) is dropped, and one warning names how many and the first few.
    """
    kept: list[str] = []
    seen: set[str] = set()
    dropped: list[str] = []
    for model_id in ids:
        if not is_safe_model_id(model_id):
            dropped.append(repr(model_id)[:80])
            continue
        assert isinstance(model_id, str)
        if model_id not in seen:
            seen.add(model_id)
            kept.append(model_id)
    if dropped:
        log.warning(
            "Ignored %d model id(s) from the backend that are not plain ids (they could make "
            "OpenCode read local files or variables): %s%s",
            len(dropped),
            ", ".join(dropped[:5]),
            " …" if len(dropped) > 5 else "",
        )
    return kept


def broker_config_content(model: str, *, agent_permissions: str = "default") -> str:
    """The small ``OPENCODE_CONFIG_CONTENT`` for a server behind the broker.

    The provider's ``baseURL`` and ``apiKey`` are ``{env:SMARTSPEC_BROKER_URL}`` and
    ``{env:SMARTSPEC_BROKER_TOKEN}`` (set by the supervisor), ``enabled_providers`` allows only
    this provider, and ``model``/``small_model`` are ``smartspec/<model>``. The model list goes to
    the file of :func:`write_models_config` (``OPENCODE_CONFIG``). ``model`` must pass
    :func:`is_safe_model_id` (ValueError otherwise).
    """
    if not is_safe_model_id(model):
        raise ValueError(f"the model id {model!r} is not a plain id")
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "SmartSpecPro",
                "options": {
                    "baseURL": "{env:SMARTSPEC_BROKER_URL}",
                    "apiKey": "{env:SMARTSPEC_BROKER_TOKEN}",
                },
            }
        },
        "enabled_providers": [PROVIDER_ID],
        "model": f"{PROVIDER_ID}/{model}",
        "small_model": f"{PROVIDER_ID}/{model}",
        "autoupdate": False,
        "share": "disabled",
    }
    if agent_permissions == "ask":
        config["permission"] = {"edit": "ask", "bash": "ask"}
    return json.dumps(config)


def models_config(models: Iterable[str]) -> dict[str, Any]:
    """The models part of the OpenCode config, for the SmartSpecPro provider."""
    ids = safe_model_ids(models)
    return {"provider": {PROVIDER_ID: {"models": {m: {"name": m} for m in ids}}}}


def write_models_config(path: Path, models: Iterable[str]) -> Path:
    """Write :func:`models_config` to ``path`` (0600, atomically) and return ``path``.

    Point the server's ``OPENCODE_CONFIG`` at it; keep the provider's ``baseURL``/``apiKey``,
    ``enabled_providers`` and ``model`` in ``OPENCODE_CONFIG_CONTENT`` (see the module docstring).
    The file holds no secret.
    """
    atomic_write_text(path, json.dumps(models_config(models)), mode=0o600)
    return path
