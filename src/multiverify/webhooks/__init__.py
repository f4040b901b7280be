"""Vendor callbacks: signature checks, parsing into events, and the handler protocol."""

from __future__ import annotations

from ._base import (
    WebhookHandler,
    WebhookRequest,
    WebhookResponse,
)
from ._twilio import (
    TwilioSignature,
    twilio_signature,
)
from ._twilio_sms import (
    TwilioMessageStatus,
)
from ._veriff import (
    VeriffWebhooks,
)
from ._voice import (
    TwilioVoiceWebhook,
    VonageVoiceWebhook,
)
from ._vonage import (
    VonageSignature,
)

__all__ = [
    "TwilioMessageStatus",
    "TwilioSignature",
    "TwilioVoiceWebhook",
    "VeriffWebhooks",
    "VonageSignature",
    "VonageVoiceWebhook",
    "WebhookHandler",
    "WebhookRequest",
    "WebhookResponse",
    "twilio_signature",
]
