"""Tests for the webhook and code-submission app, through httpx's ASGI transport with real signatures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import attrs
import httpx
import pytest

from multiverify import (
    Applicant,
    AuditTrail,
    LoanApplication,
    Policy,
    ResultStatus,
    Session,
    StepState,
    Verifier,
)
from multiverify.asgi import (
    Rejection,
    Runtime,
    client_address,
    create_app,
    public_url,
)
from multiverify.channels import PhoneCallChannel, ProviderEvent, SmsCodeChannel
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    MultiverifyError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    SessionNotFoundError,
    StepNotWaitingError,
    StoreUnavailableError,
)
from multiverify.policy import Step
from multiverify.providers import (
    CheckOutcome,
    TwilioAccount,
    TwilioVoice,
    VerifyCheck,
    VerifyRequest,
    VerifyStarted,
    veriff_signature,
)
from multiverify.sandbox import VOICE_PERSONAS, SandboxVoice, get_persona
from multiverify.sandbox._voice import TWILIO_ACCOUNT, TWILIO_TOKEN
from multiverify.stores import SessionStore, SqliteStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel
from multiverify.webhooks import (
    TwilioMessageStatus,
    TwilioSignature,
    VeriffWebhooks,
    WebhookResponse,
    twilio_signature,
)

T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # Monday 09:00 in Shanghai
PUBLIC = "https://verify.example.com"
INTERNAL = "http://10.1.2.3:8000"
CLIENT = "203.0.113.7"
SECRET = "veriff-shared-secret"
CODE = {"code": "123456", "client_ip": CLIENT}

APPLICANT = Applicant(
    applicant_id="a-1",
    name="Wang Fang",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(amount="8000", currency="CNY", term_months=12, purpose="x"),
)


def policy() -> Policy:
    """An SMS code and a video signing, each waiting for input."""
    return Policy(
        name="asgi",
        version="1",
        steps=[
            Step(id="sms", channel="sms_code", timeout="10m"),
            Step(id="video", channel="video_sign", timeout="10m"),
        ],
    )


def channels() -> list[ScriptedChannel]:
    """The SMS step passes on the right code from the caller's address; any event finishes either."""
    return [
        ScriptedChannel(
            "sms_code",
            [
                Scripted.waits(
                    Scripted.passes(),
                    expect=CODE,
                    otherwise=Scripted.fails(signals=["wrong_code"]),
                )
            ],
        ),
        ScriptedChannel("video_sign", [Scripted.waits(Scripted.passes())]),
    ]


def handlers() -> list[Any]:
    """The webhook handlers of the vendors under test."""
    return [
        TwilioMessageStatus(TwilioSignature(TWILIO_TOKEN)),
        VeriffWebhooks(SECRET, api_key="key-1"),
    ]


@attrs.define
class Stack:
    """A Verifier on a fake clock, its app, and a client that talks to the app in process."""

    verifier: Verifier
    clock: FakeClock
    http: httpx.AsyncClient
    rejections: list[Rejection]

    async def start(self) -> Session:
        session = await self.verifier.start(APPLICANT)
        await self.verifier.wait_idle()
        return session


def transport(app: Any) -> httpx.AsyncClient:
    """An HTTP client for ``app`` at the address the proxy forwards to."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(CLIENT, 5555)),
        base_url=INTERNAL,
    )


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The default app: behind a proxy, with the public base URL configured."""
    clock = FakeClock(T0)
    rejections: list[Rejection] = []

    async def note(rejection: Rejection) -> None:
        rejections.append(rejection)

    async with Verifier(policy(), channels=channels(), clock=clock) as verifier:
        app = create_app(
            verifier,
            webhooks=handlers(),
            public_base_url=PUBLIC,
            clock=clock,
            on_rejected=[note],
        )
        async with transport(app) as http:
            yield Stack(verifier, clock, http, rejections)


def twilio_status(
    session_id: str,
    *,
    status: str = "delivered",
    delivery: str | None = "idem-1",
    signed_url: str | None = None,
    key: str = TWILIO_TOKEN,
) -> tuple[str, dict[str, str], bytes]:
    """A signed Twilio status callback: the path to post, headers and body."""
    query = urlencode({"session_id": session_id, "step_id": "sms", "attempt": "1"})
    url = f"{PUBLIC}/webhooks/twilio-sms?{query}"
    form = [("MessageSid", "SM1"), ("MessageStatus", status)]
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": twilio_signature(key, signed_url or url, form),
    }
    if delivery is not None:
        headers["i-twilio-idempotency-token"] = delivery
    return f"/webhooks/twilio-sms?{query}", headers, urlencode(form).encode()


def veriff_decision(
    session_id: str, status: str = "approved", person: dict[str, str] | None = None
) -> bytes:
    """A Veriff decision webhook's body for the session's video step."""
    return json.dumps(
        {
            "status": "success",
            "verification": {
                "id": "aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7",
                "attemptId": "att-1",
                "vendorData": f"{session_id}:video:1",
                "status": status,
                "code": 9001,
                "reason": None,
                "reasonCode": None,
                "decisionTime": "2026-01-05T01:05:00.000Z",
                "person": person,
            },
        }
    ).encode()


def veriff_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-auth-client": "key-1",
        "x-hmac-signature": veriff_signature(secret, body),
    }


