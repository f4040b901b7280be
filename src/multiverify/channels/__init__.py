"""Channels: the ways to verify an applicant, and the protocol to write your own."""

from __future__ import annotations

from ._base import (
    Channel,
    ChannelRegistry,
    Finished,
    ProviderEvent,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    TimerDue,
    Waiting,
)

__all__ = [
    "Channel",
    "ChannelRegistry",
    "Finished",
    "ProviderEvent",
    "StepContext",
    "StepMessage",
    "StepOutcome",
    "Submission",
    "TimerDue",
    "Waiting",
]
