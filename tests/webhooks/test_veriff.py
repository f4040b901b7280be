"""Tests for Veriff's webhooks: the HMAC check, parsing, routing, and the whole path to a verdict."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from multiverify import (
    Applicant,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    RetrySettings,
    Rule,
    Step,
    StepState,
    Verifier,
)
from multiverify.channels import VideoSignChannel
from multiverify.exceptions import WebhookFormatError, WebhookSignatureError
from multiverify.providers import Veriff, VideoDecision, VideoStatus, veriff_signature
from multiverify.testing import FakeClock
from multiverify.webhooks import VeriffWebhooks, WebhookRequest

SECRET = "abcdef12-abcd-abcd-abcd-abcdef012345"
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
SESSION = "aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7"


def delivery(
    body: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    header: str = "X-HMAC-SIGNATURE",
    api_key: str = "key-1",
) -> WebhookRequest:
    """A webhook as Veriff sends it, signed over the exact bytes."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookRequest(
        method="POST",
        url="https://app.example/webhooks/veriff",
        headers={
            "Content-Type": "application/json",
            "X-AUTH-CLIENT": api_key,
            header: veriff_signature(secret, raw),
        },
        body=raw,
        received_at=T0,
    )


def decision_webhook(
    vendor_data: object = "s1:video:1", **verification: Any
) -> dict[str, Any]:
    """A decision webhook's body."""
    fields: dict[str, Any] = {
        "id": SESSION,
        "attemptId": "att-1",
        "vendorData": vendor_data,
        "status": "approved",
        "code": 9001,
        "reason": None,
        "reasonCode": None,
        "decisionTime": "2026-01-01T09:05:00.000Z",
        "person": {"firstName": "FANG", "lastName": "WANG"},
    }
    fields.update(verification)
    return {
        "status": "success",
        "verification": fields,
        "technicalData": {"ip": "186.153.67.122"},
    }


def event_webhook(
    action: str = "started", vendor_data: object = "s1:video:1"
) -> dict[str, Any]:
    """An event webhook's body."""
    return {
        "id": SESSION,
        "attemptId": "att-1",
        "feature": "selfid",
        "code": 7001 if action == "started" else 7002,
        "action": action,
        "vendorData": vendor_data,
    }


@pytest.fixture
def handler() -> VeriffWebhooks:
    """The handler for integration ``key-1``."""
    return VeriffWebhooks(SECRET, api_key="key-1")


class TestSignature:
    async def test_valid(self, handler: VeriffWebhooks) -> None:
        """A body signed with the shared secret is accepted; both header names work."""
        for header in ("X-HMAC-SIGNATURE", "VRF-HMAC-SIGNATURE"):
            events = await handler.parse(delivery(decision_webhook(), header=header))
            assert len(events) == 1

    async def test_uppercase_hex(self, handler: VeriffWebhooks) -> None:
        """Hex digits are compared case-insensitively."""
        request = delivery(decision_webhook())
        signature = request.header("x-hmac-signature") or ""
        upper = WebhookRequest(
            method="POST",
            url=request.url,
            headers={"X-HMAC-SIGNATURE": signature.upper()},
            body=request.body,
            received_at=T0,
        )
        assert len(await handler.parse(upper)) == 1

    async def test_unsigned(self, handler: VeriffWebhooks) -> None:
        """No signature header is refused."""
        request = WebhookRequest(
            method="POST",
            url="https://app.example/webhooks/veriff",
            headers={"Content-Type": "application/json"},
            body=json.dumps(decision_webhook()).encode(),
            received_at=T0,
        )
        with pytest.raises(WebhookSignatureError, match="no X-HMAC-SIGNATURE"):
            await handler.parse(request)

    async def test_forged(self, handler: VeriffWebhooks) -> None:
        """A signature made with another secret is refused."""
        with pytest.raises(WebhookSignatureError, match="does not match"):
            await handler.parse(delivery(decision_webhook(), secret="guess"))

    async def test_tampered_body(self, handler: VeriffWebhooks) -> None:
        """A body changed after signing is refused."""
        request = delivery(decision_webhook(status="declined"))
        tampered = WebhookRequest(
            method="POST",
            url=request.url,
            headers=dict(request.headers),
            body=request.body.replace(b"declined", b"approved"),
            received_at=T0,
        )
        with pytest.raises(WebhookSignatureError):
            await handler.parse(tampered)

    async def test_other_integration(self, handler: VeriffWebhooks) -> None:
        """A delivery naming another integration's API key is refused."""
        with pytest.raises(WebhookSignatureError, match="another integration"):
            await handler.parse(delivery(decision_webhook(), api_key="live-key"))

    async def test_api_key_optional(self) -> None:
        """Without an API key configured, X-AUTH-CLIENT is not checked."""
        events = await VeriffWebhooks(SECRET).parse(
            delivery(decision_webhook(), api_key="anything")
        )
        assert len(events) == 1


