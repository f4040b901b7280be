"""Who is verified and what they asked for: immutable values, personal fields masked."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import phonenumbers
from babel.core import get_global

from ._masking import mask_id, mask_name, mask_phone
from .exceptions import InvalidInputError

__all__ = [
    "Address",
    "Applicant",
    "Consent",
    "Contact",
    "LoanApplication",
    "RepaymentSchedule",
    "normalize_ip",
    "normalize_phone",
]

_CURRENCY = re.compile(r"^[A-Z]{3}$")


# The ISO 4217 codes of currencies that are or were legal tender somewhere:
# the CLDR currency data Babel ships (supplementalData.xml <currencyData>,
# https://cldr.unicode.org/, which follows the ISO 4217 maintenance agency's
# lists one and three), kept current by upgrading Babel. A retired code (BGN,
# 2026) stays accepted so that sessions saved with it still load; codes that
# were never tender are refused: funds (USN), metals (XAU), testing (XTS), no
# currency (XXX) and made-up ones (RMB for CNY). Read on first use, not at
# import: Babel loads its data file then.
@functools.cache
def _currencies() -> frozenset[str]:
    return frozenset(_tender_until())


@functools.cache
def _tender_until() -> dict[str, date | None]:
    """Per code that was ever legal tender, the last day it was (``None``: it still is)."""
    ends: dict[str, list[date | None]] = {}
    for entries in get_global("territory_currencies").values():
        for code, _start, end, tender in entries:
            if tender:
                ends.setdefault(code, []).append(None if end is None else date(*end))
    return {
        code: None if None in days else max(day for day in days if day is not None)
        for code, days in ends.items()
    }


def refuse_retired_currency(applicant: Applicant, *, at: datetime) -> None:
    """Refuse a new session's loan in a currency that is legal tender nowhere on the day of ``at`` (UTC).

    ``Applicant`` accepts retired codes (BGN since the euro came to
    Bulgaria), so that sessions saved with one still load; a new
    application in one is a mistake, refused where sessions start.

    Raises:
        InvalidInputError: ``field`` is ``loan.currency``.
    """
    code = applicant.loan.currency
    on = at.astimezone(UTC).date()
    last = _tender_until().get(code)
    if last is not None and last < on:
        raise InvalidInputError(
            message=f"loan.currency: {code!r} is no longer legal tender anywhere "
            f"(its last day was {last.isoformat()}); a new loan needs a currency "
            f"in use on {on.isoformat()}",
            field="loan.currency",
        )


# Amounts, fees and rates this large are refused: no loan comes near, and the
# float a policy reads of one past 1e308 is infinite.
_AMOUNT_DIGITS = 15
_PERSONAL = "Personal field: masked in repr, logs and the audit trail."


def normalize_phone(
    number: str, *, region: str | None = None, field: str = "phone"
) -> str:
    """Validate a phone number and return it in E.164 (``+8613800138000``).

    Args:
        number: the number as typed; without a leading ``+`` it needs ``region``.
        region: ISO 3166 region used to read a national number, such as ``"CN"``.
        field: the field name reported in the error.

    Raises:
        InvalidInputError: the number cannot be parsed, is not a valid number,
            or has an extension (which an SMS cannot reach).
    """
    if region is not None and not isinstance(region, str):
        raise InvalidInputError(
            message=f"{field}: the region must be text such as 'CN', "
            f"got {type(region).__name__}",
            field=field,
        )
    try:
        parsed = phonenumbers.parse(number, region.upper() if region else None)
    except (phonenumbers.NumberParseException, TypeError) as exc:
        raise InvalidInputError(
            message=f"{field}: not a phone number ({exc})", field=field
        ) from exc
    if parsed.extension:
        raise InvalidInputError(
            message=f"{field}: has an extension, which an SMS or an automated "
            "call cannot reach; give a direct number",
            field=field,
        )
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidInputError(
            message=f"{field}: not a valid phone number for its region", field=field
        )
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    _remember_region(formatted, parsed)
    return formatted


# ``Applicant.facts`` reports the phone's region, which takes parsing the
# number again (the dearest part of building a session). The number was parsed
# when it was normalised, so the region is kept from then, by E.164 number: a
# bounded cache of a pure function, not state.
_REGIONS: dict[str, str] = {}
_REGIONS_MAX = 4096


def _remember_region(number: str, parsed: phonenumbers.PhoneNumber) -> None:
    if len(_REGIONS) >= _REGIONS_MAX:
        _REGIONS.clear()
    _REGIONS[number] = phonenumbers.region_code_for_number(parsed) or ""


def _region(number: str) -> str:
    region = _REGIONS.get(number)
    if region is None:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
        region = region or ""
    return region


def _phone(number: str) -> str:
    return normalize_phone(number)


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidInputError(
            message=f"{field}: not a decimal amount: {value!r}", field=field
        )
    try:
        result = Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInputError(
            message=f"{field}: not a decimal amount: {value!r}", field=field
        ) from exc
    if not result.is_finite():
        raise InvalidInputError(message=f"{field}: must be finite", field=field)
    # adjusted() is the power of ten of the leading digit, read without the
    # arithmetic that would overflow the context for 1e999999999.
    if result and result.adjusted() >= _AMOUNT_DIGITS:
        raise InvalidInputError(
            message=f"{field}: must be less than 10^{_AMOUNT_DIGITS} in magnitude",
            field=field,
        )
    return result


def _amount(value: object) -> Decimal:
    return _decimal(value, "amount")


def _fees(value: object) -> Decimal:
    return _decimal(value, "fees")


def _annual_rate(value: object) -> Decimal | None:
    return None if value is None else _decimal(value, "annual_rate")


def _installment_amount(value: object) -> Decimal:
    return _decimal(value, "repayment.installment_amount")


def _contact_phone(value: str) -> str:
    return normalize_phone(value, field="contacts.phone")


def normalize_ip(value: object) -> str | None:
    """An IPv4 or IPv6 address in its canonical text, or ``None`` for ``None``.

    Raises:
        InvalidInputError: ``value`` is not an IP address (``field="client_ip"``).
    """
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise InvalidInputError(
            message="client_ip: not an IPv4 or IPv6 address", field="client_ip"
        ) from None


def _sequence(field: str, values: object) -> tuple[Any, ...]:
    # A string is iterable too, but an address of one line is not one line
    # per character.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError(
            message=f"{field}: expected a list, got {type(values).__name__}",
            field=field,
        )
    return tuple(values)


def _lines(values: Iterable[str]) -> tuple[str, ...]:
    return _sequence("address.lines", values)


def _contacts(values: Iterable[Contact]) -> tuple[Contact, ...]:
    return _sequence("contacts", values)


def _non_negative(field: str) -> Any:
    def check(_inst: object, _attr: object, value: Decimal) -> None:
        if value < 0:
            raise InvalidInputError(
                message=f"{field}: must not be negative", field=field
            )

    return check


def _positive(field: str) -> Any:
    def check(_inst: object, _attr: object, value: Decimal) -> None:
        if value <= 0:
            raise InvalidInputError(message=f"{field}: must be positive", field=field)

    return check


def _positive_int(field: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(
                message=f"{field}: expected a whole number, got {value!r}", field=field
            )
        if value <= 0:
            raise InvalidInputError(message=f"{field}: must be positive", field=field)

    return check


def _text(field: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str):
            raise InvalidInputError(
                message=f"{field}: expected text, got {type(value).__name__}",
                field=field,
            )

    return check


def _non_empty(field: str) -> Any:
    is_text = _text(field)

    def check(inst: object, attr: object, value: str) -> None:
        is_text(inst, attr, value)
        if not value.strip():
            raise InvalidInputError(message=f"{field}: must not be empty", field=field)

    return check


def _instance(field: str, kind: type, *, optional: bool = False) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, kind):
            raise InvalidInputError(
                message=f"{field}: expected {kind.__name__}"
                f"{' or None' if optional else ''}, got {type(value).__name__}",
                field=field,
            )

    return check


def _each(field: str, kind: type) -> Any:
    def check(_inst: object, _attr: object, values: tuple[object, ...]) -> None:
        for index, value in enumerate(values):
            if not isinstance(value, kind):
                raise InvalidInputError(
                    message=f"{field}[{index}]: expected {kind.__name__},"
                    f" got {type(value).__name__}",
                    field=field,
                )

    return check


def _day(field: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        # A datetime is a date too, but carries a time (and maybe a zone) that
        # would silently shift an age or a due date.
        if not isinstance(value, date) or isinstance(value, datetime):
            raise InvalidInputError(
                message=f"{field}: expected a datetime.date, got {type(value).__name__}"
                + (f" {value!r}" if isinstance(value, str) else ""),
                field=field,
            )

    return check


def _currency(_inst: object, _attr: object, value: Any) -> None:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise InvalidInputError(
            message=f"currency: expected an ISO 4217 code such as CNY, got {value!r}",
            field="currency",
        )
    if value not in _currencies():
        raise InvalidInputError(
            message=f"currency: {value!r} is not an ISO 4217 currency code "
            "(such as CNY or USD)",
            field="currency",
        )


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone of this name.

    Raises:
        InvalidInputError: no such zone (``field="timezone"``).
    """
    try:
        return ZoneInfo(name)
    # OSError: a name that is a directory of the database (America), too
    # long for a file name, or unreadable; ValueError: a malformed name or a
    # file that is no zone (zone.tab).
    except (ZoneInfoNotFoundError, OSError, ValueError, TypeError) as exc:
        raise InvalidInputError(
            message=f"timezone: unknown IANA time zone {name!r}", field="timezone"
        ) from exc


