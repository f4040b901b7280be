"""Vendors behind the channels, spoken to over httpx at their documented wire formats."""

from __future__ import annotations

from ._tencent import TencentCloudApi, tc3_authorization
from ._twilio import TwilioAccount
from ._vonage import VonageApplication

__all__ = [
    "TencentCloudApi",
    "TwilioAccount",
    "VonageApplication",
    "tc3_authorization",
]
