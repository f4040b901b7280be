"""What only the Redis store does: replicas sharing a prefix, clients, errors, repr."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import attrs
import pytest
from conftest import REDIS_URL, delete_redis_prefix, redis_user, service_missing

from multiverify._session import ScheduleTimer, Session
from multiverify.exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    SessionNotFoundError,
    StoreUnavailableError,
)
from multiverify.stores import DueTimer, RedisStore, _redis

redis_asyncio = pytest.importorskip("redis.asyncio")
redis_exceptions = pytest.importorskip("redis.exceptions")

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

MakeSession = Callable[[str], Session]


def timer(effect_id: str) -> ScheduleTimer:
    """A small effect."""
    return ScheduleTimer(effect_id=effect_id, timer_id="deadline", due_at=T0)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the test database, its keys deleted afterwards."""
    name = f"mvtest:{uuid4().hex[:12]}"
    probe = RedisStore(REDIS_URL, prefix=name)
    try:
        await probe.open()
    except StoreUnavailableError as exc:
        service_missing("redis", str(exc))
    finally:
        await probe.aclose()
    yield name
    await delete_redis_prefix(name)


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores, each with its own connections, on one prefix: two replicas."""
    one = RedisStore(REDIS_URL, prefix=prefix)
    two = RedisStore(REDIS_URL, prefix=prefix)
    try:
        yield one, two
    finally:
        await one.aclose()
        await two.aclose()


class TestReplicas:
    async def test_each_sees_the_others_writes(
        self, replicas: tuple[RedisStore, RedisStore], make_session: MakeSession
    ) -> None:
        """Sessions, outbox, timers, dedupe and trail written by one are read by the other."""
        one, two = replicas
        session = make_session("s1")
        await one.create(session, effects=[timer("e1")])

        assert await two.load("s1") == (session, 1)
        assert await two.save(session, expected_version=1) == 2
        assert (await one.load("s1"))[1] == 2
        assert await two.session_ids() == ["s1"]

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

    async def test_concurrent_saves_across_replicas_one_wins(
        self, replicas: tuple[RedisStore, RedisStore], make_session: MakeSession
    ) -> None:
        """Saves racing from both replicas at one version: exactly one applies."""
        one, two = replicas
        session = make_session("s1")
        await one.create(session)

        async def attempt(store: RedisStore, number: int) -> int | None:
            try:
                return await store.save(
                    attrs.evolve(session, inputs=number),
                    expected_version=1,
                    effects=[timer(f"e{number}")],
                )
            except ConcurrentUpdateError:
                return None

        results = await asyncio.gather(
            *(attempt(one if n % 2 else two, n) for n in range(20))
        )

        winners = [n for n, result in enumerate(results) if result is not None]
        assert len(winners) == 1
        loaded, version = await two.load("s1")
        assert version == 2
        assert loaded.inputs == winners[0]
        assert [item.effect.effect_id for item in await one.pending_effects()] == [
            f"e{winners[0]}"
        ]

    async def test_concurrent_creates_across_replicas_one_wins(
        self, replicas: tuple[RedisStore, RedisStore], make_session: MakeSession
    ) -> None:
        """Two replicas creating the same id at once: one creates, the other conflicts."""
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
        assert await one.session_ids() == ["s1"]

    async def test_prefixes_are_separate(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A store on another prefix sees nothing, and every key is under the prefix."""
        other = f"{prefix}-other"
        async with (
            RedisStore(REDIS_URL, prefix=prefix) as mine,
            RedisStore(REDIS_URL, prefix=other) as theirs,
        ):
            await mine.create(make_session("s1"), effects=[timer("e1")])
            await mine.schedule_timer("s1", "deadline", T0)
            await mine.record_event_once("s1", "k")

            assert await theirs.session_ids() == []
            assert await theirs.pending_effects() == []
            assert await theirs.timers() == []
            with pytest.raises(SessionNotFoundError):
                await theirs.load("s1")

        await delete_redis_prefix(other)
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            keys = sorted(
                [key.decode() async for key in client.scan_iter(match=f"{prefix}*")]
            )
        finally:
            await client.aclose()
        assert keys == [
            f"{prefix}:{name}"
            for name in [
                "claims",
                "effects",
                "outbox",
                "outbox:s1",
                "schema",
                "seen:s1",
                "seq:outbox",
                "seq:sessions",
                "seq:timers",
                "session:s1",
                "sessions",
                "timer-index",
                "timers",
                "timers:s1",
            ]
        ]


