"""Session leases: one replica at a time works on a session's timers and orphaned effects.

A lease is an expiring value in the store's shared state, taken only if
absent: whoever holds ``lease:session:{id}`` fires that session's timers and
resumes its effects; a holder that dies lets the value expire and the work
goes back to whoever looks next. Time comes from the caller's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .exceptions import StoreUnavailableError

if TYPE_CHECKING:
    from ._clock import Clock
    from .stores import SharedState

__all__ = ["SessionLeases", "new_owner"]


def new_owner() -> str:
    """A fresh owner id for one replica's leases."""
    return f"owner-{uuid.uuid4().hex[:16]}"


class SessionLeases:
    """Takes, renews and gives back session leases in a shared state."""

    def __init__(
        self, shared: SharedState, clock: Clock, *, owner: str, ttl: float
    ) -> None:
        self.owner = owner
        self.ttl = ttl
        self._shared = shared
        self._clock = clock
        # Holders in this process, per session: the lease is re-entrant
        # within its owner (a worker holding it fires timers that take it too).
        self._held: dict[str, int] = {}
        self._renewers: dict[str, asyncio.Task[None]] = {}
        self._taking: dict[str, asyncio.Lock] = {}

    @staticmethod
    def key(session_id: str) -> str:
        """The shared-state key of a session's lease."""
        return f"lease:session:{session_id}"

    async def acquire(self, session_id: str) -> bool:
        """Take the session's lease for ``ttl`` seconds; ``False`` if someone holds it."""
        return await self._shared.put_value(
            self.key(session_id),
            self.owner,
            at=self._clock.now(),
            ttl=self.ttl,
            only_if_absent=True,
        )

    async def renew(self, session_id: str) -> bool:
        """Push the lease's expiry back, if this owner still holds it.

        One compare-and-set: a lease that lapsed and was taken by another
        replica stays theirs.
        """
        return await self._shared.replace_value(
            self.key(session_id),
            self.owner,
            expected=self.owner,
            at=self._clock.now(),
            ttl=self.ttl,
        )

    async def release(self, session_id: str) -> None:
        """Give the lease back, if this owner holds it."""
        await self._shared.delete_value(self.key(session_id), value=self.owner)

    @contextlib.asynccontextmanager
    async def holding(self, session_id: str) -> AsyncIterator[bool]:
        """Hold the lease (renewed every third of ``ttl``) inside the block.

        Yields whether it was taken; the block should do nothing if not.
        Holders in the same process share one lease, given back by the last.
        """
        taking = self._taking.setdefault(session_id, asyncio.Lock())
        async with taking:
            taken = session_id in self._held or await self.acquire(session_id)
            if taken and session_id not in self._held:
                self._held[session_id] = 0
                self._renewers[session_id] = asyncio.ensure_future(
                    self._keep(session_id)
                )
            if taken:
                self._held[session_id] += 1
        if not taken:
            self._forget(session_id, taking)
            yield False
            return
        try:
            yield True
        finally:
            self._held[session_id] -= 1
            if not self._held[session_id]:
                del self._held[session_id]
                self._forget(session_id, taking)
                self._renewers.pop(session_id).cancel()
                # Given back even when the holder was cancelled (a clean
                # shutdown), or the session would wait for the lease to
                # expire; a store that cannot be reached lets it expire.
                with contextlib.suppress(StoreUnavailableError):
                    await self.release(session_id)

    def _forget(self, session_id: str, taking: asyncio.Lock) -> None:
        if (
            session_id not in self._held
            and not taking.locked()
            and self._taking.get(session_id) is taking
        ):
            del self._taking[session_id]

    async def _keep(self, session_id: str) -> None:
        while True:
            await self._clock.sleep(self.ttl / 3)
            try:
                if not await self.renew(session_id):
                    return
            except StoreUnavailableError:
                continue  # the next renewal may get through before expiry
