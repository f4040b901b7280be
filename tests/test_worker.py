"""Tests for the Worker: due timers and orphaned effects, leased per session."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs
import pytest

from multiverify import Applicant, LoanApplication, Policy, Step, Verifier, Worker
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    StoreUnavailableError,
)
from multiverify.stores import MemoryStore, PendingEffect
from multiverify.testing import FakeClock, Scripted, ScriptedChannel
from stores.interleaved import Interleaved
from stores.severable import Severable
from stores.sweeps import Sweeps

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)  # where a FakeClock starts

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


async def timed_out(
    store: MemoryStore, clock: FakeClock, *applicants: Applicant
) -> list[str]:
    """Sessions whose SMS timeout is due, their replica gone (a second apart, in order)."""
    first = replica(store, clock)
    started = []
    for n, each in enumerate(applicants):
        if n:
            await clock.advance(1)
        started.append((await first.start(each)).session_id)
    await first.wait_idle()
    await first.aclose()
    await clock.advance(31)
    return started


class Crash(BaseException):
    """The process died (nothing in the SDK catches a BaseException)."""


class DiesAfterFiring(MemoryStore):
    """A store whose process dies, while ``dying``, right after saving a timer's firing."""

    dying = False

    async def save(self, session: Any, **kwargs: Any) -> int:
        version = await super().save(session, **kwargs)
        if self.dying and kwargs.get("fired_timer") is not None:
            raise Crash
        return version


class LoadCounting(MemoryStore):
    """A MemoryStore that counts the sessions loaded from it."""

    loads = 0

    async def load(self, session_id: str, /) -> tuple[Any, int]:
        self.loads += 1
        return await super().load(session_id)


class ClaimsWithoutSessions(MemoryStore):
    """A store (written outside multiverify, say) whose claimed effects come without their sessions."""

    async def claim_effects(
        self, owner: str, /, *, at: Any, until: Any, limit: int = 100
    ) -> list[PendingEffect]:
        claimed = await super().claim_effects(owner, at=at, until=until, limit=limit)
        return [attrs.evolve(pending, session=None) for pending in claimed]


class BareLoadCounting(ClaimsWithoutSessions, LoadCounting):
    """Counts loads, and claims effects without their sessions."""


class SlowFirstLoad(ClaimsWithoutSessions):
    """A MemoryStore whose first load reads the session when called but answers only once let go."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.release = asyncio.Event()
        self.conflicts = 0

    async def load(self, session_id: str, /) -> tuple[Any, int]:
        self.loads += 1
        read = await super().load(session_id)
        if self.loads == 1:
            await self.release.wait()
        return read

    async def save(self, session: Any, **kwargs: Any) -> int:
        try:
            return await super().save(session, **kwargs)
        except ConcurrentUpdateError:
            self.conflicts += 1
            raise


class DamagedSessions(MemoryStore):
    """A MemoryStore whose sessions in ``damaged`` fail to load, every time."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: set[str] = set()

    async def load(self, session_id: str, /) -> tuple[Any, int]:
        if session_id in self.damaged:
            msg = f"session {session_id} cannot be read"
            raise ValueError(msg)
        return await super().load(session_id)


