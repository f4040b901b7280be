"""The SessionStore port: where sessions, their outbox, timers and audit live."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol, Self, runtime_checkable

import attrs

from .._audit import AuditEvent
from .._serde import effect_to_json, session_from_json
from .._session import Effect, Session
from ..exceptions import ConcurrentUpdateError, SessionNotFoundError

__all__ = [
    "AtomicQuotas",
    "ChangeFeed",
    "DueTimer",
    "EffectClaim",
    "OpenableStore",
    "PendingEffect",
    "QueueItem",
    "Quota",
    "QuotaTake",
    "Quotas",
    "SessionStore",
    "SharedState",
    "WorkQueue",
]


@attrs.frozen(kw_only=True)
class PendingEffect:
    """An effect saved with a transition and not yet completed.

    Attributes:
        session_id: the session that saved it.
        effect: the effect.
        claimed_by: the owner whose claim it carries (the replica running
            it), or ``None`` if it was never claimed.
        claimed_until: when that claim lapses, unless renewed.
        session: the session and its version as the store read them with
            the claim (`SessionStore.claim_effects` gives it where the store
            can read it in the same call, so the replica running the effect
            need not load it); ``None`` otherwise. It may be older than the
            stored session by the time the effect runs: its save is a
            compare-and-set as always. Added in 0.1.
    """

    session_id: str
    effect: Effect
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    session: tuple[Session, int] | None = attrs.field(
        default=None, eq=False, repr=False
    )

    def claimed(self, at: datetime) -> bool:
        """Whether a claim holds the effect at ``at``."""
        return self.claimed_until is not None and self.claimed_until > at


@attrs.frozen(kw_only=True)
class EffectClaim:
    """Who runs the effects a create or save writes, and until when unless renewed.

    A claim keeps other replicas' workers off an effect while its owner runs
    it; the owner renews it while the effect runs, and an owner that dies
    lets it lapse, after which a worker may take the effect over.
    """

    owner: str
    until: datetime


@attrs.frozen(kw_only=True)
class DueTimer:
    """A durable timer of a session."""

    session_id: str
    timer_id: str
    due_at: datetime


@attrs.frozen(kw_only=True)
class Quota:
    """The answer of [`SharedState.consume`][multiverify.stores.SharedState.consume].

    Attributes:
        allowed: whether the amount was taken (and recorded).
        used: what the window holds after the call (the amount included when
            it was allowed).
        limit: the limit it was checked against.
        retry_at: when refused, the earliest moment at which the same amount
            would fit, as old entries leave the window; ``None`` when allowed,
            or when the amount exceeds the limit on its own.
    """

    allowed: bool
    used: float
    limit: float
    retry_at: datetime | None = None


@attrs.frozen(kw_only=True)
class QuotaTake:
    """One amount to take from a sliding window, as one of the takes of [`AtomicQuotas.consume_all`][multiverify.stores.AtomicQuotas.consume_all].

    Attributes:
        key: the window's key, as `SharedState.consume` takes it.
        window: the window's length, in seconds.
        limit: the most the window may hold.
        amount: what this take adds to it.

    Added in 0.1.
    """

    key: str
    window: float
    limit: float
    amount: float = 1.0


@attrs.frozen(kw_only=True)
class Quotas:
    """The answer of [`AtomicQuotas.consume_all`][multiverify.stores.AtomicQuotas.consume_all]: every take recorded, or none.

    Attributes:
        quotas: when every take fit, each one's answer in the order given
            (allowed, ``used`` including its amount); empty when one did not.
        refused: the first take, in the order given, that did not fit (with
            the takes before it counted); ``None`` when every take was
            recorded.
        refusal: that take's answer, as `SharedState.consume` would give
            it: not allowed, what its window holds, its limit and
            ``retry_at``.

    Added in 0.1.
    """

    quotas: tuple[Quota, ...] = ()
    refused: QuotaTake | None = None
    refusal: Quota | None = None

    @property
    def allowed(self) -> bool:
        """Whether every take was recorded."""
        return self.refused is None


@attrs.frozen(kw_only=True)
class QueueItem:
    """One item of a [`WorkQueue`][multiverify.stores.WorkQueue]: a task for a person or a worker.

    Attributes:
        queue: the queue's name, such as ``agent-desk``.
        item_id: unique within its queue; enqueuing it again changes nothing.
        body: the item's content, as JSON text.
        priority: higher is served first; equal priorities go oldest first.
        enqueued_at: when it was first enqueued.
        available_at: it cannot be claimed before this moment.
        claimed_by: who holds the claim, while it holds (``None`` when free).
        claimed_until: when the claim lapses and the item is free again.
        claims: how many times it was claimed so far.
    """

    queue: str
    item_id: str
    body: str
    priority: int
    enqueued_at: datetime
    available_at: datetime
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    claims: int = 0

    def claimed(self, at: datetime) -> bool:
        """Whether a claim holds the item at ``at``."""
        return self.claimed_until is not None and self.claimed_until > at


@runtime_checkable
class SharedState(Protocol):
    """**Protocol**: small facts shared by every replica: quotas and expiring values.

    Sliding-window quotas serve abuse and cost controls (sends per phone number,
    spend per day); expiring values serve caches (a credit report reused within
    its TTL) and short locks (``only_if_absent``). Each call is atomic on its
    key across replicas. Time always comes in as ``at``: the store reads no clock.
    """

    async def consume(
        self,
        key: str,
        /,
        *,
        at: datetime,
        window: float,
        limit: float,
        amount: float = 1.0,
    ) -> Quota:
        """Take ``amount`` from the sliding window ``(at - window, at]`` of ``key``.

        If what the window already holds plus ``amount`` stays within
        ``limit``, the amount is recorded at ``at`` and the quota is allowed;
        otherwise nothing is recorded. ``window`` is in seconds.
        """
        ...

    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        """Give back ``amount`` that a `consume` of ``key`` took at ``at``.

        Removes one entry of that amount recorded at that moment, so the
        window has room for it again; returns whether there was one (a
        window that already let it go has nothing to give back). Added in 0.1.
        """
        ...

    async def get_value(self, key: str, /, *, at: datetime) -> str | None:
        """The value stored under ``key``, or ``None`` if there is none or it expired."""
        ...

    async def put_value(
        self,
        key: str,
        value: str,
        /,
        *,
        at: datetime,
        ttl: float,
        only_if_absent: bool = False,
    ) -> bool:
        """Store ``value`` until ``at + ttl`` seconds; return whether it was stored.

        With ``only_if_absent`` a live value under the key is left alone and
        ``False`` is returned (an expired one is replaced): a lease or lock.
        """
        ...

    async def replace_value(
        self, key: str, value: str, /, *, expected: str, at: datetime, ttl: float
    ) -> bool:
        """Store ``value`` until ``at + ttl`` seconds, only if ``key`` holds ``expected`` live at ``at``.

        A compare-and-set in one atomic call: ``False``, and nothing
        stored, when the key is missing, its value expired, or it holds
        another value (renew a lease only while you still hold it).

        Added in 0.1.
        """
        ...

    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        """Delete ``key``; with ``value``, only if it holds that value (release a lock you own).

        Returns whether something was deleted.
        """
        ...

    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        """Delete the shared state lapsed at ``at``; return how many entries went.

        That is every value past its TTL, and every quota entry older than
        the window it was taken with. Lapsed state already reads as missing
        (or outside its window); the sweep frees its room. Stores that hold
        rows delete them ``batch`` at a time, each batch on its own, so a
        large backlog never holds a lock for long; a store whose keys expire
        on their own (Redis) removes nothing and returns 0. The worker runs
        it periodically, and ``multiverify store purge`` once. Added in 0.1.
        """
        ...


@runtime_checkable
class AtomicQuotas(Protocol):
    """**Protocol**: an optional capability of [`SharedState`][multiverify.stores.SharedState]: take several quotas in one atomic step.

    An SMS send counts against several windows at once (per number, per
    applicant, per client IP, the spend caps): with this capability it
    takes them all or none, so a send refused by one limit never holds the
    others meanwhile, and a replica that dies in the middle leaves nothing
    half taken. The [`SmsCodeChannel`][multiverify.channels.SmsCodeChannel]
    uses it where the store has it; on a `SharedState` without it, it takes
    the limits one at a time and gives back those taken before a refusal
    ([`SharedState.refund`][multiverify.stores.SharedState.refund]).

    `MemoryStore`, `SqliteStore`, `PostgresStore` and `RedisStore` have it.

    Added in 0.1.
    """

    async def consume_all(
        self, takes: Sequence[QuotaTake], /, *, at: datetime
    ) -> Quotas:
        """Take every one of ``takes`` at ``at``, or none of them, in one atomic call.

        The takes are checked in the order given, each as
        `SharedState.consume` checks one against its window ``(at - window,
        at]``, with the takes before it counted (two takes of one key add
        up). If every take fits, each is recorded at ``at``, as `consume`
        records one (and `SharedState.refund` gives it back); otherwise
        nothing is recorded, and the answer names the first take that did
        not fit, with its refusal (and ``retry_at``). An empty
        ``takes`` is allowed and records nothing. Atomic across replicas,
        and against `consume` and `refund` of the same keys: PostgreSQL
        takes the keys' locks in one consistent order in one transaction,
        SQLite takes the file's write lock for the call, Redis runs one
        script over every key.
        """
        ...


class WorkQueue(Protocol):
    """**Protocol**: named queues of items claimed with a lease, from any replica.

    A claim holds an item for ``lease`` seconds; a claimer that dies lets the
    lease lapse and the item goes back to the queue. Serves the agent desk and
    the review queue. Time comes in as ``at``.
    """

    async def enqueue(
        self,
        queue: str,
        item_id: str,
        body: str,
        /,
        *,
        at: datetime,
        priority: int = 0,
        available_at: datetime | None = None,
    ) -> bool:
        """Add an item; return ``False`` (and change nothing) if the id is already queued."""
        ...

    async def claim(
        self,
        queue: str,
        /,
        *,
        owner: str,
        at: datetime,
        lease: float,
        item_id: str | None = None,
    ) -> QueueItem | None:
        """Claim the next free item (highest priority, then oldest), or the given one.

        An item is free when it is available at ``at`` and no unexpired claim
        holds it. Returns the claimed item, or ``None`` when nothing is free.
        """
        ...

    async def extend(
        self, queue: str, item_id: str, /, *, owner: str, at: datetime, lease: float
    ) -> bool:
        """Renew ``owner``'s claim until ``at + lease``.

        ``False`` when the item is gone or its latest claim is not ``owner``'s
        (a lapsed claim nobody took over can still be renewed).
        """
        ...

    async def release(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        owner: str,
        available_at: datetime | None = None,
    ) -> bool:
        """Give ``owner``'s claim back, optionally not claimable before ``available_at``.

        ``False`` when the item is gone or its latest claim is not ``owner``'s.
        """
        ...

    async def update_item(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        body: str | None = None,
        priority: int | None = None,
    ) -> bool:
        """Change an item's body or priority, claimed or not; ``False`` if there is no such item."""
        ...

    async def complete(
        self, queue: str, item_id: str, /, *, owner: str | None = None
    ) -> bool:
        """Remove an item; return whether it was removed.

        With ``owner``, only if the latest claim is ``owner``'s (a lapsed
        claim nobody took over still counts, a claim taken over does not).
        Without it the item goes whoever holds it (its session ended).
        """
        ...

    async def queue_items(self, queue: str, /) -> list[QueueItem]:
        """Every item of the queue, in claim order (priority, then age)."""
        ...


