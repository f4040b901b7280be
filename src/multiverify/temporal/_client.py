"""The app-facing side of the Temporal runtime: the same calls as the embedded Verifier."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Self, TypeVar, cast

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from .._applicant import Applicant, refuse_retired_currency
from .._audit import AuditEvent
from .._clock import Clock, SystemClock
from .._duration import parse_duration
from .._results import Challenge, Outcome, Verdict
from .._serde import structure, unstructure
from .._session import Session
from .._specs import ChannelSpec
from .._verifier import find_policy, index_policies, record_late
from ..channels import ProviderEvent
from ..compliance import PurgeReport, purge_personal_data
from ..exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    MultiverifyError,
    SessionFinishedError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from ..policy import Policy
from ..stores import SessionStore
from ._wire import (
    TASK_QUEUE,
    CallSettings,
    EvidenceArgs,
    ReviewArgs,
    SessionArgs,
    SubmitArgs,
    error_from_failure,
    workflow_id,
)
from ._workflow import VerificationWorkflow

__all__ = ["TemporalVerifier"]

T = TypeVar("T")


def _new_id() -> str:
    return uuid.uuid4().hex


class TemporalVerifier:
    """Runs verifications as Temporal workflows, with the embedded [`Verifier`][multiverify.Verifier]'s calls.

    Each session is one workflow (its id derived from the session id, so a
    session cannot start twice), run by any worker from
    [`create_worker`][multiverify.temporal.create_worker] polling the same
    task queue. The policy travels with the session: a session keeps the
    policy it started with, whichever the workers have been deployed with
    since.

    Args:
        client: a connected Temporal client.
        policies: one policy or several (the first is the default).
        task_queue: where the workers poll.
        call_timeout: the longest one channel call may take, its retries
            included (seconds or a timedelta).
        heartbeat_timeout: how soon a worker lost mid-call is noticed.
        clock: the app side's time source (what [`play`][multiverify.sandbox.play]
            waits on); the workflows keep Temporal's time.
        new_id: makes session ids.
        store: the store the workers keep audit trails in; when given, a
            vendor callback for a session whose workflow has completed is
            recorded there as ``event.late`` (the workflow records the ones
            that come while it runs).
        event_wait: how long [`handle_event`][multiverify.temporal.TemporalVerifier.handle_event]
            waits for the workflow to apply an event (seconds or a
            timedelta); the event is applied all the same after that.

    Raises:
        ConfigurationError: no policy was given.
    """

    def __init__(
        self,
        client: Client,
        policies: Policy | Iterable[Policy],
        *,
        task_queue: str = TASK_QUEUE,
        call_timeout: float | timedelta = 300.0,
        heartbeat_timeout: float | timedelta = 20.0,
        clock: Clock | None = None,
        new_id: Callable[[], str] = _new_id,
        store: SessionStore | None = None,
        event_wait: float | timedelta = 30.0,
    ) -> None:
        listed = [policies] if isinstance(policies, Policy) else list(policies)
        if not listed:
            raise ConfigurationError(
                message="a TemporalVerifier needs at least one policy"
            )
        self._client = client
        self._policies = index_policies(listed)
        self._default = listed[0]
        self._task_queue = task_queue
        self._settings = CallSettings(
            call_timeout=parse_duration(call_timeout),
            heartbeat_timeout=parse_duration(heartbeat_timeout),
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._new_id = new_id
        self._store = store
        self._event_wait = parse_duration(event_wait)

    def __repr__(self) -> str:
        return (
            f"<multiverify.temporal.TemporalVerifier(policies={len(self._policies)}, "
            f"task_queue={self._task_queue!r})>"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release: the Temporal client is the app's."""

    @property
    def clock(self) -> Clock:
        """The app side's clock."""
        return self._clock

    @property
    def client(self) -> Client:
        """The Temporal client."""
        return self._client

    def policy(self, ref: str | None = None) -> Policy:
        """A policy by name or hash (the first one by default).

        Raises:
            ConfigurationError: no such policy.
        """
        return find_policy(self._policies, self._default, ref)

    # -- the app-facing API ------------------------------------------------------

    async def start(
        self,
        applicant: Applicant,
        *,
        policy: str | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Start a session's workflow; return the session once its start was applied.

        Raises:
            ConfigurationError: unknown policy.
            ConcurrentUpdateError: ``session_id`` is taken (now or ever).
            InvalidInputError: the loan's currency is no longer legal tender.
        """
        chosen = self.policy(policy)
        refuse_retired_currency(applicant, at=self._clock.now())
        session_id = session_id or self._new_id()
        args = SessionArgs(
            session_id=session_id,
            policy=chosen.to_dict(),
            policy_hash=chosen.hash,
            channels=[_spec_wire(spec) for spec in chosen.channels.values()],
            applicant=unstructure(applicant),
            settings=self._settings,
        )
        operation = WithStartWorkflowOperation(
            VerificationWorkflow.run,
            args,
            id=workflow_id(session_id),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        try:
            data = await self._client.execute_update_with_start_workflow(
                VerificationWorkflow.snapshot, start_workflow_operation=operation
            )
        except WorkflowAlreadyStartedError:
            # The start operation holds the same error for its handle: taken
            # here, so it is not reported as never retrieved.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await operation.workflow_handle()
            raise ConcurrentUpdateError(
                message=f"session {session_id} already exists",
                session_id=session_id,
                expected_version=0,
            ) from None
        return structure(data, Session)

    async def run(self, applicant: Applicant, *, policy: str | None = None) -> Verdict:
        """Start a session and wait for its verdict.

        Raises:
            SessionFinishedError: the session was cancelled instead.
        """
        session = await self.start(applicant, policy=policy)
        return await self.wait(session.session_id)

    async def wait(self, session_id: str) -> Verdict:
        """Wait until the session is decided and return its verdict.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session was cancelled.
        """
        handle = self._handle(session_id)
        try:
            data = await self._guard(session_id, handle.result())
        except WorkflowFailureError as exc:
            raise _error(exc.cause) from None
        session = structure(data, Session)
        if session.verdict is None:
            raise SessionFinishedError(
                message=f"session {session_id} was cancelled", session_id=session_id
            )
        return session.verdict

    async def challenge(self, session_id: str, step_id: str) -> Challenge:
        """Wait until a step waits for the applicant and return its challenge.

        Raises:
            SessionNotFoundError: no such session.
            StepNotFoundError: the policy has no such step.
            StepNotWaitingError: the step ended, was skipped or never asks
                for input; or the session finished.
        """
        handle = self._handle(session_id)
        data = await self._guard(
            session_id, handle.execute_update(VerificationWorkflow.challenge, step_id)
        )
        return structure(data, Challenge)

    async def get(self, session_id: str) -> Session:
        """The session as its workflow holds it now.

        Raises:
            SessionNotFoundError: no such session.
        """
        handle = self._handle(session_id)
        data = await self._guard(session_id, handle.query(VerificationWorkflow.session))
        return structure(data, Session)

    async def audit_events(self, session_id: str) -> list[AuditEvent]:
        """The session's audit trail as its workflow holds it.

        Raises:
            SessionNotFoundError: no such session.
        """
        handle = self._handle(session_id)
        lines = await self._guard(session_id, handle.query(VerificationWorkflow.audit))
        return [AuditEvent.from_json(line) for line in lines]

    async def submit(
        self, session_id: str, step_id: str, payload: Mapping[str, Any]
    ) -> Session:
        """Hand input from the applicant (a typed code) to a waiting step.

        An update of the session's workflow: it is refused at once, with the
        typed error, when the step does not wait for input, and answers once
        the channel took the input.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has a verdict.
            StepNotFoundError: the policy has no such step.
            StepNotWaitingError: the step is not waiting for input.
        """
        handle = self._handle(session_id)
        data = await self._guard(
            session_id,
            handle.execute_update(
                VerificationWorkflow.submit,
                SubmitArgs(step_id=step_id, payload=dict(payload)),
            ),
        )
        return structure(data, Session)

    async def handle_event(self, event: ProviderEvent) -> Session | None:
        """Deliver a verified provider callback to its session's workflow.

        A signal, durable once sent, applied in order by the workflow, which
        ignores a ``dedupe_key`` it has seen and holds an event that arrives
        while its step is still starting until the step waits. Then waits up
        to ``event_wait`` for the outcome, as the embedded
        [`Verifier`][multiverify.Verifier] does: the session once the event
        was applied (what a voice webhook answers from), or ``None`` for a
        repeated delivery, one not applied, or one still held when the wait
        ends.

        A callback that comes after its step ended is recorded in the
        session's audit trail as ``event.late`` and changes nothing else: by
        the workflow while it runs, and in ``store`` once it has completed.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session's workflow has completed.
        """
        handle = self._handle(event.session_id)
        delivery = _new_id()
        data: dict[str, Any] = unstructure(event)
        data["delivery"] = delivery
        try:
            await self._guard(
                event.session_id,
                handle.signal(VerificationWorkflow.provider_event, data),
            )
        except SessionFinishedError as exc:
            if self._store is not None and await self._store.record_event_once(
                event.session_id, event.dedupe_key or delivery
            ):
                await record_late(self._store, event, exc, at=self._clock.now())
            raise
        try:
            async with asyncio.timeout(self._event_wait):
                # The workflow answers None for an event it did not apply;
                # Temporal's typing of update results drops the None.
                answer = cast(
                    "dict[str, Any] | None",
                    await self._guard(
                        event.session_id,
                        handle.execute_update(VerificationWorkflow.settled, delivery),
                    ),
                )
        except TimeoutError:
            return None
        except SessionFinishedError:
            # The workflow completed before the outcome was asked for: it
            # still answers the query of whether this delivery was applied.
            applied = await self._guard(
                event.session_id,
                handle.query(VerificationWorkflow.delivery, delivery),
            )
            return await self.get(event.session_id) if applied else None
        return None if answer is None else structure(answer, Session)

    async def purge_personal_data(
        self,
        older_than: float | timedelta | str,
        *,
        dry_run: bool = False,
    ) -> PurgeReport:
        """Purge the personal data of finished sessions in ``store``, as the embedded Verifier does.

        Temporal keeps its own copy in each workflow's history for the
        namespace's retention period; this purges the store's.

        Raises:
            ConfigurationError: the verifier was given no ``store``.
        """
        if self._store is None:
            raise ConfigurationError(
                message="purge_personal_data needs the workers' store: "
                "TemporalVerifier(..., store=...)"
            )
        return await purge_personal_data(
            self._store, older_than=older_than, now=self._clock.now(), dry_run=dry_run
        )

    async def cancel(self, session_id: str, *, reason: str = "") -> Session:
        """Cancel a session: active steps are stopped, no verdict is given.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already finished.
        """
        handle = self._handle(session_id)
        data = await self._guard(
            session_id, handle.execute_update(VerificationWorkflow.cancel, reason)
        )
        return structure(data, Session)

    async def decide_review(
        self,
        session_id: str,
        *,
        reviewer: str,
        outcome: Outcome | str,
        reason: str,
        note: str = "",
    ) -> Session:
        """Settle a session in review, as [`Verifier.decide_review`][multiverify.Verifier.decide_review] does.

        An update of the session's workflow, refused at once with the typed
        error when it does not apply. Use it through a
        [`ReviewQueue`][multiverify.ReviewQueue] given the workers' store,
        which also respects the reviewers' claims.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has its final verdict.
            NotInReviewError: the session is not in review, or waits for
                evidence.
            InvalidInputError: the outcome or reason code is not allowed.
        """
        handle = self._handle(session_id)
        data = await self._guard(
            session_id,
            handle.execute_update(
                VerificationWorkflow.decide_review,
                ReviewArgs(
                    reviewer=reviewer, outcome=str(outcome), reason=reason, note=note
                ),
            ),
        )
        return structure(data, Session)

    async def request_evidence(
        self, session_id: str, step_id: str, *, reviewer: str, note: str = ""
    ) -> Session:
        """Start an evidence step for a session in review (an update of its workflow).

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has its final verdict.
            NotInReviewError: the session is not in review.
            InvalidInputError: the policy offers no such evidence step, or it
                is being collected already.
        """
        handle = self._handle(session_id)
        data = await self._guard(
            session_id,
            handle.execute_update(
                VerificationWorkflow.request_evidence,
                EvidenceArgs(reviewer=reviewer, step_id=step_id, note=note),
            ),
        )
        return structure(data, Session)

    # -- Temporal's errors as ours ----------------------------------------------------

    def _handle(self, session_id: str) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle(workflow_id(session_id))

    async def _guard(self, session_id: str, call: Awaitable[T]) -> T:
        """Await a call to a session's workflow, raising Temporal's errors as the SDK's."""
        try:
            return await call
        except WorkflowUpdateFailedError as exc:
            raise _error(exc.cause) from None
        except WorkflowQueryFailedError as exc:
            raise MultiverifyError(message=str(exc)) from None
        except RPCError as exc:
            if exc.status in _OUT_OF_REACH:
                raise StoreUnavailableError(
                    message=f"Temporal cannot answer now ({exc.status.name}): {exc}",
                    store="temporal",
                ) from exc
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            raise await self._gone(session_id) from None

    async def _gone(self, session_id: str) -> MultiverifyError:
        """Why a session's workflow did not answer: it never was, or it has completed."""
        try:
            await self._handle(session_id).describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return SessionNotFoundError(
                    message=f"no session {session_id!r}", session_id=session_id
                )
            raise
        return SessionFinishedError(
            message=f"session {session_id} has finished", session_id=session_id
        )


# What Temporal answers when a later try may pass: the server is down or
# restarting, too slow, or shedding load.
_OUT_OF_REACH = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


def _error(failure: BaseException | None) -> MultiverifyError:
    error = error_from_failure(failure)
    if error is not None:
        return error
    return MultiverifyError(message=str(failure))


def _spec_wire(spec: ChannelSpec) -> dict[str, Any]:
    """A channel spec as the workflow receives it.

    The options check is code, not data: the policy was checked here already,
    so the workflow's copy of the spec goes without it.
    """
    data: dict[str, Any] = unstructure(spec)
    data.pop("check_options", None)
    return data
