"""What a backtest reports: outcomes, changes, labels, cost, review load, missing evidence."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

from .._results import PolicyRef
from ._replay import Plan, SimulatedSession

__all__ = [
    "COLUMNS",
    "MISSING_EVIDENCE",
    "OUTCOMES",
    "CostSummary",
    "LabelSummary",
    "MissingEvidence",
    "PolicySummary",
    "RecordedCheck",
    "ReviewLoad",
    "SimulationReport",
    "StepCost",
    "VerdictChange",
]

#: Verdict outcomes, in report order.
OUTCOMES = ("approved", "review", "rejected", "expired")
#: The column of sessions that stay undecided for lack of evidence.
MISSING_EVIDENCE = "missing_evidence"
#: Every column of an outcome distribution.
COLUMNS = (*OUTCOMES, MISSING_EVIDENCE)


def _share(part: float, whole: int) -> float:
    return part / whole if whole else 0.0


@attrs.frozen(kw_only=True)
class StepCost:
    """What one step cost over the sessions.

    Attributes:
        step_id: the step.
        channel: its channel.
        price: the price of one attempt (``None``: not priced).
        sessions: sessions in which the core started it.
        attempts: attempts started in all.
        cost: ``price * attempts`` (0 when not priced).
    """

    step_id: str
    channel: str
    price: float | None
    sessions: int
    attempts: int
    cost: float


@attrs.frozen(kw_only=True)
class CostSummary:
    """Vendor cost from the policy's per-step prices.

    Attributes:
        total: the cost of every session.
        per_session: the mean cost per session.
        steps: per step, in policy order.
        unpriced: steps that ran without a price (they count 0).
    """

    total: float
    per_session: float
    steps: tuple[StepCost, ...]
    unpriced: tuple[str, ...]


@attrs.frozen(kw_only=True)
class ReviewLoad:
    """The manual-review load: sessions a person decides.

    Attributes:
        sessions: how many verdicts are ``review``.
        share: their share of all sessions.
        hours: reviewer hours at the minutes per case given, else ``None``.
    """

    sessions: int
    share: float
    hours: float | None = None


@attrs.frozen(kw_only=True)
class MissingEvidence:
    """Sessions the recording could not answer for.

    Attributes:
        sessions: sessions left undecided (the ``missing_evidence`` column).
        steps: per step, in how many undecided sessions it lacked evidence.
        not_needed: sessions decided by a rule although a started step had
            no evidence (the verdict did not depend on it).
        undecided: each undecided session with its missing steps and why.
    """

    sessions: int
    steps: Mapping[str, int]
    not_needed: int
    undecided: tuple[tuple[str, Mapping[str, str]], ...]


@attrs.frozen(kw_only=True)
class LabelSummary:
    """Outcomes against known labels (``fraud``, ``default``, ``good``...).

    Attributes:
        matrix: label → outcome column → sessions (the confusion matrix).
        labelled: sessions with a label.
        unlabelled: sessions without one.
    """

    matrix: Mapping[str, Mapping[str, int]]
    labelled: int
    unlabelled: int

    def rates(self, label: str) -> dict[str, float]:
        """The approval, review and rejection rates of one label's sessions."""
        row = self.matrix[label]
        total = sum(row.values())
        return {
            "approval": _share(row["approved"], total),
            "review": _share(row["review"], total),
            "rejection": _share(row["rejected"], total),
        }


@attrs.frozen(kw_only=True)
class RecordedCheck:
    """The replay against history: sessions recorded under the same policy.

    Attributes:
        sessions: sessions whose recording names this policy (by hash) and
            holds its verdict.
        agree: those the replay decides with the recorded outcome.
        disagree: the others, by session id.
    """

    sessions: int
    agree: int
    disagree: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class PolicySummary:
    """How one policy decides the recorded sessions.

    Attributes:
        policy: the policy.
        sessions: sessions replayed.
        outcomes: sessions per outcome column (every column present).
        reasons: sessions per first reason code, most common first.
        cost: vendor cost.
        review: the manual-review load.
        missing: missing evidence.
        labels: outcomes against labels, when labels were given.
        recorded: how the replay compares with the verdicts recorded under
            this very policy (audit exports name the policy that decided).
    """

    policy: PolicyRef
    sessions: int
    outcomes: Mapping[str, int]
    reasons: Mapping[str, int]
    cost: CostSummary
    review: ReviewLoad
    missing: MissingEvidence
    labels: LabelSummary | None = None
    recorded: RecordedCheck = attrs.field(
        factory=lambda: RecordedCheck(sessions=0, agree=0)
    )

    def rates(self) -> dict[str, float]:
        """The approval, review and rejection rates over every session."""
        return {
            "approval": _share(self.outcomes["approved"], self.sessions),
            "review": _share(self.outcomes["review"], self.sessions),
            "rejection": _share(self.outcomes["rejected"], self.sessions),
        }


