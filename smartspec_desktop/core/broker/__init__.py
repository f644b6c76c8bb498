"""The gateway broker: OpenCode never holds the company key (issue 9).

Each running server gets a broker inside its supervisor (``core/process/supervisor.py``, in
``--broker`` mode): an HTTP forwarder on 127.0.0.1 that accepts only a per-server random
token, replaces it with the real ``sk-smartspec-…`` key and forwards ``/v1/opencode/…`` to the
backend, metering every call and enforcing token budgets. Modules:

* ``server``   — :class:`Broker`, :class:`BrokerConfig`; the control API is documented there.
* ``payload``  — :func:`broker_payload` (parent side: the stdin line that carries the key),
  :func:`read_payload` (supervisor side), :func:`new_token`.
* ``meter``    — the JSON-lines usage file and in-memory totals (:func:`read_records`).
* ``budget``   — task and per-day token caps, persisted in a 0600 JSON file.
* ``errors``   — the error shapes OpenCode 1.18.33 fails a turn on with one line, no retry.
* ``sse``      — the stream watcher (usage, error-only/malformed/cut-short streams).
* ``modelids`` — model ids as data (F5) and the models file for ``OPENCODE_CONFIG`` (F8).

Parent side, in short::

    token, control = new_token(), new_token()
    line = broker_payload(key=api_key, token=token, control_token=control,
                          upstream=settings.backend_url, meter_file=…, budget_file=…,
                          redact=[password])
    cmd = supervised_command(serve, log_path=…, exit_file=…, cwd=ws, broker=True)
    sup = Popen(cmd, stdin=PIPE, stdout=PIPE, env=env_without_the_key, …)
    sup.stdin.write(line); sup.stdin.close()
    hello = json.loads(sup.stdout.readline())   # {"pid": …, "broker_port": …}
    # control API: http://127.0.0.1:<broker_port>/_control/… with "Bearer <control>"

OpenCode's config then says ``"baseURL": "{env:SMARTSPEC_BROKER_URL}"`` and ``"apiKey":
"{env:SMARTSPEC_BROKER_TOKEN}"`` (the supervisor sets both in the server's environment).
Standard library only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smartspec_desktop.core.broker.payload import broker_payload, new_token, read_payload
    from smartspec_desktop.core.broker.server import Broker, BrokerConfig

__all__ = ["Broker", "BrokerConfig", "broker_payload", "new_token", "read_payload"]

#: Imported when first used: every CLI run imports ``broker.meter`` or ``broker.modelids``, and
#: the broker itself (``server``: http.server, email parsing, ~40 ms) is the supervisor's.
_LAZY = {
    "Broker": "server",
    "BrokerConfig": "server",
    "broker_payload": "payload",
    "new_token": "payload",
    "read_payload": "payload",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
