"""The worker loop: fires due timers and resumes orphaned effects, from any replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Self

from ._duration import parse_duration
from ._sweep import Sweeper
from .exceptions import ConfigurationError, StoreUnavailableError

if TYPE_CHECKING:
    from ._verifier import Verifier
    from .stores import DueTimer

__all__ = ["Worker"]

log = logging.getLogger("multiverify")


class Worker:
    """Fires the store's due timers and resumes effects nobody runs any more, on any replica.

    Run one (or several, on several replicas) beside the app. Every effect
    is saved claimed by the Verifier that saved it, which renews the claim
    (every third of its ``lease``) while it runs the effect; each round the
    worker claims, in one atomic call, a batch of pending effects whose
    claim lapsed (their replica died, or stopped) and resumes them, then
    fires the due timers, each under its session's lease. So an effect that
    takes long (a slow SMS vendor) is never resumed while its replica still
    runs it. Effects carry their idempotency key, so the channels take up
    what an earlier run began. Every ``sweep_interval`` it also deletes the
    store's lapsed shared state
    ([`sweep_expired`][multiverify.stores.SharedState.sweep_expired]: SMS
    send ledger entries, quota entries past their window, expired locks and
    cached reports), beside the rounds.

    Use it as a task inside the app::

        async with Worker(verifier):
            ...  # serve requests

    or run it alone with ``multiverify worker --store URL --app module:factory``.

    Args:
        verifier: the Verifier whose store, channels and policies do the work.
        poll_interval: seconds between rounds that found nothing to do.
        effect_grace: seconds past the end of an effect's claim before it is
            taken over here (room for clock skew between replicas).
        batch: due timers, and effects, taken per round.
        concurrency: effects resumed here at once (and timers fired at once).
        max_backoff: the longest pause, in seconds, after the store could
            not be reached (the pause doubles from ``poll_interval``).
        stop_grace: seconds [`stop`][multiverify.Worker.stop] lets resumed
            effects finish before it cancels them and gives their claims back.
        max_timer_backoff: the longest delay, in seconds, by which a due
            timer whose firing failed is moved later (the delay doubles from
            ``poll_interval`` with each failure in a row here), so that a
            timer that keeps failing does not hold up those due after it.
            Added in 0.1.
        sweep_interval: seconds between sweeps of lapsed shared state, by
            the Verifier's clock; the first round sweeps. Added in 0.1.

    Raises:
        ConfigurationError: an interval or count is not positive.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        poll_interval: float | timedelta = 1.0,
        effect_grace: float | timedelta = 0.0,
        batch: int = 100,
        concurrency: int = 8,
        max_backoff: float | timedelta = 30.0,
        stop_grace: float | timedelta = 10.0,
        max_timer_backoff: float | timedelta = 300.0,
        sweep_interval: float | timedelta = 600.0,
    ) -> None:
        self._verifier = verifier
        self._poll = parse_duration(poll_interval)
        self._grace = timedelta(seconds=parse_duration(effect_grace))
        self._max_backoff = parse_duration(max_backoff)
        self._stop_grace = parse_duration(stop_grace)
        self._max_timer_backoff = parse_duration(max_timer_backoff)
        if (
            min(self._poll, self._max_backoff, self._max_timer_backoff) <= 0
            or batch < 1
            or concurrency < 1
        ):
            raise ConfigurationError(
                message="poll_interval, max_backoff, max_timer_backoff, batch and "
                f"concurrency must be positive: {poll_interval!r}, {max_backoff!r}, "
                f"{max_timer_backoff!r}, {batch!r}, {concurrency!r}"
            )
        self._batch = batch
        self._limit = concurrency
        self._concurrency = asyncio.Semaphore(concurrency)
        self._resumed: set[asyncio.Task[None]] = set()
        # Failures in a row of the due timers whose firing failed here.
        self._timer_failures: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._sweeper = Sweeper(
            verifier.store,
            sweep_interval,
            who=f"worker {verifier._leases.owner}",  # noqa: SLF001
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<multiverify.Worker({state}, owner={self.owner!r})>"

    @property
    def owner(self) -> str:
        """The id this worker's leases carry (the Verifier's)."""
        return self._verifier._leases.owner  # noqa: SLF001 - one runtime

    @property
    def stop_grace(self) -> float:
        """Seconds `stop` lets resumed effects finish before handing them back."""
        return self._stop_grace

    @property
    def running(self) -> bool:
        """Whether the loop runs as a task (started by `start` or ``async with``)."""
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Run the loop as a task of the running event loop (idempotent)."""
        if not self.running:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Stop the loop, within a bound (idempotent).

        Effects it resumed get ``stop_grace`` seconds (real time) to finish;
        those still running then are cancelled: they stay pending in the
        store and their claims are given back, so another worker takes them
        at once. Timers being fired are cancelled at once (their leases are
        given back; a timer not fired stays due).
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sweeper.stop()
        resumed = {each for each in self._resumed if not each.done()}
        if resumed:
            _, late = await asyncio.wait(resumed, timeout=self._stop_grace)
            for each in late:
                self._verifier._abandon(each)  # noqa: SLF001 - one runtime
            await asyncio.gather(*late, return_exceptions=True)

    async def run(self) -> None:
        """Work round after round until cancelled.

        A store that cannot be reached is tried again after a growing pause;
        nothing is lost, since the work stays in the store.
        """
        clock = self._verifier.clock
        pause = self._poll
        while True:
            try:
                done = await self.run_once()
            except StoreUnavailableError as exc:
                log.warning(
                    "worker %s: %s; trying again in %gs", self.owner, exc, pause
                )
                await clock.sleep(pause)
                pause = min(pause * 2, self._max_backoff)
                continue
            except Exception:
                # A bug in a channel or hook must not stop the worker: the
                # work stays in the store and the next round tries again.
                log.exception("worker %s: a round failed", self.owner)
                await clock.sleep(pause)
                pause = min(pause * 2, self._max_backoff)
                continue
            pause = self._poll
            if len(self._resumed) >= self._limit:
                await self._room()
            elif not done:
                await clock.sleep(self._poll)

    async def _room(self) -> None:
        """Wait until half the effects resumed here have ended, or ``poll_interval`` passed.

        A worker with every slot taken goes on as soon as it can claim a
        batch again, rather than a whole poll later; the poll still bounds
        the wait, so due timers are fired while slow effects run.
        """
        pause = asyncio.ensure_future(self._verifier.clock.sleep(self._poll))
        try:
            while not pause.done():
                self._resumed = {task for task in self._resumed if not task.done()}
                if len(self._resumed) <= self._limit // 2:
                    return
                await asyncio.wait(
                    {pause, *self._resumed}, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            pause.cancel()

    async def run_once(self) -> int:
        """One round: resume effects whose claim lapsed, fire due timers; return how many.

        Effects are claimed only as many as can run here now
        (``concurrency`` less those still running from earlier rounds);
        they run on as tasks of the Verifier after the round.

        Raises:
            StoreUnavailableError: the store could not be reached.
        """
        verifier = self._verifier
        store = verifier.store
        now = verifier.clock.now()
        self._resumed = {task for task in self._resumed if not task.done()}
        room = min(self._batch, self._limit - len(self._resumed))
        done = 0
        if room > 0:
            claimed = await store.claim_effects(
                self.owner,
                at=now - self._grace,
                until=verifier._claim().until,  # noqa: SLF001 - one runtime
                limit=room,
            )
            for pending in claimed:
                key = (pending.session_id, pending.effect.effect_id)
                if key in verifier._inflight:  # noqa: SLF001 - running here already
                    continue
                log.info("resuming effect %s of session %s", key[1], pending.session_id)
                task = verifier._resume_effect(  # noqa: SLF001
                    pending.session_id, pending.effect, pending.session
                )
                self._resumed.add(task)
                done += 1
        timers = await store.due_timers(now, limit=self._batch)
        if timers:
            fired = await asyncio.gather(*(self._fire(timer) for timer in timers))
            done += sum(fired)
        self._sweeper.due(now)
        return done

    async def _fire(self, timer: DueTimer) -> bool:
        key = (timer.session_id, timer.timer_id)
        async with self._concurrency:
            try:
                fired = await self._verifier._try_fire(*key)  # noqa: SLF001
            except Exception:  # whatever the cause, the timer waits
                failures = self._timer_failures[key] = (
                    self._timer_failures.get(key, 0) + 1
                )
                # Doubling from poll_interval; the exponent is bounded so
                # the float cannot overflow.
                delay = min(
                    self._poll * 2.0 ** min(failures - 1, 64), self._max_timer_backoff
                )
                log.exception(
                    "worker %s: timer %s of session %s failed (%d in a row); "
                    "moved %gs later",
                    self.owner,
                    timer.timer_id,
                    timer.session_id,
                    failures,
                    delay,
                )
                await self._postpone(timer, delay)
                return False
        self._timer_failures.pop(key, None)
        return fired

    async def _postpone(self, timer: DueTimer, delay: float) -> None:
        """Move a timer whose firing failed ``delay`` seconds later, so those due after it fire.

        Only the timer as it was read, in one compare-and-set: one moved,
        cancelled or fired since (by a save of its session) is left as it is.
        """
        due_at = self._verifier.clock.now() + timedelta(seconds=delay)
        if not await self._verifier.store.move_timer(
            timer.session_id, timer.timer_id, due_at, expected=timer.due_at
        ):
            del self._timer_failures[timer.session_id, timer.timer_id]
