"""Tests for the sandbox bureau: both wire layouts, every persona, tokens, and the demo's channel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from multiverify import ResultStatus, Verifier
from multiverify.channels import StepContext
from multiverify.exceptions import ConfigurationError
from multiverify.sandbox import (
    BUREAU_PERSONAS,
    SandboxBureau,
    channel_label,
    get_persona,
    sandbox_bureau_channel,
)
from multiverify.stores import MemoryStore
from multiverify.testing import FakeClock

T0 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)

EXPECTED = {
    "clean": (ResultStatus.PASSED, {"identity_match"}),
    "fraud-alert": (ResultStatus.FAILED, {"identity_match", "fraud_alert"}),
    "thin-file": (ResultStatus.INCONCLUSIVE, {"identity_match", "thin_file"}),
    "many-inquiries": (
        ResultStatus.PASSED,
        {"identity_match", "many_recent_inquiries"},
    ),
    "identity-mismatch": (ResultStatus.FAILED, {"identity_mismatch"}),
}


def context(preset: str, attempt: int = 1) -> StepContext:
    """Attempt ``attempt`` for the honest persona (a US applicant for the US layout)."""
    who = get_persona("honest").applicant
    return StepContext(
        session_id="s1",
        step_id="bureau",
        attempt=attempt,
        provider=None,
        idempotency_key=f"s1:bureau:{attempt}",
        applicant=who,
        clock=FakeClock(T0),
        shared=MemoryStore(),
    )


class TestSandboxBureau:
    @pytest.mark.parametrize("preset", ["cn-credit-gateway", "us-credit-profile"])
    @pytest.mark.parametrize("persona", BUREAU_PERSONAS)
    async def test_personas(self, preset: str, persona: str) -> None:
        """Each persona's file gives its signals through the real adapter and channel, in both layouts."""
        async with SandboxBureau(
            persona=persona, preset=preset, clock=FakeClock(T0)
        ) as vendor:
            outcome = await vendor.channel().start(context(preset))
        status, signals = EXPECTED[persona]
        assert outcome.result.status is status
        assert set(outcome.result.signal_names) == signals
        assert vendor.pulls == ["s1:bureau:1"]

    async def test_revoked_token_is_refreshed(self) -> None:
        """A revoked token is answered 401 once; the adapter fetches a new one and the pull succeeds."""
        async with SandboxBureau(clock=FakeClock(T0)) as vendor:
            bureau = vendor.channel(reuse_ttl=0)
            await bureau.start(context("cn-credit-gateway"))
            vendor.revoke_tokens()
            outcome = await bureau.start(context("cn-credit-gateway", attempt=2))
        assert outcome.result.status is ResultStatus.PASSED
        assert vendor.tokens_issued == 2
        assert vendor.pulls == ["s1:bureau:1", "s1:bureau:2"]

    async def test_same_key_same_report(self) -> None:
        """A retried pull (same idempotency key) gets the same report id."""
        async with SandboxBureau(clock=FakeClock(T0)) as vendor:
            bureau = vendor.channel(reuse_ttl=0)
            first = await bureau.start(context("cn-credit-gateway"))
            again = await bureau.start(context("cn-credit-gateway"))
        assert first.result.facts["report_id"] == again.result.facts["report_id"]

    async def test_refuses_strangers(self) -> None:
        """Wrong client credentials, an unknown path or a bad body are refused as a bureau would."""
        import httpx

        async with SandboxBureau(clock=FakeClock(T0)) as vendor:
            client = httpx.AsyncClient(transport=vendor)
            base = "https://bureau.sandbox.multiverify.invalid"
            token = await client.post(
                base + "/oauth2/token", data={"grant_type": "client_credentials"}
            )
            assert token.status_code == 401
            auth = httpx.BasicAuth(SandboxBureau.CLIENT_ID, SandboxBureau.CLIENT_SECRET)
            grant = await client.post(
                base + "/oauth2/token", data={"grant_type": "password"}, auth=auth
            )
            assert grant.status_code == 400
            assert (await client.get(base + "/nothing")).status_code == 404
            ok = await client.post(
                base + "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=auth,
            )
            bearer = {"Authorization": f"Bearer {ok.json()['access_token']}"}
            path = base + "/v1/credit/reports"
            assert (
                await client.post(path, content=b"{", headers=bearer)
            ).status_code == 400
            assert (
                await client.post(path, content=b"[]", headers=bearer)
            ).status_code == 400
            assert (await client.post(path, json={})).status_code == 401
            await client.aclose()
        assert "SandboxBureau(clean" in repr(vendor)

    def test_unknown_persona(self) -> None:
        """An unknown persona is a ConfigurationError listing the known ones."""
        with pytest.raises(ConfigurationError, match="identity-mismatch"):
            SandboxBureau(persona="nobody")

    @pytest.mark.parametrize(
        ("persona", "signal"),
        [
            ("honest", "identity_match"),
            ("fraudster", "fraud_alert"),
            ("hesitant", "many_recent_inquiries"),
        ],
    )
    async def test_demo_channel(self, persona: str, signal: str) -> None:
        """The demo's bureau channel reads the persona's file and is labelled a sandbox vendor."""
        from multiverify.sandbox import load_default_policy, simulated_channels

        bureau = sandbox_bureau_channel(get_persona(persona), clock=FakeClock(T0))
        assert channel_label(bureau) == "sandbox vendor"
        channels = [
            bureau if c.spec.name == "credit_bureau" else c
            for c in simulated_channels(get_persona(persona), speed=0)
        ]
        async with Verifier(
            load_default_policy(), channels=channels, clock=FakeClock(T0)
        ) as verifier:
            session = await verifier.start(get_persona(persona).applicant)
            for _ in range(20):
                await verifier.wait_idle()
                current = await verifier.get(session.session_id)
                if current.step("bureau").result is not None:
                    break
        assert signal in current.step("bureau").result.signal_names
        await bureau.aclose()