class SessionStore(SharedState, WorkQueue, Protocol):
    """**Protocol**: durable sessions with compare-and-set saves.

    Every store passes the same contract suite (``tests/stores``). A save
    writes the session, its new effects (the outbox) and its audit events
    atomically, and only if the stored version is still ``expected_version``.
    Every store is also [`SharedState`][multiverify.stores.SharedState] and a
    [`WorkQueue`][multiverify.stores.WorkQueue], so the channels and desks
    that need quotas, caches or queues use the store the sessions live in.
    """

    async def create(
        self,
        session: Session,
        *,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
    ) -> int:
        """Store a new session at version 1 and return 1.

        ``effects`` go into the outbox carrying ``claim`` (unclaimed without
        one), and ``timers`` (``(timer_id, due_at)``) are scheduled, in the
        same atomic write.

        Raises:
            ConcurrentUpdateError: a session with this id exists
                (``expected_version`` is 0).
        """
        ...

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        """Return the session and its version.

        Raises:
            SessionNotFoundError: no such session.
        """
        ...

    async def save(
        self,
        session: Session,
        *,
        expected_version: int,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        completed: Sequence[str] = (),
        fired_timer: str | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
        cancelled_timers: Sequence[str] = (),
    ) -> int:
        """Replace the session if its version is ``expected_version``; return the new version.

        In the same atomic write: ``effects`` go into the outbox carrying
        ``claim``; the effects whose ids are ``completed`` leave it (the
        save records their result); the timer ``fired_timer`` is removed
        (the save records its firing, so it cannot fire twice), then the
        timers ``cancelled_timers`` too, and ``timers`` (``(timer_id,
        due_at)``) are scheduled as `schedule_timer` would (a fired timer
        scheduled again stays, at its new time).

        Raises:
            SessionNotFoundError: no such session.
            ConcurrentUpdateError: another writer saved first; nothing was written.
        """
        ...

    async def pending_effects(
        self, session_id: str | None = None, /
    ) -> list[PendingEffect]:
        """Effects not yet completed, oldest first (all sessions when no id is given)."""
        ...

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        """Mark an effect done (idempotent)."""
        ...

    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        """Mark ``effects`` (``(session_id, effect_id)``) done, in one call (idempotent).

        What the Verifier uses for effects that finish close together: one
        write for all of them instead of one each.
        """
        ...

    async def claim_effects(
        self, owner: str, /, *, at: datetime, until: datetime, limit: int = 100
    ) -> list[PendingEffect]:
        """Claim up to ``limit`` pending effects no live claim holds, for ``owner`` until ``until``.

        An effect is free when it carries no claim or its claim lapsed at
        ``at``. The claim is taken atomically: replicas claiming at once get
        different effects. Returns the effects claimed, as claimed now, each
        with its session (``PendingEffect.session``) where the store reads
        it in the same call (the stores of multiverify do; a store that
        leaves it ``None`` has the session loaded instead).
        """
        ...

    async def extend_effect_claims(
        self, owner: str, effects: Sequence[tuple[str, str]], /, *, until: datetime
    ) -> int:
        """Move the claims ``owner`` holds on ``effects`` (``(session_id, effect_id)``) to ``until``.

        One call for every effect listed; effects gone, or claimed by
        another owner since, are left alone. An ``until`` in the past gives
        the claims back. Returns how many claims were moved.
        """
        ...

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        """Create or move a timer (idempotent by ``(session_id, timer_id)``)."""
        ...

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        """Remove a timer if it exists."""
        ...

    async def move_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /, *, expected: datetime
    ) -> bool:
        """Move a timer to ``due_at`` only if it is due at ``expected``; return whether it moved.

        A compare-and-set in one atomic call (the instants are compared): a
        timer moved, cancelled or fired since it was read is left as it is.
        It keeps its place among timers due at the same instant.

        Added in 0.1.
        """
        ...

    async def due_timers(self, now: datetime, /, *, limit: int = 100) -> list[DueTimer]:
        """Timers due at or before ``now``, earliest first."""
        ...

    async def timers(self, session_id: str | None = None, /) -> list[DueTimer]:
        """Every scheduled timer (of one session when an id is given), earliest first."""
        ...

    async def record_event_once(self, session_id: str, dedupe_key: str, /) -> bool:
        """Remember a delivery; return ``False`` if it was seen before."""
        ...

    async def forget_event(self, session_id: str, dedupe_key: str, /) -> None:
        """Forget a delivery that could not be applied, so its redelivery counts.

        Forgetting a key never remembered does nothing.
        """
        ...

    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        """The audit trail: one session's, in order, or every session's."""
        ...

    async def session_ids(self) -> list[str]:
        """Ids of every stored session, oldest first."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """**Protocol**: an optional store capability: say when a session changed.

    [`Verifier.wait`][multiverify.Verifier.wait] and
    [`Verifier.challenge`][multiverify.Verifier.challenge] subscribe to the
    session they wait for and load it again when told it changed, so a
    change another replica saves is seen as soon as it is committed; on a
    store without the capability they find it by polling. A notification
    says only that the session changed (PostgreSQL and Redis send its id and
    nothing else): it may come twice, or for a change already seen, and it
    is lost while a listener is disconnected, so a waiter goes on polling,
    at a longer pause, and never depends on one. A listener on a channel
    per session (PostgreSQL, Redis) tells a session's subscribers each time
    the server confirms that it listens for the session, first or again
    after connecting again, since a change committed before then was
    notified to nobody here: it reads the session's stored version and
    calls ``on_change.confirmed(version)`` where the callback has that
    method (the Verifier then loads the session only if it moved), else
    ``on_change.missed()`` where it has that one (changes may have gone
    unheard; the Verifier's then expects no notification of its own saves
    any more), else ``on_change()``.

    `MemoryStore`, `SqliteStore`, `PostgresStore` and `RedisStore` have it.

    Added in 0.1.
    """

    @property
    def notifies_every_writer(self) -> bool:
        """Whether changes saved through other store objects (other replicas) are notified too.

        ``False`` when only this object's own saves are (SQLite: another
        process writing the same file is not heard; a `PostgresStore` given
        only a pool has no connection to listen on): a waiter then polls as
        if there were no notifications, and is woken early by those there are.
        """
        ...

    def subscribe(
        self, session_id: str, on_change: Callable[[], None], /
    ) -> Callable[[], None]:
        """Call ``on_change()``, on the event loop, after every committed create or save of the session.

        Call it from a coroutine: a store may start its listener then.
        Returns a function that ends the subscription (idempotent).
        """
        ...


class OpenableStore:
    """Base for stores that connect: ``async with`` opens, and closes on exit (or when opening fails).

    Subclasses implement ``open`` (connect, migrate; idempotent) and
    ``aclose`` (release connections; idempotent).
    """

    async def open(self) -> None:
        """Connect and bring the schema up to date (idempotent)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections (idempotent)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            # Refused or cut short: what the attempt opened (a pool, a
            # thread) is released, as no ``__aexit__`` follows.
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- shared by the store implementations ----------------------------------------


