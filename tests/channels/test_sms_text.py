"""Tests for SMS texts: GSM-7 and UCS-2 segment counts, and the code templates."""

from __future__ import annotations

import pytest

from multiverify.channels import CODE_TEMPLATES, SmsEncoding, sms_segments


class TestSmsSegments:
    @pytest.mark.parametrize(
        ("text", "encoding", "units", "segments"),
        [
            ("", SmsEncoding.GSM7, 0, 1),
            ("a" * 160, SmsEncoding.GSM7, 160, 1),
            ("a" * 161, SmsEncoding.GSM7, 161, 2),
            ("a" * 306, SmsEncoding.GSM7, 306, 2),
            ("a" * 307, SmsEncoding.GSM7, 307, 3),
            (
                "€" * 80,
                SmsEncoding.GSM7,
                160,
                1,
            ),  # extension characters take two septets
            ("é@£¥Δ_", SmsEncoding.GSM7, 6, 1),
            ("码" * 70, SmsEncoding.UCS2, 70, 1),
            ("码" * 71, SmsEncoding.UCS2, 71, 2),
            ("码" * 134, SmsEncoding.UCS2, 134, 2),
            ("码" * 135, SmsEncoding.UCS2, 135, 3),
            ("😀" * 35, SmsEncoding.UCS2, 70, 1),  # a surrogate pair is two units
            ("a" * 159 + "ç", SmsEncoding.UCS2, 160, 3),  # one non-GSM letter: UCS-2
        ],
    )
    def test_counts(
        self, text: str, encoding: SmsEncoding, units: int, segments: int
    ) -> None:
        """Single and concatenated segments per 3GPP TS 23.038 / 23.040."""
        counted = sms_segments(text)
        assert (counted.encoding, counted.units, counted.segments) == (
            encoding,
            units,
            segments,
        )

    def test_a_two_septet_character_is_not_split(self) -> None:
        """An escape pair that would straddle segments moves to the next one."""
        assert sms_segments("a" * 152 + "€" + "a" * 10).segments == 2
        assert sms_segments("a" * 152 + "€" + "a" * 152).segments == 3

    def test_a_surrogate_pair_is_not_split(self) -> None:
        """A character outside the BMP never straddles two UCS-2 segments."""
        assert sms_segments("码" * 66 + "😀" + "码" * 66).segments == 3


class TestTemplates:
    def test_shipped_templates(self) -> None:
        """zh-CN and en carry brand, code and minutes; each fits one segment."""
        for template in CODE_TEMPLATES.values():
            text = template.render(brand="Acme Finance", code="123456", minutes=5)
            assert "Acme Finance" in text
            assert "123456" in text
            assert "5" in text
            assert sms_segments(text).segments == 1
        assert (
            sms_segments(
                CODE_TEMPLATES["zh-CN"].render(brand="b", code="1", minutes=1)
            ).encoding
            is SmsEncoding.UCS2
        )
        assert (
            sms_segments(
                CODE_TEMPLATES["en"].render(brand="b", code="1", minutes=1)
            ).encoding
            is SmsEncoding.GSM7
        )
