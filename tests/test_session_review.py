"""The pure core in review: entering, deciding, evidence, SLA timers, cancelling.

No store, no clock, no runtime: inputs in, session and effects out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from multiverify import (
    Applicant,
    ChannelResult,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    ReviewSettings,
    Rule,
    Step,
    StepState,
)
from multiverify._session import (
    REVIEW_ESCALATE_TIMER,
    REVIEW_FALLBACK_TIMER,
    Cancel,
    CancelStep,
    CancelTimer,
    DequeueReview,
    Effect,
    EscalateReview,
    EvidenceRequested,
    Input,
    QueueReview,
    RecordVerdict,
    ReviewDecided,
    ScheduleTimer,
    Session,
    SessionStatus,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepStarted,
    TimerFired,
    check_decision,
    new_session,
    require_review,
    transition,
)
from multiverify.exceptions import (
    InvalidInputError,
    NotInReviewError,
    SessionFinishedError,
)

T0 = datetime(2025, 3, 7, 9, 0, tzinfo=UTC)
HOUR = 3600


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


RULES = [
    Rule(outcome="approved", when="steps.bureau.status == 'passed'", reason="ok"),
    Rule(outcome="review", when="steps.bureau.status == 'inconclusive'", reason="thin"),
]
REVIEW = ReviewSettings(
    priority=3,
    sla="1h",
    escalate_by=7,
    fallback_after="2h",
    fallback="expired",
    approve_reasons=["identity_confirmed"],
    evidence=[
        Step(
            id="video",
            channel="video_sign",
            timeout="30m",
            providers=["veriff", "tencent"],
        )
    ],
)


def policy(
    review: ReviewSettings | None = REVIEW, deadline: str | None = "3h"
) -> Policy:
    return Policy(
        name="p",
        version="1",
        deadline=deadline,
        steps=[Step(id="bureau", channel="credit_bureau")],
        rules=RULES,
        default="rejected",
        review=review,
    )


APPLICANT = Applicant(
    applicant_id="a",
    name="Li Lei",
    national_id="110101199003074514",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(amount="1000", currency="CNY", term_months=6, purpose="rent"),
)


def feed(chosen: Policy, *events: Input) -> tuple[Session, list[Effect]]:
    """Apply inputs from a fresh session; return the session and the last effects."""
    session = new_session(chosen, APPLICANT, session_id="s", at=T0)
    effects: list[Effect] = []
    for event in events:
        result = transition(chosen, session, event)
        session, effects = result.session, list(result.effects)
    return session, effects


def bureau(status: str, seconds: float = 1) -> StepFinished:
    return StepFinished(
        step_id="bureau",
        attempt=1,
        at=at(seconds),
        result=ChannelResult(status=ResultStatus(status)),
    )


def decided(outcome: str = "approved", seconds: float = 60) -> ReviewDecided:
    return ReviewDecided(
        at=at(seconds),
        reviewer="alice",
        outcome=Outcome(outcome),
        reason="identity_confirmed",
        note="checked",
    )


def kinds(effects: list[Effect]) -> list[str]:
    return [type(effect).__name__ for effect in effects]


class TestEnteringReview:
    def test_without_a_review_table_review_is_final(self) -> None:
        """A policy without [review] decides review as before: finished, announced."""
        session, effects = feed(policy(None), Start(at=T0), bureau("inconclusive"))
        assert session.status is SessionStatus.DECIDED
        assert session.review is None
        assert isinstance(effects[-1], RecordVerdict)

    def test_with_a_review_table_the_session_waits(self) -> None:
        """The session waits in review: queued, its SLA timers set, no verdict announced."""
        session, effects = feed(policy(), Start(at=T0), bureau("inconclusive"))
        assert session.status is SessionStatus.REVIEW
        assert not session.finished
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.REVIEW
        assert session.review is not None
        assert session.review.queued_at == at(1)
        assert session.review.priority == 3
        assert not any(isinstance(effect, RecordVerdict) for effect in effects)
        queued = [e for e in effects if isinstance(e, QueueReview)]
        assert queued == [
            QueueReview(effect_id=queued[0].effect_id, priority=3, queued_at=at(1))
        ]
        timers = {e.timer_id: e.due_at for e in effects if isinstance(e, ScheduleTimer)}
        assert timers == {
            REVIEW_ESCALATE_TIMER: at(1 + HOUR),
            REVIEW_FALLBACK_TIMER: at(1 + 2 * HOUR),
        }
        # In review the SLA bounds the session, not the deadline.
        cancelled = {e.timer_id for e in effects if isinstance(e, CancelTimer)}
        assert "deadline" in cancelled

    def test_other_outcomes_are_final(self) -> None:
        """Approved stays approved with a review table."""
        session, effects = feed(policy(), Start(at=T0), bureau("passed"))
        assert session.status is SessionStatus.DECIDED
        assert isinstance(effects[-1], RecordVerdict)

    def test_a_deadline_of_review_is_queued_too(self) -> None:
        """Whatever decides review (here the deadline) sends the case to the queue."""
        chosen = Policy(
            name="p",
            version="1",
            deadline="10m",
            on_deadline="review",
            steps=[Step(id="bureau", channel="credit_bureau")],
            review=ReviewSettings(),
        )
        session, effects = feed(
            chosen, Start(at=T0), TimerFired(timer_id="deadline", at=at(600))
        )
        assert session.status is SessionStatus.REVIEW
        assert "QueueReview" in kinds(effects)
        assert "ScheduleTimer" not in kinds(effects)  # no SLA in the table

    def test_the_deadline_does_not_reach_a_case_in_review(self) -> None:
        """A stale deadline timer leaves the case alone."""
        session, effects = feed(
            policy(),
            Start(at=T0),
            bureau("inconclusive"),
            TimerFired(timer_id="deadline", at=at(3 * HOUR)),
        )
        assert session.status is SessionStatus.REVIEW
        assert effects == []


class TestDecisions:
    def test_a_decision_settles_the_case(self) -> None:
        """The decision becomes the verdict; the automatic one stays beside it."""
        session, effects = feed(
            policy(), Start(at=T0), bureau("inconclusive"), decided()
        )
        assert session.status is SessionStatus.DECIDED
        verdict = session.verdict
        assert verdict is not None
        assert verdict.outcome is Outcome.APPROVED
        assert verdict.decided_by == "reviewer"
        assert verdict.reasons[0].code == "identity_confirmed"
        assert "alice" in verdict.reasons[0].message
        assert "checked" not in verdict.reasons[0].message  # the note stays out
        assert verdict.review is not None
        assert verdict.review.note == "checked"
        assert verdict.review.waited == 59
        assert verdict.automatic is not None
        assert verdict.automatic.reasons[0].code == "thin"
        assert kinds(effects) == [
            "DequeueReview",
            "CancelTimer",
            "CancelTimer",
            "RecordVerdict",
        ]
        timers = {e.timer_id for e in effects if isinstance(e, CancelTimer)}
        assert timers == {REVIEW_ESCALATE_TIMER, REVIEW_FALLBACK_TIMER}

    def test_review_inputs_outside_review_change_nothing(self) -> None:
        """A decision for a running or a decided session is ignored."""
        chosen = policy()
        running, effects = feed(chosen, Start(at=T0), decided())
        assert running.status is SessionStatus.ACTIVE
        assert effects == []
        finished, effects = feed(
            chosen, Start(at=T0), bureau("passed"), decided(), decided("rejected")
        )
        assert finished.verdict is not None
        assert finished.verdict.outcome is Outcome.APPROVED
        assert finished.verdict.review is None
        assert effects == []

    def test_cancel_in_review(self) -> None:
        """Cancelling takes the case out of the queue and stops its timers."""
        session, effects = feed(
            policy(), Start(at=T0), bureau("inconclusive"), Cancel(at=at(5))
        )
        assert session.status is SessionStatus.CANCELLED
        assert kinds(effects) == ["DequeueReview", "CancelTimer", "CancelTimer"]

    def test_require_review(self) -> None:
        """Only a session in review, not collecting evidence, takes a decision."""
        chosen = policy()
        running, _ = feed(chosen, Start(at=T0))
        with pytest.raises(NotInReviewError):
            require_review(running)
        waiting, _ = feed(chosen, Start(at=T0), bureau("inconclusive"))
        assert require_review(waiting).priority == 3
        collecting, _ = feed(
            chosen,
            Start(at=T0),
            bureau("inconclusive"),
            EvidenceRequested(at=at(2), reviewer="a", step_id="video"),
        )
        with pytest.raises(NotInReviewError, match="evidence"):
            require_review(collecting)
        assert require_review(collecting, collecting=True).evidence == ("video",)
        done, _ = feed(chosen, Start(at=T0), bureau("passed"))
        with pytest.raises(SessionFinishedError):
            require_review(done)

    def test_check_decision(self) -> None:
        """Outcome, reviewer and reason code are checked against the policy."""
        chosen = policy()
        check_decision(chosen, decided())
        check_decision(
            chosen,
            ReviewDecided(
                at=T0, reviewer="a", outcome=Outcome.REJECTED, reason="any.code"
            ),
        )
        for bad, field in (
            (
                ReviewDecided(at=T0, reviewer="a", outcome="expired", reason="x"),
                "outcome",
            ),
            (
                ReviewDecided(
                    at=T0, reviewer=" ", outcome="approved", reason="identity_confirmed"
                ),
                "reviewer",
            ),
            (
                ReviewDecided(at=T0, reviewer="a", outcome="approved", reason="other"),
                "reason",
            ),
            (
                ReviewDecided(
                    at=T0, reviewer="a", outcome="rejected", reason="Bad Code"
                ),
                "reason",
            ),
        ):
            with pytest.raises(InvalidInputError) as caught:
                check_decision(chosen, bad)
            assert caught.value.field == field


class TestEvidence:
    def test_evidence_starts_and_the_case_returns(self) -> None:
        """The evidence step starts out of the queue; its result brings the case back."""
        chosen = policy()
        session, effects = feed(
            chosen,
            Start(at=T0),
            bureau("inconclusive"),
            EvidenceRequested(at=at(10), reviewer="alice", step_id="video"),
        )
        assert kinds(effects) == ["DequeueReview", "StartStep", "ScheduleTimer"]
        start = effects[1]
        assert isinstance(start, StartStep)
        assert (start.step_id, start.channel, start.provider) == (
            "video",
            "video_sign",
            "veriff",
        )
        assert session.step("video").state is StepState.RUNNING
        assert session.status is SessionStatus.REVIEW

        again = transition(
            chosen,
            session,
            EvidenceRequested(at=at(11), reviewer="bob", step_id="video"),
        )
        assert again.effects == ()  # already being collected

        waiting = transition(
            chosen,
            session,
            StepStarted(step_id="video", attempt=1, at=at(12)),
        ).session
        result = transition(
            chosen,
            waiting,
            StepFinished(
                step_id="video",
                attempt=1,
                at=at(100),
                result=ChannelResult(status=ResultStatus.PASSED, score=0.8),
            ),
        )
        assert result.session.status is SessionStatus.REVIEW
        assert kinds(list(result.effects)) == ["CancelTimer", "QueueReview"]
        back = result.effects[-1]
        assert isinstance(back, QueueReview)
        assert back.returned
        assert back.queued_at == at(1)

        verdict = transition(
            chosen, result.session, decided(seconds=200)
        ).session.verdict
        assert verdict is not None
        assert [s.step_id for s in verdict.steps] == ["bureau", "video"]
        assert verdict.review is not None
        assert verdict.review.evidence == ("video",)

    def test_a_failing_provider_fails_over_and_still_returns(self) -> None:
        """Evidence fails over between its providers, then the case returns."""
        chosen = policy()
        session, _ = feed(
            chosen,
            Start(at=T0),
            bureau("inconclusive"),
            EvidenceRequested(at=at(10), reviewer="alice", step_id="video"),
        )
        over = transition(
            chosen,
            session,
            StepErrored(step_id="video", attempt=1, at=at(11), error="down"),
        )
        assert "QueueReview" not in kinds(list(over.effects))
        assert any(
            isinstance(e, StartStep) and e.provider == "tencent" for e in over.effects
        )
        gone = transition(
            chosen,
            over.session,
            StepErrored(step_id="video", attempt=2, at=at(12), error="down too"),
        )
        assert kinds(list(gone.effects))[-1] == "QueueReview"

    def test_unknown_evidence_is_ignored(self) -> None:
        """A step the policy does not offer as evidence changes nothing."""
        session, effects = feed(
            policy(),
            Start(at=T0),
            bureau("inconclusive"),
            EvidenceRequested(at=at(10), reviewer="alice", step_id="bureau"),
        )
        assert effects == []
        assert session.status is SessionStatus.REVIEW

    def test_a_decision_while_collecting_cancels_the_evidence(self) -> None:
        """Deciding anyway stops the evidence step."""
        session, effects = feed(
            policy(),
            Start(at=T0),
            bureau("inconclusive"),
            EvidenceRequested(at=at(10), reviewer="alice", step_id="video"),
            decided(seconds=20),
        )
        assert session.status is SessionStatus.DECIDED
        assert any(isinstance(e, CancelStep) for e in effects)
        assert session.step("video").state is StepState.CANCELLED


class TestSla:
    def test_escalation_then_fallback(self) -> None:
        """Past the SLA the priority goes up once; past the limit the fallback decides."""
        chosen = policy()
        session, effects = feed(
            chosen,
            Start(at=T0),
            bureau("inconclusive"),
            TimerFired(timer_id=REVIEW_ESCALATE_TIMER, at=at(HOUR + 1)),
        )
        assert effects == [EscalateReview(effect_id=effects[0].effect_id, priority=10)]
        assert session.review is not None
        assert session.review.escalated
        assert session.review.priority == 10

        repeat = transition(
            chosen,
            session,
            TimerFired(timer_id=REVIEW_ESCALATE_TIMER, at=at(HOUR + 2)),
        )
        assert repeat.effects == ()

        fallen = transition(
            chosen,
            session,
            TimerFired(timer_id=REVIEW_FALLBACK_TIMER, at=at(2 * HOUR + 1)),
        )
        verdict = fallen.session.verdict
        assert verdict is not None
        assert verdict.outcome is Outcome.EXPIRED
        assert verdict.decided_by == "review_sla"
        assert verdict.review is not None
        assert verdict.review.reviewer is None
        assert verdict.review.escalated
        assert "the review SLA" in verdict.explain()
        assert isinstance(fallen.effects[0], DequeueReview)
        # The escalation timer already fired: only the fallback one is forgotten.
        assert [e.timer_id for e in fallen.effects if isinstance(e, CancelTimer)] == [
            REVIEW_FALLBACK_TIMER
        ]

    def test_review_timers_outside_review_are_ignored(self) -> None:
        """An SLA timer for a running or decided session does nothing."""
        chosen = policy()
        running, effects = feed(
            chosen, Start(at=T0), TimerFired(timer_id=REVIEW_FALLBACK_TIMER, at=at(5))
        )
        assert running.status is SessionStatus.ACTIVE
        assert effects == []
        without = Policy(
            name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
        )
        session, effects = feed(
            without,
            Start(at=T0),
            TimerFired(timer_id=REVIEW_ESCALATE_TIMER, at=at(5)),
        )
        assert effects == []
        assert session.status is SessionStatus.ACTIVE

    def test_a_start_in_review_changes_nothing(self) -> None:
        """A repeated Start does not restart a case in review."""
        session, effects = feed(
            policy(), Start(at=T0), bureau("inconclusive"), Start(at=at(3))
        )
        assert effects == []
        assert session.status is SessionStatus.REVIEW
