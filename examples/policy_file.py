"""Load the sandbox's demo policy file, check and explain it, then run a persona on it."""

from __future__ import annotations

import asyncio

from multiverify import Verifier
from multiverify.exceptions import PolicyError
from multiverify.policy import explain_policy, load_policy, parse_policy
from multiverify.sandbox import (
    DEFAULT_POLICY_PATH,
    get_persona,
    play,
    simulated_channels,
)


async def main() -> None:
    # Check: a valid file loads; a broken one lists every problem with its place.
    policy = load_policy(DEFAULT_POLICY_PATH)
    print(f"OK: {policy.name} {policy.version} (sha256 {policy.hash[:12]})")
    try:
        parse_policy('name = "x"\nversion = 1\n', format="toml", source="broken.toml")
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"  {problem}")

    # Explain: the policy in plain words.
    print()
    print(explain_policy(policy))

    # Run: the honest persona on simulated channels, delays shortened tenfold.
    persona = get_persona("honest")
    speed = 0.1
    channels = simulated_channels(persona, speed=speed)
    async with Verifier(policy, channels=channels) as verifier:
        session = await play(verifier, persona, speed=speed)
    if session.verdict is not None:
        print()
        print(session.verdict.explain())


if __name__ == "__main__":
    asyncio.run(main())
