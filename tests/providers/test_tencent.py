"""Tests for TC3-HMAC-SHA256 signing and Tencent Cloud API calls."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import respx

from multiverify.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from multiverify.providers import TencentCloudApi, tc3_authorization
from multiverify.testing import FakeClock

# The documented vector (Signature v3, international edition, EXAMPLE keys).
SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
T0 = datetime.fromtimestamp(1551113065, UTC)


class TestTc3Authorization:
    def test_documented_vector(self) -> None:
        """The CVM DescribeInstances example signs to the documented header."""
        assert hashlib.sha256(PAYLOAD).hexdigest() == (
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        )

        header = tc3_authorization(
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            service="cvm",
            host="cvm.tencentcloudapi.com",
            timestamp=1551113065,
            payload=PAYLOAD,
        )

        assert header == (
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
            "SignedHeaders=content-type;host, "
            "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        )

    def test_date_is_utc(self) -> None:
        """The credential scope uses the UTC date, not a local one (00:44 in UTC+8 is the day before)."""
        header = tc3_authorization(
            secret_id="id",
            secret_key="k",
            service="sms",
            host="h",
            timestamp=1551113065,
            payload=b"{}",
        )

        assert "/2019-02-25/sms/tc3_request" in header


@pytest.fixture
async def api() -> AsyncIterator[tuple[TencentCloudApi, respx.Router]]:
    """A TencentCloudApi on a respx router, its clock at the vector's timestamp."""
    router = respx.Router(assert_all_called=False)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(router.async_handler)
    ) as client:
        yield (
            TencentCloudApi(
                secret_id=SECRET_ID,
                secret_key=SECRET_KEY,
                region="ap-guangzhou",
                token="session-token",
                client=client,
                clock=FakeClock(T0),
            ),
            router,
        )


def answer(response: dict[str, object]) -> httpx.Response:
    """A Tencent Cloud answer envelope."""
    return httpx.Response(200, json={"Response": response})


