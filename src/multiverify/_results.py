"""What steps and sessions produce: challenges, channel results and verdicts."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "Challenge",
    "ChannelResult",
    "Evidence",
    "Outcome",
    "PolicyRef",
    "Reason",
    "ResultStatus",
    "ReviewDecision",
    "RuleTrace",
    "Signal",
    "StepSummary",
    "Verdict",
]


def _signals(values: Iterable[Signal]) -> tuple[Signal, ...]:
    return tuple(values)


def _evidence(values: Iterable[Evidence]) -> tuple[Evidence, ...]:
    return tuple(values)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _reasons(values: Iterable[Reason]) -> tuple[Reason, ...]:
    return tuple(values)


def _summaries(values: Iterable[StepSummary]) -> tuple[StepSummary, ...]:
    return tuple(values)


def _traces(values: Iterable[RuleTrace]) -> tuple[RuleTrace, ...]:
    return tuple(values)


class ResultStatus(enum.StrEnum):
    """How a step ended."""

    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    """The decision of a verification."""

    APPROVED = "approved"
    REJECTED = "rejected"
    REVIEW = "review"
    EXPIRED = "expired"


@attrs.frozen(kw_only=True)
class Signal:
    """A named observation, such as ``fraud_alert`` or ``evasive_answer``.

    Policies test signals by name: ``'fraud_alert' in steps.bureau.signals``.
    """

    name: str
    detail: str = ""


@attrs.frozen(kw_only=True)
class Evidence:
    """A reference to something that backs a result (never the media itself)."""

    kind: str
    reference: str
    detail: str = ""


@attrs.frozen(kw_only=True)
class ChannelResult:
    """The outcome of one step.

    Attributes:
        status: how the step ended.
        signals: what was observed, tested by name in policy rules.
        score: the channel's own score in ``[0, 1]``, where it has one.
        evidence: references backing the result.
        attempts: how many provider attempts the step took.
        provider: the vendor that produced the result.
        started_at: when the step started.
        finished_at: when it ended.
        detail: a short human explanation.
        facts: extra plain values the channel exposes to policies.
    """

    status: ResultStatus = attrs.field(converter=ResultStatus)
    signals: tuple[Signal, ...] = attrs.field(default=(), converter=_signals)
    score: float | None = None
    evidence: tuple[Evidence, ...] = attrs.field(default=(), converter=_evidence)
    attempts: int = 1
    provider: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""
    # A dict cannot be hashed: leave it out of the hash (it still counts for ==).
    facts: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The names of the signals, in order."""
        return tuple(signal.name for signal in self.signals)

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@attrs.frozen(kw_only=True)
class Challenge:
    """What a waiting step asks of the app.

    Attributes:
        step_id: the step that waits.
        kind: what is awaited, such as ``code``, ``video_session`` or ``call``.
        message: a short text the app may show.
        destination: where a code went, masked (``+86*******8000``).
        url: where the applicant goes next (a video-session link).
        expires_at: when the challenge lapses.
    """

    step_id: str
    kind: str
    message: str = ""
    destination: str | None = None
    url: str | None = None
    expires_at: datetime | None = None


@attrs.frozen(kw_only=True)
class Reason:
    """Why a verdict was reached: a stable machine code and human text."""

    code: str
    message: str = ""
    step_id: str | None = None


@attrs.frozen(kw_only=True)
class PolicyRef:
    """Which policy decided: name, version and content hash."""

    name: str
    version: str
    hash: str


@attrs.frozen(kw_only=True)
class StepSummary:
    """A step as the verdict saw it."""

    step_id: str
    channel: str
    state: str
    result: ChannelResult | None = None


@attrs.frozen(kw_only=True)
class RuleTrace:
    """How one rule fared when the verdict was reached."""

    index: int
    outcome: Outcome
    condition: str
    reason: str
    matched: bool | None
    """``True`` fired, ``False`` did not hold, ``None`` not evaluated."""
    error: str = ""
    """Why the condition could not be evaluated (it then did not hold)."""


