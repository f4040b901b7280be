"""Veriff: video identity sessions over the public API v1, HMAC-signed.

Wire format (https://devdocs.veriff.com/apidocs/v1sessions,
https://devdocs.veriff.com/docs/hmac-authentication-and-endpoint-security,
https://devdocs.veriff.com/docs/general-faq):

- Every request carries ``X-AUTH-CLIENT: <API key>`` and ``X-HMAC-SIGNATURE``,
  the hex HMAC-SHA256 with the integration's shared secret over the exact
  raw body for POST and PATCH, over the session id for GET and DELETE
  (``POST /sessions`` would pass without one; it is signed all the same).
- ``POST /v1/sessions`` with ``{"verification": {"callback", "vendorData",
  "endUserId", ...}}`` answers ``{"status": "success", "verification":
  {"id", "url", "vendorData", "host", "status": "created", "sessionToken"}}``;
  ``url`` is the link for the applicant. ``vendorData`` (at most 1,000
  characters of non-semantic data) comes back unchanged in every webhook
  and decision, which is how a callback finds its step.
- ``GET /v1/sessions/{id}/decision`` (https://devdocs.veriff.com/apidocs/v1sessionsiddecision-1)
  answers the decision webhook's ``verification`` object, or ``null`` while
  there is no decision yet: the polling fallback.
- Errors are ``{"status": "fail", "code", "message"}`` with the HTTP status.

Decisions (https://devdocs.veriff.com/docs/verification-session-decisions,
https://devdocs.veriff.com/docs/verification-session-decision-codes-table):
``verification.status`` is ``approved`` (code 9001), ``declined`` (9102),
``resubmission_requested`` (9103), ``expired`` (9104), ``abandoned`` or
``review``. The docs disagree on the last two codes: the status-code table
gives ``abandoned`` 9104 and ``review`` 9121, the decision endpoint's page
``abandoned`` 9121. The status string decides; a code is read only when the
status is missing, and 9121 then counts as abandoned (the endpoint's page,
the one this provider polls). Declines and resubmissions carry
``reasonCode`` and ``reason`` (e.g. 103 "Person showing the document does
not appear to match document photo", 202 "Face not clearly visible").
After nine resubmissions Veriff declines the tenth with code 539.

The document's holder (https://devdocs.veriff.com/docs/decision-webhook,
the same object from the decision endpoint): ``verification.person`` has
``firstName``, ``lastName``, ``fullName``, ``idNumber`` (the national
identification number) and ``dateOfBirth`` (``YYYY-MM-DD``), each ``null``
when Veriff read none; ``verification.document`` has ``number``
(``[a-zA-Z0-9]`` only), ``type`` (``PASSPORT``, ``ID_CARD``...), ``country``
(ISO 3166 alpha-2) and ``validUntil``; either object may be ``null``. Veriff
compares the face with the document's photo, not the document with the
applicant: of an approval, the name, ID number, document number and birth
date are kept only as keyed digests
([`DocumentHolder`][multiverify.providers.DocumentHolder], under a key
derived from the shared secret) for the channel to compare with the
applicant; nothing else of the two objects is read.

``POST /v1/sessions`` also takes ``verification.person`` (``firstName``,
``lastName``, ``idNumber``, ``dateOfBirth``, ``gender``, ``email``,
``phoneNumber``...: https://devdocs.veriff.com/apidocs/v1sessions). It is not
sent: the identity verification this provider uses needs none of it, and
Veriff's person data may be "extracted or input via initData"
(https://devdocs.veriff.com/apidocs/v1sessionsidperson-1), so a decision's
``person`` could echo the applicant's own data back instead of the
document's, and the comparison would prove nothing.

Idempotency: ``POST /v1/sessions`` takes no idempotency key and Veriff has
no call that lists sessions by ``vendorData``, so a create whose answer was
lost cannot be looked up: retrying it opens a second session. The channel
keeps the first successful answer per attempt in the shared store and
ignores decisions for any other session of the attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from .._http import error_for_response, exchange
from ..exceptions import ProviderResponseError, ProviderUnavailableError
from ._holder import DocumentHolder, HolderKey
from ._video import (
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoStatus,
    missing_field,
    opened_session,
)

__all__ = ["Veriff", "parse_veriff_decision", "veriff_signature"]

_SEVEN_DAYS = 7 * 24 * 3600.0

# verification.code when verification.status is missing (see the module docstring).
_CODES = {
    "9001": VideoStatus.APPROVED,
    "9102": VideoStatus.DECLINED,
    "9103": VideoStatus.RESUBMISSION_REQUESTED,
    "9104": VideoStatus.EXPIRED,
    "9121": VideoStatus.ABANDONED,
}

# Statuses a session passes through before its decision (7001 started, 7002 submitted).
PROGRESS_STATUSES = frozenset({"created", "started", "submitted"})

# Reason codes, by what they say about the checks (decision codes table and
# granular reason codes, https://devdocs.veriff.com/docs/granular-reason-codes).
FACE_MISMATCH_CODES = frozenset({"103", "120", "127", "509"})
"""The face does not match the document (or the reference photo, or matched a blocklist)."""
LIVENESS_FAILED_CODES = frozenset({"503", "504", "505", "515", "526"})
"""Presentation attacks: a screen, a printout or streamed photos instead of a live person."""
DOCUMENT_INVALID_CODES = frozenset(
    {"101", "102", "205", "206", "207", "507", "508", "510", "511"}
)
"""The document: not physical, tampered, damaged, of an unsupported type, expired."""

# The namespace of endUserId: a stable UUID per applicant, carrying nothing personal.
_END_USER_NAMESPACE = uuid.UUID("6f2c1d0e-3b4a-5c6d-8e9f-a0b1c2d3e4f5")


def veriff_signature(shared_secret: str, message: bytes | str) -> str:
    """``X-HMAC-SIGNATURE``: hex HMAC-SHA256 of ``message`` with the shared secret.

    ``message`` is the raw body of a POST or PATCH (and of a webhook), or
    the session id of a GET or DELETE.

    >>> veriff_signature("abcdef12-abcd-abcd-abcd-abcdef012345",
    ...                  "aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7")
    '895cb3fd31139d89aeb7b263682e15479ab57651e70591256ad2c14fde4950dd'
    """
    raw = message.encode("utf-8") if isinstance(message, str) else message
    return hmac.new(shared_secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def _code(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _status(verification: Mapping[str, Any], provider: str) -> VideoStatus:
    status = verification.get("status")
    if isinstance(status, str):
        try:
            return VideoStatus(status)
        except ValueError:
            raise ProviderResponseError(
                message=f"{provider} sent an unknown decision status {status!r}",
                provider=provider,
                field="verification.status",
            ) from None
    code = _code(verification.get("code"))
    if status is None and code in _CODES:
        return _CODES[code]
    raise ProviderResponseError(
        message=f"{provider} sent a decision without a status "
        f"(status {status!r}, code {verification.get('code')!r})",
        provider=provider,
        field="verification.status",
    )


def _decided_at(value: Any, provider: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ProviderResponseError(
        message=f"{provider} sent a decisionTime that is not a timestamp: {value!r}",
        provider=provider,
        field="verification.decisionTime",
    )


def _score(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        score = float(value)
        if 0.0 <= score <= 1.0:
            return score
    return None


def _given(data: Any, name: str) -> str | None:
    if not isinstance(data, Mapping):
        return None
    value = data.get(name)
    return value if isinstance(value, str) else None


def _holder(verification: Mapping[str, Any], key: HolderKey) -> DocumentHolder:
    person = verification.get("person")
    document = verification.get("document")
    return DocumentHolder.read(
        key,
        given_name=_given(person, "firstName"),
        family_name=_given(person, "lastName"),
        full_name=_given(person, "fullName"),
        national_id=_given(person, "idNumber"),
        document_number=_given(document, "number"),
        date_of_birth=_given(person, "dateOfBirth"),
    )


def parse_veriff_decision(
    verification: Mapping[str, Any],
    *,
    provider: str = "veriff",
    media_base: str = "https://stationapi.veriff.com",
    holder_key: HolderKey | None = None,
) -> VideoDecision:
    """Turn a decision's ``verification`` object into a [`VideoDecision`][multiverify.providers.VideoDecision].

    The person and document data in the object are left out; with
    ``holder_key``, an approval keeps the document holder's name, ID
    number, document number and birth date as digests under it
    (``holder``), for the channel to compare with the applicant. An
    approval's stale ``reason`` (Veriff may repeat an earlier attempt's) is
    dropped.

    Raises:
        ProviderResponseError: no session id, no usable status, or a
            malformed ``decisionTime``.
    """
    session_id = verification.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise ProviderResponseError(
            message=f"{provider} sent a decision without a session id",
            provider=provider,
            field="verification.id",
        )
    status = _status(verification, provider)
    reason_code = _code(verification.get("reasonCode"))
    reason = verification.get("reason")
    reason = reason if isinstance(reason, str) else ""
    liveness: bool | None = None
    face_match: bool | None = None
    if status is VideoStatus.APPROVED:
        liveness = face_match = True
        reason_code, reason = None, ""
    elif reason_code in FACE_MISMATCH_CODES:
        face_match = False
    elif reason_code in LIVENESS_FAILED_CODES:
        liveness = False
    attempt = verification.get("attemptId")
    return VideoDecision(
        provider=provider,
        session_id=session_id,
        status=status,
        code=_code(verification.get("code")),
        reason_code=reason_code,
        reason=reason,
        attempt_id=attempt if isinstance(attempt, str) and attempt else None,
        liveness=liveness,
        face_match=face_match,
        document_valid=False
        if reason_code in DOCUMENT_INVALID_CODES
        else (True if status is VideoStatus.APPROVED else None),
        decision_score=_score(verification.get("decisionScore")),
        media=(f"{media_base.rstrip('/')}/v1/sessions/{session_id}/media",),
        decided_at=_decided_at(verification.get("decisionTime"), provider),
        holder=_holder(verification, holder_key)
        if holder_key is not None and status is VideoStatus.APPROVED
        else None,
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


class Veriff:
    """Veriff sessions: create with ``POST /v1/sessions``, poll ``GET /v1/sessions/{id}/decision``.

    Liveness and the face match against the ID document are Veriff's; it
    reports them as a decision with reason codes, not as scores (a
    ``decisionScore`` is read when the integration sends one). Veriff does
    not check a spoken statement: the app shows the statement and the
    session's video records the applicant, so decisions never say
    ``statement_confirmed``.

    Args:
        api_key: the integration's API key (``X-AUTH-CLIENT``).
        shared_secret: the integration's shared secret key (HMAC).
        base_url: the integration's API URL from the Customer Portal.
        callback: where the applicant's browser goes after the flow
            (``verification.callback``); the portal's default otherwise.
        client: an HTTP client to use (left open); one is made and closed otherwise.
        provider: the name policies and errors use.
    """

    def __init__(
        self,
        *,
        api_key: str,
        shared_secret: str,
        base_url: str = "https://stationapi.veriff.com",
        callback: str | None = None,
        client: httpx.AsyncClient | None = None,
        provider: str = "veriff",
    ) -> None:
        self._api_key = api_key
        self._secret = shared_secret
        self.base_url = base_url.rstrip("/")
        self._callback = callback
        self._name = provider
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=10.0)
        self._holder_key = HolderKey(shared_secret)

    def __repr__(self) -> str:
        return f"<multiverify.providers.Veriff({self._name}, {self.base_url})>"

    @property
    def name(self) -> str:
        """The provider's name."""
        return self._name

    @property
    def max_lifetime(self) -> float:
        """Seven days: how long a Veriff session stays open."""
        return _SEVEN_DAYS

    @property
    def holder_key(self) -> HolderKey:
        """The key of the document holder's digests (from the shared secret, as the webhooks' is)."""
        return self._holder_key

    async def create_session(self, request: VideoSessionRequest, /) -> VideoSession:
        """Open a Veriff session whose ``vendorData`` is the attempt's reference.

        No name, ID number or birth date is sent (``verification.person``
        stays out): Veriff reads them from the document the applicant shows
        and matches the face against it; the channel then compares that
        document's holder with the applicant.

        Raises:
            ProviderError: mapped from the HTTP status and Veriff's code;
                [`ProviderResponseError`][multiverify.exceptions.ProviderResponseError]
                when the answer has no session id or URL.
        """
        verification: dict[str, Any] = {
            "vendorData": request.reference,
            "endUserId": str(uuid.uuid5(_END_USER_NAMESPACE, request.applicant_id)),
        }
        if self._callback is not None:
            verification["callback"] = self._callback
        body = json.dumps(
            {"verification": verification}, separators=(",", ":"), ensure_ascii=True
        ).encode()
        data = await self._send("POST", "/v1/sessions", body, signed=body)
        created = data.get("verification")
        if not isinstance(created, dict):
            raise self._missing("verification")
        return opened_session(
            request,
            provider=self._name,
            session_id=created.get("id"),
            url=created.get("url"),
            fields=("verification.id", "verification.url"),
        )

    async def fetch_decision(self, session: VideoSession, /) -> VideoDecision | None:
        """The session's decision, or ``None`` while Veriff has none (``verification: null``).

        Raises:
            ProviderError: as for ``create_session``; a decision that does
                not parse is a ProviderResponseError.
        """
        data = await self._send(
            "GET",
            f"/v1/sessions/{session.session_id}/decision",
            None,
            signed=session.session_id.encode(),
        )
        if "verification" not in data:
            raise self._missing("verification")
        verification = data["verification"]
        if verification is None:
            return None
        if not isinstance(verification, dict):
            raise self._missing("verification")
        if verification.get("status") in PROGRESS_STATUSES:
            return None
        return parse_veriff_decision(
            verification,
            provider=self._name,
            media_base=self.base_url,
            holder_key=self._holder_key,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_client:
            await self._client.aclose()

    def _missing(self, field: str) -> ProviderResponseError:
        return missing_field(self._name, field)

    async def _send(
        self, method: str, path: str, body: bytes | None, *, signed: bytes
    ) -> dict[str, Any]:
        headers = {
            "X-AUTH-CLIENT": self._api_key,
            "X-HMAC-SIGNATURE": veriff_signature(self._secret, signed),
            "Accept": "application/json",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.build_request(
            method, self.base_url + path, content=body, headers=headers
        )
        response = await exchange(self._client, self._name, request)
        data = _json(response)
        if not response.is_success:
            message = code = None
            if isinstance(data, dict):
                code = _code(data.get("code"))
                if isinstance(data.get("message"), str):
                    message = (
                        f"{self._name} answered HTTP {response.status_code}: "
                        f"{data['message']}" + (f" (code {code})" if code else "")
                    )
            raise error_for_response(self._name, response, message=message, code=code)
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                message=f"{self._name} answered with a body that is not a JSON object",
                provider=self._name,
                status_code=response.status_code,
            )
        return data