@attrs.frozen(kw_only=True)
class VerdictChange:
    """A session the policy decides otherwise than the baseline.

    Attributes:
        session_id: the session.
        before: the baseline's outcome column.
        after: the policy's outcome column.
        before_reason: the baseline's first reason code.
        after_reason: the policy's first reason code.
        before_explanation: how the baseline reached its verdict.
        after_explanation: how the policy reached its verdict.
        label: the session's label, when labels were given.
    """

    session_id: str
    before: str
    after: str
    before_reason: str
    after_reason: str
    before_explanation: str
    after_explanation: str
    label: str | None = None


@attrs.frozen(kw_only=True)
class SimulationReport:
    """Everything a backtest found; [`to_json`][multiverify.backtest.SimulationReport.to_json] gives it as plain data.

    Attributes:
        source: where the sessions came from.
        sessions: how many were replayed.
        policy: how the policy decides them.
        baseline: how the baseline decides them, when one was given.
        changes: sessions whose outcome differs from the baseline's, in file order.
        shifts: baseline column → policy column → sessions.
        unmatched_labels: labels naming a session that is not in the data.
    """

    source: str
    sessions: int
    policy: PolicySummary
    baseline: PolicySummary | None = None
    changes: tuple[VerdictChange, ...] = ()
    shifts: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    unmatched_labels: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``multiverify simulate --json`` prints)."""
        out: dict[str, Any] = {
            "source": self.source,
            "sessions": self.sessions,
            "policy": _summary_json(self.policy),
            "baseline": None if self.baseline is None else _summary_json(self.baseline),
        }
        if self.baseline is not None:
            out["changed"] = len(self.changes)
            out["shifts"] = {key: dict(row) for key, row in self.shifts.items()}
            out["changes"] = [attrs.asdict(change) for change in self.changes]
        if self.policy.labels is not None:
            out["unmatched_labels"] = self.unmatched_labels
        return out


def _summary_json(summary: PolicySummary) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": summary.policy.name,
        "version": summary.policy.version,
        "hash": summary.policy.hash,
        "outcomes": dict(summary.outcomes),
        "rates": summary.rates(),
        "reasons": dict(summary.reasons),
        "cost": {
            "total": summary.cost.total,
            "per_session": summary.cost.per_session,
            "unpriced": list(summary.cost.unpriced),
            "steps": [attrs.asdict(step) for step in summary.cost.steps],
        },
        "review": attrs.asdict(summary.review),
        "missing_evidence": {
            "sessions": summary.missing.sessions,
            "steps": dict(summary.missing.steps),
            "not_needed": summary.missing.not_needed,
            "undecided": [
                {"session_id": session_id, "steps": dict(steps)}
                for session_id, steps in summary.missing.undecided
            ],
        },
    }
    out["recorded"] = {
        "sessions": summary.recorded.sessions,
        "agree": summary.recorded.agree,
        "disagree": list(summary.recorded.disagree),
    }
    if summary.labels is not None:
        out["labels"] = {
            "labelled": summary.labels.labelled,
            "unlabelled": summary.labels.unlabelled,
            "matrix": {
                label: dict(row) for label, row in summary.labels.matrix.items()
            },
            "rates": {
                label: summary.labels.rates(label) for label in summary.labels.matrix
            },
        }
    return out


# --- tallying -------------------------------------------------------------------


class Row(NamedTuple):
    """One session's result, cheap to send between processes."""

    session_id: str
    line: int
    column: str
    reason: str
    cost: float
    attempts: tuple[tuple[str, int], ...]
    missing: tuple[tuple[str, str], ...]
    agrees: bool | None = None
    """Whether the outcome is the recorded one, for a session recorded under this policy."""

    @classmethod
    def of(cls, simulated: SimulatedSession, *, agrees: bool | None = None) -> Row:
        """The row of a simulated session."""
        return cls(
            simulated.session_id,
            simulated.line,
            MISSING_EVIDENCE if simulated.outcome is None else simulated.outcome.value,
            simulated.reason,
            simulated.cost,
            tuple(simulated.attempts.items()),
            tuple(simulated.missing.items()),
            agrees,
        )


