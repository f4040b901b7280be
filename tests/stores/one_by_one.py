"""Views of a store's SharedState that record their quota calls: without ``consume_all`` (as written before `AtomicQuotas`), and with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from multiverify.stores import AtomicQuotas, Quota, Quotas, QuotaTake, SharedState


class OneByOne:
    """Every SharedState call but ``consume_all``, passed to ``store``; the names of the calls recorded."""

    def __init__(self, store: SharedState) -> None:
        self.store = store
        self.calls: list[str] = []

    async def consume(
        self,
        key: str,
        /,
        *,
        at: datetime,
        window: float,
        limit: float,
        amount: float = 1.0,
    ) -> Quota:
        self.calls.append("consume")
        return await self.store.consume(
            key, at=at, window=window, limit=limit, amount=amount
        )

    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        self.calls.append("refund")
        return await self.store.refund(key, at=at, amount=amount)

    async def get_value(self, key: str, /, *, at: datetime) -> str | None:
        return await self.store.get_value(key, at=at)

    async def put_value(
        self,
        key: str,
        value: str,
        /,
        *,
        at: datetime,
        ttl: float,
        only_if_absent: bool = False,
    ) -> bool:
        return await self.store.put_value(
            key, value, at=at, ttl=ttl, only_if_absent=only_if_absent
        )

    async def replace_value(
        self, key: str, value: str, /, *, expected: str, at: datetime, ttl: float
    ) -> bool:
        return await self.store.replace_value(
            key, value, expected=expected, at=at, ttl=ttl
        )

    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        return await self.store.delete_value(key, value=value)

    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        return await self.store.sweep_expired(at=at, batch=batch)


class Atomic(OneByOne):
    """The same view with ``consume_all`` as well, recorded too."""

    async def consume_all(
        self, takes: Sequence[QuotaTake], /, *, at: datetime
    ) -> Quotas:
        self.calls.append("consume_all")
        assert isinstance(self.store, AtomicQuotas)
        return await self.store.consume_all(takes, at=at)
