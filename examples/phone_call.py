"""Confirmation calls offline: each sandbox voice persona on Twilio's and Vonage's wire formats.

The real PhoneCallChannel places calls through the real Twilio and Vonage
providers; their HTTP goes to the sandbox voice vendor, which plays the
applicant's phone and sends signed callbacks through the real webhooks.
Time runs on a FakeClock, so retries at +30 min and +2 h take no time.
The calls are recorded: each result waits for the vendor's recording
reference and names it in its evidence.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from multiverify import Verifier
from multiverify.channels import PhoneCallChannel
from multiverify.policy import Policy, Step
from multiverify.providers import (
    TwilioAccount,
    TwilioVoice,
    VoiceProvider,
    VonageApplication,
    VonageVoice,
)
from multiverify.sandbox import VOICE_PERSONAS, SandboxVoice, get_persona
from multiverify.testing import FakeClock

SID = "AC" + "0" * 32
TOKEN = "sandbox-twilio-auth-token"  # noqa: S105 - the sandbox's public token
URL_KEY = "sandbox-vonage-callback-key"  # the sandbox's public URL-signing key
HOOK = "https://app.sandbox.multiverify.invalid/webhooks/voice"
# A Vonage application's private key; a real one comes from the Vonage dashboard.
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def provider(vendor: str, phone: SandboxVoice, clock: FakeClock) -> VoiceProvider:
    """The real provider for ``vendor``, its HTTP going to the sandbox."""
    client = httpx.AsyncClient(transport=phone)
    if vendor == "twilio":
        account = TwilioAccount(account_sid=SID, auth_token=TOKEN, client=client)
        return TwilioVoice(
            account=account, from_number="+8610555010", callback_url=HOOK
        )
    return VonageVoice(
        application=VonageApplication(
            application_id="app", private_key=KEY, clock=clock
        ),
        from_number="+8610555010",
        callback_url=HOOK,
        callback_key=URL_KEY,
        client=client,
    )


async def call(vendor: str, persona: str) -> str:
    clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))  # 09:00 in Shanghai
    applicant = get_persona("honest").applicant
    phone = SandboxVoice(
        vendor=vendor,
        applicant=applicant,
        persona=VOICE_PERSONAS[persona],
        clock=clock,
    )
    channel = PhoneCallChannel([provider(vendor, phone, clock)])
    policy = Policy(
        name="call",
        version="1",
        steps=[Step(id="call", channel="phone_call", timeout="3d")],
    )
    async with Verifier(policy, channels=[channel], clock=clock) as verifier:
        phone.connect(verifier)
        session = await verifier.start(applicant)
        while not (session := await verifier.get(session.session_id)).finished:
            await verifier.wait_idle()
            await phone.wait_idle()
            await clock.advance(60)
        await phone.aclose()
    result = session.step("call").result
    if result is None:
        return f"{vendor:7} {persona:18} (no result)"
    recordings = sum(1 for e in result.evidence if e.kind == "recording")
    return (
        f"{vendor:7} {persona:18} {result.status.value:13} "
        f"{result.facts['calls']} calls, {recordings} recorded: "
        f"{', '.join(result.signal_names)}"
    )


async def main() -> None:
    for vendor in ("twilio", "vonage"):
        for persona in VOICE_PERSONAS:
            print(await call(vendor, persona))


if __name__ == "__main__":
    asyncio.run(main())
