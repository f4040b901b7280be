"""Tests for the sandbox: personas, simulated channels, the persona player, the demo policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs
import pytest

import multiverify.sandbox
from multiverify import (
    Outcome,
    ResultStatus,
    Session,
    SessionStatus,
    StepState,
    Verdict,
    Verifier,
)
from multiverify.channels import PhoneCallChannel, ProviderEvent
from multiverify.exceptions import ConfigurationError
from multiverify.policy import Policy, Step, load_policy, policy_from_dict
from multiverify.sandbox import (
    DEFAULT_POLICY_PATH,
    PERSONAS,
    Persona,
    ProgressHook,
    SimulatedChannel,
    get_persona,
    is_simulated,
    load_default_policy,
    on_sandbox_vendor,
    play,
    sandbox_code,
    sandbox_phone_channel,
    simulated_channels,
)
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _id_checksum(body: str) -> str:
    return "10X98765432"[
        sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11
    ]


async def _play(persona: Persona, on_progress: ProgressHook | None = None) -> Session:
    """Play ``persona`` at full speed on the default policy; the finished session.

    The phone step runs the real channel on the sandbox voice vendor, as in the demo.
    """
    channels = [
        sandbox_phone_channel(persona, speed=0) if c.spec.name == "phone_call" else c
        for c in simulated_channels(persona, speed=0)
    ]
    async with Verifier(load_default_policy(), channels=channels) as verifier:
        return await play(
            verifier, persona, speed=0, poll=0.005, on_progress=on_progress
        )


def _verdict(session: Session) -> Verdict:
    assert session.verdict is not None
    return session.verdict


class TestPersonas:
    def test_the_four_personas(self) -> None:
        """The sandbox ships honest, no-answer, fraudster and hesitant."""
        assert set(PERSONAS) == {"honest", "no-answer", "fraudster", "hesitant"}
        assert all(name == persona.name for name, persona in PERSONAS.items())

    @pytest.mark.parametrize("name", sorted(PERSONAS))
    def test_applicants_are_realistic(self, name: str) -> None:
        """Each applicant borrows CNY, lives in China and has a well-formed ID."""
        applicant = get_persona(name).applicant
        assert applicant.loan.currency == "CNY"
        assert applicant.phone.startswith("+86")
        assert applicant.timezone == "Asia/Shanghai"
        national_id = applicant.national_id
        assert len(national_id) == 18
        assert national_id[6:14] == applicant.date_of_birth.strftime("%Y%m%d")
        assert national_id[-1] == _id_checksum(national_id[:17])

    def test_personal_data_is_masked_in_repr(self) -> None:
        """A persona's repr shows neither the applicant nor their scripts."""
        text = repr(get_persona("honest"))
        assert "Wang" not in text
        assert "honest" in text

    def test_unknown_persona(self) -> None:
        """An unknown name lists the known ones."""
        with pytest.raises(ConfigurationError, match="known: honest"):
            get_persona("nobody")


