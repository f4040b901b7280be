"""The pure core: sessions, inputs, effects and the one transition function.

``transition(policy, session, input) -> (session, effects)`` decides
everything about a verification: which steps start, failover between
providers, fallbacks, timeouts, the deadline, cancellation and the verdict.
It does no I/O, reads no clock (time arrives inside each input) and draws no
randomness, so every runtime (embedded, shared store, Temporal) runs it
unchanged and a session replays from its recorded inputs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from ._applicant import Applicant
from ._results import (
    Challenge,
    ChannelResult,
    Outcome,
    PolicyRef,
    Reason,
    ResultStatus,
    ReviewDecision,
    RuleTrace,
    StepSummary,
    Verdict,
)
from .exceptions import (
    InvalidInputError,
    NotInReviewError,
    SessionFinishedError,
    StepNotFoundError,
    StepNotWaitingError,
)
from .policy import Policy, Step
from .policy._cel import Condition, ConditionError, make_context
from .policy._model import Reads, _reads
from .policy._review import reason_code_ok

__all__ = [
    "REVIEW_ESCALATE_TIMER",
    "REVIEW_FALLBACK_TIMER",
    "Cancel",
    "CancelStep",
    "CancelTimer",
    "DequeueReview",
    "Effect",
    "EscalateReview",
    "EvidenceRequested",
    "Input",
    "NotifyStep",
    "QueueReview",
    "RecordVerdict",
    "ReviewDecided",
    "ReviewState",
    "ScheduleTimer",
    "Session",
    "SessionStatus",
    "Start",
    "StartStep",
    "StepErrored",
    "StepFinished",
    "StepRecord",
    "StepStarted",
    "StepState",
    "StepUpdated",
    "TimerFired",
    "Transition",
    "check_decision",
    "check_evidence",
    "new_session",
    "require_input",
    "require_review",
    "require_waiting",
    "transition",
    "waiting_challenge",
    "with_audit_head",
]

JSON = Mapping[str, Any]


def _records(values: Iterable[StepRecord]) -> tuple[StepRecord, ...]:
    return tuple(values)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _timers(values: Iterable[tuple[str, datetime]]) -> tuple[tuple[str, datetime], ...]:
    return tuple((name, due) for name, due in values)


def _state_repr(state: JSON) -> str:
    """A channel's state in a repr: its keys, never its values.

    The state may hold personal or secret data (a destination number, a
    code's digest), so reprs and logs show only its shape, as the audit trail
    leaves it out.
    """
    return "{" + ", ".join(f"{key!r}: ..." for key in state) + "}"


class StepState(enum.StrEnum):
    """Where a step is in its life."""

    PENDING = "pending"
    SKIPPED = "skipped"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def settled(self) -> bool:
        """Whether the step can no longer change."""
        return self in _SETTLED

    @property
    def active(self) -> bool:
        """Whether a channel is working on the step."""
        return self in (StepState.RUNNING, StepState.WAITING)


_SETTLED = frozenset({StepState.SKIPPED, StepState.DONE, StepState.CANCELLED})


class SessionStatus(enum.StrEnum):
    """Whether a session still runs.

    ``review``: the automatic verdict was ``review`` and the policy has a
    ``[review]`` table, so the session waits for a person's decision (and
    runs the evidence steps a reviewer asks for).
    """

    ACTIVE = "active"
    REVIEW = "review"
    DECIDED = "decided"
    CANCELLED = "cancelled"


@attrs.frozen(kw_only=True)
class StepRecord:
    """The runtime state of one step.

    Attributes:
        step_id: the policy step.
        state: where it is.
        attempt: provider attempts started so far (the current one when active).
        provider_index: which of the step's providers the attempt uses.
        channel_state: the channel's own per-step state, serialised.
        challenge: what the step asks of the app while it waits.
        result: how it ended.
        started_at: when its first attempt started.
        triggered_by: the step whose failure started this fallback step.
        errors: provider errors met on the way, oldest first.
    """

    step_id: str
    state: StepState = StepState.PENDING
    attempt: int = 0
    provider_index: int = 0
    channel_state: JSON = attrs.field(factory=dict, repr=_state_repr)
    challenge: Challenge | None = None
    result: ChannelResult | None = None
    started_at: datetime | None = None
    triggered_by: str | None = None
    errors: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    timers: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    """Names of the channel timers the current attempt has scheduled."""


@attrs.frozen(kw_only=True)
class ReviewState:
    """Where a session's review case stands.

    Attributes:
        queued_at: when the case entered the review queue.
        priority: its priority in the queue now.
        escalated: whether it passed its SLA undecided.
        evidence: the evidence steps reviewers asked for, in order.
    """

    queued_at: datetime
    priority: int = 0
    escalated: bool = False
    evidence: tuple[str, ...] = attrs.field(default=(), converter=_strings)


@attrs.frozen(kw_only=True)
class Session:
    """One applicant under one policy version.

    Attributes:
        session_id: unique id.
        applicant: who is verified; ``None`` once personal data was purged,
            or in a session rebuilt from its audit trail (the core reads
            only ``facts``).
        policy: which policy decides.
        created_at: when the session was created.
        deadline_at: when it expires, if the policy has a deadline.
        status: active, in review, decided or cancelled.
        steps: per-step state, in policy order (evidence steps a reviewer
            asked for follow).
        facts: the applicant's and loan's plain facts that conditions read.
        verdict: the decision, once reached; in review, the automatic
            verdict of ``review`` that the reviewer settles.
        review: the review case, once the session entered review.
        inputs: how many inputs were applied (names effects deterministically).
        audit_head: the hash of the last audit event.
        audit_count: how many audit events the session has.
    """

    session_id: str
    applicant: Applicant | None
    policy: PolicyRef
    created_at: datetime
    deadline_at: datetime | None = None
    status: SessionStatus = SessionStatus.ACTIVE
    steps: tuple[StepRecord, ...] = attrs.field(default=(), converter=_records)
    facts: JSON = attrs.field(factory=dict)
    verdict: Verdict | None = None
    inputs: int = 0
    audit_head: str = ""
    audit_count: int = 0
    review: ReviewState | None = None

    def step(self, step_id: str) -> StepRecord:
        """The record of one step.

        Raises:
            StepNotFoundError: the policy has no such step.
        """
        for record in self.steps:
            if record.step_id == step_id:
                return record
        raise StepNotFoundError(
            message=f"session {self.session_id} has no step {step_id!r}",
            session_id=self.session_id,
            step_id=step_id,
        )

    @property
    def challenges(self) -> tuple[Challenge, ...]:
        """What the session's waiting steps ask of the app."""
        return tuple(
            record.challenge
            for record in self.steps
            if record.state is StepState.WAITING and record.challenge is not None
        )

    @property
    def finished(self) -> bool:
        """Whether the session has its final verdict or was cancelled."""
        return self.status in _FINISHED


