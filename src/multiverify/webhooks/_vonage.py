"""Vonage signed callbacks: an HS256 JWT in ``Authorization`` whose ``payload_hash`` covers the body.

Per https://developer.vonage.com/en/getting-started/concepts/webhooks (signed
webhooks) and https://developer.vonage.com/en/verify/concepts/webhooks: the
callback carries ``Authorization: Bearer <JWT>``, signed HS256 with the
account's *signature secret*; its claims include ``iat`` and
``payload_hash``, the hex SHA-256 of the raw body. The JWT alone does not
cover the body, so both are checked; ``iat`` bounds how old a delivery may be.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from .._clock import Clock, SystemClock
from ..exceptions import WebhookSignatureError
from ._base import WebhookRequest

__all__ = ["VonageSignature"]

_VENDOR = "vonage"


class VonageSignature:
    """Checks that a callback really comes from Vonage.

    Args:
        signature_secret: the account's signature secret (the HS256 key;
            not the API secret).
        max_age: how old, in seconds, a callback's ``iat`` may be.
        clock: the time source for ``max_age``.
    """

    def __init__(
        self,
        signature_secret: str,
        *,
        max_age: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        self._secret = signature_secret
        self._max_age = max_age
        self._clock: Clock = clock if clock is not None else SystemClock()

    def __repr__(self) -> str:
        return f"<multiverify.webhooks.VonageSignature(max_age={self._max_age:g})>"

    def verify(self, request: WebhookRequest) -> dict[str, Any]:
        """Check the request's JWT and body hash; return the JWT's claims.

        Raises:
            WebhookSignatureError: no bearer token, a bad signature, a body
                that does not match ``payload_hash``, or a token outside
                ``max_age`` (or from the future beyond a minute's skew).
        """
        header = request.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WebhookSignatureError(
                message="callback has no Authorization: Bearer token", vendor=_VENDOR
            )
        try:
            with warnings.catch_warnings():
                # The secret is the one Vonage issued; its length is not ours to choose.
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                # Time claims are checked below against the injected clock.
                claims: dict[str, Any] = jwt.decode(
                    token.strip(),
                    self._secret,
                    algorithms=["HS256"],
                    options={
                        "verify_exp": False,
                        "verify_iat": False,
                        "verify_nbf": False,
                    },
                )
        except jwt.PyJWTError as exc:
            raise WebhookSignatureError(
                message=f"callback token does not verify: {exc}", vendor=_VENDOR
            ) from None
        except RecursionError:
            # PyJWT before 2.14 lets the JSON decoder's RecursionError through.
            raise WebhookSignatureError(
                message="callback token holds JSON nested too deeply to read",
                vendor=_VENDOR,
            ) from None
        expected = claims.get("payload_hash")
        if not isinstance(expected, str):
            raise WebhookSignatureError(
                message="callback token has no payload_hash claim", vendor=_VENDOR
            )
        actual = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(actual, expected.lower()):
            raise WebhookSignatureError(
                message="callback body does not match the token's payload_hash",
                vendor=_VENDOR,
            )
        issued = claims.get("iat")
        if not isinstance(issued, int | float) or isinstance(issued, bool):
            raise WebhookSignatureError(
                message="callback token has no numeric iat claim", vendor=_VENDOR
            )
        age = self._clock.now().timestamp() - issued
        if age > self._max_age or age < -60:  # noqa: PLR2004 - a minute of skew
            raise WebhookSignatureError(
                message=f"callback token was issued {age:.0f}s ago, outside "
                f"the accepted {self._max_age:g}s",
                vendor=_VENDOR,
            )
        return claims
