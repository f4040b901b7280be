"""A credit report pulled through one replica is reused by another, on every store."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from multiverify import Applicant, Consent, Policy, ResultStatus, Step, Verifier
from multiverify.channels import CreditBureauChannel
from multiverify.stores import SessionStore
from multiverify.testing import FakeBureauProvider, FakeClock

T0 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)


async def test_two_replicas_pull_once(
    store: SessionStore, applicant: Applicant
) -> None:
    """Two verifiers on one store (memory, SQLite, PostgreSQL, Redis): one pull, then reuse."""
    who = attrs.evolve(applicant, consents=[Consent(reference="c-1")])
    policy = Policy(
        name="p",
        version="1",
        steps=[
            Step(
                id="bureau",
                channel="credit_bureau",
                options={"purpose": "loan_approval"},
            )
        ],
    )
    clock = FakeClock(T0)
    pulls = []
    results = []
    for _ in range(2):
        provider = FakeBureauProvider()
        pulls.append(provider)
        bureau = CreditBureauChannel([provider], secret=b"k" * 32)
        async with Verifier(
            policy, channels=[bureau], store=store, clock=clock
        ) as replica:
            session = await replica.start(who)
            await replica.wait(session.session_id)
            results.append(
                (await replica.get(session.session_id)).step("bureau").result
            )
    assert [len(p.requests) for p in pulls] == [1, 0]
    assert [r.status for r in results] == [ResultStatus.PASSED] * 2
    assert [r.facts["reused"] for r in results] == [False, True]
