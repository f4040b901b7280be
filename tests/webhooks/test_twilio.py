"""Tests for X-Twilio-Signature: the documented vectors and every way a check fails."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from multiverify.exceptions import WebhookFormatError, WebhookSignatureError
from multiverify.webhooks import TwilioSignature, WebhookRequest, twilio_signature

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
# Twilio's "Webhooks security" worked example (T1 in the research notes).
DOCS_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
]
# twilio-python's validator tests (T2, T3).
SDK_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
    ("Caller", "+14158675309"),
]
BODY = b'{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


def form_request(
    url: str, params: list[tuple[str, str]], signature: str | None
) -> WebhookRequest:
    """A signed form POST."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return WebhookRequest(
        method="POST",
        url=url,
        headers=headers,
        body=urlencode(params).encode(),
        received_at=T0,
    )


class TestSignatureVectors:
    @pytest.mark.parametrize(
        ("url", "params", "expected"),
        [
            (URL, DOCS_PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
            (URL, SDK_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                SDK_PARAMS,
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
            ),
            (
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                SDK_PARAMS,
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                SDK_PARAMS,
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            (f"{URL}&bodySHA256={BODY_HASH}", [], "a9nBmqA0ju/hNViExpshrM61xv4="),
            (
                URL,
                [
                    ("Sid", "CA123"),
                    ("SidAccount", "AC123"),
                    ("Digits", "5678"),
                    ("Digits", "1234"),
                    ("Digits", "1234"),
                ],
                "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
            ),
        ],
        ids=[
            "docs",
            "sdk",
            "port-443",
            "port-80",
            "port-1234",
            "json-body",
            "duplicate-keys",
        ],
    )
    def test_documented_vectors(
        self, url: str, params: list[tuple[str, str]], expected: str
    ) -> None:
        """twilio_signature reproduces Twilio's documented and SDK-tested signatures."""
        assert twilio_signature(TOKEN, url, params) == expected

    def test_body_hash_vector(self) -> None:
        """The documented body hash is the hex SHA-256 of the raw body."""
        assert hashlib.sha256(BODY).hexdigest() == BODY_HASH


class TestTwilioSignature:
    def test_accepts_form_callback_and_returns_params(self) -> None:
        """A correctly signed form POST verifies and yields its parameters."""
        checker = TwilioSignature(TOKEN)

        params = checker.verify(
            form_request(URL, DOCS_PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        )

        assert sorted(params) == sorted(DOCS_PARAMS)

    @pytest.mark.parametrize(
        ("url", "signed_over"),
        [
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            ),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
            ),
            ("http://mycompany.com/myapp.php", "http://mycompany.com:80/myapp.php"),
            ("http://mycompany.com:8080/myapp.php", "http://mycompany.com/myapp.php"),
        ],
    )
    def test_port_rules(self, url: str, signed_over: str) -> None:
        """A signature over the URL with or without its port is accepted."""
        signature = twilio_signature(TOKEN, signed_over, SDK_PARAMS)

        assert TwilioSignature(TOKEN).verify(form_request(url, SDK_PARAMS, signature))

    def test_other_port_is_refused(self) -> None:
        """A signature over another non-default port does not verify."""
        signature = twilio_signature(
            TOKEN, "https://mycompany.com:8443/myapp.php", SDK_PARAMS
        )

        with pytest.raises(WebhookSignatureError):
            TwilioSignature(TOKEN).verify(
                form_request(
                    "https://mycompany.com:9443/myapp.php", SDK_PARAMS, signature
                )
            )

    def test_ipv6_host(self) -> None:
        """An IPv6 literal keeps its brackets when the port is added."""
        url = "https://[::1]/hook"
        signature = twilio_signature(TOKEN, "https://[::1]:443/hook", [])

        assert TwilioSignature(TOKEN).verify(form_request(url, [], signature)) == []

    def test_json_callback(self) -> None:
        """A JSON callback verifies over the URL, then by its body hash."""
        url = f"{URL}&bodySHA256={BODY_HASH}"
        req = WebhookRequest(
            method="POST",
            url=url,
            headers={
                "Content-Type": "application/json",
                "X-Twilio-Signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
            },
            body=BODY,
            received_at=T0,
        )

        assert TwilioSignature(TOKEN).verify(req) == []

    def test_json_body_tampered(self) -> None:
        """A JSON body that does not match its bodySHA256 is refused."""
        url = f"{URL}&bodySHA256={BODY_HASH}"
        req = WebhookRequest(
            method="POST",
            url=url,
            headers={"X-Twilio-Signature": "a9nBmqA0ju/hNViExpshrM61xv4="},
            body=b'{"property": "other"}',
            received_at=T0,
        )

        with pytest.raises(WebhookSignatureError, match="bodySHA256"):
            TwilioSignature(TOKEN).verify(req)

    def test_get_callback_signs_url_only(self) -> None:
        """A GET callback's signature covers the URL and its query alone."""
        req = WebhookRequest(
            method="GET",
            url=URL,
            headers={"X-Twilio-Signature": twilio_signature(TOKEN, URL)},
            received_at=T0,
        )

        assert TwilioSignature(TOKEN).verify(req) == []

    def test_missing_signature(self) -> None:
        """An unsigned callback is refused."""
        with pytest.raises(
            WebhookSignatureError, match="no X-Twilio-Signature"
        ) as info:
            TwilioSignature(TOKEN).verify(form_request(URL, DOCS_PARAMS, None))

        assert info.value.vendor == "twilio"

    def test_forged_signature(self) -> None:
        """A signature made with another token is refused."""
        forged = twilio_signature("not-the-token", URL, DOCS_PARAMS)

        with pytest.raises(WebhookSignatureError, match="does not match"):
            TwilioSignature(TOKEN).verify(form_request(URL, DOCS_PARAMS, forged))

    @pytest.mark.parametrize("body", [b"\xff\xfe", b'{"CallSid": "CA1"}', b"novalue"])
    def test_body_that_is_no_form_is_refused_as_unsigned(self, body: bytes) -> None:
        """A body no signature can cover (not form data, no bodySHA256) is refused as unverified, not as a signed but malformed callback."""
        request = WebhookRequest(
            method="POST",
            url=URL,
            headers={"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="},
            body=body,
            received_at=T0,
        )

        with pytest.raises(WebhookSignatureError, match="not form data") as info:
            TwilioSignature(TOKEN).verify(request)

        assert info.value.vendor == "twilio"

    def test_non_ascii_signature_is_refused(self) -> None:
        """A signature header with non-ASCII characters is a forgery, not a crash."""
        with pytest.raises(WebhookSignatureError, match="does not match"):
            TwilioSignature(TOKEN).verify(form_request(URL, DOCS_PARAMS, "0/KCTR6é="))

    def test_non_ascii_body_hash_is_refused(self) -> None:
        """A signed URL whose bodySHA256 is not hex is refused, not a crash."""
        url = f"{URL}&bodySHA256=%C3%A9"
        req = WebhookRequest(
            method="POST",
            url=url,
            headers={"X-Twilio-Signature": twilio_signature(TOKEN, url)},
            body=BODY,
            received_at=T0,
        )

        with pytest.raises(WebhookSignatureError, match="bodySHA256"):
            TwilioSignature(TOKEN).verify(req)

    @pytest.mark.parametrize(
        "url", ["https://mycompany.com:abc/myapp.php", "https://mycompany.com:99999/x"]
    )
    def test_invalid_port_is_refused(self, url: str) -> None:
        """A URL with a port no one could call (a forged Host) is refused, not a crash."""
        signature = twilio_signature(TOKEN, url, SDK_PARAMS)

        with pytest.raises(WebhookSignatureError):
            TwilioSignature(TOKEN).verify(
                form_request(url, SDK_PARAMS, signature + "x")
            )
        # Signed over exactly that URL it still verifies: only the variants are skipped.
        assert TwilioSignature(TOKEN).verify(form_request(url, SDK_PARAMS, signature))

    def test_tampered_parameter(self) -> None:
        """Changing one parameter after signing breaks the signature."""
        tampered = [(k, "9999" if k == "Digits" else v) for k, v in DOCS_PARAMS]

        with pytest.raises(WebhookSignatureError):
            TwilioSignature(TOKEN).verify(
                form_request(URL, tampered, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
            )

    def test_shared_key_sha256(self) -> None:
        """A Webhooks Rules callback verifies with its shared key and HMAC-SHA256."""
        key = "shared-secret"
        signed = URL + "".join(k + v for k, v in sorted(DOCS_PARAMS))
        signature = base64.b64encode(
            hmac.new(key.encode(), signed.encode(), "sha256").digest()
        ).decode()
        req = form_request(URL, DOCS_PARAMS, signature)
        req = WebhookRequest(
            method=req.method,
            url=req.url,
            headers={
                **req.headers,
                "X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=HMAC_SHA256",
            },
            body=req.body,
            received_at=T0,
        )

        assert TwilioSignature(TOKEN, shared_keys={"KS1": key}).verify(req)

    def test_settings_without_key_use_auth_token(self) -> None:
        """Signature settings that name only an algorithm sign with the auth token."""
        signature = twilio_signature(TOKEN, URL, DOCS_PARAMS, algorithm="sha256")
        base = form_request(URL, DOCS_PARAMS, signature)
        req = WebhookRequest(
            method="POST",
            url=URL,
            headers={
                **base.headers,
                "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA256",
            },
            body=base.body,
            received_at=T0,
        )

        assert TwilioSignature(TOKEN).verify(req)

    def test_unknown_shared_key(self) -> None:
        """A callback signed with a shared key we do not know is refused."""
        base = form_request(URL, DOCS_PARAMS, "x")
        req = WebhookRequest(
            method="POST",
            url=URL,
            headers={
                **base.headers,
                "X-Twilio-Webhooks-Signature-Settings": "key=KS9,algorithm=HMAC_SHA256",
            },
            body=base.body,
            received_at=T0,
        )

        with pytest.raises(WebhookSignatureError, match="KS9"):
            TwilioSignature(TOKEN).verify(req)

    def test_unknown_algorithm(self) -> None:
        """An unknown signature algorithm is a format error."""
        base = form_request(URL, DOCS_PARAMS, "x")
        req = WebhookRequest(
            method="POST",
            url=URL,
            headers={
                **base.headers,
                "X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=MD5",
            },
            body=base.body,
            received_at=T0,
        )

        with pytest.raises(WebhookFormatError, match="MD5"):
            TwilioSignature(TOKEN, shared_keys={"KS1": "k"}).verify(req)

    def test_repr_hides_secrets(self) -> None:
        """The token never appears in the repr."""
        assert TOKEN not in repr(TwilioSignature(TOKEN, shared_keys={"KS1": "s3cret"}))
