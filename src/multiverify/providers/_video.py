"""The video-signing capability: what a vendor of liveness, face match and spoken consent offers.

A [`VideoSignProvider`][multiverify.providers.VideoSignProvider] opens a
vendor session for one attempt and later reports its
[`VideoDecision`][multiverify.providers.VideoDecision]. Decisions carry no
personal data and no media: only the vendor's verdict, its codes, the scores
it gave, references to the media, which stays with the vendor, and for a
vendor that reads the applicant's ID document, its holder as keyed digests
([`DocumentHolder`][multiverify.providers.DocumentHolder]).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import attrs

from ..exceptions import ProviderResponseError
from ._holder import DocumentHolder

__all__ = [
    "VideoDecision",
    "VideoSession",
    "VideoSessionRequest",
    "VideoSignProvider",
    "VideoStatus",
]


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


class VideoStatus(enum.StrEnum):
    """How a vendor decided a video session (Veriff's six statuses, which Tencent's results map onto)."""

    APPROVED = "approved"
    DECLINED = "declined"
    RESUBMISSION_REQUESTED = "resubmission_requested"
    EXPIRED = "expired"
    ABANDONED = "abandoned"
    REVIEW = "review"


@attrs.frozen(kw_only=True)
class VideoSessionRequest:
    """What a provider needs to open a session for one attempt.

    Attributes:
        reference: our reference for the attempt (``session:step:attempt``),
            echoed back by the vendor (Veriff ``vendorData``, Tencent
            ``Extra``) so callbacks and results find their step.
        applicant_id: the app's id for the applicant (not personal data).
        name: the applicant's name, for vendors that compare against an
            authoritative register; personal, masked in repr.
        national_id: the applicant's national ID number; personal.
        statement: the confirmation the applicant reads aloud.
        locale: the statement's locale, such as ``zh-CN``.
        expires_at: when the session should lapse at the latest.
    """

    reference: str
    applicant_id: str
    name: str = attrs.field(repr=False)
    national_id: str = attrs.field(repr=False)
    statement: str
    locale: str
    expires_at: datetime


@attrs.frozen(kw_only=True)
class VideoSession:
    """A vendor session the applicant completes in the browser or the vendor's SDK.

    Attributes:
        provider: the provider's name.
        session_id: the vendor's id for the session (Veriff's session id,
            Tencent's BizToken).
        url: where the applicant goes.
        expires_at: when the link lapses.
    """

    provider: str
    session_id: str
    url: str
    expires_at: datetime


def _float(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderResponseError(
            message=f"decision field {name!r} is not a number: {value!r}",
            provider=str(data.get("provider", "")),
            field=name,
        )
    return float(value)


def _flag(data: Mapping[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise ProviderResponseError(
        message=f"decision field {name!r} is not a boolean: {value!r}",
        provider=str(data.get("provider", "")),
        field=name,
    )


def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ProviderResponseError(
            message=f"decision field {name!r} is not a string: {value!r}",
            provider=str(data.get("provider", "")),
            field=name,
        )
    return value


@attrs.frozen(kw_only=True)
class VideoDecision:
    """A vendor's decision on a video session: personal data and media left out.

    Attributes:
        provider: the provider's name.
        session_id: the vendor's session id.
        status: the decision.
        code: the vendor's status code (Veriff ``9001``...), as text.
        reason_code: why it was not approved (Veriff ``reasonCode``, Tencent
            ``ErrCode``), as text.
        reason: the vendor's words for it.
        attempt_id: the vendor's id for the applicant's try within the
            session (Veriff ``attemptId``); resubmissions are new attempts.
        liveness: whether the liveness check passed, when the vendor says.
        liveness_score: the vendor's liveness score in ``[0, 1]``, if any.
        face_match: whether the face matched the ID document or register.
        face_match_score: the similarity in ``[0, 1]``, if the vendor gives one.
        document_valid: whether the ID document was accepted, when the vendor says.
        statement_confirmed: whether the spoken statement was recognised.
        statement_score: how closely the speech matched it, in ``[0, 1]``.
        decision_score: the vendor's overall confidence in ``[0, 1]``.
        media: references to the session's media at the vendor (never the
            media itself).
        decided_at: when the vendor decided, if it says.
        holder: who holds the ID document the vendor read, as keyed
            digests, for an approval by a vendor that compares the face
            with the document only (Veriff); ``None`` when the vendor does
            not report it (Tencent FaceID checks the applicant's name and ID
            number against the register itself).
    """

    provider: str
    session_id: str
    status: VideoStatus = attrs.field(converter=VideoStatus)
    code: str | None = None
    reason_code: str | None = None
    reason: str = ""
    attempt_id: str | None = None
    liveness: bool | None = None
    liveness_score: float | None = None
    face_match: bool | None = None
    face_match_score: float | None = None
    document_valid: bool | None = None
    statement_confirmed: bool | None = None
    statement_score: float | None = None
    decision_score: float | None = None
    media: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    decided_at: datetime | None = None
    holder: DocumentHolder | None = None

    def to_data(self) -> dict[str, Any]:
        """The decision as plain JSON values, for a [`ProviderEvent`][multiverify.channels.ProviderEvent]."""
        return {
            "provider": self.provider,
            "session_id": self.session_id,
            "status": self.status.value,
            "code": self.code,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "attempt_id": self.attempt_id,
            "liveness": self.liveness,
            "liveness_score": self.liveness_score,
            "face_match": self.face_match,
            "face_match_score": self.face_match_score,
            "document_valid": self.document_valid,
            "statement_confirmed": self.statement_confirmed,
            "statement_score": self.statement_score,
            "decision_score": self.decision_score,
            "media": list(self.media),
            "decided_at": None
            if self.decided_at is None
            else self.decided_at.isoformat(),
            "holder": None if self.holder is None else self.holder.to_data(),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> VideoDecision:
        """Read back [`to_data`][multiverify.providers.VideoDecision.to_data].

        Raises:
            ProviderResponseError: a field is missing or of the wrong type.
        """
        provider = _text(data, "provider", required=True) or ""
        status = _text(data, "status", required=True) or ""
        try:
            parsed = VideoStatus(status)
        except ValueError:
            raise ProviderResponseError(
                message=f"unknown video decision status {status!r}",
                provider=provider,
                field="status",
            ) from None
        media = data.get("media", [])
        if not isinstance(media, list) or not all(isinstance(m, str) for m in media):
            raise ProviderResponseError(
                message="decision field 'media' is not a list of strings",
                provider=provider,
                field="media",
            )
        decided = _text(data, "decided_at")
        try:
            decided_at = None if decided is None else datetime.fromisoformat(decided)
        except ValueError:
            raise ProviderResponseError(
                message=f"decision field 'decided_at' is not a timestamp: {decided!r}",
                provider=provider,
                field="decided_at",
            ) from None
        holder = data.get("holder")
        if holder is not None and not isinstance(holder, Mapping):
            raise ProviderResponseError(
                message="decision field 'holder' is not an object",
                provider=provider,
                field="holder",
            )
        return cls(
            provider=provider,
            session_id=_text(data, "session_id", required=True) or "",
            status=parsed,
            code=_text(data, "code"),
            reason_code=_text(data, "reason_code"),
            reason=_text(data, "reason") or "",
            attempt_id=_text(data, "attempt_id"),
            liveness=_flag(data, "liveness"),
            liveness_score=_float(data, "liveness_score"),
            face_match=_flag(data, "face_match"),
            face_match_score=_float(data, "face_match_score"),
            document_valid=_flag(data, "document_valid"),
            statement_confirmed=_flag(data, "statement_confirmed"),
            statement_score=_float(data, "statement_score"),
            decision_score=_float(data, "decision_score"),
            media=media,
            decided_at=decided_at,
            holder=None if holder is None else DocumentHolder.from_data(holder),
        )


def missing_field(provider: str, field: str) -> ProviderResponseError:
    """The error for a vendor answer without a usable documented ``field``."""
    return ProviderResponseError(
        message=f"{provider} answered without a usable {field}",
        provider=provider,
        field=field,
    )


def opened_session(
    request: VideoSessionRequest,
    *,
    provider: str,
    session_id: object,
    url: object,
    fields: tuple[str, str],
) -> VideoSession:
    """The session a vendor says it opened, once its id and its ``https`` link are checked.

    Raises:
        ProviderResponseError: no id, or no ``https`` link; ``fields`` name
            the two in the vendor's answer.
    """
    if not isinstance(session_id, str) or not session_id:
        raise missing_field(provider, fields[0])
    if not isinstance(url, str) or not url.startswith("https://"):
        raise missing_field(provider, fields[1])
    return VideoSession(
        provider=provider, session_id=session_id, url=url, expires_at=request.expires_at
    )


class VideoSignProvider(Protocol):
    """**Protocol**: a vendor of video sessions with liveness, face match and spoken consent.

    Added in 0.1.
    """

    @property
    def name(self) -> str:
        """The provider's name, as policies list it (``veriff``, ``tencent-faceid``)."""
        ...

    @property
    def max_lifetime(self) -> float:
        """The longest a session may stay open at this vendor, in seconds."""
        ...

    async def create_session(self, request: VideoSessionRequest, /) -> VideoSession:
        """Open a session for one attempt.

        Raises:
            ProviderError: the vendor refused or could not be reached;
                [`ProviderResponseError`][multiverify.exceptions.ProviderResponseError]
                when its answer lacks a documented field.
        """
        ...

    async def fetch_decision(self, session: VideoSession, /) -> VideoDecision | None:
        """The session's decision, or ``None`` while there is none yet.

        Raises:
            ProviderError: as for ``create_session``.
        """
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (an HTTP client it made)."""
        ...
