"""Twilio Messaging status callbacks: delivery receipts for the SMS code channel.

Per https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks:
Twilio POSTs form data to the message's ``StatusCallback`` each time its
status changes, with ``MessageSid``, ``MessageStatus`` (``queued``,
``sent``, ``delivered``, ``undelivered``, ``failed``...) and, for failures,
``ErrorCode`` (30003 unreachable, 30005 unknown destination, 30006
landline...); the request is signed with ``X-Twilio-Signature`` (checked by
[`TwilioSignature`][multiverify.webhooks.TwilioSignature]) and carries
``I-Twilio-Idempotency-Token``, the same on each redelivery. The channel
puts ``session_id``, ``step_id`` and ``attempt`` in the callback URL's
query, which the signature covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from .._session import Session
from ..channels import ProviderEvent
from ..exceptions import WebhookFormatError
from ._base import WebhookRequest, WebhookResponse
from ._twilio import TwilioSignature

__all__ = ["TwilioMessageStatus"]

_VENDOR = "twilio-sms"


class TwilioMessageStatus:
    """The webhook handler for Twilio message status callbacks.

    Each verified callback becomes one ``sms.status`` event for its step,
    with ``message_id``, ``status`` and ``error_code`` in its data; the
    channel fails over to the next vendor on ``undelivered`` or ``failed``.

    Args:
        signature: the account's signature check.
    """

    def __init__(self, signature: TwilioSignature) -> None:
        self._signature = signature

    def __repr__(self) -> str:
        return "<multiverify.webhooks.TwilioMessageStatus>"

    @property
    def vendor(self) -> str:
        return _VENDOR

    async def parse(self, request: WebhookRequest, /) -> Sequence[ProviderEvent]:
        """Check the signature and read the status.

        A callback whose URL names no session (one not made by the channel)
        gives no event.

        Raises:
            WebhookSignatureError: unsigned or forged.
            WebhookFormatError: no ``MessageSid`` or ``MessageStatus``, or an
                ``attempt`` that is not a number.
        """
        form = dict(self._signature.verify(request))
        query = dict(parse_qsl(urlsplit(request.url).query))
        session_id, step_id = query.get("session_id"), query.get("step_id")
        if not session_id or not step_id:
            return []
        sid, status = form.get("MessageSid"), form.get("MessageStatus")
        if not sid or not status:
            raise WebhookFormatError(
                message="Twilio status callback without MessageSid or MessageStatus",
                vendor=_VENDOR,
            )
        attempt_text = query.get("attempt")
        attempt = None
        if attempt_text is not None:
            if not (attempt_text.isascii() and attempt_text.isdigit()):
                raise WebhookFormatError(
                    message=f"callback URL attempt {attempt_text!r} is not a number",
                    vendor=_VENDOR,
                )
            attempt = int(attempt_text)
        token = request.header("i-twilio-idempotency-token")
        return [
            ProviderEvent(
                session_id=session_id,
                step_id=step_id,
                kind="sms.status",
                data={
                    "message_id": sid,
                    "status": status,
                    "error_code": form.get("ErrorCode") or None,
                },
                dedupe_key=f"twilio-sms:{token}"
                if token
                else f"twilio-sms:{sid}:{status}",
                attempt=attempt,
            )
        ]

    def respond(
        self, request: WebhookRequest, sessions: Sequence[Session | None], /
    ) -> WebhookResponse:
        """An empty 204: Twilio reads nothing from the answer."""
        del request, sessions
        return WebhookResponse()
