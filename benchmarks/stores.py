"""Session transitions per second on each store, against its raw driver; worker scaling.

Run from the repository root, with PostgreSQL and Redis on loopback::

    .venv/bin/python benchmarks/stores.py            # 300 sessions per store
    .venv/bin/python benchmarks/stores.py --quick    # a smoke run

Figures:

1. For SQLite, PostgreSQL and Redis: sessions of one automatic step run by
   the ``Verifier`` (each session is two transitions: created already
   started, then the step's result with the verdict, each one
   compare-and-set write with its outbox and audit events, plus the effects'
   completions), against the raw driver doing one single-row upsert per
   transition on the same server. Goal: ratio >= 0.5. Measured twice:
   serially (one session at a time, one upsert at a time), and concurrently
   (``CONCURRENCY`` sessions in flight, against the raw driver with as many
   upserts in flight on a pool of the store's size; SQLite's driver has no
   concurrency, so its raw figure stays serial).
2. Worker scaling: N sessions left with their first effect pending (their
   replica died), resumed by one ``multiverify worker`` process, then by two,
   on PostgreSQL. Goal: two workers >= 1.6x one (on two cores). The clock
   starts once every worker process has started and opened the store.

A server that cannot be reached is reported as skipped. Missed goals print
MISS; only a crash exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from uuid import uuid4

from multiverify import Applicant, LoanApplication, Policy, Step, Verifier
from multiverify.exceptions import StoreUnavailableError
from multiverify.stores import SessionStore, store_from_url
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

# Commits are not flushed to disk before they return (a setting of these
# connections only, through asyncpg's server settings in the URL), for ours
# and the raw driver alike: the figures measure the store's work, not the
# speed of this machine's disk.
POSTGRES = (
    os.environ.get(
        "MULTIVERIFY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
    )
    + "?synchronous_commit=off"
)
REDIS = os.environ.get("MULTIVERIFY_TEST_REDIS", "redis://127.0.0.1:6379/15")
HERE = Path(__file__).parent

POLICY = Policy(
    name="bench", version="1", steps=[Step(id="b", channel="credit_bureau")]
)
APPLICANT = Applicant(
    applicant_id="a1",
    name="Li Lei",
    national_id="110101199001011234",
    phone="+8613800138000",
    date_of_birth=date(1990, 1, 1),
    timezone="Asia/Shanghai",
    loan=LoanApplication(amount="5000", currency="CNY", term_months=12, purpose="x"),
)
TRANSITIONS_PER_SESSION = 2
CONCURRENCY = 64
POOL = 10  # the PostgresStore's default max_size, and redis-py's pool grows as needed


def build(store: SessionStore) -> Verifier:
    """The benchmark app (also ``--app stores:build`` for the worker processes)."""
    return Verifier(
        POLICY,
        channels=[ScriptedChannel("credit_bureau", [Scripted.passes()])],
        store=store,
        watch_poll=None,
    )


async def build_when_told(store: SessionStore) -> Verifier:
    """The benchmark app, once the benchmark says go (``--app stores:build_when_told``).

    The worker has started and opened the store by then: the benchmark
    times the work, not the start-up of Python and the connections.
    """
    gate = Path(os.environ["BENCH_GATE"])
    (gate.parent / f"ready-{os.getpid()}").touch()
    while not gate.exists():  # noqa: ASYNC110, ASYNC240 - the benchmark is another process
        await asyncio.sleep(0.01)
    return build(store)


async def in_flight(
    count: int, concurrency: int, work: Callable[[int], Awaitable[object]]
) -> None:
    """Run ``work(0 .. count-1)`` with at most ``concurrency`` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await work(i)

    await asyncio.gather(*(one(i) for i in range(count)))


async def verifier_rate(store: SessionStore, sessions: int, concurrency: int) -> float:
    """Transitions per second of the Verifier on ``store``, ``concurrency`` sessions at once."""
    verifier = build(store)

    async def session(_: int) -> None:
        started = await verifier.start(APPLICANT)
        await verifier.wait(started.session_id)

    began = time.perf_counter()
    await in_flight(sessions, concurrency, session)
    elapsed = time.perf_counter() - began
    await verifier.aclose()
    return sessions * TRANSITIONS_PER_SESSION / elapsed


async def raw_rate(kind: str, target: str, sessions: int, concurrency: int) -> float:
    """Transitions per second of one single-row upsert each, with the raw driver."""
    count = sessions * TRANSITIONS_PER_SESSION
    body = "x" * 2000  # about a session's JSON
    began = time.perf_counter()
    if kind == "sqlite":
        db = sqlite3.connect(target)
        # The SqliteStore's own settings, so both write the same way.
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS raw (id TEXT PRIMARY KEY, body TEXT)")
        for i in range(count):
            with db:
                db.execute(
                    "INSERT INTO raw VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                    "SET body = excluded.body",
                    (f"s{i // 2}", body),
                )
        db.close()
    elif kind == "postgres":
        import asyncpg

        async def keep_session(_: object) -> None:
            pass

        # The PostgresStore's own pool settings: as many connections, and no
        # reset query when a connection goes back (a round trip per call).
        pool = await asyncpg.create_pool(
            POSTGRES,
            min_size=min(concurrency, POOL),
            max_size=min(concurrency, POOL),
            reset=keep_session,
        )
        table = f"raw_{uuid4().hex[:8]}"
        await pool.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, body TEXT)")
        upsert = (
            f"INSERT INTO {table} VALUES ($1, $2) ON CONFLICT (id) DO UPDATE "  # noqa: S608
            "SET body = excluded.body"
        )

        async def pg_upsert(i: int) -> None:
            await pool.execute(upsert, f"s{i // 2}", body)

        began = time.perf_counter()
        await in_flight(count, concurrency, pg_upsert)
        elapsed = time.perf_counter() - began
        await pool.execute(f"DROP TABLE {table}")
        await pool.close()
        return count / elapsed
    else:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS)
        prefix = f"raw:{uuid4().hex[:8]}"

        async def redis_set(i: int) -> None:
            await client.set(f"{prefix}:s{i // 2}", body)

        await in_flight(count, concurrency, redis_set)
        elapsed = time.perf_counter() - began
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        return count / elapsed
    return count / (time.perf_counter() - began)


