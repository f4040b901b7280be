"""Vendors behind the channels, spoken to over httpx at their documented wire formats."""

from __future__ import annotations

from ._tencent import TencentCloudApi, tc3_authorization
from ._tencent_faceid import TencentFaceId
from ._twilio import TwilioAccount
from ._veriff import Veriff, parse_veriff_decision, veriff_signature
from ._video import (
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoSignProvider,
    VideoStatus,
)
from ._vonage import VonageApplication

__all__ = [
    "TencentCloudApi",
    "TencentFaceId",
    "TwilioAccount",
    "Veriff",
    "VideoDecision",
    "VideoSession",
    "VideoSessionRequest",
    "VideoSignProvider",
    "VideoStatus",
    "VonageApplication",
    "parse_veriff_decision",
    "tc3_authorization",
    "veriff_signature",
]
