"""Tests for the embedded runtime: the Verifier, on a FakeClock, with scripted channels."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from multiverify import (
    Applicant,
    AuditTrail,
    Challenge,
    ChannelResult,
    ChannelSpec,
    Fallback,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    RetrySettings,
    Rule,
    Session,
    SessionStatus,
    Step,
    StepState,
    SystemClock,
    Verdict,
    Verifier,
)
from multiverify import _verifier as verifier_module
from multiverify._masking import mask_phone
from multiverify._session import (
    CancelTimer,
    NotifyStep,
    RecordVerdict,
    ScheduleTimer,
)
from multiverify._verifier import timer_writes
from multiverify.channels import (
    ChannelRegistry,
    Finished,
    ProviderEvent,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    TimerDue,
    Waiting,
)
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    PolicyError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
    SessionFinishedError,
    SessionNotFoundError,
    StepNotFoundError,
    StepNotWaitingError,
    StoreUnavailableError,
)
from multiverify.stores import MemoryStore, SessionStore, SqliteStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel
from stores.sweeps import Sweeps

CODE = {"code": "123456"}

APPROVE = Rule(
    outcome="approved",
    when="steps.bureau.status == 'passed' && steps.sms.status == 'passed'",
    reason="all.confirmed",
)
REJECT_FRAUD = Rule(
    outcome="rejected",
    when="'fraud_alert' in steps.bureau.signals",
    reason="bureau.fraud_alert",
)


def make_applicant() -> Applicant:
    """A realistic applicant with a loan."""
    return Applicant(
        applicant_id="a1",
        name="Zhang San",
        national_id="110101199003071234",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="5000", currency="CNY", term_months=12, purpose="phone"
        ),
    )


def bureau_sms_policy(**changes: Any) -> Policy:
    """Bureau and SMS in parallel: fraud rejects, both passing approves."""
    fields: dict[str, Any] = {
        "name": "p",
        "version": "1",
        "steps": [
            Step(id="bureau", channel="credit_bureau"),
            Step(id="sms", channel="sms_code", timeout="5m"),
        ],
        "rules": [REJECT_FRAUD, APPROVE],
    }
    fields.update(changes)
    return Policy(**fields)


def sms_code(*, otherwise: bool = False) -> ScriptedChannel:
    """An SMS channel that waits for ``CODE``; another code fails or keeps waiting."""
    return ScriptedChannel(
        "sms_code",
        [
            Scripted.waits(
                Scripted.passes(signals=["code_verified"]),
                expect=CODE,
                otherwise=Scripted.fails(signals=["wrong_code"]) if otherwise else None,
                kind="code",
                destination="+86 138****8000",
            )
        ],
    )


def bureau(*answers: Scripted) -> ScriptedChannel:
    """A bureau channel; passes with ``identity_match`` unless told otherwise."""
    return ScriptedChannel(
        "credit_bureau",
        list(answers) or [Scripted.passes(signals=["identity_match"], score=0.9)],
    )


def ids(prefix: str = "s") -> Callable[[], str]:
    """Deterministic session ids: s1, s2, ..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-01-01 09:00 UTC."""
    return FakeClock()


@pytest.fixture
def applicant() -> Applicant:
    """The applicant every test verifies."""
    return make_applicant()


RENEWAL = 10  # seconds: a third of the default 30-second lease


async def settle(verifier: Verifier, clock: FakeClock, seconds: float = 0) -> None:
    """Let in-flight work settle, advance the clock (if asked), and settle again."""
    if seconds:
        await verifier.wait_idle()
        await clock.advance(seconds)
    await verifier.wait_idle()


async def nothing_left_asleep(verifier: Verifier, clock: FakeClock) -> None:
    """Check that nothing sleeps on the clock once the claims' renewal has woken.

    The renewal of claims ends when it wakes to find no effect running, so
    any sleeper left after a third of the lease is a channel still running.
    """
    await settle(verifier, clock, RENEWAL)
    assert clock.sleepers == 0


async def until_sleeping(clock: FakeClock, count: int) -> None:
    """Yield to the loop until ``count`` tasks sleep on the clock (bounded)."""
    for _ in range(1000):
        if clock.sleepers >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{clock.sleepers} sleepers, expected {count}")


async def states(verifier: Verifier, session_id: str) -> dict[str, str]:
    """Step id to step state, as stored."""
    session = await verifier.get(session_id)
    return {record.step_id: record.state.value for record in session.steps}


async def verify_trail(verifier: Verifier, session: Session) -> int:
    """Check the stored audit trail of a finished session and replay it."""
    events = await verifier.store.audit_events(session.session_id)
    assert [event.index for event in events] == list(range(len(events)))
    assert AuditTrail.verify(events) == len(events) == session.audit_count
    replayed = AuditTrail.replay(verifier.policy(session.policy.hash), events)
    assert replayed.verdict == session.verdict
    assert replayed.status is session.status
    return len(events)


class CrashingStore(MemoryStore):
    """A MemoryStore that 'crashes' right after a write holding a chosen effect."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_on: Callable[[Sequence[Any]], bool] | None = None

    async def create(self, session: Session, **kwargs: Any) -> int:
        return self._maybe_crash(await super().create(session, **kwargs), kwargs)

    async def save(self, session: Session, **kwargs: Any) -> int:
        return self._maybe_crash(await super().save(session, **kwargs), kwargs)

    def _maybe_crash(self, version: int, kwargs: dict[str, Any]) -> int:
        crash_on, effects = self.crash_on, kwargs.get("effects", ())
        if crash_on is not None and crash_on(effects):
            self.crash_on = None
            raise Crash
        return version


class Crash(BaseException):
    """The process died (nothing in the SDK catches a BaseException)."""


