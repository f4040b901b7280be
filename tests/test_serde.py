"""Tests for JSON (un)structuring of sessions, inputs, effects and verdicts."""

from __future__ import annotations

import gc
import json
import weakref
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import attrs
import pytest

from multiverify import (
    Address,
    Applicant,
    Challenge,
    ChannelResult,
    Contact,
    Evidence,
    LoanApplication,
    Outcome,
    PolicyRef,
    Reason,
    RepaymentSchedule,
    ResultStatus,
    ReviewDecision,
    RuleTrace,
    Session,
    SessionStatus,
    Signal,
    StepRecord,
    StepState,
    StepSummary,
    Verdict,
    _serde,
)
from multiverify import _serde as serde_module
from multiverify._serde import (
    dumps,
    effect_to_json,
    loads,
    session_from_json,
    session_to_json,
    structure,
    structure_effect,
    structure_input,
    unstructure,
)
from multiverify._session import (
    Cancel,
    CancelStep,
    CancelTimer,
    DequeueReview,
    Effect,
    EscalateReview,
    EvidenceRequested,
    Input,
    NotifyStep,
    QueueReview,
    RecordVerdict,
    ReviewDecided,
    ReviewState,
    ScheduleTimer,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepStarted,
    StepUpdated,
    TimerFired,
)

T0 = datetime(2025, 3, 7, 9, 0, tzinfo=UTC)
POLICY = PolicyRef(name="consumer-loan", version="7", hash="ab" * 32)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


RESULT = ChannelResult(
    status=ResultStatus.FAILED,
    signals=[
        Signal(name="fraud_alert", detail="bureau flag"),
        Signal(name="thin_file"),
    ],
    score=0.25,
    evidence=[Evidence(kind="report", reference="rep-9", detail="pdf")],
    attempts=2,
    provider="experian",
    started_at=T0,
    finished_at=at(12),
    detail="alert on file",
    facts={"band": "C", "inquiries": 4, "nested": {"ok": True}, "none": None},
)
CHALLENGE = Challenge(
    step_id="sms",
    kind="code",
    message="Enter the code",
    destination="+86*******8000",
    url="https://example.test/v",
    expires_at=at(300),
)
VERDICT = Verdict(
    outcome="rejected",
    reasons=[
        Reason(code="bureau.fraud_alert", message="rule 1 held", step_id="bureau")
    ],
    policy=POLICY,
    decided_at=at(12),
    score=0.25,
    steps=[
        StepSummary(
            step_id="bureau", channel="credit_bureau", state="done", result=RESULT
        ),
        StepSummary(step_id="sms", channel="sms_code", state="skipped"),
    ],
    rules=[
        RuleTrace(
            index=0,
            outcome=Outcome.REJECTED,
            condition="'fraud_alert' in steps.bureau.signals",
            reason="bureau.fraud_alert",
            matched=True,
        ),
        RuleTrace(
            index=1,
            outcome=Outcome.APPROVED,
            condition="steps.x.facts.y",
            reason="r",
            matched=None,
            error="no such key",
        ),
    ],
    decided_by="policy",
)

INPUTS: list[Input] = [
    Start(at=T0),
    StepStarted(
        step_id="sms",
        attempt=1,
        at=at(1),
        challenge=CHALLENGE,
        channel_state={"hmac": "c0ffee", "sent": [1, 2]},
        timers=[("resend", at(60)), ("expire", at(300))],
    ),
    StepStarted(step_id="sms", attempt=1, at=at(1)),
    StepUpdated(
        step_id="sms", attempt=1, at=at(5), challenge=None, channel_state={"n": 1}
    ),
    StepFinished(step_id="bureau", attempt=2, at=at(12), result=RESULT),
    StepErrored(
        step_id="bureau", attempt=1, at=at(2), error="HTTP 503", provider="experian"
    ),
    StepErrored(step_id="bureau", attempt=1, at=at(2), error="timed out"),
    StepErrored(step_id="bureau", attempt=1, at=at(2), error="refused", failover=False),
    TimerFired(timer_id="step:sms:1:channel:resend", at=at(60)),
    Cancel(at=at(70), reason="withdrawn"),
    Cancel(at=at(70)),
    ReviewDecided(
        at=at(80),
        reviewer="alice",
        outcome=Outcome.APPROVED,
        reason="documents_ok",
        note="payslip checked",
    ),
    EvidenceRequested(at=at(75), reviewer="bob", step_id="video", note="face"),
]

