"""Vendor events on the Temporal runtime: outcomes, duplicates, late callbacks, and the webhook app in front."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import running_worker
from temporalio.client import Client

from multiverify import (
    AuditEvent,
    AuditTrail,
    Policy,
    ResultStatus,
    Session,
    Step,
    StepState,
)
from multiverify.asgi import create_app
from multiverify.channels import ProviderEvent
from multiverify.exceptions import ConfigurationError, SessionFinishedError
from multiverify.providers import veriff_signature
from multiverify.sandbox import get_persona, sandbox_phone_channel, sandbox_vendor
from multiverify.sandbox._voice import CALLBACK_URL
from multiverify.stores import MemoryStore
from multiverify.temporal import TemporalVerifier
from multiverify.testing import Scripted, ScriptedChannel
from multiverify.webhooks import VeriffWebhooks, WebhookResponse

HONEST = get_persona("honest")
SECRET = "veriff-secret"


def two_steps(video_timeout: str | None = None) -> Policy:
    """A video signing and an SMS code, each waiting; no rules."""
    return Policy(
        name="events",
        version="1",
        steps=[
            Step(id="video", channel="video_sign", timeout=video_timeout),
            Step(id="sms", channel="sms_code"),
        ],
    )


def waiting_channels() -> list[ScriptedChannel]:
    return [
        ScriptedChannel("video_sign", [Scripted.waits(Scripted.passes())]),
        ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes())]),
    ]


def decision(session_id: str, key: str = "d-1") -> ProviderEvent:
    return ProviderEvent(
        session_id=session_id,
        step_id="video",
        kind="decision",
        data={"status": "approved"},
        dedupe_key=key,
    )


async def until(
    verifier: TemporalVerifier, session_id: str, step_id: str, state: StepState
) -> Session:
    async with asyncio.timeout(30):
        while True:
            session = await verifier.get(session_id)
            if session.step(step_id).state is state:
                return session
            await asyncio.sleep(0.05)


async def stored(
    store: MemoryStore, session_id: str, done: Callable[[list[AuditEvent]], bool]
) -> None:
    """Wait until the worker's writes to the store's trail satisfy ``done``."""
    async with asyncio.timeout(30):
        while True:
            events = await store.audit_events(session_id)
            if events and done(events):
                return
            await asyncio.sleep(0.05)


class TestOutcomes:
    async def test_applied_then_duplicate(self, client: Client) -> None:
        """handle_event answers the session after the event, then None for its redelivery."""
        async with running_worker(client, waiting_channels()) as task_queue:
            verifier = TemporalVerifier(client, two_steps(), task_queue=task_queue)
            sid = uuid.uuid4().hex
            await verifier.start(HONEST.applicant, session_id=sid)
            await verifier.challenge(sid, "video")
            applied = await verifier.handle_event(decision(sid))
            assert applied is not None
            assert applied.step("video").state is StepState.DONE
            assert await verifier.handle_event(decision(sid)) is None

    async def test_late_event_is_recorded_by_the_workflow(self, client: Client) -> None:
        """A decision after the video step timed out is noted in the trail; the step stays timed out."""
        store = MemoryStore()
        async with running_worker(client, waiting_channels(), store=store) as queue:
            verifier = TemporalVerifier(client, two_steps("1s"), task_queue=queue)
            sid = uuid.uuid4().hex
            await verifier.start(HONEST.applicant, session_id=sid)
            await until(verifier, sid, "video", StepState.DONE)
            assert await verifier.handle_event(decision(sid)) is None
            session = await verifier.get(sid)
            result = session.step("video").result
            assert result is not None
            assert result.status is ResultStatus.TIMEOUT
            trail = await verifier.audit_events(sid)
            late = [e for e in trail if e.kind == "event.late"]
            assert len(late) == 1
            assert late[0].data["status"] == "approved"
            assert "not waiting" in late[0].data["reason"]
            assert AuditTrail.verify(trail) == len(trail)
            await stored(store, sid, lambda events: len(events) >= len(trail))
            assert [e.hash for e in await store.audit_events(sid)] == [
                e.hash for e in trail
            ]

    async def test_late_event_after_the_workflow_completed(
        self, client: Client
    ) -> None:
        """Once the workflow completed, the late event goes to the store's trail, once per delivery."""
        store = MemoryStore()
        policy = Policy(
            name="one",
            version="1",
            steps=[Step(id="video", channel="video_sign", timeout="1s")],
        )
        async with running_worker(client, waiting_channels(), store=store) as queue:
            verifier = TemporalVerifier(client, policy, task_queue=queue, store=store)
            sid = uuid.uuid4().hex
            await verifier.start(HONEST.applicant, session_id=sid)
            await asyncio.wait_for(verifier.wait(sid), timeout=30)
            await stored(store, sid, lambda events: events[-1].kind == "verdict")
            for _ in range(2):
                with pytest.raises(SessionFinishedError):
                    await verifier.handle_event(decision(sid))
            trail = await store.audit_events(sid)
            assert [e.kind for e in trail[-2:]] == ["verdict", "event.late"]
            assert AuditTrail.verify(trail) == len(trail)
            report = await verifier.purge_personal_data(0)
            assert report.purged == (sid,)
            purged, _ = await store.load(sid)
            assert purged.applicant is None
            assert purged.verdict is not None
            trail = await store.audit_events(sid)
            assert trail[-1].kind == "session.purged"
            assert AuditTrail.verify(trail) == len(trail)

    async def test_purge_needs_the_store(self, client: Client) -> None:
        """Without the workers' store there is nothing to purge from."""
        verifier = TemporalVerifier(client, two_steps())
        with pytest.raises(ConfigurationError, match="store"):
            await verifier.purge_personal_data("30d")


