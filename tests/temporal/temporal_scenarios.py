"""The parity scenarios: each demo persona under the default policy, plus failover, timeout-fallback, deadline and channel-crash cases.

Each runs on the embedded runtime (on a FakeClock) and on Temporal (real time,
small durations); both must reach the same verdict for the same reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from multiverify import ChannelSpec, Policy, Session, Verifier
from multiverify.channels import (
    Channel,
    StepContext,
    StepMessage,
    StepOutcome,
)
from multiverify.exceptions import ProviderRejectedError, ProviderUnavailableError
from multiverify.policy import policy_from_dict
from multiverify.sandbox import (
    Persona,
    get_persona,
    load_default_policy,
    play,
    simulated_channels,
)
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

#: Persona delays are scaled by this on both runtimes (the honest persona's
#: whole session takes about a quarter of a second).
SPEED = 0.05


@attrs.frozen(kw_only=True)
class Scenario:
    """A persona, a policy, and the channels the persona meets."""

    name: str
    persona: Persona
    policy: Policy
    channels: Callable[[], Sequence[Channel]]


def _with(changes: dict[str, Any], **steps: dict[str, Any]) -> Policy:
    """The default policy with top-level ``changes`` and per-step ``steps`` changes."""
    document = load_default_policy().to_dict() | changes
    document["steps"] = [step | steps.get(step["id"], {}) for step in document["steps"]]
    return policy_from_dict(document)


def _persona_scenario(name: str) -> Scenario:
    persona = get_persona(name)
    return Scenario(
        name=name,
        persona=persona,
        policy=load_default_policy(),
        channels=lambda: simulated_channels(persona, speed=SPEED),
    )


def _failover() -> Scenario:
    """The bureau's first provider refuses for good, the second fails once, then answers."""
    persona = get_persona("honest")

    def bureau(context: StepContext) -> Sequence[Scripted]:
        if context.provider == "primary":
            return [
                Scripted.raises(
                    ProviderRejectedError(
                        message="primary refused the request", provider="primary"
                    )
                )
            ]
        return [
            Scripted.raises(
                ProviderUnavailableError(message="backup is busy", provider="backup")
            ),
            Scripted.passes(signals=["identity_match"], score=0.9),
        ]

    def channels() -> list[Channel]:
        others = [
            channel
            for channel in simulated_channels(persona, speed=SPEED)
            if channel.spec.name != "credit_bureau"
        ]
        return [ScriptedChannel("credit_bureau", bureau), *others]

    policy = _with(
        {},
        bureau={
            "providers": ["primary", "backup"],
            "retry": {"attempts": 3, "wait_initial": "10ms", "wait_max": "50ms"},
        },
    )
    return Scenario(name="failover", persona=persona, policy=policy, channels=channels)


def _call_timeout() -> Scenario:
    """The call never ends in time: it times out and the video signing takes over."""
    persona = attrs.evolve(
        get_persona("honest"),
        call=Scripted.passes(signals=["identity_confirmed"], delay=40.0),
    )
    return Scenario(
        name="call-timeout",
        persona=persona,
        policy=_with({}, call={"timeout": "400ms"}),
        channels=lambda: simulated_channels(persona, speed=SPEED),
    )


def _deadline() -> Scenario:
    """The applicant never types the code: the session expires at its deadline."""
    persona = attrs.evolve(get_persona("honest"), types_code=False)
    return Scenario(
        name="deadline",
        persona=persona,
        policy=_with({"deadline": "1500ms"}),
        channels=lambda: simulated_channels(persona, speed=SPEED),
    )


class _CrashingOnInput:
    """A channel that starts as ``inner`` does, then crashes on any input (a bug)."""

    def __init__(self, inner: Channel) -> None:
        self._inner = inner

    @property
    def spec(self) -> ChannelSpec:
        return self._inner.spec

    @property
    def state_type(self) -> type[Any] | None:
        return self._inner.state_type

    async def start(self, context: StepContext, /) -> StepOutcome:
        return await self._inner.start(context)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        raise KeyError("code")

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        await self._inner.cancel(context, state)


def _sms_crash() -> Scenario:
    """The SMS channel crashes on the typed code: the step ends in error, the policy's default decides."""
    persona = get_persona("honest")

    def channels() -> list[Channel]:
        return [
            _CrashingOnInput(channel) if channel.spec.name == "sms_code" else channel
            for channel in simulated_channels(persona, speed=SPEED)
        ]

    return Scenario(
        name="sms-crash",
        persona=persona,
        policy=load_default_policy(),
        channels=channels,
    )


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        *(
            _persona_scenario(name)
            for name in ("honest", "no-answer", "fraudster", "hesitant")
        ),
        _failover(),
        _call_timeout(),
        _deadline(),
        _sms_crash(),
    )
}


def verdict_of(session: Session) -> tuple[Any, ...]:
    """What parity compares: the outcome, the reasons and who decided.

    Steps the verdict did not wait for may end either way (an SMS code typed
    just before or just after a deciding call result), so they are left out.
    """
    verdict = session.verdict
    assert verdict is not None, f"session {session.session_id} has no verdict"
    return (
        verdict.outcome,
        tuple((reason.code, reason.message) for reason in verdict.reasons),
        verdict.decided_by,
    )


async def run_embedded(scenario: Scenario) -> Session:
    """Play the scenario on the embedded runtime, moving a FakeClock along."""
    clock = FakeClock()
    async with Verifier(
        scenario.policy, channels=scenario.channels(), clock=clock
    ) as verifier:
        played = asyncio.ensure_future(
            play(verifier, scenario.persona, speed=SPEED, poll=0.001)
        )
        for _ in range(20_000):
            if played.done():
                break
            await verifier.wait_idle()
            await clock.advance(0.01)
            await asyncio.sleep(0.0005)
        return await played