EFFECTS: list[Effect] = [
    StartStep(
        effect_id="1.1",
        step_id="bureau",
        attempt=1,
        channel="credit_bureau",
        provider="experian",
        idempotency_key="s:bureau:1",
    ),
    StartStep(
        effect_id="1.3",
        step_id="sms",
        attempt=1,
        channel="sms_code",
        provider=None,
        idempotency_key="s:sms:1",
    ),
    CancelStep(effect_id="2.0", step_id="sms", attempt=1, channel="sms_code"),
    NotifyStep(
        effect_id="3.0", step_id="sms", attempt=1, channel="sms_code", name="resend"
    ),
    ScheduleTimer(effect_id="1.0", timer_id="deadline", due_at=at(3600)),
    CancelTimer(effect_id="2.1", timer_id="deadline"),
    RecordVerdict(effect_id="2.2", verdict=VERDICT),
    QueueReview(effect_id="4.0", priority=5, queued_at=at(40), returned=True),
    DequeueReview(effect_id="4.1"),
    EscalateReview(effect_id="5.0", priority=15),
]


def make_applicant() -> Applicant:
    return Applicant(
        applicant_id="app-1",
        name="Zhang Wei",
        national_id="110101199003074578",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        locale="zh-CN",
        loan=LoanApplication(
            amount="50000.50",
            currency="CNY",
            term_months=12,
            purpose="renovation",
            fees="99.90",
            annual_rate="0.0725",
            repayment=RepaymentSchedule(
                installments=12,
                installment_amount="4375.04",
                first_due=date(2025, 4, 7),
            ),
        ),
        address=Address(
            lines=["1 Chang'an Ave", "Apt 2"],
            city="Beijing",
            region="BJ",
            postal_code="100000",
            country="CN",
        ),
        contacts=[Contact(name="Li Na", relation="spouse", phone="+8613900139000")],
    )


def make_session(applicant: Applicant | None) -> Session:
    return Session(
        session_id="sess-1",
        applicant=applicant,
        policy=POLICY,
        created_at=T0,
        deadline_at=at(3600),
        status=SessionStatus.DECIDED,
        steps=[
            StepRecord(
                step_id="bureau",
                state=StepState.DONE,
                attempt=2,
                provider_index=1,
                channel_state={"report": "r-1", "items": [1, "a", None]},
                result=RESULT,
                started_at=T0,
                errors=["HTTP 503"],
            ),
            StepRecord(
                step_id="sms",
                state=StepState.WAITING,
                attempt=1,
                challenge=CHALLENGE,
                started_at=T0,
            ),
            StepRecord(step_id="video", state=StepState.SKIPPED, triggered_by="call"),
        ],
        facts={"applicant": {"age": 35}, "application": {"amount": 50000.5}},
        verdict=VERDICT,
        inputs=7,
        audit_head="cd" * 32,
        audit_count=8,
    )


class TestSession:
    @pytest.mark.parametrize("applicant", [make_applicant(), None])
    def test_round_trip(self, applicant: Applicant | None) -> None:
        """A session survives JSON text, with or without its applicant."""
        session = make_session(applicant)
        text = session_to_json(session)
        assert session_from_json(text) == session
        assert session_from_json(text.encode()) == session
        assert loads(dumps(session), Session) == session

    def test_json_is_compact_and_sorted(self) -> None:
        """``dumps`` writes compact JSON with sorted keys."""
        text = dumps(make_session(None))
        assert ", " not in text
        assert list(json.loads(text)) == sorted(json.loads(text))

    def test_applicant_values(self) -> None:
        """Decimals become strings and dates ISO dates, and come back exact."""
        data = unstructure(make_applicant())
        assert data["loan"]["amount"] == "50000.50"
        assert data["loan"]["annual_rate"] == "0.0725"
        assert data["loan"]["repayment"]["first_due"] == "2025-04-07"
        assert data["date_of_birth"] == "1990-03-07"
        back = structure(data, Applicant)
        assert back == make_applicant()
        assert back.loan.amount == Decimal("50000.50")
        assert str(back.loan.amount) == "50000.50"


