"""Tests for the system clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from multiverify import SystemClock


class TestSystemClock:
    def test_now_is_aware_utc(self) -> None:
        """``now`` returns a timezone-aware datetime in UTC."""
        now = SystemClock().now()
        assert isinstance(now, datetime)
        assert now.tzinfo is UTC
        assert now.utcoffset() == timedelta(0)

    def test_now_is_the_current_time(self) -> None:
        """``now`` reads the wall clock rather than a fixed or cached time."""
        before = datetime.now(UTC)
        now = SystemClock().now()
        after = datetime.now(UTC)
        assert before <= now <= after

    @pytest.mark.parametrize("seconds", [0, 0.0, -1, -0.5, float("-inf")])
    async def test_sleep_zero_or_negative_returns(self, seconds: float) -> None:
        """Zero or negative waits return at once instead of raising."""
        assert await SystemClock().sleep(seconds) is None

    async def test_sleep_clamps_negative_waits(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The wait handed to ``asyncio.sleep`` is the seconds, clamped at zero."""
        calls: list[float] = []

        async def fake_sleep(delay: float) -> None:
            calls.append(delay)

        monkeypatch.setattr("multiverify._clock.asyncio.sleep", fake_sleep)
        clock = SystemClock()
        await clock.sleep(-3)
        await clock.sleep(2.5)
        assert calls == [0.0, 2.5]

    def test_repr(self) -> None:
        """The repr names the public class."""
        assert repr(SystemClock()) == "<multiverify.SystemClock>"
