"""What the client, the workflow and the activities hand each other, and typed errors across Temporal.

Everything here is plain data (dataclasses of JSON values, the shape
Temporal's default converter writes), so the workflow history stays readable
and the workflow sandbox imports nothing heavy. Typed SDK errors travel as
Temporal ``ApplicationError``\\ s named after their class and come back as the
same class on the caller's side.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
from temporalio.exceptions import ApplicationError

from .. import exceptions
from .._serde import structure, unstructure
from ..channels import ProviderEvent, StepMessage, Submission, TimerDue
from ..exceptions import MultiverifyError

__all__ = [
    "CANCEL_STEP",
    "HANDLE_STEP",
    "REVIEW_WORK",
    "SAVE_SESSION",
    "SESSION_DECIDED",
    "START_STEP",
    "TASK_QUEUE",
    "WORKFLOW",
    "AuditBatch",
    "CallSettings",
    "EvidenceArgs",
    "ReviewArgs",
    "ReviewWork",
    "SessionArgs",
    "StepAnswer",
    "StepCall",
    "SubmitArgs",
    "dump_message",
    "error_from_failure",
    "failure_from_error",
    "load_message",
    "workflow_id",
]

WORKFLOW = "multiverify.Verification"
"""The workflow type's name."""

TASK_QUEUE = "multiverify"
"""The task queue workers poll and verifiers start sessions on, unless told otherwise."""

START_STEP = "multiverify.start_step"
HANDLE_STEP = "multiverify.handle_step"
CANCEL_STEP = "multiverify.cancel_step"
SAVE_SESSION = "multiverify.save_session"
SESSION_DECIDED = "multiverify.session_decided"
REVIEW_WORK = "multiverify.review_queue"


def workflow_id(session_id: str) -> str:
    """The id of the workflow that runs a session: one session, one workflow, ever."""
    return f"multiverify-session-{session_id}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallSettings:
    """How long the workflow lets a channel call run (seconds).

    Attributes:
        call_timeout: the longest one channel call may take, its retries
            included (``start_to_close`` of the activity).
        heartbeat_timeout: how long a call may go without a heartbeat before
            Temporal takes its worker for dead and the call's outcome for
            unknown.
    """

    call_timeout: float = 300.0
    heartbeat_timeout: float = 20.0

    @property
    def call(self) -> timedelta:
        """``call_timeout`` as a timedelta."""
        return timedelta(seconds=self.call_timeout)

    @property
    def heartbeat(self) -> timedelta:
        """``heartbeat_timeout`` as a timedelta."""
        return timedelta(seconds=self.heartbeat_timeout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionArgs:
    """The workflow's input: the session to run, with its policy document.

    The policy travels with the session, so a workflow keeps the policy it
    started with whatever is deployed later.
    """

    session_id: str
    policy: dict[str, Any]
    policy_hash: str
    channels: list[dict[str, Any]]
    applicant: dict[str, Any]
    settings: CallSettings = dataclasses.field(default_factory=CallSettings)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepCall:
    """One channel call for one attempt: ``start``, ``handle`` or ``cancel``."""

    session_id: str
    step_id: str
    attempt: int
    channel: str
    provider: str | None
    idempotency_key: str
    applicant: dict[str, Any]
    options: dict[str, Any]
    retry: dict[str, Any]
    state: dict[str, Any]
    message: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepAnswer:
    """What a channel answered: the core input it makes, and the tries it took."""

    input: dict[str, Any]
    tries: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubmitArgs:
    """Input from the applicant for a waiting step."""

    step_id: str
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditBatch:
    """Audit events to append to the store, with the session they lead to.

    ``version`` is the stored version the batch builds on (0: create).
    """

    session: dict[str, Any]
    events: list[str]
    version: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReviewWork:
    """A review-queue effect for the store, with the session it belongs to."""

    session: dict[str, Any]
    effect: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReviewArgs:
    """A reviewer's decision on a session in review."""

    reviewer: str
    outcome: str
    reason: str
    note: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvidenceArgs:
    """A reviewer's request for an evidence step."""

    reviewer: str
    step_id: str
    note: str = ""


# -- channel messages ------------------------------------------------------------


def dump_message(message: StepMessage) -> dict[str, Any]:
    """A channel message as JSON data."""
    kind = {Submission: "submission", ProviderEvent: "event", TimerDue: "timer"}
    data: dict[str, Any] = unstructure(message)
    return {"type": kind[type(message)], **data}


def load_message(data: dict[str, Any]) -> StepMessage:
    """The channel message [`dump_message`][multiverify.temporal._wire.dump_message] wrote."""
    fields = {name: value for name, value in data.items() if name != "type"}
    kinds: dict[str, type[StepMessage]] = {
        "submission": Submission,
        "event": ProviderEvent,
        "timer": TimerDue,
    }
    return structure(fields, kinds[data["type"]])


# -- errors ------------------------------------------------------------------------


def failure_from_error(
    exc: MultiverifyError,
    *,
    non_retryable: bool = True,
    redact: Callable[[str], str] = str,
) -> ApplicationError:
    """A typed SDK error as a Temporal failure that names its class and carries its fields.

    ``redact`` masks the applicant's personal values in the message and the
    text fields (a vendor's message may quote them), which Temporal keeps in
    the workflow's history.
    """
    fields = {
        name: redact(value) if isinstance(value, str) else value
        for name, value in unstructure(attrs.asdict(exc, recurse=False)).items()
    }
    return ApplicationError(
        redact(str(exc)), fields, type=type(exc).__name__, non_retryable=non_retryable
    )


def error_from_failure(failure: BaseException | None) -> MultiverifyError | None:
    """The SDK error a failure from [`failure_from_error`][multiverify.temporal._wire.failure_from_error] stands for.

    ``None`` when the failure is not one of ours.
    """
    if not isinstance(failure, ApplicationError) or failure.type is None:
        return None
    kind = getattr(exceptions, failure.type, None)
    if not (isinstance(kind, type) and issubclass(kind, MultiverifyError)):
        return None
    details = failure.details[0] if failure.details else None
    if isinstance(details, dict):
        # A failure from elsewhere that borrows our name keeps its message.
        with contextlib.suppress(Exception):
            return structure(details, kind)
    return MultiverifyError(message=failure.message)
