"""Retention: the personal data of finished sessions is purged after a while; the decision stays.

What goes: the applicant (name, national ID, phone, date of birth, address,
contacts), every step's channel state (a code's HMAC, destinations, call
notes, transcripts), the challenges, and the references of evidence that is
personal in itself (call recordings, video media, agent notes). What stays:
the verdict with its reasons, rules, score and per-step results and signals,
the plain facts the policy read, and the whole hash-chained audit trail,
which never held personal data unmasked. The purge itself is one more audit
event, ``session.purged``, chained after the others, so ``multiverify audit
verify`` passes on the trail before and after.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from .._audit import AuditEvent, AuditTrail
from .._duration import parse_duration
from .._results import ChannelResult, Evidence, StepSummary
from .._session import Session, StepRecord
from ..exceptions import ConcurrentUpdateError, SessionNotFoundError
from ..stores import SessionStore

__all__ = [
    "PERSONAL_EVIDENCE",
    "PURGED_REFERENCE",
    "PurgeReport",
    "purge_personal_data",
    "purge_session",
]

PERSONAL_EVIDENCE = frozenset({"agent_notes", "media", "recording"})
"""Evidence kinds whose reference points at personal data (a voice, a face, notes on a person)."""

PURGED_REFERENCE = "purged"
"""What a purged evidence reference reads."""


@attrs.frozen(kw_only=True)
class PurgeReport:
    """What [`purge_personal_data`][multiverify.compliance.purge_personal_data] did.

    Attributes:
        cutoff: sessions that finished before this moment were eligible.
        purged: the ids of the sessions purged now.
        skipped: the ids of eligible sessions that changed while being
            purged (the next run takes them).
        dry_run: whether nothing was written.
    """

    cutoff: datetime
    purged: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    dry_run: bool = False


def _evidence(
    items: Iterable[Evidence], personal: frozenset[str]
) -> tuple[tuple[Evidence, ...], int]:
    kept: list[Evidence] = []
    removed = 0
    for item in items:
        if item.kind in personal and item.reference != PURGED_REFERENCE:
            kept.append(Evidence(kind=item.kind, reference=PURGED_REFERENCE))
            removed += 1
        else:
            kept.append(item)
    return tuple(kept), removed


def _result(
    result: ChannelResult | None, personal: frozenset[str]
) -> tuple[ChannelResult | None, int]:
    if result is None:
        return None, 0
    evidence, removed = _evidence(result.evidence, personal)
    if not removed:
        return result, 0
    return attrs.evolve(result, evidence=evidence), removed


def purge_session(
    session: Session,
    *,
    at: datetime,
    personal_evidence: frozenset[str] = PERSONAL_EVIDENCE,
) -> tuple[Session, AuditEvent]:
    """The session without its personal data, and the audit event that says so.

    Pure: nothing is saved. Purging a purged session again removes nothing
    more (and still records an event).
    """
    removed = 0
    states = 0
    steps: list[StepRecord] = []
    for record in session.steps:
        result, count = _result(record.result, personal_evidence)
        removed += count
        states += bool(record.channel_state)
        steps.append(
            attrs.evolve(record, channel_state={}, challenge=None, result=result)
        )
    verdict = session.verdict
    if verdict is not None:
        summaries: list[StepSummary] = []
        for summary in verdict.steps:
            result, _ = _result(summary.result, personal_evidence)
            summaries.append(attrs.evolve(summary, result=result))
        verdict = attrs.evolve(verdict, steps=summaries)
    purged = attrs.evolve(session, applicant=None, steps=steps, verdict=verdict)
    return AuditTrail.append(
        purged,
        "session.purged",
        {
            "applicant": session.applicant is not None,
            "channel_states": states,
            "evidence": removed,
        },
        at=at,
    )


async def _finished_at(store: SessionStore, session: Session) -> datetime:
    """When a finished session ended: its verdict, or its last audit event (a cancel)."""
    if session.verdict is not None:
        return session.verdict.decided_at
    trail = await store.audit_events(session.session_id)
    return trail[-1].at if trail else session.created_at


async def purge_personal_data(
    store: SessionStore,
    *,
    older_than: float | timedelta | str,
    now: datetime,
    personal_evidence: frozenset[str] = PERSONAL_EVIDENCE,
    dry_run: bool = False,
) -> PurgeReport:
    """Purge the personal data of every session that finished more than ``older_than`` ago.

    Decided and cancelled sessions count from when they finished; running
    sessions and sessions purged already are left alone. Each purge is a
    compare-and-set save with a ``session.purged`` audit event, so it is
    safe beside running replicas: a session that changes meanwhile is
    skipped and taken by the next run.

    Args:
        store: any session store.
        older_than: how long personal data is kept after a session finished
            (seconds, a timedelta, or ``"30d"``).
        now: the current time (the runtime's clock).
        personal_evidence: the evidence kinds whose references are removed.
        dry_run: report what would be purged, change nothing.

    Raises:
        ValueError: ``older_than`` is not a duration.
    """
    cutoff = now - timedelta(seconds=parse_duration(older_than))
    purged: list[str] = []
    skipped: list[str] = []
    for session_id in await store.session_ids():
        try:
            session, version = await store.load(session_id)
        except SessionNotFoundError:
            continue  # removed meanwhile
        if session.applicant is None or not session.finished:
            continue
        if await _finished_at(store, session) >= cutoff:
            continue
        if dry_run:
            purged.append(session_id)
            continue
        cleaned, event = purge_session(
            session, at=now, personal_evidence=personal_evidence
        )
        try:
            await store.save(cleaned, expected_version=version, audit=[event])
        except ConcurrentUpdateError:
            skipped.append(session_id)
            continue
        purged.append(session_id)
    return PurgeReport(
        cutoff=cutoff, purged=tuple(purged), skipped=tuple(skipped), dry_run=dry_run
    )
