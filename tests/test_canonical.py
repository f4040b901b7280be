"""Tests for the canonical JSON writers: the same text as the reference, byte for byte."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiverify import (
    Applicant,
    Challenge,
    ChannelResult,
    Evidence,
    LoanApplication,
    Outcome,
    PolicyRef,
    Reason,
    ResultStatus,
    RuleTrace,
    Signal,
    StepSummary,
    Verdict,
)
from multiverify._audit import (
    _created_body,
    _input_body,
    _input_body_reference,
    _queued_body,
    _verdict_body,
    masked_applicant,
    note_digest,
)
from multiverify._canonical import canonical_json, plain, scalar, writer
from multiverify._serde import converter, unstructure
from multiverify._session import (
    Cancel,
    CancelStep,
    CancelTimer,
    DequeueReview,
    EscalateReview,
    EvidenceRequested,
    NotifyStep,
    QueueReview,
    RecordVerdict,
    ReviewDecided,
    ScheduleTimer,
    Session,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepRecord,
    StepStarted,
    StepUpdated,
    TimerFired,
)

APPLICANT = Applicant(
    applicant_id="a-1",
    name="Zhang San",
    national_id="110101199003071234",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="5000", currency="CNY", term_months=12, purpose="phone"
    ),
)
texts = st.text(max_size=12) | st.just(f"HTTP 400: {APPLICANT.phone} refused")
names = st.text(alphabet="abcxyz_.", min_size=1, max_size=8)
zones = st.sampled_from([UTC, timezone(timedelta(hours=8)), None])
times = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001 - hypothesis adds the zone
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=zones,
)
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
leaves = st.none() | st.booleans() | numbers | texts | times | st.decimals()
json_like = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
    ),
    max_leaves=8,
)
mappings = st.dictionaries(texts, json_like, max_size=3) | st.dictionaries(
    texts, json_like, max_size=2
).map(MappingProxyType)

signals = st.builds(Signal, name=texts, detail=texts)
evidence = st.builds(Evidence, kind=texts, reference=texts, detail=texts)
results = st.builds(
    ChannelResult,
    status=st.sampled_from(ResultStatus),
    signals=st.lists(signals, max_size=3).map(tuple),
    score=st.none() | st.floats(0, 1) | st.integers(0, 1),
    evidence=st.lists(evidence, max_size=2).map(tuple),
    attempts=st.integers(0, 5),
    provider=st.none() | texts,
    started_at=st.none() | times,
    finished_at=st.none() | times,
    detail=texts,
    facts=mappings,
)
challenges = st.builds(
    Challenge,
    step_id=names,
    kind=texts,
    message=texts,
    destination=st.none() | texts,
    url=st.none() | texts,
    expires_at=st.none() | times,
)
waits = {
    "step_id": names,
    "attempt": st.integers(0, 9),
    "at": times,
    "challenge": st.none() | challenges,
    "channel_state": mappings,
    "timers": st.lists(st.tuples(texts, times), max_size=2).map(tuple),
}
inputs = st.one_of(
    st.builds(Start, at=times),
    st.builds(StepStarted, **waits),
    st.builds(StepUpdated, **waits),
    st.builds(
        StepFinished,
        step_id=names,
        attempt=st.integers(0, 9),
        at=times,
        result=results,
        channel_state=mappings,
    ),
    st.builds(
        StepErrored,
        step_id=names,
        attempt=st.integers(0, 9),
        at=times,
        error=texts,
        provider=st.none() | texts,
    ),
    st.builds(TimerFired, timer_id=texts, at=times),
    st.builds(Cancel, at=times, reason=texts),
    st.builds(
        ReviewDecided,
        at=times,
        reviewer=texts,
        outcome=st.sampled_from(Outcome),
        reason=texts,
        note=texts,
    ),
    st.builds(EvidenceRequested, at=times, reviewer=texts, step_id=names, note=texts),
)
refs = st.builds(PolicyRef, name=texts, version=texts, hash=texts)
reasons = st.builds(Reason, code=texts, message=texts, step_id=st.none() | names)
traces = st.builds(
    RuleTrace,
    index=st.integers(0, 9),
    outcome=st.sampled_from(Outcome),
    condition=texts,
    reason=texts,
    matched=st.none() | st.booleans(),
    error=texts,
)
verdicts = st.builds(
    Verdict,
    outcome=st.sampled_from(Outcome),
    reasons=st.lists(reasons, max_size=2).map(tuple),
    policy=refs,
    decided_at=times,
    score=st.none() | st.floats(0, 1),
    steps=st.lists(
        st.builds(
            StepSummary,
            step_id=names,
            channel=names,
            state=texts,
            result=st.none() | results,
        ),
        max_size=2,
    ).map(tuple),
    rules=st.lists(traces, max_size=3).map(tuple),
    decided_by=texts,
)
ids = {"effect_id": texts}
effects = st.one_of(
    st.builds(
        StartStep,
        **ids,
        step_id=names,
        attempt=st.integers(0, 9),
        channel=texts,
        provider=st.none() | texts,
        idempotency_key=texts,
    ),
    st.builds(
        CancelStep, **ids, step_id=names, attempt=st.integers(0, 9), channel=texts
    ),
    st.builds(
        NotifyStep,
        **ids,
        step_id=names,
        attempt=st.integers(0, 9),
        channel=texts,
        name=texts,
    ),
    st.builds(ScheduleTimer, **ids, timer_id=texts, due_at=times),
    st.builds(CancelTimer, **ids, timer_id=texts),
    st.builds(RecordVerdict, **ids, verdict=verdicts),
    st.builds(
        QueueReview,
        **ids,
        priority=st.integers(-9, 9),
        queued_at=times,
        returned=st.booleans(),
    ),
    st.builds(DequeueReview, **ids),
    st.builds(EscalateReview, **ids, priority=st.integers(-9, 9)),
)
tries = st.lists(
    st.fixed_dictionaries({"at": texts, "error": st.none() | texts}), max_size=3
)
calls = st.none() | st.fixed_dictionaries(
    {
        "step_id": names,
        "attempt": st.integers(0, 9),
        "channel": texts,
        "provider": st.none() | texts,
        "idempotency_key": texts,
        "tries": tries,
        "outcome": texts,
    },
    optional={"when": times, "extra": json_like},
)


def reference(value: Any, cls: type) -> str:
    return canonical_json(converter.unstructure(value, cls))


class TestWriter:
    @settings(max_examples=300)
    @given(value=st.one_of(results, challenges, verdicts, reasons, traces, refs))
    def test_attrs_values(self, value: Any) -> None:
        """A writer writes what cattrs makes of a value, encoded canonically."""
        assert writer(type(value))(value) == reference(value, type(value))

    @settings(max_examples=300)
    @given(event=inputs)
    def test_tagged_and_replaced(self, event: Any) -> None:
        """A tag and replaced fields are written where sorting puts them."""
        write = writer(type(event), tag=type(event).__name__, replace={"at": "{}"})
        data = converter.unstructure(event, type(event))
        data["type"] = type(event).__name__
        data["at"] = {}
        assert write(event) == canonical_json(data)

    def test_subclasses_go_to_cattrs(self) -> None:
        """A field holding a subclass of its type is written as cattrs writes it."""

        @attrs.frozen(kw_only=True)
        class Loud(Signal):
            volume: int = 11

        @attrs.frozen(kw_only=True)
        class Later(ChannelResult):
            extra: str = "x"

        value = StepSummary(
            step_id="s",
            channel="c",
            state=ResultStatus.PASSED,
            result=Later(status="passed", signals=[Loud(name="n")], facts={"a": 1}),
        )
        assert writer(StepSummary)(value) == reference(value, StepSummary)

    def test_nested_self(self) -> None:
        """A class that holds itself (a verdict and its automatic verdict) is written."""
        inner = Verdict(
            outcome="review",
            reasons=[Reason(code="r")],
            policy=PolicyRef(name="p", version="1", hash="h"),
            decided_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        outer = attrs.evolve(inner, outcome="approved", automatic=inner)
        assert writer(Verdict)(outer) == reference(outer, Verdict)

    def test_writers_are_shared(self) -> None:
        """A writer is compiled once per class, tag and replacements."""
        assert writer(Signal) is writer(Signal)
        assert writer(Signal) is not writer(Signal, tag="Signal")


class TestScalars:
    @given(value=json_like)
    def test_plain_is_the_encoder(self, value: Any) -> None:
        """A raw value is written as the encoder writes it (``str`` for the unknown)."""
        assert plain(value) == json.dumps(
            value, sort_keys=True, separators=(",", ":"), default=str
        )

    @given(value=leaves)
    def test_scalar_is_cattrs_then_the_encoder(self, value: Any) -> None:
        """A value of a declared plain type is written as cattrs data."""
        assert scalar(value) == canonical_json(converter.unstructure(value))

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.0, 1e300])
    def test_floats(self, value: float) -> None:
        """Floats JSON has no number for are spelled as the encoder spells them."""
        assert scalar(value) == plain(value) == json.dumps(value)

    def test_enum_and_decimal(self) -> None:
        """Enum members are their values; a Decimal is cattrs's string."""
        assert scalar(Outcome.APPROVED) == '"approved"'
        assert scalar(Decimal("1.50")) == '"1.50"'
        assert plain(Decimal("1.50")) == '"1.50"'

    @given(value=json_like)
    def test_canonical_json(self, value: Any) -> None:
        """The canonical form is json.dumps with sorted keys, compact, str default."""
        assert canonical_json(value) == json.dumps(
            value, sort_keys=True, separators=(",", ":"), default=str
        )

    def test_canonical_json_circular(self) -> None:
        """A circular value fails as json.dumps fails, and the next call works."""
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(ValueError, match="Circular"):
            canonical_json(loop)
        assert canonical_json([1]) == "[1]"


