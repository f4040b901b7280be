"""Tests for the pure core: every decision path of ``transition``, plus properties.

The core is private (``multiverify._session``) and has no public path, so the
tests import it directly, like ``tests/test_masking.py`` does.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import multiverify
from multiverify import (
    Applicant,
    AuditTrail,
    Challenge,
    ChannelResult,
    Fallback,
    LoanApplication,
    Outcome,
    Policy,
    Reason,
    ResultStatus,
    Rule,
    RuleTrace,
    Signal,
    Step,
    StepRecord,
    StepState,
    StepSummary,
    _session,
)
from multiverify._session import (
    Cancel,
    CancelStep,
    CancelTimer,
    Input,
    NotifyStep,
    RecordVerdict,
    ScheduleTimer,
    Session,
    SessionStatus,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepStarted,
    StepUpdated,
    TimerFired,
    Transition,
    _plan,
    new_session,
    require_waiting,
    transition,
)
from multiverify.exceptions import (
    InvalidInputError,
    MultiverifyError,
    SessionFinishedError,
    StepNotFoundError,
    StepNotWaitingError,
)
from multiverify.policy._cel import make_context

T0 = datetime(2025, 3, 7, 9, 0, tzinfo=UTC)
SID = "sess-1"

FRAUD = "'fraud_alert' in steps.bureau.signals"
CONFIRMED = (
    "steps.bureau.status == 'passed' && steps.sms.status == 'passed' && "
    "(steps.call.status == 'passed' || steps.video.status == 'passed' "
    "|| steps.call.status == 'skipped')"
)
PARTLY = "steps.sms.status == 'passed'"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_steps(**changes: dict[str, Any]) -> list[Step]:
    """Bureau first, then a call (video as its fallback); an SMS code in parallel."""
    fields: dict[str, dict[str, Any]] = {
        "bureau": {
            "channel": "credit_bureau",
            "timeout": 30,
            "providers": ("experian", "equifax"),
        },
        "call": {
            "channel": "phone_call",
            "after": ("bureau",),
            "when": "application.amount >= 10000.0",
            "timeout": 600,
            "providers": ("twilio", "vonage"),
            "fallback": Fallback(step="video", on=("failed", "timeout", "error")),
        },
        "video": {"channel": "video_sign"},
        "sms": {"channel": "sms_code", "timeout": 300},
    }
    return [
        Step(id=step_id, **(values | changes.get(step_id, {})))
        for step_id, values in fields.items()
    ]


def make_policy(**overrides: Any) -> Policy:
    """The consumer-loan policy: fraud rejects, full confirmation approves."""
    settings_: dict[str, Any] = {
        "name": "consumer-loan",
        "version": "7",
        "deadline": 3600,
        "default": "rejected",
        "steps": make_steps(),
        "rules": [
            Rule(outcome="rejected", when=FRAUD, reason="bureau.fraud_alert"),
            Rule(
                outcome="approved",
                when=CONFIRMED,
                reason="applicant.confirmed",
                message="every channel confirmed the applicant",
            ),
            Rule(outcome="review", when=PARTLY, reason="applicant.partly_confirmed"),
        ],
    }
    return Policy(**(settings_ | overrides))


POLICY = make_policy()


def make_applicant(amount: str = "50000") -> Applicant:
    return Applicant(
        applicant_id="app-1",
        name="Zhang Wei",
        national_id="110101199003074578",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount=amount, currency="CNY", term_months=12, purpose="renovation"
        ),
    )


def fresh(policy: Policy = POLICY, *, amount: str = "50000") -> Session:
    return new_session(policy, make_applicant(amount), session_id=SID, at=T0)


def run(policy: Policy, session: Session, *inputs: Input) -> Transition:
    """Apply inputs in order; return the last transition."""
    step = Transition(session=session)
    for event in inputs:
        step = transition(policy, step.session, event)
    return step


def started(policy: Policy = POLICY, *, amount: str = "50000") -> Session:
    return run(policy, fresh(policy, amount=amount), Start(at=T0)).session


def result(
    status: str, *signals: str, score: float | None = None, **fields: Any
) -> ChannelResult:
    return ChannelResult(
        status=ResultStatus(status),
        signals=[Signal(name=name) for name in signals],
        score=score,
        **fields,
    )


def finished(
    step_id: str,
    status: str,
    *signals: str,
    attempt: int = 1,
    seconds: float = 10,
    score: float | None = None,
    **fields: Any,
) -> StepFinished:
    return StepFinished(
        step_id=step_id,
        attempt=attempt,
        at=at(seconds),
        result=result(status, *signals, score=score, **fields),
    )


def states(session: Session) -> dict[str, StepState]:
    return {record.step_id: record.state for record in session.steps}


def after_bureau(policy: Policy = POLICY) -> Session:
    """Bureau passed: the call runs, the SMS code runs, the video waits."""
    return run(
        policy, started(policy), finished("bureau", "passed", "identity_match")
    ).session


class TestStepState:
    @pytest.mark.parametrize(
        ("state", "settled", "active"),
        [
            (StepState.PENDING, False, False),
            (StepState.SKIPPED, True, False),
            (StepState.RUNNING, False, True),
            (StepState.WAITING, False, True),
            (StepState.DONE, True, False),
            (StepState.CANCELLED, True, False),
        ],
    )
    def test_settled_and_active(
        self, state: StepState, settled: bool, active: bool
    ) -> None:
        """Skipped, done and cancelled are settled; running and waiting are active."""
        assert (state.settled, state.active) == (settled, active)


class TestNewSession:
    def test_fresh_session(self) -> None:
        """A new session is active, its steps pending in policy order, with facts."""
        session = fresh()
        assert session.status is SessionStatus.ACTIVE
        assert session.policy == POLICY.ref
        assert session.created_at == T0
        assert session.deadline_at == at(3600)
        assert [r.step_id for r in session.steps] == ["bureau", "call", "video", "sms"]
        assert set(states(session).values()) == {StepState.PENDING}
        assert session.facts["applicant"]["age"] == 35
        assert session.facts["application"]["amount"] == 50000.0
        assert (session.inputs, session.verdict, session.finished) == (0, None, False)

    @pytest.mark.parametrize("applicant", [None, {"name": "Zhang San"}])
    def test_something_else_than_an_applicant(self, applicant: object) -> None:
        """Verifying something that is no Applicant is an InvalidInputError, not a crash."""
        with pytest.raises(InvalidInputError) as info:
            new_session(POLICY, applicant, session_id=SID, at=T0)  # type: ignore[arg-type]
        assert info.value.field == "applicant"

    def test_born_after_the_start(self) -> None:
        """A date of birth after the session's start day is refused, naming the field."""
        applicant = attrs.evolve(
            make_applicant(), date_of_birth=(T0 + timedelta(days=1)).date()
        )
        with pytest.raises(InvalidInputError) as info:
            new_session(POLICY, applicant, session_id=SID, at=T0)
        assert info.value.field == "date_of_birth"
        born_today = attrs.evolve(applicant, date_of_birth=T0.date())
        session = new_session(POLICY, born_today, session_id=SID, at=T0)
        assert session.facts["applicant"]["age"] == 0

    def test_no_deadline(self) -> None:
        """A policy without a deadline gives a session without one."""
        assert fresh(make_policy(deadline=None)).deadline_at is None

    def test_fresh_records_are_shared_and_read_only(self) -> None:
        """Sessions of one policy share its fresh records; their state cannot change."""
        first, second = fresh(), fresh()
        assert first.steps is second.steps
        assert first.steps == tuple(StepRecord(step_id=r.step_id) for r in first.steps)
        with pytest.raises(TypeError):
            first.steps[0].channel_state["x"] = 1  # type: ignore[index]

    def test_each_policy_object_has_its_own_plan(self) -> None:
        """What the core derives from a policy follows the policy object, never another."""
        other = make_policy(
            steps=[Step(id="sms", channel="sms_code")],
            rules=[
                Rule(
                    outcome="approved", when="steps.sms.status == 'passed'", reason="ok"
                )
            ],
            deadline=None,
        )
        assert [r.step_id for r in fresh(other).steps] == ["sms"]
        decided = run(other, fresh(other), Start(at=T0), finished("sms", "passed"))
        assert decided.session.verdict is not None
        assert decided.session.verdict.reasons[0].code == "ok"
        assert [r.step_id for r in fresh().steps] == ["bureau", "call", "video", "sms"]
        # Many more policies than the cache holds: each still gets its own.
        for count in range(1, 80):
            steps = [Step(id=f"s{i}", channel="sms_code") for i in range(count % 3 + 1)]
            policy = make_policy(steps=steps, rules=[], deadline=None)
            assert [r.step_id for r in fresh(policy).steps] == [s.id for s in steps]
            decided = run(
                policy,
                fresh(policy),
                Start(at=T0),
                *(finished(s.id, "passed") for s in steps),
            ).session
            assert decided.verdict is not None
            assert decided.verdict.reasons[0].code == "policy.default"


