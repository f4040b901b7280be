"""Replaying one recorded session under a policy, with the pure core and no vendor.

The replay is a small discrete-event run of
[`transition`][multiverify._session.transition]: each step the core starts gets
its recorded result back after its recorded duration, each timer the core
schedules fires at its time unless it was cancelled, in time order, until the
core reaches a verdict. Nothing but the core decides: the replay only
delivers recorded results.

A step the core starts but the recording cannot answer is *missing
evidence*: it never gets a result (nor its timeout, which would be a guess).
When the verdict comes from a rule anyway, the step was not needed; when the
session could only be decided by the missing step, its default, or its
deadline, it stays undecided.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._results import Outcome, ResultStatus, StepSummary, Verdict
from .._session import (
    CancelTimer,
    Input,
    ScheduleTimer,
    Session,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepRecord,
    TimerFired,
    transition,
)
from ..policy import Policy
from ._records import RecordedSession, RecordedStep

__all__ = ["Plan", "SimulatedSession", "replay"]


@attrs.frozen(kw_only=True)
class SimulatedSession:
    """What one recorded session comes to under a policy.

    Attributes:
        session_id: the session.
        outcome: the simulated verdict's outcome; ``None`` when the session
            could not be decided without evidence it lacks.
        verdict: the simulated verdict (``None`` when undecided).
        missing: steps the policy started that the recording cannot answer,
            each with why; when ``outcome`` is set they were not needed.
        attempts: attempts the core started, by step id.
        cost: the price of those attempts (unpriced steps count 0).
        line: where the session starts in its file.
        steps: where each step stood when the replay stopped, for an
            undecided session (a decided one has them in its verdict).
    """

    session_id: str
    outcome: Outcome | None
    verdict: Verdict | None = None
    missing: Mapping[str, str] = attrs.field(factory=dict)
    attempts: Mapping[str, int] = attrs.field(factory=dict)
    cost: float = 0.0
    line: int = 0
    steps: tuple[StepSummary, ...] = ()

    @property
    def reason(self) -> str:
        """The first reason code of the verdict, or ``missing_evidence``."""
        if self.verdict is None or not self.verdict.reasons:
            return "missing_evidence"
        return self.verdict.reasons[0].code

    def explain(self) -> str:
        """The verdict's explanation, or why the session stays undecided."""
        if self.verdict is not None:
            text = self.verdict.explain()
            if self.missing:
                text += "\nNot needed, and not in the recording: " + ", ".join(
                    f"{step} ({why})" for step, why in self.missing.items()
                )
            return text
        lines = ["No verdict: the recording lacks evidence the policy needs."]
        lines.extend(f"  - {step}: {why}" for step, why in self.missing.items())
        lines.append("Steps when the replay stopped:")
        for summary in self.steps:
            line = f"  - {summary.step_id} [{summary.channel}]: {summary.state}"
            result = summary.result
            if result is not None:
                line += f", {result.status.value}"
                if result.signals:
                    line += f"; signals: {', '.join(result.signal_names)}"
            lines.append(line)
        return "\n".join(lines)


