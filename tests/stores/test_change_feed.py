"""Session-change notifications: every store tells its subscribers, and a waiter on one replica wakes when another saves.

The replicas are Verifiers with stores of their own (their own pools and
connections) on one PostgreSQL schema or Redis prefix. A waiter whose
``watch_poll`` is an hour cannot have polled during a test: when it returns
after the other replica's save, a notification woke it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import uuid4

import asyncpg
import pytest
import redis.asyncio
from conftest import (
    POSTGRES_URL,
    REDIS_URL,
    delete_redis_prefix,
    drop_postgres_schema,
    redis_user,
    service_missing,
)
from test_replica_races import applicant

from multiverify import Policy, Session, Step, Verdict, Verifier
from multiverify.exceptions import ConcurrentUpdateError, StoreUnavailableError
from multiverify.stores import (
    ChangeFeed,
    MemoryStore,
    PostgresStore,
    RedisStore,
    SessionStore,
    SqliteStore,
    _postgres,
    _redis,
    store_from_url,
)
from multiverify.stores._base import Subscribers
from multiverify.stores._postgres import _channel, _listener_class
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

if TYPE_CHECKING:
    from pathlib import Path

POLICY = Policy(
    name="p",
    version="1",
    steps=[Step(id="sms", channel="sms_code", timeout="5m")],
)
HOUR = 3600.0  # a watch_poll no test outlasts: a waiter so set never polls
GUARD = 10.0  # seconds a test waits for what must happen before it fails


def channel() -> ScriptedChannel:
    """A step that takes the code ``1``."""
    return ScriptedChannel(
        "sms_code", [Scripted.waits(Scripted.passes(), expect={"code": "1"})]
    )


def named(url: str, name: str) -> str:
    """``url`` whose connections carry ``name`` (``application_name`` or ``client_name``)."""
    key = "application_name" if url.startswith("postgresql") else "client_name"
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), (key, name)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class Heard:
    """A subscriber that remembers what it was told."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def next(self) -> None:
        """Wait for the next notification."""
        await asyncio.wait_for(self.event.wait(), GUARD)
        self.event.clear()


async def listening(store: SessionStore, *subscribers: Heard) -> None:
    """Return once the store listens for the subscribers' sessions.

    PostgreSQL and Redis tell a session's subscribers once the server has
    confirmed its subscription (a change before then is notified to nobody
    here); the other stores hear every change from the start.
    """
    if isinstance(store, PostgresStore | RedisStore):
        for subscriber in subscribers:
            await subscriber.next()
        for subscriber in subscribers:
            subscriber.count = 0


class TestEveryStore:
    async def test_is_a_change_feed(self, store: SessionStore) -> None:
        """Every shipped store has the capability."""
        assert isinstance(store, ChangeFeed)

    async def test_create_and_save_notify_and_a_lost_save_does_not(
        self, store: SessionStore, make_session: Callable[[str], Session]
    ) -> None:
        """Subscribers hear each committed create and save of their session, and nothing of a save that lost its compare-and-set."""
        assert isinstance(store, ChangeFeed)
        one, marker = Heard(), Heard()
        store.subscribe("s1", one)
        store.subscribe("marker", marker)
        await listening(store, one, marker)
        await store.create(make_session("s1"))
        await one.next()
        await store.save(make_session("s1"), expected_version=1)
        await one.next()
        seen = one.count
        with pytest.raises(ConcurrentUpdateError):
            await store.save(make_session("s1"), expected_version=1)
        # Notifications come in commit order: once the marker's is heard, a
        # notification of the failed save would have been heard before it.
        await store.create(make_session("marker"))
        await marker.next()
        assert one.count == seen

    async def test_unsubscribed_hears_nothing_more(
        self, store: SessionStore, make_session: Callable[[str], Session]
    ) -> None:
        """The function ``subscribe`` returns ends the subscription (twice is harmless)."""
        assert isinstance(store, ChangeFeed)
        one, marker = Heard(), Heard()
        cancel = store.subscribe("s1", one)
        store.subscribe("marker", marker)
        await listening(store, one, marker)
        await store.create(make_session("s1"))
        await one.next()
        cancel()
        cancel()
        seen = one.count
        await store.save(make_session("s1"), expected_version=1)
        await store.create(make_session("marker"))
        await marker.next()
        assert one.count == seen


async def test_memory_and_sqlite_say_who_they_hear(tmp_path: Path) -> None:
    """A MemoryStore hears every writer (nothing else writes it); SQLite only its own object's saves."""
    assert MemoryStore().notifies_every_writer
    sqlite = SqliteStore(tmp_path / "a.db")
    assert not sqlite.notifies_every_writer
    await sqlite.aclose()


