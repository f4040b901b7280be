"""JSON-safe (un)structuring of sessions, inputs, effects and verdicts with cattrs."""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.strategies import configure_tagged_union

from ._results import Verdict
from ._session import Effect, Input, RecordVerdict, Session, StepRecord

__all__ = [
    "converter",
    "dumps",
    "loads",
    "structure",
    "structure_effect",
    "structure_input",
    "unstructure",
]

T = TypeVar("T")


def _make() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(datetime, datetime.isoformat)
    conv.register_structure_hook(
        datetime, lambda value, _: datetime.fromisoformat(value)
    )
    conv.register_unstructure_hook(date, date.isoformat)
    conv.register_structure_hook(date, lambda value, _: date.fromisoformat(value))
    conv.register_unstructure_hook(Decimal, str)
    conv.register_structure_hook(Decimal, lambda value, _: Decimal(value))
    configure_tagged_union(Input, conv, tag_name="type")
    configure_tagged_union(Effect, conv, tag_name="type")
    return conv


converter = _make()


def unstructure(value: object) -> Any:
    """A value as JSON-compatible data; inputs and effects carry a ``type`` tag."""
    if isinstance(value, Input):
        return converter.unstructure(value, unstructure_as=Input)
    if isinstance(value, Effect):
        return converter.unstructure(value, unstructure_as=Effect)
    return converter.unstructure(value)


def structure(data: Any, kind: type[T]) -> T:
    """Rebuild a value of ``kind`` from :func:`unstructure` output."""
    return converter.structure(data, kind)


def structure_input(data: Any) -> Input:
    """Rebuild a core input from its tagged data."""
    result: Input = converter.structure(data, Input)  # type: ignore[arg-type]
    return result


def structure_effect(data: Any) -> Effect:
    """Rebuild a core effect from its tagged data."""
    result: Effect = converter.structure(data, Effect)  # type: ignore[arg-type]
    return result


def dumps(value: object) -> str:
    """Compact, key-sorted JSON of a value."""
    return json.dumps(unstructure(value), separators=(",", ":"), sort_keys=True)


def loads(text: str | bytes, kind: type[T]) -> T:
    """Rebuild a value of ``kind`` from :func:`dumps` output."""
    return structure(json.loads(text), kind)


_ENCODE = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode

# The JSON of the immutable parts of sessions (applicant, step records,
# verdict...), by object identity: a transition replaces only the records it
# changes and carries the others over as they are, so a store saving a
# session again serialises only what changed. Entries hold their objects
# weakly (a purged applicant is not kept alive here) and leave with them, so
# an id is never reused while it is cached.
_PIECES: dict[int, tuple[weakref.ref[Any], str]] = {}
_PIECES_MAX = 8192


def _forget(key: int, _gone: weakref.ref[Any]) -> None:
    _PIECES.pop(key, None)


def _piece(value: object, hook: Callable[[Any], Any]) -> str:
    key = id(value)
    found = _PIECES.get(key)
    if found is not None and found[0]() is value:
        return found[1]
    text = _ENCODE(hook(value))
    if len(_PIECES) < _PIECES_MAX:
        _PIECES[key] = (weakref.ref(value, functools.partial(_forget, key)), text)
    return text


def _session_fields() -> list[tuple[str, str, Callable[[Any], Any], bool]]:
    """Per field of ``Session``, in key order: name, JSON key, hook, cached."""
    attrs.resolve_types(Session)
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(Session)
    return [
        (
            field.name,
            f"{_ENCODE(field.name)}:",
            converter.get_unstructure_hook(field.type),
            field.name in {"applicant", "policy", "verdict"},
        )
        for field in sorted(fields, key=lambda field: field.name)
    ]


_SESSION_FIELDS = _session_fields()
_STEP_RECORD = converter.get_unstructure_hook(StepRecord)


def session_to_json(session: Session) -> str:
    """A session as JSON text: exactly :func:`dumps`, with unchanged parts reused.

    Sessions are immutable values, so their parts are cached by identity
    (a step record whose ``channel_state`` dict was changed in place would
    be written as it was).
    """
    if type(session) is not Session:
        return dumps(session)
    parts = []
    for name, key, hook, cached in _SESSION_FIELDS:
        value = getattr(session, name)
        if name == "steps":
            text = "[" + ",".join(_piece(r, _STEP_RECORD) for r in value) + "]"
        elif cached and value is not None:
            text = _piece(value, hook)
        elif type(value) is int:
            text = int.__repr__(value)  # what json writes, without an encoder pass
        else:
            text = _ENCODE(hook(value))
        parts.append(key + text)
    return "{" + ",".join(parts) + "}"


_VERDICT = converter.get_unstructure_hook(Verdict)


def effect_to_json(effect: Effect) -> str:
    """An effect as JSON text: exactly :func:`dumps`, a verdict's JSON reused.

    A decision's ``RecordVerdict`` carries the verdict the session just
    saved with it holds, so its text is the one the session's was.
    """
    if type(effect) is RecordVerdict:
        return (
            f'{{"effect_id":{_ENCODE(effect.effect_id)},"type":"RecordVerdict",'
            f'"verdict":{_piece(effect.verdict, _VERDICT)}}}'
        )
    return dumps(effect)


def session_from_json(text: str | bytes) -> Session:
    """A session from JSON text."""
    return loads(text, Session)
