"""Tests for the Tencent FaceID provider: DetectAuth, GetDetectInfoEnhanced and the result mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from multiverify.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderResponseError,
)
from multiverify.providers import (
    TencentCloudApi,
    TencentFaceId,
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoStatus,
)
from multiverify.testing import FakeClock

URL = "https://faceid.tencentcloudapi.com/"
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
TOKEN = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681"


@pytest.fixture
async def faceid() -> AsyncIterator[tuple[TencentFaceId, respx.Router]]:
    """A FaceID provider over a TencentCloudApi on a respx router."""
    router = respx.Router(assert_all_called=True)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(router.async_handler)
    ) as client:
        api = TencentCloudApi(
            secret_id="AKIDexample",
            secret_key="key",
            client=client,
            clock=FakeClock(T0),
        )
        yield (
            TencentFaceId(api, rule_id="7", redirect_url="https://app.example/back"),
            router,
        )


def request(
    statement: str = "本人确认申请借款¥8,000.00", name: str = "王芳"
) -> VideoSessionRequest:
    """A session request for attempt 1 of step ``video`` of session ``s1``."""
    return VideoSessionRequest(
        reference="s1:video:1",
        applicant_id="a-42",
        name=name,
        national_id="110101199003072420",
        statement=statement,
        locale="zh-CN",
        expires_at=T0,
    )


def session() -> VideoSession:
    """The FaceID flow created for the request."""
    return VideoSession(
        provider="tencent-faceid",
        session_id=TOKEN,
        url="https://faceid.qq.com/h5?token=x",
        expires_at=T0,
    )


def answer(**response: Any) -> dict[str, Any]:
    """A Tencent Cloud envelope around ``response``."""
    return {"Response": {"RequestId": "req-1", **response}}


def text(**fields: Any) -> dict[str, Any]:
    """A ``Text`` object of a finished flow; ``fields`` override."""
    base: dict[str, Any] = {
        "ErrCode": 0,
        "ErrMsg": "成功",
        "IdCard": "110101199003072420",
        "Name": "王芳",
        "LiveStatus": 0,
        "LiveMsg": "成功",
        "Comparestatus": 0,
        "Comparemsg": "成功",
        "Sim": "95.50",
        "Extra": "s1:video:1",
    }
    base.update(fields)
    return base


async def fetch(
    faceid: tuple[TencentFaceId, respx.Router], **response: Any
) -> VideoDecision | None:
    """What ``fetch_decision`` makes of a GetDetectInfoEnhanced answer holding ``response``."""
    provider, router = faceid
    router.post(URL).respond(200, json=answer(**response))
    return await provider.fetch_decision(session())


async def decided(
    faceid: tuple[TencentFaceId, respx.Router], **response: Any
) -> VideoDecision:
    """Like ``fetch``, for an answer that holds a decision."""
    made = await fetch(faceid, **response)
    assert made is not None
    return made


class TestCreateSession:
    async def test_detect_auth(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """DetectAuth carries the rule, the applicant, the reference and the statement."""
        provider, router = faceid
        route = router.post(URL).respond(
            200, json=answer(Url="https://faceid.qq.com/h5?token=x", BizToken=TOKEN)
        )

        made = await provider.create_session(request())

        sent = route.calls.last.request
        assert sent.headers["x-tc-action"] == "DetectAuth"
        assert sent.headers["x-tc-version"] == "2018-03-01"
        assert sent.headers["authorization"].startswith("TC3-HMAC-SHA256 ")
        assert "/faceid/tc3_request" in sent.headers["authorization"]
        assert json.loads(sent.content) == {
            "RuleId": "7",
            "IdCard": "110101199003072420",
            "Name": "王芳",
            "Extra": "s1:video:1",
            "IntentionVerifyText": "本人确认申请借款¥8,000.00",
            "RedirectUrl": "https://app.example/back",
        }
        assert made == session()

    async def test_statement_too_long(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """Over 120 characters is refused before anything is sent."""
        provider, router = faceid
        router.assert_all_called = False
        with pytest.raises(ProviderRejectedError, match="at most 120"):
            await provider.create_session(request(statement="x" * 121))
        assert not router.calls

    async def test_name_too_long(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """A name over 32 characters is refused before anything is sent."""
        provider, router = faceid
        router.assert_all_called = False
        with pytest.raises(ProviderRejectedError, match="at most 32"):
            await provider.create_session(request(name="x" * 33))
        assert not router.calls

    @pytest.mark.parametrize(
        ("response", "field"),
        [
            ({"Url": "https://faceid.qq.com/h5"}, "BizToken"),
            ({"BizToken": TOKEN, "Url": None}, "Url"),
            ({"BizToken": TOKEN, "Url": "http://faceid.qq.com"}, "Url"),
        ],
    )
    async def test_partial_answer(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        response: dict[str, Any],
        field: str,
    ) -> None:
        """An answer without a BizToken or an https Url is a ProviderResponseError."""
        provider, router = faceid
        router.post(URL).respond(200, json=answer(**response))
        with pytest.raises(ProviderResponseError) as info:
            await provider.create_session(request())
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("code", "error"),
        [
            ("AuthFailure.SecretIdNotFound", ProviderAuthError),
            ("RequestLimitExceeded", ProviderRateLimitedError),
            ("InvalidParameterValue.RuleIdNotExist", ProviderRejectedError),
        ],
    )
    async def test_errors(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        code: str,
        error: type[Exception],
    ) -> None:
        """Tencent's error codes map through TencentCloudApi."""
        provider, router = faceid
        router.post(URL).respond(
            200, json=answer(Error={"Code": code, "Message": "no"})
        )
        with pytest.raises(error):
            await provider.create_session(request())


