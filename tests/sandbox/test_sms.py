"""Tests for the sandbox SMS vendor and the demo's real SMS step."""

from __future__ import annotations

import httpx
import pytest

from multiverify import Outcome, Policy, ResultStatus, Step, Verifier
from multiverify.channels import Channel, SmsCodeChannel
from multiverify.exceptions import (
    ProviderAuthError,
    ProviderNumberRejectedError,
    ProviderRejectedError,
)
from multiverify.providers import SmsMessage, TwilioAccount, TwilioMessaging
from multiverify.sandbox import (
    PERSONAS,
    Persona,
    SandboxSms,
    SandboxSmsCodeChannel,
    channel_label,
    get_persona,
    is_simulated,
    load_default_policy,
    play,
    simulated_channels,
)
from multiverify.sandbox._sms import API_BASE
from multiverify.testing import FakeClock


def demo_channels(persona: Persona, sms: SandboxSms) -> list[Channel]:
    """The demo's channels, the SMS step the real channel on ``sms``."""
    return [
        sms.channel() if channel.spec.name == "sms_code" else channel
        for channel in simulated_channels(persona, speed=0)
    ]


def message(
    to: str = "+8613800138000", text: str = "【Acme】您的验证码为048213"
) -> SmsMessage:
    """A message for the sandbox."""
    return SmsMessage(
        to=to, text=text, code="048213", ttl_minutes=5, locale="zh-CN", reference="r"
    )


class TestSandboxSms:
    async def test_delivers_into_the_inbox(self) -> None:
        """A send through the real Twilio provider lands in the number's inbox."""
        clock = FakeClock()
        sms = SandboxSms(clock=clock)
        provider = sms.provider()
        receipt = await provider.send(message())
        (delivered,) = sms.inbox("+8613800138000")
        assert receipt.message_id == delivered.sid
        assert receipt.segments == 1
        assert delivered.sent_at == clock.now()
        assert delivered.sender == "multiverify"
        assert sms.latest_code("+8613800138000") == "048213"
        assert sms.inbox("+8613900139000") == []
        assert sms.latest_code("+8613900139000") is None
        assert "8613800138000" not in repr(delivered)
        assert repr(sms) == "<multiverify.sandbox.SandboxSms(messages=1)>"
        await provider.aclose()

    async def test_newest_message_wins(self) -> None:
        """The applicant reads the code of the newest text; a text without one has none."""
        sms = SandboxSms()
        provider = sms.provider()
        await provider.send(message(text="Acme: your verification code is 111111."))
        await provider.send(message(text="Acme: your verification code is 222222."))
        assert sms.latest_code("+8613800138000") == "222222"
        await provider.send(message(text="Hello there"))
        assert sms.latest_code("+8613800138000") is None

    async def test_refuses_what_twilio_refuses(self) -> None:
        """Unreachable numbers, empty bodies and bad numbers get Twilio's errors."""
        sms = SandboxSms(unreachable=["+8613900139000"])
        provider = sms.provider()
        with pytest.raises(ProviderNumberRejectedError) as unreachable:
            await provider.send(message(to="+8613900139000"))
        assert unreachable.value.code == "21612"
        with pytest.raises(ProviderRejectedError) as empty:
            await provider.send(message(text=""))
        assert empty.value.code == "21602"
        with pytest.raises(ProviderNumberRejectedError) as bad:
            await provider.send(message(to="13800138000"))
        assert bad.value.code == "21211"

    async def test_authentication_and_routes(self) -> None:
        """A wrong token, another account or another path is refused."""
        sms = SandboxSms()
        async with httpx.AsyncClient(transport=sms.transport) as client:
            wrong = TwilioAccount(
                account_sid="ACsandbox",
                auth_token="nope",
                client=client,
                api_base=API_BASE,
            )
            with pytest.raises(ProviderAuthError):
                await TwilioMessaging(wrong, from_="x").send(message())
            other = TwilioAccount(
                account_sid="ACother",
                auth_token="sandbox-token",
                client=client,
                api_base=API_BASE,
            )
            with pytest.raises(ProviderAuthError):
                await TwilioMessaging(other, from_="x").send(message())
            response = await client.get(
                f"{API_BASE}/2010-04-01/Accounts/ACsandbox/Calls.json"
            )
            assert response.status_code == 404


class TestTheDemoSmsStep:
    def test_the_sms_step_is_real(self) -> None:
        """The sandbox's SMS channel is the real channel, labelled as on a sandbox vendor."""
        channel = SandboxSms().channel(brand="Acme")
        assert isinstance(channel, SandboxSmsCodeChannel)
        assert isinstance(channel, SmsCodeChannel)
        assert not is_simulated(channel)
        assert channel_label(channel) == "sandbox vendor"

    @pytest.mark.parametrize("name", sorted(PERSONAS))
    async def test_personas_reach_their_outcome_reading_the_inbox(
        self, name: str
    ) -> None:
        """Each persona reads the code from the sandbox inbox; outcomes are unchanged."""
        persona = get_persona(name)
        sms = SandboxSms()
        channels = demo_channels(persona, sms)
        async with Verifier(load_default_policy(), channels=channels) as verifier:
            session = await play(verifier, persona, speed=0, poll=0.005, sms=sms)
        assert session.verdict is not None
        assert session.verdict.outcome is persona.expected
        if persona.expected is Outcome.APPROVED:
            result = session.step("sms").result
            assert result is not None
            assert result.status is ResultStatus.PASSED
            (text,) = sms.inbox(persona.applicant.phone)
            assert text.body.startswith("【multiverify】")

    async def test_no_text_nothing_typed(self) -> None:
        """A persona whose inbox holds no code types nothing: the step times out."""
        persona = get_persona("honest")
        sms = SandboxSms()
        policy = Policy(
            name="sms",
            version="1",
            steps=[Step(id="sms", channel="sms_code", timeout="50ms")],
        )
        channels = demo_channels(persona, sms)
        async with Verifier(policy, channels=channels) as verifier:
            session = await play(
                verifier, persona, speed=0, poll=0.005, sms=SandboxSms()
            )
        result = session.step("sms").result
        assert result is not None
        assert result.status is ResultStatus.TIMEOUT