def session_missing(session_id: str) -> SessionNotFoundError:
    """The error for a session no store holds."""
    return SessionNotFoundError(
        message=f"no session {session_id!r}", session_id=session_id
    )


def session_exists(session_id: str) -> ConcurrentUpdateError:
    """The error for creating a session whose id is taken."""
    return ConcurrentUpdateError(
        message=f"session {session_id} already exists",
        session_id=session_id,
        expected_version=0,
    )


def version_moved(
    session_id: str, current: int, expected: int
) -> ConcurrentUpdateError:
    """The error for a save whose compare-and-set lost."""
    return ConcurrentUpdateError(
        message=f"session {session_id} is at version {current}, not {expected}",
        session_id=session_id,
        expected_version=expected,
    )


@attrs.frozen
class SerialisedWrites:
    """What a create or save writes besides the session, serialised up front."""

    effects: list[tuple[str, str]]  # (effect_id, body)
    audit: list[str]

    @classmethod
    def of(
        cls, effects: Sequence[Effect], audit: Sequence[AuditEvent]
    ) -> SerialisedWrites:
        return cls(
            [(effect.effect_id, effect_to_json(effect)) for effect in effects],
            [event.to_json() for event in audit],
        )


def with_sessions(
    claimed: Sequence[PendingEffect], bodies: Mapping[str, tuple[str | bytes, int]]
) -> list[PendingEffect]:
    """Claimed effects with their sessions, from each session's JSON and version.

    Each session is read once however many of its effects were claimed; an
    effect whose session is not in ``bodies`` keeps ``session=None``.
    """
    sessions = {
        session_id: (session_from_json(body), int(version))
        for session_id, (body, version) in bodies.items()
    }
    return [
        attrs.evolve(pending, session=sessions.get(pending.session_id))
        for pending in claimed
    ]


