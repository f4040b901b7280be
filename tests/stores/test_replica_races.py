"""Two replicas at once on PostgreSQL and Redis: one webhook, one code, one change each.

Each replica is a Verifier with a store of its own (its own connection pool)
on the same schema or prefix, as two app processes behind a load balancer
have; the requests race on the event loop and meet in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest
from severable import Severable

from multiverify import Applicant, LoanApplication, Policy, Step, Verifier, Worker
from multiverify.channels import ProviderEvent
from multiverify.exceptions import (
    ConcurrentUpdateError,
    SessionFinishedError,
)
from multiverify.stores import store_from_url
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

POLICY = Policy(
    name="p",
    version="1",
    steps=[Step(id="sms", channel="sms_code", timeout="5m")],
)
ROUNDS = 20


def channel() -> ScriptedChannel:
    """A step that takes the code ``1`` or any vendor event."""
    return ScriptedChannel(
        "sms_code", [Scripted.waits(Scripted.passes(), expect={"code": "1"})]
    )


@pytest.fixture
async def replicas(
    shared_url: str,
) -> AsyncIterator[tuple[Verifier, Verifier, ScriptedChannel, ScriptedChannel]]:
    """Two replicas on one shared store, each with its own connections."""
    stores = [store_from_url(shared_url), store_from_url(shared_url)]
    channels = [channel(), channel()]
    verifiers = [
        Verifier(POLICY, channels=[made], store=store)
        for made, store in zip(channels, stores, strict=True)
    ]
    try:
        yield verifiers[0], verifiers[1], channels[0], channels[1]
    finally:
        for verifier, store in zip(verifiers, stores, strict=True):
            await verifier.aclose()
            await store.aclose()


def applicant() -> Applicant:
    """An applicant."""
    return Applicant(
        applicant_id="a1",
        name="Li Lei",
        national_id="110101199001011234",
        phone="+8613800138000",
        date_of_birth=date(1990, 1, 1),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="5000", currency="CNY", term_months=12, purpose="phone"
        ),
    )


async def waiting(one: Verifier, two: Verifier) -> str:
    """A session started on one replica, waiting for its code, seen by the other."""
    started = await one.start(applicant())
    sid = started.session_id
    await one.challenge(sid, "sms")
    await two.challenge(sid, "sms")
    return sid


async def test_one_webhook_on_both_replicas_applies_once(
    replicas: tuple[Verifier, Verifier, ScriptedChannel, ScriptedChannel],
) -> None:
    """The same delivery reaching both replicas at once is applied by exactly one."""
    one, two, first, second = replicas
    for n in range(ROUNDS):
        sid = await waiting(one, two)
        event = ProviderEvent(
            session_id=sid, step_id="sms", kind="delivered", dedupe_key=f"evt-{n}"
        )
        results = await asyncio.gather(one.handle_event(event), two.handle_event(event))
        applied = [result for result in results if result is not None]
        assert len(applied) == 1
        session = await one.get(sid)
        assert session.verdict is not None
        events = [e for e in await one.store.audit_events(sid) if e.kind == "input"]
        assert [e.data["input"]["type"] for e in events].count("StepFinished") == 1
    handled = [m for _, m in first.messages + second.messages]
    assert len(handled) == ROUNDS


async def test_one_code_from_both_replicas_applies_once(
    replicas: tuple[Verifier, Verifier, ScriptedChannel, ScriptedChannel],
) -> None:
    """Two submissions of the code at once: one applies, the other is told to try again."""
    one, two, _, _ = replicas
    for _ in range(ROUNDS):
        sid = await waiting(one, two)
        results = await asyncio.gather(
            one.submit(sid, "sms", {"code": "1"}),
            two.submit(sid, "sms", {"code": "1"}),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(
            isinstance(r, ConcurrentUpdateError | SessionFinishedError) for r in losers
        )
        # Tried again, the loser finds the session decided: nothing applies twice.
        with pytest.raises(SessionFinishedError):
            await two.submit(sid, "sms", {"code": "1"})
        session = await one.get(sid)
        events = [e for e in await one.store.audit_events(sid) if e.kind == "input"]
        assert [e.data["input"]["type"] for e in events].count("StepFinished") == 1
        assert session.verdict is not None


async def test_a_wait_on_one_replica_sees_the_other_decide(
    replicas: tuple[Verifier, Verifier, ScriptedChannel, ScriptedChannel],
) -> None:
    """``wait`` on a replica returns when another replica decides the session."""
    one, two, _, _ = replicas
    sid = await waiting(one, two)
    waiter = asyncio.ensure_future(two.wait(sid))
    await asyncio.sleep(0)
    decided = await one.submit(sid, "sms", {"code": "1"})
    verdict = await asyncio.wait_for(waiter, timeout=10)
    assert verdict == decided.verdict


async def test_a_slow_effect_is_resumed_elsewhere_only_once_its_replica_dies(
    shared_url: str,
) -> None:
    """A start slower than the lease runs on its replica alone while it renews its claim; a worker elsewhere resumes it after the replica dies."""
    clock = FakeClock()
    stores = [store_from_url(shared_url), store_from_url(shared_url)]
    slow = ScriptedChannel("sms_code", [Scripted.passes(delay=600)])
    fast = ScriptedChannel("sms_code", [Scripted.passes()])
    view = Severable(stores[0])
    running = Verifier(
        POLICY,
        channels=[slow],
        store=view,
        clock=clock,
        lease=9,  # type: ignore[arg-type]
    )
    elsewhere = Verifier(POLICY, channels=[fast], store=stores[1], clock=clock, lease=9)
    try:
        started = await running.start(applicant())
        worker = Worker(elsewhere)
        for _ in range(40):
            await clock.advance(1)
            await running.wait_idle()  # its renewals reach the store
            assert await worker.run_once() == 0
        assert (len(slow.starts), len(fast.starts)) == (1, 0)
        view.dead = True
        resumed = 0
        for _ in range(12):
            await clock.advance(1)
            resumed += await worker.run_once()
        await elsewhere.wait_idle()
        assert resumed == 1
        assert len(fast.starts) == 1
        session = await elsewhere.get(started.session_id)
        assert session.verdict is not None
    finally:
        await running.aclose()
        await elsewhere.aclose()
        for store in stores:
            await store.aclose()
