"""The worker loop: fires due timers and resumes orphaned effects, from any replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Self

import attrs

from ._duration import parse_duration
from .exceptions import ConfigurationError, StoreUnavailableError

if TYPE_CHECKING:
    from ._session import Effect
    from ._verifier import Verifier

__all__ = ["Worker"]

log = logging.getLogger("multiverify")


@attrs.define
class _Work:
    """What one round found to do for one session."""

    timers: list[str] = attrs.Factory(list)
    effects: list[Effect] = attrs.Factory(list)


class Worker:
    """Fires the store's due timers and resumes effects nobody finished, on any replica.

    Run one (or several, on several replicas) beside the app: each round it
    lists the due timers and the pending effects in the store, takes the
    lease of every session that has work (so one replica at a time works on
    a session, and the lease of a replica that dies lapses and its work goes
    to another), fires the timers that are still due and resumes the
    effects. An effect counts as orphaned once it has been pending for
    ``effect_grace`` seconds and is not running in this process: the replica
    that saved it normally runs it at once, so only a replica that died (or
    an effect slower than the grace) leaves one behind. Effects carry their
    idempotency key, so the channels take up what an earlier run began.

    Use it as a task inside the app::

        async with Worker(verifier):
            ...  # serve requests

    or run it alone with ``multiverify worker --store URL --app module:factory``.

    Args:
        verifier: the Verifier whose store, channels and policies do the work.
        poll_interval: seconds between rounds that found nothing to do.
        effect_grace: seconds an effect stays pending before it is resumed.
        batch: due timers taken per round.
        concurrency: sessions worked on at once.
        max_backoff: the longest pause, in seconds, after the store could
            not be reached (the pause doubles from ``poll_interval``).

    Raises:
        ConfigurationError: an interval or count is not positive.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        poll_interval: float | timedelta = 1.0,
        effect_grace: float | timedelta = 30.0,
        batch: int = 100,
        concurrency: int = 8,
        max_backoff: float | timedelta = 30.0,
    ) -> None:
        self._verifier = verifier
        self._poll = parse_duration(poll_interval)
        self._grace = timedelta(seconds=parse_duration(effect_grace))
        self._max_backoff = parse_duration(max_backoff)
        if self._poll <= 0 or self._max_backoff <= 0 or batch < 1 or concurrency < 1:
            raise ConfigurationError(
                message="poll_interval, max_backoff, batch and concurrency must be "
                f"positive: {poll_interval!r}, {max_backoff!r}, {batch!r}, {concurrency!r}"
            )
        self._batch = batch
        self._concurrency = asyncio.Semaphore(concurrency)
        self._seen: dict[tuple[str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<multiverify.Worker({state}, owner={self.owner!r})>"

    @property
    def owner(self) -> str:
        """The id this worker's leases carry (the Verifier's)."""
        return self._verifier._leases.owner  # noqa: SLF001 - one runtime

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
        """Stop the loop and give back its leases (idempotent).

        Effects it resumed keep running in the Verifier; closing the
        Verifier stops them, and what did not finish stays in the store.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
            if not done:
                await clock.sleep(self._poll)

    async def run_once(self) -> int:
        """One round: fire due timers and resume orphaned effects; return how many.

        Raises:
            StoreUnavailableError: the store could not be reached.
        """
        verifier = self._verifier
        store = verifier.store
        now = verifier.clock.now()
        work: dict[str, _Work] = {}
        for timer in await store.due_timers(now, limit=self._batch):
            work.setdefault(timer.session_id, _Work()).timers.append(timer.timer_id)
        seen: dict[tuple[str, str], datetime] = {}
        for pending in await store.pending_effects():
            key = (pending.session_id, pending.effect.effect_id)
            if key in verifier._inflight:  # noqa: SLF001 - one runtime
                continue
            first = seen[key] = self._seen.get(key, now)
            if now - first >= self._grace:
                work.setdefault(pending.session_id, _Work()).effects.append(
                    pending.effect
                )
        self._seen = seen
        if not work:
            return 0
        counts = await asyncio.gather(
            *(self._work_on(session_id, found) for session_id, found in work.items())
        )
        return sum(counts)

    async def _work_on(self, session_id: str, found: _Work) -> int:
        verifier = self._verifier
        async with (
            self._concurrency,
            verifier._leases.holding(session_id) as held,  # noqa: SLF001
        ):
            if not held:
                return 0  # another replica works on it
            done = 0
            if found.effects:
                # Listed before the lease was taken: run what is still pending.
                still = {
                    pending.effect.effect_id
                    for pending in await verifier.store.pending_effects(session_id)
                }
                for effect in found.effects:
                    if effect.effect_id not in still:
                        continue
                    log.info(
                        "resuming effect %s of session %s", effect.effect_id, session_id
                    )
                    task = verifier._resume_effect(session_id, effect)  # noqa: SLF001
                    # Shielded: stopping the worker leaves the effect to the
                    # Verifier, which keeps it pending if it closes first.
                    await asyncio.shield(task)
                    done += 1
            for timer_id in found.timers:
                done += await verifier._fire(session_id, timer_id)  # noqa: SLF001
            return done
