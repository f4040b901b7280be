"""Confirmation calls offline: each sandbox voice persona on Twilio's and Vonage's wire formats.

The real PhoneCallChannel places calls through the real Twilio and Vonage
providers; their HTTP goes to the sandbox voice vendor, which plays the
applicant's phone and sends signed callbacks through the real webhooks.
Time runs on a FakeClock, so retries at +30 min and +2 h take no time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from multiverify import Verifier
from multiverify.channels import PhoneCallChannel
from multiverify.policy import Policy, Step
from multiverify.providers import TwilioAccount, TwilioVoice
from multiverify.sandbox import VOICE_PERSONAS, SandboxVoice, get_persona
from multiverify.testing import FakeClock

SID = "AC" + "0" * 32
TOKEN = "sandbox-twilio-auth-token"  # noqa: S105 - the sandbox's public token
HOOK = "https://app.sandbox.multiverify.invalid/webhooks/voice"


async def call(persona: str) -> str:
    clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))  # 09:00 in Shanghai
    applicant = get_persona("honest").applicant
    phone = SandboxVoice(
        vendor="twilio",
        applicant=applicant,
        persona=VOICE_PERSONAS[persona],
        clock=clock,
    )
    account = TwilioAccount(
        account_sid=SID, auth_token=TOKEN, client=httpx.AsyncClient(transport=phone)
    )
    channel = PhoneCallChannel(
        [TwilioVoice(account=account, from_number="+8610555010", callback_url=HOOK)]
    )
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
        return f"{persona:18} (no result)"
    return f"{persona:18} {result.status.value:13} {', '.join(result.signal_names)}"


async def main() -> None:
    for persona in VOICE_PERSONAS:
        print(await call(persona))


if __name__ == "__main__":
    asyncio.run(main())