def window_frees_at(
    entries: Iterable[tuple[datetime, float]],
    *,
    window: float,
    limit: float,
    amount: float,
) -> datetime | None:
    """When enough of a sliding window's entries (oldest first) leave it for ``amount`` to fit.

    ``None`` when ``amount`` exceeds ``limit`` on its own.
    """
    if amount > limit:
        return None
    listed = list(entries)
    remaining = sum(taken for _, taken in listed)
    for at, taken in listed:
        remaining -= taken
        if remaining + amount <= limit:
            return at + timedelta(seconds=window)
    return None  # pragma: no cover - the loop frees the whole window at the latest


def refused_quota(
    used: float,
    entries: Iterable[tuple[datetime, float]],
    *,
    window: float,
    limit: float,
    amount: float,
) -> Quota:
    """The answer to a ``consume`` that does not fit: the window's entries (oldest first) say when it would."""
    return Quota(
        allowed=False,
        used=used,
        limit=limit,
        retry_at=window_frees_at(entries, window=window, limit=limit, amount=amount),
    )


def fit_takes(
    takes: Sequence[QuotaTake], held: Sequence[float]
) -> tuple[tuple[Quota, ...], int | None]:
    """Check ``takes`` in order, given what each one's window holds (``held``), with the earlier takes of its key counted.

    Returns the answers of the takes that fit, and the index of the first
    that does not (``None`` when every one fits).
    """
    batch: dict[str, float] = {}
    quotas: list[Quota] = []
    for index, (take, used) in enumerate(zip(takes, held, strict=True)):
        # The batch's entries are at ``at``, inside any window of some length.
        total = used + (batch.get(take.key, 0.0) if take.window > 0 else 0.0)
        if total + take.amount > take.limit:
            return tuple(quotas), index
        batch[take.key] = batch.get(take.key, 0.0) + take.amount
        quotas.append(Quota(allowed=True, used=total + take.amount, limit=take.limit))
    return tuple(quotas), None