class TestSession:
    def test_step_returns_the_record(self) -> None:
        """``step`` finds a record by id."""
        assert fresh().step("call").step_id == "call"

    def test_unknown_step(self) -> None:
        """``step`` raises StepNotFoundError naming the session and step."""
        with pytest.raises(StepNotFoundError) as info:
            fresh().step("ghost")
        assert (info.value.session_id, info.value.step_id) == (SID, "ghost")
        assert "ghost" in str(info.value)

    def test_challenges_of_waiting_steps(self) -> None:
        """Only waiting steps with a challenge contribute to ``challenges``."""
        challenge = Challenge(step_id="sms", kind="code", destination="+86*******8000")
        session = run(
            POLICY,
            started(),
            StepStarted(step_id="sms", attempt=1, at=at(1), challenge=challenge),
            StepStarted(step_id="bureau", attempt=1, at=at(1)),
        ).session
        assert session.challenges == (challenge,)


class TestStart:
    def test_starts_ready_steps_and_the_deadline(self) -> None:
        """Start schedules the deadline and starts every step with nothing to wait for."""
        step = transition(POLICY, fresh(), Start(at=T0))
        assert step.effects == (
            ScheduleTimer(effect_id="1.0", timer_id="deadline", due_at=at(3600)),
            StartStep(
                effect_id="1.1",
                step_id="bureau",
                attempt=1,
                channel="credit_bureau",
                provider="experian",
                idempotency_key=f"{SID}:bureau:1",
            ),
            ScheduleTimer(
                effect_id="1.2", timer_id="step:bureau:1:timeout", due_at=at(30)
            ),
            StartStep(
                effect_id="1.3",
                step_id="sms",
                attempt=1,
                channel="sms_code",
                provider=None,
                idempotency_key=f"{SID}:sms:1",
            ),
            ScheduleTimer(
                effect_id="1.4", timer_id="step:sms:1:timeout", due_at=at(300)
            ),
        )
        assert states(step.session) == {
            "bureau": StepState.RUNNING,
            "call": StepState.PENDING,
            "video": StepState.PENDING,
            "sms": StepState.RUNNING,
        }
        bureau = step.session.step("bureau")
        assert (bureau.attempt, bureau.provider_index, bureau.started_at) == (1, 0, T0)
        assert step.session.inputs == 1
        assert step.fired == ()

    def test_without_deadline(self) -> None:
        """Without a deadline no deadline timer is scheduled."""
        policy = make_policy(deadline=None)
        step = transition(policy, fresh(policy), Start(at=T0))
        assert all(
            not (isinstance(e, ScheduleTimer) and e.timer_id == "deadline")
            for e in step.effects
        )

    def test_step_without_timeout_has_no_timer(self) -> None:
        """A step without a timeout starts without a timeout timer."""
        policy = make_policy(steps=make_steps(sms={"timeout": None}))
        step = transition(policy, fresh(policy), Start(at=T0))
        timers = [e.timer_id for e in step.effects if isinstance(e, ScheduleTimer)]
        assert timers == ["deadline", "step:bureau:1:timeout"]


class TestStepStarted:
    def test_waiting_with_challenge_and_channel_state(self) -> None:
        """A started step waits, keeps the challenge and the channel's state."""
        challenge = Challenge(step_id="sms", kind="code", expires_at=at(300))
        step = transition(
            POLICY,
            started(),
            StepStarted(
                step_id="sms",
                attempt=1,
                at=at(1),
                challenge=challenge,
                channel_state={"hmac": "abc"},
            ),
        )
        record = step.session.step("sms")
        assert record.state is StepState.WAITING
        assert record.challenge == challenge
        assert record.channel_state == {"hmac": "abc"}
        assert step.effects == ()

    def test_schedules_channel_timers(self) -> None:
        """Timers a channel asks for are scheduled as ``step:<id>:<attempt>:channel:<name>``."""
        step = transition(
            POLICY,
            started(),
            StepStarted(
                step_id="sms",
                attempt=1,
                at=at(1),
                timers=[("resend", at(60)), ("expire", at(120))],
            ),
        )
        assert step.effects == (
            ScheduleTimer(
                effect_id="2.0", timer_id="step:sms:1:channel:resend", due_at=at(60)
            ),
            ScheduleTimer(
                effect_id="2.1", timer_id="step:sms:1:channel:expire", due_at=at(120)
            ),
        )

    def test_channel_timers_are_cancelled_when_the_step_ends(self) -> None:
        """A step that ends cancels every channel timer its attempt scheduled."""
        session = run(
            POLICY,
            started(),
            StepStarted(
                step_id="sms", attempt=1, at=at(1), timers=[("resend", at(60))]
            ),
            StepUpdated(
                step_id="sms", attempt=1, at=at(2), timers=[("expire", at(90))]
            ),
        ).session
        assert session.step("sms").timers == ("resend", "expire")
        step = transition(POLICY, session, finished("sms", "passed"))
        cancelled = [e.timer_id for e in step.effects if isinstance(e, CancelTimer)]
        assert "step:sms:1:channel:resend" in cancelled
        assert "step:sms:1:channel:expire" in cancelled
        assert step.session.step("sms").timers == ()

    def test_update_without_challenge_keeps_the_old_one(self) -> None:
        """StepUpdated without a challenge keeps the previous challenge."""
        challenge = Challenge(step_id="sms", kind="code")
        session = run(
            POLICY,
            started(),
            StepStarted(step_id="sms", attempt=1, at=at(1), challenge=challenge),
            StepUpdated(step_id="sms", attempt=1, at=at(5), channel_state={"n": 1}),
        ).session
        assert session.step("sms").challenge == challenge
        assert session.step("sms").channel_state == {"n": 1}

    def test_update_replaces_the_challenge(self) -> None:
        """StepUpdated with a challenge (a resent code) replaces it."""
        first = Challenge(step_id="sms", kind="code", message="sent")
        second = Challenge(step_id="sms", kind="code", message="sent again")
        session = run(
            POLICY,
            started(),
            StepStarted(step_id="sms", attempt=1, at=at(1), challenge=first),
            StepUpdated(step_id="sms", attempt=1, at=at(5), challenge=second),
        ).session
        assert session.step("sms").challenge == second
        assert session.step("sms").state is StepState.WAITING

    def test_unknown_step(self) -> None:
        """An input for a step the policy does not have raises StepNotFoundError."""
        with pytest.raises(StepNotFoundError):
            transition(
                POLICY, started(), StepStarted(step_id="ghost", attempt=1, at=at(1))
            )


class TestAfter:
    def test_waits_for_its_dependencies(self) -> None:
        """The call starts only once the bureau step has settled."""
        session = started()
        assert session.step("call").state is StepState.PENDING
        step = transition(POLICY, session, finished("bureau", "passed"))
        assert states(step.session)["call"] is StepState.RUNNING
        assert (
            StartStep(
                effect_id="2.1",
                step_id="call",
                attempt=1,
                channel="phone_call",
                provider="twilio",
                idempotency_key=f"{SID}:call:1",
            )
            in step.effects
        )
        assert step.session.step("call").started_at == at(10)


