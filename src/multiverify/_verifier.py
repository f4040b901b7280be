"""The embedded runtime: applies the pure core, saves with compare-and-set, runs effects."""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
import uuid
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from typing import Any, Self, TypeVar

import attrs

from ._applicant import Applicant, refuse_retired_currency
from ._audit import AuditTrail
from ._clock import Clock, SystemClock
from ._duration import parse_duration
from ._http import retrying
from ._lease import SessionLeases, new_owner
from ._results import Challenge, Outcome, Verdict
from ._review import ReviewEvent, run_queue_effect
from ._serde import converter
from ._session import (
    DEADLINE_TIMER,
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
    StepFinished,
    StepRecord,
    StepStarted,
    StepState,
    StepUpdated,
    TimerFired,
    check_decision,
    check_evidence,
    lapsed_deadline,
    new_session,
    require_input,
    require_review,
    transition,
    waiting_challenge,
)
from ._sweep import Sweeper
from .channels import (
    Channel,
    ChannelRegistry,
    Finished,
    ProviderEvent,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    TimerDue,
)
from .compliance import PurgeReport, purge_personal_data
from .exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    MultiverifyError,
    PolicyError,
    ProviderError,
    PullNotPermittedError,
    SessionFinishedError,
    StepNotWaitingError,
    StoreUnavailableError,
)
from .policy import Policy, RetrySettings
from .stores import ChangeFeed, EffectClaim, MemoryStore, SessionStore, SharedState

__all__ = ["OnReview", "OnVerdict", "Verifier"]

log = logging.getLogger("multiverify")

OnVerdict = Callable[[Session, Verdict], Awaitable[None]]
"""A hook called once per decided session (after the verdict is saved)."""

OnReview = Callable[[Session, ReviewEvent], Awaitable[None]]
"""A hook called when a review case is queued, returns with evidence, or escalates."""

_SAVE_TRIES = 20

# How many sessions the Verifier remembers as it last saved them, so that
# applying an input needs no load (the least recently saved are forgotten
# first; a finished session is forgotten at once). The compare-and-set of the
# save stays the judge: a stale entry costs one failed save and a reload.
_CACHE_SIZE = 2048

T = TypeVar("T")


def _new_id() -> str:
    return uuid.uuid4().hex


def _starting(session: Session, event: ProviderEvent) -> bool:
    """Whether the event's step is still starting the attempt the event is for."""
    if session.finished:
        return False
    record = session.step(event.step_id)
    return record.state is StepState.RUNNING and (
        event.attempt is None or event.attempt == record.attempt
    )


def _finished(session: Session) -> Session | None:
    return session if session.finished else None


@attrs.frozen
class _Announcement:
    """A verdict or review event to announce, and the outbox effect that announces it, if any."""

    event: Verdict | ReviewEvent
    effect_id: str | None = None


class _Watch:
    """Who waits for a session's changes, and the newest version of it this Verifier saved or loaded."""

    __slots__ = (
        "count",
        "echoes",
        "futures",
        "heard",
        "notices",
        "session",
        "unsubscribe",
        "version",
    )

    def __init__(self) -> None:
        self.count = 0  # callers of ``_watch`` on the session
        self.futures: list[asyncio.Future[None]] = []
        self.session: Session | None = None
        self.version = 0
        # Notifications from the store's change feed: a waiter that sees the
        # count move loads the session again. ``echoes`` counts this
        # Verifier's own saves whose notifications are still to come: those
        # are known already, and load nothing. One lost on the way (a
        # listener reconnecting) would hide the next notification; the next
        # poll finds that change and forgets the count.
        self.notices = 0
        self.echoes = 0
        # The newest version the store's listener read once it listened: a
        # waiter that knows an older one loads the session again.
        self.heard = 0
        self.unsubscribe: Callable[[], None] | None = None

    def saw(self, session: Session, version: int) -> bool:
        """Note a version of the session saved or loaded here; return whether it is newer than the newest known."""
        if version <= self.version:
            return False
        self.session, self.version = session, version
        return True

    def wake(self) -> None:
        """Wake every waiter."""
        futures, self.futures = self.futures, []
        for future in futures:
            if not future.done():
                future.set_result(None)

    def __call__(self) -> None:
        """The store says the session changed (maybe on another replica)."""
        if self.echoes:
            self.echoes -= 1
            return
        self.notices += 1
        self.wake()

    def missed(self) -> None:
        """The store's listener listens again, at a version it could not read: any notification may have been lost.

        The echoes still awaited among them: counted, they would hide the
        next notifications, of other replicas' changes.
        """
        self.echoes = 0
        self.notices += 1
        self.wake()

    def confirmed(self, version: int) -> None:
        """The store listens for the session now, stored at ``version``.

        Notifications sent before may have gone unheard (this Verifier's
        own saves' among them, so no echo is awaited any more); only a
        version newer than the one a waiter knows calls for loading it
        again. That is judged by each waiter against what it knows, not
        here: a waiter's first load may still be on its way, and read that
        version already. The waiters look again either way: one may know an
        older version than the watch does.
        """
        self.echoes = 0
        self.heard = max(self.heard, version)
        self.wake()

    def quiet(self, notices: int, heard: int, version: int) -> bool:
        """Whether a waiter at ``version``, which last looked at ``notices`` and ``heard``, has nothing to load."""
        return self.notices == notices and (
            self.heard == heard or self.heard <= version
        )


