"""The one JSON line that carries the broker's secrets from the app to the supervisor.

The real API key must never be in an environment, an argv or a file. The parent (the app or the
CLI) starts the supervisor with ``--broker`` and ``stdin=PIPE``, writes :func:`broker_payload`'s
line to its stdin and closes it; the supervisor reads that line (:func:`read_payload`) before
anything else. Shape::

    {"broker": {"key": "sk-smartspec-…", "token": "<per-server token>",
                "control_token": "<control token>", "upstream": "http://localhost:8000",
                "meter_file": "/…/state/usage/<session>.jsonl" | null,
                "budget_file": "/…/state/budgets/<workspace hash>.json" | null,
                "day_cap": N | null},
     "redact": ["<other secret>", …]}

``redact`` lists further values the supervisor removes from its log (the server password, …);
the key and both tokens are always redacted. Standard library only.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where parsed: the parent side (broker_payload) needs no HTTP server
    from smartspec_desktop.core.broker.server import BrokerConfig

#: A payload line longer than this is refused (a real one is well under 2 KiB).
MAX_PAYLOAD = 64 * 1024


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe): per server, worthless off this machine."""
    return secrets.token_urlsafe(32)


def broker_payload(
    *,
    key: str,
    token: str,
    control_token: str,
    upstream: str,
    meter_file: Path | None = None,
    budget_file: Path | None = None,
    day_cap: int | None = None,
    redact: Iterable[str] = (),
) -> bytes:
    """The line (JSON + ``\\n``) to write to the supervisor's stdin. Pure: builds bytes only."""
    if not key or not token or not control_token:
        raise ValueError("the key and both tokens must be non-empty")
    if token == control_token:
        raise ValueError("the control token must differ from the server's token")
    doc = {
        "broker": {
            "key": key,
            "token": token,
            "control_token": control_token,
            "upstream": upstream,
            "meter_file": str(meter_file) if meter_file else None,
            "budget_file": str(budget_file) if budget_file else None,
            "day_cap": day_cap,
        },
        "redact": [s for s in redact if s],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class Payload:
    config: BrokerConfig
    day_cap: int | None = None
    redact: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Payload(config={self.config!r})"


class PayloadError(ValueError):
    pass


def parse_payload(line: bytes) -> Payload:
    """Parse :func:`broker_payload`'s line; :class:`PayloadError` names what is wrong."""
    if len(line) > MAX_PAYLOAD:
        raise PayloadError("the broker payload is too long")
    if not line.strip():
        raise PayloadError("no broker payload arrived on stdin")
    try:
        doc: Any = json.loads(line)
    except ValueError:
        raise PayloadError("the broker payload is not JSON") from None
    broker = doc.get("broker") if isinstance(doc, dict) else None
    if not isinstance(broker, dict):
        raise PayloadError('the broker payload has no "broker" object')
    for name in ("key", "token", "control_token", "upstream"):
        if not isinstance(broker.get(name), str) or not broker[name]:
            raise PayloadError(f'the broker payload has no "{name}"')
    day_cap = broker.get("day_cap")
    if day_cap is not None and (not isinstance(day_cap, int) or day_cap < 0):
        raise PayloadError('"day_cap" must be a whole number or null')
    redact = doc.get("redact", [])
    if not isinstance(redact, list):
        raise PayloadError('"redact" must be a list')

    def path(name: str) -> Path | None:
        value = broker.get(name)
        return Path(value) if isinstance(value, str) and value else None

    from smartspec_desktop.core.broker.server import BrokerConfig

    config = BrokerConfig(
        key=broker["key"],
        token=broker["token"],
        control_token=broker["control_token"],
        upstream=broker["upstream"],
        meter_file=path("meter_file"),
        budget_file=path("budget_file"),
    )
    secrets_ = [s for s in redact if isinstance(s, str)]
    secrets_ += [broker["key"], broker["token"], broker["control_token"]]
    return Payload(config, day_cap, secrets_)


def read_payload(stream: IO[bytes]) -> Payload:
    """Read one line (at most :data:`MAX_PAYLOAD` bytes) from ``stream`` and parse it."""
    return parse_payload(stream.readline(MAX_PAYLOAD + 1))
