"""Who is verified and what they asked for: immutable values, personal fields masked."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import phonenumbers

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
        InvalidInputError: the number cannot be parsed or is not a valid number.
    """
    try:
        parsed = phonenumbers.parse(number, region.upper() if region else None)
    except (phonenumbers.NumberParseException, TypeError) as exc:
        raise InvalidInputError(
            message=f"{field}: not a phone number ({exc})", field=field
        ) from exc
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


def _lines(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _contacts(values: Iterable[Contact]) -> tuple[Contact, ...]:
    return tuple(values)


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


def _non_empty(field: str) -> Any:
    def check(_inst: object, _attr: object, value: str) -> None:
        if not value.strip():
            raise InvalidInputError(message=f"{field}: must not be empty", field=field)

    return check


def _currency(_inst: object, _attr: object, value: str) -> None:
    if not _CURRENCY.fullmatch(value):
        raise InvalidInputError(
            message=f"currency: expected an ISO 4217 code such as CNY, got {value!r}",
            field="currency",
        )


def _timezone(_inst: object, _attr: object, value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidInputError(
            message=f"timezone: unknown IANA time zone {value!r}", field="timezone"
        ) from exc


@attrs.frozen(kw_only=True)
class RepaymentSchedule:
    """A summary of how the loan is paid back, read out to the applicant."""

    installments: int = attrs.field(validator=_positive_int("repayment.installments"))
    installment_amount: Decimal = attrs.field(
        converter=_installment_amount,
        validator=_non_negative("repayment.installment_amount"),
    )
    first_due: date
    frequency: str = "monthly"


@attrs.frozen(kw_only=True)
class LoanApplication:
    """What the applicant asked for. Amounts are `Decimal`."""

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
    )
    repayment: RepaymentSchedule | None = None

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
        converter=_lines, repr=False, metadata={"personal": True}
    )
    city: str = attrs.field(repr=False, metadata={"personal": True})
    region: str = ""
    postal_code: str = attrs.field(default="", repr=False, metadata={"personal": True})
    country: str = ""


@attrs.frozen(kw_only=True)
class Contact:
    """Someone the lender may reach about the applicant (a reference or relative)."""

    name: str = attrs.field(repr=mask_name, metadata={"personal": True})
    relation: str
    phone: str = attrs.field(
        converter=_contact_phone,
        repr=mask_phone,
        metadata={"personal": True},
    )


def _purposes(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(values)


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
    purposes: tuple[str, ...] = attrs.field(default=(), converter=_purposes)
    granted_at: datetime | None = None
    expires_at: datetime | None = None

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
    return tuple(values)


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
        repr=lambda _: "****-**-**", metadata={"personal": True}
    )
    timezone: str = attrs.field(validator=_timezone)
    loan: LoanApplication
    locale: str = "en"
    address: Address | None = attrs.field(
        default=None, repr=False, metadata={"personal": True}
    )
    contacts: tuple[Contact, ...] = attrs.field(
        default=(), converter=_contacts, repr=False, metadata={"personal": True}
    )
    client_ip: str | None = attrs.field(
        default=None, converter=normalize_ip, repr=False, metadata={"personal": True}
    )
    """The IP address the application came from, when the app knows it: the
    SMS channel limits sends per client IP and hands it to vendors' fraud checks."""
    consents: tuple[Consent, ...] = attrs.field(default=(), converter=_consents)
    """The applicant's consent records (references only), such as the one a
    credit-bureau pull requires."""

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
