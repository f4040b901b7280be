"""Tests for Vonage signed callbacks: HS256 JWT plus the body's payload_hash."""

from __future__ import annotations

import base64
import hashlib
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from multiverify.exceptions import WebhookSignatureError
from multiverify.testing import FakeClock
from multiverify.webhooks import VonageSignature, WebhookRequest

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
SECRET = "signature-secret-of-the-vonage-account"
BODY = b'{"request_id":"c11236f4","status":"completed","type":"event"}'


def token(body: bytes = BODY, *, secret: str = SECRET, **claims: Any) -> str:
    """A callback token as Vonage signs it."""
    payload: dict[str, Any] = {
        "iat": int(T0.timestamp()),
        "jti": "5f4b1c3e",
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": "abc123",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    }
    payload.update(claims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(
            {k: v for k, v in payload.items() if v is not None},
            secret,
            algorithm="HS256",
        )


def request(body: bytes = BODY, authorization: str | None = None) -> WebhookRequest:
    """A JSON callback with the given Authorization header."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return WebhookRequest(
        method="POST",
        url="https://app.example/webhooks/vonage",
        headers=headers,
        body=body,
        received_at=T0,
    )


@pytest.fixture
def checker() -> VonageSignature:
    """A checker whose clock stands at the tokens' issue time."""
    return VonageSignature(SECRET, clock=FakeClock(T0))


class TestVonageSignature:
    def test_valid_callback_returns_claims(self, checker: VonageSignature) -> None:
        """A correctly signed callback verifies and yields its claims."""
        claims = checker.verify(request(authorization=f"Bearer {token()}"))

        assert claims["iss"] == "Vonage"
        assert claims["application_id"] == "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"

    def test_uppercase_hash_and_scheme(self, checker: VonageSignature) -> None:
        """The hash compares case-insensitively, and so does the Bearer scheme."""
        tok = token(payload_hash=hashlib.sha256(BODY).hexdigest().upper())

        assert checker.verify(request(authorization=f"bearer {tok}"))

    @pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer"])
    def test_missing_token(self, checker: VonageSignature, header: str | None) -> None:
        """A callback without a bearer token is refused."""
        with pytest.raises(WebhookSignatureError, match="Bearer") as info:
            checker.verify(request(authorization=header))

        assert info.value.vendor == "vonage"

    def test_wrong_secret(self, checker: VonageSignature) -> None:
        """A token signed with another secret is refused."""
        with pytest.raises(WebhookSignatureError, match="does not verify"):
            checker.verify(request(authorization=f"Bearer {token(secret='other')}"))

    def test_garbage_token(self, checker: VonageSignature) -> None:
        """A token that is not a JWT is refused."""
        with pytest.raises(WebhookSignatureError, match="does not verify"):
            checker.verify(request(authorization="Bearer not.a.jwt"))

    def test_deeply_nested_token_header(self, checker: VonageSignature) -> None:
        """A token whose header is JSON nested too deeply to read is refused."""
        header = base64.urlsafe_b64encode(b"[" * 100_000).rstrip(b"=").decode()
        with pytest.raises(WebhookSignatureError, match="does not verify"):
            checker.verify(request(authorization=f"Bearer {header}.e30.c2ln"))

    def test_recursion_in_an_older_pyjwt_is_refused(
        self, checker: VonageSignature, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """PyJWT before 2.14 lets the decoder's RecursionError through: refused too."""

        def decode(*_args: object, **_kwargs: object) -> dict[str, Any]:
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(jwt, "decode", decode)
        with pytest.raises(WebhookSignatureError, match="nested too deeply"):
            checker.verify(request(authorization=f"Bearer {token()}"))

    def test_other_algorithm_refused(self, checker: VonageSignature) -> None:
        """A token with alg none is refused: only HS256 is accepted."""
        unsigned = jwt.encode(
            {"iat": int(T0.timestamp()), "payload_hash": "x"}, None, algorithm="none"
        )

        with pytest.raises(WebhookSignatureError):
            checker.verify(request(authorization=f"Bearer {unsigned}"))

    def test_tampered_body(self, checker: VonageSignature) -> None:
        """A body changed after signing does not match payload_hash."""
        tampered = BODY.replace(b"completed", b"failed")

        with pytest.raises(WebhookSignatureError, match="payload_hash"):
            checker.verify(request(tampered, authorization=f"Bearer {token()}"))

    def test_missing_payload_hash(self, checker: VonageSignature) -> None:
        """A token without payload_hash does not cover the body, so it is refused."""
        with pytest.raises(WebhookSignatureError, match="no payload_hash"):
            checker.verify(request(authorization=f"Bearer {token(payload_hash=None)}"))

    @pytest.mark.parametrize("iat", [None, "yesterday", True])
    def test_iat_must_be_a_number(self, checker: VonageSignature, iat: object) -> None:
        """A token without a numeric iat cannot be dated, so it is refused."""
        with pytest.raises(WebhookSignatureError, match="iat"):
            checker.verify(request(authorization=f"Bearer {token(iat=iat)}"))

    def test_stale_token(self) -> None:
        """A token older than max_age is refused (a replayed delivery)."""
        checker = VonageSignature(
            SECRET, max_age=300, clock=FakeClock(T0 + timedelta(seconds=301))
        )

        with pytest.raises(WebhookSignatureError, match="301s ago"):
            checker.verify(request(authorization=f"Bearer {token()}"))

    def test_token_from_the_future(self) -> None:
        """A token issued more than a minute ahead of our clock is refused."""
        checker = VonageSignature(SECRET, clock=FakeClock(T0 - timedelta(seconds=61)))

        with pytest.raises(WebhookSignatureError):
            checker.verify(request(authorization=f"Bearer {token()}"))

    def test_small_skew_is_fine(self) -> None:
        """A token a few seconds ahead of our clock passes."""
        checker = VonageSignature(SECRET, clock=FakeClock(T0 - timedelta(seconds=30)))

        assert checker.verify(request(authorization=f"Bearer {token()}"))

    def test_short_secret_verifies_quietly(self) -> None:
        """A signature secret shorter than 32 bytes (Vonage chose it) verifies without warnings."""
        short = "s3cr3t"
        checker = VonageSignature(short, clock=FakeClock(T0))

        assert checker.verify(request(authorization=f"Bearer {token(secret=short)}"))

    def test_repr_hides_secret(self, checker: VonageSignature) -> None:
        """The signature secret never appears in the repr."""
        assert SECRET not in repr(checker)
