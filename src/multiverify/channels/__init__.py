"""Channels: the ways to verify an applicant, and the protocol to write your own."""

from __future__ import annotations

from .._call_script import (
    Answer,
    AnswerKind,
    CallScript,
    Expect,
    MismatchAction,
    PhoneCallOptions,
    Prompt,
    PromptKind,
    phone_options,
    script_problems,
)
from ._agent_desk import (
    AgentDesk,
    AgentOutcome,
    AgentTask,
    Submitter,
)
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
from ._call_analysis import (
    Analysis,
    CallAnalyzer,
    RuleBasedAnalyzer,
    SpeechAnswer,
)
from ._credit_bureau import (
    CONSENT_SCOPE,
    CreditBureauChannel,
    bureau_result,
)
from ._phone_call import (
    CallAttempt,
    PhoneCallChannel,
    PhoneCallState,
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
from ._statement import (
    Statement,
    confirmation_statement,
)
from ._video_sign import (
    VideoSignChannel,
    VideoSignState,
)

__all__ = [
    "CODE_TEMPLATES",
    "CONSENT_SCOPE",
    "AgentDesk",
    "AgentOutcome",
    "AgentTask",
    "Analysis",
    "Answer",
    "AnswerKind",
    "CallAnalyzer",
    "CallAttempt",
    "CallScript",
    "Channel",
    "ChannelRegistry",
    "CreditBureauChannel",
    "Expect",
    "Finished",
    "MismatchAction",
    "OnSmsSent",
    "PhoneCallChannel",
    "PhoneCallOptions",
    "PhoneCallState",
    "Prompt",
    "PromptKind",
    "ProviderEvent",
    "RateLimit",
    "RuleBasedAnalyzer",
    "SmsCodeChannel",
    "SmsCodeSettings",
    "SmsCodeState",
    "SmsEncoding",
    "SmsLimits",
    "SmsSegments",
    "SmsSent",
    "SmsTemplate",
    "SpeechAnswer",
    "Statement",
    "StepContext",
    "StepMessage",
    "StepOutcome",
    "Submission",
    "Submitter",
    "TimerDue",
    "VideoSignChannel",
    "VideoSignState",
    "Waiting",
    "bureau_result",
    "confirmation_statement",
    "normalize_code",
    "phone_options",
    "script_problems",
    "sms_segments",
]
