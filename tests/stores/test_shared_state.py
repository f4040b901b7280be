"""The SharedState and WorkQueue contract: quotas, expiring values and leased queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from conftest import POSTGRES_URL, REDIS_URL, STORES

from multiverify.stores import (
    AtomicQuotas,
    MemoryStore,
    PostgresStore,
    QueueItem,
    Quota,
    QuotaTake,
    RedisStore,
    SessionStore,
    SharedState,
    SqliteStore,
    WorkQueue,
)

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
#: The most a memory store holds beyond its live entries before it drops lapsed ones.
MEMORY_SLACK = 1024


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


class TestRefund:
    async def test_refund_gives_back_what_was_taken(self, shared: SharedState) -> None:
        """A refund removes the entry a consume recorded at that moment: the room is back."""
        await shared.consume("k", at=at(0), window=60, limit=2)
        await shared.consume("k", at=at(1), window=60, limit=2)
        assert not (await shared.consume("k", at=at(2), window=60, limit=2)).allowed

        assert await shared.refund("k", at=at(1))

        again = await shared.consume("k", at=at(3), window=60, limit=2)
        assert again.allowed
        assert again.used == 2

    async def test_refund_takes_one_entry_of_that_amount(
        self, shared: SharedState
    ) -> None:
        """Of two entries at one moment one goes; an amount or moment never taken refunds nothing."""
        await shared.consume("spend", at=at(0), window=600, limit=100, amount=30)
        await shared.consume("spend", at=at(0), window=600, limit=100, amount=30)

        assert not await shared.refund("spend", at=at(0), amount=20)
        assert not await shared.refund("spend", at=at(1), amount=30)
        assert not await shared.refund("other", at=at(0), amount=30)
        assert await shared.refund("spend", at=at(0), amount=30)

        left = await shared.consume("spend", at=at(5), window=600, limit=100, amount=0)
        assert left.used == 30


def take(
    key: str, limit: float, *, window: float = 60, amount: float = 1.0
) -> QuotaTake:
    """One take of ``amount`` from ``key``'s window."""
    return QuotaTake(key=key, window=window, limit=limit, amount=amount)


async def held(
    shared: SharedState, key: str, *, when: datetime, window: float = 60
) -> float:
    """What ``key``'s window holds at ``when`` (a consume of nothing records nothing that counts)."""
    return (await shared.consume(key, at=when, window=window, limit=1e9, amount=0)).used


def atomic(store: object) -> AtomicQuotas:
    """``store``, which takes several quotas at once."""
    assert isinstance(store, AtomicQuotas)
    return store


