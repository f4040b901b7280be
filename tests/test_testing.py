"""Tests for the public test helpers: FakeClock, ScriptedChannel and Scripted."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import attrs
import pytest

from multiverify import (
    Applicant,
    Challenge,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    ResultStatus,
    Signal,
)
from multiverify.channels import (
    Channel,
    Finished,
    ProviderEvent,
    StepContext,
    Submission,
    TimerDue,
    Waiting,
)
from multiverify.exceptions import ProviderUnavailableError
from multiverify.testing import FakeClock, Scripted, ScriptedChannel, ScriptedState

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def context(clock: FakeClock, *, provider: str | None = None) -> StepContext:
    """A step context for attempt 1 of step ``sms``."""
    return StepContext(
        session_id="s1",
        step_id="sms",
        attempt=1,
        provider=provider,
        idempotency_key="s1:sms:1",
        applicant=Applicant(
            applicant_id="a1",
            name="Li Lei",
            national_id="110101199001011234",
            phone="+8613800138000",
            date_of_birth=date(1990, 1, 1),
            timezone="Asia/Shanghai",
            loan=LoanApplication(
                amount="5000", currency="CNY", term_months=12, purpose="phone"
            ),
        ),
        clock=clock,
    )


class TestFakeClock:
    def test_starts_at_a_fixed_time(self) -> None:
        """By default the clock reads 2026-01-01 09:00 UTC; a start time may be given."""
        assert FakeClock().now() == T0
        later = T0 + timedelta(days=1)
        assert FakeClock(later).now() == later

    def test_repr(self) -> None:
        """The repr shows the time and the sleepers."""
        assert (
            repr(FakeClock())
            == "<multiverify.testing.FakeClock(2026-01-01T09:00:00+00:00, sleepers=0)>"
        )

    async def test_advance_moves_time(self) -> None:
        """``advance`` takes seconds or a timedelta."""
        clock = FakeClock()
        await clock.advance(1.5)
        await clock.advance(timedelta(minutes=1))
        assert clock.now() == T0 + timedelta(seconds=61.5)

    async def test_sleep_wakes_on_advance_in_due_order(self) -> None:
        """Sleepers wake when time reaches them, earliest first, each seeing its due time."""
        clock = FakeClock()
        woke: list[tuple[str, datetime]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        tasks = [
            asyncio.ensure_future(sleeper("late", 10)),
            asyncio.ensure_future(sleeper("early", 3)),
            asyncio.ensure_future(sleeper("same", 3)),
        ]
        await asyncio.sleep(0)
        assert clock.sleepers == 3
        assert clock.sleeping_tasks() == set(tasks)
        await clock.advance(2.9)
        assert woke == []
        await clock.advance(20)
        assert woke == [
            ("early", T0 + timedelta(seconds=3)),
            ("same", T0 + timedelta(seconds=3)),
            ("late", T0 + timedelta(seconds=10)),
        ]
        assert clock.now() == T0 + timedelta(seconds=22.9)
        assert clock.sleepers == 0
        assert clock.sleeping_tasks() == set()

    async def test_sleep_inside_sleep_chain(self) -> None:
        """A task that sleeps again right after waking is woken within the same advance."""
        clock = FakeClock()
        times: list[datetime] = []

        async def twice() -> None:
            await clock.sleep(1)
            times.append(clock.now())
            await clock.sleep(1)
            times.append(clock.now())

        task = asyncio.ensure_future(twice())
        await asyncio.sleep(0)
        await clock.advance(5)
        assert task.done()
        assert times == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]

    async def test_sleep_zero_returns_at_once(self) -> None:
        """``sleep(0)`` and negative sleeps only yield; they are not sleepers."""
        clock = FakeClock()
        await clock.sleep(0)
        await clock.sleep(-1)
        assert clock.sleepers == 0
        assert clock.now() == T0

    async def test_cancelled_sleeper(self) -> None:
        """A cancelled sleep no longer counts and is skipped by ``advance``."""
        clock = FakeClock()
        task = asyncio.ensure_future(clock.sleep(5))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleepers == 0
        assert clock.sleeping_tasks() == set()
        await clock.advance(10)
        assert clock.now() == T0 + timedelta(seconds=10)


class TestScripted:
    def test_ends(self) -> None:
        """``ends`` builds a result of any status with signals, score, detail and facts."""
        answer = Scripted.ends(
            "inconclusive",
            signals=["hesitant"],
            score=0.4,
            detail="unclear",
            facts={"k": 1},
            delay=2,
        )
        assert answer.result == ChannelResult(
            status=ResultStatus.INCONCLUSIVE,
            signals=(Signal(name="hesitant"),),
            score=0.4,
            detail="unclear",
            facts={"k": 1},
        )
        assert answer.delay == 2
        assert answer.error is None
        assert answer.challenge is None

    def test_passes_and_fails(self) -> None:
        """``passes`` and ``fails`` are ``ends`` with their status."""
        passed = Scripted.passes(signals=["code_verified"], score=1.0, delay=1)
        assert passed.result is not None
        assert passed.result.status is ResultStatus.PASSED
        assert passed.result.signal_names == ("code_verified",)
        assert passed.delay == 1
        failed = Scripted.fails(signals=["wrong_code"], score=0.0)
        assert failed.result is not None
        assert failed.result.status is ResultStatus.FAILED
        assert failed.result.score == 0.0

    def test_raises(self) -> None:
        """``raises`` keeps the error and its delay."""
        error = ProviderUnavailableError(message="503", provider="x")
        answer = Scripted.raises(error, delay=3)
        assert answer.error is error
        assert answer.delay == 3
        assert answer.result is None

    def test_waits(self) -> None:
        """``waits`` takes its result and delay from ``then`` and builds a challenge."""
        answer = Scripted.waits(
            Scripted.passes(delay=4),
            expect={"code": "1"},
            otherwise=Scripted.fails(),
            kind="code",
            message="type the code",
            destination="+86 138****8000",
            url="https://x.example",
        )
        assert answer.result is not None
        assert answer.result.status is ResultStatus.PASSED
        assert answer.otherwise is not None
        assert answer.otherwise.status is ResultStatus.FAILED
        assert answer.expect == {"code": "1"}
        assert answer.delay == 4
        assert answer.challenge == Challenge(
            step_id="",
            kind="code",
            message="type the code",
            destination="+86 138****8000",
            url="https://x.example",
        )
        bare = Scripted.waits(Scripted.passes())
        assert bare.expect is None
        assert bare.otherwise is None
        assert bare.challenge is not None
        assert bare.challenge.kind == "input"


class TestScriptedChannel:
    def test_is_a_channel(self) -> None:
        """A scripted channel implements the Channel protocol with a state type."""
        channel = ScriptedChannel("sms_code", [Scripted.passes()])
        assert isinstance(channel, Channel)
        assert channel.state_type is ScriptedState

    def test_spec(self) -> None:
        """A built-in name reuses its spec; another name gets a bare one; a spec wins."""
        assert ScriptedChannel("sms_code", []).spec.automatic is False
        assert "code_verified" in ScriptedChannel("sms_code", []).spec.signals
        assert ScriptedChannel("credit_bureau", []).spec.automatic is True
        assert ScriptedChannel("custom", []).spec == ChannelSpec(name="custom")
        spec = ChannelSpec(name="custom", signals={"ok"}, automatic=True)
        assert ScriptedChannel("custom", [], spec=spec).spec is spec

    async def test_answers_per_call_and_the_last_repeats(self) -> None:
        """Each ``start`` takes the next answer; the last one repeats."""
        clock = FakeClock()
        channel = ScriptedChannel("x", [Scripted.fails(), Scripted.passes()])
        outcomes = [await channel.start(context(clock)) for _ in range(3)]
        assert [o.result.status for o in outcomes if isinstance(o, Finished)] == [
            ResultStatus.FAILED,
            ResultStatus.PASSED,
            ResultStatus.PASSED,
        ]
        assert [o.state for o in outcomes] == [
            ScriptedState(call=0),
            ScriptedState(call=1),
            ScriptedState(call=2),
        ]
        assert len(channel.starts) == 3
        assert repr(channel) == "<multiverify.testing.ScriptedChannel(x, starts=3)>"

    async def test_callable_script(self) -> None:
        """A callable script picks the answers from the context."""
        clock = FakeClock()
        channel = ScriptedChannel(
            "x",
            lambda ctx: [
                Scripted.passes() if ctx.provider == "good" else Scripted.fails()
            ],
        )
        good = await channel.start(context(clock, provider="good"))
        bad = await channel.start(context(clock, provider="bad"))
        assert isinstance(good, Finished)
        assert good.result.status is ResultStatus.PASSED
        assert isinstance(bad, Finished)
        assert bad.result.status is ResultStatus.FAILED

    async def test_errors(self) -> None:
        """A scripted error is raised from ``start`` and the call is still recorded."""
        clock = FakeClock()
        error = ProviderUnavailableError(message="503", provider="x")
        channel = ScriptedChannel("x", [Scripted.raises(error), Scripted.passes()])
        with pytest.raises(ProviderUnavailableError) as caught:
            await channel.start(context(clock))
        assert caught.value is error
        assert isinstance(await channel.start(context(clock)), Finished)
        assert len(channel.starts) == 2

    async def test_delays_run_on_the_context_clock(self) -> None:
        """A delayed answer sleeps on the context's clock."""
        clock = FakeClock()
        channel = ScriptedChannel("x", [Scripted.passes(delay=30)])
        task = asyncio.ensure_future(channel.start(context(clock)))
        await asyncio.sleep(0)
        assert not task.done()
        assert clock.sleepers == 1
        await clock.advance(30)
        assert isinstance(task.result(), Finished)

    async def test_script_misuse(self) -> None:
        """An empty script, or an answer with nothing in it, is a ValueError."""
        clock = FakeClock()
        with pytest.raises(ValueError, match="no answers"):
            await ScriptedChannel("x", []).start(context(clock))
        with pytest.raises(ValueError, match="needs a result"):
            await ScriptedChannel("x", [Scripted()]).start(context(clock))

    async def test_waits_with_expect(self) -> None:
        """A waiting answer takes only the expected payload; others keep it waiting."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel(
            "sms_code",
            [Scripted.waits(Scripted.passes(), expect={"code": "1"}, kind="code")],
        )
        started = await channel.start(ctx)
        assert isinstance(started, Waiting)
        assert started.challenge == Challenge(step_id="sms", kind="code")
        state = started.state
        wrong = await channel.handle(ctx, state, Submission(payload={"code": "2"}))
        assert wrong == Waiting(state=state)
        right = await channel.handle(ctx, state, Submission(payload={"code": "1"}))
        assert isinstance(right, Finished)
        assert right.result.status is ResultStatus.PASSED
        assert [m for _, m in channel.messages] == [
            Submission(payload={"code": "2"}),
            Submission(payload={"code": "1"}),
        ]

    async def test_waits_with_otherwise(self) -> None:
        """With ``otherwise``, an unexpected payload finishes with that result."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel(
            "x",
            [
                Scripted.waits(
                    Scripted.passes(), expect={"code": "1"}, otherwise=Scripted.fails()
                )
            ],
        )
        started = await channel.start(ctx)
        outcome = await channel.handle(ctx, started.state, Submission(payload={}))
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.FAILED

    async def test_any_payload_without_expect(self) -> None:
        """Without ``expect``, any submission finishes the step."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel("x", [Scripted.waits(Scripted.passes())])
        started = await channel.start(ctx)
        outcome = await channel.handle(ctx, started.state, Submission(payload={"a": 1}))
        assert isinstance(outcome, Finished)

    async def test_provider_event_finishes(self) -> None:
        """Any provider event finishes a waiting answer, whatever ``expect`` says."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel(
            "x", [Scripted.waits(Scripted.passes(), expect={"code": "1"})]
        )
        started = await channel.start(ctx)
        event = ProviderEvent(session_id="s1", step_id="sms", kind="completed")
        outcome = await channel.handle(ctx, started.state, event)
        assert isinstance(outcome, Finished)
        assert outcome.state == started.state

    async def test_timer_due_keeps_waiting(self) -> None:
        """A channel timer leaves the step waiting with its state."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel("x", [Scripted.waits(Scripted.passes())])
        started = await channel.start(ctx)
        due = TimerDue(name="resend", at=clock.now())
        assert await channel.handle(ctx, started.state, due) == Waiting(
            state=started.state
        )

    async def test_handle_uses_the_answer_of_the_state(self) -> None:
        """``handle`` answers from the call recorded in the state (the first without one)."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel(
            "x",
            [Scripted.waits(Scripted.fails()), Scripted.waits(Scripted.passes())],
        )
        message = Submission(payload={})
        first = await channel.handle(ctx, None, message)
        second = await channel.handle(ctx, ScriptedState(call=1), message)
        assert isinstance(first, Finished)
        assert first.result.status is ResultStatus.FAILED
        assert isinstance(second, Finished)
        assert second.result.status is ResultStatus.PASSED

    async def test_handle_without_a_result_keeps_waiting(self) -> None:
        """An answer with no result (an error) keeps waiting on input."""
        clock = FakeClock()
        ctx = context(clock)
        error = ProviderUnavailableError(message="503", provider="x")
        channel = ScriptedChannel("x", [Scripted.raises(error)])
        outcome = await channel.handle(ctx, None, Submission(payload={}))
        assert outcome == Waiting(state=None)

    async def test_records_cancels(self) -> None:
        """``cancel`` is recorded with its context."""
        clock = FakeClock()
        ctx = context(clock)
        channel = ScriptedChannel("x", [Scripted.passes()])
        await channel.cancel(ctx, ScriptedState(call=0))
        assert channel.cancels == [ctx]


