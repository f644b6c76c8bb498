"""One validating converter from JSON-decoded data to the state's dataclasses.

``from_json(cls, data)`` checks every field against its annotation (str, int, float, bool,
``X | None``, ``Literal``, a str-valued ``Enum``, ``list[...]`` and nested dataclasses), ignores
unknown keys (a newer version's) and raises :class:`ValueError` naming the first bad field.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{f.name} is missing")
            continue
        try:
            values[f.name] = _convert(hints[f.name], data[f.name])
        except ValueError as e:
            raise ValueError(f"{f.name}: {e}") from None
    return cls(**values)


def _convert(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arm in get_args(tp):
            try:
                return _convert(arm, value)
            except ValueError:
                continue
        raise ValueError(f"{value!r} is not a {tp}")
    if origin is typing.Literal:
        if value in get_args(tp):
            return value
        raise ValueError(f"{value!r} is not one of {get_args(tp)}")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{value!r} is not a list")
        (item,) = get_args(tp) or (Any,)
        return [_convert(item, v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not an object")
        return dict(value)
    if tp is type(None):
        if value is None:
            return None
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{value!r} is not one of {[m.value for m in tp]}") from None
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return from_json(tp, value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a {getattr(tp, '__name__', tp)}")
