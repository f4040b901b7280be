"""JSON-safe (un)structuring of sessions, inputs, effects and verdicts with cattrs."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import cattrs
from cattrs.strategies import configure_tagged_union

from ._session import Effect, Input, Session

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


def session_to_json(session: Session) -> str:
    """A session as JSON text."""
    return dumps(session)


def session_from_json(text: str | bytes) -> Session:
    """A session from JSON text."""
    return loads(text, Session)
