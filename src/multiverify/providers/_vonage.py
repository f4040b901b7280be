"""Vonage credentials: the application JWT that Voice and Verify v2 requests carry.

Per https://developer.vonage.com/en/getting-started/concepts/authentication
(JSON Web Tokens): ``Authorization: Bearer <JWT>``, RS256-signed with the
application's private key, header ``{"alg": "RS256", "typ": "JWT"}`` and the
claims ``application_id``, ``iat``, ``jti`` (unique per token) and ``exp``
(the official SDK's default lifetime is 900 s); ``nbf``, ``sub`` and ``acl``
are optional.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .._clock import Clock, SystemClock
from ..exceptions import ConfigurationError

__all__ = ["VonageApplication"]


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class VonageApplication:
    """A Vonage application's credentials, minting a fresh JWT per request.

    Args:
        application_id: the application's id.
        private_key: the application's RSA private key, PEM.
        ttl: each token's lifetime (default 15 minutes).
        acl: optional access-control claim restricting the token's paths.
        clock: the time source for ``iat`` and ``exp``.
        new_jti: makes each token's unique id.

    Raises:
        ConfigurationError: the private key is not a PEM RSA key.
    """

    def __init__(
        self,
        *,
        application_id: str,
        private_key: str | bytes,
        ttl: float | timedelta = 900.0,
        acl: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        new_jti: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        pem = private_key.encode() if isinstance(private_key, str) else private_key
        try:
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                message=f"Vonage private key is not a readable PEM key: {exc}"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise ConfigurationError(message="Vonage private key must be an RSA key")
        self.application_id = application_id
        self._key = key
        self._ttl = _seconds(ttl)
        self._acl = dict(acl) if acl is not None else None
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._new_jti = new_jti

    def __repr__(self) -> str:
        return f"<multiverify.providers.VonageApplication({self.application_id})>"

    def token(self) -> str:
        """A newly signed application JWT."""
        issued = int(self._clock.now().timestamp())
        claims: dict[str, Any] = {
            "application_id": self.application_id,
            "iat": issued,
            "jti": self._new_jti(),
            "exp": issued + int(self._ttl),
        }
        if self._acl is not None:
            claims["acl"] = self._acl
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"typ": "JWT"})

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header for one request."""
        return {"Authorization": f"Bearer {self.token()}"}