def refused_take(
    takes: Sequence[QuotaTake],
    index: int,
    entries: Iterable[tuple[datetime, float]],
    *,
    at: datetime,
) -> Quotas:
    """The answer to a ``consume_all`` whose take ``index`` does not fit.

    ``entries`` are those its key holds (oldest first); the ones inside its
    window count, and so do the earlier takes of its key, at ``at``.
    """
    take = takes[index]
    start = at - timedelta(seconds=take.window)
    inside = [entry for entry in entries if entry[0] > start]
    if take.window > 0:
        inside += [(at, t.amount) for t in takes[:index] if t.key == take.key]
    inside.sort(key=lambda entry: entry[0])
    return Quotas(
        refused=take,
        refusal=refused_quota(
            sum(amount for _, amount in inside),
            inside,
            window=take.window,
            limit=take.limit,
            amount=take.amount,
        ),
    )


def widest_windows(takes: Sequence[QuotaTake]) -> dict[str, float]:
    """Each key of ``takes`` with the widest window it is taken with, in the order first seen."""
    widest: dict[str, float] = {}
    for take in takes:
        widest[take.key] = max(take.window, widest.get(take.key, take.window))
    return widest


def queue_order(item: QueueItem) -> tuple[int, datetime, str]:
    """The order items are claimed in: highest priority, then oldest, then id."""
    return (-item.priority, item.enqueued_at, item.item_id)