_FINISHED = frozenset({SessionStatus.DECIDED, SessionStatus.CANCELLED})


# --- inputs -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Start:
    """The session starts."""

    at: datetime


@attrs.frozen(kw_only=True)
class _StepWaits:
    """The fields of an input that leaves a step waiting."""

    step_id: str
    attempt: int
    at: datetime
    challenge: Challenge | None = None
    channel_state: JSON = attrs.field(factory=dict, repr=_state_repr)
    timers: tuple[tuple[str, datetime], ...] = attrs.field(
        default=(), converter=_timers
    )


@attrs.frozen(kw_only=True)
class StepStarted(_StepWaits):
    """A channel started a step and now waits (for the applicant or a callback).

    ``timers`` asks for channel timers ``(name, due)``; each fires back to the
    channel through [`NotifyStep`][multiverify._session.NotifyStep].
    """


@attrs.frozen(kw_only=True)
class StepUpdated(_StepWaits):
    """A waiting step took input but goes on waiting (a wrong code, a resend)."""


@attrs.frozen(kw_only=True)
class StepFinished:
    """A step ended with a result."""

    step_id: str
    attempt: int
    at: datetime
    result: ChannelResult
    channel_state: JSON = attrs.field(factory=dict, repr=_state_repr)


@attrs.frozen(kw_only=True)
class StepErrored:
    """A provider attempt failed for good (after its retries): fail over or give up.

    ``failover`` is ``False`` when the next provider must not take over:
    the SDK refused the call itself, before any request, which every
    provider would meet alike; or the channel crashed handling input for an
    attempt already under way. The step then ends in error, and an attempt
    that was waiting is cancelled (its vendor side may be open: a call, a
    verification), as at a timeout. Recordings from before the flag lack
    it: they fail over.
    """

    step_id: str
    attempt: int
    at: datetime
    error: str
    provider: str | None = None
    failover: bool = True


@attrs.frozen(kw_only=True)
class TimerFired:
    """A timer the core scheduled is due."""

    timer_id: str
    at: datetime


@attrs.frozen(kw_only=True)
class Cancel:
    """The app cancels the session."""

    at: datetime
    reason: str = ""


@attrs.frozen(kw_only=True)
class ReviewDecided:
    """A reviewer settles a session in review: approved or rejected, with a reason code."""

    at: datetime
    reviewer: str
    outcome: Outcome = attrs.field(converter=Outcome)
    reason: str
    note: str = ""


@attrs.frozen(kw_only=True)
class EvidenceRequested:
    """A reviewer asks for one of the policy's evidence steps before deciding."""

    at: datetime
    reviewer: str
    step_id: str
    note: str = ""


Input = (
    Start
    | StepStarted
    | StepUpdated
    | StepFinished
    | StepErrored
    | TimerFired
    | Cancel
    | ReviewDecided
    | EvidenceRequested
)


# --- effects ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StartStep:
    """Run a channel's ``start`` for one attempt, with this idempotency key."""

    effect_id: str
    step_id: str
    attempt: int
    channel: str
    provider: str | None
    idempotency_key: str


@attrs.frozen(kw_only=True)
class CancelStep:
    """Tell a channel to stop working on an attempt (best effort)."""

    effect_id: str
    step_id: str
    attempt: int
    channel: str


@attrs.frozen(kw_only=True)
class NotifyStep:
    """Deliver a channel timer to the channel."""

    effect_id: str
    step_id: str
    attempt: int
    channel: str
    name: str


@attrs.frozen(kw_only=True)
class ScheduleTimer:
    """Fire ``TimerFired(timer_id)`` at ``due_at`` (idempotent by id)."""

    effect_id: str
    timer_id: str
    due_at: datetime


@attrs.frozen(kw_only=True)
class CancelTimer:
    """Forget a scheduled timer."""

    effect_id: str
    timer_id: str


@attrs.frozen(kw_only=True)
class RecordVerdict:
    """The session was decided: tell the app."""

    effect_id: str
    verdict: Verdict


@attrs.frozen(kw_only=True)
class QueueReview:
    """Put the session's case in the review queue (or back, after evidence came in)."""

    effect_id: str
    priority: int
    queued_at: datetime
    returned: bool = False


@attrs.frozen(kw_only=True)
class DequeueReview:
    """Take the session's case out of the review queue (decided, collecting, cancelled)."""

    effect_id: str


@attrs.frozen(kw_only=True)
class EscalateReview:
    """The case passed its SLA: raise its priority and tell the app."""

    effect_id: str
    priority: int


Effect = (
    StartStep
    | CancelStep
    | NotifyStep
    | ScheduleTimer
    | CancelTimer
    | RecordVerdict
    | QueueReview
    | DequeueReview
    | EscalateReview
)


@attrs.frozen(kw_only=True)
class Transition:
    """What one input did: the new session and the effects to run."""

    session: Session
    effects: tuple[Effect, ...] = ()
    fired: tuple[RuleTrace, ...] = ()
    """Rules evaluated on the way to a verdict (empty when none was reached)."""


# --- timer ids ----------------------------------------------------------------

DEADLINE_TIMER = "deadline"
REVIEW_ESCALATE_TIMER = "review:escalate"
REVIEW_FALLBACK_TIMER = "review:fallback"


def _timeout_timer(step_id: str, attempt: int) -> str:
    return f"step:{step_id}:{attempt}:timeout"


def _channel_timer(step_id: str, attempt: int, name: str) -> str:
    return f"step:{step_id}:{attempt}:channel:{name}"


# --- the functions ------------------------------------------------------------