class TestSimulatedChannels:
    def test_the_four_builtin_channels(self) -> None:
        """One scripted channel per built-in channel, each marked simulated."""
        channels = simulated_channels(get_persona("honest"))
        assert [c.spec.name for c in channels] == [
            "credit_bureau",
            "sms_code",
            "phone_call",
            "video_sign",
        ]
        assert all(isinstance(c, SimulatedChannel) for c in channels)
        assert all(is_simulated(c) for c in channels)
        assert not any(on_sandbox_vendor(c) for c in channels)
        assert repr(channels[0]) == (
            "<multiverify.sandbox.SimulatedChannel(credit_bureau, starts=0)>"
        )

    def test_sandbox_phone_channel_is_real(self) -> None:
        """The sandbox phone channel is the real channel, on the sandbox voice vendor."""
        phone = sandbox_phone_channel(get_persona("honest"))
        assert isinstance(phone, PhoneCallChannel)
        assert not is_simulated(phone)
        assert on_sandbox_vendor(phone)

    def test_other_channels_are_not_simulated(self) -> None:
        """A plain ScriptedChannel, or any object, is not marked simulated."""
        assert not is_simulated(ScriptedChannel("sms_code", []))
        assert not is_simulated(object())

    def test_speed_scales_delays(self) -> None:
        """Delays are the persona's nominal ones times ``speed``."""
        persona = get_persona("honest")
        clock = FakeClock()
        policy = Policy(
            name="bureau-only",
            version="1",
            steps=[Step(id="bureau", channel="credit_bureau")],
        )

        async def run() -> None:
            channels = simulated_channels(persona, speed=2)
            async with Verifier(policy, channels=channels, clock=clock) as verifier:
                session = await verifier.start(persona.applicant)
                await verifier.wait_idle()
                assert (
                    clock.sleepers == 2
                )  # the bureau's delay, the renewal of its claim
                await clock.advance(persona.bureau.delay * 2 - 0.01)
                await verifier.wait_idle()
                running = await verifier.get(session.session_id)
                assert running.step("bureau").state is StepState.RUNNING
                await clock.advance(0.01)
                verdict = await verifier.wait(session.session_id)
                assert verdict.steps[0].result is not None
                assert verdict.steps[0].result.signal_names == ("identity_match",)

        asyncio.run(run())

    def test_negative_speed(self) -> None:
        """A negative speed is refused."""
        with pytest.raises(ValueError, match="negative"):
            simulated_channels(get_persona("honest"), speed=-1)

    async def test_sms_code_right_and_wrong(self) -> None:
        """The SMS step waits with a masked destination; a wrong code fails it."""
        persona = get_persona("honest")
        policy = Policy(
            name="sms-only", version="1", steps=[Step(id="sms", channel="sms_code")]
        )
        async with Verifier(
            policy, channels=simulated_channels(persona, speed=0)
        ) as verifier:
            session = await verifier.start(persona.applicant)
            await verifier.wait_idle()
            session = await verifier.get(session.session_id)
            (challenge,) = session.challenges
            assert challenge.kind == "code"
            assert challenge.destination == "+86*******8000"
            session = await verifier.submit(
                session.session_id, "sms", {"code": "not-it"}
            )
            verdict = await verifier.wait(session.session_id)
        result = verdict.steps[0].result
        assert result is not None
        assert result.status is ResultStatus.FAILED
        assert result.signal_names == ("wrong_code",)

    def test_sandbox_code_is_per_attempt(self) -> None:
        """The code is six digits, stable for an attempt, different across attempts."""
        code = sandbox_code("s1", "sms", 1)
        assert len(code) == 6
        assert code.isdigit()
        assert code == sandbox_code("s1", "sms", 1)
        assert code != sandbox_code("s1", "sms", 2)

    async def test_video_waits_for_the_decision(self) -> None:
        """The video step hands out a session link and ends on its decision event."""
        persona = get_persona("no-answer")
        policy = Policy(
            name="video-only",
            version="1",
            steps=[Step(id="video", channel="video_sign")],
        )
        async with Verifier(
            policy, channels=simulated_channels(persona, speed=0)
        ) as verifier:
            session = await verifier.start(persona.applicant)
            await verifier.wait_idle()
            session = await verifier.get(session.session_id)
            (challenge,) = session.challenges
            assert challenge.kind == "video_session"
            assert challenge.url is not None
            assert challenge.url.startswith("https://video.sandbox.")
            await verifier.handle_event(
                ProviderEvent(
                    session_id=session.session_id, step_id="video", kind="decision"
                )
            )
            verdict = await verifier.wait(session.session_id)
        assert verdict.steps[0].result is not None
        assert verdict.steps[0].result.signal_names == (
            "liveness_passed",
            "face_match",
            "statement_confirmed",
        )