class TestVerifier:
    def test_needs_a_policy(self) -> None:
        """A Verifier without a policy is a wiring mistake."""
        with pytest.raises(ConfigurationError, match="at least one policy"):
            Verifier([], channels=[bureau()])

    def test_one_version_with_two_contents_is_refused(self) -> None:
        """Two policies of one name and version but different content are refused:
        verdicts would name the same version for different rules."""
        first = bureau_sms_policy()
        changed = bureau_sms_policy(default="rejected")
        with pytest.raises(ConfigurationError) as caught:
            Verifier([first, changed], channels=[bureau(), sms_code()])
        assert caught.value.message == (
            "policy 'p' version '1' is given twice with different content "
            f"(sha256 {first.hash[:12]} and {changed.hash[:12]}): give the changed "
            "one a new version"
        )

    def test_versions_of_one_policy_live_side_by_side(self) -> None:
        """The same policy twice, or two versions of it, are fine."""
        first = bureau_sms_policy()
        later = bureau_sms_policy(version="2", default="rejected")
        verifier = Verifier([first, first, later], channels=[bureau(), sms_code()])
        assert verifier.policy("p") is later
        assert verifier.policy(first.hash) is first

    def test_unwired_channel_is_a_configuration_error(self) -> None:
        """A policy step whose channel is not wired fails at construction, located."""
        with pytest.raises(ConfigurationError) as caught:
            Verifier(bureau_sms_policy(), channels=[bureau()])
        assert isinstance(caught.value, PolicyError)
        assert [problem.path for problem in caught.value.problems] == [
            "steps[1].channel"
        ]

    def test_policy_lookup(self) -> None:
        """Policies are found by name (the last of that name) or hash; the first is default."""
        first = bureau_sms_policy()
        second = bureau_sms_policy(version="2")
        other = bureau_sms_policy(name="other")
        verifier = Verifier([first, second, other], channels=[bureau(), sms_code()])
        assert verifier.policy() is first
        assert verifier.policy("p") is second
        assert verifier.policy(first.hash) is first
        assert verifier.policy("other") is other
        with pytest.raises(ConfigurationError, match="'nope'"):
            verifier.policy("nope")

    def test_repr(self) -> None:
        """The repr counts policies and channels."""
        verifier = Verifier(
            bureau_sms_policy(), channels=ChannelRegistry([bureau(), sms_code()])
        )
        assert repr(verifier) == "<multiverify.Verifier(policies=1, channels=2)>"

    def test_defaults(self) -> None:
        """Without a store or clock, the Verifier keeps sessions in memory on the system clock."""
        verifier = Verifier(bureau_sms_policy(), channels=[bureau(), sms_code()])
        assert isinstance(verifier.store, MemoryStore)
        assert isinstance(verifier.clock, SystemClock)

    async def test_async_with_closes(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Leaving ``async with`` stops timers and in-flight effects; a given store stays open."""
        closed: list[bool] = []

        class Store(MemoryStore):
            async def aclose(self) -> None:
                closed.append(True)

        store = Store()
        slow = bureau(Scripted.passes(delay=60))
        async with Verifier(
            bureau_sms_policy(), channels=[slow, sms_code()], store=store, clock=clock
        ) as verifier:
            await verifier.start(applicant)
            await verifier.wait_idle()
            # the bureau's delay, the sms timeout and the renewal of claims
            assert clock.sleepers == 3
        assert closed == []
        assert clock.sleepers == 0
        await verifier.aclose()  # idempotent
        assert closed == []

    async def test_channels_get_the_store_as_shared_state(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A step's context carries the store as the replicas' shared state."""
        seen: list[object] = []

        class Recording(ScriptedChannel):
            async def start(self, context: StepContext, /) -> StepOutcome:
                seen.append(context.shared)
                return await super().start(context)

        store = MemoryStore()
        channel = Recording("credit_bureau", [Scripted.passes()])
        async with Verifier(
            bureau_sms_policy(),
            channels=[channel, sms_code()],
            store=store,
            clock=clock,
        ) as verifier:
            await verifier.start(applicant)
            await verifier.wait_idle()
        assert seen == [store]

    async def test_aclose_closes_the_store_it_made(self) -> None:
        """The default in-memory store belongs to the Verifier and closes with it."""
        verifier = Verifier(bureau_sms_policy(), channels=[bureau(), sms_code()])
        store = verifier.store
        closed: list[bool] = []

        async def aclose() -> None:
            closed.append(True)

        store.aclose = aclose  # type: ignore[method-assign]
        await verifier.aclose()
        assert closed == [True]

    async def test_aclose_cancels_waiters(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Waiting for a verdict ends when the Verifier closes."""
        verifier = Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        )
        session = await verifier.start(applicant)
        waiting = asyncio.ensure_future(verifier.wait(session.session_id))
        await verifier.wait_idle()
        await verifier.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiting


class TestStart:
    @pytest.mark.parametrize(
        ("currency", "today", "refused"),
        [
            ("BGL", datetime(2026, 1, 1, tzinfo=UTC), True),  # retired in 1999
            ("BGN", datetime(2026, 3, 1, tzinfo=UTC), True),  # the euro since 2026
            ("BGN", datetime(2026, 1, 15, tzinfo=UTC), False),  # both in January
            ("EUR", datetime(2026, 3, 1, tzinfo=UTC), False),
        ],
    )
    async def test_a_loan_in_a_currency_no_longer_in_use_is_refused(
        self, applicant: Applicant, currency: str, today: datetime, *, refused: bool
    ) -> None:
        """A new session's loan is in a currency that is legal tender on the day it starts; stored sessions still load."""
        loan = attrs.evolve(applicant.loan, currency=currency)
        retired = attrs.evolve(applicant, loan=loan)
        store = MemoryStore()
        async with Verifier(
            ONE_STEP, channels=[bureau()], store=store, clock=FakeClock(today)
        ) as verifier:
            if not refused:
                session = await verifier.start(retired)
                assert session.applicant == retired
                return
            with pytest.raises(InvalidInputError, match=f"{currency}.* no longer") as e:
                await verifier.start(retired)
        assert e.value.field == "loan.currency"
        assert await store.session_ids() == []

    async def test_start_returns_saved_session_and_steps_run_in_background(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``start`` returns at once; after the effects ran, the SMS step shows a challenge."""
        sms = sms_code()
        verifier = Verifier(
            bureau_sms_policy(),
            channels=[bureau(), sms],
            clock=clock,
            new_id=ids(),
        )
        session = await verifier.start(applicant)
        assert session.session_id == "s1"
        assert session.status is SessionStatus.ACTIVE
        assert [r.state for r in session.steps] == [StepState.RUNNING] * 2
        await verifier.wait_idle()
        session = await verifier.get("s1")
        assert await states(verifier, "s1") == {"bureau": "done", "sms": "waiting"}
        assert session.challenges == (
            Challenge(step_id="sms", kind="code", destination="+86 138****8000"),
        )
        (context,) = sms.starts
        assert context.session_id == "s1"
        assert context.attempt == 1
        assert context.provider is None
        assert context.idempotency_key == "s1:sms:1"
        assert context.applicant == applicant
        assert context.clock is clock
        await verifier.aclose()

    async def test_taken_session_id(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Starting a session under an id that exists is a conflict."""
        verifier = Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        )
        await verifier.start(applicant, session_id="x")
        with pytest.raises(ConcurrentUpdateError):
            await verifier.start(applicant, session_id="x")
        await verifier.aclose()

    async def test_named_policy(self, clock: FakeClock, applicant: Applicant) -> None:
        """``start(policy=...)`` picks the policy; an unknown one is refused."""
        quick = Policy(
            name="quick",
            version="1",
            steps=[Step(id="bureau", channel="credit_bureau")],
        )
        verifier = Verifier(
            [bureau_sms_policy(), quick],
            channels=[bureau(), sms_code()],
            clock=clock,
        )
        session = await verifier.start(applicant, policy="quick")
        assert session.policy == quick.ref
        with pytest.raises(ConfigurationError):
            await verifier.start(applicant, policy="nope")
        await verifier.aclose()


class TestRun:
    async def test_run_returns_the_verdict(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``run`` starts a session of automatic steps and returns its verdict."""
        policy = Policy(
            name="auto",
            version="1",
            steps=[Step(id="bureau", channel="credit_bureau")],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.bureau.status == 'passed'",
                    reason="ok",
                )
            ],
        )
        async with Verifier(policy, channels=[bureau()], clock=clock) as verifier:
            verdict = await verifier.run(applicant)
        assert verdict.outcome is Outcome.APPROVED
        assert verdict.score == 0.9
        assert [reason.code for reason in verdict.reasons] == ["ok"]

    async def test_one_write_per_input_and_no_load(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """The start is one create; each result one save; nothing is loaded back."""
        store = CountingStore()
        policy = Policy(
            name="auto",
            version="1",
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="second", channel="credit_bureau", after=["bureau"]),
            ],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.second.status == 'passed'",
                    reason="ok",
                )
            ],
        )
        async with Verifier(
            policy, channels=[bureau()], store=store, clock=clock
        ) as verifier:
            verdict = await verifier.run(applicant)
            await verifier.wait_idle()
            assert store.calls == {"create": 1, "save": 2}
            (sid,) = await store.session_ids()
            stored = await verifier.get(sid)
        assert stored.verdict == verdict
        assert verdict.outcome is Outcome.APPROVED
        assert await verify_trail(verifier, stored) == 5  # created, 3 inputs, verdict

    async def test_wait_after_start_loads_nothing(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``wait`` right after ``start`` on the same Verifier starts from the session as saved."""
        store = CountingStore()
        async with Verifier(
            Policy(
                name="auto", version="1", steps=[Step(id="b", channel="credit_bureau")]
            ),
            channels=[bureau()],
            store=store,
            clock=clock,
        ) as verifier:
            started = await verifier.start(applicant)
            verdict = await verifier.wait(started.session_id)
            assert store.calls == {"create": 1, "save": 1}
        assert verdict.steps[0].result is not None


ONE_STEP = Policy(
    name="auto", version="1", steps=[Step(id="b", channel="credit_bureau")]
)


class TestCompletions:
    """Effects done are marked so in batches, off the caller's path."""

    async def test_effects_done_together_are_one_write(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Sessions decided at once mark their verdict effects done in fewer calls than effects."""
        store = CountingStore()
        async with Verifier(
            ONE_STEP, channels=[bureau()], store=store, clock=clock
        ) as verifier:
            await asyncio.gather(*(verifier.run(applicant) for _ in range(10)))
            await verifier.wait_idle()

            done = [key for batch in store.batches for key in batch]
            assert len(done) == len(set(done)) == 10  # one verdict effect each
            assert len(store.batches) < 10
            assert await store.pending_effects() == []

    async def test_a_store_bug_while_marking_effects_done_is_logged(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unexpected error from ``complete_effects`` is logged with its traceback; closing still works."""
        store = CountingStore()
        store.broken = True
        verifier = Verifier(ONE_STEP, channels=[bureau()], store=store, clock=clock)
        await verifier.run(applicant)
        await verifier.wait_idle()

        await verifier.aclose()  # does not raise

        assert "could not mark 1 effects done; they will run again" in caplog.text
        assert "KeyError" in caplog.text
        assert len(await store.pending_effects()) == 1

    async def test_aclose_waits_for_completions_being_written(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Closing does not cancel the write of completions: they are not lost."""
        store = CountingStore()
        store.gate = asyncio.Event()
        verifier = Verifier(ONE_STEP, channels=[bureau()], store=store, clock=clock)
        await verifier.run(applicant)
        await store.writing.wait()

        closing = asyncio.ensure_future(verifier.aclose())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not closing.done()
        store.gate.set()
        await closing

        assert await store.pending_effects() == []

    async def test_a_completion_not_written_leaves_the_effect_to_run_again(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store outage when marking effects done costs the caller nothing; the effect stays pending."""
        store = CountingStore()
        store.unwritable = True
        async with Verifier(
            ONE_STEP,
            channels=[bureau()],
            store=store,
            clock=clock,
        ) as verifier:
            verdict = await verifier.run(applicant)
            await verifier.wait_idle()

        assert verdict.outcome is Outcome.REVIEW  # the policy has no rules
        [pending] = await store.pending_effects()
        assert isinstance(pending.effect, RecordVerdict)
        assert "could not mark 1 effects done; they will run again" in caplog.text


class TestChannelTimerCompletion:
    async def test_a_notification_leaves_the_outbox_with_the_save_of_its_handling(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A channel timer's delivery is completed by the save recording it, never by a write of its own."""
        store = SaveRecording()
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="sms", channel="resend")],
            channels={"resend": ResendChannel.SPEC},
        )
        async with Verifier(
            policy, channels=[ResendChannel()], store=store, clock=clock
        ) as verifier:
            await verifier.start(applicant)
            await settle(verifier, clock, 60)

        [notified] = [
            completed
            for completed in store.completed
            if any(effect_id in store.notifications for effect_id in completed)
        ]
        assert len(notified) == 1
        assert not any(
            effect_id in store.notifications
            for batch in store.batches
            for _, effect_id in batch
        )
        assert await store.pending_effects() == []


class SaveRecording(MemoryStore):
    """A MemoryStore noting each save's ``completed``, the channel notifications saved, and completion batches."""

    def __init__(self) -> None:
        super().__init__()
        self.completed: list[tuple[str, ...]] = []
        self.notifications: set[str] = set()
        self.batches: list[list[tuple[str, str]]] = []

    async def save(self, session: Session, **kwargs: Any) -> int:
        self.completed.append(tuple(kwargs.get("completed", ())))
        self.notifications |= {
            e.effect_id for e in kwargs.get("effects", ()) if isinstance(e, NotifyStep)
        }
        return await super().save(session, **kwargs)

    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        self.batches.append(list(effects))
        await super().complete_effects(effects)


class TestTimerWrites:
    """Timers are written by the save that asks for them, not as effects of their own."""

    async def test_timers_take_no_store_call_of_their_own(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A session's deadline and step timeout are stored with its saves; nothing is queued for them."""
        store = CountingStore()
        async with Verifier(
            bureau_sms_policy(deadline="1h"),
            channels=[bureau(), sms_code()],
            store=store,
            clock=clock,
        ) as verifier:
            started = await verifier.start(applicant)
            sid = started.session_id
            assert {t.timer_id for t in await store.timers(sid)} == {
                "deadline",
                "step:sms:1:timeout",
            }
            assert not any(
                isinstance(p.effect, ScheduleTimer)
                for p in await store.pending_effects()
            )
            await verifier.wait_idle()
            decided = await verifier.submit(sid, "sms", CODE)
            await verifier.wait_idle()

        assert decided.status is SessionStatus.DECIDED
        assert await store.timers(sid) == []  # cancelled by the deciding save
        assert "schedule_timer" not in store.calls
        assert "cancel_timer" not in store.calls

    async def test_timer_effects_left_in_an_outbox_are_still_carried_out(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A timer effect saved in the outbox (as before timers went with saves) is written, then done."""
        store = MemoryStore()
        async with Verifier(
            bureau_sms_policy(deadline="1h"),
            channels=[bureau(), sms_code()],
            store=store,
            clock=clock,
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            sid = started.session_id
            session, version = await store.load(sid)
            later = clock.now() + timedelta(minutes=3)
            await store.save(
                session,
                expected_version=version,
                effects=[
                    ScheduleTimer(effect_id="old.1", timer_id="extra", due_at=later),
                    CancelTimer(effect_id="old.2", timer_id="deadline"),
                ],
            )

            assert await verifier.resume() >= 2
            await verifier.wait_idle()

            assert {t.timer_id: t.due_at for t in await store.timers(sid)} == {
                "extra": later,
                "step:sms:1:timeout": clock.now() + timedelta(minutes=5),
            }
            assert await store.pending_effects(sid) == []

    def test_the_last_effect_on_a_timer_decides(self) -> None:
        """Scheduled then cancelled is cancelled; cancelled then scheduled is scheduled."""
        at = datetime(2026, 1, 1, tzinfo=UTC)
        verdict_free = NotifyStep(
            effect_id="n", step_id="sms", attempt=1, channel="sms_code", name="x"
        )
        outbox, scheduled, cancelled = timer_writes(
            [
                ScheduleTimer(effect_id="1", timer_id="a", due_at=at),
                CancelTimer(effect_id="2", timer_id="a"),
                CancelTimer(effect_id="3", timer_id="b"),
                ScheduleTimer(effect_id="4", timer_id="b", due_at=at),
                verdict_free,
                ScheduleTimer(effect_id="5", timer_id="c", due_at=at),
                ScheduleTimer(
                    effect_id="6", timer_id="c", due_at=at + timedelta(seconds=1)
                ),
            ]
        )

        assert outbox == [verdict_free]
        assert scheduled == [("b", at), ("c", at + timedelta(seconds=1))]
        assert cancelled == ["a"]


class CountingStore(MemoryStore):
    """A MemoryStore that counts the session writes and loads made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}
        self.batches: list[list[tuple[str, str]]] = []  # completions, per call
        self.unwritable = False
        self.broken = False
        self.gate: asyncio.Event | None = None  # completions wait for it
        self.writing = asyncio.Event()  # set by the first completions

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def create(self, session: Session, **kwargs: Any) -> int:
        self._count("create")
        return await super().create(session, **kwargs)

    async def save(self, session: Session, **kwargs: Any) -> int:
        self._count("save")
        return await super().save(session, **kwargs)

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        self._count("load")
        return await super().load(session_id)

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        self._count("schedule_timer")
        await super().schedule_timer(session_id, timer_id, due_at)

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        self._count("cancel_timer")
        await super().cancel_timer(session_id, timer_id)

    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        self.batches.append(list(effects))
        self.writing.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.unwritable:
            raise StoreUnavailableError(message="store down", store="memory")
        if self.broken:
            raise KeyError("a bug in the store")
        await super().complete_effects(effects)


class _Outage(MemoryStore):
    """A memory store whose saves fail while ``down``; ``forgets`` whether it gives keys back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.forgets = True

    async def save(self, session: Session, **kwargs: Any) -> int:
        if self.down:
            raise StoreUnavailableError(message="store down", store="memory")
        return await super().save(session, **kwargs)

    async def forget_event(self, session_id: str, dedupe_key: str, /) -> None:
        if not self.forgets:
            raise StoreUnavailableError(message="store down", store="memory")
        await super().forget_event(session_id, dedupe_key)


class TestWaitAndGet:
    async def test_wait_blocks_until_the_verdict(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``wait`` returns once a submitted code decides the session."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            waiting = asyncio.ensure_future(verifier.wait(session.session_id))
            await verifier.wait_idle()
            assert not waiting.done()
            await verifier.submit(session.session_id, "sms", CODE)
            verdict = await waiting
            assert verdict.outcome is Outcome.APPROVED
            assert await verifier.wait(session.session_id) == verdict

    async def test_unknown_session(self, clock: FakeClock) -> None:
        """``get`` and ``wait`` name a missing session."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            with pytest.raises(SessionNotFoundError):
                await verifier.get("nope")
            with pytest.raises(SessionNotFoundError):
                await verifier.wait("nope")


class TestConcurrentSteps:
    async def test_independent_steps_run_at_the_same_time(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Both steps' channels are started before either finishes."""
        slow_bureau = bureau(Scripted.passes(delay=5))
        slow_sms = ScriptedChannel("sms_code", [Scripted.passes(delay=5)])
        async with Verifier(
            bureau_sms_policy(
                steps=[
                    Step(id="bureau", channel="credit_bureau"),
                    Step(id="sms", channel="sms_code"),
                ]
            ),
            channels=[slow_bureau, slow_sms],
            clock=clock,
        ) as verifier:
            session = await verifier.start(applicant)
            await verifier.wait_idle()
            assert len(slow_bureau.starts) == len(slow_sms.starts) == 1
            assert clock.sleepers == 3  # both starts, and the renewal of their claims
            assert await states(verifier, session.session_id) == {
                "bureau": "running",
                "sms": "running",
            }
            await settle(verifier, clock, 5)
            verdict = await verifier.wait(session.session_id)
        assert verdict.outcome is Outcome.APPROVED
        assert {s.result.finished_at for s in verdict.steps if s.result} == {
            clock.now()
        }

    async def test_dependent_step_waits(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A step ``after`` another starts only once that one ended."""
        sms = sms_code()
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code", after=["bureau"]),
            ]
        )
        async with Verifier(
            policy, channels=[bureau(Scripted.passes(delay=3)), sms], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            await verifier.wait_idle()
            assert sms.starts == []
            await settle(verifier, clock, 3)
            assert len(sms.starts) == 1
            assert await states(verifier, session.session_id) == {
                "bureau": "done",
                "sms": "waiting",
            }


class TestTimeout:
    async def test_step_timeout_starts_fallback(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A step without a result in time ends ``timeout`` and its fallback starts."""
        call = ScriptedChannel("phone_call", [Scripted.waits(Scripted.passes())])
        video = ScriptedChannel("video_sign", [Scripted.passes(score=0.8)])
        policy = Policy(
            name="p",
            version="1",
            steps=[
                Step(
                    id="call",
                    channel="phone_call",
                    timeout="10m",
                    fallback=Fallback(step="video", on=["timeout"]),
                ),
                Step(id="video", channel="video_sign"),
            ],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.video.status == 'passed'",
                    reason="video.ok",
                )
            ],
        )
        async with Verifier(policy, channels=[call, video], clock=clock) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock, 599)
            assert video.starts == []
            await settle(verifier, clock, 1)
            verdict = await verifier.wait(session.session_id)
            stored = await verifier.get(session.session_id)
            assert stored.step("call").result is not None
            assert stored.step("call").result.status is ResultStatus.TIMEOUT
            assert stored.step("video").triggered_by == "call"
            assert [c.attempt for c in call.cancels] == [1]
            assert len(video.starts) == 1
            assert verdict.outcome is Outcome.APPROVED
            assert await verifier.store.timers(session.session_id) == []
            await verify_trail(verifier, stored)

    async def test_timeout_cancels_a_running_start(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A channel still inside ``start`` at the timeout is cancelled."""
        call = ScriptedChannel("phone_call", [Scripted.passes(delay=3600)])
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="call", channel="phone_call", timeout="1m")],
        )
        async with Verifier(policy, channels=[call], clock=clock) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock, 60)
            await nothing_left_asleep(verifier, clock)
            verdict = await verifier.wait(session.session_id)
            assert verdict.outcome is Outcome.REVIEW
            assert verdict.steps[0].result is not None
            assert verdict.steps[0].result.status is ResultStatus.TIMEOUT
            assert await verifier.store.pending_effects() == []


class TestRetry:
    async def test_transient_errors_are_retried_with_backoff(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Retryable errors are retried after exponential backoff on the clock, same key."""
        flaky = bureau(
            Scripted.raises(ProviderUnavailableError(message="503", provider="b")),
            Scripted.raises(ProviderUnavailableError(message="503", provider="b")),
            Scripted.passes(signals=["identity_match"]),
        )
        policy = Policy(
            name="p",
            version="1",
            steps=[
                Step(
                    id="bureau",
                    channel="credit_bureau",
                    retry=RetrySettings(attempts=3, wait_initial=1, wait_max=10),
                )
            ],
        )
        async with Verifier(policy, channels=[flaky], clock=clock) as verifier:
            session = await verifier.start(applicant)
            await verifier.wait_idle()
            assert len(flaky.starts) == 1
            await settle(verifier, clock, 0.999)
            assert len(flaky.starts) == 1
            await settle(verifier, clock, 0.001)
            assert len(flaky.starts) == 2
            await settle(verifier, clock, 1.999)
            assert len(flaky.starts) == 2
            await settle(verifier, clock, 0.001)
            assert len(flaky.starts) == 3
            verdict = await verifier.wait(session.session_id)
        assert {c.idempotency_key for c in flaky.starts} == {
            f"{session.session_id}:bureau:1"
        }
        assert verdict.steps[0].result is not None
        assert verdict.steps[0].result.status is ResultStatus.PASSED
        assert verdict.steps[0].result.attempts == 1

    async def test_retry_after_is_honoured(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A rate-limited call waits the vendor's ``retry_after`` instead of the backoff."""
        throttled = bureau(
            Scripted.raises(
                ProviderRateLimitedError(message="429", provider="b", retry_after=7)
            ),
            Scripted.passes(),
        )
        policy = Policy(
            name="p",
            version="1",
            steps=[
                Step(
                    id="bureau",
                    channel="credit_bureau",
                    retry=RetrySettings(attempts=2, wait_initial=1, wait_max=10),
                )
            ],
        )
        async with Verifier(policy, channels=[throttled], clock=clock) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock, 6.5)
            assert len(throttled.starts) == 1
            await settle(verifier, clock, 0.5)
            assert len(throttled.starts) == 2
            verdict = await verifier.wait(session.session_id)
        assert verdict.steps[0].result is not None
        assert verdict.steps[0].result.status is ResultStatus.PASSED

    async def test_exhausted_retries_fail_over(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """When a provider's retries run out, the next provider gets attempt 2."""
        channel = ScriptedChannel(
            "credit_bureau",
            lambda context: [
                Scripted.raises(
                    ProviderUnavailableError(message="down", provider="first")
                )
                if context.provider == "first"
                else Scripted.passes()
            ],
        )
        policy = Policy(
            name="p",
            version="1",
            steps=[
                Step(
                    id="bureau",
                    channel="credit_bureau",
                    providers=["first", "second"],
                    retry=RetrySettings(attempts=2, wait_initial=1),
                )
            ],
        )
        async with Verifier(policy, channels=[channel], clock=clock) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock, 1)
            verdict = await verifier.wait(session.session_id)
        assert [(c.provider, c.attempt) for c in channel.starts] == [
            ("first", 1),
            ("first", 1),
            ("second", 2),
        ]
        result = verdict.steps[0].result
        assert result is not None
        assert result.status is ResultStatus.PASSED
        assert result.provider == "second"
        assert result.attempts == 2


class TestFailover:
    async def test_permanent_error_fails_over_at_once(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A rejected call is not retried: the next provider starts with a new key."""
        sms = ScriptedChannel(
            "sms_code",
            lambda context: [
                Scripted.raises(
                    ProviderRejectedError(message="bad number", provider="twilio")
                )
                if context.provider == "twilio"
                else Scripted.waits(Scripted.passes(), expect=CODE)
            ],
        )
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code", providers=["twilio", "vonage"]),
            ]
        )
        async with Verifier(
            policy, channels=[bureau(), sms], clock=clock, new_id=ids()
        ) as verifier:
            await verifier.start(applicant)
            await verifier.wait_idle()
            assert [(c.provider, c.attempt, c.idempotency_key) for c in sms.starts] == [
                ("twilio", 1, "s1:sms:1"),
                ("vonage", 2, "s1:sms:2"),
            ]
            record = (await verifier.get("s1")).step("sms")
            assert record.state is StepState.WAITING
            assert record.errors == ("ProviderRejectedError: bad number",)
            session = await verifier.submit("s1", "sms", CODE)
            assert session.verdict is not None
            assert session.verdict.outcome is Outcome.APPROVED
            result = session.step("sms").result
            assert result is not None
            assert result.provider == "vonage"
            assert result.attempts == 2
            await verify_trail(verifier, session)

    async def test_every_provider_failing_ends_in_error(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """When the last provider fails too, the step ends with an ``error`` result."""
        sms = ScriptedChannel(
            "sms_code",
            lambda context: [
                Scripted.raises(
                    ProviderRejectedError(
                        message="refused", provider=context.provider or ""
                    )
                )
            ],
        )
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code", providers=["twilio", "vonage"]),
            ]
        )
        async with Verifier(policy, channels=[bureau(), sms], clock=clock) as verifier:
            session = await verifier.start(applicant)
            verdict = await verifier.wait(session.session_id)
        assert len(sms.starts) == 2
        assert verdict.outcome is Outcome.REVIEW
        summary = verdict.steps[1]
        assert summary.result is not None
        assert summary.result.status is ResultStatus.ERROR
        assert summary.result.provider == "vonage"
        assert summary.result.detail == "ProviderRejectedError: refused"

    async def test_other_sdk_errors_end_the_attempt(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A non-provider SDK error from ``start`` errors the attempt, naming its provider."""
        channel = bureau(
            Scripted.raises(InvalidInputError(message="no address", field="address"))
        )
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="bureau", channel="credit_bureau", providers=["experian"])],
        )
        async with Verifier(policy, channels=[channel], clock=clock) as verifier:
            verdict = await verifier.run(applicant)
        result = verdict.steps[0].result
        assert result is not None
        assert result.status is ResultStatus.ERROR
        assert result.provider == "experian"
        assert result.detail == "InvalidInputError: no address"


class TestFallback:
    def policy(self) -> Policy:
        """A call falling back to video on failure."""
        return Policy(
            name="p",
            version="1",
            steps=[
                Step(
                    id="call",
                    channel="phone_call",
                    fallback=Fallback(step="video", on=["failed"]),
                ),
                Step(id="video", channel="video_sign"),
            ],
        )

    async def test_failed_step_starts_its_fallback(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A failed step starts its fallback."""
        video = ScriptedChannel("video_sign", [Scripted.passes()])
        call = ScriptedChannel("phone_call", [Scripted.fails(signals=["no_answer"])])
        async with Verifier(
            self.policy(), channels=[call, video], clock=clock
        ) as verifier:
            verdict = await verifier.run(applicant)
        assert [s.state for s in verdict.steps] == ["done", "done"]
        assert len(video.starts) == 1

    async def test_passed_step_skips_its_fallback(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A fallback is skipped when its step does not end badly."""
        video = ScriptedChannel("video_sign", [Scripted.passes()])
        call = ScriptedChannel("phone_call", [Scripted.passes()])
        async with Verifier(
            self.policy(), channels=[call, video], clock=clock
        ) as verifier:
            verdict = await verifier.run(applicant)
        assert [s.state for s in verdict.steps] == ["done", "skipped"]
        assert video.starts == []


class _Renewals(MemoryStore):
    """A memory store noting each renewal of claims; the first ``failing`` ones fail with a store's bug."""

    def __init__(self, failing: int = 0) -> None:
        super().__init__()
        self.renewals: list[list[tuple[str, str]]] = []
        self.failing = failing

    async def extend_effect_claims(
        self, owner: str, effects: Sequence[tuple[str, str]], /, *, until: datetime
    ) -> int:
        self.renewals.append(list(effects))
        if len(self.renewals) <= self.failing:
            raise KeyError("a bug in the store")
        return await super().extend_effect_claims(owner, effects, until=until)


class TestClaimRenewal:
    async def test_one_renewal_serves_effects_that_come_and_go(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Claims are renewed every third of the lease while effects run; the renewal ends when none does."""
        store = _Renewals()
        renewals = store.renewals
        slow = bureau(Scripted.passes(delay=25), Scripted.passes(delay=25))
        policy = Policy(
            name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
        )
        async with Verifier(
            policy, channels=[slow], store=store, clock=clock
        ) as verifier:
            first = await verifier.start(applicant)
            await verifier.wait_idle()
            assert clock.sleepers == 2  # the bureau, and the renewal of its claim
            await settle(verifier, clock, 25)
            assert (await verifier.get(first.session_id)).verdict is not None
            assert len(renewals) == 2  # at 10 s and 20 s
            assert clock.sleepers == 1  # the renewal, until it wakes
            await settle(verifier, clock, 5)
            assert clock.sleepers == 0  # it woke to find nothing running
            assert len(renewals) == 2

            second = await verifier.start(applicant)  # starts it again
            await settle(verifier, clock, RENEWAL)
            assert len(renewals) == 3
            assert [sid for sid, _ in renewals[-1]] == [second.session_id]
            await settle(verifier, clock, 15)
            await nothing_left_asleep(verifier, clock)
            assert (await verifier.get(second.session_id)).verdict is not None

    async def test_a_failed_renewal_does_not_end_the_renewals(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A renewal that fails with a store's bug is logged, and the next one still goes."""
        store = _Renewals(failing=1)
        renewals = store.renewals
        slow = bureau(Scripted.passes(delay=25))
        policy = Policy(
            name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
        )
        async with Verifier(
            policy, channels=[slow], store=store, clock=clock
        ) as verifier:
            with caplog.at_level(logging.ERROR, logger="multiverify"):
                session = await verifier.start(applicant)
                await verifier.wait_idle()
                await settle(verifier, clock, 25)
            assert len(renewals) == 2  # at 10 s (failed) and 20 s
            assert "could not renew the claims of 1 effects" in caplog.text
            assert (await verifier.get(session.session_id)).verdict is not None
            await settle(verifier, clock, 10)
            await nothing_left_asleep(verifier, clock)


class TestEarlyDecision:
    async def test_reject_cancels_other_active_steps(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A fraud alert rejects at once: waiting and running steps are cancelled."""
        sms = sms_code()
        call = ScriptedChannel("phone_call", [Scripted.passes(delay=600)])
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code"),
                Step(id="call", channel="phone_call"),
            ]
        )
        fraud = bureau(Scripted.ends("passed", signals=["fraud_alert"], delay=5))
        async with Verifier(
            policy, channels=[fraud, sms, call], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            waiting = asyncio.ensure_future(verifier.wait(session.session_id))
            await verifier.wait_idle()
            assert clock.sleepers == 3  # two starts, and the renewal of their claims
            await settle(verifier, clock, 5)
            verdict = await waiting
            assert verdict.outcome is Outcome.REJECTED
            assert [r.code for r in verdict.reasons] == ["bureau.fraud_alert"]
            assert [s.state for s in verdict.steps] == [
                "done",
                "cancelled",
                "cancelled",
            ]
            assert [c.attempt for c in sms.cancels] == [1]
            assert [c.attempt for c in call.cancels] == [1]
            await nothing_left_asleep(verifier, clock)  # the call's start was stopped
            assert await verifier.store.pending_effects() == []
            await verify_trail(verifier, await verifier.get(session.session_id))


class TestDeadline:
    async def test_deadline_takes_on_deadline(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """At the deadline the session takes ``on_deadline`` and waiting steps are cancelled."""
        sms = sms_code()
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code"),
            ],
            deadline="30m",
            on_deadline="rejected",
        )
        async with Verifier(policy, channels=[bureau(), sms], clock=clock) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock, timedelta(minutes=30).total_seconds())
            verdict = await verifier.wait(session.session_id)
            assert verdict.outcome is Outcome.REJECTED
            assert verdict.decided_by == "deadline"
            assert [r.code for r in verdict.reasons] == ["session.deadline"]
            assert verdict.decided_at == clock.now()
            assert [c.step_id for c in sms.cancels] == ["sms"]
            assert await verifier.store.timers() == []
            await verify_trail(verifier, await verifier.get(session.session_id))


class TestSubmit:
    async def test_right_code_passes(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A submitted code reaches the channel and the session is decided."""
        sms = sms_code()
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            session = await verifier.submit(started.session_id, "sms", CODE)
            assert session.verdict is not None
            assert session.verdict.outcome is Outcome.APPROVED
            ((context, message),) = sms.messages
            assert message == Submission(payload=CODE)
            assert context.attempt == 1
            assert await verifier.store.timers(started.session_id) == []

    async def test_wrong_code_keeps_waiting(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A wrong code leaves the step waiting with its challenge."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            session = await verifier.submit(started.session_id, "sms", {"code": "0"})
            assert session.step("sms").state is StepState.WAITING
            assert session.challenges[0].kind == "code"
            session = await verifier.submit(started.session_id, "sms", CODE)
            assert session.status is SessionStatus.DECIDED

    async def test_wrong_code_can_fail(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """With ``otherwise``, a wrong code fails the step."""
        async with Verifier(
            bureau_sms_policy(),
            channels=[bureau(), sms_code(otherwise=True)],
            clock=clock,
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            session = await verifier.submit(started.session_id, "sms", {"code": "0"})
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.REVIEW
        result = session.step("sms").result
        assert result is not None
        assert result.signal_names == ("wrong_code",)

    async def test_typed_errors(self, clock: FakeClock, applicant: Applicant) -> None:
        """Unknown session or step, step not waiting, no mapping, finished: each typed."""
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code"),
                Step(id="call", channel="phone_call", after=["sms"]),
            ],
            rules=[REJECT_FRAUD],
        )
        call = ScriptedChannel("phone_call", [Scripted.passes()])
        async with Verifier(
            policy, channels=[bureau(), sms_code(), call], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            sid = session.session_id
            await verifier.wait_idle()
            before = await verifier.store.load(sid)
            with pytest.raises(SessionNotFoundError):
                await verifier.submit("nope", "sms", CODE)
            with pytest.raises(StepNotFoundError) as unknown:
                await verifier.submit(sid, "nope", CODE)
            assert unknown.value.step_id == "nope"
            with pytest.raises(StepNotWaitingError, match="pending"):
                await verifier.submit(sid, "call", CODE)
            with pytest.raises(StepNotWaitingError, match="done") as done:
                await verifier.submit(sid, "bureau", CODE)
            assert (done.value.session_id, done.value.step_id) == (sid, "bureau")
            for payload in ("123456", None, ["123456"]):
                with pytest.raises(InvalidInputError) as bad:
                    await verifier.submit(sid, "sms", payload)  # type: ignore[arg-type]
                assert bad.value.field == "payload"
            assert await verifier.store.load(sid) == before
            await verifier.submit(sid, "sms", CODE)
            await verifier.wait_idle()
            assert (await verifier.get(sid)).finished
            with pytest.raises(SessionFinishedError):
                await verifier.submit(sid, "sms", CODE)


class TestHandleEvent:
    async def test_event_finishes_a_waiting_step(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A provider event for the current attempt reaches the channel."""
        sms = sms_code()
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            event = ProviderEvent(
                session_id=started.session_id,
                step_id="sms",
                kind="delivered",
                attempt=1,
            )
            session = await verifier.handle_event(event)
        assert session is not None
        assert session.status is SessionStatus.DECIDED
        assert sms.messages[0][1] == event

    async def test_same_delivery_twice_is_ignored(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """The second delivery of a dedupe key returns None and changes nothing."""
        call = ScriptedChannel("phone_call", [Scripted.waits(Scripted.passes())])
        policy = Policy(
            name="p", version="1", steps=[Step(id="call", channel="phone_call")]
        )
        async with Verifier(policy, channels=[call], clock=clock) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            sid = started.session_id
            event = ProviderEvent(
                session_id=sid, step_id="call", kind="completed", dedupe_key="d1"
            )
            assert await verifier.handle_event(event) is not None
            before = await verifier.store.load(sid)
            events_before = await verifier.store.audit_events(sid)
            assert await verifier.handle_event(event) is None
            assert await verifier.store.load(sid) == before
            assert await verifier.store.audit_events(sid) == events_before
        assert len(call.messages) == 1

    @pytest.mark.parametrize("forgets", [True, False])
    async def test_a_delivery_that_fails_to_save_is_not_spent(
        self,
        clock: FakeClock,
        applicant: Applicant,
        forgets: bool,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A delivery the store could not save gives its key back, so the redelivery applies.

        When the key cannot be given back either, the delivery's own error
        still reaches the caller and the lost key is logged.
        """
        call = ScriptedChannel("phone_call", [Scripted.waits(Scripted.passes())])
        policy = Policy(
            name="p", version="1", steps=[Step(id="call", channel="phone_call")]
        )
        store = _Outage()
        async with Verifier(
            policy, channels=[call], clock=clock, store=store
        ) as verifier:
            sid = (await verifier.start(applicant)).session_id
            await verifier.wait_idle()
            event = ProviderEvent(
                session_id=sid, step_id="call", kind="completed", dedupe_key="d1"
            )
            store.down, store.forgets = True, forgets
            with (
                caplog.at_level(logging.WARNING, logger="multiverify"),
                pytest.raises(StoreUnavailableError),
            ):
                await verifier.handle_event(event)
            store.down = False
            redelivered = await verifier.handle_event(event)
            if forgets:
                assert redelivered is not None
                assert redelivered.status is SessionStatus.DECIDED
                assert "could not be given back" not in caplog.text
            else:
                assert redelivered is None
                assert "d1 of session" in caplog.text
        assert len(call.messages) == (2 if forgets else 1)

    async def test_wrong_attempt_is_refused(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """An event for another attempt than the current one is refused."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            event = ProviderEvent(
                session_id=started.session_id, step_id="sms", kind="x", attempt=2
            )
            with pytest.raises(StepNotWaitingError, match="attempt 2"):
                await verifier.handle_event(event)
            stored = await verifier.get(started.session_id)
            assert stored.step("sms").state is StepState.WAITING
            trail = await verifier.store.audit_events(started.session_id)
            assert trail[-1].kind == "event.late"
            assert trail[-1].data["attempt"] == 2
            assert "attempt 2" in trail[-1].data["reason"]


class GatedSms(ScriptedChannel):
    """An SMS channel whose first ``handle`` waits until another party reaches the barrier."""

    def __init__(self, barrier: asyncio.Barrier) -> None:
        super().__init__(
            "sms_code",
            [Scripted.waits(Scripted.passes(signals=["code_verified"]), expect=CODE)],
        )
        self._barrier: asyncio.Barrier | None = barrier

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        if self._barrier is not None:  # only the first message waits
            barrier, self._barrier = self._barrier, None
            _ = await barrier.wait()
        return await super().handle(context, state, message)


@pytest.fixture(params=["memory", "sqlite"])
async def replica_stores(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    """Two replicas' stores: one shared MemoryStore, or two SqliteStores on one file."""
    stores: tuple[SessionStore, SessionStore]
    if request.param == "memory":
        shared = MemoryStore()
        stores = (shared, shared)
    else:
        path = tmp_path / "shared.db"
        stores = (SqliteStore(path, clock=clock), SqliteStore(path, clock=clock))
    yield stores
    for store in stores:
        await store.aclose()


class TestReplicas:
    async def test_concurrent_submits_apply_once(
        self,
        replica_stores: tuple[SessionStore, SessionStore],
        clock: FakeClock,
        applicant: Applicant,
    ) -> None:
        """Two replicas submit at once: one applies, the other gets a typed error."""
        store_a, store_b = replica_stores
        barrier = asyncio.Barrier(2)
        hooks: list[str] = []

        async def hook(session: Session, verdict: Verdict) -> None:
            hooks.append(session.session_id)

        a = Verifier(
            bureau_sms_policy(),
            channels=[bureau(), GatedSms(barrier)],
            store=store_a,
            clock=clock,
            on_verdict=[hook],
        )
        b = Verifier(
            bureau_sms_policy(),
            channels=[bureau(), GatedSms(barrier)],
            store=store_b,
            clock=clock,
            on_verdict=[hook],
        )
        started = await a.start(applicant)
        sid = started.session_id
        await a.wait_idle()
        _, version = await store_a.load(sid)
        outcomes = await asyncio.gather(
            a.submit(sid, "sms", CODE),
            b.submit(sid, "sms", CODE),
            return_exceptions=True,
        )
        await a.wait_idle()
        await b.wait_idle()
        applied = [o for o in outcomes if isinstance(o, Session)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(applied) == len(refused) == 1
        assert isinstance(refused[0], ConcurrentUpdateError | StepNotWaitingError)
        stored, stored_version = await store_b.load(sid)
        assert stored_version == version + 1
        assert stored == applied[0]
        assert stored.verdict is not None
        assert stored.verdict.outcome is Outcome.APPROVED
        assert hooks == [sid]
        assert await store_a.pending_effects() == []
        await verify_trail(a, stored)
        await a.aclose()
        await b.aclose()

    async def test_second_replica_after_the_first(
        self,
        replica_stores: tuple[SessionStore, SessionStore],
        clock: FakeClock,
        applicant: Applicant,
    ) -> None:
        """Input reaches the session from any replica; a late repeat is refused."""
        store_a, store_b = replica_stores
        a = Verifier(
            bureau_sms_policy(),
            channels=[bureau(), sms_code()],
            store=store_a,
            clock=clock,
        )
        b = Verifier(
            bureau_sms_policy(),
            channels=[bureau(), sms_code()],
            store=store_b,
            clock=clock,
        )
        started = await a.start(applicant)
        await a.wait_idle()
        session = await b.submit(started.session_id, "sms", CODE)
        assert session.status is SessionStatus.DECIDED
        with pytest.raises(SessionFinishedError):
            await a.submit(started.session_id, "sms", CODE)
        await a.aclose()
        await b.aclose()

    async def test_dedupe_across_replicas(
        self,
        replica_stores: tuple[SessionStore, SessionStore],
        clock: FakeClock,
        applicant: Applicant,
    ) -> None:
        """A webhook redelivered to another replica is ignored there."""
        store_a, store_b = replica_stores
        call_a = ScriptedChannel("phone_call", [Scripted.waits(Scripted.passes())])
        call_b = ScriptedChannel("phone_call", [Scripted.waits(Scripted.passes())])
        policy = Policy(
            name="p", version="1", steps=[Step(id="call", channel="phone_call")]
        )
        a = Verifier(policy, channels=[call_a], store=store_a, clock=clock)
        b = Verifier(policy, channels=[call_b], store=store_b, clock=clock)
        started = await a.start(applicant)
        await a.wait_idle()
        event = ProviderEvent(
            session_id=started.session_id, step_id="call", kind="x", dedupe_key="k"
        )
        assert await a.handle_event(event) is not None
        assert await b.handle_event(event) is None
        assert call_b.messages == []
        await a.aclose()
        await b.aclose()

    async def test_conflicting_provider_event_is_not_lost(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """An event whose save meets a conflict is applied, not dropped with its dedupe key."""
        shared = MemoryStore()
        barrier = asyncio.Barrier(2)
        policy = bureau_sms_policy(rules=[])
        a = Verifier(
            policy, channels=[bureau(), GatedSms(barrier)], store=shared, clock=clock
        )
        started = await a.start(applicant)
        sid = started.session_id
        await a.wait_idle()

        async def other_writer() -> None:
            # Another replica saves the session while the event is handled.
            _ = await barrier.wait()
            session, version = await shared.load(sid)
            await shared.save(session, expected_version=version)

        event = ProviderEvent(session_id=sid, step_id="sms", kind="x", dedupe_key="k")
        handled, _ = await asyncio.gather(a.handle_event(event), other_writer())
        assert handled is not None
        assert handled.step("sms").state is StepState.DONE
        assert await a.handle_event(event) is None
        await a.aclose()


class TestCancel:
    async def test_cancel_stops_active_steps(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Cancelling stops every active step; waiters learn it was cancelled."""
        sms = sms_code()
        slow = bureau(Scripted.passes(delay=100))
        async with Verifier(
            bureau_sms_policy(deadline="1h"), channels=[slow, sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            sid = started.session_id
            waiting = asyncio.ensure_future(verifier.wait(sid))
            await verifier.wait_idle()
            session = await verifier.cancel(sid, reason="applicant withdrew")
            await verifier.wait_idle()
            assert session.status is SessionStatus.CANCELLED
            assert session.verdict is None
            assert [r.state for r in session.steps] == [StepState.CANCELLED] * 2
            assert len(sms.cancels) == len(slow.cancels) == 1
            await nothing_left_asleep(verifier, clock)
            assert await verifier.store.timers() == []
            with pytest.raises(SessionFinishedError, match="cancelled"):
                await waiting
            with pytest.raises(SessionFinishedError, match="cancelled"):
                await verifier.wait(sid)
            with pytest.raises(SessionFinishedError, match="already cancelled"):
                await verifier.cancel(sid)
            await verify_trail(verifier, await verifier.get(sid))

    async def test_cancelling_a_channel_may_fail(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A provider error while cancelling a step is logged, not raised."""

        class Stubborn(ScriptedChannel):
            async def cancel(self, context: StepContext, state: Any, /) -> None:
                raise ProviderUnavailableError(message="down", provider="x")

        stubborn = Stubborn("sms_code", [Scripted.waits(Scripted.passes())])
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), stubborn], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            await verifier.cancel(started.session_id)
            await verifier.wait_idle()
            assert await verifier.store.pending_effects() == []
        assert "cancelling step sms" in caplog.text


class TestLateInput:
    async def test_a_code_typed_after_the_deadline_on_a_replica_with_no_worker_expires_the_session(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """The deadline decides even when no replica fired its timer: a code typed two hours late does not approve."""
        policy = Policy(
            name="late",
            version="1",
            steps=[Step(id="sms", channel="sms_code", timeout="10m")],
            rules=[
                Rule(
                    outcome="approved",
                    when="steps.sms.status == 'passed'",
                    reason="sms.confirmed",
                )
            ],
            deadline="30m",
        )
        store = MemoryStore()

        def sms() -> ScriptedChannel:
            return ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes())])

        first = Verifier(policy, channels=[sms()], store=store, clock=clock)
        started = await first.start(applicant)
        await first.wait_idle()
        await first.aclose()  # its timers went with it, and no worker runs
        await clock.advance(2 * 3600)

        async with Verifier(
            policy, channels=[sms()], store=store, clock=clock
        ) as other:
            with pytest.raises(SessionFinishedError):
                await other.submit(started.session_id, "sms", {"code": "123456"})
            session = await other.get(started.session_id)
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.EXPIRED
        assert session.verdict.decided_at == started.created_at + timedelta(minutes=30)


class TestOnVerdict:
    async def test_a_replica_stopped_during_a_hook_leaves_the_verdict_to_announce_again(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """The announcement leaves the outbox once its hooks returned: stopped in one, it is announced again."""
        store = MemoryStore()
        entered = asyncio.Event()

        async def stuck(session: Session, verdict: Verdict) -> None:
            entered.set()
            await asyncio.Event().wait()  # the replica stops here

        first = Verifier(
            ONE_STEP, channels=[bureau()], store=store, clock=clock, on_verdict=[stuck]
        )
        started = await first.start(applicant)
        await entered.wait()
        await first.aclose()

        [pending] = await store.pending_effects()
        assert isinstance(pending.effect, RecordVerdict)
        assert pending.claimed_until is not None
        assert pending.claimed_until <= clock.now()  # given back: no lease to wait out

        announced: list[tuple[str, Outcome]] = []

        async def record(session: Session, verdict: Verdict) -> None:
            announced.append((session.session_id, verdict.outcome))

        async with Verifier(
            ONE_STEP, channels=[bureau()], store=store, clock=clock, on_verdict=[record]
        ) as second:
            assert await second.resume() == 1
            await second.wait_idle()
        assert announced == [(started.session_id, Outcome.REVIEW)]
        assert await store.pending_effects() == []

    async def test_a_long_hook_keeps_the_claim_on_its_announcement(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """While a hook runs past the claim's lease, the claim is renewed, so no worker announces the verdict meanwhile."""
        store = MemoryStore()
        entered = asyncio.Event()
        release = asyncio.Event()

        async def slow(session: Session, verdict: Verdict) -> None:
            entered.set()
            await release.wait()

        async with Verifier(
            ONE_STEP,
            channels=[bureau()],
            store=store,
            clock=clock,
            on_verdict=[slow],
            lease="30s",
        ) as verifier:
            await verifier.start(applicant)
            await entered.wait()
            for _ in range(4):
                await clock.advance(15)
            [pending] = await store.pending_effects()
            assert pending.claimed_until is not None
            assert pending.claimed_until > clock.now()
            release.set()
            await verifier.wait_idle()
            assert await store.pending_effects() == []

    async def test_hooks_run_once_and_a_failing_one_is_contained(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every hook runs once per decided session, even after a failing one and stale input."""
        calls: list[tuple[str, Outcome]] = []

        async def broken(session: Session, verdict: Verdict) -> None:
            raise RuntimeError("boom")

        async def record(session: Session, verdict: Verdict) -> None:
            assert session.verdict == verdict
            calls.append((session.session_id, verdict.outcome))

        resend = ResendChannel()
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="resend"),
            ],
            channels={"resend": ResendChannel.SPEC},
            rules=[REJECT_FRAUD],
        )
        fraud = bureau(Scripted.ends("passed", signals=["fraud_alert"], delay=30))
        caplog.set_level(logging.ERROR, logger="multiverify")
        async with Verifier(
            policy,
            channels=[fraud, resend],
            clock=clock,
            on_verdict=[broken, record],
        ) as verifier:
            started = await verifier.start(applicant)
            sid = started.session_id
            await settle(verifier, clock, 30)
            assert calls == [(sid, Outcome.REJECTED)]
            decided = await verifier.get(sid)
            # The verdict cancelled the resend timer; a stale timer input that
            # still arrives (another replica fired it) changes nothing.
            assert await verifier.store.timers(sid) == []
            await verifier._apply(
                sid,
                verifier_module.TimerFired(
                    timer_id="step:sms:1:channel:resend", at=clock.now()
                ),
            )
            await settle(verifier, clock, 30)
            after = await verifier.get(sid)
            assert after.inputs == decided.inputs + 1
            assert after.verdict == decided.verdict
            assert calls == [(sid, Outcome.REJECTED)]
            assert await verifier.wait(sid) == decided.verdict
            await verify_trail(verifier, after)
        assert "on_verdict hook failed" in caplog.text


@attrs.frozen(kw_only=True)
class ResendState:
    """How many codes the resend channel sent."""

    sent: int


class ResendChannel:
    """A small custom channel: resends its code every minute until it gets one."""

    SPEC = ChannelSpec(name="resend", signals={"code_verified"})

    def __init__(self) -> None:
        self.dues: list[TimerDue] = []
        self.cancelled: list[StepContext] = []

    @property
    def spec(self) -> ChannelSpec:
        return self.SPEC

    @property
    def state_type(self) -> type[ResendState]:
        return ResendState

    async def start(self, context: StepContext, /) -> StepOutcome:
        return Waiting(
            state=ResendState(sent=1),
            challenge=Challenge(step_id=context.step_id, kind="code"),
            timers=(("resend", context.clock.now() + timedelta(minutes=1)),),
        )

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        assert isinstance(state, ResendState)
        match message:
            case TimerDue():
                self.dues.append(message)
                return Waiting(
                    state=ResendState(sent=state.sent + 1),
                    timers=(("resend", message.at + timedelta(minutes=1)),),
                )
            case _:
                return Finished(
                    result=ChannelResult(status="passed", facts={"sent": state.sent}),
                    state=state,
                )

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        self.cancelled.append(context)


class StatelessChannel(ResendChannel):
    """The resend channel, declaring no state type and returning a bare value."""

    SPEC = ChannelSpec(name="stateless")

    @property
    def state_type(self) -> None:
        return None

    async def start(self, context: StepContext, /) -> StepOutcome:
        return Waiting(state=7)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        assert state is None
        return Finished(result=ChannelResult(status="passed"))


class TestChannelTimers:
    async def test_channel_timers_come_back_as_timer_due(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A channel's ``Waiting.timers`` fire on the clock as ``TimerDue`` with its state."""
        resend = ResendChannel()
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="sms", channel="resend")],
            channels={"resend": ResendChannel.SPEC},
        )
        start = clock.now()
        async with Verifier(policy, channels=[resend], clock=clock) as verifier:
            started = await verifier.start(applicant)
            sid = started.session_id
            await settle(verifier, clock, 59)
            assert resend.dues == []
            await settle(verifier, clock, 1)
            assert resend.dues == [
                TimerDue(name="resend", at=start + timedelta(minutes=1))
            ]
            await settle(verifier, clock, 60)
            assert [due.at for due in resend.dues] == [
                start + timedelta(minutes=1),
                start + timedelta(minutes=2),
            ]
            record = (await verifier.get(sid)).step("sms")
            assert record.state is StepState.WAITING
            assert record.channel_state == {"sent": 3}
            assert record.challenge == Challenge(step_id="sms", kind="code")
            session = await verifier.submit(sid, "sms", CODE)
            result = session.step("sms").result
            assert result is not None
            assert result.facts == {"sent": 3}
            await verify_trail(verifier, session)

    async def test_stateless_channel(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A channel without a state type gets ``None`` back, whatever it returned."""
        channel = StatelessChannel()
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="x", channel="stateless")],
            channels={"stateless": StatelessChannel.SPEC},
        )
        async with Verifier(policy, channels=[channel], clock=clock) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            record = (await verifier.get(started.session_id)).step("x")
            assert record.channel_state == {"value": 7}
            session = await verifier.submit(started.session_id, "x", {})
        assert session.status is SessionStatus.DECIDED


class TestAudit:
    async def test_trail_verifies_and_replays(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """The audit trail of a finished session verifies and replays to its verdict."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock, 10)
            session = await verifier.submit(started.session_id, "sms", CODE)
            count = await verify_trail(verifier, session)
            events = await verifier.store.audit_events(session.session_id)
        assert events[0].kind == "session.created"
        assert events[-1].kind == "verdict"
        assert events[-1].data["outcome"] == "approved"
        assert count == len(events)
        assert "13800138000" not in "".join(event.to_json() for event in events)

    async def test_provider_calls_and_effects_are_recorded(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Every provider try is in the trail, and each input lists the effects it led to."""
        flaky = bureau(
            Scripted.raises(ProviderUnavailableError(message="503", provider="b")),
            Scripted.passes(signals=["identity_match"]),
        )
        async with Verifier(
            bureau_sms_policy(), channels=[flaky, sms_code()], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock, 5)
            events = await verifier.store.audit_events(started.session_id)
        calls = [e.data["call"] for e in events if "call" in e.data]
        bureau_call = next(c for c in calls if c["step_id"] == "bureau")
        assert bureau_call["idempotency_key"] == f"{started.session_id}:bureau:1"
        assert [t["error"] for t in bureau_call["tries"]] == [
            "ProviderUnavailableError: 503",
            None,
        ]
        assert bureau_call["outcome"] == "StepFinished"
        start_input = next(
            e.data
            for e in events
            if e.kind == "input" and e.data["input"]["type"] == "Start"
        )
        assert {effect["type"] for effect in start_input["effects"]} >= {
            "StartStep",
            "ScheduleTimer",
        }
        AuditTrail.verify(events)

    async def test_a_vendor_error_quoting_the_applicant_is_redacted(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A vendor's error text that quotes the phone or name never reaches the
        trail, the session or the verdict in clear; the trail still replays."""
        quoting = f"The 'To' number {applicant.phone} ({applicant.name}) is not valid"
        rejecting = bureau(
            Scripted.raises(ProviderUnavailableError(message=quoting, provider="b")),
            Scripted.raises(ProviderRejectedError(message=quoting, provider="b")),
        )
        policy = bureau_sms_policy(
            steps=[
                Step(
                    id="bureau",
                    channel="credit_bureau",
                    retry=RetrySettings(attempts=2, wait_initial=1),
                )
            ],
            rules=[],
            default="rejected",
        )
        async with Verifier(policy, channels=[rejecting], clock=clock) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock, 2)
            session = await verifier.get(started.session_id)
            count = await verify_trail(verifier, session)
            events = await verifier.store.audit_events(session.session_id)
        redacted = "The 'To' number +86*******8000 (Z**** S**) is not valid"
        assert session.step("bureau").errors == (f"ProviderRejectedError: {redacted}",)
        assert session.verdict is not None
        texts = [event.to_json() for event in events]
        texts += [repr(session), session.verdict.explain()]
        assert count == len(events)
        assert redacted in "".join(texts)
        for raw in (applicant.phone, "13800138000", applicant.name):
            assert raw not in "".join(texts)


class TestFireDueTimers:
    async def test_fires_stored_due_timers(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``fire_due_timers`` fires the stored timers that are due, from any replica."""
        shared = MemoryStore()
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code"),
            ],
            deadline="10m",
        )
        a = Verifier(policy, channels=[bureau(), sms_code()], store=shared, clock=clock)
        started = await a.start(applicant)
        await a.wait_idle()
        await a.aclose()  # its armed timers are gone with it
        b = Verifier(policy, channels=[bureau(), sms_code()], store=shared, clock=clock)
        assert await b.fire_due_timers() == 0
        await clock.advance(600)
        assert await b.fire_due_timers() == 1
        await b.wait_idle()
        session = await b.get(started.session_id)
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.EXPIRED
        assert await shared.timers() == []
        await b.aclose()

    async def test_a_timer_that_fails_leaves_the_others_firing(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A session that cannot be loaded is logged; the due timers after it still fire."""
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code"),
            ],
            deadline="10m",
        )

        class Broken(MemoryStore):
            broken: str | None = None

            async def load(self, session_id: str, /) -> tuple[Session, int]:
                if session_id == self.broken:
                    raise RuntimeError("a row this release cannot read")
                return await super().load(session_id)

        shared = Broken()
        channels = [bureau(), sms_code()]
        a = Verifier(policy, channels=channels, store=shared, clock=clock)
        first = await a.start(applicant)
        second = await a.start(applicant)
        await a.wait_idle()
        await a.aclose()
        shared.broken = first.session_id
        b = Verifier(policy, channels=channels, store=shared, clock=clock)
        await clock.advance(600)

        assert await b.fire_due_timers() == 1

        await b.wait_idle()
        assert (await b.get(second.session_id)).finished
        assert f"session {first.session_id} failed" in caplog.text
        await b.aclose()


@pytest.fixture(params=["memory", "sqlite"])
async def restart_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Callable[[], SessionStore]]:
    """Makes the store of each 'process': a new SqliteStore on one file, or one MemoryStore."""
    made: list[SessionStore] = []
    shared = MemoryStore()

    def make() -> SessionStore:
        store: SessionStore = (
            shared
            if request.param == "memory"
            else SqliteStore(tmp_path / "verify.db", clock=clock)
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


class TestRestart:
    async def test_restart_mid_session_repeats_nothing(
        self, tmp_path: Path, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A new Verifier on the same SQLite file resumes; nothing is repeated or lost."""
        path = tmp_path / "verify.db"
        policy = bureau_sms_policy(deadline="1h")
        first_bureau, first_sms = bureau(), sms_code()
        first = Verifier(
            policy,
            channels=[first_bureau, first_sms],
            store=SqliteStore(path, clock=clock),
            clock=clock,
        )
        started = await first.start(applicant)
        sid = started.session_id
        await settle(first, clock, 30)
        assert await states(first, sid) == {"bureau": "done", "sms": "waiting"}
        assert len(first_sms.starts) == 1
        trail_before = await first.store.audit_events(sid)
        await first.aclose()
        await first.store.aclose()

        second_bureau, second_sms = bureau(), sms_code()
        verdicts: list[Verdict] = []

        async def hook(session: Session, verdict: Verdict) -> None:
            verdicts.append(verdict)

        async with Verifier(
            policy,
            channels=[second_bureau, second_sms],
            store=SqliteStore(path, clock=clock),
            clock=clock,
            on_verdict=[hook],
        ) as second:
            assert await second.resume() == 2  # the sms timeout and the deadline
            assert await second.resume() == 2  # re-arming is harmless
            await second.wait_idle()
            session = await second.get(sid)
            assert session.challenges[0].step_id == "sms"
            session = await second.submit(sid, "sms", CODE)
            await second.wait_idle()
            assert session.verdict is not None
            assert session.verdict.outcome is Outcome.APPROVED
            assert await second.wait(sid) == session.verdict
            assert verdicts == [session.verdict]
            assert second_sms.starts == []
            assert second_bureau.starts == []
            assert [context.attempt for context, _ in second_sms.messages] == [1]
            trail = await second.store.audit_events(sid)
            assert trail[: len(trail_before)] == trail_before
            await verify_trail(second, session)
            assert await second.store.pending_effects() == []
            assert await second.store.timers() == []
        await second.store.aclose()

    async def test_saved_start_is_run_once_on_resume(
        self,
        restart_store: Callable[[], SessionStore],
        clock: FakeClock,
        applicant: Applicant,
    ) -> None:
        """A crash after saving a StartStep but before running it: resume runs it once."""
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code"),
            ]
        )
        first_bureau, first_sms = bureau(), sms_code()
        first = Verifier(
            policy,
            channels=[first_bureau, first_sms],
            store=restart_store(),
            clock=clock,
        )
        started = await first.start(applicant)
        await first.aclose()  # before the spawned effects got to run
        assert first_bureau.starts == first_sms.starts == []
        pending = await first.store.pending_effects(started.session_id)
        assert sorted(p.effect.step_id for p in pending) == ["bureau", "sms"]  # type: ignore[union-attr]

        second_bureau, second_sms = bureau(), sms_code()
        async with Verifier(
            policy,
            channels=[second_bureau, second_sms],
            store=restart_store(),
            clock=clock,
        ) as second:
            assert await second.resume() == 2
            await second.wait_idle()
            assert len(second_bureau.starts) == len(second_sms.starts) == 1
            assert await second.store.pending_effects() == []
            assert await second.resume() == 0
            await second.wait_idle()
            assert len(second_bureau.starts) == len(second_sms.starts) == 1
            session = await second.submit(started.session_id, "sms", CODE)
            assert session.status is SessionStatus.DECIDED
            await verify_trail(second, session)

    async def test_crash_right_after_a_save(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A crash between the save and running its effects loses nothing on resume."""
        store = CrashingStore()
        policy = bureau_sms_policy(
            steps=[
                Step(id="bureau", channel="credit_bureau"),
                Step(id="sms", channel="sms_code", timeout="5m"),
            ],
            deadline="1h",
        )
        verdicts: list[Verdict] = []

        async def hook(session: Session, verdict: Verdict) -> None:
            verdicts.append(verdict)

        first_sms = sms_code()
        first = Verifier(
            policy, channels=[bureau(), first_sms], store=store, clock=clock
        )
        store.crash_on = bool
        with pytest.raises(Crash):
            await first.start(applicant)
        (sid,) = await store.session_ids()
        assert first_sms.starts == []
        await first.aclose()

        second_sms = sms_code()
        second = Verifier(
            policy,
            channels=[bureau(), second_sms],
            store=store,
            clock=clock,
            on_verdict=[hook],
        )
        # The start, the step timeout and the deadline: 4 saved effects, nothing armed yet.
        assert await second.resume() == 4
        await second.wait_idle()
        assert len(second_sms.starts) == 1
        assert await states(second, sid) == {"bureau": "done", "sms": "waiting"}
        assert {t.timer_id for t in await store.timers(sid)} == {
            "deadline",
            "step:sms:1:timeout",
        }
        # Now crash right after the verdict is saved, before anything is told.
        store.crash_on = lambda effects: any(
            type(e).__name__ == "RecordVerdict" for e in effects
        )
        with pytest.raises(Crash):
            await second.submit(sid, "sms", CODE)
        assert verdicts == []
        await second.aclose()

        third = Verifier(
            policy,
            channels=[bureau(), sms_code()],
            store=store,
            clock=clock,
            on_verdict=[hook],
        )
        assert await third.resume() >= 1
        await third.wait_idle()
        session = await third.get(sid)
        assert session.verdict is not None
        assert verdicts == [session.verdict]
        assert await store.pending_effects() == []
        assert await store.timers() == []
        await verify_trail(third, session)
        await third.aclose()

    async def test_resumed_start_is_cancelled_by_its_timeout(
        self,
        restart_store: Callable[[], SessionStore],
        clock: FakeClock,
        applicant: Applicant,
    ) -> None:
        """A start re-run by resume is tracked: its timeout cancels it like any other."""
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="call", channel="phone_call", timeout="1m")],
        )
        first_call = ScriptedChannel("phone_call", [Scripted.passes(delay=3600)])
        first = Verifier(
            policy, channels=[first_call], store=restart_store(), clock=clock
        )
        started = await first.start(applicant)
        await first.wait_idle()
        assert len(first_call.starts) == 1
        await first.aclose()  # mid-call

        second_call = ScriptedChannel("phone_call", [Scripted.passes(delay=3600)])
        async with Verifier(
            policy, channels=[second_call], store=restart_store(), clock=clock
        ) as second:
            assert await second.resume() == 2  # the start and its timeout
            await second.wait_idle()
            assert len(second_call.starts) == 1
            await settle(second, clock, 60)
            await nothing_left_asleep(second, clock)
            session = await second.get(started.session_id)
            assert session.verdict is not None
            result = session.step("call").result
            assert result is not None
            assert result.status is ResultStatus.TIMEOUT
            assert [c.attempt for c in second_call.cancels] == [1]
            assert await second.store.pending_effects() == []

    async def test_saved_timers_fire_after_resume(
        self,
        restart_store: Callable[[], SessionStore],
        clock: FakeClock,
        applicant: Applicant,
    ) -> None:
        """Timers saved before the restart are re-armed by resume and fire on the clock."""
        video = ScriptedChannel("video_sign", [Scripted.passes()])
        policy = Policy(
            name="p",
            version="1",
            steps=[
                Step(
                    id="sms",
                    channel="sms_code",
                    timeout="5m",
                    fallback=Fallback(step="video", on=["timeout"]),
                ),
                Step(id="video", channel="video_sign"),
            ],
            deadline="1h",
        )
        first = Verifier(
            policy,
            channels=[sms_code(), ScriptedChannel("video_sign", [Scripted.passes()])],
            store=restart_store(),
            clock=clock,
        )
        started = await first.start(applicant)
        await settle(first, clock, 60)
        await first.aclose()

        second_sms = sms_code()
        async with Verifier(
            policy, channels=[second_sms, video], store=restart_store(), clock=clock
        ) as second:
            assert await second.resume() == 2
            await settle(second, clock, 239)
            assert video.starts == []
            await settle(second, clock, 1)
            assert len(video.starts) == 1
            assert [c.attempt for c in second_sms.cancels] == [1]
            session = await second.get(started.session_id)
            assert session.verdict is not None
            assert session.verdict.outcome is Outcome.REVIEW
            await verify_trail(second, session)


class ContendedStore(MemoryStore):
    """A MemoryStore on which, while ``contended``, every save loses a race."""

    def __init__(self) -> None:
        super().__init__()
        self.contended = False
        self.saves = 0

    async def save(self, session: Session, **kwargs: Any) -> int:
        if self.contended:
            self.saves += 1
            raise ConcurrentUpdateError(
                message="lost the race",
                session_id=session.session_id,
                expected_version=0,
            )
        return await super().save(session, **kwargs)


class ForgetfulStore(MemoryStore):
    """A MemoryStore that, while ``forgetting``, never marks effects done (a crash before that)."""

    def __init__(self) -> None:
        super().__init__()
        self.forgetting = False

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        if not self.forgetting:
            await super().complete_effect(session_id, effect_id)


class TestConflicts:
    async def test_a_session_that_keeps_changing_gives_up(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """After many lost compare-and-sets, internal inputs and events raise a conflict."""
        store = ContendedStore()
        async with Verifier(
            bureau_sms_policy(),
            channels=[bureau(), sms_code()],
            store=store,
            clock=clock,
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            sid = started.session_id
            before = await store.load(sid)
            store.contended = True
            with pytest.raises(ConcurrentUpdateError, match="gave up after 20 tries"):
                await verifier.cancel(sid)
            assert store.saves == 20
            event = ProviderEvent(session_id=sid, step_id="sms", kind="x")
            with pytest.raises(ConcurrentUpdateError):
                await verifier.handle_event(event)
            assert store.saves == 40
            assert await store.load(sid) == before


class TestRecovery:
    async def test_saved_but_unmarked_start_is_not_repeated(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A start whose outcome was saved but never marked done is not run again."""
        store = ForgetfulStore()
        store.forgetting = True
        policy = bureau_sms_policy(deadline="1h")
        first_sms = sms_code()
        first = Verifier(
            policy, channels=[bureau(), first_sms], store=store, clock=clock
        )
        started = await first.start(applicant)
        await first.wait_idle()
        await first.aclose()
        # The two starts: the timers went with the saves, not the outbox.
        assert len(await store.pending_effects()) == 2
        assert len(await store.timers()) == 2
        store.forgetting = False

        second_bureau, second_sms = bureau(), sms_code()
        async with Verifier(
            policy, channels=[second_bureau, second_sms], store=store, clock=clock
        ) as second:
            assert await second.resume() == 4  # 2 effects, 2 timers
            await second.wait_idle()
            assert second_bureau.starts == second_sms.starts == []
            assert await store.pending_effects() == []
            assert len(await store.timers()) == 2
            session = await second.submit(started.session_id, "sms", CODE)
            assert session.status is SessionStatus.DECIDED

    async def test_session_of_another_policy(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A Verifier without a session's policy refuses its input and logs its effects."""
        shared = MemoryStore()
        first = Verifier(
            bureau_sms_policy(deadline="1m"),
            channels=[bureau(), sms_code()],
            store=shared,
            clock=clock,
        )
        started = await first.start(applicant)
        await first.aclose()  # before its effects ran
        other = bureau_sms_policy(name="other")
        async with Verifier(
            other, channels=[bureau(), sms_code()], store=shared, clock=clock
        ) as second:
            await second.resume()
            await settle(second, clock, 60)
            with pytest.raises(ConfigurationError, match="was not given"):
                await second.submit(started.session_id, "sms", CODE)
        assert "effect 1.1 of session" in caplog.text
        assert "timer deadline of session" in caplog.text

    async def test_purged_personal_data(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Once the applicant was purged, input is refused and cancelling skips the channels."""
        sms = sms_code()
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            sid = started.session_id
            session, version = await verifier.store.load(sid)
            await verifier.store.save(
                attrs.evolve(session, applicant=None), expected_version=version
            )
            with pytest.raises(SessionFinishedError, match="no personal data"):
                await verifier.submit(sid, "sms", CODE)
            cancelled = await verifier.cancel(sid)
            await verifier.wait_idle()
        assert cancelled.status is SessionStatus.CANCELLED
        assert sms.cancels == []

    async def test_channel_timer_for_a_finished_step(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A channel timer delivered after its step finished is dropped quietly."""
        shared = MemoryStore()
        policy = Policy(
            name="p",
            version="1",
            steps=[Step(id="sms", channel="resend")],
            channels={"resend": ResendChannel.SPEC},
        )
        first = ResendChannel()
        a = Verifier(policy, channels=[first], store=shared, clock=clock)
        started = await a.start(applicant)
        await a.wait_idle()
        later = FakeClock(clock.now() + timedelta(minutes=1))
        second = ResendChannel()
        async with Verifier(policy, channels=[second], store=shared, clock=later) as b:
            assert await b.fire_due_timers() == 1  # its notification is now in flight
            session = await b.submit(started.session_id, "sms", CODE)
            assert session.status is SessionStatus.DECIDED
            await b.wait_idle()
        assert second.dues == []
        await a.aclose()


class TestWaitIdle:
    async def test_without_a_fake_clock(self, applicant: Applicant) -> None:
        """On a real clock, ``wait_idle`` waits for the effects in flight to finish."""
        async with Verifier(
            Policy(
                name="p", version="1", steps=[Step(id="b", channel="credit_bureau")]
            ),
            channels=[bureau()],
        ) as verifier:
            started = await verifier.start(applicant)
            await verifier.wait_idle()
            session = await verifier.get(started.session_id)
        assert session.status is SessionStatus.DECIDED

    async def test_abandoned_wait(self, clock: FakeClock, applicant: Applicant) -> None:
        """A ``wait`` given up by its caller does not trouble the verdict."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            abandoned = asyncio.ensure_future(verifier.wait(started.session_id))
            await verifier.wait_idle()
            abandoned.cancel()
            session = await verifier.submit(started.session_id, "sms", CODE)
        assert session.status is SessionStatus.DECIDED
        assert abandoned.cancelled()


class TestChallenge:
    async def test_returns_the_challenge_once_the_step_waits(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``challenge()`` waits for a slow start and returns the masked destination."""
        slow_sms = ScriptedChannel(
            "sms_code",
            [
                Scripted.waits(
                    Scripted.passes(delay=5),
                    expect=CODE,
                    kind="code",
                    destination="+86*******8000",
                )
            ],
        )
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), slow_sms], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            waiting = asyncio.ensure_future(
                verifier.challenge(session.session_id, "sms")
            )
            await settle(verifier, clock)
            assert not waiting.done()
            await settle(verifier, clock, 5)
            challenge = await waiting
        assert challenge.kind == "code"
        assert challenge.destination == "+86*******8000"

    async def test_settled_step_has_no_challenge(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A step that ended (or never asks for input) raises StepNotWaitingError."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            with pytest.raises(StepNotWaitingError, match="bureau"):
                await verifier.challenge(session.session_id, "bureau")

    async def test_submit_to_a_step_still_starting_is_refused(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Input for a step whose challenge is not out yet is refused, typed."""
        slow_sms = ScriptedChannel(
            "sms_code", [Scripted.waits(Scripted.passes(delay=5), expect=CODE)]
        )
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), slow_sms], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            with pytest.raises(StepNotWaitingError, match="still starting"):
                await verifier.submit(session.session_id, "sms", CODE)
            assert slow_sms.messages == []

    async def test_event_for_a_starting_step_keeps_its_dedupe_key(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """An event the start outlasts is refused without spending its key, so a redelivery applies."""
        slow_sms = ScriptedChannel(
            "sms_code", [Scripted.waits(Scripted.passes(delay=5), expect=CODE)]
        )
        async with Verifier(
            bureau_sms_policy(),
            channels=[bureau(), slow_sms],
            clock=clock,
            early_event_wait=timedelta(seconds=2),
        ) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            event = ProviderEvent(
                session_id=session.session_id, step_id="sms", kind="x", dedupe_key="k1"
            )
            sleepers = clock.sleepers
            early = asyncio.ensure_future(verifier.handle_event(event))
            await until_sleeping(clock, sleepers + 1)
            await settle(verifier, clock, 2)
            with pytest.raises(StepNotWaitingError, match="still starting"):
                await early
            await settle(verifier, clock, 3)
            assert await verifier.handle_event(event) is not None

    async def test_event_during_a_start_waits_for_it(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A callback that beats the start it answers is applied once the start is saved."""
        slow_sms = ScriptedChannel(
            "sms_code", [Scripted.waits(Scripted.passes(delay=5), expect=CODE)]
        )
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), slow_sms], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            event = ProviderEvent(
                session_id=session.session_id, step_id="sms", kind="x", dedupe_key="k1"
            )
            sleepers = clock.sleepers
            early = asyncio.ensure_future(verifier.handle_event(event))
            await until_sleeping(clock, sleepers + 1)
            await settle(verifier, clock, 1)
            assert not early.done()
            assert slow_sms.messages == []
            await settle(verifier, clock, 4)
            applied = await early
            assert applied is not None
            assert [message for _, message in slow_sms.messages] == [event]
            assert (await verifier.wait(session.session_id)).outcome == Outcome.APPROVED


class CrashingOnInput(ScriptedChannel):
    """A channel that starts waiting for ``CODE``, then raises ``error`` on any input."""

    def __init__(
        self, name: str, error: Exception, *, on_cancel: Exception | None = None
    ) -> None:
        super().__init__(name, [Scripted.waits(Scripted.passes(), expect=CODE)])
        self.error = error
        self.on_cancel = on_cancel

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        self.messages.append((context, message))
        raise self.error

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        await super().cancel(context, state)
        if self.on_cancel is not None:
            raise self.on_cancel


def sms_then_video_policy() -> Policy:
    """SMS over two gateways, falling back to a video on error; the video passing approves."""
    return bureau_sms_policy(
        steps=[
            Step(id="bureau", channel="credit_bureau"),
            Step(
                id="sms",
                channel="sms_code",
                timeout="5m",
                providers=["twilio", "vonage"],
                fallback=Fallback(step="video", on=["error"]),
            ),
            Step(id="video", channel="video_sign"),
        ],
        rules=[
            Rule(
                outcome="approved",
                when="steps.bureau.status == 'passed' && steps.video.status == 'passed'",
                reason="video.confirmed",
            )
        ],
    )


@pytest.fixture(params=["memory", "sqlite"])
async def one_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[SessionStore]:
    """A MemoryStore or a SqliteStore."""
    store: SessionStore = (
        MemoryStore()
        if request.param == "memory"
        else SqliteStore(tmp_path / "verify.db", clock=clock)
    )
    yield store
    await store.aclose()


class TestCrashWhileHandling:
    async def test_the_step_ends_in_error_and_the_policy_goes_on(
        self,
        clock: FakeClock,
        applicant: Applicant,
        one_store: SessionStore,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """``submit`` returns the session: the step ended in error, its attempt cancelled, no failover."""
        quoted = f"no route for {applicant.phone} ({applicant.name})"
        sms = CrashingOnInput("sms_code", RuntimeError(quoted))
        video = ScriptedChannel("video_sign", [Scripted.passes()])
        async with Verifier(
            sms_then_video_policy(),
            channels=[bureau(), sms, video],
            store=one_store,
            clock=clock,
        ) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock)
            session = await verifier.submit(started.session_id, "sms", CODE)
            record = session.step("sms")
            assert record.state is StepState.DONE
            assert session.step("video").state is StepState.RUNNING
            await settle(verifier, clock)
            verdict = await verifier.wait(started.session_id)
            done = await verifier.get(started.session_id)
            await verify_trail(verifier, done)
            events = await verifier.store.audit_events(started.session_id)
        assert verdict.outcome is Outcome.APPROVED
        result = record.result
        assert result is not None
        assert (result.status, result.attempts, result.provider) == (
            ResultStatus.ERROR,
            1,
            "twilio",
        )
        assert result.detail is not None
        assert result.detail.startswith("channel error: RuntimeError: no route for")
        assert len(sms.starts) == 1  # the next gateway did not take over
        assert [context.attempt for context in sms.cancels] == [1]
        assert "crashed handling input for step sms" in caplog.text
        assert "Traceback" in caplog.text
        [errored] = [
            e.data["input"]
            for e in events
            if e.kind == "input" and e.data["input"]["type"] == "StepErrored"
        ]
        assert errored["failover"] is False
        text = caplog.text + result.detail + "".join(e.to_json() for e in events)
        for raw in (applicant.phone, applicant.name):
            assert raw not in text
        assert mask_phone(applicant.phone) in result.detail

    async def test_a_provider_event_that_crashes_its_channel(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``handle_event`` returns the session with the step in error, as ``submit`` does."""
        sms = CrashingOnInput("sms_code", KeyError("status"))
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock)
            session = await verifier.handle_event(
                ProviderEvent(
                    session_id=started.session_id,
                    step_id="sms",
                    kind="status",
                    dedupe_key="d1",
                )
            )
        assert session is not None
        result = session.step("sms").result
        assert result is not None
        assert result.status is ResultStatus.ERROR
        assert result.detail == "channel error: KeyError: 'status'"

    async def test_a_typed_error_stays_the_callers(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """An SDK error the channel raises on purpose reaches the caller; the step waits on."""
        sms = CrashingOnInput(
            "sms_code",
            InvalidInputError(message="code: expected 6 digits", field="code"),
        )
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock)
            with pytest.raises(InvalidInputError):
                await verifier.submit(started.session_id, "sms", {"code": "1"})
            record = (await verifier.get(started.session_id)).step("sms")
        assert record.state is StepState.WAITING
        assert sms.cancels == []

    async def test_a_crash_while_cancelling_is_logged_and_passed(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A channel that crashes again when its attempt is cancelled is logged, masked; the session goes on."""
        sms = CrashingOnInput(
            "sms_code",
            RuntimeError("boom"),
            on_cancel=RuntimeError(f"hang up {applicant.phone}"),
        )
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            await settle(verifier, clock)
            await verifier.submit(started.session_id, "sms", CODE)
            await settle(verifier, clock)
            verdict = await verifier.wait(started.session_id)
            pending = await verifier.store.pending_effects(started.session_id)
        assert verdict.decided_by == "default"  # no rule holds with the SMS in error
        assert len(sms.cancels) == 1
        assert "crashed cancelling step sms" in caplog.text
        assert applicant.phone not in caplog.text
        assert pending == []


class TestRobustness:
    async def test_a_crashing_channel_ends_its_step_in_error(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bug in a channel (a non-SDK exception) ends the attempt in error, logged."""
        broken = bureau(Scripted.raises(ZeroDivisionError("oops")))
        async with Verifier(
            bureau_sms_policy(), channels=[broken, sms_code()], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            result = (await verifier.get(session.session_id)).step("bureau").result
        assert result is not None
        assert result.status == ResultStatus.ERROR
        assert result.detail == "channel error: ZeroDivisionError: oops"
        assert "crashed starting step bureau" in caplog.text
        assert "ZeroDivisionError: oops" in caplog.text  # the traceback is logged

    async def test_a_crash_is_logged_without_the_applicants_data(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A channel's exception that quotes the applicant is logged masked, traceback and all."""
        cause = ValueError(f"no route for {applicant.phone}")
        crash = RuntimeError(f"lookup of {applicant.national_id} for {applicant.name}")
        crash.__cause__ = cause
        broken = bureau(Scripted.raises(crash))
        async with Verifier(
            bureau_sms_policy(), channels=[broken, sms_code()], clock=clock
        ) as verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            result = (await verifier.get(session.session_id)).step("bureau").result
        assert result is not None
        assert result.status == ResultStatus.ERROR
        assert "crashed starting step bureau" in caplog.text
        assert "Traceback" in caplog.text
        assert "ValueError: no route for" in caplog.text
        for raw in (applicant.phone, applicant.national_id, applicant.name):
            assert raw not in caplog.text
            assert raw not in (result.detail or "")
        assert mask_phone(applicant.phone) in caplog.text

    async def test_hooks_run_outside_the_session_lock(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """A hook may use the Verifier on the same session without deadlocking."""
        seen: list[int] = []

        async def hook(session: Session, verdict: Verdict) -> None:
            again = await verifier.get(session.session_id)
            seen.append(again.inputs)
            with pytest.raises(SessionFinishedError):
                await verifier.cancel(session.session_id)

        verifier = Verifier(
            bureau_sms_policy(),
            channels=[bureau(Scripted.passes(signals=["fraud_alert"])), sms_code()],
            clock=clock,
            on_verdict=[hook],
        )
        async with verifier:
            session = await verifier.start(applicant)
            await settle(verifier, clock)
            assert (await verifier.wait(session.session_id)).outcome == Outcome.REJECTED
        assert len(seen) == 1

    async def test_finished_sessions_release_their_locks(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Per-session locks do not pile up once sessions are decided."""
        async with Verifier(
            bureau_sms_policy(),
            channels=[bureau(Scripted.passes(signals=["fraud_alert"])), sms_code()],
            clock=clock,
        ) as verifier:
            for _ in range(3):
                session = await verifier.start(applicant)
                await settle(verifier, clock)
                await verifier.wait(session.session_id)
            assert verifier._locks == {}


class TestSessionCache:
    """The Verifier remembers what it saved; the store's compare-and-set stays the judge."""

    async def test_oldest_sessions_are_forgotten(
        self,
        clock: FakeClock,
        applicant: Applicant,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Past its size the cache forgets the least recently saved; input still applies."""
        monkeypatch.setattr(verifier_module, "_CACHE_SIZE", 1)
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            first = await verifier.start(applicant)
            await verifier.wait_idle()
            second = await verifier.start(applicant)
            await verifier.wait_idle()
            assert list(verifier._cache) == [second.session_id]
            session = await verifier.submit(first.session_id, "sms", CODE)
            assert session.status is SessionStatus.DECIDED
            assert verifier._cache.keys() == {second.session_id}

    async def test_a_stale_entry_costs_one_reload(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """After another replica's save, an internal input reloads and applies once."""
        shared = MemoryStore()
        policy = bureau_sms_policy(deadline="1m")
        a = Verifier(policy, channels=[bureau(), sms_code()], store=shared, clock=clock)
        b = Verifier(policy, channels=[bureau(), sms_code()], store=shared, clock=clock)
        started = await a.start(applicant)
        sid = started.session_id
        await a.wait_idle()
        _, version = await shared.load(sid)
        assert a._cache[sid][1] == version
        decided = await b.submit(sid, "sms", CODE)  # a's entry is now stale
        assert decided.status is SessionStatus.DECIDED
        # An input reaches a on its stale entry (b already cancelled the
        # deadline timer in the store, so a's own timer no longer fires it).
        await a._apply(
            sid,
            verifier_module.TimerFired(timer_id="deadline", at=clock.now()),
        )
        await settle(a, clock, 60)
        session, after = await shared.load(sid)
        assert after == version + 2  # b's submit, then a's timer input
        assert session.inputs == decided.inputs + 1
        assert sid not in a._cache
        await verify_trail(a, session)
        await a.aclose()
        await b.aclose()

    async def test_several_watchers_of_one_session(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``wait`` and ``challenge`` on the same session are all woken by its changes."""
        async with Verifier(
            bureau_sms_policy(), channels=[bureau(), sms_code()], clock=clock
        ) as verifier:
            started = await verifier.start(applicant)
            sid = started.session_id
            waits = [asyncio.ensure_future(verifier.wait(sid)) for _ in range(2)]
            challenge = await verifier.challenge(sid, "sms")
            assert challenge.kind == "code"
            await verifier.submit(sid, "sms", CODE)
            verdicts = await asyncio.gather(*waits)
            assert [v.outcome for v in verdicts] == [Outcome.APPROVED] * 2
            assert verifier._watches == {}


def sweeping(store: SessionStore, clock: FakeClock, **settings: Any) -> Verifier:
    """A Verifier of the SMS policy on ``store``, with these settings."""
    return Verifier(
        bureau_sms_policy(),
        channels=[bureau(), sms_code()],
        store=store,
        clock=clock,
        **settings,
    )


class TestSweep:
    """The Verifier deletes its store's lapsed shared state as it starts sessions."""

    async def test_the_first_start_sweeps_and_one_an_interval_later(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """Starts sweep at most once per ``sweep_interval``, by the Verifier's clock."""
        store = Sweeps()
        start = clock.now()
        await store.put_value("ledger:1", "{}", at=start, ttl=60)
        async with sweeping(store, clock, sweep_interval=600) as verifier:
            for _ in range(3):
                await verifier.start(applicant)
                for _ in range(3):
                    await asyncio.sleep(0)  # the sweep runs beside the start
                await clock.advance(300)

        assert store.sweeps == [(start, 0), (start + timedelta(seconds=600), 1)]

    async def test_a_lapsed_value_is_gone_from_sqlite(
        self, clock: FakeClock, applicant: Applicant, tmp_path: Path
    ) -> None:
        """On the embedded default, with no worker, a start deletes the rows that lapsed."""
        path = tmp_path / "mv.db"

        def rows() -> int:
            with contextlib.closing(sqlite3.connect(path)) as db:
                (count,) = db.execute("SELECT count(*) FROM shared_values").fetchone()
            return int(count)

        async with SqliteStore(path) as store:
            await store.put_value("ledger:1", "{}", at=clock.now(), ttl=60)
            await clock.advance(61)
            assert rows() == 1
            async with sweeping(store, clock) as verifier:
                await verifier.start(applicant)
                await verifier.wait_idle()
                for _ in range(100):  # the sweep commits on the store's thread
                    if not rows():
                        break
                    await asyncio.sleep(0.01)
                assert rows() == 0

    async def test_none_never_sweeps(
        self, clock: FakeClock, applicant: Applicant
    ) -> None:
        """``sweep_interval=None`` leaves the sweep to a worker or ``store purge``."""
        store = Sweeps()
        async with sweeping(store, clock, sweep_interval=None) as verifier:
            await verifier.start(applicant)
            await verifier.wait_idle()
        assert store.sweeps == []

    async def test_a_failed_sweep_is_logged_and_the_start_goes_on(
        self, clock: FakeClock, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store that cannot sweep is logged; the session starts all the same."""
        store = Sweeps(fail=1)
        async with sweeping(store, clock) as verifier:
            session = await verifier.start(applicant)
            await verifier.wait_idle()
            loaded = await verifier.get(session.session_id)
            assert [c.step_id for c in loaded.challenges] == ["sms"]
        assert (
            "could not sweep lapsed shared state; trying again in 600s" in caplog.text
        )

    def test_sweep_interval_must_be_positive(self) -> None:
        """A sweep interval of zero is a configuration error, named."""
        with pytest.raises(ConfigurationError, match="sweep_interval"):
            Verifier(bureau_sms_policy(), sweep_interval=0)
