"""Tests for Vonage Verify v2 and Tencent Cloud SMS."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from multiverify.exceptions import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderNumberRejectedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from multiverify.providers import (
    CheckOutcome,
    SmsMessage,
    TencentCloudApi,
    TencentSms,
    VerifyRequest,
    VonageApplication,
    VonageVerify,
    tc3_authorization,
)
from multiverify.testing import FakeClock

from .messages import ZH_MESSAGE as MESSAGE

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
VONAGE = "https://api.nexmo.com/v2/verify"
TENCENT = "https://sms.tencentcloudapi.com/"

REQUEST = VerifyRequest(
    to="+8613800138000",
    brand="Acme Consumer Finance",
    locale="zh-CN",
    code_length=6,
    ttl=300,
    reference="s1:sms:1:1",
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA key for the Vonage application."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def vonage(
    rsa_key: rsa.RSAPrivateKey, router: respx.Router, client: httpx.AsyncClient
) -> tuple[VonageVerify, respx.Router]:
    """A VonageVerify on a respx router."""
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    app = VonageApplication(
        application_id="app-1", private_key=pem, clock=FakeClock(T0)
    )
    return VonageVerify(app, client=client), router


def problem(status: int, title: str, **extra: str) -> httpx.Response:
    """A Vonage RFC 7807 problem answer."""
    return httpx.Response(
        status, json={"title": title, "detail": "d", "instance": "i", **extra}
    )


class TestVonageVerify:
    async def test_start(
        self, vonage: tuple[VonageVerify, respx.Router], rsa_key: rsa.RSAPrivateKey
    ) -> None:
        """A start posts the SMS workflow with a JWT; brand and client_ref fit Vonage's bounds."""
        provider, router = vonage
        route = router.post(VONAGE).mock(
            return_value=httpx.Response(202, json={"request_id": "req-1"})
        )

        started = await provider.start(REQUEST)

        assert (started.verification_id, started.resumed) == ("req-1", False)
        sent = route.calls.last.request
        body = json.loads(sent.content)
        assert body["workflow"] == [{"channel": "sms", "to": "8613800138000"}]
        assert body["brand"] == "Acme Consumer Fi"
        assert body["locale"] == "zh-cn"
        assert body["code_length"] == 6
        assert body["channel_timeout"] == 300
        assert len(body["client_ref"]) == 16
        token = sent.headers["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(
            token,
            rsa_key.public_key(),
            algorithms=["RS256"],
            options={"verify_exp": False},
        )
        assert claims["application_id"] == "app-1"

    async def test_conflict_takes_over_the_verification_in_progress(
        self, vonage: tuple[VonageVerify, respx.Router]
    ) -> None:
        """A 409 naming the verification in progress resumes it instead of failing."""
        provider, router = vonage
        router.post(VONAGE).mock(
            return_value=problem(409, "Conflict", request_id="req-0")
        )
        started = await provider.start(REQUEST)
        assert (started.verification_id, started.resumed) == ("req-0", True)

    @pytest.mark.parametrize(
        ("answer", "kind"),
        [
            (problem(429, "Rate Limit Hit"), ProviderRateLimitedError),
            (problem(401, "Unauthorized"), ProviderAuthError),
            (problem(422, "Invalid params"), ProviderRejectedError),
            (problem(409, "Conflict"), ProviderUnavailableError),
            (httpx.Response(500, text="oops"), ProviderUnavailableError),
            (httpx.Response(202, json={}), ProviderUnavailableError),
            (httpx.Response(202, text="[" * 100_000), ProviderUnavailableError),
        ],
    )
    async def test_start_errors(
        self,
        vonage: tuple[VonageVerify, respx.Router],
        answer: httpx.Response,
        kind: type[ProviderError],
    ) -> None:
        """Errors map by status, with the problem's title as the code."""
        provider, router = vonage
        router.post(VONAGE).mock(return_value=answer)
        with pytest.raises(kind):
            await provider.start(REQUEST)

    @pytest.mark.parametrize(
        ("answer", "outcome"),
        [
            (
                httpx.Response(
                    200, json={"request_id": "req-1", "status": "completed"}
                ),
                CheckOutcome.APPROVED,
            ),
            (httpx.Response(200, json={"status": "pending"}), CheckOutcome.WRONG),
            (problem(400, "Invalid Code"), CheckOutcome.WRONG),
            (problem(410, "Invalid Code"), CheckOutcome.EXHAUSTED),
            (problem(404, "Not Found"), CheckOutcome.EXPIRED),
        ],
    )
    async def test_check(
        self,
        vonage: tuple[VonageVerify, respx.Router],
        answer: httpx.Response,
        outcome: CheckOutcome,
    ) -> None:
        """Each documented answer of a check maps onto the lifecycle."""
        provider, router = vonage
        route = router.post(f"{VONAGE}/req-1").mock(return_value=answer)
        checked = await provider.check("req-1", "123456", to="+8613800138000")
        assert checked.outcome is outcome
        assert json.loads(route.calls.last.request.content) == {"code": "123456"}

    async def test_check_failure_is_raised(
        self, vonage: tuple[VonageVerify, respx.Router]
    ) -> None:
        """A throttled check is the provider's error."""
        provider, router = vonage
        router.post(f"{VONAGE}/req-1").mock(return_value=problem(429, "Rate Limit Hit"))
        with pytest.raises(ProviderRateLimitedError):
            await provider.check("req-1", "1", to="+1")

    async def test_cancel(self, vonage: tuple[VonageVerify, respx.Router]) -> None:
        """Cancel is a DELETE; one already gone is fine; others are raised."""
        provider, router = vonage
        router.delete(f"{VONAGE}/req-1").mock(
            side_effect=[
                httpx.Response(204),
                problem(404, "Not Found"),
                problem(401, "Unauthorized"),
            ]
        )
        await provider.cancel("req-1")
        await provider.cancel("req-1")
        with pytest.raises(ProviderAuthError):
            await provider.cancel("req-1")

    async def test_own_client(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """A provider closes a client it built."""
        pem = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        provider = VonageVerify(VonageApplication(application_id="a", private_key=pem))
        assert provider.name == "vonage"
        assert repr(provider) == "<multiverify.providers.VonageVerify(vonage)>"
        await provider.aclose()
        assert provider._client.is_closed


@pytest.fixture
def tencent(
    router: respx.Router, client: httpx.AsyncClient
) -> tuple[TencentSms, respx.Router]:
    """A TencentSms on a respx router and a fake clock."""
    api = TencentCloudApi(
        secret_id="AKID",
        secret_key="KEY",
        region="ap-guangzhou",
        client=client,
        clock=FakeClock(T0),
    )
    provider = TencentSms(
        api, sdk_app_id="1400006666", sign_name="Acme", templates={"zh-CN": "449739"}
    )
    return provider, router


def envelope(response: dict[str, object]) -> httpx.Response:
    """A Tencent Cloud answer."""
    return httpx.Response(200, json={"Response": {"RequestId": "R1", **response}})


def status(code: str = "Ok", **extra: object) -> dict[str, object]:
    """One SendStatusSet entry."""
    return {
        "SerialNo": "2028:1",
        "PhoneNumber": "+8613800138000",
        "Fee": 1,
        "Code": code,
        "Message": "m",
        **extra,
    }


class TestTencentSms:
    async def test_send(self, tencent: tuple[TencentSms, respx.Router]) -> None:
        """SendSms is TC3-signed over the exact body with the template and SessionContext."""
        provider, router = tencent
        route = router.post(TENCENT).mock(
            return_value=envelope({"SendStatusSet": [status(Fee=2)]})
        )

        receipt = await provider.send(MESSAGE)

        assert (receipt.message_id, receipt.segments) == ("2028:1", 2)
        sent = route.calls.last.request
        assert json.loads(sent.content) == {
            "PhoneNumberSet": ["+8613800138000"],
            "SmsSdkAppId": "1400006666",
            "SignName": "Acme",
            "TemplateId": "449739",
            "TemplateParamSet": ["123456", "5"],
            "SessionContext": "s1:sms:1:1",
        }
        assert sent.headers["x-tc-action"] == "SendSms"
        assert sent.headers["x-tc-version"] == "2021-01-11"
        assert sent.headers["authorization"] == tc3_authorization(
            secret_id="AKID",
            secret_key="KEY",
            service="sms",
            host="sms.tencentcloudapi.com",
            timestamp=int(T0.timestamp()),
            payload=sent.content,
        )

    @pytest.mark.parametrize(
        ("code", "kind", "uncertain"),
        [
            (
                "InvalidParameterValue.IncorrectPhoneNumber",
                ProviderNumberRejectedError,
                False,
            ),
            (
                "FailedOperation.PhoneNumberInBlacklist",
                ProviderNumberRejectedError,
                False,
            ),
            ("LimitExceeded.PhoneNumberDailyLimit", ProviderRejectedError, False),
            ("InternalError.Timeout", ProviderUnavailableError, True),
        ],
    )
    async def test_per_number_errors(
        self,
        tencent: tuple[TencentSms, respx.Router],
        code: str,
        kind: type[ProviderError],
        uncertain: bool,
    ) -> None:
        """A number's own code maps to the number's error, a recipient limit, or an uncertain failure."""
        provider, router = tencent
        router.post(TENCENT).mock(
            return_value=envelope({"SendStatusSet": [status(code)]})
        )
        with pytest.raises(ProviderError) as info:
            await provider.send(MESSAGE)
        assert type(info.value) is kind
        assert (info.value.code, info.value.request_id) == (code, "R1")
        assert info.value.uncertain is uncertain

    async def test_number_error_in_the_envelope(
        self, tencent: tuple[TencentSms, respx.Router]
    ) -> None:
        """An incorrect number reported in the envelope is the number's error too."""
        provider, router = tencent
        router.post(TENCENT).mock(
            side_effect=[
                envelope(
                    {
                        "Error": {
                            "Code": "InvalidParameterValue.IncorrectPhoneNumber",
                            "Message": "m",
                        }
                    }
                ),
                envelope({"Error": {"Code": "MissingParameter", "Message": "m"}}),
            ]
        )
        with pytest.raises(ProviderNumberRejectedError):
            await provider.send(MESSAGE)
        with pytest.raises(ProviderRejectedError) as info:
            await provider.send(MESSAGE)
        assert type(info.value) is ProviderRejectedError

    async def test_envelope_errors_and_missing_status(
        self, tencent: tuple[TencentSms, respx.Router]
    ) -> None:
        """Throttling in the envelope is retryable; an answer without a status is uncertain."""
        provider, router = tencent
        router.post(TENCENT).mock(
            side_effect=[
                envelope(
                    {"Error": {"Code": "RequestLimitExceeded", "Message": "slow"}}
                ),
                envelope({"SendStatusSet": []}),
            ]
        )
        with pytest.raises(ProviderRateLimitedError):
            await provider.send(MESSAGE)
        with pytest.raises(ProviderUnavailableError) as info:
            await provider.send(MESSAGE)
        assert info.value.uncertain

    async def test_find_by_session_context(
        self, tencent: tuple[TencentSms, respx.Router]
    ) -> None:
        """Delivery reports are searched for our SessionContext; only a success counts."""
        provider, router = tencent
        report = {
            "SessionContext": "s1:sms:1:1",
            "ReportStatus": "SUCCESS",
            "SerialNo": "2028:1",
        }
        route = router.post(TENCENT).mock(
            side_effect=[
                envelope({"PullSmsSendStatusSet": [{"SessionContext": "x"}, report]}),
                envelope(
                    {"PullSmsSendStatusSet": [{**report, "ReportStatus": "FAIL"}]}
                ),
            ]
        )
        found = await provider.find(MESSAGE, sent_after=T0)
        assert found is not None
        assert found.message_id == "2028:1"
        body = json.loads(route.calls.last.request.content)
        assert body["BeginTime"] == int(T0.timestamp())
        assert body["PhoneNumber"] == "+8613800138000"
        assert (
            route.calls.last.request.headers["x-tc-action"]
            == "PullSmsSendStatusByPhoneNumber"
        )
        assert await provider.find(MESSAGE, sent_after=T0) is None

    def test_configuration(self) -> None:
        """A zh-CN template, known params and a region are required."""
        api = TencentCloudApi(secret_id="a", secret_key="b", region="ap-guangzhou")
        with pytest.raises(ConfigurationError, match="zh-CN"):
            TencentSms(api, sdk_app_id="1", sign_name="s", templates={})
        with pytest.raises(ConfigurationError, match="params"):
            TencentSms(
                api,
                sdk_app_id="1",
                sign_name="s",
                templates={"zh-CN": "1"},
                params=("name",),
            )
        with pytest.raises(ConfigurationError, match="region"):
            TencentSms(
                TencentCloudApi(secret_id="a", secret_key="b"),
                sdk_app_id="1",
                sign_name="s",
                templates={"zh-CN": "1"},
            )

    async def test_template_order_and_close(self) -> None:
        """Params follow the template's order; closing closes the API's own client."""
        router = respx.Router()
        route = router.post(TENCENT).mock(
            return_value=envelope({"SendStatusSet": [status()]})
        )
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(router.async_handler)
        ) as client:
            api = TencentCloudApi(
                secret_id="a", secret_key="b", region="ap-guangzhou", client=client
            )
            provider = TencentSms(
                api,
                sdk_app_id="1",
                sign_name="s",
                templates={"zh-CN": "1", "en": "2"},
                params=("minutes", "code"),
            )
            await provider.send(attrs_evolve_locale(MESSAGE, "en"))
            assert repr(provider) == "<multiverify.providers.TencentSms(tencent)>"
            await provider.aclose()
        body = json.loads(route.calls.last.request.content)
        assert body["TemplateParamSet"] == ["5", "123456"]
        assert body["TemplateId"] == "2"


def attrs_evolve_locale(message: SmsMessage, locale: str) -> SmsMessage:
    """The message in another locale."""
    import attrs

    return attrs.evolve(message, locale=locale)