class Tally:
    """Adds up rows of one policy into a [`PolicySummary`][multiverify.backtest.PolicySummary]."""

    def __init__(
        self,
        plan: Plan,
        *,
        labels: Mapping[str, str] | None,
        review_minutes: float | None,
    ) -> None:
        self.plan = plan
        self.labels = labels
        self.review_minutes = review_minutes
        self.sessions = 0
        self.outcomes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.cost = 0.0
        self.attempts: Counter[str] = Counter()
        self.started: Counter[str] = Counter()
        self.missing_steps: Counter[str] = Counter()
        self.not_needed = 0
        self.undecided: list[tuple[str, dict[str, str]]] = []
        self.matrix: dict[str, Counter[str]] = {}
        self.unlabelled = 0
        self.agree = 0
        self.disagree: list[str] = []

    def add(self, row: Row) -> None:
        """Count one session."""
        self.sessions += 1
        self.outcomes[row.column] += 1
        self.reasons[row.reason] += 1
        self.cost += row.cost
        for step_id, count in row.attempts:
            self.attempts[step_id] += count
            self.started[step_id] += 1
        if row.missing:
            if row.column == MISSING_EVIDENCE:
                self.undecided.append((row.session_id, dict(row.missing)))
                for step_id, _ in row.missing:
                    self.missing_steps[step_id] += 1
            else:
                self.not_needed += 1
        if row.agrees is not None:
            if row.agrees:
                self.agree += 1
            else:
                self.disagree.append(row.session_id)
        if self.labels is not None:
            label = self.labels.get(row.session_id)
            if label is None:
                self.unlabelled += 1
            else:
                self.matrix.setdefault(label, Counter())[row.column] += 1

    def summary(self) -> PolicySummary:
        """What the rows add up to."""
        plan = self.plan
        steps = tuple(
            StepCost(
                step_id=step.id,
                channel=step.channel,
                price=step.price,
                sessions=self.started[step.id],
                attempts=self.attempts[step.id],
                cost=0.0 if step.price is None else step.price * self.attempts[step.id],
            )
            for step in plan.policy.steps
        )
        review = self.outcomes["review"]
        labels = None
        if self.labels is not None:
            labels = LabelSummary(
                matrix={
                    label: {column: row[column] for column in COLUMNS}
                    for label, row in sorted(
                        self.matrix.items(),
                        key=lambda item: (-item[1].total(), item[0]),
                    )
                },
                labelled=self.sessions - self.unlabelled,
                unlabelled=self.unlabelled,
            )
        return PolicySummary(
            policy=plan.ref,
            sessions=self.sessions,
            outcomes={column: self.outcomes[column] for column in COLUMNS},
            reasons=dict(self.reasons.most_common()),
            cost=CostSummary(
                total=self.cost,
                per_session=_share(self.cost, self.sessions),
                steps=steps,
                unpriced=tuple(
                    step.step_id
                    for step in steps
                    if step.price is None and step.attempts
                ),
            ),
            review=ReviewLoad(
                sessions=review,
                share=_share(review, self.sessions),
                hours=None
                if self.review_minutes is None
                else review * self.review_minutes / 60,
            ),
            missing=MissingEvidence(
                sessions=self.outcomes[MISSING_EVIDENCE],
                steps={
                    step.id: self.missing_steps[step.id]
                    for step in plan.policy.steps
                    if self.missing_steps[step.id]
                },
                not_needed=self.not_needed,
                undecided=tuple(self.undecided),
            ),
            labels=labels,
            recorded=RecordedCheck(
                sessions=self.agree + len(self.disagree),
                agree=self.agree,
                disagree=tuple(self.disagree),
            ),
        )
