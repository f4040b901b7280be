"""The review queue on every store: cases, leases, racing reviewers, evidence and SLA timers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from conftest import (
    POSTGRES_URL,
    REDIS_URL,
    STORES,
    T0,
    delete_redis_prefix,
    drop_postgres_schema,
    service_missing,
)

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
    Verifier,
)
from multiverify.exceptions import (
    ConfigurationError,
    InvalidInputError,
    NotInReviewError,
    ReviewClaimedError,
    SessionFinishedError,
    StoreUnavailableError,
)
from multiverify.stores import (
    MemoryStore,
    PostgresStore,
    RedisStore,
    SessionStore,
    SqliteStore,
)
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

HOUR = 3600.0

POLICY = Policy(
    name="loans",
    version="3",
    steps=[Step(id="bureau", channel="credit_bureau")],
    rules=[
        Rule(
            outcome="approved",
            when="steps.bureau.status == 'passed'",
            reason="bureau.clear",
        ),
        Rule(
            outcome="review",
            when="'thin_file' in steps.bureau.signals",
            reason="bureau.thin_file",
        ),
    ],
    default="review",
    review=ReviewSettings(
        priority=1,
        sla="4h",
        escalate_by=10,
        fallback_after="24h",
        fallback="rejected",
        lease="10m",
        approve_reasons=["identity_confirmed"],
        reject_reasons=["fraud_suspected", "documents_inconsistent"],
        evidence=[Step(id="video", channel="video_sign", timeout="1h")],
    ),
)


def applicant(number: int = 1) -> Applicant:
    return Applicant(
        applicant_id=f"app-{number}",
        name="Wang Fang",
        national_id="110101199003074514",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="20000", currency="CNY", term_months=12, purpose="education"
        ),
    )


def channels() -> list[ScriptedChannel]:
    """A bureau with a thin file (review), and a video sign that waits for its result."""
    return [
        ScriptedChannel(
            "credit_bureau", [Scripted.ends("inconclusive", signals=["thin_file"])]
        ),
        ScriptedChannel("video_sign", [Scripted.waits(Scripted.passes(score=0.9))]),
    ]


class Replica:
    """One app replica: a Verifier and its review queue on a store."""

    def __init__(self, store: SessionStore, clock: FakeClock) -> None:
        self.events: list[ReviewEvent] = []

        async def heard(session: Session, event: ReviewEvent) -> None:
            del session
            self.events.append(event)

        self.verifier = Verifier(
            POLICY,
            channels=channels(),
            store=store,
            clock=clock,
            on_review=[heard],
        )
        self.queue = ReviewQueue(self.verifier)

    async def in_review(self, number: int = 1) -> str:
        session = await self.verifier.start(applicant(number))
        await self.verifier.wait_idle()
        return session.session_id


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def replica(store: SessionStore, clock: FakeClock) -> AsyncIterator[Replica]:
    made = Replica(store, clock)
    yield made
    await made.verifier.aclose()


async def _pair(name: str, tmp_path: Path) -> tuple[SessionStore, SessionStore, str]:
    """Two stores on the same sessions, each with connections of its own."""
    if name == "memory":
        one: SessionStore = MemoryStore()
        return one, one, ""
    if name == "sqlite":
        return SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db"), ""
    if name == "postgres":
        schema = f"mv_review_{uuid4().hex[:12]}"
        first = PostgresStore(POSTGRES_URL, schema=schema)
        try:
            await first.open()
        except StoreUnavailableError as exc:
            service_missing("postgres", str(exc))
        second = PostgresStore(POSTGRES_URL, schema=schema)
        return first, second, schema  # type: ignore[return-value]
    prefix = f"mvreview:{uuid4().hex[:12]}"
    first_redis = RedisStore(REDIS_URL, prefix=prefix)
    try:
        await first_redis.open()
    except StoreUnavailableError as exc:
        service_missing("redis", str(exc))
    return first_redis, RedisStore(REDIS_URL, prefix=prefix), prefix


@pytest.fixture(params=sorted(STORES))
async def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas of an app on one store of each kind."""
    one, two, scratch = await _pair(request.param, tmp_path)
    first, second = Replica(one, clock), Replica(two, clock)
    try:
        yield first, second
    finally:
        await first.verifier.aclose()
        await second.verifier.aclose()
        await one.aclose()
        await two.aclose()
        if request.param == "postgres":
            await drop_postgres_schema(scratch)
        elif request.param == "redis":
            await delete_redis_prefix(scratch)


