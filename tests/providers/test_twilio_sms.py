"""Tests for Twilio Messaging (our code) and Twilio Verify (Twilio's code)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import attrs
import httpx
import pytest
import respx

from multiverify.exceptions import (
    ConfigurationError,
    ProviderError,
    ProviderNumberRejectedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from multiverify.providers import (
    CheckOutcome,
    SmsMessage,
    SmsProvider,
    TwilioAccount,
    TwilioMessaging,
    TwilioVerify,
    VerifyProvider,
    VerifyRequest,
)

from .messages import EN_MESSAGE as MESSAGE

MESSAGES = "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
VERIFY = "https://verify.twilio.com/v2/Services/VA1"


@pytest.fixture
def twilio(
    router: respx.Router, client: httpx.AsyncClient
) -> tuple[TwilioAccount, respx.Router]:
    """A TwilioAccount on a respx router."""
    return TwilioAccount(account_sid="AC123", auth_token="tok", client=client), router


def form(request: httpx.Request) -> dict[str, str]:
    """A request's form body."""
    return dict(parse_qsl(request.content.decode()))


def error(status: int, code: int) -> httpx.Response:
    """A Twilio error answer."""
    return httpx.Response(
        status, json={"code": code, "message": "refused", "status": status}
    )


class TestTwilioMessaging:
    async def test_send(self, twilio: tuple[TwilioAccount, respx.Router]) -> None:
        """A message is a form POST with To, From, Body and StatusCallback."""
        account, router = twilio
        route = router.post(MESSAGES).mock(
            return_value=httpx.Response(
                201, json={"sid": "SM1", "status": "queued", "num_segments": "1"}
            )
        )
        provider = TwilioMessaging(account, from_="+15005550006")
        assert isinstance(provider, SmsProvider)

        receipt = await provider.send(MESSAGE)

        assert (receipt.message_id, receipt.status, receipt.segments) == (
            "SM1",
            "queued",
            1,
        )
        assert form(route.calls.last.request) == {
            "To": "+14155550123",
            "Body": "Acme: your verification code is 123456.",
            "From": "+15005550006",
            "StatusCallback": MESSAGE.status_callback,
        }

    async def test_messaging_service(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """With a Messaging Service the sender is its sid; 0 segments means not known yet."""
        account, router = twilio
        route = router.post(MESSAGES).mock(
            return_value=httpx.Response(
                201, json={"sid": "SM2", "status": "accepted", "num_segments": "0"}
            )
        )
        provider = TwilioMessaging(account, messaging_service_sid="MG1")
        receipt = await provider.send(
            SmsMessage(
                to="+14155550123",
                text="t",
                code="1",
                ttl_minutes=1,
                locale="en",
                reference="r",
            )
        )
        sent = form(route.calls.last.request)
        assert sent["MessagingServiceSid"] == "MG1"
        assert "From" not in sent
        assert "StatusCallback" not in sent
        assert receipt.segments is None

    @pytest.mark.parametrize("code", [21211, 21614, 21610])
    async def test_number_errors(
        self, twilio: tuple[TwilioAccount, respx.Router], code: int
    ) -> None:
        """An invalid, landline or opted-out number is the number's own error."""
        account, router = twilio
        router.post(MESSAGES).mock(return_value=error(400, code))
        with pytest.raises(ProviderNumberRejectedError) as info:
            await TwilioMessaging(account, from_="+1").send(MESSAGE)
        assert info.value.code == str(code)

    async def test_other_errors_keep_their_kind(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """A permission error stays rejected; a 500 is retryable and uncertain."""
        account, router = twilio
        router.post(MESSAGES).mock(side_effect=[error(400, 21408), error(500, 20500)])
        provider = TwilioMessaging(account, from_="+1")
        with pytest.raises(ProviderRejectedError) as info:
            await provider.send(MESSAGE)
        assert type(info.value) is ProviderRejectedError
        with pytest.raises(ProviderUnavailableError) as unavailable:
            await provider.send(MESSAGE)
        assert unavailable.value.uncertain

    async def test_find_by_text(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """``find`` lists the messages to the number and matches the exact text."""
        account, router = twilio
        listed = [
            {"sid": "SM0", "body": "Acme: your verification code is 999999."},
            {"sid": "SM1", "body": MESSAGE.text, "status": "delivered"},
        ]
        route = router.get(MESSAGES).mock(
            side_effect=lambda _: httpx.Response(200, json={"messages": listed})
        )
        provider = TwilioMessaging(account, from_="+1", name="tw")
        after = datetime.now(UTC)

        receipt = await provider.find(MESSAGE, sent_after=after)

        assert receipt is not None
        assert (receipt.provider, receipt.message_id, receipt.status) == (
            "tw",
            "SM1",
            "delivered",
        )
        assert dict(route.calls.last.request.url.params) == {
            "To": "+14155550123",
            "From": "+1",
            "PageSize": "50",
        }
        listed[1]["status"] = "undelivered"
        assert await provider.find(MESSAGE, sent_after=after) is None
        listed.pop()
        assert await provider.find(MESSAGE, sent_after=after) is None
        route.mock(side_effect=lambda _: httpx.Response(200, json={"messages": "?"}))
        assert await provider.find(MESSAGE, sent_after=after) is None
        probe = attrs.evolve(MESSAGE, text="")
        assert await provider.find(probe, sent_after=after) is None
        assert route.call_count == 4
        assert provider.name == "tw"
        assert repr(provider) == "<multiverify.providers.TwilioMessaging(tw)>"
        await provider.aclose()

    def test_needs_one_sender(self, twilio: tuple[TwilioAccount, respx.Router]) -> None:
        """Exactly one of ``from_`` and a Messaging Service is required."""
        account, _ = twilio
        with pytest.raises(ConfigurationError):
            TwilioMessaging(account)
        with pytest.raises(ConfigurationError):
            TwilioMessaging(account, from_="+1", messaging_service_sid="MG1")


REQUEST = VerifyRequest(
    to="+14155550123",
    brand="Acme",
    locale="en",
    code_length=6,
    ttl=300,
    reference="s1:sms:1:1",
    client_ip="203.0.113.7",
)


class TestTwilioVerify:
    async def test_start(self, twilio: tuple[TwilioAccount, respx.Router]) -> None:
        """A verification is created for SMS with the locale and the device IP."""
        account, router = twilio
        route = router.post(f"{VERIFY}/Verifications").mock(
            return_value=httpx.Response(201, json={"sid": "VE1", "status": "pending"})
        )
        provider = TwilioVerify(account, service_sid="VA1")
        assert isinstance(provider, VerifyProvider)

        started = await provider.start(REQUEST)

        assert started.verification_id == "VE1"
        assert started.provider == "twilio-verify"
        assert form(route.calls.last.request) == {
            "To": "+14155550123",
            "Channel": "sms",
            "Locale": "en",
            "DeviceIp": "203.0.113.7",
        }

    @pytest.mark.parametrize("body", [{}, {"sid": None}, {"sid": ""}])
    async def test_start_without_sid(
        self, twilio: tuple[TwilioAccount, respx.Router], body: dict[str, object]
    ) -> None:
        """A success answer naming no verification is a typed, uncertain error."""
        account, router = twilio
        router.post(f"{VERIFY}/Verifications").respond(201, json=body)

        with pytest.raises(ProviderResponseError) as info:
            await TwilioVerify(account, service_sid="VA1").start(REQUEST)

        assert info.value.field == "sid"
        assert info.value.uncertain
        assert not info.value.retryable

    async def test_start_errors(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """A landline is the number's error; too many concurrent requests is throttling."""
        account, router = twilio
        router.post(f"{VERIFY}/Verifications").mock(
            side_effect=[error(400, 60205), error(429, 60212), error(429, 60203)]
        )
        provider = TwilioVerify(account, service_sid="VA1")
        with pytest.raises(ProviderNumberRejectedError):
            await provider.start(REQUEST)
        with pytest.raises(ProviderRateLimitedError):
            await provider.start(REQUEST)
        with pytest.raises(ProviderRejectedError) as info:
            await provider.start(REQUEST)  # max sends: a limit, not throttling
        assert not info.value.retryable

    @pytest.mark.parametrize(
        ("answer", "outcome"),
        [
            (
                httpx.Response(200, json={"status": "approved", "valid": True}),
                CheckOutcome.APPROVED,
            ),
            (
                httpx.Response(200, json={"status": "pending", "valid": False}),
                CheckOutcome.WRONG,
            ),
            (httpx.Response(200, json={"status": "canceled"}), CheckOutcome.EXPIRED),
            (
                httpx.Response(200, json={"status": "max_attempts_reached"}),
                CheckOutcome.EXHAUSTED,
            ),
            (error(404, 20404), CheckOutcome.EXPIRED),
            (error(429, 60202), CheckOutcome.EXHAUSTED),
        ],
    )
    async def test_check(
        self,
        twilio: tuple[TwilioAccount, respx.Router],
        answer: httpx.Response,
        outcome: CheckOutcome,
    ) -> None:
        """Each answer of VerificationCheck maps onto the channel's lifecycle."""
        account, router = twilio
        route = router.post(f"{VERIFY}/VerificationCheck").mock(return_value=answer)
        checked = await TwilioVerify(account, service_sid="VA1").check(
            "VE1", "123456", to="+14155550123"
        )
        assert checked.outcome is outcome
        assert form(route.calls.last.request) == {
            "Code": "123456",
            "VerificationSid": "VE1",
        }

    async def test_check_failure_is_raised(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """A 503 while checking is the provider's error, not a verdict on the code."""
        account, router = twilio
        router.post(f"{VERIFY}/VerificationCheck").mock(return_value=error(503, 20503))
        with pytest.raises(ProviderUnavailableError):
            await TwilioVerify(account, service_sid="VA1").check("VE1", "1", to="+1")

    async def test_cancel(self, twilio: tuple[TwilioAccount, respx.Router]) -> None:
        """Cancelling posts Status=canceled; a verification already gone is fine."""
        account, router = twilio
        route = router.post(f"{VERIFY}/Verifications/VE1").mock(
            side_effect=[
                httpx.Response(200, json={"sid": "VE1", "status": "canceled"}),
                error(404, 20404),
                error(401, 20003),
            ]
        )
        provider = TwilioVerify(account, service_sid="VA1")
        await provider.cancel("VE1")
        assert form(route.calls.last.request) == {"Status": "canceled"}
        await provider.cancel("VE1")
        with pytest.raises(ProviderError):
            await provider.cancel("VE1")
        assert repr(provider) == "<multiverify.providers.TwilioVerify(twilio-verify)>"
        await provider.aclose()
