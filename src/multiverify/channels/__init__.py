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
from ._statement import Statement, confirmation_statement
from ._video_sign import VideoSignChannel, VideoSignState

__all__ = [
    "Channel",
    "ChannelRegistry",
    "Finished",
    "ProviderEvent",
    "Statement",
    "StepContext",
    "StepMessage",
    "StepOutcome",
    "Submission",
    "TimerDue",
    "VideoSignChannel",
    "VideoSignState",
    "Waiting",
    "confirmation_statement",
]
