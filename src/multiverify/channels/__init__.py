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
from ._sms_code import (
    OnSmsSent,
    RateLimit,
    SmsCodeChannel,
    SmsCodeSettings,
    SmsCodeState,
    SmsLimits,
    SmsSent,
    normalize_code,
)
from ._sms_text import (
    CODE_TEMPLATES,
    SmsEncoding,
    SmsSegments,
    SmsTemplate,
    sms_segments,
)
from ._statement import Statement, confirmation_statement
from ._video_sign import VideoSignChannel, VideoSignState

__all__ = [
    "CODE_TEMPLATES",
    "Channel",
    "ChannelRegistry",
    "Finished",
    "OnSmsSent",
    "ProviderEvent",
    "RateLimit",
    "SmsCodeChannel",
    "SmsCodeSettings",
    "SmsCodeState",
    "SmsEncoding",
    "SmsLimits",
    "SmsSegments",
    "SmsSent",
    "SmsTemplate",
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
    "normalize_code",
    "sms_segments",
]
