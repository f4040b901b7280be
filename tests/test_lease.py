"""Tests for session leases: renewed and given back only by the replica holding them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multiverify._lease import SessionLeases
from multiverify.stores import MemoryStore
from multiverify.testing import FakeClock
from stores.interleaved import Interleaved

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
KEY = SessionLeases.key("s1")


class TestSessionLeases:
    async def test_renew_pushes_the_expiry_back(self) -> None:
        """The holder's renewal keeps its lease a ``ttl`` from the renewal."""
        clock = FakeClock(T0)
        store = MemoryStore()
        leases = SessionLeases(store, clock, owner="a", ttl=30)
        assert await leases.acquire("s1")
        await clock.advance(20)

        assert await leases.renew("s1")

        assert await store.get_value(KEY, at=T0 + timedelta(seconds=49)) == "a"
        assert await store.get_value(KEY, at=T0 + timedelta(seconds=50)) is None

    async def test_renew_never_overwrites_a_lease_taken_meanwhile(self) -> None:
        """A lease another replica took between the renewal's check and its write stays theirs."""
        store = MemoryStore()
        view = Interleaved(store, "put_value", "replace_value")
        mine = SessionLeases(view, FakeClock(T0), owner="a", ttl=30)
        # The other replica's clock is past the end of this one's lease (a
        # stalled process, or skew), so it sees the lease lapsed.
        theirs = SessionLeases(
            store, FakeClock(T0 + timedelta(seconds=31)), owner="b", ttl=30
        )
        assert await mine.acquire("s1")
        view.before = lambda: theirs.acquire("s1")

        assert not await mine.renew("s1")

        assert await store.get_value(KEY, at=T0 + timedelta(seconds=32)) == "b"

    async def test_renew_of_a_lapsed_lease_fails(self) -> None:
        """A lease that lapsed, taken by nobody since, is not renewed: it must be taken again."""
        clock = FakeClock(T0)
        leases = SessionLeases(MemoryStore(), clock, owner="a", ttl=30)
        assert await leases.acquire("s1")
        await clock.advance(30)

        assert not await leases.renew("s1")

    async def test_release_leaves_another_holders_lease(self) -> None:
        """Giving back a lease that lapsed and was taken over leaves the new holder's lease."""
        store = MemoryStore()
        mine = SessionLeases(store, FakeClock(T0), owner="a", ttl=30)
        later = FakeClock(T0 + timedelta(seconds=31))
        theirs = SessionLeases(store, later, owner="b", ttl=30)
        assert await mine.acquire("s1")
        assert await theirs.acquire("s1")

        await mine.release("s1")

        assert await store.get_value(KEY, at=later.now()) == "b"
