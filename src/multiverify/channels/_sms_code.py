"""The SMS one-time-code channel: a safe code lifecycle, abuse and cost controls, vendor failover.

Lifecycle of one attempt:

1. ``start`` checks the number (phonenumbers: valid, mobile where the type
   is known, allowed country and prefix, no premium rate) and the abuse and
   cost limits, then sends a fresh code through the first vendor that
   takes it. Only an HMAC-SHA256 of the code, keyed with the server secret
   and bound to the send, is kept; the challenge shows the masked number
   and the expiry, and the expiry is a durable channel timer.
2. A submitted code is normalised (Unicode digits, whitespace), compared in
   constant time, and accepted once. A wrong one counts; the ``max_attempts``-th
   wrong one fails the step (``attempts_exhausted``). An expired code is
   never compared.
3. A resend, after the cooldown and up to ``max_sends``, sends a new code
   that replaces the old one.
4. A vendor's permanent failure, or an ``undelivered`` delivery receipt,
   sends a fresh code through the next vendor.

Every send is written to a ledger in the shared store before the vendor is
called, under ``session:step:attempt:send``. A retried or resumed start finds
its earlier send there: a send that went out is taken up as it was; an
uncertain one is looked up at the vendor by that reference, and if the vendor
cannot confirm it, a fresh code is sent under the next reference, so the code
that may have gone out never works.

A send counts against the abuse limits and spend caps once it may have gone
out. Its limits and the first vendor's spend caps are taken together, every
one or none, in one atomic call where the store can
(``AtomicQuotas.consume_all``), so a refused send takes nothing; one failed
for sure by every vendor gives back what it took (but a number the vendor
refused keeps its send limits), and each vendor's definite failure its
charge; an uncertain one stays counted.

A code is drawn from an HMAC of the server secret over its send's reference
and vendor, so the same send always carries the same text: a vendor that
lists what it sent (Twilio) can confirm an uncertain send by its text, and
the code stays unpredictable to whoever lacks the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import phonenumbers

from .._applicant import normalize_ip
from .._duration import parse_duration
from .._masking import mask_phone
from .._results import Challenge, ChannelResult, ResultStatus, Signal
from .._specs import BUILTIN_CHANNELS, ChannelSpec
from ..exceptions import (
    ConfigurationError,
    InvalidInputError,
    PhoneNumberRefusedError,
    ProviderError,
    ProviderNumberRejectedError,
    QuotaExceededError,
    StoreUnavailableError,
)
from ..providers import (
    CheckOutcome,
    SmsMessage,
    SmsProvider,
    VerifyProvider,
    VerifyRequest,
)
from ..stores import AtomicQuotas, MemoryStore, Quota, QuotaTake, SharedState
from ._base import (
    Finished,
    ProviderEvent,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    TimerDue,
    Waiting,
)
from ._sms_text import CODE_TEMPLATES, SmsEncoding, SmsTemplate, sms_segments

__all__ = [
    "OnSmsSent",
    "RateLimit",
    "SmsCodeChannel",
    "SmsCodeSettings",
    "SmsCodeState",
    "SmsLimits",
    "SmsSent",
    "normalize_code",
]

log = logging.getLogger("multiverify.sms")

EXPIRY_TIMER = "code_expiry"
"""The channel timer that lapses the current code."""

_DIGITS = "0123456789"
_LEDGER_TTL = 86_400.0  # a day: longer than any retry or resume of a send
_SESSION_WINDOW = 30 * 86_400.0  # the per-session spend counts for a month
_DAY = 86_400.0
_SECRET_MIN = 16
_DELIVERY_FAILED = frozenset({"undelivered", "failed"})

# Number types that are not a mobile phone (phonenumbers.PhoneNumberType).
_NOT_MOBILE = frozenset(
    {
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.VOIP,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
        phonenumbers.PhoneNumberType.PAGER,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.VOICEMAIL,
    }
)


def _seconds(value: float | timedelta | str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigurationError(message=f"SMS settings: {exc}") from None


def _check_range(low: int, high: int) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, attribute: Any, value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not low <= value <= high
        ):
            raise ConfigurationError(
                message=f"{attribute.name} must be a whole number from {low} to {high}, "
                f"not {value!r}"
            )

    return check


def _positive(_inst: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ConfigurationError(message=f"{attribute.name} must be positive")


def _alphabet(_inst: Any, _attribute: Any, value: str) -> None:
    if not 2 <= len(set(value)) == len(value) <= 256:  # noqa: PLR2004
        raise ConfigurationError(
            message="alphabet needs 2 to 256 distinct characters, none repeated"
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigurationError(message="alphabet must not hold whitespace")


@attrs.frozen(kw_only=True)
class SmsCodeSettings:
    """The code lifecycle.

    A policy step's ``options`` override these per step, by the same names
    (``code_length = 8``, ``ttl = "10m"``...), plus ``locale``.

    Attributes:
        code_length: characters per code, 4 to 10.
        alphabet: what codes are drawn from (digits by default).
        ttl: seconds a code is valid.
        max_attempts: wrong codes allowed per attempt; the last one fails the step.
        resend_cooldown: seconds between two sends.
        max_sends: sends per attempt, the first one included.
    """

    code_length: int = attrs.field(default=6, validator=_check_range(4, 10))
    alphabet: str = attrs.field(default=_DIGITS, validator=_alphabet)
    ttl: float = attrs.field(default=300.0, converter=_seconds, validator=_positive)
    max_attempts: int = attrs.field(default=5, validator=_check_range(1, 100))
    # Durations are never negative: parse_duration refuses them.
    resend_cooldown: float = attrs.field(default=60.0, converter=_seconds)
    max_sends: int = attrs.field(default=5, validator=_check_range(1, 100))

    def with_options(self, options: Mapping[str, Any]) -> SmsCodeSettings:
        """These settings with a step's ``options`` applied.

        Raises:
            ConfigurationError: an option has a bad value.
        """
        names = {field.name for field in attrs.fields(SmsCodeSettings)}
        changes = {name: options[name] for name in names if name in options}
        return attrs.evolve(self, **changes) if changes else self


@attrs.frozen(kw_only=True)
class RateLimit:
    """At most ``limit`` sends in any sliding window of ``window`` seconds."""

    limit: int = attrs.field(validator=_check_range(1, 1_000_000))
    window: float = attrs.field(converter=_seconds, validator=_positive)


def _rate_limits(values: Iterable[RateLimit]) -> tuple[RateLimit, ...]:
    return tuple(values)


def _prefixes(values: Iterable[str]) -> tuple[str, ...]:
    prefixes = tuple(values)
    for prefix in prefixes:
        if not (
            prefix.startswith("+") and prefix[1:].isdigit() and prefix[1:].isascii()
        ):
            raise ConfigurationError(
                message=f"a number prefix is '+' and digits, such as '+86', not {prefix!r}"
            )
    return prefixes


def _countries(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(value.upper() for value in values)


def _prices(values: Mapping[str, float]) -> dict[str, float]:
    prices = {name: float(price) for name, price in values.items()}
    if any(not math.isfinite(p) or p < 0 for p in prices.values()):
        raise ConfigurationError(message="SMS prices must be finite and not negative")
    return prices


def _cap(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(message="a spend cap must be positive and finite")
    return float(value)


@attrs.frozen(kw_only=True)
class SmsLimits:
    """Abuse and cost controls, checked before any vendor is called.

    Counters live in the shared store, so every replica counts the same
    sends. Spend is counted in one currency, the one of ``prices``.

    Attributes:
        per_phone: send limits per destination number.
        per_applicant: send limits per applicant id.
        per_client_ip: send limits per client IP (skipped when the app
            gives none).
        countries: ISO 3166 regions numbers may belong to (any when ``None``).
        prefixes: E.164 prefixes numbers must start with (any when empty).
        blocked_prefixes: E.164 prefixes never sent to (premium-rate ranges);
            numbers phonenumbers knows as premium rate are refused as well.
        require_mobile: refuse numbers known not to be mobiles (fixed line,
            VoIP, toll free...); numbers of unknown type are allowed.
        prices: price per segment per provider name.
        session_spend: the most one session may spend on texts.
        daily_spend: the most all sessions may spend in any 24 hours.
    """

    per_phone: tuple[RateLimit, ...] = attrs.field(
        default=(RateLimit(limit=5, window=3600), RateLimit(limit=10, window=_DAY)),
        converter=_rate_limits,
    )
    per_applicant: tuple[RateLimit, ...] = attrs.field(
        default=(RateLimit(limit=10, window=_DAY),), converter=_rate_limits
    )
    per_client_ip: tuple[RateLimit, ...] = attrs.field(
        default=(RateLimit(limit=20, window=3600),), converter=_rate_limits
    )
    countries: frozenset[str] | None = attrs.field(default=None, converter=_countries)
    prefixes: tuple[str, ...] = attrs.field(default=(), converter=_prefixes)
    blocked_prefixes: tuple[str, ...] = attrs.field(default=(), converter=_prefixes)
    require_mobile: bool = True
    prices: Mapping[str, float] = attrs.field(factory=dict, converter=_prices)
    session_spend: float | None = attrs.field(default=None, converter=_cap)
    daily_spend: float | None = attrs.field(default=None, converter=_cap)


@attrs.frozen(kw_only=True)
class SmsSent:
    """One send, as reported to [`OnSmsSent`][multiverify.channels.OnSmsSent] hooks and the log.

    Attributes:
        session_id: the session.
        step_id: the step.
        attempt: the step's attempt.
        send: the send's number within the attempt, from 1.
        provider: the vendor that took it.
        destination: the number, masked.
        encoding: GSM-7 or UCS-2 (for a vendor's own code: of our template).
        segments: segments by our count of the text.
        vendor_segments: segments as the vendor bills them, when it says.
        cost: what the send was charged against the spend caps.
        reason: ``start``, ``resend``, ``failover`` or ``reconciled`` (an
            earlier uncertain send the vendor confirmed; nothing was sent again).
    """

    session_id: str
    step_id: str
    attempt: int
    send: int
    provider: str
    destination: str
    encoding: SmsEncoding
    segments: int
    vendor_segments: int | None
    cost: float
    reason: str


OnSmsSent = Callable[[SmsSent], Awaitable[None]]
"""A hook called after each send (after the vendor took it)."""


@attrs.frozen(kw_only=True)
class SmsCodeState:
    """The per-step state of an [`SmsCodeChannel`][multiverify.channels.SmsCodeChannel]: never the code itself.

    Attributes:
        destination: the number, E.164.
        locale: the template's language.
        provider: the vendor of the current code.
        tried: vendors used in this attempt, in order.
        vendor_code: whether the vendor made the code (Verify APIs).
        digest: hex HMAC-SHA256 of the current code; empty once used.
        verification_id: the vendor's verification, for its own codes.
        message_id: the vendor's id of the last message.
        reference: our id of the current send.
        sends: sends so far in this attempt.
        sent_at: when the current code was sent.
        expires_at: when the current code lapses.
        wrong: wrong codes so far in this attempt.
        expired: whether the current code lapsed.
        delivered: whether the vendor reported the current code delivered.
        segments: segments of the last text.
        encoding: encoding of the last text.
    """

    destination: str = attrs.field(repr=mask_phone)
    locale: str
    provider: str
    tried: tuple[str, ...]
    vendor_code: bool
    digest: str = attrs.field(default="", repr=False)
    verification_id: str | None = None
    message_id: str | None = None
    reference: str
    sends: int
    sent_at: datetime
    expires_at: datetime
    wrong: int = 0
    expired: bool = False
    delivered: bool = False
    segments: int = 1
    encoding: str = "gsm7"


@attrs.frozen(kw_only=True)
class _Plan:
    """Everything one send needs, decided before any vendor is called."""

    context: StepContext
    settings: SmsCodeSettings
    number: str
    locale: str
    client_ip: str | None
    send: int
    order: tuple[str, ...]
    reason: str

    @classmethod
    def after(
        cls,
        context: StepContext,
        settings: SmsCodeSettings,
        state: SmsCodeState,
        *,
        client_ip: str | None,
        order: tuple[str, ...],
        reason: str,
    ) -> _Plan:
        """The next send of a waiting step, to the same number in the same language."""
        return cls(
            context=context,
            settings=settings,
            number=state.destination,
            locale=state.locale,
            client_ip=client_ip,
            send=state.sends + 1,
            order=order,
            reason=reason,
        )


@attrs.frozen(kw_only=True)
class _Limit:
    """One limit a send counts against: its take, and the quota a refusal names."""

    quota: str
    refusal: str
    take: QuotaTake
    # The vendor whose charge it is (a spend cap), given back with it.
    vendor: str | None = None

    def taken(self, at: datetime) -> dict[str, Any]:
        """What the ledger keeps of the take, to give it back."""
        entry: dict[str, Any] = {
            "key": self.take.key,
            "at": at.isoformat(),
            "amount": self.take.amount,
        }
        if self.vendor is not None:
            entry["vendor"] = self.vendor
        return entry

    def exceeded(self, refusal: Quota | None) -> QuotaExceededError:
        """The error for the limit's refusal."""
        return QuotaExceededError(
            message=self.refusal,
            quota=self.quota,
            retry_at=None if refusal is None else refusal.retry_at,
        )


def _prompt(settings: SmsCodeSettings, sent: str) -> str:
    kind = "digit" if set(settings.alphabet) <= set(_DIGITS) else "character"
    return f"Enter the {settings.code_length}-{kind} code {sent}"


def _locale(value: str) -> str:
    return "zh-CN" if value.lower().replace("_", "-").startswith("zh") else "en"


# The most characters a typed code may have, spaces and separators included
# (codes are 4 to 10 characters).
_MAX_TYPED_CODE = 64


def normalize_code(value: object) -> str:
    """A typed code with whitespace removed and every Unicode decimal digit made ASCII.

    Raises:
        InvalidInputError: the code is not text, or longer than any code
            typed with spaces could be (64 characters).
    """
    if not isinstance(value, str):
        raise InvalidInputError(message="code: expected text", field="code")
    if len(value) > _MAX_TYPED_CODE:
        # Refused before NFKC and the digit table: both take time per
        # character, and an applicant may send anything to their session.
        raise InvalidInputError(
            message=f"code: too long ({len(value)} characters; a code is at most "
            f"{_MAX_TYPED_CODE} with its spaces)",
            field="code",
        )
    out = []
    for char in unicodedata.normalize("NFKC", value):
        if char.isspace():
            continue
        digit = unicodedata.decimal(char, None)
        out.append(str(digit) if digit is not None else char)
    return "".join(out)


class _Ledger:
    """The record of each send in the shared store, keyed by its reference."""

    def __init__(self, shared: SharedState, prefix: str) -> None:
        self._shared = shared
        self._prefix = prefix

    def _key(self, reference: str) -> str:
        return f"{self._prefix}send:{reference}"

    async def get(self, reference: str, *, at: datetime) -> dict[str, Any] | None:
        raw = await self._shared.get_value(self._key(reference), at=at)
        if raw is None:
            return None
        entry: dict[str, Any] = json.loads(raw)
        return entry

    async def claim(
        self, reference: str, entry: Mapping[str, Any], *, at: datetime
    ) -> bool:
        return await self._shared.put_value(
            self._key(reference),
            json.dumps(dict(entry)),
            at=at,
            ttl=_LEDGER_TTL,
            only_if_absent=True,
        )

    async def put(
        self, reference: str, entry: Mapping[str, Any], *, at: datetime
    ) -> None:
        await self._shared.put_value(
            self._key(reference), json.dumps(dict(entry)), at=at, ttl=_LEDGER_TTL
        )

    async def forget(self, reference: str, entry: Mapping[str, Any]) -> bool:
        """Delete the send's entry if it still holds ``entry``; whether it did."""
        return await self._shared.delete_value(
            self._key(reference), value=json.dumps(dict(entry))
        )


Provider = SmsProvider | VerifyProvider


class SmsCodeChannel:
    """The ``sms_code`` channel: one-time codes by SMS, from us or from a vendor.

    Args:
        providers: the vendors, in failover order: [`SmsProvider`][multiverify.providers.SmsProvider]s
            send our code, [`VerifyProvider`][multiverify.providers.VerifyProvider]s
            send and check their own. A policy step's ``providers`` names
            the one each attempt starts with.
        secret: the server secret codes are keyed with (at least 16 bytes;
            the same on every replica).
        brand: who the code is from, in the text.
        settings: the code lifecycle (overridable per step by ``options``).
        limits: abuse and cost controls.
        templates: message templates by locale (``zh-CN``, ``en``).
        status_callback: the public URL of the delivery-receipt webhook
            ([`TwilioMessageStatus`][multiverify.webhooks.TwilioMessageStatus]);
            the session, step and attempt are added to its query.
        shared: where counters and the send ledger live; by default the
            runtime's store (``StepContext.shared``), so that they hold
            across replicas.
        on_send: hooks called after each send.
        in_flight: how long, in seconds, a send written to the ledger but
            never finished is taken to be in flight on another replica; a
            start that finds one younger is refused (``send_in_progress``),
            an older one is reconciled with its vendor. Keep it above the
            slowest vendor call.
        key_prefix: the prefix of every key this channel writes to the store.

    Raises:
        ConfigurationError: no providers, two with one name, a short
            secret, a template missing, or spend caps without a price for
            every provider.
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        secret: str | bytes,
        brand: str,
        settings: SmsCodeSettings | None = None,
        limits: SmsLimits | None = None,
        templates: Mapping[str, SmsTemplate] | None = None,
        status_callback: str | None = None,
        shared: SharedState | None = None,
        on_send: Sequence[OnSmsSent] = (),
        key_prefix: str = "multiverify:sms:",
        in_flight: float | timedelta = 30.0,
    ) -> None:
        if not providers:
            raise ConfigurationError(
                message="SmsCodeChannel needs at least one provider"
            )
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            if not isinstance(provider, SmsProvider | VerifyProvider):
                raise ConfigurationError(
                    message=f"{provider!r} is neither an SmsProvider nor a VerifyProvider"
                )
            if provider.name in self._providers:
                raise ConfigurationError(
                    message=f"two SMS providers are named {provider.name!r}"
                )
            self._providers[provider.name] = provider
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < _SECRET_MIN:
            raise ConfigurationError(
                message=f"the SMS code secret needs at least {_SECRET_MIN} bytes"
            )
        if not brand.strip():
            raise ConfigurationError(message="SmsCodeChannel needs a brand")
        self._key = key
        self._brand = brand
        self._settings = settings or SmsCodeSettings()
        self._limits = limits or SmsLimits()
        self._templates = dict(templates if templates is not None else CODE_TEMPLATES)
        for locale in ("zh-CN", "en"):
            if locale not in self._templates:
                raise ConfigurationError(message=f"no SMS template for {locale}")
        capped = (
            self._limits.session_spend is not None
            or self._limits.daily_spend is not None
        )
        unpriced = sorted(set(self._providers) - set(self._limits.prices))
        if capped and unpriced:
            raise ConfigurationError(
                message=f"spend caps need a price for every provider; none for {unpriced}"
            )
        self._status_callback = status_callback
        self._shared = shared
        self._local: MemoryStore | None = None
        self._hooks = tuple(on_send)
        self._prefix = key_prefix
        self._in_flight = parse_duration(in_flight)

    def __repr__(self) -> str:
        return f"<multiverify.channels.SmsCodeChannel({', '.join(self._providers)})>"

    @property
    def spec(self) -> ChannelSpec:
        return BUILTIN_CHANNELS["sms_code"]

    @property
    def state_type(self) -> type[SmsCodeState]:
        return SmsCodeState

    async def aclose(self) -> None:
        """Close every provider (each closes the HTTP client it made)."""
        for provider in self._providers.values():
            await provider.aclose()

    # -- the number ------------------------------------------------------------

    def check_number(self, number: str) -> str:
        """Check a destination against the number rules and return it in E.164.

        Apps may call it when the applicant types the number, to refuse it
        before a session starts.

        Raises:
            PhoneNumberRefusedError: the number is invalid, not a mobile
                (where its type is known), of a country or prefix not
                allowed, or premium rate.
        """

        def refuse(reason: str, why: str) -> PhoneNumberRefusedError:
            return PhoneNumberRefusedError(
                message=f"phone: {mask_phone(number)} {why}",
                field="phone",
                reason=reason,
            )

        try:
            parsed = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            raise refuse("invalid", "is not a phone number") from None
        if not phonenumbers.is_valid_number(parsed):
            raise refuse("invalid", "is not a valid number")
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        limits = self._limits
        kind = phonenumbers.number_type(parsed)
        if kind == phonenumbers.PhoneNumberType.PREMIUM_RATE or any(
            e164.startswith(prefix) for prefix in limits.blocked_prefixes
        ):
            raise refuse("premium_rate", "is a premium-rate number")
        region = phonenumbers.region_code_for_number(parsed) or ""
        if limits.countries is not None and region not in limits.countries:
            raise refuse(
                "country_not_allowed", f"is in {region or 'no country'}, not allowed"
            )
        if limits.prefixes and not any(e164.startswith(p) for p in limits.prefixes):
            raise refuse("country_not_allowed", "does not start with an allowed prefix")
        if limits.require_mobile and kind in _NOT_MOBILE:
            raise refuse("not_mobile", "is not a mobile number")
        return e164

    # -- the channel protocol -------------------------------------------------

    async def start(self, context: StepContext, /) -> StepOutcome:
        """Check the number and the limits, then send the first code.

        Raises:
            PhoneNumberRefusedError: the number is refused (nothing sent).
            QuotaExceededError: a limit is reached (nothing sent).
            ConfigurationError: the step's options are bad, or it names an
                unknown provider.
            ProviderError: a retryable vendor failure (the runtime retries;
                a retried start never sends the same code twice), or the
                last vendor's permanent failure.
        """
        settings = self._settings.with_options(context.options)
        number = self.check_number(context.applicant.phone)
        locale = _locale(str(context.options.get("locale", context.applicant.locale)))
        plan = _Plan(
            context=context,
            settings=settings,
            number=number,
            locale=locale,
            client_ip=context.applicant.client_ip,
            send=1,
            order=self._order(context.provider),
            reason="start",
        )
        try:
            state = await self._deliver(plan, previous=None)
        except ProviderNumberRejectedError as exc:
            return self._ended(
                context,
                ResultStatus.FAILED,
                ["invalid_number"],
                detail=f"{exc.provider} refused the number ({exc.code})",
                provider=exc.provider,
            )
        return self._waiting(context, state, _prompt(settings, "we sent by SMS"))

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        """Take a typed code, a resend request, a delivery receipt or the expiry timer.

        Payloads: ``{"code": "123456"}``; ``{"action": "resend", "client_ip": ...}``.

        Raises:
            InvalidInputError: a malformed payload or code (nothing counted).
            QuotaExceededError: a resend before the cooldown, past
                ``max_sends``, or over a limit (nothing sent).
            ProviderError: a vendor failure while checking a vendor's code
                or resending (nothing changed).
        """
        if not isinstance(state, SmsCodeState):
            raise InvalidInputError(
                message="the step has no SMS code state", field="state"
            )
        settings = self._settings.with_options(context.options)
        match message:
            case Submission(payload=payload):
                if payload.get("action") == "resend":
                    return await self._resend(context, settings, state, payload)
                if "code" in payload:
                    return await self._check(context, settings, state, payload["code"])
                raise InvalidInputError(
                    message="payload: expected a code or the resend action",
                    field="payload",
                )
            case TimerDue(name=name) if name == EXPIRY_TIMER:
                return await self._expire(context, settings, state)
            case ProviderEvent(kind="sms.status", data=data):
                return await self._receipt(context, settings, state, data)
        return Waiting(state=state)

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        """Cancel the vendor's verification, when the vendor made the code."""
        if not isinstance(state, SmsCodeState) or state.verification_id is None:
            return
        provider = self._providers.get(state.provider)
        if isinstance(provider, VerifyProvider):
            await provider.cancel(state.verification_id)
        del context

    # -- submissions ------------------------------------------------------------

    async def _check(
        self,
        context: StepContext,
        settings: SmsCodeSettings,
        state: SmsCodeState,
        value: object,
    ) -> StepOutcome:
        if state.wrong >= settings.max_attempts:
            return self._exhausted(context, state)
        code = normalize_code(value)
        if len(code) != settings.code_length or any(
            c not in settings.alphabet for c in code
        ):
            raise InvalidInputError(
                message=f"code: expected {settings.code_length} characters of the code",
                field="code",
            )
        now = context.clock.now()
        if (
            state.expired
            or now >= state.expires_at
            or not (state.digest or state.verification_id)
        ):
            return self._lapsed(context, settings, attrs.evolve(state, expired=True))
        if state.vendor_code:
            provider = self._verify(state.provider)
            assert state.verification_id is not None  # noqa: S101 - set with vendor_code
            verdict = await provider.check(
                state.verification_id, code, to=state.destination
            )
            match verdict.outcome:
                case CheckOutcome.APPROVED:
                    return self._passed(context, state)
                case CheckOutcome.EXHAUSTED:
                    return self._exhausted(
                        context, attrs.evolve(state, wrong=state.wrong + 1)
                    )
                case CheckOutcome.EXPIRED:
                    return self._lapsed(
                        context, settings, attrs.evolve(state, expired=True)
                    )
            right = False
        else:
            right = hmac.compare_digest(
                self._digest(context, state.sends, code), state.digest
            )
        if right:
            return self._passed(context, attrs.evolve(state, digest=""))
        wrong = attrs.evolve(state, wrong=state.wrong + 1)
        if wrong.wrong >= settings.max_attempts:
            return self._exhausted(context, wrong)
        left = settings.max_attempts - wrong.wrong
        return self._waiting(
            context,
            wrong,
            f"Wrong code; {left} attempt{'s' if left != 1 else ''} left",
        )

    async def _resend(
        self,
        context: StepContext,
        settings: SmsCodeSettings,
        state: SmsCodeState,
        payload: Mapping[str, Any],
    ) -> StepOutcome:
        client_ip = (
            normalize_ip(payload.get("client_ip")) or context.applicant.client_ip
        )
        now = context.clock.now()
        if state.wrong >= settings.max_attempts:
            return self._exhausted(context, state)
        if state.sends >= settings.max_sends:
            raise QuotaExceededError(
                message=f"no more codes: {settings.max_sends} were sent",
                quota="max_sends",
            )
        ready = state.sent_at + timedelta(seconds=settings.resend_cooldown)
        if now < ready:
            raise QuotaExceededError(
                message=f"a new code can be sent from {ready.isoformat()}",
                quota="resend_cooldown",
                retry_at=ready,
            )
        plan = _Plan.after(
            context,
            settings,
            state,
            client_ip=client_ip,
            order=self._order(state.provider),
            reason="resend",
        )
        fresh = await self._deliver(plan, previous=state)
        return self._waiting(context, fresh, _prompt(settings, "we just sent by SMS"))

    async def _expire(
        self, context: StepContext, settings: SmsCodeSettings, state: SmsCodeState
    ) -> StepOutcome:
        if state.expired or context.clock.now() < state.expires_at:
            return Waiting(state=state)  # a timer of an earlier code, or already lapsed
        await self._retire(state)
        return self._lapsed(context, settings, attrs.evolve(state, expired=True))

    async def _receipt(
        self,
        context: StepContext,
        settings: SmsCodeSettings,
        state: SmsCodeState,
        data: Mapping[str, Any],
    ) -> StepOutcome:
        if state.message_id is None or data.get("message_id") != state.message_id:
            return Waiting(state=state)  # about an earlier message
        status = str(data.get("status", ""))
        if status == "delivered":
            return Waiting(state=attrs.evolve(state, delivered=True))
        if status not in _DELIVERY_FAILED:
            return Waiting(state=state)
        remaining = tuple(
            n for n in self._order(state.provider) if n not in state.tried
        )
        detail = f"{state.provider} could not deliver the code ({data.get('error_code') or status})"
        if not remaining or state.sends >= settings.max_sends:
            return self._ended(
                context,
                ResultStatus.FAILED,
                ["undelivered"],
                detail=detail,
                provider=state.provider,
                state=state,
            )
        plan = _Plan.after(
            context,
            settings,
            state,
            client_ip=context.applicant.client_ip,
            order=remaining,
            reason="failover",
        )
        try:
            fresh = await self._deliver(plan, previous=state)
        except (ProviderError, QuotaExceededError) as exc:
            # A callback cannot be retried once applied: the step ends here.
            return self._ended(
                context,
                ResultStatus.FAILED,
                ["undelivered"],
                # A vendor's words may quote the number: masked.
                detail=context.applicant.redact(f"{detail}; failover failed: {exc}"),
                provider=state.provider,
                state=state,
            )
        return self._waiting(context, fresh, _prompt(settings, "we just sent by SMS"))

    # -- sending ------------------------------------------------------------------

    def _order(self, first: str | None) -> tuple[str, ...]:
        names = tuple(self._providers)
        if first is None:
            return names
        if first not in self._providers:
            raise ConfigurationError(
                message=f"no SMS provider named {first!r} (have: {', '.join(names)})"
            )
        index = names.index(first)
        return names[index:] + names[:index]

    def _verify(self, name: str) -> VerifyProvider:
        provider = self._providers[name]
        assert isinstance(provider, VerifyProvider)  # noqa: S101 - vendor_code says so
        return provider

    def _state_store(self, context: StepContext) -> SharedState:
        shared = self._shared or context.shared
        if shared is not None:
            return shared
        if self._local is None:
            log.warning(
                "the session store keeps no shared state: SMS limits and the send "
                "ledger hold in this process only"
            )
            self._local = MemoryStore()
        return self._local

    def _hash(self, kind: str, value: str) -> str:
        """A keyed digest of personal data, so store keys never hold it in clear."""
        return hmac.new(
            self._key, f"{kind}:{value}".encode(), hashlib.sha256
        ).hexdigest()[:32]

    def _code(self, reference: str, provider: str, settings: SmsCodeSettings) -> str:
        """The code of the send ``reference`` through ``provider``: drawn from an HMAC of the secret.

        Each symbol takes the next bytes of the HMAC stream by rejection
        sampling, so every symbol of the alphabet is equally likely.
        """
        alphabet = settings.alphabet
        size = len(alphabet)
        limit = 256 - 256 % size
        symbols: list[str] = []
        block = 0
        while len(symbols) < settings.code_length:
            stream = hmac.new(
                self._key, f"code:{reference}:{provider}:{block}".encode(), "sha256"
            ).digest()
            symbols.extend(alphabet[byte % size] for byte in stream if byte < limit)
            block += 1
        return "".join(symbols[: settings.code_length])

    def _message(self, plan: _Plan, reference: str, provider: str) -> tuple[str, str]:
        """The code and the text of the send ``reference`` through ``provider``."""
        settings = plan.settings
        code = self._code(reference, provider, settings)
        text = self._templates[plan.locale].render(
            brand=self._brand, code=code, minutes=max(1, math.ceil(settings.ttl / 60))
        )
        return code, text

    def _digest(self, context: StepContext, send: int, code: str) -> str:
        bound = (
            f"{context.session_id}:{context.step_id}:{context.attempt}:{send}:{code}"
        )
        return hmac.new(self._key, bound.encode(), hashlib.sha256).hexdigest()

    def _callback(self, context: StepContext) -> str | None:
        if self._status_callback is None:
            return None
        parts = urlsplit(self._status_callback)
        query = urlencode(
            {
                "session_id": context.session_id,
                "step_id": context.step_id,
                "attempt": str(context.attempt),
            }
        )
        joined = f"{parts.query}&{query}" if parts.query else query
        return urlunsplit(parts._replace(query=joined))

    async def _retire(self, state: SmsCodeState) -> None:
        """Make the current code stop working at its vendor (best effort)."""
        if state.vendor_code and state.verification_id is not None:
            try:
                await self._verify(state.provider).cancel(state.verification_id)
            except ProviderError:
                log.warning("could not cancel %s's verification", state.provider)

    def _send_limits(self, plan: _Plan) -> list[_Limit]:
        """The abuse limits a send counts against: per number, applicant and client IP."""
        context = plan.context
        limits = self._limits
        checks: list[tuple[str, str, RateLimit]] = [
            ("phone", self._hash("phone", plan.number), rule)
            for rule in limits.per_phone
        ]
        checks += [
            ("applicant", self._hash("applicant", context.applicant.applicant_id), rule)
            for rule in limits.per_applicant
        ]
        if plan.client_ip is not None:
            checks += [
                ("client_ip", self._hash("ip", plan.client_ip), rule)
                for rule in limits.per_client_ip
            ]
        return [
            _Limit(
                quota=quota,
                refusal=f"SMS limit per {quota.replace('_', ' ')} reached: "
                f"{rule.limit} in {rule.window:g}s",
                take=QuotaTake(
                    key=f"{self._prefix}{quota}:{digest}:{rule.window:g}",
                    window=rule.window,
                    limit=rule.limit,
                ),
            )
            for quota, digest, rule in checks
        ]

    def _caps(
        self, plan: _Plan, provider: str, segments: int
    ) -> tuple[float, list[_Limit]]:
        """What a send of ``segments`` through ``provider`` costs, and the spend caps it counts against."""
        limits = self._limits
        cost = limits.prices.get(provider, 0.0) * segments
        caps = [
            (
                "session_spend",
                f"session:{plan.context.session_id}",
                limits.session_spend,
                _SESSION_WINDOW,
            ),
            ("daily_spend", "day", limits.daily_spend, _DAY),
        ]
        return cost, [
            _Limit(
                quota=quota,
                refusal=f"SMS spend cap reached ({quota.replace('_', ' ')}: {cap:g})",
                take=QuotaTake(
                    key=f"{self._prefix}spend:{scope}",
                    window=window,
                    limit=cap,
                    amount=cost,
                ),
                vendor=provider,
            )
            for quota, scope, cap, window in caps
            if cap is not None
        ]

    async def _take(
        self, shared: SharedState, limits: Sequence[_Limit], at: datetime
    ) -> list[dict[str, Any]]:
        """Count the send against ``limits``, every one or none; what it took, for a refund.

        A store with the capability takes them in one atomic call
        ([`AtomicQuotas`][multiverify.stores.AtomicQuotas]); on any other,
        they are taken one at a time, and a limit that refuses gives back
        those taken before it.

        Raises:
            QuotaExceededError: the first limit that refuses; nothing stays taken.
        """
        if not limits:
            return []
        if isinstance(shared, AtomicQuotas):
            takes = [limit.take for limit in limits]
            answer = await shared.consume_all(takes, at=at)
            if answer.refused is not None:
                refused = limits[takes.index(answer.refused)]
                raise refused.exceeded(answer.refusal)
            return [limit.taken(at) for limit in limits]
        taken: list[dict[str, Any]] = []
        for limit in limits:
            take = limit.take
            quota = await shared.consume(
                take.key,
                at=at,
                window=take.window,
                limit=take.limit,
                amount=take.amount,
            )
            if not quota.allowed:
                await self._refund(shared, taken)
                raise limit.exceeded(quota)
            taken.append(limit.taken(at))
        return taken

    async def _spend(
        self,
        plan: _Plan,
        shared: SharedState,
        entry: Mapping[str, Any],
        *,
        provider: str,
        segments: int,
        at: datetime,
    ) -> dict[str, Any]:
        """The ledger's charge fields for the send through ``provider``, charged once per vendor.

        A vendor charged already (with the send's limits, or before an
        uncertain failure) keeps the cost the entry holds.
        """
        charged: list[str] = list(entry.get("charged", []))
        taken: list[dict[str, Any]] = list(entry.get("taken", []))
        if provider in charged:
            return {"charged": charged, "taken": taken}
        cost, caps = self._caps(plan, provider, segments)
        spent = await self._take(shared, caps, at)
        return {"charged": [*charged, provider], "taken": taken + spent, "cost": cost}

    async def _refund(
        self, shared: SharedState, taken: Iterable[Mapping[str, Any]]
    ) -> None:
        """Give back quota entries taken for a send that never went out (best effort)."""
        for each in taken:
            try:
                await shared.refund(
                    str(each["key"]),
                    at=datetime.fromisoformat(each["at"]),
                    amount=float(each["amount"]),
                )
            except StoreUnavailableError:
                log.warning(
                    "could not give back an SMS quota entry; it lapses with its window"
                )

    async def _unsent(
        self,
        ledger: _Ledger,
        shared: SharedState,
        reference: str,
        entry: Mapping[str, Any],
    ) -> None:
        """Nothing under ``reference`` went out: drop its ledger entry, then give back its limits.

        A retry then starts afresh, counted and charged again. An entry
        another replica changed meanwhile is left to it, with what it took.
        """
        if await ledger.forget(reference, entry):
            await self._refund(shared, entry.get("taken", ()))

    async def _deliver(
        self, plan: _Plan, *, previous: SmsCodeState | None
    ) -> SmsCodeState:
        """Send a fresh code under the plan's reference, or take up an earlier send of it."""
        context = plan.context
        shared = self._state_store(context)
        ledger = _Ledger(shared, self._prefix)
        send = plan.send
        while True:
            if send > plan.settings.max_sends:
                raise QuotaExceededError(
                    message=f"no more codes: {plan.settings.max_sends} were sent",
                    quota="max_sends",
                )
            reference = f"{context.idempotency_key}:{send}"
            now = context.clock.now()
            entry = await ledger.get(reference, at=now)
            if entry is None:
                # The send's limits and the first vendor's spend caps, all
                # taken or none.
                first = plan.order[0]
                _, text = self._message(plan, reference, first)
                cost, caps = self._caps(plan, first, sms_segments(text).segments)
                taken = await self._take(shared, [*self._send_limits(plan), *caps], now)
                entry = {
                    "status": "new",
                    "at": now.isoformat(),
                    "charged": [first],
                    "taken": taken,
                    "cost": cost,
                }
                if not await ledger.claim(reference, entry, at=now):
                    # Another replica claimed it a moment ago, counted by its
                    # own limits: give ours back and look again.
                    await self._refund(shared, taken)
                    continue
            status = entry["status"]
            if status == "sent":
                return self._rebuilt(plan, send, reference, entry, previous)
            if status == "pending":
                written = datetime.fromisoformat(entry["at"])
                in_flight = timedelta(seconds=self._in_flight)
                if now < written + in_flight:
                    raise QuotaExceededError(
                        message="a code is being sent for this step right now",
                        quota="send_in_progress",
                        retry_at=written + in_flight,
                    )
                status = "uncertain"  # whoever sent it never said how it went
            if status == "uncertain":
                found = await self._reconcile(plan, reference, entry)
                if found is not None:
                    await ledger.put(reference, found, at=now)
                    return self._rebuilt(plan, send, reference, found, previous)
                if not entry.get("vendor_code"):
                    # Not confirmed: that code must never work, so the next
                    # send carries a fresh one under the next reference.
                    await ledger.put(
                        reference, {**entry, "status": "abandoned"}, at=now
                    )
                    send += 1
                    continue
            if status == "abandoned":
                send += 1
                continue
            return await self._send(
                plan,
                ledger=ledger,
                send=send,
                reference=reference,
                entry=entry,
                previous=previous,
            )

    async def _reconcile(
        self, plan: _Plan, reference: str, entry: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Ask the vendor whether an uncertain send went out; its ledger entry if it did."""
        name = str(entry.get("provider"))
        provider = self._providers.get(name)
        if not isinstance(provider, SmsProvider) or not entry.get("digest"):
            return None
        # The send's code and text again, as they went out (or not).
        code, text = self._message(plan, reference, name)
        probe = SmsMessage(
            to=plan.number,
            text=text,
            code=code,
            ttl_minutes=max(1, math.ceil(plan.settings.ttl / 60)),
            locale=plan.locale,
            reference=reference,
        )
        try:
            receipt = await provider.find(
                probe, sent_after=datetime.fromisoformat(entry["at"])
            )
        except ProviderError:
            return None
        if receipt is None:
            return None
        return {
            **entry,
            "status": "sent",
            "message_id": receipt.message_id or entry.get("message_id"),
            "reason": "reconciled",
        }

    async def _send(
        self,
        plan: _Plan,
        *,
        ledger: _Ledger,
        send: int,
        reference: str,
        entry: dict[str, Any],
        previous: SmsCodeState | None,
    ) -> SmsCodeState:
        """Call the vendors in order until one takes the code; the ledger follows along."""
        context = plan.context
        settings = plan.settings
        shared = self._state_store(context)
        last: ProviderError | None = None
        retire = previous
        # Whether nothing under this reference can have reached the applicant:
        # then a refusal or a failure gives back the limits it took.
        unsent = entry["status"] in {"new", "failed"}
        for name in plan.order:
            provider = self._providers[name]
            vendor_code = isinstance(provider, VerifyProvider)
            code, text = self._message(plan, reference, name)
            counted = sms_segments(text)
            now = context.clock.now()
            try:
                spend = await self._spend(
                    plan,
                    shared,
                    entry,
                    provider=name,
                    segments=counted.segments,
                    at=now,
                )
            except QuotaExceededError:
                if unsent:
                    await self._unsent(ledger, shared, reference, entry)
                raise
            expires = now + timedelta(seconds=settings.ttl)
            entry = {
                **entry,
                "status": "pending",
                "at": now.isoformat(),
                "provider": name,
                "vendor_code": vendor_code,
                "digest": "" if vendor_code else self._digest(context, send, code),
                "expires_at": expires.isoformat(),
                "segments": counted.segments,
                "encoding": counted.encoding.value,
                **spend,
            }
            await ledger.put(reference, entry, at=now)
            if retire is not None:
                # The old code stops working before a vendor makes a new one
                # (and only once the new send passed every limit).
                await self._retire(retire)
                retire = None
            try:
                answer, vendor_segments = await self._call(
                    plan, provider, reference=reference, code=code, text=text
                )
            except ProviderError as exc:
                entry = await self._failed(
                    ledger, shared, reference, entry, exc, at=now
                )
                unsent = unsent and not exc.uncertain
                if isinstance(exc, ProviderNumberRejectedError):
                    # The vendor's answer says something about the number:
                    # the send limits stay taken, so that nobody probes
                    # numbers through us beyond them.
                    raise
                if exc.retryable:
                    if unsent:
                        await self._unsent(ledger, shared, reference, entry)
                    raise
                log.warning(
                    "%s refused SMS send %s (%s); trying the next vendor",
                    name,
                    send,
                    exc.code or exc.status_code,
                )
                last = exc
                continue
            entry.update(answer)
            entry["status"] = "sent"
            entry["reason"] = plan.reason
            await ledger.put(reference, entry, at=now)
            await self._report(plan, send, entry, vendor_segments)
            return self._rebuilt(plan, send, reference, entry, previous)
        assert last is not None  # noqa: S101 - the order is never empty
        if unsent:
            await self._unsent(ledger, shared, reference, entry)
        raise last

    async def _call(
        self, plan: _Plan, provider: Provider, *, reference: str, code: str, text: str
    ) -> tuple[dict[str, Any], int | None]:
        """Hand the send to ``provider``: what the ledger keeps of its answer, and the segments it bills."""
        settings = plan.settings
        if isinstance(provider, VerifyProvider):
            started = await provider.start(
                VerifyRequest(
                    to=plan.number,
                    brand=self._brand,
                    locale=plan.locale,
                    code_length=settings.code_length,
                    ttl=settings.ttl,
                    reference=reference,
                    client_ip=plan.client_ip,
                )
            )
            return {"verification_id": started.verification_id}, None
        receipt = await provider.send(
            SmsMessage(
                to=plan.number,
                text=text,
                code=code,
                ttl_minutes=max(1, math.ceil(settings.ttl / 60)),
                locale=plan.locale,
                reference=reference,
                status_callback=self._callback(plan.context),
            )
        )
        return {"message_id": receipt.message_id}, receipt.segments

    async def _failed(
        self,
        ledger: _Ledger,
        shared: SharedState,
        reference: str,
        entry: Mapping[str, Any],
        exc: ProviderError,
        *,
        at: datetime,
    ) -> dict[str, Any]:
        """Write a vendor's failure of the send to the ledger; the entry as written.

        An uncertain send may have gone out: everything stays counted. A
        definite failure sent nothing, so its vendor bills nothing: the
        vendor's charge comes back once the ledger says so (a crash in
        between keeps it counted rather than lost).
        """
        if exc.uncertain:
            failed = {**entry, "status": "uncertain"}
            await ledger.put(reference, failed, at=at)
            return failed
        name = entry["provider"]
        taken = entry.get("taken", [])
        failed = {
            **entry,
            "status": "failed",
            "charged": [c for c in entry.get("charged", []) if c != name],
            "taken": [t for t in taken if t.get("vendor") != name],
        }
        await ledger.put(reference, failed, at=at)
        await self._refund(shared, [t for t in taken if t.get("vendor") == name])
        return failed

    async def _report(
        self,
        plan: _Plan,
        send: int,
        entry: Mapping[str, Any],
        vendor_segments: int | None,
    ) -> None:
        context = plan.context
        sent = SmsSent(
            session_id=context.session_id,
            step_id=context.step_id,
            attempt=context.attempt,
            send=send,
            provider=str(entry["provider"]),
            destination=mask_phone(plan.number),
            encoding=SmsEncoding(entry["encoding"]),
            segments=int(entry["segments"]),
            vendor_segments=vendor_segments,
            cost=float(entry.get("cost", 0.0)),
            reason=str(entry.get("reason", plan.reason)),
        )
        log.info(
            "SMS code %s of %s:%s:%s sent to %s via %s: %s, %s segment(s)",
            send,
            context.session_id,
            context.step_id,
            context.attempt,
            sent.destination,
            sent.provider,
            sent.encoding.value,
            sent.segments,
        )
        for hook in self._hooks:
            try:
                await hook(sent)
            except Exception:
                log.exception("an on_send hook failed")

    def _rebuilt(
        self,
        plan: _Plan,
        send: int,
        reference: str,
        entry: Mapping[str, Any],
        previous: SmsCodeState | None,
    ) -> SmsCodeState:
        provider = str(entry["provider"])
        tried = previous.tried if previous is not None else ()
        return SmsCodeState(
            destination=plan.number,
            locale=plan.locale,
            provider=provider,
            tried=tried if provider in tried else (*tried, provider),
            vendor_code=bool(entry.get("vendor_code")),
            digest=str(entry.get("digest") or ""),
            verification_id=entry.get("verification_id"),
            message_id=entry.get("message_id"),
            reference=reference,
            sends=send,
            sent_at=datetime.fromisoformat(entry["at"]),
            expires_at=datetime.fromisoformat(entry["expires_at"]),
            wrong=previous.wrong if previous is not None else 0,
            segments=int(entry["segments"]),
            encoding=str(entry["encoding"]),
        )

    # -- outcomes -------------------------------------------------------------------

    def _waiting(
        self, context: StepContext, state: SmsCodeState, message: str
    ) -> Waiting:
        return Waiting(
            state=state,
            challenge=Challenge(
                step_id=context.step_id,
                kind="code",
                message=message,
                destination=mask_phone(state.destination),
                expires_at=state.expires_at,
            ),
            timers=((EXPIRY_TIMER, state.expires_at),),
        )

    def _lapsed(
        self, context: StepContext, settings: SmsCodeSettings, state: SmsCodeState
    ) -> StepOutcome:
        if state.sends >= settings.max_sends:
            return self._ended(
                context,
                ResultStatus.FAILED,
                ["code_expired"],
                detail="the last code expired",
                provider=state.provider,
                state=state,
            )
        return Waiting(
            state=state,
            challenge=Challenge(
                step_id=context.step_id,
                kind="code",
                message="The code expired; ask for a new one",
                destination=mask_phone(state.destination),
                expires_at=None,
            ),
        )

    def _passed(self, context: StepContext, state: SmsCodeState) -> Finished:
        return self._ended(
            context,
            ResultStatus.PASSED,
            ["code_verified"],
            detail="the applicant typed the code",
            provider=state.provider,
            state=state,
        )

    def _exhausted(self, context: StepContext, state: SmsCodeState) -> Finished:
        return self._ended(
            context,
            ResultStatus.FAILED,
            ["wrong_code", "attempts_exhausted"],
            detail=f"{state.wrong} wrong codes",
            provider=state.provider,
            state=state,
        )

    def _ended(
        self,
        context: StepContext,
        status: ResultStatus,
        signals: Sequence[str],
        *,
        detail: str,
        provider: str | None,
        state: SmsCodeState | None = None,
    ) -> Finished:
        facts: dict[str, Any] = {}
        if state is not None:
            facts = {
                "sends": state.sends,
                "wrong_attempts": state.wrong,
                "vendors": list(state.tried),
                "vendor_code": state.vendor_code,
                "segments": state.segments,
                "encoding": state.encoding,
                "delivered": state.delivered,
            }
            state = attrs.evolve(state, digest="")
        del context
        return Finished(
            result=ChannelResult(
                status=status,
                signals=tuple(Signal(name=name) for name in signals),
                provider=provider,
                detail=detail,
                facts=facts,
            ),
            state=state,
        )