class TestWhen:
    def test_false_condition_skips(self) -> None:
        """A small loan skips the call, and so its fallback too."""
        session = started(amount="5000")
        session = run(POLICY, session, finished("bureau", "passed")).session
        assert states(session) == {
            "bureau": StepState.DONE,
            "call": StepState.SKIPPED,
            "video": StepState.SKIPPED,
            "sms": StepState.RUNNING,
        }
        decided = run(POLICY, session, finished("sms", "passed", seconds=20))
        assert decided.session.verdict is not None
        assert decided.session.verdict.outcome is Outcome.APPROVED

    def test_condition_error_skips(self) -> None:
        """A condition that cannot be evaluated (a missing fact) skips the step."""
        policy = make_policy(
            steps=make_steps(call={"when": "steps.bureau.facts.band == 'A'"})
        )
        session = run(policy, started(policy), finished("bureau", "passed")).session
        assert session.step("call").state is StepState.SKIPPED

    def test_condition_reads_step_results(self) -> None:
        """A condition sees a finished step's facts."""
        policy = make_policy(
            steps=make_steps(call={"when": "steps.bureau.facts.band == 'A'"})
        )
        session = run(
            policy,
            started(policy),
            finished("bureau", "passed", facts={"band": "A"}),
        ).session
        assert session.step("call").state is StepState.RUNNING


class TestFallback:
    @pytest.mark.parametrize("status", ["failed", "timeout", "error"])
    def test_listed_status_starts_the_fallback(self, status: str) -> None:
        """The call ending with a listed status starts the video step."""
        step = transition(POLICY, after_bureau(), finished("call", status, seconds=20))
        video = step.session.step("video")
        assert (video.state, video.triggered_by) == (StepState.RUNNING, "call")
        assert (
            StartStep(
                effect_id="3.1",
                step_id="video",
                attempt=1,
                channel="video_sign",
                provider=None,
                idempotency_key=f"{SID}:video:1",
            )
            in step.effects
        )

    @pytest.mark.parametrize("status", ["passed", "inconclusive"])
    def test_other_status_skips_the_fallback(self, status: str) -> None:
        """A status the fallback does not list skips the video step."""
        session = run(POLICY, after_bureau(), finished("call", status)).session
        video = session.step("video")
        assert (video.state, video.triggered_by) == (StepState.SKIPPED, None)

    def test_inconclusive_call_leads_to_review(self) -> None:
        """No fallback and no confirmation: the review rule decides."""
        step = run(
            POLICY,
            after_bureau(),
            finished("call", "inconclusive", seconds=20),
            finished("sms", "passed", seconds=30),
        )
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.REVIEW

    def test_passed_fallback_approves(self) -> None:
        """A failed call rescued by a passed video still approves."""
        step = run(
            POLICY,
            after_bureau(),
            finished("sms", "passed", seconds=15),
            finished("call", "failed", "no_answer", seconds=20),
            finished("video", "passed", "liveness_passed", seconds=40),
        )
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.APPROVED
        assert step.session.verdict.reasons == (
            Reason(
                code="applicant.confirmed",
                message="every channel confirmed the applicant",
            ),
        )


class TestFailover:
    def test_next_provider_gets_a_new_attempt(self) -> None:
        """A provider error fails over to the next provider, with a new key."""
        step = transition(
            POLICY,
            started(),
            StepErrored(
                step_id="bureau",
                attempt=1,
                at=at(5),
                error="experian: HTTP 503",
                provider="experian",
            ),
        )
        assert step.effects == (
            CancelTimer(effect_id="2.0", timer_id="step:bureau:1:timeout"),
            StartStep(
                effect_id="2.1",
                step_id="bureau",
                attempt=2,
                channel="credit_bureau",
                provider="equifax",
                idempotency_key=f"{SID}:bureau:2",
            ),
            ScheduleTimer(
                effect_id="2.2", timer_id="step:bureau:2:timeout", due_at=at(35)
            ),
        )
        record = step.session.step("bureau")
        assert record.state is StepState.RUNNING
        assert (record.attempt, record.provider_index) == (2, 1)
        assert record.errors == ("experian: HTTP 503",)
        assert record.started_at == T0

    def test_exhausted_providers_give_an_error_result(self) -> None:
        """When every provider failed the step ends with an error result."""
        step = run(
            POLICY,
            started(),
            StepErrored(step_id="bureau", attempt=1, at=at(5), error="e1"),
            StepErrored(
                step_id="bureau", attempt=2, at=at(9), error="e2", provider="equifax"
            ),
        )
        record = step.session.step("bureau")
        assert record.state is StepState.DONE
        assert record.errors == ("e1", "e2")
        assert record.result == ChannelResult(
            status=ResultStatus.ERROR,
            attempts=2,
            provider="equifax",
            started_at=T0,
            finished_at=at(9),
            detail="e2",
        )
        assert step.effects[0] == CancelTimer(
            effect_id="3.0", timer_id="step:bureau:2:timeout"
        )
        # The bureau settled, so the call starts.
        assert step.session.step("call").state is StepState.RUNNING

    def test_error_result_names_the_configured_provider(self) -> None:
        """Without a provider in the error, the result names the step's provider."""
        session = run(
            POLICY,
            started(),
            StepErrored(step_id="bureau", attempt=1, at=at(5), error="e1"),
            StepErrored(step_id="bureau", attempt=2, at=at(9), error="e2"),
        ).session
        result_ = session.step("bureau").result
        assert result_ is not None
        assert result_.provider == "equifax"

    def test_step_without_providers_errors_at_once(self) -> None:
        """A step using the channel's own provider has nothing to fail over to."""
        session = run(
            POLICY,
            started(),
            StepErrored(step_id="sms", attempt=1, at=at(5), error="gateway down"),
        ).session
        record = session.step("sms")
        assert record.state is StepState.DONE
        assert record.result is not None
        assert (record.result.status, record.result.provider) == (
            ResultStatus.ERROR,
            None,
        )

    def test_an_error_without_failover_ends_the_step(self) -> None:
        """An error no other provider would escape ends the step at once, in error."""
        step = transition(
            POLICY,
            started(),
            StepErrored(
                step_id="bureau",
                attempt=1,
                at=at(5),
                error="not permitted",
                provider="experian",
                failover=False,
            ),
        )
        assert not [
            e
            for e in step.effects
            if isinstance(e, StartStep | CancelStep) and e.step_id == "bureau"
        ]
        record = step.session.step("bureau")
        assert (record.state, record.attempt, record.errors) == (
            StepState.DONE,
            1,
            ("not permitted",),
        )
        assert record.result is not None
        assert (record.result.status, record.result.provider) == (
            ResultStatus.ERROR,
            "experian",
        )

    def test_a_waiting_attempt_that_errors_without_failover_is_cancelled(
        self,
    ) -> None:
        """Its vendor side may be open, so the attempt is cancelled as the step ends in error."""
        session = run(
            POLICY,
            started(),
            StepStarted(
                step_id="bureau", attempt=1, at=at(1), timers=[("poll", at(20))]
            ),
        ).session
        step = transition(
            POLICY,
            session,
            StepErrored(
                step_id="bureau",
                attempt=1,
                at=at(5),
                error="channel error: KeyError: 'status'",
                failover=False,
            ),
        )
        assert step.effects[:3] == (
            CancelStep(
                effect_id="3.0", step_id="bureau", attempt=1, channel="credit_bureau"
            ),
            CancelTimer(effect_id="3.1", timer_id="step:bureau:1:timeout"),
            CancelTimer(effect_id="3.2", timer_id="step:bureau:1:channel:poll"),
        )
        assert not [
            e
            for e in step.effects
            if isinstance(e, StartStep) and e.step_id == "bureau"
        ]
        record = step.session.step("bureau")
        assert (record.state, record.attempt) == (StepState.DONE, 1)
        assert record.result is not None
        assert record.result.status is ResultStatus.ERROR
        assert record.result.detail == "channel error: KeyError: 'status'"

    def test_error_of_an_old_attempt_is_ignored(self) -> None:
        """An error for an attempt that was already failed over changes nothing."""
        session = run(
            POLICY,
            started(),
            StepErrored(step_id="bureau", attempt=1, at=at(5), error="e1"),
        ).session
        step = transition(
            POLICY,
            session,
            StepErrored(step_id="bureau", attempt=1, at=at(6), error="late"),
        )
        assert step.effects == ()
        assert step.session == attrs.evolve(session, inputs=session.inputs + 1)