class TestCases:
    async def test_a_review_verdict_waits_in_the_queue(
        self, replica: Replica, clock: FakeClock
    ) -> None:
        """The session waits in review, its case listed with reasons, evidence and age."""
        session_id = await replica.in_review()
        session = await replica.verifier.get(session_id)
        assert session.status is SessionStatus.REVIEW
        assert not session.finished
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.REVIEW

        await clock.advance(90)
        [case] = await replica.queue.pending()

        assert case.session_id == session_id
        assert case.reason_codes == ("bureau.thin_file",)
        assert case.priority == 1
        assert case.age(clock.now()) == 90
        assert [(s.step_id, s.channel) for s in case.steps] == [
            ("bureau", "credit_bureau")
        ]
        assert case.steps[0].result is not None
        assert case.steps[0].result.signal_names == ("thin_file",)
        assert not case.collecting
        assert [event.kind for event in replica.events] == ["queued"]

    async def test_filters(self, replica: Replica) -> None:
        """Cases filter by policy (name or hash), automatic reason code and priority."""
        await replica.in_review()
        queue = replica.queue
        assert len(await queue.pending(policy="loans")) == 1
        assert len(await queue.pending(policy=POLICY.hash)) == 1
        assert await queue.pending(policy="cards") == []
        assert len(await queue.pending(reason="bureau.thin_file")) == 1
        assert await queue.pending(reason="bureau.no_hit") == []
        assert len(await queue.pending(min_priority=1)) == 1
        assert await queue.pending(min_priority=2) == []
        assert await queue.claim("alice", reason="bureau.no_hit") is None
        assert await queue.claim("alice", policy="loans") is not None

    async def test_highest_priority_then_oldest_first(
        self, replica: Replica, clock: FakeClock
    ) -> None:
        """An escalated case goes before older ones; equal ones go oldest first."""
        first = await replica.in_review(1)
        await clock.advance(2 * HOUR)
        second = await replica.in_review(2)
        await clock.advance(3 * HOUR)  # the first passes its 4h SLA
        await replica.verifier.wait_idle()
        third = await replica.in_review(3)

        cases = await replica.queue.pending()

        assert [c.session_id for c in cases] == [first, second, third]
        assert [c.priority for c in cases] == [11, 1, 1]
        assert cases[0].escalated


