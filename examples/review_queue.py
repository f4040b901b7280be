"""Manual review, offline: a thin credit file sends the case to a person, who asks for a video sign and approves."""

from __future__ import annotations

import asyncio
from datetime import date

from multiverify import (
    Applicant,
    LoanApplication,
    Policy,
    ReviewEvent,
    ReviewQueue,
    ReviewSettings,
    Rule,
    Session,
    Step,
    Verifier,
)
from multiverify.stores import SqliteStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

policy = Policy(
    name="consumer-loan",
    version="2026-12",
    steps=[Step(id="bureau", channel="credit_bureau", timeout="10s")],
    rules=[
        Rule(outcome="rejected", when="'fraud_alert' in steps.bureau.signals", reason="bureau.fraud_alert"),
        Rule(outcome="approved", when="steps.bureau.status == 'passed'", reason="bureau.clear"),
        Rule(outcome="review", when="'thin_file' in steps.bureau.signals", reason="bureau.thin_file"),
    ],
    review=ReviewSettings(
        sla="4h",
        fallback_after="24h",
        fallback="rejected",
        approve_reasons=["identity_confirmed"],
        reject_reasons=["fraud_suspected"],
        evidence=[Step(id="video", channel="video_sign", timeout="8h")],
    ),
)  # fmt: skip

channels = [
    ScriptedChannel("credit_bureau", [Scripted.ends("inconclusive", signals=["thin_file"])]),
    ScriptedChannel("video_sign", [Scripted.waits(Scripted.passes(score=0.93), kind="video_session", url="https://video.example/s/1")]),
]  # fmt: skip

applicant = Applicant(
    applicant_id="a-2001",
    name="Chen Jing",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="8000", currency="CNY", term_months=12, purpose="tuition"
    ),
)


async def main() -> None:
    clock = FakeClock()

    async def notify(session: Session, event: ReviewEvent) -> None:
        print(
            f"  [app] case {session.session_id[:8]} {event.kind}, priority {event.priority}"
        )

    async with SqliteStore(":memory:") as store:
        verifier = Verifier(
            policy, channels=channels, store=store, clock=clock, on_review=[notify]
        )
        async with verifier:
            session = await verifier.start(applicant)
            await verifier.wait_idle()
            queue = ReviewQueue(verifier)

            case = await queue.claim("alice")
            if case is None:
                raise SystemExit("nothing to review")
            print(
                "alice claimed",
                case.session_id[:8],
                "because",
                ", ".join(case.reason_codes),
            )
            await queue.request_evidence(case.session_id, "alice", "video")
            challenge = await verifier.challenge(session.session_id, "video")
            print("the app sends the applicant to", challenge.url)

            await clock.advance(5 * 3600)  # the applicant takes a while; the SLA passes
            await verifier.submit(session.session_id, "video", {"signed": True})
            await verifier.wait_idle()

            [back] = await queue.pending()
            print(
                "back in the queue at priority",
                back.priority,
                "with",
                [s.step_id for s in back.steps],
            )
            verdict = await queue.decide(
                back.session_id,
                "bob",
                outcome="approved",
                reason="identity_confirmed",
                note="video matches the ID photo",
            )
    print()
    print(verdict.explain())


if __name__ == "__main__":
    asyncio.run(main())
