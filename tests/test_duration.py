"""Tests for durations (a private module: it has no public path yet)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiverify._duration import format_duration, parse_duration


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("30m", 1800.0),
            ("10s", 10.0),
            ("1h30m", 5400.0),
            ("500ms", 0.5),
            ("2.5s", 2.5),
            ("1d", 86400.0),
            ("1d2h3m4s5ms", 93784.005),
            ("0s", 0.0),
            ("1h 30m", 5400.0),
            ("  45s  ", 45.0),
            ("30m1h", 5400.0),
            ("1.5h", 5400.0),
        ],
    )
    def test_strings(self, text: str, seconds: float) -> None:
        """Unit parts are summed; spaces are ignored; ``ms`` wins over ``m``."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(("text", "seconds"), [("9ms", 0.009), ("13ms", 0.013)])
    def test_milliseconds_are_exact(self, text: str, seconds: float) -> None:
        """``9ms`` is the float nearest 0.009, not 9 * 0.001 rounded twice."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(("value", "seconds"), [(5, 5.0), (2.5, 2.5), (0, 0.0)])
    def test_numbers_are_seconds(self, value: float, seconds: float) -> None:
        """Ints and floats are seconds, returned as a float."""
        result = parse_duration(value)
        assert result == seconds
        assert isinstance(result, float)

    def test_timedelta(self) -> None:
        """A ``timedelta`` gives its total seconds."""
        assert parse_duration(timedelta(minutes=1, milliseconds=500)) == 60.5

    @pytest.mark.parametrize("flag", [True, False])
    def test_bool_is_rejected(self, flag: bool) -> None:
        """A bool is not taken for one or zero seconds."""
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(flag)

    @pytest.mark.parametrize("value", [-1, -0.5, timedelta(seconds=-1)])
    def test_negative_is_rejected(self, value: object) -> None:
        """Negative numbers and timedeltas are refused."""
        with pytest.raises(ValueError, match="must not be negative"):
            parse_duration(value)

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), "9" * 400 + "s"])
    def test_non_finite_is_rejected(self, value: object) -> None:
        """NaN, infinity and overflowing strings are refused."""
        with pytest.raises(ValueError, match="must be finite"):
            parse_duration(value)

    @pytest.mark.parametrize("value", [10**400, -(10**400)])
    def test_an_int_beyond_any_float_is_rejected(self, value: int) -> None:
        """An integer too large for a float is refused, not an OverflowError."""
        with pytest.raises(ValueError, match="must be finite"):
            parse_duration(value)

    @pytest.mark.parametrize(
        "value", ["36501d", 36500 * 86400 + 1, timedelta(days=36501), "999999999d"]
    )
    def test_longer_than_a_hundred_years_is_rejected(self, value: object) -> None:
        """A duration no datetime can be moved by is refused when it is read."""
        with pytest.raises(ValueError, match=r"at most 36500d \(100 years\)"):
            parse_duration(value)

    def test_a_hundred_years_is_accepted(self) -> None:
        """The longest duration is exactly 36500 days."""
        assert parse_duration("36500d") == 36500 * 86400.0

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   ",
            "abc",
            "10",
            "-5s",
            "5x",
            "1.5.5s",
            "s",
            "1h+30m",
            "5 m x",
            "1e3s",
            ".5s",
        ],
    )
    def test_garbage_strings_are_rejected(self, text: str) -> None:
        """Text that is not entirely number-unit parts is refused with a hint."""
        with pytest.raises(ValueError, match="write it like"):
            parse_duration(text)

    @pytest.mark.parametrize("value", [None, [1], b"5s", {"s": 1}])
    def test_other_types_are_rejected(self, value: object) -> None:
        """Values that are neither numbers, timedeltas nor text are refused."""
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(value)


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (0.5, "500ms"),
            (0.009, "9ms"),
            (1, "1s"),
            (45, "45s"),
            (60, "1m"),
            (90.5, "1m30.5s"),
            (5400, "1h30m"),
            (3600.1, "1h0.1s"),
            (86400, "1d"),
            (93784.005, "1d2h3m4.005s"),
            (0.9996, "1s"),
            (0.0004, "0s"),
        ],
    )
    def test_renders_like_a_policy_file(self, seconds: float, text: str) -> None:
        """Largest units first, zero parts left out, rounded to milliseconds."""
        assert format_duration(seconds) == text

    @pytest.mark.parametrize("bad", [-1, -0.001, float("inf"), float("nan")])
    def test_negative_or_non_finite_is_rejected(self, bad: float) -> None:
        """Negative and non-finite values cannot be written as a duration."""
        with pytest.raises(ValueError, match="finite and not negative"):
            format_duration(bad)

    @given(st.integers(min_value=0, max_value=36500 * 86400 * 1000))
    def test_round_trip_for_whole_milliseconds(self, millis: int) -> None:
        """Parsing the formatted text gives back exactly the same seconds."""
        seconds = millis / 1000
        assert parse_duration(format_duration(seconds)) == seconds

    @given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
    def test_output_always_parses(self, seconds: float) -> None:
        """Any non-negative float formats to text within half a millisecond of it."""
        assert (
            abs(parse_duration(format_duration(seconds)) - seconds)
            <= 0.0005 + 1e-9 * seconds
        )
