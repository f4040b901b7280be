"""The audit trail: append-only, hash-chained, personal data masked.

Every session keeps its own chain. Each event's hash covers the previous
event's hash and the event's canonical JSON, so changing, dropping or
reordering an event breaks every hash after it and
[`verify`][multiverify.AuditTrail.verify] names the first bad one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import IO, Any

import attrs

from ._applicant import Applicant
from ._masking import mask_id, mask_name, mask_phone
from ._results import Verdict
from ._serde import structure_input, unstructure
from ._session import (
    Effect,
    Input,
    QueueReview,
    RecordVerdict,
    Session,
    SessionStatus,
    StepRecord,
    transition,
)
from .exceptions import AuditIntegrityError, ConfigurationError
from .policy import Policy

__all__ = ["AuditEvent", "AuditTrail", "masked_applicant"]

GENESIS = "0" * 64


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
_quote = json.encoder.encode_basestring_ascii


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the form audit hashes are computed over."""
    # What json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    # returns, without building an encoder per call.
    return _CANONICAL.encode(value)


def _json_string(value: Any) -> str:
    """``json.dumps(value)``; strings, by far the common case, directly."""
    return _quote(value) if isinstance(value, str) else json.dumps(value)


@attrs.frozen(kw_only=True)
class AuditEvent:
    """One entry of a session's audit trail.

    Attributes:
        session_id: the session.
        index: position in the session's chain, from 0.
        at: when it happened.
        kind: ``session.created``, ``input``, ``verdict``...
        body: what happened, as canonical JSON, personal data masked; read it
            parsed as [`data`][multiverify.AuditEvent.data].
        prev: the previous event's hash (zeros for the first).
        hash: SHA-256 over ``prev`` and the canonical JSON of the rest.
    """

    session_id: str
    index: int
    at: datetime
    kind: str
    body: str = attrs.field(repr=False)
    prev: str
    hash: str

    @property
    def data(self) -> dict[str, Any]:
        """What happened, parsed from ``body``."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def to_json(self) -> str:
        """One JSONL line: compact, keys sorted, ``data`` inline."""
        return (
            f'{{"at":{json.dumps(self.at.isoformat())},"data":{self.body},'
            f'"hash":{json.dumps(self.hash)},"index":{self.index},'
            f'"kind":{json.dumps(self.kind)},"prev":{json.dumps(self.prev)},'
            f'"session_id":{json.dumps(self.session_id)}}}'
        )

    @classmethod
    def from_json(cls, line: str) -> AuditEvent:
        """Parse one JSONL line.

        Raises:
            ValueError: the line is not an audit event.
        """
        raw = json.loads(line)
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            raise ValueError("not an audit event: no data object")  # noqa: TRY004 - one error type
        try:
            data = raw["data"]
            return cls(
                session_id=str(raw["session_id"]),
                index=int(raw["index"]),
                at=datetime.fromisoformat(raw["at"]),
                kind=str(raw["kind"]),
                body=canonical_json(data),
                prev=str(raw["prev"]),
                hash=str(raw["hash"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an audit event: {exc}") from exc


def _digest(
    prev: str, *, session_id: str, index: int, at: datetime, kind: str, body: str
) -> str:
    # Equal to the canonical JSON of {session_id, index, at, kind, data}, with
    # the already canonical body spliced in rather than serialised again.
    envelope = (
        f'{{"at":{_quote(at.isoformat())},"data":{body},"index":{index},'
        f'"kind":{_json_string(kind)},"session_id":{_json_string(session_id)}}}'
    )
    return hashlib.sha256((prev + envelope).encode()).hexdigest()


def masked_applicant(applicant: Applicant | None) -> dict[str, Any] | None:
    """The applicant with every personal field masked, for the audit trail."""
    if applicant is None:
        return None
    return {
        "applicant_id": applicant.applicant_id,
        "name": mask_name(applicant.name),
        "national_id": mask_id(applicant.national_id),
        "phone": mask_phone(applicant.phone),
        "timezone": applicant.timezone,
        "locale": applicant.locale,
        "contacts": len(applicant.contacts),
    }


# The audit trail records every input and effect. Building their JSON data by
# hand for the core's own types is several times cheaper than cattrs; the data
# must equal ``unstructure``'s exactly (tests/test_audit.py compares them), and
# anything unusual (a subclass, a channel's non-JSON fact) goes through cattrs.


def _masked_input(event: Input) -> dict[str, Any]:
    data: dict[str, Any] = unstructure(event)
    # A channel's own state may hold personal or secret data (a code's HMAC,
    # a destination); the core never decides on it, so the trail leaves it out.
    if "channel_state" in data:
        data["channel_state"] = {}
    # A reviewer's note is free text that may name the applicant: the trail
    # keeps its digest, which matches the note kept with the verdict.
    if data.get("note"):
        data["note"] = note_digest(data["note"])
    return data


def note_digest(note: str) -> str:
    """What the audit trail keeps of a reviewer's note: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(note.encode()).hexdigest()


