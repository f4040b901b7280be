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
from ._results import Challenge, ChannelResult, Evidence, PolicyRef, Signal
from ._serde import structure_input, unstructure
from ._session import (
    Cancel,
    CancelStep,
    CancelTimer,
    Effect,
    Input,
    NotifyStep,
    RecordVerdict,
    ScheduleTimer,
    Session,
    SessionStatus,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepRecord,
    StepStarted,
    StepUpdated,
    TimerFired,
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

_iso = datetime.isoformat
_PLAIN = frozenset({str, int, float, bool, type(None)})


class _Unusual(Exception):  # noqa: N818 - internal control flow, never raised out
    """A value the hand-built data does not cover: use cattrs."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else _iso(value)


def _plain(facts: Mapping[str, Any]) -> dict[str, Any]:
    if type(facts) is not dict:
        raise _Unusual
    for name, value in facts.items():
        if type(name) is not str or type(value) not in _PLAIN:
            raise _Unusual
    return dict(facts)


def _signal(signal: Signal) -> dict[str, Any]:
    if type(signal) is not Signal:
        raise _Unusual
    return {"name": signal.name, "detail": signal.detail}


def _evidence(item: Evidence) -> dict[str, Any]:
    if type(item) is not Evidence:
        raise _Unusual
    return {"kind": item.kind, "reference": item.reference, "detail": item.detail}


def _result(result: ChannelResult) -> dict[str, Any]:
    if type(result) is not ChannelResult:
        raise _Unusual
    return {
        "status": result.status,
        "signals": [_signal(signal) for signal in result.signals],
        "score": result.score,
        "evidence": [_evidence(item) for item in result.evidence],
        "attempts": result.attempts,
        "provider": result.provider,
        "started_at": _time(result.started_at),
        "finished_at": _time(result.finished_at),
        "detail": result.detail,
        "facts": _plain(result.facts),
    }


def _challenge(challenge: Challenge | None) -> dict[str, Any] | None:
    if challenge is None:
        return None
    if type(challenge) is not Challenge:
        raise _Unusual
    return {
        "step_id": challenge.step_id,
        "kind": challenge.kind,
        "message": challenge.message,
        "destination": challenge.destination,
        "url": challenge.url,
        "expires_at": _time(challenge.expires_at),
    }


def _input_data(event: Input) -> dict[str, Any]:
    """``unstructure(event)`` with ``channel_state`` emptied, built by hand."""
    if type(event) is Start:
        return {"at": _iso(event.at), "type": "Start"}
    if type(event) is StepFinished:
        return {
            "step_id": event.step_id,
            "attempt": event.attempt,
            "at": _iso(event.at),
            "result": _result(event.result),
            "channel_state": {},
            "type": "StepFinished",
        }
    if type(event) is StepStarted or type(event) is StepUpdated:
        return {
            "step_id": event.step_id,
            "attempt": event.attempt,
            "at": _iso(event.at),
            "challenge": _challenge(event.challenge),
            "channel_state": {},
            "timers": [(name, _iso(due)) for name, due in event.timers],
            "type": type(event).__name__,
        }
    if type(event) is StepErrored:
        return {
            "step_id": event.step_id,
            "attempt": event.attempt,
            "at": _iso(event.at),
            "error": event.error,
            "provider": event.provider,
            "type": "StepErrored",
        }
    if type(event) is TimerFired:
        return {"timer_id": event.timer_id, "at": _iso(event.at), "type": "TimerFired"}
    if type(event) is Cancel:
        return {"at": _iso(event.at), "reason": event.reason, "type": "Cancel"}
    raise _Unusual


def _masked_input(event: Input) -> dict[str, Any]:
    try:
        return _input_data(event)
    except _Unusual:
        pass
    data: dict[str, Any] = unstructure(event)
    # A channel's own state may hold personal or secret data (a code's HMAC,
    # a destination); the core never decides on it, so the trail leaves it out.
    if "channel_state" in data:
        data["channel_state"] = {}
    return data


def _effect_summary(effect: Effect) -> dict[str, Any]:
    if type(effect) is StartStep:
        return {
            "effect_id": effect.effect_id,
            "step_id": effect.step_id,
            "attempt": effect.attempt,
            "channel": effect.channel,
            "provider": effect.provider,
            "idempotency_key": effect.idempotency_key,
            "type": "StartStep",
        }
    if type(effect) is ScheduleTimer:
        return {
            "effect_id": effect.effect_id,
            "timer_id": effect.timer_id,
            "due_at": _iso(effect.due_at),
            "type": "ScheduleTimer",
        }
    if type(effect) is CancelTimer:
        return {
            "effect_id": effect.effect_id,
            "timer_id": effect.timer_id,
            "type": "CancelTimer",
        }
    if type(effect) is CancelStep:
        return {
            "effect_id": effect.effect_id,
            "step_id": effect.step_id,
            "attempt": effect.attempt,
            "channel": effect.channel,
            "type": "CancelStep",
        }
    if type(effect) is NotifyStep:
        return {
            "effect_id": effect.effect_id,
            "step_id": effect.step_id,
            "attempt": effect.attempt,
            "channel": effect.channel,
            "name": effect.name,
            "type": "NotifyStep",
        }
    if isinstance(effect, RecordVerdict):
        return {"type": "RecordVerdict", "outcome": effect.verdict.outcome.value}
    return dict(unstructure(effect))


# The same data, written straight to canonical JSON (keys sorted, compact):
# about twice as fast again as building the dicts and encoding them. Scalars
# are written as the C encoder writes them; anything else goes to the encoder.


def _json(value: Any) -> str:
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and value - value == 0:  # finite
        return float.__repr__(value)
    return canonical_json(value)


def _json_time(value: datetime | None) -> str:
    return "null" if value is None else _quote(_iso(value))


def _result_json(result: ChannelResult) -> str:
    if type(result) is not ChannelResult:
        raise _Unusual
    signals = ",".join(
        [
            f'{{"detail":{_json(signal.detail)},"name":{_json(signal.name)}}}'
            for signal in result.signals
            if type(signal) is Signal or _unusual()
        ]
    )
    evidence = ",".join(
        [
            f'{{"detail":{_json(item.detail)},"kind":{_json(item.kind)},'
            f'"reference":{_json(item.reference)}}}'
            for item in result.evidence
            if type(item) is Evidence or _unusual()
        ]
    )
    facts = _plain(result.facts)
    return (
        f'{{"attempts":{_json(result.attempts)},"detail":{_json(result.detail)},'
        f'"evidence":[{evidence}],"facts":{canonical_json(facts) if facts else "{}"},'
        f'"finished_at":{_json_time(result.finished_at)},'
        f'"provider":{_json(result.provider)},"score":{_json(result.score)},'
        f'"signals":[{signals}],"started_at":{_json_time(result.started_at)},'
        f'"status":{_json(result.status)}}}'
    )


def _unusual() -> bool:
    raise _Unusual


def _challenge_json(challenge: Challenge | None) -> str:
    if challenge is None:
        return "null"
    if type(challenge) is not Challenge:
        raise _Unusual
    return (
        f'{{"destination":{_json(challenge.destination)},'
        f'"expires_at":{_json_time(challenge.expires_at)},'
        f'"kind":{_json(challenge.kind)},"message":{_json(challenge.message)},'
        f'"step_id":{_json(challenge.step_id)},"url":{_json(challenge.url)}}}'
    )


def _input_json(event: Input) -> str:
    """``canonical_json(_masked_input(event))``, written directly."""
    if type(event) is Start:
        return f'{{"at":{_quote(_iso(event.at))},"type":"Start"}}'
    if type(event) is StepFinished:
        return (
            f'{{"at":{_quote(_iso(event.at))},"attempt":{_json(event.attempt)},'
            f'"channel_state":{{}},"result":{_result_json(event.result)},'
            f'"step_id":{_json(event.step_id)},"type":"StepFinished"}}'
        )
    if type(event) is StepStarted or type(event) is StepUpdated:
        timers = ",".join(
            [f"[{_json(name)},{_quote(_iso(due))}]" for name, due in event.timers]
        )
        return (
            f'{{"at":{_quote(_iso(event.at))},"attempt":{_json(event.attempt)},'
            f'"challenge":{_challenge_json(event.challenge)},"channel_state":{{}},'
            f'"step_id":{_json(event.step_id)},"timers":[{timers}],'
            f'"type":"{type(event).__name__}"}}'
        )
    if type(event) is StepErrored:
        return (
            f'{{"at":{_quote(_iso(event.at))},"attempt":{_json(event.attempt)},'
            f'"error":{_json(event.error)},"provider":{_json(event.provider)},'
            f'"step_id":{_json(event.step_id)},"type":"StepErrored"}}'
        )
    if type(event) is TimerFired:
        return (
            f'{{"at":{_quote(_iso(event.at))},"timer_id":{_json(event.timer_id)},'
            f'"type":"TimerFired"}}'
        )
    if type(event) is Cancel:
        return (
            f'{{"at":{_quote(_iso(event.at))},"reason":{_json(event.reason)},'
            f'"type":"Cancel"}}'
        )
    raise _Unusual


def _effect_json(effect: Effect) -> str:
    """``canonical_json(_effect_summary(effect))``, written directly."""
    if type(effect) is StartStep:
        return (
            f'{{"attempt":{_json(effect.attempt)},"channel":{_json(effect.channel)},'
            f'"effect_id":{_json(effect.effect_id)},'
            f'"idempotency_key":{_json(effect.idempotency_key)},'
            f'"provider":{_json(effect.provider)},"step_id":{_json(effect.step_id)},'
            f'"type":"StartStep"}}'
        )
    if type(effect) is ScheduleTimer:
        return (
            f'{{"due_at":{_quote(_iso(effect.due_at))},'
            f'"effect_id":{_json(effect.effect_id)},'
            f'"timer_id":{_json(effect.timer_id)},"type":"ScheduleTimer"}}'
        )
    if type(effect) is CancelTimer:
        return (
            f'{{"effect_id":{_json(effect.effect_id)},'
            f'"timer_id":{_json(effect.timer_id)},"type":"CancelTimer"}}'
        )
    if type(effect) is CancelStep:
        return (
            f'{{"attempt":{_json(effect.attempt)},"channel":{_json(effect.channel)},'
            f'"effect_id":{_json(effect.effect_id)},"step_id":{_json(effect.step_id)},'
            f'"type":"CancelStep"}}'
        )
    if type(effect) is NotifyStep:
        return (
            f'{{"attempt":{_json(effect.attempt)},"channel":{_json(effect.channel)},'
            f'"effect_id":{_json(effect.effect_id)},"name":{_json(effect.name)},'
            f'"step_id":{_json(effect.step_id)},"type":"NotifyStep"}}'
        )
    if type(effect) is RecordVerdict:
        return (
            f'{{"outcome":{_json(effect.verdict.outcome.value)},'
            f'"type":"RecordVerdict"}}'
        )
    raise _Unusual


def _input_body(event: Input, effects: Sequence[Effect]) -> str:
    """The body of an ``input`` event: the masked input and its effects."""
    try:
        text = _input_json(event)
        if not effects:
            return f'{{"input":{text}}}'
        listed = ",".join([_effect_json(effect) for effect in effects])
    except _Unusual:
        data: dict[str, Any] = {"input": _masked_input(event)}
        if effects:
            data["effects"] = [_effect_summary(effect) for effect in effects]
        return canonical_json(data)
    return f'{{"effects":[{listed}],"input":{text}}}'


def _with_head(session: Session, head: str, count: int) -> Session:
    """``attrs.evolve(session, audit_head=head, audit_count=count)``, cheaper."""
    if type(session) is not Session:
        return attrs.evolve(session, audit_head=head, audit_count=count)
    return Session(
        session_id=session.session_id,
        applicant=session.applicant,
        policy=session.policy,
        created_at=session.created_at,
        deadline_at=session.deadline_at,
        status=session.status,
        steps=session.steps,
        facts=session.facts,
        verdict=session.verdict,
        inputs=session.inputs,
        audit_head=head,
        audit_count=count,
    )


def _policy_data(policy: PolicyRef) -> Any:
    if type(policy) is not PolicyRef:
        return unstructure(policy)
    return {"name": policy.name, "version": policy.version, "hash": policy.hash}


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
    return _with_head(session, event.hash, index + 1), event


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
                "policy": _policy_data(session.policy),
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
    ) -> tuple[Session, AuditEvent]:
        """Record an input applied to the session and the effects it led to, masked."""
        return _chained(session, "input", _input_body(event, effects), at)

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
            AuditIntegrityError: the trail does not verify or does not start
                with ``session.created``.
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
        for event in events[1:]:
            if event.kind == "input":
                session = transition(
                    policy, session, structure_input(event.data["input"])
                ).session
        return session
