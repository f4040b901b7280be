"""A SessionStore on PostgreSQL (asyncpg): one database shared by many replicas.

Every replica opens its own connection pool on the same database and schema.
A save is one transaction: a compare-and-set ``UPDATE`` on the session's
version, then its effects (the outbox) and audit events, so two replicas
saving the same session from the same version cannot both win. Webhook
deduplication is a primary key (``INSERT ... ON CONFLICT DO NOTHING``).

Every create and save also sends ``pg_notify`` on the session's own channel
with the session's id (in the same statement, so only when it commits); from
its first waiter until it is closed, a store keeps one connection of its own
(not from the pool) that listens on the channels of the sessions waited for
here, and tells their subscribers (a
[`ChangeFeed`][multiverify.stores.ChangeFeed]).

The tables live in their own schema (``multiverify`` unless told otherwise),
which carries its version in a ``schema_version`` table. Missing migrations
are applied, in order and in one transaction, the first time a store is used;
the transaction holds an advisory lock on the schema, so replicas starting at
once migrate one after the other and the later ones find nothing to do.

asyncpg is imported only when a store is built, so ``multiverify.stores``
imports without it (``pip install 'multiverify[postgres]'``).
"""

# ruff: noqa: S608 - the only names put into SQL text are the schema, checked
# against _IDENTIFIER and quoted, and the channels made of hex digests; every
# value goes in as a query parameter.

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._audit import AuditEvent
from .._clock import Clock, SystemClock
from .._serde import loads, session_to_json, structure_effect
from .._session import Effect, Session
from ..exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    StoreUnavailableError,
)
from ._base import (
    LISTEN_AFTER,
    DueTimer,
    EffectClaim,
    OpenableStore,
    PendingEffect,
    QueueItem,
    Quota,
    Quotas,
    QuotaTake,
    SerialisedWrites,
    Subscribers,
    fit_takes,
    refused_quota,
    refused_take,
    session_exists,
    session_missing,
    version_moved,
    widest_windows,
    with_sessions,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

__all__ = ["PostgresStore"]

# Each migration is a list of statements, with ``{s}`` standing for the quoted
# schema; migration ``n`` (from 1) brings the schema to version ``n``. Append
# new ones; never edit a shipped one.
#
# Tables that need an order carry a ``seq BIGSERIAL`` that an upsert keeps, so
# an effect or timer saved again keeps its place.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE {s}.sessions (
            session_id TEXT        PRIMARY KEY,
            seq        BIGSERIAL   NOT NULL UNIQUE,
            version    BIGINT      NOT NULL,
            status     TEXT        NOT NULL,
            body       TEXT        NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )
        """,
        """
        CREATE TABLE {s}.effects (
            seq        BIGSERIAL PRIMARY KEY,
            session_id TEXT      NOT NULL,
            effect_id  TEXT      NOT NULL,
            body       TEXT      NOT NULL,
            UNIQUE (session_id, effect_id)
        )
        """,
        """
        CREATE TABLE {s}.timers (
            session_id TEXT        NOT NULL,
            timer_id   TEXT        NOT NULL,
            seq        BIGSERIAL   NOT NULL,
            due_at     TIMESTAMPTZ NOT NULL,
            due_text   TEXT        NOT NULL,
            PRIMARY KEY (session_id, timer_id)
        )
        """,
        "CREATE INDEX timers_by_due ON {s}.timers (due_at, seq)",
        """
        CREATE TABLE {s}.events_seen (
            session_id TEXT        NOT NULL,
            dedupe_key TEXT        NOT NULL,
            seen_at    TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (session_id, dedupe_key)
        )
        """,
        """
        CREATE TABLE {s}.audit (
            session_id TEXT    NOT NULL,
            idx        INTEGER NOT NULL,
            body       TEXT    NOT NULL,
            PRIMARY KEY (session_id, idx)
        )
        """,
    ),
    # 2: shared state (sliding-window quotas, expiring values) and work queues.
    # The *_text columns keep the caller's times as given (time zone and all);
    # the timestamptz columns order and compare them.
    (
        """
        CREATE TABLE {s}.quota_entries (
            seq     BIGSERIAL        PRIMARY KEY,
            key     TEXT             NOT NULL,
            at      TIMESTAMPTZ      NOT NULL,
            at_text TEXT             NOT NULL,
            amount  DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX quota_entries_by_key ON {s}.quota_entries (key, at, seq)",
        """
        CREATE TABLE {s}.shared_values (
            key        TEXT        PRIMARY KEY,
            value      TEXT        NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )
        """,
        """
        CREATE TABLE {s}.queue_items (
            queue              TEXT        NOT NULL,
            item_id            TEXT        NOT NULL COLLATE "C",
            body               TEXT        NOT NULL,
            priority           BIGINT      NOT NULL,
            enqueued_at        TIMESTAMPTZ NOT NULL,
            enqueued_text      TEXT        NOT NULL,
            available_at       TIMESTAMPTZ NOT NULL,
            available_text     TEXT        NOT NULL,
            claimed_by         TEXT,
            claimed_until      TIMESTAMPTZ,
            claimed_until_text TEXT,
            claims             INTEGER     NOT NULL DEFAULT 0,
            PRIMARY KEY (queue, item_id)
        )
        """,
        (
            "CREATE INDEX queue_items_by_order "
            "ON {s}.queue_items (queue, priority DESC, enqueued_at, item_id)"
        ),
    ),
    # 3: claims on pending effects (who runs one, until when unless renewed).
    (
        """
        ALTER TABLE {s}.effects
            ADD COLUMN claimed_by         TEXT,
            ADD COLUMN claimed_until      TIMESTAMPTZ,
            ADD COLUMN claimed_until_text TEXT
        """,
        "CREATE INDEX effects_by_claim ON {s}.effects (claimed_until, seq)",
    ),
    # 4: session bodies compressed with LZ4 where the server has it
    # (PostgreSQL 14 and later, built with it): a session saved again is
    # compressed once more when over about 2 kB, and pglz costs the server
    # twice the CPU time (PostgreSQL 15 here: 0.06 ms against 0.11 ms for a
    # 4 kB body). Values saved before keep their compression.
    (
        """
        DO $$
        BEGIN
            IF 'lz4' = ANY (
                SELECT unnest(enumvals) FROM pg_settings
                WHERE name = 'default_toast_compression'
            ) THEN
                EXECUTE 'ALTER TABLE {s}.sessions ALTER COLUMN body SET COMPRESSION lz4';
            END IF;
        END
        $$
        """,
    ),
    # 5: lapsed shared state found by expiry, for the sweep: values, and the
    # quota entries that left their window (a quota entry is kept for the
    # window it was taken with; those taken before have no expiry and leave
    # as before, when their key is consumed from again). An index build holds
    # off writes to its table while it runs; on a large table, create the
    # index beforehand with CREATE INDEX CONCURRENTLY under the same name
    # (and the column first), and the migration keeps it.
    (
        (
            "CREATE INDEX IF NOT EXISTS shared_values_by_expiry "
            "ON {s}.shared_values (expires_at)"
        ),
        "ALTER TABLE {s}.quota_entries ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ",
        (
            "CREATE INDEX IF NOT EXISTS quota_entries_by_expiry "
            "ON {s}.quota_entries (expires_at)"
        ),
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

log = logging.getLogger("multiverify")

# The listener's pauses before connecting again, in seconds: the first, then
# doubling up to the last (on the store's clock).
_RELISTEN_FIRST = 0.1
_RELISTEN_MAX = 10.0


def _channel(schema: str, session_id: str) -> str:
    """The notification channel of a session: ``multiverify.`` and a digest of the schema and its id.

    44 bytes whatever the id (PostgreSQL refuses channel names of 64 bytes
    and more), and never the ``multiverify:{schema}`` channel of a whole
    schema that stores of earlier builds notified on.
    """
    named = f"{schema}\x00{session_id}".encode()
    return f"multiverify.{hashlib.blake2b(named, digest_size=16).hexdigest()}"


def _listens(statement: str, channels: Iterable[str]) -> str:
    """``LISTEN`` or ``UNLISTEN`` for each channel, as one query text."""
    return "".join(f'{statement} "{channel}";' for channel in channels)


@cache
def _listener_class(asyncpg: Any) -> Any:
    """The class of the listener's connection: it hears every channel it listens on.

    asyncpg hands a notification only to callbacks added with
    ``add_listener``, which sends its own ``LISTEN`` (a round trip per
    channel, one at a time); the listener sends the ``LISTEN`` and
    ``UNLISTEN`` of many sessions in one query instead, so its connection
    passes every notification to ``on_notification`` itself, through
    asyncpg's own hook for them. ``None`` when this asyncpg has no such
    hook: the store then hears no other replica, and its waiters poll.
    """
    if not callable(getattr(asyncpg.Connection, "_process_notification", None)):
        log.warning(
            "this asyncpg (%s) passes no notifications to its connection class: "
            "waiters poll for other replicas' changes",
            getattr(asyncpg, "__version__", "unknown version"),
        )
        return None

    class Listener(asyncpg.Connection):  # type: ignore[misc]
        on_notification: Callable[[str], None] | None = None

        def _process_notification(self, _pid: int, _channel: str, payload: str) -> None:
            if self.on_notification is not None:
                asyncio.get_running_loop().call_soon(self.on_notification, payload)

    return Listener


async def _keep_session(connection: Any) -> None:
    """What the pool does to a connection it takes back, besides rolling back.

    asyncpg's default runs one more query per call (releasing advisory
    locks, closing cursors, unlistening, resetting settings), which would
    double this store's round trips. It would undo nothing: the store takes
    only transaction-scoped advisory locks, opens cursors only inside
    transactions, never listens on a pooled connection and never sets a
    setting. asyncpg still rolls back a transaction left open before calling
    this.
    """


def _asyncpg() -> ModuleType:
    """The asyncpg module, or a ConfigurationError saying how to get it."""
    try:
        import asyncpg  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError as exc:
        raise ConfigurationError(
            message="PostgresStore needs asyncpg: "
            "install it with pip install 'multiverify[postgres]'"
        ) from exc
    return asyncpg  # type: ignore[no-any-return]


def _redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``."""
    if "://" not in dsn:  # libpq keyword form: host=... password=...
        return re.sub(
            r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)",
            r"\1***",
            dsn,
            flags=re.IGNORECASE,
        )
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        query = urlencode(
            [
                (key, "***" if key.lower() == "password" else value)
                for key, value in parse_qsl(query, keep_blank_values=True)
            ],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# PostgreSQL's text cannot hold it; no stored id or key has one.
_NUL = "\x00"


def _utc(at: datetime) -> datetime:
    """``at`` as an aware time (naive times are read as UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


P = ParamSpec("P")
R = TypeVar("R")


def _outages(
    method: Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, R]]:
    """Turn a connection lost mid-call, or a server that cannot serve now, into a StoreUnavailableError."""

    async def call(self: PostgresStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except self._asyncpg.CharacterNotInRepertoireError as exc:
            # PostgreSQL text holds no NUL: such a key or id could never have
            # been written, and is refused as the input it came from.
            raise InvalidInputError(
                message=f"PostgreSQL cannot hold this text (a NUL character?): {exc}",
                field="text",
            ) from exc
        except (*self._lost, *self._unable) as exc:
            what = (
                "lost the connection to"
                if isinstance(exc, self._lost)
                else "cannot be served now by"
            )
            raise StoreUnavailableError(
                message=f"{what} PostgreSQL at {_redact(self._dsn)!r}: "
                f"{type(exc).__name__}: {exc}",
                store="postgres",
            ) from exc

    call.__name__ = method.__name__
    call.__qualname__ = method.__qualname__
    call.__doc__ = method.__doc__
    return call


class PostgresStore(OpenableStore):
    """Keeps sessions, their outbox, timers and audit trail in PostgreSQL.

    Use it as ``async with PostgresStore(dsn) as store:``, or call
    [`open`][multiverify.stores.PostgresStore.open] (or just use it: the pool
    is opened on first use) and [`aclose`][multiverify.stores.PostgresStore.aclose].
    A closed store opens again on its next use.

    Args:
        dsn: a libpq connection string or URL, such as
            ``postgresql://app:secret@db:5432/lending``.
        schema: the schema holding the tables; created, with its tables, if
            missing. Replicas that share sessions use the same one.
        min_size: connections the pool keeps open.
        max_size: connections the pool opens at most.
        clock: stamps ``updated_at`` and similar bookkeeping columns.
        pool: an asyncpg pool to use instead of opening one; the store
            migrates the schema through it and leaves it open on close.
            Give ``dsn`` as well to be notified of other replicas' changes
            (the listener needs a connection of its own).
        connect_timeout: how long opening a connection may take, in seconds.
        notifications: send a notification on the session's own channel
            (``multiverify.`` and a digest of the schema and the session's
            id; the id only) with every create and save, and listen on it
            while a Verifier here waits for the session.
            ``False`` where ``LISTEN`` cannot work (behind a pooler in
            transaction mode): waiters then find other replicas' changes
            by polling alone.

    Raises:
        ConfigurationError: asyncpg is not installed, or an argument is invalid.
    """

    def __init__(
        self,
        dsn: str = "",
        *,
        schema: str = "multiverify",
        min_size: int = 1,
        max_size: int = 10,
        clock: Clock | None = None,
        pool: Any = None,
        connect_timeout: float = 10.0,
        notifications: bool = True,
    ) -> None:
        self._asyncpg = _asyncpg()
        self._lost: tuple[type[BaseException], ...] = (
            OSError,
            TimeoutError,
            self._asyncpg.PostgresConnectionError,
            self._asyncpg.CannotConnectNowError,
        )
        # A save that met another at once under REPEATABLE READ or
        # SERIALIZABLE (a server's default isolation), or in a deadlock:
        # the server rolled it back, nothing was written.
        self._conflicts: tuple[type[BaseException], ...] = (
            self._asyncpg.SerializationError,
            self._asyncpg.DeadlockDetectedError,
        )
        # What a server that answers but cannot serve now says: a standby
        # after a failover (read-only), out of connections, memory or disk,
        # shutting down, or a statement past its statement_timeout. The
        # statement was rolled back, so nothing was written.
        self._unable: tuple[type[BaseException], ...] = (
            *self._conflicts,
            self._asyncpg.ReadOnlySQLTransactionError,
            self._asyncpg.InsufficientResourcesError,
            self._asyncpg.OperatorInterventionError,
        )
        if not dsn and pool is None:
            raise ConfigurationError(message="PostgresStore needs a dsn or a pool")
        if _IDENTIFIER.fullmatch(schema) is None:
            raise ConfigurationError(
                message=f"schema must be a plain SQL identifier of at most 63 "
                f"characters (letters, digits, underscores): {schema!r}"
            )
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ConfigurationError(
                message=f"need 0 <= min_size <= max_size and max_size >= 1: "
                f"min_size={min_size!r}, max_size={max_size!r}"
            )
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._clock: Clock = SystemClock() if clock is None else clock
        self._given_pool: Any = pool
        self._pool: Any = None
        self._migrated = False
        self._opening = asyncio.Lock()
        self._notifying = notifications
        self._sql = _Sql(f'"{schema}"', notify=notifications)
        self._changes = Subscribers(listen_after=LISTEN_AFTER)
        self._listener: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        where = "pool=<given>" if self._given_pool is not None else ""
        if self._dsn:
            where = f"dsn={_redact(self._dsn)!r}" + (f", {where}" if where else "")
        return f"<multiverify.stores.PostgresStore({where}, schema={self._schema!r})>"

    async def open(self) -> None:
        """Open the pool and bring the schema up to date (idempotent).

        Raises:
            StoreUnavailableError: the server cannot be reached or refuses
                the connection.
            ConfigurationError: the schema was written by a newer multiverify.
        """
        await self._ready()

    @_outages
    async def schema_version(self) -> int:
        """Bring the schema up to date and return its version (``multiverify store migrate``).

        Raises:
            StoreUnavailableError: the server cannot be reached.
            ConfigurationError: the schema was written by a newer multiverify.
        """
        pool = await self._ready()
        version = await pool.fetchval(
            f"SELECT COALESCE(MAX(version), 0) FROM {self._sql.schema}.schema_version"
        )
        return int(version)

    async def aclose(self) -> None:
        """Close the pool this store opened (idempotent); a given pool stays open.

        The listener stops and closes its connection; a waiter still
        subscribed polls from then on.
        """
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        pool, self._pool = self._pool, None
        self._migrated = False
        if pool is not None and pool is not self._given_pool:
            await pool.close()

    async def _ready(self) -> Any:
        """The pool, opened and migrated."""
        pool = self._pool
        if pool is not None and self._migrated:
            return pool
        async with self._opening:
            if self._pool is None:
                self._pool = (
                    self._given_pool
                    if self._given_pool is not None
                    else await self._create_pool()
                )
            if not self._migrated:
                await self._migrate(self._pool)
                self._migrated = True
            return self._pool

    async def _create_pool(self) -> Any:
        asyncpg = self._asyncpg
        where = _redact(self._dsn)
        try:
            return await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                reset=_keep_session,
            )
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            raise StoreUnavailableError(
                message=f"cannot connect to PostgreSQL at {where!r}: "
                f"{type(exc).__name__}: {exc}",
                store="postgres",
            ) from None
        except ValueError as exc:  # a malformed dsn
            raise ConfigurationError(
                message=f"invalid PostgreSQL dsn {where!r}: {exc}"
            ) from None

    async def _migrate(self, pool: Any, *, upto: int = SCHEMA_VERSION) -> None:
        """Apply the migrations the schema lacks, up to version ``upto``.

        A schema already up to date (migrated ahead of a deployment, or by
        another replica) is only read, without a lock or a ``CREATE``: a
        role allowed to read and write the tables, and nothing more, can
        use it.
        """
        sql = self._sql
        try:
            async with pool.acquire() as conn:
                if await conn.fetchval(
                    "SELECT to_regclass($1)", f"{sql.schema}.schema_version"
                ):
                    current = await conn.fetchval(
                        "SELECT COALESCE(MAX(version), 0) "
                        f"FROM {sql.schema}.schema_version"
                    )
                    if upto <= current <= SCHEMA_VERSION:
                        return
            await self._apply_migrations(pool, upto)
        except self._asyncpg.InsufficientPrivilegeError as exc:
            raise ConfigurationError(
                message=f"the PostgreSQL role cannot bring schema {self._schema!r} "
                f"to version {upto} ({exc}): run `multiverify store migrate` as a "
                "role that may create it and its tables, then grant this one "
                "USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on its "
                "tables (and USAGE on its sequences)"
            ) from exc

    async def _apply_migrations(self, pool: Any, upto: int) -> None:
        """Lock the schema against other migrators and apply what it lacks, up to ``upto``."""
        sql = self._sql
        async with pool.acquire() as conn, conn.transaction():
            # One migrator at a time per schema, whatever the replica.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"multiverify.migrate:{self._schema}",
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {sql.schema}.schema_version ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            current = await conn.fetchval(
                f"SELECT COALESCE(MAX(version), 0) FROM {sql.schema}.schema_version"
            )
            if current > SCHEMA_VERSION:
                raise ConfigurationError(
                    message=f"schema {self._schema!r} is at version {current}, newer "
                    f"than this multiverify understands ({SCHEMA_VERSION}); "
                    "upgrade multiverify"
                )
            for version in range(current + 1, upto + 1):
                for statement in _MIGRATIONS[version - 1]:
                    await conn.execute(statement.format(s=sql.schema))
                await conn.execute(
                    f"INSERT INTO {sql.schema}.schema_version (version, applied_at) "
                    "VALUES ($1, $2)",
                    version,
                    _utc(self._clock.now()),
                )

    # --- ChangeFeed -------------------------------------------------------------

    @property
    def notifies_every_writer(self) -> bool:
        """Whether this store listens for every replica's changes (notifications on, and a dsn to listen with)."""
        return (
            self._notifying
            and bool(self._dsn)
            and _listener_class(self._asyncpg) is not None
        )

    def subscribe(
        self, session_id: str, on_change: Callable[[], None], /
    ) -> Callable[[], None]:
        """Call ``on_change()`` when any replica commits a create or save of the session.

        The first subscription starts the listener: a connection of its
        own that listens on the channel of every session subscribed to,
        from 20 ms after its first subscriber (a wait that ends sooner costs
        the server nothing) until its last leaves, and connects again when
        it is lost. Once it listens for a session (first, or again after
        connecting again) it tells the session's subscribers, since a change
        committed before then was notified to nobody here.
        """
        cancel = self._changes.add(session_id, on_change)
        if self.notifies_every_writer and self._listener is None:
            self._listener = asyncio.ensure_future(self._listen())
        return cancel

    async def _listen(self) -> None:
        """Listen for as long as the store is open, connecting again when lost.

        A fault of its own is logged and the listening starts over after a
        pause: waiters poll meanwhile, so it never stops for good.
        """
        pause = _RELISTEN_FIRST
        while True:
            try:
                pause = await self._listen_once(pause)
            except Exception:
                log.exception(
                    "listening for changes on PostgreSQL failed; polling, and "
                    "listening again in %.1fs",
                    pause,
                )
                await self._clock.sleep(pause)
                pause = min(pause * 2, _RELISTEN_MAX)

    async def _listen_once(self, pause: float) -> float:
        """Connect, listen until the connection is lost, pause; return the next pause."""
        asyncpg = self._asyncpg
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                connection_class=_listener_class(asyncpg),
            )
        except (*self._lost, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "cannot listen for changes on PostgreSQL at %r (%s: %s); "
                "polling, and trying again in %.1fs",
                _redact(self._dsn),
                type(exc).__name__,
                exc,
                pause,
            )
            await self._clock.sleep(pause)
            return min(pause * 2, _RELISTEN_MAX)
        try:
            conn.add_termination_listener(partial(_settle, lost))
            conn.on_notification = self._changes.notify
            pause = _RELISTEN_FIRST
            await self._follow(conn, lost)
            log.warning(
                "lost the PostgreSQL connection listening for changes; "
                "polling, and listening again in %.1fs",
                pause,
            )
        except (*self._lost, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # lost while subscribing: connect again
        finally:
            try:
                await conn.close(timeout=self._connect_timeout)
            except (*self._lost, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        await self._clock.sleep(pause)
        return pause

    async def _follow(self, conn: Any, lost: asyncio.Future[None]) -> None:
        """Listen for the sessions subscribed to, and for no other, until the connection is lost.

        What changed while a query was on its way goes in the next one: a
        subscription that ends before the listener sends it costs nothing.
        """
        listening: set[str] = set()
        while not lost.done():
            started, ended = self._changes.difference(listening)
            if not started and not ended:
                moved = asyncio.ensure_future(self._changes.moved())
                try:
                    await asyncio.wait(
                        {lost, moved}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    moved.cancel()
                continue
            schema = self._schema
            await conn.execute(
                _listens("LISTEN", (_channel(schema, sid) for sid in started))
                + _listens("UNLISTEN", (_channel(schema, sid) for sid in ended))
            )
            listening = (listening | started) - ended
            if started:
                # Read once it listens: every change a notification could
                # have missed shows in the version.
                try:
                    rows = await conn.fetch(self._sql.versions, list(started))
                except self._asyncpg.UndefinedTableError:
                    rows = []  # no tables yet (made on the store's first use)
                versions = {row["session_id"]: row["version"] for row in rows}
                self._changes.confirmed({sid: versions.get(sid) for sid in started})

    def _notified(self, session_id: str) -> tuple[str, ...]:
        """The parameter naming the session's channel, for a create or save that notifies."""
        return (_channel(self._schema, session_id),) if self._notifying else ()

    # --- SessionStore ---------------------------------------------------------

    @_outages
    async def create(
        self,
        session: Session,
        *,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
    ) -> int:
        body = session_to_json(session)
        rows = SerialisedWrites.of(effects, audit)
        now = _utc(self._clock.now())
        pool = await self._ready()
        inserted = await pool.fetchval(
            self._sql.create,
            session.session_id,
            session.status.value,
            body,
            _utc(session.created_at),
            now,
            *_written(rows, claim),
            *_scheduled(timers),
            *self._notified(session.session_id),
        )
        if not inserted:
            raise session_exists(session.session_id)
        return 1

    @_outages
    async def load(self, session_id: str, /) -> tuple[Session, int]:
        if _NUL in session_id:  # no session has such an id
            raise session_missing(session_id)
        pool = await self._ready()
        row = await pool.fetchrow(self._sql.load, session_id)
        if row is None:
            raise session_missing(session_id)
        return loads(row["body"], Session), int(row["version"])

    @_outages
    async def save(
        self,
        session: Session,
        *,
        expected_version: int,
        effects: Sequence[Effect] = (),
        audit: Sequence[AuditEvent] = (),
        claim: EffectClaim | None = None,
        completed: Sequence[str] = (),
        fired_timer: str | None = None,
        timers: Sequence[tuple[str, datetime]] = (),
        cancelled_timers: Sequence[str] = (),
    ) -> int:
        body = session_to_json(session)
        rows = SerialisedWrites.of(effects, audit)
        now = _utc(self._clock.now())
        session_id = session.session_id
        pool = await self._ready()
        try:
            version = await pool.fetchval(
                self._sql.save,
                session.status.value,
                body,
                now,
                session_id,
                expected_version,
                list(completed),
                fired_timer,
                *_written(rows, claim),
                *_scheduled(timers),
                list(cancelled_timers),
                *self._notified(session_id),
            )
        except self._conflicts as exc:
            conflict: BaseException | None = exc
            version = None
        else:
            conflict = None
        if version is None:
            current = await pool.fetchval(self._sql.version, session_id)
            if current is None:
                raise session_missing(session_id)
            if conflict is not None and current == expected_version:
                raise ConcurrentUpdateError(
                    message=f"session {session_id} met another writer at once "
                    f"({type(conflict).__name__}); nothing was written",
                    session_id=session_id,
                    expected_version=expected_version,
                ) from conflict
            raise version_moved(session_id, current, expected_version) from conflict
        return int(version)

    @_outages
    async def pending_effects(
        self, session_id: str | None = None, /
    ) -> list[PendingEffect]:
        if session_id is not None and _NUL in session_id:
            return []  # no session has such an id
        pool = await self._ready()
        if session_id is None:
            rows = await pool.fetch(self._sql.pending_all)
        else:
            rows = await pool.fetch(self._sql.pending_one, session_id)
        return [_pending(row) for row in rows]

    @_outages
    async def claim_effects(
        self, owner: str, /, *, at: datetime, until: datetime, limit: int = 100
    ) -> list[PendingEffect]:
        pool = await self._ready()
        rows = await pool.fetch(
            self._sql.claim_effects,
            owner,
            _utc(at),
            _utc(until),
            until.isoformat(),
            max(limit, 0),
        )
        rows = sorted(rows, key=lambda row: row["seq"])
        return with_sessions(
            [_pending(row) for row in rows],
            {
                row["session_id"]: (row["session_body"], row["session_version"])
                for row in rows
                if row["session_body"] is not None
            },
        )

    @_outages
    async def extend_effect_claims(
        self, owner: str, effects: Sequence[tuple[str, str]], /, *, until: datetime
    ) -> int:
        if not effects:
            return 0
        pool = await self._ready()
        moved = await pool.fetchval(
            self._sql.extend_effects,
            owner,
            _utc(until),
            until.isoformat(),
            [session_id for session_id, _ in effects],
            [effect_id for _, effect_id in effects],
        )
        return int(moved)

    @_outages
    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        pool = await self._ready()
        await pool.execute(self._sql.complete, session_id, effect_id)

    @_outages
    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        if not effects:
            return
        pool = await self._ready()
        await pool.execute(
            self._sql.complete_many,
            [session_id for session_id, _ in effects],
            [effect_id for _, effect_id in effects],
        )

    @_outages
    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        pool = await self._ready()
        await pool.execute(
            self._sql.schedule, session_id, timer_id, _utc(due_at), due_at.isoformat()
        )

    @_outages
    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        pool = await self._ready()
        await pool.execute(self._sql.cancel, session_id, timer_id)

    @_outages
    async def move_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /, *, expected: datetime
    ) -> bool:
        pool = await self._ready()
        moved = await pool.fetchval(
            self._sql.move,
            session_id,
            timer_id,
            _utc(due_at),
            due_at.isoformat(),
            _utc(expected),
        )
        return moved is not None

    @_outages
    async def due_timers(self, now: datetime, /, *, limit: int = 100) -> list[DueTimer]:
        pool = await self._ready()
        rows = await pool.fetch(self._sql.due, _utc(now), max(limit, 0))
        return [_timer(row) for row in rows]

    @_outages
    async def timers(self, session_id: str | None = None, /) -> list[DueTimer]:
        if session_id is not None and _NUL in session_id:
            return []  # no session has such an id
        pool = await self._ready()
        if session_id is None:
            rows = await pool.fetch(self._sql.timers_all)
        else:
            rows = await pool.fetch(self._sql.timers_one, session_id)
        return [_timer(row) for row in rows]

    @_outages
    async def record_event_once(self, session_id: str, dedupe_key: str, /) -> bool:
        pool = await self._ready()
        inserted = await pool.fetchval(
            self._sql.seen, session_id, dedupe_key, _utc(self._clock.now())
        )
        return inserted is not None

    @_outages
    async def forget_event(self, session_id: str, dedupe_key: str, /) -> None:
        pool = await self._ready()
        await pool.execute(self._sql.forget_seen, session_id, dedupe_key)

    @_outages
    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        if session_id is not None and _NUL in session_id:
            return []  # no session has such an id
        pool = await self._ready()
        if session_id is None:
            rows = await pool.fetch(self._sql.audit_all)
        else:
            rows = await pool.fetch(self._sql.audit_one, session_id)
        return [AuditEvent.from_json(row["body"]) for row in rows]

    @_outages
    async def session_ids(self) -> list[str]:
        pool = await self._ready()
        rows = await pool.fetch(self._sql.session_ids)
        return [row["session_id"] for row in rows]

    # --- SharedState ----------------------------------------------------------

    @_outages
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
        sql = self._sql
        now = _utc(at)
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            # One consumer of a key at a time, whatever the replica; the lock
            # goes with the transaction.
            await conn.execute(sql.lock, f"{self._schema}:quota:{key}")
            used = await conn.fetchval(
                sql.quota_used, key, now - timedelta(seconds=window)
            )
            if used + amount <= limit:
                await conn.execute(
                    sql.quota_add,
                    key,
                    now,
                    at.isoformat(),
                    amount,
                    now + timedelta(seconds=window),
                )
                return Quota(allowed=True, used=used + amount, limit=limit)
            rows = await conn.fetch(sql.quota_entries, key)
        return refused_quota(
            used,
            [(datetime.fromisoformat(row["at_text"]), row["amount"]) for row in rows],
            window=window,
            limit=limit,
            amount=amount,
        )

    @_outages
    async def consume_all(
        self, takes: Sequence[QuotaTake], /, *, at: datetime
    ) -> Quotas:
        takes = list(takes)
        if not takes:
            return Quotas()
        sql = self._sql
        now = _utc(at)
        widest = widest_windows(takes)
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            # The lock of every key, as `consume` takes one, in the order of
            # their ids: two calls sharing keys cannot hold one each while
            # waiting for the other's. They go with the transaction.
            await conn.execute(
                sql.lock_all, [f"{self._schema}:quota:{key}" for key in widest]
            )
            held = await conn.fetch(
                sql.quota_used_all,
                list(widest),
                [now - timedelta(seconds=window) for window in widest.values()],
                [take.key for take in takes],
                [now - timedelta(seconds=take.window) for take in takes],
            )
            quotas, refused = fit_takes(takes, [row["used"] for row in held])
            if refused is not None:
                rows = await conn.fetch(sql.quota_entries, takes[refused].key)
                return refused_take(
                    takes,
                    refused,
                    [
                        (datetime.fromisoformat(row["at_text"]), row["amount"])
                        for row in rows
                    ],
                    at=at,
                )
            await conn.execute(
                sql.quota_add_all,
                [take.key for take in takes],
                now,
                at.isoformat(),
                [take.amount for take in takes],
                [now + timedelta(seconds=take.window) for take in takes],
            )
        return Quotas(quotas=quotas)

    @_outages
    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        sql = self._sql
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql.lock, f"{self._schema}:quota:{key}")
            deleted = await conn.fetchval(sql.quota_refund, key, _utc(at), amount)
        return deleted is not None

    @_outages
    async def get_value(self, key: str, /, *, at: datetime) -> str | None:
        pool = await self._ready()
        value: str | None = await pool.fetchval(self._sql.value_get, key, _utc(at))
        return value

    @_outages
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
        return await self._store_value(
            self._sql.value_put, key, value, only_if_absent, at=at, ttl=ttl
        )

    @_outages
    async def replace_value(
        self, key: str, value: str, /, *, expected: str, at: datetime, ttl: float
    ) -> bool:
        return await self._store_value(
            self._sql.value_replace, key, value, expected, at=at, ttl=ttl
        )

    async def _store_value(
        self,
        sql: str,
        key: str,
        value: str,
        condition: bool | str,
        *,
        at: datetime,
        ttl: float,
    ) -> bool:
        """Run a value's put (``$4`` the condition), whether it stored the value."""
        pool = await self._ready()
        stored = await pool.fetchval(
            sql, key, value, _utc(at + timedelta(seconds=ttl)), condition, _utc(at)
        )
        return stored is not None

    @_outages
    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        pool = await self._ready()
        deleted = await pool.fetchval(self._sql.value_delete, key, value)
        return deleted is not None

    @_outages
    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        pool = await self._ready()
        removed = 0
        for query in self._sql.sweeps:
            while True:
                # A batch a statement, so writers wait for one batch at most.
                deleted: int = await pool.fetchval(query, _utc(at), batch)
                removed += deleted
                if deleted < batch:
                    break
        return removed

    # --- WorkQueue ------------------------------------------------------------

    @_outages
    async def enqueue(
        self,
        queue: str,
        item_id: str,
        body: str,
        /,
        *,
        at: datetime,
        priority: int = 0,
        available_at: datetime | None = None,
    ) -> bool:
        available = at if available_at is None else available_at
        pool = await self._ready()
        inserted = await pool.fetchval(
            self._sql.enqueue,
            queue,
            item_id,
            body,
            priority,
            _utc(at),
            at.isoformat(),
            _utc(available),
            available.isoformat(),
        )
        return inserted is not None

    @_outages
    async def claim(
        self,
        queue: str,
        /,
        *,
        owner: str,
        at: datetime,
        lease: float,
        item_id: str | None = None,
    ) -> QueueItem | None:
        until = at + timedelta(seconds=lease)
        pool = await self._ready()
        row = await pool.fetchrow(
            self._sql.claim,
            queue,
            _utc(at),
            item_id,
            owner,
            _utc(until),
            until.isoformat(),
        )
        return None if row is None else _item(row)

    @_outages
    async def extend(
        self, queue: str, item_id: str, /, *, owner: str, at: datetime, lease: float
    ) -> bool:
        until = at + timedelta(seconds=lease)
        pool = await self._ready()
        changed = await pool.fetchval(
            self._sql.extend, queue, item_id, owner, _utc(until), until.isoformat()
        )
        return changed is not None

    @_outages
    async def release(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        owner: str,
        available_at: datetime | None = None,
    ) -> bool:
        pool = await self._ready()
        changed = await pool.fetchval(
            self._sql.release,
            queue,
            item_id,
            owner,
            None if available_at is None else _utc(available_at),
            None if available_at is None else available_at.isoformat(),
        )
        return changed is not None

    @_outages
    async def update_item(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        body: str | None = None,
        priority: int | None = None,
    ) -> bool:
        pool = await self._ready()
        changed = await pool.fetchval(
            self._sql.update_item, queue, item_id, body, priority
        )
        return changed is not None

    @_outages
    async def complete(
        self, queue: str, item_id: str, /, *, owner: str | None = None
    ) -> bool:
        pool = await self._ready()
        deleted = await pool.fetchval(self._sql.complete_item, queue, item_id, owner)
        return deleted is not None

    @_outages
    async def queue_items(self, queue: str, /) -> list[QueueItem]:
        pool = await self._ready()
        rows = await pool.fetch(self._sql.queue_items, queue)
        return [_item(row) for row in rows]


class _Sql:
    """Every statement of the store, with its schema filled in once."""

    def __init__(self, schema: str, *, notify: bool) -> None:
        s = self.schema = schema

        # A create or save that wrote the session notifies its id on the
        # session's channel (the statement's last parameter), in the same
        # statement: sent only if it commits.
        def notifies(n: int) -> str:
            return f", LATERAL pg_notify(${n}, s.session_id) AS n" if notify else ""

        # A create and a save are one statement each (one round trip): the
        # session's row first, then, only if it was written (``s``), the
        # effects, claimed by $n+3..$n+5 (their ids and bodies: $n, $n+1),
        # and the audit events ($n+2) after the session's last.
        def writes(n: int) -> str:
            return (
                f", e AS (INSERT INTO {s}.effects (session_id, effect_id, body, "
                "claimed_by, claimed_until, claimed_until_text) "
                f"SELECT s.session_id, u.effect_id, u.body, ${n + 3}, ${n + 4}, "
                f"${n + 5} FROM s, unnest(${n}::text[], ${n + 1}::text[]) "
                "WITH ORDINALITY AS u(effect_id, body, n) ORDER BY u.n "
                "ON CONFLICT (session_id, effect_id) DO UPDATE SET "
                "body = excluded.body, claimed_by = excluded.claimed_by, "
                "claimed_until = excluded.claimed_until, "
                "claimed_until_text = excluded.claimed_until_text)"
                f", a AS (INSERT INTO {s}.audit (session_id, idx, body) "
                "SELECT s.session_id, start.idx + t.n - 1, t.body FROM s, "
                f"(SELECT COALESCE(MAX(idx) + 1, 0) AS idx FROM {s}.audit "
                "WHERE session_id = (SELECT session_id FROM s)) AS start, "
                f"unnest(${n + 2}::text[]) WITH ORDINALITY AS t(body, n))"
            )

        # Timers scheduled with the write: their ids, instants and texts
        # ($n, $n+1, $n+2), only if the session's row was written.
        def schedules(n: int) -> str:
            return (
                f", ti AS (INSERT INTO {s}.timers (session_id, timer_id, due_at, "
                "due_text) SELECT s.session_id, u.timer_id, u.due_at, u.due_text "
                f"FROM s, unnest(${n}::text[], ${n + 1}::timestamptz[], "
                f"${n + 2}::text[]) AS u(timer_id, due_at, due_text) "
                "ON CONFLICT (session_id, timer_id) DO UPDATE "
                "SET due_at = excluded.due_at, due_text = excluded.due_text)"
            )

        self.create = (
            f"WITH s AS (INSERT INTO {s}.sessions (session_id, version, status, "
            "body, created_at, updated_at) VALUES ($1, 1, $2, $3, $4, $5) "
            "ON CONFLICT (session_id) DO NOTHING RETURNING session_id)"
            f"{writes(6)}{schedules(12)} SELECT count(*) FROM s{notifies(15)}"
        )
        self.load = f"SELECT body, version FROM {s}.sessions WHERE session_id = $1"
        self.versions = (
            f"SELECT session_id, version FROM {s}.sessions "
            "WHERE session_id = ANY($1::text[])"
        )
        # $6: the effects completed, $7: the timer fired (or null), $17: the
        # timers cancelled; a timer scheduled again ($14) is moved, not removed.
        self.save = (
            f"WITH s AS (UPDATE {s}.sessions SET version = version + 1, "
            "status = $1, body = $2, updated_at = $3 "
            "WHERE session_id = $4 AND version = $5 RETURNING session_id, version)"
            f", d AS (DELETE FROM {s}.effects WHERE session_id = $4 "
            "AND effect_id = ANY($6::text[]) AND EXISTS (SELECT 1 FROM s))"
            f", t AS (DELETE FROM {s}.timers WHERE session_id = $4 "
            "AND (timer_id = $7::text OR timer_id = ANY($17::text[])) "
            "AND timer_id <> ALL($14::text[]) AND EXISTS (SELECT 1 FROM s))"
            f"{writes(8)}{schedules(14)} SELECT version FROM s{notifies(18)}"
        )
        self.version = f"SELECT version FROM {s}.sessions WHERE session_id = $1"
        pending = "session_id, body, claimed_by, claimed_until_text"
        self.pending_all = f"SELECT {pending} FROM {s}.effects ORDER BY seq"
        self.pending_one = (
            f"SELECT {pending} FROM {s}.effects WHERE session_id = $1 ORDER BY seq"
        )
        self.complete = (
            f"DELETE FROM {s}.effects WHERE session_id = $1 AND effect_id = $2"
        )
        self.complete_many = (
            f"DELETE FROM {s}.effects AS e USING unnest($1::text[], $2::text[]) "
            "AS d(session_id, effect_id) "
            "WHERE e.session_id = d.session_id AND e.effect_id = d.effect_id"
        )
        # The free effects first in save order are locked (a racing claimer
        # skips them and takes the next ones), then claimed, and returned
        # with their sessions (the replica running them need not load them).
        self.claim_effects = (
            f"WITH claimed AS (UPDATE {s}.effects AS e SET claimed_by = $1, "
            "claimed_until = $3, claimed_until_text = $4 "
            f"FROM (SELECT seq FROM {s}.effects "
            "WHERE claimed_until IS NULL OR claimed_until <= $2 "
            "ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED) AS free "
            "WHERE e.seq = free.seq RETURNING e.seq, e.session_id, e.body, "
            "e.claimed_by, e.claimed_until_text) "
            "SELECT c.*, s.body AS session_body, s.version AS session_version "
            f"FROM claimed AS c LEFT JOIN {s}.sessions AS s USING (session_id)"
        )
        self.extend_effects = (
            f"WITH moved AS (UPDATE {s}.effects AS e SET claimed_until = $2, "
            "claimed_until_text = $3 "
            "FROM unnest($4::text[], $5::text[]) AS k(session_id, effect_id) "
            "WHERE e.session_id = k.session_id AND e.effect_id = k.effect_id "
            "AND e.claimed_by = $1 RETURNING 1) SELECT count(*) FROM moved"
        )
        self.schedule = (
            f"INSERT INTO {s}.timers (session_id, timer_id, due_at, due_text) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (session_id, timer_id) DO UPDATE "
            "SET due_at = excluded.due_at, due_text = excluded.due_text"
        )
        self.cancel = f"DELETE FROM {s}.timers WHERE session_id = $1 AND timer_id = $2"
        self.move = (
            f"UPDATE {s}.timers SET due_at = $3, due_text = $4 "
            "WHERE session_id = $1 AND timer_id = $2 AND due_at = $5 RETURNING 1"
        )
        self.due = (
            f"SELECT session_id, timer_id, due_text FROM {s}.timers "
            "WHERE due_at <= $1 ORDER BY due_at, seq LIMIT $2"
        )
        self.timers_all = (
            f"SELECT session_id, timer_id, due_text FROM {s}.timers "
            "ORDER BY due_at, seq"
        )
        self.timers_one = (
            f"SELECT session_id, timer_id, due_text FROM {s}.timers "
            "WHERE session_id = $1 ORDER BY due_at, seq"
        )
        self.seen = (
            f"INSERT INTO {s}.events_seen (session_id, dedupe_key, seen_at) "
            "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1"
        )
        self.forget_seen = (
            f"DELETE FROM {s}.events_seen WHERE session_id = $1 AND dedupe_key = $2"
        )
        # Session by session, oldest session first, each in chain order.
        self.audit_all = (
            f"SELECT a.body FROM {s}.audit AS a JOIN {s}.sessions AS s "
            "USING (session_id) ORDER BY s.seq, a.idx"
        )
        self.audit_one = (
            f"SELECT body FROM {s}.audit WHERE session_id = $1 ORDER BY idx"
        )
        self.session_ids = f"SELECT session_id FROM {s}.sessions ORDER BY seq"
        # -- shared state
        self.lock = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
        # Drops the entries that left the window, and sums the rest.
        self.quota_used = (
            f"WITH gone AS (DELETE FROM {s}.quota_entries "
            "WHERE key = $1 AND at <= $2) "
            f"SELECT COALESCE(SUM(amount), 0.0)::float8 FROM {s}.quota_entries "
            "WHERE key = $1 AND at > $2"
        )
        self.quota_add = (
            f"INSERT INTO {s}.quota_entries (key, at, at_text, amount, expires_at) "
            "VALUES ($1, $2, $3, $4, $5)"
        )
        # Each lock id once, smallest first (the subquery's order is the
        # order the locks are taken in).
        self.lock_all = (
            "SELECT pg_advisory_xact_lock(id) FROM (SELECT DISTINCT "
            "hashtextextended(name, 0) AS id FROM unnest($1::text[]) AS name "
            "ORDER BY id) AS ids"
        )
        # $1, $2: each key with the start of its widest window, whose older
        # entries go; $3, $4: each take's key and window start, in order: the
        # sum of the entries inside its window.
        self.quota_used_all = (
            f"WITH gone AS (DELETE FROM {s}.quota_entries AS q USING "
            "unnest($1::text[], $2::timestamptz[]) AS w(key, since) "
            "WHERE q.key = w.key AND q.at <= w.since) "
            "SELECT (SELECT COALESCE(SUM(q.amount), 0.0)::float8 FROM "
            f"{s}.quota_entries AS q WHERE q.key = t.key AND q.at > t.since) "
            "AS used FROM unnest($3::text[], $4::timestamptz[]) "
            "WITH ORDINALITY AS t(key, since, n) ORDER BY t.n"
        )
        # One entry per take, at one moment; the sequence numbers follow
        # the takes' order.
        self.quota_add_all = (
            f"INSERT INTO {s}.quota_entries (key, at, at_text, amount, expires_at) "
            "SELECT t.key, $2::timestamptz, $3::text, t.amount, t.expires_at FROM "
            "unnest($1::text[], $4::float8[], $5::timestamptz[]) "
            "WITH ORDINALITY AS t(key, amount, expires_at, n) ORDER BY t.n"
        )
        self.quota_entries = (
            f"SELECT at_text, amount FROM {s}.quota_entries WHERE key = $1 "
            "ORDER BY at, seq"
        )
        self.quota_refund = (
            f"DELETE FROM {s}.quota_entries WHERE seq = (SELECT seq FROM "
            f"{s}.quota_entries WHERE key = $1 AND at = $2 AND amount = $3 "
            "ORDER BY seq DESC LIMIT 1) RETURNING 1"
        )
        self.value_get = (
            f"SELECT value FROM {s}.shared_values WHERE key = $1 AND expires_at > $2"
        )
        # $4: only if absent (then a live value, one expiring after $5, stays).
        self.value_put = (
            f"INSERT INTO {s}.shared_values AS v (key, value, expires_at) "
            "VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value, expires_at = excluded.expires_at "
            "WHERE NOT $4::boolean OR v.expires_at <= $5 RETURNING 1"
        )
        # One statement: the row is locked while its value is compared.
        self.value_replace = (
            f"UPDATE {s}.shared_values SET value = $2, expires_at = $3 "
            "WHERE key = $1 AND value = $4 AND expires_at > $5 RETURNING 1"
        )
        # Lapsed rows a sweeper elsewhere holds are left to it.
        self.sweeps = tuple(
            f"WITH gone AS (DELETE FROM {s}.{table} WHERE {key} IN "
            f"(SELECT {key} FROM {s}.{table} WHERE expires_at <= $1 "
            "LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) "
            "SELECT count(*)::int FROM gone"
            for table, key in (("shared_values", "key"), ("quota_entries", "seq"))
        )
        self.value_delete = (
            f"DELETE FROM {s}.shared_values WHERE key = $1 "
            "AND ($2::text IS NULL OR value = $2) RETURNING 1"
        )
        # -- work queues
        item = (
            "queue, item_id, body, priority, enqueued_text, available_text, "
            "claimed_by, claimed_until_text, claims"
        )
        order = "ORDER BY priority DESC, enqueued_at, item_id"
        self.enqueue = (
            f"INSERT INTO {s}.queue_items (queue, item_id, body, priority, "
            "enqueued_at, enqueued_text, available_at, available_text) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING 1"
        )
        # The free item first in order is locked (a racing claimer skips it
        # and takes the next), then claimed. $3: that item only, if not null.
        self.claim = (
            f"UPDATE {s}.queue_items AS q SET claimed_by = $4, claimed_until = $5, "
            "claimed_until_text = $6, claims = q.claims + 1 "
            f"FROM (SELECT queue, item_id FROM {s}.queue_items "
            "WHERE queue = $1 AND available_at <= $2 "
            "AND (claimed_until IS NULL OR claimed_until <= $2) "
            f"AND ($3::text IS NULL OR item_id = $3) {order} "
            "LIMIT 1 FOR UPDATE SKIP LOCKED) AS free "
            "WHERE q.queue = free.queue AND q.item_id = free.item_id "
            f"RETURNING {', '.join(f'q.{column.strip()}' for column in item.split(','))}"
        )
        self.extend = (
            f"UPDATE {s}.queue_items SET claimed_until = $4, claimed_until_text = $5 "
            "WHERE queue = $1 AND item_id = $2 AND claimed_by = $3 RETURNING 1"
        )
        self.release = (
            f"UPDATE {s}.queue_items SET claimed_by = NULL, claimed_until = NULL, "
            "claimed_until_text = NULL, "
            "available_at = COALESCE($4, available_at), "
            "available_text = COALESCE($5, available_text) "
            "WHERE queue = $1 AND item_id = $2 AND claimed_by = $3 RETURNING 1"
        )
        self.update_item = (
            f"UPDATE {s}.queue_items SET body = COALESCE($3, body), "
            "priority = COALESCE($4, priority) "
            "WHERE queue = $1 AND item_id = $2 RETURNING 1"
        )
        self.complete_item = (
            f"DELETE FROM {s}.queue_items WHERE queue = $1 AND item_id = $2 "
            "AND ($3::text IS NULL OR claimed_by = $3) RETURNING 1"
        )
        self.queue_items = (
            f"SELECT {item} FROM {s}.queue_items WHERE queue = $1 {order}"
        )


def _settle(lost: asyncio.Future[None], _conn: object) -> None:
    """The listener's connection ended: say so (once)."""
    if not lost.done():
        lost.set_result(None)


def _item(row: Any) -> QueueItem:
    until = row["claimed_until_text"]
    return QueueItem(
        queue=row["queue"],
        item_id=row["item_id"],
        body=row["body"],
        priority=int(row["priority"]),
        enqueued_at=datetime.fromisoformat(row["enqueued_text"]),
        available_at=datetime.fromisoformat(row["available_text"]),
        claimed_by=row["claimed_by"],
        claimed_until=None if until is None else datetime.fromisoformat(until),
        claims=int(row["claims"]),
    )


def _written(rows: SerialisedWrites, claim: EffectClaim | None) -> tuple[Any, ...]:
    """The parameters of a create's or save's outbox and audit writes."""
    claimed = (
        (None, None, None)
        if claim is None
        else (claim.owner, _utc(claim.until), claim.until.isoformat())
    )
    return (
        [effect_id for effect_id, _ in rows.effects],
        [body for _, body in rows.effects],
        rows.audit,
        *claimed,
    )


def _scheduled(timers: Sequence[tuple[str, datetime]]) -> tuple[Any, ...]:
    """The parameters of the timers a create or save schedules (the last time given for an id)."""
    last = dict(timers)  # one statement cannot write a row twice
    return (
        list(last),
        [_utc(due_at) for due_at in last.values()],
        [due_at.isoformat() for due_at in last.values()],
    )


def _pending(row: Any) -> PendingEffect:
    until = row["claimed_until_text"]
    return PendingEffect(
        session_id=row["session_id"],
        effect=structure_effect(json.loads(row["body"])),
        claimed_by=row["claimed_by"],
        claimed_until=None if until is None else datetime.fromisoformat(until),
    )


def _timer(row: Any) -> DueTimer:
    return DueTimer(
        session_id=row["session_id"],
        timer_id=row["timer_id"],
        due_at=datetime.fromisoformat(row["due_text"]),
    )
