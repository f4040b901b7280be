"""Calling windows and attempt schedules: when the applicant may be called, in their own local time.

Everything here is computed on instants (aware UTC datetimes) and the IANA
zone database, so an allowed hour means the same wall-clock hour on either
side of a daylight-saving change. A wall-clock time that does not exist on a
given day (it falls in a spring-forward gap) begins at the first instant after
the gap; one that happens twice (an autumn fold) is allowed on both passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import attrs
import phonenumbers
from phonenumbers import timezone as phone_timezones

from .._applicant import time_zone
from .._duration import format_duration, parse_duration
from ..exceptions import InvalidInputError

__all__ = [
    "AttemptSchedule",
    "CallingWindow",
    "NextDayAt",
    "calling_zones",
]

_DAY = timedelta(days=1)
_TIME = re.compile(r"^(\d{2}):(\d{2})$")
_NEXT_DAY = re.compile(r"^next[ _-]day(?: at)? (\d{2}:\d{2})$")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: How far ahead an opening is looked for before giving up (blocked dates).
HORIZON_DAYS = 400


def parse_clock(value: str, *, allow_end_of_day: bool = False) -> time | None:
    """``"08:00"`` as a time; ``"24:00"`` (end of day) as ``None`` when allowed.

    Raises:
        ValueError: not ``HH:MM``, or out of range.
    """
    match = _TIME.match(value.strip())
    if match is None:
        raise ValueError(f"expected a time such as '08:00', got {value!r}")
    hours, minutes = int(match[1]), int(match[2])
    if allow_end_of_day and (hours, minutes) == (24, 0):
        return None
    if hours > 23 or minutes > 59:  # noqa: PLR2004 - clock ranges
        raise ValueError(f"{value!r} is not a time of day")
    return time(hours, minutes)


def _weekdays(values: Iterable[int]) -> frozenset[int]:
    return frozenset(values)


def _dates(values: Iterable[date]) -> frozenset[date]:
    return frozenset(values)


def _offset(at: datetime, zone: ZoneInfo) -> timedelta:
    offset = at.astimezone(zone).utcoffset()
    assert offset is not None  # noqa: S101 - a ZoneInfo always has one
    return offset


def _transition(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in ``(low, high]`` with ``high``'s UTC offset (to the microsecond)."""
    target = _offset(high, zone)
    step = timedelta(microseconds=1)
    while high - low > step:
        middle = low + (high - low) / 2
        if _offset(middle, zone) == target:
            high = middle
        else:
            low = middle
    return high


def wall_instants(day: date, clock: time, zone: ZoneInfo) -> list[datetime]:
    """The instants at which ``zone``'s clocks read ``clock`` on ``day``.

    Two in an autumn fold, one normally; in a spring-forward gap none exists,
    and the first instant after the gap is returned instead.
    """
    naive = datetime.combine(day, clock)
    found = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive:
            found.append(instant)
    if found:
        return sorted(set(found))
    # In a gap, fold 0 reads the time with the offset before the change and
    # fold 1 with the one after: the change itself lies between the two.
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return [_transition(min(first, second), max(first, second), zone)]


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return wall_instants(day, time(0), zone)[0]


