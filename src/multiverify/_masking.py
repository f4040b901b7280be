"""Masking of personal data for reprs, logs, challenges and the audit trail."""

from __future__ import annotations

__all__ = ["mask_email", "mask_id", "mask_name", "mask_phone"]

_MASK = "*"


def mask_phone(phone: str) -> str:
    """Keep the ``+`` and country-code digits and the last four: ``+86*******8000``."""
    digits = phone.removeprefix("+")
    if len(digits) <= 6:  # noqa: PLR2004 - too short to reveal anything
        return _MASK * len(phone)
    head = "+" + digits[:2] if phone.startswith("+") else digits[:2]
    return head + _MASK * (len(digits) - 6) + digits[-4:]


def mask_id(value: str, *, keep: int = 4) -> str:
    """Keep the last ``keep`` characters of an identifier: ``**************1234``."""
    if len(value) <= keep:
        return _MASK * len(value)
    shown = max(keep, 0)  # value[-0:] would be the whole value
    return _MASK * (len(value) - shown) + value[len(value) - shown :]


def mask_name(name: str) -> str:
    """Keep the first character of each word: ``Z** S**``."""
    return (
        " ".join(word[:1] + _MASK * max(len(word) - 1, 2) for word in name.split())
        or _MASK
    )


def mask_email(email: str) -> str:
    """Keep the first character and the domain: ``a***@example.com``."""
    local, sep, domain = email.partition("@")
    if not sep:
        return mask_id(email)
    return f"{local[:1]}***@{domain}"