class TestClaims:
    async def test_claim_holds_the_case_for_its_lease(
        self, replica: Replica, clock: FakeClock
    ) -> None:
        """A claim holds the case for the policy's lease; a lapsed one frees it for others."""
        session_id = await replica.in_review()
        case = await replica.queue.claim("alice")
        assert case is not None
        assert case.claimed_by == "alice"
        assert case.claimed_until == clock.now() + timedelta(minutes=10)
        assert await replica.queue.claim("bob") is None

        await clock.advance(11 * 60)
        taken = await replica.queue.claim("bob")

        assert taken is not None
        assert taken.session_id == session_id
        assert taken.claimed_by == "bob"
        assert not await replica.queue.extend(session_id, "alice")

    async def test_extend_and_release(self, replica: Replica, clock: FakeClock) -> None:
        """The holder renews or gives back the claim; others cannot."""
        session_id = await replica.in_review()
        await replica.queue.claim("alice", lease=60)
        await clock.advance(50)
        assert await replica.queue.extend(session_id, "alice", lease=120)
        await clock.advance(100)
        assert await replica.queue.claim("bob") is None
        assert not await replica.queue.release(session_id, "bob")
        assert await replica.queue.release(session_id, "alice")
        assert await replica.queue.claim("bob") is not None

    async def test_claim_by_id(self, replica: Replica) -> None:
        """A named case is claimed, or refused with who holds it."""
        session_id = await replica.in_review()
        case = await replica.queue.claim("alice", case_id=session_id)
        assert case is not None
        assert case.claimed_by == "alice"
        again = await replica.queue.claim("alice", case_id=session_id)
        assert again is not None
        with pytest.raises(ReviewClaimedError) as caught:
            await replica.queue.claim("bob", case_id=session_id)
        assert caught.value.claimed_by == "alice"

    async def test_two_replicas_claiming_one_case_one_wins(
        self, replicas: tuple[Replica, Replica]
    ) -> None:
        """Reviewers on two replicas race for one case: exactly one gets it, every round."""
        one, two = replicas
        for round_ in range(4):
            session_id = await one.in_review(round_)
            claims = await asyncio.gather(
                *(
                    (one if n % 2 else two).queue.claim(f"reviewer-{n}")
                    for n in range(6)
                )
            )
            winners = [claim for claim in claims if claim is not None]
            assert len(winners) == 1
            assert winners[0].session_id == session_id
            winner = winners[0].claimed_by
            assert winner is not None
            await one.queue.decide(
                session_id, winner, outcome="approved", reason="identity_confirmed"
            )

    async def test_two_replicas_deciding_one_case_one_wins(
        self, replicas: tuple[Replica, Replica]
    ) -> None:
        """One-shot decisions from two replicas: one verdict, the other reviewer is refused."""
        one, two = replicas
        session_id = await one.in_review()
        results = await asyncio.gather(
            one.queue.decide(
                session_id, "alice", outcome="approved", reason="identity_confirmed"
            ),
            two.queue.decide(
                session_id, "bob", outcome="rejected", reason="fraud_suspected"
            ),
            return_exceptions=True,
        )
        verdicts = [r for r in results if not isinstance(r, BaseException)]
        refusals = [r for r in results if isinstance(r, BaseException)]
        assert len(verdicts) == 1
        assert len(refusals) == 1
        assert isinstance(refusals[0], ReviewClaimedError | SessionFinishedError)
        session = await two.verifier.get(session_id)
        assert session.verdict == verdicts[0]
        assert await two.queue.pending() == []


