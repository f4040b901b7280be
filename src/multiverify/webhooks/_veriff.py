"""Veriff's decision and event webhooks: HMAC over the raw body, routed by ``vendorData``.

Per https://devdocs.veriff.com/docs/hmac-authentication-and-endpoint-security
and https://devdocs.veriff.com/docs/decision-webhook: Veriff POSTs JSON to
the integration's webhook URLs with ``X-AUTH-CLIENT`` (the integration's API
key) and ``X-HMAC-SIGNATURE`` (also sent as ``VRF-HMAC-SIGNATURE``), the hex
HMAC-SHA256 of the raw body with the shared secret. Decision webhooks hold
``{"status": "success", "verification": {...}, "technicalData": {...}}``;
event webhooks (https://devdocs.veriff.com/docs/event-webhook) hold
``{"id", "attemptId", "feature", "code", "action", "vendorData"}`` with the
actions ``started`` (7001) and ``submitted`` (7002). Veriff's body has no
timestamp to bound a delivery's age: a replay is caught by the runtime's
deduplication instead. The webhook URLs are set per integration, not per
session, so the session is found through ``vendorData``, which the channel
set to the attempt's ``session:step:attempt``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from .._session import Session
from ..channels import ProviderEvent
from ..exceptions import (
    ProviderResponseError,
    WebhookFormatError,
    WebhookSignatureError,
)
from ..providers._holder import HolderKey
from ..providers._veriff import parse_veriff_decision, veriff_signature
from ._base import WebhookRequest, WebhookResponse

__all__ = ["VeriffWebhooks"]

_SIGNATURE_HEADERS = ("x-hmac-signature", "vrf-hmac-signature")
_ATTEMPT_PARTS = 3


def route(vendor_data: object) -> tuple[str, str, int] | None:
    """``(session_id, step_id, attempt)`` from a ``vendorData`` the channel set, else ``None``."""
    if not isinstance(vendor_data, str):
        return None
    parts = vendor_data.rsplit(":", _ATTEMPT_PARTS - 1)
    if len(parts) != _ATTEMPT_PARTS:
        return None
    session_id, step_id, attempt = parts
    if not session_id or not step_id or not (attempt.isascii() and attempt.isdigit()):
        return None
    return session_id, step_id, int(attempt)


class VeriffWebhooks:
    """The [`WebhookHandler`][multiverify.webhooks.WebhookHandler] for Veriff's webhooks.

    Mount it on the integration's decision URL and, optionally, its events
    URL. A delivery without a valid signature is refused with
    [`WebhookSignatureError`][multiverify.exceptions.WebhookSignatureError];
    one signed but malformed with
    [`WebhookFormatError`][multiverify.exceptions.WebhookFormatError].
    Deliveries for sessions this SDK did not open (no ``vendorData`` of
    ours) give no events. Of an approval's ``person`` and ``document``, the
    event keeps only keyed digests of the holder's name, ID number, document
    number and birth date (the key derived from ``shared_secret``, as the
    [`Veriff`][multiverify.providers.Veriff] provider's is), which the
    channel compares with the applicant.

    Args:
        shared_secret: the integration's shared secret key.
        api_key: the integration's API key; when given, a delivery whose
            ``X-AUTH-CLIENT`` names another integration is refused (test and
            live keys mixed up).
        provider: the provider name the decisions carry (as the channel's
            [`Veriff`][multiverify.providers.Veriff] provider is named).
        media_base: the API URL that media references point to.

    Added in 0.1.
    """

    def __init__(
        self,
        shared_secret: str,
        *,
        api_key: str | None = None,
        provider: str = "veriff",
        media_base: str = "https://stationapi.veriff.com",
    ) -> None:
        self._secret = shared_secret
        self._api_key = api_key
        self._provider = provider
        self._media_base = media_base
        self._holder_key = HolderKey(shared_secret)

    def __repr__(self) -> str:
        return f"<multiverify.webhooks.VeriffWebhooks({self._provider})>"

    @property
    def vendor(self) -> str:
        """``veriff``."""
        return "veriff"

    def verify(self, request: WebhookRequest) -> dict[str, Any]:
        """Check the signature (in constant time) and return the JSON body.

        Raises:
            WebhookSignatureError: no signature, a wrong one, or another
                integration's API key.
            WebhookFormatError: the body is not a JSON object.
        """
        signature = next(
            (v for h in _SIGNATURE_HEADERS if (v := request.header(h))), None
        )
        if not signature:
            raise WebhookSignatureError(
                message="webhook has no X-HMAC-SIGNATURE header", vendor=self.vendor
            )
        expected = veriff_signature(self._secret, request.body)
        # Compared as bytes: a header may hold any character, and
        # compare_digest refuses non-ASCII strings.
        if not hmac.compare_digest(
            expected.encode(), signature.strip().lower().encode()
        ):
            raise WebhookSignatureError(
                message="X-HMAC-SIGNATURE does not match the body", vendor=self.vendor
            )
        client = request.header("x-auth-client")
        if (
            self._api_key is not None
            and client is not None
            and not hmac.compare_digest(client.strip().encode(), self._api_key.encode())
        ):
            raise WebhookSignatureError(
                message="webhook is for another integration (X-AUTH-CLIENT differs)",
                vendor=self.vendor,
            )
        return request.json(self.vendor)

    async def parse(self, request: WebhookRequest, /) -> Sequence[ProviderEvent]:
        """Verify a decision or event webhook and turn it into one event for its step.

        Raises:
            WebhookSignatureError: see [`verify`][multiverify.webhooks.VeriffWebhooks.verify].
            WebhookFormatError: neither a decision nor an event, or a
                decision without a session id or a usable status.
        """
        body = self.verify(request)
        if "verification" in body:
            return self._decision(body["verification"], request.body)
        if "action" in body:
            return self._progress(body)
        raise WebhookFormatError(
            message="webhook is neither a decision (verification) nor an event (action)",
            vendor=self.vendor,
        )

    def respond(
        self, request: WebhookRequest, sessions: Sequence[Session | None], /
    ) -> WebhookResponse:
        """``200``: Veriff needs nothing back but a success status."""
        del request, sessions
        return WebhookResponse(status=200)

    def _decision(self, verification: Any, raw: bytes) -> list[ProviderEvent]:
        if not isinstance(verification, dict):
            raise WebhookFormatError(
                message="decision webhook's verification is not an object",
                vendor=self.vendor,
            )
        target = route(verification.get("vendorData"))
        if target is None:
            return []
        try:
            decision = parse_veriff_decision(
                verification,
                provider=self._provider,
                media_base=self._media_base,
                holder_key=self._holder_key,
            )
        except ProviderResponseError as exc:
            raise WebhookFormatError(message=str(exc), vendor=self.vendor) from None
        session_id, step_id, attempt = target
        key = decision.attempt_id or hashlib.sha256(raw).hexdigest()[:32]
        return [
            ProviderEvent(
                session_id=session_id,
                step_id=step_id,
                kind="decision",
                data=decision.to_data(),
                dedupe_key=f"veriff:decision:{decision.session_id}:{key}:"
                f"{decision.status.value}",
                attempt=attempt,
            )
        ]

    def _progress(self, body: Mapping[str, Any]) -> list[ProviderEvent]:
        target = route(body.get("vendorData"))
        session = body.get("id")
        action = body.get("action")
        if target is None:
            return []
        if not isinstance(session, str) or not isinstance(action, str):
            raise WebhookFormatError(
                message="event webhook needs a session id and an action",
                vendor=self.vendor,
            )
        session_id, step_id, attempt = target
        attempt_id = body.get("attemptId")
        return [
            ProviderEvent(
                session_id=session_id,
                step_id=step_id,
                kind="progress",
                data={
                    "provider": self._provider,
                    "session_id": session,
                    "action": action,
                    "code": body.get("code"),
                },
                dedupe_key=f"veriff:event:{session}:{attempt_id}:{action}",
                attempt=attempt,
            )
        ]
