"""A MemoryStore that records its sweeps of lapsed shared state, and can fail or hang them."""

from __future__ import annotations

import asyncio
from datetime import datetime

from multiverify.exceptions import StoreUnavailableError
from multiverify.stores import MemoryStore


class Sweeps(MemoryStore):
    """Records each sweep (when, how many went); may fail the first ones, or hang."""

    def __init__(self, *, fail: int = 0, hang: bool = False) -> None:
        super().__init__()
        self.sweeps: list[tuple[datetime, int]] = []
        self.fail = fail
        self.hang = hang
        self.hung: asyncio.Future[None] | None = None

    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailableError(message="down", store="memory")
        if self.hang:
            self.hung = asyncio.get_running_loop().create_future()
            await self.hung
        removed = await super().sweep_expired(at=at, batch=batch)
        self.sweeps.append((at, removed))
        return removed
