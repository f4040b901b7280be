"""What only the SQLite store does: durability, shared files, WAL, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from multiverify import Applicant, Policy, Step, Verifier
from multiverify._audit import AuditTrail
from multiverify._serde import dumps
from multiverify._session import ScheduleTimer, Session
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    StoreUnavailableError,
)
from multiverify.stores import DueTimer, SqliteStore, _sqlite
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

MakeSession = Callable[[str], Session]

SMS_POLICY = Policy(
    name="p", version="1", steps=[Step(id="sms", channel="sms_code", timeout="30s")]
)


def timer(effect_id: str) -> ScheduleTimer:
    """A small effect."""
    return ScheduleTimer(effect_id=effect_id, timer_id="deadline", due_at=T0)


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Run one query on the file through a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def newer_file(path: Path) -> Path:
    """A store file as a newer multiverify (schema version 99) left it."""
    async with SqliteStore(path):
        pass
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO schema_version VALUES (99, 'later')")
    db.close()
    return path


@attrs.define
class FixedClock:
    """A clock that always tells the same time."""

    at: datetime

    def now(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float, /) -> None:
        return None


class TestSqliteStore:
    async def test_survives_close_and_reopen(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """Everything written is there again in a new store on the same file."""
        path = tmp_path / "verify.db"
        session, event = AuditTrail.created(make_session("s1"), at=T0)
        async with SqliteStore(path) as store:
            await store.create(
                session, effects=[timer("e1"), timer("e2")], audit=[event]
            )
            await store.save(session, expected_version=1)
            await store.complete_effect("s1", "e1")
            await store.schedule_timer("s1", "deadline", T0)
            assert await store.record_event_once("s1", "evt") is True

        async with SqliteStore(str(path)) as reopened:
            assert await reopened.load("s1") == (session, 2)
            assert [p.effect for p in await reopened.pending_effects()] == [timer("e2")]
            assert await reopened.timers() == [
                DueTimer(session_id="s1", timer_id="deadline", due_at=T0)
            ]
            assert await reopened.record_event_once("s1", "evt") is False
            assert await reopened.audit_events() == [event]
            assert await reopened.session_ids() == ["s1"]

    async def test_two_stores_share_one_file(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """Two stores on one file (two replicas) see each other's writes, and CAS holds between them."""
        path = tmp_path / "shared.db"
        session = make_session("s1")
        async with SqliteStore(path) as one, SqliteStore(path) as two:
            await one.create(session)
            assert await two.load("s1") == (session, 1)
            with pytest.raises(ConcurrentUpdateError):
                await two.create(session)

            mine = attrs.evolve(session, inputs=1)
            assert await one.save(mine, expected_version=1, effects=[timer("one")]) == 2
            with pytest.raises(ConcurrentUpdateError) as info:
                await two.save(session, expected_version=1, effects=[timer("two")])

            assert info.value.expected_version == 1
            assert await two.load("s1") == (mine, 2)
            assert [p.effect.effect_id for p in await two.pending_effects()] == ["one"]
            assert await one.record_event_once("s1", "evt") is True
            assert await two.record_event_once("s1", "evt") is False

    async def test_racing_replicas_one_wins(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """Saves racing from the same version through several stores: exactly one wins."""
        path = tmp_path / "race.db"
        session = make_session("s1")
        stores = [SqliteStore(path) for _ in range(4)]
        try:
            await stores[0].create(session)

            async def attempt(number: int) -> bool:
                try:
                    await stores[number % len(stores)].save(
                        attrs.evolve(session, inputs=number),
                        expected_version=1,
                        effects=[timer(f"e{number}")],
                    )
                except ConcurrentUpdateError:
                    return False
                return True

            won = await asyncio.gather(*(attempt(number) for number in range(16)))

            assert won.count(True) == 1
            winner = won.index(True)
            loaded, version = await stores[1].load("s1")
            assert (loaded.inputs, version) == (winner, 2)
            assert [p.effect.effect_id for p in await stores[2].pending_effects()] == [
                f"e{winner}"
            ]
        finally:
            for store in stores:
                await store.aclose()

    async def test_wal_and_connection_settings(self, tmp_path: Path) -> None:
        """The file is in WAL mode; the connection syncs NORMAL and waits busy_timeout."""
        path = tmp_path / "wal.db"
        async with SqliteStore(path, busy_timeout=timedelta(seconds=2.5)) as store:
            settings = await store._run(
                lambda db: [
                    db.execute(f"PRAGMA {name}").fetchone()[0]
                    for name in ("journal_mode", "synchronous", "busy_timeout")
                ]
            )

        assert settings == ["wal", 1, 2500]
        assert query(path, "PRAGMA journal_mode") == [("wal",)]

    async def test_schema_version_recorded_once(self, tmp_path: Path) -> None:
        """Opening records the schema version; reopening applies nothing again."""
        path = tmp_path / "schema.db"
        clock = FixedClock(T0)
        async with SqliteStore(path, clock=clock):
            pass
        async with SqliteStore(path, clock=FixedClock(T0 + timedelta(days=1))):
            pass

        assert query(path, "SELECT version, applied_at FROM schema_version") == [
            (version, T0.isoformat())
            for version in range(1, _sqlite.SCHEMA_VERSION + 1)
        ]
        tables = {name for (name,) in query(path, "SELECT name FROM sqlite_master")}
        assert {
            "sessions",
            "effects",
            "timers",
            "events_seen",
            "audit",
            "quota_entries",
            "shared_values",
            "queue_items",
        } <= tables

    async def test_older_file_is_migrated_and_keeps_its_data(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """A file at schema version 1 gets the later migrations on open; its sessions stay."""
        path = tmp_path / "v1.db"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            _sqlite._migrate(db, T0.isoformat(), upto=1)
            session = make_session("s1")
            db.execute(
                "INSERT INTO sessions (session_id, version, status, body, "
                "created_at, updated_at) VALUES ('s1', 1, 'active', ?, '', '')",
                (dumps(session),),
            )
            db.execute(
                "INSERT INTO effects (session_id, effect_id, body) VALUES ('s1', 'e1', ?)",
                (dumps(timer("e1")),),
            )
        finally:
            db.close()

        async with SqliteStore(path, clock=FixedClock(T0)) as store:
            # An effect pending before claims existed is free to claim.
            claimed = await store.claim_effects("w", at=T0, until=T0)
            assert [p.effect for p in claimed] == [timer("e1")]
            assert [
                v for (v, _) in query(path, "SELECT * FROM schema_version")
            ] == list(range(1, _sqlite.SCHEMA_VERSION + 1))
            assert await store.load("s1") == (session, 1)
            assert await store.put_value("k", "v", at=T0, ttl=10)

    async def test_a_file_at_version_3_gets_the_expiry_index(
        self, tmp_path: Path
    ) -> None:
        """Migration 4 indexes shared values and quota entries by expiry, which the sweep reads."""
        path = tmp_path / "v3.db"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            _sqlite._migrate(db, T0.isoformat(), upto=3)
        finally:
            db.close()

        async with SqliteStore(path, clock=FixedClock(T0)) as store:
            await store.put_value("k", "v", at=T0, ttl=10)
            await store.consume("k", at=T0, window=10, limit=1)
            plans = [
                query(
                    path,
                    f"EXPLAIN QUERY PLAN SELECT * FROM {table} "  # noqa: S608 - a test
                    "WHERE expires_utc <= '2030'",
                )
                for table in ("shared_values", "quota_entries")
            ]
        assert "shared_values_by_expiry" in str(plans[0])
        assert "quota_entries_by_expiry" in str(plans[1])

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file from a newer multiverify raises ConfigurationError instead of being used."""
        path = await newer_file(tmp_path / "newer.db")
        store = SqliteStore(path)

        with pytest.raises(ConfigurationError, match="schema version 99"):
            await store.open()
        with pytest.raises(ConfigurationError):
            await store.session_ids()
        await store.aclose()

    async def test_a_refused_file_leaves_no_thread_running(
        self, tmp_path: Path
    ) -> None:
        """``async with`` on a file it refuses stops the thread it started for the check."""
        path = await newer_file(tmp_path / "newer.db")
        before = set(threading.enumerate())

        with pytest.raises(ConfigurationError, match="schema version 99"):
            async with SqliteStore(path):
                pass  # pragma: no cover - refused on entry

        started = set(threading.enumerate()) - before
        for thread in started:
            thread.join(timeout=5)  # ends at once, unless left waiting for calls
        assert not [thread for thread in started if thread.is_alive()]

    @pytest.mark.parametrize(
        "content",
        [b"name,amount\n1,2\n", b"SQLite format 3\x00" + b"\x10" * 200],
        ids=["not-a-database", "damaged"],
    )
    async def test_a_file_that_is_no_database_is_a_configuration_error(
        self, tmp_path: Path, content: bytes
    ) -> None:
        """A CSV or a damaged file raises ConfigurationError naming the file, untouched."""
        path = tmp_path / "sessions.db"
        path.write_bytes(content)
        store = SqliteStore(path)
        with pytest.raises(
            ConfigurationError, match="is not a SQLite database"
        ) as info:
            await store.open()
        assert str(path) in info.value.message
        await store.aclose()
        assert path.read_bytes() == content

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("missing/sessions.db", "no directory {parent}"),
            ("folder", "it is a directory"),
            ("file.txt/sessions.db", "no directory {parent}"),
            ("x" * 300 + ".db", "it cannot be created or opened there"),
        ],
        ids=["missing-directory", "a-directory", "under-a-file", "name-too-long"],
    )
    async def test_a_path_that_cannot_be_opened_is_a_configuration_error(
        self, tmp_path: Path, name: str, reason: str
    ) -> None:
        """A path SQLite cannot open raises ConfigurationError naming it and why."""
        (tmp_path / "folder").mkdir()
        (tmp_path / "file.txt").write_text("")
        path = tmp_path / name
        store = SqliteStore(path)
        with pytest.raises(ConfigurationError) as info:
            await store.open()
        assert info.value.message.startswith(
            f"cannot open {path} as a SQLite database: "
            + reason.format(parent=path.parent)
        )
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        await store.aclose()

    async def test_a_file_it_may_not_write_is_a_configuration_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file opened read-only (no write permission) fails its migration: named too."""

        def read_only(*_args: object, **_kwargs: object) -> None:
            exc = sqlite3.OperationalError("attempt to write a readonly database")
            exc.sqlite_errorname = "SQLITE_READONLY"
            raise exc

        monkeypatch.setattr(_sqlite, "_migrate", read_only)
        path = tmp_path / "sessions.db"
        store = SqliteStore(path)
        with pytest.raises(ConfigurationError) as info:
            await store.open()
        assert info.value.message == (
            f"cannot open {path} as a SQLite database: it cannot be created or "
            "opened there (permissions, a read-only file system, a name too "
            "long) (attempt to write a readonly database)"
        )
        await store.aclose()

    def test_a_path_with_a_nul_byte_is_a_configuration_error(self) -> None:
        """A NUL byte in the path is refused when the store is built."""
        with pytest.raises(ConfigurationError, match="NUL byte"):
            SqliteStore("sessions\0.db")

    async def test_timestamps_come_from_the_clock(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """created_at is the session's; updated_at is the store clock's time of the last write."""
        path = tmp_path / "clock.db"
        clock = FixedClock(T0 + timedelta(hours=1))
        async with SqliteStore(path, clock=clock) as store:
            await store.create(make_session("s1"))
            clock.at = T0 + timedelta(hours=2)
            await store.save(make_session("s1"), expected_version=1)

        assert query(path, "SELECT status, created_at, updated_at FROM sessions") == [
            (
                "active",
                T0.isoformat(),
                (T0 + timedelta(hours=2)).isoformat(),
            )
        ]

    async def test_naive_due_times_are_utc(self, tmp_path: Path) -> None:
        """A naive due time is ordered as UTC and comes back as given."""
        async with SqliteStore(tmp_path / "naive.db") as store:
            naive = datetime(2025, 3, 1, 9, 5)  # noqa: DTZ001 - naive on purpose
            await store.schedule_timer("s1", "naive", naive)

            assert await store.due_timers(T0) == []
            due = await store.due_timers(T0 + timedelta(minutes=5))

        assert due == [DueTimer(session_id="s1", timer_id="naive", due_at=naive)]

    async def test_locked_file_fails_and_writes_nothing(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """When another connection holds the write lock past busy_timeout, a save fails whole, as a store unavailable."""
        path = tmp_path / "locked.db"
        session = make_session("s1")
        async with SqliteStore(path, busy_timeout=0) as store:
            await store.create(session)
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                with pytest.raises(StoreUnavailableError, match="locked"):
                    await store.save(session, expected_version=1, effects=[timer("e1")])
                other.execute("ROLLBACK")
            finally:
                other.close()

            assert await store.load("s1") == (session, 1)
            assert await store.pending_effects() == []
            assert await store.save(session, expected_version=1) == 2

    async def test_a_timer_due_while_the_file_is_locked_fires_later(
        self, tmp_path: Path, applicant: Applicant
    ) -> None:
        """A timer that comes due while another process holds the write lock is tried again, and fires once the lock is free."""
        path = tmp_path / "locked.db"
        clock = FakeClock()
        waits = ScriptedChannel(
            "sms_code", [Scripted.waits(Scripted.passes(), expect={"code": "1"})]
        )
        async with (
            SqliteStore(path, busy_timeout=0) as store,
            Verifier(
                SMS_POLICY, channels=[waits], store=store, clock=clock, lease=9
            ) as verifier,
        ):
            sid = (await verifier.start(applicant)).session_id
            await verifier.wait_idle()
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                await clock.advance(30)  # the step's timeout, while locked
                await verifier.wait_idle()
                other.execute("ROLLBACK")
            finally:
                other.close()
            assert (await verifier.get(sid)).verdict is None

            await clock.advance(3)  # a third of the lease: the timer's retry
            await verifier.wait_idle()

            session = await verifier.get(sid)
            assert session.verdict is not None
            assert await store.timers(sid) == []

    async def test_reopens_after_close(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """A closed store opens the file again on its next use."""
        store = SqliteStore(tmp_path / "again.db")
        await store.create(make_session("s1"))
        await store.aclose()

        try:
            assert await store.session_ids() == ["s1"]
        finally:
            await store.aclose()

    def test_negative_busy_timeout(self, tmp_path: Path) -> None:
        """A negative busy_timeout is a wiring mistake."""
        with pytest.raises(ConfigurationError, match="busy_timeout"):
            SqliteStore(tmp_path / "x.db", busy_timeout=-1)

    def test_repr(self, tmp_path: Path) -> None:
        """The repr names the class by its public path and shows the file."""
        path = tmp_path / "r.db"

        assert (
            repr(SqliteStore(path))
            == f"<multiverify.stores.SqliteStore(path={str(path)!r})>"
        )
        assert not path.exists()


class TestWorkerBatches:
    """Calls queued together share one transaction, and fail only alone."""

    async def test_queued_writes_share_transactions(
        self,
        tmp_path: Path,
        make_session: MakeSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Writes queued behind a busy worker commit in batches; a lost CAS fails alone."""
        monkeypatch.setattr(_sqlite, "_BATCH", 3)
        async with SqliteStore(tmp_path / "batch.db") as store:
            for number in range(6):
                await store.create(make_session(f"s{number}"))
            gate = threading.Event()
            blocker = asyncio.ensure_future(store._run(lambda _: gate.wait(5)))
            await asyncio.sleep(0)
            saves = [
                asyncio.ensure_future(
                    store.save(
                        make_session(f"s{number}"),
                        expected_version=1 if number != 2 else 7,
                        effects=[timer(f"e{number}")],
                    )
                )
                for number in range(6)
            ]
            loads = asyncio.ensure_future(store.load("s0"))
            abandoned = asyncio.ensure_future(store.load("s1"))
            await asyncio.sleep(0.01)
            abandoned.cancel()  # its call still runs; the result goes nowhere
            gate.set()
            assert await blocker is True
            outcomes = await asyncio.gather(*saves, return_exceptions=True)
            assert [o if isinstance(o, int) else type(o) for o in outcomes] == [
                2,
                2,
                ConcurrentUpdateError,
                2,
                2,
                2,
            ]
            assert (await loads)[1] == 2
            pending = await store.pending_effects()
            assert [p.effect.effect_id for p in pending] == [
                "e0",
                "e1",
                "e3",
                "e4",
                "e5",
            ]

    async def test_a_failing_write_runs_its_batch_again_one_by_one(
        self, tmp_path: Path
    ) -> None:
        """An unexpected error rolls the batch back; the other calls still apply, alone."""
        worker = _sqlite._Worker(
            str(tmp_path / "fail.db"), busy_timeout=1.0, clock=FixedClock(T0)
        )
        loop = asyncio.get_running_loop()

        def schedule(timer_id: str) -> Callable[[sqlite3.Connection], None]:
            def call(db: sqlite3.Connection) -> None:
                db.execute(
                    "INSERT INTO timers (session_id, timer_id, due_utc, due_at) "
                    "VALUES ('s1', ?, '', '')",
                    (timer_id,),
                )
                if timer_id == "bad":
                    raise RuntimeError("broken after writing")

            return call

        def names(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT timer_id FROM timers ORDER BY seq").fetchall()
            return [name for (name,) in rows]

        jobs = [
            _sqlite._Job(schedule(name), True, loop, loop.create_future())
            for name in ("one", "bad", "two")
        ]
        jobs.append(_sqlite._Job(names, False, loop, loop.create_future()))
        done = worker._execute(jobs)
        assert [(ok, value if ok else type(value)) for _, ok, value in done] == [
            (True, None),
            (False, RuntimeError),
            (True, None),
            (True, ["one", "two"]),
        ]
        # The connection was opened on this thread, so the worker's thread
        # cannot close it: the error reaches the caller, who closes it here.
        with pytest.raises(sqlite3.ProgrammingError):
            await worker.close()
        assert worker._db is None
        for job in jobs:
            job.future.cancel()

    async def test_a_locked_file_fails_the_writes_of_a_batch(
        self, tmp_path: Path
    ) -> None:
        """When the write lock cannot be had, a batch's writes fail and its reads run."""
        path = tmp_path / "locked.db"
        async with SqliteStore(path):
            pass
        worker = _sqlite._Worker(str(path), busy_timeout=0, clock=FixedClock(T0))
        loop = asyncio.get_running_loop()
        worker._connection()  # opened (and migrated) before the lock is taken
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            jobs = [
                _sqlite._Job(
                    lambda db: db.execute("DELETE FROM timers"),
                    True,
                    loop,
                    loop.create_future(),
                ),
                _sqlite._Job(
                    lambda db: db.execute("SELECT COUNT(*) FROM timers").fetchone(),
                    False,
                    loop,
                    loop.create_future(),
                ),
            ]
            done = worker._execute(jobs)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert isinstance(done[0][2], sqlite3.OperationalError)
        assert done[1][1:] == (True, (0,))
        worker._connection().close()

    async def test_an_unexpected_worker_error_reaches_every_caller(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Even a bug in the worker fails its calls instead of leaving them waiting."""

        def broken(self: object, batch: object) -> object:
            raise RuntimeError("bug")

        monkeypatch.setattr(_sqlite._Worker, "_execute", broken)
        store = SqliteStore(tmp_path / "bug.db")
        with pytest.raises(RuntimeError, match="bug"):
            await store.session_ids()
        await store.aclose()


def thread_of(_: sqlite3.Connection) -> int:
    """The thread a call ran on."""
    return threading.get_ident()


def held_checkpoints(
    monkeypatch: pytest.MonkeyPatch, *, every: int
) -> tuple[threading.Event, threading.Event]:
    """Checkpoint every ``every`` commits, each held until released: (copying, release)."""
    copying = threading.Event()
    release = threading.Event()
    checkpoint = _sqlite._checkpoint

    def held(db: sqlite3.Connection) -> None:
        copying.set()
        release.wait(5)
        checkpoint(db)

    monkeypatch.setattr(_sqlite, "_CHECKPOINT_EVERY", every)
    monkeypatch.setattr(_sqlite, "_checkpoint", held)
    return copying, release


class TestCallsRunAtOnce:
    """Short calls run on the event loop's thread when they need not wait; the rest on the worker."""

    async def test_an_uncontended_short_call_runs_on_the_loop_thread(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """Loads and saves skip the thread hop; scans, and calls not marked short, do not."""
        here = threading.get_ident()
        async with SqliteStore(tmp_path / "inline.db") as store:
            await store.create(make_session("s1"))
            assert await store._run(thread_of, inline=True) == here
            assert await store._run(thread_of, write=True, inline=True) == here
            assert await store._run(thread_of) != here
            settings = await store._run(
                lambda db: [
                    db.execute(f"PRAGMA {name}").fetchone()[0]
                    for name in ("busy_timeout", "synchronous", "wal_autocheckpoint")
                ],
                inline=True,
            )
            # It never waits for another writer, nor for the disk.
            assert settings == [0, 1, 0]
            assert await store.save(make_session("s1"), expected_version=1) == 2
            assert await store.load("s1") == (make_session("s1"), 2)

    async def test_calls_of_many_tasks_in_one_turn_go_to_the_worker(
        self, tmp_path: Path
    ) -> None:
        """One task a turn of the loop runs its calls at once; others calling in that turn queue (and batch)."""
        here = threading.get_ident()
        async with SqliteStore(tmp_path / "turns.db") as store:
            await store.open()
            await asyncio.sleep(0)  # a turn of its own
            one_task = [
                await store._run(thread_of, inline=True),
                await store._run(thread_of, write=True, inline=True),
            ]
            assert one_task == [here, here]
            await asyncio.sleep(0)
            first, second, third = await asyncio.gather(
                *(store._run(thread_of, inline=True) for _ in range(3))
            )
            assert first == here
            assert second == third != here
            await asyncio.sleep(0)
            assert await store._run(thread_of, inline=True) == here

    async def test_queued_calls_keep_their_order(self, tmp_path: Path) -> None:
        """While the worker has calls queued, a short call queues behind them."""
        async with SqliteStore(tmp_path / "order.db") as store:
            await store.open()
            gate = threading.Event()
            blocker = asyncio.ensure_future(store._run(lambda _: gate.wait(5)))
            await asyncio.sleep(0)
            behind = asyncio.ensure_future(store._run(thread_of, inline=True))
            await asyncio.sleep(0.01)
            assert not behind.done()
            gate.set()
            assert await blocker is True
            assert await behind != threading.get_ident()
            # Once the queue is empty, short calls run at once again.
            assert await store._run(thread_of, inline=True) == threading.get_ident()

    async def test_a_write_that_would_wait_waits_on_the_worker(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """Another process's write lock sends a save to the worker, which waits for it; the loop runs on."""
        path = tmp_path / "wait.db"
        async with SqliteStore(path, busy_timeout=5) as store:
            await store.create(make_session("s1"))
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                # Reads do not wait for writers (WAL): they still run at once.
                assert await store._run(thread_of, inline=True) == threading.get_ident()
                save = asyncio.ensure_future(
                    store.save(make_session("s1"), expected_version=1)
                )
                await asyncio.sleep(0.05)  # the loop is not blocked meanwhile
                assert not save.done()
                other.execute("ROLLBACK")
            finally:
                other.close()
            assert await save == 2
            assert await store._run(thread_of, inline=True) == threading.get_ident()

    async def test_a_read_that_would_wait_waits_on_the_worker(
        self, tmp_path: Path
    ) -> None:
        """A read that SQLite answers "busy" at once (a file held exclusively) runs again on the worker."""
        here = threading.get_ident()

        def read(_: sqlite3.Connection) -> str:
            if threading.get_ident() == here:
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorname = "SQLITE_BUSY"
                raise busy
            return "read on the worker"

        async with SqliteStore(tmp_path / "busy.db") as store:
            await store.open()
            assert await store._run(read, inline=True) == "read on the worker"

    async def test_a_failing_call_writes_nothing(
        self, tmp_path: Path, make_session: MakeSession
    ) -> None:
        """A short write that fails rolls back, and its error reaches the caller."""
        async with SqliteStore(tmp_path / "fail.db") as store:
            await store.create(make_session("s1"))

            def half(db: sqlite3.Connection) -> None:
                db.execute("DELETE FROM sessions")
                db.execute("SELECT * FROM no_such_table")

            with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
                await store._run(half, write=True, inline=True)

            def broken(db: sqlite3.Connection) -> None:
                db.execute("DELETE FROM sessions")
                raise RuntimeError("bug")

            with pytest.raises(RuntimeError, match="bug"):
                await store._run(broken, write=True, inline=True)
            with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
                await store._run(
                    lambda db: db.execute("SELECT * FROM no_such_table"), inline=True
                )
            assert await store.session_ids() == ["s1"]

    async def test_the_worker_checkpoints_what_short_writes_logged(
        self,
        tmp_path: Path,
        make_session: MakeSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Every so many short writes, the worker copies the log into the database file."""
        monkeypatch.setattr(_sqlite, "_CHECKPOINT_EVERY", 5)
        path = tmp_path / "checkpoint.db"
        async with SqliteStore(path) as store:
            await store.open()
            for number in range(4):
                await store.create(make_session(f"s{number}"))
            size = path.stat().st_size  # the four sessions are in the log only
            await store.create(make_session("s4"))
            await store._worker.checkpointed()
            assert path.stat().st_size > size

    async def test_writes_go_on_while_the_log_is_checkpointed(
        self,
        tmp_path: Path,
        make_session: MakeSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A checkpoint waits for the disk on a thread of its own: writes run at once meanwhile, on the loop's connection."""
        copying, release = held_checkpoints(monkeypatch, every=2)
        async with SqliteStore(tmp_path / "busy.db") as store:
            await store.create(make_session("s0"))
            await store.create(make_session("s1"))  # starts the checkpoint
            assert await asyncio.to_thread(copying.wait, 5)
            inline = store._worker._inline_commits
            await store.create(make_session("s2"))
            assert store._worker._inline_commits == inline + 1  # not queued behind it
            release.set()
            await store._worker.checkpointed()
            assert await store.session_ids() == ["s0", "s1", "s2"]

    async def test_closing_waits_for_a_running_checkpoint(
        self,
        tmp_path: Path,
        make_session: MakeSession,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """``aclose`` returns once the checkpoint's connection is closed too."""
        copying, release = held_checkpoints(monkeypatch, every=1)
        store = SqliteStore(tmp_path / "closing.db")
        await store.create(make_session("s0"))  # opens the connections
        await store.create(make_session("s1"))  # at once: starts the checkpoint
        assert await asyncio.to_thread(copying.wait, 5)
        closing = asyncio.ensure_future(store.aclose())
        await asyncio.sleep(0.01)  # real time: the checkpoint runs on a thread
        assert not closing.done()
        release.set()
        await closing

    async def test_a_failed_checkpoint_is_logged(
        self,
        tmp_path: Path,
        make_session: MakeSession,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A checkpoint nobody waits for still says when it fails."""

        def fails(db: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(_sqlite, "_CHECKPOINT_EVERY", 1)
        monkeypatch.setattr(_sqlite, "_checkpoint", fails)
        async with SqliteStore(tmp_path / "bad.db") as store:
            await store.create(make_session("s1"))
            await store._worker.checkpointed()
        assert "could not checkpoint the SQLite log: disk I/O error" in caplog.text

    async def test_closing_before_the_first_call_ran_leaves_no_connection(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A store closed while its first call is still opening the file closes both connections it opens."""
        opening = threading.Event()
        connect = _sqlite._Worker._connect

        def slow_connect(self: _sqlite._Worker) -> sqlite3.Connection:
            opening.wait(5)
            return connect(self)

        monkeypatch.setattr(_sqlite._Worker, "_connect", slow_connect)
        worker = _sqlite._Worker(
            str(tmp_path / "early.db"), busy_timeout=1.0, clock=FixedClock(T0)
        )
        first = asyncio.ensure_future(worker.run(lambda _: None))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(worker.close())
        await asyncio.sleep(0.01)  # close has begun; the first call opens the file now
        opening.set()
        await first
        await closing
        assert worker._db is None
        assert worker._inline_db is None

    @pytest.mark.parametrize("path", [":memory:", ""])
    async def test_a_private_database_has_one_connection(
        self, path: str, make_session: MakeSession
    ) -> None:
        """``:memory:`` (and a temporary file) belong to one connection: every call goes to the worker's."""
        async with SqliteStore(path) as store:
            await store.create(make_session("s1"))
            assert await store.load("s1") == (make_session("s1"), 1)
            assert await store._run(thread_of, inline=True) != threading.get_ident()