class TestStepFinished:
    def test_result_is_completed_from_the_record(self) -> None:
        """The core fills in attempts, provider and times the channel left out."""
        session = run(
            POLICY, started(), finished("bureau", "passed", "identity_match")
        ).session
        assert session.step("bureau").result == ChannelResult(
            status=ResultStatus.PASSED,
            signals=[Signal(name="identity_match")],
            attempts=1,
            provider="experian",
            started_at=T0,
            finished_at=at(10),
        )

    def test_result_keeps_its_own_provider_and_times(self) -> None:
        """A result's own provider and times win over the record's."""
        session = run(
            POLICY,
            started(),
            finished(
                "bureau",
                "passed",
                provider="experian-eu",
                started_at=at(1),
                finished_at=at(8),
            ),
        ).session
        result_ = session.step("bureau").result
        assert result_ is not None
        assert (result_.provider, result_.started_at, result_.finished_at) == (
            "experian-eu",
            at(1),
            at(8),
        )

    def test_channel_state_and_challenge(self) -> None:
        """A finished step drops its challenge and takes the final channel state."""
        session = run(
            POLICY,
            started(),
            StepStarted(
                step_id="sms",
                attempt=1,
                at=at(1),
                challenge=Challenge(step_id="sms", kind="code"),
                channel_state={"sent": 1},
            ),
            StepFinished(
                step_id="sms",
                attempt=1,
                at=at(9),
                result=result("failed", "wrong_code"),
                channel_state={"sent": 1, "tries": 3},
            ),
        ).session
        record = session.step("sms")
        assert (record.state, record.challenge) == (StepState.DONE, None)
        assert record.channel_state == {"sent": 1, "tries": 3}


class TestStepTimeout:
    def test_timeout_timer_ends_the_step(self) -> None:
        """The step's timeout cancels the attempt and records a timeout result."""
        step = transition(
            POLICY, started(), TimerFired(timer_id="step:bureau:1:timeout", at=at(30))
        )
        assert step.effects[:2] == (
            CancelStep(
                effect_id="2.0", step_id="bureau", attempt=1, channel="credit_bureau"
            ),
            CancelTimer(effect_id="2.1", timer_id="step:bureau:1:timeout"),
        )
        record = step.session.step("bureau")
        assert record.state is StepState.DONE
        assert record.result == ChannelResult(
            status=ResultStatus.TIMEOUT,
            attempts=1,
            provider="experian",
            started_at=T0,
            finished_at=at(30),
            detail="no result within 30s",
        )
        # A settled bureau lets the call start in the same transition.
        assert step.session.step("call").state is StepState.RUNNING

    def test_timeout_of_an_old_attempt_is_ignored(self) -> None:
        """After a failover, the first attempt's timeout changes nothing."""
        session = run(
            POLICY,
            started(),
            StepErrored(step_id="bureau", attempt=1, at=at(5), error="e1"),
        ).session
        step = transition(
            POLICY, session, TimerFired(timer_id="step:bureau:1:timeout", at=at(30))
        )
        assert step.effects == ()
        assert step.session.step("bureau").state is StepState.RUNNING

    def test_timeout_timer_of_a_step_without_timeout_is_ignored(self) -> None:
        """A timeout timer for a step that has no timeout was never scheduled."""
        session = run(POLICY, after_bureau(), finished("call", "failed")).session
        assert session.step("video").state is StepState.RUNNING
        step = transition(
            POLICY, session, TimerFired(timer_id="step:video:1:timeout", at=at(99))
        )
        assert step.effects == ()
        assert step.session.step("video").state is StepState.RUNNING


class TestChannelTimers:
    def test_fired_channel_timer_notifies_the_channel(self) -> None:
        """A channel timer comes back to the channel as NotifyStep."""
        session = run(
            POLICY,
            started(),
            StepStarted(
                step_id="sms", attempt=1, at=at(1), timers=[("resend", at(60))]
            ),
        ).session
        step = transition(
            POLICY, session, TimerFired(timer_id="step:sms:1:channel:resend", at=at(60))
        )
        assert step.effects == (
            NotifyStep(
                effect_id="3.0",
                step_id="sms",
                attempt=1,
                channel="sms_code",
                name="resend",
            ),
        )
        assert step.session == attrs.evolve(session, inputs=3)

    def test_timer_name_may_contain_colons(self) -> None:
        """Everything after ``channel:`` is the timer's name."""
        step = transition(
            POLICY, started(), TimerFired(timer_id="step:sms:1:channel:a:b", at=at(9))
        )
        assert [e.name for e in step.effects if isinstance(e, NotifyStep)] == ["a:b"]

    def test_timer_of_a_finished_step_is_ignored(self) -> None:
        """A channel timer for a step that has ended changes nothing."""
        session = run(POLICY, started(), finished("sms", "failed")).session
        step = transition(
            POLICY, session, TimerFired(timer_id="step:sms:1:channel:resend", at=at(60))
        )
        assert step.effects == ()

    @pytest.mark.parametrize(
        "timer_id",
        [
            "",
            "step",
            "step:sms:1",
            "timer:sms:1:timeout",
            "step:sms:x:timeout",
            "step:sms:-1:timeout",
            "step:sms:\N{SUPERSCRIPT ONE}:timeout",
            "step:sms:\N{ARABIC-INDIC DIGIT ONE}:timeout",
            "step:ghost:1:timeout",
            "step:sms:1:channel",
            "step:sms:1:bogus",
            "step:sms:2:timeout",
            "deadlines",
        ],
    )
    def test_malformed_or_unknown_timers_are_ignored(self, timer_id: str) -> None:
        """A timer id the core never scheduled changes nothing but the input count."""
        session = started()
        step = transition(POLICY, session, TimerFired(timer_id=timer_id, at=at(5)))
        assert step == Transition(session=attrs.evolve(session, inputs=2))


class TestStaleInputs:
    def test_unknown_input_kind_is_ignored(self) -> None:
        """An object that is not a core input changes nothing but the input count."""
        session = started()
        step = transition(POLICY, session, object())  # type: ignore[arg-type]
        assert step == Transition(session=attrs.evolve(session, inputs=2))

    @pytest.mark.parametrize(
        "event",
        [
            finished("bureau", "passed", attempt=2),
            finished("bureau", "passed", attempt=0),
            StepStarted(step_id="call", attempt=0, at=at(1)),
            StepUpdated(step_id="video", attempt=0, at=at(1)),
            StepErrored(step_id="call", attempt=0, at=at(1), error="x"),
        ],
    )
    def test_input_for_another_attempt_is_ignored(self, event: Input) -> None:
        """Input for an attempt that is not the active one changes nothing."""
        session = started()
        step = transition(POLICY, session, event)
        assert step == Transition(session=attrs.evolve(session, inputs=2))

    def test_result_after_a_timeout_is_ignored(self) -> None:
        """A result arriving after the step timed out is dropped."""
        session = run(
            POLICY, started(), TimerFired(timer_id="step:sms:1:timeout", at=at(300))
        ).session
        step = transition(POLICY, session, finished("sms", "passed", seconds=301))
        assert step.effects == ()
        sms = step.session.step("sms")
        assert sms.result is not None
        assert sms.result.status is ResultStatus.TIMEOUT

    @pytest.mark.parametrize(
        "event",
        [
            Start(at=at(50)),
            finished("sms", "passed"),
            TimerFired(timer_id="deadline", at=at(3600)),
            Cancel(at=at(50)),
        ],
    )
    def test_input_after_the_verdict_is_ignored(self, event: Input) -> None:
        """Once decided, a session only counts further inputs."""
        session = run(
            POLICY, started(), finished("bureau", "failed", "fraud_alert")
        ).session
        assert session.finished
        step = transition(POLICY, session, event)
        assert step == Transition(session=attrs.evolve(session, inputs=3))

    def test_input_after_cancel_is_ignored(self) -> None:
        """A cancelled session ignores results."""
        session = run(POLICY, started(), Cancel(at=at(5))).session
        step = transition(POLICY, session, finished("bureau", "passed"))
        assert step == Transition(session=attrs.evolve(session, inputs=3))