async def test_postgres_hears_others_only_with_a_dsn_and_notifications() -> None:
    """Without a dsn (a pool only) or with notifications off, a PostgresStore notifies nobody of other replicas."""
    assert PostgresStore(POSTGRES_URL).notifies_every_writer
    assert not PostgresStore(pool=object()).notifies_every_writer
    assert not PostgresStore(POSTGRES_URL, notifications=False).notifies_every_writer


async def test_postgres_without_asyncpgs_notification_hook_polls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An asyncpg whose connections have no notification hook leaves waiters polling, and says so."""

    class Connection:
        """A connection class without ``_process_notification``."""

    class OtherAsyncpg:
        """An asyncpg module of another make."""

        __version__ = "99.0"

    OtherAsyncpg.Connection = Connection  # type: ignore[attr-defined]
    other = OtherAsyncpg
    store = PostgresStore(POSTGRES_URL)
    monkeypatch.setattr(store, "_asyncpg", other)
    assert not store.notifies_every_writer
    assert "passes no notifications to its connection class" in caplog.text


async def test_every_session_gets_a_channel_postgres_accepts(
    make_session: Callable[[str], Session],
) -> None:
    """A session's channel stays within PostgreSQL's 63 bytes whatever the schema and id, differs between sessions and schemas, and carries the longest ones' notifications."""
    long_schema = f"mv_{uuid4().hex}" + "s" * 28  # 63 characters, the most
    long_id = "id-" + "x" * 300
    channels = {
        _channel(schema, sid)
        for schema in (long_schema, long_schema[:-1] + "t", "multiverify")
        for sid in (long_id, long_id + "y", "s1", "")
    }
    assert len(channels) == 12
    assert all(len(name.encode()) <= 63 for name in channels)
    assert "multiverify:multiverify" not in channels  # an earlier build's
    store = PostgresStore(POSTGRES_URL, schema=long_schema)
    try:
        await (await _pg_connect()).close()  # skips without a server
        heard = Heard()
        store.subscribe(long_id, heard)
        await heard.next()  # it listens
        await store.create(make_session(long_id))
        await heard.next()
    finally:
        await store.aclose()
        await drop_postgres_schema(long_schema)


async def _pg_connect() -> asyncpg.Connection:
    """A raw connection to the test database (the test is skipped without a server)."""
    try:
        return await asyncpg.connect(POSTGRES_URL)
    except OSError as exc:
        service_missing("postgres", str(exc))
        raise


async def test_two_verifiers_on_one_memory_store_wake_each_other() -> None:
    """A waiter wakes when another Verifier on the same MemoryStore decides, without polling."""
    store = MemoryStore()
    async with (
        Verifier(POLICY, channels=[channel()], store=store, watch_poll=HOUR) as one,
        Verifier(POLICY, channels=[channel()], store=store, watch_poll=HOUR) as two,
    ):
        started = await two.start(applicant())
        sid = started.session_id
        await two.challenge(sid, "sms")
        waiter = asyncio.ensure_future(one.wait(sid))
        await asyncio.sleep(0)
        decided = await two.submit(sid, "sms", {"code": "1"})
        assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


def pauses_of_waits(
    monkeypatch: pytest.MonkeyPatch, *, end_at_once: bool
) -> list[float]:
    """From now on, note the timeout of every ``asyncio.wait`` (a waiter's pause); ``end_at_once`` ends each pause at once."""
    waited: list[float] = []
    wait = asyncio.wait

    async def noted(
        futures: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - stands in for asyncio.wait
        **kwargs: Any,
    ) -> Any:
        if timeout is not None:
            waited.append(timeout)
            if end_at_once:
                timeout = 0
        return await wait(futures, timeout=timeout, **kwargs)

    monkeypatch.setattr(asyncio, "wait", noted)
    return waited


@pytest.mark.parametrize("watch_poll", [None, HOUR], ids=["never-polls", "polls"])
async def test_a_waiter_sees_a_verdict_decided_elsewhere_before_it_waited(
    monkeypatch: pytest.MonkeyPatch, watch_poll: float | None
) -> None:
    """``wait`` on a Verifier whose last save of the session is older than another's verdict finds it: loading at once when it never polls, else at the first, short pause (no notification can tell of it)."""
    store = MemoryStore()

    async with (
        Verifier(
            POLICY, channels=[channel()], store=store, watch_poll=watch_poll
        ) as one,
        Verifier(POLICY, channels=[channel()], store=store, watch_poll=HOUR) as two,
    ):
        started = await one.start(applicant())
        sid = started.session_id
        await one.challenge(sid, "sms")  # saved here: the step waits
        decided = await two.submit(sid, "sms", {"code": "1"})
        waited = pauses_of_waits(monkeypatch, end_at_once=True)
        assert await asyncio.wait_for(one.wait(sid), GUARD) == decided.verdict
    assert waited == ([] if watch_poll is None else [watch_poll / 50])


