"""An in-memory SessionStore: for tests, the sandbox and one-process apps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .._audit import AuditEvent
from .._session import Effect, Session
from ._base import (
    DueTimer,
    PendingEffect,
    session_exists,
    session_missing,
    version_moved,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keeps everything in dictionaries; nothing survives the process.

    Sessions are kept as the immutable objects they are, so there is no
    serialisation cost.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Session, int]] = {}
        self._effects: dict[str, dict[str, Effect]] = {}
        self._timers: dict[tuple[str, str], datetime] = {}
        self._seen: set[tuple[str, str]] = set()
        self._audit: dict[str, list[AuditEvent]] = {}

    def __repr__(self) -> str:
        return f"<multiverify.stores.MemoryStore(sessions={len(self._sessions)})>"

    async def create(
        self,
        session: Session,
        *,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> int:
        if session.session_id in self._sessions:
            raise session_exists(session.session_id)
        self._sessions[session.session_id] = (session, 1)
        self._write(session.session_id, effects, audit)
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
    ) -> int:
        _, version = await self.load(session.session_id)
        if version != expected_version:
            raise version_moved(session.session_id, version, expected_version)
        self._sessions[session.session_id] = (session, version + 1)
        self._write(session.session_id, effects, audit)
        return version + 1

    def _write(
        self, session_id: str, effects: Sequence[Effect], audit: Sequence[AuditEvent]
    ) -> None:
        if effects:
            outbox = self._effects.setdefault(session_id, {})
            for effect in effects:
                outbox[effect.effect_id] = effect
        if audit:
            self._audit.setdefault(session_id, []).extend(audit)

    async def pending_effects(
        self, session_id: str | None = None, /
    ) -> list[PendingEffect]:
        ids = [session_id] if session_id is not None else list(self._effects)
        return [
            PendingEffect(session_id=sid, effect=effect)
            for sid in ids
            for effect in self._effects.get(sid, {}).values()
        ]

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        outbox = self._effects.get(session_id)
        if outbox is not None:
            outbox.pop(effect_id, None)
            if not outbox:
                del self._effects[session_id]

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        self._timers[session_id, timer_id] = due_at

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        self._timers.pop((session_id, timer_id), None)

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

    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        if session_id is not None:
            return list(self._audit.get(session_id, []))
        return [event for events in self._audit.values() for event in events]

    async def session_ids(self) -> list[str]:
        return list(self._sessions)

    async def aclose(self) -> None:
        return None
