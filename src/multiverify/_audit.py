"""The audit trail: append-only, hash-chained, personal data masked.

Every session keeps its own chain. Each event's hash covers the previous
event's hash and the event's canonical JSON, so changing, dropping or
reordering an event breaks every hash after it and
[`verify`][multiverify.AuditTrail.verify] names the first bad one.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import attrs

from ._applicant import Applicant
from ._canonical import Writer, canonical_json, plain, writer
from ._masking import mask_id, mask_name, mask_phone
from ._results import PolicyRef, Reason, RuleTrace, Verdict
from ._serde import converter, structure_input, unstructure
from ._session import (
    Effect,
    Input,
    QueueReview,
    RecordVerdict,
    Session,
    SessionStatus,
    StepErrored,
    StepRecord,
    transition,
    with_audit_head,
)
from .exceptions import AuditIntegrityError, ConfigurationError
from .policy import Policy

if TYPE_CHECKING:
    from .channels import ProviderEvent

__all__ = ["AuditEvent", "AuditTrail", "masked_applicant"]

GENESIS = "0" * 64


_quote = json.encoder.encode_basestring_ascii


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
        return cls.from_data(json.loads(line))

    @classmethod
    def from_data(cls, raw: object) -> AuditEvent:
        """Read one event from a line's parsed JSON.

        Raises:
            ValueError: it is not an audit event.
        """
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
    head = f'{{"at":{_quote(at.isoformat())},"data":'
    return _chained(prev, head, body, index=index, kind=kind, session_id=session_id)


def _chained(
    prev: str, head: str, body: str, *, index: int, kind: str, session_id: str
) -> str:
    """The hash of an event, its envelope's head (time and ``data`` key) given."""
    envelope = (
        f'{prev}{head}{body},"index":{index},'
        f'"kind":{_json_string(kind)},"session_id":{_json_string(session_id)}}}'
    )
    return hashlib.sha256(envelope.encode()).hexdigest()


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


# The audit trail records every input and effect as cattrs unstructures
# them (tests/test_audit.py compares), through the tagged-union hooks
# themselves rather than a dispatch per call.
_INPUT_DATA = converter.get_unstructure_hook(Input)
_EFFECT_DATA = converter.get_unstructure_hook(Effect)


def _masked_input(event: Input) -> dict[str, Any]:
    data: dict[str, Any] = _INPUT_DATA(event)
    # A channel's own state may hold personal or secret data (a code's HMAC,
    # a destination); the core never decides on it, so the trail leaves it out.
    if "channel_state" in data:
        data["channel_state"] = {}
    # A reviewer's note is free text that may name the applicant: the trail
    # keeps its digest, which matches the note kept with the verdict.
    if data.get("note"):
        data["note"] = note_digest(data["note"])
    return data


def _redacted_call(
    call: Mapping[str, Any], applicant: Applicant | None
) -> Mapping[str, Any]:
    """The provider call, its tries' error texts (a vendor's words) redacted.

    Without an error to redact it is the call itself, which is only read.
    """
    tries = call.get("tries")
    if applicant is None or not tries:
        return call
    for one in tries:
        if one.get("error"):
            break
    else:
        return call
    record = dict(call)
    record["tries"] = redacted_tries(tries, applicant)
    return record


def redacted_tries(
    tries: Iterable[Mapping[str, Any]], applicant: Applicant
) -> list[Mapping[str, Any]]:
    """Provider tries, each error text (a vendor's words) with the applicant's values masked."""
    return [
        {**t, "error": applicant.redact(t["error"])} if t.get("error") else t
        for t in tries
    ]