class TestWorker:
    async def test_resumes_orphaned_effects_once_their_claim_lapses(
        self, applicant: Applicant
    ) -> None:
        """Effects of a replica that died are resumed once, when its claim on them lapses."""
        store, clock = MemoryStore(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        channel = bureau()
        async with replica(store, clock, channel, sms()) as verifier:
            worker = Worker(verifier)
            assert await worker.run_once() == 0  # claimed by the dead replica
            await clock.advance(8)
            assert await worker.run_once() == 0
            await clock.advance(1)  # the lease, 9 seconds, is over
            assert await worker.run_once() == 2  # the bureau and the SMS starts
            await verifier.wait_idle()
            assert len(channel.starts) == 1
            assert await store.pending_effects(sid) == []
            assert await worker.run_once() == 0

    @pytest.mark.parametrize(
        ("store_type", "loads"),
        [(LoadCounting, 0), (BareLoadCounting, 2)],
        ids=["claimed-with-its-session", "claimed-without"],
    )
    async def test_a_resumed_start_reads_its_session_at_most_once(
        self, applicant: Applicant, store_type: type[LoadCounting], loads: int
    ) -> None:
        """A start claimed with its session runs from it; one claimed without loads it once; either way the save of its outcome starts from there."""
        store, clock = store_type(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        await clock.advance(9)
        async with replica(store, clock) as verifier:
            store.loads = 0
            assert await Worker(verifier).run_once() == 2
            await verifier.wait_idle()

            assert store.loads == loads  # none, or one for each of the two starts
            assert await store.pending_effects(sid) == []
            session, version = await store.load(sid)
            assert version == 3  # the outcomes of both starts, saved without a conflict
            assert {r.step_id: r.state.value for r in session.steps} == {
                "bureau": "done",
                "sms": "waiting",
            }

    async def test_a_load_older_than_a_save_here_does_not_replace_it(
        self, applicant: Applicant
    ) -> None:
        """A resumed start whose read began before another save here keeps the newer session to save from."""
        store, clock = SlowFirstLoad(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        await clock.advance(9)
        async with replica(store, clock) as verifier:
            store.loads = 0
            assert await Worker(verifier).run_once() == 2
            while store.loads < 2:  # noqa: ASYNC110 - the store counts its loads
                await asyncio.sleep(0)
            for _ in range(20):  # the second start runs and saves meanwhile
                await asyncio.sleep(0)
            store.release.set()
            await verifier.wait_idle()

            assert store.conflicts == 0
            assert await store.pending_effects(sid) == []

    async def test_effect_grace_waits_past_the_claim(
        self, applicant: Applicant
    ) -> None:
        """``effect_grace`` adds room for clock skew after a claim's end."""
        store, clock = MemoryStore(), FakeClock()
        await orphaned(store, clock, applicant)
        async with replica(store, clock) as verifier:
            worker = Worker(verifier, effect_grace=5)
            await clock.advance(13)
            assert await worker.run_once() == 0
            await clock.advance(1)
            assert await worker.run_once() == 2
            await verifier.wait_idle()

    async def test_claims_only_what_it_can_run(self, applicant: Applicant) -> None:
        """A round claims no more effects than ``concurrency`` leaves room for; the rest stay free."""
        store, clock = MemoryStore(), FakeClock()
        for _ in range(3):
            await orphaned(store, clock, applicant)
        await clock.advance(9)
        slow = [
            ScriptedChannel(name, [Scripted.passes(delay=20)])
            for name in ("credit_bureau", "sms_code")
        ]
        async with replica(store, clock, *slow) as verifier:
            worker = Worker(verifier, concurrency=4)
            assert await worker.run_once() == 4
            await asyncio.sleep(0)
            assert await worker.run_once() == 0  # four still run
            free = [
                p for p in await store.pending_effects() if not p.claimed(clock.now())
            ]
            assert len(free) == 2
            await clock.advance(20)
            await verifier.wait_idle()
            assert await worker.run_once() == 2

    async def test_a_full_worker_claims_again_as_soon_as_effects_end(
        self, applicant: Applicant
    ) -> None:
        """With every slot taken, the next batch is claimed when half end, not a poll later."""
        store, clock = MemoryStore(), FakeClock()
        for _ in range(6):
            await orphaned(store, clock, applicant)  # two effects each
        await clock.advance(9)
        slow = [
            ScriptedChannel(name, [Scripted.passes(delay=1)])
            for name in ("credit_bureau", "sms_code")
        ]
        async with (
            replica(store, clock, *slow) as verifier,
            Worker(verifier, concurrency=4, poll_interval=60),
        ):
            waited = 0
            while await store.pending_effects() and waited < 60:
                await clock.advance(1)
                for _ in range(20):
                    await asyncio.sleep(0)
                waited += 1
        # Twelve effects of a second each, four at a time: three seconds (a
        # worker waiting out its poll would take a minute per batch).
        assert waited <= 4
        assert await store.pending_effects() == []

    async def test_a_slow_effect_is_left_to_its_replica_until_it_dies(
        self, applicant: Applicant
    ) -> None:
        """An effect slower than the lease, renewed by its replica, is not run twice; once the replica dies, it is resumed."""
        store, clock = MemoryStore(), FakeClock()
        slow = ScriptedChannel("credit_bureau", [Scripted.passes(delay=600)])
        view = Severable(store)
        running = Verifier(
            POLICY,
            channels=[slow, sms()],
            store=view,  # type: ignore[arg-type]
            clock=clock,
            lease=9,
        )
        started = await running.start(applicant)
        fast = bureau()
        async with replica(store, clock, fast, sms()) as elsewhere:
            worker = Worker(elsewhere)
            for _ in range(60):
                await clock.advance(1)
                assert await worker.run_once() == 0
            assert (len(slow.starts), len(fast.starts)) == (1, 0)
            view.dead = True  # its last renewal holds the claim 9 seconds more
            resumed = 0
            for _ in range(12):
                await clock.advance(1)
                resumed += await worker.run_once()
            assert resumed == 1
            await elsewhere.wait_idle()
            assert len(fast.starts) == 1
            session = await elsewhere.get(started.session_id)
            assert session.step("bureau").result is not None
            assert session.step("bureau").result.status.value == "passed"
        await running.aclose()

    async def test_stop_gives_back_what_does_not_finish_in_time(
        self, applicant: Applicant
    ) -> None:
        """``stop`` waits ``stop_grace`` for resumed effects, then cancels them; they stay pending, free to claim."""
        store, clock = MemoryStore(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        await clock.advance(9)
        slow = ScriptedChannel("credit_bureau", [Scripted.passes(delay=600)])
        async with replica(store, clock, slow, sms()) as verifier:
            worker = Worker(verifier, stop_grace=0.01)
            worker.start()
            for _ in range(100):
                if slow.starts:
                    break
                await asyncio.sleep(0)
            await worker.stop()
            pending = await store.pending_effects(sid)
            assert [type(p.effect).__name__ for p in pending] == ["StartStep"]
            assert not pending[0].claimed(clock.now())
            assert (await verifier.get(sid)).step("sms").state.value == "waiting"

    async def test_fires_a_due_timer_once(self, applicant: Applicant) -> None:
        """A due timer of a dead replica's session fires on the worker, once."""
        store, clock = MemoryStore(), FakeClock()
        [sid] = await timed_out(store, clock, applicant)
        async with replica(store, clock) as verifier:
            worker = Worker(verifier)
            assert await worker.run_once() == 1
            session = await verifier.get(sid)
            assert session.step("sms").result is not None
            assert session.step("sms").result.status.value == "timeout"
            assert await worker.run_once() == 0

    async def test_a_timer_fires_once_even_if_its_replica_dies_after_saving(
        self, applicant: Applicant
    ) -> None:
        """The save recording a timer's firing removes the timer: a crash right after it leaves nothing to fire again."""
        store, clock = DiesAfterFiring(), FakeClock()
        [sid] = await timed_out(store, clock, applicant)
        store.dying = True
        dying = replica(store, clock)
        with pytest.raises(Crash):
            await Worker(dying).run_once()
        store.dying = False
        fired, version = await store.load(sid)
        assert fired.step("sms").result is not None
        assert await store.timers(sid) == []
        async with replica(store, clock) as verifier:
            assert await Worker(verifier).run_once() == 0
            assert (await store.load(sid))[1] == version

    async def test_a_timer_of_a_session_leased_elsewhere_waits(
        self, applicant: Applicant
    ) -> None:
        """Another replica's live lease on a session keeps the worker off its timers until it lapses."""
        store, clock = MemoryStore(), FakeClock()
        [sid] = await timed_out(store, clock, applicant)
        await store.put_value(f"lease:session:{sid}", "someone", at=clock.now(), ttl=20)
        async with replica(store, clock) as verifier:
            worker = Worker(verifier)
            assert await worker.run_once() == 0
            assert (await verifier.get(sid)).step("sms").result is None
            await clock.advance(21)  # tried again once the lease lapsed
            await worker.run_once()
            await verifier.wait_idle()
            assert (await verifier.get(sid)).step("sms").result is not None
            assert await store.timers(sid) == []
            assert await store.get_value(f"lease:session:{sid}", at=clock.now()) is None

    async def test_a_timer_that_keeps_failing_backs_off(
        self, applicant: Applicant, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A due timer whose firing keeps failing is moved later by a growing delay and logged with its session; timers due after it fire."""
        store, clock = DamagedSessions(), FakeClock()
        other = attrs.evolve(applicant, applicant_id="a2")
        bad, good = await timed_out(store, clock, applicant, other)
        store.damaged.add(bad)
        async with replica(store, clock) as verifier:
            worker = Worker(verifier, batch=1, poll_interval=1, max_timer_backoff=4)
            with caplog.at_level(logging.ERROR, "multiverify"):
                assert await worker.run_once() == 0
            assert f"of session {bad} failed" in caplog.text
            [moved] = await store.timers(bad)
            assert moved.due_at == clock.now() + timedelta(seconds=1)

            assert await worker.run_once() == 1  # the next timer in line
            await verifier.wait_idle()
            assert await store.timers(good) == []
            delays = []
            for _ in range(4):
                await clock.advance((moved.due_at - clock.now()).total_seconds())
                assert await worker.run_once() == 0
                [moved] = await store.timers(bad)
                delays.append((moved.due_at - clock.now()).total_seconds())
            assert delays == [2, 4, 4, 4]  # doubling, up to max_timer_backoff

            store.damaged.clear()
            await clock.advance(4)
            assert await worker.run_once() == 1
            await verifier.wait_idle()
            assert await store.timers(bad) == []

    async def test_a_failing_timer_moved_meanwhile_is_left_alone(
        self, applicant: Applicant
    ) -> None:
        """A timer that failed, then was moved by a save just before the worker moves it, keeps the save's time."""
        store, clock = DamagedSessions(), FakeClock()
        [sid] = await timed_out(store, clock, applicant)
        store.damaged.add(sid)
        [timer] = await store.timers(sid)
        later = clock.now() + timedelta(hours=1)
        view = Interleaved(store, "schedule_timer", "move_timer")
        view.before = lambda: store.schedule_timer(sid, timer.timer_id, later)
        async with replica(view, clock) as verifier:
            assert await Worker(verifier).run_once() == 0

        assert await store.timers(sid) == [attrs.evolve(timer, due_at=later)]

    async def test_runs_as_a_task_until_stopped(self, applicant: Applicant) -> None:
        """``async with`` runs the loop; it polls on the clock and stops cleanly."""
        store, clock = MemoryStore(), FakeClock()
        sid = await orphaned(store, clock, applicant)
        async with replica(store, clock) as verifier:
            async with Worker(verifier, poll_interval=1) as worker:
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
            Worker(verifier, poll_interval=1, max_backoff=2),
        ):
            while await store.pending_effects(sid):
                await clock.advance(1)
                await asyncio.sleep(0)
        assert not failures
        assert "down; trying again in 1s" in caplog.text
        assert "a round failed" in caplog.text

    async def test_sweeps_lapsed_shared_values_every_interval(self) -> None:
        """The first round sweeps lapsed shared values, and a round once per sweep_interval after."""
        store, clock = Sweeps(), FakeClock()
        async with replica(store, clock) as verifier:
            worker = Worker(verifier, sweep_interval=600)
            await store.put_value("ledger:1", "{}", at=clock.now(), ttl=60)
            for _ in range(3):
                await worker.run_once()
                await asyncio.sleep(0)  # the sweep runs beside the round
                await clock.advance(300)
            await worker.stop()

        assert store.sweeps == [(T0, 0), (T0 + timedelta(seconds=600), 1)]
        assert await store.sweep_expired(at=clock.now()) == 0

    async def test_a_failed_sweep_is_logged_and_tried_next_interval(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A sweep that fails leaves the rounds alone; the next interval sweeps again."""
        store, clock = Sweeps(fail=1), FakeClock()
        caplog.set_level(logging.WARNING, logger="multiverify")
        async with replica(store, clock) as verifier:
            worker = Worker(verifier, sweep_interval=60)
            await worker.run_once()
            await asyncio.sleep(0)
            await clock.advance(60)
            await worker.run_once()
            await asyncio.sleep(0)

        assert "could not sweep lapsed shared state" in caplog.text
        assert [at for at, _ in store.sweeps] == [T0 + timedelta(seconds=60)]

    async def test_stop_ends_a_sweep_in_progress(self) -> None:
        """A sweep still running when the next is due is left alone; stopping the worker cancels it."""
        store, clock = Sweeps(hang=True), FakeClock()
        async with replica(store, clock) as verifier:
            worker = Worker(verifier, sweep_interval=60)
            await worker.run_once()
            await asyncio.sleep(0)
            first = store.hung
            await clock.advance(60)
            await worker.run_once()  # the sweep still runs: no second one
            await asyncio.sleep(0)
            await worker.stop()

        assert first is not None
        assert store.hung is first
        assert first.cancelled()

    @pytest.mark.parametrize(
        "options",
        [
            {"poll_interval": 0},
            {"batch": 0},
            {"concurrency": 0},
            {"max_backoff": 0},
            {"max_timer_backoff": 0},
            {"sweep_interval": 0},
        ],
    )
    def test_bad_settings(self, options: dict[str, Any]) -> None:
        """Intervals and counts must be positive."""
        verifier = Verifier(POLICY, channels=[bureau(), sms()])
        with pytest.raises(ConfigurationError):
            Worker(verifier, **options)
