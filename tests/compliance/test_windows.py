"""Tests for calling windows, attempt schedules and calling zones, with property tests across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiverify.compliance import (
    AttemptSchedule,
    CallingWindow,
    NextDayAt,
    calling_zones,
)
from multiverify.exceptions import InvalidInputError

ZONES = [
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "America/St_Johns",
    "Europe/London",
    "Europe/Chisinau",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Africa/Casablanca",
    "Asia/Tehran",
]
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _transitions(zone: ZoneInfo) -> list[datetime]:
    """Instants around which the zone's offset changes, 2024-2027 (hourly scan)."""
    found = []
    at = datetime(2024, 1, 1, tzinfo=UTC)
    previous = at.astimezone(zone).utcoffset()
    while at < datetime(2028, 1, 1, tzinfo=UTC):
        at += timedelta(hours=1)
        offset = at.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(at)
        previous = offset
    return found


TRANSITIONS = {name: _transitions(ZoneInfo(name)) for name in ZONES}

clocks = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


@st.composite
def windows(draw: st.DrawFn) -> CallingWindow:
    start = draw(clocks)
    end = draw(st.one_of(st.none(), clocks.filter(lambda t: t > start)))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    return CallingWindow(start=start, end=end, weekdays=days)


@st.composite
def instants(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    name = draw(st.sampled_from(ZONES))
    near = TRANSITIONS[name]
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near))
        at = base + timedelta(minutes=draw(st.integers(-36 * 60, 36 * 60)))
    else:
        at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
            minutes=draw(st.integers(0, 4 * 365 * 24 * 60))
        )
    return ZoneInfo(name), at