class Plan:
    """A policy made ready for many replays: built once, shared by every session.

    Args:
        policy: the policy that decides.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.ref = policy.ref
        self.deadline = (
            None if policy.deadline is None else timedelta(seconds=policy.deadline)
        )
        self.records = tuple(StepRecord(step_id=step.id) for step in policy.steps)
        self.channels = {step.id: step.channel for step in policy.steps}
        self.timeouts = {step.id: step.timeout for step in policy.steps}
        self.prices = {step.id: step.price for step in policy.steps}
        self._matches: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    def match(self, steps: Mapping[str, RecordedStep]) -> dict[str, str]:
        """Which recorded step answers each policy step.

        A recorded step with the same id and channel; otherwise the one
        recorded step of the same channel whose id the policy does not use.
        """
        key = tuple((step_id, step.channel) for step_id, step in steps.items())
        found = self._matches.get(key)
        if found is None:
            found = {}
            for step_id, channel in self.channels.items():
                same = steps.get(step_id)
                if same is not None and same.channel == channel:
                    found[step_id] = step_id
                    continue
                others = [
                    other
                    for other, recorded in steps.items()
                    if recorded.channel == channel and other not in self.channels
                ]
                if len(others) == 1:
                    found[step_id] = others[0]
            self._matches[key] = found
        return found

    def why_missing(
        self, step_id: str, recorded: RecordedSession, matched: str | None
    ) -> str | None:
        """Why the recording cannot answer a step, or ``None`` when it can."""
        channel = self.channels[step_id]
        if matched is None:
            same = recorded.steps.get(step_id)
            if same is not None:
                return f"recorded on channel {same.channel}, the policy runs {channel}"
            return f"no {channel} result in the recording"
        step = recorded.steps[matched]
        status = step.result.status
        if status is ResultStatus.CANCELLED:
            return "cancelled in the recording before it ended"
        if status is ResultStatus.TIMEOUT:
            timeout = self.timeouts[step_id]
            if timeout is None or timeout > step.duration:
                waits = "no timeout" if timeout is None else f"waits {timeout:g}s"
                return (
                    f"timed out after {step.duration:g}s in the recording; "
                    f"the policy {waits}"
                )
        return None


def replay(  # noqa: PLR0915 - one hot loop, kept in one piece for speed
    plan: Plan | Policy, recorded: RecordedSession
) -> SimulatedSession:
    """Re-decide one recorded session under a policy.

    Args:
        plan: the policy, or a [`Plan`][multiverify.backtest.Plan] of it
            (faster for many sessions).
        recorded: the session to replay.

    Returns:
        The simulated outcome, verdict, missing evidence and cost.
    """
    if isinstance(plan, Policy):
        plan = Plan(plan)
    policy = plan.policy
    started = recorded.created_at
    session = Session(
        session_id=recorded.session_id,
        applicant=None,
        policy=plan.ref,
        created_at=started,
        deadline_at=None if plan.deadline is None else started + plan.deadline,
        steps=plan.records,
        facts=recorded.facts,
    )
    matches = plan.match(recorded.steps)
    queue: list[tuple[datetime, int, Any]] = []
    order = 0
    cancelled: set[str] = set()
    # Steps waiting for evidence the recording lacks; only the verdict ends them.
    hung: set[str] = set()
    missing: dict[str, str] = {}
    attempts: dict[str, int] = {}
    now = started
    step = transition(policy, session, Start(at=started))
    undecided = False
    while True:
        session = step.session
        if session.verdict is not None:
            # The verdict holds without the missing steps only when a rule
            # decided it: a default or deadline could have gone otherwise.
            undecided = bool(hung) and session.verdict.decided_by != "policy"
            break
        for effect in step.effects:
            kind = type(effect)
            if kind is StartStep:
                step_id = effect.step_id  # type: ignore[union-attr]
                attempts[step_id] = attempts.get(step_id, 0) + 1
                matched = matches.get(step_id)
                why = plan.why_missing(step_id, recorded, matched)
                if why is not None:
                    missing[step_id] = why
                    hung.add(step_id)
                    continue
                evidence = recorded.steps[matched]  # type: ignore[index]
                attempt = effect.attempt  # type: ignore[union-attr]
                order += 1
                if attempt <= len(evidence.errors):
                    # A provider error the recording met: the core fails over or gives up.
                    heapq.heappush(
                        queue,
                        (
                            now,
                            order,
                            StepErrored(
                                step_id=step_id,
                                attempt=attempt,
                                at=now,
                                error=evidence.errors[attempt - 1],
                                provider=evidence.result.provider,
                                # Only the last may have ended the step at once.
                                failover=evidence.failover
                                or attempt < len(evidence.errors),
                            ),
                        ),
                    )
                elif evidence.result.status is ResultStatus.ERROR and evidence.errors:
                    missing[step_id] = (
                        f"errored on {len(evidence.errors)} provider attempt(s) in the "
                        "recording; the policy tries another"
                    )
                    hung.add(step_id)
                elif evidence.result.status is ResultStatus.TIMEOUT:
                    pass  # no result by the policy's timeout: the core's own timer says so
                else:
                    due = now + timedelta(seconds=evidence.duration)
                    heapq.heappush(
                        queue,
                        (
                            due,
                            order,
                            StepFinished(
                                step_id=step_id,
                                attempt=attempt,
                                at=due,
                                result=evidence.result,
                            ),
                        ),
                    )
            elif kind is ScheduleTimer:
                timer_id = effect.timer_id  # type: ignore[union-attr]
                if timer_id.startswith("step:") and timer_id.split(":")[1] in hung:
                    continue  # a missing step's timeout would be a guess
                cancelled.discard(timer_id)
                order += 1
                due = effect.due_at  # type: ignore[union-attr]
                heapq.heappush(
                    queue, (due, order, TimerFired(timer_id=timer_id, at=due))
                )
            elif kind is CancelTimer:
                cancelled.add(effect.timer_id)  # type: ignore[union-attr]
        event: Input | None = None
        while queue:
            now, _, candidate = heapq.heappop(queue)
            if type(candidate) is TimerFired and candidate.timer_id in cancelled:
                continue
            event = candidate
            break
        if event is None:
            undecided = True  # only missing evidence can leave a session waiting
            break
        if type(event) is TimerFired and event.timer_id == "deadline" and hung:
            undecided = True  # the missing steps might have decided it in time
            break
        step = transition(policy, session, event)
    cost = 0.0
    for step_id, count in attempts.items():
        price = plan.prices[step_id]
        if price is not None:
            cost += price * count
    verdict = None if undecided else session.verdict
    steps: tuple[StepSummary, ...] = ()
    if verdict is None:
        steps = tuple(
            StepSummary(
                step_id=record.step_id,
                channel=plan.channels[record.step_id],
                state=record.state.value,
                result=record.result,
            )
            for record in session.steps
        )
    return SimulatedSession(
        session_id=recorded.session_id,
        outcome=None if verdict is None else verdict.outcome,
        verdict=verdict,
        missing=missing,
        attempts=attempts,
        cost=cost,
        line=recorded.line,
        steps=steps,
    )
