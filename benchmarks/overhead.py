"""How much the multiverify runtime costs on top of the provider calls it makes.

Run from the repository root (see benchmarks/README.md)::

    .venv/bin/python benchmarks/overhead.py            # N=5000, 10000 pending sessions
    .venv/bin/python benchmarks/overhead.py --quick    # a CI smoke run, a few seconds

Figures:

1. N sessions of four automatic steps, each step one HTTP request through an
   ``httpx.AsyncClient`` on a ``MockTransport``, run by the ``Verifier`` on the
   ``MemoryStore``, against a baseline doing the same 4 x N requests (and the
   same JSON parsing into a ``ChannelResult``) with bare ``asyncio.gather``.
   Goal: ratio <= 1.3 at N=5000.
1a. The decisions of figure 1 alone: each session's recorded inputs (its
   start and four results) fed to the pure core (``transition``) and the audit
   trail, one after the other, with no event loop, store or channel. This is
   the part of figure 1 that the design puts in every runtime, so figure 1's
   ratio is at least 1 plus this one. No goal; reported.
2. The same on a ``SqliteStore`` (a temporary file), against (1)'s baseline.
   No goal; reported.
3. Memory per pending session: sessions whose steps wait for applicant input,
   on the ``MemoryStore``, measured with ``tracemalloc``. Goal: <= 8 KB each.

Missed goals print MISS but do not change the exit status; only a crash (or a
run that did not do the work it claims to time) exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import Any

import httpx

import multiverify
from multiverify import (
    Applicant,
    AuditTrail,
    Challenge,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    Outcome,
    Policy,
    Rule,
    Signal,
    Step,
    Verifier,
)
from multiverify._serde import structure_input
from multiverify._session import Input, new_session, transition
from multiverify.channels import (
    Finished,
    StepContext,
    StepMessage,
    StepOutcome,
    Waiting,
)
from multiverify.stores import MemoryStore, SqliteStore

RATIO_GOAL = 1.3
BYTES_GOAL = 8 * 1024

# -- the fake provider ---------------------------------------------------------------

# One canned JSON answer per channel; the handler echoes the idempotency key so
# the response depends on the request (nothing is cached anywhere).
_ANSWERS: dict[str, dict[str, Any]] = {
    "bureau": {"status": "passed", "signals": ["identity_match"], "score": 0.92},
    "telco": {"status": "passed", "signals": ["sim_tenure_ok"], "score": 0.81},
    "device": {"status": "passed", "signals": ["device_known"], "score": 0.77},
    "watchlist": {"status": "passed", "signals": ["no_match"], "score": 1.0},
}


class Counter:
    def __init__(self) -> None:
        self.requests = 0


def make_client(counter: Counter) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        counter.requests += 1
        kind = request.url.path.rsplit("/", 1)[-1]
        body = dict(_ANSWERS[kind])
        body["request_id"] = request.headers.get("idempotency-key", "")
        return httpx.Response(200, json=body)

    return httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="https://provider.test"
    )


async def call_provider(
    client: httpx.AsyncClient, kind: str, idempotency_key: str, applicant_id: str
) -> ChannelResult:
    """One provider request and its parsing: shared by the channel and the baseline."""
    response = await client.post(
        f"/v1/check/{kind}",
        json={"applicant_id": applicant_id},
        headers={"Idempotency-Key": idempotency_key},
    )
    response.raise_for_status()
    data = response.json()
    return ChannelResult(
        status=data["status"],
        signals=tuple(Signal(name=name) for name in data["signals"]),
        score=data["score"],
        provider="mock",
    )


# -- the channels ----------------------------------------------------------------------


class HttpChannel:
    """An automatic channel: one HTTP request, its JSON parsed into a result."""

    def __init__(self, kind: str, client: httpx.AsyncClient) -> None:
        self._kind = kind
        self._client = client
        self._spec = ChannelSpec(
            name=f"bench_{kind}",
            automatic=True,
            signals=set(_ANSWERS[kind]["signals"]),
            description=f"benchmark {kind} lookup over HTTP",
        )

    @property
    def spec(self) -> ChannelSpec:
        return self._spec

    @property
    def state_type(self) -> None:
        return None

    async def start(self, context: StepContext, /) -> StepOutcome:
        result = await call_provider(
            self._client,
            self._kind,
            context.idempotency_key,
            context.applicant.applicant_id,
        )
        return Finished(result=result)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        raise NotImplementedError

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        return None


class WaitingChannel:
    """A channel that asks the applicant for something and waits."""

    def __init__(self, name: str, kind: str) -> None:
        self._kind = kind
        self._spec = ChannelSpec(name=name, signals={"code_verified"})

    @property
    def spec(self) -> ChannelSpec:
        return self._spec

    @property
    def state_type(self) -> None:
        return None

    async def start(self, context: StepContext, /) -> StepOutcome:
        return Waiting(
            challenge=Challenge(
                step_id=context.step_id,
                kind=self._kind,
                message="enter the code we sent",
                destination="+86*******8000",
            )
        )

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        return Finished(result=ChannelResult(status="passed"))

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        return None


# -- policies and applicant --------------------------------------------------------------


def automatic_policy(channels: Sequence[Any]) -> Policy:
    # Two independent steps, two that run after them; two rules and a default.
    return Policy(
        name="bench-automatic",
        channels={c.spec.name: c.spec for c in channels},
        version="1",
        steps=[
            Step(id="bureau", channel="bench_bureau"),
            Step(id="telco", channel="bench_telco"),
            Step(id="device", channel="bench_device", after=["bureau"]),
            Step(id="watchlist", channel="bench_watchlist", after=["telco"]),
        ],
        rules=[
            Rule(
                outcome="rejected",
                when="steps.bureau.status == 'failed' || steps.watchlist.status == 'failed'",
                reason="bureau_or_watchlist.failed",
            ),
            Rule(
                outcome="approved",
                when="'identity_match' in steps.bureau.signals && steps.telco.status == 'passed'"
                " && steps.device.status == 'passed' && steps.watchlist.status == 'passed'",
                reason="all.passed",
            ),
        ],
        default="review",
    )


def pending_policy(channels: Sequence[Any]) -> Policy:
    # The same shape: two steps that wait for the applicant, two after them.
    return Policy(
        name="bench-pending",
        channels={c.spec.name: c.spec for c in channels},
        version="1",
        steps=[
            Step(id="sms", channel="bench_sms"),
            Step(id="video", channel="bench_video"),
            Step(id="call", channel="bench_call", after=["sms"]),
            Step(id="sign", channel="bench_sign", after=["video"]),
        ],
        rules=[
            Rule(
                outcome="rejected",
                when="steps.sms.status == 'failed'",
                reason="sms.failed",
            ),
            Rule(
                outcome="approved",
                when="steps.sms.status == 'passed' && steps.call.status == 'passed'",
                reason="all.passed",
            ),
        ],
        default="review",
    )


def pending_channels() -> list[WaitingChannel]:
    return [
        WaitingChannel("bench_sms", "code"),
        WaitingChannel("bench_video", "video_session"),
        WaitingChannel("bench_call", "call"),
        WaitingChannel("bench_sign", "signature"),
    ]


APPLICANT = Applicant(
    applicant_id="a-000001",
    name="Zhang San",
    national_id="110101199003071234",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(
        amount="5000", currency="CNY", term_months=12, purpose="phone"
    ),
)

KINDS = tuple(_ANSWERS)

# -- runners ------------------------------------------------------------------------------


async def in_batches(
    n: int, batch: int, one: Callable[[int], Awaitable[Any]]
) -> list[Any]:
    out: list[Any] = []
    for first in range(0, n, batch):
        out.extend(
            await asyncio.gather(*(one(i) for i in range(first, min(n, first + batch))))
        )
    return out


async def run_baseline(client: httpx.AsyncClient, n: int, batch: int) -> float:
    async def one(i: int) -> list[ChannelResult]:
        session_id = f"base-{i}"
        return await asyncio.gather(
            *(
                call_provider(
                    client, kind, f"{session_id}:{kind}:1", APPLICANT.applicant_id
                )
                for kind in KINDS
            )
        )

    started = time.perf_counter()
    results = await in_batches(n, batch, one)
    elapsed = time.perf_counter() - started
    if len(results) != n or any(len(r) != 4 for r in results):
        raise RuntimeError("the baseline did not make every request")
    return elapsed


async def run_verifier(
    client: httpx.AsyncClient,
    n: int,
    batch: int,
    store_factory: Callable[[], Any],
) -> float:
    channels = [HttpChannel(kind, client) for kind in KINDS]
    policy = automatic_policy(channels)
    store = store_factory()
    async with Verifier(policy, channels=channels, store=store) as verifier:
        if hasattr(store, "open"):
            await store.open()  # the file is opened and migrated before timing

        async def one(i: int) -> Any:
            return await verifier.run(APPLICANT)

        started = time.perf_counter()
        verdicts = await in_batches(n, batch, one)
        elapsed = time.perf_counter() - started
        await verifier.wait_idle()
    await store.aclose()  # the Verifier leaves a store it was given open
    bad = [v for v in verdicts if v.outcome is not Outcome.APPROVED]
    if len(verdicts) != n or bad:
        raise RuntimeError(
            f"expected {n} approved verdicts, got {len(verdicts)} "
            f"({len(bad)} not approved; first: {bad[:1]})"
        )
    return elapsed


class Recorded:
    """One session of figure 1 as its audit trail recorded it: replayed by ``pure``."""

    def __init__(self, policy: Policy, inputs: Sequence[Input], at: datetime) -> None:
        self.policy = policy
        self.inputs = tuple(inputs)
        self.at = at


async def record(client: httpx.AsyncClient) -> Recorded:
    """Run one session of figure 1 and keep the inputs its trail recorded."""
    channels = [HttpChannel(kind, client) for kind in KINDS]
    policy = automatic_policy(channels)
    store = MemoryStore()
    async with Verifier(policy, channels=channels, store=store) as verifier:
        session = await verifier.start(APPLICANT)
        await verifier.wait(session.session_id)
        await verifier.wait_idle()
    events = await store.audit_events(session.session_id)
    inputs = [structure_input(e.data["input"]) for e in events if e.kind == "input"]
    return Recorded(policy, inputs, events[0].at)


def run_pure(recorded: Recorded, n: int) -> float:
    """Figure 1a: ``n`` sessions decided by the core and the audit trail alone."""
    policy, inputs, at = recorded.policy, recorded.inputs, recorded.at
    approved = 0
    started = time.perf_counter()
    for i in range(n):
        session = new_session(policy, APPLICANT, session_id=f"pure-{i}", at=at)
        session, _ = AuditTrail.created(session, at=at)
        for event in inputs:
            result = transition(policy, session, event)
            session, _ = AuditTrail.transition(
                result.session, event, result.effects, at=at
            )
        approved += session.verdict is not None and (
            session.verdict.outcome is Outcome.APPROVED
        )
    elapsed = time.perf_counter() - started
    if approved != n:
        raise RuntimeError(f"expected {n} approved verdicts, got {approved}")
    return elapsed


async def timed(
    run: Callable[[], Awaitable[float]], counter: Counter, expect: int
) -> float:
    gc.collect()
    before = counter.requests
    elapsed = await run()
    made = counter.requests - before
    if made != expect:
        raise RuntimeError(f"expected {expect} HTTP requests, saw {made}")
    return elapsed


def median_ratio(times: Sequence[float], bases: Sequence[float]) -> float:
    """The median over rounds of a run's time over its own round's baseline."""
    return statistics.median(t / b for t, b in zip(times, bases, strict=False))


# -- memory -------------------------------------------------------------------------------


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure_pending(count: int, batch: int) -> dict[str, Any]:
    store = MemoryStore()
    channels = pending_channels()
    verifier = Verifier(pending_policy(channels), channels=channels, store=store)
    try:
        # Warm up: caches (CEL, cattrs, policy lookups) fill here, not below.
        warm = await in_batches(20, batch, lambda i: verifier.start(APPLICANT))
        await verifier.wait_idle()

        tracemalloc.start()
        before = _traced()
        started = await in_batches(count, batch, lambda i: verifier.start(APPLICANT))
        await verifier.wait_idle()
        ids = [s.session_id for s in started]
        del started
        total = _traced() - before

        # Check they really wait, then take the snapshot's top allocators.
        waiting = 0
        for sid in ids:
            session, _ = await store.load(sid)
            if len(session.challenges) == 2 and not session.finished:
                waiting += 1
        snapshot = tracemalloc.take_snapshot()
        top = _top_files(snapshot, before_files=None)

        # Attribute: drop the audit trails, then the per-session locks, and
        # see how much goes with each.
        audit = store._audit  # noqa: SLF001 - a benchmark may look inside
        audit_events = sum(len(audit.get(sid, ())) for sid in ids)
        for sid in ids:
            audit.pop(sid, None)
        no_audit = _traced() - before
        locks = verifier._locks  # noqa: SLF001
        lock_count = sum(1 for sid in ids if sid in locks)
        for sid in ids:
            locks.pop(sid, None)
        no_locks = _traced() - before
        tracemalloc.stop()
        if waiting != count:
            raise RuntimeError(f"only {waiting} of {count} sessions are waiting")
        return {
            "count": count,
            "total": total,
            "audit": total - no_audit,
            "audit_events": audit_events,
            "locks": no_audit - no_locks,
            "lock_count": lock_count,
            "rest": no_locks,
            "top": top,
            "warm": len(warm),
        }
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await verifier.aclose()


def _top_files(
    snapshot: tracemalloc.Snapshot, before_files: Any
) -> list[tuple[str, int]]:
    del before_files
    stats = snapshot.filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    ).statistics("lineno")
    out = []
    for stat in stats[:6]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker in ("site-packages/", "src/", "lib/python"):
            if marker in name:
                name = name.split(marker, 1)[1]
                break
        out.append((f"{name}:{frame.lineno}", stat.size))
    return out


# -- report -------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt_times(times: Sequence[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, default=5000, help="sessions timed (default 5000)"
    )
    parser.add_argument(
        "--pending",
        type=int,
        default=10000,
        help="pending sessions measured (default 10000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a CI smoke run (n=50, pending=200)",
    )
    parser.add_argument(
        "--batch", type=int, default=500, help="sessions per gather (default 500)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of baseline and Verifier runs (default 3)",
    )
    parser.add_argument(
        "--sqlite-repeat",
        type=int,
        default=1,
        help="rounds that also time SQLite (default 1: it is the slow one)",
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="skip figure 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.pending = 50, 200
    sqlite_repeat = args.sqlite_repeat
    n, batch = args.n, args.batch

    print(
        f"multiverify {multiverify.__version__} | Python {platform.python_version()} "
        f"| httpx {httpx.__version__} | {platform.machine()} x{os.cpu_count()}"
    )
    print(
        f"n={n} sessions x 4 steps, batch={batch}, {args.repeat} rounds "
        f"(ratios: median of the rounds); pending={args.pending}"
    )
    print()

    counter = Counter()
    async with make_client(counter) as client:
        # Warm up once: imports, CEL compilation, cattrs hooks, httpx internals.
        warm_n = min(n, 200)
        await run_baseline(client, warm_n, batch)
        await run_verifier(client, warm_n, batch, MemoryStore)
        recorded = await record(client)
        run_pure(recorded, warm_n)

        # Rounds: the baseline, then the Verifier on each store, back to back,
        # so each ratio compares runs made under the same machine load.
        expect = 4 * n
        base_times: list[float] = []
        mem_times: list[float] = []
        pure_times: list[float] = []
        sqlite_times: list[float] = []
        with tempfile.TemporaryDirectory(prefix="mv-bench-") as tmp:
            runs = iter(range(1_000_000))

            def fresh_store() -> Any:
                return SqliteStore(os.path.join(tmp, f"bench-{next(runs)}.db"))

            with_sqlite = not args.skip_sqlite
            if with_sqlite:
                await run_verifier(client, min(n, 50), batch, fresh_store)
            for round_ in range(args.repeat):
                base_times.append(
                    await timed(lambda: run_baseline(client, n, batch), counter, expect)
                )
                mem_times.append(
                    await timed(
                        lambda: run_verifier(client, n, batch, MemoryStore),
                        counter,
                        expect,
                    )
                )
                gc.collect()
                pure_times.append(run_pure(recorded, n))
                if with_sqlite and round_ < sqlite_repeat:
                    sqlite_times.append(
                        await timed(
                            lambda: run_verifier(client, n, batch, fresh_store),
                            counter,
                            expect,
                        )
                    )
        base, mem = min(base_times), min(mem_times)
        sqlite = (min(sqlite_times), sqlite_times) if sqlite_times else None

    pending = await measure_pending(args.pending, batch)

    # -- the table --
    requests = 4 * n
    base_median = statistics.median(base_times)
    ratio = median_ratio(mem_times, base_times)
    rows: list[tuple[str, str, str, str]] = []
    rows.append(
        (
            "baseline: 4xN requests, bare gather",
            f"{base:.3f} s  ({base / requests * 1e6:.0f} us/req)",
            "",
            "",
        )
    )
    rows.append(
        (
            "1. Verifier + MemoryStore",
            f"{mem:.3f} s  ({mem / n * 1e6:.0f} us/session)",
            f"ratio {ratio:.2f}  (+{(ratio - 1) * base_median / n * 1e6:.0f} us/session)",
            f"goal <= {RATIO_GOAL}: {verdict(ratio <= RATIO_GOAL)}",
        )
    )
    pure_ratio = median_ratio(pure_times, base_times)
    rows.append(
        (
            "1a. the core + audit trail alone",
            f"{min(pure_times):.3f} s  ({min(pure_times) / n * 1e6:.0f} us/session)",
            f"ratio {pure_ratio:.2f} of the baseline",
            f"no goal: figure 1 >= {1 + pure_ratio:.2f}",
        )
    )
    if sqlite is not None:
        sq = sqlite[0]
        sq_ratio = median_ratio(sqlite[1], base_times)
        rows.append(
            (
                "2. Verifier + SqliteStore (temp file)",
                f"{sq:.3f} s  ({sq / n * 1e6:.0f} us/session)",
                (
                    f"ratio {sq_ratio:.2f}  "
                    f"(+{(sq_ratio - 1) * base_median / n * 1e6:.0f} us/session)"
                ),
                "no goal (reported)",
            )
        )
    else:
        rows.append(
            (
                "2. Verifier + SqliteStore",
                "skipped",
                "--skip-sqlite",
                "",
            )
        )
    per = pending["total"] / pending["count"]
    rows.append(
        (
            f"3. memory per pending session ({pending['count']})",
            f"{per / 1024:.2f} KB  ({per:.0f} B)",
            f"total {pending['total'] / 2**20:.1f} MiB",
            f"goal <= {BYTES_GOAL // 1024} KB: {verdict(per <= BYTES_GOAL)}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "-" * (sum(widths) + 9)
    print(line)
    for r in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    print(line)
    print()
    print(
        f"all runs (s): baseline [{fmt_times(base_times)}]  memory [{fmt_times(mem_times)}]",
        end="",
    )
    if sqlite is not None:
        print(f"  sqlite [{fmt_times(sqlite[1])}]")
    else:
        print()
    rounds = [t / b for t, b in zip(mem_times, base_times, strict=True)]
    pure_rounds = [t / b for t, b in zip(pure_times, base_times, strict=True)]
    print(
        f"ratio per round: memory [{fmt_times(rounds)}]  "
        f"core + audit [{fmt_times(pure_rounds)}]",
        end="",
    )
    if sqlite is not None:
        rounds = [t / b for t, b in zip(sqlite[1], base_times, strict=False)]
        print(f"  sqlite [{fmt_times(rounds)}]")
    else:
        print()
    count = pending["count"]
    print(
        f"pending memory, per session: {per:.0f} B in all, of which "
        f"audit trail {pending['audit'] / count:.0f} B "
        f"({pending['audit_events'] / count:.1f} events each, in the store), "
        f"per-session lock {pending['locks'] / count:.0f} B "
        f"({pending['lock_count']} locks in Verifier._locks), "
        f"everything else {pending['rest'] / count:.0f} B "
        "(session, store entry, outbox, challenges)"
    )
    print("top allocation sites while pending:")
    for where, size in pending["top"]:
        print(f"  {size / count:8.0f} B/session  {where}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
