"""Tests for Twilio account credentials and error mapping."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from multiverify.exceptions import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from multiverify.providers import TwilioAccount

CALLS = "https://api.twilio.com/2010-04-01/Accounts/AC123/Calls.json"


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[TwilioAccount, respx.Router]]:
    """A TwilioAccount on a respx router."""
    router = respx.Router(assert_all_called=False)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(router.async_handler)
    ) as client:
        yield (
            TwilioAccount(account_sid="AC123", auth_token="tok", client=client),
            router,
        )


def basic(user: str, password: str) -> str:
    """An HTTP Basic header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestTwilioAccount:
    async def test_form_post_with_basic_auth(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """A request is form-encoded, repeats list fields, and carries Basic auth."""
        account, router = twilio
        route = router.post(CALLS).mock(
            return_value=httpx.Response(201, json={"sid": "CA1"})
        )

        data = await account.request(
            "POST",
            CALLS,
            form={
                "To": "+8613800138000",
                "StatusCallbackEvent": ["initiated", "answered"],
            },
        )

        assert data == {"sid": "CA1"}
        sent = route.calls.last.request
        assert sent.headers["Authorization"] == basic("AC123", "tok")
        assert parse_qsl(sent.content.decode()) == [
            ("To", "+8613800138000"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "answered"),
        ]

    async def test_api_key_auth_and_query(self) -> None:
        """An API key replaces the auth token in Basic auth; params go in the query."""
        router = respx.Router()
        route = router.get(
            url__startswith="https://verify.twilio.com/v2/Services"
        ).mock(return_value=httpx.Response(200, json={"status": "pending"}))
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(router.async_handler)
        ) as client:
            account = TwilioAccount(
                account_sid="AC123",
                api_key_sid="SK1",
                api_key_secret="sec",
                client=client,
            )
            await account.request(
                "GET",
                f"{account.verify_base}/v2/Services/VA1/Verifications/VE1",
                params={"a": "b"},
            )

        sent = route.calls.last.request
        assert sent.headers["Authorization"] == basic("SK1", "sec")
        assert sent.url.params["a"] == "b"

    def test_needs_credentials(self) -> None:
        """Without a token or API key the account is a configuration error."""
        with pytest.raises(ConfigurationError):
            TwilioAccount(account_sid="AC123", api_key_sid="SK1")

    @pytest.mark.parametrize(
        ("status", "code", "kind", "retryable"),
        [
            (400, 60200, ProviderRejectedError, False),
            (404, 20404, ProviderRejectedError, False),
            (401, 20003, ProviderAuthError, False),
            (429, 60203, ProviderRejectedError, False),
            (429, 60202, ProviderRejectedError, False),
            (429, 60212, ProviderRateLimitedError, True),
            (503, 20500, ProviderUnavailableError, True),
        ],
    )
    async def test_errors_carry_twilio_code(
        self,
        twilio: tuple[TwilioAccount, respx.Router],
        status: int,
        code: int,
        kind: type[ProviderError],
        retryable: bool,
    ) -> None:
        """Errors are mapped by status, except lifecycle limits, and carry Twilio's code and message."""
        account, router = twilio
        router.post(CALLS).mock(
            return_value=httpx.Response(
                status,
                json={
                    "code": code,
                    "message": "Invalid parameter",
                    "more_info": "x",
                    "status": status,
                },
                headers={"Twilio-Request-Id": "RQ1"},
            )
        )

        with pytest.raises(kind) as info:
            await account.request("POST", CALLS, form={})

        error = info.value
        assert error.code == str(code)
        assert error.retryable is retryable
        assert error.status_code == status
        assert "Invalid parameter" in str(error)

    async def test_retry_after_on_throttling(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """A throttling 429 keeps its Retry-After hint."""
        account, router = twilio
        router.post(CALLS).mock(
            return_value=httpx.Response(
                429,
                json={"code": 20429, "message": "Too Many Requests"},
                headers={"Retry-After": "3"},
            )
        )

        with pytest.raises(ProviderRateLimitedError) as info:
            await account.request("POST", CALLS, form={})

        assert info.value.retry_after == 3.0

    async def test_error_without_json(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """An error body that is not JSON still maps by status."""
        account, router = twilio
        router.post(CALLS).mock(return_value=httpx.Response(502, text="Bad Gateway"))

        with pytest.raises(ProviderUnavailableError) as info:
            await account.request("POST", CALLS, form={})

        assert info.value.code is None

    @pytest.mark.parametrize(
        "response",
        [
            httpx.Response(200, text="ok"),
            httpx.Response(200, text="[" * 100_000),
            httpx.Response(200, json=[1]),
        ],
    )
    async def test_success_that_is_not_an_object(
        self, twilio: tuple[TwilioAccount, respx.Router], response: httpx.Response
    ) -> None:
        """A 2xx whose body is not a JSON object is a retryable unavailability."""
        account, router = twilio
        router.post(CALLS).mock(return_value=response)

        with pytest.raises(ProviderUnavailableError):
            await account.request("POST", CALLS, form={})

    async def test_transport_error(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """A connection failure is a retryable unavailability."""
        account, router = twilio
        router.post(CALLS).mock(side_effect=httpx.ConnectError("refused"))

        with pytest.raises(ProviderUnavailableError):
            await account.request("POST", CALLS, form={})

    async def test_client_ownership(
        self, twilio: tuple[TwilioAccount, respx.Router]
    ) -> None:
        """An injected client stays open; one it made is closed; the repr shows no token."""
        account, _ = twilio
        await account.aclose()
        assert not account._client.is_closed

        own = TwilioAccount(account_sid="AC123456789", auth_token="tok-secret")
        assert "tok-secret" not in repr(own)
        await own.aclose()
        assert own._client.is_closed