class TestConsumeAll:
    async def test_every_store_has_it(self, shared: SharedState) -> None:
        """Each store of multiverify takes several quotas atomically."""
        assert isinstance(shared, AtomicQuotas)

    async def test_all_allowed_records_all(self, shared: SessionStore) -> None:
        """Takes that all fit are each recorded, with what each window holds after."""
        await shared.consume("phone", at=at(0), window=60, limit=3)

        answer = await atomic(shared).consume_all(
            [take("phone", 3), take("applicant", 1), take("spend", 5, amount=2.5)],
            at=at(1),
        )

        assert answer.allowed
        assert answer.refused is None
        assert answer.quotas == (
            Quota(allowed=True, used=2, limit=3),
            Quota(allowed=True, used=1, limit=1),
            Quota(allowed=True, used=2.5, limit=5),
        )
        assert await held(shared, "phone", when=at(2)) == 2
        assert await held(shared, "applicant", when=at(2)) == 1
        assert await held(shared, "spend", when=at(2)) == 2.5

    async def test_one_refused_records_none(self, shared: SessionStore) -> None:
        """A take that does not fit leaves every window as it was, and is named with its retry_at."""
        await shared.consume("ip", at=at(0), window=60, limit=2)
        await shared.consume("ip", at=at(10), window=60, limit=2)

        answer = await atomic(shared).consume_all(
            [take("phone", 5), take("ip", 2), take("spend", 5, amount=9)], at=at(20)
        )

        assert not answer.allowed
        assert answer.quotas == ()
        assert answer.refused == take("ip", 2)
        assert answer.refusal == Quota(allowed=False, used=2, limit=2, retry_at=at(60))
        assert await held(shared, "phone", when=at(21)) == 0
        assert await held(shared, "spend", when=at(21)) == 0
        assert await held(shared, "ip", when=at(21)) == 2

    async def test_the_first_refusal_in_order_is_named(
        self, shared: SessionStore
    ) -> None:
        """Of two takes that do not fit, the answer names the first given; an amount over its limit on its own has no retry_at."""
        answer = await atomic(shared).consume_all(
            [take("a", 1), take("b", 1, amount=2), take("c", 0)], at=at(0)
        )

        assert answer.refused == take("b", 1, amount=2)
        assert answer.refusal == Quota(allowed=False, used=0, limit=1)

    async def test_takes_of_one_key_add_up(self, shared: SessionStore) -> None:
        """Two takes of one key count together: within the limit both go, beyond it neither."""
        allowed = await atomic(shared).consume_all(
            [take("k", 3, amount=1), take("k", 3, amount=2)], at=at(0)
        )
        assert [quota.used for quota in allowed.quotas] == [1, 3]

        refused = await atomic(shared).consume_all(
            [take("j", 3, amount=2), take("j", 3, amount=2)], at=at(0)
        )
        assert refused.refusal == Quota(allowed=False, used=2, limit=3, retry_at=at(60))
        assert await held(shared, "k", when=at(1)) == 3
        assert await held(shared, "j", when=at(1)) == 0

    async def test_each_take_counts_its_own_window(self, shared: SessionStore) -> None:
        """A key taken with an hour's and a minute's window: entries older than the minute count only in the hour."""
        await shared.consume("hour", at=at(0), window=3600, limit=2)
        await shared.consume("minute", at=at(0), window=60, limit=1)

        answer = await atomic(shared).consume_all(
            [take("minute", 1), take("hour", 2, window=3600)], at=at(60)
        )

        assert [quota.used for quota in answer.quotas] == [1, 2]
        refused = await atomic(shared).consume_all(
            [take("minute", 5), take("hour", 2, window=3600)], at=at(61)
        )
        assert refused.refused == take("hour", 2, window=3600)
        assert refused.refusal is not None
        assert refused.refusal.retry_at == at(3600)
        assert await held(shared, "minute", when=at(62)) == 1

    async def test_nothing_to_take(self, shared: SessionStore) -> None:
        """No takes: allowed, nothing recorded."""
        answer = await atomic(shared).consume_all([], at=at(0))

        assert answer.allowed
        assert answer.quotas == ()

    async def test_a_take_is_refunded_like_a_consume(
        self, shared: SessionStore
    ) -> None:
        """What consume_all recorded, refund gives back, one entry per take."""
        await atomic(shared).consume_all(
            [take("k", 2), take("spend", 9, amount=4)], at=at(0)
        )

        assert await shared.refund("spend", at=at(0), amount=4)
        assert await shared.refund("k", at=at(0))
        assert not await shared.refund("k", at=at(0))
        assert await held(shared, "spend", when=at(1)) == 0

    async def test_entries_outside_the_window_go(self, shared: SessionStore) -> None:
        """The window slides for consume_all as for consume."""
        await atomic(shared).consume_all([take("k", 1)], at=at(0))
        assert not (await atomic(shared).consume_all([take("k", 1)], at=at(59))).allowed

        assert (await atomic(shared).consume_all([take("k", 1)], at=at(60))).allowed


class TestSweep:
    @staticmethod
    def removes(shared: SharedState, count: int) -> int:
        """What a sweep reports: Redis expires its keys itself and removes nothing."""
        return 0 if isinstance(shared, RedisStore) else count

    async def test_removes_lapsed_values_only(self, shared: SharedState) -> None:
        """A sweep deletes the values lapsed at ``at`` and leaves the live ones."""
        await shared.put_value("gone", "a", at=at(0), ttl=10)
        await shared.put_value("live", "b", at=at(0), ttl=100)
        await shared.put_value("renewed", "c", at=at(0), ttl=10)
        await shared.put_value("renewed", "d", at=at(5), ttl=100)

        assert await shared.sweep_expired(at=at(50)) == self.removes(shared, 1)

        assert await shared.get_value("live", at=at(50)) == "b"
        assert await shared.get_value("renewed", at=at(50)) == "d"
        assert await shared.sweep_expired(at=at(50)) == 0

    async def test_a_value_lapses_at_its_expiry(self, shared: SharedState) -> None:
        """A value stored until ``at(10)`` stays in a sweep at ``at(9)`` and goes in one at ``at(10)``."""
        await shared.put_value("k", "v", at=at(0), ttl=10)

        assert await shared.sweep_expired(at=at(9)) == 0
        assert await shared.get_value("k", at=at(9)) == "v"
        assert await shared.sweep_expired(at=at(10)) == self.removes(shared, 1)

    async def test_sweeps_in_batches(self, shared: SharedState) -> None:
        """Every lapsed value goes, however small the batch."""
        for n in range(5):
            await shared.put_value(f"k{n}", "v", at=at(n), ttl=1)

        assert await shared.sweep_expired(at=at(60), batch=2) == self.removes(shared, 5)
        assert await shared.sweep_expired(at=at(60), batch=2) == 0

    async def test_removes_quota_entries_that_left_their_window(
        self, shared: SharedState
    ) -> None:
        """Entries of a window nobody consumes from again go once they left it; a live window stays."""
        await shared.consume("phone:a", at=at(0), window=10, limit=5)
        await shared.consume("phone:a", at=at(5), window=10, limit=5)
        await shared.consume("phone:b", at=at(0), window=100, limit=1)

        assert await shared.sweep_expired(at=at(20)) == self.removes(shared, 2)

        assert not (
            await shared.consume("phone:b", at=at(21), window=100, limit=1)
        ).allowed
        assert (await shared.consume("phone:a", at=at(21), window=10, limit=1)).allowed

    async def test_a_sweep_leaves_a_lock_free(self, shared: SharedState) -> None:
        """A swept lock can be taken again."""
        await shared.put_value("lock", "a", at=at(0), ttl=30, only_if_absent=True)
        await shared.sweep_expired(at=at(30))

        assert await shared.put_value(
            "lock", "b", at=at(31), ttl=30, only_if_absent=True
        )


