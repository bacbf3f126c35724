"""Typed construction of hyperparameter / problem-parameter dataclasses from plain data.

Suite files, the CLI and the Python API hand over dicts; ``build`` turns one into the frozen
dataclass of a solver (``HP``) or problem (``Params``), checking names and types against the
dataclass fields before calling it (whose ``__post_init__`` checks ranges). Every failure is an
``InputError`` naming the field and the valid choices.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from bench.errors import InputError
from bench.registry import suggest

_SCALARS = (bool, int, float, str)


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def field_type(cls, name: str):
    hints = typing.get_type_hints(cls)
    return hints[name]


def defaults_of(cls) -> dict[str, Any]:
    """Field -> default value (every field of an HP/Params dataclass must have one)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = None
    return out


def _check_type(value: Any, tp, where: str) -> Any:
    """Return value coerced to tp (int -> float allowed), or raise InputError."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise InputError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except InputError:
                pass
        raise InputError(f"{where}: expected {tp}, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if item is Any:
            return tuple(value)
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def build(cls, values: dict[str, Any] | None, where: str):
    """Instantiate dataclass ``cls`` from ``values`` (missing fields take their defaults)."""
    values = dict(values or {})
    known = fields_of(cls)
    for key in values:
        if key not in known:
            raise InputError(f"{where}.{key}: unknown parameter{suggest(key, known)}; "
                             f"valid: {', '.join(known)}")
    checked = {k: _check_type(v, field_type(cls, k), f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**checked)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: {exc}") from None


def as_dict(obj) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def describe(cls) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, comment) for listing; comment from the class docstring's field lines."""
    hints = typing.get_type_hints(cls)
    defaults = defaults_of(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        tname = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        rows.append((f.name, tname, defaults[f.name], f.metadata.get("help", "")))
    return rows
