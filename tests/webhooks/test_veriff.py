"""Tests for Veriff's webhooks: the HMAC check, parsing, routing, and the whole path to a verdict."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
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
from multiverify._serde import session_to_json
from multiverify.channels import VideoSignChannel
from multiverify.exceptions import WebhookFormatError, WebhookSignatureError
from multiverify.providers import (
    HolderKey,
    Veriff,
    VideoDecision,
    VideoStatus,
    veriff_signature,
)
from multiverify.stores import SessionStore, SqliteStore
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

    async def test_non_ascii_signature(self, handler: VeriffWebhooks) -> None:
        """A signature header with non-ASCII characters is refused, not a crash."""
        request = delivery(decision_webhook())
        forged = WebhookRequest(
            method="POST",
            url=request.url,
            headers={**request.headers, "X-HMAC-SIGNATURE": "0dcab7é"},
            body=request.body,
            received_at=T0,
        )
        with pytest.raises(WebhookSignatureError, match="does not match"):
            await handler.parse(forged)

    async def test_non_ascii_api_key(self, handler: VeriffWebhooks) -> None:
        """An X-AUTH-CLIENT with non-ASCII characters is another integration's."""
        with pytest.raises(WebhookSignatureError, match="another integration"):
            await handler.parse(delivery(decision_webhook(), api_key="kéy-1"))

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


@asynccontextmanager
async def verifier_on_veriff(
    store: SessionStore | None = None, clock: FakeClock | None = None
) -> AsyncIterator[tuple[Verifier, respx.Router]]:
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
        async with Verifier(
            policy,
            channels=[channel],
            clock=clock or FakeClock(),
            **({} if store is None else {"store": store}),
        ) as verifier:
            yield verifier, router


@pytest.fixture
async def veriff_verifier() -> AsyncIterator[tuple[Verifier, respx.Router]]:
    """A Verifier whose video step runs on Veriff, over a respx router."""
    async with verifier_on_veriff() as pair:
        yield pair


# The person on a document that is not the applicant's (Wang Fang, 1990-03-07).
STRANGER = {
    "firstName": "MING",
    "lastName": "SUN",
    "fullName": "SUN MING",
    "idNumber": "650102198807014417",
    "dateOfBirth": "1988-07-01",
}
STRANGER_DOCUMENT = {"number": "E98765432", "type": "PASSPORT", "country": "CN"}
STRANGER_VALUES = ("MING", "SUN", "650102198807014417", "1988-07-01", "E98765432")
OWN = {
    "firstName": "FANG",
    "lastName": "WANG",
    "idNumber": "110101199003072420",
    "dateOfBirth": "1990-03-07",
}


def files_in(directory: Path) -> list[str]:
    """Every file's bytes under ``directory`` (the database and its journal), as text."""
    return [str(path.read_bytes()) for path in directory.iterdir()]


async def decide_by_webhook(
    verifier: Verifier, handler: VeriffWebhooks, **verification: Any
) -> Any:
    """Start a session, deliver a signed decision webhook for it; the video step's result."""
    session = await verifier.start(applicant())
    await verifier.wait_idle()
    body = decision_webhook(f"{session.session_id}:video:1", **verification)
    for event in await handler.parse(delivery(body)):
        await verifier.handle_event(event)
    await verifier.wait(session.session_id)
    return (await verifier.get(session.session_id)).step("video").result


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


