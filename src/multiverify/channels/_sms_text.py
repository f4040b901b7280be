"""SMS texts: the one-time-code templates, and how many segments a text takes.

Segments, per 3GPP TS 23.038 (the GSM 7-bit default alphabet and its
extension table) and TS 23.040 (concatenation headers): a text that fits the
GSM-7 alphabet takes 160 septets in one segment or 153 per segment when
split, a character of the extension table (``^{}\\[~]|€`` and form feed)
taking two septets that are never split; any other text is sent as UCS-2,
70 UTF-16 code units in one segment or 67 per segment, a surrogate pair
never split.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from ..exceptions import ConfigurationError

__all__ = [
    "CODE_TEMPLATES",
    "SmsEncoding",
    "SmsSegments",
    "SmsTemplate",
    "sms_segments",
]

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")

_SINGLE = {"gsm7": 160, "ucs2": 70}
_PART = {"gsm7": 153, "ucs2": 67}


class SmsEncoding(enum.StrEnum):
    """How a text is encoded on the air."""

    GSM7 = "gsm7"
    UCS2 = "ucs2"


@attrs.frozen(kw_only=True)
class SmsSegments:
    """How a text is sent: its encoding, its length in that encoding, and its segments.

    Attributes:
        encoding: GSM-7 when every character is in the GSM alphabet, else UCS-2.
        units: septets (GSM-7) or UTF-16 code units (UCS-2).
        segments: how many messages it is split into (and billed as).
    """

    encoding: SmsEncoding
    units: int
    segments: int


def _units(char: str, encoding: SmsEncoding) -> int:
    if encoding is SmsEncoding.GSM7:
        return 2 if char in _GSM_EXTENDED else 1
    return 2 if ord(char) > 0xFFFF else 1  # noqa: PLR2004 - outside the BMP: a surrogate pair


def sms_segments(text: str) -> SmsSegments:
    """Count the segments of ``text``.

    >>> sms_segments("Your code is 123456")
    SmsSegments(encoding=<SmsEncoding.GSM7: 'gsm7'>, units=19, segments=1)
    >>> sms_segments("您的验证码为123456").encoding.value
    'ucs2'
    """
    gsm = all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text)
    encoding = SmsEncoding.GSM7 if gsm else SmsEncoding.UCS2
    sizes = [_units(c, encoding) for c in text]
    units = sum(sizes)
    if units <= _SINGLE[encoding.value]:
        return SmsSegments(encoding=encoding, units=units, segments=1)
    part, used, segments = _PART[encoding.value], 0, 1
    for size in sizes:  # a two-unit character never straddles two segments
        if used + size > part:
            segments += 1
            used = 0
        used += size
    return SmsSegments(encoding=encoding, units=units, segments=segments)


@attrs.frozen
class SmsTemplate:
    """A message template with ``{brand}``, ``{code}`` and ``{minutes}``.

    Raises:
        ConfigurationError: the template lacks ``{code}`` or names another field.
    """

    text: str

    def __attrs_post_init__(self) -> None:
        sentinel = "\x00code\x00"
        try:
            rendered = self.text.format(brand="", code=sentinel, minutes="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                message=f"SMS template {self.text!r} may use only {{brand}}, "
                f"{{code}} and {{minutes}}: {exc!r}"
            ) from None
        # Rendered, not searched: "{{code}}" is the literal text, and a
        # format spec such as "{code:.2}" would cut the code short.
        if sentinel not in rendered:
            raise ConfigurationError(
                message=f"SMS template {self.text!r} does not contain {{code}} "
                "(or escapes it, or cuts it short with a format spec)"
            )

    def render(self, *, brand: str, code: str, minutes: int) -> str:
        """The text with the fields filled in."""
        return self.text.format(brand=brand, code=code, minutes=minutes)


CODE_TEMPLATES: Mapping[str, SmsTemplate] = {
    "zh-CN": SmsTemplate(
        "【{brand}】您的验证码为{code}，{minutes}分钟内有效，请勿告诉他人。"  # noqa: RUF001 - Chinese punctuation
    ),
    "en": SmsTemplate(
        "{brand}: your verification code is {code}. "
        "It expires in {minutes} minutes. Never share it."
    ),
}
"""The shipped templates, in Simplified Chinese and English.

Vendors that send only registered templates (Aliyun, Tencent) need the same
wording approved under their template ids; the segment count reported with
each send is computed from these texts.
"""
