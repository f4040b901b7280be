"""Time as a dependency: library code never reads the wall clock directly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """**Protocol**: tells the time and waits.

    The runtime reads time only through a clock, so tests pass
    [`FakeClock`][multiverify.testing.FakeClock] and never sleep.
    """

    def now(self) -> datetime:
        """Return the current time, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float, /) -> None:
        """Wait ``seconds`` (zero or negative returns at once)."""
        ...


class SystemClock:
    """The real clock: UTC wall time and `asyncio.sleep`."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float, /) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return "<multiverify.SystemClock>"