def old_verdict_body(verdict: Verdict) -> str:
    return canonical_json(
        {
            "outcome": verdict.outcome.value,
            "reasons": unstructure(verdict.reasons),
            "rules": unstructure(verdict.rules),
            "score": verdict.score,
            "decided_by": verdict.decided_by,
        }
    )


class TestAuditBodies:
    """The audit bodies written directly equal the data-then-encode reference."""

    @settings(max_examples=300)
    @given(
        event=inputs,
        effects=st.lists(effects, max_size=3),
        call=calls,
        applicant=st.none() | st.just(APPLICANT),
    )
    def test_input_body(
        self,
        event: Any,
        effects: list[Any],
        call: dict[str, Any] | None,
        applicant: Applicant | None,
    ) -> None:
        assert _input_body(event, effects, call, applicant) == _input_body_reference(
            event, effects, call, applicant
        )

    def test_call_errors_are_redacted(self) -> None:
        """A try's error text that quotes the applicant is redacted in the body."""
        call = {
            "step_id": "sms",
            "attempt": 1,
            "channel": "sms_code",
            "provider": None,
            "idempotency_key": "s:sms:1",
            "tries": [
                {"at": "t", "error": f"refused {APPLICANT.phone}"},
                {"at": "u", "error": None},
            ],
            "outcome": "StepFinished",
        }
        body = _input_body(
            Start(at=datetime(2026, 1, 1, tzinfo=UTC)), (), call, APPLICANT
        )
        assert APPLICANT.phone not in body
        assert body == _input_body_reference(
            Start(at=datetime(2026, 1, 1, tzinfo=UTC)), (), call, APPLICANT
        )
        assert (
            call["tries"][0]["error"] == f"refused {APPLICANT.phone}"
        )  # left as it was

    @given(verdict=verdicts)
    def test_verdict_body(self, verdict: Verdict) -> None:
        assert _verdict_body(verdict) == old_verdict_body(verdict)

    @given(verdict=verdicts, priority=st.integers(-9, 9) | st.floats(0, 9))
    def test_queued_body(self, verdict: Verdict, priority: Any) -> None:
        effect = QueueReview(
            effect_id="1.0", priority=priority, queued_at=verdict.decided_at
        )
        expected = json.loads(old_verdict_body(verdict))
        expected["priority"] = priority
        assert _queued_body(verdict, effect) == canonical_json(expected)

    @given(
        ref=refs,
        created=times,
        deadline=st.none() | times,
        steps=st.lists(names, max_size=3),
        facts=st.dictionaries(texts, json_like, max_size=3),
    )
    def test_created_body(
        self,
        ref: PolicyRef,
        created: datetime,
        deadline: datetime | None,
        steps: list[str],
        facts: dict[str, Any],
    ) -> None:
        session = Session(
            session_id="s",
            applicant=None,
            policy=ref,
            created_at=created,
            deadline_at=deadline,
            steps=tuple(StepRecord(step_id=step) for step in steps),
            facts=facts,
        )
        assert _created_body(session) == canonical_json(
            {
                "policy": unstructure(ref),
                "created_at": created.isoformat(),
                "deadline_at": deadline.isoformat() if deadline else None,
                "steps": steps,
                "facts": facts,
                "applicant": masked_applicant(None),
            }
        )

    def test_notes_and_errors_keep_the_reference(self) -> None:
        """Inputs the trail rewrites (notes, error texts) are masked as before."""
        at = datetime(2026, 1, 1, tzinfo=UTC)
        decided = ReviewDecided(
            at=at, reviewer="r", outcome="approved", reason="ok", note="Zhang San"
        )
        body = json.loads(_input_body(decided, (), None, None))
        assert body["input"]["note"] == note_digest("Zhang San")

    def test_verdict_subclass_keeps_the_reference(self) -> None:
        """A verdict of a subclass is recorded through cattrs, as before."""

        @attrs.frozen(kw_only=True)
        class Later(Verdict):
            extra: str = "x"

        verdict = Later(
            outcome="review",
            reasons=[Reason(code="r")],
            policy=PolicyRef(name="p", version="1", hash="h"),
            decided_at=datetime(2026, 1, 1, tzinfo=UTC),
            rules=[
                RuleTrace(
                    index=0,
                    outcome="review",
                    condition="true",
                    reason="r",
                    matched=True,
                )
            ],
        )
        assert _verdict_body(verdict) == old_verdict_body(verdict)
        effect = QueueReview(effect_id="1.0", priority=2, queued_at=verdict.decided_at)
        expected = json.loads(old_verdict_body(verdict))
        expected["priority"] = 2
        assert _queued_body(verdict, effect) == canonical_json(expected)
