"""Vonage Verify v2: the vendor generates, sends and checks the code.

Wire format, from https://developer.vonage.com/en/api/verify.v2 and the
official SDK (``vonage_verify`` 2.x, whose test fixtures hold the answers
below):

- start: ``POST https://api.nexmo.com/v2/verify`` with the JSON body
  ``{"brand", "workflow": [{"channel": "sms", "to"}], "locale",
  "code_length", "channel_timeout", "client_ref"}``, authenticated with the
  application JWT; 202 ``{"request_id"}``. A second verification to a number
  while one is in progress is refused with 409 ``Conflict``, whose body names
  the verification in progress (``request_id``).
- check: ``POST /v2/verify/{request_id}`` with ``{"code"}``: 200
  ``{"status": "completed"}``; 400 "Invalid Code" for a wrong code; 410 once
  too many wrong codes ended the workflow; 404 once it is unknown, expired
  or verified already.
- cancel: ``DELETE /v2/verify/{request_id}``.

Errors are RFC 7807 problem documents (``type``, ``title``, ``detail``,
``instance``); 429 is throttling.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from .._http import error_for_response, exchange
from ..exceptions import ProviderError, ProviderUnavailableError
from ._sms import CheckOutcome, VerifyCheck, VerifyRequest, VerifyStarted
from ._vonage import VonageApplication

__all__ = ["VonageVerify"]

# Vonage bounds (SDK models): brand 1-16 characters, client_ref 1-16,
# channel_timeout 15-900 seconds, code_length 4-10.
_BRAND_MAX = 16
_TIMEOUT_RANGE = (15, 900)


def _locale(locale: str) -> str:
    return "zh-cn" if locale.lower().startswith("zh") else "en-us"


def _client_ref(reference: str) -> str:
    """Our reference in the 16 characters Vonage allows: a digest of it."""
    return hashlib.sha256(reference.encode()).hexdigest()[:16]


class VonageVerify:
    """Vonage Verify v2 with the SMS channel.

    Args:
        application: the Vonage application whose JWT authenticates calls.
        client: an HTTP client to use (left open); one is made and closed otherwise.
        api_base: the API's base URL.
        name: the provider's name in policies and results.
    """

    def __init__(
        self,
        application: VonageApplication,
        *,
        client: httpx.AsyncClient | None = None,
        api_base: str = "https://api.nexmo.com",
        name: str = "vonage",
    ) -> None:
        self._application = application
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=10.0)
        self._base = api_base.rstrip("/")
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.VonageVerify({self._name})>"

    @property
    def name(self) -> str:
        return self._name

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, dict[str, Any]]:
        headers = {**self._application.headers(), "Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        request = self._client.build_request(
            method, f"{self._base}{path}", content=content, headers=headers
        )
        response = await exchange(self._client, self._name, request)
        try:
            data = response.json() if response.content else {}
        except (ValueError, RecursionError):
            data = {}
        return response, data if isinstance(data, dict) else {}

    def _error(self, response: httpx.Response, data: dict[str, Any]) -> ProviderError:
        title = data.get("title")
        detail = data.get("detail")
        message = None
        if isinstance(title, str):
            message = f"{self._name} answered HTTP {response.status_code}: {title}"
            if isinstance(detail, str):
                message += f": {detail}"
        return error_for_response(
            self._name,
            response,
            message=message,
            code=title if isinstance(title, str) else None,
        )

    async def start(self, request: VerifyRequest, /) -> VerifyStarted:
        """Start a verification; Vonage sends its code.

        A verification already in progress for the number is taken over
        (``resumed``): it is this step's own earlier start, whose answer was
        lost.

        Raises:
            ProviderError: mapped from the status (429 throttled, 5xx
                unavailable, other 4xx rejected).
        """
        low, high = _TIMEOUT_RANGE
        body = {
            "brand": request.brand[:_BRAND_MAX],
            "workflow": [{"channel": "sms", "to": request.to.removeprefix("+")}],
            "locale": _locale(request.locale),
            "code_length": request.code_length,
            "channel_timeout": int(min(max(request.ttl, low), high)),
            "client_ref": _client_ref(request.reference),
        }
        response, data = await self._call("POST", "/v2/verify", body)
        request_id = data.get("request_id")
        if response.is_success and isinstance(request_id, str):
            return VerifyStarted(provider=self._name, verification_id=request_id)
        if response.status_code == httpx.codes.CONFLICT and isinstance(request_id, str):
            return VerifyStarted(
                provider=self._name, verification_id=request_id, resumed=True
            )
        if response.is_success:
            raise ProviderUnavailableError(
                message=f"{self._name} answered a start with no request_id",
                provider=self._name,
                status_code=response.status_code,
                uncertain=True,
            )
        raise self._error(response, data)

    async def check(
        self, verification_id: str, code: str, /, *, to: str
    ) -> VerifyCheck:
        """Check a code against the verification.

        Raises:
            ProviderError: a failure other than a wrong, expired or
                exhausted code.
        """
        del to
        response, data = await self._call(
            "POST", f"/v2/verify/{verification_id}", {"code": code}
        )
        status = str(data.get("status", ""))
        if response.is_success:
            if status == "completed":
                return VerifyCheck(outcome=CheckOutcome.APPROVED, status=status)
            return VerifyCheck(outcome=CheckOutcome.WRONG, status=status)
        match response.status_code:
            case httpx.codes.BAD_REQUEST:
                return VerifyCheck(outcome=CheckOutcome.WRONG, status="invalid_code")
            case httpx.codes.GONE:
                return VerifyCheck(outcome=CheckOutcome.EXHAUSTED, status="gone")
            case httpx.codes.NOT_FOUND:
                return VerifyCheck(outcome=CheckOutcome.EXPIRED, status="not_found")
        raise self._error(response, data)

    async def cancel(self, verification_id: str, /) -> None:
        """Cancel the verification; one already gone is left alone."""
        response, data = await self._call("DELETE", f"/v2/verify/{verification_id}")
        if response.is_success or response.status_code in (
            httpx.codes.NOT_FOUND,
            httpx.codes.CONFLICT,
            httpx.codes.GONE,
        ):
            return
        raise self._error(response, data)

    async def aclose(self) -> None:
        """Close the HTTP client if this provider made it."""
        if self._owns_client:
            await self._client.aclose()