class TestRules:
    def test_early_reject_stops_everything(self) -> None:
        """A fraud alert rejects at once: active steps cancelled, pending skipped."""
        step = transition(
            POLICY, started(), finished("bureau", "failed", "fraud_alert", score=0.1)
        )
        session = step.session
        verdict = session.verdict
        assert verdict is not None
        assert session.status is SessionStatus.DECIDED
        assert verdict.outcome is Outcome.REJECTED
        assert verdict.decided_by == "policy"
        assert verdict.decided_at == at(10)
        assert verdict.reasons == (
            Reason(code="bureau.fraud_alert", message="rule 1 held"),
        )
        assert step.effects == (
            CancelTimer(effect_id="2.0", timer_id="step:bureau:1:timeout"),
            CancelStep(effect_id="2.1", step_id="sms", attempt=1, channel="sms_code"),
            CancelTimer(effect_id="2.2", timer_id="step:sms:1:timeout"),
            CancelTimer(effect_id="2.3", timer_id="deadline"),
            RecordVerdict(effect_id="2.4", verdict=verdict),
        )
        assert states(session) == {
            "bureau": StepState.DONE,
            "call": StepState.SKIPPED,
            "video": StepState.SKIPPED,
            "sms": StepState.CANCELLED,
        }
        assert session.step("sms").result == ChannelResult(
            status=ResultStatus.CANCELLED,
            attempts=1,
            provider=None,
            started_at=T0,
            finished_at=at(10),
            detail="the session no longer needed it",
        )
        assert [s.state for s in verdict.steps] == [
            "done",
            "skipped",
            "skipped",
            "cancelled",
        ]
        assert verdict.steps[0] == StepSummary(
            step_id="bureau",
            channel="credit_bureau",
            state="done",
            result=session.step("bureau").result,
        )

    def test_rule_traces(self) -> None:
        """Rules before the one that fired are evaluated; later ones are not."""
        step = run(
            POLICY,
            after_bureau(),
            finished("call", "passed", seconds=20),
            finished("sms", "passed", seconds=30),
        )
        assert step.session.verdict is not None
        assert step.fired == (
            RuleTrace(
                index=0,
                outcome=Outcome.REJECTED,
                condition=FRAUD,
                reason="bureau.fraud_alert",
                matched=False,
            ),
            RuleTrace(
                index=1,
                outcome=Outcome.APPROVED,
                condition=CONFIRMED,
                reason="applicant.confirmed",
                matched=True,
            ),
            RuleTrace(
                index=2,
                outcome=Outcome.REVIEW,
                condition=PARTLY,
                reason="applicant.partly_confirmed",
                matched=None,
            ),
        )
        assert step.session.verdict.rules == step.fired
        assert step.session.verdict.outcome is Outcome.APPROVED

    def test_waiting_rule_holds_back_later_rules(self) -> None:
        """The review rule would hold, but the approve rule still waits for the call."""
        step = run(POLICY, after_bureau(), finished("sms", "passed", seconds=20))
        assert step.session.verdict is None
        assert step.fired == ()
        assert step.session.step("call").state is StepState.RUNNING

    def test_rule_with_an_error_does_not_hold(self) -> None:
        """A rule whose condition fails to evaluate is recorded as not holding."""
        broken = "steps.bureau.facts.band == 'A'"
        policy = make_policy(
            rules=[
                Rule(outcome="approved", when=broken, reason="band.a"),
                Rule(
                    outcome="review", when="steps.bureau.status == 'passed'", reason="p"
                ),
            ]
        )
        step = run(policy, started(policy), finished("bureau", "passed"))
        verdict = step.session.verdict
        assert verdict is not None
        assert verdict.outcome is Outcome.REVIEW
        first = verdict.rules[0]
        assert (first.matched, first.condition) == (False, broken)
        assert first.error
        assert verdict.rules[1].matched is True

    def test_default_outcome(self) -> None:
        """When every step settled and no rule held, the default decides."""
        step = run(
            POLICY,
            after_bureau(),
            finished("call", "inconclusive", seconds=20),
            finished("sms", "failed", "wrong_code", seconds=30),
        )
        verdict = step.session.verdict
        assert verdict is not None
        assert verdict.outcome is Outcome.REJECTED
        assert verdict.decided_by == "default"
        assert verdict.reasons == (
            Reason(code="policy.default", message="every step ended and no rule held"),
        )
        assert [trace.matched for trace in verdict.rules] == [False, False, False]
        assert step.fired == verdict.rules
        assert isinstance(step.effects[-1], RecordVerdict)

    def test_policy_without_rules_takes_the_default(self) -> None:
        """A policy with no rules decides by its default once steps settle."""
        policy = make_policy(rules=[], default="review")
        step = run(
            policy,
            after_bureau(policy),
            finished("call", "passed", seconds=20),
            finished("sms", "passed", seconds=30),
        )
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.REVIEW
        assert step.session.verdict.rules == ()


class TestOptionalSteps:
    def test_default_does_not_wait_for_optional_steps(self) -> None:
        """An optional step still running is cancelled when the default decides."""
        policy = make_policy(
            steps=make_steps(sms={"optional": True}),
            rules=[Rule(outcome="rejected", when=FRAUD, reason="fraud")],
            default="approved",
        )
        step = run(policy, after_bureau(policy), finished("call", "passed", seconds=20))
        verdict = step.session.verdict
        assert verdict is not None
        assert (verdict.outcome, verdict.decided_by) == (Outcome.APPROVED, "default")
        assert step.session.step("sms").state is StepState.CANCELLED
        assert (
            CancelStep(effect_id="3.1", step_id="sms", attempt=1, channel="sms_code")
            in step.effects
        )


class TestDeadline:
    def test_deadline_expires_the_session(self) -> None:
        """At the deadline the session takes ``on_deadline`` and stops its steps."""
        session = after_bureau()
        step = transition(POLICY, session, TimerFired(timer_id="deadline", at=at(3600)))
        verdict = step.session.verdict
        assert verdict is not None
        assert (verdict.outcome, verdict.decided_by) == (Outcome.EXPIRED, "deadline")
        assert verdict.rules == ()
        assert verdict.reasons == (
            Reason(
                code="session.deadline",
                message="the session reached its deadline before a decision",
            ),
        )
        assert step.fired == ()
        assert step.effects == (
            CancelStep(
                effect_id="3.0", step_id="call", attempt=1, channel="phone_call"
            ),
            CancelTimer(effect_id="3.1", timer_id="step:call:1:timeout"),
            CancelStep(effect_id="3.2", step_id="sms", attempt=1, channel="sms_code"),
            CancelTimer(effect_id="3.3", timer_id="step:sms:1:timeout"),
            RecordVerdict(effect_id="3.4", verdict=verdict),
        )
        assert states(step.session) == {
            "bureau": StepState.DONE,
            "call": StepState.CANCELLED,
            "video": StepState.SKIPPED,
            "sms": StepState.CANCELLED,
        }

    @pytest.mark.parametrize("late", [3600, 7200])
    def test_an_input_at_or_past_the_deadline_finds_the_session_expired(
        self, late: float
    ) -> None:
        """The deadline decides even when its timer has not fired yet (no worker ran it): a late result is not applied."""
        session = after_bureau()
        step = transition(POLICY, session, finished("sms", "passed", seconds=late))
        verdict = step.session.verdict
        assert verdict is not None
        assert (verdict.outcome, verdict.decided_by) == (Outcome.EXPIRED, "deadline")
        assert verdict.decided_at == at(3600)  # when the session expired
        assert step.session.step("sms").state is StepState.CANCELLED
        assert step.session.inputs == session.inputs + 1
        fired = transition(
            POLICY, step.session, TimerFired(timer_id="deadline", at=at(late + 1))
        )
        assert (
            fired.session.verdict == verdict
        )  # the timer that fires later changes nothing

    def test_an_input_just_before_the_deadline_still_applies(self) -> None:
        """One microsecond before the deadline, the result counts as always."""
        session = after_bureau()
        early = finished("sms", "passed", seconds=3600 - 1e-6)
        step = transition(POLICY, session, early)
        assert step.session.step("sms").state is StepState.DONE

    def test_a_cancel_after_the_deadline_finds_the_session_expired(self) -> None:
        """A cancel that comes after the deadline is too late: the session expired first."""
        step = transition(POLICY, after_bureau(), Cancel(at=at(4000)))
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.EXPIRED

    def test_on_deadline_outcome(self) -> None:
        """``on_deadline`` chooses the outcome at the deadline."""
        policy = make_policy(on_deadline="review")
        step = transition(
            policy, started(policy), TimerFired(timer_id="deadline", at=at(3600))
        )
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.REVIEW

    def test_deadline_timer_without_a_deadline_is_ignored(self) -> None:
        """A policy without a deadline never scheduled one: its timer is ignored."""
        policy = make_policy(deadline=None)
        session = started(policy)
        step = transition(policy, session, TimerFired(timer_id="deadline", at=at(9)))
        assert step == Transition(session=attrs.evolve(session, inputs=2))