class TestDecisions:
    async def test_decision_becomes_the_verdict(
        self, replica: Replica, clock: FakeClock, store: SessionStore
    ) -> None:
        """Approve with a reason code: the verdict names the reviewer beside the automatic part."""
        session_id = await replica.in_review()
        await clock.advance(HOUR)
        verdict = await replica.queue.decide(
            session_id,
            "alice",
            outcome=Outcome.APPROVED,
            reason="identity_confirmed",
            note="called the employer",
        )

        assert verdict.outcome is Outcome.APPROVED
        assert verdict.decided_by == "reviewer"
        assert verdict.review is not None
        assert verdict.review.reviewer == "alice"
        assert verdict.review.waited == HOUR
        assert verdict.automatic is not None
        assert verdict.automatic.outcome is Outcome.REVIEW
        assert verdict.automatic.reasons[0].code == "bureau.thin_file"
        explained = verdict.explain()
        assert "Review: approved by alice" in explained
        assert "Automatic verdict, before review:" in explained
        assert "bureau.thin_file" in explained
        assert await replica.verifier.wait(session_id) == verdict
        assert await replica.queue.pending() == []
        assert await store.timers(session_id) == []

    async def test_audit_trail_verifies_and_records_the_reviewer(
        self, replica: Replica, store: SessionStore
    ) -> None:
        """The trail holds the automatic verdict, then who decided what; the note only as a digest."""
        session_id = await replica.in_review()
        await replica.queue.decide(
            session_id,
            "alice",
            outcome="rejected",
            reason="fraud_suspected",
            note="the applicant Wang Fang hung up",
        )
        events = await store.audit_events(session_id)

        assert AuditTrail.verify(events) == len(events)
        kinds = [event.kind for event in events]
        assert "review.queued" in kinds
        assert kinds[-1] == "verdict"
        final = events[-1].data
        assert final["outcome"] == "rejected"
        assert final["review"]["reviewer"] == "alice"
        assert final["review"]["reason"] == "fraud_suspected"
        assert final["review"]["automatic"]["outcome"] == "review"
        assert all("Wang Fang" not in event.body for event in events)
        rebuilt = AuditTrail.replay(POLICY, events)
        assert rebuilt.status is SessionStatus.DECIDED
        assert rebuilt.verdict is not None
        assert rebuilt.verdict.outcome is Outcome.REJECTED
        assert rebuilt.verdict.review is not None
        assert rebuilt.verdict.review.reviewer == "alice"

    async def test_claimed_by_another_is_refused(self, replica: Replica) -> None:
        """A reviewer cannot decide a case another holds; nothing changes."""
        session_id = await replica.in_review()
        await replica.queue.claim("alice")
        with pytest.raises(ReviewClaimedError):
            await replica.queue.decide(
                session_id, "bob", outcome="approved", reason="identity_confirmed"
            )
        session = await replica.verifier.get(session_id)
        assert session.status is SessionStatus.REVIEW

    @pytest.mark.parametrize(
        ("outcome", "reason", "field"),
        [
            ("approved", "fraud_suspected", "reason"),
            ("rejected", "identity_confirmed", "reason"),
            ("review", "identity_confirmed", "outcome"),
            ("maybe", "identity_confirmed", "outcome"),
        ],
    )
    async def test_bad_decisions_are_refused(
        self, replica: Replica, outcome: str, reason: str, field: str
    ) -> None:
        """Outcomes other than approve or reject, and reasons the policy does not allow, are refused."""
        session_id = await replica.in_review()
        with pytest.raises(InvalidInputError) as caught:
            await replica.queue.decide(
                session_id, "alice", outcome=outcome, reason=reason
            )
        assert caught.value.field == field
        assert (await replica.verifier.get(session_id)).status is SessionStatus.REVIEW

    async def test_a_decided_case_cannot_be_decided_again(
        self, replica: Replica
    ) -> None:
        """A second decision finds the session decided."""
        session_id = await replica.in_review()
        await replica.queue.decide(
            session_id, "alice", outcome="approved", reason="identity_confirmed"
        )
        with pytest.raises(SessionFinishedError):
            await replica.queue.decide(
                session_id, "alice", outcome="rejected", reason="fraud_suspected"
            )
        with pytest.raises(SessionFinishedError):
            await replica.verifier.decide_review(
                session_id, reviewer="x", outcome="approved", reason="a"
            )

    async def test_a_session_not_in_review(self, store: SessionStore) -> None:
        """A session still running its steps is not a case."""
        verifier = Verifier(
            POLICY,
            channels=[
                ScriptedChannel("credit_bureau", [Scripted.waits(Scripted.passes())]),
                ScriptedChannel("video_sign", [Scripted.passes()]),
            ],
            store=store,
            clock=FakeClock(T0),
        )
        session = await verifier.start(applicant())
        await verifier.wait_idle()
        queue = ReviewQueue(verifier)
        with pytest.raises(NotInReviewError):
            await queue.case(session.session_id)
        with pytest.raises(NotInReviewError):
            await queue.decide(
                session.session_id, "a", outcome="approved", reason="identity_confirmed"
            )
        await verifier.aclose()


class TestEvidence:
    async def test_evidence_leaves_the_queue_and_returns(
        self, replica: Replica
    ) -> None:
        """A requested video sign runs; the case is out of the queue until its result is in."""
        session_id = await replica.in_review()
        await replica.queue.claim("alice")
        case = await replica.queue.request_evidence(
            session_id, "alice", "video", note="unsure about the face"
        )
        await replica.verifier.wait_idle()
        assert case.collecting
        assert case.evidence == ("video",)
        assert await replica.queue.pending() == []
        with pytest.raises(NotInReviewError):
            await replica.queue.decide(
                session_id, "alice", outcome="approved", reason="identity_confirmed"
            )

        await replica.verifier.submit(session_id, "video", {"decision": "approved"})
        await replica.verifier.wait_idle()

        [back] = await replica.queue.pending()
        assert back.session_id == session_id
        assert back.claimed_by is None
        video = back.steps[-1]
        assert (video.step_id, video.channel) == ("video", "video_sign")
        assert video.result is not None
        assert video.result.score == 0.9
        assert [event.kind for event in replica.events] == ["queued", "returned"]
        verdict = await replica.queue.decide(
            session_id, "bob", outcome="approved", reason="identity_confirmed"
        )
        assert verdict.review is not None
        assert verdict.review.evidence == ("video",)
        assert "evidence asked for: video" in verdict.explain()

    async def test_evidence_that_times_out_still_returns(
        self, replica: Replica, clock: FakeClock
    ) -> None:
        """An evidence step that times out brings the case back with its timeout."""
        session_id = await replica.in_review()
        await replica.queue.request_evidence(session_id, "alice", "video")
        await replica.verifier.wait_idle()
        await clock.advance(HOUR + 1)
        await replica.verifier.wait_idle()
        [case] = await replica.queue.pending()
        assert case.steps[-1].result is not None
        assert case.steps[-1].result.status.value == "timeout"

    async def test_unknown_or_running_evidence_is_refused(
        self, replica: Replica
    ) -> None:
        """Only the policy's evidence steps, one run at a time."""
        session_id = await replica.in_review()
        with pytest.raises(InvalidInputError, match="offers no evidence step"):
            await replica.queue.request_evidence(session_id, "alice", "selfie")
        await replica.queue.request_evidence(session_id, "alice", "video")
        await replica.verifier.wait_idle()
        with pytest.raises(InvalidInputError, match="already"):
            await replica.verifier.request_evidence(
                session_id, "video", reviewer="alice"
            )


