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
    RuleTrace,
    StepSummary,
    Verdict,
)
from .exceptions import (
    SessionFinishedError,
    StepNotFoundError,
    StepNotWaitingError,
)
from .policy import Policy, Step
from .policy._cel import ConditionError, make_context

__all__ = [
    "Cancel",
    "CancelStep",
    "CancelTimer",
    "Effect",
    "Input",
    "NotifyStep",
    "RecordVerdict",
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
    "new_session",
    "require_waiting",
    "transition",
]

JSON = Mapping[str, Any]


def _records(values: Iterable[StepRecord]) -> tuple[StepRecord, ...]:
    return tuple(values)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _timers(values: Iterable[tuple[str, datetime]]) -> tuple[tuple[str, datetime], ...]:
    return tuple((name, due) for name, due in values)


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
    """Whether a session still runs."""

    ACTIVE = "active"
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
    channel_state: JSON = attrs.field(factory=dict)
    challenge: Challenge | None = None
    result: ChannelResult | None = None
    started_at: datetime | None = None
    triggered_by: str | None = None
    errors: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    timers: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    """Names of the channel timers the current attempt has scheduled."""


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
        status: active, decided or cancelled.
        steps: per-step state, in policy order.
        facts: the applicant's and loan's plain facts that conditions read.
        verdict: the decision, once reached.
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
        """Whether the session has a verdict or was cancelled."""
        return self.status is not SessionStatus.ACTIVE


# --- inputs -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Start:
    """The session starts."""

    at: datetime


@attrs.frozen(kw_only=True)
class StepStarted:
    """A channel started a step and now waits (for the applicant or a callback).

    ``timers`` asks for channel timers ``(name, due)``; each fires back to the
    channel through [`NotifyStep`][multiverify._session.NotifyStep].
    """

    step_id: str
    attempt: int
    at: datetime
    challenge: Challenge | None = None
    channel_state: JSON = attrs.field(factory=dict)
    timers: tuple[tuple[str, datetime], ...] = attrs.field(
        default=(), converter=_timers
    )


@attrs.frozen(kw_only=True)
class StepUpdated:
    """A waiting step took input but goes on waiting (a wrong code, a resend)."""

    step_id: str
    attempt: int
    at: datetime
    challenge: Challenge | None = None
    channel_state: JSON = attrs.field(factory=dict)
    timers: tuple[tuple[str, datetime], ...] = attrs.field(
        default=(), converter=_timers
    )


@attrs.frozen(kw_only=True)
class StepFinished:
    """A step ended with a result."""

    step_id: str
    attempt: int
    at: datetime
    result: ChannelResult
    channel_state: JSON = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class StepErrored:
    """A provider attempt failed for good (after its retries): fail over or give up."""

    step_id: str
    attempt: int
    at: datetime
    error: str
    provider: str | None = None


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


