"""Tests for the Sweeper: the periodic sweep of lapsed shared state."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from multiverify._sweep import Sweeper
from stores.sweeps import Sweeps

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
EVERY = timedelta(seconds=600)


async def turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class TestSweeper:
    async def test_sweeps_at_most_once_an_interval(self) -> None:
        """The first call sweeps; calls within the interval do not; the next interval's does."""
        store = Sweeps()
        sweeper = Sweeper(store, EVERY, who="test")
        for seconds in (0, 1, 599, 600, 601):
            sweeper.due(T0 + timedelta(seconds=seconds))
            await turns()
        assert [at for at, _ in store.sweeps] == [T0, T0 + EVERY]

    async def test_a_sweep_still_running_is_not_started_again(self) -> None:
        """A backlog that outlasts the interval is left to finish; no second sweep runs beside it."""
        store = Sweeps(hang=True)
        sweeper = Sweeper(store, EVERY, who="test")
        sweeper.due(T0)
        await turns()
        first = store.hung
        sweeper.due(T0 + EVERY)
        await turns()
        assert store.hung is first
        assert first is not None
        first.set_result(None)
        await turns()
        assert store.sweeps == [(T0, 0)]

    async def test_stop_cancels_a_sweep_under_way(self) -> None:
        """Stopping cancels a hanging sweep and returns."""
        store = Sweeps(hang=True)
        sweeper = Sweeper(store, EVERY, who="test")
        sweeper.due(T0)
        await turns()
        await sweeper.stop()
        assert store.hung is not None
        assert store.hung.cancelled()
        await sweeper.stop()  # nothing left to stop

    async def test_a_failure_is_logged_and_the_next_interval_tries_again(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store that fails is logged with who swept; the next interval's sweep runs."""
        store = Sweeps(fail=1)
        sweeper = Sweeper(store, EVERY, who="worker w1")
        sweeper.due(T0)
        await turns()
        sweeper.due(T0 + EVERY)
        await turns()
        assert "worker w1: could not sweep lapsed shared state" in caplog.text
        assert store.sweeps == [(T0 + EVERY, 0)]
