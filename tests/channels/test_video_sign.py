"""Tests for the video-signing channel, run by the Verifier on a FakeClock with fake vendors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiverify import (
    Applicant,
    AuditTrail,
    Fallback,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    RetrySettings,
    Rule,
    Session,
    Step,
    StepState,
    Verifier,
)
from multiverify.channels import (
    Finished,
    ProviderEvent,
    StepContext,
    Submission,
    TimerDue,
    VideoSignChannel,
    VideoSignState,
    Waiting,
)
from multiverify.exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
    SessionFinishedError,
    StepNotWaitingError,
)
from multiverify.providers import DocumentHolder, HolderKey, VideoDecision, VideoStatus
from multiverify.stores import MemoryStore, SqliteStore
from multiverify.testing import FakeClock, FakeVideoProvider, Scripted, ScriptedChannel


def applicant(locale: str = "zh-CN") -> Applicant:
    """An applicant borrowing 8,000 CNY over 12 months."""
    return Applicant(
        applicant_id="a-42",
        name="Wang Fang",
        national_id="110101199003072420",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        locale=locale,
        loan=LoanApplication(
            amount=Decimal(8000), currency="CNY", term_months=12, purpose="laptop"
        ),
    )


def policy(
    providers: Sequence[str] = ("fake-video",),
    *,
    options: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Policy:
    """One video step; approved when it passes, rejected otherwise."""
    return Policy(
        name="video-only",
        version="1",
        steps=[
            Step(
                id="video",
                channel="video_sign",
                providers=tuple(providers),
                options=dict(options or {}),
                timeout=timeout,
                retry=RetrySettings(attempts=1),
            )
        ],
        rules=[
            Rule(
                outcome="approved",
                when="steps.video.status == 'passed'",
                reason="video.passed",
            )
        ],
        default="rejected",
    )


def decision(
    provider: FakeVideoProvider,
    status: VideoStatus = VideoStatus.APPROVED,
    *,
    number: int = 1,
    **fields: Any,
) -> VideoDecision:
    """A decision on the provider's ``number``-th session."""
    defaults: dict[str, Any] = {}
    if status is VideoStatus.APPROVED:
        defaults = {"liveness": True, "face_match": True, "face_match_score": 0.91}
    defaults.update(fields)
    return VideoDecision(
        provider=provider.name,
        session_id=provider.session_id(number),
        status=status,
        **defaults,
    )


def event(session: Session, made: VideoDecision, *, attempt: int = 1) -> ProviderEvent:
    """The decision as the webhook handler routes it."""
    return ProviderEvent(
        session_id=session.session_id,
        step_id="video",
        kind="decision",
        data=made.to_data(),
        dedupe_key=f"{made.session_id}:{made.attempt_id}:{made.status.value}",
        attempt=attempt,
    )


@attrs.define
class Run:
    """A verifier on a fake clock with one fake vendor, and its started session."""

    verifier: Verifier
    clock: FakeClock
    vendor: FakeVideoProvider
    session: Session

    async def settle(self) -> Session:
        await self.verifier.wait_idle()
        return await self.verifier.get(self.session.session_id)

    async def advance(self, seconds: float) -> Session:
        await self.clock.advance(seconds)
        return await self.settle()


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    """A started session waiting on the fake vendor's first session."""
    clock = FakeClock()
    vendor = FakeVideoProvider()
    async with Verifier(
        policy(), channels=[VideoSignChannel([vendor])], clock=clock
    ) as verifier:
        session = await verifier.start(applicant())
        await verifier.wait_idle()
        yield Run(verifier, clock, vendor, await verifier.get(session.session_id))