class Loads:
    """A replica's store, telling the test each time a load of it returns."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self.returned = asyncio.Event()
        self.count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        found = await self._store.load(session_id)
        self.count += 1
        self.returned.set()
        return found

    async def next(self) -> None:
        """Wait until the next load returns."""
        self.returned.clear()
        await asyncio.wait_for(self.returned.wait(), GUARD)


class Replicas:
    """Two replicas on one schema or prefix; the first's store and clock are the test's."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.clock = FakeClock()
        self.stores = [
            store_from_url(named(url, name), clock=self.clock),
            store_from_url(url),
        ]
        self.loads = Loads(self.stores[0])
        self.verifiers: list[Verifier] = []

    def verifier(self, replica: int, *, watch_poll: float) -> Verifier:
        made = Verifier(
            POLICY,
            channels=[channel()],
            store=cast("SessionStore", self.loads) if replica == 0 else self.stores[1],
            watch_poll=watch_poll,
        )
        self.verifiers.append(made)
        return made

    async def waiting(self) -> str:
        """A session started on the second replica, waiting for its code."""
        two = self.verifiers[1]
        started = await two.start(applicant())
        await two.challenge(started.session_id, "sms")
        return started.session_id

    async def waited_for(self) -> tuple[Verifier, str, asyncio.Future[Verdict]]:
        """The first replica, never polling, waits for a session the second started; returned once it saw the session waiting.

        The second replica, never polling either, is ready to decide it.
        """
        one = self.verifier(0, watch_poll=HOUR)
        self.verifier(1, watch_poll=HOUR)
        sid = await self.waiting()
        waiter = asyncio.ensure_future(one.wait(sid))
        await self.loads.next()
        return one, sid, waiter

    async def decide(self, sid: str) -> Session:
        """The second replica takes the code."""
        return await self.verifiers[1].submit(sid, "sms", {"code": "1"})

    async def aclose(self) -> None:
        for verifier in self.verifiers:
            await verifier.aclose()
        for store in self.stores:
            await store.aclose()


@pytest.fixture
async def replicas(shared_url: str) -> AsyncIterator[Replicas]:
    """Two replicas on one shared store, the first's connections named for the test."""
    made = Replicas(shared_url, f"mv-feed-{uuid4().hex[:10]}")
    try:
        yield made
    finally:
        await made.aclose()


# The last query of a PostgreSQL listener's connection: it listens for some
# sessions, and for others no more.
# The last query of a listener's connection: its LISTEN and UNLISTEN, or the
# versions it reads once it listens.
LISTENING = "^(UN)?LISTEN |^SELECT session_id, version FROM "


async def listeners(replicas: Replicas) -> int:
    """How many connections of the first replica listen for changes on the server."""
    if replicas.url.startswith("postgresql"):
        conn = await _pg_connect()
        try:
            found = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                "AND query ~ $2",
                replicas.name,
                LISTENING,
            )
        finally:
            await conn.close()
        return len(found)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return sum(
        1 for c in clients if c.get("name") == replicas.name and int(c.get("sub", 0))
    )


async def cut_listener(replicas: Replicas) -> None:
    """Kill the first replica's listening connection on the server; return once its listener pauses."""
    if replicas.url.startswith("postgresql"):
        conn = await _pg_connect()
        try:
            killed = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND query ~ $2",
                replicas.name,
                LISTENING,
            )
        finally:
            await conn.close()
    else:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            clients = await client.client_list()
            killed = [
                await client.client_kill_filter(_id=c["id"])
                for c in clients
                if c.get("name") == replicas.name and int(c.get("sub", 0))
            ]
        finally:
            await client.aclose()
    assert len(killed) == 1
    while not replicas.clock.sleeping_tasks():  # noqa: ASYNC110 - the listener saw the loss
        await asyncio.sleep(0)


async def test_a_waiter_wakes_when_another_replica_decides(
    replicas: Replicas,
) -> None:
    """``wait`` on replica 1, which never polls, returns once replica 2 saves the verdict."""
    _, sid, waiter = await replicas.waited_for()
    assert not waiter.done()
    decided = await replicas.decide(sid)
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


async def test_a_lost_listener_falls_back_to_polling_and_listens_again(
    replicas: Replicas,
) -> None:
    """With its listener cut, replica 1 finds the verdict by polling; once it listens again (after its pause, on its clock), a waiter that never polls wakes again."""
    polling = replicas.verifier(0, watch_poll=0.05)
    replicas.verifier(1, watch_poll=HOUR)
    store = replicas.stores[0]
    assert isinstance(store, ChangeFeed)
    probe = Heard()  # told when the listener (re)connects, like every subscriber
    store.subscribe("probe", probe)
    await probe.next()
    assert await listeners(replicas) == 1

    await cut_listener(replicas)
    assert await listeners(replicas) == 0
    sid = await replicas.waiting()
    waiter = asyncio.ensure_future(polling.wait(sid))
    decided = await replicas.decide(sid)
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict
    assert await listeners(replicas) == 0  # no notification could have woken it
    assert probe.count == 1

    await replicas.clock.advance(60)  # the pause before listening again
    await probe.next()
    assert await listeners(replicas) == 1
    patient = replicas.verifier(0, watch_poll=HOUR)
    sid = await replicas.waiting()
    waiter = asyncio.ensure_future(patient.wait(sid))
    await replicas.loads.next()
    decided = await replicas.decide(sid)
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


