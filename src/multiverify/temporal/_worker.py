"""The worker that hosts the verification workflow and its activities, and a replayer for its histories."""

from __future__ import annotations

import pkgutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

import multiverify

from .._clock import Clock, SystemClock
from .._verifier import OnReview, OnVerdict
from ..channels import Channel, ChannelRegistry
from ..stores import SessionStore
from ._activities import Activities
from ._wire import TASK_QUEUE
from ._workflow import VerificationWorkflow

__all__ = ["create_replayer", "create_worker", "workflow_runner"]

# Deterministic, import-time-pure libraries the core uses: passed through the
# sandbox instead of being imported again for every workflow run (the CEL
# engine is a native extension that cannot be imported twice).
_LIBRARIES = ("attr", "attrs", "cattrs", "cel", "httpx", "phonenumbers", "yaml")


def _passthrough() -> list[str]:
    """Every multiverify module but the workflow's own, and the libraries above.

    The workflow module (and the two package ``__init__`` files above it) is
    imported afresh in each workflow's sandbox, so the sandbox checks what it
    touches; the core and the rest of the SDK are imported once, outside.
    """
    # A configured name passes its submodules too (multiverify.policy passes
    # multiverify.policy._cel), so top-level names suffice.
    names = [
        f"multiverify.{info.name}"
        for info in pkgutil.iter_modules(multiverify.__path__)
        if info.name != "temporal"
    ]
    names += [
        f"multiverify.temporal.{info.name}"
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if info.name != "_workflow"
    ]
    return [*names, *_LIBRARIES]


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox the verification workflow runs in: Temporal's default, with the SDK's core passed through.

    Pass it as ``workflow_runner`` to a ``Worker`` or ``Replayer`` you build
    yourself; [`create_worker`][multiverify.temporal.create_worker] and
    [`create_replayer`][multiverify.temporal.create_replayer] use it.
    """
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *_passthrough()
        )
    )


def create_worker(
    client: Client,
    *,
    channels: ChannelRegistry | Iterable[Channel],
    store: SessionStore,
    task_queue: str = TASK_QUEUE,
    on_verdict: Sequence[OnVerdict] = (),
    on_review: Sequence[OnReview] = (),
    clock: Clock | None = None,
    **options: Any,
) -> Worker:
    """A Temporal worker that runs verification sessions.

    Run as many as you like, on as many machines: any of them picks up any
    session, and a session whose worker died carries on on another.

    Args:
        client: a connected Temporal client.
        channels: the channels the policies name, as in the embedded
            [`Verifier`][multiverify.Verifier].
        store: where every session's audit trail (and its latest state) is
            kept for good: Temporal keeps a workflow's history only for the
            namespace's retention period. Share it between workers.
        task_queue: the queue to poll; the verifier must start sessions on it.
        on_verdict: hooks called once a session is decided (from an
            activity: at least once, on whichever worker runs it).
        on_review: hooks called when a review case is queued, returns with
            evidence or escalates (from an activity too: at least once).
        clock: the time source of channel calls.
        options: passed on to ``temporalio.worker.Worker`` (concurrency
            limits, identity, interceptors...).

    Returns:
        The worker; ``async with`` it, or ``await worker.run()``.
    """
    registry = (
        channels if isinstance(channels, ChannelRegistry) else ChannelRegistry(channels)
    )
    activities = Activities(
        channels=registry,
        store=store,
        clock=clock if clock is not None else SystemClock(),
        on_verdict=on_verdict,
        on_review=on_review,
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[VerificationWorkflow],
        activities=activities.all(),
        workflow_runner=options.pop("workflow_runner", workflow_runner()),
        **options,
    )


def create_replayer(**options: Any) -> Replayer:
    """A replayer for recorded verification histories.

    Replay the histories of real sessions against new code before deploying
    it: a change that would make a running session take another path fails
    with a non-determinism error instead of corrupting it.
    """
    return Replayer(
        workflows=[VerificationWorkflow],
        workflow_runner=options.pop("workflow_runner", workflow_runner()),
        **options,
    )
