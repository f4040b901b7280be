"""Tencent Cloud FaceID (慧眼): liveness, 1:1 face match and intent reading (意愿核身), polled.

Wire format (faceid, version 2018-03-01, host ``faceid.tencentcloudapi.com``,
TC3-signed through [`TencentCloudApi`][multiverify.providers.TencentCloudApi]):

- ``DetectAuth`` (https://cloud.tencent.com/document/api/1007/31816) takes
  ``RuleId`` (the flow configured in the console), ``IdCard`` and ``Name``
  (compared against the authoritative register), ``Extra`` (passed through
  to the result, at most 1,024 characters), ``RedirectUrl`` and
  ``IntentionVerifyText``, the text the applicant reads aloud in the
  reading mode of 意愿核身 (at most 120 characters). It answers ``Url``
  (the H5 flow for the applicant) and ``BizToken``, valid for 7,200 s.
- ``GetDetectInfoEnhanced`` (https://cloud.tencent.com/document/api/1007/41957)
  takes ``BizToken``, ``RuleId`` and ``InfoType`` (``1`` text results, ``5``
  the reading-mode results; a BizToken can be read for three days). It
  answers ``Text`` (``ErrCode`` 0 = liveness and face match passed, not
  counting the intent step; ``LiveStatus`` and ``Comparestatus``, 0 =
  passed; ``Sim``, the similarity 0-100, the same person from 70;
  ``Extra``) and ``IntentionVerifyData`` (``ErrorCode`` 0 = the statement
  was read; ``AsrResultSimilarity`` 0-100). ``Text`` or its ``ErrCode`` is
  null while the applicant has not finished.
- An expired BizToken is the error ``InvalidParameterValue.BizTokenExpired``
  (https://cloud.tencent.com/document/product/1007/108012).

Result codes (``Text.ErrCode``: https://cloud.tencent.com/document/product/1007/115319
for 意愿核身, https://cloud.tencent.com/document/product/1007/31082 for the
Plus flow; ``IntentionVerifyData.ErrorCode`` in the API reference of
``IntentionVerifyData``) are read by what they say about the applicant:

- ``15`` (Token 过期) is ``expired``; ``17`` (本次流程未完成) and the reading
  step's ``-12`` (流程未完成) mean the flow is still running: no decision yet.
- ``1002``-``1005`` (疑似非真人录制, 人脸验证失败) and ``2011`` (疑似非活体)
  fail liveness; ``2015`` and ``2016`` (无法判断为同一人: 比对失败, 相似度未达到
  通过阈值) and the reading step's ``3011``/``3012`` fail the face match;
  ``2006`` and ``301`` (the name and ID number do not match the register or
  the card shown) and ``302`` (身份证已过期) reject the identity document.
- Codes that name a failure at Tencent rather than a judgement of the
  applicant (服务异常, 引擎超时, 调用方式出错; the reading step's 系统异常 and
  后端服务异常 codes) end the flow without a decision: a non-retryable
  [`ProviderError`][multiverify.exceptions.ProviderError], so the step ends as ``error``.
- The reading step's ``-802`` and ``-803`` (the flow was interrupted, the
  applicant closed the link) are ``abandoned``.
- Every other non-zero code declines, with the code and Tencent's message.

FaceID sends no signed callback: ``RedirectUrl`` only brings the applicant's
browser back. Results are polled, so the channel's poll timers are the only
way a Tencent decision arrives. ``DetectAuth`` has no idempotency key and no
lookup by ``Extra``: a retried create whose answer was lost opens a second
flow, whose result the channel never reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import ProviderError, ProviderRejectedError, ProviderResponseError
from ._tencent import TencentCloudApi
from ._video import (
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoStatus,
    missing_field,
    opened_session,
)

__all__ = ["TencentFaceId"]

_HOST = "faceid.tencentcloudapi.com"
_SERVICE = "faceid"
_VERSION = "2018-03-01"
_BIZ_TOKEN_LIFETIME = 7200.0
_MAX_STATEMENT = 120
_MAX_NAME = 32
_EXPIRED = "InvalidParameterValue.BizTokenExpired"
_SAME_PERSON = 0.70  # Sim >= 70: the same person (the threshold is Tencent's, fixed)

# Text.ErrCode, by meaning (see the module docstring for the sources).
_TOKEN_EXPIRED = 15
_FLOW_UNFINISHED = 17
_LIVENESS_FAILED = frozenset({1002, 1003, 1004, 1005, 2011})
_FACE_MISMATCH = frozenset({2015, 2016})
_IDENTITY_REFUSED = frozenset({301, 302, 2006})
_SERVICE_FAILED = frozenset(
    {1, 2, 3, 4, 8, 10, 12, 13, 201, 202, 203, 204, 1001, 1006, 1007, 1008, 2001, 2017}
)
# IntentionVerifyData.ErrorCode, the reading step.
_INTENT_UNFINISHED = -12
_INTENT_ABANDONED = frozenset({-802, -803})
_INTENT_FACE_MISMATCH = frozenset({3011, 3012})
_INTENT_SERVICE_FAILED = frozenset(
    {-1, -2, -3, -4, -5, -6, -7, -8, -9, -11, -13, -16, -800}
)
# Media the result may hold, by field: kept as references, the content dropped.
# A reference is kept only where the answer holds the medium (an empty
# string means there is none); it can be fetched again with the BizToken for
# three days (``InfoType`` 3, 4 or 5).
_MEDIA = (
    ("BestFrame", "BestFrame", "best-frame"),
    ("VideoData", "LivenessVideo", "video"),
    ("IntentionVerifyData", "IntentionVerifyVideo", "intention-video"),
    ("IntentionVerifyData", "IntentionVerifyAudio", "intention-audio"),
)


def _int(data: Mapping[str, Any], name: str, provider: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProviderResponseError(
            message=f"{provider} sent a {name} that is not a whole number: {value!r}",
            provider=provider,
            field=name,
        )
    return value


def _percent(data: Mapping[str, Any], name: str, provider: str) -> float | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.0 <= number <= 100.0:  # noqa: PLR2004 - a percentage
        raise ProviderResponseError(
            message=f"{provider} sent a {name} that is not a score from 0 to 100: {value!r}",
            provider=provider,
            field=name,
        )
    return number / 100.0


def _check(status: int | None, code: int, failing: frozenset[int]) -> bool | None:
    """One check's outcome: its own status when given, else what ``ErrCode`` says of it."""
    if status is not None:
        return status == 0
    if code == 0:
        return True
    return False if code in failing else None


