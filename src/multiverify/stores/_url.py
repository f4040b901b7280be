"""A store from a URL: how the command line and app configuration name one."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import ConfigurationError
from ._memory import MemoryStore
from ._postgres import PostgresStore
from ._redis import RedisStore
from ._sqlite import SqliteStore

if TYPE_CHECKING:
    from .._clock import Clock
    from ._base import SessionStore

__all__ = ["store_from_url"]


def _take(url: str, name: str) -> tuple[str, str | None]:
    """``url`` without its query parameter ``name``, and that parameter's value."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == name), None)
    rest = urlencode([(k, v) for k, v in query if k != name])
    return urlunsplit(parts._replace(query=rest)), value


_ON = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def _switch(value: str | None, name: str, url: str) -> bool:
    """A yes/no query parameter (on when absent)."""
    if value is None:
        return True
    try:
        return _ON[value.lower()]
    except KeyError:
        raise ConfigurationError(
            message=f"{name} must be on or off, not {value!r}, in {url!r}"
        ) from None


def store_from_url(
    url: str,
    *,
    clock: Clock | None = None,
    schema: str = "multiverify",
    prefix: str = "multiverify",
) -> SessionStore:
    """Build the store a URL names (not yet opened).

    - ``sqlite:///var/lib/app/verify.db`` (an absolute path) or
      ``sqlite:verify.db`` (relative to the working directory);
    - ``postgresql://user:pass@host:5432/db?schema=multiverify`` (also
      ``postgres://``; ``schema`` picks the schema, ``notifications=off``
      sends and hears no change notifications, as behind a pooler in
      transaction mode; the rest goes to asyncpg);
    - ``redis://host:6379/0?prefix=multiverify`` (also ``rediss://`` and
      ``unix://``; ``prefix`` picks the key prefix, ``notifications=off``
      publishes and hears no change notifications);
    - ``memory:`` (this process only: tests and one-off scripts).

    ``schema`` and ``prefix`` are the defaults for URLs that name none.

    Raises:
        ConfigurationError: an unknown scheme, or a URL without what its
            store needs.
    """
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if not colon:
        raise ConfigurationError(message=f"not a store URL: {url!r}")
    if scheme == "sqlite":
        path = rest.removeprefix("//")
        if not path:
            raise ConfigurationError(message=f"a sqlite URL needs a path: {url!r}")
        return SqliteStore(path, clock=clock)
    if scheme in {"postgresql", "postgres"}:
        dsn, named = _take(url, "schema")
        dsn, notify = _take(dsn, "notifications")
        return PostgresStore(
            dsn,
            schema=named or schema,
            clock=clock,
            notifications=_switch(notify, "notifications", url),
        )
    if scheme in {"redis", "rediss", "unix"}:
        plain, named = _take(url, "prefix")
        plain, notify = _take(plain, "notifications")
        return RedisStore(
            plain,
            prefix=named or prefix,
            clock=clock,
            notifications=_switch(notify, "notifications", url),
        )
    if scheme == "memory":
        return MemoryStore()
    raise ConfigurationError(
        message=f"unknown store URL scheme {scheme!r} in {url!r}: use sqlite:, "
        "postgresql:, redis: or memory:"
    )