class TestStart:
    async def test_challenge(self, run: Run) -> None:
        """The challenge carries the vendor's link, its expiry and the statement."""
        challenge = await run.verifier.challenge(run.session.session_id, "video")
        assert challenge.kind == "video_session"
        assert challenge.url == "https://video.fake.invalid/fake-video/1"
        assert challenge.expires_at == run.clock.now() + timedelta(minutes=30)
        assert challenge.message.startswith("本人确认申请借款¥8,000.00")
        (request,) = run.vendor.requests
        assert request.reference == f"{run.session.session_id}:video:1"
        assert request.statement == challenge.message
        assert request.locale == "zh-CN"
        assert request.applicant_id == "a-42"
        assert "Wang" not in repr(request)

    async def test_timers(self, run: Run) -> None:
        """The expiry and the first poll are durable channel timers."""
        timers = {t.timer_id: t.due_at for t in await run.verifier.store.timers()}
        now = run.clock.now()
        assert timers == {
            "step:video:1:channel:expiry": now + timedelta(minutes=30),
            "step:video:1:channel:poll-1": now + timedelta(seconds=60),
        }

    async def test_lifetime_is_capped_by_the_vendor(self) -> None:
        """A link never outlives what the vendor allows; options override defaults."""
        clock = FakeClock()
        vendor = FakeVideoProvider(max_lifetime=600)
        channel = VideoSignChannel([vendor], poll_interval=timedelta(minutes=20))
        async with Verifier(
            policy(options={"expires_in": "1h", "locale": "en"}),
            channels=[channel],
            clock=clock,
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            challenge = await verifier.challenge(session.session_id, "video")
            assert challenge.expires_at == clock.now() + timedelta(minutes=10)
            assert challenge.message.startswith(
                "I confirm that I am borrowing CN¥8,000.00"
            )
            # the first poll would come after the expiry: none is scheduled
            assert [t.timer_id for t in await verifier.store.timers()] == [
                "step:video:1:channel:expiry"
            ]

    async def test_failover_to_the_next_provider(self) -> None:
        """A vendor refusing to open a session hands the step to the next one."""
        clock = FakeClock()
        first, second = FakeVideoProvider("first"), FakeVideoProvider("second")
        first.fail(ProviderRejectedError(message="rule disabled", provider="first"))
        async with Verifier(
            policy(["first", "second"]),
            channels=[VideoSignChannel([first, second])],
            clock=clock,
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            stored = await verifier.get(session.session_id)
            record = stored.step("video")
            assert record.state is StepState.WAITING
            assert record.attempt == 2
            assert record.challenge is not None
            assert record.challenge.url == "https://video.fake.invalid/second/1"
            assert "rule disabled" in record.errors[0]

    async def test_vendor_failure_mid_attempt_falls_back_to_another_vendor(
        self,
    ) -> None:
        """A vendor that fails after the link was handed out ends its step as ``error``; the policy's fallback opens one at the next vendor."""
        clock = FakeClock()
        first, second = FakeVideoProvider("first"), FakeVideoProvider("second")
        two_vendors = attrs.evolve(
            policy(),
            steps=[
                attrs.evolve(
                    policy(["first"]).steps[0],
                    fallback=Fallback(step="video2", on=["error"]),
                ),
                attrs.evolve(policy(["second"]).steps[0], id="video2"),
            ],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.video2.status == 'passed'",
                    reason="video.passed",
                )
            ],
        )
        async with Verifier(
            two_vendors, channels=[VideoSignChannel([first, second])], clock=clock
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            first.fail(
                ProviderError(message="ended on its own failure", provider="first")
            )
            await clock.advance(60)
            await verifier.wait_idle()
            stored = await verifier.get(session.session_id)
            failed = stored.step("video").result
            assert failed is not None
            assert failed.status is ResultStatus.ERROR
            fallback = stored.step("video2")
            assert fallback.state is StepState.WAITING
            assert fallback.challenge is not None
            assert fallback.challenge.url == "https://video.fake.invalid/second/1"

    async def test_retried_start_reuses_the_session(self) -> None:
        """A start repeated for the same attempt reuses the session kept in the store."""
        clock = FakeClock()
        vendor = FakeVideoProvider()
        channel = VideoSignChannel([vendor])
        store = MemoryStore()
        context = step_context(clock, store)
        first = await channel.start(context)
        again = await channel.start(context)
        assert isinstance(first, Waiting)
        assert isinstance(again, Waiting)
        assert len(vendor.requests) == 1
        assert first.state == again.state

    async def test_without_shared_state_every_start_creates(self) -> None:
        """Without a shared store there is nothing to reuse."""
        clock = FakeClock()
        vendor = FakeVideoProvider()
        channel = VideoSignChannel([vendor])
        context = step_context(clock, None)
        await channel.start(context)
        await channel.start(context)
        assert len(vendor.requests) == 2

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"expires_in": "soon"}, "expires_in"),
            ({"expires_in": 0}, "expires_in must be positive"),
            ({"max_resubmissions": -1}, "max_resubmissions"),
            ({"max_resubmissions": True}, "max_resubmissions"),
            ({"locale": 5}, "locale"),
        ],
    )
    async def test_bad_options(self, options: dict[str, Any], match: str) -> None:
        """Invalid step options are a ConfigurationError naming the option."""
        channel = VideoSignChannel([FakeVideoProvider()])
        with pytest.raises(ConfigurationError, match=match):
            await channel.start(step_context(FakeClock(), None, options=options))

    async def test_unknown_provider(self) -> None:
        """A step naming a provider the channel lacks is a ConfigurationError."""
        channel = VideoSignChannel([FakeVideoProvider()])
        with pytest.raises(ConfigurationError, match="'other'"):
            await channel.start(step_context(FakeClock(), None, provider="other"))


