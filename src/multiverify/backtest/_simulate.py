"""Running a backtest: every recorded session under a policy and its baseline, on every core."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import attrs

from ..exceptions import ConfigurationError, DatasetError
from ..policy import Policy, policy_from_dict
from ._records import (
    RecordedSession,
    audit_sessions,
    dataset_session,
    detect,
    numbered,
    parse_line,
    read_text,
)
from ._replay import Plan, SimulatedSession, replay
from ._report import COLUMNS, Row, SimulationReport, Tally, VerdictChange

__all__ = ["Progress", "simulate", "simulate_file"]

Progress = Callable[[int, int], None]
"""Called as sessions finish: ``(done, total)``."""

#: Sessions per unit of work sent to a worker process.
CHUNK = 2000
#: Below this many sessions per worker, a process pool costs more than it saves.
PER_WORKER = 5000

_Result = tuple[Row, Row | None, VerdictChange | None]
_Lines = Sequence[tuple[int, str]]
# A chunk of dataset lines, or of audit trails (the lines of one session each).
_Unit = tuple[str, Sequence[Any]]
# How AuditEvent.to_json ends a line: the session id, read without parsing it all.
_SESSION_TAIL = re.compile(r'"session_id":\s*("(?:[^"\\]|\\.)*")\s*}\s*$')


def _agrees(
    plan: Plan, recorded: RecordedSession, simulated: SimulatedSession
) -> bool | None:
    """Whether the replay keeps the verdict recorded under this very policy."""
    ref = recorded.recorded_policy
    if recorded.recorded is None or ref is None or ref.hash != plan.ref.hash:
        return None
    return simulated.outcome is recorded.recorded


class _Comparer:
    """Replays sessions under the policy and the baseline; notes what changed."""

    def __init__(self, policy: Policy, baseline: Policy | None) -> None:
        self.plan = Plan(policy)
        self.baseline = None if baseline is None else Plan(baseline)

    def compare(self, recorded: RecordedSession) -> _Result:
        after = replay(self.plan, recorded)
        row = Row.of(after, agrees=_agrees(self.plan, recorded, after))
        if self.baseline is None:
            return row, None, None
        before = replay(self.baseline, recorded)
        old = Row.of(before, agrees=_agrees(self.baseline, recorded, before))
        change = None
        if old.column != row.column:
            change = VerdictChange(
                session_id=recorded.session_id,
                before=old.column,
                after=row.column,
                before_reason=old.reason,
                after_reason=row.reason,
                before_explanation=before.explain(),
                after_explanation=after.explain(),
            )
        return row, old, change

    def work(self, unit: _Unit, source: str) -> list[_Result]:
        """Parse and compare a chunk of dataset lines, or of audit trails."""
        kind, chunk = unit
        if kind == "dataset":
            return [
                self.compare(
                    dataset_session(parse_line(text, number, source), number, source)
                )
                for number, text in chunk
            ]
        return [
            self.compare(recorded)
            for trail in chunk
            for recorded in audit_sessions(
                ((number, parse_line(text, number, source)) for number, text in trail),
                source,
            )
        ]


# --- worker processes -------------------------------------------------------------

_PolicyDocument = tuple[dict[str, Any], str | None, dict[str, Any], str]
_worker: _Comparer | None = None


def _document(policy: Policy) -> _PolicyDocument:
    return policy.to_dict(), policy.source, dict(policy.channels), policy.hash


def _rebuilt(document: _PolicyDocument) -> Policy:
    data, source, channels, expected = document
    policy = policy_from_dict(data, source=source, channels=channels)
    if policy.hash != expected:  # pragma: no cover - to_dict round-trips by design
        raise ConfigurationError(
            message=f"policy {policy.name} did not rebuild the same"
        )
    return policy


def _start_worker(policy: _PolicyDocument, baseline: _PolicyDocument | None) -> None:
    global _worker  # noqa: PLW0603 - one comparer per worker process
    _worker = _Comparer(
        _rebuilt(policy), None if baseline is None else _rebuilt(baseline)
    )


def _work(unit: _Unit, source: str) -> list[_Result]:
    assert _worker is not None  # noqa: S101 - set by the initializer
    return _worker.work(unit, source)


def _trails(lines: _Lines, source: str) -> list[list[tuple[int, str]]]:
    """The lines of an audit export, grouped by session in order of first appearance."""
    trails: dict[str, list[tuple[int, str]]] = {}
    for number, text in lines:
        match = _SESSION_TAIL.search(text)
        if match is not None:
            key = json.loads(match.group(1))
        else:  # another writer's key order: parse the line to find its session
            raw = parse_line(text, number, source)
            key = raw.get("session_id") if isinstance(raw, dict) else None
            key = key if isinstance(key, str) else f"\0{number}"
        trails.setdefault(key, []).append((number, text))
    return list(trails.values())


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _default_workers(count: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, count // PER_WORKER))


# --- the report -------------------------------------------------------------------


class _Collector:
    """Tallies results in file order and builds the report."""

    def __init__(
        self,
        comparer: _Comparer,
        *,
        source: str,
        labels: Mapping[str, str] | None,
        review_minutes: float | None,
    ) -> None:
        self.source = source
        self.labels = labels
        self.policy = Tally(comparer.plan, labels=labels, review_minutes=review_minutes)
        self.baseline = (
            None
            if comparer.baseline is None
            else Tally(comparer.baseline, labels=labels, review_minutes=review_minutes)
        )
        self.changes: list[VerdictChange] = []
        self.shifts: dict[str, dict[str, int]] = {
            before: dict.fromkeys(COLUMNS, 0) for before in COLUMNS
        }
        self.seen: dict[str, int] = {}

    def add(self, results: Iterable[_Result]) -> int:
        count = 0
        for row, old, change in results:
            first = self.seen.setdefault(row.session_id, row.line)
            if first != row.line:
                raise DatasetError(
                    message=f"{self.source}: line {row.line}: session_id: session "
                    f"{row.session_id!r} already appears on line {first}",
                    field="session_id",
                    source=self.source,
                    line=row.line,
                )
            self.policy.add(row)
            if old is not None and self.baseline is not None:
                self.baseline.add(old)
                self.shifts[old.column][row.column] += 1
            if change is not None:
                label = None if self.labels is None else self.labels.get(row.session_id)
                self.changes.append(attrs.evolve(change, label=label))
            count += 1
        return count

    def report(self) -> SimulationReport:
        unmatched = 0
        if self.labels is not None:
            unmatched = sum(
                1 for session_id in self.labels if session_id not in self.seen
            )
        return SimulationReport(
            source=self.source,
            sessions=self.policy.sessions,
            policy=self.policy.summary(),
            baseline=None if self.baseline is None else self.baseline.summary(),
            changes=tuple(self.changes),
            shifts=self.shifts if self.baseline is not None else {},
            unmatched_labels=unmatched,
        )


def simulate(
    policy: Policy,
    sessions: Iterable[RecordedSession],
    *,
    baseline: Policy | None = None,
    labels: Mapping[str, str] | None = None,
    review_minutes: float | None = None,
    source: str = "<sessions>",
) -> SimulationReport:
    """Re-decide recorded sessions under a policy, in this process.

    Each session runs through the pure core with its recorded step results
    and no vendor; see [`replay`][multiverify.backtest.replay].

    Args:
        policy: the policy to try.
        sessions: the recorded sessions.
        baseline: the policy to compare with (usually the one in use).
        labels: known outcome labels by session id, for the confusion matrix.
        review_minutes: reviewer minutes per ``review`` verdict, for the load.
        source: where the sessions came from, for the report.

    Returns:
        The report.

    Raises:
        DatasetError: a session id appears twice.
    """
    comparer = _Comparer(policy, baseline)
    collector = _Collector(
        comparer, source=source, labels=labels, review_minutes=review_minutes
    )
    collector.add(comparer.compare(recorded) for recorded in sessions)
    return collector.report()


def simulate_file(
    policy: Policy,
    path: str | os.PathLike[str],
    *,
    baseline: Policy | None = None,
    labels: Mapping[str, str] | None = None,
    review_minutes: float | None = None,
    workers: int | None = None,
    on_progress: Progress | None = None,
) -> SimulationReport:
    """Re-decide the sessions of a JSON Lines file (audit export or dataset).

    Large files are split across worker processes, one per core by default;
    each builds the policies once and replays its share with the same pure
    core.

    Args:
        policy: the policy to try.
        path: the file (see [`parse_sessions`][multiverify.backtest.parse_sessions]).
        baseline: the policy to compare with.
        labels: known outcome labels by session id.
        review_minutes: reviewer minutes per ``review`` verdict.
        workers: worker processes; 1 replays in this process. By default one
            per core, and none for small files.
        on_progress: called as sessions finish.

    Returns:
        The report.

    Raises:
        DatasetError: the file is not UTF-8 text, a line is not a record of
            the file's format (the first such line), or a session id appears
            twice.
        OSError: the file cannot be read.
    """
    source = os.fspath(path)
    lines = list(numbered(read_text(source)))
    comparer = _Comparer(policy, baseline)
    collector = _Collector(
        comparer, source=source, labels=labels, review_minutes=review_minutes
    )
    audit = (
        bool(lines) and detect(parse_line(lines[0][1], lines[0][0], source)) == "audit"
    )
    records: Sequence[Any] = _trails(lines, source) if audit else lines
    kind = "audit" if audit else "dataset"
    total = len(records)
    units: list[_Unit] = [(kind, chunk) for chunk in _chunks(records, CHUNK)]
    count = _default_workers(total) if workers is None else max(1, workers)
    done = 0
    if on_progress is not None:
        on_progress(0, total)
    if count == 1:
        for unit in units:
            done += collector.add(comparer.work(unit, source))
            if on_progress is not None:
                on_progress(done, total)
        return collector.report()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=count,
        mp_context=context,
        initializer=_start_worker,
        initargs=(
            _document(policy),
            None if baseline is None else _document(baseline),
        ),
    ) as pool:
        pending: deque[Future[list[_Result]]] = deque()
        queued = iter(units)
        window = 2 * count + 1
        for unit in queued:
            pending.append(pool.submit(_work, unit, source))
            if len(pending) < window:
                continue
            done += collector.add(pending.popleft().result())
            if on_progress is not None:
                on_progress(done, total)
        while pending:
            done += collector.add(pending.popleft().result())
            if on_progress is not None:
                on_progress(done, total)
    return collector.report()