def new_session(
    policy: Policy, applicant: Applicant, *, session_id: str, at: datetime
) -> Session:
    """Build a fresh session; feed it [`Start`][multiverify._session.Start] next.

    Raises:
        InvalidInputError: ``applicant`` is not an `Applicant`, or was born
            after ``at``.
    """
    if not isinstance(applicant, Applicant):
        raise InvalidInputError(
            message=f"applicant: expected an Applicant, got {type(applicant).__name__}",
            field="applicant",
        )
    if applicant.date_of_birth > at.date():
        raise InvalidInputError(
            message="date_of_birth: after the day the verification starts",
            field="date_of_birth",
        )
    deadline = (
        None if policy.deadline is None else at + timedelta(seconds=policy.deadline)
    )
    return Session(
        session_id=session_id,
        applicant=applicant,
        policy=policy.ref,
        created_at=at,
        deadline_at=deadline,
        steps=_plan(policy).initial,
        facts={
            "applicant": applicant.facts(on=at.date()),
            "application": applicant.loan.facts(),
        },
    )


def require_waiting(session: Session, step_id: str) -> StepRecord:
    """Check that input for ``step_id`` can be taken now and return its record.

    Raises:
        SessionFinishedError: the session has a verdict or was cancelled.
        StepNotFoundError: no such step.
        StepNotWaitingError: the step is not waiting for input.
    """
    if session.finished:
        raise SessionFinishedError(
            message=f"session {session.session_id} is {session.status.value}",
            session_id=session.session_id,
        )
    record = session.step(step_id)
    if not record.state.active:
        raise StepNotWaitingError(
            message=f"step {step_id!r} of session {session.session_id} is "
            f"{record.state.value}, not waiting for input",
            session_id=session.session_id,
            step_id=step_id,
        )
    return record


def require_input(
    session: Session, step_id: str, attempt: int | None = None
) -> StepRecord:
    """Like [`require_waiting`][multiverify._session.require_waiting], for input to a channel.

    The step must have its challenge out (not be starting still), and
    ``attempt``, when given, must be the current one.

    Raises:
        SessionFinishedError: the session has a verdict or was cancelled.
        StepNotFoundError: no such step.
        StepNotWaitingError: the step is not waiting, is still starting, or
            ``attempt`` is over.
    """
    record = require_waiting(session, step_id)
    if record.state is not StepState.WAITING:
        raise StepNotWaitingError(
            message=f"step {step_id!r} of session {session.session_id} is still "
            "starting; wait for its challenge",
            session_id=session.session_id,
            step_id=step_id,
        )
    if attempt is not None and attempt != record.attempt:
        raise StepNotWaitingError(
            message=f"attempt {attempt} of step {step_id!r} is over "
            f"(the current one is {record.attempt})",
            session_id=session.session_id,
            step_id=step_id,
        )
    return record


def require_review(session: Session, *, collecting: bool = False) -> ReviewState:
    """Check that the session waits for a review decision and return its case.

    With ``collecting``, a case whose evidence steps still run counts too.

    Raises:
        SessionFinishedError: the session has its final verdict or was cancelled.
        NotInReviewError: the session is not in review, or (without
            ``collecting``) it waits for the evidence a reviewer asked for.
    """
    if session.finished:
        raise SessionFinishedError(
            message=f"session {session.session_id} is {session.status.value}",
            session_id=session.session_id,
        )
    if session.status is not SessionStatus.REVIEW or session.review is None:
        raise NotInReviewError(
            message=f"session {session.session_id} is not in review",
            session_id=session.session_id,
        )
    if not collecting and any(record.state.active for record in session.steps):
        raise NotInReviewError(
            message=f"session {session.session_id} waits for the evidence "
            "a reviewer asked for; decide once it is back in the queue",
            session_id=session.session_id,
        )
    return session.review


def check_decision(policy: Policy, decision: ReviewDecided) -> None:
    """Check a review decision against the policy's ``[review]`` table.

    Raises:
        InvalidInputError: the outcome is not approved or rejected, the
            reason code is malformed or not one the policy allows, or the
            reviewer is missing (``field`` names which).
    """
    if decision.outcome not in (Outcome.APPROVED, Outcome.REJECTED):
        raise InvalidInputError(
            message="a review decides approved or rejected", field="outcome"
        )
    if not decision.reviewer.strip():
        raise InvalidInputError(message="name the reviewer", field="reviewer")
    allowed = (
        () if policy.review is None else policy.review.reasons_for(decision.outcome)
    )
    if allowed and decision.reason not in allowed:
        raise InvalidInputError(
            message=f"reason {decision.reason!r} is not one policy {policy.name} "
            f"allows when {decision.outcome.value} ({', '.join(allowed)})",
            field="reason",
        )
    if not reason_code_ok(decision.reason):
        raise InvalidInputError(
            message=f"{decision.reason!r} is not a reason code "
            "(lowercase letters, digits, _ . -)",
            field="reason",
        )


def check_evidence(policy: Policy, session: Session, step_id: str) -> Step:
    """Check that ``step_id`` can be collected as evidence now; return its step.

    Raises:
        SessionFinishedError: the session has its final verdict or was cancelled.
        NotInReviewError: the session is not in review.
        InvalidInputError: the policy offers no such evidence step, or it is
            being collected already (``field`` is ``step_id``).
    """
    require_review(session, collecting=True)
    settings = policy.review
    step = None if settings is None else settings.evidence_step(step_id)
    if step is None:
        offered = () if settings is None else settings.evidence
        raise InvalidInputError(
            message=f"policy {policy.name} offers no evidence step {step_id!r} "
            f"(offered: {', '.join(s.id for s in offered) or 'none'})",
            field="step_id",
        )
    if any(r.step_id == step_id and r.state.active for r in session.steps):
        raise InvalidInputError(
            message=f"evidence step {step_id!r} is being collected already",
            field="step_id",
        )
    return step


def waiting_challenge(session: Session, step_id: str) -> Challenge | None:
    """The step's challenge once it waits with one; ``None`` while it may still get one.

    Raises:
        StepNotFoundError: no such step.
        StepNotWaitingError: the step ended, was skipped or waits without a
            challenge; or the session finished.
    """
    record = session.step(step_id)
    if record.state is StepState.WAITING and record.challenge is not None:
        return record.challenge
    if session.finished or record.state.settled or record.state is StepState.WAITING:
        raise StepNotWaitingError(
            message=f"step {step_id!r} of session {session.session_id} is "
            f"{record.state.value} and has no challenge",
            session_id=session.session_id,
            step_id=step_id,
        )
    return None