def step_context(
    clock: FakeClock,
    store: MemoryStore | None,
    *,
    provider: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> StepContext:
    """Attempt 1 of step ``video`` of session ``s1``."""
    return StepContext(
        session_id="s1",
        step_id="video",
        attempt=1,
        provider=provider,
        idempotency_key="s1:video:1",
        applicant=applicant(),
        options=dict(options or {}),
        clock=clock,
        shared=store,
    )


class TestConstruction:
    def test_needs_a_provider(self) -> None:
        """No providers, or two with one name, is a wiring mistake."""
        with pytest.raises(ConfigurationError, match="needs a provider"):
            VideoSignChannel([])
        with pytest.raises(ConfigurationError, match="two video providers"):
            VideoSignChannel([FakeVideoProvider(), FakeVideoProvider()])

    @pytest.mark.parametrize(
        "settings_",
        [{"expires_in": 0}, {"poll_interval": -1}, {"max_resubmissions": -1}],
    )
    def test_bad_settings(self, settings_: dict[str, Any]) -> None:
        """Durations must be positive and the resubmission limit not negative."""
        with pytest.raises(ConfigurationError):
            VideoSignChannel([FakeVideoProvider()], **settings_)

    def test_describes_itself(self) -> None:
        """Spec, state type, providers and repr."""
        channel = VideoSignChannel([FakeVideoProvider("a"), FakeVideoProvider("b")])
        assert channel.spec.name == "video_sign"
        assert channel.state_type is VideoSignState
        assert channel.providers == ("a", "b")
        assert repr(channel) == "<multiverify.channels.VideoSignChannel(a, b)>"


class TestDecisions:
    async def test_holder_without_a_key_is_unknown(self, run: Run) -> None:
        """A holder from a provider with no holder key cannot be compared: the approval passes, unknown."""
        holder = DocumentHolder.read(
            HolderKey("secret"), given_name="MING", family_name="SUN"
        )
        made = decision(run.vendor, holder=holder)
        await run.verifier.handle_event(event(run.session, made))
        await run.verifier.wait(run.session.session_id)
        result = (await run.settle()).step("video").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert result.signal_names == (
            "liveness_passed",
            "face_match",
            "document_holder_unknown",
        )
        assert result.facts["document_holder"] == "unknown"

    async def test_webhook_approval(self, run: Run) -> None:
        """An approval passes with the checks as signals, the score and the evidence."""
        made = decision(run.vendor, media=("fake:media:1",), attempt_id="att-1")
        await run.verifier.handle_event(event(run.session, made))
        verdict = await run.verifier.wait(run.session.session_id)
        assert verdict.outcome is Outcome.APPROVED
        result = (await run.settle()).step("video").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert result.signal_names == ("liveness_passed", "face_match")
        assert result.score == 0.91
        assert result.provider == "fake-video"
        kinds = {e.kind: e.reference for e in result.evidence}
        assert kinds["video_session"] == "fake-video:fake-video-1"
        assert kinds["media"] == "fake:media:1"
        assert kinds["statement"].startswith("sha256:")
        assert result.facts["decision"] == "approved"
        # the timers of the attempt were cancelled
        assert await run.verifier.store.timers() == []

    @pytest.mark.parametrize(
        ("status", "fields", "expected", "signals"),
        [
            (
                VideoStatus.DECLINED,
                {"face_match": False, "reason_code": "103"},
                ResultStatus.FAILED,
                ("face_mismatch",),
            ),
            (
                VideoStatus.DECLINED,
                {"liveness": False, "reason_code": "504"},
                ResultStatus.FAILED,
                ("liveness_failed",),
            ),
            (
                VideoStatus.DECLINED,
                {"document_valid": False},
                ResultStatus.FAILED,
                ("document_invalid",),
            ),
            (VideoStatus.EXPIRED, {}, ResultStatus.TIMEOUT, ()),
            (VideoStatus.ABANDONED, {}, ResultStatus.INCONCLUSIVE, ("abandoned",)),
            (VideoStatus.REVIEW, {}, ResultStatus.INCONCLUSIVE, ()),
            (
                VideoStatus.APPROVED,
                {"statement_confirmed": True},
                ResultStatus.PASSED,
                ("liveness_passed", "face_match", "statement_confirmed"),
            ),
        ],
    )
    async def test_statuses(
        self,
        run: Run,
        status: VideoStatus,
        fields: dict[str, Any],
        expected: ResultStatus,
        signals: tuple[str, ...],
    ) -> None:
        """Each vendor status ends the step with its result status and signals."""
        await run.verifier.handle_event(
            event(run.session, decision(run.vendor, status, **fields))
        )
        result = (await run.settle()).step("video").result
        assert result is not None
        assert result.status is expected
        assert result.signal_names == signals

    async def test_vendor_review_routes_to_review(self) -> None:
        """A policy tells Veriff's ``review`` from other inconclusive ends by ``facts.decision``."""
        clock = FakeClock()
        vendor = FakeVideoProvider()
        routed = attrs.evolve(
            policy(),
            rules=[
                *policy().rules,
                Rule(
                    outcome="review",
                    when="steps.video.facts.decision == 'review'",
                    reason="video.vendor_review",
                ),
            ],
        )
        async with Verifier(
            routed, channels=[VideoSignChannel([vendor])], clock=clock
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            await verifier.handle_event(
                event(session, decision(vendor, VideoStatus.REVIEW, code="9121"))
            )
            verdict = await verifier.wait(session.session_id)
            assert verdict.outcome is Outcome.REVIEW
            assert [r.code for r in verdict.reasons] == ["video.vendor_review"]

    async def test_decision_by_polling(self, run: Run) -> None:
        """Without a webhook the poll timers find the decision, with growing gaps."""
        session = await run.advance(60)
        assert run.vendor.fetches == ["fake-video-1"]
        assert session.step("video").state is StepState.WAITING
        timers = {t.timer_id: t.due_at for t in await run.verifier.store.timers()}
        assert timers["step:video:1:channel:poll-2"] == run.clock.now() + timedelta(
            seconds=120
        )
        run.vendor.decide("fake-video-1", decision(run.vendor))
        session = await run.advance(120)
        assert run.vendor.fetches == ["fake-video-1", "fake-video-1"]
        result = session.step("video").result
        assert result is not None
        assert result.status is ResultStatus.PASSED

    async def test_transient_poll_error_polls_again(self, run: Run) -> None:
        """A retryable vendor error while polling just waits for the next poll."""
        run.vendor.fail(ProviderUnavailableError(message="down", provider="fake-video"))
        session = await run.advance(60)
        assert session.step("video").state is StepState.WAITING
        assert session.step("video").channel_state["poll_errors"] == 1

    async def test_permanent_poll_error_ends_the_step(self, run: Run) -> None:
        """A permanent vendor error while polling ends the step as ``error``, not the session."""
        run.vendor.fail(ProviderRejectedError(message="gone", provider="fake-video"))
        session = await run.advance(60)
        result = session.step("video").result
        assert result is not None
        assert result.status is ResultStatus.ERROR
        assert "gone" in result.detail
        verdict = await run.verifier.wait(run.session.session_id)
        assert verdict.outcome is Outcome.REJECTED

    async def test_a_poll_error_quoting_the_applicant_is_masked(self, run: Run) -> None:
        """A vendor error that quotes the applicant's ID number reaches the result masked."""
        national_id = run.session.applicant.national_id
        run.vendor.fail(
            ProviderRejectedError(
                message=f"no session for {national_id}", provider="fake-video"
            )
        )
        session = await run.advance(60)
        result = session.step("video").result
        assert result is not None
        assert national_id not in result.detail
        assert national_id[-4:] in result.detail

    async def test_malformed_event_ends_the_step(self, run: Run) -> None:
        """A decision event that does not parse ends the step as ``error``."""
        bad = ProviderEvent(
            session_id=run.session.session_id,
            step_id="video",
            kind="decision",
            data={"provider": "fake-video", "status": "approved"},
            attempt=1,
        )
        await run.verifier.handle_event(bad)
        result = (await run.settle()).step("video").result
        assert result is not None
        assert result.status is ResultStatus.ERROR
        assert "session_id" in result.detail

    async def test_stray_session_is_ignored(self, run: Run) -> None:
        """A decision on another session of the attempt is noted, never applied."""
        stray = decision(run.vendor, number=7)
        await run.verifier.handle_event(event(run.session, stray))
        record = (await run.settle()).step("video")
        assert record.state is StepState.WAITING
        assert record.channel_state["stray"] == ["fake-video:fake-video-7"]

    async def test_progress_events(self, run: Run) -> None:
        """Vendor progress (started, submitted) is kept; others' progress is not."""
        for session_id, action in (
            ("fake-video-1", "started"),
            ("fake-video-9", "submitted"),
        ):
            await run.verifier.handle_event(
                ProviderEvent(
                    session_id=run.session.session_id,
                    step_id="video",
                    kind="progress",
                    data={"session_id": session_id, "action": action},
                    attempt=1,
                )
            )
        record = (await run.settle()).step("video")
        assert record.channel_state["progress"] == ["started"]

    async def test_submissions_are_refused(self, run: Run) -> None:
        """The app cannot submit a result for a video step."""
        with pytest.raises(InvalidInputError, match="takes no submissions"):
            await run.verifier.submit(run.session.session_id, "video", {"ok": True})


class TestResubmission:
    async def test_up_to_the_limit(self) -> None:
        """Resubmissions keep the step waiting; one more than allowed ends it."""
        clock = FakeClock()
        vendor = FakeVideoProvider()
        async with Verifier(
            policy(options={"max_resubmissions": 1}),
            channels=[VideoSignChannel([vendor])],
            clock=clock,
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            again = decision(
                vendor,
                VideoStatus.RESUBMISSION_REQUESTED,
                attempt_id="att-1",
                reason_code="202",
                reason="Face not clearly visible",
            )
            await verifier.handle_event(event(session, again))
            # a redelivery with a new key but the same attempt does not count twice
            await verifier.handle_event(
                attrs.evolve(event(session, again), dedupe_key="other")
            )
            await verifier.wait_idle()
            record = (await verifier.get(session.session_id)).step("video")
            assert record.state is StepState.WAITING
            assert record.channel_state["resubmissions"] == ["att-1"]
            await verifier.handle_event(
                event(session, attrs.evolve(again, attempt_id="att-2"))
            )
            await verifier.wait_idle()
            result = (await verifier.get(session.session_id)).step("video").result
            assert result is not None
            assert result.status is ResultStatus.INCONCLUSIVE
            assert result.signal_names == ("resubmission_requested",)
            assert "resubmission limit of 1 reached" in result.detail
            assert result.facts["resubmissions"] == 2

    async def test_then_approved(self, run: Run) -> None:
        """After a resubmission the applicant's next try can pass."""
        await run.verifier.handle_event(
            event(
                run.session,
                decision(
                    run.vendor, VideoStatus.RESUBMISSION_REQUESTED, attempt_id="a1"
                ),
            )
        )
        await run.verifier.handle_event(
            event(run.session, decision(run.vendor, attempt_id="a2"))
        )
        result = (await run.settle()).step("video").result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert result.facts["resubmissions"] == 1


class TestExpiry:
    async def test_expires_without_decision(self, run: Run) -> None:
        """At the link's expiry, after a last look at the vendor, the step times out."""
        await run.verifier.handle_event(
            ProviderEvent(
                session_id=run.session.session_id,
                step_id="video",
                kind="progress",
                data={"session_id": "fake-video-1", "action": "started"},
                attempt=1,
            )
        )
        session = await run.advance(30 * 60)
        result = session.step("video").result
        assert result is not None
        assert result.status is ResultStatus.TIMEOUT
        assert result.signal_names == ("abandoned",)
        assert "expired" in result.detail
        assert run.vendor.fetches[-1] == "fake-video-1"

    async def test_last_look_finds_the_decision(self, run: Run) -> None:
        """A decision whose webhook was lost is still found at the expiry."""
        run.vendor.fail(*[ProviderUnavailableError(message="x", provider="f")] * 5)
        await run.advance(29 * 60)
        run.vendor.decide("fake-video-1", decision(run.vendor))
        session = await run.advance(60)
        result = session.step("video").result
        assert result is not None
        assert result.status is ResultStatus.PASSED

    async def test_expiry_during_resubmission(self, run: Run) -> None:
        """An attempt still asked to resubmit at the expiry ends there."""
        run.vendor.decide(
            "fake-video-1",
            decision(run.vendor, VideoStatus.RESUBMISSION_REQUESTED, attempt_id="a1"),
        )
        session = await run.advance(60)
        assert session.step("video").state is StepState.WAITING
        session = await run.advance(30 * 60)
        result = session.step("video").result
        assert result is not None
        assert result.status is ResultStatus.INCONCLUSIVE
        assert "expired awaiting a resubmission" in result.detail

    async def test_failed_last_look(self, run: Run) -> None:
        """A vendor error at the last look still ends the attempt, saying so."""
        run.vendor.decide(
            "fake-video-1",
            decision(run.vendor, VideoStatus.RESUBMISSION_REQUESTED, attempt_id="a1"),
        )
        await run.advance(60)
        run.vendor.decide("fake-video-1", None)
        run.vendor.fail(*[ProviderUnavailableError(message="down", provider="f")] * 9)
        session = await run.advance(30 * 60)
        result = session.step("video").result
        assert result is not None
        assert result.status is ResultStatus.TIMEOUT
        assert result.signal_names == ("resubmission_requested",)
        assert "the last look at the vendor failed: down" in result.detail

    async def test_late_webhook_does_not_reopen(self) -> None:
        """A decision after the expiry is refused and its delivery remembered; the step stays timed out."""
        clock = FakeClock()
        vendor = FakeVideoProvider()
        two_steps = attrs.evolve(
            policy(),
            steps=[*policy().steps, Step(id="sms", channel="sms_code")],
            rules=[],
        )
        sms = ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes())])
        async with Verifier(
            two_steps, channels=[VideoSignChannel([vendor]), sms], clock=clock
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            await clock.advance(30 * 60)
            await verifier.wait_idle()
            late = event(session, decision(vendor))
            with pytest.raises(StepNotWaitingError, match="not waiting"):
                await verifier.handle_event(late)
            stored = await verifier.get(session.session_id)
            result = stored.step("video").result
            assert result is not None
            assert result.status is ResultStatus.TIMEOUT
            assert stored.step("sms").state is StepState.WAITING
            assert late.dedupe_key is not None
            assert not await verifier.store.record_event_once(
                session.session_id, late.dedupe_key
            )
            trail = await verifier.store.audit_events(session.session_id)
            assert AuditTrail.verify(trail) == len(trail)
            recorded = trail[-1]
            assert recorded.kind == "event.late"
            assert recorded.data["step_id"] == "video"
            assert recorded.data["kind"] == "decision"
            assert recorded.data["dedupe_key"] == late.dedupe_key
            assert "not waiting" in recorded.data["reason"]

    async def test_late_webhook_after_the_verdict(self, run: Run) -> None:
        """Once the session is decided, a late decision is refused as well."""
        await run.advance(30 * 60)
        with pytest.raises(SessionFinishedError):
            await run.verifier.handle_event(event(run.session, decision(run.vendor)))
        verdict = await run.verifier.wait(run.session.session_id)
        assert verdict.outcome is Outcome.REJECTED
        trail = await run.verifier.store.audit_events(run.session.session_id)
        assert [e.kind for e in trail[-2:]] == ["verdict", "event.late"]
        assert trail[-1].data["status"] == "approved"
        assert AuditTrail.verify(trail) == len(trail)


class TestDurability:
    async def test_polls_and_expiry_survive_a_restart(self, tmp_path: Path) -> None:
        """A new Verifier on the same store carries on the poll and expiry timers; no second session is opened."""
        clock = FakeClock()
        path = tmp_path / "verify.db"
        first_vendor = FakeVideoProvider()
        first = Verifier(
            policy(),
            channels=[VideoSignChannel([first_vendor])],
            store=SqliteStore(path, clock=clock),
            clock=clock,
        )
        started = await first.start(applicant())
        await first.wait_idle()
        await first.aclose()
        await first.store.aclose()

        vendor = FakeVideoProvider()
        vendor.decide(vendor.session_id(1), decision(vendor))
        async with Verifier(
            policy(),
            channels=[VideoSignChannel([vendor])],
            store=SqliteStore(path, clock=clock),
            clock=clock,
        ) as second:
            assert await second.resume() == 2  # poll-1 and the expiry
            await clock.advance(60)
            verdict = await second.wait(started.session_id)
            assert verdict.outcome is Outcome.APPROVED
            assert vendor.fetches == [vendor.session_id(1)]
            assert vendor.requests == []
            assert await second.store.timers() == []
        await second.store.aclose()


class TestHandleDirectly:
    async def test_lost_state(self) -> None:
        """A message for an attempt without its state ends it as ``error``."""
        channel = VideoSignChannel([FakeVideoProvider()])
        outcome = await channel.handle(
            step_context(FakeClock(), None),
            None,
            TimerDue(name="poll-1", at=FakeClock().now()),
        )
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.ERROR

    async def test_unknown_messages_wait(self) -> None:
        """Unknown timers and event kinds change nothing."""
        clock = FakeClock()
        channel = VideoSignChannel([FakeVideoProvider()])
        started = await channel.start(step_context(clock, None))
        assert isinstance(started, Waiting)
        for message in (
            TimerDue(name="other", at=clock.now()),
            ProviderEvent(session_id="s1", step_id="video", kind="ping"),
        ):
            outcome = await channel.handle(
                step_context(clock, None), started.state, message
            )
            assert outcome == Waiting(state=started.state)
        await channel.cancel(step_context(clock, None), started.state)

    async def test_poll_after_expiry_and_unwired_provider(self) -> None:
        """A late poll leaves it to the expiry; a provider no longer wired is an error."""
        clock = FakeClock()
        vendor = FakeVideoProvider()
        channel = VideoSignChannel([vendor])
        started = await channel.start(step_context(clock, None))
        assert isinstance(started, Waiting)
        state = started.state
        await clock.advance(3600)
        late = await channel.handle(
            step_context(clock, None), state, TimerDue(name="poll-1", at=clock.now())
        )
        assert late == Waiting(state=state)
        other = VideoSignChannel([FakeVideoProvider("other")])
        early = attrs.evolve(state, expires_at=clock.now() + timedelta(hours=1))
        outcome = await other.handle(
            step_context(clock, None), early, TimerDue(name="poll-1", at=clock.now())
        )
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.ERROR
        expired = await other.handle(
            step_context(clock, None), early, TimerDue(name="expiry", at=clock.now())
        )
        assert isinstance(expired, Finished)
        assert expired.result.status is ResultStatus.TIMEOUT

    async def test_submission(self) -> None:
        """``handle`` refuses a submission with a typed error."""
        clock = FakeClock()
        channel = VideoSignChannel([FakeVideoProvider()])
        started = await channel.start(step_context(clock, None))
        assert isinstance(started, Waiting)
        with pytest.raises(InvalidInputError):
            await channel.handle(
                step_context(clock, None), started.state, Submission(payload={})
            )

    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        status=st.sampled_from(list(VideoStatus)),
        checks=st.tuples(*[st.sampled_from([True, False, None])] * 4),
        reason_code=st.one_of(st.none(), st.text(max_size=4)),
        score=st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
        max_resubmissions=st.integers(min_value=0, max_value=2),
    )
    def test_mapping_is_total(
        self,
        status: VideoStatus,
        checks: tuple[bool | None, bool | None, bool | None, bool | None],
        reason_code: str | None,
        score: float | None,
        max_resubmissions: int,
    ) -> None:
        """Every decision maps to a result (or a wait on a resubmission) with declared signals."""
        import asyncio

        async def check() -> None:
            clock = FakeClock()
            vendor = FakeVideoProvider()
            channel = VideoSignChannel([vendor], max_resubmissions=max_resubmissions)
            started = await channel.start(step_context(clock, None))
            assert isinstance(started, Waiting)
            made = VideoDecision(
                provider=vendor.name,
                session_id=vendor.session_id(1),
                status=status,
                reason_code=reason_code,
                liveness=checks[0],
                face_match=checks[1],
                document_valid=checks[2],
                statement_confirmed=checks[3],
                face_match_score=score,
                attempt_id="a1",
            )
            message = ProviderEvent(
                session_id="s1", step_id="video", kind="decision", data=made.to_data()
            )
            outcome = await channel.handle(
                step_context(clock, None), started.state, message
            )
            if status is VideoStatus.RESUBMISSION_REQUESTED and max_resubmissions:
                assert isinstance(outcome, Waiting)
                return
            assert isinstance(outcome, Finished)
            assert set(outcome.result.signal_names) <= channel.spec.signals
            assert (outcome.result.status is ResultStatus.PASSED) == (
                status is VideoStatus.APPROVED
            )
            assert outcome.result.score == score
            json.dumps(dict(outcome.result.facts))

        asyncio.run(check())
