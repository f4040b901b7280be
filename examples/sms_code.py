"""The SMS one-time-code channel, offline: a wrong code, a resend, the right code, limits.

The channel sends through Twilio's Messages API as simulated by the sandbox
(``SandboxSms``); the script reads the texts from its inbox as the applicant
would read their phone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import date

from multiverify import Applicant, LoanApplication, Policy, Rule, Step, Verifier
from multiverify.channels import (
    RateLimit,
    SmsCodeChannel,
    SmsCodeSettings,
    SmsLimits,
    SmsSent,
)
from multiverify.exceptions import PhoneNumberRefusedError, QuotaExceededError
from multiverify.sandbox import SandboxSms
from multiverify.testing import FakeClock

policy = Policy(
    name="sms-only",
    version="1",
    steps=[Step(id="sms", channel="sms_code", timeout="15m")],
    rules=[Rule(outcome="approved", when="steps.sms.status == 'passed'", reason="phone.confirmed")],
    default="rejected",
)  # fmt: skip

applicant = Applicant(
    applicant_id="a-1001",
    name="Zhang San",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    locale="zh-CN",
    client_ip="198.51.100.7",
    loan=LoanApplication(amount="5000", currency="CNY", term_months=12, purpose="laptop"),
)  # fmt: skip


async def report(sent: SmsSent) -> None:
    print(
        f"  sent #{sent.send} via {sent.provider} to {sent.destination}: "
        f"{sent.encoding.value}, {sent.segments} segment(s), cost {sent.cost:.3f}"
    )


async def main() -> None:
    clock = FakeClock()  # time moves only when the script says so
    phone = SandboxSms(clock=clock)
    channel = SmsCodeChannel(
        [phone.provider()],
        # The same secret on every replica, kept like any other credential.
        secret=os.environ.get("SMS_CODE_SECRET") or secrets.token_hex(32),
        brand="Acme Finance",
        settings=SmsCodeSettings(ttl="5m", resend_cooldown="60s", max_attempts=5),
        limits=SmsLimits(
            per_phone=[RateLimit(limit=5, window="1h")],
            prices={"sandbox-sms": 0.045},  # CNY per segment
            session_spend=0.5,
        ),
        on_send=[report],
    )

    # Numbers are checked before anything is sent.
    try:
        channel.check_number("+19005550123")
    except PhoneNumberRefusedError as exc:
        print("Refused before any send:", exc, f"({exc.reason})")

    async with Verifier(policy, channels=[channel], clock=clock) as verifier:
        session = await verifier.start(applicant)
        challenge = await verifier.challenge(session.session_id, "sms")
        print("The app shows:", challenge.message, "->", challenge.destination)
        print("The phone shows:", phone.inbox(applicant.phone)[-1].body)

        session = await verifier.submit(session.session_id, "sms", {"code": "000000"})
        after = session.step("sms").challenge
        print("After a wrong code:", after.message if after else "-")

        try:
            await verifier.submit(session.session_id, "sms", {"action": "resend"})
        except QuotaExceededError as exc:
            print("Resend refused:", exc.quota, "until", exc.retry_at)
        await clock.advance(60)
        await verifier.submit(session.session_id, "sms", {"action": "resend"})

        # Full-width digits and spaces, as some keyboards type them, are normalised.
        code = phone.latest_code(applicant.phone) or ""
        typed = " ".join(chr(0xFF10 + int(digit)) for digit in code)
        await verifier.submit(session.session_id, "sms", {"code": typed})
        verdict = await verifier.wait(session.session_id)
    await channel.aclose()
    print(verdict.explain())


if __name__ == "__main__":
    asyncio.run(main())
