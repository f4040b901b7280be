"""Recorded sessions: what a backtest replays, read from audit exports or a dataset.

Two JSON Lines formats are read, told apart by their first record:

- an **audit export** (``multiverify audit export``): hash-chained events,
  several per session. Each step's result is the one the core applied: the
  last ``StepFinished`` of the step's current attempt, a timeout the core
  declared, or a provider error that did not fail over.
- a **dataset** of recorded channel results, one session per line::

    {"session_id": "s-1", "created_at": "2026-11-02T08:15:00+00:00",
     "facts": {"applicant": {"age": 31}, "application": {"amount": 8000}},
     "steps": {"bureau": {"channel": "credit_bureau", "status": "passed",
                          "signals": ["identity_match"], "score": 0.92,
                          "duration": "2s"}}}
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import attrs

from .._audit import AuditEvent, AuditTrail
from .._duration import parse_duration
from .._results import ChannelResult, Evidence, Outcome, PolicyRef, ResultStatus, Signal
from ..exceptions import AuditIntegrityError, DatasetError

__all__ = [
    "RecordedSession",
    "RecordedStep",
    "load_labels",
    "load_sessions",
    "parse_labels",
    "parse_sessions",
]

#: The time a dataset session starts at when it names none.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

_SESSION_KEYS = frozenset({"session_id", "created_at", "facts", "steps"})
_STEP_KEYS = frozenset(
    {
        "channel",
        "status",
        "signals",
        "score",
        "duration",
        "attempts",
        "provider",
        "detail",
        "facts",
        "failover",
    }
)
_FACT_ROOTS = ("applicant", "application")
_STATUSES = {status.value: status for status in ResultStatus}
_OUTCOMES = {outcome.value: outcome for outcome in Outcome}


@attrs.frozen(kw_only=True)
class RecordedStep:
    """One step as it was recorded.

    Attributes:
        step_id: the step's id in the recording.
        channel: the channel that ran it.
        result: how it ended.
        duration: seconds from the step's start to its result.
        errors: the provider errors of the attempts that failed before it,
            oldest first (one per attempt; for a result with status
            ``error``, the errors of every attempt).
        failover: ``False`` when the last error ended the step without
            trying the next provider (a crash while handling input, a
            refusal made before any request): another policy's providers
            would not have been tried either.
    """

    step_id: str
    channel: str
    result: ChannelResult
    duration: float = 0.0
    errors: tuple[str, ...] = ()
    failover: bool = True


@attrs.frozen(kw_only=True)
class RecordedSession:
    """One recorded session: its facts and the results of the steps it ran.

    Attributes:
        session_id: the session's id.
        steps: the recorded steps, by step id.
        facts: what conditions read about the applicant and the loan
            (``{"applicant": {...}, "application": {...}}``).
        created_at: when the session started.
        recorded: the verdict's outcome in the recording, when it has one.
        recorded_policy: the policy that decided the recording, when known.
        line: where the session starts in its file (0: not from a file).
    """

    session_id: str
    steps: Mapping[str, RecordedStep] = attrs.field(factory=dict)
    facts: Mapping[str, Any] = attrs.field(factory=lambda: {r: {} for r in _FACT_ROOTS})
    created_at: datetime = EPOCH
    recorded: Outcome | None = None
    recorded_policy: PolicyRef | None = None
    line: int = 0


# --- located errors -------------------------------------------------------------


def _fail(source: str, line: int, field: str, message: str) -> NoReturn:
    where = f"{source}: line {line}" if line else source
    raise DatasetError(
        message=f"{where}: {field + ': ' if field else ''}{message}",
        field=field,
        source=source,
        line=line,
    )


def _kind(value: object) -> str:
    kinds: tuple[tuple[type[Any], str], ...] = (
        (type(None), "null"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dict, "an object"),
        (list, "a list"),
    )
    for types, name in kinds:
        if isinstance(value, types):
            return name
    return type(value).__name__  # pragma: no cover - JSON has no other kinds


class _Line:
    """Checks one record's fields, failing at the first located mistake."""

    def __init__(self, source: str, number: int) -> None:
        self.source = source
        self.number = number

    def fail(self, field: str, message: str) -> NoReturn:
        _fail(self.source, self.number, field, message)

    def table(
        self, value: object, field: str, allowed: frozenset[str] | None = None
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"expected an object, got {_kind(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    name = f"{field}.{key}" if field else key
                    self.fail(
                        name, f"unknown key; known keys: {', '.join(sorted(allowed))}"
                    )
        return value

    def string(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            self.fail(field, f"expected a string, got {_kind(value)}")
        return value

    def real(self, value: object, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, f"expected a number, got {_kind(value)}")
        return float(value)

    def moment(self, value: object, field: str) -> datetime:
        text = self.string(value, field)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(field, f"not an ISO 8601 date-time: {text!r}")
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def duration(self, value: object, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(field, f"expected a duration such as '30s', got {_kind(value)}")
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(field, str(exc))

    def status(self, value: object, field: str) -> ResultStatus:
        text = self.string(value, field)
        status = _STATUSES.get(text)
        if status is None:
            self.fail(
                field,
                f"{text!r} is not a result status (one of {', '.join(sorted(_STATUSES))})",
            )
        return status

    def facts(self, value: object, field: str) -> dict[str, Any]:
        table = self.table(value, field, frozenset(_FACT_ROOTS))
        return {
            root: self.table(table.get(root, {}), f"{field}.{root}")
            for root in _FACT_ROOTS
        }


# --- the dataset format -----------------------------------------------------------


# Recorded signals and durations repeat across sessions: share them.
_SIGNAL_CACHE: dict[str, Signal] = {}
_DURATION_CACHE: dict[object, float] = {}
_CACHE_MAX = 4096


def _signal(name: str) -> Signal:
    signal = _SIGNAL_CACHE.get(name)
    if signal is None:
        if len(_SIGNAL_CACHE) >= _CACHE_MAX:
            _SIGNAL_CACHE.clear()
        signal = _SIGNAL_CACHE[name] = Signal(name=name)
    return signal


def _dataset_step(check: _Line, step_id: str, value: object) -> RecordedStep:
    # The common, sound record takes the short way; every check that fails
    # builds its located message only then.
    field = f"steps.{step_id}"
    if type(value) is not dict or not value.keys() <= _STEP_KEYS:
        check.table(value, field, _STEP_KEYS)
    table: dict[str, Any] = value  # type: ignore[assignment]
    channel = table.get("channel")
    if type(channel) is not str:
        if channel is None:
            check.fail(f"{field}.channel", "missing required key")
        check.string(channel, f"{field}.channel")
    text = table.get("status")
    status = _STATUSES.get(text) if type(text) is str else None
    if status is None:
        if text is None:
            check.fail(f"{field}.status", "missing required key")
        status = check.status(text, f"{field}.status")
    names = table.get("signals", [])
    if type(names) is not list:
        check.fail(f"{field}.signals", f"expected a list, got {_kind(names)}")
    for index, name in enumerate(names):
        if type(name) is not str:
            check.string(name, f"{field}.signals[{index}]")
    score = table.get("score")
    if score is not None and type(score) is not float:
        score = check.real(score, f"{field}.score")
    if "duration" in table:
        raw = table["duration"]
        key = (type(raw), raw)
        duration = _DURATION_CACHE.get(key)
        if duration is None:
            duration = check.duration(raw, f"{field}.duration")
            if len(_DURATION_CACHE) >= _CACHE_MAX:
                _DURATION_CACHE.clear()
            _DURATION_CACHE[key] = duration
    elif status is ResultStatus.TIMEOUT:
        check.fail(f"{field}.duration", "a timeout needs the time it waited")
    else:
        duration = 0.0
    attempts = table.get("attempts", 1)
    if type(attempts) is not int or attempts < 1:
        check.fail(
            f"{field}.attempts", f"expected an integer of at least 1, got {attempts!r}"
        )
    provider = table.get("provider")
    if provider is not None and type(provider) is not str:
        check.string(provider, f"{field}.provider")
    detail = table.get("detail", "")
    if type(detail) is not str:
        check.string(detail, f"{field}.detail")
    facts = table.get("facts", {})
    if type(facts) is not dict:
        check.table(facts, f"{field}.facts")
    if type(failover := table.get("failover", True)) is not bool:
        check.fail(
            f"{field}.failover", f"expected true or false, got {_kind(failover)}"
        )
    return RecordedStep(
        step_id=step_id,
        channel=channel,
        duration=duration,
        errors=(detail or "error",) * attempts if status is ResultStatus.ERROR else (),
        failover=failover,
        result=ChannelResult(
            status=status,
            signals=tuple(_signal(name) for name in names),
            score=score,
            attempts=attempts,
            provider=provider,
            detail=detail,
            facts=facts,
        ),
    )


def dataset_session(raw: object, number: int, source: str) -> RecordedSession:
    """One parsed line of the dataset format as a recorded session.

    Raises:
        DatasetError: the record is not a recorded session.
    """
    check = _Line(source, number)
    table = check.table(raw, "", _SESSION_KEYS)
    for key in ("session_id", "steps"):
        if key not in table:
            check.fail(key, "missing required key")
    session_id = check.string(table["session_id"], "session_id")
    if not session_id.strip():
        check.fail("session_id", "must not be empty")
    steps = check.table(table["steps"], "steps")
    created_at = (
        check.moment(table["created_at"], "created_at")
        if "created_at" in table
        else EPOCH
    )
    return RecordedSession(
        session_id=session_id,
        created_at=created_at,
        facts=check.facts(table.get("facts", {}), "facts"),
        steps={
            step_id: _dataset_step(check, step_id, value)
            for step_id, value in steps.items()
        },
        line=number,
    )


def parse_line(text: str, number: int, source: str) -> object:
    """A JSON Lines record, or a located error."""
    try:
        return json.loads(text)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        _fail(source, number, "", f"not JSON: {reason}")
    except RecursionError:
        _fail(source, number, "", "not JSON: nested too deeply")


def read_text(source: str, *, newline: str | None = None) -> io.StringIO:
    """A UTF-8 file's text (without a leading BOM), to read line by line.

    ``newline`` works as for `open`: ``None`` turns every line ending into
    ``\\n``, ``""`` (for CSV) keeps them.

    Raises:
        DatasetError: a byte that is not UTF-8, with its line and its byte
            in the line (from 1).
        OSError: the file cannot be read.
    """
    data = Path(source).read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line = data.count(b"\n", 0, at) + 1
        byte = at - data.rfind(b"\n", 0, at)
        _fail(source, line, "", f"not UTF-8 text: {exc.reason} at byte {byte}")
    return io.StringIO(text, newline=newline)


# --- the audit-export format ------------------------------------------------------


def _is_event(raw: object) -> bool:
    return isinstance(raw, dict) and "kind" in raw and "data" in raw


@attrs.define
class _Trail:
    """The events of one session in an audit export, in file order."""

    line: int
    events: list[tuple[int, dict[str, Any]]] = attrs.Factory(list)


def _audit_result(check: _Line, raw: object, field: str) -> ChannelResult:
    table = check.table(raw, field)
    signals = table.get("signals") or []
    evidence = table.get("evidence") or []
    if not isinstance(signals, list) or not isinstance(evidence, list):
        check.fail(field, "signals and evidence must be lists")
    try:
        return ChannelResult(
            status=check.status(table.get("status"), f"{field}.status"),
            signals=tuple(
                Signal(name=str(s["name"]), detail=str(s.get("detail", "")))
                for s in signals
            ),
            score=None if table.get("score") is None else float(table["score"]),
            evidence=tuple(
                Evidence(
                    kind=str(e["kind"]),
                    reference=str(e["reference"]),
                    detail=str(e.get("detail", "")),
                )
                for e in evidence
            ),
            attempts=int(table.get("attempts") or 1),
            provider=table.get("provider"),
            detail=str(table.get("detail") or ""),
            facts=dict(table.get("facts") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        check.fail(field, f"not a channel result: {type(exc).__name__}: {exc}")


class _Steps:
    """The step results the core applied, read back from one session's inputs."""

    def __init__(self) -> None:
        self.started: dict[str, datetime] = {}
        self.attempt: dict[str, int] = {}
        self.channels: dict[str, str] = {}
        self.errors: dict[str, list[str]] = {}
        self.ended: dict[str, RecordedStep] = {}

    def live(self, step_id: object, attempt: object) -> str | None:
        """The step, when the input is for its current attempt and it has not ended."""
        if (
            isinstance(step_id, str)
            and step_id in self.attempt
            and step_id not in self.ended
            and attempt == self.attempt[step_id]
        ):
            return step_id
        return None

    def end(
        self,
        step_id: str,
        result: ChannelResult,
        at: datetime,
        *,
        failover: bool = True,
    ) -> None:
        self.ended[step_id] = RecordedStep(
            step_id=step_id,
            channel=self.channels[step_id],
            result=result,
            duration=max(0.0, (at - self.started[step_id]).total_seconds()),
            errors=tuple(self.errors.get(step_id, ())),
            failover=failover,
        )

    def apply(self, check: _Line, data: dict[str, Any]) -> None:
        """Follow one ``input`` event: a result, an error, a timeout, started steps."""
        given = check.table(data.get("input"), "data.input")
        effects = data.get("effects") or []
        if not isinstance(effects, list):
            check.fail("data.effects", f"expected a list, got {_kind(effects)}")
        at = check.moment(given.get("at"), "data.input.at")
        kinds: dict[str, set[object]] = {"StartStep": set(), "CancelStep": set()}
        for effect in effects:
            if isinstance(effect, dict) and effect.get("type") in kinds:
                kinds[effect["type"]].add(effect.get("step_id"))
        kind = given.get("type")
        step_id = self.live(given.get("step_id"), given.get("attempt"))
        if kind == "StepFinished" and step_id is not None:
            self.end(
                step_id,
                _audit_result(check, given.get("result"), "data.input.result"),
                at,
            )
        elif kind == "StepErrored" and step_id is not None:
            error = str(given.get("error", ""))
            self.errors.setdefault(step_id, []).append(error)
            if step_id not in kinds["StartStep"]:  # no failover: the step ended
                provider = given.get("provider")
                self.end(
                    step_id,
                    ChannelResult(
                        status=ResultStatus.ERROR,
                        attempts=self.attempt[step_id],
                        provider=provider if isinstance(provider, str) else None,
                        detail=error,
                    ),
                    at,
                    # Recorded before the flag: an error that failed over.
                    failover=given.get("failover") is not False,
                )
        elif kind == "TimerFired":
            parts = str(given.get("timer_id", "")).split(":")
            # step:<id>:<attempt>:timeout, which the core acted on (it cancelled the step)
            if len(parts) == 4 and parts[0] == "step" and parts[3] == "timeout":  # noqa: PLR2004
                attempt = int(parts[2]) if parts[2].isdecimal() else None
                timed_out = self.live(parts[1], attempt)
                if timed_out is not None and timed_out in kinds["CancelStep"]:
                    self.end(timed_out, ChannelResult(status=ResultStatus.TIMEOUT), at)
        for effect in effects:
            if isinstance(effect, dict) and effect.get("type") == "StartStep":
                target = str(effect.get("step_id"))
                self.started.setdefault(target, at)
                self.attempt[target] = int(effect.get("attempt", 1))
                self.channels[target] = str(effect.get("channel"))


def _verify_chain(events: list[tuple[int, dict[str, Any]]], source: str) -> None:
    """Check one session's hash chain, failing at the line of the first broken event."""
    chain = []
    for number, raw in events:
        check = _Line(source, number)
        for key in ("prev", "hash", "at"):
            check.string(raw.get(key), key)
        try:
            chain.append(AuditEvent.from_data(raw))
        except ValueError:
            check.fail("at", f"not an ISO 8601 time: {raw['at']!r}")
    try:
        AuditTrail.verify(chain)
    except AuditIntegrityError as exc:
        number = events[exc.index][0]
        problem = str(exc.message).partition(": ")[2] or exc.message
        _fail(
            source,
            number,
            "",
            f"the audit chain of session {chain[exc.index].session_id} is broken "
            f"at #{chain[exc.index].index}: {problem}; replaying it would "
            "re-decide a history that was changed",
        )


def _audit_session(session_id: str, trail: _Trail, source: str) -> RecordedSession:
    """Read back the step results the core applied in one session's events."""
    events = sorted(trail.events, key=lambda item: item[1]["index"])
    first_line, head = events[0]
    check = _Line(source, first_line)
    if head["kind"] != "session.created":
        check.fail("kind", f"session {session_id} does not start with session.created")
    created = check.table(head["data"], "data")
    policy = created.get("policy")
    recorded_policy = None
    if isinstance(policy, dict):
        recorded_policy = PolicyRef(
            name=str(policy.get("name", "")),
            version=str(policy.get("version", "")),
            hash=str(policy.get("hash", "")),
        )
    steps = _Steps()
    recorded: Outcome | None = None
    for number, event in events[1:]:
        check = _Line(source, number)
        data = check.table(event["data"], "data")
        if event["kind"] == "verdict":
            outcome = data.get("outcome")
            if outcome not in _OUTCOMES:
                check.fail("data.outcome", f"not an outcome: {outcome!r}")
            recorded = _OUTCOMES[outcome]
            break
        if event["kind"] == "input":
            steps.apply(check, data)
    facts = check.facts(created.get("facts", {}), "data.facts")
    created_at = _Line(source, first_line).moment(
        created.get("created_at"), "data.created_at"
    )
    # Last, so that a record that cannot be read is named for what is wrong with it.
    _verify_chain(events, source)
    return RecordedSession(
        session_id=session_id,
        steps=steps.ended,
        facts=facts,
        created_at=created_at,
        recorded=recorded,
        recorded_policy=recorded_policy,
        line=trail.line,
    )


def _check_event(raw: object, number: int, source: str) -> dict[str, Any]:
    check = _Line(source, number)
    table = check.table(raw, "")
    for key in ("session_id", "index", "kind", "data"):
        if key not in table:
            check.fail(key, "missing required key (not an audit event)")
    check.string(table["session_id"], "session_id")
    check.string(table["kind"], "kind")
    if isinstance(table["index"], bool) or not isinstance(table["index"], int):
        check.fail("index", f"expected an integer, got {_kind(table['index'])}")
    check.table(table["data"], "data")
    return table


def audit_sessions(
    records: Iterable[tuple[int, object]], source: str
) -> list[RecordedSession]:
    """Group audit events by session and read each session's step results.

    Raises:
        DatasetError: a line is not an audit event, or a trail cannot be read.
    """
    trails: dict[str, _Trail] = {}
    for number, raw in records:
        event = _check_event(raw, number, source)
        trail = trails.get(event["session_id"])
        if trail is None:
            trail = trails[event["session_id"]] = _Trail(line=number)
        trail.events.append((number, event))
    return [_audit_session(sid, trail, source) for sid, trail in trails.items()]


# --- files ------------------------------------------------------------------------


def numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """The non-blank lines, with their numbers from 1."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield number, text


def detect(first: object) -> str:
    """``audit`` or ``dataset``: the format whose first record this is."""
    return "audit" if _is_event(first) else "dataset"


def parse_sessions(
    lines: Iterable[str], *, source: str = "<sessions>"
) -> list[RecordedSession]:
    """Read recorded sessions from JSON Lines: an audit export or a dataset.

    The first record tells the format; blank lines are skipped.

    Args:
        lines: the lines of the file.
        source: the file's name, for error locations.

    Returns:
        The sessions, in the order they first appear.

    Raises:
        DatasetError: a line is not JSON or not a record of the format, naming
            the line and the field; or a session id appears twice.
    """
    records = [
        (number, parse_line(text, number, source)) for number, text in numbered(lines)
    ]
    if not records:
        return []
    if detect(records[0][1]) == "audit":
        sessions = audit_sessions(records, source)
    else:
        sessions = [dataset_session(raw, number, source) for number, raw in records]
    check_unique(sessions, source)
    return sessions


def check_unique(sessions: Iterable[RecordedSession], source: str) -> None:
    """Refuse a session id that appears on two lines.

    Raises:
        DatasetError: located at the second line.
    """
    seen: dict[str, int] = {}
    for session in sessions:
        first = seen.setdefault(session.session_id, session.line)
        if first != session.line:
            _fail(
                source,
                session.line,
                "session_id",
                f"session {session.session_id!r} already appears on line {first}",
            )


def load_sessions(path: str | os.PathLike[str]) -> list[RecordedSession]:
    """Read recorded sessions from a JSON Lines file (see [`parse_sessions`][multiverify.backtest.parse_sessions]).

    Raises:
        DatasetError: the file is not UTF-8 text, or not an audit export or a
            dataset.
        OSError: the file cannot be read.
    """
    source = os.fspath(path)
    return parse_sessions(read_text(source), source=source)


# --- labels -----------------------------------------------------------------------


def parse_labels(lines: Iterable[str], *, source: str = "<labels>") -> dict[str, str]:
    """Read outcome labels: CSV rows of ``session_id,label``.

    A first row ``session_id,label`` is a header and skipped; blank rows are
    skipped. Labels are free words such as ``good``, ``fraud`` or ``default``.

    Args:
        lines: the lines of the CSV file.
        source: the file's name, for error locations.

    Returns:
        The label of each session id.

    Raises:
        DatasetError: a row without exactly two fields, an empty id or label,
            or a session labelled twice, with its line.
    """
    labels: dict[str, str] = {}
    where: dict[str, int] = {}
    reader = csv.reader(lines, strict=True)
    try:
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            if not labels and cells == ["session_id", "label"]:
                continue
            if len(cells) != 2:  # noqa: PLR2004 - session_id,label
                _fail(
                    source,
                    number,
                    "",
                    f"expected 2 fields (session_id,label), got {len(cells)}",
                )
            session_id, label = cells
            if not session_id or not label:
                _fail(
                    source,
                    number,
                    "label" if session_id else "session_id",
                    "must not be empty",
                )
            if session_id in labels:
                _fail(
                    source,
                    number,
                    "session_id",
                    f"session {session_id!r} is already labelled on line {where[session_id]}",
                )
            labels[session_id] = label
            where[session_id] = number
    except csv.Error as exc:
        _fail(source, reader.line_num, "", f"not CSV: {exc}")
    return labels


def load_labels(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read outcome labels from a CSV file (see [`parse_labels`][multiverify.backtest.parse_labels]).

    Raises:
        DatasetError: the file is not UTF-8 text, or a row cannot be read.
        OSError: the file cannot be read.
    """
    source = os.fspath(path)
    return parse_labels(read_text(source, newline=""), source=source)