def note_digest(note: str) -> str:
    """What the audit trail keeps of a reviewer's note: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(note.encode()).hexdigest()


def _effect_summary(effect: Effect) -> dict[str, Any]:
    if isinstance(effect, RecordVerdict):
        return {"type": "RecordVerdict", "outcome": effect.verdict.outcome.value}
    summary: dict[str, Any] = _EFFECT_DATA(effect)
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


def _headed(session: Session, events: Sequence[AuditEvent]) -> Session:
    """The session with its chain moved on to the last of ``events``."""
    last = events[-1]
    if type(session) is not Session:  # keep a subclass (evolve is slower)
        return attrs.evolve(session, audit_head=last.hash, audit_count=last.index + 1)
    return with_audit_head(session, last.hash, last.index + 1)


def _appended(
    session: Session, kinds_and_bodies: Iterable[tuple[str, str]], at: datetime
) -> tuple[Session, list[AuditEvent]]:
    """Chain events with these kinds and canonical JSON bodies to the session."""
    session_id = session.session_id
    index = session.audit_count
    prev = session.audit_head or GENESIS
    events = []
    head = f'{{"at":{_quote(at.isoformat())},"data":'  # one time for them all
    for kind, body in kinds_and_bodies:
        event = AuditEvent(
            session_id=session_id,
            index=index,
            at=at,
            kind=kind,
            body=body,
            prev=prev,
            hash=_chained(
                prev, head, body, index=index, kind=kind, session_id=session_id
            ),
        )
        events.append(event)
        index, prev = index + 1, event.hash
    return _headed(session, events), events


def _input_body_reference(
    event: Input,
    effects: Sequence[Effect],
    call: Mapping[str, Any] | None,
    applicant: Applicant | None,
) -> str:
    """The body of an input event, built as data and encoded: the reference."""
    data: dict[str, Any] = {"input": _masked_input(event)}
    if isinstance(event, StepErrored) and applicant is not None:
        data["input"]["error"] = applicant.redact(event.error)
    if effects:
        data["effects"] = [_effect_summary(effect) for effect in effects]
    if call is not None:
        data["call"] = _redacted_call(call, applicant)
    return canonical_json(data)


def _tagged(union: Any, *, masked: bool) -> dict[type, Writer]:
    """Writers for the members of a tagged union, as the trail records them.

    Masked, a channel's state is written empty; members whose data the
    trail rewrites further (notes, error texts) are left to the reference.
    """
    found: dict[type, Writer] = {}
    for member in typing.get_args(union):
        names = {field.name for field in attrs.fields(member)}
        if masked and ("note" in names or member is StepErrored):
            continue
        if member is RecordVerdict:
            continue
        replace = (
            {"channel_state": "{}"} if masked and "channel_state" in names else None
        )
        found[member] = writer(member, tag=member.__name__, replace=replace)
    return found


_INPUT_WRITERS = _tagged(Input, masked=True)
_EFFECT_WRITERS = _tagged(Effect, masked=False)
_REASON = writer(Reason)
_RULE = writer(RuleTrace)
_POLICY_REF = writer(PolicyRef)


def _effect_json(effect: Effect) -> str:
    write = _EFFECT_WRITERS.get(type(effect))
    if write is not None:
        return write(effect)
    if type(effect) is RecordVerdict:
        return f'{{"outcome":{plain(effect.verdict.outcome.value)},"type":"RecordVerdict"}}'
    return canonical_json(_effect_summary(effect))


_CALL_KEYS = frozenset(
    ("attempt", "channel", "idempotency_key", "outcome", "provider", "step_id", "tries")
)
_TRY_KEYS = frozenset(("at", "error"))


def _call_json(call: Mapping[str, Any]) -> str:
    """A provider call's record as the reference writes it; the usual shape directly."""
    tries = call.get("tries")
    if call.keys() != _CALL_KEYS or type(tries) is not list:
        return canonical_json(call)
    written = []
    for one in tries:
        if type(one) is not dict or one.keys() != _TRY_KEYS:
            return canonical_json(call)
        written.append(f'{{"at":{plain(one["at"])},"error":{plain(one["error"])}}}')
    return (
        f'{{"attempt":{plain(call["attempt"])},"channel":{plain(call["channel"])},'
        f'"idempotency_key":{plain(call["idempotency_key"])},'
        f'"outcome":{plain(call["outcome"])},"provider":{plain(call["provider"])},'
        f'"step_id":{plain(call["step_id"])},"tries":[{",".join(written)}]}}'
    )


def _input_body(
    event: Input,
    effects: Sequence[Effect],
    call: Mapping[str, Any] | None,
    applicant: Applicant | None,
) -> str:
    """The body of an input event: the reference's text, written directly."""
    write = _INPUT_WRITERS.get(type(event))
    if write is None:
        return _input_body_reference(event, effects, call, applicant)
    parts = []
    if call is not None:
        parts.append('"call":' + _call_json(_redacted_call(call, applicant)))
    if effects:
        parts.append('"effects":[' + ",".join(map(_effect_json, effects)) + "]")
    parts.append('"input":' + write(event))
    return "{" + ",".join(parts) + "}"


def _items(values: Sequence[Any], write: Writer, cls: type) -> str:
    """A tuple of values as the reference writes ``unstructure(values)``."""
    return (
        "["
        + ",".join(
            write(value) if type(value) is cls else canonical_json(unstructure(value))
            for value in values
        )
        + "]"
    )


def _decision(verdict: Verdict) -> dict[str, str]:
    """The JSON of the verdict fields both verdict and queued bodies record."""
    return {
        "decided_by": plain(verdict.decided_by),
        "outcome": plain(verdict.outcome.value),
        "reasons": _items(verdict.reasons, _REASON, Reason),
        "rules": _items(verdict.rules, _RULE, RuleTrace),
        "score": plain(verdict.score),
    }


def _object(members: Mapping[str, str]) -> str:
    """A JSON object of already written members, keys sorted."""
    return "{" + ",".join(f"{_quote(k)}:{members[k]}" for k in sorted(members)) + "}"