class TestTwilioStatus:
    async def test_delivered_receipt_reaches_its_step(self, stack: Stack) -> None:
        """A signed delivery receipt is applied to its session's SMS step and answered 204."""
        session = await stack.start()
        path, headers, body = twilio_status(session.session_id)
        response = await stack.http.post(path, headers=headers, content=body)
        assert response.status_code == 204
        assert response.content == b""
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("sms").state is StepState.DONE

    async def test_redelivery_is_applied_once(self, stack: Stack) -> None:
        """The same delivery twice (same idempotency token) changes the session once."""
        session = await stack.start()
        path, headers, body = twilio_status(session.session_id)
        await stack.http.post(path, headers=headers, content=body)
        before = await stack.verifier.store.audit_events(session.session_id)
        again = await stack.http.post(path, headers=headers, content=body)
        assert again.status_code == 204
        after = await stack.verifier.store.audit_events(session.session_id)
        assert after == before

    async def test_forged_receipt_is_refused_and_reported(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A receipt signed with another key gets 403 with no reason; the reason goes to the log and the hook."""
        session = await stack.start()
        path, headers, body = twilio_status(session.session_id, key="not-the-token")
        with caplog.at_level(logging.WARNING, logger="multiverify.asgi"):
            response = await stack.http.post(path, headers=headers, content=body)
        assert response.status_code == 403
        assert response.json() == {"error": "forbidden"}
        assert "X-Twilio-Signature" not in response.text
        [rejection] = stack.rejections
        assert rejection.vendor == "twilio-sms"
        assert rejection.error == "WebhookSignatureError"
        assert "does not match" in rejection.reason
        assert rejection.client == CLIENT
        assert rejection.url == f"{PUBLIC}/webhooks/twilio-sms"
        assert "refused a twilio-sms callback" in caplog.text
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("sms").state is StepState.WAITING

    async def test_unsigned_receipt_is_refused(self, stack: Stack) -> None:
        """A receipt without X-Twilio-Signature gets 403."""
        session = await stack.start()
        path, headers, body = twilio_status(session.session_id)
        del headers["x-twilio-signature"]
        response = await stack.http.post(path, headers=headers, content=body)
        assert response.status_code == 403
        assert response.json() == {"error": "forbidden"}

    async def test_signed_but_malformed_is_a_400(self, stack: Stack) -> None:
        """A well-signed receipt without MessageStatus gets 400 and changes nothing."""
        session = await stack.start()
        query = urlencode({"session_id": session.session_id, "step_id": "sms"})
        form = [("MessageSid", "SM1")]
        url = f"{PUBLIC}/webhooks/twilio-sms?{query}"
        response = await stack.http.post(
            f"/webhooks/twilio-sms?{query}",
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": twilio_signature(TWILIO_TOKEN, url, form),
            },
            content=urlencode(form).encode(),
        )
        assert response.status_code == 400
        assert response.json() == {"error": "malformed"}
        assert stack.rejections[-1].error == "WebhookFormatError"

    async def test_signature_with_the_default_port(self, stack: Stack) -> None:
        """Twilio may sign the URL with :443 added; it still verifies."""
        session = await stack.start()
        path, _, _ = twilio_status(session.session_id)
        with_port = f"https://verify.example.com:443{path}"
        path, headers, body = twilio_status(session.session_id, signed_url=with_port)
        response = await stack.http.post(path, headers=headers, content=body)
        assert response.status_code == 204

    async def test_unknown_session_is_answered_and_dropped(self, stack: Stack) -> None:
        """A signed receipt for a session nobody has is acknowledged (so Twilio stops) and dropped."""
        path, headers, body = twilio_status("nobody")
        response = await stack.http.post(path, headers=headers, content=body)
        assert response.status_code == 204

    async def test_too_large_body(self, stack: Stack) -> None:
        """A body over the limit is refused with 413 before it is read in full."""
        response = await stack.http.post(
            "/webhooks/twilio-sms", content=b"x" * ((1 << 20) + 1)
        )
        assert response.status_code == 413

    async def test_content_length_of_non_ascii_digits(self, stack: Stack) -> None:
        """A Content-Length of digits int() refuses is no crash: the body is read as sent."""
        session = await stack.start()
        path, headers, body = twilio_status(session.session_id)
        response = await stack.http.post(
            path,
            content=body,
            headers=[
                *((k.encode(), v.encode()) for k, v in headers.items()),
                (b"content-length", b"\xb2"),
            ],
        )
        assert response.status_code == 204

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            ("application/x-www-form-urlencoded", b"\xff\xfe"),
            ("application/json", b'{"MessageSid": "SM1", "MessageStatus": "failed"}'),
        ],
    )
    async def test_forged_receipt_that_is_no_form(
        self, stack: Stack, content_type: str, body: bytes
    ) -> None:
        """A forged receipt whose body is not form data is refused as forged (403), not as signed but malformed."""
        session = await stack.start()
        path, headers, _ = twilio_status(session.session_id, key="not-the-token")
        response = await stack.http.post(
            path, headers={**headers, "content-type": content_type}, content=body
        )
        assert response.status_code == 403
        assert response.json() == {"error": "forbidden"}
        assert stack.rejections[-1].error == "WebhookSignatureError"


class TestRoutes:
    @pytest.mark.parametrize(
        "path", ["/webhooks/twilio-sms", "/sessions/s1/steps/sms/submit"]
    )
    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
    async def test_only_post(self, stack: Stack, path: str, method: str) -> None:
        """Another method on a route is a 405 that names POST, in the app's error shape."""
        response = await stack.http.request(method, path)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json() == {"error": "method_not_allowed"}

    async def test_head(self, stack: Stack) -> None:
        """HEAD is not allowed either, and gets no body."""
        response = await stack.http.head("/webhooks/twilio-sms")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.content == b""

    @pytest.mark.parametrize(
        "path", ["/webhooks/nothing", "/", "/sessions/a%2Fb/steps/sms/submit"]
    )
    async def test_unknown_path(self, stack: Stack, path: str) -> None:
        """A path no route takes is a 404 in the app's error shape."""
        response = await stack.http.post(path, content=b"x")
        assert response.status_code == 404
        assert response.json() == {"error": "not_found"}

    @pytest.mark.parametrize(
        "path", ["/webhooks/twilio-sms/", "/sessions/{sid}/steps/sms/submit/"]
    )
    async def test_trailing_slash_is_no_redirect(self, stack: Stack, path: str) -> None:
        """A trailing slash is a 404, never a redirect to the address the app sees behind the proxy (or to whatever Host the caller sent)."""
        session = await stack.start()
        response = await stack.http.post(
            path.format(sid=session.session_id),
            json={"code": "123456"},
            headers={"host": "attacker.example"},
        )
        assert response.status_code == 404
        assert "location" not in response.headers
        assert response.json() == {"error": "not_found"}
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("sms").state is StepState.WAITING


class TestTwilioDocumentedVectors:
    @pytest.fixture
    def http(self) -> httpx.AsyncClient:
        """Twilio's worked example, mounted where its URL points."""
        app = create_app(
            Unreachable(),
            webhooks={"/myapp.php": TwilioMessageStatus(TwilioSignature("12345"))},
            public_base_url="https://mycompany.com",
            submit_path=None,
        )
        return transport(app)

    async def test_form_vector(self, http: httpx.AsyncClient) -> None:
        """The documented form POST and its signature verify through the app."""
        params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        async with http:
            response = await http.post(
                "/myapp.php?foo=1&bar=2",
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "x-twilio-signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
                },
                content=urlencode(params).encode(),
            )
            assert response.status_code == 204
            tampered = await http.post(
                "/myapp.php?foo=1&bar=3",
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "x-twilio-signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
                },
                content=urlencode(params).encode(),
            )
            assert tampered.status_code == 403

    async def test_json_body_vector(self, http: httpx.AsyncClient) -> None:
        """A JSON body signed through bodySHA256 verifies; the same URL with another body does not."""
        body = b'{"property": "value", "boolean": true}'
        digest = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        assert hashlib.sha256(body).hexdigest() == digest
        headers = {
            "content-type": "application/json",
            "x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
        }
        path = f"/myapp.php?foo=1&bar=2&bodySHA256={digest}"
        async with http:
            assert (
                await http.post(path, headers=headers, content=body)
            ).status_code == 204
            forged = await http.post(path, headers=headers, content=body + b" ")
            assert forged.status_code == 403


