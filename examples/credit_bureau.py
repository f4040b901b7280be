"""Credit-bureau lookups on the sandbox bureau: every bureau persona, a refused pull, a reused report.

The real `CreditBureauChannel` and `HttpBureau` adapter (OAuth2 token, the
`cn-credit-gateway` preset's request template and response mapping) run
against `SandboxBureau`, which answers the wire format in memory. Runs
offline in about a second.
"""

from __future__ import annotations

import asyncio

import attrs

from multiverify import Consent, Policy, Rule, Step, Verifier
from multiverify.sandbox import BUREAU_PERSONAS, SandboxBureau, get_persona
from multiverify.stores import MemoryStore

POLICY = Policy(
    name="bureau-check",
    version="1",
    steps=[
        Step(id="bureau", channel="credit_bureau", options={"purpose": "loan_approval"})
    ],
    rules=[
        Rule(
            outcome="rejected",
            when="steps.bureau.signals.exists(s, s in "
            "['fraud_alert', 'identity_mismatch', 'security_freeze'])",
            reason="bureau.blocking",
        ),
        Rule(
            outcome="review",
            when="'many_recent_inquiries' in steps.bureau.signals",
            reason="bureau.many_inquiries",
        ),
        Rule(
            outcome="approved",
            when="steps.bureau.status == 'passed'",
            reason="bureau.clean",
        ),
    ],
    default="review",
)

# The applicant consented to a pull for loan approval (the app keeps the document).
APPLICANT = attrs.evolve(
    get_persona("honest").applicant,
    consents=[Consent(reference="consent-2026-0042", purposes=("loan_approval",))],
)


async def look_up(persona: str) -> None:
    """One applicant whose file reads as ``persona``."""
    async with (
        SandboxBureau(persona=persona) as bureau,
        Verifier(POLICY, channels=[bureau.channel()]) as verifier,
    ):
        session = await verifier.start(APPLICANT)
        verdict = await verifier.wait(session.session_id)
        result = (await verifier.get(session.session_id)).step("bureau").result
        if result is None:
            raise SystemExit("the bureau step has no result")
        signals = ", ".join(result.signal_names) or "none"
        score = "-" if result.score is None else f"{result.score:.2f}"
        print(
            f"{persona:>17}: {result.status.value:<12} score {score:<5} "
            f"signals: {signals:<38} -> {verdict.outcome.value}"
        )


async def refused_without_consent() -> None:
    """No consent on record: the step errors and no request reaches the bureau."""
    async with (
        SandboxBureau() as bureau,
        Verifier(POLICY, channels=[bureau.channel()]) as verifier,
    ):
        session = await verifier.start(attrs.evolve(APPLICANT, consents=()))
        await verifier.wait(session.session_id)
        result = (await verifier.get(session.session_id)).step("bureau").result
        if result is None or bureau.pulls:
            raise SystemExit("a pull left without consent")
        print(f"   without consent: {result.status.value} ({result.detail[:60]}...)")


async def reused_across_replicas() -> None:
    """Two replicas on one store: the second session reuses the first one's report."""
    store = MemoryStore()
    bureau = SandboxBureau()
    for replica in ("replica 1", "replica 2"):
        async with Verifier(
            POLICY, channels=[bureau.channel()], store=store
        ) as verifier:
            session = await verifier.start(APPLICANT)
            await verifier.wait(session.session_id)
            result = (await verifier.get(session.session_id)).step("bureau").result
            if result is None:
                raise SystemExit("the bureau step has no result")
            print(
                f"   {replica}: report {result.facts['report_id']} reused={result.facts['reused']}"
            )
    if len(bureau.pulls) != 1:
        raise SystemExit(f"expected one pull, the bureau saw {len(bureau.pulls)}")
    await bureau.aclose()


async def main() -> None:
    for persona in BUREAU_PERSONAS:
        await look_up(persona)
    await refused_without_consent()
    await reused_across_replicas()


if __name__ == "__main__":
    asyncio.run(main())
