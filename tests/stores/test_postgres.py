"""What only the PostgreSQL store does: replicas on one schema, migrations, pools."""

# ruff: noqa: S608 - SQL names only the random test schema

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import attrs
import pytest
from conftest import POSTGRES_URL, drop_postgres_schema, service_missing

from multiverify._serde import dumps
from multiverify._session import ScheduleTimer, Session
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    StoreUnavailableError,
)
from multiverify.stores import DueTimer, PostgresStore, _postgres

asyncpg = pytest.importorskip("asyncpg")

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

MakeSession = Callable[[str], Session]


def timer(effect_id: str) -> ScheduleTimer:
    """A small effect."""
    return ScheduleTimer(effect_id=effect_id, timer_id="deadline", due_at=T0)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name on the test server, dropped afterwards."""
    name = f"mv_test_{uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("postgres", str(exc))
    await conn.close()
    try:
        yield name
    finally:
        await drop_postgres_schema(name)


@pytest.fixture
async def role() -> AsyncIterator[str]:
    """A login role of its own on the test server, with no privileges; dropped afterwards."""
    name = f"mv_role_{uuid4().hex[:12]}"
    await query(f'CREATE ROLE "{name}" LOGIN')
    try:
        yield name
    finally:
        await query(f'DROP OWNED BY "{name}"')
        await query(f'DROP ROLE "{name}"')


def as_role(role: str) -> str:
    """The test server's URL, logging in as ``role`` (trust authentication)."""
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


