"""Video signing on the sandbox vendor: every video persona, then a forged webhook refused.

The real `VideoSignChannel` and `Veriff` provider run against
`SandboxVideoVendor`, which answers Veriff's API in memory and sends signed
decision webhooks through `VeriffWebhooks` to `Verifier.handle_event`.
Runs offline in a second or two.
"""

from __future__ import annotations

import asyncio

from multiverify import Policy, Rule, Step, SystemClock, Verifier
from multiverify.exceptions import WebhookSignatureError
from multiverify.sandbox import SandboxVideoVendor, get_persona, video_personas
from multiverify.webhooks import WebhookRequest

POLICY = Policy(
    name="video-signing",
    version="1",
    steps=[Step(id="video", channel="video_sign", timeout="45m")],
    rules=[
        Rule(
            outcome="approved",
            when="steps.video.status == 'passed'",
            reason="video.confirmed",
            message="live, matching the ID document, statement read",
        ),
        Rule(
            outcome="rejected",
            when="'face_mismatch' in steps.video.signals"
            " || 'document_holder_mismatch' in steps.video.signals",
            reason="identity.mismatch",
        ),
    ],
    default="review",
)


async def sign(persona: str) -> None:
    """One applicant through a video signing as ``persona`` behaves."""
    applicant = get_persona("honest").applicant
    vendor = SandboxVideoVendor(persona=persona, speed=0)
    async with vendor, Verifier(POLICY, channels=[vendor.channel()]) as verifier:
        vendor.connect(verifier)
        session = await verifier.start(applicant)
        challenge = await verifier.challenge(session.session_id, "video")
        if persona == "passes":
            print(f"  read aloud: {challenge.message}")
            print(f"  link: {challenge.url} (until {challenge.expires_at:%H:%M} UTC)")
        if challenge.url is None:
            raise SystemExit("the video step gave no link")
        # The applicant does the session, showing their own ID document.
        await vendor.open(challenge.url, holder=applicant)
        verdict = await verifier.wait(session.session_id)
        result = (await verifier.get(session.session_id)).step("video").result
        if result is None:
            raise SystemExit("the video step has no result")
        signals = ", ".join(result.signal_names) or "none"
        print(
            f"{persona:>15}: {result.status.value:<12} signals: {signals:<58}"
            f" -> {verdict.outcome.value}"
        )


async def forged() -> None:
    """A webhook signed with the wrong secret never reaches a session."""
    vendor = SandboxVideoVendor()
    async with vendor:
        request = WebhookRequest(
            method="POST",
            url="https://app.example/webhooks/veriff",
            headers={"X-HMAC-SIGNATURE": "0" * 64},
            body=b'{"verification": {"status": "approved"}}',
            received_at=SystemClock().now(),
        )
        try:
            await vendor.webhooks.parse(request)
        except WebhookSignatureError as exc:
            print(f"forged webhook refused: {exc}")


async def main() -> None:
    for persona in video_personas():
        await sign(persona)
    await forged()


if __name__ == "__main__":
    asyncio.run(main())