def lapsed_deadline(session: Session, at: datetime) -> datetime | None:
    """The deadline of an active session if it has passed at ``at`` (its timer may not have fired), else ``None``."""
    deadline = session.deadline_at
    if deadline is None or at < deadline or session.status is not SessionStatus.ACTIVE:
        return None
    return deadline


def transition(policy: Policy, session: Session, event: Input) -> Transition:
    """Apply one input to a session: the whole decision logic of multiverify.

    Inputs that no longer apply (a result for an attempt that was already
    timed out or cancelled, a timer that was cancelled, anything after the
    verdict) change nothing but the input count.

    Raises:
        StepNotFoundError: a step input names a step the policy does not have.
    """
    if session.finished:
        return Transition(
            session=_rebuilt(
                session,
                status=session.status,
                steps=session.steps,
                verdict=session.verdict,
                inputs=session.inputs + 1,
                review=session.review,
            )
        )
    run = _Run(policy, session)
    run.apply(event)
    # Rule traces are reported only with the verdict they led to.
    fired = run.traces if run.verdict is not None else ()
    return Transition(session=run.build(), effects=tuple(run.effects), fired=fired)


# Direct constructor calls: several times cheaper than ``attrs.evolve``, which
# matters in the core's hot path (a few dozen copies per session).


def _rebuilt(
    session: Session,
    *,
    status: SessionStatus,
    steps: tuple[StepRecord, ...],
    verdict: Verdict | None,
    inputs: int,
    review: ReviewState | None,
    audit_head: str | None = None,
    audit_count: int | None = None,
) -> Session:
    return Session(
        session_id=session.session_id,
        applicant=session.applicant,
        policy=session.policy,
        created_at=session.created_at,
        deadline_at=session.deadline_at,
        status=status,
        steps=steps,
        facts=session.facts,
        verdict=verdict,
        inputs=inputs,
        audit_head=session.audit_head if audit_head is None else audit_head,
        audit_count=session.audit_count if audit_count is None else audit_count,
        review=review,
    )


def with_audit_head(session: Session, head: str, count: int) -> Session:
    """The session with its audit chain at ``head`` after ``count`` events."""
    return _rebuilt(
        session,
        status=session.status,
        steps=session.steps,
        verdict=session.verdict,
        inputs=session.inputs,
        review=session.review,
        audit_head=head,
        audit_count=count,
    )


def _with_state(record: StepRecord, state: StepState) -> StepRecord:
    return StepRecord(
        step_id=record.step_id,
        state=state,
        attempt=record.attempt,
        provider_index=record.provider_index,
        channel_state=record.channel_state,
        challenge=record.challenge,
        result=record.result,
        started_at=record.started_at,
        triggered_by=record.triggered_by,
        errors=record.errors,
        timers=record.timers,
    )


def _ended(
    record: StepRecord, state: StepState, result: ChannelResult, channel_state: JSON
) -> StepRecord:
    """The record of a step that is done or cancelled: no challenge, no timers."""
    return StepRecord(
        step_id=record.step_id,
        state=state,
        attempt=record.attempt,
        provider_index=record.provider_index,
        channel_state=channel_state,
        challenge=None,
        result=result,
        started_at=record.started_at,
        triggered_by=record.triggered_by,
        errors=record.errors,
        timers=(),
    )


_ACTIVE = frozenset({StepState.RUNNING, StepState.WAITING})


# Plain strings for conditions; ``.value`` on an enum member is a slow lookup.
_STATE_TEXT = {state: state.value for state in StepState}
_STATUS_TEXT = {status: status.value for status in ResultStatus}


def _status(record: StepRecord, result: ChannelResult | None) -> str:
    return _STATE_TEXT[record.state] if result is None else _STATUS_TEXT[result.status]


def _signals(_record: StepRecord, result: ChannelResult | None) -> list[str]:
    return [] if result is None else [signal.name for signal in result.signals]


def _score(_record: StepRecord, result: ChannelResult | None) -> float | None:
    return None if result is None else result.score


def _attempts(record: StepRecord, _result: ChannelResult | None) -> int:
    return record.attempt


def _provider(_record: StepRecord, result: ChannelResult | None) -> str:
    return "" if result is None else result.provider or ""


def _facts(_record: StepRecord, result: ChannelResult | None) -> dict[str, Any]:
    return {} if result is None else dict(result.facts)


_VIEW_FIELDS = {
    "status": _status,
    "signals": _signals,
    "score": _score,
    "attempts": _attempts,
    "provider": _provider,
    "facts": _facts,
}


def _step_view(record: StepRecord) -> dict[str, Any]:
    """A step as conditions see it: ``steps.<id>.status``, ``.signals``..."""
    result = record.result
    return {name: field(record, result) for name, field in _VIEW_FIELDS.items()}


# --- condition contexts ---------------------------------------------------------

# Converting variables into a CEL context is the dearest part of evaluating a
# rule, and many sessions present the same few projections (every step passed,
# with the same signals). Contexts are never changed once built, so they are
# shared, keyed by a type-exact frozen copy of their variables.
_CONTEXTS: dict[Any, Any] = {}
_CONTEXTS_MAX = 256


class _Unkeyable(Exception):  # noqa: N818 - internal control flow, never raised out
    """A value the context cache does not know how to key."""


def _key(value: Any) -> Any:
    """A hashable copy of JSON-like data that tells 1, 1.0 and True apart.

    Strings and ``None`` stand for themselves; every other value becomes a
    tuple led by its type, so no two different values share a key.
    """
    kind = type(value)
    if kind is dict:
        key: list[Any] = [dict]
        for name, item in value.items():
            key.append(name if type(name) is str else _key(name))
            key.append(item if type(item) is str or item is None else _key(item))
        return tuple(key)
    if kind is str or value is None:
        return value
    if kind is int or kind is bool:
        return (kind, value)
    if kind is float:
        # repr tells 0.0 from -0.0 and matches every nan with itself.
        return (kind, repr(value))
    if kind is list or kind is tuple:
        return (
            kind,
            *[item if type(item) is str else _key(item) for item in value],
        )
    raise _Unkeyable


def _context_for(variables: dict[str, Any]) -> Any:
    try:
        key = _key(variables)
    except _Unkeyable:
        return make_context(variables)
    context = _CONTEXTS.get(key)
    if context is None:
        if len(_CONTEXTS) >= _CONTEXTS_MAX:
            _CONTEXTS.clear()
        context = _CONTEXTS[key] = make_context(variables)
    return context