class TestFakeVideoProvider:
    async def test_sessions_decisions_and_failures(self) -> None:
        """Sessions are numbered, decisions are set per session, failures come in order."""
        from multiverify.providers import (
            VideoDecision,
            VideoSessionRequest,
            VideoStatus,
        )
        from multiverify.testing import FakeVideoProvider

        vendor = FakeVideoProvider("acme", max_lifetime=60)
        request = VideoSessionRequest(
            reference="s1:video:1",
            applicant_id="a1",
            name="Li Lei",
            national_id="110101199001011234",
            statement="I confirm.",
            locale="en",
            expires_at=T0,
        )
        session = await vendor.create_session(request)
        assert session.session_id == vendor.session_id(1) == "acme-1"
        assert session.url == "https://video.fake.invalid/acme/1"
        assert (vendor.name, vendor.max_lifetime) == ("acme", 60)
        assert await vendor.fetch_decision(session) is None
        decided = VideoDecision(
            provider="acme", session_id="acme-1", status=VideoStatus.APPROVED
        )
        vendor.decide("acme-1", decided)
        assert await vendor.fetch_decision(session) == decided
        vendor.decide("acme-1", None)
        assert await vendor.fetch_decision(session) is None
        vendor.fail(ProviderUnavailableError(message="down", provider="acme"))
        with pytest.raises(ProviderUnavailableError):
            await vendor.create_session(request)
        assert vendor.requests == [request]
        assert vendor.fetches == ["acme-1"] * 3
        assert (
            repr(vendor) == "<multiverify.testing.FakeVideoProvider(acme, sessions=1)>"
        )
        await vendor.aclose()
        assert vendor.closed


