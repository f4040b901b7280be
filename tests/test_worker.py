"""Tests for the Worker: due timers and orphaned effects, leased per session."""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Any

import pytest

from multiverify import Applicant, LoanApplication, Policy, Step, Verifier, Worker
from multiverify.exceptions import ConfigurationError, StoreUnavailableError
from multiverify.stores import MemoryStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

POLICY = Policy(
    name="p",
    version="1",
    steps=[
        Step(id="bureau", channel="credit_bureau"),
        Step(id="sms", channel="sms_code", timeout="30s"),
    ],
)


def bureau() -> ScriptedChannel:
    """A bureau that passes."""
    return ScriptedChannel("credit_bureau", [Scripted.passes()])


def sms() -> ScriptedChannel:
    """An SMS step that waits for a code nobody types."""
    return ScriptedChannel(
        "sms_code", [Scripted.waits(Scripted.passes(), expect={"code": "1"})]
    )


@pytest.fixture
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


def replica(
    store: MemoryStore, clock: FakeClock, *channels: ScriptedChannel
) -> Verifier:
    """A Verifier on the shared store."""
    return Verifier(
        POLICY,
        channels=list(channels) or [bureau(), sms()],
        store=store,
        clock=clock,
        lease=9,
    )


async def orphaned(store: MemoryStore, clock: FakeClock, applicant: Applicant) -> str:
    """A session whose replica died before running its first effects."""
    dying = replica(store, clock)
    started = await dying.start(applicant)
    await dying.aclose()  # before the spawned effects got to run
    return started.session_id


class TestWorker:
    async def test_resumes_orphaned_effects_after_the_grace(
        self, applicant: Applicant
    ) -> None:
        """An effect pending for ``effect_grace`` is resumed once; a fresh one is left to its replica."""
        store, clock = MemoryStore(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        channel = bureau()
        async with replica(store, clock, channel, sms()) as verifier:
            worker = Worker(verifier, effect_grace=10)
            assert await worker.run_once() == 0  # first seen
            await clock.advance(10)
            assert await worker.run_once() == 2  # the bureau and the SMS starts
            await verifier.wait_idle()
            assert len(channel.starts) == 1
            assert await store.pending_effects(sid) == []
            assert await worker.run_once() == 0

    async def test_fires_a_due_timer_once(self, applicant: Applicant) -> None:
        """A due timer of a dead replica's session fires on the worker, once."""
        store, clock = MemoryStore(), FakeClock()
        first = replica(store, clock)
        started = await first.start(applicant)
        await first.wait_idle()
        await first.aclose()
        await clock.advance(31)
        async with replica(store, clock) as verifier:
            worker = Worker(verifier)
            assert await worker.run_once() == 1
            session = await verifier.get(started.session_id)
            assert session.step("sms").result is not None
            assert session.step("sms").result.status.value == "timeout"
            assert await worker.run_once() == 0

    async def test_a_session_leased_elsewhere_is_left_alone(
        self, applicant: Applicant
    ) -> None:
        """Another replica's live lease keeps the worker off the session until it lapses."""
        store, clock = MemoryStore(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        await store.put_value(f"lease:session:{sid}", "someone", at=clock.now(), ttl=20)
        async with replica(store, clock) as verifier:
            worker = Worker(verifier, effect_grace=0)
            assert await worker.run_once() == 0
            await clock.advance(21)
            assert await worker.run_once() == 2
            await verifier.wait_idle()
            assert await store.get_value(f"lease:session:{sid}", at=clock.now()) is None

    async def test_runs_as_a_task_until_stopped(self, applicant: Applicant) -> None:
        """``async with`` runs the loop; it polls on the clock and stops cleanly."""
        store, clock = MemoryStore(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        async with replica(store, clock) as verifier:
            async with Worker(verifier, effect_grace=0, poll_interval=1) as worker:
                assert worker.running
                assert "running" in repr(worker)
                worker.start()  # idempotent
                while await store.pending_effects(sid):
                    await clock.advance(1)
                    await asyncio.sleep(0)
            assert not worker.running
            assert (
                repr(worker) == f"<multiverify.Worker(stopped, owner={worker.owner!r})>"
            )
            await worker.stop()

    async def test_an_unreachable_store_is_tried_again(
        self, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store outage, or a failing round, pauses the loop; the next round works."""
        store, clock = MemoryStore(), FakeClock()
        failures: list[BaseException] = [
            StoreUnavailableError(message="down", store="memory"),
            RuntimeError("a bug"),
        ]
        real = store.due_timers

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop(0)
            return await real(*args, **kwargs)

        store.due_timers = flaky  # type: ignore[method-assign]
        caplog.set_level(logging.WARNING, logger="multiverify")
        sid = await orphaned(store, clock, applicant)
        verifier = replica(store, clock)
        async with (
            verifier,
            Worker(verifier, effect_grace=0, poll_interval=1, max_backoff=2),
        ):
            while await store.pending_effects(sid):
                await clock.advance(1)
                await asyncio.sleep(0)
        assert not failures
        assert "down; trying again in 1s" in caplog.text
        assert "a round failed" in caplog.text

    @pytest.mark.parametrize(
        "options",
        [{"poll_interval": 0}, {"batch": 0}, {"concurrency": 0}, {"max_backoff": 0}],
    )
    def test_bad_settings(self, options: dict[str, Any]) -> None:
        """Intervals and counts must be positive."""
        verifier = Verifier(POLICY, channels=[bureau(), sms()])
        with pytest.raises(ConfigurationError):
            Worker(verifier, **options)