class TestEffectJson:
    """``effect_to_json`` writes what ``dumps`` writes, reusing a verdict's JSON."""

    @pytest.mark.parametrize("effect", EFFECTS, ids=lambda e: type(e).__name__)
    def test_is_dumps(self, effect: Effect) -> None:
        """Every kind of effect, written again or not."""
        assert effect_to_json(effect) == dumps(effect)
        assert effect_to_json(effect) == dumps(effect)

    def test_a_verdict_the_session_wrote_is_reused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The verdict's text from the session's JSON is the effect's, not written again."""
        verdict = attrs.evolve(VERDICT, score=0.5)  # an object of its own
        session = attrs.evolve(make_session(make_applicant()), verdict=verdict)
        written = json.loads(session_to_json(session))["verdict"]
        effect = RecordVerdict(effect_id="e-verdict", verdict=verdict)

        def written_again(value: object) -> object:
            raise AssertionError("the verdict was unstructured again")

        monkeypatch.setattr(serde_module, "_VERDICT", written_again)
        text = effect_to_json(effect)
        monkeypatch.undo()
        assert text == dumps(effect)
        assert json.loads(text)["verdict"] == written


class TestSessionJson:
    """``session_to_json`` reuses the JSON of parts a new session carries over."""

    @pytest.mark.parametrize("applicant", [make_applicant(), None])
    def test_is_dumps(self, applicant: Applicant | None) -> None:
        """The text is exactly what ``dumps`` writes, written again or not."""
        session = make_session(applicant)
        assert session_to_json(session) == dumps(session)
        assert session_to_json(session) == dumps(session)

    def test_changed_record_is_written_anew(self) -> None:
        """A record replaced by a transition is serialised again; the others reused."""
        session = make_session(make_applicant())
        before = json.loads(session_to_json(session))
        bureau, sms, video = session.steps
        done = attrs.evolve(sms, state=StepState.DONE, result=RESULT, challenge=None)
        moved = attrs.evolve(session, steps=(bureau, done, video), inputs=8)
        text = session_to_json(moved)
        assert text == dumps(moved)
        after = json.loads(text)
        assert after["steps"][0] == before["steps"][0]
        assert after["steps"][1]["state"] == "done"
        assert after["inputs"] == 8

    def test_equal_but_new_parts(self) -> None:
        """Equal parts of another session are their own entries, with the same text."""
        first, second = make_session(make_applicant()), make_session(make_applicant())
        assert first.applicant is not second.applicant
        assert session_to_json(first) == session_to_json(second) == dumps(second)

    def test_parts_leave_with_their_session(self) -> None:
        """The cache holds its parts weakly: a dropped session's applicant goes."""
        applicant = make_applicant()
        session = make_session(applicant)
        session_to_json(session)
        gone = weakref.ref(applicant)
        del session, applicant
        gc.collect()
        assert gone() is None
        # Another applicant may now take the same id: it is not served stale.
        other = attrs.evolve(make_applicant(), name="Wang Fang")
        session = make_session(other)
        assert session_to_json(session) == dumps(session)

    def test_full_cache_takes_no_more(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Once the cache is full, new parts are written without being kept."""
        monkeypatch.setattr(_serde, "_PIECES", {})
        monkeypatch.setattr(_serde, "_PIECES_MAX", 2)
        session = make_session(make_applicant())
        assert session_to_json(session) == dumps(session)
        assert len(_serde._PIECES) == 2
        assert session_to_json(session) == dumps(session)

    def test_subclass_goes_through_dumps(self) -> None:
        """A session of a subclass is written by ``dumps`` itself."""

        @attrs.frozen(kw_only=True)
        class Kept(Session):
            pass

        session = Kept(session_id="s", applicant=None, policy=POLICY, created_at=T0)
        assert session_to_json(session) == dumps(session)


class TestInputs:
    @pytest.mark.parametrize("event", INPUTS, ids=lambda e: type(e).__name__)
    def test_round_trip(self, event: Input) -> None:
        """Every input type round-trips through its tagged form."""
        data = unstructure(event)
        assert data["type"] == type(event).__name__
        assert structure_input(json.loads(json.dumps(data))) == event

    def test_every_input_type_is_covered(self) -> None:
        """The cases above include every member of the Input union."""
        assert {type(e) for e in INPUTS} == set(Input.__args__)

    def test_an_error_recorded_before_the_failover_flag_fails_over(self) -> None:
        """A ``StepErrored`` stored without ``failover`` reads as one that fails over."""
        data = unstructure(INPUTS[6])
        del data["failover"]
        assert structure_input(data) == INPUTS[6]
        assert INPUTS[6].failover is True  # type: ignore[union-attr]

    def test_timers_are_pairs(self) -> None:
        """Channel timers are stored as ``[name, iso time]`` pairs."""
        data = json.loads(dumps(INPUTS[1]))
        assert data["timers"] == [
            ["resend", at(60).isoformat()],
            ["expire", at(300).isoformat()],
        ]


class TestEffects:
    @pytest.mark.parametrize("effect", EFFECTS, ids=lambda e: type(e).__name__)
    def test_round_trip(self, effect: Effect) -> None:
        """Every effect type round-trips through its tagged form."""
        data = unstructure(effect)
        assert data["type"] == type(effect).__name__
        assert structure_effect(json.loads(json.dumps(data))) == effect

    def test_every_effect_type_is_covered(self) -> None:
        """The cases above include every member of the Effect union."""
        assert {type(e) for e in EFFECTS} == set(Effect.__args__)


class TestVerdict:
    def test_round_trip(self) -> None:
        """A verdict with steps, results and rule traces round-trips."""
        assert loads(dumps(VERDICT), Verdict) == VERDICT

    def test_reviewed_verdict_round_trips(self) -> None:
        """A verdict settled in review keeps its decision and the automatic verdict."""
        reviewed = Verdict(
            outcome=Outcome.APPROVED,
            reasons=[Reason(code="documents_ok", message="decided in review")],
            policy=VERDICT.policy,
            decided_at=at(90),
            decided_by="reviewer",
            review=ReviewDecision(
                outcome=Outcome.APPROVED,
                reason="documents_ok",
                reviewer="alice",
                note="ok",
                queued_at=at(12),
                decided_at=at(90),
                escalated=True,
                evidence=["video"],
            ),
            automatic=VERDICT,
        )
        assert loads(dumps(reviewed), Verdict) == reviewed

    def test_session_in_review_round_trips(self) -> None:
        """A session's review case round-trips with it."""
        session = Session(
            session_id="s",
            applicant=None,
            policy=VERDICT.policy,
            created_at=T0,
            status=SessionStatus.REVIEW,
            verdict=VERDICT,
            review=ReviewState(queued_at=at(12), priority=3, evidence=["video"]),
        )
        assert session_from_json(session_to_json(session)) == session

    def test_plain_values_have_no_tag(self) -> None:
        """Only inputs and effects carry a ``type`` tag."""
        data = unstructure(VERDICT)
        assert "type" not in data
        assert data["outcome"] == "rejected"
        assert data["decided_at"] == at(12).isoformat()
        assert data["rules"][0]["matched"] is True
        assert data["rules"][1]["matched"] is None


class TestScalars:
    @pytest.mark.parametrize(
        ("value", "kind", "text"),
        [
            (Decimal("0.10"), Decimal, "0.10"),
            (Decimal("-12345678901234567890.123456789"), Decimal, None),
            (date(2024, 2, 29), date, "2024-02-29"),
            (datetime(2025, 3, 7, 9, 0, 1, 123456, tzinfo=UTC), datetime, None),
            (
                datetime(2025, 3, 7, 17, 0, tzinfo=timezone(timedelta(hours=8))),
                datetime,
                "2025-03-07T17:00:00+08:00",
            ),
            (datetime(2025, 3, 7, 9, 0), datetime, "2025-03-07T09:00:00"),  # noqa: DTZ001 - naive on purpose
        ],
    )
    def test_round_trip(self, value: object, kind: type, text: str | None) -> None:
        """Decimals and dates become exact strings and come back equal."""
        data = unstructure(value)
        assert isinstance(data, str)
        if text is not None:
            assert data == text
        back: object = structure(data, kind)
        assert back == value
        assert type(back) is kind
        if isinstance(value, datetime):
            assert isinstance(back, datetime)
            assert back.utcoffset() == value.utcoffset()
