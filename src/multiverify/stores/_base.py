"""The SessionStore port: where sessions, their outbox, timers and audit live."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, Self

import attrs

from .._audit import AuditEvent
from .._serde import dumps
from .._session import Effect, Session
from ..exceptions import ConcurrentUpdateError, SessionNotFoundError

__all__ = ["DueTimer", "OpenableStore", "PendingEffect", "SessionStore"]


@attrs.frozen(kw_only=True)
class PendingEffect:
    """An effect saved with a transition and not yet completed."""

    session_id: str
    effect: Effect


@attrs.frozen(kw_only=True)
class DueTimer:
    """A durable timer of a session."""

    session_id: str
    timer_id: str
    due_at: datetime


class SessionStore(Protocol):
    """**Protocol**: durable sessions with compare-and-set saves.

    Every store passes the same contract suite (``tests/stores``). A save
    writes the session, its new effects (the outbox) and its audit events
    atomically, and only if the stored version is still ``expected_version``.
    """

    async def create(
        self,
        session: Session,
        *,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> int:
        """Store a new session at version 1 and return 1.

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
    ) -> int:
        """Replace the session if its version is ``expected_version``; return the new version.

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

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        """Create or move a timer (idempotent by ``(session_id, timer_id)``)."""
        ...

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        """Remove a timer if it exists."""
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

    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        """The audit trail: one session's, in order, or every session's."""
        ...

    async def session_ids(self) -> list[str]:
        """Ids of every stored session, oldest first."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class OpenableStore:
    """Base for stores that connect: ``async with`` opens, and closes on exit.

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
        await self.open()
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
            [(effect.effect_id, dumps(effect)) for effect in effects],
            [event.to_json() for event in audit],
        )
