"""Fixtures for the store contract suite: every store, and sessions to put in them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import pytest

from multiverify import Applicant, LoanApplication, Policy, Step
from multiverify._session import Session, new_session
from multiverify.exceptions import StoreUnavailableError
from multiverify.stores import (
    MemoryStore,
    PostgresStore,
    RedisStore,
    SessionStore,
    SqliteStore,
    store_from_url,
)

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


POSTGRES_URL = os.environ.get(
    "MULTIVERIFY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MULTIVERIFY_TEST_REDIS", "redis://127.0.0.1:6379/15")


def service_missing(name: str, reason: str) -> None:
    """Skip on a laptop without the server; fail where services are required (CI)."""
    message = (
        f"{name} is not reachable ({reason}); start it, or set "
        f"MULTIVERIFY_TEST_{name.upper()} to its URL"
    )
    if os.environ.get("MULTIVERIFY_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (MULTIVERIFY_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(message)


async def _memory(tmp_path: Path) -> SessionStore:
    return MemoryStore()


async def _sqlite(tmp_path: Path) -> SessionStore:
    return SqliteStore(tmp_path / "store.db")


class _ScratchPostgresStore(PostgresStore):
    """A PostgresStore on a schema of its own that it drops when closed."""

    async def aclose(self) -> None:
        await super().aclose()
        await drop_postgres_schema(self._schema)


async def drop_postgres_schema(schema: str) -> None:
    """Drop a test schema and everything in it (if it exists)."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _postgres(tmp_path: Path) -> SessionStore:
    try:
        made = _ScratchPostgresStore(POSTGRES_URL, schema=f"mv_test_{uuid4().hex[:12]}")
        await made.open()
    except StoreUnavailableError as exc:
        service_missing("postgres", str(exc))
    return made


class _ScratchRedisStore(RedisStore):
    """A RedisStore on a key prefix of its own whose keys it deletes when closed."""

    async def aclose(self) -> None:
        await super().aclose()
        await delete_redis_prefix(self._prefix)


async def delete_redis_prefix(prefix: str) -> None:
    """Delete every key under ``prefix:`` (SCAN + DEL) on the test database."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_user(*rules: str) -> AsyncIterator[str]:
    """A Redis user with these ACL rules (and every command): the URL that logs in as it; deleted afterwards."""
    import redis.asyncio

    user = f"mvacl{uuid4().hex[:12]}"
    admin = redis.asyncio.Redis.from_url(REDIS_URL)
    await admin.execute_command("ACL", "SETUSER", user, "on", "nopass", *rules, "+@all")
    parts = urlsplit(REDIS_URL)
    try:
        yield urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def _redis(tmp_path: Path) -> SessionStore:
    made = _ScratchRedisStore(REDIS_URL, prefix=f"mvtest:{uuid4().hex[:12]}")
    try:
        await made.open()
    except StoreUnavailableError as exc:
        service_missing("redis", str(exc))
    return made


#: Every store the contract suite runs against, by name: an async factory that
#: returns a fresh, empty store (it calls ``service_missing`` when its server
#: cannot be reached).
STORES: dict[str, Callable[[Path], Awaitable[SessionStore]]] = {
    "memory": _memory,
    "postgres": _postgres,
    "redis": _redis,
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(STORES))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SessionStore]:
    """Each store in turn, fresh and empty."""
    made = await STORES[request.param](tmp_path)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def policy() -> Policy:
    """A one-step policy."""
    return Policy(
        name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
    )


@pytest.fixture
def applicant() -> Applicant:
    """A realistic applicant with a loan."""
    return Applicant(
        applicant_id="app-1",
        name="Li Lei",
        national_id="110101199001011234",
        phone="+8613800138000",
        date_of_birth=date(1990, 1, 1),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="5000", currency="CNY", term_months=12, purpose="phone"
        ),
    )


@pytest.fixture
def make_session(policy: Policy, applicant: Applicant) -> Callable[[str], Session]:
    """Build a fresh (not yet started) session with the given id."""

    def make(session_id: str) -> Session:
        return new_session(policy, applicant, session_id=session_id, at=T0)

    return make


async def _reachable(url: str, name: str) -> None:
    store = store_from_url(url)
    try:
        await store.schema_version()  # type: ignore[attr-defined]
    except StoreUnavailableError as exc:
        service_missing(name, str(exc))
    finally:
        await store.aclose()


@pytest.fixture(params=["postgres", "redis"])
async def shared_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A store URL on a scratch schema or prefix of the shared PostgreSQL, then Redis."""
    scratch = f"mv_shared_{uuid4().hex[:10]}"
    if request.param == "postgres":
        url = f"{POSTGRES_URL}?schema={scratch}"
    else:
        url = f"{REDIS_URL}?prefix={scratch}"
    await _reachable(url, request.param)
    try:
        yield url
    finally:
        if request.param == "postgres":
            await drop_postgres_schema(scratch)
        else:
            await delete_redis_prefix(scratch)
