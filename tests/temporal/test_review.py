"""The review queue on Temporal: the workflow waits in review, reviewers settle it through the workers' store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import TypeVar

import pytest
from conftest import running_worker
from temporalio.client import Client

from multiverify import (
    Applicant,
    AuditTrail,
    LoanApplication,
    Outcome,
    Policy,
    ReviewEvent,
    ReviewQueue,
    ReviewSettings,
    Rule,
    Session,
    SessionStatus,
    Step,
    Verdict,
    Verifier,
)
from multiverify.exceptions import (
    InvalidInputError,
    NotInReviewError,
    SessionFinishedError,
)
from multiverify.stores import MemoryStore
from multiverify.temporal import TemporalVerifier
from multiverify.testing import Scripted, ScriptedChannel

T = TypeVar("T")


def reviewed_policy(**review: object) -> Policy:
    return Policy(
        name="reviewed",
        version="1",
        steps=[Step(id="bureau", channel="credit_bureau")],
        rules=[
            Rule(
                outcome="review",
                when="'thin_file' in steps.bureau.signals",
                reason="bureau.thin_file",
            )
        ],
        review=ReviewSettings(
            approve_reasons=["identity_confirmed"],
            evidence=[Step(id="video", channel="video_sign", timeout="5m")],
            **review,  # type: ignore[arg-type]
        ),
    )


APPLICANT = Applicant(
    applicant_id="t-1",
    name="Sun Li",
    national_id="110101199003074514",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(amount="1000", currency="CNY", term_months=6, purpose="rent"),
)


def channels() -> list[ScriptedChannel]:
    return [
        ScriptedChannel(
            "credit_bureau", [Scripted.ends("inconclusive", signals=["thin_file"])]
        ),
        ScriptedChannel("video_sign", [Scripted.waits(Scripted.passes(score=0.7))]),
    ]


async def eventually(probe: Callable[[], Awaitable[T | None]]) -> T:
    """Poll until ``probe`` returns something (the workers' store lags the workflow a little)."""
    for _ in range(400):
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


class Desk:
    """A TemporalVerifier, its worker, the workers' store and a review queue over it."""

    def __init__(self, verifier: TemporalVerifier, store: MemoryStore) -> None:
        self.verifier = verifier
        self.store = store
        self.queue = ReviewQueue(verifier, store=store)
        self.events: list[str] = []

    async def queued(self, session_id: str, *, returned: bool = False) -> None:
        async def probe() -> bool | None:
            ids = [case.session_id for case in await self.queue.pending()]
            if session_id not in ids:
                return None
            return True if not returned or "returned" in self.events else None

        await eventually(probe)


@pytest.fixture
async def desk(client: Client) -> AsyncIterator[Desk]:
    store = MemoryStore()
    heard: list[str] = []

    async def on_review(session: Session, event: ReviewEvent) -> None:
        del session
        heard.append(event.kind)

    async with (
        running_worker(client, channels(), store=store, on_review=[on_review]) as queue,
        TemporalVerifier(client, reviewed_policy(), task_queue=queue) as verifier,
    ):
        made = Desk(verifier, store)
        made.events = heard
        yield made


class TestReviewOnTemporal:
    async def test_evidence_then_a_decision(self, desk: Desk) -> None:
        """Queued, evidence collected and back, approved: the verdict names the reviewer."""
        session = await desk.verifier.start(APPLICANT)
        sid = session.session_id
        await desk.queued(sid)
        live = await desk.verifier.get(sid)
        assert live.status is SessionStatus.REVIEW

        case = await desk.queue.claim("alice")
        assert case is not None
        assert case.reason_codes == ("bureau.thin_file",)
        collecting = await desk.queue.request_evidence(sid, "alice", "video")
        assert collecting.collecting
        with pytest.raises(InvalidInputError):
            await desk.verifier.request_evidence(sid, "video", reviewer="alice")
        with pytest.raises(NotInReviewError):
            await desk.verifier.decide_review(
                sid, reviewer="alice", outcome="approved", reason="identity_confirmed"
            )
        await desk.verifier.challenge(sid, "video")
        await desk.verifier.submit(sid, "video", {"signed": True})
        await desk.queued(sid, returned=True)

        verdict = await desk.queue.decide(
            sid, "bob", outcome=Outcome.APPROVED, reason="identity_confirmed"
        )
        assert verdict.outcome is Outcome.APPROVED
        assert verdict.review is not None
        assert verdict.review.reviewer == "bob"
        assert verdict.review.evidence == ("video",)
        assert verdict.automatic is not None
        assert await desk.verifier.wait(sid) == verdict
        assert desk.events[:2] == ["queued", "returned"]

        events = await desk.verifier.audit_events(sid)
        assert AuditTrail.verify(events) == len(events)
        assert events[-1].data["review"]["reviewer"] == "bob"
        await eventually(lambda: _empty(desk))

    async def test_refusals(self, desk: Desk) -> None:
        """Bad decisions are refused by the update's validator with the typed errors."""
        session = await desk.verifier.start(APPLICANT)
        sid = session.session_id
        await desk.queued(sid)
        with pytest.raises(InvalidInputError) as caught:
            await desk.verifier.decide_review(
                sid, reviewer="a", outcome="approved", reason="other"
            )
        assert caught.value.field == "reason"
        with pytest.raises(InvalidInputError):
            await desk.verifier.decide_review(
                sid, reviewer="a", outcome="maybe", reason="identity_confirmed"
            )
        with pytest.raises(InvalidInputError):
            await desk.verifier.request_evidence(sid, "selfie", reviewer="a")
        await desk.verifier.decide_review(
            sid, reviewer="a", outcome="rejected", reason="fraud_suspected"
        )
        with pytest.raises(SessionFinishedError):
            await desk.verifier.decide_review(
                sid, reviewer="a", outcome="approved", reason="identity_confirmed"
            )


async def _empty(desk: Desk) -> bool | None:
    return True if await desk.queue.pending() == [] else None


class TestSlaOnTemporal:
    async def test_escalation_then_fallback(self, client: Client) -> None:
        """Workflow timers carry the SLA: escalated, then the fallback outcome."""
        store = MemoryStore()
        heard: list[str] = []

        async def on_review(session: Session, event: ReviewEvent) -> None:
            del session
            heard.append(event.kind)

        policy = reviewed_policy(sla="1s", fallback_after="2s", fallback="expired")
        async with (
            running_worker(client, channels(), store=store, on_review=[on_review]) as q,
            TemporalVerifier(client, policy, task_queue=q) as verifier,
        ):
            session = await verifier.start(APPLICANT)
            verdict = await verifier.wait(session.session_id)
        assert verdict.outcome is Outcome.EXPIRED
        assert verdict.decided_by == "review_sla"
        assert verdict.review is not None
        assert verdict.review.escalated
        assert heard[:2] == ["queued", "escalated"]


class TestParity:
    async def test_same_verdict_as_the_embedded_runtime(self, desk: Desk) -> None:
        """The same case decided the same way gives the same verdict on both runtimes."""
        embedded = Verifier(reviewed_policy(), channels=channels(), store=MemoryStore())
        local = await embedded.start(APPLICANT)
        await embedded.wait_idle()
        here = await ReviewQueue(embedded).decide(
            local.session_id, "alice", outcome="approved", reason="identity_confirmed"
        )
        await embedded.aclose()

        remote = await desk.verifier.start(APPLICANT)
        await desk.queued(remote.session_id)
        there = await desk.queue.decide(
            remote.session_id, "alice", outcome="approved", reason="identity_confirmed"
        )

        def shape(verdict: Verdict) -> tuple[object, ...]:
            assert verdict.review is not None
            assert verdict.automatic is not None
            return (
                verdict.outcome,
                verdict.reasons,
                verdict.decided_by,
                verdict.review.reviewer,
                verdict.automatic.reasons,
                [step.state for step in verdict.steps],
            )

        assert shape(here) == shape(there)