Input = (
    Start | StepStarted | StepUpdated | StepFinished | StepErrored | TimerFired | Cancel
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


Effect = (
    StartStep | CancelStep | NotifyStep | ScheduleTimer | CancelTimer | RecordVerdict
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


def _timeout_timer(step_id: str, attempt: int) -> str:
    return f"step:{step_id}:{attempt}:timeout"


def _channel_timer(step_id: str, attempt: int, name: str) -> str:
    return f"step:{step_id}:{attempt}:channel:{name}"


# --- the functions ------------------------------------------------------------


def new_session(
    policy: Policy, applicant: Applicant, *, session_id: str, at: datetime
) -> Session:
    """Build a fresh session; feed it [`Start`][multiverify._session.Start] next."""
    deadline = (
        None if policy.deadline is None else at + timedelta(seconds=policy.deadline)
    )
    return Session(
        session_id=session_id,
        applicant=applicant,
        policy=policy.ref,
        created_at=at,
        deadline_at=deadline,
        steps=tuple(StepRecord(step_id=step.id) for step in policy.steps),
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


def transition(policy: Policy, session: Session, event: Input) -> Transition:
    """Apply one input to a session: the whole decision logic of multiverify.

    Inputs that no longer apply (a result for an attempt that was already
    timed out or cancelled, a timer that was cancelled, anything after the
    verdict) change nothing but the input count.

    Raises:
        StepNotFoundError: a step input names a step the policy does not have.
    """
    run = _Run(policy, attrs.evolve(session, inputs=session.inputs + 1))
    if session.finished:
        return Transition(session=run.session)
    match event:
        case Start(at=at):
            if session.deadline_at is not None:
                run.emit(
                    ScheduleTimer, timer_id=DEADLINE_TIMER, due_at=session.deadline_at
                )
            run.advance(at)
        case StepStarted() | StepUpdated():
            record = run.current(event.step_id, event.attempt)
            if record is not None:
                names = dict.fromkeys((*record.timers, *(n for n, _ in event.timers)))
                run.replace(
                    record,
                    state=StepState.WAITING,
                    challenge=event.challenge
                    if event.challenge is not None
                    else record.challenge,
                    channel_state=event.channel_state,
                    timers=tuple(names),
                )
                for name, due in event.timers:
                    run.emit(
                        ScheduleTimer,
                        timer_id=_channel_timer(record.step_id, record.attempt, name),
                        due_at=due,
                    )
        case StepFinished():
            record = run.current(event.step_id, event.attempt)
            if record is not None:
                run.finish(
                    record, event.result, event.at, channel_state=event.channel_state
                )
                run.advance(event.at)
        case StepErrored():
            record = run.current(event.step_id, event.attempt)
            if record is not None:
                run.fail_over(record, event)
                run.advance(event.at)
        case TimerFired(timer_id=timer_id, at=at):
            run.timer(timer_id, at)
        case Cancel(at=at):
            run.stop_everything(at, keep_deadline=False)
            run.session = attrs.evolve(run.session, status=SessionStatus.CANCELLED)
    # Rule traces are reported only with the verdict they led to.
    fired = run.traces if run.session.verdict is not None else ()
    return Transition(session=run.session, effects=tuple(run.effects), fired=fired)


def _step_view(record: StepRecord) -> dict[str, Any]:
    """A step as conditions see it: ``steps.<id>.status``, ``.signals``..."""
    result = record.result
    if result is None:
        return {
            "status": record.state.value,
            "signals": [],
            "score": None,
            "attempts": record.attempt,
            "provider": "",
            "facts": {},
        }
    return {
        "status": result.status.value,
        "signals": list(result.signal_names),
        "score": result.score,
        "attempts": record.attempt,
        "provider": result.provider or "",
        "facts": dict(result.facts),
    }


class _Run:
    """The working state of one transition."""

    def __init__(self, policy: Policy, session: Session) -> None:
        self.policy = policy
        self._base = session
        self._records = {record.step_id: record for record in session.steps}
        self._dirty = False
        self.effects: list[Effect] = []
        self._outcomes: list[tuple[bool, str]] | None = None
        self._context: Any = None

    # -- helpers ---------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The session so far; step changes are folded in only when it is read."""
        if self._dirty:
            self._base = attrs.evolve(self._base, steps=tuple(self._records.values()))
            self._dirty = False
        return self._base

    @session.setter
    def session(self, session: Session) -> None:
        self._base = session
        self._records = {record.step_id: record for record in session.steps}
        self._dirty = False

    def records(self) -> tuple[StepRecord, ...]:
        """The step records, in policy order."""
        return tuple(self._records.values())

    def emit(self, kind: type[Effect], **fields: Any) -> None:
        effect_id = f"{self._base.inputs}.{len(self.effects)}"
        self.effects.append(kind(effect_id=effect_id, **fields))

    def record(self, step_id: str) -> StepRecord:
        try:
            return self._records[step_id]
        except KeyError:
            return self._base.step(step_id)  # raises StepNotFoundError

    def current(self, step_id: str, attempt: int) -> StepRecord | None:
        record = self.record(step_id)
        if record.state.active and record.attempt == attempt:
            return record
        return None

    def replace(self, record: StepRecord, **changes: Any) -> StepRecord:
        self._context = None
        new = attrs.evolve(record, **changes)
        self._records[new.step_id] = new
        self._dirty = True
        return new

    def spec(self, step_id: str) -> Step:
        return self.policy.step(step_id)

    def provider(self, step: Step, index: int) -> str | None:
        return step.providers[index] if step.providers else None

    # -- steps -----------------------------------------------------------------

    def start(self, record: StepRecord, at: datetime, *, provider_index: int) -> None:
        step = self.spec(record.step_id)
        attempt = record.attempt + 1
        self.replace(
            record,
            state=StepState.RUNNING,
            attempt=attempt,
            provider_index=provider_index,
            challenge=None,
            started_at=record.started_at or at,
        )
        self.emit(
            StartStep,
            step_id=step.id,
            attempt=attempt,
            channel=step.channel,
            provider=self.provider(step, provider_index),
            idempotency_key=f"{self._base.session_id}:{step.id}:{attempt}",
        )
        if step.timeout is not None:
            self.emit(
                ScheduleTimer,
                timer_id=_timeout_timer(step.id, attempt),
                due_at=at + timedelta(seconds=step.timeout),
            )

    def release(self, record: StepRecord) -> StepRecord:
        """Cancel the timers of the record's current attempt."""
        step = self.spec(record.step_id)
        if step.timeout is not None:
            self.emit(CancelTimer, timer_id=_timeout_timer(step.id, record.attempt))
        for name in record.timers:
            self.emit(
                CancelTimer, timer_id=_channel_timer(step.id, record.attempt, name)
            )
        return self.replace(record, timers=()) if record.timers else record

    def finish(
        self,
        record: StepRecord,
        result: ChannelResult,
        at: datetime,
        *,
        channel_state: JSON | None = None,
    ) -> None:
        step = self.spec(record.step_id)
        record = self.release(record)
        result = attrs.evolve(
            result,
            attempts=record.attempt,
            provider=result.provider or self.provider(step, record.provider_index),
            started_at=result.started_at or record.started_at,
            finished_at=result.finished_at or at,
        )
        self.replace(
            record,
            state=StepState.DONE,
            result=result,
            challenge=None,
            channel_state=record.channel_state
            if channel_state is None
            else channel_state,
        )
        if step.fallback is not None:
            target = self.record(step.fallback.step)
            if target.state is StepState.PENDING and result.status in step.fallback.on:
                self.replace(target, triggered_by=step.id)

    def fail_over(self, record: StepRecord, event: StepErrored) -> None:
        step = self.spec(record.step_id)
        errors = (*record.errors, event.error)
        record = self.replace(record, errors=errors)
        if record.provider_index + 1 < len(step.providers):
            record = self.release(record)
            self.start(record, event.at, provider_index=record.provider_index + 1)
            return
        self.finish(
            record,
            ChannelResult(
                status=ResultStatus.ERROR,
                provider=event.provider,
                detail=event.error,
            ),
            event.at,
        )

    def timer(self, timer_id: str, at: datetime) -> None:
        if timer_id == DEADLINE_TIMER:
            # Without a deadline the timer was never scheduled: ignore it.
            if self._base.deadline_at is not None:
                self.expire(at)
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
        step = self.spec(step_id)
        if kind == "timeout" and step.timeout is not None:
            self.emit(
                CancelStep,
                step_id=step_id,
                attempt=record.attempt,
                channel=step.channel,
            )
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
            self.emit(
                NotifyStep,
                step_id=step_id,
                attempt=record.attempt,
                channel=step.channel,
                name=rest[0],
            )

    # -- the decision ------------------------------------------------------------

    def advance(self, at: datetime) -> None:
        """Start what is ready and decide when the rules can; repeat until stable."""
        while True:
            if self.decide(at):
                return
            if not self.start_ready(at):
                break
        if all(
            r.state.settled or self.spec(r.step_id).optional
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

    def start_ready(self, at: datetime) -> bool:
        """Start or skip every step that can move; return whether any did."""
        moved = False
        targets = self.policy.fallback_targets
        for record in self.records():
            if record.state is not StepState.PENDING:
                continue
            step = self.spec(record.step_id)
            if step.id in targets and record.triggered_by is None:
                source = next(
                    s
                    for s in self.policy.steps
                    if s.fallback and s.fallback.step == step.id
                )
                if self.record(source.id).state.settled:
                    self.replace(record, state=StepState.SKIPPED)
                    moved = True
                continue
            if not all(self.record(d).state.settled for d in step.after):
                continue
            if step.when is not None and not self.holds(step.when):
                self.replace(record, state=StepState.SKIPPED)
            else:
                self.start(record, at, provider_index=0)
            moved = True
        return moved

    def context(self) -> Any:
        """The condition context, converted once until a step changes.

        It carries only what the policy's conditions read (see ``Policy.reads``).
        """
        if self._context is None:
            self._context = make_context(self.variables())
        return self._context

    def variables(self) -> dict[str, Any]:
        reads = self.policy.reads
        facts = self._base.facts
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
            for record in self.records():
                if wanted is not None and record.step_id not in wanted:
                    continue
                view = _step_view(record)
                fields = None if wanted is None else wanted[record.step_id]
                steps[record.step_id] = (
                    view if fields is None else {name: view[name] for name in fields}
                )
            variables["steps"] = steps
        return variables

    def holds(self, source: str) -> bool:
        try:
            return self.policy.condition(source).evaluate(self.context())
        except ConditionError:
            return False

    def decide(self, at: datetime) -> bool:
        """Evaluate the rules in order; conclude and return True if one holds.

        A rule whose steps have not all ended holds back the rules after it.
        Traces are built only when a verdict needs them.
        """
        outcomes: list[tuple[bool, str]] = []
        self._outcomes = outcomes
        for index, rule in enumerate(self.policy.rules):
            condition = self.policy.condition(rule.when)
            if not all(
                self.record(step_id).state.settled for step_id in condition.steps
            ):
                return False
            try:
                matched = condition.evaluate(self.context())
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
            policy=self.session.policy,
            decided_at=at,
            score=self.score(),
            steps=tuple(
                StepSummary(
                    step_id=record.step_id,
                    channel=self.spec(record.step_id).channel,
                    state=record.state.value,
                    result=record.result,
                )
                for record in self.records()
            ),
            rules=self.traces,
            decided_by=decided_by,
        )
        self.session = attrs.evolve(
            self.session, status=SessionStatus.DECIDED, verdict=verdict
        )
        self.emit(RecordVerdict, verdict=verdict)

    def score(self) -> float | None:
        if self.policy.score is not None:
            try:
                return self.policy.condition(self.policy.score).evaluate_number(
                    self.context()
                )
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
            if record.state.active:
                step = self.spec(record.step_id)
                self.emit(
                    CancelStep,
                    step_id=step.id,
                    attempt=record.attempt,
                    channel=step.channel,
                )
                released = self.release(record)
                self.replace(
                    released,
                    state=StepState.CANCELLED,
                    challenge=None,
                    result=ChannelResult(
                        status=ResultStatus.CANCELLED,
                        attempts=record.attempt,
                        provider=self.provider(step, record.provider_index),
                        started_at=record.started_at,
                        finished_at=at,
                        detail="the session no longer needed it",
                    ),
                )
            elif record.state is StepState.PENDING:
                self.replace(record, state=StepState.SKIPPED)
        if not keep_deadline and self._base.deadline_at is not None:
            self.emit(CancelTimer, timer_id=DEADLINE_TIMER)

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