async def test_a_waiter_wakes_when_listening_again_after_its_own_save_went_unheard(
    replicas: Replicas,
) -> None:
    """A change of replica 1's own and one of replica 2's, both saved while its listener was cut: listening again wakes its waiter (the lost notice of its own save hides nothing)."""
    one, sid, waiter = await replicas.waited_for()
    while await listeners(replicas) != 1:  # noqa: ASYNC110 - the listener is up
        await asyncio.sleep(0)

    await cut_listener(replicas)
    await one.submit(sid, "sms", {"code": "2"})  # a wrong code, saved here
    decided = await replicas.decide(sid)
    assert not waiter.done()

    await replicas.clock.advance(60)  # the pause before listening again
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


async def test_two_schemas_or_prefixes_do_not_cross_talk(shared_url: str) -> None:
    """A save on one schema (prefix) notifies nobody listening on another."""
    other_url = shared_url.replace("mv_shared_", "mv_other_")
    mine, other = store_from_url(shared_url), store_from_url(other_url)
    try:
        assert isinstance(mine, ChangeFeed)
        assert isinstance(other, ChangeFeed)
        here, there = Heard(), Heard()
        mine.subscribe("s1", here)
        other.subscribe("s1", there)
        await here.next()  # each listener is up (it tells every subscriber)
        await there.next()
        two = Verifier(POLICY, channels=[channel()], store=other, watch_poll=None)
        started = await two.start(applicant(), session_id="s1")
        await there.next()  # the other schema's save is heard there...
        marker = Heard()
        mine.subscribe("marker", marker)
        one = Verifier(POLICY, channels=[channel()], store=mine, watch_poll=None)
        await one.start(applicant(), session_id="marker")
        await marker.next()
        assert here.count == 1  # ...and not here: only the listener's first call
        assert started.session_id == "s1"
        await one.aclose()
        await two.aclose()
    finally:
        await mine.aclose()
        await other.aclose()
        scratch = urlsplit(other_url).query.split("=")[1]
        if shared_url.startswith("postgresql"):
            await drop_postgres_schema(scratch)
        else:
            await delete_redis_prefix(scratch)


async def test_aclose_leaves_no_task_running(replicas: Replicas) -> None:
    """Closing the stores stops their listeners: no task is left."""
    _, sid, waiter = await replicas.waited_for()
    decided = await replicas.decide(sid)
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict
    await replicas.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert await listeners(replicas) == 0


async def test_redis_and_postgres_are_change_feeds_of_every_writer() -> None:
    """Both shared stores hear every replica's writes."""
    assert RedisStore(REDIS_URL).notifies_every_writer