def _effect_summary(effect: Effect) -> dict[str, Any]:
    if isinstance(effect, RecordVerdict):
        return {"type": "RecordVerdict", "outcome": effect.verdict.outcome.value}
    summary: dict[str, Any] = unstructure(effect)
    return summary


def _review_record(verdict: Verdict) -> dict[str, Any]:
    """The review part of a verdict event: who decided what, beside the automatic part."""
    review = verdict.review
    assert review is not None  # noqa: S101 - checked by the caller
    record: dict[str, Any] = unstructure(review)
    if review.note:
        record["note"] = note_digest(review.note)
    automatic = verdict.automatic
    if automatic is not None:
        record["automatic"] = {
            "outcome": automatic.outcome.value,
            "reasons": unstructure(automatic.reasons),
            "decided_by": automatic.decided_by,
            "decided_at": automatic.decided_at.isoformat(),
        }
    return record


def _chained(
    session: Session, kind: str, body: str, at: datetime
) -> tuple[Session, AuditEvent]:
    """Chain an event with this canonical JSON body to the session."""
    index = session.audit_count
    prev = session.audit_head or GENESIS
    event = AuditEvent(
        session_id=session.session_id,
        index=index,
        at=at,
        kind=kind,
        body=body,
        prev=prev,
        hash=_digest(
            prev,
            session_id=session.session_id,
            index=index,
            at=at,
            kind=kind,
            body=body,
        ),
    )
    moved = attrs.evolve(session, audit_head=event.hash, audit_count=index + 1)
    return moved, event


