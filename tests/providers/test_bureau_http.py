"""Tests for the HTTP JSON bureau adapter: OAuth2 tokens, pulls, statuses and bodies, the request template."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import attrs
import httpx
import pytest
import respx

from multiverify import Address
from multiverify.exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
    PullNotPermittedError,
)
from multiverify.providers import (
    FileStatus,
    HttpBureau,
)
from multiverify.testing import FakeClock

from .bureau import (
    BASE,
    CN_PATH,
    T0,
    TOKEN_URL,
    US_PATH,
    bureau,
    cn_applicant,
    granted,
    request,
    sample,
    token,
    us_applicant,
)


class TestOAuth2:
    async def test_client_credentials_with_basic_auth(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The token request is a form POST with the client in HTTP Basic; the pull carries the Bearer."""
        auth = router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        report = await bureau(client).pull(request())
        assert report.report_id == "CR20260203101500000042"
        sent = auth.calls.last.request
        assert parse_qs(sent.content.decode()) == {"grant_type": ["client_credentials"]}
        expected = base64.b64encode(b"client-1:s3cret").decode()
        assert sent.headers["authorization"] == f"Basic {expected}"
        assert pull.calls.last.request.headers["authorization"] == "Bearer tok-1"

    async def test_password_grant_in_the_body(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The password grant sends the owner's credentials, and the client in the body when asked."""
        auth = router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        config = token(
            grant="password",
            username="portal-user",
            password="portal-pass",
            client_auth="body",
            scope="openid",
        )
        await bureau(client, token=config).pull(request())
        form = parse_qs(auth.calls.last.request.content.decode())
        assert form == {
            "grant_type": ["password"],
            "username": ["portal-user"],
            "password": ["portal-pass"],
            "scope": ["openid"],
            "client_id": ["client-1"],
            "client_secret": ["s3cret"],
        }
        assert "authorization" not in auth.calls.last.request.headers
        assert "portal-pass" not in repr(config)

    async def test_token_is_cached_until_expiry_minus_skew(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A token is reused until ``expires_in - skew``, then fetched again."""
        auth = router.post(TOKEN_URL).mock(
            side_effect=[granted("tok-1", 600), granted("tok-2", "600")]
        )
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        clock = FakeClock(T0)
        adapter = bureau(client, clock, token=token(skew=60))
        await adapter.pull(request())
        await clock.advance(539)
        await adapter.pull(request())
        assert auth.call_count == 1
        await clock.advance(1)
        await adapter.pull(request())
        assert auth.call_count == 2
        assert adapter.token_requests == 2
        assert [c.request.headers["authorization"] for c in pull.calls] == [
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-2",
        ]

    async def test_token_without_expiry_uses_the_default_ttl(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A token without ``expires_in`` lives ``default_ttl`` minus the skew."""
        auth = router.post(TOKEN_URL).mock(
            return_value=httpx.Response(200, json={"access_token": "t"})
        )
        router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        clock = FakeClock(T0)
        adapter = bureau(client, clock, token=token(default_ttl=120, skew=20))
        await adapter.pull(request())
        await clock.advance(99)
        await adapter.pull(request())
        await clock.advance(1)
        await adapter.pull(request())
        assert auth.call_count == 2

    async def test_refreshed_once_on_401(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A 401 on the pull fetches a fresh token and repeats the pull once, same idempotency key."""
        router.post(TOKEN_URL).mock(side_effect=[granted("old"), granted("new")])
        pull = router.post(BASE + CN_PATH).mock(
            side_effect=[
                httpx.Response(401, json={"error": "invalid_token"}),
                httpx.Response(200, json=sample()),
            ]
        )
        report = await bureau(client).pull(request())
        assert report.file is FileStatus.HIT
        assert [c.request.headers["authorization"] for c in pull.calls] == [
            "Bearer old",
            "Bearer new",
        ]
        assert {c.request.headers["idempotency-key"] for c in pull.calls} == {
            "s1:bureau:1"
        }

    async def test_a_second_401_is_an_auth_error(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A fresh token refused too is a ProviderAuthError, after exactly two pulls."""
        router.post(TOKEN_URL).mock(side_effect=[granted("a"), granted("b")])
        pull = router.post(BASE + CN_PATH).mock(return_value=httpx.Response(401))
        with pytest.raises(ProviderAuthError) as caught:
            await bureau(client).pull(request())
        assert not caught.value.retryable
        assert pull.call_count == 2

    @pytest.mark.parametrize("status", [400, 401])
    async def test_refused_credentials(
        self, router: respx.Router, client: httpx.AsyncClient, status: int
    ) -> None:
        """invalid_client (400 per RFC 6749 §5.2, or 401) is a ProviderAuthError; no pull is made."""
        router.post(TOKEN_URL).mock(
            return_value=httpx.Response(status, json={"error": "invalid_client"})
        )
        pull = router.post(BASE + CN_PATH)
        with pytest.raises(ProviderAuthError):
            await bureau(client).pull(request())
        assert not pull.called

    async def test_token_endpoint_down_is_retryable(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A 503 from the token endpoint is a retryable ProviderUnavailableError."""
        router.post(TOKEN_URL).mock(return_value=httpx.Response(503))
        with pytest.raises(ProviderUnavailableError) as caught:
            await bureau(client).pull(request())
        assert caught.value.retryable

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(200, json={"token_type": "Bearer"}),
            httpx.Response(200, json={"access_token": ""}),
            httpx.Response(200, json=["tok"]),
            httpx.Response(200, text="<html>"),
            httpx.Response(200, text="[" * 100_000),
        ],
    )
    async def test_malformed_token(
        self, router: respx.Router, client: httpx.AsyncClient, answer: httpx.Response
    ) -> None:
        """A token answer without an access_token is a ProviderResponseError."""
        router.post(TOKEN_URL).mock(return_value=answer)
        with pytest.raises(ProviderResponseError) as caught:
            await bureau(client).pull(request())
        assert caught.value.field == "access_token"

    def test_configuration(self) -> None:
        """The password grant needs its credentials; unknown grants and client auth are refused."""
        with pytest.raises(ConfigurationError, match="username and password"):
            token(grant="password")
        with pytest.raises(ConfigurationError, match="grant"):
            token(grant="implicit")
        with pytest.raises(ConfigurationError, match="client_auth"):
            token(client_auth="jwt")


class TestPull:
    async def test_cn_request_from_the_template(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The CN template is filled from the applicant and the pull; static headers and the key go along."""
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        await bureau(client, headers={"X-Member": "m-1"}).pull(request())
        sent = pull.calls.last.request
        assert json.loads(sent.content) == {
            "name": "王芳",
            "idCard": "110101199003072420",
            "mobile": "13800138000",
            "queryReason": "loan_approval",
            "authorizationId": "consent-7",
            "requestNo": "s1:bureau:1",
        }
        assert sent.headers["x-member"] == "m-1"
        assert sent.headers["idempotency-key"] == "s1:bureau:1"
        assert sent.headers["content-type"] == "application/json"

    async def test_us_request_with_purpose_codes(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The US template splits the name, formats the birth date; our purpose goes out as the bureau's code."""
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + US_PATH).mock(
            return_value=httpx.Response(200, json=sample("us-credit-profile"))
        )
        adapter = bureau(
            client,
            preset="us-credit-profile",
            purpose_codes={"loan_approval": "08"},
            idempotency_header="X-Request-Id",
        )
        report = await adapter.pull(request(us_applicant()))
        sent = json.loads(pull.calls.last.request.content)
        who = sent["consumerPii"]["primaryApplicant"]
        assert who["name"] == {"firstName": "Jon Q", "lastName": "Consumer"}
        assert who["dob"] == {"dob": "01151980"}
        assert who["ssn"] == {"ssn": "666-12-3456"}
        assert who["phone"] == [{"number": "2125550100", "type": "M"}]
        assert sent["permissiblePurpose"] == {"type": "08"}
        assert pull.calls.last.request.headers["x-request-id"] == "s1:bureau:1"
        assert report.identity.checked == (
            "name",
            "national_id",
            "date_of_birth",
            "phone",
        )

    async def test_a_purpose_without_a_code_is_refused_before_any_request(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """With purpose_codes, another purpose is PullNotPermittedError and nothing is sent."""
        adapter = bureau(client, purpose_codes={"account_review": "07"})
        with pytest.raises(PullNotPermittedError) as caught:
            await adapter.pull(request())
        assert caught.value.reason == "purpose_not_supported"
        assert not router.calls

    async def test_a_missing_applicant_field_is_refused_before_any_request(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A template needing the address of an applicant without one is an InvalidInputError."""
        template = {
            "city": "$address.city",
            "line": "$address.line1",
            "all": "$address.lines",
        }
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        adapter = bureau(client, template=template)
        with pytest.raises(InvalidInputError) as caught:
            await adapter.pull(request())
        assert caught.value.field == "address"
        housed = attrs.evolve(
            cn_applicant(),
            address=Address(lines=("1 Main St",), city="Beijing", country="CN"),
        )
        await adapter.pull(request(housed))
        assert json.loads(pull.calls.last.request.content) == {
            "city": "Beijing",
            "line": "1 Main St",
            "all": "1 Main St",
        }
        assert adapter.preset == "cn-credit-gateway"

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (503, ProviderUnavailableError),
            (429, ProviderRateLimitedError),
            (422, ProviderRejectedError),
            (403, ProviderAuthError),
        ],
    )
    async def test_error_statuses(
        self,
        router: respx.Router,
        client: httpx.AsyncClient,
        status: int,
        error: type[Exception],
    ) -> None:
        """Statuses map to the provider error taxonomy (Retry-After kept on a 429)."""
        router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(status, headers={"Retry-After": "2"})
        )
        with pytest.raises(error) as caught:
            await bureau(client).pull(request())
        if isinstance(caught.value, ProviderRateLimitedError):
            assert caught.value.retry_after == 2.0

    async def test_transport_error(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A connection error is a retryable ProviderUnavailableError."""
        router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(ProviderUnavailableError):
            await bureau(client).pull(request())

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(200, text="<html>gateway</html>"),
            httpx.Response(200, text="[" * 100_000),
            httpx.Response(200, json=[1, 2]),
        ],
    )
    async def test_a_body_that_is_not_a_json_object(
        self, router: respx.Router, client: httpx.AsyncClient, answer: httpx.Response
    ) -> None:
        """Not JSON, or JSON that is not an object: ProviderResponseError on ``body``."""
        router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(return_value=answer)
        with pytest.raises(ProviderResponseError) as caught:
            await bureau(client).pull(request())
        assert caught.value.field == "body"

    async def test_without_a_token(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """``token=None`` sends no Authorization and never asks a token endpoint."""
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        await bureau(client, token=None, idempotency_header=None).pull(request())
        sent = pull.calls.last.request
        assert "authorization" not in sent.headers
        assert "idempotency-key" not in sent.headers

    async def test_owns_only_the_client_it_made(
        self, client: httpx.AsyncClient
    ) -> None:
        """A provider closes a client it made and leaves an injected one open."""
        injected = bureau(client)
        await injected.aclose()
        assert not client.is_closed
        own = HttpBureau("cn-credit-gateway", base_url=BASE, token=None)
        await own.aclose()
        assert own._client.is_closed
        assert "cn-credit-gateway" in repr(own)