@pytest.mark.parametrize(
    "make",
    [
        lambda clock: PostgresStore(
            "postgresql://postgres@127.0.0.1:1/test", clock=clock, connect_timeout=1
        ),
        lambda clock: RedisStore("redis://127.0.0.1:1/0", clock=clock),
    ],
    ids=["postgres", "redis"],
)
async def test_a_listener_that_cannot_connect_tries_again_after_a_pause(
    make: Callable[[FakeClock], SessionStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A server that refuses the listener is logged and tried again on the store's clock; aclose stops it."""
    clock = FakeClock()
    store = make(clock)
    assert isinstance(store, ChangeFeed)
    store.subscribe("s1", Heard())
    while clock.sleepers < 1:  # noqa: ASYNC110 - the listener failed and pauses
        await asyncio.sleep(0)
    await clock.advance(1)  # it tries again, and pauses again
    while clock.sleepers < 1:  # noqa: ASYNC110
        await asyncio.sleep(0)
    await store.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert "listen" in caplog.text


async def paused(clock: FakeClock) -> None:
    """Return once a task sleeps on ``clock``; fail after ``GUARD`` seconds."""

    async def sleeping() -> None:
        while clock.sleepers < 1:  # noqa: ASYNC110 - the fake clock counts its sleepers
            await asyncio.sleep(0)

    await asyncio.wait_for(sleeping(), GUARD)


async def test_a_listener_that_fails_unexpectedly_starts_over(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault of the PostgreSQL listener's own is logged with its traceback and the listening starts over."""
    clock = FakeClock()
    store = PostgresStore(POSTGRES_URL, schema="mv_never_written", clock=clock)
    calls = 0
    real = store._asyncpg.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a fault of its own")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store._asyncpg, "connect", connect)
    heard = Heard()
    store.subscribe("s1", heard)
    await paused(clock)  # the listener failed and pauses
    assert "listening for changes on PostgreSQL failed" in caplog.text
    assert "RuntimeError: a fault of its own" in caplog.text

    await clock.advance(1)
    await heard.next()  # listening: told to look again
    assert calls == 2
    await store.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_redis_listener_refused_its_channel_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user whose ACL lacks the changes channel: the subscriber's refusal is logged, and it tries again."""
    prefix = f"mvt{uuid4().hex[:8]}"
    clock = FakeClock()
    async with redis_user(f"~{prefix}:*") as url:
        store = RedisStore(url, prefix=prefix, clock=clock)
        try:
            store.subscribe("s1", Heard())
            await paused(clock)  # refused, it pauses
            assert "listening for changes on Redis failed" in caplog.text
            await clock.advance(1)
            await paused(clock)  # refused again, it pauses again
            assert store._listener is not None
            assert not store._listener.done()
        finally:
            await store.aclose()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_redis_confirmation_without_the_version_tells_the_subscribers_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the session's version cannot be read once the subscription is confirmed, its subscribers are told as after a reconnect."""
    prefix = f"mvt{uuid4().hex[:8]}"
    store = RedisStore(REDIS_URL, prefix=prefix)
    try:
        try:
            await store.schema_version()
        except StoreUnavailableError as exc:
            service_missing("redis", str(exc))

        async def unreadable(*args: Any) -> Any:
            raise redis.exceptions.ConnectionError("gone for a moment")

        monkeypatch.setattr(store._client, "hget", unreadable)
        heard = Heard()
        store.subscribe("s1", heard)
        await heard.next()
        assert heard.count == 1
    finally:
        await store.aclose()
        await delete_redis_prefix(prefix)


class DeafFeed:
    """A MemoryStore whose change feed loses every notification."""

    def __init__(self, *, every_writer: bool) -> None:
        self._store = MemoryStore()
        self.notifies_every_writer = every_writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def subscribe(
        self, session_id: str, on_change: Callable[[], None], /
    ) -> Callable[[], None]:
        return lambda: None


@pytest.mark.parametrize(
    ("every_writer", "pauses"),
    [(True, [0.01, 0.01, 0.01]), (False, [0.0002, 0.0004, 0.0008])],
    ids=["every-writer", "own-saves-only"],
)
async def test_lost_notifications_are_made_up_for_by_polling(
    monkeypatch: pytest.MonkeyPatch, every_writer: bool, pauses: list[float]
) -> None:
    """Every notification lost, a waiter still finds the other Verifier's verdict by polling: every ``watch_poll`` when the feed hears every writer, else after a pause that starts at a fiftieth of it and doubles."""
    store = cast("SessionStore", DeafFeed(every_writer=every_writer))

    async with (
        Verifier(POLICY, channels=[channel()], store=store, watch_poll=0.01) as one,
        Verifier(POLICY, channels=[channel()], store=store, watch_poll=0.01) as two,
    ):
        started = await two.start(applicant())
        sid = started.session_id
        await two.challenge(sid, "sms")
        waited = pauses_of_waits(monkeypatch, end_at_once=False)
        waiter = asyncio.ensure_future(one.wait(sid))
        while len(waited) < len(pauses):  # noqa: ASYNC110 - a few looks, then decide
            await asyncio.sleep(0)
        decided = await two.submit(sid, "sms", {"code": "1"})
        assert await asyncio.wait_for(waiter, GUARD) == decided.verdict
    assert waited[: len(pauses)] == pytest.approx(pauses)


# -- a channel per session ------------------------------------------------------


class Wire:
    """Two replicas' stores on one schema or prefix, and a raw connection sending on sessions' channels as a save does.

    ``received`` is every notification the first store's listener
    connection hands on, whichever session it is for.
    """

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.store = store_from_url(url)
        self.other = store_from_url(url)
        self.received: list[str] = []
        self.marker = Heard()
        changes = self.store._changes  # type: ignore[attr-defined]
        notify = changes.notify

        def noted(session_id: str) -> None:
            self.received.append(session_id)
            notify(session_id)

        monkeypatch.setattr(changes, "notify", noted)
        self._pg: asyncpg.Connection | None = None
        self._redis = redis.asyncio.Redis.from_url(REDIS_URL)

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def feed(self) -> ChangeFeed:
        assert isinstance(self.store, ChangeFeed)
        return self.store

    def channel(self, session_id: str) -> str:
        """The session's channel."""
        if self.postgres:
            return _channel(self.store._schema, session_id)  # type: ignore[attr-defined]
        return cast("str", self.store._channel(session_id))  # type: ignore[attr-defined]

    async def send(self, session_id: str) -> None:
        """Notify the session's id on its channel, from a connection of no store's."""
        if self.postgres:
            if self._pg is None:
                self._pg = await _pg_connect()
            await self._pg.execute(
                "SELECT pg_notify($1, $2)", self.channel(session_id), session_id
            )
        else:
            await self._redis.publish(self.channel(session_id), session_id)

    async def start_marker(self) -> None:
        """Subscribe the marker session, and wait until the listener listens for it."""
        self.feed().subscribe("marker", self.marker)
        await self.marker.next()

    async def reaches(self, session_id: str) -> bool:
        """Whether a notification sent on the session's channel reaches the listener connection.

        The marker's, sent after it on the same connection, comes after it.
        """
        seen = len(self.received)
        await self.send(session_id)
        await self.send("marker")
        await self.marker.next()
        return session_id in self.received[seen:]

    async def subscribers(self, session_id: str) -> int | None:
        """How many connections Redis has subscribed to the session's channel (``None`` on PostgreSQL, which does not say)."""
        if self.postgres:
            return None
        [(_, count)] = await self._redis.pubsub_numsub(self.channel(session_id))
        return int(count)

    async def aclose(self) -> None:
        await self.store.aclose()
        await self.other.aclose()
        if self._pg is not None:
            await self._pg.close()
        await self._redis.aclose()


@pytest.fixture
async def wire(shared_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Wire]:
    """Two replicas on one shared store, and a raw connection to its server."""
    made = Wire(shared_url, monkeypatch)
    try:
        yield made
    finally:
        await made.aclose()


async def test_a_listener_receives_only_the_sessions_waited_for_here(
    wire: Wire, make_session: Callable[[str], Session]
) -> None:
    """A subscriber of one session is not told of another's saves, and the listener connection receives nothing for a session nobody here waits for."""
    one = Heard()
    wire.feed().subscribe("one", one)
    await wire.start_marker()
    await one.next()  # told once it listens for the session
    await wire.other.create(make_session("other"))
    await wire.other.create(make_session("one"))
    await one.next()
    assert one.count == 2
    assert not await wire.reaches("other")
    assert await wire.reaches("one")
    assert "other" not in wire.received
    assert one.count == 3
    if not wire.postgres:
        assert await wire.subscribers("one") == 1
        assert await wire.subscribers("other") == 0


async def test_the_listener_stops_listening_when_the_last_subscriber_leaves(
    wire: Wire,
) -> None:
    """Two subscribers of a session: it is listened for until the second leaves too."""
    first, second = Heard(), Heard()
    leave_first = wire.feed().subscribe("s1", first)
    leave_second = wire.feed().subscribe("s1", second)
    await wire.start_marker()
    # Each is told once the session is listened for: that comes after the
    # listener reads the session's version, which may end after the marker's.
    await first.next()
    await second.next()
    leave_first()
    assert await wire.reaches("s1")
    assert (first.count, second.count) == (1, 2)
    leave_second()
    leave_second()
    deadline = asyncio.get_running_loop().time() + GUARD
    while await wire.reaches("s1"):  # until its UNLISTEN or UNSUBSCRIBE lands
        assert asyncio.get_running_loop().time() < deadline
    assert not await wire.reaches("s1")
    assert await wire.subscribers("s1") in {0, None}


def noted_listenings(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, note every session the store's listener begins to listen for."""
    listened: list[str] = []
    changes = store._changes  # type: ignore[attr-defined]
    confirmed = changes.confirmed

    def noted(versions: Any) -> None:
        listened.extend(versions)
        confirmed(versions)

    monkeypatch.setattr(changes, "confirmed", noted)
    return listened


async def test_a_wait_that_ends_at_once_is_never_listened_for(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session subscribed to for less than 20 ms (a verdict decided here at once) is never sent to the server; one still subscribed to then is."""
    await wire.start_marker()
    listened = noted_listenings(wire.store, monkeypatch)
    wire.feed().subscribe("brief", Heard())()
    late = Heard()
    wire.feed().subscribe("late", late)
    await late.next()  # listened for once 20 ms passed
    assert listened == ["late"]
    assert not await wire.reaches("brief")


BRIEF = 40  # subscriptions ended after 0, 1, ... turns of the event loop


async def test_a_subscription_ended_on_its_way_to_the_server_leaves_nothing(
    shared_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscriptions listened for at once and ended at every moment of their way to the server: the listener ends up listening for none of them."""
    monkeypatch.setattr(_postgres, "LISTEN_AFTER", 0.0)
    monkeypatch.setattr(_redis, "LISTEN_AFTER", 0.0)
    wire = Wire(shared_url, monkeypatch)
    try:
        await wire.start_marker()
        listened = noted_listenings(wire.store, monkeypatch)
        for turns in range(BRIEF):
            leave = wire.feed().subscribe(f"brief-{turns}", Heard())
            for _ in range(turns):
                await asyncio.sleep(0)
            leave()
        late = Heard()
        wire.feed().subscribe("late", late)
        await late.next()  # listened for after every one above was settled
        assert "brief-0" not in listened  # never sent
        # Some were sent, and then undone.
        assert any(name.startswith("brief-") for name in listened)
        for turns in range(BRIEF):
            assert not await wire.reaches(f"brief-{turns}")
            assert await wire.subscribers(f"brief-{turns}") in {0, None}
    finally:
        await wire.aclose()


async def test_a_listener_cut_listens_again_for_every_session_waited_for(
    replicas: Replicas, make_session: Callable[[str], Session]
) -> None:
    """The server kills the listener's connection: once connected again (after its pause) it listens for the sessions subscribed before, tells their subscribers, and hears their next saves."""
    store, other = replicas.stores
    assert isinstance(store, ChangeFeed)
    one, two = Heard(), Heard()
    store.subscribe("one", one)
    store.subscribe("two", two)
    await one.next()
    await two.next()
    await cut_listener(replicas)
    await other.create(make_session("one"))  # while nobody listens: unheard
    await replicas.clock.advance(60)  # the pause before listening again
    await one.next()  # told: it may have missed changes
    await two.next()
    assert (one.count, two.count) == (2, 2)
    await other.create(make_session("two"))
    await two.next()
    await other.save(make_session("one"), expected_version=1)
    await one.next()
    assert (one.count, two.count) == (3, 3)
    assert await listeners(replicas) == 1


async def test_a_change_saved_before_the_listener_listens_is_not_missed(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verdict committed after ``wait`` subscribed but before the server confirmed the subscription wakes the waiter (which never polls) once it is confirmed."""
    one = replicas.verifier(0, watch_poll=HOUR)
    replicas.verifier(1, watch_poll=HOUR)
    sid = await replicas.waiting()
    held = asyncio.Event()  # the listener's subscriptions wait for it
    if replicas.url.startswith("postgresql"):
        store = cast("PostgresStore", replicas.stores[0])
        listener: Any = _listener_class(store._asyncpg)
        name = "execute"
    else:
        listener, name = redis.asyncio.client.PubSub, "subscribe"
    send = getattr(listener, name)

    async def after_the_test_says(*args: Any, **kwargs: Any) -> Any:
        await held.wait()
        return await send(*args, **kwargs)

    monkeypatch.setattr(listener, name, after_the_test_says)
    waiter = asyncio.ensure_future(one.wait(sid))
    await replicas.loads.next()  # subscribed, it saw the session waiting
    decided = await replicas.decide(sid)  # notified to nobody here
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    held.set()
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


async def test_a_confirmed_listening_loads_only_a_session_that_moved(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the listening for a waited-for session is confirmed, at the version the waiter knows, it loads nothing; the next change still wakes it."""
    listened = noted_listenings(replicas.stores[0], monkeypatch)
    _, sid, waiter = await replicas.waited_for()
    loaded = replicas.loads.count
    deadline = asyncio.get_running_loop().time() + GUARD
    while sid not in listened:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    for _ in range(20):
        await asyncio.sleep(0)
    assert replicas.loads.count == loaded  # the version had not moved
    assert not waiter.done()
    decided = await replicas.decide(sid)
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


async def test_a_confirmation_that_beats_the_first_load_loads_nothing_more(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listening confirmed while the waiter's first load is on its way, at the version that load returns: no second load."""
    listened = noted_listenings(replicas.stores[0], monkeypatch)
    one = replicas.verifier(0, watch_poll=HOUR)
    replicas.verifier(1, watch_poll=HOUR)
    sid = await replicas.waiting()
    gate = asyncio.Event()
    load = replicas.loads.load

    async def held(session_id: str, /) -> tuple[Session, int]:
        await gate.wait()
        return await load(session_id)

    monkeypatch.setattr(replicas.loads, "load", held)
    loaded = replicas.loads.count
    waiter = asyncio.ensure_future(one.wait(sid))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while sid not in listened:
        assert loop.time() < deadline
        await asyncio.sleep(0.005)
    gate.set()  # the first load returns only now, after the confirmation
    while replicas.loads.count == loaded:
        assert loop.time() < deadline
        await asyncio.sleep(0.005)
    for _ in range(20):
        await asyncio.sleep(0)
    assert replicas.loads.count == loaded + 1
    assert not waiter.done()
    decided = await replicas.decide(sid)
    assert await asyncio.wait_for(waiter, GUARD) == decided.verdict


def test_confirmations_reach_each_kind_of_subscriber() -> None:
    """A subscriber with ``confirmed`` gets the version; one with ``missed`` (or when the version is unknown) that; a plain callback a call."""
    changes = Subscribers()
    told: list[tuple[str, object]] = []

    class Confirming:
        def __call__(self) -> None:
            told.append(("changed", None))

        def missed(self) -> None:
            told.append(("missed", None))

        def confirmed(self, version: int) -> None:
            told.append(("confirmed", version))

    class Missing:
        def __call__(self) -> None:
            told.append(("changed", None))

        def missed(self) -> None:
            told.append(("missed only", None))

    async def subscribe() -> None:
        changes.add("a", Confirming())
        changes.add("a", Missing())
        changes.add("a", lambda: told.append(("plain", None)))
        changes.add("b", Confirming())

    asyncio.run(subscribe())
    changes.confirmed({"a": 3, "b": None, "nobody": 1})
    assert told == [
        ("confirmed", 3),
        ("missed only", None),
        ("plain", None),
        ("missed", None),
    ]


async def test_a_waiter_finds_by_polling_a_verdict_an_earlier_build_saved(
    shared_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade: a replica of an earlier build notifies on the schema's or prefix's one channel, which no store listens on any more; a waiter here is not woken, and finds the verdict at its next poll."""
    separator = "&" if "?" in shared_url else "?"
    previous = store_from_url(f"{shared_url}{separator}notifications=off")
    current = store_from_url(shared_url)
    assert isinstance(current, ChangeFeed)
    polls: list[float] = []
    poll = asyncio.Event()  # ends every waiter's pause
    wait = asyncio.wait

    async def paused(
        futures: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - stands in for asyncio.wait
        **kwargs: Any,
    ) -> Any:
        if timeout is None:
            return await wait(futures, **kwargs)
        polls.append(timeout)
        ended = asyncio.ensure_future(poll.wait())
        try:
            done, pending = await wait({*futures, ended}, return_when="FIRST_COMPLETED")
        finally:
            ended.cancel()
        return done - {ended}, pending - {ended}

    try:
        async with (
            Verifier(
                POLICY, channels=[channel()], store=current, watch_poll=HOUR
            ) as one,
            Verifier(
                POLICY, channels=[channel()], store=previous, watch_poll=HOUR
            ) as two,
        ):
            started = await two.start(applicant())
            sid = started.session_id
            await two.challenge(sid, "sms")
            monkeypatch.setattr(asyncio, "wait", paused)
            waiter = asyncio.ensure_future(one.wait(sid))
            while not polls:  # noqa: ASYNC110 - it loaded the session, and pauses
                await asyncio.sleep(0)
            probe = Heard()
            current.subscribe("probe", probe)
            await probe.next()  # listened for after the waiter's session
            decided = await two.submit(sid, "sms", {"code": "1"})
            await _notify_as_an_earlier_build(shared_url, previous, sid)
            current.subscribe("marker", (marker := Heard()))
            await marker.next()  # what the server sent before has come
            assert not waiter.done()
            poll.set()
            assert await asyncio.wait_for(waiter, GUARD) == decided.verdict
        assert probe.count == 1
    finally:
        await previous.aclose()
        await current.aclose()


async def _notify_as_an_earlier_build(
    url: str, store: SessionStore, session_id: str
) -> None:
    """Send the notification a store of an earlier build sent with a save: on the schema's or prefix's one channel."""
    if url.startswith("postgresql"):
        conn = await _pg_connect()
        try:
            schema = store._schema  # type: ignore[attr-defined]
            await conn.execute(
                "SELECT pg_notify($1, $2)", f"multiverify:{schema}", session_id
            )
        finally:
            await conn.close()
    else:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            prefix = store._prefix  # type: ignore[attr-defined]
            db = urlsplit(REDIS_URL).path.strip("/") or "0"
            await client.publish(f"{prefix}:changes:{db}", session_id)
        finally:
            await client.aclose()


async def test_a_redis_user_limited_to_its_prefix_and_changes_hears_other_replicas(
    make_session: Callable[[str], Session],
) -> None:
    """A Redis user allowed only ``~{prefix}:*`` and ``&{prefix}:changes:*`` subscribes to sessions' channels and hears another replica's saves."""
    prefix = f"mvt{uuid4().hex[:8]}"
    async with redis_user(f"~{prefix}:*", f"&{prefix}:changes:*") as url:
        store, other = RedisStore(url, prefix=prefix), RedisStore(url, prefix=prefix)
        try:
            heard = Heard()
            store.subscribe("s1", heard)
            await heard.next()  # subscribed
            await other.create(make_session("s1"))
            await heard.next()
            await other.save(make_session("s1"), expected_version=1)
            await heard.next()
            assert heard.count == 3
        finally:
            await store.aclose()
            await other.aclose()
            await delete_redis_prefix(prefix)