class TestMemoryGrowth:
    async def test_lapsed_values_do_not_pile_up(self) -> None:
        """Without any sweep, a memory store keeps about its live values, not every one it held."""
        store = MemoryStore()
        for n in range(5000):
            await store.put_value(f"send:{n}", "{}", at=at(n), ttl=10)

        assert await store.sweep_expired(at=at(5000)) <= MEMORY_SLACK
        assert await store.get_value("send:4999", at=at(5000)) == "{}"

    async def test_windows_of_keys_never_seen_again_do_not_pile_up(self) -> None:
        """A quota window whose entries all left it goes, with no sweep called."""
        store = MemoryStore()
        for n in range(5000):
            await store.consume(f"phone:{n}", at=at(n), window=10, limit=1)

        assert len(store._windows) <= MEMORY_SLACK
        assert not (
            await store.consume("phone:4999", at=at(5000), window=10, limit=1)
        ).allowed


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


async def opened(*stores: SessionStore) -> None:
    """Open each store (migrating a new SQLite file) before they race: what is raced is the quota calls."""
    for store in stores:
        await store.get_value("warm-up", at=at(0))


class TestConsumeAllAcrossReplicas:
    async def test_racing_takes_never_exceed_a_limit(
        self, replicas: tuple[SessionStore, SessionStore]
    ) -> None:
        """Forty takes of two keys, in both orders, from two replicas at once: exactly the limit goes, on both keys."""
        one, two = replicas
        await opened(one, two)
        pair = [take("phone", 5), take("applicant", 7)]

        answers = await asyncio.gather(
            *(
                atomic(one if n % 2 else two).consume_all(
                    pair if n % 4 < 2 else pair[::-1], at=at(n / 100)
                )
                for n in range(40)
            )
        )

        assert sum(answer.allowed for answer in answers) == 5
        assert await held(one, "phone", when=at(1)) == 5
        assert await held(one, "applicant", when=at(1)) == 5

    async def test_a_refused_take_never_holds_a_limit_meanwhile(
        self, replicas: tuple[SessionStore, SessionStore]
    ) -> None:
        """Takes refused by a later limit never keep another send from the number: the one that fits always goes."""
        one, two = replicas
        await opened(one, two)
        for n in range(10):
            phone = f"phone:{n}"
            refused = [take(phone, 1), take("ip", 0)]  # the IP is over its limit
            answers = await asyncio.gather(
                *(atomic(one).consume_all(refused, at=at(n)) for _ in range(10)),
                atomic(two).consume_all([take(phone, 1)], at=at(n)),
                *(atomic(two).consume_all(refused, at=at(n)) for _ in range(10)),
            )
            assert [answer.allowed for answer in answers] == [False] * 10 + [True] + [
                False
            ] * 10

    async def test_consume_and_consume_all_share_the_keys_locks(
        self, replicas: tuple[SessionStore, SessionStore]
    ) -> None:
        """Single consumes racing batched takes of the same key admit exactly its limit between them."""
        one, two = replicas
        await opened(one, two)

        answers = await asyncio.gather(
            *(one.consume("k", at=at(0), window=60, limit=6) for _ in range(10)),
            *(
                atomic(two).consume_all([take("other", 99), take("k", 6)], at=at(0))
                for _ in range(10)
            ),
        )

        assert sum(answer.allowed for answer in answers) == 6
        assert await held(one, "k", when=at(1)) == 6