class TestTheAppOnTemporal:
    async def test_veriff_decision_through_the_app(self, client: Client) -> None:
        """A signed Veriff decision posted to the app reaches the workflow; a forged one does not."""
        async with running_worker(client, waiting_channels()) as task_queue:
            verifier = TemporalVerifier(client, two_steps(), task_queue=task_queue)
            sid = uuid.uuid4().hex
            await verifier.start(HONEST.applicant, session_id=sid)
            await verifier.challenge(sid, "video")
            app = create_app(verifier, webhooks=[VeriffWebhooks(SECRET)])
            body = json.dumps(
                {
                    "status": "success",
                    "verification": {
                        "id": "v-1",
                        "attemptId": "att-1",
                        "vendorData": f"{sid}:video:1",
                        "status": "approved",
                        "code": 9001,
                    },
                }
            ).encode()
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://app"
            ) as http:
                forged = await http.post(
                    "/webhooks/veriff",
                    headers={"x-hmac-signature": veriff_signature("guess", body)},
                    content=body,
                )
                assert forged.status_code == 403
                response = await http.post(
                    "/webhooks/veriff",
                    headers={"x-hmac-signature": veriff_signature(SECRET, body)},
                    content=body,
                )
                assert response.status_code == 200
                submitted = await http.post(
                    f"/sessions/{sid}/steps/sms/submit", json={"code": "1"}
                )
                assert submitted.status_code == 200
                assert submitted.json()["state"] == "done"
            session = await verifier.get(sid)
            assert session.step("video").state is StepState.DONE

    async def test_a_phone_call_answered_with_twiml_from_the_workflow(
        self, client: Client
    ) -> None:
        """Every Twilio callback of a call goes through the app to the workflow; each answer is the channel's TwiML."""
        channel = sandbox_phone_channel(HONEST, speed=0.01)
        vendor = sandbox_vendor(channel)
        assert vendor is not None
        policy = Policy(
            name="call",
            version="1",
            steps=[
                Step(
                    id="call",
                    channel="phone_call",
                    timeout="5m",
                    # The workflow runs on the server's real time: a window
                    # open around the clock, so the call is placed at once
                    # whenever the test runs (the default window would hold
                    # it from 21:00 to 08:00 in the applicant's zone).
                    options={"calling_window": {"start": "00:00", "end": "24:00"}},
                )
            ],
        )
        parts = urlsplit(CALLBACK_URL)
        async with running_worker(client, [channel]) as task_queue:
            verifier = TemporalVerifier(client, policy, task_queue=task_queue)
            app = create_app(
                verifier,
                webhooks={parts.path: vendor.handler()},
                public_base_url=f"{parts.scheme}://{parts.netloc}",
            )
            answers: list[tuple[str, httpx.Response]] = []
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.9"
            ) as http:

                async def deliver(request: Any) -> WebhookResponse:
                    url = urlsplit(request.url)
                    response = await http.post(
                        f"{url.path}?{url.query}",
                        headers=dict(request.headers),
                        content=request.body,
                    )
                    answers.append((request.url, response))
                    return WebhookResponse(
                        status=response.status_code,
                        content_type=response.headers.get("content-type", ""),
                        body=response.content,
                    )

                vendor._deliver = deliver
                sid = uuid.uuid4().hex
                await verifier.start(HONEST.applicant, session_id=sid)
                await asyncio.wait_for(verifier.wait(sid), timeout=60)
                await vendor.aclose()
            session = await verifier.get(sid)
        result = session.step("call").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        gathers = [r for url, r in answers if "event=gather" in url]
        assert gathers
        assert all(r.status_code == 200 for r in gathers)
        assert all(r.content.startswith(b"<?xml") for r in gathers)
        assert all(b"<Gather" in r.content or b"<Hangup" in r.content for r in gathers)


