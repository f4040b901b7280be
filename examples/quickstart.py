"""A complete verification, offline: a policy, scripted channels, one verdict."""

from __future__ import annotations

import asyncio
from datetime import date

from multiverify import Applicant, LoanApplication, Policy, Rule, Step, Verifier
from multiverify.testing import Scripted, ScriptedChannel

policy = Policy(
    name="quickstart",
    version="1",
    steps=[
        Step(id="bureau", channel="credit_bureau", timeout="10s"),
        Step(id="sms", channel="sms_code", timeout="5m"),
    ],
    rules=[
        Rule(outcome="rejected", when="'fraud_alert' in steps.bureau.signals", reason="bureau.fraud_alert"),
        Rule(outcome="approved", when="steps.bureau.status == 'passed' && steps.sms.status == 'passed'", reason="all.confirmed"),
    ],
)  # fmt: skip

channels = [
    ScriptedChannel("credit_bureau", [Scripted.passes(signals=["identity_match"], score=0.9)]),
    ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes(signals=["code_verified"]), expect={"code": "482913"}, kind="code", destination="+86*******8000")]),
]  # fmt: skip

applicant = Applicant(
    applicant_id="a-1001",
    name="Zhang San",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="5000", currency="CNY", term_months=12, purpose="laptop"
    ),
)


async def main() -> None:
    async with Verifier(policy, channels=channels) as verifier:
        session = await verifier.start(applicant)
        # The bureau answers at once; the SMS step waits for the applicant's code.
        challenge = await verifier.challenge(session.session_id, "sms")
        print("The app shows:", challenge.kind, "sent to", challenge.destination)
        await verifier.submit(session.session_id, "sms", {"code": "482913"})
        verdict = await verifier.wait(session.session_id)
    print(verdict.explain())


if __name__ == "__main__":
    asyncio.run(main())
