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

from ._channels import SimulatedChannel, is_simulated, sandbox_code, simulated_channels
from ._personas import PERSONAS, Persona, get_persona
from ._play import ProgressHook, play
from ._policy import DEFAULT_POLICY_PATH, load_default_policy
from ._video import (
    SandboxVideoSignChannel,
    SandboxVideoVendor,
    channel_label,
    video_personas,
)

__all__ = [
    "DEFAULT_POLICY_PATH",
    "PERSONAS",
    "Persona",
    "ProgressHook",
    "SandboxVideoSignChannel",
    "SandboxVideoVendor",
    "SimulatedChannel",
    "channel_label",
    "get_persona",
    "is_simulated",
    "load_default_policy",
    "play",
    "sandbox_code",
    "simulated_channels",
    "video_personas",
]