def _timezone(_inst: object, _attr: object, value: str) -> None:
    time_zone(value)


@attrs.frozen(kw_only=True)
class RepaymentSchedule:
    """A summary of how the loan is paid back, read out to the applicant."""

    installments: int = attrs.field(validator=_positive_int("repayment.installments"))
    installment_amount: Decimal = attrs.field(
        converter=_installment_amount,
        validator=_non_negative("repayment.installment_amount"),
    )
    first_due: date = attrs.field(validator=_day("repayment.first_due"))
    frequency: str = attrs.field(
        default="monthly", validator=_non_empty("repayment.frequency")
    )


@attrs.frozen(kw_only=True)
class LoanApplication:
    """What the applicant asked for. Amounts are `Decimal`.

    Raises:
        InvalidInputError: a field is invalid, ``field`` names it: an amount
            that is not finite, not positive (fees and rate: negative) or of
            10^15 or more, or a currency that is no ISO 4217 legal tender.
    """

    amount: Decimal = attrs.field(converter=_amount, validator=_positive("amount"))
    currency: str = attrs.field(validator=_currency)
    term_months: int = attrs.field(validator=_positive_int("term_months"))
    purpose: str = attrs.field(validator=_non_empty("purpose"))
    fees: Decimal = attrs.field(
        default=Decimal(0), converter=_fees, validator=_non_negative("fees")
    )
    annual_rate: Decimal | None = attrs.field(
        default=None,
        converter=_annual_rate,
        validator=attrs.validators.optional(_non_negative("annual_rate")),
    )
    repayment: RepaymentSchedule | None = attrs.field(
        default=None, validator=_instance("repayment", RepaymentSchedule, optional=True)
    )

    def facts(self) -> dict[str, Any]:
        """The loan as plain values for policy conditions and the audit trail."""
        return {
            "amount": float(self.amount),
            "currency": self.currency,
            "term_months": self.term_months,
            "purpose": self.purpose,
            "fees": float(self.fees),
            "annual_rate": None
            if self.annual_rate is None
            else float(self.annual_rate),
            "installments": self.repayment.installments if self.repayment else None,
            "installment_amount": (
                float(self.repayment.installment_amount) if self.repayment else None
            ),
        }


