"""The agent desk: the app-facing side of human confirmation calls.

Calls queued by a phone-call step whose provider is an
[`AgentDeskProvider`][multiverify.providers.AgentDeskProvider] are tasks in
the store's work queue. Agents list them, claim one with a lease (renewable;
a lapsed one returns the task to the queue), read the script with the
applicant's details masked, and submit a structured outcome, which reaches
the session through ``Verifier.submit``. Every call works from any replica.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import attrs

from ..compliance import CallingWindow
from ..exceptions import InvalidInputError, SessionError
from ._phone_call import AGENT_DISPOSITIONS, AGENT_FLAGS

if TYPE_CHECKING:
    from .._clock import Clock
    from ..stores import QueueItem, WorkQueue

__all__ = ["AgentDesk", "AgentOutcome", "AgentTask", "Submitter"]


class Submitter(Protocol):
    """**Protocol**: hands input to a waiting step (``Verifier.submit``)."""

    async def submit(
        self, session_id: str, step_id: str, payload: Mapping[str, Any]
    ) -> Any:
        """Deliver ``payload`` to the step."""
        ...


def _flags(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _answers(values: Mapping[str, str]) -> Mapping[str, str]:
    return dict(values)


@attrs.frozen(kw_only=True)
class AgentOutcome:
    """What an agent reports after a call.

    Attributes:
        disposition: ``confirmed``, ``declined``, ``wrong_person``,
            ``no_answer`` or ``call_back_later``.
        answers: the applicant's answer per prompt id (digits as typed,
            ``yes``/``no``, or what was said).
        flags: ``third_party_present``, ``coached``, ``evasive``, ``inconsistent``.
        notes: free text; kept with the step's state, never in the audit trail.
        call_back_at: for ``call_back_later``, when the applicant asked to be
            called; without a time zone it is the applicant's local time.

    Raises:
        InvalidInputError: an unknown disposition or flag.
    """

    disposition: str
    answers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_answers, repr=False
    )
    flags: frozenset[str] = attrs.field(default=frozenset(), converter=_flags)
    notes: str = attrs.field(default="", repr=False)
    call_back_at: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.disposition not in AGENT_DISPOSITIONS:
            raise InvalidInputError(
                message=f"disposition must be one of {', '.join(sorted(AGENT_DISPOSITIONS))}",
                field="disposition",
            )
        unknown = sorted(self.flags - set(AGENT_FLAGS))
        if unknown:
            raise InvalidInputError(
                message=f"unknown flag {unknown[0]!r} (known: {', '.join(sorted(AGENT_FLAGS))})",
                field="flags",
            )

    def payload(self, task_id: str) -> dict[str, Any]:
        """The submission the phone-call step takes."""
        out: dict[str, Any] = {
            "task": task_id,
            "disposition": self.disposition,
            "answers": dict(self.answers),
            "flags": sorted(self.flags),
            "notes": self.notes,
        }
        if self.call_back_at is not None:
            out["call_back_at"] = self.call_back_at.isoformat()
        return out


@attrs.frozen(kw_only=True)
class AgentTask:
    """A call for an agent: the script and the applicant, masked.

    Attributes:
        task_id: the task's id.
        session_id: the session it belongs to.
        step_id: the phone-call step.
        applicant: masked details (name, phone, national ID) and time zone.
        script: the prompts to read, with their texts and expected answers.
        locale: the language to speak.
        call_from: the local time from which the call may be made.
        claimed_by: the agent holding it, if claimed.
        claimed_until: when the claim lapses.
    """

    task_id: str
    session_id: str
    step_id: str
    applicant: Mapping[str, str] = attrs.field(hash=False)
    script: tuple[Mapping[str, Any], ...] = attrs.field(hash=False)
    locale: str
    call_from: str
    claimed_by: str | None = None
    claimed_until: datetime | None = None

    @classmethod
    def from_item(cls, item: QueueItem) -> AgentTask:
        """Read a queued item."""
        body = json.loads(item.body)
        return cls(
            task_id=item.item_id,
            session_id=body["session_id"],
            step_id=body["step_id"],
            applicant=body["applicant"],
            script=tuple(body["script"]),
            locale=body["locale"],
            call_from=body["call_from"],
            claimed_by=item.claimed_by,
            claimed_until=item.claimed_until,
        )


class AgentDesk:
    """Lets call-centre agents work the queued confirmation calls.

    Args:
        queue: the store's work queue (the same store the Verifier uses).
        submitter: the Verifier (its ``submit`` delivers outcomes).
        clock: the time source for leases.
        queue_name: the queue the phone-call channel's agent desk fills.
    """

    def __init__(
        self,
        *,
        queue: WorkQueue,
        submitter: Submitter,
        clock: Clock,
        queue_name: str = "agent-desk",
    ) -> None:
        self._queue = queue
        self._submitter = submitter
        self._clock = clock
        self._name = queue_name

    def __repr__(self) -> str:
        return f"<multiverify.channels.AgentDesk(queue={self._name})>"

    async def tasks(self) -> list[AgentTask]:
        """Every queued task, in the order they are served."""
        return [
            AgentTask.from_item(item)
            for item in await self._queue.queue_items(self._name)
        ]

    async def claim(
        self,
        agent: str,
        *,
        lease: float | timedelta = 600.0,
        task_id: str | None = None,
    ) -> AgentTask | None:
        """Claim the next free task (or the given one) for ``lease`` seconds; ``None`` if none is free.

        A task is free once it is available, unclaimed, and the applicant's
        calling window is open now: the agent calls when they claim it, so
        a task left in the queue past the window's close waits for the next
        opening.
        """
        now = self._clock.now()
        for found in await self._queue.queue_items(self._name):
            if task_id not in (None, found.item_id) or not _callable(found.body, now):
                continue
            # The queue's claim checks availability and other claims itself,
            # atomically: another agent may take a task between the two calls.
            item = await self._queue.claim(
                self._name,
                owner=agent,
                at=now,
                lease=_seconds(lease),
                item_id=found.item_id,
            )
            if item is not None:
                return AgentTask.from_item(item)
        return None

    async def extend(
        self, task_id: str, agent: str, *, lease: float | timedelta = 600.0
    ) -> bool:
        """Renew ``agent``'s claim; ``False`` if it is no longer theirs."""
        return await self._queue.extend(
            self._name,
            task_id,
            owner=agent,
            at=self._clock.now(),
            lease=_seconds(lease),
        )

    async def release(self, task_id: str, agent: str) -> bool:
        """Give the task back to the queue unworked."""
        return await self._queue.release(self._name, task_id, owner=agent)

    async def submit(self, task_id: str, agent: str, outcome: AgentOutcome) -> bool:
        """Report the call's outcome; return ``False`` if the task's step no longer waits.

        Raises:
            InvalidInputError: the claim is not (or no longer) ``agent``'s, or
                the outcome does not fit the script (``field`` names what).
        """
        items = {
            item.item_id: item for item in await self._queue.queue_items(self._name)
        }
        item = items.get(task_id)
        if item is None or item.claimed_by != agent:
            raise InvalidInputError(
                message=f"task {task_id!r} is not claimed by {agent!r}", field="task"
            )
        task = AgentTask.from_item(item)
        payload = outcome.payload(task_id)
        payload["agent"] = agent
        try:
            await self._submitter.submit(task.session_id, task.step_id, payload)
        except InvalidInputError:
            raise
        except SessionError:
            await self._queue.complete(self._name, task_id)
            return False
        await self._queue.complete(self._name, task_id, owner=agent)
        return True


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _callable(body: str, at: datetime) -> bool:
    """Whether the task's calling window allows a call at ``at`` in every one of its zones."""
    data = json.loads(body)
    window = data["window"]
    end = window["end"]
    calling = CallingWindow(
        start=time.fromisoformat(window["start"]),
        end=None if end is None else time.fromisoformat(end),
        weekdays=window["weekdays"],
        blocked_dates=[date.fromisoformat(day) for day in window["blocked_dates"]],
    )
    return calling.allows(at, [ZoneInfo(zone) for zone in data["zones"]])
