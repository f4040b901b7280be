"""The Temporal workflow of one verification session.

It runs the pure core, the same ``transition`` the embedded runtime runs: each
input is applied in the workflow, and the effects become activities (channel
``start``, ``handle`` and ``cancel``), workflow timers, and the audit trail
written to the worker's store. Nothing here does I/O or reads a clock but
``workflow.now()``; the core is imported through the sandbox unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as CallTimeoutError

with workflow.unsafe.imports_passed_through():
    from .._applicant import Applicant
    from .._audit import AuditEvent, AuditTrail
    from .._results import Outcome
    from .._serde import structure, structure_input, unstructure
    from .._session import (
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
        ScheduleTimer,
        Session,
        Start,
        StartStep,
        StepErrored,
        StepRecord,
        StepState,
        TimerFired,
        check_decision,
        check_evidence,
        new_session,
        require_input,
        require_review,
        require_waiting,
        transition,
        waiting_challenge,
    )
    from .._specs import ChannelSpec
    from ..channels import ProviderEvent, StepMessage, Submission, TimerDue
    from ..exceptions import (
        InvalidInputError,
        MultiverifyError,
        SessionFinishedError,
        StepNotWaitingError,
    )
    from ..policy import policy_from_dict
    from ._wire import (
        CANCEL_STEP,
        HANDLE_STEP,
        REVIEW_WORK,
        SAVE_SESSION,
        SESSION_DECIDED,
        START_STEP,
        WORKFLOW,
        AuditBatch,
        EvidenceArgs,
        ReviewArgs,
        ReviewWork,
        SessionArgs,
        StepAnswer,
        StepCall,
        SubmitArgs,
        dump_message,
        error_from_failure,
        failure_from_error,
    )

__all__ = ["VerificationWorkflow"]

# A vendor call with an outside effect (send, dial, pull) is made once by the
# engine: the step's RetrySettings are spent by tenacity inside the activity.
_ONCE = RetryPolicy(maximum_attempts=1)
# Cancelling an attempt (hang up, expire a code) is idempotent: Temporal may
# repeat it, unless the vendor refused for good (a non-retryable failure).
_CANCEL_RETRIES = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
# Writing the audit trail is a compare-and-set on the stored version, so a
# repeat is harmless: it is retried until the store answers.
_SAVE_RETRIES = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=30)
)
_SAVE_TIMEOUT = timedelta(seconds=30)
_HOOK_RETRIES = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))


def _failure(exc: MultiverifyError) -> ApplicationError:
    return failure_from_error(exc)


def _dump(session: Session) -> dict[str, Any]:
    data: dict[str, Any] = unstructure(session)
    return data


@workflow.defn(name=WORKFLOW)
class VerificationWorkflow:
    """One verification session, from start to verdict.

    Updates: ``snapshot`` (the session once started), ``submit`` (input from
    the applicant; refused at once with the typed error when the step does
    not wait), ``challenge`` (waits for a step's challenge), ``cancel``,
    ``decide_review`` and ``request_evidence`` (a reviewer's, for a session
    in review; refused at once when they do not apply), ``settled`` (the
    session once a vendor event was handled).
    Signal: ``provider_event`` (a vendor callback, deduplicated by its
    ``dedupe_key``; one that comes after its step ended is recorded as
    ``event.late``). Queries: ``session``, ``audit`` and ``delivery``.
    """

    @workflow.init
    def __init__(self, args: SessionArgs) -> None:
        specs = {
            spec.name: spec
            for spec in (structure(data, ChannelSpec) for data in args.channels)
        }
        self._policy = policy_from_dict(args.policy, channels=specs)
        if self._policy.hash != args.policy_hash:
            raise ApplicationError(
                f"the policy document does not hash to {args.policy_hash[:12]}",
                type="ConfigurationError",
                non_retryable=True,
            )
        self._args = args
        now = workflow.now()
        session = new_session(
            self._policy,
            structure(args.applicant, Applicant),
            session_id=args.session_id,
            at=now,
        )
        self._session, created = AuditTrail.created(session, at=now)
        self._audit: list[AuditEvent] = [created]
        self._unsaved: list[AuditEvent] = [created]
        self._saved_version = 0
        self._saver: asyncio.Task[None] | None = None
        self._queue_work: list[ReviewWork] = []
        self._queuer: asyncio.Task[None] | None = None
        self._timers: dict[str, datetime] = {}
        self._timers_moved = False
        self._starts: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._work: set[asyncio.Task[None]] = set()
        self._seen: set[str] = set()
        # Events that came while their step was still starting, with the
        # delivery each belongs to (see ``settled``).
        self._early: list[tuple[ProviderEvent, str | None]] = []
        # Whether each tracked delivery was applied, until ``settled`` reads it.
        self._settled: dict[str, bool] = {}
        self._inputs = asyncio.Lock()
        self._started = False

    # -- the session's life --------------------------------------------------------

    @workflow.run
    async def run(self, args: SessionArgs) -> dict[str, Any]:
        """Run the session until it finishes; return it as finished."""
        del args  # taken by __init__
        self._apply(Start(at=workflow.now()))
        self._started = True
        while not self._session.finished:
            await self._timers_due()
        await workflow.wait_condition(
            lambda: not self._work and workflow.all_handlers_finished()
        )
        return _dump(self._session)

    async def _timers_due(self) -> None:
        """Sleep until the earliest timer, or until timers change; fire what is due."""
        self._timers_moved = False

        def moved() -> bool:
            return self._timers_moved or self._session.finished

        due = min(self._timers.values(), default=None)
        if due is None:
            await workflow.wait_condition(moved)
            return
        delay = (due - workflow.now()).total_seconds()
        if delay > 0:
            try:
                await workflow.wait_condition(moved, timeout=delay)
            except TimeoutError:
                pass  # the earliest timer is due
            else:
                return
        now = workflow.now()
        for timer_id, at in sorted(self._timers.items(), key=lambda kv: (kv[1], kv[0])):
            if at <= now and timer_id in self._timers and not self._session.finished:
                del self._timers[timer_id]
                self._apply(TimerFired(timer_id=timer_id, at=now))

    def _apply(self, event: Input, call: Mapping[str, Any] | None = None) -> None:
        """Apply one input: the core decides, the audit records, effects start."""
        result = transition(self._policy, self._session, event)
        self._session, events = AuditTrail.transition(
            result.session, event, result.effects, at=workflow.now(), call=call
        )
        self._record(events)
        for effect in result.effects:
            self._dispatch(effect)
        self._deliver_early()

    def _record(self, events: Sequence[AuditEvent]) -> None:
        """Add audit events to the trail and have them written to the store."""
        self._audit.extend(events)
        self._unsaved.extend(events)
        if self._saver is None or self._saver.done():
            self._saver = self._spawn(self._save())

    def _late(self, event: ProviderEvent, error: MultiverifyError) -> None:
        """A vendor callback after its step ended: noted in the trail, not applied."""
        workflow.logger.info("vendor event %s not applied: %s", event.kind, error)
        self._session, record = AuditTrail.late_event(
            self._session, event, at=workflow.now(), reason=str(error)
        )
        self._record([record])

    def _dispatch(self, effect: Effect) -> None:
        match effect:
            case ScheduleTimer(timer_id=timer_id, due_at=due_at):
                self._timers[timer_id] = due_at
                self._timers_moved = True
            case CancelTimer(timer_id=timer_id):
                if self._timers.pop(timer_id, None) is not None:
                    self._timers_moved = True
            case StartStep():
                key = (effect.step_id, effect.attempt)
                self._starts[key] = asyncio.create_task(self._start_step(effect))
            case CancelStep():
                start = self._starts.pop((effect.step_id, effect.attempt), None)
                if start is not None:
                    start.cancel()
                record = self._session.step(effect.step_id)
                _ = self._spawn(self._cancel_step(effect, record))
            case NotifyStep():
                _ = self._spawn(self._notify(effect))
            case RecordVerdict():
                _ = self._spawn(self._decided())
            case QueueReview() | DequeueReview() | EscalateReview():
                self._queue_work.append(
                    ReviewWork(session=_dump(self._session), effect=unstructure(effect))
                )
                if self._queuer is None or self._queuer.done():
                    self._queuer = self._spawn(self._run_queue_work())

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run work the session must finish before its workflow completes."""
        task = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    # -- channel calls ---------------------------------------------------------------

    def _call(self, record: StepRecord, message: StepMessage | None = None) -> StepCall:
        step = self._policy.step(record.step_id)
        session_id = self._session.session_id
        return StepCall(
            session_id=session_id,
            step_id=record.step_id,
            attempt=record.attempt,
            channel=step.channel,
            provider=step.providers[record.provider_index] if step.providers else None,
            idempotency_key=f"{session_id}:{record.step_id}:{record.attempt}",
            applicant=self._args.applicant,
            options=dict(step.options),
            retry=unstructure(step.retry),
            state=dict(record.channel_state),
            message=None if message is None else dump_message(message),
        )

    async def _start_step(self, effect: StartStep) -> None:
        """Start an attempt; an outcome lost with its worker is reconciled once.

        The activity makes the call once (tenacity spends the step's retries
        inside it). When the call's worker vanished mid-call (a heartbeat or
        call timeout), whether the vendor acted is unknown: the same attempt
        is started once more with the same idempotency key, which a channel
        honours by answering for the attempt instead of acting again.
        """
        record = self._session.step(effect.step_id)
        call = self._call(record)
        settings = self._args.settings
        audit: dict[str, Any] = {
            "step_id": effect.step_id,
            "attempt": effect.attempt,
            "channel": effect.channel,
            "provider": effect.provider,
            "idempotency_key": effect.idempotency_key,
        }
        event: Input | None = None
        for reconciling in (False, True):
            try:
                answer = await workflow.execute_activity(
                    START_STEP,
                    call,
                    result_type=StepAnswer,
                    start_to_close_timeout=settings.call,
                    heartbeat_timeout=settings.heartbeat,
                    retry_policy=_ONCE,
                )
            except ActivityError as exc:
                cause = exc.cause
                if isinstance(cause, CallTimeoutError):
                    audit.setdefault("uncertain", []).append(str(cause))
                    continue
                if not isinstance(cause, ApplicationError):
                    return  # cancelled: the core has moved on
                details = cause.details[0] if cause.details else {}
                audit["tries"] = details.get("tries", [])
                event = StepErrored(
                    step_id=effect.step_id,
                    attempt=effect.attempt,
                    at=workflow.now(),
                    error=details.get("error", cause.message),
                    provider=details.get("provider", effect.provider),
                    # Histories from before the flag lack it: they fail over.
                    failover=details.get("failover", True),
                )
            else:
                audit["tries"] = answer.tries
                event = structure_input(answer.input)
            if reconciling:
                audit["reconciled"] = True
            break
        if event is None:
            audit["tries"] = []
            event = StepErrored(
                step_id=effect.step_id,
                attempt=effect.attempt,
                at=workflow.now(),
                error="outcome unknown: the call's worker was lost twice",
                provider=effect.provider,
            )
        audit["outcome"] = type(event).__name__
        if self._starts.get((effect.step_id, effect.attempt)) is asyncio.current_task():
            del self._starts[effect.step_id, effect.attempt]
        self._apply(event, audit)

    async def _deliver(
        self, step_id: str, message: StepMessage, attempt: int | None
    ) -> None:
        """Hand a message to a waiting step's channel and apply its answer.

        Raises:
            MultiverifyError: the step does not wait for it, or the channel
                refused it (the caller's typed error).
        """
        async with self._inputs:
            record = require_input(self._session, step_id, attempt)
            try:
                answer = await workflow.execute_activity(
                    HANDLE_STEP,
                    self._call(record, message),
                    result_type=StepAnswer,
                    start_to_close_timeout=self._args.settings.call,
                    heartbeat_timeout=self._args.settings.heartbeat,
                    retry_policy=_ONCE,
                )
            except ActivityError as exc:
                error = error_from_failure(exc.cause)
                if error is None:
                    error = MultiverifyError(message=f"channel error: {exc.cause}")
                raise error from None
            self._apply(structure_input(answer.input))

    async def _notify(self, effect: NotifyStep) -> None:
        try:
            await self._deliver(
                effect.step_id,
                TimerDue(name=effect.name, at=workflow.now()),
                effect.attempt,
            )
        except MultiverifyError as exc:
            workflow.logger.info("channel timer %s not delivered: %s", effect.name, exc)

    async def _cancel_step(self, effect: CancelStep, record: StepRecord) -> None:
        call = self._call(record)  # the record of the attempt it cancels
        try:
            await workflow.execute_activity(
                CANCEL_STEP,
                call,
                start_to_close_timeout=self._args.settings.call,
                retry_policy=_CANCEL_RETRIES,
            )
        except ActivityError as exc:
            workflow.logger.warning(
                "cancelling step %s failed: %s", effect.step_id, exc.cause
            )

    def _deliver_early(self) -> None:
        """Deliver vendor events that arrived while their step was still starting."""
        if not self._early:
            return
        keep: list[tuple[ProviderEvent, str | None]] = []
        for event, delivery in self._early:
            if self._starting(event):
                keep.append((event, delivery))
            else:
                _ = self._spawn(self._event_noted(event, delivery))
        self._early = keep

    def _starting(self, event: ProviderEvent) -> bool:
        if self._session.finished:
            return False
        record = self._session.step(event.step_id)
        return record.state is StepState.RUNNING and event.attempt in (
            None,
            record.attempt,
        )

    async def _event(self, event: ProviderEvent) -> bool:
        """Deliver a vendor event to its waiting step; return whether it was applied."""
        try:
            await self._deliver(event.step_id, event, event.attempt)
        except (SessionFinishedError, StepNotWaitingError) as exc:
            self._late(event, exc)
        except MultiverifyError as exc:
            workflow.logger.info("vendor event %s not applied: %s", event.kind, exc)
        else:
            return True
        return False

    def _note(self, delivery: str | None, *, applied: bool) -> None:
        """Keep whether a delivery was applied, for the ``settled`` update."""
        if delivery is not None:
            self._settled[delivery] = applied

    async def _event_noted(self, event: ProviderEvent, delivery: str | None) -> None:
        self._note(delivery, applied=await self._event(event))

    # -- the store and the app's hooks ---------------------------------------------

    async def _save(self) -> None:
        """Write the audit events not yet stored, in order, batching what piles up."""
        while self._unsaved:
            events, self._unsaved = self._unsaved, []
            version = self._saved_version
            await workflow.execute_activity(
                SAVE_SESSION,
                AuditBatch(
                    session=unstructure(self._session),
                    events=[event.to_json() for event in events],
                    version=version,
                ),
                start_to_close_timeout=_SAVE_TIMEOUT,
                retry_policy=_SAVE_RETRIES,
            )
            self._saved_version = version + 1

    async def _run_queue_work(self) -> None:
        """Carry out the review-queue effects in the store, one at a time, in order."""
        while self._queue_work:
            work = self._queue_work.pop(0)
            await workflow.execute_activity(
                REVIEW_WORK,
                work,
                start_to_close_timeout=_SAVE_TIMEOUT,
                retry_policy=_SAVE_RETRIES,
            )

    async def _decided(self) -> None:
        try:
            await workflow.execute_activity(
                SESSION_DECIDED,
                unstructure(self._session),
                start_to_close_timeout=self._args.settings.call,
                retry_policy=_HOOK_RETRIES,
            )
        except ActivityError as exc:
            workflow.logger.warning("the verdict hooks failed: %s", exc.cause)

    # -- the app-facing handlers -------------------------------------------------------

    @workflow.update(name="snapshot")
    async def snapshot(self) -> dict[str, Any]:
        """The session, once its start was applied."""
        await workflow.wait_condition(lambda: self._started)
        return _dump(self._session)

    @workflow.update(name="submit")
    async def submit(self, args: SubmitArgs) -> dict[str, Any]:
        """Input from the applicant (a typed code); the session after the channel took it."""
        try:
            await self._deliver(args.step_id, Submission(payload=args.payload), None)
        except MultiverifyError as exc:
            raise _failure(exc) from None
        return _dump(self._session)

    @submit.validator
    def _check_submit(self, args: SubmitArgs) -> None:
        try:
            require_input(self._session, args.step_id)
        except MultiverifyError as exc:
            raise _failure(exc) from None

    @workflow.update(name="challenge")
    async def challenge(self, step_id: str) -> dict[str, Any]:
        """The step's challenge, once it waits with one."""
        found: list[Any] = []

        def ready() -> bool:
            try:
                challenge = waiting_challenge(self._session, step_id)
            except MultiverifyError as exc:
                found.append(exc)
                return True
            if challenge is None:
                return False
            found.append(challenge)
            return True

        await workflow.wait_condition(ready)
        if isinstance(found[0], MultiverifyError):
            raise _failure(found[0])
        data: dict[str, Any] = unstructure(found[0])
        return data

    @challenge.validator
    def _check_challenge(self, step_id: str) -> None:
        try:
            self._session.step(step_id)
        except MultiverifyError as exc:
            raise _failure(exc) from None

    @workflow.update(name="cancel")
    async def cancel(self, reason: str) -> dict[str, Any]:
        """Cancel the session: active steps stop, no verdict is given."""
        self._check_cancel(reason)
        self._apply(Cancel(at=workflow.now(), reason=reason))
        return _dump(self._session)

    @cancel.validator
    def _check_cancel(self, reason: str) -> None:
        del reason
        if self._session.finished:
            raise _failure(
                SessionFinishedError(
                    message=f"session {self._session.session_id} is already "
                    f"{self._session.status.value}",
                    session_id=self._session.session_id,
                )
            )

    @workflow.update(name="decide_review")
    async def decide_review(self, args: ReviewArgs) -> dict[str, Any]:
        """A reviewer settles the session in review; the session as decided."""
        self._check_decision(args)
        self._apply(
            ReviewDecided(
                at=workflow.now(),
                reviewer=args.reviewer,
                outcome=Outcome(args.outcome),
                reason=args.reason,
                note=args.note,
            )
        )
        return _dump(self._session)

    @decide_review.validator
    def _check_decision(self, args: ReviewArgs) -> None:
        try:
            require_review(self._session)
            try:
                outcome = Outcome(args.outcome)
            except ValueError:
                raise InvalidInputError(
                    message=f"{args.outcome!r} is not an outcome", field="outcome"
                ) from None
            check_decision(
                self._policy,
                ReviewDecided(
                    at=workflow.now(),
                    reviewer=args.reviewer,
                    outcome=outcome,
                    reason=args.reason,
                ),
            )
        except MultiverifyError as exc:
            raise _failure(exc) from None

    @workflow.update(name="request_evidence")
    async def request_evidence(self, args: EvidenceArgs) -> dict[str, Any]:
        """A reviewer asks for an evidence step; the session with it started."""
        self._check_evidence(args)
        self._apply(
            EvidenceRequested(
                at=workflow.now(),
                reviewer=args.reviewer,
                step_id=args.step_id,
                note=args.note,
            )
        )
        return _dump(self._session)

    @request_evidence.validator
    def _check_evidence(self, args: EvidenceArgs) -> None:
        try:
            check_evidence(self._policy, self._session, args.step_id)
        except MultiverifyError as exc:
            raise _failure(exc) from None

    @workflow.signal(name="provider_event")
    async def provider_event(self, data: dict[str, Any]) -> None:
        """A verified vendor callback; a repeated ``dedupe_key`` is ignored.

        A ``delivery`` id next to the event's fields asks for the outcome to
        be kept for the ``settled`` update.
        """
        fields = dict(data)
        delivery = fields.pop("delivery", None)
        event = structure(fields, ProviderEvent)
        if event.dedupe_key is not None and event.dedupe_key in self._seen:
            self._note(delivery, applied=False)
            return
        if event.dedupe_key is not None:
            self._seen.add(event.dedupe_key)
        await workflow.wait_condition(lambda: self._started)
        try:
            require_waiting(self._session, event.step_id)
        except (SessionFinishedError, StepNotWaitingError) as exc:
            self._late(event, exc)
            self._note(delivery, applied=False)
            return
        except MultiverifyError as exc:
            workflow.logger.info("vendor event %s not applied: %s", event.kind, exc)
            self._note(delivery, applied=False)
            return
        if self._starting(event):
            self._early.append((event, delivery))
            return
        await self._event_noted(event, delivery)

    @workflow.update(name="settled")
    async def settled(self, delivery: str) -> dict[str, Any] | None:
        """The session once the vendor event of ``delivery`` was handled; ``None`` if it was not applied."""
        await workflow.wait_condition(lambda: delivery in self._settled)
        if not self._settled.pop(delivery):
            return None
        return _dump(self._session)

    @workflow.query(name="delivery")
    def delivery(self, delivery: str) -> bool | None:
        """Whether a tracked vendor event was applied (``None``: unknown or already read by ``settled``)."""
        return self._settled.get(delivery)

    @workflow.query(name="session")
    def session(self) -> dict[str, Any]:
        """The session as it is now."""
        return _dump(self._session)

    @workflow.query(name="audit")
    def audit(self) -> list[str]:
        """The session's audit trail so far, as JSON lines."""
        return [event.to_json() for event in self._audit]
