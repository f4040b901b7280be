"""The webhook app in front of a Verifier: a code typed into the app's page, vendor callbacks, a forgery.

`multiverify.asgi.create_app` mounts the vendors' webhook routes and the
applicant's code-submission route. Here it runs in process through httpx's
ASGI transport (in production: `uvicorn yourapp:app`, behind the proxy at
`PUBLIC`). Needs the `asgi` extra; runs offline in a second.
"""

from __future__ import annotations

import asyncio
from datetime import date
from urllib.parse import urlencode

import httpx

from multiverify import Applicant, LoanApplication, Policy, Rule, Step, Verifier
from multiverify.asgi import create_app
from multiverify.testing import Scripted, ScriptedChannel
from multiverify.webhooks import TwilioMessageStatus, TwilioSignature, twilio_signature

PUBLIC = "https://verify.lender.example"  # where Twilio calls us
TOKEN = "twilio-auth-token"  # noqa: S105 - an example's own

POLICY = Policy(
    name="sms-only",
    version="1",
    steps=[Step(id="sms", channel="sms_code", timeout="5m")],
    rules=[
        Rule(
            outcome="approved",
            when="steps.sms.status == 'passed'",
            reason="phone.confirmed",
        )
    ],
)

APPLICANT = Applicant(
    applicant_id="A-1001",
    name="Wang Fang",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(amount="8000", currency="CNY", term_months=12, purpose="x"),
)


async def main() -> None:
    # The SMS step waits for a code; any code passes (a real SmsCodeChannel checks it).
    sms = ScriptedChannel("sms_code", [Scripted.waits(Scripted.passes())])
    async with Verifier(POLICY, channels=[sms]) as verifier:
        app = create_app(
            verifier,
            webhooks=[TwilioMessageStatus(TwilioSignature(TOKEN))],
            public_base_url=PUBLIC,
        )
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://10.0.0.5:8000"
        ) as http:
            session = await verifier.start(APPLICANT)
            await verifier.challenge(session.session_id, "sms")
            sid = session.session_id

            # Twilio reports the SMS delivered; the callback is signed over the public URL.
            query = urlencode({"session_id": sid, "step_id": "sms", "attempt": "1"})
            form = [("MessageSid", "SM1"), ("MessageStatus", "delivered")]
            signature = twilio_signature(
                TOKEN, f"{PUBLIC}/webhooks/twilio-sms?{query}", form
            )
            forged = await http.post(
                f"/webhooks/twilio-sms?{query}",
                headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
                data=dict(form),
            )
            print(f"forged receipt: {forged.status_code} {forged.json()}")

            # The applicant types the code into the lending app's page.
            typed = await http.post(
                f"/sessions/{sid}/steps/sms/submit", json={"code": "428913"}
            )
            print(f"code submitted: {typed.status_code} {typed.json()}")

            # A genuine receipt after the step ended is acknowledged and audited.
            late = await http.post(
                f"/webhooks/twilio-sms?{query}",
                headers={"X-Twilio-Signature": signature},
                data=dict(form),
            )
            print(f"late receipt: {late.status_code}")
        verdict = await verifier.wait(sid)
        print(f"verdict: {verdict.outcome.value}")
        trail = await verifier.store.audit_events(sid)
        print(f"audit trail ends with: {trail[-1].kind}")


if __name__ == "__main__":
    asyncio.run(main())
