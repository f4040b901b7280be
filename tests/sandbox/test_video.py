"""Tests for the sandbox video vendor: Veriff's wire level in memory, its personas, the demo wiring."""

from __future__ import annotations

import json

import attrs
import httpx
import pytest

from multiverify import Outcome, Policy, ResultStatus, Rule, Step, Verdict, Verifier
from multiverify.channels import VideoSignChannel
from multiverify.exceptions import (
    ConfigurationError,
    ProviderAuthError,
    ProviderRejectedError,
)
from multiverify.providers import Veriff, VideoSession, veriff_signature
from multiverify.sandbox import (
    PERSONAS,
    Persona,
    SandboxVideoSignChannel,
    SandboxVideoVendor,
    channel_label,
    get_persona,
    load_default_policy,
    play,
    simulated_channels,
    video_personas,
)
from multiverify.testing import FakeClock, FakeVideoProvider

VIDEO_ONLY = Policy(
    name="video-only",
    version="1",
    steps=[Step(id="video", channel="video_sign", timeout="15m")],
    rules=[
        Rule(outcome="approved", when="steps.video.status == 'passed'", reason="ok")
    ],
    default="rejected",
)


APPROVED = ("liveness_passed", "face_match")


async def play_video(persona_name: str) -> tuple[ResultStatus, tuple[str, ...], int]:
    """Play the honest applicant at the vendor as ``persona_name``; the video result."""
    persona = attrs.evolve(get_persona("honest"), video_persona=persona_name)
    vendor = SandboxVideoVendor(persona=persona_name, speed=0)
    async with vendor, Verifier(VIDEO_ONLY, channels=[vendor.channel()]) as verifier:
        vendor.connect(verifier)
        session = await play(verifier, persona, speed=0, poll=0.005, video=vendor)
    result = session.step("video").result
    assert result is not None
    return result.status, result.signal_names, int(result.facts.get("resubmissions", 0))


async def play_demo(persona: Persona) -> Verdict:
    """The persona through the demo policy, the video step on the real channel at the vendor."""
    async with SandboxVideoVendor(persona=persona.video_persona, speed=0) as vendor:
        channels = [
            vendor.channel() if c.spec.name == "video_sign" else c
            for c in simulated_channels(persona, speed=0)
        ]
        async with Verifier(load_default_policy(), channels=channels) as verifier:
            vendor.connect(verifier)
            session = await play(verifier, persona, speed=0, poll=0.005, video=vendor)
    assert session.verdict is not None
    return session.verdict


class TestVideoPersonas:
    def test_names(self) -> None:
        """Six video personas ship."""
        assert video_personas() == (
            "passes",
            "fails-liveness",
            "face-mismatch",
            "resubmission",
            "abandons",
            "wrong-holder",
        )

    @pytest.mark.parametrize(
        ("name", "status", "signals", "resubmissions"),
        [
            ("passes", ResultStatus.PASSED, (*APPROVED, "document_holder_match"), 0),
            ("fails-liveness", ResultStatus.FAILED, ("liveness_failed",), 0),
            ("face-mismatch", ResultStatus.FAILED, ("face_mismatch",), 0),
            (
                "resubmission",
                ResultStatus.PASSED,
                (*APPROVED, "document_holder_match"),
                1,
            ),
            ("abandons", ResultStatus.INCONCLUSIVE, ("abandoned",), 0),
            (
                "wrong-holder",
                ResultStatus.FAILED,
                (*APPROVED, "document_holder_mismatch"),
                0,
            ),
        ],
    )
    async def test_each_persona(
        self,
        name: str,
        status: ResultStatus,
        signals: tuple[str, ...],
        resubmissions: int,
    ) -> None:
        """Signed webhooks bring each persona's decision to the real channel."""
        assert await play_video(name) == (status, signals, resubmissions)

    @pytest.mark.parametrize("name", sorted(PERSONAS))
    async def test_demo_outcomes_hold(self, name: str) -> None:
        """With the real video channel on the vendor, every demo persona gets its outcome."""
        persona = get_persona(name)
        verdict = await play_demo(persona)
        assert verdict.outcome is persona.expected

    async def test_demo_policy_rejects_a_wrong_holder(self) -> None:
        """Someone else's ID document on video is an identity mismatch under the demo policy."""
        persona = attrs.evolve(get_persona("no-answer"), video_persona="wrong-holder")
        verdict = await play_demo(persona)
        assert verdict.outcome is Outcome.REJECTED
        assert [reason.code for reason in verdict.reasons] == ["identity.mismatch"]

    async def test_polling_finds_the_decision(self) -> None:
        """Unconnected, the vendor's decision is still found by the channel's polls."""
        clock = FakeClock()
        async with SandboxVideoVendor(speed=0, clock=clock) as vendor:
            channel = vendor.channel(poll_interval=10)
            async with Verifier(
                VIDEO_ONLY, channels=[channel], clock=clock
            ) as verifier:
                session = await verifier.start(get_persona("honest").applicant)
                await verifier.wait_idle()
                challenge = await verifier.challenge(session.session_id, "video")
                assert challenge.url is not None
                await vendor.open(challenge.url)
                await vendor.wait_idle()
                await verifier.wait_idle()
                assert len(vendor.delivered) == 3  # started, submitted, decision
                await clock.advance(10)
                verdict = await verifier.wait(session.session_id)
                result = (await verifier.get(session.session_id)).step("video").result
        assert verdict.outcome is Outcome.APPROVED
        # opened without a holder: Veriff read no person, nothing to compare
        assert result is not None
        assert result.signal_names[-1] == "document_holder_unknown"


