"""What the SMS channel asks of a vendor: send a text we wrote, or run the vendor's own code."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from .._masking import mask_phone

__all__ = [
    "CheckOutcome",
    "SmsMessage",
    "SmsProvider",
    "SmsReceipt",
    "VerifyCheck",
    "VerifyProvider",
    "VerifyRequest",
    "VerifyStarted",
]


@attrs.frozen(kw_only=True)
class SmsMessage:
    """One one-time-code text to send to one number.

    Vendors that send what we write (Twilio Messaging) send ``text``; vendors
    that only send registered templates (Aliyun, Tencent) fill their template
    with ``code`` and ``ttl_minutes`` instead.

    Attributes:
        to: the destination, E.164.
        text: the whole message as rendered from the channel's template.
        code: the one-time code (never logged).
        ttl_minutes: how long the code is valid, in whole minutes.
        locale: the template's language, ``zh-CN`` or ``en``.
        reference: our id of this send (``session:step:attempt:send``): the
            vendor's client reference where it has one (Aliyun ``OutId``,
            Tencent ``SessionContext``), and the key to find it again.
        status_callback: where the vendor reports delivery, when it does.
    """

    to: str = attrs.field(repr=mask_phone)
    text: str = attrs.field(repr=False)
    code: str = attrs.field(repr=False)
    ttl_minutes: int
    locale: str
    reference: str
    status_callback: str | None = None


@attrs.frozen(kw_only=True)
class SmsReceipt:
    """The vendor took a message.

    Attributes:
        provider: the vendor's name.
        message_id: the vendor's id of the message (Twilio ``sid``, Aliyun
            ``BizId``, Tencent ``SerialNo``), when it gave one.
        status: the vendor's word for the message's state, such as ``queued``.
        segments: how many segments the vendor bills, when it says.
    """

    provider: str
    message_id: str | None = None
    status: str = "accepted"
    segments: int | None = None


@runtime_checkable
class SmsProvider(Protocol):
    """**Protocol**: sends a one-time code we generated, by SMS.

    Raise a [`ProviderError`][multiverify.exceptions.ProviderError]:
    retryable ones are retried after the vendor's delay, a
    [`ProviderNumberRejectedError`][multiverify.exceptions.ProviderNumberRejectedError]
    ends the step, other permanent ones fail over to the next vendor. Mark a
    failure ``uncertain`` when the vendor may have sent the message anyway.
    """

    @property
    def name(self) -> str:
        """The vendor's name, as policies list it in ``providers``."""
        ...

    async def send(self, message: SmsMessage, /) -> SmsReceipt:
        """Hand one message to the vendor."""
        ...

    async def find(
        self, message: SmsMessage, /, *, sent_after: datetime
    ) -> SmsReceipt | None:
        """Look up an earlier send of ``message`` by its ``reference``.

        Called after an uncertain failure, before anything is sent again.
        Returns ``None`` when the vendor has no such message or cannot
        look messages up by our reference.
        """
        ...

    async def aclose(self) -> None:
        """Release the HTTP client if the provider made it."""
        ...


@attrs.frozen(kw_only=True)
class VerifyRequest:
    """Ask a vendor to generate, send and later check its own code.

    Attributes:
        to: the destination, E.164.
        brand: who the code is from, shown in the vendor's text.
        locale: ``zh-CN`` or ``en``.
        code_length: digits in the code.
        ttl: seconds the code should live (vendors round or cap it).
        reference: our id of this send, for the vendor's client reference.
        client_ip: the applicant's IP address, for the vendor's fraud checks.
    """

    to: str = attrs.field(repr=mask_phone)
    brand: str
    locale: str
    code_length: int
    ttl: float
    reference: str
    client_ip: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class VerifyStarted:
    """The vendor sent its code.

    Attributes:
        provider: the vendor's name.
        verification_id: the vendor's id of the verification.
        resumed: the vendor named a verification already in progress for
            the number instead of starting one (an earlier, uncertain start).
    """

    provider: str
    verification_id: str
    resumed: bool = False


class CheckOutcome(enum.StrEnum):
    """What the vendor said of a code."""

    APPROVED = "approved"
    WRONG = "wrong"
    EXPIRED = "expired"
    """The verification is gone: expired, cancelled or already approved."""
    EXHAUSTED = "exhausted"
    """The vendor's own limit of wrong codes was reached."""


@attrs.frozen(kw_only=True)
class VerifyCheck:
    """The answer to a code check."""

    outcome: CheckOutcome = attrs.field(converter=CheckOutcome)
    status: str = ""
    """The vendor's own status word."""


@runtime_checkable
class VerifyProvider(Protocol):
    """**Protocol**: a vendor that generates, sends and checks its own code (Twilio Verify, Vonage Verify)."""

    @property
    def name(self) -> str:
        """The vendor's name, as policies list it in ``providers``."""
        ...

    async def start(self, request: VerifyRequest, /) -> VerifyStarted:
        """Start a verification: the vendor sends its code."""
        ...

    async def check(
        self, verification_id: str, code: str, /, *, to: str
    ) -> VerifyCheck:
        """Check a code the applicant typed."""
        ...

    async def cancel(self, verification_id: str, /) -> None:
        """Cancel a verification (its code stops working); a gone one is fine."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client if the provider made it."""
        ...