class TestFakeBureauProvider:
    async def test_reports_and_failures(self) -> None:
        """A clean file by default, a set report renamed and numbered, failures in order."""
        from datetime import date

        from multiverify import Applicant, LoanApplication
        from multiverify.exceptions import ProviderUnavailableError
        from multiverify.providers import BureauRequest, FileStatus, MatchResult
        from multiverify.testing import FakeBureauProvider

        vendor = FakeBureauProvider("acme")
        request = BureauRequest(
            reference="s1:bureau:1",
            applicant=Applicant(
                applicant_id="a1",
                name="Li Lei",
                national_id="110101199001011234",
                phone="+8613800138000",
                date_of_birth=date(1990, 1, 1),
                timezone="Asia/Shanghai",
                loan=LoanApplication(
                    amount="100", currency="CNY", term_months=3, purpose="phone"
                ),
            ),
            purpose="loan_approval",
            consent="c1",
        )
        clean = await vendor.pull(request)
        assert (clean.provider, clean.report_id, clean.score) == (
            "acme",
            "acme-report-1",
            720,
        )
        assert clean.identity.name is MatchResult.MATCH
        vendor.respond(attrs.evolve(clean, file=FileStatus.THIN_FILE, score=None))
        thin = await vendor.pull(request)
        assert (thin.file, thin.report_id) == (FileStatus.THIN_FILE, "acme-report-2")
        vendor.respond(None)
        vendor.fail(ProviderUnavailableError(message="down", provider="acme"))
        with pytest.raises(ProviderUnavailableError):
            await vendor.pull(request)
        assert (await vendor.pull(request)).file is FileStatus.HIT
        assert len(vendor.requests) == 4
        assert "pulls=4" in repr(vendor)
        await vendor.aclose()
        assert vendor.closed