class TestWireLevel:
    async def test_auth_and_signatures(self) -> None:
        """A wrong API key or signature is refused as Veriff would (401)."""
        async with SandboxVideoVendor() as vendor:
            session = VideoSession(
                provider="veriff",
                session_id="nope",
                url="https://x",
                expires_at=FakeClock().now(),
            )
            with pytest.raises(ProviderRejectedError, match="Not found"):
                await vendor.provider().fetch_decision(session)
            async with httpx.AsyncClient(transport=vendor) as client:
                wrong_key = Veriff(
                    api_key="other-key",
                    shared_secret=SandboxVideoVendor.SHARED_SECRET,
                    base_url="https://veriff.sandbox.multiverify.invalid",
                    client=client,
                )
                with pytest.raises(ProviderAuthError):
                    await wrong_key.fetch_decision(session)
                headers = {"X-AUTH-CLIENT": SandboxVideoVendor.API_KEY}
                unsigned = await client.post(
                    "https://veriff.sandbox.multiverify.invalid/v1/sessions",
                    content=b"{}",
                    headers=headers,
                )
                assert unsigned.status_code == 401
                body = b'{"verification": {}}'
                signed = {
                    **headers,
                    "X-HMAC-SIGNATURE": veriff_signature(
                        SandboxVideoVendor.SHARED_SECRET, body
                    ),
                }
                missing = await client.post(
                    "https://veriff.sandbox.multiverify.invalid/v1/sessions",
                    content=body,
                    headers=signed,
                )
                assert missing.status_code == 400
                unknown = await client.get(
                    "https://veriff.sandbox.multiverify.invalid/v1/other",
                    headers=headers,
                )
                assert unknown.status_code == 404
                bad_get = await client.get(
                    "https://veriff.sandbox.multiverify.invalid/v1/sessions/x/decision",
                    headers=headers,
                )
                assert bad_get.status_code == 401

    async def test_open_unknown_link(self) -> None:
        """Opening a link the vendor never gave out is a ConfigurationError."""
        async with SandboxVideoVendor() as vendor:
            with pytest.raises(ConfigurationError, match="no session"):
                await vendor.open("https://elsewhere.invalid/v/1")

    async def test_webhooks_are_signed(self) -> None:
        """Every delivery verifies with the integration's secret."""
        clock = FakeClock()
        async with (
            SandboxVideoVendor(speed=0, clock=clock) as vendor,
            Verifier(VIDEO_ONLY, channels=[vendor.channel()], clock=clock) as verifier,
        ):
            session = await verifier.start(get_persona("honest").applicant)
            await verifier.wait_idle()
            challenge = await verifier.challenge(session.session_id, "video")
            assert challenge.url is not None
            await vendor.open(challenge.url)
            await vendor.wait_idle()
            await verifier.wait_idle()
        for request in vendor.delivered:
            assert request.header("x-hmac-signature") == veriff_signature(
                SandboxVideoVendor.SHARED_SECRET, request.body
            )
        decision = json.loads(vendor.delivered[-1].body)["verification"]
        assert decision["vendorData"] == f"{session.session_id}:video:1"

    def test_bad_settings(self) -> None:
        """An unknown persona or a negative speed is refused."""
        with pytest.raises(ConfigurationError, match="known: passes"):
            SandboxVideoVendor(persona="sleeps")
        with pytest.raises(ValueError, match="negative"):
            SandboxVideoVendor(speed=-1)


class TestLabels:
    async def test_channel_label(self) -> None:
        """Simulated, sandbox vendor, or a real channel."""
        async with SandboxVideoVendor(persona="abandons") as vendor:
            channel = vendor.channel()
            assert isinstance(channel, SandboxVideoSignChannel)
            assert channel_label(channel) == "sandbox vendor"
            assert repr(vendor) == (
                "<multiverify.sandbox.SandboxVideoVendor(abandons, sessions=0)>"
            )
        assert (
            channel_label(simulated_channels(get_persona("honest"))[0]) == "simulated"
        )
        assert channel_label(VideoSignChannel([FakeVideoProvider()])) is None
