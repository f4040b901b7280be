"""Tests for Twilio message status callbacks."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from multiverify.exceptions import WebhookFormatError, WebhookSignatureError
from multiverify.webhooks import (
    TwilioMessageStatus,
    TwilioSignature,
    WebhookHandler,
    WebhookRequest,
    twilio_signature,
)

TOKEN = "auth-token"
URL = "https://app.example/hooks/twilio-sms?session_id=s1&step_id=sms&attempt=2"


def callback(
    params: dict[str, str],
    *,
    url: str = URL,
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> WebhookRequest:
    """A form callback signed as Twilio signs it."""
    return WebhookRequest(
        method="POST",
        url=url,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(token, url, params.items()),
            **(headers or {}),
        },
        body=urlencode(params).encode(),
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


STATUS = {
    "MessageSid": "SM1",
    "MessageStatus": "undelivered",
    "ErrorCode": "30003",
    "To": "+8613800138000",
}


class TestTwilioMessageStatus:
    async def test_parses_a_signed_receipt(self) -> None:
        """A signed callback becomes one sms.status event routed by the URL's query."""
        handler: WebhookHandler = TwilioMessageStatus(TwilioSignature(TOKEN))
        (event,) = await handler.parse(
            callback(STATUS, headers={"I-Twilio-Idempotency-Token": "tok-1"})
        )
        assert (event.session_id, event.step_id, event.attempt) == ("s1", "sms", 2)
        assert event.kind == "sms.status"
        assert event.data == {
            "message_id": "SM1",
            "status": "undelivered",
            "error_code": "30003",
        }
        assert event.dedupe_key == "twilio-sms:tok-1"
        assert handler.vendor == "twilio-sms"
        assert handler.respond(callback(STATUS), [None]).status == 204

    async def test_dedupe_key_without_the_token(self) -> None:
        """Without Twilio's idempotency token the key is the message and its status."""
        handler = TwilioMessageStatus(TwilioSignature(TOKEN))
        (event,) = await handler.parse(
            callback({"MessageSid": "SM1", "MessageStatus": "delivered"})
        )
        assert event.dedupe_key == "twilio-sms:SM1:delivered"
        assert event.data["error_code"] is None

    async def test_forged_callback(self) -> None:
        """A callback signed with another token is refused."""
        handler = TwilioMessageStatus(TwilioSignature(TOKEN))
        with pytest.raises(WebhookSignatureError):
            await handler.parse(callback(STATUS, token="other"))

    async def test_no_route_no_event(self) -> None:
        """A callback whose URL names no session gives nothing."""
        handler = TwilioMessageStatus(TwilioSignature(TOKEN))
        assert (
            await handler.parse(callback(STATUS, url="https://app.example/hooks")) == []
        )

    @pytest.mark.parametrize(
        ("params", "url"),
        [
            ({"MessageStatus": "sent"}, URL),
            ({"MessageSid": "SM1"}, URL),
            (STATUS, "https://app.example/h?session_id=s1&step_id=sms&attempt=two"),
        ],
    )
    async def test_malformed(self, params: dict[str, str], url: str) -> None:
        """A signed callback missing its fields, or with a bad attempt, is malformed."""
        handler = TwilioMessageStatus(TwilioSignature(TOKEN))
        with pytest.raises(WebhookFormatError):
            await handler.parse(callback(params, url=url))

    async def test_attempt_is_optional(self) -> None:
        """Without an attempt in the URL the event carries none."""
        handler = TwilioMessageStatus(TwilioSignature(TOKEN))
        url = "https://app.example/h?session_id=s1&step_id=sms"
        (event,) = await handler.parse(callback(STATUS, url=url))
        assert event.attempt is None
        assert repr(handler) == "<multiverify.webhooks.TwilioMessageStatus>"
