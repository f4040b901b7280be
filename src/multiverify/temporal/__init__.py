"""The Temporal runtime: verification sessions as durable workflows (the ``temporal`` extra).

The same policies, channels and app-facing calls as the embedded
[`Verifier`][multiverify.Verifier], for lenders who run Temporal: each session
is one workflow running the same pure core, its channel calls are activities,
its timers are workflow timers, a submitted code is an update and a vendor
callback is a signal. Start sessions with a
[`TemporalVerifier`][multiverify.temporal.TemporalVerifier]; run them on
workers from [`create_worker`][multiverify.temporal.create_worker].
"""

from __future__ import annotations

from ._client import TemporalVerifier
from ._wire import TASK_QUEUE, workflow_id
from ._worker import create_replayer, create_worker, workflow_runner
from ._workflow import VerificationWorkflow

__all__ = [
    "TASK_QUEUE",
    "TemporalVerifier",
    "VerificationWorkflow",
    "create_replayer",
    "create_worker",
    "workflow_id",
    "workflow_runner",
]