@pytest.fixture
async def replicas(schema: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, as two replicas of an app would have."""
    async with (
        PostgresStore(POSTGRES_URL, schema=schema) as one,
        PostgresStore(POSTGRES_URL, schema=schema) as two,
    ):
        yield one, two


async def query(sql: str, *args: object) -> list[tuple[object, ...]]:
    """Run one query through a connection of its own."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def created(schema: str, session: Session) -> None:
    """Store ``session`` in the schema (migrated first), through a store of its own."""
    async with PostgresStore(POSTGRES_URL, schema=schema) as store:
        await store.create(session)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TestReplicas:
    async def test_each_sees_the_others_writes(
        self,
        replicas: tuple[PostgresStore, PostgresStore],
        make_session: MakeSession,
    ) -> None:
        """Sessions, effects, timers, deliveries and audit written by one are read by the other."""
        one, two = replicas
        session = make_session("s1")
        await one.create(session, effects=[timer("e1")])

        assert await two.load("s1") == (session, 1)
        changed = attrs.evolve(session, inputs=1)
        assert await two.save(changed, expected_version=1) == 2
        assert await one.load("s1") == (changed, 2)
        assert [p.effect.effect_id for p in await two.pending_effects()] == ["e1"]
        await two.complete_effect("s1", "e1")
        assert await one.pending_effects() == []

        await one.schedule_timer("s1", "deadline", T0)
        assert await two.due_timers(T0) == [
            DueTimer(session_id="s1", timer_id="deadline", due_at=T0)
        ]
        await two.cancel_timer("s1", "deadline")
        assert await one.timers() == []

        assert await one.record_event_once("s1", "delivery-1") is True
        assert await two.record_event_once("s1", "delivery-1") is False
        assert await two.session_ids() == ["s1"]

    async def test_compare_and_set_holds_between_replicas(
        self,
        replicas: tuple[PostgresStore, PostgresStore],
        make_session: MakeSession,
    ) -> None:
        """Saves racing from both replicas at one version: exactly one wins."""
        one, two = replicas
        session = make_session("s1")
        await one.create(session)

        async def attempt(number: int) -> int | None:
            store = one if number % 2 else two
            try:
                return await store.save(
                    attrs.evolve(session, inputs=number),
                    expected_version=1,
                    effects=[timer(f"e{number}")],
                )
            except ConcurrentUpdateError:
                return None

        results = await asyncio.gather(*(attempt(number) for number in range(30)))

        winners = [n for n, result in enumerate(results) if result is not None]
        assert len(winners) == 1
        loaded, version = await two.load("s1")
        assert (loaded.inputs, version) == (winners[0], 2)
        assert [p.effect.effect_id for p in await one.pending_effects()] == [
            f"e{winners[0]}"
        ]

    async def test_deliveries_raced_from_both_replicas_count_once(
        self, replicas: tuple[PostgresStore, PostgresStore]
    ) -> None:
        """The same delivery recorded by both replicas at once is new exactly once."""
        one, two = replicas

        results = await asyncio.gather(
            *((one if n % 2 else two).record_event_once("s1", "evt") for n in range(20))
        )

        assert results.count(True) == 1

    async def test_create_raced_from_both_replicas(
        self,
        replicas: tuple[PostgresStore, PostgresStore],
        make_session: MakeSession,
    ) -> None:
        """Two replicas creating one id at once: one creates, the other conflicts."""
        one, two = replicas
        results = await asyncio.gather(
            one.create(make_session("s1")),
            two.create(make_session("s1")),
            return_exceptions=True,
        )

        assert sorted(type(result).__name__ for result in results) == [
            "ConcurrentUpdateError",
            "int",
        ]


class TestMigrations:
    async def test_recorded_once_and_reopen_is_idempotent(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """The schema version is recorded once; reopening keeps data and migrates nothing."""
        store = PostgresStore(POSTGRES_URL, schema=schema)
        await store.open()
        await store.open()
        await store.create(make_session("s1"))
        await store.aclose()
        await store.aclose()

        # A closed store opens again on its next use, as does a new one.
        assert (await store.load("s1"))[1] == 1
        await store.aclose()
        async with PostgresStore(POSTGRES_URL, schema=schema) as again:
            assert await again.session_ids() == ["s1"]

        rows = await query(
            f'SELECT version FROM "{schema}".schema_version ORDER BY version'
        )
        assert rows == [(v,) for v in range(1, _postgres.SCHEMA_VERSION + 1)]

    async def test_older_schema_is_migrated_and_keeps_its_data(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """A schema at version 1 gets the later migrations on open; its sessions stay."""
        session = make_session("s1")
        pool = await asyncpg.create_pool(POSTGRES_URL, min_size=1, max_size=2)
        try:
            store = PostgresStore(pool=pool, schema=schema)
            await store._migrate(pool, upto=1)
            await pool.execute(
                f'INSERT INTO "{schema}".sessions (session_id, version, status, '
                "body, created_at, updated_at) VALUES ('s1', 1, 'active', $1, "
                "now(), now())",
                dumps(session),
            )
            await pool.execute(
                f'INSERT INTO "{schema}".effects (session_id, effect_id, body) '
                "VALUES ('s1', 'e1', $1)",
                dumps(timer("e1")),
            )

            await store.open()

            # An effect pending before claims existed is free to claim.
            claimed = await store.claim_effects("w", at=T0, until=T0)
            assert [p.effect for p in claimed] == [timer("e1")]

            assert await store.load("s1") == (session, 1)
            assert await store.put_value("k", "v", at=T0, ttl=10)
            await store.aclose()
        finally:
            await pool.close()
        rows = await query(
            f'SELECT version FROM "{schema}".schema_version ORDER BY version'
        )
        assert rows == [(v,) for v in range(1, _postgres.SCHEMA_VERSION + 1)]
        indexes = await query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema
        )
        assert {("shared_values_by_expiry",), ("quota_entries_by_expiry",)} <= set(
            indexes
        )

    async def test_an_expiry_index_made_beforehand_is_kept(self, schema: str) -> None:
        """Migration 5 indexes shared values by expiry, keeping one created concurrently ahead."""
        pool = await asyncpg.create_pool(POSTGRES_URL, min_size=1, max_size=2)
        try:
            store = PostgresStore(pool=pool, schema=schema)
            await store._migrate(pool, upto=4)
            await pool.execute(
                "CREATE INDEX CONCURRENTLY shared_values_by_expiry "
                f'ON "{schema}".shared_values (expires_at)'
            )
            await store.open()
            await store.aclose()
        finally:
            await pool.close()

        rows = await query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 "
            "AND tablename = 'shared_values' ORDER BY indexname",
            schema,
        )
        assert rows == [("shared_values_by_expiry",), ("shared_values_pkey",)]

    async def test_session_bodies_are_compressed_with_lz4(self, schema: str) -> None:
        """A server that has LZ4 compresses session bodies with it (cheaper than pglz)."""
        async with PostgresStore(POSTGRES_URL, schema=schema) as store:
            await store.open()
        [(methods,)] = await query(
            "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        [(method,)] = await query(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = $1::regclass "
            "AND attname = 'body'",
            f'"{schema}".sessions',
        )
        if "lz4" not in methods:
            pytest.skip("this PostgreSQL has no LZ4: the migration leaves pglz")
        assert method == b"l"

    async def test_replicas_migrating_at_once_both_succeed(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """Several stores opening a fresh schema together all succeed, migrating it once."""
        stores = [PostgresStore(POSTGRES_URL, schema=schema) for _ in range(4)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
            await stores[0].create(make_session("s1"))
            assert await stores[3].session_ids() == ["s1"]
        finally:
            for store in stores:
                await store.aclose()

        rows = await query(
            f'SELECT version FROM "{schema}".schema_version ORDER BY version'
        )
        assert rows == [(v,) for v in range(1, _postgres.SCHEMA_VERSION + 1)]

    async def test_concurrent_first_calls_open_one_pool(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """Calls racing on an unopened store share the one pool it opens."""
        async with PostgresStore(POSTGRES_URL, schema=schema) as store:
            await store.aclose()
            await asyncio.gather(
                *(store.record_event_once("s1", f"k{n}") for n in range(5))
            )
            pool = store._pool
            assert pool is not None
            await store.session_ids()
            assert store._pool is pool

    async def test_timers_are_instants_in_the_database(self, schema: str) -> None:
        """Due times are stored as timestamptz; a naive time is read as UTC."""
        async with PostgresStore(POSTGRES_URL, schema=schema) as store:
            await store.schedule_timer("s1", "naive", datetime(2025, 3, 1, 9, 0))  # noqa: DTZ001
            assert await store.due_timers(T0) == [
                DueTimer(
                    session_id="s1",
                    timer_id="naive",
                    due_at=datetime(2025, 3, 1, 9, 0),  # noqa: DTZ001
                )
            ]

        rows = await query(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'timers' "
            "AND column_name = 'due_at'",
            schema,
        )
        assert rows == [("timestamp with time zone",)]

    async def test_newer_schema_is_refused(self, schema: str) -> None:
        """A schema migrated by a newer multiverify raises ConfigurationError."""
        async with PostgresStore(POSTGRES_URL, schema=schema):
            pass
        await query(
            f'INSERT INTO "{schema}".schema_version VALUES ($1, now())',
            _postgres.SCHEMA_VERSION + 1,
        )

        store = PostgresStore(POSTGRES_URL, schema=schema)
        try:
            with pytest.raises(ConfigurationError, match="newer"):
                await store.open()
        finally:
            await store.aclose()

    async def test_a_refused_schema_leaves_no_connection_open(
        self, schema: str
    ) -> None:
        """``async with`` on a schema it refuses closes the pool it opened for the check."""
        async with PostgresStore(POSTGRES_URL, schema=schema):
            pass
        await query(
            f'INSERT INTO "{schema}".schema_version VALUES ($1, now())',
            _postgres.SCHEMA_VERSION + 1,
        )
        store = PostgresStore(POSTGRES_URL, schema=schema, min_size=2, max_size=2)

        with pytest.raises(ConfigurationError, match="newer"):
            async with store:
                pass  # pragma: no cover - refused on entry

        assert store._pool is None

    async def test_a_role_that_only_reads_and_writes_uses_a_migrated_schema(
        self, schema: str, role: str, make_session: MakeSession
    ) -> None:
        """A schema migrated ahead by another role serves an app role granted only its tables."""
        async with PostgresStore(POSTGRES_URL, schema=schema):
            pass  # migrated, as ``multiverify store migrate`` does
        for grant in (
            f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
            (
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES "
                f'IN SCHEMA "{schema}" TO "{role}"'
            ),
            f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"',
        ):
            await query(grant)

        async with PostgresStore(as_role(role), schema=schema) as store:
            await store.create(make_session("s1"), effects=[timer("e1")])
            assert await store.save(make_session("s1"), expected_version=1) == 2
            assert await store.schema_version() == _postgres.SCHEMA_VERSION

    async def test_a_role_that_cannot_create_the_schema_is_told_what_it_needs(
        self, schema: str, role: str
    ) -> None:
        """Migrating without the right to create the schema is a ConfigurationError saying how to migrate."""
        store = PostgresStore(as_role(role), schema=schema)
        try:
            with pytest.raises(ConfigurationError, match="store migrate"):
                await store.open()
        finally:
            await store.aclose()


class TestPool:
    async def test_given_pool_is_left_open(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """A store on a given pool migrates through it and leaves it open on close."""
        pool = await asyncpg.create_pool(POSTGRES_URL, min_size=1, max_size=2)
        try:
            async with PostgresStore(pool=pool, schema=schema) as store:
                await store.create(make_session("s1"))
                assert "pool=<given>" in repr(store)

            assert not pool._closed
            assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".sessions') == 1
            # The store uses the pool again after being closed.
            assert (await store.load("s1"))[1] == 1
            await store.aclose()
        finally:
            await pool.close()

    async def test_own_pool_is_closed(self, schema: str) -> None:
        """aclose closes the pool the store opened."""
        store = PostgresStore(POSTGRES_URL, schema=schema, min_size=0, max_size=1)
        await store.open()
        pool = store._pool

        await store.aclose()

        assert pool._closed

    async def test_a_call_is_one_round_trip(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """A connection going back to the pool runs no reset query of its own.

        The server's record of the connection's last statement is the
        store's, not asyncpg's default reset (``SELECT pg_advisory_unlock_all();
        CLOSE ALL; UNLISTEN *; RESET ALL``).
        """
        async with PostgresStore(
            POSTGRES_URL, schema=schema, min_size=1, max_size=1
        ) as store:
            await store.create(make_session("s1"))
            pid = await store._pool.fetchval("SELECT pg_backend_pid()")
            await store.load("s1")

            [(last,)] = await query(
                "SELECT query FROM pg_stat_activity WHERE pid = $1", pid
            )

        assert "sessions" in str(last)
        assert "RESET" not in str(last).upper()

    async def test_a_transaction_left_open_is_still_rolled_back(
        self, schema: str
    ) -> None:
        """What the pool's reset must still do: no open transaction outlives a call."""
        async with PostgresStore(
            POSTGRES_URL, schema=schema, min_size=1, max_size=1
        ) as store:
            await store.open()
            connection = await store._pool.acquire()
            pid = connection.get_server_pid()
            await connection.execute("BEGIN")
            await connection.execute(f'LOCK TABLE "{schema}".sessions')
            await store._pool.release(connection)

            [(state,)] = await query(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", pid
            )
            assert state == "idle"
            assert (await store.session_ids()) == []  # the table is not locked


class TestText:
    async def test_a_nul_in_a_key_is_a_typed_refusal(self, schema: str) -> None:
        """Text PostgreSQL cannot hold (a NUL, from a vendor's payload or a URL) is an InvalidInputError, not asyncpg's own error."""
        async with PostgresStore(POSTGRES_URL, schema=schema) as store:
            with pytest.raises(InvalidInputError, match="cannot hold this text"):
                await store.record_event_once("s1", "delivery\x00id")
            with pytest.raises(InvalidInputError):
                await store.get_value("quota\x00key", at=datetime.now(UTC))
            assert await store.record_event_once("s1", "delivery-id")


class TestConfiguration:
    async def test_unreachable_server(self) -> None:
        """A server nobody listens for is a StoreUnavailableError naming it, without the password."""
        port = closed_port()
        store = PostgresStore(f"postgresql://app:s3cret@127.0.0.1:{port}/test")

        with pytest.raises(StoreUnavailableError) as info:
            await store.open()

        assert f"127.0.0.1:{port}" in str(info.value)
        assert "s3cret" not in str(info.value)
        assert info.value.__cause__ is None
        await store.aclose()

    async def test_refused_login(self, schema: str) -> None:
        """A database that does not exist cannot be connected to either, on first use."""
        dsn = POSTGRES_URL.rsplit("/", 1)[0] + f"/no_such_db_{uuid4().hex[:8]}"
        store = PostgresStore(dsn, schema=schema)

        with pytest.raises(StoreUnavailableError, match="cannot connect"):
            await store.load("s1")

    async def test_malformed_dsn(self) -> None:
        """A dsn asyncpg cannot parse is a ConfigurationError."""
        store = PostgresStore("postgresql://app:s3cret@db:notaport/x")

        with pytest.raises(ConfigurationError, match="invalid PostgreSQL dsn") as info:
            await store.open()

        assert "s3cret" not in str(info.value)

    def test_repr_hides_password(self) -> None:
        """The repr shows where the store points but never the password."""
        url = PostgresStore("postgresql://app:s3cret@db:5432/lending", schema="x")
        query_ = PostgresStore("postgresql://db/lending?user=app&password=s3cret")
        keywords = PostgresStore("host=db user=app password='s 3cret' dbname=x")

        assert repr(url) == (
            "<multiverify.stores.PostgresStore("
            "dsn='postgresql://app:***@db:5432/lending', schema='x')>"
        )
        for store in (url, query_, keywords):
            assert "s3cret" not in repr(store)
            assert "3cret" not in repr(store)
            assert "***" in repr(store)
        assert "user=app" in repr(query_)
        plain = PostgresStore("postgresql://app@db/lending")
        assert "postgresql://app@db/lending" in repr(plain)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"schema": "bad-name"}, "schema"),
            ({"schema": "x" * 64}, "schema"),
            ({"min_size": 3, "max_size": 2}, "min_size"),
            ({"max_size": 0}, "max_size"),
        ],
    )
    def test_invalid_arguments(self, kwargs: dict[str, object], match: str) -> None:
        """Bad schema names and pool sizes are refused at construction."""
        with pytest.raises(ConfigurationError, match=match):
            PostgresStore(POSTGRES_URL, **kwargs)  # type: ignore[arg-type]

    def test_needs_dsn_or_pool(self) -> None:
        """Without a dsn or a pool there is nothing to connect to."""
        with pytest.raises(ConfigurationError, match="dsn or a pool"):
            PostgresStore()

    def test_missing_asyncpg(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without asyncpg, building a store says how to install it."""
        monkeypatch.setitem(sys.modules, "asyncpg", None)

        with pytest.raises(ConfigurationError, match=r"multiverify\[postgres\]"):
            PostgresStore(POSTGRES_URL)

    def test_stores_import_without_asyncpg(self) -> None:
        """multiverify.stores imports when asyncpg is not installed."""
        code = (
            "import sys; sys.modules['asyncpg'] = None\n"
            "import multiverify.stores as s\n"
            "assert 'PostgresStore' in s.__all__\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


class TestOutage:
    async def test_a_connection_lost_mid_call_is_store_unavailable(
        self, schema: str
    ) -> None:
        """A connection the server drops during a call gives a typed, retryable error."""

        class DroppingPool:
            async def fetch(self, *args: object) -> list[object]:
                raise asyncpg.ConnectionDoesNotExistError(
                    "connection was closed in the middle of operation"
                )

        async with PostgresStore(POSTGRES_URL, schema=schema) as store:
            real = await store._ready()
            store._pool = DroppingPool()
            try:
                with pytest.raises(
                    StoreUnavailableError, match="lost the connection"
                ) as info:
                    await store.session_ids()
            finally:
                store._pool = real
            assert info.value.store == "postgres"
            assert "ConnectionDoesNotExistError" in str(info.value)
            assert await store.session_ids() == []

    async def test_a_read_only_server_is_store_unavailable(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """A standby after a failover (read-only) refuses the save as a store unavailable, writing nothing."""
        await created(schema, make_session("s1"))
        standby = f"{POSTGRES_URL}?default_transaction_read_only=on"

        async with PostgresStore(standby, schema=schema) as store:
            with pytest.raises(StoreUnavailableError, match="ReadOnly") as info:
                await store.save(make_session("s1"), expected_version=1)
            assert info.value.store == "postgres"
            assert (await store.load("s1"))[1] == 1

    async def test_a_server_out_of_connections_is_store_unavailable(
        self, schema: str, role: str
    ) -> None:
        """A pool that cannot open one more connection (the server's or the role's limit) fails the call as a store unavailable."""
        async with PostgresStore(POSTGRES_URL, schema=schema):
            pass
        for grant in (
            f'ALTER ROLE "{role}" CONNECTION LIMIT 1',
            f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
        ):
            await query(grant)

        async with PostgresStore(
            as_role(role), schema=schema, min_size=1, max_size=2
        ) as store:
            both = await asyncio.gather(
                store.session_ids(), store.session_ids(), return_exceptions=True
            )
            assert both[0] == []
            assert isinstance(both[1], StoreUnavailableError)
            assert "TooManyConnectionsError" in str(both[1])

    async def test_a_save_meeting_another_under_repeatable_read_is_a_conflict(
        self, schema: str, make_session: MakeSession
    ) -> None:
        """On a server whose default isolation is REPEATABLE READ, a save that meets a concurrent one is a ConcurrentUpdateError."""
        await created(schema, make_session("s1"))
        strict = f"{POSTGRES_URL}?default_transaction_isolation=repeatable%20read"
        other = await asyncpg.connect(POSTGRES_URL)
        watcher = await asyncpg.connect(POSTGRES_URL)
        try:
            async with PostgresStore(strict, schema=schema) as store:
                await store.load("s1")  # opened, and a connection in the pool
                writing = other.transaction()
                await writing.start()
                await other.execute(
                    f'UPDATE "{schema}".sessions SET version = 2 '
                    "WHERE session_id = 's1'"
                )
                saving = asyncio.ensure_future(
                    store.save(make_session("s1"), expected_version=1)
                )
                while not await watcher.fetchval(  # noqa: ASYNC110 - the server's state
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE $1",
                    f'%"{schema}".sessions%',
                ):
                    await asyncio.sleep(0.01)  # until the save waits for the row
                await writing.commit()

                with pytest.raises(ConcurrentUpdateError, match="version 2, not 1"):
                    await saving
        finally:
            await other.close()
            await watcher.close()

    async def test_other_errors_pass_through(self, schema: str) -> None:
        """Only a lost connection is translated; a bug stays what it is."""

        class BrokenPool:
            async def fetch(self, *args: object) -> list[object]:
                raise ZeroDivisionError

        async with PostgresStore(POSTGRES_URL, schema=schema) as store:
            real = await store._ready()
            store._pool = BrokenPool()
            try:
                with pytest.raises(ZeroDivisionError):
                    await store.session_ids()
            finally:
                store._pool = real