class TestTencentCloudApi:
    async def test_signed_request(
        self, api: tuple[TencentCloudApi, respx.Router]
    ) -> None:
        """A call POSTs the exact signed bytes with every X-TC header, and returns Response."""
        tencent, router = api
        route = router.post("https://sms.tencentcloudapi.com/").mock(
            return_value=answer({"SendStatusSet": [], "RequestId": "r-1"})
        )

        result = await tencent.call(
            host="sms.tencentcloudapi.com",
            service="sms",
            action="SendSms",
            version="2021-01-11",
            payload={"SmsSdkAppId": "1400006666", "PhoneNumberSet": ["+8613800138000"]},
        )

        assert result == {"SendStatusSet": [], "RequestId": "r-1"}
        sent = route.calls.last.request
        assert json.loads(sent.content) == {
            "SmsSdkAppId": "1400006666",
            "PhoneNumberSet": ["+8613800138000"],
        }
        assert sent.headers["X-TC-Action"] == "SendSms"
        assert sent.headers["X-TC-Version"] == "2021-01-11"
        assert sent.headers["X-TC-Timestamp"] == "1551113065"
        assert sent.headers["X-TC-Region"] == "ap-guangzhou"
        assert sent.headers["X-TC-Token"] == "session-token"
        assert sent.headers["Content-Type"] == "application/json; charset=utf-8"
        assert sent.headers["Authorization"] == tc3_authorization(
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            service="sms",
            host="sms.tencentcloudapi.com",
            timestamp=1551113065,
            payload=sent.content,
        )

    async def test_no_region_header_when_unset(self) -> None:
        """A product without regions sends no X-TC-Region."""
        router = respx.Router()
        route = router.post("https://faceid.tencentcloudapi.com/").mock(
            return_value=answer({"RequestId": "r"})
        )
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(router.async_handler)
        ) as client:
            tencent = TencentCloudApi(
                secret_id="i", secret_key="k", client=client, clock=FakeClock(T0)
            )
            await tencent.call(
                host="faceid.tencentcloudapi.com",
                service="faceid",
                action="DetectAuth",
                version="2018-03-01",
                payload={},
            )

        assert "X-TC-Region" not in route.calls.last.request.headers
        assert "X-TC-Token" not in route.calls.last.request.headers

    @pytest.mark.parametrize(
        ("code", "kind", "retryable"),
        [
            ("RequestLimitExceeded", ProviderRateLimitedError, True),
            ("RequestLimitExceeded.UinLimitExceeded", ProviderRateLimitedError, True),
            ("InternalError", ProviderUnavailableError, True),
            ("InternalError.ServerError", ProviderUnavailableError, True),
            ("AuthFailure.SignatureExpire", ProviderUnavailableError, True),
            ("AuthFailure.SignatureFailure", ProviderAuthError, False),
            ("UnauthorizedOperation", ProviderAuthError, False),
            (
                "InvalidParameterValue.IncorrectPhoneNumber",
                ProviderRejectedError,
                False,
            ),
            ("MissingParameter", ProviderRejectedError, False),
        ],
    )
    async def test_error_codes(
        self,
        api: tuple[TencentCloudApi, respx.Router],
        code: str,
        kind: type[ProviderError],
        retryable: bool,
    ) -> None:
        """An Error in the Response maps by its code to a retryable or permanent error."""
        tencent, router = api
        router.post("https://sms.tencentcloudapi.com/").mock(
            return_value=answer(
                {"Error": {"Code": code, "Message": "why"}, "RequestId": "r-9"}
            )
        )

        with pytest.raises(kind) as info:
            await tencent.call(
                host="sms.tencentcloudapi.com",
                service="sms",
                action="SendSms",
                version="v",
                payload={},
            )

        error = info.value
        assert error.retryable is retryable
        assert error.uncertain is code.startswith("InternalError")
        assert error.code == code
        assert error.request_id == "r-9"
        assert code in str(error)

    @pytest.mark.parametrize(
        "response",
        [
            httpx.Response(200, text="<html>gateway</html>"),
            httpx.Response(200, text="[" * 100_000),
            httpx.Response(200, json={"NoResponse": {}}),
            httpx.Response(200, json={"Response": ["not", "an", "object"]}),
        ],
    )
    async def test_malformed_answer_is_unavailable(
        self, api: tuple[TencentCloudApi, respx.Router], response: httpx.Response
    ) -> None:
        """An answer without a Response object is a retryable unavailability."""
        tencent, router = api
        router.post("https://sms.tencentcloudapi.com/").mock(return_value=response)

        with pytest.raises(ProviderUnavailableError):
            await tencent.call(
                host="sms.tencentcloudapi.com",
                service="sms",
                action="SendSms",
                version="v",
                payload={},
            )

    async def test_http_error_status(
        self, api: tuple[TencentCloudApi, respx.Router]
    ) -> None:
        """A 5xx from the gateway is retryable."""
        tencent, router = api
        router.post("https://sms.tencentcloudapi.com/").mock(
            return_value=httpx.Response(502)
        )

        with pytest.raises(ProviderUnavailableError):
            await tencent.call(
                host="sms.tencentcloudapi.com",
                service="sms",
                action="SendSms",
                version="v",
                payload={},
            )

    async def test_owns_and_closes_its_client(self) -> None:
        """A client it made is closed by aclose; the repr holds no secret."""
        tencent = TencentCloudApi(secret_id="id", secret_key="very-secret")
        assert "very-secret" not in repr(tencent)

        await tencent.aclose()

        assert tencent._client.is_closed

    async def test_leaves_injected_client_open(
        self, api: tuple[TencentCloudApi, respx.Router]
    ) -> None:
        """An injected client stays open."""
        tencent, _ = api

        await tencent.aclose()

        assert not tencent._client.is_closed
