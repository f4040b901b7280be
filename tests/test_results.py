"""Tests for channel results, challenges and verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from multiverify import (
    Challenge,
    ChannelResult,
    Evidence,
    Outcome,
    PolicyRef,
    Reason,
    ResultStatus,
    RuleTrace,
    Signal,
    StepSummary,
    Verdict,
)

T0 = datetime(2025, 3, 7, 9, 0, tzinfo=UTC)
POLICY = PolicyRef(name="consumer-loan", version="3", hash="0123456789abcdef" * 4)


def make_verdict(**overrides: object) -> Verdict:
    fields: dict[str, object] = {
        "outcome": "approved",
        "reasons": [],
        "policy": POLICY,
        "decided_at": T0,
    }
    fields.update(overrides)
    return Verdict(**fields)  # type: ignore[arg-type]


class TestChannelResult:
    def test_status_is_converted_from_text(self) -> None:
        """A status given as text becomes a ``ResultStatus``."""
        result = ChannelResult(status="passed")
        assert result.status is ResultStatus.PASSED

    def test_unknown_status_is_rejected(self) -> None:
        """A status that is not a ``ResultStatus`` value is refused."""
        with pytest.raises(ValueError, match="'maybe'"):
            ChannelResult(status="maybe")

    def test_bare_signal_names_become_signals(self) -> None:
        """``signals=["fraud_alert"]`` means ``Signal(name="fraud_alert")``."""
        result = ChannelResult(
            status="failed", signals=["fraud_alert", Signal(name="thin_file")]
        )
        assert result.signals == (Signal(name="fraud_alert"), Signal(name="thin_file"))
        assert result.signal_names == ("fraud_alert", "thin_file")

    def test_a_signal_of_another_type_is_refused(self) -> None:
        """A signal that is neither a ``Signal`` nor a name is a clear TypeError."""
        with pytest.raises(TypeError, match="signals: expected a Signal or a name"):
            ChannelResult(status="failed", signals=[{"name": "fraud_alert"}])

    @pytest.mark.parametrize("score", [0.0, 0.42, 1, 1.0])
    def test_scores_in_range(self, score: float) -> None:
        """Scores from 0 to 1, ends included, are kept."""
        assert ChannelResult(status="passed", score=score).score == score

    @pytest.mark.parametrize(
        ("score", "error"),
        [
            (1.5, ValueError),
            (-0.1, ValueError),
            (float("nan"), ValueError),
            (float("inf"), ValueError),
            ("0.5", TypeError),
            (True, TypeError),
        ],
    )
    def test_scores_out_of_range_are_refused(
        self, score: object, error: type[Exception]
    ) -> None:
        """A score outside [0, 1], not finite or not a number is refused."""
        with pytest.raises(error, match=r"score: expected a number in \[0, 1\]"):
            ChannelResult(status="passed", score=score)  # type: ignore[arg-type]

    @pytest.mark.parametrize("attempts", [-1, 1.0, "2"])
    def test_attempts_must_be_a_whole_number(self, attempts: object) -> None:
        """Attempts are a whole number, never negative."""
        with pytest.raises(ValueError, match="attempts"):
            ChannelResult(status="passed", attempts=attempts)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        """A bare result has no signals, evidence, score, times or facts and one attempt."""
        result = ChannelResult(status=ResultStatus.FAILED)
        assert result.signals == ()
        assert result.evidence == ()
        assert result.score is None
        assert result.attempts == 1
        assert result.provider is None
        assert result.detail == ""
        assert result.facts == {}

    def test_sequences_become_tuples(self) -> None:
        """Signals and evidence given as lists or generators are stored as tuples."""
        signal = Signal(name="fraud_alert")
        evidence = Evidence(kind="recording", reference="rec-1")
        result = ChannelResult(
            status="failed", signals=[signal], evidence=(e for e in [evidence])
        )
        assert result.signals == (signal,)
        assert result.evidence == (evidence,)

    def test_signal_names_keep_order(self) -> None:
        """``signal_names`` lists the names in the order the signals came."""
        result = ChannelResult(
            status="failed",
            signals=[Signal(name="b"), Signal(name="a", detail="x"), Signal(name="b")],
        )
        assert result.signal_names == ("b", "a", "b")

    def test_signal_names_empty(self) -> None:
        """With no signals, ``signal_names`` is empty."""
        assert ChannelResult(status="passed").signal_names == ()

    def test_duration_when_both_times_known(self) -> None:
        """``duration`` is the seconds between start and finish."""
        result = ChannelResult(
            status="passed",
            started_at=T0,
            finished_at=T0 + timedelta(minutes=2, milliseconds=250),
        )
        assert result.duration == 120.25

    @pytest.mark.parametrize(
        ("started", "finished"), [(None, None), (T0, None), (None, T0)]
    )
    def test_duration_unknown(
        self, started: datetime | None, finished: datetime | None
    ) -> None:
        """Without both a start and a finish there is no duration."""
        result = ChannelResult(
            status="passed", started_at=started, finished_at=finished
        )
        assert result.duration is None

    def test_is_hashable_with_facts(self) -> None:
        """A frozen result with facts can be hashed; equal results hash alike."""
        first = ChannelResult(status="passed", facts={"score_band": "A"})
        second = ChannelResult(status="passed", facts={"score_band": "A"})
        assert first == second
        assert hash(first) == hash(second)
        assert first != ChannelResult(status="passed", facts={"score_band": "B"})

    def test_is_frozen(self) -> None:
        """A result cannot be changed after it is built."""
        result = ChannelResult(status="passed")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            result.score = 1.0  # type: ignore[misc]


class TestResultStatus:
    def test_values(self) -> None:
        """Statuses compare equal to their lower-case names."""
        assert [s.value for s in ResultStatus] == [
            "passed",
            "failed",
            "inconclusive",
            "error",
            "timeout",
            "cancelled",
        ]
        assert ResultStatus.TIMEOUT == "timeout"


class TestOutcome:
    def test_values(self) -> None:
        """Outcomes compare equal to their lower-case names."""
        assert [o.value for o in Outcome] == [
            "approved",
            "rejected",
            "review",
            "expired",
        ]
        assert Outcome("review") is Outcome.REVIEW


class TestChallenge:
    def test_optional_fields_default_to_none(self) -> None:
        """Only the step and kind are required."""
        challenge = Challenge(step_id="sms", kind="code")
        assert (challenge.message, challenge.destination, challenge.url) == (
            "",
            None,
            None,
        )
        assert challenge.expires_at is None

    def test_is_keyword_only(self) -> None:
        """Fields cannot be passed positionally."""
        with pytest.raises(TypeError):
            Challenge("sms", "code")  # type: ignore[misc]


class TestVerdict:
    def test_outcome_and_sequences_are_converted(self) -> None:
        """The outcome text becomes an ``Outcome`` and lists become tuples."""
        reason = Reason(code="ok")
        verdict = make_verdict(outcome="review", reasons=[reason], steps=[], rules=[])
        assert verdict.outcome is Outcome.REVIEW
        assert verdict.reasons == (reason,)
        assert verdict.steps == ()
        assert verdict.rules == ()
        assert verdict.decided_by == "policy"

    def test_unknown_outcome_is_rejected(self) -> None:
        """An outcome that is not an ``Outcome`` value is refused."""
        with pytest.raises(ValueError, match="'maybe'"):
            make_verdict(outcome="maybe")


class TestVerdictExplain:
    def test_minimal_verdict(self) -> None:
        """Outcome, policy identity with a 12-character hash prefix, and the decider."""
        assert make_verdict().explain().splitlines() == [
            "Verdict: approved",
            "Policy: consumer-loan 3 (sha256 0123456789ab)",
            "Steps:",
            "Decided by: the first rule that held",
        ]

    def test_score_is_shown_with_two_decimals(self) -> None:
        """A verdict score is appended to the first line, including a zero score."""
        assert make_verdict(score=0.8765).explain().splitlines()[0] == (
            "Verdict: approved (score 0.88)"
        )
        assert make_verdict(score=0.0).explain().splitlines()[0] == (
            "Verdict: approved (score 0.00)"
        )

    def test_full_hash_is_not_shown(self) -> None:
        """Only the first 12 characters of the policy hash appear."""
        text = make_verdict().explain()
        assert POLICY.hash[:12] in text
        assert POLICY.hash[:13] not in text

    def test_step_lines(self) -> None:
        """Each step shows id, channel, state, then status, signals, score and detail."""
        steps = [
            StepSummary(step_id="bureau", channel="credit_bureau", state="pending"),
            StepSummary(
                step_id="sms",
                channel="sms_code",
                state="finished",
                result=ChannelResult(status="passed"),
            ),
            StepSummary(
                step_id="call",
                channel="phone_call",
                state="finished",
                result=ChannelResult(
                    status="failed",
                    signals=[Signal(name="evasive_answer"), Signal(name="fraud_alert")],
                    score=0.254,
                    detail="agent flagged",
                ),
            ),
        ]
        lines = make_verdict(steps=steps).explain().splitlines()
        start = lines.index("Steps:")
        assert lines[start + 1 : start + 4] == [
            "  - bureau [credit_bureau]: pending",
            "  - sms [sms_code]: finished, passed",
            (
                "  - call [phone_call]: finished, failed; "
                "signals: evasive_answer, fraud_alert; score 0.25 (agent flagged)"
            ),
        ]

    def test_step_with_zero_score(self) -> None:
        """A step score of zero is still shown."""
        step = StepSummary(
            step_id="video",
            channel="video_sign",
            state="finished",
            result=ChannelResult(status="inconclusive", score=0.0),
        )
        assert "  - video [video_sign]: finished, inconclusive; score 0.00" in (
            make_verdict(steps=[step]).explain().splitlines()
        )

    def test_rule_lines(self) -> None:
        """Rules are numbered from one with fired, did not hold or not evaluated."""
        rules = [
            RuleTrace(
                index=0,
                outcome=Outcome.REJECTED,
                condition="'fraud_alert' in steps.bureau.signals",
                reason="fraud",
                matched=False,
            ),
            RuleTrace(
                index=1,
                outcome=Outcome.REVIEW,
                condition="steps.call.score < 0.5",
                reason="low_score",
                matched=None,
                error="no such key: score",
            ),
            RuleTrace(
                index=2,
                outcome=Outcome.APPROVED,
                condition="steps.sms.status == 'passed'",
                reason="ok",
                matched=True,
            ),
            RuleTrace(
                index=3,
                outcome=Outcome.APPROVED,
                condition="true",
                reason="fallback",
                matched=None,
            ),
        ]
        lines = make_verdict(rules=rules).explain().splitlines()
        start = lines.index("Rules, in order:")
        assert lines[start + 1 : start + 5] == [
            "  1. rejected when 'fraud_alert' in steps.bureau.signals -> did not hold",
            (
                "  2. review when steps.call.score < 0.5 -> not evaluated "
                "(no such key: score)"
            ),
            "  3. approved when steps.sms.status == 'passed' -> fired",
            "  4. approved when true -> not evaluated",
        ]
        assert lines[start - 1] == "Steps:"

    def test_error_on_a_rule_that_did_not_hold(self) -> None:
        """An evaluation error is shown next to ``did not hold``."""
        rule = RuleTrace(
            index=0,
            outcome=Outcome.REJECTED,
            condition="x > 1",
            reason="r",
            matched=False,
            error="undeclared reference to 'x'",
        )
        assert (
            "  1. rejected when x > 1 -> did not hold (undeclared reference to 'x')"
            in make_verdict(rules=[rule]).explain()
        )

    def test_no_rules_section_without_rules(self) -> None:
        """With no rule traces there is no rules heading."""
        assert "Rules, in order:" not in make_verdict().explain()

    @pytest.mark.parametrize(
        ("decided_by", "line"),
        [
            ("policy", "Decided by: the first rule that held"),
            ("default", "Decided by: the policy's default outcome (no rule held)"),
            ("deadline", "Decided by: the session deadline"),
            ("operator", "Decided by: operator"),
        ],
    )
    def test_decided_by_line(self, decided_by: str, line: str) -> None:
        """Known deciders are spelled out; others are shown as given."""
        assert line in make_verdict(decided_by=decided_by).explain().splitlines()

    def test_reasons_come_last_in_order(self) -> None:
        """Each reason gets a line with its code and, when there is one, its message."""
        reasons = [
            Reason(code="sms_passed", message="the code matched", step_id="sms"),
            Reason(code="no_message"),
            Reason(code="colon", message="see note:"),
        ]
        lines = make_verdict(reasons=reasons).explain().splitlines()
        assert lines[-3:] == [
            "Reason sms_passed: the code matched",
            "Reason no_message",
            "Reason colon: see note:",
        ]
        assert lines[-4].startswith("Decided by: ")