class AuditTrail:
    """Builds, verifies, exports and replays audit events."""

    @staticmethod
    def append(
        session: Session, kind: str, data: Mapping[str, Any], *, at: datetime
    ) -> tuple[Session, AuditEvent]:
        """Chain a new event to the session; return the session with its new head."""
        return _chained(session, kind, canonical_json(dict(data)), at)

    @staticmethod
    def created(session: Session, *, at: datetime) -> tuple[Session, AuditEvent]:
        """The first event of a session: policy, facts and the masked applicant."""
        return AuditTrail.append(
            session,
            "session.created",
            {
                "policy": unstructure(session.policy),
                "created_at": session.created_at.isoformat(),
                "deadline_at": (
                    session.deadline_at.isoformat() if session.deadline_at else None
                ),
                "steps": [record.step_id for record in session.steps],
                "facts": dict(session.facts),
                "applicant": masked_applicant(session.applicant),
            },
            at=at,
        )

    @staticmethod
    def input(
        session: Session,
        event: Input,
        *,
        at: datetime,
        effects: Sequence[Effect] = (),
        call: Mapping[str, Any] | None = None,
    ) -> tuple[Session, AuditEvent]:
        """Record an input applied to the session and the effects it led to, masked.

        ``call`` describes the provider call that produced the input (each
        try and its error), when there was one.
        """
        data: dict[str, Any] = {"input": _masked_input(event)}
        if effects:
            data["effects"] = [_effect_summary(effect) for effect in effects]
        if call is not None:
            data["call"] = dict(call)
        return _chained(session, "input", canonical_json(data), at)

    @staticmethod
    def transition(
        session: Session,
        event: Input,
        effects: Sequence[Effect],
        *,
        at: datetime,
        call: Mapping[str, Any] | None = None,
    ) -> tuple[Session, list[AuditEvent]]:
        """The events one applied input adds: the input, and the verdict it reached.

        A session that enters review adds ``review.queued``, with the
        automatic verdict that sent it there. Every runtime records a
        transition with this, so their trails agree.
        """
        session, recorded = AuditTrail.input(
            session, event, at=at, effects=effects, call=call
        )
        events = [recorded]
        for effect in effects:
            if (
                isinstance(effect, QueueReview)
                and not effect.returned
                and session.verdict is not None
            ):
                automatic = session.verdict
                session, queued = AuditTrail.append(
                    session,
                    "review.queued",
                    {
                        "outcome": automatic.outcome.value,
                        "reasons": unstructure(automatic.reasons),
                        "rules": unstructure(automatic.rules),
                        "score": automatic.score,
                        "decided_by": automatic.decided_by,
                        "priority": effect.priority,
                    },
                    at=at,
                )
                events.append(queued)
            elif isinstance(effect, RecordVerdict):
                verdict = effect.verdict
                data: dict[str, Any] = {
                    "outcome": verdict.outcome.value,
                    "reasons": unstructure(verdict.reasons),
                    "rules": unstructure(verdict.rules),
                    "score": verdict.score,
                    "decided_by": verdict.decided_by,
                }
                if verdict.review is not None:
                    data["review"] = _review_record(verdict)
                session, decided = AuditTrail.append(session, "verdict", data, at=at)
                events.append(decided)
        return session, events

    @staticmethod
    def verify(events: Iterable[AuditEvent]) -> int:
        """Check the chains; return how many events were checked.

        Raises:
            AuditIntegrityError: an event was changed, dropped or reordered;
                ``index`` is its position in ``events``.
        """
        heads: dict[str, tuple[int, str]] = {}
        count = 0
        for position, event in enumerate(events):
            expected_index, prev = heads.get(event.session_id, (0, GENESIS))
            problem = None
            if event.index != expected_index:
                problem = f"expected index {expected_index}, found {event.index}"
            elif event.prev != prev:
                problem = "its link to the previous event is broken"
            elif event.hash != _digest(
                event.prev,
                session_id=event.session_id,
                index=event.index,
                at=event.at,
                kind=event.kind,
                body=event.body,
            ):
                problem = "its content does not match its hash"
            if problem is not None:
                raise AuditIntegrityError(
                    message=f"audit event {position} (session {event.session_id}, "
                    f"#{event.index}, {event.kind}) was tampered with: {problem}",
                    index=position,
                )
            heads[event.session_id] = (event.index + 1, event.hash)
            count += 1
        return count

    @staticmethod
    def export_jsonl(events: Iterable[AuditEvent], out: IO[str]) -> int:
        """Write events as JSON lines; return how many."""
        count = 0
        for event in events:
            out.write(event.to_json() + "\n")
            count += 1
        return count

    @staticmethod
    def read_jsonl(lines: Iterable[str]) -> list[AuditEvent]:
        """Parse JSON lines (blank lines are skipped).

        Raises:
            AuditIntegrityError: a line is not an audit event.
        """
        events = []
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                events.append(AuditEvent.from_json(line))
            except ValueError as exc:
                raise AuditIntegrityError(
                    message=f"line {number + 1} is not an audit event: {exc}",
                    index=len(events),
                ) from exc
        return events

    @staticmethod
    def replay(policy: Policy, events: Sequence[AuditEvent]) -> Session:
        """Rebuild a session by feeding its recorded inputs to the core again.

        The rebuilt session has no applicant (the trail keeps only facts) and
        no channel state; its steps, results and verdict are the original's.

        Raises:
            AuditIntegrityError: the trail does not verify, does not start
                with ``session.created``, or holds an input that cannot be read
                (a trail written by hand with valid hashes).
            ConfigurationError: the trail was recorded under another policy.
        """
        AuditTrail.verify(events)
        if not events or events[0].kind != "session.created":
            raise AuditIntegrityError(
                message="an audit trail starts with session.created", index=0
            )
        head = events[0].data
        if head["policy"]["hash"] != policy.hash:
            raise ConfigurationError(
                message=f"the trail was recorded under policy {head['policy']['name']} "
                f"{head['policy']['version']} ({head['policy']['hash'][:12]}), "
                f"not {policy.name} {policy.version} ({policy.hash[:12]})"
            )
        session = Session(
            session_id=events[0].session_id,
            applicant=None,
            policy=policy.ref,
            created_at=datetime.fromisoformat(head["created_at"]),
            deadline_at=(
                datetime.fromisoformat(head["deadline_at"])
                if head["deadline_at"]
                else None
            ),
            status=SessionStatus.ACTIVE,
            steps=tuple(StepRecord(step_id=step_id) for step_id in head["steps"]),
            facts=head["facts"],
        )
        for position, event in enumerate(events[1:], start=1):
            if event.kind != "input":
                continue
            try:
                recorded = structure_input(event.data["input"])
            except Exception as exc:  # cattrs raises many kinds
                raise AuditIntegrityError(
                    message=f"audit event {position} ({event.kind}) holds no "
                    f"readable input: {type(exc).__name__}",
                    index=position,
                ) from exc
            session = transition(policy, session, recorded).session
        return session