class Racing(TemporalVerifier):
    """A TemporalVerifier whose outcome update comes only after ``before_update`` ran (the workflow may complete first)."""

    def __init__(self, *args: Any, before_update: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_update = before_update

    def _handle(self, session_id: str) -> Any:
        handle = super()._handle(session_id)
        racing = self

        class Late:
            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)

            async def execute_update(self, update: Any, arg: Any) -> Any:
                await racing.before_update(session_id)
                return await handle.execute_update(update, arg)

        return Late()


class TestWorkflowCompletesFirst:
    async def test_the_applied_event_still_answers_the_session(
        self, client: Client
    ) -> None:
        """The event finished the session and its workflow completed before the outcome was asked: the session is answered."""
        policy = Policy(
            name="one", version="1", steps=[Step(id="video", channel="video_sign")]
        )
        async with running_worker(client, waiting_channels()) as task_queue:
            plain = TemporalVerifier(client, policy, task_queue=task_queue)

            async def completed(session_id: str) -> None:
                await plain.wait(session_id)

            racing = Racing(
                client, policy, task_queue=task_queue, before_update=completed
            )
            sid = uuid.uuid4().hex
            await plain.start(HONEST.applicant, session_id=sid)
            await plain.challenge(sid, "video")
            answered = await racing.handle_event(decision(sid))
            assert answered is not None
            assert answered.step("video").state is StepState.DONE

    async def test_a_duplicate_still_answers_none(self, client: Client) -> None:
        """A redelivery whose workflow completed before the outcome was asked is still None."""
        async with running_worker(client, waiting_channels()) as task_queue:
            plain = TemporalVerifier(client, two_steps(), task_queue=task_queue)

            async def finish(session_id: str) -> None:
                await plain.submit(session_id, "sms", {"code": "1"})
                await plain.wait(session_id)

            racing = Racing(
                client, two_steps(), task_queue=task_queue, before_update=finish
            )
            sid = uuid.uuid4().hex
            await plain.start(HONEST.applicant, session_id=sid)
            await plain.challenge(sid, "video")
            await plain.challenge(sid, "sms")
            assert await plain.handle_event(decision(sid)) is not None
            assert await racing.handle_event(decision(sid)) is None