class TestPool:
    async def test_calls_beyond_the_pool_wait_for_a_connection(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """More calls at once than connections: they queue for one instead of failing."""
        async with RedisStore(REDIS_URL, prefix=prefix, max_connections=2) as store:
            await asyncio.gather(
                *(store.create(make_session(f"s{n}")) for n in range(20))
            )
            assert len(await store.session_ids()) == 20


class ReadRecording(redis_asyncio.Redis):  # type: ignore[misc]
    """A Redis client that records the keys its sorted-set range reads name."""

    ranged: list[str]

    async def zrange(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.ranged.append(name)
        return await super().zrange(name, *args, **kwargs)


class TestTimers:
    async def test_one_sessions_timers_read_only_that_session(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """``timers(session_id)`` reads the session's own index, not every timer."""
        client = ReadRecording.from_url(REDIS_URL)
        client.ranged = []
        try:
            store = RedisStore(client=client, prefix=prefix)
            for n in range(3):
                await store.create(
                    make_session(f"s{n}"),
                    timers=[("deadline", T0), ("remind", T0 - timedelta(seconds=n))],
                )
            await store.cancel_timer("s1", "remind")
            client.ranged.clear()

            assert await store.timers("s1") == [
                DueTimer(session_id="s1", timer_id="deadline", due_at=T0)
            ]
            assert [t.timer_id for t in await store.timers("s2")] == [
                "remind",
                "deadline",
            ]
            assert client.ranged == [f"{prefix}:timers:s1", f"{prefix}:timers:s2"]
        finally:
            await client.aclose()


class TestLayout:
    async def test_layout_1_is_migrated_and_its_effects_stay_claimable(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A prefix written before claims existed gets them on open; its pending effects are free."""
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            await store.create(make_session("s1"), effects=[timer("e1")])
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        try:  # back to layout 1: no claims
            await client.delete(f"{prefix}:claims")
            await client.set(f"{prefix}:schema", "1")
        finally:
            await client.aclose()

        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            assert await store.schema_version() == 3
            claimed = await store.claim_effects("w", at=T0, until=T0)
            assert [p.effect for p in claimed] == [timer("e1")]

    async def test_layout_2_gets_an_index_of_each_sessions_timers(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A prefix written before the per-session timer index gets one on open, in due order."""
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            for n in range(3):
                await store.create(
                    make_session(f"s{n}"),
                    timers=[("deadline", T0), ("remind", T0 - timedelta(seconds=n))],
                )
            before = await store.timers()
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        try:  # back to layout 2: one sorted set of every timer
            await client.delete(*(f"{prefix}:timers:s{n}" for n in range(3)))
            await client.set(f"{prefix}:schema", "2")
        finally:
            await client.aclose()

        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            assert await store.schema_version() == 3
            assert await store.timers() == before
            for n in range(3):
                assert await store.timers(f"s{n}") == [
                    t for t in before if t.session_id == f"s{n}"
                ]
            await store.cancel_timer("s2", "remind")
            assert [t.timer_id for t in await store.timers("s2")] == ["deadline"]

    async def test_a_timer_written_during_the_migration_is_indexed(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A timer of a session not read before the migration ran is indexed too."""
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            await store.create(make_session("s1"), timers=[("deadline", T0)])
            await store.create(make_session("s2"), timers=[("deadline", T0)])
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            await client.delete(f"{prefix}:timers:s1", f"{prefix}:timers:s2")
            await client.set(f"{prefix}:schema", "2")
        finally:
            await client.aclose()
        store = RedisStore(REDIS_URL, prefix=prefix)
        ranged = store._client.zrange
        first = True

        async def hide_s2(name: str, *args: Any, **kwargs: Any) -> Any:
            nonlocal first
            found = await ranged(name, *args, **kwargs)
            if first:  # the first read misses s2 (written by an old replica after it)
                first = False
                return [m for m in found if b'"s2"' not in m]
            return found

        store._client.zrange = hide_s2
        async with store:
            assert await store.schema_version() == 3
            assert [t.session_id for t in await store.timers("s2")] == ["s2"]


class TestClient:
    async def test_injected_client_is_left_open(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A given client works (also with decoded responses) and survives aclose."""
        client = redis_asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            store = RedisStore(client=client, prefix=prefix)
            session = make_session("s1")
            await store.create(session, effects=[timer("e1")])
            await store.schedule_timer("s1", "deadline", T0)

            assert await store.load("s1") == (session, 1)
            assert [p.effect.effect_id for p in await store.pending_effects("s1")] == [
                "e1"
            ]
            assert [t.timer_id for t in await store.due_timers(T0)] == ["deadline"]
            assert await store.session_ids() == ["s1"]
            assert repr(store) == (
                f"<multiverify.stores.RedisStore(client=<given>, prefix={prefix!r})>"
            )

            await store.aclose()
            await store.aclose()

            assert await client.ping() is True
            assert await client.hget(f"{prefix}:session:s1", "version") == "1"
        finally:
            await client.aclose()

    async def test_async_with_and_reuse_after_close(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """``async with`` opens and closes; a closed store connects again on use."""
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            await store.create(make_session("s1"))

        assert (await store.load("s1"))[1] == 1
        await store.aclose()

    async def test_naive_due_times_are_utc(self, prefix: str) -> None:
        """A naive due time is read as UTC when compared."""
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            await store.schedule_timer("s1", "naive", datetime(2025, 3, 1, 9, 0))  # noqa: DTZ001

            assert [t.timer_id for t in await store.due_timers(T0)] == ["naive"]
            assert await store.due_timers(T0 - timedelta(microseconds=1)) == []


class TestAcl:
    async def test_a_user_limited_to_its_prefix_can_use_every_timer_call(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A Redis user allowed only the prefix's keys and channels creates, saves, schedules and cancels timers."""
        async with (
            redis_user(f"~{prefix}:*", f"&{prefix}:*") as url,
            RedisStore(url, prefix=prefix) as store,
        ):
            session = make_session("s1")
            await store.create(session, timers=[("deadline", T0)])
            await store.save(session, expected_version=1, timers=[("step", T0)])
            await store.schedule_timer("s1", "retry", T0)
            await store.cancel_timer("s1", "deadline")

            assert [t.timer_id for t in await store.timers("s1")] == [
                "step",
                "retry",
            ]

    async def test_a_user_without_the_changes_channel(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """Refused a publish, a save is a ConfigurationError naming what the user needs; without notifications it works."""
        db = urlsplit(REDIS_URL).path.strip("/") or "0"
        async with redis_user(f"~{prefix}:*") as url:
            async with RedisStore(url, prefix=prefix) as store:
                with pytest.raises(
                    ConfigurationError,
                    match=rf"channels {prefix}:changes:{db}:{{session id}} "
                    rf"\(ACL rules ~{prefix}:\* &{prefix}:changes:\*\)",
                ):
                    await store.create(make_session("s1"))
            async with RedisStore(url, prefix=prefix, notifications=False) as quiet:
                await quiet.create(make_session("s2"))
                assert (await quiet.load("s2"))[1] == 1
                assert not quiet.notifies_every_writer

    async def test_other_server_errors_pass_through(self, prefix: str) -> None:
        """A Redis error that is no refusal of the user (a key of the wrong type) is raised as it is."""
        admin = redis_asyncio.Redis.from_url(REDIS_URL)
        await admin.set(f"{prefix}:session:s1", "not a hash")
        try:
            async with RedisStore(REDIS_URL, prefix=prefix) as store:
                with pytest.raises(redis_exceptions.ResponseError, match="WRONGTYPE"):
                    await store.load("s1")
        finally:
            await admin.aclose()

    async def test_without_notifications_nothing_is_published(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """``notifications=False``: creates and saves publish nothing, and subscribing starts no listener."""
        listener = redis_asyncio.Redis.from_url(REDIS_URL)
        pubsub = listener.pubsub()
        await pubsub.psubscribe(f"{prefix}:changes:*")
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        try:
            async with RedisStore(
                REDIS_URL, prefix=prefix, notifications=False
            ) as store:
                unsubscribe = store.subscribe("s1", lambda: None)
                await store.create(make_session("s1"))
                await store.save(make_session("s1"), expected_version=1)
                assert store._listener is None
                unsubscribe()
            async with RedisStore(REDIS_URL, prefix=prefix) as loud:
                await loud.create(make_session("marker"))

            message = await pubsub.get_message(timeout=5)
            assert message is not None
            assert message["data"] == b"marker"  # the first and only one
        finally:
            await pubsub.aclose()
            await listener.aclose()


class TestErrors:
    async def test_unreachable_server_is_a_store_unavailable_error(
        self, make_session: MakeSession
    ) -> None:
        """A closed port: opening, and any first call, raise StoreUnavailableError."""
        url = f"redis://127.0.0.1:{closed_port()}/0"
        store = RedisStore(url)

        with pytest.raises(StoreUnavailableError, match="cannot reach Redis"):
            await store.open()
        with pytest.raises(StoreUnavailableError, match="cannot reach Redis"):
            await store.load("s1")
        with pytest.raises(StoreUnavailableError, match="cannot reach Redis"):
            await store.create(make_session("s1"))
        with pytest.raises(StoreUnavailableError):
            async with store:
                pass  # pragma: no cover - never reached
        await store.aclose()

    async def test_unreachable_given_client(self) -> None:
        """The error names no URL when the client was given."""
        client = redis_asyncio.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0")
        try:
            with pytest.raises(StoreUnavailableError, match="the given client"):
                await RedisStore(client=client).timers()
        finally:
            await client.aclose()

    def test_bad_url(self) -> None:
        """A URL redis-py cannot use is a ConfigurationError, without its password."""
        with pytest.raises(ConfigurationError, match="cannot use Redis URL") as info:
            RedisStore("http://user:s3cret@127.0.0.1:6379/0")

        assert "s3cret" not in str(info.value)

    def test_empty_prefix(self) -> None:
        """Keys need a prefix."""
        with pytest.raises(ConfigurationError, match="prefix"):
            RedisStore(prefix="")

    def test_redis_py_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without redis-py, construction says which extra to install."""
        monkeypatch.setitem(sys.modules, "redis.asyncio", None)

        with pytest.raises(ConfigurationError, match=r"multiverify\[redis\]"):
            RedisStore()

    def test_stores_import_without_redis_py(self) -> None:
        """``multiverify.stores`` imports when redis-py is not installed."""
        code = (
            "import sys; sys.modules['redis'] = None; "
            "import multiverify.stores as s; print(s.RedisStore.__name__)"
        )
        done = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "RedisStore"


class TestRepr:
    def test_password_is_hidden(self) -> None:
        """Neither a user-part password nor a query password shows in repr."""
        store = RedisStore("redis://app:s3cret@127.0.0.1:6379/0", prefix="p")
        query = RedisStore("redis://127.0.0.1:6379/0?password=hunter2&ssl=false")
        plain = RedisStore("redis://127.0.0.1:6379/2")
        only_user = RedisStore("redis://app@127.0.0.1:6379/0")

        assert repr(store) == (
            "<multiverify.stores.RedisStore("
            "url='redis://app:***@127.0.0.1:6379/0', prefix='p')>"
        )
        assert "hunter2" not in repr(query)
        assert "password=***" in repr(query)
        assert repr(plain) == (
            "<multiverify.stores.RedisStore("
            "url='redis://127.0.0.1:6379/2', prefix='multiverify')>"
        )
        assert "app@127.0.0.1" in repr(only_user)


class TestSharedState:
    async def test_keys_leave_redis_after_their_logical_end(self, prefix: str) -> None:
        """Quota windows and values get a physical expiry, an hour past the logical one."""
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            await store.consume("sends", at=T0, window=60, limit=3)
            await store.put_value("report", "{}", at=T0, ttl=10)

            client = store._client
            window_ttl = await client.pttl(f"{prefix}:quota:sends")
            value_ttl = await client.pttl(f"{prefix}:value:report")

        assert 3_600_000 < window_ttl <= 3_660_000
        assert 3_600_000 < value_ttl <= 3_610_000

    async def test_naive_times_are_utc(self, prefix: str) -> None:
        """A naive ``at`` names the same instant as the aware UTC one."""
        naive = datetime(2025, 3, 1, 9, 0)  # noqa: DTZ001
        async with RedisStore(REDIS_URL, prefix=prefix) as store:
            await store.put_value("k", "v", at=naive, ttl=10)

            assert await store.get_value("k", at=T0 + timedelta(seconds=9)) == "v"
            assert await store.get_value("k", at=T0 + timedelta(seconds=10)) is None


@contextlib.asynccontextmanager
async def session_on_retrying_client(
    prefix: str, make_session: MakeSession, retries: int
) -> AsyncIterator[tuple[RedisStore, Any]]:
    """A store on a client that retries ``retries`` times, session s1 created, and the connection its next call takes."""
    retry = pytest.importorskip("redis.asyncio.retry")
    backoff = pytest.importorskip("redis.backoff")
    client = redis_asyncio.Redis.from_url(
        REDIS_URL, retry=retry.Retry(backoff.NoBackoff(), retries)
    )
    try:
        store = RedisStore(client=client, prefix=prefix)
        await store.create(make_session("s1"))
        pool = client.connection_pool
        conn = await pool.get_connection(*_redis._checkout_args(pool))
        await pool.release(conn)  # the one the store takes next
        yield store, conn
    finally:
        await client.aclose()


class TestScripts:
    async def test_a_server_that_lost_its_scripts_runs_them_again(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """After SCRIPT FLUSH (as after a restart) every write still goes, once EVAL, then EVALSHA again."""
        admin = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            async with RedisStore(REDIS_URL, prefix=prefix) as store:
                await store.create(make_session("s1"))
                await admin.script_flush()

                assert await store.save(make_session("s1"), expected_version=1) == 2
                assert await store.save(make_session("s1"), expected_version=2) == 3
                with pytest.raises(ConcurrentUpdateError):
                    await store.save(make_session("s1"), expected_version=2)
                assert (await store.load("s1"))[1] == 3
        finally:
            await admin.aclose()

    async def test_a_client_with_one_connection_runs_scripts_through_it(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A given single-connection client: the store's scripts go on its one connection, SCRIPT FLUSH included."""
        name = f"mvtest-{uuid4().hex[:12]}"
        client = redis_asyncio.Redis.from_url(
            REDIS_URL, single_connection_client=True, client_name=name
        )
        admin = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            store = RedisStore(client=client, prefix=prefix, notifications=False)
            await store.create(make_session("s1"))
            await client.script_flush()

            assert await store.save(make_session("s1"), expected_version=1) == 2
            assert (await store.load("s1"))[1] == 2
            with pytest.raises(SessionNotFoundError):
                await store.save(make_session("s2"), expected_version=1)
            connections = [c for c in await admin.client_list() if c["name"] == name]
            assert len(connections) == 1
        finally:
            await client.aclose()
            await admin.aclose()

    async def test_the_clients_retry_policy_holds(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """A connection error while a script is sent: the connection is closed, and sent again as the client's Retry says."""
        sent: list[object] = []
        async with session_on_retrying_client(prefix, make_session, 1) as (
            store,
            conn,
        ):
            send = conn.send_packed_command

            async def lost_once(command: Any, check_health: bool = True) -> None:
                if b"EVALSHA" in b"".join(command):  # not the reconnection's own
                    sent.append(command)
                    if len(sent) == 1:
                        raise redis_exceptions.ConnectionError("lost")
                await send(command, check_health)

            conn.send_packed_command = lost_once

            assert await store.save(make_session("s1"), expected_version=1) == 2
            assert len(sent) == 2

    async def test_a_connection_error_without_retries_is_a_store_unavailable_error(
        self, prefix: str, make_session: MakeSession
    ) -> None:
        """No retries: the first connection error ends the call, as StoreUnavailableError."""
        async with session_on_retrying_client(prefix, make_session, 0) as (
            store,
            conn,
        ):

            async def lost(command: Any, check_health: bool = True) -> None:
                raise redis_exceptions.ConnectionError("lost")

            conn.send_packed_command = lost
            with pytest.raises(StoreUnavailableError, match="lost"):
                await store.save(make_session("s1"), expected_version=1)
            del conn.send_packed_command
            assert (await store.load("s1"))[1] == 1

    def test_arguments_are_text_bytes_or_integers(self) -> None:
        """What the scripts take is packed as redis-py packs it; anything else is refused."""
        header, body = _redis._packed(["k"], ["é", b"\x00", -3], "utf-8", "strict")

        assert header == b"*7\r\n"  # EVALSHA, its SHA, the key count, 1 key, 3 args
        assert body == (
            b"$1\r\n1\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n$1\r\n\x00\r\n$2\r\n-3\r\n"
        )
        with pytest.raises(TypeError, match="float"):
            _redis._packed([], [1.5], "utf-8", "strict")  # type: ignore[list-item]

    def test_pools_of_old_redis_py_are_named_the_command(self) -> None:
        """Before redis-py 5.3 a pool's ``get_connection`` takes a command name; since, nothing."""

        class OldPool:
            async def get_connection(
                self, command_name: str, *keys: Any, **options: Any
            ) -> None:
                del command_name, keys, options  # pragma: no cover - never called

        class NewPool:
            async def get_connection(
                self, command_name: str | None = None, *keys: Any, **options: Any
            ) -> None:
                del command_name, keys, options  # pragma: no cover - never called

        assert _redis._checkout_args(OldPool()) == ("EVALSHA",)
        assert _redis._checkout_args(NewPool()) == ()