class _Plan:
    """What the core reads from a policy on every input, derived once.

    Attributes:
        initial: the records of a fresh session: immutable, so shared by
            every session of the policy (their ``channel_state`` is a
            read-only empty mapping).
        sources: per fallback step, the step whose outcome triggers it.
        rules: per rule, its position, the rule, its compiled condition and
            the steps that must have ended before it is evaluated.
        settled_only: whether every rule reads steps only by name, so that
            it sees nothing but steps that have ended (see ``_Run.advance``).
    """

    __slots__ = ("_reads", "initial", "rules", "settled_only", "sources")

    def __init__(self, policy: Policy) -> None:
        nothing: JSON = MappingProxyType({})
        self.initial = tuple(
            StepRecord(step_id=step.id, channel_state=nothing) for step in policy.steps
        )
        sources: dict[str, str] = {}
        for step in policy.steps:
            if step.fallback is not None:
                sources.setdefault(step.fallback.step, step.id)
        self.sources = sources
        self.rules = tuple(
            (index, rule, policy.condition(rule.when))
            for index, rule in enumerate(policy.rules)
        )
        self._reads: dict[str, Reads] = {}
        self.settled_only = all(
            self.reads(condition).steps is not None for _, _, condition in self.rules
        )

    def reads(self, condition: Condition) -> Reads:
        """What one condition reads; conditions that read the same share one."""
        found = self._reads.get(condition.source)
        if found is None:
            found = _reads((condition,))
            for known in self._reads.values():
                if known == found:
                    found = known
                    break
            self._reads[condition.source] = found
        return found


# Plans by policy identity; each entry keeps its policy, so an id is never
# reused while it is cached. A process runs a few policies.
_PLANS: dict[int, tuple[Policy, _Plan]] = {}
_PLANS_MAX = 64


def _plan(policy: Policy) -> _Plan:
    found = _PLANS.get(id(policy))
    if found is not None and found[0] is policy:
        return found[1]
    plan = _Plan(policy)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[id(policy)] = (policy, plan)
    return plan


