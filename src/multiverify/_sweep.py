"""The periodic sweep of a store's lapsed shared state, beside a runtime's other work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from ._duration import parse_duration
from .exceptions import ConfigurationError
from .stores import SharedState

log = logging.getLogger("multiverify")

__all__ = ["Sweeper"]


class Sweeper:
    """Runs ``sweep_expired`` at most once an interval, as a task of its own.

    A sweep of a large backlog takes a while, so it runs beside the work
    that asks for it; one that is still running when the next is due is
    left to finish. A sweep that fails is logged and tried at the next
    interval.

    Args:
        shared: the store to sweep.
        every: the interval (the runtime's ``sweep_interval``), in seconds
            or as a duration, by the clock of whoever calls `due`.
        who: how the logs name the runtime that sweeps.

    Raises:
        ConfigurationError: the interval is not positive.
    """

    def __init__(
        self, shared: SharedState, every: float | timedelta, *, who: str
    ) -> None:
        seconds = parse_duration(every)
        if seconds <= 0:
            raise ConfigurationError(
                message=f"sweep_interval must be positive: {every!r}"
            )
        self._shared = shared
        self._every = timedelta(seconds=seconds)
        self._who = who
        self._next: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def due(self, now: datetime) -> None:
        """Start a sweep if none has run for an interval (the first call always does)."""
        if self._next is not None and now < self._next:
            return
        self._next = now + self._every
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._sweep(now))

    async def stop(self) -> None:
        """Cancel a sweep under way; the batches it deleted stay deleted."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep(self, at: datetime) -> None:
        try:
            removed = await self._shared.sweep_expired(at=at)
        except Exception:
            log.warning(
                "%s: could not sweep lapsed shared state; trying again in %gs",
                self._who,
                self._every.total_seconds(),
                exc_info=True,
            )
            return
        if removed:
            log.info("%s: swept %d lapsed shared-state entries", self._who, removed)