@attrs.frozen(kw_only=True)
class Address:
    """A postal address. Every field is personal."""

    lines: tuple[str, ...] = attrs.field(
        converter=_lines,
        validator=_each("address.lines", str),
        repr=False,
        metadata={"personal": True},
    )
    city: str = attrs.field(
        validator=_text("address.city"), repr=False, metadata={"personal": True}
    )
    region: str = attrs.field(default="", validator=_text("address.region"))
    postal_code: str = attrs.field(
        default="",
        validator=_text("address.postal_code"),
        repr=False,
        metadata={"personal": True},
    )
    country: str = attrs.field(default="", validator=_text("address.country"))


@attrs.frozen(kw_only=True)
class Contact:
    """Someone the lender may reach about the applicant (a reference or relative)."""

    name: str = attrs.field(
        validator=_non_empty("contacts.name"),
        repr=mask_name,
        metadata={"personal": True},
    )
    relation: str = attrs.field(validator=_text("contacts.relation"))
    phone: str = attrs.field(
        converter=_contact_phone,
        repr=mask_phone,
        metadata={"personal": True},
    )


def _purposes(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return _sequence("consents.purposes", values)


@attrs.frozen(kw_only=True)
class Consent:
    """A record of the applicant's consent, kept by the app: its reference, never the document.

    The credit-bureau channel pulls a report only for an applicant carrying
    a consent of scope ``credit_bureau`` that is in force and covers the
    pull's permissible purpose (FCRA §604(a)(2) written instructions; in
    China, 征信业管理条例 art. 18: written consent with the agreed use).

    Attributes:
        reference: the app's id for the signed consent (shown in evidence).
        scope: what it allows, such as ``credit_bureau``.
        purposes: the permissible purposes it covers; empty covers any.
        granted_at: when the applicant gave it.
        expires_at: when it lapses, if it does.

    Raises:
        InvalidInputError: an empty reference or scope, or naive times.
    """

    reference: str = attrs.field(validator=_non_empty("consents.reference"))
    scope: str = attrs.field(
        default="credit_bureau", validator=_non_empty("consents.scope")
    )
    purposes: tuple[str, ...] = attrs.field(
        default=(), converter=_purposes, validator=_each("consents.purposes", str)
    )
    granted_at: datetime | None = attrs.field(
        default=None,
        validator=_instance("consents.granted_at", datetime, optional=True),
    )
    expires_at: datetime | None = attrs.field(
        default=None,
        validator=_instance("consents.expires_at", datetime, optional=True),
    )

    def __attrs_post_init__(self) -> None:
        for name in ("granted_at", "expires_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidInputError(
                    message=f"consents.{name}: must be timezone-aware",
                    field=f"consents.{name}",
                )

    def covers(self, scope: str, purpose: str, *, at: datetime) -> bool:
        """Whether this consent allows ``purpose`` within ``scope`` at ``at``."""
        return (
            self.scope == scope
            and (not self.purposes or purpose in self.purposes)
            and (self.granted_at is None or self.granted_at <= at)
            and (self.expires_at is None or at < self.expires_at)
        )


def _consents(values: Iterable[Consent]) -> tuple[Consent, ...]:
    return _sequence("consents", values)


@attrs.frozen(kw_only=True)
class Applicant:
    """The person being verified, with their loan application.

    Personal fields (``name``, ``national_id``, ``phone``, ``date_of_birth``,
    ``address``, ``contacts``, ``client_ip``) are masked in ``repr`` and never reach logs or
    the audit trail in clear; policies see only [`facts`][multiverify.Applicant.facts].

    Raises:
        InvalidInputError: a field is invalid; ``field`` names it.
    """

    applicant_id: str = attrs.field(validator=_non_empty("applicant_id"))
    name: str = attrs.field(
        validator=_non_empty("name"), repr=mask_name, metadata={"personal": True}
    )
    national_id: str = attrs.field(
        validator=_non_empty("national_id"), repr=mask_id, metadata={"personal": True}
    )
    phone: str = attrs.field(
        converter=_phone, repr=mask_phone, metadata={"personal": True}
    )
    date_of_birth: date = attrs.field(
        validator=_day("date_of_birth"),
        repr=lambda _: "****-**-**",
        metadata={"personal": True},
    )
    timezone: str = attrs.field(validator=_timezone)
    loan: LoanApplication = attrs.field(validator=_instance("loan", LoanApplication))
    locale: str = attrs.field(default="en", validator=_non_empty("locale"))
    address: Address | None = attrs.field(
        default=None,
        validator=_instance("address", Address, optional=True),
        repr=False,
        metadata={"personal": True},
    )
    contacts: tuple[Contact, ...] = attrs.field(
        default=(),
        converter=_contacts,
        validator=_each("contacts", Contact),
        repr=False,
        metadata={"personal": True},
    )
    client_ip: str | None = attrs.field(
        default=None, converter=normalize_ip, repr=False, metadata={"personal": True}
    )
    """The IP address the application came from, when the app knows it: the
    SMS channel limits sends per client IP and hands it to vendors' fraud checks."""
    consents: tuple[Consent, ...] = attrs.field(
        default=(), converter=_consents, validator=_each("consents", Consent)
    )
    """The applicant's consent records (references only), such as the one a
    credit-bureau pull requires."""

    def redact(self, text: str) -> str:
        """``text`` with every personal value of this applicant masked.

        For free text from outside that may quote the applicant, such as a
        vendor's error message (``The 'To' number +8613800138000 is not
        valid``): the phone number (in E.164, without ``+`` and as a national
        number), national ID, name, date of birth, address and contacts are
        replaced by their masked forms.
        """
        for raw, masked in self._personal_values():
            if raw in text:
                text = text.replace(raw, masked)
        return text

    def _personal_values(self) -> list[tuple[str, str]]:
        """Each personal value and its mask, longest first (a number before its tail)."""
        pairs = [
            (self.national_id, mask_id(self.national_id)),
            (self.name, mask_name(self.name)),
            (self.date_of_birth.isoformat(), "****-**-**"),
        ]
        for phone in (self.phone, *(contact.phone for contact in self.contacts)):
            masked = mask_phone(phone)
            national = str(phonenumbers.parse(phone).national_number)
            pairs += [(phone, masked), (phone[1:], masked), (national, masked)]
        pairs += [(contact.name, mask_name(contact.name)) for contact in self.contacts]
        if self.address is not None:
            pairs += [(line, "***") for line in self.address.lines]
            if self.address.postal_code:
                pairs.append((self.address.postal_code, "***"))
        return sorted(
            ((raw, masked) for raw, masked in pairs if raw.strip()),
            key=lambda pair: -len(pair[0]),
        )

    def age_on(self, day: date) -> int:
        """Whole years of age on ``day``."""
        before_birthday = (day.month, day.day) < (
            self.date_of_birth.month,
            self.date_of_birth.day,
        )
        return day.year - self.date_of_birth.year - int(before_birthday)

    def facts(self, *, on: date) -> dict[str, Any]:
        """Non-personal facts for policy conditions and the audit trail.

        Data minimisation: conditions see the age, the phone's country and the
        number of contacts, never the name, number or ID.
        """
        return {
            "id": self.applicant_id,
            "age": self.age_on(on),
            "phone_country": _region(self.phone),
            "timezone": self.timezone,
            "locale": self.locale,
            "contacts": len(self.contacts),
            "has_address": self.address is not None,
        }