async def drop(kind: str, url: str) -> None:
    """Remove a scratch schema or prefix."""
    if kind == "postgres":
        import asyncpg

        conn = await asyncpg.connect(POSTGRES)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{url}" CASCADE')
        await conn.close()
    elif kind == "redis":
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(REDIS)
        keys = [k async for k in client.scan_iter(match=f"{url}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def transitions(sessions: int, concurrency: int) -> None:
    """Figure 1, store by store, with ``concurrency`` sessions in flight."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = f"bench_{uuid4().hex[:8]}"
        targets = {
            "sqlite": (f"sqlite://{tmp}/bench.db", f"{tmp}/raw.db"),
            "postgres": (f"{POSTGRES}&schema={scratch}", ""),
            "redis": (f"{REDIS}?prefix={scratch}", ""),
        }
        for kind, (url, raw_target) in targets.items():
            store = store_from_url(url)
            try:
                try:
                    await store.schema_version()  # type: ignore[attr-defined]
                except StoreUnavailableError as exc:
                    print(f"{kind:9} skipped: {exc}")
                    continue
                ours = await verifier_rate(store, sessions, concurrency)
                raw = await raw_rate(kind, raw_target, sessions, concurrency)
            finally:
                await store.aclose()
                await drop(kind, scratch)
            ratio = ours / raw
            verdict = "ok" if ratio >= 0.5 else "MISS"
            how = "serial" if concurrency == 1 else f"{concurrency} in flight"
            print(
                f"{kind:9} {how:13} {ours:8.0f} transitions/s, raw upsert "
                f"{raw:8.0f}/s, ratio {ratio:.2f} (goal >= 0.5: {verdict})"
            )


async def orphan(url: str, sessions: int) -> None:
    """``sessions`` sessions whose replica died before running their first effect."""
    store = store_from_url(url)
    # A bureau that never answers (its delay is on a clock that never moves):
    # closing the Verifier stops every start, and each stays in the outbox.
    stuck = Verifier(
        POLICY,
        channels=[ScriptedChannel("credit_bureau", [Scripted.passes(delay=60)])],
        store=store,
        clock=FakeClock(),
    )
    for _ in range(sessions):
        await stuck.start(APPLICANT)
    await stuck.aclose()
    await store.aclose()


async def pending(url: str) -> int:
    """How many effects are still pending."""
    store = store_from_url(url)
    try:
        return len(await store.pending_effects())
    finally:
        await store.aclose()


async def worker_seconds(processes: int, sessions: int) -> float:
    """Seconds ``processes`` worker processes take to resume ``sessions`` orphans (start-up excluded)."""
    scratch = f"bench_{uuid4().hex[:8]}"
    url = f"{POSTGRES}&schema={scratch}"
    signals = Path(tempfile.mkdtemp())
    gate = signals / "go"
    try:
        await orphan(url, sessions)
        command = [
            sys.executable,
            "-c",
            "import sys; from multiverify._cli import main; main(sys.argv[1:])",
            "worker",
            "--store",
            url,
            "--app",
            "stores:build_when_told",
            "--effect-grace",
            "0",
            "--poll-interval",
            "0.05",
            "--concurrency",
            "32",
            "--log-level",
            "warning",
        ]
        workers = [
            subprocess.Popen(  # noqa: S603, ASYNC220 - our own command, started once
                command, cwd=HERE, env={**os.environ, "BENCH_GATE": str(gate)}
            )
            for _ in range(processes)
        ]
        while len(list(signals.glob("ready-*"))) < processes:  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.01)
        gate.touch()
        began = time.perf_counter()
        while await pending(url):  # noqa: ASYNC110 - the workers are other processes
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - began
        for process in workers:
            process.terminate()
            process.wait(30)
        return elapsed
    finally:
        await drop("postgres", scratch)
        shutil.rmtree(signals, ignore_errors=True)


async def scaling(sessions: int) -> None:
    """Figure 2."""
    try:
        store = store_from_url(f"{POSTGRES}&schema=bench_probe")
        await store.schema_version()  # type: ignore[attr-defined]
        await store.aclose()
        await drop("postgres", "bench_probe")
    except StoreUnavailableError as exc:
        print(f"workers   skipped: {exc}")
        return
    one = await worker_seconds(1, sessions)
    two = await worker_seconds(2, sessions)
    speedup = one / two
    verdict = "ok" if speedup >= 1.6 else "MISS"
    print(
        f"workers   {sessions} orphaned sessions: one process {one:.2f}s, two "
        f"{two:.2f}s, speed-up {speedup:.2f}x (goal >= 1.6x: {verdict}; "
        f"{os.cpu_count()} cores, process start-up excluded)"
    )


def main() -> None:
    """Run the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    sessions = 30 if args.quick else 300
    asyncio.run(transitions(sessions, 1))
    asyncio.run(transitions(sessions if args.quick else 1000, CONCURRENCY))
    if not args.quick:
        asyncio.run(scaling(2000))


if __name__ == "__main__":
    main()
