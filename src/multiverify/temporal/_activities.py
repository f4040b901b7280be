"""The activities a verification workflow runs: channel calls, the audit store, the verdict hooks.

Channel calls go through the same channels and providers as in the embedded
runtime, with the same retries: ``start`` spends the step's
[`RetrySettings`][multiverify.RetrySettings] with tenacity inside the
activity, and the workflow asks Temporal for a single attempt, so a vendor
sees at most ``attempts`` requests per attempt of a step, never
``attempts`` times Temporal's retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from .._applicant import Applicant
from .._audit import AuditEvent, redacted_tries
from .._clock import Clock
from .._review import run_queue_effect
from .._serde import structure, structure_effect, unstructure
from .._session import (
    DequeueReview,
    EscalateReview,
    Input,
    QueueReview,
    Session,
    StepRecord,
    StepState,
)
from .._verifier import (
    OnReview,
    OnVerdict,
    call_failure,
    call_start,
    fails_over,
    handle_crash,
    load_state,
    log_crash,
    outcome_input,
)
from ..channels import ChannelRegistry, StepContext
from ..exceptions import (
    ConcurrentUpdateError,
    MultiverifyError,
    ProviderError,
)
from ..policy import RetrySettings
from ..stores import SessionStore
from ._wire import (
    CANCEL_STEP,
    HANDLE_STEP,
    REVIEW_WORK,
    SAVE_SESSION,
    SESSION_DECIDED,
    START_STEP,
    AuditBatch,
    ReviewWork,
    StepAnswer,
    StepCall,
    failure_from_error,
    load_message,
)

__all__ = ["Activities"]

log = logging.getLogger("multiverify.temporal")


class Activities:
    """The activities of the verification workflow, bound to one worker's channels and store."""

    def __init__(
        self,
        *,
        channels: ChannelRegistry,
        store: SessionStore,
        clock: Clock,
        on_verdict: Sequence[OnVerdict] = (),
        on_review: Sequence[OnReview] = (),
    ) -> None:
        self._registry = channels
        self._store = store
        self._clock = clock
        self._hooks = tuple(on_verdict)
        self._review_hooks = tuple(on_review)
        self._rng = random.Random()

    def all(self) -> list[Any]:
        """The activity functions, for the worker."""
        return [
            self.start_step,
            self.handle_step,
            self.cancel_step,
            self.save_session,
            self.session_decided,
            self.review_queue,
        ]

    def _context(self, call: StepCall) -> StepContext:
        return StepContext(
            session_id=call.session_id,
            step_id=call.step_id,
            attempt=call.attempt,
            provider=call.provider,
            idempotency_key=call.idempotency_key,
            applicant=structure(call.applicant, Applicant),
            options=call.options,
            clock=self._clock,
            shared=self._store,
        )

    @activity.defn(name=START_STEP)
    async def start_step(self, call: StepCall) -> StepAnswer:
        """``channel.start`` for one attempt, with the step's retries.

        Raises:
            ApplicationError: non-retryable, named after the error, with the
                tries made: the step's retry budget is spent.
        """
        channel = self._registry.get(call.channel)
        context = self._context(call)
        redact = context.applicant.redact
        tries: list[dict[str, Any]] = []
        async with _heartbeats():
            try:
                outcome = await call_start(
                    channel,
                    context,
                    structure(call.retry, RetrySettings),
                    tries,
                    clock=self._clock,
                    rng=self._rng,
                )
            except Exception as exc:  # noqa: BLE001 - a channel bug fails the attempt, logged below
                if not isinstance(exc, MultiverifyError):
                    log_crash(log, exc, call.channel, context, "starting")
                error, provider = call_failure(exc, call.provider)
                # Temporal keeps the failure in the history: masked, and
                # without the exception chain (logged above, masked).
                raise ApplicationError(
                    redact(str(exc)),
                    {
                        "error": redact(error),
                        "provider": provider,
                        "failover": fails_over(exc),
                        "tries": redacted_tries(tries, context.applicant),
                    },
                    type=type(exc).__name__,
                    non_retryable=True,
                ) from None
        record = StepRecord(
            step_id=call.step_id, state=StepState.RUNNING, attempt=call.attempt
        )
        event = outcome_input(record, outcome, at=self._clock.now())
        return StepAnswer(input=unstructure(event), tries=tries)

    @activity.defn(name=HANDLE_STEP)
    async def handle_step(self, call: StepCall) -> StepAnswer:
        """``channel.handle`` of a message for a waiting attempt.

        A channel's crash is logged on the worker, masked, and answered as
        the ``StepErrored`` that ends the step: the workflow applies it like
        any answer, so no failure (nor the exception) reaches the history.

        Raises:
            ApplicationError: non-retryable, the channel's typed error.
        """
        assert call.message is not None  # noqa: S101 - the workflow always sends one
        channel = self._registry.get(call.channel)
        context = self._context(call)
        record = StepRecord(
            step_id=call.step_id, state=StepState.WAITING, attempt=call.attempt
        )
        event: Input
        async with _heartbeats():
            try:
                outcome = await channel.handle(
                    context, load_state(channel, call.state), load_message(call.message)
                )
            except MultiverifyError as exc:
                raise failure_from_error(exc, redact=context.applicant.redact) from None
            except Exception as exc:  # noqa: BLE001 - a channel bug ends its step in error, logged masked
                log_crash(log, exc, call.channel, context, "handling input for")
                event = handle_crash(exc, record, context, at=self._clock.now())
            else:
                event = outcome_input(record, outcome, at=self._clock.now())
        return StepAnswer(input=unstructure(event))

    @activity.defn(name=CANCEL_STEP)
    async def cancel_step(self, call: StepCall) -> None:
        """``channel.cancel`` of an attempt (idempotent: Temporal may repeat it).

        Raises:
            ApplicationError: the vendor's error; non-retryable when the
                vendor refused for good.
        """
        channel = self._registry.get(call.channel)
        context = self._context(call)
        try:
            await channel.cancel(context, load_state(channel, call.state))
        except ProviderError as exc:
            raise failure_from_error(
                exc, non_retryable=not exc.retryable, redact=context.applicant.redact
            ) from None
        except MultiverifyError:
            raise  # the store, say: Temporal retries the cancellation
        except Exception as exc:  # noqa: BLE001 - a channel bug, logged masked
            raise _crashed(exc, call, context, "cancelling") from None

    @activity.defn(name=SAVE_SESSION)
    async def save_session(self, batch: AuditBatch) -> None:
        """Append audit events to the store with the session they lead to.

        A compare-and-set on the version makes a repeat harmless: when an
        earlier try already wrote the batch, nothing more happens.

        Raises:
            ApplicationError: non-retryable, when another writer holds the
                session (it cannot become right by retrying).
        """
        session = structure(batch.session, Session)
        events = [AuditEvent.from_json(line) for line in batch.events]
        try:
            if batch.version == 0:
                await self._store.create(session, audit=events)
            else:
                await self._store.save(
                    session, expected_version=batch.version, audit=events
                )
        except ConcurrentUpdateError as exc:
            stored, _ = await self._store.load(session.session_id)
            if stored.audit_count >= session.audit_count:
                return  # an earlier try of this batch got through
            raise failure_from_error(exc) from exc

    @activity.defn(name=SESSION_DECIDED)
    async def session_decided(self, data: dict[str, Any]) -> None:
        """Call the app's ``on_verdict`` hooks; a failing hook is logged, like the embedded runtime does."""
        session = structure(data, Session)
        verdict = session.verdict
        if verdict is None:
            return
        for hook in self._hooks:
            try:
                await hook(session, verdict)
            except Exception:
                log.exception(
                    "on_verdict hook failed for session %s", session.session_id
                )

    @activity.defn(name=REVIEW_WORK)
    async def review_queue(self, work: ReviewWork) -> None:
        """Carry out a review-queue effect in the store, then call the ``on_review`` hooks.

        The queue operations are idempotent, so Temporal may repeat them;
        the hooks then hear of the event again (at least once, as with
        ``on_verdict``).
        """
        session = structure(work.session, Session)
        effect = structure_effect(work.effect)
        if not isinstance(effect, QueueReview | DequeueReview | EscalateReview):
            return
        event = await run_queue_effect(
            self._store, session, effect, now=self._clock.now()
        )
        if event is None:
            return
        for hook in self._review_hooks:
            try:
                await hook(session, event)
            except Exception:
                log.exception(
                    "on_review hook failed for session %s", session.session_id
                )


def _crashed(
    exc: Exception, call: StepCall, context: StepContext, doing: str
) -> ApplicationError:
    """A channel's crash: logged with its traceback, both masked, as a failure for good.

    Temporal keeps the failure in the history, so it carries the masked
    message only, never the exception chain.
    """
    log_crash(log, exc, call.channel, context, doing)
    return ApplicationError(
        context.applicant.redact(f"channel error: {type(exc).__name__}: {exc}"),
        type="ChannelError",
        non_retryable=True,
    )


@contextlib.asynccontextmanager
async def _heartbeats() -> AsyncIterator[None]:
    """Heartbeat while the call runs, so a lost worker is noticed within the heartbeat timeout."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        yield
        return
    interval = max(timeout.total_seconds() / 4, 0.05)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
