"""A harness for the phone-call channel: a Verifier on a FakeClock and the sandbox voice vendor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from multiverify import Applicant, Session, Verifier
from multiverify.channels import PhoneCallChannel
from multiverify.policy import Policy, Step
from multiverify.providers import (
    TwilioAccount,
    TwilioVoice,
    VonageApplication,
    VonageVoice,
)
from multiverify.sandbox import VOICE_PERSONAS, SandboxVoice, VoicePersona, get_persona
from multiverify.sandbox._voice import (
    CALLBACK_URL,
    TWILIO_ACCOUNT,
    TWILIO_TOKEN,
    VONAGE_URL_KEY,
)
from multiverify.testing import FakeClock

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def voice_provider(
    vendor: str, sandbox: SandboxVoice, clock: FakeClock
) -> TwilioVoice | VonageVoice:
    """The real provider for ``vendor``, its HTTP going to ``sandbox``."""
    client = httpx.AsyncClient(transport=sandbox)
    if vendor == "twilio":
        return TwilioVoice(
            account=TwilioAccount(
                account_sid=TWILIO_ACCOUNT, auth_token=TWILIO_TOKEN, client=client
            ),
            from_number="+8610555010",
            callback_url=CALLBACK_URL,
        )
    return VonageVoice(
        application=VonageApplication(
            application_id="app-1", private_key=KEY, clock=clock
        ),
        from_number="+8610555010",
        callback_url=CALLBACK_URL,
        callback_key=VONAGE_URL_KEY,
        client=client,
    )


@attrs.define
class Harness:
    """One verifier, one sandbox vendor, one fake clock."""

    verifier: Verifier
    sandbox: SandboxVoice
    clock: FakeClock
    channel: PhoneCallChannel
    applicant: Applicant

    async def settle(self) -> None:
        for _ in range(3):
            await self.verifier.wait_idle()
            await self.sandbox.wait_idle()

    async def run(self, *, limit: float = 5 * 86400) -> Session:
        """Start a session and move time on until it finishes."""
        session = await self.verifier.start(self.applicant)
        return await self.finish(session.session_id, limit=limit)

    async def finish(self, session_id: str, *, limit: float = 5 * 86400) -> Session:
        start = self.clock.now()
        while True:
            await self.settle()
            session = await self.verifier.get(session_id)
            if session.finished:
                return session
            elapsed = (self.clock.now() - start).total_seconds()
            assert elapsed < limit, "the session did not finish"
            pending = [due for due, _, fut in self.clock._sleepers if not fut.done()]
            step = (min(pending) - self.clock.now()).total_seconds() if pending else 1.0
            await self.clock.advance(max(step, 0.001))


Build = Callable[..., Harness]


@pytest.fixture
async def harness() -> AsyncIterator[Build]:
    made: list[Harness] = []

    def build(
        vendor: str = "twilio",
        voice: str | VoicePersona = "honest",
        *,
        options: Mapping[str, Any] | None = None,
        start: datetime | None = None,
        applicant: Applicant | None = None,
        providers: tuple[str, ...] = (),
        extra: tuple[Any, ...] = (),
    ) -> Harness:
        clock = FakeClock(
            start or datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
        )  # Monday 09:00 in Shanghai
        who = applicant or get_persona("honest").applicant
        persona = VOICE_PERSONAS[voice] if isinstance(voice, str) else voice
        sandbox = SandboxVoice(
            vendor=vendor, applicant=who, persona=persona, clock=clock
        )
        channel = PhoneCallChannel([voice_provider(vendor, sandbox, clock), *extra])
        policy = Policy(
            name="call",
            version="1",
            steps=[
                Step(
                    id="call",
                    channel="phone_call",
                    timeout="5d",
                    options=dict(options or {}),
                    providers=providers,
                )
            ],
        )
        verifier = Verifier(policy, channels=[channel], clock=clock)
        sandbox.connect(verifier)
        made.append(Harness(verifier, sandbox, clock, channel, who))
        return made[-1]

    yield build
    for item in made:
        await item.sandbox.aclose()
        await item.verifier.aclose()