class TestCallingWindow:
    def test_default_is_eight_to_nine(self) -> None:
        """By default calls are allowed 08:00-21:00 every day."""
        window = CallingWindow()
        assert window.describe() == "08:00-21:00 daily"
        assert window.allows_in(
            datetime(2026, 1, 1, 0, 0, tzinfo=UTC), SHANGHAI
        )  # 08:00
        assert not window.allows_in(
            datetime(2026, 1, 1, 13, 0, tzinfo=UTC), SHANGHAI
        )  # 21:00

    def test_next_opening_is_tomorrow_morning(self) -> None:
        """At 23:00 local the next opening is 08:00 the next day."""
        at = datetime(2026, 1, 1, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
        assert CallingWindow().next_opening(at, [SHANGHAI]) == datetime(
            2026, 1, 2, 0, 0, tzinfo=UTC
        )

    def test_blocked_dates_and_weekdays(self) -> None:
        """Blocked dates and disallowed weekdays are skipped."""
        window = CallingWindow(
            weekdays={0, 1, 2, 3, 4}, blocked_dates={date(2026, 1, 5)}
        )
        at = datetime(2026, 1, 2, 14, 0, tzinfo=UTC)  # Friday 22:00 local
        opening = window.next_opening(at, [SHANGHAI])
        assert opening is not None
        assert opening.astimezone(SHANGHAI).date() == date(2026, 1, 6)  # Tuesday
        assert "mon,tue,wed,thu,fri" in window.describe()
        assert "1 blocked dates" in window.describe()

    def test_spring_forward_gap(self) -> None:
        """A start inside the DST gap opens at the first instant after the gap."""
        zone = ZoneInfo("America/New_York")
        window = CallingWindow(start=time(2, 30), end=time(5, 0))
        at = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST, the day clocks jump
        assert window.next_opening(at, [zone]) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    def test_every_zone_must_allow(self) -> None:
        """With several zones a call must fit all of them."""
        zones = [ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles")]
        at = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)  # 08:00 NY, 05:00 LA
        opening = CallingWindow().next_opening(at, zones)
        assert opening == datetime(2026, 1, 5, 16, 0, tzinfo=UTC)  # 08:00 LA

    def test_never_opens(self) -> None:
        """A window whose days are all blocked for the horizon never opens."""
        blocked = {date(2026, 1, 1) + timedelta(days=n) for n in range(420)}
        window = CallingWindow(blocked_dates=blocked)
        assert window.next_opening(datetime(2026, 1, 1, tzinfo=UTC), [SHANGHAI]) is None

    @pytest.mark.parametrize(
        ("settings", "field"),
        [
            ({"start": time(21), "end": time(8)}, "calling_window.end"),
            ({"weekdays": set()}, "calling_window.weekdays"),
        ],
    )
    def test_invalid(self, settings: dict[str, object], field: str) -> None:
        """An end before the start, or no weekday, is refused."""
        with pytest.raises(InvalidInputError) as caught:
            CallingWindow(**settings)  # type: ignore[arg-type]
        assert caught.value.field == field

    @settings(max_examples=300, deadline=None)
    @given(windows(), instants())
    def test_next_opening_is_the_earliest_allowed_instant(
        self, window: CallingWindow, where: tuple[ZoneInfo, datetime]
    ) -> None:
        """The opening is allowed, not before ``at``, and nothing allowed comes between."""
        zone, at = where
        opening = window.next_opening_in(at, zone)
        assert opening is not None
        assert opening >= at
        assert window.allows_in(opening, zone)
        if opening > at:
            assert not window.allows_in(opening - timedelta(seconds=1), zone)
            probe = at
            while probe < opening:
                assert not window.allows_in(probe, zone)
                probe += timedelta(minutes=10)

    @settings(max_examples=200, deadline=None)
    @given(instants(), st.integers(8, 10), st.integers(18, 21))
    def test_local_hours_hold_across_dst(
        self, where: tuple[ZoneInfo, datetime], start: int, end: int
    ) -> None:
        """Whatever the offset, an allowed call falls between start and end on the wall clock."""
        zone, at = where
        window = CallingWindow(start=time(start), end=time(end))
        opening = window.next_opening_in(at, zone)
        assert opening is not None
        wall = opening.astimezone(zone).time()
        assert time(start) <= wall < time(end)


class TestAttemptSchedule:
    def test_default_schedule(self) -> None:
        """+30 min, +2 h, then the next day at 10:00; four calls in all."""
        schedule = AttemptSchedule()
        window = CallingWindow()
        first = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)  # 09:00 local
        placed = [first]
        due = []
        while (
            next_at := schedule.next_attempt(placed, window=window, zones=[SHANGHAI])
        ) is not None:
            due.append(next_at.astimezone(SHANGHAI).strftime("%d %H:%M"))
            placed.append(next_at)
        assert due == ["01 09:30", "01 11:30", "02 10:00"]

    def test_max_per_day(self) -> None:
        """A day's quota moves the next call to the next day's window."""
        schedule = AttemptSchedule(retries=(60.0,), max_attempts=5, max_per_day=2)
        first = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
        placed = [first, first + timedelta(minutes=1)]
        due = schedule.next_attempt(placed, window=CallingWindow(), zones=[SHANGHAI])
        assert due == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)

    def test_no_retries(self) -> None:
        """Nothing placed, or no retries, means no next attempt."""
        assert (
            AttemptSchedule().next_attempt([], window=CallingWindow(), zones=[SHANGHAI])
            is None
        )
        assert (
            AttemptSchedule(retries=()).next_attempt(
                [datetime(2026, 1, 1, tzinfo=UTC)],
                window=CallingWindow(),
                zones=[SHANGHAI],
            )
            is None
        )

    def test_limits_must_be_positive(self) -> None:
        """A limit below one is refused."""
        with pytest.raises(InvalidInputError):
            AttemptSchedule(max_per_day=0)

    @settings(max_examples=150, deadline=None)
    @given(
        instants(),
        st.lists(
            st.sampled_from([600.0, 1800.0, 7200.0, NextDayAt(at=time(10))]),
            min_size=1,
            max_size=3,
        ),
    )
    def test_attempts_stay_in_the_window_and_the_quota(
        self, where: tuple[ZoneInfo, datetime], retries: list[float | NextDayAt]
    ) -> None:
        """Every scheduled call is inside the window, at most max_per_day a local day."""
        zone, at = where
        window = CallingWindow()
        schedule = AttemptSchedule(retries=retries, max_attempts=6, max_per_day=2)
        first = window.next_opening(at, [zone])
        assert first is not None
        placed = [first]
        while (
            due := schedule.next_attempt(placed, window=window, zones=[zone])
        ) is not None:
            assert due > placed[-1]
            assert window.allows_in(due, zone)
            placed.append(due)
        assert len(placed) == 6
        per_day: dict[date, int] = {}
        for when in placed:
            day = when.astimezone(zone).date()
            per_day[day] = per_day.get(day, 0) + 1
        assert max(per_day.values()) <= 2


class TestCallingZones:
    def test_the_applicants_zone_wins(self) -> None:
        """Given a zone, it is the only one."""
        assert calling_zones("Asia/Shanghai", "+14155550123") == (SHANGHAI,)

    def test_from_the_phone_number(self) -> None:
        """Without a zone, the number's region gives its zones (all of them)."""
        assert calling_zones(None, "+8613800138000") == (SHANGHAI,)
        assert len(calling_zones(None, "+14155550123")) >= 1

    @pytest.mark.parametrize(
        ("zone", "phone", "field"),
        [
            ("Mars/Olympus", "+8613800138000", "timezone"),
            ("America", "+8613800138000", "timezone"),  # a folder of the zone data
            ("A" * 300, "+8613800138000", "timezone"),  # too long for a file name
            (None, "not-a-number", "phone"),
            (None, "+80012345678", "phone"),
        ],
    )
    def test_bad_input(self, zone: str | None, phone: str, field: str) -> None:
        """An unknown zone, a bad number or a region without zones is refused."""
        with pytest.raises(InvalidInputError) as caught:
            calling_zones(zone, phone)
        assert caught.value.field == field
