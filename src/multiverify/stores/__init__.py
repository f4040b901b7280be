"""Session stores: in memory (tests), SQLite (the embedded default), PostgreSQL and Redis (many replicas)."""

from __future__ import annotations

from ._base import (
    AtomicQuotas,
    ChangeFeed,
    DueTimer,
    EffectClaim,
    OpenableStore,
    PendingEffect,
    QueueItem,
    Quota,
    Quotas,
    QuotaTake,
    SessionStore,
    SharedState,
    WorkQueue,
)
from ._memory import MemoryStore
from ._postgres import PostgresStore
from ._redis import RedisStore
from ._sqlite import SqliteStore
from ._url import store_from_url

__all__ = [
    "AtomicQuotas",
    "ChangeFeed",
    "DueTimer",
    "EffectClaim",
    "MemoryStore",
    "OpenableStore",
    "PendingEffect",
    "PostgresStore",
    "QueueItem",
    "Quota",
    "QuotaTake",
    "Quotas",
    "RedisStore",
    "SessionStore",
    "SharedState",
    "SqliteStore",
    "WorkQueue",
    "store_from_url",
]
