"""An in-memory SessionStore: for tests, the sandbox and one-process apps."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs

from .._audit import AuditEvent
from .._session import Effect, Session
from ._base import (
    DueTimer,
    EffectClaim,
    PendingEffect,
    QueueItem,
    Quota,
    Quotas,
    QuotaTake,
    Subscribers,
    fit_takes,
    queue_order,
    refused_quota,
    refused_take,
    session_exists,
    session_missing,
    version_moved,
    widest_windows,
)

__all__ = ["MemoryStore"]

_Row = tuple[str, int, datetime, str, str, str, str]

# Once the store holds this many values (or quota windows), or twice what
# was live at the last drop if that is more, the next new key drops what
# lapsed: a store nobody sweeps (a channel's own fallback) stays about the
# size of what it still needs.
_ROOM = 1024


def _event(row: _Row) -> AuditEvent:
    session_id, index, at, kind, body, prev, digest = row
    return AuditEvent(
        session_id=session_id,
        index=index,
        at=at,
        kind=kind,
        body=body,
        prev=prev,
        hash=digest,
    )


class MemoryStore:
    """Keeps everything in dictionaries; nothing survives the process.

    Sessions are kept as the immutable objects they are, so there is no
    serialisation cost. Every Verifier sharing the store is told of each
    save at once (it is a [`ChangeFeed`][multiverify.stores.ChangeFeed]).
    """

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Session, int]] = {}
        self._effects: dict[str, dict[str, Effect]] = {}
        self._timers: dict[tuple[str, str], datetime] = {}
        self._seen: set[tuple[str, str]] = set()
        # Audit events as plain tuples: the collector stops tracking a tuple
        # of strings and times, and a long-lived store holds many of them.
        self._audit: dict[str, list[_Row]] = {}
        self._windows: dict[str, deque[tuple[datetime, float]]] = {}
        # When each window holds nothing it recorded any more (its last
        # entry plus the widest window it was consumed with).
        self._window_ends: dict[str, datetime] = {}
        self._values: dict[str, tuple[str, datetime]] = {}
        self._room = {"values": _ROOM, "windows": _ROOM}
        self._queues: dict[str, dict[str, QueueItem]] = {}
        # Claims on pending effects: (session_id, effect_id) -> (owner, until).
        self._claims: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._changes = Subscribers()

    def __repr__(self) -> str:
        return f"<multiverify.stores.MemoryStore(sessions={len(self._sessions)})>"

    async def create(
        self,
        session: Session,
        *,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
    ) -> int:
        if session.session_id in self._sessions:
            raise session_exists(session.session_id)
        self._sessions[session.session_id] = (session, 1)
        self._write(session.session_id, effects, audit)
        self._claim(session.session_id, effects, claim)
        for timer_id, due_at in timers:
            self._timers[session.session_id, timer_id] = due_at
        self._changes.notify(session.session_id)
        return 1

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise session_missing(session_id) from None

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
        found = self._sessions.get(session.session_id)
        if found is None:
            raise session_missing(session.session_id)
        version = found[1]
        if version != expected_version:
            raise version_moved(session.session_id, version, expected_version)
        self._sessions[session.session_id] = (session, version + 1)
        for effect_id in completed:
            await self.complete_effect(session.session_id, effect_id)
        if fired_timer is not None:
            await self.cancel_timer(session.session_id, fired_timer)
        for timer_id in cancelled_timers:
            self._timers.pop((session.session_id, timer_id), None)
        for timer_id, due_at in timers:
            self._timers[session.session_id, timer_id] = due_at
        self._write(session.session_id, effects, audit)
        self._claim(session.session_id, effects, claim)
        self._changes.notify(session.session_id)
        return version + 1

    @property
    def notifies_every_writer(self) -> bool:
        """Always: nothing but this object writes its sessions."""
        return True

    def subscribe(
        self, session_id: str, on_change: Callable[[], None], /
    ) -> Callable[[], None]:
        """Call ``on_change()`` after every create or save of the session."""
        return self._changes.add(session_id, on_change)

    def _claim(
        self, session_id: str, effects: Sequence[Effect], claim: EffectClaim | None
    ) -> None:
        for effect in effects:
            if claim is None:
                self._claims.pop((session_id, effect.effect_id), None)
            else:
                self._claims[session_id, effect.effect_id] = (claim.owner, claim.until)

    def _write(
        self, session_id: str, effects: Sequence[Effect], audit: Sequence[AuditEvent]
    ) -> None:
        if effects:
            outbox = self._effects.setdefault(session_id, {})
            for effect in effects:
                outbox[effect.effect_id] = effect
        if audit:
            self._audit.setdefault(session_id, []).extend(
                (e.session_id, e.index, e.at, e.kind, e.body, e.prev, e.hash)
                for e in audit
            )

    async def pending_effects(
        self, session_id: str | None = None, /
    ) -> list[PendingEffect]:
        ids = [session_id] if session_id is not None else list(self._effects)
        return [
            self._pending(sid, effect)
            for sid in ids
            for effect in self._effects.get(sid, {}).values()
        ]

    def _pending(self, session_id: str, effect: Effect) -> PendingEffect:
        owner, until = self._claims.get((session_id, effect.effect_id), (None, None))
        return PendingEffect(
            session_id=session_id, effect=effect, claimed_by=owner, claimed_until=until
        )

    async def claim_effects(
        self, owner: str, /, *, at: datetime, until: datetime, limit: int = 100
    ) -> list[PendingEffect]:
        claimed: list[PendingEffect] = []
        for pending in await self.pending_effects():
            if len(claimed) >= limit:
                break
            if pending.claimed(at):
                continue
            key = (pending.session_id, pending.effect.effect_id)
            self._claims[key] = (owner, until)
            claimed.append(
                attrs.evolve(
                    self._pending(pending.session_id, pending.effect),
                    session=self._sessions.get(pending.session_id),
                )
            )
        return claimed

    async def extend_effect_claims(
        self, owner: str, effects: Sequence[tuple[str, str]], /, *, until: datetime
    ) -> int:
        moved = 0
        for key in effects:
            held = self._claims.get(key)
            if held is not None and held[0] == owner:
                self._claims[key] = (owner, until)
                moved += 1
        return moved

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        self._claims.pop((session_id, effect_id), None)
        outbox = self._effects.get(session_id)
        if outbox is not None:
            outbox.pop(effect_id, None)
            if not outbox:
                del self._effects[session_id]

    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        for session_id, effect_id in effects:
            await self.complete_effect(session_id, effect_id)

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        self._timers[session_id, timer_id] = due_at

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        self._timers.pop((session_id, timer_id), None)

    async def move_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /, *, expected: datetime
    ) -> bool:
        key = (session_id, timer_id)
        if self._timers.get(key) != expected:
            return False
        self._timers[key] = due_at
        return True

    async def due_timers(self, now: datetime, /, *, limit: int = 100) -> list[DueTimer]:
        due = [
            DueTimer(session_id=sid, timer_id=tid, due_at=at)
            for (sid, tid), at in self._timers.items()
            if at <= now
        ]
        due.sort(key=lambda timer: timer.due_at)
        return due[:limit]

    async def timers(self, session_id: str | None = None, /) -> list[DueTimer]:
        found = [
            DueTimer(session_id=sid, timer_id=tid, due_at=at)
            for (sid, tid), at in self._timers.items()
            if session_id is None or sid == session_id
        ]
        found.sort(key=lambda timer: timer.due_at)
        return found

    async def record_event_once(self, session_id: str, dedupe_key: str, /) -> bool:
        key = (session_id, dedupe_key)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    async def forget_event(self, session_id: str, dedupe_key: str, /) -> None:
        self._seen.discard((session_id, dedupe_key))

    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        if session_id is not None:
            return [_event(row) for row in self._audit.get(session_id, [])]
        return [_event(row) for rows in self._audit.values() for row in rows]

    async def session_ids(self) -> list[str]:
        return list(self._sessions)

    async def aclose(self) -> None:
        return None

    # -- shared state ------------------------------------------------------------

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
        entries = self._window(key, at=at, window=window)
        used = sum(taken for _, taken in entries)
        if used + amount <= limit:
            entries.append((at, amount))
            return Quota(allowed=True, used=used + amount, limit=limit)
        return refused_quota(used, entries, window=window, limit=limit, amount=amount)

    async def consume_all(
        self, takes: Sequence[QuotaTake], /, *, at: datetime
    ) -> Quotas:
        takes = list(takes)
        windows = {
            key: self._window(key, at=at, window=window)
            for key, window in widest_windows(takes).items()
        }
        held = [
            sum(
                taken
                for when, taken in windows[take.key]
                if when > at - timedelta(seconds=take.window)
            )
            for take in takes
        ]
        quotas, refused = fit_takes(takes, held)
        if refused is not None:
            return refused_take(takes, refused, windows[takes[refused].key], at=at)
        for take in takes:
            windows[take.key].append((at, take.amount))
        return Quotas(quotas=quotas)

    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        entries = self._windows.get(key, deque())
        for index in range(len(entries) - 1, -1, -1):
            if entries[index] == (at, amount):
                del entries[index]
                return True
        return False

    def _window(
        self, key: str, *, at: datetime, window: float
    ) -> deque[tuple[datetime, float]]:
        """The entries of ``key``'s window of ``window`` seconds at ``at``, those older dropped."""
        if key not in self._windows and len(self._windows) >= self._room["windows"]:
            _ = self._drop_windows(at)
        entries = self._windows.setdefault(key, deque())
        start = at - timedelta(seconds=window)
        end = at + timedelta(seconds=window)
        self._window_ends[key] = max(end, self._window_ends.get(key, end))
        while entries and entries[0][0] <= start:
            entries.popleft()
        return entries

    async def get_value(self, key: str, /, *, at: datetime) -> str | None:
        found = self._values.get(key)
        if found is None or found[1] <= at:
            return None
        return found[0]

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
        if only_if_absent and await self.get_value(key, at=at) is not None:
            return False
        if key not in self._values and len(self._values) >= self._room["values"]:
            await self.sweep_expired(at=at)
        self._values[key] = (value, at + timedelta(seconds=ttl))
        return True

    async def replace_value(
        self, key: str, value: str, /, *, expected: str, at: datetime, ttl: float
    ) -> bool:
        if await self.get_value(key, at=at) != expected:
            return False
        self._values[key] = (value, at + timedelta(seconds=ttl))
        return True

    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        found = self._values.get(key)
        if found is None or (value is not None and found[0] != value):
            return False
        del self._values[key]
        return True

    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        del batch  # one pass over a dictionary holds nothing up
        lapsed = [key for key, (_, expires) in self._values.items() if expires <= at]
        for key in lapsed:
            del self._values[key]
        self._room["values"] = max(_ROOM, 2 * len(self._values))
        return len(lapsed) + self._drop_windows(at)

    def _drop_windows(self, at: datetime) -> int:
        """Forget the quota windows that hold nothing any more at ``at``; count their entries."""
        ended = [key for key, end in self._window_ends.items() if end <= at]
        entries = 0
        for key in ended:
            del self._window_ends[key]
            entries += len(self._windows.pop(key))
        self._room["windows"] = max(_ROOM, 2 * len(self._windows))
        return entries

    # -- work queues -------------------------------------------------------------

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
        items = self._queues.setdefault(queue, {})
        if item_id in items:
            return False
        items[item_id] = QueueItem(
            queue=queue,
            item_id=item_id,
            body=body,
            priority=priority,
            enqueued_at=at,
            available_at=available_at or at,
        )
        return True

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
        items = self._queues.get(queue, {})
        if item_id is None:
            candidates = sorted(items.values(), key=queue_order)
        else:
            candidates = [items[item_id]] if item_id in items else []
        for item in candidates:
            if item.available_at <= at and not item.claimed(at):
                claimed = attrs.evolve(
                    item,
                    claimed_by=owner,
                    claimed_until=at + timedelta(seconds=lease),
                    claims=item.claims + 1,
                )
                items[item.item_id] = claimed
                return claimed
        return None

    def _owned(self, queue: str, item_id: str, owner: str) -> QueueItem | None:
        item = self._queues.get(queue, {}).get(item_id)
        return item if item is not None and item.claimed_by == owner else None

    async def extend(
        self, queue: str, item_id: str, /, *, owner: str, at: datetime, lease: float
    ) -> bool:
        item = self._owned(queue, item_id, owner)
        if item is None:
            return False
        self._queues[queue][item_id] = attrs.evolve(
            item, claimed_until=at + timedelta(seconds=lease)
        )
        return True

    async def release(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        owner: str,
        available_at: datetime | None = None,
    ) -> bool:
        item = self._owned(queue, item_id, owner)
        if item is None:
            return False
        self._queues[queue][item_id] = attrs.evolve(
            item,
            claimed_by=None,
            claimed_until=None,
            available_at=available_at or item.available_at,
        )
        return True

    async def update_item(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        body: str | None = None,
        priority: int | None = None,
    ) -> bool:
        item = self._queues.get(queue, {}).get(item_id)
        if item is None:
            return False
        self._queues[queue][item_id] = attrs.evolve(
            item,
            body=item.body if body is None else body,
            priority=item.priority if priority is None else priority,
        )
        return True

    async def complete(
        self, queue: str, item_id: str, /, *, owner: str | None = None
    ) -> bool:
        items = self._queues.get(queue, {})
        item = items.get(item_id)
        if item is None or (owner is not None and item.claimed_by != owner):
            return False
        del items[item_id]
        return True

    async def queue_items(self, queue: str, /) -> list[QueueItem]:
        return sorted(self._queues.get(queue, {}).values(), key=queue_order)
