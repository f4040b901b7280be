"""The sandbox: applicant personas, simulated channels and sandbox vendors, for the demo, examples and tests.

Nothing here talks to a real vendor. [`simulated_channels`][multiverify.sandbox.simulated_channels]
builds the four built-in channels as scripted stand-ins that behave as a
[`Persona`][multiverify.sandbox.Persona] would; a sandbox vendor such as
[`SandboxVideoVendor`][multiverify.sandbox.SandboxVideoVendor] answers at the
vendor's wire level so the real channel runs on it. [`play`][multiverify.sandbox.play]
acts as the applicant: it types the SMS code and completes the video signing.

>>> get_persona("honest").expected.value
'approved'
>>> load_default_policy().name
'consumer-loan-demo'
"""

from __future__ import annotations

from ._bureau import (
    BUREAU_PERSONAS,
    SandboxBureau,
    SandboxCreditBureauChannel,
    sandbox_bureau_channel,
)
from ._channels import (
    SimulatedChannel,
    channel_label,
    is_simulated,
    on_sandbox_vendor,
    sandbox_code,
    sandbox_phone_channel,
    sandbox_vendor,
    simulated_channels,
)
from ._personas import (
    PERSONAS,
    Persona,
    get_persona,
)
from ._play import (
    ProgressHook,
    play,
)
from ._policy import (
    DEFAULT_POLICY_PATH,
    load_default_policy,
)
from ._sms import (
    SandboxMessage,
    SandboxSms,
    SandboxSmsCodeChannel,
)
from ._video import (
    SandboxVideoSignChannel,
    SandboxVideoVendor,
    video_personas,
)
from ._voice import (
    VOICE_PERSONAS,
    SandboxVoice,
    VoicePersona,
)

__all__ = [
    "BUREAU_PERSONAS",
    "DEFAULT_POLICY_PATH",
    "PERSONAS",
    "VOICE_PERSONAS",
    "Persona",
    "ProgressHook",
    "SandboxBureau",
    "SandboxCreditBureauChannel",
    "SandboxMessage",
    "SandboxSms",
    "SandboxSmsCodeChannel",
    "SandboxVideoSignChannel",
    "SandboxVideoVendor",
    "SandboxVoice",
    "SimulatedChannel",
    "VoicePersona",
    "channel_label",
    "get_persona",
    "is_simulated",
    "load_default_policy",
    "on_sandbox_vendor",
    "play",
    "sandbox_bureau_channel",
    "sandbox_code",
    "sandbox_phone_channel",
    "sandbox_vendor",
    "simulated_channels",
    "video_personas",
]