def _queued_body(automatic: Verdict, effect: QueueReview) -> str:
    if type(automatic) is not Verdict:
        return canonical_json(
            {
                "outcome": automatic.outcome.value,
                "reasons": unstructure(automatic.reasons),
                "rules": unstructure(automatic.rules),
                "score": automatic.score,
                "decided_by": automatic.decided_by,
                "priority": effect.priority,
            }
        )
    return _object({**_decision(automatic), "priority": plain(effect.priority)})


def _verdict_body(verdict: Verdict) -> str:
    if type(verdict) is Verdict and verdict.review is None:
        return _object(_decision(verdict))
    data: dict[str, Any] = {
        "outcome": verdict.outcome.value,
        "reasons": unstructure(verdict.reasons),
        "rules": unstructure(verdict.rules),
        "score": verdict.score,
        "decided_by": verdict.decided_by,
    }
    if verdict.review is not None:
        data["review"] = _review_record(verdict)
    return canonical_json(data)


def _created_body(session: Session) -> str:
    policy = session.policy
    deadline = session.deadline_at
    return _object(
        {
            "policy": (
                _POLICY_REF(policy)
                if type(policy) is PolicyRef
                else canonical_json(unstructure(policy))
            ),
            "created_at": _quote(session.created_at.isoformat()),
            "deadline_at": "null" if deadline is None else _quote(deadline.isoformat()),
            "steps": "[" + ",".join(plain(r.step_id) for r in session.steps) + "]",
            "facts": canonical_json(dict(session.facts)),
            "applicant": canonical_json(masked_applicant(session.applicant)),
        }
    )


class AuditTrail:
    """Builds, verifies, exports and replays audit events."""

    @staticmethod
    def append(
        session: Session, kind: str, data: Mapping[str, Any], *, at: datetime
    ) -> tuple[Session, AuditEvent]:
        """Chain a new event to the session; return the session with its new head."""
        session, (event,) = _appended(session, [(kind, canonical_json(dict(data)))], at)
        return session, event

    @staticmethod
    def created(session: Session, *, at: datetime) -> tuple[Session, AuditEvent]:
        """The first event of a session: policy, facts and the masked applicant."""
        session, (event,) = _appended(
            session, [("session.created", _created_body(session))], at
        )
        return session, event

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
        session, (recorded,) = _appended(
            session,
            [("input", _input_body(event, effects, call, session.applicant))],
            at,
        )
        return session, recorded

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
        bodies = [("input", _input_body(event, effects, call, session.applicant))]
        for effect in effects:
            if (
                isinstance(effect, QueueReview)
                and not effect.returned
                and session.verdict is not None
            ):
                bodies.append(("review.queued", _queued_body(session.verdict, effect)))
            elif isinstance(effect, RecordVerdict):
                bodies.append(("verdict", _verdict_body(effect.verdict)))
        return _appended(session, bodies, at)

    @staticmethod
    def late_event(
        session: Session,
        event: ProviderEvent,
        *,
        at: datetime,
        reason: str,
    ) -> tuple[Session, AuditEvent]:
        """Record a vendor callback that came after its step or session ended.

        The step is not reopened: the trail notes that the callback came,
        what it was (its kind, delivery key and any ``status`` the vendor
        reported) and why it was not applied. The callback's data is left
        out, as it may be personal (a transcript, typed digits).
        """
        status = event.data.get("status")
        return AuditTrail.append(
            session,
            "event.late",
            {
                "step_id": event.step_id,
                "attempt": event.attempt,
                "kind": event.kind,
                "dedupe_key": event.dedupe_key,
                "status": status if isinstance(status, str) else None,
                "reason": reason,
            },
            at=at,
        )

    @staticmethod
    def verify(
        events: Iterable[AuditEvent], *, heads: Mapping[str, str] | None = None
    ) -> int:
        """Check the chains; return how many events were checked.

        A chain alone cannot show that its last events were cut off. Pass
        ``heads``, each session's ``audit_head`` as its store keeps it, and
        every session of ``events`` found there must end at that hash.

        Args:
            events: the events, in the order they were recorded per session.
            heads: the hash of the last audit event of each session, by id
                (sessions missing from it are checked by their chain only).

        Raises:
            AuditIntegrityError: an event was changed, dropped or reordered
                (``index`` is its position in ``events``), or a chain stops
                short of its session's head (``index`` is then the number of
                events).
        """
        chains: dict[str, tuple[int, str]] = {}
        count = 0
        for position, event in enumerate(events):
            expected_index, prev = chains.get(event.session_id, (0, GENESIS))
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
            chains[event.session_id] = (event.index + 1, event.hash)
            count += 1
        for session_id, (length, last) in chains.items():
            head = (heads or {}).get(session_id)
            if head is not None and head != last:
                raise AuditIntegrityError(
                    message=f"the trail of session {session_id} stops at #{length - 1}"
                    " short of the session's last audit event: events were "
                    "dropped from its end (or it was exported before them)",
                    index=count,
                )
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
                reason = str(exc).removeprefix("not an audit event: ")
                raise AuditIntegrityError(
                    message=f"line {number + 1} is not an audit event: {reason}",
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
