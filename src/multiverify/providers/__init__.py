"""Vendors behind the channels, spoken to over httpx at their documented wire formats."""

from __future__ import annotations

from ._agent_desk import (
    AgentDeskProvider,
)
from ._aliyun import (
    AliyunSms,
    acs3_authorization,
    percent_encode,
    rpc_signature,
    rpc_string_to_sign,
)
from ._bureau import (
    BureauProvider,
    BureauReport,
    BureauRequest,
    Delinquencies,
    FileStatus,
    IdentityMatch,
    InquiryCount,
    MatchResult,
)
from ._bureau_http import (
    HttpBureau,
    OAuth2Token,
)
from ._bureau_mapping import (
    BureauMapping,
    MatchRule,
    read_path,
    template_fields,
)
from ._bureau_presets import (
    BUREAU_PRESETS,
    BureauPreset,
    bureau_preset,
)
from ._holder import (
    DocumentHolder,
    HolderKey,
    compare_holder,
)
from ._sms import (
    CheckOutcome,
    SmsMessage,
    SmsProvider,
    SmsReceipt,
    VerifyCheck,
    VerifyProvider,
    VerifyRequest,
    VerifyStarted,
)
from ._tencent import (
    TencentCloudApi,
    tc3_authorization,
)
from ._tencent_faceid import (
    TencentFaceId,
)
from ._tencent_sms import (
    TencentSms,
)
from ._twilio import (
    TwilioAccount,
)
from ._twilio_messaging import (
    TwilioMessaging,
)
from ._twilio_verify import (
    TwilioVerify,
)
from ._twilio_voice import (
    TwilioVoice,
    twiml,
)
from ._veriff import (
    Veriff,
    parse_veriff_decision,
    veriff_signature,
)
from ._video import (
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoSignProvider,
    VideoStatus,
)
from ._voice import (
    AnsweredBy,
    CallInfo,
    CallRequest,
    CallRoute,
    CallStatus,
    Gather,
    VoiceInstruction,
    VoiceProvider,
    callback_url,
)
from ._vonage import (
    VonageApplication,
)
from ._vonage_verify import (
    VonageVerify,
)
from ._vonage_voice import (
    VonageVoice,
    ncco,
)

__all__ = [
    "BUREAU_PRESETS",
    "AgentDeskProvider",
    "AliyunSms",
    "AnsweredBy",
    "BureauMapping",
    "BureauPreset",
    "BureauProvider",
    "BureauReport",
    "BureauRequest",
    "CallInfo",
    "CallRequest",
    "CallRoute",
    "CallStatus",
    "CheckOutcome",
    "Delinquencies",
    "DocumentHolder",
    "FileStatus",
    "Gather",
    "HolderKey",
    "HttpBureau",
    "IdentityMatch",
    "InquiryCount",
    "MatchResult",
    "MatchRule",
    "OAuth2Token",
    "SmsMessage",
    "SmsProvider",
    "SmsReceipt",
    "TencentCloudApi",
    "TencentFaceId",
    "TencentSms",
    "TwilioAccount",
    "TwilioMessaging",
    "TwilioVerify",
    "TwilioVoice",
    "Veriff",
    "VerifyCheck",
    "VerifyProvider",
    "VerifyRequest",
    "VerifyStarted",
    "VideoDecision",
    "VideoSession",
    "VideoSessionRequest",
    "VideoSignProvider",
    "VideoStatus",
    "VoiceInstruction",
    "VoiceProvider",
    "VonageApplication",
    "VonageVerify",
    "VonageVoice",
    "acs3_authorization",
    "bureau_preset",
    "callback_url",
    "compare_holder",
    "ncco",
    "parse_veriff_decision",
    "percent_encode",
    "read_path",
    "rpc_signature",
    "rpc_string_to_sign",
    "tc3_authorization",
    "template_fields",
    "twiml",
    "veriff_signature",
]