class TestParse:
    async def test_decision(self, handler: VeriffWebhooks) -> None:
        """A decision is routed by vendorData and carries no personal data."""
        (event,) = await handler.parse(delivery(decision_webhook()))
        assert (event.session_id, event.step_id, event.attempt) == ("s1", "video", 1)
        assert event.kind == "decision"
        assert event.dedupe_key == f"veriff:decision:{SESSION}:att-1:approved"
        decision = VideoDecision.from_data(event.data)
        assert decision.status is VideoStatus.APPROVED
        assert decision.session_id == SESSION
        assert "FANG" not in json.dumps(dict(event.data))

    async def test_session_id_with_colons(self, handler: VeriffWebhooks) -> None:
        """A session id holding colons still routes: the step and attempt come last."""
        (event,) = await handler.parse(delivery(decision_webhook("app:loan:7:video:2")))
        assert (event.session_id, event.step_id, event.attempt) == (
            "app:loan:7",
            "video",
            2,
        )

    async def test_no_attempt_id(self, handler: VeriffWebhooks) -> None:
        """Without an attemptId the dedupe key falls back to the body's hash."""
        body = decision_webhook()
        del body["verification"]["attemptId"]
        (event,) = await handler.parse(delivery(body))
        assert event.dedupe_key is not None
        assert event.dedupe_key.startswith(f"veriff:decision:{SESSION}:")
        assert event.dedupe_key.endswith(":approved")

    async def test_event(self, handler: VeriffWebhooks) -> None:
        """An event webhook becomes a ``progress`` event."""
        (event,) = await handler.parse(delivery(event_webhook("submitted")))
        assert event.kind == "progress"
        assert event.data["action"] == "submitted"
        assert event.data["session_id"] == SESSION
        assert event.dedupe_key == f"veriff:event:{SESSION}:att-1:submitted"

    @pytest.mark.parametrize(
        "vendor_data", [None, 42, "user-123", "s1:video:one", ":video:1", "s1::1"]
    )
    async def test_not_ours(self, handler: VeriffWebhooks, vendor_data: object) -> None:
        """Sessions this SDK did not open give no events."""
        assert await handler.parse(delivery(decision_webhook(vendor_data))) == []
        assert (
            await handler.parse(delivery(event_webhook(vendor_data=vendor_data))) == []
        )

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[1, 2]",
            {"status": "success"},
            {"verification": "approved"},
            decision_webhook(status="sleeping"),
            decision_webhook(id=None),
            {"action": "started", "vendorData": "s1:video:1"},
        ],
    )
    async def test_malformed(
        self, handler: VeriffWebhooks, body: dict[str, Any] | bytes
    ) -> None:
        """Signed but malformed deliveries are a WebhookFormatError."""
        with pytest.raises(WebhookFormatError):
            await handler.parse(delivery(body))

    def test_respond_and_describe(self, handler: VeriffWebhooks) -> None:
        """Veriff gets a bare 200; the handler names its vendor."""
        response = handler.respond(delivery(decision_webhook()), [None])
        assert response.status == 200
        assert handler.vendor == "veriff"
        assert repr(handler) == "<multiverify.webhooks.VeriffWebhooks(veriff)>"


def applicant() -> Applicant:
    """An applicant borrowing 8,000 CNY."""
    return Applicant(
        applicant_id="a-42",
        name="Wang Fang",
        national_id="110101199003072420",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount=Decimal(8000), currency="CNY", term_months=12, purpose="laptop"
        ),
    )


@pytest.fixture
async def veriff_verifier() -> AsyncIterator[tuple[Verifier, respx.Router]]:
    """A Verifier whose video step runs on Veriff, over a respx router."""
    router = respx.Router(assert_all_called=True)
    router.post("https://stationapi.veriff.com/v1/sessions").respond(
        201,
        json={
            "status": "success",
            "verification": {
                "id": SESSION,
                "url": "https://alchemy.veriff.com/v/abc",
                "status": "created",
            },
        },
    )
    policy = Policy(
        name="video",
        version="1",
        steps=[
            Step(
                id="video",
                channel="video_sign",
                providers=["veriff"],
                retry=RetrySettings(attempts=1),
            )
        ],
        rules=[
            Rule(outcome="approved", when="steps.video.status == 'passed'", reason="ok")
        ],
        default="rejected",
    )
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(router.async_handler)
    ) as client:
        channel = VideoSignChannel(
            [Veriff(api_key="key-1", shared_secret=SECRET, client=client)]
        )
        async with Verifier(policy, channels=[channel], clock=FakeClock()) as verifier:
            yield verifier, router


class TestEndToEnd:
    async def test_webhook_to_verdict(
        self,
        handler: VeriffWebhooks,
        veriff_verifier: tuple[Verifier, respx.Router],
    ) -> None:
        """Session created at Veriff, signed decision webhook parsed, routed and decided."""
        verifier, _ = veriff_verifier
        session = await verifier.start(applicant())
        await verifier.wait_idle()
        challenge = await verifier.challenge(session.session_id, "video")
        assert challenge.url == "https://alchemy.veriff.com/v/abc"
        body = decision_webhook(
            f"{session.session_id}:video:1",
            status="declined",
            code=9102,
            reasonCode=103,
            reason="Person showing the document does not appear to match document photo",
        )
        for event in await handler.parse(delivery(body)):
            assert await verifier.handle_event(event) is not None
            # Veriff retries deliveries: the same one again is a duplicate
            assert await verifier.handle_event(event) is None
        verdict = await verifier.wait(session.session_id)
        assert verdict.outcome is Outcome.REJECTED
        result = (await verifier.get(session.session_id)).step("video").result
        assert result is not None
        assert result.status is ResultStatus.FAILED
        assert result.signal_names == ("face_mismatch",)
        assert result.facts["reason_code"] == "103"

    async def test_forged_webhook_changes_nothing(
        self,
        handler: VeriffWebhooks,
        veriff_verifier: tuple[Verifier, respx.Router],
    ) -> None:
        """A forged approval is refused before it reaches the session."""
        verifier, _ = veriff_verifier
        session = await verifier.start(applicant())
        await verifier.wait_idle()
        forged = delivery(decision_webhook(f"{session.session_id}:video:1"), secret="x")
        with pytest.raises(WebhookSignatureError):
            await handler.parse(forged)
        stored = await verifier.get(session.session_id)
        assert stored.step("video").state is StepState.WAITING