class TestProxy:
    async def build(self, **options: Any) -> tuple[Verifier, httpx.AsyncClient]:
        clock = FakeClock(T0)
        verifier = Verifier(policy(), channels=channels(), clock=clock)
        app = create_app(verifier, webhooks=handlers(), clock=clock, **options)
        return verifier, transport(app)

    async def post_status(
        self, verifier: Verifier, http: httpx.AsyncClient, **headers: str
    ) -> int:
        session = await verifier.start(APPLICANT)
        await verifier.wait_idle()
        path, signed, body = twilio_status(session.session_id)
        response = await http.post(path, headers={**signed, **headers}, content=body)
        return response.status_code

    async def test_without_the_public_url_the_signature_fails(self) -> None:
        """Seen from inside (http://10.1.2.3:8000), Twilio's signature over the public URL does not verify."""
        verifier, http = await self.build()
        async with verifier, http:
            assert await self.post_status(verifier, http) == 403

    async def test_trusted_forwarded_headers(self) -> None:
        """With trust_forwarded, X-Forwarded-Proto, -Host and -Port rebuild the public URL."""
        verifier, http = await self.build(trust_forwarded=True)
        async with verifier, http:
            status = await self.post_status(
                verifier,
                http,
                **{
                    "x-forwarded-proto": "https, http",
                    "x-forwarded-host": "verify.example.com",
                    "x-forwarded-port": "443",
                },
            )
            assert status == 204

    async def test_forwarded_headers_are_ignored_unless_trusted(self) -> None:
        """Anyone can send X-Forwarded-*: without trust_forwarded they change nothing."""
        verifier, http = await self.build()
        async with verifier, http:
            status = await self.post_status(
                verifier,
                http,
                **{
                    "x-forwarded-proto": "https",
                    "x-forwarded-host": "verify.example.com",
                },
            )
            assert status == 403


class TestPublicUrl:
    def scope(self, **fields: Any) -> dict[str, Any]:
        scope: dict[str, Any] = {
            "type": "http",
            "scheme": "http",
            "path": "/hooks/a b",
            "query_string": b"x=1&y=%20",
            "headers": [(b"host", b"internal:8000")],
            "server": ("10.0.0.1", 8000),
        }
        scope.update(fields)
        return scope

    def test_host_header(self) -> None:
        """Without settings: the request's scheme and Host, the path escaped, the query as sent."""
        assert public_url(self.scope()) == "http://internal:8000/hooks/a%20b?x=1&y=%20"

    def test_raw_path_kept(self) -> None:
        """The path as the caller escaped it is kept."""
        scope = self.scope(raw_path=b"/hooks/a%20b")
        assert public_url(scope).startswith("http://internal:8000/hooks/a%20b?")
        other = self.scope(path="/root/hooks/a b", raw_path=b"/hooks/a%20b")
        assert public_url(other).startswith("http://internal:8000/root/hooks/a%20b?")

    def test_base(self) -> None:
        """A configured base replaces scheme, host and port, and may carry a prefix."""
        assert (
            public_url(self.scope(), base="https://example.com/verify/")
            == "https://example.com/verify/hooks/a%20b?x=1&y=%20"
        )

    def test_forwarded(self) -> None:
        """Forwarded scheme, host, a non-default port and a prefix."""
        scope = self.scope(
            headers=[
                (b"host", b"internal:8000"),
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"example.com:9999"),
                (b"x-forwarded-port", b"8443"),
                (b"x-forwarded-prefix", b"/verify/"),
            ],
            query_string=b"",
        )
        assert (
            public_url(scope, trust_forwarded=True)
            == "https://example.com:8443/verify/hooks/a%20b"
        )
        assert public_url(scope) == "http://internal:8000/hooks/a%20b"

    def test_forwarded_port_that_is_no_number(self) -> None:
        """A forwarded port that is not a number is ignored."""
        scope = self.scope(
            headers=[
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"example.com"),
                (b"x-forwarded-port", b"443x"),
            ],
            query_string=b"",
        )
        assert (
            public_url(scope, trust_forwarded=True) == "https://example.com/hooks/a%20b"
        )

    @pytest.mark.parametrize(
        ("forwarded", "url"),
        [
            (
                [(b"x-forwarded-proto", b"HTTPS"), (b"x-forwarded-port", b"443")],
                "https://example.com/hooks/a%20b",
            ),
            (
                [(b"x-forwarded-prefix", b"verify")],
                "http://example.com/verify/hooks/a%20b",
            ),
            (
                [
                    (b"x-forwarded-host", b"[2001:db8::1]"),
                    (b"x-forwarded-port", b"8443"),
                ],
                "http://[2001:db8::1]:8443/hooks/a%20b",
            ),
            (
                [
                    (b"x-forwarded-host", b"[2001:db8::1]:8000"),
                    (b"x-forwarded-port", b"80"),
                ],
                "http://[2001:db8::1]/hooks/a%20b",
            ),
        ],
    )
    def test_forwarded_as_proxies_write_them(
        self, forwarded: list[tuple[bytes, bytes]], url: str
    ) -> None:
        """A scheme in capitals, a prefix without its leading slash and an IPv6 host with a forwarded port still give the URL the vendor called."""
        scope = self.scope(
            headers=[(b"x-forwarded-host", b"example.com"), *forwarded],
            query_string=b"",
        )
        assert public_url(scope, trust_forwarded=True) == url

    def test_client_address(self) -> None:
        """The peer's address, or the proxy's X-Forwarded-For entry (the last) when trusted; garbage is no address."""
        scope = self.scope(
            client=("10.0.0.2", 4444),
            headers=[(b"x-forwarded-for", b"6.6.6.6, 2001:db8::1")],
        )
        assert client_address(scope, trust_forwarded=False) == "10.0.0.2"
        assert client_address(scope, trust_forwarded=True) == "2001:db8::1"
        assert client_address(self.scope(client=None), trust_forwarded=False) is None
        garbage = self.scope(client=("not-an-ip", 1))
        assert client_address(garbage, trust_forwarded=False) is None

    @pytest.mark.parametrize(
        ("entry", "address"),
        [
            (b"203.0.113.7:5555", "203.0.113.7"),
            (b"[2001:db8::1]:443", "2001:db8::1"),
            (b"[2001:db8::1]", "2001:db8::1"),
            (b"203.0.113.7:x:y", None),
        ],
    )
    def test_forwarded_address_with_a_port(
        self, entry: bytes, address: str | None
    ) -> None:
        """A proxy that appends the client's port to X-Forwarded-For still gives the client's address (the per-IP limits count it)."""
        scope = self.scope(
            client=("10.0.0.2", 4444),
            headers=[(b"x-forwarded-for", b"6.6.6.6, " + entry)],
        )
        assert client_address(scope, trust_forwarded=True) == address

    def test_no_host_header(self) -> None:
        """Without a Host header the server's address is used (default ports left out)."""
        assert (
            public_url(self.scope(headers=[], server=("10.0.0.1", 80)))
            == "http://10.0.0.1/hooks/a%20b?x=1&y=%20"
        )
        assert (
            public_url(self.scope(headers=[], server=None)) == "/hooks/a%20b?x=1&y=%20"
        )