class TestSla:
    async def test_escalates_then_falls_back(
        self, replica: Replica, clock: FakeClock, store: SessionStore
    ) -> None:
        """Past the SLA the case escalates (priority up, an event); past the limit it takes the fallback."""
        session_id = await replica.in_review()
        assert sorted(t.timer_id for t in await store.timers(session_id)) == [
            "review:escalate",
            "review:fallback",
        ]

        await clock.advance(4 * HOUR)
        await replica.verifier.wait_idle()
        [case] = await replica.queue.pending()
        assert case.escalated
        assert case.priority == 11
        assert replica.events[-1] == ReviewEvent(
            kind="escalated", at=clock.now(), priority=11
        )

        await clock.advance(20 * HOUR)
        await replica.verifier.wait_idle()
        verdict = await replica.verifier.wait(session_id)

        assert verdict.outcome is Outcome.REJECTED
        assert verdict.decided_by == "review_sla"
        assert verdict.review is not None
        assert verdict.review.reviewer is None
        assert verdict.review.reason == "review.sla_expired"
        assert verdict.review.escalated
        assert await replica.queue.pending() == []
        assert await store.timers(session_id) == []

    async def test_sla_timers_survive_a_restart(
        self, store: SessionStore, clock: FakeClock
    ) -> None:
        """The SLA timers are durable: a replica started later fires them."""
        first = Replica(store, clock)
        session_id = await first.in_review()
        await first.verifier.aclose()

        await clock.advance(25 * HOUR)
        second = Replica(store, clock)
        assert await second.verifier.fire_due_timers() == 2
        await second.verifier.wait_idle()
        session = await second.verifier.get(session_id)
        assert session.verdict is not None
        assert session.verdict.decided_by == "review_sla"
        assert [event.kind for event in second.events] == ["escalated"]
        await second.verifier.aclose()


class TestReviewOnlyReplica:
    async def test_decides_without_channels(
        self, replica: Replica, store: SessionStore
    ) -> None:
        """A Verifier without channels reads and decides, and refuses to start sessions."""
        session_id = await replica.in_review()
        desk = Verifier(POLICY, store=store, clock=FakeClock(T0))
        queue = ReviewQueue(desk)
        with pytest.raises(ConfigurationError, match="no channels"):
            await desk.start(applicant())
        with pytest.raises(ConfigurationError, match="no channel 'video_sign'"):
            await queue.request_evidence(session_id, "alice", "video")
        verdict = await queue.decide(
            session_id, "alice", outcome="approved", reason="identity_confirmed"
        )
        assert verdict.outcome is Outcome.APPROVED
        await desk.aclose()

    async def test_a_store_only_queue_reads_but_cannot_decide(
        self, replica: Replica, store: SessionStore
    ) -> None:
        """Given only a store, the queue lists and claims; deciding needs a Verifier."""
        session_id = await replica.in_review()
        reader = ReviewQueue(store=store, clock=FakeClock(T0))
        [case] = await reader.pending()
        assert case.session_id == session_id
        assert await reader.claim("alice") is not None
        with pytest.raises(ConfigurationError, match="give it a Verifier"):
            await reader.decide(
                session_id, "alice", outcome="approved", reason="identity_confirmed"
            )
        with pytest.raises(ConfigurationError):
            ReviewQueue()
        assert "review" in repr(reader)


