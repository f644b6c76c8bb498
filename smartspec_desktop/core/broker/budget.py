"""Token budgets of one server: a cap per task and a cap per workspace per day.

A *task* is what the app or CLI runs: one or more OpenCode sessions (the main one, plus any
sub-agent sessions the caller attaches), named by a task id the caller chooses (the main session
id is a good one). A call is charged to the task whose sessions include its ``x-session-id`` or,
for a sub-agent's call (an OpenCode child session), its root session (``sessions.py``), and to the
day (local date) in any case.

A call is refused before it is forwarded once the spent tokens have *reached* a cap (the call that
crosses it is allowed to finish: cutting an answer in half is worse than a small overrun). Raising
a cap (**Continue (+N)**) lets the next call through.

State lives in a 0600 JSON file (atomic writes), so budgets and what they have used survive app
restarts and server restarts::

    {"version": 1, "day_cap": 200000 | null, "days": {"2026-12-01": 1234},
     "tasks": {"<task id>": {"cap": 5000 | null, "used": 1200, "sessions": ["ses_…"]}}}

Only the last 14 days are kept. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartspec_desktop.core.storage.atomic import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

KEEP_DAYS = 14
MAX_TASKS = 500


def _today() -> str:
    return time.strftime("%Y-%m-%d")


def _replace_json(path: Path, data: dict[str, Any]) -> None:
    """Like ``atomic_write_json`` without the fsync (temp file in the same folder, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)  # mkstemp made it 0600
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused: which cap, how big, and the line to show."""

    scope: str  # "task" or "day"
    cap: int
    used: int
    task: str | None = None

    @property
    def message(self) -> str:
        what = f"task {self.task}" if self.scope == "task" else "today's workspace budget"
        return (
            f"Paused: budget of {self.cap:,} tokens reached ({what}: {self.used:,} used). "
            "Raise the budget (Continue) to go on."
        )


class Budgets:
    """Thread-safe budget state backed by ``path`` (``None``: in memory only)."""

    def __init__(self, path: Path | None, *, today: Any = _today) -> None:
        self.path = path
        self._today = today
        self._lock = threading.Lock()
        self.day_cap: int | None = None
        self.days: dict[str, int] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self._session_task: dict[str, str] = {}
        #: Charges not written to the file yet (``charge(..., save=False)``; see :meth:`flush`).
        self._dirty = False
        self._timer: threading.Timer | None = None  # a write due (:meth:`flush_soon`)
        if path is not None:
            self._load(path)

    # -- persistence -----------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        data, _warning = read_json_object(path)
        self.day_cap = _count(data.get("day_cap"))
        days = data.get("days")
        if isinstance(days, dict):
            self.days = {k: v for k, v in days.items() if isinstance(k, str) and _count(v)}
        tasks = data.get("tasks")
        if isinstance(tasks, dict):
            for tid, t in tasks.items():
                if not isinstance(tid, str) or not isinstance(t, dict):
                    continue
                sessions = [s for s in t.get("sessions", []) if isinstance(s, str)]
                self.tasks[tid] = {
                    "cap": _count(t.get("cap")),
                    "used": _count(t.get("used")) or 0,
                    "sessions": sessions,
                }
        self._reindex()

    def _reindex(self) -> None:
        self._session_task = {s: tid for tid, t in self.tasks.items() for s in t["sessions"]}

    def _save(self, *, durable: bool = True) -> None:
        """Write the state atomically. ``durable=False`` (a call's charge, on every call) skips
        the fsync: the file is still never half-written (temp file + rename), and the call's
        answer does not wait for the disk; a power cut may lose the last charges, not a cap."""
        self._dirty = False
        if self.path is None:
            return
        keep = sorted(self.days)[-KEEP_DAYS:]
        self.days = {d: self.days[d] for d in keep}
        while len(self.tasks) > MAX_TASKS:
            self.tasks.pop(next(iter(self.tasks)))
            self._reindex()
        data = {"version": 1, "day_cap": self.day_cap, "days": self.days, "tasks": self.tasks}
        try:
            if durable:
                atomic_write_json(self.path, data, mode=0o600)
            else:
                _replace_json(self.path, data)
        except OSError as e:
            log.warning("could not save the budgets to %s: %s", self.path, e)

    # -- queries -----------------------------------------------------------------------------
    def _task(self, session: str | None, root: str | None) -> str | None:
        tid = self._session_task.get(session) if session else None
        return tid if tid is not None or not root else self._session_task.get(root)

    def task_of(self, session: str | None, *, root: str | None = None) -> str | None:
        """The task of ``session`` or else of ``root`` (a sub-agent's session's root)."""
        with self._lock:
            return self._task(session, root)

    def check(self, session: str | None, *, root: str | None = None) -> Refusal | None:
        """The refusal for a call serving ``session`` (whose root session is ``root`` when it
        is a sub-agent's) now, or None if it may go."""
        with self._lock:
            used_today = self.days.get(self._today(), 0)
            tid = self._task(session, root)
            if tid is not None:
                t = self.tasks[tid]
                if t["cap"] is not None and t["used"] >= t["cap"]:
                    return Refusal("task", t["cap"], t["used"], tid)
            if self.day_cap is not None and used_today >= self.day_cap:
                return Refusal("day", self.day_cap, used_today)
            return None

    def state(self) -> dict[str, Any]:
        """For the control API: caps, use, and a ``paused`` line where a cap is reached."""
        with self._lock:
            today = self._today()
            used = self.days.get(today, 0)
            day: dict[str, Any] = {"date": today, "cap": self.day_cap, "used": used}
            day["paused"] = (
                Refusal("day", self.day_cap, used).message
                if self.day_cap is not None and used >= self.day_cap
                else None
            )
            tasks = {}
            for tid, t in self.tasks.items():
                paused = t["cap"] is not None and t["used"] >= t["cap"]
                tasks[tid] = {
                    "cap": t["cap"],
                    "used": t["used"],
                    "sessions": list(t["sessions"]),
                    "paused": Refusal("task", t["cap"], t["used"], tid).message if paused else None,
                }
            return {"day": day, "tasks": tasks}

    # -- changes -----------------------------------------------------------------------------
    def charge(
        self, session: str | None, tokens: int, *, root: str | None = None, save: bool = True
    ) -> None:
        """Count ``tokens`` (at once for :meth:`check`). ``save=False``: the file is written by
        the next :meth:`flush` (or any change), so a caller can answer first (the broker's
        write took ~0.2 ms quiet, ~0.7 ms under load, at the end of every streamed answer)."""
        if tokens <= 0:
            return
        with self._lock:
            today = self._today()
            self.days[today] = self.days.get(today, 0) + tokens
            tid = self._task(session, root)
            if tid is not None:
                self.tasks[tid]["used"] += tokens
            if save:
                self._save(durable=False)
            else:
                self._dirty = True

    def flush(self) -> None:
        """Write the charges made with ``save=False`` now (nothing when there are none)."""
        with self._lock:
            timer, self._timer = self._timer, None
            if self._dirty:
                self._save(durable=False)
        if timer is not None:
            timer.cancel()

    def flush_soon(self, delay: float) -> None:
        """Write the charges made with ``save=False`` within ``delay`` seconds, in one write for
        all the calls of that time (a write took ~0.2 ms quiet, up to ~1 ms while other processes
        write files: 40 % of the broker's time per small call). A process killed before it
        loses those charges from the file (not from a running broker's budget)."""
        with self._lock:
            if not self._dirty or self._timer is not None:
                return
            timer = self._timer = threading.Timer(delay, self._flush_due)
            timer.daemon = True
        timer.start()

    def _flush_due(self) -> None:
        with self._lock:
            self._timer = None
            if self._dirty:
                self._save(durable=False)

    def set_day_cap(self, cap: int | None) -> None:
        with self._lock:
            self.day_cap = cap
            self._save()

    def set_task(self, task: str, cap: int | None, sessions: list[str] | None = None) -> None:
        """Create or update a task: its cap (None: no cap) and more sessions it covers."""
        with self._lock:
            t = self.tasks.setdefault(task, {"cap": None, "used": 0, "sessions": []})
            t["cap"] = cap
            for s in sessions or []:
                if s not in t["sessions"]:
                    t["sessions"].append(s)
            self._reindex()
            self._save()

    def raise_task(self, task: str, add: int) -> int:
        """``Continue (+add)``: raise the task's cap (from what it used if it had none)."""
        with self._lock:
            t = self.tasks.get(task)
            if t is None:
                raise KeyError(task)
            base = t["cap"] if t["cap"] is not None else t["used"]
            t["cap"] = max(base, t["used"]) + add
            self._save()
            return int(t["cap"])

    def raise_day(self, add: int) -> int:
        with self._lock:
            used = self.days.get(self._today(), 0)
            base = self.day_cap if self.day_cap is not None else used
            self.day_cap = max(base, used) + add
            self._save()
            return self.day_cap