class TestDocumentHolder:
    async def test_own_document_passes(
        self,
        handler: VeriffWebhooks,
        veriff_verifier: tuple[Verifier, respx.Router],
    ) -> None:
        """An approval on the applicant's own document passes, with document_holder_match."""
        verifier, _ = veriff_verifier
        result = await decide_by_webhook(verifier, handler, person=OWN)
        assert result.status is ResultStatus.PASSED
        assert result.signal_names == (
            "liveness_passed",
            "face_match",
            "document_holder_match",
        )
        assert result.signals[-1].detail == "name,national_id,date_of_birth"
        assert result.facts["document_holder"] == "match"

    @pytest.mark.parametrize(
        ("person", "fields"),
        [
            ({**OWN, "firstName": "LEI", "lastName": "ZHAO"}, "name"),
            ({**OWN, "idNumber": "440305199606306313"}, "national_id"),
            ({**OWN, "dateOfBirth": "1996-06-30"}, "date_of_birth"),
            (STRANGER, "name,national_id,date_of_birth"),
        ],
    )
    async def test_someone_elses_document_fails(
        self,
        handler: VeriffWebhooks,
        veriff_verifier: tuple[Verifier, respx.Router],
        person: dict[str, str],
        fields: str,
    ) -> None:
        """Veriff approves a face that matches its document, but the document is not the applicant's: failed."""
        verifier, _ = veriff_verifier
        result = await decide_by_webhook(verifier, handler, person=person)
        assert result.status is ResultStatus.FAILED
        assert result.signal_names == (
            "liveness_passed",
            "face_match",
            "document_holder_mismatch",
        )
        assert result.signals[-1].detail == fields
        assert result.facts["document_holder"] == "mismatch"
        assert "the ID document's holder is not the applicant" in result.detail

    @pytest.mark.parametrize(
        "person",
        [None, {"firstName": None, "lastName": None}, {"dateOfBirth": "1990-03-07"}],
    )
    async def test_nothing_to_compare_is_unknown(
        self,
        handler: VeriffWebhooks,
        veriff_verifier: tuple[Verifier, respx.Router],
        person: dict[str, str] | None,
    ) -> None:
        """Without the name or ID number, the approval passes as before, marked document_holder_unknown."""
        verifier, _ = veriff_verifier
        result = await decide_by_webhook(verifier, handler, person=person)
        assert result.status is ResultStatus.PASSED
        assert result.signal_names[-1] == "document_holder_unknown"
        assert result.facts["document_holder"] == "unknown"
        assert result.facts["document_holder_name"] == "not_checked"

    async def test_declines_are_unaffected(
        self,
        handler: VeriffWebhooks,
        veriff_verifier: tuple[Verifier, respx.Router],
    ) -> None:
        """A decline on a stranger's document is the decline it was, with no holder check."""
        verifier, _ = veriff_verifier
        result = await decide_by_webhook(
            verifier,
            handler,
            status="declined",
            code=9102,
            reasonCode=103,
            person=STRANGER,
        )
        assert result.status is ResultStatus.FAILED
        assert result.signal_names == ("face_mismatch",)
        assert "document_holder" not in result.facts

    async def test_webhooks_of_another_integration_compare_nothing(
        self, veriff_verifier: tuple[Verifier, respx.Router]
    ) -> None:
        """Digests made under another secret than the provider's are not compared: unknown."""
        verifier, _ = veriff_verifier
        other = VeriffWebhooks("other-secret")
        session = await verifier.start(applicant())
        await verifier.wait_idle()
        body = decision_webhook(f"{session.session_id}:video:1", person=STRANGER)
        for event in await other.parse(delivery(body, secret="other-secret")):
            assert event.data["holder"]["key_id"] == HolderKey("other-secret").key_id
            await verifier.handle_event(event)
        await verifier.wait(session.session_id)
        result = (await verifier.get(session.session_id)).step("video").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert result.signal_names[-1] == "document_holder_unknown"

    async def test_polled_decision_is_compared(self) -> None:
        """With no webhook, the polled approval of a stranger's document fails the step too."""
        clock = FakeClock()
        async with verifier_on_veriff(clock=clock) as (verifier, router):
            router.get(
                f"https://stationapi.veriff.com/v1/sessions/{SESSION}/decision"
            ).respond(
                200,
                json=decision_webhook(person=STRANGER, document=STRANGER_DOCUMENT),
            )
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            await clock.advance(60)
            verdict = await verifier.wait(session.session_id)
            result = (await verifier.get(session.session_id)).step("video").result
        assert verdict.outcome is Outcome.REJECTED
        assert result is not None
        assert result.status is ResultStatus.FAILED
        assert result.signal_names[-1] == "document_holder_mismatch"

    async def test_no_value_persisted_or_logged(
        self,
        tmp_path: Path,
        handler: VeriffWebhooks,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The stranger's name, numbers and birth date reach no event, store file, audit entry, repr or log."""
        caplog.set_level(logging.DEBUG)
        clock = FakeClock()
        store = SqliteStore(tmp_path / "sessions.db")
        webhook = decision_webhook(person=STRANGER, document=STRANGER_DOCUMENT)
        async with verifier_on_veriff(store=store, clock=clock) as (verifier, router):
            router.get(
                f"https://stationapi.veriff.com/v1/sessions/{SESSION}/decision"
            ).respond(200, json=webhook)
            by_hook = await verifier.start(applicant())
            await verifier.wait_idle()
            body = decision_webhook(
                f"{by_hook.session_id}:video:1",
                person=STRANGER,
                document=STRANGER_DOCUMENT,
            )
            events = await handler.parse(delivery(body))
            for event in events:
                await verifier.handle_event(event)
            await verifier.wait(by_hook.session_id)
            by_poll = await verifier.start(applicant())
            await verifier.wait_idle()
            await clock.advance(60)  # its poll finds the decision
            await verifier.wait(by_poll.session_id)
            kept = [json.dumps(dict(event.data)) + repr(event) for event in events]
            for session_id in (by_poll.session_id, by_hook.session_id):
                session = await verifier.get(session_id)
                result = session.step("video").result
                assert result is not None
                assert result.status is ResultStatus.FAILED
                kept.append(session_to_json(session) + repr(session))
                kept += [
                    event.body + repr(event)
                    for event in await store.audit_events(session_id)
                ]
        kept += files_in(tmp_path)
        kept += [
            record.getMessage() + repr(record.__dict__) for record in caplog.records
        ]
        text = "\n".join(kept)
        for value in STRANGER_VALUES:
            assert value not in text, value