class TestVeriff:
    async def test_decision_reaches_the_video_step(self, stack: Stack) -> None:
        """A signed decision goes to the step its vendorData names and is answered 200."""
        session = await stack.start()
        body = veriff_decision(session.session_id)
        response = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert response.status_code == 200
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("video").state is StepState.DONE
        again = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert again.status_code == 200
        assert await stack.verifier.get(session.session_id) == stored

    async def test_late_decision_is_recorded_not_applied(self, stack: Stack) -> None:
        """A decision after the step timed out is acknowledged, audited, and the step stays timed out."""
        session = await stack.start()
        await stack.clock.advance(11 * 60)
        await stack.verifier.wait_idle()
        body = veriff_decision(session.session_id)
        response = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert response.status_code == 200
        stored = await stack.verifier.get(session.session_id)
        result = stored.step("video").result
        assert result is not None
        assert result.status is ResultStatus.TIMEOUT
        trail = await stack.verifier.store.audit_events(session.session_id)
        assert trail[-1].kind == "event.late"
        assert trail[-1].data["status"] == "approved"

    async def test_late_decision_keeps_no_holder_data(self, stack: Stack) -> None:
        """A late approval's document holder reaches neither the session nor its trail."""
        session = await stack.start()
        await stack.clock.advance(11 * 60)
        await stack.verifier.wait_idle()
        person = {
            "firstName": "MING",
            "lastName": "SUN",
            "idNumber": "650102198807014417",
        }
        body = veriff_decision(session.session_id, person=person)
        response = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert response.status_code == 200
        trail = await stack.verifier.store.audit_events(session.session_id)
        assert trail[-1].kind == "event.late"
        kept = repr(await stack.verifier.get(session.session_id)) + "".join(
            event.body for event in trail
        )
        for value in person.values():
            assert value not in kept

    async def test_forged_decision(self, stack: Stack) -> None:
        """A decision signed with another secret is refused with 403."""
        session = await stack.start()
        body = veriff_decision(session.session_id)
        response = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body, "guess"), content=body
        )
        assert response.status_code == 403
        assert response.json() == {"error": "forbidden"}
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("video").state is StepState.WAITING

    async def test_signed_garbage_is_malformed(self, stack: Stack) -> None:
        """A signed body that is not JSON gets 400."""
        body = b"not json"
        response = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert response.status_code == 400
        assert response.json() == {"error": "malformed"}


