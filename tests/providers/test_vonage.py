"""Tests for Vonage application tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from multiverify.exceptions import ConfigurationError
from multiverify.providers import VonageApplication
from multiverify.testing import FakeClock

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA key for the application."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TestVonageApplication:
    def test_token_claims_and_signature(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """A token is RS256 over application_id, iat, jti and exp, verifiable with the public key."""
        app = VonageApplication(
            application_id="app-1",
            private_key=pem(rsa_key).decode(),
            clock=FakeClock(T0),
            new_jti=lambda: "jti-1",
        )

        token = app.token()

        header = jwt.get_unverified_header(token)
        assert header == {"alg": "RS256", "typ": "JWT"}
        claims = jwt.decode(
            token,
            rsa_key.public_key(),
            algorithms=["RS256"],
            options={"verify_exp": False},
        )
        issued = int(T0.timestamp())
        assert claims == {
            "application_id": "app-1",
            "iat": issued,
            "jti": "jti-1",
            "exp": issued + 900,
        }

    def test_ttl_and_acl(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """The lifetime and an ACL claim are configurable."""
        acl = {"paths": {"/*/calls/**": {}}}
        app = VonageApplication(
            application_id="app-1",
            private_key=pem(rsa_key),
            ttl=timedelta(minutes=2),
            acl=acl,
            clock=FakeClock(T0),
        )

        claims = jwt.decode(app.token(), options={"verify_signature": False})

        assert claims["exp"] - claims["iat"] == 120
        assert claims["acl"] == acl

    def test_each_token_has_its_own_jti(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """Two tokens never share a jti."""
        app = VonageApplication(
            application_id="a", private_key=pem(rsa_key), clock=FakeClock(T0)
        )

        first, second = (
            jwt.decode(app.token(), options={"verify_signature": False})
            for _ in range(2)
        )

        assert first["jti"] != second["jti"]

    def test_headers(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """headers() carries a bearer token."""
        app = VonageApplication(
            application_id="a", private_key=pem(rsa_key), clock=FakeClock(T0)
        )

        assert app.headers()["Authorization"].startswith("Bearer ey")

    def test_unreadable_key(self) -> None:
        """A key that is not PEM is a ConfigurationError at construction."""
        with pytest.raises(ConfigurationError, match="PEM"):
            VonageApplication(application_id="a", private_key="not a key")

    def test_non_rsa_key(self) -> None:
        """An EC key cannot sign RS256, so it is refused at construction."""
        with pytest.raises(ConfigurationError, match="RSA"):
            VonageApplication(
                application_id="a",
                private_key=pem(ec.generate_private_key(ec.SECP256R1())),
            )

    def test_repr_names_only_the_application(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """The repr shows the application id, never the key."""
        app = VonageApplication(application_id="app-1", private_key=pem(rsa_key))

        assert repr(app) == "<multiverify.providers.VonageApplication(app-1)>"
