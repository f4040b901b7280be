"""Tests for Alibaba Cloud SMS: the RPC and V3 signatures (documented vectors A1-A4) and SendSms."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import respx

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
    AliyunSms,
    SmsMessage,
    acs3_authorization,
    percent_encode,
    rpc_signature,
    rpc_string_to_sign,
)
from multiverify.providers._aliyun import _acs3_canonical
from multiverify.testing import FakeClock

from .messages import ZH_MESSAGE as MESSAGE

HOST = "https://dysmsapi.aliyuncs.com/"

# Vector A1: the ECS "request signatures" example (DescribeRegions).
A1 = {
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
}
# Vector A2: the RPC mechanism document (DescribeDedicatedHosts).
A2 = {
    "AccessKeyId": "testid",
    "Action": "DescribeDedicatedHosts",
    "Format": "JSON",
    "RegionId": "cn-beijing",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "edb2b34af0af9a6d14deaf7c1a5315eb",
    "SignatureVersion": "1.0",
    "Timestamp": "2023-03-13T08:34:30Z",
    "Version": "2014-05-26",
}
# Vector A3: the Dysmsapi SendSms example (UTF-8 sign name, JSON param).
A3 = {
    "AccessKeyId": "testId",
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}


class TestRpcSignature:
    def test_vector_a1(self) -> None:
        """The DescribeRegions example signs to the documented string and signature."""
        assert rpc_string_to_sign(A1) == (
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
            "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-"
            "4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46"
            "%253A24Z%26Version%3D2014-05-26"
        )
        assert rpc_signature(A1, secret="testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="

    def test_vector_a2(self) -> None:
        """The DescribeDedicatedHosts example gives the documented signature."""
        assert rpc_signature(A2, secret="testsecret") == "9NaGiOspFP5UPcwX8Iwt2YJXXuk="

    def test_vector_a3(self) -> None:
        """The SendSms example, with Chinese and JSON, gives the documented string and signature."""
        assert rpc_string_to_sign(A3).startswith(
            "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123"
            "%26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9"
            "%2598%25BF%25E9%2587%258C%25E4%25BA%2591"
        )
        assert "TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D" in (
            rpc_string_to_sign(A3)
        )
        assert rpc_signature(A3, secret="testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="

    def test_signature_itself_is_never_signed(self) -> None:
        """A ``Signature`` among the parameters is left out of the string to sign."""
        assert rpc_string_to_sign({**A1, "Signature": "x"}) == rpc_string_to_sign(A1)

    def test_method_is_part_of_it(self) -> None:
        """The same parameters signed for POST give another signature."""
        assert rpc_signature(A1, secret="testsecret", method="post") == (
            "MxbnVAM4w6sft9xjVpe/GCKueuk="
        )

    @pytest.mark.parametrize(
        ("raw", "encoded"),
        [("a b", "a%20b"), ("*", "%2A"), ("~", "~"), ("+", "%2B"), ("é", "%C3%A9")],
    )
    def test_percent_encoding(self, raw: str, encoded: str) -> None:
        """Space is %20, ``*`` is %2A, ``~`` stays, UTF-8 bytes in upper-case hex."""
        assert percent_encode(raw) == encoded


# Vector A4: the V3 signature document's RunInstances example.
A4_HEADERS = {
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ),
}
A4_QUERY = {
    "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
    "RegionId": "cn-shanghai",
}


class TestAcs3Signature:
    def test_vector_a4_canonical_request(self) -> None:
        """The canonical request is the documented one, byte for byte."""
        canonical, names = _acs3_canonical(
            method="POST",
            host="ecs.cn-shanghai.aliyuncs.com",
            path="/",
            query=A4_QUERY,
            headers=A4_HEADERS,
            payload=b"",
        )
        assert canonical == (
            "POST\n/\n"
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
            "host:ecs.cn-shanghai.aliyuncs.com\n"
            "x-acs-action:RunInstances\n"
            "x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-acs-date:2023-10-26T10:22:32Z\n"
            "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n"
            "x-acs-version:2014-05-26\n\n"
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        assert names.startswith("host;x-acs-action")

    def test_vector_a4_authorization(self) -> None:
        """The Authorization header is the documented one."""
        assert acs3_authorization(
            access_key_id="YourAccessKeyId",
            access_key_secret="YourAccessKeySecret",
            method="POST",
            host="ecs.cn-shanghai.aliyuncs.com",
            query=A4_QUERY,
            headers=A4_HEADERS,
        ) == (
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
            "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
            "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        )

    def test_content_type_is_signed_other_headers_are_not(self) -> None:
        """``content-type`` joins the signed headers; ``accept`` does not."""
        _, names = _acs3_canonical(
            method="POST",
            host="h",
            path="/",
            query={},
            headers={**A4_HEADERS, "Content-Type": "application/json", "Accept": "x"},
            payload=b"{}",
        )
        assert names.split(";")[:2] == ["content-type", "host"]
        assert "accept" not in names


@pytest.fixture
def aliyun(
    router: respx.Router, client: httpx.AsyncClient
) -> tuple[AliyunSms, respx.Router]:
    """An AliyunSms with the V3 signature on a respx router and a fake clock."""
    provider = AliyunSms(
        access_key_id="AK",
        access_key_secret="SECRET",
        sign_name="Acme",
        templates={"zh-CN": "SMS_1", "en": "SMS_2"},
        minutes_param="minutes",
        client=client,
        clock=FakeClock(datetime(2026, 3, 1, 16, 30, tzinfo=UTC)),
        new_nonce=lambda: "nonce-1",
    )
    return provider, router


def _ok(biz: str = "900619746936498440^0") -> httpx.Response:
    return httpx.Response(
        200, json={"Code": "OK", "Message": "OK", "BizId": biz, "RequestId": "R1"}
    )


class TestAliyunSms:
    async def test_send_signs_with_acs3(
        self, aliyun: tuple[AliyunSms, respx.Router]
    ) -> None:
        """SendSms is a V3-signed POST with the template, params and OutId in the query."""
        provider, router = aliyun
        route = router.post(url__startswith=HOST).mock(return_value=_ok())

        receipt = await provider.send(MESSAGE)

        assert receipt.message_id == "900619746936498440^0"
        assert receipt.provider == "aliyun"
        sent = route.calls.last.request
        query = dict(parse_qsl(urlsplit(str(sent.url)).query))
        assert query == {
            "OutId": "s1:sms:1:1",
            "PhoneNumbers": "13800138000",
            "SignName": "Acme",
            "TemplateCode": "SMS_1",
            "TemplateParam": '{"code":"123456","minutes":"5"}',
        }
        assert sent.headers["x-acs-action"] == "SendSms"
        assert sent.headers["x-acs-version"] == "2017-05-25"
        assert sent.headers["x-acs-date"] == "2026-03-01T16:30:00Z"
        expected = acs3_authorization(
            access_key_id="AK",
            access_key_secret="SECRET",
            method="POST",
            host="dysmsapi.aliyuncs.com",
            query=query,
            headers={k: v for k, v in sent.headers.items() if k.startswith("x-acs-")},
        )
        assert sent.headers["authorization"] == expected

    async def test_send_with_the_rpc_signature(self) -> None:
        """The RPC flavour is a GET whose query carries a valid HMAC-SHA1 signature."""
        router = respx.Router()
        route = router.get(url__startswith=HOST).mock(return_value=_ok())
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(router.async_handler)
        ) as client:
            provider = AliyunSms(
                access_key_id="AK",
                access_key_secret="SECRET",
                sign_name="Acme",
                templates={"zh-CN": "SMS_1"},
                signature="rpc",
                client=client,
                clock=FakeClock(),
                new_nonce=lambda: "n",
            )
            await provider.send(
                SmsMessage(
                    to="+85291234567",
                    text="x",
                    code="123456",
                    ttl_minutes=5,
                    locale="en",
                    reference="ref",
                )
            )
        params = dict(parse_qsl(urlsplit(str(route.calls.last.request.url)).query))
        signature = params.pop("Signature")
        assert signature == rpc_signature(params, secret="SECRET")
        assert params["PhoneNumbers"] == "85291234567"  # abroad: country code, no '+'
        assert params["TemplateCode"] == "SMS_1"  # no English template: the zh-CN one
        assert params["Action"] == "SendSms"
        assert params["Format"] == "JSON"
        assert json.loads(params["TemplateParam"]) == {"code": "123456"}

    @pytest.mark.parametrize(
        ("status", "code", "kind", "uncertain"),
        [
            (200, "isv.MOBILE_NUMBER_ILLEGAL", ProviderNumberRejectedError, False),
            (200, "isv.BUSINESS_LIMIT_CONTROL", ProviderRejectedError, False),
            (200, "isv.AMOUNT_NOT_ENOUGH", ProviderRejectedError, False),
            (400, "Throttling.User", ProviderRateLimitedError, False),
            (400, "SignatureDoesNotMatch", ProviderAuthError, False),
            (400, "SignatureNonceUsed", ProviderUnavailableError, False),
            (200, "isp.SYSTEM_ERROR", ProviderUnavailableError, True),
            (503, "ServiceUnavailable", ProviderUnavailableError, True),
            (403, "Forbidden.NoPermission", ProviderAuthError, False),
        ],
    )
    async def test_errors_are_mapped(
        self,
        aliyun: tuple[AliyunSms, respx.Router],
        status: int,
        code: str,
        kind: type[ProviderError],
        uncertain: bool,
    ) -> None:
        """Each documented code maps to retryable or permanent, the number's own apart."""
        provider, router = aliyun
        router.post(url__startswith=HOST).mock(
            return_value=httpx.Response(
                status, json={"Code": code, "Message": "m", "RequestId": "R9"}
            )
        )
        with pytest.raises(ProviderError) as info:
            await provider.send(MESSAGE)
        assert type(info.value) is kind
        assert info.value.code == code
        assert info.value.request_id == "R9"
        assert info.value.uncertain is uncertain

    @pytest.mark.parametrize("body", ["<html>", "[" * 100_000])
    async def test_answer_that_is_not_json(
        self, aliyun: tuple[AliyunSms, respx.Router], body: str
    ) -> None:
        """A 502 page, or JSON nested too deeply to read, is unavailable and uncertain."""
        provider, router = aliyun
        router.post(url__startswith=HOST).mock(
            return_value=httpx.Response(502, text=body)
        )
        with pytest.raises(ProviderUnavailableError) as info:
            await provider.send(MESSAGE)
        assert info.value.uncertain

    async def test_find_by_out_id(self, aliyun: tuple[AliyunSms, respx.Router]) -> None:
        """QuerySendDetails finds the send by its OutId on the China date of sending."""
        provider, router = aliyun

        def details(*records: dict[str, object]) -> httpx.Response:
            return httpx.Response(
                200,
                json={
                    "Code": "OK",
                    "SmsSendDetailDTOs": {"SmsSendDetailDTO": list(records)},
                },
            )

        route = router.post(url__startswith=HOST).mock(
            side_effect=[
                details(
                    {"OutId": "other", "SendStatus": 3},
                    {"OutId": "s1:sms:1:1", "SendStatus": 3},
                ),
                details({"OutId": "s1:sms:1:1", "SendStatus": 1}),
                details({"OutId": "s1:sms:1:1", "SendStatus": 2}),
                details(),
            ]
        )
        after = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)  # 2026-03-02 00:30 in China
        found = await provider.find(MESSAGE, sent_after=after)
        assert found is not None
        assert found.status == "delivered"
        query = dict(parse_qsl(urlsplit(str(route.calls.last.request.url)).query))
        assert query["SendDate"] == "20260302"
        assert query["PhoneNumber"] == "13800138000"
        assert route.calls.last.request.headers["x-acs-action"] == "QuerySendDetails"
        pending = await provider.find(MESSAGE, sent_after=after)
        assert pending is not None
        assert pending.status == "sending"
        assert await provider.find(MESSAGE, sent_after=after) is None  # failed
        assert await provider.find(MESSAGE, sent_after=after) is None  # not there

    def test_configuration(self) -> None:
        """A zh-CN template is required and the signature must be known."""
        with pytest.raises(ConfigurationError, match="zh-CN"):
            AliyunSms(
                access_key_id="a", access_key_secret="b", sign_name="c", templates={}
            )
        with pytest.raises(ConfigurationError, match="signature"):
            AliyunSms(
                access_key_id="a",
                access_key_secret="b",
                sign_name="c",
                templates={"zh-CN": "SMS_1"},
                signature="v4",  # type: ignore[arg-type]
            )

    async def test_client_it_made_is_closed(self) -> None:
        """A provider closes a client it built, and says its name in its repr."""
        provider = AliyunSms(
            access_key_id="a",
            access_key_secret="b",
            sign_name="c",
            templates={"zh-CN": "1"},
        )
        assert repr(provider) == "<multiverify.providers.AliyunSms(aliyun, acs3)>"
        await provider.aclose()
        assert provider._client.is_closed
