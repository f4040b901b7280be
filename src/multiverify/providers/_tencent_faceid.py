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
from ._video import VideoDecision, VideoSession, VideoSessionRequest, VideoStatus

__all__ = ["TencentFaceId"]

_HOST = "faceid.tencentcloudapi.com"
_SERVICE = "faceid"
_VERSION = "2018-03-01"
_BIZ_TOKEN_LIFETIME = 7200.0
_MAX_STATEMENT = 120
_MAX_NAME = 32
_EXPIRED = "InvalidParameterValue.BizTokenExpired"
# Media the result may hold, by field: kept as references, the content dropped.
_MEDIA = (
    ("BestFrame", "best-frame"),
    ("VideoData", "video"),
    ("IntentionVerifyData", "intention-video"),
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
        url, token = answer.get("Url"), answer.get("BizToken")
        if not isinstance(token, str) or not token:
            raise self._missing("BizToken")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise self._missing("Url")
        return VideoSession(
            provider=self._name,
            session_id=token,
            url=url,
            expires_at=request.expires_at,
        )

    async def fetch_decision(self, session: VideoSession, /) -> VideoDecision | None:
        """Read ``GetDetectInfoEnhanced``; ``None`` while the applicant has not finished.

        An expired BizToken is an ``expired`` decision.

        Raises:
            ProviderError: mapped from Tencent's error code; a result with
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
            return VideoDecision(
                provider=self._name,
                session_id=session.session_id,
                status=VideoStatus.EXPIRED,
                code=_EXPIRED,
                reason="the BizToken expired before the flow was completed",
            )
        text = answer.get("Text")
        if text is None:
            return None
        if not isinstance(text, dict):
            raise self._missing("Text")
        code = _int(text, "ErrCode", self._name)
        if code is None:
            return None
        return self._decision(session.session_id, answer, text, code)

    async def aclose(self) -> None:
        """Nothing to release: the API client belongs to whoever passed it in."""

    def _decision(
        self,
        token: str,
        answer: Mapping[str, Any],
        text: Mapping[str, Any],
        code: int,
    ) -> VideoDecision:
        live = _int(text, "LiveStatus", self._name)
        compare = _int(text, "Comparestatus", self._name)
        liveness = (live == 0) if live is not None else (True if code == 0 else None)
        face_match = (
            (compare == 0) if compare is not None else (True if code == 0 else None)
        )
        if liveness is False and compare is None:
            face_match = None  # no comparison without a live face
        intention = answer.get("IntentionVerifyData")
        if intention is not None and not isinstance(intention, dict):
            raise self._missing("IntentionVerifyData")
        confirmed: bool | None = None
        similarity: float | None = None
        reason_code = None if code == 0 else str(code)
        reason = "" if code == 0 else str(text.get("ErrMsg") or "")
        if intention:
            intent_code = _int(intention, "ErrorCode", self._name)
            similarity = _percent(intention, "AsrResultSimilarity", self._name)
            if intent_code is not None:
                confirmed = intent_code == 0
                if not confirmed and code == 0:
                    reason_code = f"intention:{intent_code}"
                    reason = str(intention.get("ErrorMessage") or "")
        approved = code == 0 and confirmed is not False
        media = [
            f"{self._name}:{token}:{label}"
            for field, label in _MEDIA
            if isinstance(answer.get(field), dict) and answer[field]
        ]
        return VideoDecision(
            provider=self._name,
            session_id=token,
            status=VideoStatus.APPROVED if approved else VideoStatus.DECLINED,
            code=str(code),
            reason_code=reason_code,
            reason=reason,
            liveness=liveness,
            face_match=face_match,
            face_match_score=_percent(text, "Sim", self._name),
            statement_confirmed=confirmed,
            statement_score=similarity,
            media=media,
        )

    def _missing(self, field: str) -> ProviderResponseError:
        return ProviderResponseError(
            message=f"{self._name} answered without a usable {field}",
            provider=self._name,
            field=field,
        )

    async def _call(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self._api.call(
            host=_HOST,
            service=_SERVICE,
            action=action,
            version=_VERSION,
            payload=payload,
        )
