"""Vendor callbacks: signature checks, parsing into events, and the handler protocol."""

from __future__ import annotations

from ._base import WebhookHandler, WebhookRequest, WebhookResponse
from ._twilio import TwilioSignature, twilio_signature
from ._vonage import VonageSignature

__all__ = [
    "TwilioSignature",
    "VonageSignature",
    "WebhookHandler",
    "WebhookRequest",
    "WebhookResponse",
    "twilio_signature",
]