class TestFetchDecision:
    async def test_request(self, faceid: tuple[TencentFaceId, respx.Router]) -> None:
        """GetDetectInfoEnhanced asks for the text and reading-mode results."""
        provider, router = faceid
        route = router.post(URL).respond(200, json=answer(Text=None))
        assert await provider.fetch_decision(session()) is None
        sent = route.calls.last.request
        assert sent.headers["x-tc-action"] == "GetDetectInfoEnhanced"
        assert json.loads(sent.content) == {
            "BizToken": TOKEN,
            "RuleId": "7",
            "InfoType": "15",
        }

    async def test_not_finished(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """A null ErrCode means the applicant has not finished."""
        assert await fetch(faceid, Text=text(ErrCode=None)) is None

    async def test_approved_with_statement(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """Liveness, face match and the read statement pass; media stays a reference."""
        decision = await decided(
            faceid,
            Text=text(),
            BestFrame={"BestFrame": "base64-image"},
            IntentionVerifyData={
                "IntentionVerifyVideo": "base64-video",
                "AsrResult": "本人确认",
                "ErrorCode": 0,
                "ErrorMessage": "成功",
                "AsrResultSimilarity": "98.00",
            },
        )
        assert decision.status is VideoStatus.APPROVED
        assert (decision.liveness, decision.face_match) == (True, True)
        assert decision.statement_confirmed is True
        assert decision.face_match_score == pytest.approx(0.955)
        assert decision.statement_score == pytest.approx(0.98)
        assert decision.media == (
            f"tencent-faceid:{TOKEN}:best-frame",
            f"tencent-faceid:{TOKEN}:intention-video",
        )
        data = json.dumps(decision.to_data(), ensure_ascii=False)
        for personal in ("base64", "110101199003072420", "王芳"):
            assert personal not in data

    async def test_media_references_only_for_media_present(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """An empty video string is no medium; the reading step's audio is one."""
        decision = await decided(
            faceid,
            Text=text(),
            IntentionVerifyData={
                "IntentionVerifyVideo": "",
                "IntentionVerifyAudio": "base64-audio",
                "ErrorCode": 0,
            },
        )
        assert decision.media == (f"tencent-faceid:{TOKEN}:intention-audio",)

    async def test_liveness_failed(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """A failed liveness check declines without a face comparison."""
        decision = await decided(
            faceid,
            Text=text(
                ErrCode=1005,
                ErrMsg="活体检测失败",
                LiveStatus=1005,
                Comparestatus=None,
                Sim=None,
            ),
        )
        assert decision.status is VideoStatus.DECLINED
        assert (decision.liveness, decision.face_match) == (False, None)
        assert (decision.reason_code, decision.reason) == ("1005", "活体检测失败")

    async def test_face_mismatch(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """A failed comparison declines with the similarity."""
        decision = await decided(
            faceid, Text=text(ErrCode=2016, Comparestatus=2016, Sim="31.20")
        )
        assert decision.status is VideoStatus.DECLINED
        assert (decision.liveness, decision.face_match) == (True, False)
        assert decision.face_match_score == pytest.approx(0.312)

    async def test_statement_not_read(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """Liveness and face pass but the statement was not read: declined."""
        decision = await decided(
            faceid,
            Text=text(),
            IntentionVerifyData={
                "ErrorCode": -17,
                "ErrorMessage": "未检测到用户声音",
            },
        )
        assert decision.status is VideoStatus.DECLINED
        assert decision.statement_confirmed is False
        assert (decision.reason_code, decision.reason) == (
            "intention:-17",
            "未检测到用户声音",
        )

    async def test_statuses_missing_follow_err_code(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """Without LiveStatus and Comparestatus, ErrCode 0 means both passed."""
        decision = await decided(
            faceid, Text=text(LiveStatus=None, Comparestatus=None, Sim="")
        )
        assert (decision.liveness, decision.face_match) == (True, True)
        assert decision.face_match_score is None

    async def test_pass_code_outranks_the_similarity(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """ErrCode 0 passed the comparison: a similarity under 70 does not undo it."""
        decision = await decided(faceid, Text=text(Comparestatus=None, Sim="65.00"))
        assert decision.status is VideoStatus.APPROVED
        assert decision.face_match is True
        assert decision.face_match_score == pytest.approx(0.65)

    @pytest.mark.parametrize(
        ("fields", "intention"),
        [
            ({"ErrCode": 17, "ErrMsg": "本次流程未完成"}, None),
            ({}, {"ErrorCode": -12, "ErrorMessage": "流程未完成"}),
        ],
    )
    async def test_flow_still_running(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        fields: dict[str, Any],
        intention: dict[str, Any] | None,
    ) -> None:
        """ErrCode 17 and the reading step's -12 say the flow is not finished: no decision yet."""
        assert (
            await fetch(faceid, Text=text(**fields), IntentionVerifyData=intention)
            is None
        )

    async def test_token_expired_code(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """ErrCode 15 (Token 过期) is an ``expired`` decision, not a decline."""
        decision = await decided(
            faceid,
            Text=text(ErrCode=15, ErrMsg="Token 过期", LiveStatus=None, Sim=None),
        )
        assert decision.status is VideoStatus.EXPIRED
        assert (decision.code, decision.reason) == ("15", "Token 过期")

    @pytest.mark.parametrize(
        ("fields", "checks"),
        [
            # without LiveStatus and Comparestatus the documented code decides
            ({"ErrCode": 1002}, (False, None, None)),
            ({"ErrCode": 2011}, (False, None, None)),
            ({"ErrCode": 2015, "Sim": None}, (None, False, None)),
            ({"ErrCode": 2016, "Sim": None}, (None, False, None)),
            ({"ErrCode": 2006, "Sim": None}, (None, None, False)),
            ({"ErrCode": 301, "Sim": None}, (None, None, False)),
            ({"ErrCode": 302, "Sim": None}, (None, None, False)),
            # an unclassified code: the similarity decides the face (>= 70)
            ({"ErrCode": 2013, "Sim": "82.00"}, (None, True, None)),
            ({"ErrCode": 2013, "Sim": "69.99"}, (None, False, None)),
        ],
    )
    async def test_codes_name_the_failed_check(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        fields: dict[str, Any],
        checks: tuple[bool | None, bool | None, bool | None],
    ) -> None:
        """Liveness, face and register-mismatch codes set the check they are about."""
        decision = await decided(
            faceid, Text=text(LiveStatus=None, Comparestatus=None, **fields)
        )
        assert decision.status is VideoStatus.DECLINED
        assert (
            decision.liveness,
            decision.face_match,
            decision.document_valid,
        ) == checks
        assert decision.reason_code == str(fields["ErrCode"])

    @pytest.mark.parametrize(
        ("fields", "intention", "code"),
        [
            ({"ErrCode": 1001, "ErrMsg": "引擎超时,请稍后重试"}, None, "1001"),
            ({"ErrCode": 4, "ErrMsg": "服务异常"}, None, "4"),
            ({}, {"ErrorCode": -4, "ErrorMessage": "后端服务异常"}, "-4"),
        ],
    )
    async def test_failure_at_tencent_is_an_error(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        fields: dict[str, Any],
        intention: dict[str, Any] | None,
        code: str,
    ) -> None:
        """A flow ended by Tencent's own failure is a non-retryable ProviderError, not a decline."""
        with pytest.raises(ProviderError, match="no decision on the applicant") as info:
            await fetch(faceid, Text=text(**fields), IntentionVerifyData=intention)
        assert info.value.code == code
        assert info.value.retryable is False

    @pytest.mark.parametrize(
        ("intention", "status", "face_match"),
        [
            (
                {"ErrorCode": -803, "ErrorMessage": "用户主动关闭链接"},
                "abandoned",
                True,
            ),
            (
                {"ErrorCode": -802, "ErrorMessage": "核验流程异常中断"},
                "abandoned",
                True,
            ),
            (
                {"ErrorCode": 3011, "ErrorMessage": "人脸比对相似度低"},
                "declined",
                False,
            ),
        ],
    )
    async def test_reading_step_outcomes(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        intention: dict[str, Any],
        status: str,
        face_match: bool,
    ) -> None:
        """A closed link in the reading step is abandoned; a face mismatch there fails the face."""
        decision = await decided(faceid, Text=text(), IntentionVerifyData=intention)
        assert decision.status.value == status
        assert decision.face_match is face_match
        assert decision.statement_confirmed is False
        assert decision.reason_code == f"intention:{intention['ErrorCode']}"

    async def test_expired_token(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """An expired BizToken is an ``expired`` decision."""
        decision = await decided(
            faceid,
            Error={
                "Code": "InvalidParameterValue.BizTokenExpired",
                "Message": "BizToken过期",
            },
        )
        assert decision.status is VideoStatus.EXPIRED

    async def test_other_errors_raise(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """An illegal BizToken is a rejection."""
        with pytest.raises(ProviderRejectedError):
            await fetch(
                faceid,
                Error={"Code": "InvalidParameterValue.BizTokenIllegal", "Message": "x"},
            )

    @pytest.mark.parametrize(
        ("response", "field"),
        [
            ({"Text": "finished"}, "Text"),
            ({"Text": text(ErrCode="0")}, "ErrCode"),
            ({"Text": text(LiveStatus=True)}, "LiveStatus"),
            ({"Text": text(Sim="very")}, "Sim"),
            ({"Text": text(Sim="130")}, "Sim"),
            ({"Text": text(), "IntentionVerifyData": "yes"}, "IntentionVerifyData"),
        ],
    )
    async def test_malformed(
        self,
        faceid: tuple[TencentFaceId, respx.Router],
        response: dict[str, Any],
        field: str,
    ) -> None:
        """Fields of the wrong type are a ProviderResponseError naming the field."""
        with pytest.raises(ProviderResponseError) as info:
            await fetch(faceid, **response)
        assert info.value.field == field


class TestLifecycle:
    async def test_api_left_open(
        self, faceid: tuple[TencentFaceId, respx.Router]
    ) -> None:
        """``aclose`` leaves the shared API client alone; the repr names the rule."""
        provider, _ = faceid
        provider_router = faceid[1]
        provider_router.assert_all_called = False
        await provider.aclose()
        assert (
            repr(provider)
            == "<multiverify.providers.TencentFaceId(tencent-faceid, rule=7)>"
        )
        assert provider.name == "tencent-faceid"
        assert provider.max_lifetime == 7200