# How long a session is waited for before a store listening on a channel per
# session listens for it, in real seconds. A wait that ends sooner (its
# verdict decided on this replica, at once) costs the server nothing; a
# change saved elsewhere meanwhile is seen once the listening is confirmed,
# about when a waiter's first short look would have found it (a fiftieth of
# the default ``watch_poll``).
LISTEN_AFTER = 0.02


class Subscribers:
    """The callbacks a store calls when a session changes, by session id.

    A store that listens on a channel per session follows the sessions
    subscribed to: once `moved` returns, `difference` says which to start
    listening for (subscribed to for ``listen_after`` real seconds) and
    which to stop listening for (their last subscriber left).
    """

    def __init__(self, *, listen_after: float = 0.0) -> None:
        self._by_session: dict[str, dict[object, Callable[[], None]]] = {}
        self._listen_after = listen_after
        # The sessions subscribed to for less than ``listen_after``, with
        # the timer that says when they are due.
        self._young: dict[str, asyncio.TimerHandle] = {}
        self._moved = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._by_session)

    def add(self, session_id: str, on_change: Callable[[], None]) -> Callable[[], None]:
        """Subscribe ``on_change`` to the session; return the function that unsubscribes it."""
        token = object()
        callbacks = self._by_session.get(session_id)
        if callbacks is None:
            callbacks = self._by_session[session_id] = {}
            if self._listen_after:
                self._young[session_id] = asyncio.get_running_loop().call_later(
                    self._listen_after, self._due, session_id
                )
            else:
                self._moved.set()
        callbacks[token] = on_change

        def cancel() -> None:
            if self._by_session.get(session_id) is not callbacks:
                return  # cancelled already, and maybe subscribed to again since
            callbacks.pop(token, None)
            if not callbacks:
                del self._by_session[session_id]
                young = self._young.pop(session_id, None)
                if young is not None:
                    young.cancel()
                self._moved.set()

        return cancel

    def _due(self, session_id: str) -> None:
        del self._young[session_id]
        self._moved.set()

    async def moved(self) -> None:
        """Return once there may be sessions to start or stop listening for, since `difference` was last called."""
        await self._moved.wait()

    def difference(self, listening: set[str]) -> tuple[set[str], set[str]]:
        """The sessions to start listening for and those to stop listening for, given those ``listening``."""
        self._moved.clear()
        subscribed = self._by_session.keys()
        started = subscribed - listening - self._young.keys()
        return started, listening - subscribed

    def notify(self, session_id: str) -> None:
        """Tell the session's subscribers it changed."""
        callbacks = self._by_session.get(session_id)
        if callbacks:
            for on_change in list(callbacks.values()):
                on_change()

    def confirmed(self, versions: Mapping[str, int | None]) -> None:
        """Tell the subscribers of these sessions that they are listened for now, and at which version each is stored.

        The listener began to listen for them (first, or again after
        connecting again), so notifications sent before may have gone
        unheard; read after the listening began, the version covers every
        change they told of. A callback with a ``confirmed`` method gets it
        (the Verifier loads the session again only if it moved); when the
        version is not known (``None``: the session is missing, or could
        not be read), or the callback has no such method, one with a
        ``missed`` method has that called (changes may have gone unheard),
        any other is called.
        """
        for session_id, version in versions.items():
            for on_change in list(self._by_session.get(session_id, {}).values()):
                confirm = getattr(on_change, "confirmed", None)
                if confirm is not None and version is not None:
                    confirm(version)
                else:
                    getattr(on_change, "missed", on_change)()