class _Run:
    """The working state of one transition."""

    def __init__(self, policy: Policy, session: Session) -> None:
        self.policy = policy
        self.plan = _plan(policy)
        self.base = session
        self.inputs = session.inputs + 1
        self.status = session.status
        self.verdict = session.verdict
        self.review = session.review
        self._records = {record.step_id: record for record in session.steps}
        self._dirty = False
        self.effects: list[Effect] = []
        self._outcomes: list[tuple[bool, str]] | None = None
        self._contexts: dict[int, Any] = {}
        self._fired: tuple[RuleTrace, ...] | None = None

    # -- helpers ---------------------------------------------------------------

    def build(self) -> Session:
        """The session after the transition."""
        return _rebuilt(
            self.base,
            status=self.status,
            steps=tuple(self._records.values()) if self._dirty else self.base.steps,
            verdict=self.verdict,
            inputs=self.inputs,
            review=self.review,
        )

    def records(self) -> tuple[StepRecord, ...]:
        """The step records, in policy order."""
        return tuple(self._records.values())

    def effect_id(self) -> str:
        """The id of the next effect: input count and position."""
        return f"{self.inputs}.{len(self.effects)}"

    def record(self, step_id: str) -> StepRecord:
        try:
            return self._records[step_id]
        except KeyError:
            return self.base.step(step_id)  # raises StepNotFoundError

    def settled(self, step_id: str) -> bool:
        return self.record(step_id).state in _SETTLED

    def all_settled(self, step_ids: Iterable[str]) -> bool:
        # A loop over the records, not all() over a generator of settled():
        # it runs for every pending step in every round of advance. The
        # policy's validation makes every dependency one of its steps.
        records = self._records
        for step_id in step_ids:  # noqa: SIM110 - a loop, as said above
            if records[step_id].state not in _SETTLED:
                return False
        return True

    def current(self, step_id: str, attempt: int) -> StepRecord | None:
        record = self.record(step_id)
        if record.state in _ACTIVE and record.attempt == attempt:
            return record
        return None

    def put(self, record: StepRecord) -> StepRecord:
        if self._contexts:
            self._contexts = {}
        self._records[record.step_id] = record
        self._dirty = True
        return record

    def provider(self, step: Step, index: int) -> str | None:
        return step.providers[index] if step.providers else None

    # -- inputs ----------------------------------------------------------------

    def apply(self, event: Input) -> None:
        """Apply one input to the working state."""
        in_review = self.status is SessionStatus.REVIEW
        when: datetime | None = getattr(event, "at", None)  # None: not an input
        deadline = None if when is None else lapsed_deadline(self.base, when)
        if deadline is not None and not (
            isinstance(event, TimerFired) and event.timer_id == DEADLINE_TIMER
        ):
            # The deadline's timer has not fired yet (no replica or worker
            # was there to fire it): the session expired at its deadline,
            # and this input comes too late to count.
            self.expire(deadline)
            return
        match event:
            case Start(at=at):
                if in_review:
                    return
                if self.base.deadline_at is not None:
                    self.effects.append(
                        ScheduleTimer(
                            effect_id=self.effect_id(),
                            timer_id=DEADLINE_TIMER,
                            due_at=self.base.deadline_at,
                        )
                    )
                self.advance(at)
            case StepStarted() | StepUpdated():
                record = self.current(event.step_id, event.attempt)
                if record is not None:
                    self.wait(record, event)
            case StepFinished():
                record = self.current(event.step_id, event.attempt)
                if record is not None:
                    self.finish(
                        record,
                        event.result,
                        event.at,
                        channel_state=event.channel_state,
                    )
                    self.advance(event.at)
            case StepErrored():
                record = self.current(event.step_id, event.attempt)
                if record is not None:
                    self.fail_over(record, event)
                    self.advance(event.at)
            case TimerFired(timer_id=timer_id, at=at):
                self.timer(timer_id, at)
            case Cancel(at=at):
                if in_review:
                    self.leave_review()
                self.stop_everything(at, keep_deadline=in_review)
                self.status = SessionStatus.CANCELLED
            case ReviewDecided():
                if in_review:
                    self.settle(
                        event.at,
                        event.outcome,
                        event.reason,
                        reviewer=event.reviewer,
                        note=event.note,
                    )
            case EvidenceRequested():
                if in_review:
                    self.collect(event.step_id, event.at)

    # -- review ------------------------------------------------------------------

    def enter_review(self, at: datetime) -> None:
        """The automatic verdict is review: queue the case and start its SLA timers."""
        settings = self.policy.review
        assert settings is not None  # noqa: S101 - checked by the caller
        self.status = SessionStatus.REVIEW
        self.review = ReviewState(queued_at=at, priority=settings.priority)
        self.effects.append(
            QueueReview(
                effect_id=self.effect_id(), priority=settings.priority, queued_at=at
            )
        )
        for timer_id, delay in (
            (REVIEW_ESCALATE_TIMER, settings.sla),
            (REVIEW_FALLBACK_TIMER, settings.fallback_after),
        ):
            if delay is not None:
                self.effects.append(
                    ScheduleTimer(
                        effect_id=self.effect_id(),
                        timer_id=timer_id,
                        due_at=at + timedelta(seconds=delay),
                    )
                )

    def leave_review(self) -> None:
        """Take the case out of the queue and forget its SLA timers (idempotent)."""
        settings = self.policy.review
        state = self.review
        self.effects.append(DequeueReview(effect_id=self.effect_id()))
        if settings is None or state is None:
            return
        if settings.sla is not None and not state.escalated:
            self.effects.append(
                CancelTimer(effect_id=self.effect_id(), timer_id=REVIEW_ESCALATE_TIMER)
            )
        if settings.fallback_after is not None:
            self.effects.append(
                CancelTimer(effect_id=self.effect_id(), timer_id=REVIEW_FALLBACK_TIMER)
            )

    def settle(
        self,
        at: datetime,
        outcome: Outcome,
        reason: str,
        *,
        reviewer: str | None,
        note: str = "",
    ) -> None:
        """Close the case with a person's decision (or the SLA fallback's)."""
        state = self.review
        automatic = self.verdict
        assert state is not None  # noqa: S101 - in review
        assert automatic is not None  # noqa: S101 - in review
        self.leave_review()
        self.stop_everything(at, keep_deadline=True)
        decision = ReviewDecision(
            outcome=outcome,
            reason=reason,
            reviewer=reviewer,
            note=note,
            queued_at=state.queued_at,
            decided_at=at,
            escalated=state.escalated,
            evidence=state.evidence,
        )
        message = (
            f"decided in review by {reviewer}"
            if reviewer is not None
            else "no reviewer decided before the review SLA's fallback"
        )
        self.finalise(
            Verdict(
                outcome=outcome,
                reasons=(Reason(code=reason, message=message),),
                policy=self.base.policy,
                decided_at=at,
                score=automatic.score,
                steps=self.summaries(),
                decided_by="reviewer" if reviewer is not None else "review_sla",
                review=decision,
                automatic=automatic,
            )
        )

    def collect(self, step_id: str, at: datetime) -> None:
        """Start an evidence step a reviewer asked for; the case leaves the queue meanwhile."""
        settings = self.policy.review
        state = self.review
        step = None if settings is None else settings.evidence_step(step_id)
        if step is None or state is None:
            return
        record = self._records.get(step_id) or StepRecord(step_id=step_id)
        if record.state.active:
            return  # already being collected
        if not any(r.state.active for r in self._records.values()):
            self.effects.append(DequeueReview(effect_id=self.effect_id()))
        self.review = ReviewState(
            queued_at=state.queued_at,
            priority=state.priority,
            escalated=state.escalated,
            evidence=(*state.evidence, step_id),
        )
        self.start(record, at, provider_index=0)

    def back_to_queue(self) -> None:
        """Evidence came in: once no evidence step runs, the case is queued again."""
        state = self.review
        if state is None or any(r.state.active for r in self._records.values()):
            return
        self.effects.append(
            QueueReview(
                effect_id=self.effect_id(),
                priority=state.priority,
                queued_at=state.queued_at,
                returned=True,
            )
        )

    def review_timer(self, timer_id: str, at: datetime) -> None:
        settings = self.policy.review
        state = self.review
        if settings is None or state is None:
            return
        if timer_id == REVIEW_ESCALATE_TIMER and not state.escalated:
            priority = state.priority + settings.escalate_by
            self.review = ReviewState(
                queued_at=state.queued_at,
                priority=priority,
                escalated=True,
                evidence=state.evidence,
            )
            self.effects.append(
                EscalateReview(effect_id=self.effect_id(), priority=priority)
            )
        elif timer_id == REVIEW_FALLBACK_TIMER and settings.fallback_after is not None:
            self.settle(at, settings.fallback, "review.sla_expired", reviewer=None)

    # -- steps -----------------------------------------------------------------

    def wait(self, record: StepRecord, event: StepStarted | StepUpdated) -> None:
        names = dict.fromkeys((*record.timers, *(n for n, _ in event.timers)))
        self.put(
            StepRecord(
                step_id=record.step_id,
                state=StepState.WAITING,
                attempt=record.attempt,
                provider_index=record.provider_index,
                channel_state=event.channel_state,
                challenge=event.challenge
                if event.challenge is not None
                else record.challenge,
                result=record.result,
                started_at=record.started_at,
                triggered_by=record.triggered_by,
                errors=record.errors,
                timers=tuple(names),
            )
        )
        for name, due in event.timers:
            self.effects.append(
                ScheduleTimer(
                    effect_id=self.effect_id(),
                    timer_id=_channel_timer(record.step_id, record.attempt, name),
                    due_at=due,
                )
            )

    def start(self, record: StepRecord, at: datetime, *, provider_index: int) -> None:
        step = self.policy.step(record.step_id)
        attempt = record.attempt + 1
        self.put(
            StepRecord(
                step_id=record.step_id,
                state=StepState.RUNNING,
                attempt=attempt,
                provider_index=provider_index,
                channel_state=record.channel_state,
                challenge=None,
                result=record.result,
                started_at=record.started_at or at,
                triggered_by=record.triggered_by,
                errors=record.errors,
                timers=record.timers,
            )
        )
        self.effects.append(
            StartStep(
                effect_id=self.effect_id(),
                step_id=step.id,
                attempt=attempt,
                channel=step.channel,
                provider=self.provider(step, provider_index),
                idempotency_key=f"{self.base.session_id}:{step.id}:{attempt}",
            )
        )
        if step.timeout is not None:
            self.effects.append(
                ScheduleTimer(
                    effect_id=self.effect_id(),
                    timer_id=_timeout_timer(step.id, attempt),
                    due_at=at + timedelta(seconds=step.timeout),
                )
            )

    def cancel(self, record: StepRecord, step: Step) -> None:
        """Have the channel stop the record's current attempt (hang up, expire a code)."""
        self.effects.append(
            CancelStep(
                effect_id=self.effect_id(),
                step_id=step.id,
                attempt=record.attempt,
                channel=step.channel,
            )
        )

    def release(self, record: StepRecord, step: Step) -> None:
        """Cancel the timers of the record's current attempt."""
        if step.timeout is not None:
            self.effects.append(
                CancelTimer(
                    effect_id=self.effect_id(),
                    timer_id=_timeout_timer(step.id, record.attempt),
                )
            )
        for name in record.timers:
            self.effects.append(
                CancelTimer(
                    effect_id=self.effect_id(),
                    timer_id=_channel_timer(step.id, record.attempt, name),
                )
            )

    def finish(
        self,
        record: StepRecord,
        result: ChannelResult,
        at: datetime,
        *,
        channel_state: JSON | None = None,
    ) -> None:
        step = self.policy.step(record.step_id)
        self.release(record, step)
        result = type(result)(
            status=result.status,
            signals=result.signals,
            score=result.score,
            evidence=result.evidence,
            attempts=record.attempt,
            provider=result.provider or self.provider(step, record.provider_index),
            started_at=result.started_at or record.started_at,
            finished_at=result.finished_at or at,
            detail=result.detail,
            facts=result.facts,
        )
        self.put(
            _ended(
                record,
                StepState.DONE,
                result,
                record.channel_state if channel_state is None else channel_state,
            )
        )
        if step.fallback is not None:
            target = self.record(step.fallback.step)
            if target.state is StepState.PENDING and result.status in step.fallback.on:
                self.put(
                    StepRecord(
                        step_id=target.step_id,
                        state=target.state,
                        attempt=target.attempt,
                        provider_index=target.provider_index,
                        channel_state=target.channel_state,
                        challenge=target.challenge,
                        result=target.result,
                        started_at=target.started_at,
                        triggered_by=step.id,
                        errors=target.errors,
                        timers=target.timers,
                    )
                )

    def fail_over(self, record: StepRecord, event: StepErrored) -> None:
        step = self.policy.step(record.step_id)
        # A vendor's error text may quote the applicant (a rejected number).
        applicant = self.base.applicant
        error = event.error if applicant is None else applicant.redact(event.error)
        record = attrs.evolve(record, errors=(*record.errors, error))
        if event.failover and record.provider_index + 1 < len(step.providers):
            self.release(record, step)
            if record.timers:
                record = attrs.evolve(record, timers=())
            self.start(record, event.at, provider_index=record.provider_index + 1)
            return
        if record.state is StepState.WAITING:
            self.cancel(record, step)  # its vendor side may still be open
        self.finish(
            record,
            ChannelResult(
                status=ResultStatus.ERROR,
                provider=event.provider,
                detail=error,
            ),
            event.at,
        )

    def timer(self, timer_id: str, at: datetime) -> None:
        if timer_id == DEADLINE_TIMER:
            # Without a deadline the timer was never scheduled: ignore it. In
            # review the SLA, not the deadline, bounds the session.
            if (
                self.base.deadline_at is not None
                and self.status is SessionStatus.ACTIVE
            ):
                # At its deadline, however late the timer fired.
                self.expire(min(at, self.base.deadline_at))
            return
        if timer_id in (REVIEW_ESCALATE_TIMER, REVIEW_FALLBACK_TIMER):
            if self.status is SessionStatus.REVIEW:
                self.review_timer(timer_id, at)
            return
        parts = timer_id.split(":", 4)
        if len(parts) < 4 or parts[0] != "step":  # noqa: PLR2004 - step:<id>:<attempt>:<kind>
            return
        _, step_id, attempt_text, kind, *rest = parts
        # ASCII only: str.isdigit() accepts "²", which int() refuses.
        if not (attempt_text.isascii() and attempt_text.isdigit()):
            return
        try:
            record = self.current(step_id, int(attempt_text))
        except StepNotFoundError:
            return
        if record is None:
            return
        step = self.policy.step(step_id)
        if kind == "timeout" and step.timeout is not None:
            self.cancel(record, step)
            self.finish(
                record,
                ChannelResult(
                    status=ResultStatus.TIMEOUT,
                    detail=f"no result within {step.timeout:g}s",
                ),
                at,
            )
            self.advance(at)
        elif kind == "channel" and rest:
            self.effects.append(
                NotifyStep(
                    effect_id=self.effect_id(),
                    step_id=step_id,
                    attempt=record.attempt,
                    channel=step.channel,
                    name=rest[0],
                )
            )

    # -- the decision ------------------------------------------------------------

    def advance(self, at: datetime) -> None:
        """Start what is ready and decide when the rules can; repeat until stable.

        In review the rules have spoken: a step that ended was evidence for
        the reviewer, and the case goes back to the queue once none runs.
        """
        if self.status is SessionStatus.REVIEW:
            self.back_to_queue()
            return
        # Starting a step settles nothing, so it can make no other step ready
        # nor change what a rule that reads only named, settled steps sees:
        # only a skipped step calls for another round.
        settled_only = self.plan.settled_only
        while True:
            if self.decide(at):
                return
            moved, skipped = self.start_ready(at)
            if not (skipped or (moved and not settled_only)):
                break
        step = self.policy.step
        if all(
            r.state in _SETTLED or step(r.step_id).optional
            for r in self._records.values()
        ):
            self.conclude(
                at,
                self.policy.default,
                (
                    Reason(
                        code="policy.default",
                        message="every step ended and no rule held",
                    ),
                ),
                decided_by="default",
            )

    def start_ready(self, at: datetime) -> tuple[bool, bool]:
        """Start or skip every step that can move; return whether any did, and any was skipped."""
        moved = skipped = False
        sources = self.plan.sources
        for record in self.records():
            if record.state is not StepState.PENDING:
                continue
            step = self.policy.step(record.step_id)
            source = sources.get(step.id)
            if source is not None and record.triggered_by is None:
                if self.settled(source):
                    self.put(_with_state(record, StepState.SKIPPED))
                    moved = skipped = True
                continue
            if step.after and not self.all_settled(step.after):
                continue
            if step.when is not None and not self.holds(step.when):
                self.put(_with_state(record, StepState.SKIPPED))
                skipped = True
            else:
                self.start(record, at, provider_index=0)
            moved = True
        return moved, skipped

    def context(self, condition: Condition) -> Any:
        """The context of one condition, converted once until a step changes.

        It carries only what the condition reads: converting a value is the
        dear part of an evaluation, and a small projection (the statuses of
        two steps) is far likelier to be shared with other sessions.
        """
        reads = self.plan.reads(condition)
        context = self._contexts.get(id(reads))
        if context is None:
            context = self._contexts[id(reads)] = _context_for(self.variables(reads))
        return context

    def variables(self, reads: Reads) -> dict[str, Any]:
        facts = self.base.facts
        variables: dict[str, Any] = {}
        for root, fields in (
            ("applicant", reads.applicant),
            ("application", reads.application),
        ):
            if fields is None:
                variables[root] = dict(facts[root])
            elif fields:
                variables[root] = {name: facts[root].get(name) for name in fields}
        wanted = reads.steps
        if wanted is None or wanted:
            steps: dict[str, Any] = {}
            for record in self._records.values():
                if wanted is None:
                    steps[record.step_id] = _step_view(record)
                    continue
                if record.step_id not in wanted:
                    continue
                fields = wanted[record.step_id]
                if fields is None:
                    steps[record.step_id] = _step_view(record)
                else:
                    result = record.result
                    steps[record.step_id] = {
                        name: _VIEW_FIELDS[name](record, result) for name in fields
                    }
            variables["steps"] = steps
        return variables

    def holds(self, source: str) -> bool:
        try:
            condition = self.policy.condition(source)
            return condition.evaluate(self.context(condition))
        except ConditionError:
            return False

    def decide(self, at: datetime) -> bool:
        """Evaluate the rules in order; conclude and return True if one holds.

        A rule whose steps have not all ended holds back the rules after it.
        Traces are built only when a verdict needs them.
        """
        outcomes: list[tuple[bool, str]] = []
        self._outcomes = outcomes
        for index, rule, condition in self.plan.rules:
            for step_id in condition.steps:
                if self.record(step_id).state not in _SETTLED:
                    return False
            try:
                matched = condition.evaluate(self.context(condition))
            except ConditionError as exc:
                outcomes.append((False, str(exc)))
                continue
            outcomes.append((matched, ""))
            if matched:
                self.conclude(
                    at,
                    rule.outcome,
                    (
                        Reason(
                            code=rule.reason,
                            message=rule.message or f"rule {index + 1} held",
                        ),
                    ),
                    decided_by="policy",
                )
                return True
        return False

    @property
    def traces(self) -> tuple[RuleTrace, ...]:
        """How each rule fared in the last evaluation (not evaluated: ``None``)."""
        if self._fired is not None:
            return self._fired  # the verdict's, built from the same evaluation
        if self._outcomes is None:
            return ()
        evaluated = self._outcomes
        return tuple(
            RuleTrace(
                index=index,
                outcome=rule.outcome,
                condition=rule.when,
                reason=rule.reason,
                matched=evaluated[index][0] if index < len(evaluated) else None,
                error=evaluated[index][1] if index < len(evaluated) else "",
            )
            for index, rule in enumerate(self.policy.rules)
        )

    def conclude(
        self,
        at: datetime,
        outcome: Outcome,
        reasons: Sequence[Reason],
        *,
        decided_by: str,
    ) -> None:
        self.stop_everything(at, keep_deadline=decided_by == "deadline")
        verdict = Verdict(
            outcome=outcome,
            reasons=tuple(reasons),
            policy=self.base.policy,
            decided_at=at,
            score=self.score(),
            steps=self.summaries(),
            rules=self.traces,
            decided_by=decided_by,
        )
        self._fired = verdict.rules
        if outcome is Outcome.REVIEW and self.policy.review is not None:
            self.verdict = verdict
            self.enter_review(at)
            return
        self.finalise(verdict)

    def summaries(self) -> tuple[StepSummary, ...]:
        """The steps as a verdict records them."""
        step = self.policy.step
        return tuple(
            StepSummary(
                step_id=record.step_id,
                channel=step(record.step_id).channel,
                state=_STATE_TEXT[record.state],
                result=record.result,
            )
            for record in self._records.values()
        )

    def finalise(self, verdict: Verdict) -> None:
        """The session's final verdict: decided, and the app is told."""
        self.status = SessionStatus.DECIDED
        self.verdict = verdict
        self.effects.append(RecordVerdict(effect_id=self.effect_id(), verdict=verdict))

    def score(self) -> float | None:
        if self.policy.score is not None:
            try:
                condition = self.policy.condition(self.policy.score)
                return condition.evaluate_number(self.context(condition))
            except ConditionError:
                return None
        scores = [
            r.result.score
            for r in self._records.values()
            if r.result is not None and r.result.score is not None
        ]
        return sum(scores) / len(scores) if scores else None

    def stop_everything(self, at: datetime, *, keep_deadline: bool) -> None:
        """Cancel active steps and timers; pending steps become skipped."""
        for record in self.records():
            if record.state in _ACTIVE:
                step = self.policy.step(record.step_id)
                self.cancel(record, step)
                self.release(record, step)
                self.put(
                    _ended(
                        record,
                        StepState.CANCELLED,
                        ChannelResult(
                            status=ResultStatus.CANCELLED,
                            attempts=record.attempt,
                            provider=self.provider(step, record.provider_index),
                            started_at=record.started_at,
                            finished_at=at,
                            detail="the session no longer needed it",
                        ),
                        record.channel_state,
                    )
                )
            elif record.state is StepState.PENDING:
                self.put(_with_state(record, StepState.SKIPPED))
        if not keep_deadline and self.base.deadline_at is not None:
            self.effects.append(
                CancelTimer(effect_id=self.effect_id(), timer_id=DEADLINE_TIMER)
            )

    def expire(self, at: datetime) -> None:
        self._outcomes = None
        self.conclude(
            at,
            self.policy.on_deadline,
            (
                Reason(
                    code="session.deadline",
                    message="the session reached its deadline before a decision",
                ),
            ),
            decided_by="deadline",
        )
