"""Canonical JSON written straight from attrs values, without building dicts.

The audit trail hashes the canonical JSON (compact, keys sorted, ``str`` for
anything JSON has no form for) of what cattrs makes of a value. Building
that data and sorting it again on every event is the dearest part of
recording a transition, so [`writer`][multiverify._canonical.writer]
compiles, per attrs class, a function that writes the same text directly:
the fields in sorted order, each by its declared type. Whatever it does not
know how to write exactly (mappings, subclasses, types with cattrs hooks of
their own) it hands to the reference path, cattrs then the encoder, so the
text is always the reference's, byte for byte.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from ._serde import converter

__all__ = ["canonical_json", "plain", "scalar", "writer"]

_quote = json.encoder.encode_basestring_ascii
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_REFERENCE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _encode(value: Any) -> str:
    # JSONEncoder.encode builds a C encoder per call behind two Python
    # frames and a closure; this builds it directly (a fresh one each time:
    # its circular-reference markers are per call).
    if _make_encoder is None or isinstance(
        value, str
    ):  # pragma: no cover - CPython has it
        return _REFERENCE.encode(value)
    return "".join(
        _make_encoder({}, str, _quote, None, ":", ",", True, False, True)(value, 0)
    )


Writer = Callable[[Any], str]


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys, ``str`` for other values: the reference form."""
    # What json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    # returns.
    return _encode(value)


def _float(value: float) -> str:
    # json's own spelling: repr, except for the values JSON has no number for.
    if math.isfinite(value):
        return float.__repr__(value)
    if value != value:  # noqa: PLR0124 - nan
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _plain_or(other: Writer) -> Writer:
    """A writer of plain values (as the reference spells them) that hands the rest to ``other``."""

    def write(value: Any) -> str:
        kind = type(value)
        if kind is str:
            return _quote(value)
        if value is None:
            return "null"
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return int.__repr__(value)
        if kind is float:
            return _float(value)
        return other(value)

    return write


#: A plain value as the reference writes it, whatever its declared type.
scalar = _plain_or(lambda value: _encode(converter.unstructure(value)))
#: A plain value as the reference writes it within raw data (no cattrs).
plain = _plain_or(_encode)


_WRITERS: dict[tuple[type, str | None, tuple[tuple[str, str], ...]], Writer] = {}


def writer(
    cls: type, *, tag: str | None = None, replace: Mapping[str, str] | None = None
) -> Writer:
    """A function writing an instance of exactly ``cls`` as canonical JSON.

    Args:
        cls: an attrs class.
        tag: a ``type`` key with this value, as a tagged union adds.
        replace: fields written as this fixed JSON text instead of their value.

    The text equals ``canonical_json(converter.unstructure(value, cls))``
    (with the tag and replacements applied to that data) for instances of
    ``cls`` itself; callers dispatch on the exact type.
    """
    fixed = tuple(sorted((replace or {}).items()))
    key = (cls, tag, fixed)
    found = _WRITERS.get(key)
    if found is not None:
        return found
    attrs.resolve_types(cls)
    namespace: dict[str, Any] = {
        "_q": _quote,
        "_s": scalar,
        "_u": converter.unstructure,
        "_e": _encode,
        "_dt": datetime,
        "_empty": (dict, MappingProxyType),
    }
    nested: dict[str, type] = {}
    entries: list[tuple[str, str]] = []  # key, f-string part
    lines = ["def write(o):"]
    if tag is not None:
        entries.append(("type", _braces(_quote(tag))))
    replaced = dict(fixed)
    for field in attrs.fields(cls):
        if field.name in replaced:
            entries.append((field.name, _braces(replaced[field.name])))
            continue
        local = f"f{len(lines)}"
        type_name = f"t{len(namespace)}"
        namespace[type_name] = field.type
        expression = _expression(local, field.type, type_name, namespace, nested)
        lines.append(f"    {local} = o.{field.name}")
        lines.append(f"    {local} = {expression}")
        entries.append((field.name, "{" + local + "}"))
    entries.sort()
    literal = ",".join(f"{_braces(_quote(name))}:{text}" for name, text in entries)
    lines.append(f"    return f'{{{{{literal}}}}}'")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<canonical writer {cls.__qualname__}>", "exec"), namespace)  # noqa: S102 - generated from field names
    write: Writer = namespace["write"]
    _WRITERS[key] = write
    for name, inner in nested.items():  # after registering: classes may nest themselves
        namespace[name] = writer(inner)
    return write


def _braces(text: str) -> str:
    """Fixed text as an f-string part."""
    if "'" in text or "\\" in text:
        raise ValueError(f"cannot place {text!r} in a writer")  # pragma: no cover
    return text.replace("{", "{{").replace("}", "}}")


def _optional(declared: Any) -> Any | None:
    """``X`` of ``X | None``, else ``None``."""
    if typing.get_origin(declared) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(declared) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(declared)) == 2:  # noqa: PLR2004 - X and None
            return args[0]
    return None


def _expression(
    value: str,
    declared: Any,
    type_name: str,
    namespace: dict[str, Any],
    nested: dict[str, type],
) -> str:
    """Python source writing the name ``value`` (of type ``declared``) as canonical JSON."""
    inner = _optional(declared)
    if inner is not None:
        text = _expression(value, inner, type_name, namespace, nested)
        return f"'null' if {value} is None else ({text})"
    fallback = f"_e(_u({value}, {type_name}))"
    if declared is str:
        return f"_q({value}) if type({value}) is str else _s({value})"
    if declared is int or declared is float or declared is bool:
        return f"_s({value})"
    if isinstance(declared, type) and issubclass(declared, enum.Enum):
        # cattrs writes the member's value.
        return f"_s({value}._value_) if type({value}) is {type_name} else {fallback}"
    if declared is datetime:
        # An isoformat() holds nothing JSON escapes.
        return (
            f"'\"' + {value}.isoformat() + '\"' if type({value}) is _dt else {fallback}"
        )
    if isinstance(declared, type) and attrs.has(declared):
        name = f"w{len(namespace)}"
        namespace[name] = None  # filled in once this writer is registered
        nested[name] = declared
        return f"{name}({value}) if type({value}) is {type_name} else {fallback}"
    origin = typing.get_origin(declared)
    if origin is tuple:
        args = typing.get_args(declared)
        if len(args) == 2 and args[1] is Ellipsis:  # noqa: PLR2004 - tuple[X, ...]
            item_type = f"t{len(namespace)}"
            namespace[item_type] = args[0]
            item = _expression("x", args[0], item_type, namespace, nested)
            return (
                f"('[' + ','.join([{item} for x in {value}]) + ']') "
                f"if type({value}) is tuple else {fallback}"
            )
    if origin is Mapping or origin is dict:
        # Empty, as channel states and facts mostly are: what cattrs makes of it.
        return f"'{{}}' if type({value}) in _empty and not {value} else {fallback}"
    return fallback
