"""A view of a store where something else happens just before a chosen call: a race, without sleeps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class Interleaved:
    """A store whose next call to one of ``methods`` first awaits ``before`` (once)."""

    def __init__(self, store: Any, *methods: str) -> None:
        self._store = store
        self._methods = methods
        self.before: Callable[[], Awaitable[object]] | None = None

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name not in self._methods:
            return found

        async def call(*args: Any, **kwargs: Any) -> Any:
            step, self.before = self.before, None
            if step is not None:
                await step()
            return await found(*args, **kwargs)

        return call