class TestCancel:
    def test_cancel_stops_everything_without_a_verdict(self) -> None:
        """Cancel stops active steps, skips pending ones and forgets the deadline."""
        step = transition(POLICY, started(), Cancel(at=at(5), reason="withdrawn"))
        assert step.session.status is SessionStatus.CANCELLED
        assert step.session.verdict is None
        assert step.session.finished
        assert step.effects == (
            CancelStep(
                effect_id="2.0", step_id="bureau", attempt=1, channel="credit_bureau"
            ),
            CancelTimer(effect_id="2.1", timer_id="step:bureau:1:timeout"),
            CancelStep(effect_id="2.2", step_id="sms", attempt=1, channel="sms_code"),
            CancelTimer(effect_id="2.3", timer_id="step:sms:1:timeout"),
            CancelTimer(effect_id="2.4", timer_id="deadline"),
        )
        assert states(step.session) == {
            "bureau": StepState.CANCELLED,
            "call": StepState.SKIPPED,
            "video": StepState.SKIPPED,
            "sms": StepState.CANCELLED,
        }
        bureau = step.session.step("bureau").result
        assert bureau is not None
        assert (bureau.status, bureau.provider) == (ResultStatus.CANCELLED, "experian")

    def test_cancel_without_deadline(self) -> None:
        """Without a deadline there is no deadline timer to cancel."""
        policy = make_policy(deadline=None)
        step = transition(policy, started(policy), Cancel(at=at(5)))
        assert not any(
            isinstance(e, CancelTimer) and e.timer_id == "deadline"
            for e in step.effects
        )


class TestScore:
    def test_mean_of_step_scores(self) -> None:
        """By default the score is the mean of the steps' scores."""
        step = run(
            POLICY,
            started(),
            finished("bureau", "passed", score=0.9),
            finished("call", "passed", score=0.6, seconds=20),
            finished("sms", "passed", seconds=30),
        )
        assert step.session.verdict is not None
        assert step.session.verdict.score == pytest.approx(0.75)

    def test_no_scores(self) -> None:
        """Without any step score the verdict has none."""
        step = run(POLICY, started(), finished("bureau", "failed", "fraud_alert"))
        assert step.session.verdict is not None
        assert step.session.verdict.score is None

    def test_score_expression(self) -> None:
        """The policy's ``score`` expression replaces the mean."""
        policy = make_policy(
            score="steps.bureau.score * 0.5 + steps.call.score * 0.5 - 0.1"
        )
        step = run(
            policy,
            started(policy),
            finished("bureau", "passed", score=0.8),
            finished("call", "passed", score=0.4, seconds=20),
            finished("sms", "passed", seconds=30),
        )
        assert step.session.verdict is not None
        assert step.session.verdict.score == pytest.approx(0.5)

    def test_score_expression_error(self) -> None:
        """A score expression that cannot be evaluated leaves the score empty."""
        policy = make_policy(score="steps.bureau.score + steps.call.score")
        step = run(
            policy,
            started(policy),
            finished("bureau", "failed", "fraud_alert", score=0.2),
        )
        assert step.session.verdict is not None
        assert step.session.verdict.score is None


class TestRequireWaiting:
    @pytest.mark.parametrize("waiting", [False, True])
    def test_active_step(self, waiting: bool) -> None:
        """A running or waiting step can take input; its record is returned."""
        session = started()
        if waiting:
            session = run(
                POLICY, session, StepStarted(step_id="sms", attempt=1, at=at(1))
            ).session
        assert require_waiting(session, "sms") == session.step("sms")

    def test_finished_session(self) -> None:
        """A decided or cancelled session refuses input."""
        session = run(POLICY, started(), Cancel(at=at(1))).session
        with pytest.raises(SessionFinishedError) as info:
            require_waiting(session, "sms")
        assert info.value.session_id == SID
        assert "cancelled" in str(info.value)

    def test_unknown_step(self) -> None:
        """An unknown step is StepNotFoundError."""
        with pytest.raises(StepNotFoundError):
            require_waiting(started(), "ghost")

    @pytest.mark.parametrize("step_id", ["call", "video"])
    def test_step_not_active(self, step_id: str) -> None:
        """A pending step is not waiting for input."""
        with pytest.raises(StepNotWaitingError) as info:
            require_waiting(started(), step_id)
        assert info.value.step_id == step_id
        assert "pending" in str(info.value)

    def test_done_step(self) -> None:
        """A finished step is not waiting for input."""
        session = run(POLICY, started(), finished("sms", "failed")).session
        with pytest.raises(StepNotWaitingError, match="done"):
            require_waiting(session, "sms")


# --- properties ----------------------------------------------------------------

PROPERTY_POLICIES = {
    "consumer-loan": POLICY,
    "optional-sms-scored": make_policy(
        deadline=None,
        steps=make_steps(
            sms={"optional": True},
            call={"when": "steps.bureau.facts.band != 'C'"},
        ),
        score="steps.bureau.score * 0.5 + steps.call.score * 0.5",
        rules=[
            Rule(outcome="rejected", when=FRAUD, reason="fraud"),
            Rule(
                outcome="approved",
                when="steps.call.status == 'passed' && steps.bureau.facts.band == 'A'",
                reason="band_a",
            ),
        ],
    ),
}
STEP_IDS = ["bureau", "call", "video", "sms"]
steps_ = st.sampled_from([*STEP_IDS, "ghost"])
attempts = st.integers(min_value=0, max_value=3)
times = st.integers(min_value=0, max_value=7200).map(at)
signals = st.lists(
    st.sampled_from(
        ["identity_match", "no_answer", "wrong_code", "liveness_passed", "fraud_alert"]
    ),
    max_size=2,
)
results = st.builds(
    result,
    st.sampled_from([status.value for status in ResultStatus]),
    score=st.none() | st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]),
    provider=st.none() | st.just("vendor-x"),
    facts=st.sampled_from([{}, {"band": "A"}, {"band": "C"}]),
).flatmap(
    lambda r: signals.map(
        lambda names: attrs.evolve(r, signals=[Signal(name=n) for n in names])
    )
)
channel_state = st.sampled_from(
    [{}, {"hmac": "secret", "destination": "+8613800138000"}]
)
challenges = st.none() | st.builds(
    Challenge, step_id=st.sampled_from(STEP_IDS), kind=st.sampled_from(["code", "call"])
)
channel_timers = st.lists(
    st.tuples(st.sampled_from(["resend", "expire", "a:b"]), times), max_size=2
)
timeout_timers = st.builds("step:{}:{}:timeout".format, steps_, attempts)
channel_timer_ids = st.builds(
    "step:{}:{}:channel:{}".format,
    steps_,
    attempts,
    st.sampled_from(["resend", "expire", "a:b"]),
)
garbage_timers = st.builds(
    "step:{}:{}:{}".format,
    steps_,
    st.sampled_from(
        ["", "x", "-1", "1.0", "\N{SUPERSCRIPT TWO}", "\N{SUPERSCRIPT ONE}", "\u0661"]
    )
    | st.text(max_size=3),
    st.sampled_from(["timeout", "channel", "channel:"]) | st.text(max_size=8),
)
# The deadline ends the session, so it is drawn less often than the rest.
timer_ids = st.one_of(
    *[timeout_timers, channel_timer_ids, garbage_timers] * 6,
    st.text(max_size=20),
    st.just("deadline"),
)
step_inputs: st.SearchStrategy[Input] = st.one_of(
    st.builds(
        StepStarted,
        step_id=steps_,
        attempt=attempts,
        at=times,
        challenge=challenges,
        channel_state=channel_state,
        timers=channel_timers,
    ),
    st.builds(
        StepUpdated,
        step_id=steps_,
        attempt=attempts,
        at=times,
        challenge=challenges,
        channel_state=channel_state,
        timers=channel_timers,
    ),
    st.builds(
        StepFinished,
        step_id=steps_,
        attempt=attempts,
        at=times,
        result=results,
        channel_state=channel_state,
    ),
    st.builds(
        StepErrored,
        step_id=steps_,
        attempt=attempts,
        at=times,
        error=st.sampled_from(["HTTP 503", "timed out"]),
        provider=st.none() | st.sampled_from(["experian", "twilio"]),
        failover=st.booleans(),
    ),
    st.builds(TimerFired, timer_id=timer_ids, at=times),
    st.builds(TimerFired, timer_id=timer_ids, at=times),
)
# A cancelled session ignores everything after, so Cancel comes only last.
inputs: st.SearchStrategy[Input] = st.one_of(
    *[step_inputs] * 20, st.builds(Start, at=times)
)
scenarios = st.tuples(
    st.sampled_from(sorted(PROPERTY_POLICIES)),
    st.sampled_from(["50000", "5000"]),
    st.tuples(
        st.lists(inputs, min_size=4, max_size=30),
        st.lists(st.builds(Cancel, at=times, reason=st.just("withdrawn")), max_size=1),
    ).map(lambda parts: [*parts[0], *parts[1]]),
)
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
Scenario = tuple[str, str, Sequence[Input]]
# Sequences that once made the core raise a bare ValueError or TypeError.
REGRESSIONS: list[Scenario] = [
    (
        "consumer-loan",
        "50000",
        [TimerFired(timer_id="step:sms:\N{SUPERSCRIPT TWO}:timeout", at=at(1))],
    ),
    (
        "consumer-loan",
        "50000",
        [
            finished("bureau", "passed"),
            finished("call", "failed", seconds=20),
            TimerFired(timer_id="step:video:1:timeout", at=at(30)),
        ],
    ),
]


