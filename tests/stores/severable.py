"""A replica's view of a shared store that a test can cut, as if the replica died."""

from __future__ import annotations

from typing import Any

from multiverify.exceptions import StoreUnavailableError
from multiverify.stores import SessionStore


class Severable:
    """A replica's connections to the shared store, which can be cut: the replica died."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not self.dead:
            return found

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailableError(message="the replica is gone", store="test")

        return down
