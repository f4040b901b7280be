"""Durations as policies write them: ``"30m"``, ``"10s"``, ``"1h30m"``, ``2.5``."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal

__all__ = ["format_duration", "parse_duration"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# Exact unit sizes: parts are summed as decimals and rounded to a float once, so
# "9ms" is the float nearest 0.009 (9 * 0.001 in floats is 0.009000000000000001).
_UNIT = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
# The longest duration accepted. Every duration ends up added to a datetime
# (a deadline, a timer, a lease), which cannot pass the year 9999: a longer
# one would validate, then fail when the session starts.
_MAX_SECONDS = 36500 * 86400.0


def parse_duration(value: object) -> float:
    """Return seconds for a number, a [`timedelta`][datetime.timedelta] or a string.

    Strings chain parts: ``"1h30m"``, ``"500ms"``, ``"2.5s"``.

    Raises:
        ValueError: the value is not a duration, is negative, is not finite
            or is longer than 100 years.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")  # noqa: TRY004 - one error type for callers
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(
                f"not a duration: {value!r} (write it like '30s', '5m' or '1h30m')"
            )
        seconds = float(sum(Decimal(n) * _UNIT[u] for n, u in parts))
    else:
        raise ValueError(f"not a duration: {value!r}")  # noqa: TRY004 - one error type for callers
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite: {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration must not be negative: {value!r}")
    if seconds > _MAX_SECONDS:
        raise ValueError(f"a duration must be at most 36500d (100 years): {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way a policy file writes them: ``1h30m``, ``45s``.

    The value is rounded to whole milliseconds.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative: {seconds!r}")
    millis = round(Decimal(seconds) * 1000)
    if 0 < millis < 1000:  # noqa: PLR2004 - under a second reads best in ms
        return f"{millis}ms"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    if millis or not out:
        whole, fraction = divmod(millis, 1000)
        text = f"{whole}.{fraction:03d}".rstrip("0").removesuffix(".")
        out.append(f"{text}s")
    return "".join(out)