def property_test(test: Callable[[Any, Scenario], None]) -> Callable[..., None]:
    """Run a property over generated scenarios plus the known regressions."""
    for scenario in REGRESSIONS:
        test = example(scenario=scenario)(test)
    return PROPERTY_SETTINGS(given(scenario=scenarios)(test))


def without_channel_state(session: Session) -> Session:
    """What the audit trail keeps of a session."""
    return attrs.evolve(
        session,
        applicant=None,
        audit_head="",
        audit_count=0,
        steps=[attrs.evolve(r, channel_state={}) for r in session.steps],
    )


class TestTransitionProperties:
    @property_test
    def test_deterministic(self, scenario: Scenario) -> None:
        """The same session and input always give the same transition."""
        name, amount, events = scenario
        policy = PROPERTY_POLICIES[name]
        session = transition(policy, fresh(policy, amount=amount), Start(at=T0)).session
        for event in events:
            try:
                first = transition(policy, session, event)
            except StepNotFoundError:
                with pytest.raises(StepNotFoundError):
                    transition(policy, session, event)
                continue
            assert transition(policy, session, event) == first
            session = first.session

    @property_test
    def test_replay_reproduces_the_session(self, scenario: Scenario) -> None:
        """Replaying the audit trail's inputs rebuilds the same steps and verdict."""
        name, amount, events = scenario
        policy = PROPERTY_POLICIES[name]
        session = fresh(policy, amount=amount)
        session, created = AuditTrail.created(session, at=T0)
        trail = [created]
        for event in [Start(at=T0), *events]:
            try:
                moved = transition(policy, session, event).session
            except StepNotFoundError:
                continue
            session, recorded = AuditTrail.input(moved, event, at=event.at)
            trail.append(recorded)
        replayed = AuditTrail.replay(policy, trail)
        assert [(r.state, r.result) for r in replayed.steps] == [
            (r.state, r.result) for r in session.steps
        ]
        assert replayed.verdict == session.verdict
        assert replayed == without_channel_state(session)

    @property_test
    def test_only_sdk_errors(self, scenario: Scenario) -> None:
        """No input sequence makes the core raise anything but an SDK error."""
        name, amount, events = scenario
        policy = PROPERTY_POLICIES[name]
        session = fresh(policy, amount=amount)
        for event in [Start(at=T0), *events]:
            try:
                session = transition(policy, session, event).session
            except MultiverifyError:
                continue
            for record in session.steps:
                with contextlib.suppress(MultiverifyError):
                    require_waiting(session, record.step_id)

    @property_test
    def test_rounds_skipped_only_where_nothing_can_change(
        self, scenario: Scenario
    ) -> None:
        """Deciding again after steps merely started changes no transition."""
        name, amount, events = scenario
        policy = PROPERTY_POLICIES[name]
        session = fresh(policy, amount=amount)
        plan = _plan(policy)
        assert plan.settled_only
        for event in [Start(at=T0), *events]:
            try:
                short = transition(policy, session, event)
            except StepNotFoundError:
                continue
            plan.settled_only = False
            try:
                full = transition(policy, session, event)
            finally:
                plan.settled_only = True
            assert short == full
            session = short.session


# --- shared condition contexts ----------------------------------------------------