@attrs.frozen(kw_only=True)
class CallingWindow:
    """When the applicant may be called, in their local time.

    Attributes:
        start: the first allowed minute of a day.
        end: the first minute no longer allowed; ``None`` means midnight
            (the window runs to the end of the day).
        weekdays: allowed days, 0 for Monday to 6 for Sunday.
        blocked_dates: local dates on which no call is placed (holidays).

    Raises:
        InvalidInputError: ``end`` is not after ``start``, or no weekday is allowed.
    """

    start: time = time(8, 0)
    end: time | None = time(21, 0)
    weekdays: frozenset[int] = attrs.field(
        default=frozenset(range(7)), converter=_weekdays
    )
    blocked_dates: frozenset[date] = attrs.field(default=frozenset(), converter=_dates)

    def __attrs_post_init__(self) -> None:
        if self.end is not None and self.end <= self.start:
            raise InvalidInputError(
                message=f"calling_window: end {self.end:%H:%M} is not after "
                f"start {self.start:%H:%M}",
                field="calling_window.end",
            )
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise InvalidInputError(
                message="calling_window: weekdays must name days 0 (Monday) to 6",
                field="calling_window.weekdays",
            )

    def describe(self) -> str:
        """The window in words: ``08:00-21:00 daily``."""
        end = "24:00" if self.end is None else f"{self.end:%H:%M}"
        days = (
            "daily"
            if len(self.weekdays) == 7  # noqa: PLR2004 - every day of the week
            else ",".join(_WEEKDAYS[d] for d in sorted(self.weekdays))
        )
        text = f"{self.start:%H:%M}-{end} {days}"
        if self.blocked_dates:
            text += f", {len(self.blocked_dates)} blocked dates"
        return text

    def _day_allowed(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.blocked_dates

    def allows_in(self, at: datetime, zone: ZoneInfo) -> bool:
        """Whether a call at the instant ``at`` falls inside the window in ``zone``."""
        wall = at.astimezone(zone)
        if not self._day_allowed(wall.date()):
            return False
        clock = wall.time().replace(tzinfo=None)
        return self.start <= clock and (self.end is None or clock < self.end)

    def allows(self, at: datetime, zones: Sequence[ZoneInfo]) -> bool:
        """Whether ``at`` is allowed in every one of ``zones``."""
        return all(self.allows_in(at, zone) for zone in zones)

    def next_opening_in(self, at: datetime, zone: ZoneInfo) -> datetime | None:
        """The earliest instant at or after ``at`` that the window allows in ``zone``.

        ``None`` when there is none within ``HORIZON_DAYS`` days.
        """
        at = at.astimezone(UTC)
        if self.allows_in(at, zone):
            return at
        first = at.astimezone(zone).date() - _DAY
        for offset in range(HORIZON_DAYS + 2):
            day = first + timedelta(days=offset)
            if not self._day_allowed(day):
                continue
            # A window opens when the wall clock reaches ``start``, or when a
            # clock change jumps (or falls back) into the allowed hours.
            candidates = wall_instants(day, self.start, zone)
            low, high = _day_start(day, zone), _day_start(day + _DAY, zone)
            if _offset(low, zone) != _offset(high - timedelta(microseconds=1), zone):
                candidates.append(
                    _transition(low, high - timedelta(microseconds=1), zone)
                )
            opening = min(
                (c for c in candidates if c >= at and self.allows_in(c, zone)),
                default=None,
            )
            if opening is not None:
                return opening
        return None

    def next_opening(self, at: datetime, zones: Sequence[ZoneInfo]) -> datetime | None:
        """The earliest instant at or after ``at`` allowed in every one of ``zones``."""
        current = at.astimezone(UTC)
        for _ in range(HORIZON_DAYS * 4):
            openings = [self.next_opening_in(current, zone) for zone in zones]
            if any(opening is None for opening in openings):
                return None
            latest = max(o for o in openings if o is not None)
            if latest == current:
                return current
            current = latest
        return None  # pragma: no cover - the zones' windows never overlap


@attrs.frozen(kw_only=True)
class NextDayAt:
    """An attempt-schedule entry: the next local day, at ``at``."""

    at: time


ScheduleEntry = float | NextDayAt
"""A delay in seconds after the previous attempt, or a time on the next day."""


def _entries(values: Iterable[ScheduleEntry]) -> tuple[ScheduleEntry, ...]:
    return tuple(values)


def parse_schedule_entry(value: object) -> ScheduleEntry:
    """``"30m"``, ``2.5`` (seconds) or ``"next day 10:00"`` as a schedule entry.

    Raises:
        ValueError: none of those.
    """
    if isinstance(value, str):
        match = _NEXT_DAY.match(value.strip().lower())
        if match is not None:
            clock = parse_clock(match[1])
            assert clock is not None  # noqa: S101 - 24:00 is not allowed here
            return NextDayAt(at=clock)
    return parse_duration(value)


def format_schedule_entry(entry: ScheduleEntry) -> str:
    """The entry as a policy file writes it."""
    if isinstance(entry, NextDayAt):
        return f"next day {entry.at:%H:%M}"
    return format_duration(entry)


@attrs.frozen(kw_only=True)
class AttemptSchedule:
    """When to call again after no answer or a busy line.

    Attributes:
        retries: what follows each unanswered attempt, in order; the last
            entry repeats while ``max_attempts`` allows.
        max_attempts: calls placed in all.
        max_per_day: calls placed on one local day.

    Raises:
        InvalidInputError: a limit below 1.
    """

    retries: tuple[ScheduleEntry, ...] = attrs.field(
        default=(1800.0, 7200.0, NextDayAt(at=time(10, 0))), converter=_entries
    )
    max_attempts: int = 4
    max_per_day: int = 3

    def __attrs_post_init__(self) -> None:
        for name in ("max_attempts", "max_per_day"):
            if getattr(self, name) < 1:
                raise InvalidInputError(
                    message=f"{name}: must be at least 1", field=name
                )

    def next_attempt(
        self,
        placed: Sequence[datetime],
        *,
        window: CallingWindow,
        zones: Sequence[ZoneInfo],
    ) -> datetime | None:
        """When the next call may be placed, after the calls ``placed`` so far.

        ``None`` when the limits are reached (or the window never opens
        again). The answer lies inside ``window`` in every zone, and keeps
        at most ``max_per_day`` calls on a day of the first zone.
        """
        if not placed or len(placed) >= self.max_attempts or not self.retries:
            return None
        last = max(placed)
        entry = self.retries[min(len(placed) - 1, len(self.retries) - 1)]
        home = zones[0]
        if isinstance(entry, NextDayAt):
            day = last.astimezone(home).date() + _DAY
            candidate = wall_instants(day, entry.at, home)[0]
        else:
            candidate = last + timedelta(seconds=entry)
        for _ in range(HORIZON_DAYS):
            opening = window.next_opening(candidate, zones)
            if opening is None:
                return None
            day = opening.astimezone(home).date()
            same_day = sum(1 for p in placed if p.astimezone(home).date() == day)
            if same_day < self.max_per_day:
                return opening
            candidate = _day_start(day + _DAY, home)
        return None  # pragma: no cover - bounded by the window's horizon


def calling_zones(timezone: str | None, phone: str) -> tuple[ZoneInfo, ...]:
    """The zones whose local time governs a call: the applicant's, else the number's.

    Without a zone of the applicant's, the zones of the phone number's
    region come from ``phonenumbers``' time-zone data; a number whose region
    spans several zones gives them all, and a call must fit every one.

    Raises:
        InvalidInputError: the zone is unknown, or the number's region has none.
    """
    if timezone:
        return (time_zone(timezone),)
    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInputError(
            message=f"phone: not a phone number ({exc})", field="phone"
        ) from exc
    names = [
        name
        for name in phone_timezones.time_zones_for_number(number)
        if name != phone_timezones.UNKNOWN_TIMEZONE
    ]
    if not names:
        raise InvalidInputError(
            message="phone: the number's region has no known time zone; "
            "give the applicant's timezone",
            field="phone",
        )
    return tuple(ZoneInfo(name) for name in sorted(set(names)))