class Verifier:
    """Runs verifications: start them, feed them input and events, read verdicts.

    Every transition is decided by the pure core, saved to the store with a
    compare-and-set on the session version together with its effects and
    audit events, and only then carried out. After a crash,
    [`resume`][multiverify.Verifier.resume] finishes what was saved but not done.

    Args:
        policies: one policy or several (sessions record which one, by hash).
        channels: the channels the policies name. Omitted, the Verifier runs
            no step: it reads sessions and takes review decisions (a replica
            that only serves reviewers), and refuses to start sessions.
        store: where sessions live. Omitted, a `MemoryStore` that loses
            everything with the process (tests, one-off scripts); in
            production pass a `SqliteStore`, the embedded default, or a
            shared store for many replicas. A store passed in stays open
            when the Verifier closes.
        clock: the time source; tests pass a FakeClock.
        on_verdict: hooks called once a session is decided, at least once:
            the verdict's announcement leaves the outbox only after they
            returned, so a replica that dies in one leaves it to a worker,
            which calls them again. Make them idempotent (by session id);
            one that raises is logged and not called again.
        on_review: hooks called when a review case is queued, comes back
            with the evidence a reviewer asked for, or escalates past its
            SLA; at least once, like ``on_verdict``.
        new_id: makes session ids.
        early_event_wait: how long, in seconds on the clock, a vendor event
            that arrives while its step is still starting (the vendor called
            back before the call that started it returned) waits for the
            start to be saved before it is refused.
        lease: how long, in seconds, this Verifier's claim on a session
            lasts while it fires the session's timers or resumes its effects
            (renewed while it works); a replica that dies holding one lets
            it lapse and another takes the work over.
        watch_poll: the longest pause, in real seconds, between two looks
            at the store while [`wait`][multiverify.Verifier.wait] or
            [`challenge`][multiverify.Verifier.challenge] waits for a change
            another replica makes. On a store that notifies every writer's
            changes (a [`ChangeFeed`][multiverify.stores.ChangeFeed]:
            PostgreSQL, Redis) a waiter wakes on the notification, and looks
            every ``watch_poll`` only in case one was lost (``wait``, when it
            starts from the session as last saved here, looks once after
            the first, short pause: a change saved elsewhere before it
            subscribed is told by nothing); otherwise the
            pause starts at a fiftieth of it and doubles while nothing
            changes. ``None`` never polls: it sees this Verifier's own
            changes and the store's notifications.
        sweep_interval: how often, in seconds on the clock, the Verifier
            deletes the store's lapsed shared state (the SMS send ledger,
            quota windows, cached bureau reports; see
            [`sweep_expired`][multiverify.stores.SharedState.sweep_expired])
            as it starts sessions: its first start sweeps, and a start an
            interval later sweeps again, beside the start. ``None`` leaves it
            to a [`Worker`][multiverify.Worker] or `multiverify store purge`.
            Added in 0.1.

    Raises:
        ConfigurationError: a policy names a channel that is not wired, or
            ``sweep_interval`` is not positive.
    """

    def __init__(
        self,
        policies: Policy | Iterable[Policy],
        *,
        channels: ChannelRegistry | Iterable[Channel] | None = None,
        store: SessionStore | None = None,
        clock: Clock | None = None,
        on_verdict: Sequence[OnVerdict] = (),
        on_review: Sequence[OnReview] = (),
        new_id: Callable[[], str] = _new_id,
        early_event_wait: float | timedelta = 30.0,
        lease: float | timedelta = 30.0,
        watch_poll: float | timedelta | None = 1.0,
        sweep_interval: float | timedelta | None = 600.0,
    ) -> None:
        self._runs_steps = channels is not None
        self._registry = (
            channels
            if isinstance(channels, ChannelRegistry)
            else ChannelRegistry(channels or ())
        )
        listed = [policies] if isinstance(policies, Policy) else list(policies)
        if not listed:
            raise ConfigurationError(message="a Verifier needs at least one policy")
        problems = []
        self._policies = index_policies(listed)
        for policy in listed:
            if self._runs_steps:
                problems.extend(policy.check_channels(self._registry))
        if problems:
            raise PolicyError(
                message="a policy names channels this Verifier does not have",
                problems=tuple(problems),
            )
        self._default = listed[0]
        self._owns_store = store is None
        self._store: SessionStore = store if store is not None else MemoryStore()
        self._shared: SharedState = self._store  # every SessionStore is one
        self._feed = self._store if isinstance(self._store, ChangeFeed) else None
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._hooks = tuple(on_verdict)
        self._review_hooks = tuple(on_review)
        self._new_id = new_id
        self._early_event_wait = parse_duration(early_event_wait)
        self._watch_poll = None if watch_poll is None else parse_duration(watch_poll)
        self._leases = SessionLeases(
            self._store, self._clock, owner=new_owner(), ttl=parse_duration(lease)
        )
        self._sweeper = (
            None
            if sweep_interval is None
            else Sweeper(
                self._store, sweep_interval, who=f"verifier {self._leases.owner}"
            )
        )
        # Effects this Verifier is running now, by (session_id, effect_id):
        # their claims in the store are renewed together every third of the
        # lease by one task, which ends when it wakes to find none.
        self._inflight: set[tuple[str, str]] = set()
        self._renewer: asyncio.Task[None] | None = None
        # Effects done here whose completion is not written yet: one task
        # writes them, all that finished meanwhile in one call.
        self._done: list[tuple[str, str]] = []
        self._completer: asyncio.Task[None] | None = None
        # Effect tasks cancelled to be given back (not because the core moved on).
        self._abandoned: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._running: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self._watches: dict[str, _Watch] = {}
        self._cache: dict[str, tuple[Session, int]] = {}
        self._rng = random.Random()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<multiverify.Verifier(policies={len(self._policies)}, "
            f"channels={len(self._registry)})>"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def store(self) -> SessionStore:
        """The session store."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The clock."""
        return self._clock

    @property
    def channels(self) -> ChannelRegistry:
        """The channels this Verifier runs, by name."""
        return self._registry

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
        """Create a session and start the steps that are ready.

        Returns at once with the session as saved; steps run in the
        background. Read [`Session.challenges`][multiverify.Session.challenges] to show the applicant what
        to do, and await [`wait`][multiverify.Verifier.wait] for the verdict.

        Raises:
            ConfigurationError: unknown policy.
            ConcurrentUpdateError: ``session_id`` is taken.
            InvalidInputError: the loan's currency is no longer legal tender.
        """
        if not self._runs_steps:
            raise ConfigurationError(
                message="this Verifier was given no channels: it reviews and "
                "reads sessions, and cannot start one"
            )
        chosen = self.policy(policy)
        now = self._clock.now()
        refuse_retired_currency(applicant, at=now)
        if self._sweeper is not None:
            self._sweeper.due(now)
        session = new_session(
            chosen, applicant, session_id=session_id or self._new_id(), at=now
        )
        session, created = AuditTrail.created(session, at=now)
        # Created already started, in one write: the Start transition, its
        # effects and both audit events go in with the session.
        event = Start(at=now)
        result = transition(chosen, session, event)
        session, records = AuditTrail.transition(
            result.session, event, result.effects, at=self._clock.now()
        )
        outbox, timers, _ = timer_writes(result.effects)
        async with self._lock(session.session_id):
            version = await self._store.create(
                session,
                effects=outbox,
                audit=[created, *records],
                claim=self._claim(),
                timers=timers,
            )
            self._remember(session, version)
            verdicts = await self._dispatch(session, result.effects)
        await self._after(session, version, verdicts)
        return session

    async def run(self, applicant: Applicant, *, policy: str | None = None) -> Verdict:
        """Start a session and wait for its verdict (for policies of automatic steps).

        Raises:
            SessionFinishedError: the session was cancelled instead.
        """
        session = await self.start(applicant, policy=policy)
        # The session as just saved here stands in for a load (see _watch).
        return await self._verdict(
            session.session_id, self._cache.get(session.session_id)
        )

    async def wait(self, session_id: str) -> Verdict:
        """Wait until the session is decided and return its verdict.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session was cancelled.
        """
        # The session as last saved here, if remembered, stands in for a
        # load. A change made elsewhere since was notified before the watch
        # subscribed, so no notification tells of it: the watch looks at the
        # store after its first, short pause (``recheck``); one that never
        # polls loads instead.
        known = None if self._watch_poll is None else self._cache.get(session_id)
        return await self._verdict(session_id, known, recheck=known is not None)

    async def _verdict(
        self,
        session_id: str,
        known: tuple[Session, int] | None,
        *,
        recheck: bool = False,
    ) -> Verdict:
        session = await self._watch(session_id, _finished, known, recheck=recheck)
        if session.verdict is None:
            raise SessionFinishedError(
                message=f"session {session_id} was cancelled", session_id=session_id
            )
        return session.verdict

    async def challenge(self, session_id: str, step_id: str) -> Challenge:
        """Wait until a step waits for the applicant and return its challenge.

        Use it after [`start`][multiverify.Verifier.start] to learn where the
        code was sent or which link to open. Changes made by this Verifier
        wake it; another replica's changes wake it when the store notifies
        them (see ``watch_poll``), or are found by polling.

        Raises:
            SessionNotFoundError: no such session.
            StepNotFoundError: the policy has no such step.
            StepNotWaitingError: the step ended, was skipped or never asks
                for input; or the session finished.
        """

        def ready(session: Session) -> Challenge | None:
            return waiting_challenge(session, step_id)

        return await self._watch(session_id, ready)

    async def get(self, session_id: str) -> Session:
        """The session as stored.

        Raises:
            SessionNotFoundError: no such session.
        """
        session, _ = await self._store.load(session_id)
        return session

    async def submit(
        self, session_id: str, step_id: str, payload: Mapping[str, Any]
    ) -> Session:
        """Hand input from the applicant (a typed code) to a waiting step.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has a verdict.
            StepNotFoundError: the policy has no such step.
            StepNotWaitingError: the step is not waiting for input.
            ConcurrentUpdateError: another replica changed the session at the
                same moment; nothing was applied, try again.
        """
        return await self._deliver(
            session_id, step_id, Submission(payload=payload), None
        )

    async def handle_event(self, event: ProviderEvent) -> Session | None:
        """Route a verified provider callback to its step.

        A delivery seen before (same ``dedupe_key``) is ignored and ``None``
        returned. Errors are those of [`submit`][multiverify.Verifier.submit],
        except that a version conflict is retried here. A delivery that
        fails without being applied (the store unavailable, the session
        still changing after the retries, the channel's refusal) gives its
        ``dedupe_key`` back, so the vendor's redelivery is applied.

        A callback that comes after its step or its session ended (a video
        decision after the link expired, a call status after the verdict)
        does not reopen anything: it is recorded in the session's audit
        trail as ``event.late``, and the ``SessionFinishedError`` or
        ``StepNotWaitingError`` is raised as before.
        """
        session = await self.get(event.session_id)
        if _starting(session, event):
            # The vendor called back before the start that caused it was
            # saved (here or on another replica): wait for it a while.
            session = await self._until_started(event)
        if _starting(session, event):
            # Still starting: refused before the dedupe key is spent, so the
            # vendor's redelivery can bring the event back.
            require_input(session, event.step_id, event.attempt)
        if event.dedupe_key is not None and not await self._store.record_event_once(
            event.session_id, event.dedupe_key
        ):
            return None
        try:
            for _ in range(_SAVE_TRIES - 1):
                try:
                    return await self._deliver(
                        event.session_id, event.step_id, event, event.attempt
                    )
                except ConcurrentUpdateError:
                    continue
            return await self._deliver(
                event.session_id, event.step_id, event, event.attempt
            )
        except (SessionFinishedError, StepNotWaitingError) as exc:
            await self._record_late(event, exc)
            raise
        except Exception:
            # Nothing was saved (a store outage, a session that kept
            # changing, the channel's refusal): the key is given back, so
            # the vendor's redelivery is applied instead of dropped.
            if event.dedupe_key is not None:
                await self._forget(event.session_id, event.dedupe_key)
            raise

    async def _forget(self, session_id: str, dedupe_key: str) -> None:
        """Give back a delivery's dedupe key (best effort: the store may be down)."""
        try:
            await self._store.forget_event(session_id, dedupe_key)
        except MultiverifyError:
            log.warning(
                "delivery %s of session %s failed and its key could not be given "
                "back: a redelivery will be ignored",
                dedupe_key,
                session_id,
            )

    async def _record_late(self, event: ProviderEvent, error: Exception) -> None:
        """Note a callback that came too late in its session's audit trail."""
        async with self._lock(event.session_id):
            self._cache.pop(event.session_id, None)
            await record_late(self._store, event, error, at=self._clock.now())

    async def cancel(self, session_id: str, *, reason: str = "") -> Session:
        """Cancel a session: active steps are stopped, no verdict is given.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already finished.
        """
        session = await self.get(session_id)
        if session.finished:
            raise SessionFinishedError(
                message=f"session {session_id} is already {session.status.value}",
                session_id=session_id,
            )
        return await self._apply(
            session_id, Cancel(at=self._clock.now(), reason=reason)
        )

    async def purge_personal_data(
        self,
        older_than: float | timedelta | str,
        *,
        dry_run: bool = False,
    ) -> PurgeReport:
        """Purge the personal data of sessions that finished more than ``older_than`` ago.

        The verdicts, their reasons and the audit trail stay; see
        [`purge_personal_data`][multiverify.compliance.purge_personal_data].
        Safe to run on any replica, at any time (a periodic task).
        """
        return await purge_personal_data(
            self._store, older_than=older_than, now=self._clock.now(), dry_run=dry_run
        )

    async def decide_review(
        self,
        session_id: str,
        *,
        reviewer: str,
        outcome: Outcome | str,
        reason: str,
        note: str = "",
    ) -> Session:
        """Settle a session in review: the reviewer's decision becomes its verdict.

        The verdict keeps the automatic verdict beside the decision, and the
        audit trail records who decided what (the note as a digest). Prefer
        [`ReviewQueue.decide`][multiverify.ReviewQueue.decide], which also
        respects the reviewers' claims.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has its final verdict.
            NotInReviewError: the session is not in review, or waits for
                evidence a reviewer asked for.
            InvalidInputError: the outcome is not approved or rejected, or
                the reason code is not one the policy allows.
        """
        try:
            chosen = Outcome(outcome)
        except ValueError:
            raise InvalidInputError(
                message=f"{outcome!r} is not an outcome", field="outcome"
            ) from None
        event = ReviewDecided(
            at=self._clock.now(),
            reviewer=reviewer,
            outcome=chosen,
            reason=reason,
            note=note,
        )

        def check(session: Session) -> None:
            require_review(session)
            check_decision(self._policy_of(session), event)

        return await self._apply(session_id, event, check=check)

    async def request_evidence(
        self, session_id: str, step_id: str, *, reviewer: str, note: str = ""
    ) -> Session:
        """Start one of the policy's review evidence steps for a session in review.

        The case leaves the review queue while the step runs and returns to
        it, with the step's result as evidence, once the step ends.

        Raises:
            SessionNotFoundError: no such session.
            SessionFinishedError: the session already has its final verdict.
            NotInReviewError: the session is not in review.
            InvalidInputError: the policy offers no such evidence step, or it
                is being collected already (``field`` is ``step_id``).
            ConfigurationError: this Verifier lacks the step's channel.
        """
        event = EvidenceRequested(
            at=self._clock.now(), reviewer=reviewer, step_id=step_id, note=note
        )

        def check(session: Session) -> None:
            step = check_evidence(self._policy_of(session), session, step_id)
            if step.channel not in self._registry:
                raise ConfigurationError(
                    message=f"this Verifier has no channel {step.channel!r} to "
                    f"collect evidence step {step_id!r} with"
                )

        return await self._apply(session_id, event, check=check)

    async def fire_due_timers(self) -> int:
        """Fire every stored timer that is due now; return how many fired.

        A timer whose firing fails is logged and left due, to be tried at the
        next call; the timers after it still fire. (The
        [`Worker`][multiverify.Worker] also moves such a timer later, so
        that it cannot hold up the others for good.)
        """
        fired = 0
        for timer in await self._store.due_timers(self._clock.now()):
            fired += await self._fire(timer.session_id, timer.timer_id)
        return fired

    async def resume(self) -> int:
        """Carry on after a restart: run saved effects and re-arm stored timers.

        Returns how many effects and timers were picked up.
        """
        count = 0
        for pending in await self._store.pending_effects():
            _ = self._resume_effect(pending.session_id, pending.effect)
            count += 1
        for timer in await self._store.timers():
            self._arm(timer.session_id, timer.timer_id, timer.due_at)
            count += 1
        return count

    def _resume_effect(
        self,
        session_id: str,
        effect: Effect,
        session: tuple[Session, int] | None = None,
    ) -> asyncio.Task[None]:
        """Run a saved effect found in the store (not one this Verifier just saved).

        ``session``: the session and its version as the store read them with
        the effect, if it did; remembered, so that the effect need not load it.
        """
        if session is not None:
            self._remember(*session)
        task = self._spawn(
            self._run_effect(
                session_id, effect, None if session is None else session[0]
            )
        )
        if isinstance(effect, StartStep):
            # Tracked like a fresh start, so a timeout or a verdict cancels it.
            self._running[session_id, effect.step_id, effect.attempt] = task
        return task

    async def wait_idle(self) -> None:
        """Wait until no effect is in flight (tasks asleep on a FakeClock count as idle)."""
        sleeping = getattr(self._clock, "sleeping_tasks", None)
        while True:
            candidates = set(self._tasks)
            if sleeping is not None:
                candidates |= {t for t in self._timer_tasks.values() if not t.done()}
                if self._renewer is not None:
                    candidates.add(self._renewer)  # settled once asleep
                candidates -= sleeping()
            busy = {task for task in candidates if not task.done()}
            if not busy:
                return
            if sleeping is None:
                await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
            else:
                # A busy task may fall asleep on the fake clock instead of
                # finishing, which asyncio.wait would never report: look again
                # after every turn of the loop.
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Stop timers and in-flight effects; close the store if the Verifier made it.

        A store passed in stays open: close it yourself.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [*self._tasks, *self._timer_tasks.values()]
        tasks = [task for task in tasks if task is not self._completer]
        for task in tasks:
            task.cancel()
        # The effects cancelled give their claims back as they end; the
        # effects done are marked so.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._completer is not None:
            await self._completer
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self._sweeper is not None:
            await self._sweeper.stop()
        for watch in self._watches.values():
            for future in watch.futures:
                future.cancel()
        if self._owns_store:
            await self._store.aclose()

    # -- applying inputs ---------------------------------------------------------

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    def _remember(self, session: Session, version: int) -> None:
        """Note a session as this Verifier saved or read it (see ``_CACHE_SIZE``).

        A newer version already noted stays: a read that began before a
        save here may end after it.
        """
        cache = self._cache
        session_id = session.session_id
        held = cache.get(session_id)
        if held is not None and held[1] > version:
            return
        # Popped and added again, so the dict's order is the order of saves.
        cache.pop(session_id, None)
        if session.finished:
            return
        cache[session_id] = (session, version)
        if len(cache) > _CACHE_SIZE:
            del cache[next(iter(cache))]

    def _policy_of(self, session: Session) -> Policy:
        try:
            return self._policies[session.policy.hash]
        except KeyError:
            raise ConfigurationError(
                message=f"session {session.session_id} runs policy {session.policy.name} "
                f"{session.policy.version} ({session.policy.hash[:12]}), which this "
                "Verifier was not given"
            ) from None

    async def _save(
        self,
        session: Session,
        version: int,
        event: Input,
        effects: Sequence[Effect],
        call: Mapping[str, Any] | None = None,
        *,
        completed: Sequence[str] = (),
        fired_timer: str | None = None,
    ) -> tuple[Session, int]:
        """Audit and save a transition; return the session as saved and its version.

        The effects are saved claimed by this Verifier, which runs them
        next; ``completed`` effects and ``fired_timer`` go in the same write
        (see [`SessionStore.save`][multiverify.stores.SessionStore.save]).

        Raises:
            ConcurrentUpdateError: ``version`` is stale (the cache forgets
                the session, so the next try loads it).
        """
        session, records = AuditTrail.transition(
            session, event, effects, at=self._clock.now(), call=call
        )
        outbox, timers, cancelled = timer_writes(effects)
        watch = self._watches.get(session.session_id)
        if watch is not None and watch.unsubscribe is not None:
            watch.echoes += 1  # the store will notify this save too
        try:
            saved = await self._store.save(
                session,
                expected_version=version,
                effects=outbox,
                audit=records,
                claim=self._claim() if outbox else None,
                completed=completed,
                fired_timer=fired_timer,
                timers=timers,
                cancelled_timers=cancelled,
            )
        except BaseException as exc:
            if watch is not None and watch.unsubscribe is not None:
                watch.echoes = max(watch.echoes - 1, 0)  # nothing saved, maybe
            if isinstance(exc, ConcurrentUpdateError):
                self._cache.pop(session.session_id, None)
            raise
        self._remember(session, saved)
        return session, saved

    async def _apply(
        self,
        session_id: str,
        event: Input,
        call: Mapping[str, Any] | None = None,
        *,
        check: Callable[[Session], None] | None = None,
        completed: Sequence[str] = (),
        fired_timer: str | None = None,
    ) -> Session:
        """Apply an internal input, reloading and retrying on a version conflict.

        ``call`` describes the provider call behind the input, for the audit;
        ``check`` may refuse the input (by raising) against the session it
        would apply to; ``completed`` and ``fired_timer`` go with the save.
        """
        version = 0
        async with self._lock(session_id):
            for _ in range(_SAVE_TRIES):
                # The session as last saved here, if remembered; a stale one
                # only costs the compare-and-set below, which forgets it.
                cached = self._cache.get(session_id)
                if cached is None:
                    session, version = await self._store.load(session_id)
                else:
                    session, version = cached
                if check is not None:
                    check(session)
                result = transition(self._policy_of(session), session, event)
                try:
                    saved, new_version = await self._save(
                        result.session,
                        version,
                        event,
                        result.effects,
                        call,
                        completed=completed,
                        fired_timer=fired_timer,
                    )
                except ConcurrentUpdateError:
                    continue
                verdicts = await self._dispatch(saved, result.effects)
                break
            else:
                raise ConcurrentUpdateError(
                    message=f"session {session_id} kept changing; "
                    f"gave up after {_SAVE_TRIES} tries",
                    session_id=session_id,
                    expected_version=version,
                )
        await self._after(saved, new_version, verdicts)
        return saved

    async def _deliver(
        self,
        session_id: str,
        step_id: str,
        message: StepMessage,
        attempt: int | None,
        *,
        completed: Sequence[str] = (),
    ) -> Session:
        """Hand ``message`` to the step's channel and save what it made of it.

        ``completed``: effects (a channel timer's notification) that this
        save records the handling of, and so completes in the same write.
        """
        async with self._lock(session_id):
            session, version = await self._store.load(session_id)
            policy = self._policy_of(session)
            now = self._clock.now()
            late = lapsed_deadline(session, now) is not None
            if late:
                # Its timer has not fired yet (no replica or worker did): the
                # session expires first, before a channel spends the input
                # (a vendor's check of the code).
                event: Input = TimerFired(timer_id=DEADLINE_TIMER, at=now)
                result = transition(policy, session, event)
            else:
                record = require_input(session, step_id, attempt)
                name = policy.step(step_id).channel
                channel = self._registry.get(name)
                context = self._context(session, policy, record)
                try:
                    outcome = await channel.handle(
                        context, load_state(channel, record.channel_state), message
                    )
                except MultiverifyError:
                    raise  # the channel's typed refusal (a malformed code) is the caller's
                except Exception as exc:  # noqa: BLE001 - a channel bug ends its step in error, logged
                    log_crash(log, exc, name, context, "handling input for")
                    event = handle_crash(exc, record, context, at=self._clock.now())
                else:
                    event = outcome_input(record, outcome, at=self._clock.now())
                result = transition(policy, session, event)
            saved, new_version = await self._save(
                result.session, version, event, result.effects, completed=completed
            )
            verdicts = await self._dispatch(saved, result.effects)
        await self._after(saved, new_version, verdicts)
        if late:
            require_input(saved, step_id, attempt)  # raises: the session expired
        return saved

    async def _after(
        self, session: Session, version: int, verdicts: Sequence[_Announcement]
    ) -> None:
        """Outside the session lock: wake watchers, call hooks, drop the lock."""
        watch = self._watches.get(session.session_id)
        if watch is not None and watch.saw(session, version):
            watch.wake()
        for verdict in verdicts:
            await self._announce(session, verdict)
        if session.finished:
            lock = self._locks.get(session.session_id)
            if lock is not None and not lock.locked():
                del self._locks[session.session_id]

    async def _until_started(self, event: ProviderEvent) -> Session:
        """The session once the event's step stopped starting, or after ``early_event_wait``."""

        def started(session: Session) -> Session | None:
            return None if _starting(session, event) else session

        watch = asyncio.ensure_future(self._watch(event.session_id, started))
        timer = asyncio.ensure_future(self._clock.sleep(self._early_event_wait))
        try:
            await asyncio.wait({watch, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, timer):
                task.cancel()
            await asyncio.gather(watch, timer, return_exceptions=True)
        if watch.done() and not watch.cancelled() and watch.exception() is None:
            return watch.result()
        return await self.get(event.session_id)

    async def _watch(
        self,
        session_id: str,
        check: Callable[[Session], T | None],
        known: tuple[Session, int] | None = None,
        *,
        recheck: bool = False,
    ) -> T:
        """Wait until ``check`` returns something for the session, and return it.

        ``check`` sees the stored session now, then the session as this
        Verifier saves it after every change (a save builds on the stored
        version, so it carries every other replica's earlier changes too).
        The watch is registered before the load, so no change between the
        load and the wait is missed; ``check`` may raise to stop waiting.
        ``known`` is the session and version this Verifier has just saved,
        with its effects still to run: it replaces the load (a change made
        elsewhere meanwhile makes the next save here reload, and wakes us).
        Changes other replicas make are found by loading the session again
        when the store's change feed says it changed, and after a pause
        (``watch_poll``): the same pause throughout when the feed hears
        every writer, otherwise one that grows while nothing changes.
        ``recheck``: ``known`` may be older than another replica's change,
        so the first pause is the short one even when the feed hears every
        writer.
        """
        watch = self._watches.get(session_id)
        if watch is None:
            watch = self._watches[session_id] = _Watch()
            if self._feed is not None:
                watch.unsubscribe = self._feed.subscribe(session_id, watch)
        watch.count += 1
        try:
            seen, heard = watch.notices, watch.heard
            if known is None:
                session, version = await self._store.load(session_id)
            else:
                session, version = known
            watch.saw(session, version)
            loop = asyncio.get_running_loop()
            steady = self._feed is not None and self._feed.notifies_every_writer
            pause = self._first_pause(steady=steady and not recheck)
            while True:
                if watch.version > version:
                    assert watch.session is not None  # noqa: S101 - set with the version
                    session, version = watch.session, watch.version
                found = check(session)
                if found is not None:
                    return found
                woken = True  # by a notification, unless the pause ends first
                if watch.quiet(seen, heard, version):
                    # A cancelled wait leaves its future cancelled in the
                    # list, which the next wake clears and the last watcher
                    # drops.
                    future: asyncio.Future[None] = loop.create_future()
                    watch.futures.append(future)
                    woken = await self._woken(future, pause)
                    watch.futures = [f for f in watch.futures if not f.done()]
                    if woken and watch.quiet(seen, heard, version):
                        continue  # a save here: the loop reads it
                if not woken:
                    watch.echoes = 0  # the look below makes up for a lost one
                seen, heard = watch.notices, watch.heard
                polled = await self._reload(session_id, version)
                if polled is None:
                    if pause is not None:
                        pause = (
                            self._first_pause(steady=True)
                            if steady
                            else min(pause * 2, self._watch_poll or pause)
                        )
                else:
                    session, version = polled
                    watch.saw(session, version)
                    pause = self._first_pause(steady=steady)
        finally:
            watch.count -= 1
            if not watch.count and self._watches.get(session_id) is watch:
                del self._watches[session_id]
                if watch.unsubscribe is not None:
                    watch.unsubscribe()

    def _first_pause(self, *, steady: bool) -> float | None:
        """The first pause of a watch between looks at the store (``None``: never look)."""
        if self._watch_poll is None or steady:
            return self._watch_poll
        return self._watch_poll / 50

    @staticmethod
    async def _woken(future: asyncio.Future[None], pause: float | None) -> bool:
        """Wait for ``future`` (a save here, a notification) or ``pause`` real seconds.

        Returns whether the future woke us.
        """
        # Real time, not the clock's: this is how often the store is read,
        # not a deadline of the verification.
        done, _ = await asyncio.wait({future}, timeout=pause)
        if future.cancelled():
            raise asyncio.CancelledError  # the Verifier is closing
        if done:
            return True
        future.cancel()
        return False

    async def _reload(
        self, session_id: str, version: int
    ) -> tuple[Session, int] | None:
        """The stored session if it is newer than ``version`` (saved elsewhere), else ``None``."""
        try:
            stored, stored_version = await self._store.load(session_id)
        except StoreUnavailableError:
            return None
        return (stored, stored_version) if stored_version > version else None

    # -- effects -------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dispatch(
        self, session: Session, effects: Sequence[Effect], *, outbox: bool = False
    ) -> list[_Announcement]:
        """Carry out saved effects: timers and queue work inline, channel work as tasks.

        Timer effects were written to the store's timers by the save that
        asked for them (see `timer_writes`);
        here they only arm or disarm this process's timers. ``outbox``: the
        effects were found in the outbox instead (saved before timers went
        with the save), so their timers are written now.

        Returns the verdicts and review events to announce once the session
        lock is released.
        """
        verdicts: list[_Announcement] = []
        sid = session.session_id
        for effect in effects:
            match effect:
                case ScheduleTimer(timer_id=timer_id, due_at=due_at):
                    if outbox:
                        await self._store.schedule_timer(sid, timer_id, due_at)
                        self._completed(sid, effect.effect_id)
                    self._arm(sid, timer_id, due_at)
                case CancelTimer(timer_id=timer_id):
                    if outbox:
                        await self._store.cancel_timer(sid, timer_id)
                        self._completed(sid, effect.effect_id)
                    task = self._timer_tasks.pop((sid, timer_id), None)
                    if task is not None and task is not asyncio.current_task():
                        task.cancel()
                case RecordVerdict():
                    verdicts.append(self._announcement(sid, effect, effect.verdict))
                case QueueReview() | DequeueReview() | EscalateReview():
                    event = await run_queue_effect(
                        self._store, session, effect, now=self._clock.now()
                    )
                    if event is None:
                        self._completed(sid, effect.effect_id)
                    else:
                        verdicts.append(self._announcement(sid, effect, event))
                case _:
                    key = (sid, effect.step_id, effect.attempt)
                    if isinstance(effect, CancelStep):
                        running = self._running.pop(key, None)
                        if (
                            running is not None
                            and running is not asyncio.current_task()
                        ):
                            running.cancel()
                    task = self._spawn(self._run_effect(sid, effect, session))
                    if isinstance(effect, StartStep):
                        self._running[key] = task
        return verdicts

    async def _announce(self, session: Session, announcement: _Announcement) -> None:
        """Call the hooks; then the effect that announces leaves the outbox.

        Until then it stays pending, under this Verifier's claim (renewed
        while the hooks run): a replica that dies in a hook leaves it to a
        worker, which runs the effect and calls the hooks again. Stopped in
        one, this Verifier gives the claim back, so the next replica need
        not wait it out.
        """
        if announcement.effect_id is None:
            await self._call_hooks(session, announcement.event)
            return
        running = (session.session_id, announcement.effect_id)
        self._inflight.add(running)
        if self._renewer is None and not self._closed:
            self._renewer = asyncio.ensure_future(self._renew_claims())
        try:
            await self._call_hooks(session, announcement.event)
        except asyncio.CancelledError:
            if self._closed:
                await self._give_back([running])
            raise
        finally:
            self._inflight.discard(running)
        self._completed(*running)

    def _announcement(
        self, session_id: str, effect: Effect, event: Verdict | ReviewEvent
    ) -> _Announcement:
        """What ``effect`` announces; the effect is done now if no hook hears it, else after the hooks."""
        hooks = self._hooks if isinstance(event, Verdict) else self._review_hooks
        if not hooks:
            self._completed(session_id, effect.effect_id)
            return _Announcement(event)
        return _Announcement(event, effect.effect_id)

    async def _call_hooks(
        self, session: Session, announcement: Verdict | ReviewEvent
    ) -> None:
        if isinstance(announcement, ReviewEvent):
            for review_hook in self._review_hooks:
                try:
                    await review_hook(session, announcement)
                except Exception:
                    log.exception(
                        "on_review hook failed for session %s", session.session_id
                    )
            return
        for hook in self._hooks:
            try:
                await hook(session, announcement)
            except Exception:
                log.exception(
                    "on_verdict hook failed for session %s", session.session_id
                )

    async def _run_effect(
        self, session_id: str, effect: Effect, session: Session | None = None
    ) -> None:
        """Run one effect; ``session`` is the state it was saved with (or claimed with), if at hand."""
        inflight = (session_id, effect.effect_id)
        self._inflight.add(inflight)
        if self._renewer is None and not self._closed:
            self._renewer = asyncio.ensure_future(self._renew_claims())
        try:
            match effect:
                case StartStep():
                    if await self._start_step(session_id, effect, session):
                        return  # completed by the save of its result
                case NotifyStep():
                    if await self._notify(session_id, effect):
                        return  # completed by the save of its handling
                case CancelStep():
                    await self._cancel_step(session_id, effect)
                case (
                    ScheduleTimer()
                    | CancelTimer()
                    | RecordVerdict()
                    | QueueReview()
                    | DequeueReview()
                    | EscalateReview()
                ):
                    current, version = await self._store.load(session_id)
                    verdicts = await self._dispatch(current, [effect], outbox=True)
                    await self._after(current, version, verdicts)
                    return
            self._completed(session_id, effect.effect_id)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed or task in self._abandoned:
                # Stopped, not finished: the effect stays pending, and its
                # claim goes back so that a worker elsewhere takes it at once.
                self._abandoned.discard(task)
                await self._give_back([inflight])
            else:
                # Cancelled on purpose (the step timed out or the session was
                # decided): the core already moved on, so the effect is done.
                self._completed(session_id, effect.effect_id)
            raise
        except MultiverifyError:
            log.exception(
                "effect %s of session %s failed", effect.effect_id, session_id
            )
        finally:
            self._inflight.discard(inflight)
            if isinstance(effect, StartStep):
                key = (session_id, effect.step_id, effect.attempt)
                if self._running.get(key) is asyncio.current_task():
                    del self._running[key]

    def _claim(self) -> EffectClaim:
        """The claim effects saved now carry: this Verifier's, for one lease."""
        leases = self._leases
        return EffectClaim(
            owner=leases.owner,
            until=self._clock.now() + timedelta(seconds=leases.ttl),
        )

    def _completed(self, session_id: str, effect_id: str) -> None:
        """Mark an effect done, in the store's next batch of completions.

        The caller goes on at once. Effects that finish while a batch is
        being written go in the next one, so under load many completions
        cost one write. Until it is written, the effect's claim (one lease
        long) keeps other replicas from running it again.
        """
        self._done.append((session_id, effect_id))
        if self._completer is None:
            self._completer = self._spawn(self._write_completions())

    async def _write_completions(self) -> None:
        try:
            await asyncio.sleep(0)  # the effects done in this turn of the loop join in
            while self._done:
                batch, self._done = self._done, []
                try:
                    await self._store.complete_effects(batch)
                except Exception as exc:
                    # Left pending: once their claims lapse, a worker runs
                    # them again (effects run at least once), and the later
                    # batches still go. A store's own bug (no SDK error)
                    # comes with its traceback.
                    log.warning(
                        "could not mark %d effects done; they will run again",
                        len(batch),
                        exc_info=not isinstance(exc, MultiverifyError),
                    )
        finally:
            self._completer = None

    async def _renew_claims(self) -> None:
        """Renew the claims of every effect running here, in one call per third of the lease.

        Started by the first effect to run, it ends when it wakes to find
        none running (the next effect starts it again): effects that come and
        go between its wake-ups cost no task of their own.
        """
        while True:
            await self._clock.sleep(self._leases.ttl / 3)
            if not self._inflight:
                self._renewer = None
                return
            try:
                await self._store.extend_effect_claims(
                    self._leases.owner, list(self._inflight), until=self._claim().until
                )
            except StoreUnavailableError:
                continue  # the next renewal may get through before expiry
            except Exception:
                # A store's own bug: logged, and the renewals go on, or every
                # claim running here would lapse and its effect run again
                # elsewhere.
                log.exception(
                    "could not renew the claims of %d effects", len(self._inflight)
                )

    async def _give_back(self, effects: Sequence[tuple[str, str]]) -> None:
        """Release this Verifier's claims on ``effects`` (best effort: else they lapse)."""
        try:
            await self._store.extend_effect_claims(
                self._leases.owner, effects, until=self._clock.now()
            )
        except MultiverifyError:
            log.warning("could not give back the claims of %d effects", len(effects))

    def _abandon(self, task: asyncio.Task[None]) -> None:
        """Cancel an effect's task to stop it, not because it is done: it stays pending."""
        if not task.done():
            self._abandoned.add(task)
            task.cancel()

    def _context(
        self, session: Session, policy: Policy, record: StepRecord
    ) -> StepContext:
        step = policy.step(record.step_id)
        if session.applicant is None:
            raise SessionFinishedError(
                message=f"session {session.session_id} has no personal data any more",
                session_id=session.session_id,
            )
        return StepContext(
            session_id=session.session_id,
            step_id=record.step_id,
            attempt=record.attempt,
            provider=step.providers[record.provider_index] if step.providers else None,
            idempotency_key=f"{session.session_id}:{record.step_id}:{record.attempt}",
            applicant=session.applicant,
            options=step.options,
            clock=self._clock,
            shared=self._shared,
            providers=tuple(step.providers),
        )

    async def _start_step(
        self, session_id: str, effect: StartStep, session: Session | None
    ) -> bool:
        """Start the step and save its outcome; return whether that save completed the effect."""
        if session is None:
            # Remembered, so the save of the outcome starts from it rather
            # than reading it again (a stale one costs a compare-and-set).
            session, version = await self._store.load(session_id)
            self._remember(session, version)
        record = session.step(effect.step_id)
        if (
            session.finished
            or record.attempt != effect.attempt
            or record.state is not StepState.RUNNING
        ):
            return False  # already carried out before a restart, or no longer wanted
        policy = self._policy_of(session)
        step = policy.step(effect.step_id)
        channel = self._registry.get(effect.channel)
        context = self._context(session, policy, record)
        event: Input
        tries: list[dict[str, Any]] = []
        try:
            outcome = await call_start(
                channel, context, step.retry, tries, clock=self._clock, rng=self._rng
            )
            event = outcome_input(record, outcome, at=self._clock.now())
        except Exception as exc:  # noqa: BLE001 - a channel bug ends its step in error, logged below
            if not isinstance(exc, MultiverifyError):
                log_crash(log, exc, effect.channel, context, "starting")
            event = self._errored(exc, effect)
        call = {
            "step_id": effect.step_id,
            "attempt": effect.attempt,
            "channel": effect.channel,
            "provider": effect.provider,
            "idempotency_key": effect.idempotency_key,
            "tries": tries,
            "outcome": type(event).__name__,
        }
        await self._apply(session_id, event, call, completed=(effect.effect_id,))
        return True

    def _errored(self, exc: Exception, effect: StartStep) -> Input:
        error, provider = call_failure(exc, effect.provider)
        return StepErrored(
            step_id=effect.step_id,
            attempt=effect.attempt,
            at=self._clock.now(),
            error=error,
            provider=provider,
            failover=fails_over(exc),
        )

    async def _notify(self, session_id: str, effect: NotifyStep) -> bool:
        """Deliver a channel timer; return whether the save of its handling completed the effect.

        The notification leaves the outbox in the save that records what the
        channel made of it, so a crash in between never has the channel
        handle the same timer twice.
        """
        try:
            await self._deliver(
                session_id,
                effect.step_id,
                TimerDue(name=effect.name, at=self._clock.now()),
                effect.attempt,
                completed=(effect.effect_id,),
            )
        except (SessionFinishedError, StepNotWaitingError):
            return False
        return True

    async def _cancel_step(self, session_id: str, effect: CancelStep) -> None:
        session = await self.get(session_id)
        if session.applicant is None:
            return
        record = session.step(effect.step_id)
        policy = self._policy_of(session)
        channel = self._registry.get(effect.channel)
        context = attrs.evolve(
            self._context(session, policy, record), attempt=effect.attempt
        )
        try:
            await channel.cancel(context, load_state(channel, record.channel_state))
        except ProviderError:
            log.warning("cancelling step %s of %s failed", effect.step_id, session_id)
        except MultiverifyError:
            raise  # the store, say: the effect stays pending and is resumed
        except Exception as exc:  # noqa: BLE001 - a channel bug, logged masked
            log_crash(log, exc, effect.channel, context, "cancelling")

    # -- timers --------------------------------------------------------------------

    def _arm(self, session_id: str, timer_id: str, due_at: datetime) -> None:
        key = (session_id, timer_id)
        previous = self._timer_tasks.pop(key, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.ensure_future(
            self._sleep_then_fire(session_id, timer_id, due_at)
        )
        self._timer_tasks[key] = task

    async def _sleep_then_fire(
        self, session_id: str, timer_id: str, due_at: datetime
    ) -> None:
        await self._clock.sleep((due_at - self._clock.now()).total_seconds())
        if self._timer_tasks.get((session_id, timer_id)) is asyncio.current_task():
            del self._timer_tasks[session_id, timer_id]

        async def fire() -> None:
            await self._fire(session_id, timer_id)

        _ = self._spawn(fire())

    async def _fire(self, session_id: str, timer_id: str) -> bool:
        """Fire a stored timer that is due, holding the session's lease; return whether it fired.

        The lease and the store decide, so that one replica fires each timer:
        a timer that is gone (fired elsewhere, cancelled) or was moved later
        is left alone. A session another replica holds is tried again after
        a while, unless the timer is fired meanwhile.
        """
        try:
            return await self._try_fire(session_id, timer_id)
        except Exception:  # whatever the cause, the timer stays due
            log.exception("timer %s of session %s failed", timer_id, session_id)
            return False

    async def _try_fire(self, session_id: str, timer_id: str) -> bool:
        """`_fire`, except that a firing that fails raises (the worker backs the timer off)."""
        try:
            async with self._leases.holding(session_id) as held:
                if not held:
                    self._arm_retry(session_id, timer_id)
                    return False
                now = self._clock.now()
                stored = await self._store.timers(session_id)
                if not any(
                    timer.timer_id == timer_id and timer.due_at <= now
                    for timer in stored
                ):
                    return False
                # The save that records the firing removes the timer, so a
                # crash cannot leave it behind to fire again.
                await self._apply(
                    session_id,
                    TimerFired(timer_id=timer_id, at=now),
                    fired_timer=timer_id,
                )
        except StoreUnavailableError:
            log.warning(
                "timer %s of session %s: store unavailable", timer_id, session_id
            )
            self._arm_retry(session_id, timer_id)
            return False
        return True

    def _arm_retry(self, session_id: str, timer_id: str) -> None:
        if not self._closed:
            retry_at = self._clock.now() + timedelta(seconds=self._leases.ttl / 3)
            self._arm(session_id, timer_id, retry_at)


# -- what every runtime does around a channel call -------------------------------


def index_policies(policies: Iterable[Policy]) -> dict[str, Policy]:
    """Policies by hash.

    Raises:
        ConfigurationError: one name and version with two contents: verdicts
            would name the same version for different rules.
    """
    by_hash: dict[str, Policy] = {}
    versions: dict[tuple[str, str], Policy] = {}
    for policy in policies:
        by_hash[policy.hash] = policy
        twin = versions.setdefault((policy.name, policy.version), policy)
        if twin.hash != policy.hash:
            raise ConfigurationError(
                message=f"policy {policy.name!r} version {policy.version!r} is "
                f"given twice with different content (sha256 {twin.hash[:12]} "
                f"and {policy.hash[:12]}): give the changed one a new version"
            )
    return by_hash


async def record_late(
    store: SessionStore, event: ProviderEvent, error: Exception, *, at: datetime
) -> bool:
    """Append ``event.late`` for ``event`` to its session's trail in ``store``.

    Retried on a version conflict; returns whether it was recorded (``False``
    when the session kept changing, which is logged).
    """
    for _ in range(_SAVE_TRIES):
        session, version = await store.load(event.session_id)
        session, record = AuditTrail.late_event(
            session, event, at=at, reason=str(error)
        )
        try:
            await store.save(session, expected_version=version, audit=[record])
        except ConcurrentUpdateError:
            continue
        return True
    log.warning(
        "late event %s of session %s was not recorded: the session kept changing",
        event.dedupe_key,
        event.session_id,
    )
    return False


def find_policy(
    policies: Mapping[str, Policy], default: Policy, ref: str | None
) -> Policy:
    """A policy by hash or name (the latest of that name), or ``default`` for ``None``.

    Raises:
        ConfigurationError: no such policy.
    """
    if ref is None:
        return default
    if ref in policies:
        return policies[ref]
    matching = [p for p in policies.values() if p.name == ref]
    if not matching:
        raise ConfigurationError(message=f"no policy named or hashed {ref!r}")
    return matching[-1]


def load_state(channel: Channel, data: Mapping[str, Any]) -> Any:
    """A channel's per-step state from its stored form (``None`` when it has none)."""
    kind = channel.state_type
    if kind is None or not data:
        return None
    return converter.structure(dict(data), kind)


def dump_state(state: Any) -> dict[str, Any]:
    """A channel's per-step state in the form sessions store."""
    if state is None:
        return {}
    data = converter.unstructure(state)
    return data if isinstance(data, dict) else {"value": data}


def outcome_input(record: StepRecord, outcome: StepOutcome, *, at: datetime) -> Input:
    """The core input for what a channel answered about ``record``'s attempt."""
    state = dump_state(outcome.state)
    if isinstance(outcome, Finished):
        return StepFinished(
            step_id=record.step_id,
            attempt=record.attempt,
            at=at,
            result=outcome.result,
            channel_state=state,
        )
    kind = StepStarted if record.state is StepState.RUNNING else StepUpdated
    return kind(
        step_id=record.step_id,
        attempt=record.attempt,
        at=at,
        challenge=outcome.challenge,
        channel_state=state,
        timers=outcome.timers,
    )


def timer_writes(
    effects: Sequence[Effect],
) -> tuple[list[Effect], list[tuple[str, datetime]], list[str]]:
    """Split a transition's effects: those for the outbox, and its timer writes.

    A save writes timers to the store itself, in the same atomic write, so
    ``ScheduleTimer`` and ``CancelTimer`` need no outbox entry and no write
    of their own. Returns the outbox's effects, the timers to schedule
    (``(timer_id, due_at)``) and the timers to cancel: for each timer, what
    the last of its effects asks, as running them in order would leave it.
    """
    outbox: list[Effect] = []
    last: dict[str, datetime | None] = {}
    for effect in effects:
        if type(effect) is ScheduleTimer:
            last[effect.timer_id] = effect.due_at
        elif type(effect) is CancelTimer:
            last[effect.timer_id] = None
        else:
            outbox.append(effect)
    if not last:
        return outbox, [], []
    scheduled = [(timer_id, due) for timer_id, due in last.items() if due is not None]
    cancelled = [timer_id for timer_id, due in last.items() if due is None]
    return outbox, scheduled, cancelled


def crash_report(exc: BaseException, applicant: Applicant) -> str:
    """The traceback of a channel's crash, with the applicant's personal values masked.

    A channel's own exception may quote what it was given (``bad number
    +8613800138000``), and logs outlive the session's retention.
    """
    return applicant.redact("".join(traceback.format_exception(exc)).rstrip())


def log_crash(
    logger: logging.Logger,
    exc: BaseException,
    channel: str,
    context: StepContext,
    doing: str,
) -> None:
    """Log a channel's crash (``doing``: starting, handling input for...) with its traceback, masked."""
    logger.error(
        "channel %s crashed %s step %s of session %s\n%s",
        channel,
        doing,
        context.step_id,
        context.session_id,
        crash_report(exc, context.applicant),
    )


def handle_crash(
    exc: Exception, record: StepRecord, context: StepContext, *, at: datetime
) -> StepErrored:
    """The core input for a channel's crash while handling input for ``record``'s attempt.

    The step ends in error without failover: the attempt was under way, and
    the core cancels it. The text is masked, since a runtime may keep it
    where the session's retention does not reach (Temporal's history).
    """
    error, provider = call_failure(exc, context.provider)
    return StepErrored(
        step_id=record.step_id,
        attempt=record.attempt,
        at=at,
        error=context.applicant.redact(error),
        provider=provider,
        failover=False,
    )


def call_failure(exc: Exception, provider: str | None) -> tuple[str, str | None]:
    """The error text and provider a failed channel call records in ``StepErrored``."""
    if isinstance(exc, MultiverifyError):
        named = (
            exc.provider
            if isinstance(exc, ProviderError | PullNotPermittedError)
            else None
        )
        return f"{type(exc).__name__}: {exc}", provider if named is None else named
    return f"channel error: {type(exc).__name__}: {exc}", provider


def fails_over(exc: Exception) -> bool:
    """Whether the step's next provider may take over from a failed ``channel.start``.

    Not after a refusal the channel made before any request, which every
    provider would meet alike: the bureau's purpose and consent guard.
    """
    return not (isinstance(exc, PullNotPermittedError) and exc.provider is None)


async def call_start(
    channel: Channel,
    context: StepContext,
    retry: RetrySettings,
    tries: list[dict[str, Any]],
    *,
    clock: Clock,
    rng: random.Random,
) -> StepOutcome:
    """``channel.start`` with the step's retries of transient provider errors.

    Each try is noted in ``tries`` (when, and the error if any) for the audit.
    """

    async def once() -> StepOutcome:
        note: dict[str, Any] = {"at": clock.now().isoformat(), "error": None}
        tries.append(note)
        try:
            return await channel.start(context)
        except Exception as exc:
            note["error"] = f"{type(exc).__name__}: {exc}"
            raise

    try:
        return await once()
    except ProviderError as exc:
        if not exc.retryable or retry.attempts <= 1:
            raise
        first = exc
    # The first try already failed; tenacity takes over from there, and
    # its attempt 1 re-raises that error so backoff and budgets count it.
    count = 0
    outcome: StepOutcome | None = None
    async for attempt in retrying(retry, sleep=clock.sleep, rng=rng):
        with attempt:
            count += 1
            if count == 1:
                raise first
            outcome = await once()
    assert outcome is not None  # noqa: S101 - tenacity re-raises when every try failed
    return outcome