class TestConditionContexts:
    @pytest.mark.parametrize("value", [1, 1.0, True, 0.0, -0.0, "1", None])
    def test_shared_contexts_decide_as_fresh_ones(
        self, value: object, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Equal-looking values of other types never share a context."""
        policy = make_policy(
            rules=[
                Rule(outcome="approved", when="steps.bureau.facts.n == 1", reason="n")
            ]
        )
        inputs = [
            Start(at=T0),
            finished("bureau", "passed", facts={"n": value}),
            finished("call", "passed", seconds=20),
            finished("sms", "passed", seconds=30),
        ]
        # Fill the cache with every other value first.
        for other in [1, 1.0, True, 0.0, -0.0, "1", None]:
            run(
                policy,
                fresh(policy),
                *inputs[:1],
                finished("bureau", "passed", facts={"n": other}),
                *inputs[2:],
            )
        shared = run(policy, fresh(policy), *inputs)
        monkeypatch.setattr(_session, "_context_for", make_context)
        assert run(policy, fresh(policy), *inputs) == shared

    def test_each_condition_gets_only_what_it_reads(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rule's context holds its own reads, not every rule's, and decides alike."""
        policy = make_policy(
            rules=[
                Rule(
                    outcome="rejected",
                    when="application.amount > 90000.0",
                    reason="amount",
                ),
                Rule(
                    outcome="approved",
                    when="steps.bureau.status == 'passed'",
                    reason="bureau",
                ),
            ]
        )
        inputs = [Start(at=T0), finished("bureau", "passed")]
        built: list[dict[str, Any]] = []

        def spy(variables: dict[str, Any]) -> Any:
            built.append(variables)
            return make_context(variables)

        monkeypatch.setattr(_session, "_context_for", spy)
        outcome = run(policy, fresh(policy), *inputs)
        assert outcome.session.verdict is not None
        assert outcome.session.verdict.outcome == "approved"
        assert {"application": {"amount": 50000.0}} in built
        assert {"steps": {"bureau": {"status": "passed"}}} in built
        assert all(len(variables) == 1 for variables in built)

    def test_keys(self) -> None:
        """Keys tell apart every value a JSON-like comparison would confuse."""
        values: list[Any] = [
            1, 1.0, True, 0, 0.0, -0.0, False, "1", None, [1], (1,), [[1]],
            {"a": 1}, {"a": 1.0}, {1: "a"}, {"a": None}, ["a"], [None], float("inf"),
        ]  # fmt: skip
        keys = [_session._key(value) for value in values]
        assert len(set(keys)) == len(values)
        assert _session._key(float("nan")) == _session._key(float("nan"))

    def test_values_without_a_key_are_not_shared(self) -> None:
        """A context with a value the cache cannot key is built afresh."""
        variables = {"steps": {"bureau": {"facts": {"at": T0}}}}
        before = dict(_session._CONTEXTS)
        context = _session._context_for(variables)
        assert _session._context_for(variables) is not context
        assert before == _session._CONTEXTS

    def test_the_cache_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A full cache starts over rather than grow."""
        monkeypatch.setattr(_session, "_CONTEXTS", {})
        monkeypatch.setattr(_session, "_CONTEXTS_MAX", 2)
        for n in range(5):
            _session._context_for({"n": n})
            assert len(_session._CONTEXTS) <= 2
        assert _session._context_for({"n": 4}) is _session._context_for({"n": 4})


class TestWholeReads:
    def test_whole_roots_and_steps(self) -> None:
        """Conditions reading whole roots or whole steps see all their fields."""
        policy = make_policy(
            rules=[
                Rule(
                    outcome="approved",
                    when="size(applicant) == 7 && applicant.age > 18 && size(application) == 8 "
                    "&& size(steps.bureau) == 6 && steps.bureau.status == 'passed'",
                    reason="whole",
                )
            ]
        )
        step = run(policy, started(policy), finished("bureau", "passed"))
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.APPROVED
        policy = make_policy(
            rules=[
                Rule(
                    outcome="approved",
                    when="size(steps) == 4 && steps.bureau.status == 'passed'",
                    reason="all",
                )
            ]
        )
        step = run(policy, started(policy), finished("bureau", "passed"))
        assert step.session.verdict is not None
        assert step.session.verdict.outcome is Outcome.APPROVED


class TestRoundsOfAdvance:
    def test_rules_reading_every_step_see_steps_start(self) -> None:
        """A rule that reads all steps is decided again once steps have started."""
        policy = make_policy(
            rules=[
                Rule(
                    outcome="approved",
                    when="steps['bureau'].status == 'running'",
                    reason="running",
                )
            ]
        )
        assert not _plan(policy).settled_only
        step = run(policy, fresh(policy), Start(at=T0))
        assert step.session.verdict is not None
        assert step.session.verdict.reasons[0].code == "running"

    def test_a_skipped_step_calls_for_another_round(self) -> None:
        """A step skipped by its condition settles: rules and steps after it move."""
        policy = make_policy(
            steps=make_steps(call={"after": ("bureau",), "when": "false"}),
            rules=[
                Rule(
                    outcome="review",
                    when="steps.call.status == 'skipped'",
                    reason="no_call",
                )
            ],
        )
        step = run(policy, started(policy), finished("bureau", "passed"))
        assert step.session.verdict is not None
        assert step.session.verdict.reasons[0].code == "no_call"


class TestFailoverWithChannelTimers:
    def test_timers_of_the_failed_attempt_are_cancelled(self) -> None:
        """Failing over cancels the failed attempt's channel timers too."""
        session = run(
            POLICY,
            started(),
            StepStarted(
                step_id="bureau", attempt=1, at=at(1), timers=[("poll", at(20))]
            ),
        ).session
        assert session.step("bureau").timers == ("poll",)
        step = transition(
            POLICY,
            session,
            StepErrored(step_id="bureau", attempt=1, at=at(5), error="HTTP 503"),
        )
        assert step.effects[:2] == (
            CancelTimer(effect_id="3.0", timer_id="step:bureau:1:timeout"),
            CancelTimer(effect_id="3.1", timer_id="step:bureau:1:channel:poll"),
        )
        record = step.session.step("bureau")
        assert (record.state, record.attempt, record.timers) == (
            StepState.RUNNING,
            2,
            (),
        )
        assert record.errors == ("HTTP 503",)


# The modules of the pure core (design.md section 4): the transition function,
# the values it works on, the policy and its conditions, and what they use.
CORE_MODULES = (
    "multiverify._session",
    "multiverify._results",
    "multiverify._applicant",
    "multiverify._masking",
    "multiverify._duration",
    "multiverify._specs",
    "multiverify._serde",
    "multiverify._call_script",
    "multiverify.exceptions",
    "multiverify.policy",
    "multiverify.compliance._windows",
)
# Modules that do I/O, read the clock or draw randomness, and the SDK's runtime.
IMPURE_MODULES = (
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "sqlite3",
    "http.client",
    "urllib.request",
    "httpx",
    "httpcore",
    "anyio",
    "random",
    "secrets",
    "uuid",
    "tempfile",
    "shutil",
    "temporalio",
    "rich",
    "typer",
    "prompt_toolkit",
    "multiverify._verifier",
    "multiverify._clock",
    "multiverify._http",
    "multiverify.stores",
    "multiverify.channels",
    "multiverify.providers",
    "multiverify.webhooks",
    "multiverify.sandbox",
    "multiverify.testing",
)
_IMPORT_CORE_ALONE = """
import importlib, json, pathlib, sys, types
# The package without its __init__ (which wires in the runtime): only the core.
package = types.ModuleType("multiverify")
package.__path__ = [sys.argv[1]]
sys.modules["multiverify"] = package
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
# Build and evaluate a policy, so lazily imported helpers load too.
from multiverify.policy import Policy, Rule, Step
policy = Policy(
    name="p", version="1",
    steps=[Step(id="call", channel="phone_call"), Step(id="sms", channel="sms_code")],
    rules=[Rule(outcome="approved", when="steps.sms.status == 'passed'", reason="ok")],
)
policy.condition(policy.rules[0].when).evaluate(
    {"steps": {"sms": {"status": "passed"}}}
)
print(json.dumps(sorted(sys.modules)))
"""
# Calls that read the clock or draw randomness, as ``owner.attribute``.
_IMPURE_CALLS = frozenset(
    {
        "datetime.now",
        "datetime.utcnow",
        "datetime.today",
        "date.today",
        "time.time",
        "time.monotonic",
        "time.perf_counter",
        "os.urandom",
    }
)


class TestPurity:
    def test_the_core_imports_nothing_that_does_io(self) -> None:
        """Imported alone, the core loads no I/O, clock, randomness or runtime module.

        A fresh interpreter imports only the core's modules (bypassing the
        package ``__init__``, which wires in the runtime) and builds and
        evaluates a policy; none of the impure modules is loaded.
        """
        source = Path(multiverify.__file__).parent
        done = subprocess.run(  # noqa: S603 - our own interpreter and code
            [
                sys.executable,
                "-c",
                _IMPORT_CORE_ALONE,
                str(source),
                json.dumps(CORE_MODULES),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        loaded = set(json.loads(done.stdout))
        assert set(CORE_MODULES) <= loaded
        impure = sorted(
            name
            for name in loaded
            if any(name == bad or name.startswith(f"{bad}.") for bad in IMPURE_MODULES)
        )
        assert impure == []

    @pytest.mark.parametrize("module", CORE_MODULES)
    def test_the_core_reads_no_clock_and_draws_no_randomness(self, module: str) -> None:
        """No core module calls ``datetime.now``, ``time.time``, ``os.urandom``...

        Time reaches the core inside its inputs; a clock read or a random
        draw there would make the transition function impure.
        """
        spec = importlib.util.find_spec(module)
        assert spec is not None
        assert spec.origin is not None
        paths = (
            sorted(Path(spec.origin).parent.glob("*.py"))
            if spec.origin.endswith("__init__.py")
            else [Path(spec.origin)]
        )
        found = [
            f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}"
            for path in paths
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and f"{node.value.id}.{node.attr}" in _IMPURE_CALLS
        ]
        assert found == []


class TestChannelStateRepr:
    @pytest.mark.parametrize(
        "value",
        [
            StepRecord(step_id="sms", channel_state={"destination": "+8613800138000"}),
            StepStarted(
                step_id="sms",
                attempt=1,
                at=T0,
                channel_state={"destination": "+8613800138000"},
            ),
            StepFinished(
                step_id="sms",
                attempt=1,
                at=T0,
                result=ChannelResult(status="passed"),
                channel_state={"destination": "+8613800138000"},
            ),
        ],
    )
    def test_reprs_show_the_keys_of_a_channels_state_not_its_values(
        self, value: object
    ) -> None:
        """A channel's state may hold a phone number: reprs (and logs) show its keys only."""
        text = repr(value)
        assert "channel_state={'destination': ...}" in text
        assert "13800138000" not in text
