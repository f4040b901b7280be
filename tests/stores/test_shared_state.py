"""The SharedState and WorkQueue contract: quotas, expiring values and leased queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from conftest import POSTGRES_URL, REDIS_URL, STORES

from multiverify.stores import (
    PostgresStore,
    QueueItem,
    RedisStore,
    SessionStore,
    SharedState,
    SqliteStore,
    WorkQueue,
)

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """T0 plus some seconds."""
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=sorted(STORES))
async def shared(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SessionStore]:
    """Each store in turn (every SessionStore is shared state and a work queue), fresh."""
    store = await STORES[request.param](tmp_path)
    try:
        yield store
    finally:
        await store.aclose()


class TestConsume:
    async def test_allows_up_to_the_limit(self, shared: SharedState) -> None:
        """Amounts are taken while they fit; the next one is refused and not recorded."""
        for n in range(3):
            quota = await shared.consume("k", at=at(n), window=60, limit=3)
            assert quota.allowed
            assert quota.used == n + 1

        refused = await shared.consume("k", at=at(3), window=60, limit=3)

        assert not refused.allowed
        assert refused.used == 3
        assert refused.limit == 3
        assert refused.retry_at == at(60)  # the first entry leaves the window

    async def test_window_slides(self, shared: SharedState) -> None:
        """Entries older than the window no longer count; an entry exactly window old has left."""
        await shared.consume("k", at=at(0), window=60, limit=1)
        assert not (await shared.consume("k", at=at(59), window=60, limit=1)).allowed

        assert (await shared.consume("k", at=at(60), window=60, limit=1)).allowed

    async def test_refusal_records_nothing(self, shared: SharedState) -> None:
        """A refused amount does not count against later calls."""
        await shared.consume("k", at=at(0), window=60, limit=2)
        assert not (
            await shared.consume("k", at=at(1), window=60, limit=2, amount=5)
        ).allowed

        assert (await shared.consume("k", at=at(2), window=60, limit=2)).allowed

    async def test_weighted_amounts(self, shared: SharedState) -> None:
        """Amounts weigh what they say (a spend cap in cents)."""
        await shared.consume("spend", at=at(0), window=86400, limit=100, amount=60)
        await shared.consume("spend", at=at(10), window=86400, limit=100, amount=30)

        refused = await shared.consume(
            "spend", at=at(20), window=86400, limit=100, amount=20
        )

        assert not refused.allowed
        assert refused.used == 90
        assert refused.retry_at == at(86400)

    async def test_amount_over_limit_has_no_retry(self, shared: SharedState) -> None:
        """An amount bigger than the limit never fits: no retry time is given."""
        refused = await shared.consume("k", at=at(0), window=60, limit=1, amount=2)

        assert not refused.allowed
        assert refused.retry_at is None

    async def test_keys_are_independent(self, shared: SharedState) -> None:
        """Each key has its own window."""
        await shared.consume("a", at=at(0), window=60, limit=1)

        assert (await shared.consume("b", at=at(0), window=60, limit=1)).allowed


class TestValues:
    async def test_put_get_expire(self, shared: SharedState) -> None:
        """A value lives for its TTL, then reads as missing."""
        assert await shared.put_value("k", "v", at=at(0), ttl=10)

        assert await shared.get_value("k", at=at(9)) == "v"
        assert await shared.get_value("k", at=at(10)) is None
        assert await shared.get_value("missing", at=at(0)) is None

    async def test_put_replaces(self, shared: SharedState) -> None:
        """A plain put overwrites a live value and its expiry."""
        await shared.put_value("k", "old", at=at(0), ttl=10)
        await shared.put_value("k", "new", at=at(5), ttl=100)

        assert await shared.get_value("k", at=at(50)) == "new"

    async def test_only_if_absent_is_a_lock(self, shared: SharedState) -> None:
        """only_if_absent refuses while a live value holds the key, and takes it once expired."""
        assert await shared.put_value(
            "lock", "a", at=at(0), ttl=30, only_if_absent=True
        )
        assert not await shared.put_value(
            "lock", "b", at=at(29), ttl=30, only_if_absent=True
        )
        assert await shared.get_value("lock", at=at(29)) == "a"

        assert await shared.put_value(
            "lock", "b", at=at(30), ttl=30, only_if_absent=True
        )
        assert await shared.get_value("lock", at=at(31)) == "b"

    async def test_delete_compare(self, shared: SharedState) -> None:
        """delete_value with a value deletes only a key that holds it."""
        await shared.put_value("lock", "a", at=at(0), ttl=30)

        assert not await shared.delete_value("lock", value="b")
        assert await shared.get_value("lock", at=at(1)) == "a"
        assert await shared.delete_value("lock", value="a")
        assert await shared.get_value("lock", at=at(1)) is None
        assert not await shared.delete_value("lock")

    async def test_delete_unconditional(self, shared: SharedState) -> None:
        """delete_value without a value deletes whatever the key holds."""
        await shared.put_value("k", "v", at=at(0), ttl=30)

        assert await shared.delete_value("k")
        assert await shared.get_value("k", at=at(1)) is None

    async def test_replace_value_compares(self, shared: SharedState) -> None:
        """replace_value stores only over the live value it expects, with a new expiry."""
        await shared.put_value("lease", "a", at=at(0), ttl=30)

        assert not await shared.replace_value(
            "lease", "b", expected="x", at=at(1), ttl=30
        )
        assert await shared.get_value("lease", at=at(1)) == "a"
        assert await shared.replace_value("lease", "a", expected="a", at=at(20), ttl=30)
        assert await shared.get_value("lease", at=at(49)) == "a"
        assert await shared.get_value("lease", at=at(50)) is None

    async def test_replace_value_needs_a_live_value(self, shared: SharedState) -> None:
        """replace_value stores nothing under a missing key or over an expired value."""
        assert not await shared.replace_value(
            "lease", "a", expected="a", at=at(0), ttl=30
        )
        assert await shared.get_value("lease", at=at(0)) is None
        await shared.put_value("lease", "a", at=at(0), ttl=10)

        assert not await shared.replace_value(
            "lease", "a", expected="a", at=at(10), ttl=30
        )
        assert await shared.get_value("lease", at=at(11)) is None
        assert await shared.put_value(
            "lease", "b", at=at(11), ttl=30, only_if_absent=True
        )

    async def test_replace_value_one_winner(self, shared: SharedState) -> None:
        """Of two replacements expecting the same value at once, exactly one is stored."""
        await shared.put_value("lease", "a", at=at(0), ttl=30)

        won = await asyncio.gather(
            shared.replace_value("lease", "b", expected="a", at=at(1), ttl=30),
            shared.replace_value("lease", "c", expected="a", at=at(1), ttl=30),
        )

        assert sorted(won) == [False, True]
        assert await shared.get_value("lease", at=at(2)) == ("b" if won[0] else "c")


class TestWorkQueue:
    async def test_enqueue_is_idempotent(self, shared: WorkQueue) -> None:
        """Enqueuing an id twice keeps the first item."""
        assert await shared.enqueue("q", "a", '{"n": 1}', at=at(0))
        assert not await shared.enqueue("q", "a", '{"n": 2}', at=at(1), priority=9)

        [item] = await shared.queue_items("q")
        assert item == QueueItem(
            queue="q",
            item_id="a",
            body='{"n": 1}',
            priority=0,
            enqueued_at=at(0),
            available_at=at(0),
        )

    async def test_claim_order(self, shared: WorkQueue) -> None:
        """Claims take the highest priority first, then the oldest."""
        await shared.enqueue("q", "old-low", "{}", at=at(0))
        await shared.enqueue("q", "new-high", "{}", at=at(2), priority=5)
        await shared.enqueue("q", "mid-low", "{}", at=at(1))

        claimed = [
            await shared.claim("q", owner="w", at=at(3), lease=60) for _ in range(4)
        ]

        assert [c.item_id if c else None for c in claimed] == [
            "new-high",
            "old-low",
            "mid-low",
            None,
        ]
        assert [item.item_id for item in await shared.queue_items("q")] == [
            "new-high",
            "old-low",
            "mid-low",
        ]

    async def test_claim_sets_lease(self, shared: WorkQueue) -> None:
        """A claim names its owner, its end and counts the claims."""
        await shared.enqueue("q", "a", "{}", at=at(0))

        item = await shared.claim("q", owner="agent-7", at=at(1), lease=300)

        assert item is not None
        assert item.claimed_by == "agent-7"
        assert item.claimed_until == at(301)
        assert item.claims == 1
        assert item.claimed(at(300))
        assert not item.claimed(at(301))

    async def test_lapsed_claim_returns_to_queue(self, shared: WorkQueue) -> None:
        """An item whose lease lapsed can be claimed again by someone else."""
        await shared.enqueue("q", "a", "{}", at=at(0))
        await shared.claim("q", owner="w1", at=at(0), lease=60)
        assert await shared.claim("q", owner="w2", at=at(59), lease=60) is None

        again = await shared.claim("q", owner="w2", at=at(60), lease=60)

        assert again is not None
        assert again.claimed_by == "w2"
        assert again.claims == 2

    async def test_claim_by_id(self, shared: WorkQueue) -> None:
        """A named item is claimed when free, and refused when held or missing."""
        await shared.enqueue("q", "a", "{}", at=at(0))
        await shared.enqueue("q", "b", "{}", at=at(0))

        got = await shared.claim("q", owner="w", at=at(1), lease=60, item_id="b")
        assert got is not None
        assert got.item_id == "b"
        assert (
            await shared.claim("q", owner="x", at=at(1), lease=60, item_id="b") is None
        )
        assert (
            await shared.claim("q", owner="x", at=at(1), lease=60, item_id="zz") is None
        )

    async def test_available_at(self, shared: WorkQueue) -> None:
        """An item cannot be claimed before it is available."""
        await shared.enqueue("q", "later", "{}", at=at(0), available_at=at(100))

        assert await shared.claim("q", owner="w", at=at(99), lease=60) is None
        assert await shared.claim("q", owner="w", at=at(100), lease=60) is not None

    async def test_extend(self, shared: WorkQueue) -> None:
        """The owner renews a claim; a claim taken over cannot be renewed by its old owner."""
        await shared.enqueue("q", "a", "{}", at=at(0))
        await shared.claim("q", owner="w1", at=at(0), lease=60)

        assert await shared.extend("q", "a", owner="w1", at=at(50), lease=60)
        assert await shared.claim("q", owner="w2", at=at(100), lease=60) is None
        assert not await shared.extend("q", "a", owner="w2", at=at(100), lease=60)

        taken = await shared.claim("q", owner="w2", at=at(110), lease=60)
        assert taken is not None
        assert not await shared.extend("q", "a", owner="w1", at=at(111), lease=60)
        assert not await shared.extend("q", "gone", owner="w1", at=at(111), lease=60)

    async def test_release(self, shared: WorkQueue) -> None:
        """Releasing frees the item at once, or from a given moment."""
        await shared.enqueue("q", "a", "{}", at=at(0))
        await shared.claim("q", owner="w1", at=at(0), lease=600)

        assert not await shared.release("q", "a", owner="w2")
        assert await shared.release("q", "a", owner="w1", available_at=at(30))
        assert await shared.claim("q", owner="w2", at=at(29), lease=60) is None
        item = await shared.claim("q", owner="w2", at=at(30), lease=60)
        assert item is not None
        assert item.claimed_by == "w2"
        assert not await shared.release("q", "missing", owner="w2")

    async def test_update_item(self, shared: WorkQueue) -> None:
        """Body and priority change in place, claimed or not."""
        await shared.enqueue("q", "a", '{"v": 1}', at=at(0))
        await shared.claim("q", owner="w", at=at(0), lease=60)

        assert await shared.update_item("q", "a", priority=7)
        assert await shared.update_item("q", "a", body='{"v": 2}')
        [item] = await shared.queue_items("q")
        assert (item.body, item.priority, item.claimed_by) == ('{"v": 2}', 7, "w")
        assert not await shared.update_item("q", "missing", priority=1)

    async def test_complete(self, shared: WorkQueue) -> None:
        """Completing removes the item: by its owner, or unconditionally."""
        await shared.enqueue("q", "a", "{}", at=at(0))
        await shared.enqueue("q", "b", "{}", at=at(0))
        await shared.claim("q", owner="w1", at=at(0), lease=60, item_id="a")

        assert not await shared.complete("q", "a", owner="w2")
        assert await shared.complete("q", "a", owner="w1")
        assert not await shared.complete("q", "a")
        assert await shared.complete("q", "b")
        assert await shared.queue_items("q") == []

    async def test_late_owner_completes_if_nobody_took_over(
        self, shared: WorkQueue
    ) -> None:
        """A lapsed claim that nobody took over still lets its owner complete."""
        await shared.enqueue("q", "a", "{}", at=at(0))
        await shared.claim("q", owner="w1", at=at(0), lease=60)

        assert await shared.complete("q", "a", owner="w1")

    async def test_queues_are_independent(self, shared: WorkQueue) -> None:
        """Items live in their own queue; the same id may exist in two queues."""
        await shared.enqueue("q1", "a", "{}", at=at(0))
        await shared.enqueue("q2", "a", "{}", at=at(0))

        assert await shared.claim("q1", owner="w", at=at(0), lease=5) is not None
        assert [i.item_id for i in await shared.queue_items("q2")] == ["a"]
        assert await shared.queue_items("empty") == []


async def _second_replica(
    kind: str, first: SessionStore, tmp_path: Path
) -> SessionStore:
    """Another store on the same database, schema, prefix or file as ``first``."""
    if kind == "postgres":
        assert isinstance(first, PostgresStore)
        return PostgresStore(POSTGRES_URL, schema=first._schema)
    if kind == "redis":
        assert isinstance(first, RedisStore)
        return RedisStore(REDIS_URL, prefix=first._prefix)
    return SqliteStore(tmp_path / "store.db")


@pytest.fixture(params=["postgres", "redis", "sqlite"])
async def replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    """Two stores with connections of their own on one shared backend: two replicas."""
    first = await STORES[request.param](tmp_path)
    second = await _second_replica(request.param, first, tmp_path)
    try:
        yield first, second
    finally:
        await second.aclose()
        await first.aclose()


class TestRaces:
    async def test_consume_near_the_limit_admits_exactly_what_fits(
        self, replicas: tuple[SessionStore, SessionStore]
    ) -> None:
        """Replicas racing to consume one key with room for two: exactly two win, every round."""
        one, two = replicas
        for round_ in range(8):
            key = f"sends:{round_}"
            for n in range(3):
                assert (await one.consume(key, at=at(n), window=600, limit=5)).allowed

            answers = await asyncio.gather(
                *(
                    (one if n % 2 else two).consume(key, at=at(10), window=600, limit=5)
                    for n in range(6)
                )
            )

            assert sum(answer.allowed for answer in answers) == 2
            final = await two.consume(key, at=at(11), window=600, limit=5, amount=0)
            assert final.used == 5

    async def test_claims_of_one_item_have_one_winner(
        self, replicas: tuple[SessionStore, SessionStore]
    ) -> None:
        """Replicas racing to claim one item (next, or by id): exactly one gets it, every round."""
        one, two = replicas
        for round_ in range(8):
            queue = f"desk-{round_}"
            await one.enqueue(queue, "only", "{}", at=at(0))
            by_id = round_ % 2 == 1

            claims = await asyncio.gather(
                *(
                    (one if n % 2 else two).claim(
                        queue,
                        owner=f"w{n}",
                        at=at(1),
                        lease=60,
                        item_id="only" if by_id else None,
                    )
                    for n in range(6)
                )
            )

            winners = [claim for claim in claims if claim is not None]
            assert len(winners) == 1
            [item] = await two.queue_items(queue)
            assert item.claimed_by == winners[0].claimed_by
            assert item.claims == 1
