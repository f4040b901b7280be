"""Twilio Programmable Messaging: our one-time code sent through the Messages API.

Wire format, from the official spec ``spec/json/twilio_api_v2010.json`` of
``twilio/twilio-oai`` (``CreateMessage``) and
https://www.twilio.com/docs/messaging/api/message-resource:
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form fields ``To``,
``Body``, one of ``From`` or ``MessagingServiceSid``, and ``StatusCallback``;
the answer is the Message resource (``sid``, ``status`` ``queued`` or
``accepted``, ``num_segments``, ``error_code``). Delivery is reported to
``StatusCallback`` (``MessageStatus`` ``sent``, ``delivered``,
``undelivered``, ``failed``), which
[`TwilioMessageStatus`][multiverify.webhooks.TwilioMessageStatus] reads.

Twilio's Messages API has no idempotency key
(https://www.twilio.com/docs/errors/20500) and no lookup by a client
reference. It does list the messages sent to a number
(``GET /2010-04-01/Accounts/{AccountSid}/Messages.json`` with ``To``,
``From`` and ``PageSize``; the answer's ``messages`` carry ``sid``, ``body``
and ``status``, newest first), and a send's text is unique to it (its code
is drawn from the send's reference), so
[`find`][multiverify.providers.TwilioMessaging.find] confirms an uncertain
send by its text. When it cannot, the channel sends a fresh code, which
invalidates the one that may have gone out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from ..exceptions import (
    ConfigurationError,
    ProviderNumberRejectedError,
    ProviderRejectedError,
)
from ._sms import SmsMessage, SmsReceipt
from ._twilio import TwilioAccount

__all__ = ["TwilioMessaging", "number_rejected"]

# Errors about the destination itself (https://www.twilio.com/docs/api/errors):
# 21211 invalid 'To' number, 21214 'To' cannot be reached, 21217 number not
# valid, 21610 the recipient replied STOP, 21612 no route to the number,
# 21614 'To' is not a mobile number, 60205 (Verify) SMS to a landline.
_NUMBER_CODES = frozenset(
    {"21211", "21214", "21217", "21610", "21612", "21614", "60205"}
)


# A listed message in one of these states never reached the phone.
_NOT_SENT: Final = frozenset({"failed", "undelivered", "canceled"})


def number_rejected(error: ProviderRejectedError) -> ProviderRejectedError:
    """``error`` as a [`ProviderNumberRejectedError`][multiverify.exceptions.ProviderNumberRejectedError] when Twilio refused the number itself."""
    if error.code not in _NUMBER_CODES:
        return error
    return ProviderNumberRejectedError(
        message=error.message,
        provider=error.provider,
        status_code=error.status_code,
        code=error.code,
        request_id=error.request_id,
    )


class TwilioMessaging:
    """Sends one-time codes as plain texts through Twilio's Messages API.

    Args:
        account: the Twilio account (credentials and HTTP client).
        from_: the sender: a Twilio number or an alphanumeric sender id.
        messaging_service_sid: a Messaging Service (``MG...``) to send from
            instead of ``from_``.
        name: the provider's name in policies and results.

    Raises:
        ConfigurationError: neither or both of ``from_`` and
            ``messaging_service_sid`` were given.
    """

    def __init__(
        self,
        account: TwilioAccount,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        name: str = "twilio",
    ) -> None:
        if (from_ is None) == (messaging_service_sid is None):
            raise ConfigurationError(
                message="TwilioMessaging needs exactly one of from_ and messaging_service_sid"
            )
        self._account = account
        self._from = from_
        self._service = messaging_service_sid
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.TwilioMessaging({self._name})>"

    @property
    def _messages(self) -> str:
        return (
            f"{self._account.api_base}/2010-04-01/Accounts/"
            f"{self._account.account_sid}/Messages.json"
        )

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: SmsMessage, /) -> SmsReceipt:
        """Create a Message resource.

        Raises:
            ProviderNumberRejectedError: Twilio refused the destination.
            ProviderError: any other failure, mapped by ``TwilioAccount``.
        """
        form: dict[str, str] = {"To": message.to, "Body": message.text}
        if self._service is not None:
            form["MessagingServiceSid"] = self._service
        else:
            assert self._from is not None  # noqa: S101 - checked in __init__
            form["From"] = self._from
        if message.status_callback is not None:
            form["StatusCallback"] = message.status_callback
        try:
            data = await self._account.request("POST", self._messages, form=form)
        except ProviderRejectedError as exc:
            raise number_rejected(exc) from exc
        segments = data.get("num_segments")
        try:
            count = int(segments) if segments is not None else 0
        except (TypeError, ValueError):
            count = 0
        return SmsReceipt(
            provider=self._name,
            message_id=str(data["sid"]) if data.get("sid") else None,
            status=str(data.get("status") or "queued"),
            # With a Messaging Service the count is 0 until a sender is chosen.
            segments=count or None,
        )

    async def find(
        self, message: SmsMessage, /, *, sent_after: datetime
    ) -> SmsReceipt | None:
        """Find an earlier send of ``message`` among the latest messages to its number.

        Matched by the exact text (which holds the send's own code); a
        message that failed or went undelivered counts as not sent.
        ``sent_after`` is not sent to Twilio: its ``DateSent`` filter skips
        messages still queued, which did go out.

        Raises:
            ProviderError: the listing itself failed.
        """
        del sent_after
        if not message.text:
            return None
        params = {"To": message.to, "PageSize": "50"}
        if self._from is not None:
            params["From"] = self._from
        data = await self._account.request("GET", self._messages, params=params)
        listed = data.get("messages")
        for item in listed if isinstance(listed, list) else []:
            if not isinstance(item, dict) or item.get("body") != message.text:
                continue
            status = str(item.get("status") or "queued")
            if status in _NOT_SENT:
                return None
            return SmsReceipt(
                provider=self._name,
                message_id=str(item["sid"]) if item.get("sid") else None,
                status=status,
            )
        return None

    async def aclose(self) -> None:
        """Close the account's HTTP client if the account made it."""
        await self._account.aclose()