@attrs.frozen(kw_only=True)
class ReviewDecision:
    """How a verdict of ``review`` was settled: by a person, or by the review SLA.

    Attributes:
        outcome: the outcome decided.
        reason: the reviewer's reason code (``review.sla`` for the fallback).
        reviewer: who decided; ``None`` when the SLA fallback did.
        note: the reviewer's note (kept with the verdict, never in the audit trail).
        queued_at: when the case entered the review queue.
        decided_at: when it was decided.
        escalated: whether the case had escalated past its SLA.
        evidence: the evidence steps reviewers asked for, in order.
    """

    outcome: Outcome = attrs.field(converter=Outcome)
    reason: str
    reviewer: str | None = None
    note: str = ""
    queued_at: datetime
    decided_at: datetime
    escalated: bool = False
    evidence: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @property
    def waited(self) -> float:
        """Seconds the case spent in review."""
        return (self.decided_at - self.queued_at).total_seconds()


@attrs.frozen(kw_only=True)
class Verdict:
    """The decision of a session, with everything needed to explain it.

    A verdict settled in review keeps the automatic verdict that sent the
    case there as ``automatic``, beside the person's ``review`` decision.
    """

    outcome: Outcome = attrs.field(converter=Outcome)
    reasons: tuple[Reason, ...] = attrs.field(converter=_reasons)
    policy: PolicyRef
    decided_at: datetime
    score: float | None = None
    steps: tuple[StepSummary, ...] = attrs.field(default=(), converter=_summaries)
    rules: tuple[RuleTrace, ...] = attrs.field(default=(), converter=_traces)
    decided_by: str = "policy"
    """``policy``, ``default`` (no rule matched), ``deadline``, ``reviewer`` or ``review_sla``."""
    review: ReviewDecision | None = None
    """The review decision, when a person (or the review SLA) settled the verdict."""
    automatic: Verdict | None = None
    """The automatic verdict (of ``review``) that the review settled."""

    def explain(self) -> str:
        """Explain, in words, how the verdict was reached.

        A verdict settled in review explains the decision, then the
        automatic verdict it settled.
        """
        lines = self._explain_lines()
        if self.review is not None:
            lines.extend(_review_lines(self.review))
        if self.automatic is not None:
            lines.append("Automatic verdict, before review:")
            lines.extend(
                "  " + line
                for line in self.automatic._explain_lines()  # noqa: SLF001 - same class
                if not line.startswith("Policy: ")
            )
        return "\n".join(lines)

    def _explain_lines(self) -> list[str]:
        lines = [
            f"Verdict: {self.outcome.value}"
            + (f" (score {self.score:.2f})" if self.score is not None else ""),
            (
                f"Policy: {self.policy.name} {self.policy.version} "
                f"(sha256 {self.policy.hash[:12]})"
            ),
            "Steps:",
        ]
        for step in self.steps:
            line = f"  - {step.step_id} [{step.channel}]: {step.state}"
            if step.result is not None:
                line += f", {step.result.status.value}"
                if step.result.signals:
                    line += f"; signals: {', '.join(step.result.signal_names)}"
                if step.result.score is not None:
                    line += f"; score {step.result.score:.2f}"
                if step.result.detail:
                    line += f" ({step.result.detail})"
            lines.append(line)
        if self.rules:
            lines.append("Rules, in order:")
            for rule in self.rules:
                mark = {True: "fired", False: "did not hold", None: "not evaluated"}[
                    rule.matched
                ]
                if rule.error:
                    mark += f" ({rule.error})"
                lines.append(
                    f"  {rule.index + 1}. {rule.outcome.value} when {rule.condition}"
                    f" -> {mark}"
                )
        lines.append("Decided by: " + _DECIDED_BY.get(self.decided_by, self.decided_by))
        lines.extend(
            f"Reason {reason.code}: {reason.message}"
            if reason.message
            else f"Reason {reason.code}"
            for reason in self.reasons
        )
        return lines


def _review_lines(review: ReviewDecision) -> list[str]:
    who = review.reviewer if review.reviewer is not None else "the review SLA"
    waited = review.waited
    lines = [
        (
            f"Review: {review.outcome.value} by {who} at "
            f"{review.decided_at.isoformat()} (reason {review.reason}; "
            f"queued {_span(waited)} before)"
        )
    ]
    if review.escalated:
        lines.append("  escalated: the case was not decided within its SLA")
    if review.evidence:
        lines.append("  evidence asked for: " + ", ".join(review.evidence))
    if review.note:
        lines.append(f"  note: {review.note}")
    return lines


def _span(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


_DECIDED_BY = {
    "policy": "the first rule that held",
    "default": "the policy's default outcome (no rule held)",
    "deadline": "the session deadline",
    "reviewer": "a reviewer",
    "review_sla": "the review SLA's fallback (no reviewer decided in time)",
}