class TestSubmit:
    async def test_right_code(self, stack: Stack) -> None:
        """The right code from the applicant's address passes the step; the answer holds no personal data."""
        session = await stack.start()
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/sms/submit",
            json={"code": "123456", "client_ip": "198.51.100.1"},
        )
        assert response.status_code == 200
        assert response.json() == {
            "session_id": session.session_id,
            "status": "active",
            "outcome": None,
            "step_id": "sms",
            "state": "done",
            "result": "passed",
            "challenge": None,
        }

    async def test_wrong_code(self, stack: Stack) -> None:
        """A wrong code fails the step (the channel decides)."""
        session = await stack.start()
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/sms/submit", json={"code": "000000"}
        )
        assert response.json()["result"] == "failed"

    @pytest.mark.parametrize(
        ("path", "status", "code"),
        [
            ("/sessions/nobody/steps/sms/submit", 404, "session_not_found"),
            ("/sessions/{sid}/steps/nothing/submit", 404, "step_not_found"),
        ],
    )
    async def test_unknown_targets(
        self, stack: Stack, path: str, status: int, code: str
    ) -> None:
        """Unknown sessions and steps are 404s with a stable code."""
        session = await stack.start()
        response = await stack.http.post(
            path.format(sid=session.session_id), json={"code": "1"}
        )
        assert response.status_code == status
        assert response.json() == {"error": code}

    async def test_step_not_waiting(self, stack: Stack) -> None:
        """A second submission to a finished step is a 409."""
        session = await stack.start()
        url = f"/sessions/{session.session_id}/steps/sms/submit"
        await stack.http.post(url, json={"code": "123456"})
        response = await stack.http.post(url, json={"code": "123456"})
        assert response.status_code == 409
        assert response.json() == {"error": "step_not_waiting"}

    async def test_session_finished(self, stack: Stack) -> None:
        """A code for a cancelled (or decided) session is a 409 and changes nothing."""
        session = await stack.start()
        await stack.verifier.cancel(session.session_id)
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/sms/submit",
            json={"code": "123456"},
        )
        assert response.status_code == 409
        assert response.json() == {"error": "session_finished"}

    @pytest.mark.parametrize(
        "body",
        [
            b"{",
            b"[1]",
            b"\xff",
            # NaN, Infinity and numbers too large for a float are no JSON (RFC 8259).
            b'{"code": NaN}',
            b'{"code": -Infinity}',
            b'{"code": 1e999}',
        ],
    )
    async def test_not_a_json_object(self, stack: Stack, body: bytes) -> None:
        """A body that is not a JSON object is a 400, and nothing reaches the channel."""
        session = await stack.start()
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/sms/submit",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_json"}
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("sms").state is StepState.WAITING

    async def test_numbers_are_taken(self, stack: Stack) -> None:
        """Numbers JSON has, fractions and exponents included, reach the channel."""
        session = await stack.start()
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/video/submit",
            content=b'{"score": 0.5, "scale": 1e3, "count": 2}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200
        assert response.json()["result"] == "passed"

    @pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000])
    async def test_nesting_too_deep_for_the_decoder(
        self, stack: Stack, body: bytes
    ) -> None:
        """JSON nested deeper than the decoder can follow is a 400, not a crash."""
        session = await stack.start()
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/sms/submit",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_json"}

    @pytest.mark.parametrize(
        "content_type",
        [
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ],
    )
    async def test_only_json_is_taken(
        self, stack: Stack, content_type: str | None
    ) -> None:
        """A body that is not sent as JSON (as a cross-site form sends it) is a 415, and nothing is counted."""
        session = await stack.start()
        url = f"/sessions/{session.session_id}/steps/sms/submit"
        headers = {} if content_type is None else {"content-type": content_type}
        response = await stack.http.post(
            url, content=b'{"code": "000000"}', headers=headers
        )
        assert response.status_code == 415
        assert response.json() == {"error": "unsupported_media_type"}
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("sms").state is StepState.WAITING

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.x+json",
        ],
    )
    async def test_json_media_types(self, stack: Stack, content_type: str) -> None:
        """Any JSON media type, with parameters and in any case, is taken."""
        session = await stack.start()
        response = await stack.http.post(
            f"/sessions/{session.session_id}/steps/sms/submit",
            content=b'{"code": "123456"}',
            headers={"content-type": content_type},
        )
        assert response.status_code == 200

    async def test_too_large(self, stack: Stack) -> None:
        """A body over the limit is a 413."""
        response = await stack.http.post(
            "/sessions/s/steps/sms/submit",
            content=b"1" * ((1 << 20) + 1),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413

    async def test_authorize(self) -> None:
        """``authorize`` refuses a submission before the runtime sees it."""
        seen: list[str] = []

        async def authorize(request: Any, session_id: str) -> bool:
            seen.append(session_id)
            return request.headers.get("authorization") == "Bearer ok"

        runtime = Unreachable()
        app = create_app(runtime, authorize=authorize)
        async with transport(app) as http:
            response = await http.post("/sessions/s1/steps/sms/submit", json={})
            assert response.status_code == 403
        assert seen == ["s1"]


class VendorCodes:
    """A Verify vendor that makes its code ``444444`` and may be unreachable when checking it."""

    def __init__(self) -> None:
        self.down = False

    @property
    def name(self) -> str:
        return "vendor"

    async def start(self, request: VerifyRequest, /) -> VerifyStarted:
        return VerifyStarted(provider="vendor", verification_id="VE1")

    async def check(
        self, verification_id: str, code: str, /, *, to: str
    ) -> VerifyCheck:
        if self.down:
            raise ProviderUnavailableError(message="timed out", provider="vendor")
        approved = code == "444444"
        return VerifyCheck(outcome="approved" if approved else CheckOutcome.WRONG)

    async def cancel(self, verification_id: str, /) -> None:
        return None

    async def aclose(self) -> None:
        return None


class TestSubmitToTheSmsChannel:
    async def test_vendor_down_while_checking(self) -> None:
        """A code the vendor cannot check now is a 503 with Retry-After and counts nothing; the same code passes once the vendor is back."""
        vendor = VendorCodes()
        sms = SmsCodeChannel([vendor], secret="s" * 32, brand="Acme")
        only_sms = Policy(
            name="sms",
            version="1",
            steps=[Step(id="sms", channel="sms_code", timeout="10m")],
        )
        clock = FakeClock(T0)
        async with Verifier(only_sms, channels=[sms], clock=clock) as verifier:
            session = await verifier.start(APPLICANT)
            await verifier.wait_idle()
            url = f"/sessions/{session.session_id}/steps/sms/submit"
            async with transport(create_app(verifier)) as http:
                vendor.down = True
                refused = await http.post(url, json={"code": "４４４ ４４４"})  # noqa: RUF001
                assert refused.status_code == 503
                assert refused.json() == {"error": "unavailable"}
                assert refused.headers["retry-after"] == "5"
                stored = await verifier.get(session.session_id)
                assert stored.step("sms").state is StepState.WAITING
                assert stored.step("sms").channel_state["wrong"] == 0
                vendor.down = False
                passed = await http.post(url, json={"code": "444444"})
            assert passed.status_code == 200
            assert passed.json()["result"] == "passed"


class Flaky:
    """A store whose named calls fail as if its server were down."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self.down: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name not in self.down:
            return found

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailableError(message="down", store="test")

        return down


class TestStoreOutage:
    @pytest.fixture
    async def outage(self, tmp_path: Any) -> AsyncIterator[tuple[Stack, Flaky]]:
        """The default app on a SQLite store that a test can take down call by call."""
        clock = FakeClock(T0)
        async with SqliteStore(tmp_path / "sessions.db") as real:
            store = Flaky(real)
            async with Verifier(
                policy(), channels=channels(), store=store, clock=clock
            ) as verifier:
                app = create_app(
                    verifier, webhooks=handlers(), public_base_url=PUBLIC, clock=clock
                )
                async with transport(app) as http:
                    yield Stack(verifier, clock, http, []), store

    async def test_webhook_while_saves_fail(self, outage: tuple[Stack, Flaky]) -> None:
        """A decision that cannot be saved is a 503 with Retry-After; the vendor's redelivery is applied."""
        stack, store = outage
        session = await stack.start()
        body = veriff_decision(session.session_id)
        store.down = {"save"}
        response = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        store.down = set()
        again = await stack.http.post(
            "/webhooks/veriff", headers=veriff_headers(body), content=body
        )
        assert again.status_code == 200
        stored = await stack.verifier.get(session.session_id)
        assert stored.step("video").state is StepState.DONE

    @pytest.mark.parametrize("call", ["load", "save"])
    async def test_submission_while_the_store_is_down(
        self, outage: tuple[Stack, Flaky], call: str
    ) -> None:
        """A code that cannot be read or saved is a 503 with Retry-After; sent again, it passes."""
        stack, store = outage
        session = await stack.start()
        url = f"/sessions/{session.session_id}/steps/sms/submit"
        store.down = {call}
        response = await stack.http.post(url, json={"code": "123456"})
        assert response.status_code == 503
        assert response.json() == {"error": "unavailable"}
        assert response.headers["retry-after"] == "5"
        store.down = set()
        again = await stack.http.post(url, json={"code": "123456"})
        assert again.json()["result"] == "passed"


class Unreachable:
    """A runtime whose every call raises what it was told to (``SessionNotFoundError`` by default)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or SessionNotFoundError(message="none", session_id="s")
        self.session: Session | None = None

    async def start(
        self,
        applicant: Applicant,
        *,
        policy: str | None = None,
        session_id: str | None = None,
    ) -> Session:
        raise self.error

    async def submit(
        self, session_id: str, step_id: str, payload: Mapping[str, Any]
    ) -> Session:
        raise self.error

    async def handle_event(self, event: ProviderEvent) -> Session | None:
        raise self.error

    async def get(self, session_id: str) -> Session:
        if self.session is None:
            raise self.error
        return self.session


class TestRuntimeErrors:
    async def veriff(self, runtime: Runtime) -> httpx.Response:
        app = create_app(runtime, webhooks=[VeriffWebhooks(SECRET)])
        body = veriff_decision("s1")
        async with transport(app) as http:
            return await http.post(
                "/webhooks/veriff", headers=veriff_headers(body), content=body
            )

    @pytest.mark.parametrize(
        "error",
        [
            ConcurrentUpdateError(message="x", session_id="s1", expected_version=1),
            StoreUnavailableError(message="down", store="sqlite"),
            ProviderUnavailableError(message="vendor down", provider="twilio"),
        ],
    )
    async def test_retry_later(self, error: Exception) -> None:
        """A conflict, a store outage or a vendor the channel could not reach asks the vendor to deliver again (503, Retry-After)."""
        response = await self.veriff(Unreachable(error))
        assert response.status_code == 503
        assert response.json() == {"error": "retry"}
        assert response.headers["retry-after"] == "5"

    @pytest.mark.parametrize(
        ("hint", "seconds"), [(29.2, "30"), (0.1, "1"), (float("inf"), "5")]
    )
    async def test_retry_after_a_throttling_vendor(
        self, hint: float, seconds: str
    ) -> None:
        """A vendor's throttling hint becomes the Retry-After, in whole seconds (at least one; the default for a hint that is no number of seconds)."""
        error = ProviderRateLimitedError(
            message="slow down", provider="twilio", retry_after=hint
        )
        response = await self.veriff(Unreachable(error))
        assert response.status_code == 503
        assert response.headers["retry-after"] == seconds

    async def test_vendor_refusal_is_internal(self) -> None:
        """A vendor error not worth repeating is a bare 500."""
        error = ProviderRejectedError(message="no", provider="twilio")
        response = await self.veriff(Unreachable(error))
        assert response.status_code == 500
        assert response.json() == {"error": "internal"}

    async def test_untyped_error_is_a_typed_500(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An error the runtime did not type (a driver's own, Temporal's RPC errors) is logged and answered 500 in the app's error shape, on both routes."""
        runtime = Unreachable(RuntimeError("connection reset by peer"))
        with caplog.at_level(logging.ERROR, logger="multiverify.asgi"):
            response = await self.veriff(runtime)
            assert response.status_code == 500
            assert response.json() == {"error": "internal"}
            app = create_app(runtime)
            async with transport(app) as http:
                submitted = await http.post(
                    "/sessions/s1/steps/sms/submit", json={"code": "1"}
                )
        assert submitted.status_code == 500
        assert submitted.json() == {"error": "internal"}
        assert "connection reset by peer" in caplog.text
        assert "reset by peer" not in response.text + submitted.text

    async def test_other_errors_say_nothing(self) -> None:
        """An unexpected typed error is a bare 500."""
        response = await self.veriff(Unreachable(MultiverifyError(message="secret")))
        assert response.status_code == 500
        assert response.json() == {"error": "internal"}

    async def test_failing_handler_or_authorize_is_a_typed_500(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A webhook handler (the protocol is the app's to implement) or an ``authorize`` that crashes is logged and answered 500 in the app's error shape."""

        class Broken:
            vendor = "broken"

            async def parse(self, request: Any, /) -> list[ProviderEvent]:
                raise KeyError("MessageSid")

            def respond(self, request: Any, sessions: Any, /) -> WebhookResponse:
                raise AssertionError  # pragma: no cover - parse fails first

        async def authorize(request: Any, session_id: str) -> bool:
            raise RuntimeError("session service down")

        app = create_app(Unreachable(), webhooks=[Broken()], authorize=authorize)
        with caplog.at_level(logging.ERROR, logger="multiverify.asgi"):
            async with transport(app) as http:
                hooked = await http.post("/webhooks/broken", content=b"x")
                submitted = await http.post("/sessions/s1/steps/sms/submit", json={})
        for response in (hooked, submitted):
            assert response.status_code == 500
            assert response.json() == {"error": "internal"}
        assert "MessageSid" in caplog.text
        assert "session service down" in caplog.text

    async def test_step_still_starting(self) -> None:
        """An event refused while its step is still starting (or has started since) is a 503, so it comes back; a late one is a success."""
        clock = FakeClock(T0)
        async with Verifier(policy(), channels=channels(), clock=clock) as verifier:
            started = await verifier.start(APPLICANT)
            await verifier.wait_idle()
            started = await verifier.get(started.session_id)
            runtime = Unreachable(
                StepNotWaitingError(message="x", session_id="s1", step_id="video")
            )
            record = started.step("video")

            def video(**changes: Any) -> Session:
                return attrs.evolve(
                    started,
                    steps=[
                        attrs.evolve(record, **changes) if r.step_id == "video" else r
                        for r in started.steps
                    ],
                )

            runtime.session = video(state=StepState.RUNNING)
            assert (await self.veriff(runtime)).status_code == 503
            runtime.session = started  # waiting: started since the refusal
            assert (await self.veriff(runtime)).status_code == 503
            runtime.session = video(state=StepState.DONE)  # late
            assert (await self.veriff(runtime)).status_code == 200
            runtime.session = video(attempt=2)  # its attempt is over: late
            assert (await self.veriff(runtime)).status_code == 200
            runtime.session = None  # the session is gone
            assert (await self.veriff(runtime)).status_code == 200

    async def test_step_starting_and_the_store_down(self) -> None:
        """An event refused while its step starts, whose session cannot then be read for the store is down, is a 503, not a success that loses it."""

        class Down(Unreachable):
            async def get(self, session_id: str) -> Session:
                raise StoreUnavailableError(message="down", store="sqlite")

        runtime = Down(
            StepNotWaitingError(message="x", session_id="s1", step_id="video")
        )
        response = await self.veriff(runtime)
        assert response.status_code == 503
        assert response.json() == {"error": "retry"}

    async def test_step_started_just_after_the_refusal(self) -> None:
        """An event refused while its step started, the start saved right after: a 503, and the vendor's redelivery is applied."""
        clock = FakeClock(T0)
        slow = [
            ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes())]),
            ScriptedChannel("video_sign", [Scripted.waits(Scripted.passes(delay=60))]),
        ]

        class StartsMeanwhile:
            """The Verifier, whose refused events see the step's start saved just after."""

            def __init__(self, verifier: Verifier) -> None:
                self.verifier = verifier
                self.start = verifier.start
                self.submit = verifier.submit
                self.get = verifier.get

            async def handle_event(self, event: ProviderEvent) -> Session | None:
                try:
                    return await self.verifier.handle_event(event)
                except StepNotWaitingError:
                    await clock.advance(60)
                    await self.verifier.wait_idle()
                    raise

        async with Verifier(
            policy(), channels=slow, clock=clock, early_event_wait=0
        ) as verifier:
            session = await verifier.start(APPLICANT)
            for _ in range(50):
                await asyncio.sleep(0)
            started = await verifier.get(session.session_id)
            assert started.step("video").state is StepState.RUNNING
            app = create_app(
                StartsMeanwhile(verifier), webhooks=[VeriffWebhooks(SECRET)]
            )
            body = veriff_decision(session.session_id)
            async with transport(app) as http:
                first = await http.post(
                    "/webhooks/veriff", headers=veriff_headers(body), content=body
                )
                assert first.status_code == 503
                assert (await verifier.get(session.session_id)).step(
                    "video"
                ).state is StepState.WAITING
                again = await http.post(
                    "/webhooks/veriff", headers=veriff_headers(body), content=body
                )
            assert again.status_code == 200
            stored = await verifier.get(session.session_id)
            assert stored.step("video").state is StepState.DONE

    @pytest.mark.parametrize(
        ("error", "status", "body"),
        [
            (
                InvalidInputError(message="bad", field="code"),
                422,
                {"error": "invalid_input", "field": "code"},
            ),
            (
                QuotaExceededError(message="slow down", quota="phone", retry_at=T0),
                429,
                {
                    "error": "quota_exceeded",
                    "quota": "phone",
                    "retry_at": T0.isoformat(),
                },
            ),
            (
                StoreUnavailableError(message="down", store="redis"),
                503,
                {"error": "unavailable"},
            ),
            (
                ProviderUnavailableError(message="down", provider="twilio-verify"),
                503,
                {"error": "unavailable"},
            ),
            (
                ProviderRejectedError(message="no", provider="twilio-verify"),
                500,
                {"error": "internal"},
            ),
            (MultiverifyError(message="secret"), 500, {"error": "internal"}),
        ],
    )
    async def test_submit_errors(
        self, error: Exception, status: int, body: dict[str, Any]
    ) -> None:
        """Each typed error of a submission has its status and stable code."""
        app = create_app(Unreachable(error))
        async with transport(app) as http:
            response = await http.post("/sessions/s1/steps/sms/submit", json={})
        assert response.status_code == status
        assert response.json() == body
        if status == 503:
            assert response.headers["retry-after"] == "5"

    async def test_a_quota_refusal_says_when_to_try_again(self) -> None:
        """A 429 carries ``Retry-After``: the seconds until the quota frees, by the app's clock."""
        error = QuotaExceededError(message="slow down", quota="phone", retry_at=T0)
        app = create_app(
            Unreachable(error), clock=FakeClock(T0 - timedelta(seconds=89.5))
        )
        async with transport(app) as http:
            response = await http.post("/sessions/s1/steps/sms/submit", json={})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "90"

    async def test_body_limit_is_configurable_and_streamed(self) -> None:
        """``max_body`` bounds both routes; a body sent without a length is refused as it streams, not read to its end."""
        sent = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal sent
            while sent < 1 << 30:
                sent += 1 << 16
                yield b"{" * (1 << 16)

        app = create_app(Unreachable(), webhooks=[VeriffWebhooks(SECRET)], max_body=100)
        headers = {"content-type": "application/json"}
        async with transport(app) as http:
            for path in ("/webhooks/veriff", "/sessions/s1/steps/sms/submit"):
                fits = await http.post(path, content=b"{}" + b" " * 98, headers=headers)
                assert fits.status_code != 413
                over = await http.post(path, content=b" " * 101, headers=headers)
                assert over.status_code == 413
                assert over.json() == {"error": "too_large"}
                sent = 0
                streamed = await http.post(path, content=endless(), headers=headers)
                assert streamed.status_code == 413
                assert sent <= 1 << 17

    @pytest.mark.parametrize("limit", [0, -1, True, 1.5])
    def test_body_limit_must_be_a_positive_whole_number(self, limit: Any) -> None:
        """A limit that would refuse every body (or is no byte count) is a configuration error."""
        with pytest.raises(ConfigurationError, match="max_body"):
            create_app(Unreachable(), max_body=limit)

    def test_two_handlers_on_one_route(self) -> None:
        """Two handlers for one vendor route are a configuration error."""
        with pytest.raises(ConfigurationError, match="/webhooks/veriff"):
            create_app(
                Unreachable(),
                webhooks=[VeriffWebhooks("a"), VeriffWebhooks("b")],
            )

    async def test_failing_rejection_hook_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A hook that raises does not change the answer."""

        async def broken(rejection: Rejection) -> None:
            raise RuntimeError("hook down")

        app = create_app(
            Unreachable(), webhooks=[VeriffWebhooks(SECRET)], on_rejected=[broken]
        )
        async with transport(app) as http:
            response = await http.post("/webhooks/veriff", content=b"{}")
        assert response.status_code == 403
        assert "on_rejected hook failed" in caplog.text


# -- a whole phone call through the app -------------------------------------------


def twilio_voice_channel(sandbox: SandboxVoice) -> PhoneCallChannel:
    """The real phone-call channel on Twilio, its callbacks pointing at the app's public URL."""
    account = TwilioAccount(
        account_sid=TWILIO_ACCOUNT,
        auth_token=TWILIO_TOKEN,
        client=httpx.AsyncClient(transport=sandbox),
    )
    return PhoneCallChannel(
        [
            TwilioVoice(
                account=account,
                from_number="+8610555010",
                callback_url=f"{PUBLIC}/webhooks/twilio-voice",
            )
        ]
    )


def vonage_voice_channel(sandbox: SandboxVoice, clock: FakeClock) -> PhoneCallChannel:
    """The real phone-call channel on Vonage, its callbacks pointing at the app's public URL."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from multiverify.providers import VonageApplication, VonageVoice
    from multiverify.sandbox._voice import VONAGE_URL_KEY

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return PhoneCallChannel(
        [
            VonageVoice(
                application=VonageApplication(
                    application_id="app-1", private_key=pem, clock=clock
                ),
                from_number="+8610555010",
                callback_url=f"{PUBLIC}/webhooks/vonage-voice",
                callback_key=VONAGE_URL_KEY,
                client=httpx.AsyncClient(transport=sandbox),
            )
        ]
    )


@pytest.mark.parametrize("vendor", ["twilio", "vonage"])
async def test_a_whole_call_through_the_app(vendor: str) -> None:
    """Every callback of a call goes through the app; the call is answered with the channel's TwiML or NCCO and passes."""
    clock = FakeClock(T0)
    persona = get_persona("honest")
    sandbox = SandboxVoice(
        vendor=vendor,
        applicant=persona.applicant,
        persona=VOICE_PERSONAS["honest"],
        clock=clock,
    )
    channel = (
        twilio_voice_channel(sandbox)
        if vendor == "twilio"
        else vonage_voice_channel(sandbox, clock)
    )
    call_policy = Policy(
        name="call",
        version="1",
        steps=[Step(id="call", channel="phone_call", timeout="5d")],
    )
    async with Verifier(call_policy, channels=[channel], clock=clock) as verifier:
        app = create_app(
            verifier,
            webhooks=[sandbox.handler()],
            public_base_url=PUBLIC,
            clock=clock,
        )
        answers: list[tuple[str, httpx.Response]] = []
        async with transport(app) as http:

            async def deliver(request: Any) -> WebhookResponse:
                parts = urlsplit(request.url)
                assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
                response = await http.post(
                    f"{parts.path}?{parts.query}",
                    headers=dict(request.headers),
                    content=request.body,
                )
                answers.append((request.url, response))
                return WebhookResponse(
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    body=response.content,
                )

            sandbox._deliver = deliver
            session = await verifier.start(persona.applicant)
            for _ in range(2000):
                await verifier.wait_idle()
                await sandbox.wait_idle()
                stored = await verifier.get(session.session_id)
                if stored.finished or stored.step("call").state is StepState.DONE:
                    break
                await clock.advance(0.5)
            await sandbox.aclose()
        result = stored.step("call").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert all(r.status_code in (200, 204) for _, r in answers)
        spoken = [r for url, r in answers if "event=gather" in url]
        assert spoken
        kind = "text/xml" if vendor == "twilio" else "application/json"
        assert all(r.headers["content-type"].startswith(kind) for r in spoken)
        if vendor == "vonage":
            assert isinstance(spoken[0].json(), list)
        else:
            assert spoken[0].content.startswith(b"<?xml")


class TestTwoReplicas:
    """Two apps, each with its own Verifier, on one SQLite file: replicas behind a load balancer."""

    async def replicas(
        self, tmp_path: Any
    ) -> tuple[list[Verifier], list[httpx.AsyncClient], list[SqliteStore]]:
        clock = FakeClock(T0)
        stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
        verifiers = [
            Verifier(policy(), channels=channels(), store=store, clock=clock)
            for store in stores
        ]
        clients = [
            transport(
                create_app(
                    verifier,
                    webhooks=handlers(),
                    public_base_url=PUBLIC,
                    clock=clock,
                )
            )
            for verifier in verifiers
        ]
        return verifiers, clients, stores

    async def test_one_webhook_to_both_replicas_at_once(self, tmp_path: Any) -> None:
        """The same Veriff decision posted to both replicas at the same moment is applied once."""
        verifiers, clients, stores = await self.replicas(tmp_path)
        try:
            session = await verifiers[0].start(APPLICANT)
            await verifiers[0].wait_idle()
            body = veriff_decision(session.session_id)
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/webhooks/veriff", headers=veriff_headers(body), content=body
                    )
                    for http in clients
                )
            )
            assert [a.status_code for a in answers] == [200, 200]
            trail = await stores[1].audit_events(session.session_id)
            finished = [
                e
                for e in trail
                if e.kind == "input"
                and e.data["input"]["type"] == "StepFinished"
                and e.data["input"]["step_id"] == "video"
            ]
            assert len(finished) == 1
            assert AuditTrail.verify(trail) == len(trail)
        finally:
            for item in (*clients, *verifiers, *stores):
                await item.aclose()

    async def test_one_code_to_both_replicas_at_once(self, tmp_path: Any) -> None:
        """The right code submitted through both replicas at once is applied once; the other gets a 409."""
        verifiers, clients, stores = await self.replicas(tmp_path)
        try:
            session = await verifiers[0].start(APPLICANT)
            await verifiers[0].wait_idle()
            url = f"/sessions/{session.session_id}/steps/sms/submit"
            answers = await asyncio.gather(
                *(http.post(url, json={"code": "123456"}) for http in clients)
            )
            assert sorted(a.status_code for a in answers) == [200, 409]
            (won,) = [a.json() for a in answers if a.status_code == 200]
            assert won["result"] == "passed"
            (lost,) = [a.json() for a in answers if a.status_code == 409]
            assert lost["error"] in ("conflict", "step_not_waiting")
            trail = await stores[0].audit_events(session.session_id)
            sms = [
                e
                for e in trail
                if e.kind == "input" and e.data["input"].get("step_id") == "sms"
            ]
            assert [e.data["input"]["type"] for e in sms] == [
                "StepStarted",
                "StepFinished",
            ]
        finally:
            for item in (*clients, *verifiers, *stores):
                await item.aclose()