def _message(text: Mapping[str, Any]) -> str:
    return str(text.get("ErrMsg") or "")


class TencentFaceId:
    """FaceID H5 sessions with intent reading: ``DetectAuth``, then ``GetDetectInfoEnhanced``.

    Args:
        api: the signed Tencent Cloud API client (shared with other Tencent
            providers; left open by ``aclose``).
        rule_id: the FaceID flow (``RuleId``) configured for intent reading.
        redirect_url: where the applicant's browser goes after the flow.
        provider: the name policies and errors use.
    """

    def __init__(
        self,
        api: TencentCloudApi,
        *,
        rule_id: str,
        redirect_url: str | None = None,
        provider: str = "tencent-faceid",
    ) -> None:
        self._api = api
        self._rule_id = rule_id
        self._redirect_url = redirect_url
        self._name = provider

    def __repr__(self) -> str:
        return (
            f"<multiverify.providers.TencentFaceId({self._name}, rule={self._rule_id})>"
        )

    @property
    def name(self) -> str:
        """The provider's name."""
        return self._name

    @property
    def max_lifetime(self) -> float:
        """7,200 seconds: how long a BizToken lets the applicant start the flow."""
        return _BIZ_TOKEN_LIFETIME

    async def create_session(self, request: VideoSessionRequest, /) -> VideoSession:
        """Call ``DetectAuth`` with the applicant's name, ID number and statement.

        Raises:
            ProviderRejectedError: the statement is over 120 characters or the
                name over 32 (FaceID's limits), before anything is sent.
            ProviderError: mapped from Tencent's error code;
                [`ProviderResponseError`][multiverify.exceptions.ProviderResponseError]
                when the answer has no ``Url`` or ``BizToken``.
        """
        if len(request.statement) > _MAX_STATEMENT:
            raise ProviderRejectedError(
                message=f"{self._name} reads statements of at most {_MAX_STATEMENT} "
                f"characters; this one has {len(request.statement)}",
                provider=self._name,
            )
        if len(request.name) > _MAX_NAME:
            raise ProviderRejectedError(
                message=f"{self._name} takes names of at most {_MAX_NAME} characters",
                provider=self._name,
            )
        payload: dict[str, Any] = {
            "RuleId": self._rule_id,
            "IdCard": request.national_id,
            "Name": request.name,
            "Extra": request.reference,
            "IntentionVerifyText": request.statement,
        }
        if self._redirect_url is not None:
            payload["RedirectUrl"] = self._redirect_url
        answer = await self._call("DetectAuth", payload)
        return opened_session(
            request,
            provider=self._name,
            session_id=answer.get("BizToken"),
            url=answer.get("Url"),
            fields=("BizToken", "Url"),
        )

    async def fetch_decision(self, session: VideoSession, /) -> VideoDecision | None:
        """Read ``GetDetectInfoEnhanced``; ``None`` while the applicant has not finished.

        An expired BizToken (the API error, or ``ErrCode`` 15) is an
        ``expired`` decision.

        Raises:
            ProviderError: mapped from Tencent's error code, or a flow that
                ended on a failure at Tencent (not retryable); a result with
                fields of the wrong type is a ProviderResponseError.
        """
        try:
            answer = await self._call(
                "GetDetectInfoEnhanced",
                {
                    "BizToken": session.session_id,
                    "RuleId": self._rule_id,
                    "InfoType": "15",
                },
            )
        except ProviderError as exc:
            if exc.code != _EXPIRED:
                raise
            return self._expired(
                session.session_id,
                _EXPIRED,
                "the BizToken expired before the flow was completed",
            )
        text = answer.get("Text")
        if text is None:
            return None
        if not isinstance(text, dict):
            raise self._missing("Text")
        code = _int(text, "ErrCode", self._name)
        if code is None or code == _FLOW_UNFINISHED:
            return None
        if code == _TOKEN_EXPIRED:
            return self._expired(session.session_id, str(code), _message(text))
        if code in _SERVICE_FAILED:
            raise self._failed(code, _message(text))
        intention = answer.get("IntentionVerifyData")
        if intention is not None and not isinstance(intention, dict):
            raise self._missing("IntentionVerifyData")
        intent_code = None
        if intention:
            intent_code = _int(intention, "ErrorCode", self._name)
            if code == 0 and intent_code == _INTENT_UNFINISHED:
                return None
            if code == 0 and intent_code in _INTENT_SERVICE_FAILED:
                raise self._failed(
                    intent_code,
                    str(intention.get("ErrorMessage") or ""),
                    step="intention",
                )
        return self._decision(
            session.session_id,
            answer,
            text=text,
            code=code,
            intention=intention or {},
            intent_code=intent_code,
        )

    async def aclose(self) -> None:
        """Nothing to release: the API client belongs to whoever passed it in."""

    def _decision(
        self,
        token: str,
        answer: Mapping[str, Any],
        *,
        text: Mapping[str, Any],
        code: int,
        intention: Mapping[str, Any],
        intent_code: int | None,
    ) -> VideoDecision:
        live = _int(text, "LiveStatus", self._name)
        compare = _int(text, "Comparestatus", self._name)
        similarity = _percent(text, "Sim", self._name)
        liveness = _check(live, code, _LIVENESS_FAILED)
        if (
            compare is None
            and similarity is not None
            and code
            and liveness is not False
        ):
            face_match: bool | None = similarity >= _SAME_PERSON
        else:
            face_match = _check(compare, code, _FACE_MISMATCH)
        if liveness is False and compare is None:
            face_match = None  # no comparison without a live face
        confirmed = None if intent_code is None else intent_code == 0
        if intent_code in _INTENT_FACE_MISMATCH:
            face_match = False
        reason_code = None if code == 0 else str(code)
        reason = "" if code == 0 else _message(text)
        if code == 0 and confirmed is False:
            reason_code = f"intention:{intent_code}"
            reason = str(intention.get("ErrorMessage") or "")
        if code == 0 and intent_code in _INTENT_ABANDONED:
            status = VideoStatus.ABANDONED
        elif code == 0 and confirmed is not False:
            status = VideoStatus.APPROVED
        else:
            status = VideoStatus.DECLINED
        media = [
            f"{self._name}:{token}:{label}"
            for field, content, label in _MEDIA
            if isinstance(part := answer.get(field), dict) and part.get(content)
        ]
        return VideoDecision(
            provider=self._name,
            session_id=token,
            status=status,
            code=str(code),
            reason_code=reason_code,
            reason=reason,
            liveness=liveness,
            face_match=face_match,
            face_match_score=similarity,
            document_valid=False if code in _IDENTITY_REFUSED else None,
            statement_confirmed=confirmed,
            statement_score=_percent(intention, "AsrResultSimilarity", self._name),
            media=media,
        )

    def _expired(self, token: str, code: str, reason: str) -> VideoDecision:
        return VideoDecision(
            provider=self._name,
            session_id=token,
            status=VideoStatus.EXPIRED,
            code=code,
            reason=reason,
        )

    def _failed(self, code: int, message: str, *, step: str = "flow") -> ProviderError:
        return ProviderError(
            message=f"{self._name} ended the {step} on a failure of its own "
            f"(code {code}: {message or 'no message'}); no decision on the applicant",
            provider=self._name,
            code=str(code),
        )

    def _missing(self, field: str) -> ProviderResponseError:
        return missing_field(self._name, field)

    async def _call(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self._api.call(
            host=_HOST,
            service=_SERVICE,
            action=action,
            version=_VERSION,
            payload=payload,
        )
