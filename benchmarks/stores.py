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
   concurrency, so its raw figure stays serial). Both sides first run a
   tenth as many sessions (or their upserts) untimed, on the same
   connections: the figure is the steady rate, not the first statements'
   preparation and the first sessions' compilation.
2. Worker scaling: N sessions left with their first effect pending (their
   replica died), resumed by one ``multiverify worker`` process, then by two,
   on PostgreSQL. Goal: two workers >= 1.6x one (on two cores). The clock
   starts once every worker process has started and opened the store.
   Measured twice: with instant effects, where the workers and the server
   compete for the cores (the CPU each takes a session, read from ``/proc``
   when the server is local, gives the best speed-up those cores allow), and
   with bureau calls that take ``VENDOR_LATENCY``, as a worker's effects do.

3. Cross-replica waiting: on PostgreSQL and Redis, ``WAITERS`` sessions
   wait for their SMS code; replica 1 (a Verifier with its own store,
   default ``watch_poll`` of 1 s) waits for each verdict while replica 2
   takes the code after a random pause (up to ``TYPING`` seconds: the
   applicant typing). Printed: the median time from the code's submission
   on replica 2 to the verdict's return on replica 1, and the loads of the
   session per wait, with the store's change notifications and without
   them (the same store behind a wrapper that hides the capability, so the
   waiter polls with its growing pause, as before notifications). Target
   (this figure's own): notified median <= a tenth of the polled one.
4. What change notifications cost: figure 1's Verifier rate on PostgreSQL
   and Redis with notifications on, against the same store with
   ``notifications=off``, serially and ``CONCURRENCY`` in flight, the runs
   alternating (``ROUNDS`` of each, the median printed). Measured alone,
   and with a second replica (a store of its own in the same process)
   waiting for one session nobody writes: what every other replica that
   has a waiter costs. Then what ``NOTIFY`` itself costs PostgreSQL: the
   raw upsert of figure 1 in the shape of the store's statements, with a
   ``pg_notify`` on a channel of its own that nobody listens on and
   without. No goal: the ratios are printed.

Figure 1 also prints, for each store, the best ratio its figure could reach
with this runtime: first the runtime's own time a transition is measured in
the same run (the same sessions on the ``MemoryStore``, whose own work, a dict
write and two list appends, counts against the runtime here), and what a
durable store must add to it at the least: the transition's writes as JSON
(the session, its outbox and its audit events, which the stores write; timed
with the JSON cache of the session's parts cleared for every session, as
every session has an applicant of its own) and one raw upsert. Serially a
transition cannot take less than the three one after the other; with many
in flight, round trips overlap but the event loop's work does not, so the
rate cannot pass one over the runtime plus the JSON. The same bounds with
the pure core and audit chain alone in place of the whole runtime (the
decisions, nothing else: see ``overhead.py`` figure 1a) are printed as the
design's ceiling. Serially, the third ceiling counts one raw upsert for
every write the runtime makes a transition (creates, saves, and the calls
that mark effects done, counted on the ``MemoryStore``) instead of one.

A server that cannot be reached is reported as skipped. Missed goals print
MISS; only a crash exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import attrs

from multiverify import (
    Applicant,
    LoanApplication,
    Policy,
    Session,
    Step,
    Verifier,
)
from multiverify._audit import AuditTrail
from multiverify._serde import effect_to_json, session_to_json, structure_input
from multiverify._session import new_session, transition
from multiverify.exceptions import StoreUnavailableError
from multiverify.stores import MemoryStore, SessionStore, store_from_url
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
T = TypeVar("T")

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
VENDOR_LATENCY = 0.02  # seconds a bureau call takes in the second worker figure


def build(store: SessionStore, *, latency: float = 0.0) -> Verifier:
    """The benchmark app (also ``--app stores:build`` for the worker processes).

    ``latency``: real seconds each bureau call takes.
    """
    return Verifier(
        POLICY,
        channels=[ScriptedChannel("credit_bureau", [Scripted.passes(delay=latency)])],
        store=store,
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
    return build(store, latency=float(os.environ.get("BENCH_LATENCY", "0")))


async def in_flight(
    count: int, concurrency: int, work: Callable[[int], Awaitable[object]]
) -> None:
    """Run ``work(0 .. count-1)`` with at most ``concurrency`` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await work(i)

    await asyncio.gather(*(one(i) for i in range(count)))


async def reachable(label: str, store: SessionStore) -> bool:
    """Whether the store's server answers (its schema brought up to date); else say it is skipped and close the store."""
    try:
        await store.schema_version()  # type: ignore[attr-defined]
    except StoreUnavailableError as exc:
        print(f"{label:9} skipped: {exc}")
        await store.aclose()
        return False
    return True


async def verifier_rate(
    store: SessionStore, sessions: int, concurrency: int, *, warmup: int = 0
) -> float:
    """Transitions per second of the Verifier on ``store``, ``concurrency`` sessions at once.

    ``warmup`` sessions run first, untimed, on the same Verifier.
    """
    verifier = build(store)

    async def session(_: int) -> None:
        started = await verifier.start(APPLICANT)
        await verifier.wait(started.session_id)

    await in_flight(warmup, concurrency, session)
    began = time.perf_counter()
    await in_flight(sessions, concurrency, session)
    elapsed = time.perf_counter() - began
    await verifier.aclose()
    return sessions * TRANSITIONS_PER_SESSION / elapsed


async def raw_rate(
    kind: str, target: str, sessions: int, concurrency: int, *, warmup: int = 0
) -> float:
    """Transitions per second of one single-row upsert each, with the raw driver.

    The upserts of ``warmup`` sessions run first, untimed, on the same
    connections; opening them is not timed either.
    """
    count = sessions * TRANSITIONS_PER_SESSION
    warm = warmup * TRANSITIONS_PER_SESSION
    body = "x" * 2000  # about a session's JSON
    if kind == "sqlite":
        db = sqlite3.connect(target)
        # The SqliteStore's own settings, so both write the same way.
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS raw (id TEXT PRIMARY KEY, body TEXT)")

        def sqlite_upserts(first: int, last: int) -> None:
            for i in range(first, last):
                with db:
                    db.execute(
                        "INSERT INTO raw VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                        "SET body = excluded.body",
                        (f"s{i // 2}", body),
                    )

        sqlite_upserts(0, warm)
        began = time.perf_counter()
        sqlite_upserts(warm, warm + count)
        elapsed = time.perf_counter() - began
        db.close()
        return count / elapsed
    if kind == "postgres":
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

        await in_flight(warm, concurrency, lambda i: pg_upsert(i + count))
        began = time.perf_counter()
        await in_flight(count, concurrency, pg_upsert)
        elapsed = time.perf_counter() - began
        await pool.execute(f"DROP TABLE {table}")
        await pool.close()
        return count / elapsed
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS)
    prefix = f"raw:{uuid4().hex[:8]}"

    async def redis_set(i: int) -> None:
        await client.set(f"{prefix}:s{i // 2}", body)

    await client.ping()  # connected before the clock starts
    await in_flight(warm, concurrency, lambda i: redis_set(i + count))
    began = time.perf_counter()
    await in_flight(count, concurrency, redis_set)
    elapsed = time.perf_counter() - began
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    return count / elapsed


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


class Recording(MemoryStore):
    """A ``MemoryStore`` that keeps what each create and save was given, and counts its writes.

    Writes are the calls a store with a server makes a round trip for:
    creates, saves and calls that mark effects done (the ``MemoryStore``
    marks them done by calling itself, which is not counted).
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[Session, dict[str, Any]]] = []
        self.completions = 0
        self._inside = False

    async def create(self, session: Session, **kwargs: Any) -> int:
        self.writes.append((session, kwargs))
        return await self._within(super().create(session, **kwargs))

    async def save(self, session: Session, **kwargs: Any) -> int:
        self.writes.append((session, kwargs))
        return await self._within(super().save(session, **kwargs))

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        self.completions += not self._inside
        await super().complete_effect(session_id, effect_id)

    async def complete_effects(self, effects: Any, /) -> None:
        self.completions += 1
        await self._within(super().complete_effects(effects))

    async def _within(self, call: Awaitable[T]) -> T:
        self._inside = True
        try:
            return await call
        finally:
            self._inside = False


@attrs.frozen
class Floor:
    """Seconds a transition takes at the least, by part, measured in this run."""

    runtime: float  # the Verifier on the MemoryStore, at this concurrency
    pure: float  # the core and the audit chain alone
    json: float  # the transition's writes as JSON
    writes: float  # the store calls that write, a transition

    def ceilings(self, raw: float, concurrency: int) -> str:
        """The best ratios to ``raw`` upserts a second that a store could reach."""
        design = self._ceiling(self.pure, 1, raw, concurrency)
        runtime = self._ceiling(self.runtime, 1, raw, concurrency)
        text = f"ceiling: design {design:.2f}, runtime {runtime:.2f}"
        if concurrency == 1:
            writes = self._ceiling(self.runtime, self.writes, raw, concurrency)
            text += f", its {self.writes:g} writes a transition {writes:.2f}"
        return text

    def _ceiling(
        self, work: float, upserts: float, raw: float, concurrency: int
    ) -> float:
        if concurrency == 1:  # one after the other
            return (1 / raw) / (work + self.json + upserts / raw)
        return min(1.0, (1 / (work + self.json)) / raw)  # the loop's work alone


async def floor(sessions: int, concurrency: int) -> Floor:
    """The runtime's, the core's and the JSON's time a transition, for ``Floor``."""
    runtime = 1 / await verifier_rate(
        MemoryStore(), sessions, concurrency, warmup=max(sessions // 10, 1)
    )
    store = Recording()
    async with build(store) as verifier:
        session = await verifier.start(APPLICANT)
        await verifier.wait(session.session_id)
        await verifier.wait_idle()
    events = await store.audit_events(session.session_id)
    inputs = [structure_input(e.data["input"]) for e in events if e.kind == "input"]
    writes = store.writes
    if len(writes) != TRANSITIONS_PER_SESSION or len(inputs) != len(writes):
        raise RuntimeError(
            f"expected {TRANSITIONS_PER_SESSION} writes and as many inputs, "
            f"got {len(writes)} and {len(inputs)}"
        )
    at = events[0].at
    count = max(sessions, 200)

    began = time.perf_counter()
    for i in range(count):
        pure = new_session(POLICY, APPLICANT, session_id=f"pure-{i}", at=at)
        pure, _ = AuditTrail.created(pure, at=at)
        for event in inputs:
            result = transition(POLICY, pure, event)
            pure, _ = AuditTrail.transition(
                result.session, event, result.effects, at=at
            )
    pure_time = (time.perf_counter() - began) / count / TRANSITIONS_PER_SESSION

    # Each session has an applicant of its own, whose JSON is new to the
    # cache of the session's parts.
    copies = []
    for _ in range(count):
        applicant = attrs.evolve(APPLICANT)
        copies.append(
            [(attrs.evolve(written, applicant=applicant), kw) for written, kw in writes]
        )
    began = time.perf_counter()
    for one in copies:
        for written, kwargs in one:
            session_to_json(written)
            for effect in kwargs.get("effects", ()):
                effect_to_json(effect)
            for event in kwargs.get("audit", ()):
                event.to_json()
    json_time = (time.perf_counter() - began) / count / TRANSITIONS_PER_SESSION
    calls = len(writes) + store.completions
    return Floor(
        runtime=runtime,
        pure=pure_time,
        json=json_time,
        writes=calls / TRANSITIONS_PER_SESSION,
    )


async def transitions(sessions: int, concurrency: int) -> None:
    """Figure 1, store by store, with ``concurrency`` sessions in flight."""
    least = await floor(sessions, concurrency)
    how = "serial" if concurrency == 1 else f"{concurrency} in flight"
    print(
        f"{'memory':9} {how:13} {1 / least.runtime:8.0f} transitions/s: the runtime "
        f"{least.runtime * 1e6:.0f} us a transition (core and audit {least.pure * 1e6:.0f} "
        f"us), its writes' JSON {least.json * 1e6:.0f} us"
    )
    with tempfile.TemporaryDirectory() as tmp:
        scratch = f"bench_{uuid4().hex[:8]}"
        targets = {
            "sqlite": (f"sqlite://{tmp}/bench.db", f"{tmp}/raw.db"),
            "postgres": (f"{POSTGRES}&schema={scratch}", ""),
            "redis": (f"{REDIS}?prefix={scratch}", ""),
        }
        for kind, (url, raw_target) in targets.items():
            store = store_from_url(url)
            if not await reachable(kind, store):
                continue
            warmup = max(sessions // 10, 1)
            try:
                ours = await verifier_rate(store, sessions, concurrency, warmup=warmup)
                raw = await raw_rate(
                    kind, raw_target, sessions, concurrency, warmup=warmup
                )
            finally:
                await store.aclose()
                await drop(kind, scratch)
            ratio = ours / raw
            verdict = "ok" if ratio >= 0.5 else "MISS"
            print(
                f"{kind:9} {how:13} {ours:8.0f} transitions/s, raw upsert "
                f"{raw:8.0f}/s, ratio {ratio:.2f} (goal >= 0.5: {verdict}); "
                f"{least.ceilings(raw, concurrency)}"
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


async def until_done(schema: str) -> None:
    """Return once no effect in ``schema`` is pending.

    The probe shares the two cores with what it measures, so it is one
    connection counting rows every tenth of a second (listing the pending
    effects through a new store each time cost the workers about a fifth of
    the machine).
    """
    import asyncpg

    conn = await asyncpg.connect(POSTGRES)
    try:
        count = f'SELECT count(*) FROM "{schema}".effects'  # noqa: S608
        while await conn.fetchval(count):  # noqa: ASYNC110 - the workers are other processes
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used by these processes and their reaped children (Linux ``/proc``), else 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone, or no /proc
            continue
        total += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return total / _TICKS


def postgres_pids() -> list[int]:
    """The local PostgreSQL server's processes (none when it is elsewhere)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@attrs.frozen
class WorkerRun:
    """One timed resumption of orphaned sessions by worker processes."""

    seconds: float
    worker_cpu: float  # CPU seconds of the worker processes
    server_cpu: float  # CPU seconds of the local PostgreSQL server


async def worker_run(processes: int, sessions: int, latency: float) -> WorkerRun:
    """``processes`` worker processes resume ``sessions`` orphans (start-up excluded)."""
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
        env = {**os.environ, "BENCH_GATE": str(gate), "BENCH_LATENCY": str(latency)}
        workers = [
            subprocess.Popen(command, cwd=HERE, env=env)  # noqa: S603, ASYNC220 - our own command
            for _ in range(processes)
        ]
        while len(list(signals.glob("ready-*"))) < processes:  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.01)
        pids = [process.pid for process in workers]
        worker_cpu, server_cpu = cpu_seconds(pids), cpu_seconds(postgres_pids())
        gate.touch()
        began = time.perf_counter()
        await until_done(scratch)
        elapsed = time.perf_counter() - began
        worker_cpu = cpu_seconds(pids) - worker_cpu
        server_cpu = cpu_seconds(postgres_pids()) - server_cpu
        for process in workers:
            process.terminate()
            process.wait(30)
        return WorkerRun(elapsed, worker_cpu, server_cpu)
    finally:
        await drop("postgres", scratch)
        shutil.rmtree(signals, ignore_errors=True)


async def scaling(sessions: int) -> None:
    """Figure 2: instant effects (CPU-bound), then effects that wait on a vendor."""
    store = store_from_url(f"{POSTGRES}&schema=bench_probe")
    if not await reachable("workers", store):
        return
    await store.aclose()
    await drop("postgres", "bench_probe")
    for latency in (0.0, VENDOR_LATENCY):
        one = await worker_run(1, sessions, latency)
        two = await worker_run(2, sessions, latency)
        speedup = one.seconds / two.seconds
        verdict = "ok" if speedup >= 1.6 else "MISS"
        effects = "instant effects" if not latency else f"{latency * 1000:.0f} ms calls"
        print(
            f"workers   {sessions} orphaned sessions, {effects}: one process "
            f"{one.seconds:.2f}s, two {two.seconds:.2f}s, speed-up {speedup:.2f}x "
            f"(goal >= 1.6x: {verdict}; {os.cpu_count()} cores, start-up excluded)"
        )
        if one.server_cpu and not latency:
            # Two workers and the server share the cores: at best they do
            # cores / (worker + server CPU per session) sessions a second,
            # against one worker's 1 / (its CPU per session).
            worker, server = one.worker_cpu / sessions, one.server_cpu / sessions
            bound = min(2.0, (os.cpu_count() or 2) * worker / (worker + server))
            print(
                f"          CPU a session (one worker): worker {worker * 1e3:.2f} ms, "
                f"PostgreSQL {server * 1e3:.2f} ms; two workers can reach at most "
                f"{bound:.2f}x a CPU-bound one on these cores"
            )


WAITERS = 40
TYPING = 3.0  # seconds: the longest pause before replica 2 takes a code
SMS = Policy(name="wait", version="1", steps=[Step(id="sms", channel="sms_code")])


def sms() -> ScriptedChannel:
    """A step that waits for the code ``1``."""
    return ScriptedChannel(
        "sms_code", [Scripted.waits(Scripted.passes(), expect={"code": "1"})]
    )


class Counted:
    """A store that counts its loads and, unless ``notified``, hides its change feed."""

    def __init__(self, store: SessionStore, *, notified: bool) -> None:
        self._store = store
        self._notified = notified
        self.loads = 0

    def __getattr__(self, name: str) -> Any:
        if not self._notified and name in {"subscribe", "notifies_every_writer"}:
            raise AttributeError(name)
        return getattr(self._store, name)

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        self.loads += 1
        return await self._store.load(session_id)


async def seen_after(
    url: str, waiters: int, typing: float, *, notified: bool
) -> tuple[float, float]:
    """Median seconds from replica 2's submission to replica 1's verdict, and loads per wait."""
    first, second = store_from_url(url), store_from_url(url)
    counted = Counted(first, notified=notified)
    one = Verifier(SMS, channels=[sms()], store=counted)  # type: ignore[arg-type]
    two = Verifier(SMS, channels=[sms()], store=second)
    rng = random.Random(7)
    delays: list[float] = []

    async def session(_: int) -> None:
        started = await two.start(APPLICANT)
        sid = started.session_id
        await two.challenge(sid, "sms")
        await one.challenge(sid, "sms")
        waiter = asyncio.ensure_future(one.wait(sid))
        await asyncio.sleep(rng.uniform(0, typing))
        submitted = time.perf_counter()
        await two.submit(sid, "sms", {"code": "1"})
        await waiter
        delays.append(time.perf_counter() - submitted)

    try:
        await one.challenge((await two.start(APPLICANT)).session_id, "sms")  # warm
        counted.loads = 0
        await in_flight(waiters, waiters, session)
    finally:
        await one.aclose()
        await two.aclose()
        await first.aclose()
        await second.aclose()
    return statistics.median(delays), counted.loads / waiters


async def waiting(waiters: int, typing: float) -> None:
    """Figure 3."""
    scratch = f"bench_{uuid4().hex[:8]}"
    targets = {
        "postgres": f"{POSTGRES}&schema={scratch}",
        "redis": f"{REDIS}?prefix={scratch}",
    }
    for kind, url in targets.items():
        store = store_from_url(url)
        if not await reachable(kind, store):
            continue
        try:
            polled, polled_loads = await seen_after(
                url, waiters, typing, notified=False
            )
            notified, notified_loads = await seen_after(
                url, waiters, typing, notified=True
            )
        finally:
            await store.aclose()
            await drop(kind, scratch)
        ratio = notified / polled
        verdict = "ok" if ratio <= 0.1 else "MISS"
        print(
            f"{kind:9} waiting       verdict seen on the other replica after "
            f"{notified * 1000:6.1f} ms notified ({notified_loads:.1f} loads a wait), "
            f"{polled * 1000:6.1f} ms polled ({polled_loads:.1f} loads), median of "
            f"{waiters}; ratio {ratio:.3f} (target <= 0.1: {verdict})"
        )


ROUNDS = 5


async def notification_cost(sessions: int, concurrency: int, rounds: int) -> None:
    """Figure 4, store by store."""
    targets = {"postgres": f"{POSTGRES}&schema=", "redis": f"{REDIS}?prefix="}
    how = "serial" if concurrency == 1 else f"{concurrency} in flight"
    for kind, base in targets.items():
        scratch = f"bench_{uuid4().hex[:8]}"
        url = base + scratch
        probe = store_from_url(url)
        if not await reachable(kind, probe):
            continue
        await probe.aclose()
        rates: dict[str, list[float]] = {"off": [], "on": [], "on, replica": []}
        try:
            for _ in range(rounds):
                for label, measured in rates.items():
                    measured.append(
                        await notified_rate(url, sessions, concurrency, label)
                    )
        finally:
            await drop(kind, scratch)
        off, on, other = (statistics.median(rates[label]) for label in rates)
        print(
            f"{kind:9} {how:13} notifications off {off:6.0f} transitions/s, "
            f"on {on:6.0f} ({on / off:.2f}x), on with another replica waiting "
            f"{other:6.0f} ({other / off:.2f}x); median of {rounds}"
        )


async def raw_notify_cost(sessions: int, concurrency: int, rounds: int) -> None:
    """Figure 4, last line: raw upserts on PostgreSQL with and without a ``pg_notify`` nobody hears."""
    import asyncpg

    async def keep_session(_: object) -> None:
        pass

    try:
        pool = await asyncpg.create_pool(
            POSTGRES,
            min_size=min(concurrency, POOL),
            max_size=min(concurrency, POOL),
            reset=keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"postgres  NOTIFY cost skipped: {exc}")
        return
    table = f"raw_{uuid4().hex[:8]}"
    await pool.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, body TEXT)")
    upsert = (
        f"WITH s AS (INSERT INTO {table} VALUES ($1, $2) ON CONFLICT (id) "  # noqa: S608
        "DO UPDATE SET body = excluded.body RETURNING id) "
    )
    notify = ", LATERAL pg_notify($3, s.id) AS n"
    statements = {
        "without": (f"{upsert}SELECT count(*) FROM s", False),  # noqa: S608
        "with": (f"{upsert}SELECT count(*) FROM s{notify}", True),  # noqa: S608
    }
    body = "x" * 2000
    count = sessions * TRANSITIONS_PER_SESSION
    rates: dict[str, list[float]] = {label: [] for label in statements}
    try:
        for _ in range(rounds):
            for label, (statement, notifies) in statements.items():
                run = uuid4().hex[:8]

                async def write(
                    i: int,
                    statement: str = statement,
                    notifies: bool = notifies,
                    run: str = run,
                ) -> None:
                    key = f"{run}-{i // 2}"
                    channel = (f"bench.{key}",) if notifies else ()
                    await pool.fetchval(statement, key, body, *channel)

                began = time.perf_counter()
                await in_flight(count, concurrency, write)
                rates[label].append(count / (time.perf_counter() - began))
    finally:
        await pool.execute(f"DROP TABLE {table}")
        await pool.close()
    without, with_ = (statistics.median(rates[label]) for label in statements)
    how = "serial" if concurrency == 1 else f"{concurrency} in flight"
    print(
        f"postgres  {how:13} raw upsert {without:6.0f}/s, with a NOTIFY nobody "
        f"listens for {with_:6.0f}/s ({with_ / without:.2f}x); median of {rounds}"
    )


async def notified_rate(url: str, sessions: int, concurrency: int, how: str) -> float:
    """Figure 1's Verifier rate, with notifications ``off``, ``on``, or ``on, replica``.

    ``on, replica``: a second store on the same schema or prefix has a
    waiter subscribed to a session nobody writes.
    """
    store = store_from_url(url + ("&notifications=off" if how == "off" else ""))
    other = store_from_url(url)
    try:
        if how == "on, replica":
            woken = asyncio.Event()
            other.subscribe("nobody", woken.set)  # type: ignore[attr-defined]
            await woken.wait()  # its listener is up and listens
        return await verifier_rate(store, sessions, concurrency)
    finally:
        await store.aclose()
        await other.aclose()


def main() -> None:
    """Run the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--figure",
        type=int,
        action="append",
        choices=range(1, 5),
        help="run only this figure (repeat for several; default: all)",
    )
    args = parser.parse_args()
    figures = set(args.figure or range(1, 5))
    sessions = 30 if args.quick else 1000
    if 1 in figures:
        asyncio.run(transitions(sessions, 1))
        asyncio.run(transitions(sessions, CONCURRENCY))
    if 3 in figures:
        asyncio.run(
            waiting(8 if args.quick else WAITERS, 0.3 if args.quick else TYPING)
        )
    if 4 in figures:
        for concurrency in (1, CONCURRENCY):
            count = sessions
            rounds = 1 if args.quick else ROUNDS
            asyncio.run(notification_cost(count, concurrency, rounds))
            asyncio.run(raw_notify_cost(count, concurrency, rounds))
    if 2 in figures and not args.quick:
        asyncio.run(scaling(2000))


if __name__ == "__main__":
    main()
