"""The review queue: people settle the sessions whose automatic verdict is ``review``.

A session whose policy has a ``[review]`` table and whose automatic verdict
is ``review`` waits in [`SessionStatus.REVIEW`][multiverify.SessionStatus],
its case queued in the store's work queue ``review``. Reviewers, on any
replica, list the cases, claim one with a lease (a lapsed claim returns it
to the queue), ask for more evidence, and approve or reject it with a
reason code. The decisions are core inputs, so they are saved with a
compare-and-set, audited and replayed like everything else.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._clock import Clock, SystemClock
from ._results import Outcome, PolicyRef, Reason, StepSummary, Verdict
from ._session import (
    DequeueReview,
    EscalateReview,
    QueueReview,
    Session,
    SessionStatus,
    require_review,
)
from .exceptions import (
    ConfigurationError,
    NotInReviewError,
    ReviewClaimedError,
    SessionNotFoundError,
)
from .policy._review import REVIEW_QUEUE

if TYPE_CHECKING:
    from .policy import Policy
    from .stores import QueueItem, SessionStore, WorkQueue

__all__ = [
    "ReviewCase",
    "ReviewEvent",
    "ReviewQueue",
    "ReviewRuntime",
    "queue_body",
    "run_queue_effect",
]

_DEFAULT_LEASE = 900.0


@attrs.frozen(kw_only=True)
class ReviewEvent:
    """What the app hears about a review case (the ``on_review`` hooks).

    Attributes:
        kind: ``queued`` (the case entered the queue), ``returned`` (the
            evidence a reviewer asked for came in) or ``escalated`` (it
            passed its SLA undecided and its priority went up).
        at: when.
        priority: the case's priority from then on.
    """

    kind: str
    at: datetime
    priority: int


@attrs.frozen(kw_only=True)
class ReviewCase:
    """A session in review as a reviewer sees it.

    Attributes:
        session_id: the session (and the case's id).
        policy: the policy that sent it to review.
        priority: its priority (higher is served first).
        queued_at: when it entered review.
        escalated: whether it passed its SLA undecided.
        reasons: why the policy could not decide (the automatic verdict's reasons).
        score: the automatic verdict's score.
        steps: the evidence: every step and its result, the steps a
            reviewer asked for included.
        evidence: the evidence steps reviewers asked for, in order.
        collecting: whether an evidence step still runs (the case is then
            out of the queue).
        claimed_by: the reviewer whose claim holds the case, if any.
        claimed_until: when that claim lapses.
    """

    session_id: str
    policy: PolicyRef
    priority: int
    queued_at: datetime
    escalated: bool
    reasons: tuple[Reason, ...]
    score: float | None
    steps: tuple[StepSummary, ...]
    evidence: tuple[str, ...]
    collecting: bool
    claimed_by: str | None = None
    claimed_until: datetime | None = None

    def age(self, at: datetime) -> float:
        """Seconds the case has waited at ``at``."""
        return (at - self.queued_at).total_seconds()

    def claimed(self, at: datetime) -> bool:
        """Whether a claim holds the case at ``at``."""
        return self.claimed_until is not None and self.claimed_until > at

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """The codes of ``reasons``."""
        return tuple(reason.code for reason in self.reasons)


def queue_body(session: Session) -> str:
    """The queue item of a session in review: what filters read without loading it."""
    verdict = session.verdict
    review = session.review
    body: dict[str, Any] = {
        "session_id": session.session_id,
        "policy": {
            "name": session.policy.name,
            "version": session.policy.version,
            "hash": session.policy.hash,
        },
        "reasons": [] if verdict is None else [r.code for r in verdict.reasons],
        "queued_at": None if review is None else review.queued_at.isoformat(),
        "escalated": review is not None and review.escalated,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


async def run_queue_effect(
    queue: WorkQueue,
    session: Session,
    effect: QueueReview | DequeueReview | EscalateReview,
    *,
    now: datetime,
) -> ReviewEvent | None:
    """Carry out a review-queue effect of the core; return what the app hears of.

    Every runtime runs the queue effects with this. Each is idempotent: a
    repeated enqueue finds the case queued, a repeated removal finds it gone.
    """
    sid = session.session_id
    match effect:
        case QueueReview():
            await queue.enqueue(
                REVIEW_QUEUE,
                sid,
                queue_body(session),
                at=effect.queued_at,
                priority=effect.priority,
                available_at=now,
            )
            kind = "returned" if effect.returned else "queued"
            return ReviewEvent(kind=kind, at=now, priority=effect.priority)
        case EscalateReview():
            await queue.update_item(
                REVIEW_QUEUE, sid, body=queue_body(session), priority=effect.priority
            )
            return ReviewEvent(kind="escalated", at=now, priority=effect.priority)
        case DequeueReview():
            await queue.complete(REVIEW_QUEUE, sid)
    return None


class ReviewRuntime(Protocol):
    """**Protocol**: the runtime a [`ReviewQueue`][multiverify.ReviewQueue] settles cases through.

    [`Verifier`][multiverify.Verifier] and
    [`TemporalVerifier`][multiverify.temporal.TemporalVerifier] are ones.
    """

    @property
    def clock(self) -> Clock:
        """The time source leases are measured on."""
        ...

    def policy(self, ref: str | None = None) -> Policy:
        """A policy by name or hash."""
        ...

    async def decide_review(
        self,
        session_id: str,
        *,
        reviewer: str,
        outcome: Outcome | str,
        reason: str,
        note: str = "",
    ) -> Session:
        """Settle a session in review."""
        ...

    async def request_evidence(
        self, session_id: str, step_id: str, *, reviewer: str, note: str = ""
    ) -> Session:
        """Start an evidence step for a session in review."""
        ...


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class ReviewQueue:
    """Lets reviewers work the sessions waiting in review, from any replica.

    Args:
        verifier: the runtime that settles the cases: a
            [`Verifier`][multiverify.Verifier] (on a replica that only
            reviews, one given the policies and no channels), or a
            [`TemporalVerifier`][multiverify.temporal.TemporalVerifier].
        store: the store the cases are read and claimed in; a Verifier's
            own by default (a TemporalVerifier needs the workers' store).
            Given alone, the queue lists, shows and claims, but cannot decide.
        clock: the time source with ``store`` (the system clock by default).
        lease: how long a claim holds a case by default; omitted, the
            ``lease`` of the case's policy (15 minutes unless it says).

    Raises:
        ConfigurationError: no store was given or found on the runtime.
    """

    def __init__(
        self,
        verifier: ReviewRuntime | None = None,
        *,
        store: SessionStore | None = None,
        clock: Clock | None = None,
        lease: float | timedelta | None = None,
    ) -> None:
        self._verifier = verifier
        found: SessionStore | None = (
            store if store is not None else getattr(verifier, "store", None)
        )
        if found is None:
            raise ConfigurationError(
                message="a ReviewQueue needs a store: the one the sessions live in"
            )
        self._store = found
        if clock is not None:
            self._clock = clock
        else:
            self._clock = verifier.clock if verifier is not None else SystemClock()
        self._lease = None if lease is None else _seconds(lease)

    def __repr__(self) -> str:
        return f"<multiverify.ReviewQueue(queue={REVIEW_QUEUE!r})>"

    # -- reading -----------------------------------------------------------------

    async def pending(
        self,
        *,
        policy: str | None = None,
        reason: str | None = None,
        min_priority: int | None = None,
    ) -> list[ReviewCase]:
        """The queued cases, in the order they are served (priority, then age).

        Args:
            policy: only cases of the policy with this name or hash.
            reason: only cases whose automatic verdict gave this reason code.
            min_priority: only cases of at least this priority.
        """
        cases = []
        for item in await self._store.queue_items(REVIEW_QUEUE):
            if not _matches(item, policy=policy, reason=reason, priority=min_priority):
                continue
            try:
                session = await self._get(item.item_id)
            except SessionNotFoundError:
                continue  # purged while queued
            if session.status is SessionStatus.REVIEW:
                cases.append(self._case(session, item))
        return cases

    async def case(self, session_id: str) -> ReviewCase:
        """One session in review, queued or collecting evidence.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has its final verdict.
            NotInReviewError: the session is not in review.
        """
        session = await self._get(session_id)
        require_review(session, collecting=True)
        return self._case(session, await self._item(session_id))

    # -- claims ------------------------------------------------------------------

    async def claim(
        self,
        reviewer: str,
        *,
        case_id: str | None = None,
        policy: str | None = None,
        reason: str | None = None,
        min_priority: int | None = None,
        lease: float | timedelta | None = None,
    ) -> ReviewCase | None:
        """Claim the next free case (or the given one) that matches the filters.

        Returns ``None`` when no matching case is free.

        Raises:
            ReviewClaimedError: ``case_id`` is held by another reviewer.
        """
        if case_id is not None:
            await self._hold(case_id, reviewer, lease)
            return await self.case(case_id)
        now = self._clock.now()
        for item in await self._store.queue_items(REVIEW_QUEUE):
            if item.claimed(now) or item.available_at > now:
                continue
            if not _matches(item, policy=policy, reason=reason, priority=min_priority):
                continue
            claimed = await self._store.claim(
                REVIEW_QUEUE,
                owner=reviewer,
                at=now,
                lease=await self._lease_for(item.item_id, lease),
                item_id=item.item_id,
            )
            if claimed is not None:
                return await self.case(item.item_id)
        return None

    async def extend(
        self, case_id: str, reviewer: str, *, lease: float | timedelta | None = None
    ) -> bool:
        """Renew ``reviewer``'s claim; ``False`` if it is no longer theirs."""
        return await self._store.extend(
            REVIEW_QUEUE,
            case_id,
            owner=reviewer,
            at=self._clock.now(),
            lease=await self._lease_for(case_id, lease),
        )

    async def release(self, case_id: str, reviewer: str) -> bool:
        """Give the case back to the queue undecided."""
        return await self._store.release(REVIEW_QUEUE, case_id, owner=reviewer)

    # -- decisions -----------------------------------------------------------------

    async def decide(
        self,
        case_id: str,
        reviewer: str,
        *,
        outcome: Outcome | str,
        reason: str,
        note: str = "",
    ) -> Verdict:
        """Approve or reject a case; return the session's final verdict.

        The reviewer must hold the case's claim or be able to take it (a
        one-shot decision claims the case first).

        Raises:
            ReviewClaimedError: another reviewer holds the case.
            NotInReviewError: the case waits for evidence, or the session is
                not in review.
            SessionFinishedError: it was decided already.
            InvalidInputError: the outcome or reason code is not allowed.
        """
        verifier = self._deciding()
        await self._hold(case_id, reviewer, None)
        session = await verifier.decide_review(
            case_id, reviewer=reviewer, outcome=outcome, reason=reason, note=note
        )
        assert session.verdict is not None  # noqa: S101 - a decision finishes it
        return session.verdict

    async def request_evidence(
        self, case_id: str, reviewer: str, step_id: str, *, note: str = ""
    ) -> ReviewCase:
        """Ask for one of the policy's evidence steps; the case returns once it ends.

        Raises:
            ReviewClaimedError: another reviewer holds the case.
            InvalidInputError: the policy offers no such evidence step.
            ConfigurationError: the Verifier lacks the step's channel.
        """
        verifier = self._deciding()
        await self._hold(case_id, reviewer, None)
        session = await verifier.request_evidence(
            case_id, step_id, reviewer=reviewer, note=note
        )
        return self._case(session, await self._item(case_id))

    # -- helpers -------------------------------------------------------------------

    def _deciding(self) -> ReviewRuntime:
        if self._verifier is None:
            raise ConfigurationError(
                message="this ReviewQueue reads a store: give it a Verifier to decide"
            )
        return self._verifier

    async def _get(self, session_id: str) -> Session:
        session, _ = await self._store.load(session_id)
        return session

    def _policy(self, ref: PolicyRef) -> Policy | None:
        if self._verifier is None:
            return None
        try:
            return self._verifier.policy(ref.hash)
        except ConfigurationError:
            return None

    async def _item(self, case_id: str) -> QueueItem | None:
        for item in await self._store.queue_items(REVIEW_QUEUE):
            if item.item_id == case_id:
                return item
        return None

    async def _lease_for(self, case_id: str, lease: float | timedelta | None) -> float:
        if lease is not None:
            return _seconds(lease)
        if self._lease is not None:
            return self._lease
        try:
            session = await self._get(case_id)
        except SessionNotFoundError:
            return _DEFAULT_LEASE
        policy = self._policy(session.policy)
        if policy is None or policy.review is None:
            return _DEFAULT_LEASE
        return policy.review.lease

    async def _hold(
        self, case_id: str, reviewer: str, lease: float | timedelta | None
    ) -> None:
        """Make sure ``reviewer`` holds the case's claim, claiming it when free.

        Raises:
            ReviewClaimedError: another reviewer's claim holds it.
            NotInReviewError: the case is not in the queue.
        """
        now = self._clock.now()
        item = await self._item(case_id)
        if item is None:
            session = await self._get(case_id)
            require_review(session)  # finished, collecting, or never in review
            raise NotInReviewError(
                message=f"session {case_id} is not in the review queue yet",
                session_id=case_id,
            )
        if item.claimed(now) and item.claimed_by == reviewer:
            return
        if not item.claimed(now):
            claimed = await self._store.claim(
                REVIEW_QUEUE,
                owner=reviewer,
                at=now,
                lease=await self._lease_for(case_id, lease),
                item_id=case_id,
            )
            if claimed is not None:
                return
            item = await self._item(case_id) or item
        raise ReviewClaimedError(
            message=f"case {case_id} is claimed by {item.claimed_by!r}",
            session_id=case_id,
            claimed_by=item.claimed_by,
            claimed_until=item.claimed_until,
        )

    def _case(self, session: Session, item: QueueItem | None) -> ReviewCase:
        review = session.review
        verdict = session.verdict
        assert review is not None  # noqa: S101 - in review
        assert verdict is not None  # noqa: S101 - in review
        held = item is not None and item.claimed(self._clock.now())
        policy = self._policy(session.policy)
        known = {summary.step_id: summary.channel for summary in verdict.steps}
        steps = []
        for record in session.steps:
            channel = known.get(record.step_id)
            if channel is None:
                channel = (
                    policy.step(record.step_id).channel if policy is not None else ""
                )
            steps.append(
                StepSummary(
                    step_id=record.step_id,
                    channel=channel,
                    state=record.state.value,
                    result=record.result,
                )
            )
        return ReviewCase(
            session_id=session.session_id,
            policy=session.policy,
            priority=review.priority,
            queued_at=review.queued_at,
            escalated=review.escalated,
            reasons=verdict.reasons,
            score=verdict.score,
            steps=tuple(steps),
            evidence=review.evidence,
            collecting=any(record.state.active for record in session.steps),
            claimed_by=item.claimed_by if item is not None and held else None,
            claimed_until=item.claimed_until if item is not None and held else None,
        )


def _matches(
    item: QueueItem, *, policy: str | None, reason: str | None, priority: int | None
) -> bool:
    if priority is not None and item.priority < priority:
        return False
    if policy is None and reason is None:
        return True
    body = json.loads(item.body)
    if policy is not None and policy not in (
        body["policy"]["name"],
        body["policy"]["hash"],
    ):
        return False
    return reason is None or reason in body["reasons"]
