"""Simulated channels: the four built-in channels, scripted from a persona.

They stand in for the real channels (and their vendors) until those land:
each is a [`ScriptedChannel`][multiverify.testing.ScriptedChannel] that says
so through its ``simulated`` attribute, which the demo shows. The phone call
is the real [`PhoneCallChannel`][multiverify.channels.PhoneCallChannel],
talking to the sandbox voice vendor ([`on_sandbox_vendor`][multiverify.sandbox.on_sandbox_vendor]).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs
import httpx

from .._masking import mask_phone
from ..channels import PhoneCallChannel
from ..providers import TwilioAccount, TwilioVoice
from ..testing import Scripted, ScriptedChannel
from ._voice import (
    CALLBACK_URL,
    TWILIO_ACCOUNT,
    TWILIO_TOKEN,
    VOICE_PERSONAS,
    SandboxVoice,
)

if TYPE_CHECKING:
    from ..channels import StepContext
    from ._personas import Persona

__all__ = [
    "SimulatedChannel",
    "channel_label",
    "is_simulated",
    "on_sandbox_vendor",
    "sandbox_code",
    "sandbox_phone_channel",
    "sandbox_vendor",
    "simulated_channels",
]

_SANDBOX_VENDORS: weakref.WeakKeyDictionary[object, SandboxVoice] = (
    weakref.WeakKeyDictionary()
)

VIDEO_URL = "https://video.sandbox.multiverify.invalid/s/"


class SimulatedChannel(ScriptedChannel):
    """A [`ScriptedChannel`][multiverify.testing.ScriptedChannel] standing in for a real channel.

    Attributes:
        simulated: always ``True``; see [`is_simulated`][multiverify.sandbox.is_simulated].
    """

    simulated: ClassVar[bool] = True

    def __repr__(self) -> str:
        return (
            f"<multiverify.sandbox.SimulatedChannel({self.spec.name}, "
            f"starts={len(self.starts)})>"
        )


def is_simulated(channel: object) -> bool:
    """Whether ``channel`` is a simulation rather than a channel to real vendors."""
    return getattr(channel, "simulated", False) is True


def sandbox_vendor(channel: object) -> SandboxVoice | None:
    """The sandbox vendor behind a channel the sandbox built, if any."""
    try:
        return _SANDBOX_VENDORS.get(channel)
    except TypeError:  # not weak-referenceable: not ours
        return None


def on_sandbox_vendor(channel: object) -> bool:
    """Whether ``channel`` is a real channel talking to a sandbox vendor."""
    return (
        getattr(channel, "sandbox_vendor", False) is True
        or sandbox_vendor(channel) is not None
    )


def channel_label(channel: object) -> str | None:
    """How the demo labels a channel: ``simulated``, ``sandbox vendor``, or ``None`` for a real one."""
    if is_simulated(channel):
        return "simulated"
    if on_sandbox_vendor(channel):
        return "sandbox vendor"
    return None


def sandbox_phone_channel(persona: Persona, *, speed: float = 1.0) -> PhoneCallChannel:
    """The real phone-call channel on Twilio's wire format, against the sandbox voice vendor."""
    vendor = SandboxVoice(
        vendor="twilio",
        applicant=persona.applicant,
        persona=VOICE_PERSONAS[persona.voice],
        speed=speed,
    )
    account = TwilioAccount(
        account_sid=TWILIO_ACCOUNT,
        auth_token=TWILIO_TOKEN,
        client=httpx.AsyncClient(transport=vendor),
    )
    channel = PhoneCallChannel(
        [
            TwilioVoice(
                account=account,
                from_number="+8610" + "5550100",
                callback_url=CALLBACK_URL,
            )
        ]
    )
    _SANDBOX_VENDORS[channel] = vendor
    return channel


def sandbox_code(session_id: str, step_id: str, attempt: int) -> str:
    """The six-digit code the simulated SMS channel "sends" for one attempt.

    Derived from the attempt's idempotency key, so the channel and the
    persona's phone agree on it without sharing state.
    """
    key = f"{session_id}:{step_id}:{attempt}".encode()
    return f"{int.from_bytes(hashlib.sha256(key).digest()[:8], 'big') % 10**6:06d}"


def _scaled(answer: Scripted, speed: float) -> Scripted:
    return attrs.evolve(answer, delay=answer.delay * speed)


def simulated_channels(
    persona: Persona, *, speed: float = 1.0
) -> list[SimulatedChannel]:
    """The four demo channels, behaving as ``persona`` does.

    - ``credit_bureau`` finishes with the persona's bureau result;
    - ``sms_code`` "sends" a code ([`sandbox_code`][multiverify.sandbox.sandbox_code])
      and waits for it to be submitted as ``{"code": ...}``: the right code
      passes (``code_verified``), another one fails (``wrong_code``);
    - ``phone_call`` finishes with the persona's call result (the real
      channel on the sandbox voice vendor is
      [`sandbox_phone_channel`][multiverify.sandbox.sandbox_phone_channel]);
    - ``video_sign`` waits for the video session's ``decision`` event, then
      finishes with the persona's video result.

    Args:
        persona: whose behaviour to script.
        speed: scales every delay; ``0`` runs without waiting.

    Raises:
        ValueError: ``speed`` is negative.
    """
    if speed < 0:
        raise ValueError(f"speed must not be negative: {speed!r}")

    def sms(context: StepContext) -> Sequence[Scripted]:
        code = sandbox_code(context.session_id, context.step_id, context.attempt)
        return [
            Scripted.waits(
                Scripted.passes(
                    signals=["code_verified"], delay=persona.sms_delivery * speed
                ),
                expect={"code": code},
                otherwise=Scripted.fails(signals=["wrong_code"]),
                kind="code",
                message="Enter the 6-digit code we sent by SMS",
                destination=mask_phone(context.applicant.phone),
            )
        ]

    def video(context: StepContext) -> Sequence[Scripted]:
        return [
            Scripted.waits(
                _scaled(persona.video, speed),
                kind="video_session",
                message="Open the link to sign the loan on video",
                url=VIDEO_URL + context.idempotency_key.replace(":", "-"),
            )
        ]

    scripts: dict[
        str, Sequence[Scripted] | Callable[[StepContext], Sequence[Scripted]]
    ] = {
        "credit_bureau": [_scaled(persona.bureau, speed)],
        "sms_code": sms,
        "phone_call": [_scaled(persona.call, speed)],
        "video_sign": video,
    }
    return [SimulatedChannel(name, script) for name, script in scripts.items()]
