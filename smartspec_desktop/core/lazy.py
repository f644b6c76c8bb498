"""A module imported at its first use (issue 11: each CLI run pays only for what it uses).

httpx (~25 ms of imports, its own CLI's click and pygments included) is needed by the commands
that talk HTTP, not by ``status`` or ``stop``. A module that uses it declares it so::

    if TYPE_CHECKING:
        import httpx
    else:
        httpx = lazy_module("httpx")

The type checker sees the real module; at run time the first attribute asked for
(``httpx.Client``, ``httpx.HTTPError`` in an ``except`` being reached) imports it.

Not ``importlib.util.LazyLoader``: there the first attribute access finishes loading the module
object in place, and two threads reaching it at once could see it half-loaded before Python
3.11.9 / 3.12.3 (CPython gh-114763); Debian 12's python3 is 3.11.2, and the window's background
jobs are such threads. Here the first use goes through ``importlib.import_module``, whose module
lock makes a second thread wait for the finished module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for the module ``name`` that imports it when first used."""
    return LazyModule(name)
