"""Tencent Cloud API 3.0: the TC3-HMAC-SHA256 signature and the one place its answers become ours.

Signature v3, per https://cloud.tencent.com/document/api/213/30654 (and its
international edition): a canonical request (method, ``/``, empty query for
POST, the signed headers ``content-type`` and ``host``, the hex SHA-256 of
the exact body) is hashed into the string to sign with the timestamp and the
credential scope ``<UTC date>/<service>/tc3_request``; the key is derived by
HMAC-SHA256 from ``"TC3" + SecretKey`` through the UTC date, the service and
``tc3_request``. Requests carry ``X-TC-Action``, ``X-TC-Version``,
``X-TC-Timestamp`` (within 5 minutes of the server's time) and, where the
product has regions, ``X-TC-Region``. Errors come back as HTTP 200 with
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``
(https://cloud.tencent.com/document/api/382/52075).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from .._clock import Clock, SystemClock
from .._http import send
from ..exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

__all__ = ["TencentCloudApi", "tc3_authorization"]

_ALGORITHM = "TC3-HMAC-SHA256"
_CONTENT_TYPE = "application/json; charset=utf-8"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    timestamp: int,
    payload: bytes,
    content_type: str = _CONTENT_TYPE,
) -> str:
    """The ``Authorization`` header of a TC3-signed POST with ``payload`` as its exact body."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signed_headers = "content-type;host"
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{content_type}\nhost:{host}\n",
            signed_headers,
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        [
            _ALGORITHM,
            str(timestamp),
            scope,
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ]
    )
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return (
        f"{_ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


# Error codes by their first segment; everything else is a permanent rejection.
_RATE_LIMITED = ("RequestLimitExceeded",)
_UNAVAILABLE = ("InternalError", "ResourceUnavailable", "ServiceUnavailable")
_AUTH = ("AuthFailure", "UnauthorizedOperation")


def _error(
    provider: str, code: str, message: str, request_id: str | None
) -> ProviderError:
    text = f"{provider} refused the request: {code}: {message}"
    fields: dict[str, Any] = {
        "message": text,
        "provider": provider,
        "status_code": 200,
        "code": code,
        "request_id": request_id,
    }
    head = code.split(".", 1)[0]
    if head in _RATE_LIMITED:
        return ProviderRateLimitedError(**fields)
    if head in _UNAVAILABLE:
        # The service failed while handling the call: it may have acted.
        return ProviderUnavailableError(**fields, uncertain=True)
    if code == "AuthFailure.SignatureExpire":
        # Our clock is off by more than five minutes: a fresh signature after
        # the clock is fixed will do, so it is worth one more try.
        return ProviderUnavailableError(**fields)
    if head in _AUTH:
        return ProviderAuthError(**fields)
    return ProviderRejectedError(**fields)


class TencentCloudApi:
    """Signs and sends Tencent Cloud API 3.0 calls; shared by the SMS and FaceID providers.

    Args:
        secret_id: the API key's SecretId.
        secret_key: the API key's SecretKey.
        region: the ``X-TC-Region`` to send, for products that have regions.
        token: a temporary credential's session token (``X-TC-Token``).
        provider: the name errors carry.
        client: an HTTP client to use (left open); one is made and closed otherwise.
        clock: the time source for ``X-TC-Timestamp``.
    """

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        region: str | None = None,
        token: str | None = None,
        provider: str = "tencent",
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._secret_id = secret_id
        self._secret_key = secret_key
        self.region = region
        self._token = token
        self.provider = provider
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=10.0)
        self._clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        return f"<multiverify.providers.TencentCloudApi({self.provider}, region={self.region})>"

    async def call(
        self,
        *,
        host: str,
        service: str,
        action: str,
        version: str,
        payload: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Call one action and return its ``Response`` object.

        Raises:
            ProviderError: the transport failed, the answer was not JSON, or
                it carried an ``Error`` (mapped by its code: rate limits and
                internal errors are retryable, the rest are not).
        """
        # The body is serialised once: the signature covers these exact bytes.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "Authorization": tc3_authorization(
                secret_id=self._secret_id,
                secret_key=self._secret_key,
                service=service,
                host=host,
                timestamp=timestamp,
                payload=body,
            ),
            "Content-Type": _CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": action,
            "X-TC-Version": version,
            "X-TC-Timestamp": str(timestamp),
        }
        if self.region is not None:
            headers["X-TC-Region"] = self.region
        if self._token is not None:
            headers["X-TC-Token"] = self._token
        request = self._client.build_request(
            "POST", f"https://{host}/", content=body, headers=headers
        )
        response = await send(self._client, self.provider, request)
        try:
            envelope = response.json()
            answer = envelope["Response"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ProviderUnavailableError(
                message=f"{self.provider} answered {action} with no Response object",
                provider=self.provider,
                status_code=response.status_code,
            ) from None
        if not isinstance(answer, dict):
            raise ProviderUnavailableError(
                message=f"{self.provider} answered {action} with a malformed Response",
                provider=self.provider,
                status_code=response.status_code,
            )
        error = answer.get("Error")
        if isinstance(error, dict):
            raise _error(
                self.provider,
                str(error.get("Code", "UnknownError")),
                str(error.get("Message", "")),
                answer.get("RequestId"),
            )
        return answer

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_client:
            await self._client.aclose()
