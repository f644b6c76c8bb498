"""The app's side of a server's gateway broker (issue 9): its files, its control API, usage.

Every server runs behind a broker inside its supervisor (``core/broker``). What the app keeps:

* per workspace, under the state dir: the meter file ``usage/<digest>.jsonl`` (one line per
  gateway call, appended by every server the workspace ever had) and the budget file
  ``budgets/<digest>.json`` (task and per-day token caps and what they used): both outlive the
  app and the server, so budgets survive restarts;
* per server: the model list ``models/<server id>.json`` (``OPENCODE_CONFIG``, no secret), the
  broker's port in the server record (``broker_port``) and its control token in the same store
  as the server password (keyring, or a 0600 file; never in servers.json or a log).

:class:`BrokerControl` talks to the control API (``server.py`` documents the routes);
:func:`summarize` and :func:`usage_report` turn meter records into per-task, per-session and
per-workspace totals. No Qt.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from smartspec_desktop.core.broker.meter import Counts, read_records
from smartspec_desktop.core.errors import BrokerUnavailable
from smartspec_desktop.core.lazy import lazy_module
from smartspec_desktop.core.loopback import verify_for
from smartspec_desktop.core.storage.paths import Paths

if TYPE_CHECKING:
    import httpx
else:  # imported when first used (issue 11)
    httpx = lazy_module("httpx")


def new_task_id() -> str:
    """A budget task id (the broker charges a task's calls through its OpenCode sessions)."""
    return "task_" + secrets.token_hex(8)


def workspace_digest(workspace: str) -> str:
    return hashlib.sha256(workspace.encode("utf-8", "surrogateescape")).hexdigest()[:24]


@dataclass(frozen=True)
class BrokerFiles:
    meter_file: Path
    budget_file: Path
    models_file: Path


def broker_files(paths: Paths, workspace: str, server_id: str = "") -> BrokerFiles:
    """Where the broker of ``workspace``'s server keeps its meter and budgets, and the server
    its model list (``server_id`` "" when only the workspace's files are wanted)."""
    digest = workspace_digest(workspace)
    return BrokerFiles(
        meter_file=paths.state_dir / "usage" / f"{digest}.jsonl",
        budget_file=paths.state_dir / "budgets" / f"{digest}.json",
        models_file=paths.state_dir / "models" / f"{server_id or digest}.json",
    )


# ------------------------------------------------------------------------------------ usage


@dataclass
class Usage(Counts):
    """Calls and tokens of a set of gateway calls (as the broker metered them), and when."""

    first: float = 0.0
    last: float = 0.0

    def add(self, rec: Mapping[str, Any]) -> None:
        """One line of the broker's ledger (``CallRecord.as_json``)."""
        self.count(
            refused=bool(rec.get("refused")),
            failed=bool(rec.get("error")) or _int(rec.get("status")) >= 400,
            prompt_tokens=_int(rec.get("prompt_tokens")),
            completion_tokens=_int(rec.get("completion_tokens")),
        )
        t = rec.get("time")
        if isinstance(t, int | float) and not isinstance(t, bool):
            self.first = min(self.first, float(t)) if self.first else float(t)
            self.last = max(self.last, float(t))

    def line(self) -> str:
        """``3 calls · 1,234 tokens (1,000 in / 234 out)``."""
        text = (
            f"{self.calls} call{'s' if self.calls != 1 else ''} · {self.total_tokens:,} tokens "
            f"({self.prompt_tokens:,} in / {self.completion_tokens:,} out)"
        )
        if self.refused:
            text += f" · {self.refused} refused"
        return text


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def summarize(
    records: Iterable[Mapping[str, Any]],
    *,
    sessions: Iterable[str] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Usage:
    """The usage of the records that served one of ``sessions`` (all when None), in the window
    ``[since, until]`` (seconds since the epoch; open ends when None). A sub-agent's call (its
    record's ``root`` is one of ``sessions``) counts toward the session that started it."""
    wanted = set(sessions) if sessions is not None else None
    out = Usage()
    for rec in records:
        if wanted is not None and not {rec.get("session"), rec.get("root")} & wanted:
            continue
        t = rec.get("time")
        t = float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0
        if since is not None and t < since:
            continue
        if until is not None and t > until:
            continue
        out.add(rec)
    return out


def usage_report(records: list[dict[str, Any]], *, now: float | None = None) -> dict[str, Any]:
    """Per workspace (all records), today (local date) and per OpenCode session (a sub-agent's
    calls under the root session that started it)."""
    lt = time.localtime(now if now is not None else time.time())
    midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
    by_session: dict[str, Usage] = {}
    for rec in records:
        sid = rec.get("root") or rec.get("session")
        if isinstance(sid, str) and sid:
            by_session.setdefault(sid, Usage()).add(rec)
    return {
        "total": summarize(records).as_json(),
        "today": summarize(records, since=midnight).as_json(),
        "by_session": {s: u.as_json() for s, u in by_session.items()},
    }


def workspace_records(paths: Paths, workspace: str) -> list[dict[str, Any]]:
    return read_records(broker_files(paths, workspace).meter_file)


# ------------------------------------------------------------------------------ control API


class BrokerControl:
    """The control API of one server's broker (``Authorization: Bearer <control token>``)."""

    def __init__(self, port: int, token: str, *, timeout: float = 5.0) -> None:
        self.base = f"http://127.0.0.1:{port}/_control"
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BrokerControl({self.base!r})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = httpx.request(
                method,
                self.base + path,
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
                trust_env=False,
                verify=verify_for(self.base),
            )
        except httpx.HTTPError as e:
            raise BrokerUnavailable(
                f"The server's gateway broker at {self.base} did not answer ({e}).",
                "Restart the server (Stop, then Start).",
            ) from None
        if r.status_code != 200:
            try:
                message = str(r.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                message = r.text[:200]
            raise BrokerUnavailable(
                f"The server's gateway broker refused {method} {path}: {message}",
                "Restart the server (Stop, then Start).",
            )
        return r.json()

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/health"))

    def usage(self) -> dict[str, Any]:
        return dict(self._call("GET", "/usage"))

    def budget(self) -> dict[str, Any]:
        return dict(self._call("GET", "/budget"))

    def set_day_cap(self, cap: int | None) -> dict[str, Any]:
        return dict(self._call("PUT", "/budget/day", {"cap": cap}))

    def raise_day(self, add: int) -> dict[str, Any]:
        return dict(self._call("POST", "/budget/day/raise", {"add": add}))

    def set_task(self, task: str, cap: int | None, sessions: list[str]) -> dict[str, Any]:
        body = {"cap": cap, "sessions": sessions}
        return dict(self._call("PUT", f"/budget/tasks/{quote(task, safe='')}", body))

    def raise_task(self, task: str, add: int) -> dict[str, Any]:
        path = f"/budget/tasks/{quote(task, safe='')}/raise"
        return dict(self._call("POST", path, {"add": add}))

    def set_key(self, key: str | None) -> None:
        """Rotation (a new key) or revocation (None): running servers use it at once."""
        if key:
            self._call("PUT", "/key", {"key": key})
        else:
            self._call("DELETE", "/key")


# ------------------------------------------------------------------------- credits charged


def _epoch(value: object) -> float | None:
    """The backend's timestamps are naive ISO in UTC (backend-contract.md)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def charged_in_window(
    transactions: Iterable[Mapping[str, Any]], since: float, until: float, *, slack: float = 2.0
) -> float:
    """The credits the backend deducted between ``since`` and ``until`` (epoch seconds, with
    ``slack`` either side): what a task really cost, as the ledger says."""
    total = 0.0
    for t in transactions:
        if t.get("type") != "deduction":
            continue
        when = _epoch(t.get("created_at"))
        amount = t.get("amount")
        if when is None or not isinstance(amount, int | float) or isinstance(amount, bool):
            continue
        if since - slack <= when <= until + slack:
            total += abs(float(amount))
    return total
