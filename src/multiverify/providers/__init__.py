"""Vendors behind the channels, spoken to over httpx at their documented wire formats."""

from __future__ import annotations

from ._aliyun import (
    AliyunSms,
    acs3_authorization,
    percent_encode,
    rpc_signature,
    rpc_string_to_sign,
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
from ._tencent import TencentCloudApi, tc3_authorization
from ._tencent_faceid import TencentFaceId
from ._tencent_sms import TencentSms
from ._twilio import TwilioAccount
from ._twilio_messaging import TwilioMessaging
from ._twilio_verify import TwilioVerify
from ._veriff import Veriff, parse_veriff_decision, veriff_signature
from ._video import (
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoSignProvider,
    VideoStatus,
)
from ._vonage import VonageApplication
from ._vonage_verify import VonageVerify

__all__ = [
    "AliyunSms",
    "CheckOutcome",
    "SmsMessage",
    "SmsProvider",
    "SmsReceipt",
    "TencentCloudApi",
    "TencentFaceId",
    "TencentSms",
    "TwilioAccount",
    "TwilioMessaging",
    "TwilioVerify",
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
    "VonageApplication",
    "VonageVerify",
    "acs3_authorization",
    "parse_veriff_decision",
    "percent_encode",
    "rpc_signature",
    "rpc_string_to_sign",
    "tc3_authorization",
    "veriff_signature",
]