class TestCrashes:
    async def test_a_queue_write_lost_in_a_crash_is_resumed(
        self, store: SessionStore, clock: FakeClock
    ) -> None:
        """The case entered review but its enqueue failed: a restarted replica queues it."""

        class Flaky:
            """The store, except that enqueueing fails (the replica dies there)."""

            def __init__(self, inner: SessionStore) -> None:
                self._inner = inner

            def __getattr__(self, name: str) -> object:
                return getattr(self._inner, name)

            async def enqueue(self, *args: object, **kwargs: object) -> bool:
                raise StoreUnavailableError(message="gone", store="test")

        crashed = Replica(Flaky(store), clock)  # type: ignore[arg-type]
        session_id = await crashed.in_review()
        await crashed.verifier.aclose()
        assert await store.queue_items("review") == []
        assert (await store.load(session_id))[0].status is SessionStatus.REVIEW

        restarted = Replica(store, clock)
        assert await restarted.verifier.resume() >= 1
        await restarted.verifier.wait_idle()

        [case] = await restarted.queue.pending()
        assert case.session_id == session_id
        assert [event.kind for event in restarted.events] == ["queued"]
        await restarted.verifier.aclose()

    async def test_two_replicas_firing_the_sla_escalate_once(
        self, replicas: tuple[Replica, Replica], clock: FakeClock
    ) -> None:
        """Both replicas see the SLA timer due: the case escalates once."""
        one, two = replicas
        session_id = await one.in_review()
        await one.verifier.aclose()  # its in-process timers go with it
        three = Replica(one.verifier.store, clock)  # a fresh replica on that store
        await clock.advance(4 * HOUR + 1)
        fired = await asyncio.gather(
            two.verifier.fire_due_timers(), three.verifier.fire_due_timers()
        )
        await two.verifier.wait_idle()
        await three.verifier.wait_idle()
        assert sum(fired) >= 1
        [case] = await two.queue.pending()
        assert case.session_id == session_id
        assert case.priority == 11
        assert [e.kind for e in [*two.events, *three.events]] == ["escalated"]
        await three.verifier.aclose()


async def test_a_lapsed_claim_shows_no_holder(
    replica: Replica, clock: FakeClock
) -> None:
    """Once a lease lapses the case shows unclaimed, though nobody took it over."""
    session_id = await replica.in_review()
    await replica.queue.claim("alice", lease=60)
    await clock.advance(61)
    case = await replica.queue.case(session_id)
    assert case.claimed_by is None
    assert case.claimed_until is None
    assert not case.claimed(clock.now())


async def test_a_failing_review_hook_is_logged(
    store: SessionStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises is logged; the case is queued all the same."""

    async def broken(session: Session, event: ReviewEvent) -> None:
        raise RuntimeError("the app's pager is down")

    verifier = Verifier(
        POLICY, channels=channels(), store=store, clock=clock, on_review=[broken]
    )
    session = await verifier.start(applicant())
    await verifier.wait_idle()
    assert [c.session_id for c in await ReviewQueue(verifier).pending()] == [
        session.session_id
    ]
    assert "on_review hook failed" in caplog.text
    await verifier.aclose()


async def test_a_replica_stopped_in_a_review_hook_leaves_the_case_to_announce_again(
    store: SessionStore, clock: FakeClock
) -> None:
    """A queued case is announced at least once: stopped in its hook, the next replica announces it again."""
    entered = asyncio.Event()

    async def stuck(session: Session, event: ReviewEvent) -> None:
        entered.set()
        await asyncio.Event().wait()  # the replica stops here

    first = Verifier(
        POLICY, channels=channels(), store=store, clock=clock, on_review=[stuck]
    )
    session = await first.start(applicant())
    await entered.wait()
    await first.aclose()
    [pending] = await store.pending_effects(session.session_id)
    assert type(pending.effect).__name__ == "QueueReview"

    second = Replica(store, clock)
    try:
        await second.verifier.resume()
        await second.verifier.wait_idle()
        assert [event.kind for event in second.events] == ["queued"]
        assert await store.pending_effects(session.session_id) == []
        queued = await ReviewQueue(second.verifier).pending()
        assert [case.session_id for case in queued] == [session.session_id]
    finally:
        await second.verifier.aclose()