class TestPlay:
    async def test_honest(self) -> None:
        """Bureau, code and call pass: approved, the video never starts."""
        verdict = _verdict(await _play(get_persona("honest")))
        assert verdict.outcome is Outcome.APPROVED
        assert [r.code for r in verdict.reasons] == ["all.confirmed"]
        states = {s.step_id: s.state for s in verdict.steps}
        assert states == {
            "bureau": "done",
            "sms": "done",
            "call": "done",
            "video": "skipped",
        }

    async def test_no_answer_falls_back_to_video(self) -> None:
        """The call fails with no_answer; the persona completes the video: approved."""
        verdict = _verdict(await _play(get_persona("no-answer")))
        assert verdict.outcome is Outcome.APPROVED
        call, video = verdict.steps[2].result, verdict.steps[3].result
        assert call is not None
        assert video is not None
        assert call.status is ResultStatus.FAILED
        assert call.signal_names == ("no_answer", "no_contact")
        assert video.status is ResultStatus.PASSED

    async def test_fraudster_is_rejected_at_once(self) -> None:
        """A fraud alert rejects at once; the call never starts."""
        verdict = _verdict(await _play(get_persona("fraudster")))
        assert verdict.outcome is Outcome.REJECTED
        assert [r.code for r in verdict.reasons] == ["bureau.fraud_alert"]
        states = {s.step_id: s.state for s in verdict.steps}
        assert states["call"] == "skipped"
        assert states["video"] == "skipped"

    async def test_hesitant_goes_to_review(self) -> None:
        """Risk signals on the call send the application to a person."""
        verdict = _verdict(await _play(get_persona("hesitant")))
        assert verdict.outcome is Outcome.REVIEW
        assert [r.code for r in verdict.reasons] == ["call.risk_signals"]

    async def test_a_case_left_to_a_reviewer_ends_the_play(self) -> None:
        """Under a policy with a [review] table, play returns the queued session."""
        persona = get_persona("hesitant")
        policy = policy_from_dict(
            load_default_policy().to_dict() | {"review": {"sla": "1h"}}
        )
        channels = [
            sandbox_phone_channel(persona, speed=0)
            if c.spec.name == "phone_call"
            else c
            for c in simulated_channels(persona, speed=0)
        ]
        async with Verifier(policy, channels=channels) as verifier:
            session = await asyncio.wait_for(
                play(verifier, persona, speed=0, poll=0.005), timeout=30
            )
        assert session.status is SessionStatus.REVIEW
        assert _verdict(session).outcome is Outcome.REVIEW

    async def test_every_persona_reaches_its_expected_outcome(self) -> None:
        """Each persona's ``expected`` is what the default policy decides."""
        for persona in PERSONAS.values():
            assert _verdict(await _play(persona)).outcome is persona.expected

    async def test_progress_is_reported(self) -> None:
        """``on_progress`` sees each new version of the session, the last one finished."""
        seen: list[Session] = []

        async def progress(session: Session) -> None:
            seen.append(session)

        session = await _play(get_persona("honest"), on_progress=progress)
        assert seen[-1] == session
        assert len(seen) >= 2

    async def test_late_input_is_dropped(self) -> None:
        """A code typed after its step stopped waiting is ignored, not raised."""
        honest = get_persona("honest")
        slow_call = Persona(
            name="slow-call",
            summary="types the code after it expired",
            applicant=honest.applicant,
            expected=Outcome.REVIEW,
            bureau=honest.bureau,
            call=Scripted.passes(signals=["identity_confirmed"], delay=3),
            video=honest.video,
            sms_delivery=0,
            typing_delay=1,
        )
        policy = Policy(
            name="code-expires",
            version="1",
            steps=[
                Step(id="sms", channel="sms_code", timeout="10ms"),
                Step(id="call", channel="phone_call"),
            ],
        )
        speed = (
            0.05  # the code expires at 10ms, is typed at 50ms, the call ends at 150ms
        )
        channels = simulated_channels(slow_call, speed=speed)
        async with Verifier(policy, channels=channels) as verifier:
            session = await play(verifier, slow_call, speed=speed, poll=0.005)
        sms = _verdict(session).steps[0].result
        assert sms is not None
        assert sms.status is ResultStatus.TIMEOUT
        assert _verdict(session).outcome is Outcome.REVIEW

    async def test_a_persona_who_does_not_answer(self) -> None:
        """A persona that never types the code leaves the step waiting until cancelled."""
        honest = get_persona("honest")
        lazy = attrs.evolve(honest, name="lazy", types_code=False)
        stuck = asyncio.Event()

        async def progress(session: Session) -> None:
            if session.step("sms").state is StepState.WAITING and (
                session.step("call").state is StepState.DONE
            ):
                stuck.set()

        channels = simulated_channels(lazy, speed=0)
        async with Verifier(load_default_policy(), channels=channels) as verifier:
            task = asyncio.ensure_future(
                play(verifier, lazy, speed=0, poll=0.005, on_progress=progress)
            )
            await asyncio.wait_for(stuck.wait(), timeout=5)
            (session_id,) = await verifier.store.session_ids()
            await verifier.cancel(session_id, reason="test")
            ended = await task
        assert ended.verdict is None
        assert ended.finished


class TestDefaultPolicy:
    def test_ships_inside_the_package(self) -> None:
        """The policy file sits in the package directory, so wheels carry it."""
        assert DEFAULT_POLICY_PATH.name == "default_policy.toml"
        assert DEFAULT_POLICY_PATH.parent == Path(multiverify.sandbox.__file__).parent

    def test_loads(self) -> None:
        """It is consumer-loan-demo with the four channels and its rules."""
        policy = load_default_policy()
        assert policy == load_policy(DEFAULT_POLICY_PATH)
        assert policy.name == "consumer-loan-demo"
        assert [s.channel for s in policy.steps] == [
            "credit_bureau",
            "sms_code",
            "phone_call",
            "video_sign",
        ]
        assert policy.step("bureau").retry.attempts == 3
        assert policy.step("bureau").timeout == 10
        call = policy.step("call")
        assert call.after == ("bureau",)
        assert call.fallback is not None
        assert call.fallback.step == "video"
        assert [r.reason for r in policy.rules] == [
            "bureau.fraud_alert",
            "identity.mismatch",
            "call.risk_signals",
            "all.confirmed",
        ]
        assert policy.default is Outcome.REVIEW
        assert policy.deadline == 30 * 60
