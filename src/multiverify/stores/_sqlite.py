"""A SessionStore on one SQLite file: the embedded default, durable across restarts.

Calls never block the event loop on another writer, and never interleave
inside a transaction. A short call (one session's load, save, effects or
timers) runs at once on the event loop's thread when nothing is queued and
the write lock is free: in WAL mode with ``synchronous = NORMAL`` a commit
only appends to the log, without waiting for the disk, and that connection
never waits for a lock (``busy_timeout`` 0) and never checkpoints. Anything
else, and any call that would have to wait, goes to one dedicated worker
thread and its own connection, which waits up to ``busy_timeout`` for the
lock, writes the calls queued together in one transaction, and copies the
log back into the database (checkpoints) as it grows. Several stores (several
processes) may share a file: writers take the write lock up front
(``BEGIN IMMEDIATE``), and a save's compare-and-set is checked inside that
lock, so it holds across them.

The schema carries its own version (table ``schema_version``); migrations
newer than the file are applied, in order and in one transaction, when the
store opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._audit import AuditEvent
from .._clock import Clock, SystemClock
from .._serde import loads, session_to_json, structure_effect
from .._session import Effect, Session
from ..exceptions import (
    ConfigurationError,
    MultiverifyError,
    StoreUnavailableError,
)
from ._base import (
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
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["SqliteStore"]

T = TypeVar("T")

log = logging.getLogger(__name__)

# Each migration is a list of statements; migration ``n`` (from 1) brings the
# file to schema version ``n``. Append new ones; never edit a shipped one.
#
# Tables that need an order carry ``seq INTEGER PRIMARY KEY AUTOINCREMENT``
# (the only column SQLite can autoincrement, and stable under VACUUM, unlike a
# bare rowid) and keep their natural key as a UNIQUE constraint.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE sessions (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT    NOT NULL UNIQUE,
            version    INTEGER NOT NULL,
            status     TEXT    NOT NULL,
            body       TEXT    NOT NULL,
            created_at TEXT    NOT NULL,
            updated_at TEXT    NOT NULL
        )
        """,
        """
        CREATE TABLE effects (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT    NOT NULL,
            effect_id  TEXT    NOT NULL,
            body       TEXT    NOT NULL,
            UNIQUE (session_id, effect_id)
        )
        """,
        """
        CREATE TABLE timers (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT    NOT NULL,
            timer_id   TEXT    NOT NULL,
            due_utc    TEXT    NOT NULL,
            due_at     TEXT    NOT NULL,
            UNIQUE (session_id, timer_id)
        )
        """,
        "CREATE INDEX timers_by_due ON timers (due_utc, seq)",
        """
        CREATE TABLE events_seen (
            session_id TEXT NOT NULL,
            dedupe_key TEXT NOT NULL,
            seen_at    TEXT NOT NULL,
            PRIMARY KEY (session_id, dedupe_key)
        )
        """,
        """
        CREATE TABLE audit (
            session_id TEXT    NOT NULL,
            idx        INTEGER NOT NULL,
            body       TEXT    NOT NULL,
            PRIMARY KEY (session_id, idx)
        )
        """,
    ),
    # 2: shared state (sliding-window quotas, expiring values) and work queues.
    (
        """
        CREATE TABLE quota_entries (
            seq    INTEGER PRIMARY KEY AUTOINCREMENT,
            key    TEXT    NOT NULL,
            at_utc TEXT    NOT NULL,
            at     TEXT    NOT NULL,
            amount REAL    NOT NULL
        )
        """,
        "CREATE INDEX quota_entries_by_key ON quota_entries (key, at_utc, seq)",
        """
        CREATE TABLE shared_values (
            key         TEXT PRIMARY KEY,
            value       TEXT NOT NULL,
            expires_utc TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE queue_items (
            queue             TEXT    NOT NULL,
            item_id           TEXT    NOT NULL,
            body              TEXT    NOT NULL,
            priority          INTEGER NOT NULL,
            enqueued_utc      TEXT    NOT NULL,
            enqueued_at       TEXT    NOT NULL,
            available_utc     TEXT    NOT NULL,
            available_at      TEXT    NOT NULL,
            claimed_by        TEXT,
            claimed_until_utc TEXT,
            claimed_until     TEXT,
            claims            INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (queue, item_id)
        )
        """,
        (
            "CREATE INDEX queue_items_by_order "
            "ON queue_items (queue, priority DESC, enqueued_utc, item_id)"
        ),
    ),
    # 3: claims on pending effects (who runs one, until when unless renewed).
    (
        "ALTER TABLE effects ADD COLUMN claimed_by TEXT",
        "ALTER TABLE effects ADD COLUMN claimed_until_utc TEXT",
        "ALTER TABLE effects ADD COLUMN claimed_until TEXT",
        "CREATE INDEX effects_by_claim ON effects (claimed_until_utc, seq)",
    ),
    # 4: lapsed shared state found by expiry, for the sweep: values, and the
    # quota entries that left their window (a quota entry is kept for the
    # window it was taken with; those taken before have no expiry and leave
    # as before, when their key is consumed from again).
    (
        (
            "CREATE INDEX IF NOT EXISTS shared_values_by_expiry "
            "ON shared_values (expires_utc)"
        ),
        "ALTER TABLE quota_entries ADD COLUMN expires_utc TEXT",
        (
            "CREATE INDEX IF NOT EXISTS quota_entries_by_expiry "
            "ON quota_entries (expires_utc)"
        ),
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)


def _utc_key(at: datetime) -> str:
    """A sortable, fixed-width UTC text for ``at`` (naive times are read as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Hold the write lock from the start; commit on success, roll back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.rollback()  # a no-op when no transaction is open any more
        raise


def _migrate(db: sqlite3.Connection, now: str, *, upto: int = SCHEMA_VERSION) -> None:
    """Apply the migrations the file lacks, up to schema version ``upto``."""
    with _transaction(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        (current,) = db.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        ).fetchone()
        if current > SCHEMA_VERSION:
            raise ConfigurationError(
                message=f"the database is at schema version {current}, newer than "
                f"this multiverify understands ({SCHEMA_VERSION}); upgrade multiverify"
            )
        for version in range(current + 1, upto + 1):
            for statement in _MIGRATIONS[version - 1]:
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, now),
            )


class _Job:
    """One call for the worker thread, and where its result goes."""

    __slots__ = ("call", "future", "loop", "write")

    def __init__(
        self,
        call: Callable[[sqlite3.Connection], Any] | None,  # None: close and stop
        write: bool,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.call = call
        self.write = write
        self.loop = loop
        self.future = future


# A write job raising one of these wrote nothing (a failed compare-and-set, a
# missing session), so the other writes of its batch stand.
_CLEAN_FAILURES = (MultiverifyError,)

# At most this many queued calls share one transaction (one commit).
_BATCH = 64

# After this many commits on the event loop's connection (which never
# checkpoints, as a checkpoint waits for the disk), the worker thread copies
# the write-ahead log back into the database file.
_CHECKPOINT_EVERY = 200

# What SQLite answers when a lock is taken and the connection may not wait.
_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_LOCKED"})


# Paths SQLite opens as a database of the connection's own.
_PRIVATE = frozenset({":memory:", ""})

# What a call to run at once gives back when it would have to wait.
_QUEUE_IT = object()


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", None) in _BUSY


class _Worker:
    """A worker thread with its ``sqlite3`` connection, and a connection for calls run at once.

    Calls are queued and run in order, each whole, even when the awaiting task
    is cancelled. The thread takes every call queued at once (up to
    ``_BATCH``) and runs the writes among them in one transaction, so many
    concurrent saves cost one commit and one wake-up of the event loop; a
    write that fails without writing (``_CLEAN_FAILURES``) fails alone, and
    any other failure rolls the batch back and runs its calls one by one. The
    connections are opened, and the schema migrated, by the first call.

    A call marked ``inline`` skips the thread when nothing is queued: it runs
    on the caller's thread, on the second connection, unless the write lock
    is taken (another process writing), when it is queued like any other.
    Queued calls stay in order with it: none is queued when it runs. Only
    one task a turn of the event loop runs its calls so: the calls other
    tasks make in that turn queue, so that under load the worker batches
    them while the loop goes on.
    """

    def __init__(self, path: str, *, busy_timeout: float, clock: Clock) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        # The connection for calls run at once, opened by the thread with
        # its own; used by one caller at a time (``_inline_lock``).
        self._inline_db: sqlite3.Connection | None = None
        self._inline_lock = threading.Lock()
        self._inline_commits = 0
        self._turn_task: asyncio.Task[Any] | None = None
        # Calls queued and not yet run to their end, under ``_count_lock``.
        self._queued = 0
        self._count_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None

    async def run(
        self,
        call: Callable[[sqlite3.Connection], T],
        *,
        write: bool = False,
        inline: bool = False,
    ) -> T:
        if inline and self._inline_db is not None and not self._queued:
            # One task a turn of the loop runs its calls at once: when other
            # tasks call in the same turn (many sessions at work), theirs
            # queue for the worker, which writes them in one transaction
            # while the loop goes on.
            task = asyncio.current_task()
            if self._turn_task is None or self._turn_task is task:
                value = self._run_inline(call, write)
                if value is not _QUEUE_IT:
                    if self._turn_task is None:
                        self._turn_task = task
                        asyncio.get_running_loop().call_soon(self._next_turn)
                    return cast("T", value)
        return await self._submit(call, write)

    def _next_turn(self) -> None:
        self._turn_task = None

    async def close(self) -> None:
        """Close the connections and end the threads, once the calls queued so far ran."""
        self._close_inline()
        await self._submit(None, False)
        await self.checkpointed()

    def _close_inline(self) -> None:
        with self._inline_lock:
            db, self._inline_db = self._inline_db, None
        if db is not None:
            db.close()

    def _run_inline(
        self, call: Callable[[sqlite3.Connection], T], write: bool
    ) -> T | object:
        """Run ``call`` on this thread; ``_QUEUE_IT`` when it would have to wait."""
        if not self._inline_lock.acquire(blocking=False):
            return _QUEUE_IT  # another thread's loop is using it
        try:
            db = self._inline_db
            if db is None:  # closed meanwhile
                return _QUEUE_IT
            if not write:
                try:
                    return call(db)
                except sqlite3.OperationalError as exc:
                    if _busy(exc):
                        return _QUEUE_IT
                    raise
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return _QUEUE_IT  # another writer holds the lock
                raise
            try:
                value = call(db)
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                db.rollback()
                if _busy(exc):  # pragma: no cover - the lock is held by then
                    return _QUEUE_IT  # wrote nothing: the worker runs it again
                raise
            except BaseException:
                db.rollback()
                raise
            self._inline_commits += 1
            if self._inline_commits >= _CHECKPOINT_EVERY:
                self._inline_commits = 0
                self._checkpoint_later()
            return value
        finally:
            self._inline_lock.release()

    def _checkpoint_later(self) -> None:
        """Copy the log back into the database on a thread of its own; nobody waits for it.

        Neither connection waits meanwhile: a passive checkpoint takes no
        lock writers need, so calls go on at once, or to the worker, while
        it waits for the disk. One runs at a time; the commits made during
        it are copied by the next.
        """
        if self._checkpointer is not None and self._checkpointer.is_alive():
            return
        self._checkpointer = threading.Thread(
            target=self._checkpoint_now, name="multiverify-sqlite-log", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_now(self) -> None:
        try:
            db = sqlite3.connect(
                self._path, timeout=self._busy_timeout, isolation_level=None
            )
            try:
                _checkpoint(db)
            finally:
                db.close()
        except Exception as exc:  # noqa: BLE001 - nobody waits for it: logged
            log.warning("could not checkpoint the SQLite log: %s", exc)

    async def checkpointed(self) -> None:
        """Return once the checkpoint running now, if any, has ended."""
        thread = self._checkpointer
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join)

    def _enqueue(self, job: _Job) -> None:
        with self._count_lock:
            self._queued += 1
        self._jobs.put(job)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="multiverify-sqlite", daemon=True
            )
            self._thread.start()

    def _ran(self, count: int) -> None:
        with self._count_lock:
            self._queued -= count

    async def _submit(
        self, call: Callable[[sqlite3.Connection], T] | None, write: bool
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Job(call, write, loop, future))
        try:
            return await future
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            # Another connection (another process) kept the lock past
            # busy_timeout: nothing was written, and a later try may pass.
            raise StoreUnavailableError(
                message=f"{self._path} stayed locked by another connection "
                f"for longer than busy_timeout ({self._busy_timeout:g}s): {exc}",
                store="sqlite",
            ) from exc

    # -- on the worker thread --------------------------------------------------

    def _serve(self) -> None:
        jobs = self._jobs
        while True:
            job: _Job | None = jobs.get()
            batch: list[_Job] = []
            while job is not None and job.call is not None:
                batch.append(job)
                if len(batch) >= _BATCH:
                    job = None
                    break
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    job = None
            if batch:
                try:
                    done = self._execute(batch)
                except Exception as exc:  # noqa: BLE001 - never leave a caller waiting
                    done = [(each, False, exc) for each in batch]
                # Run to their end (committed): calls may run at once again.
                self._ran(len(batch))
                _post(done)
            if job is not None:  # the call to close
                # Forget the connections before answering, so the caller never
                # sees a closed store that still holds one (the one for calls
                # run at once, too, if the first calls opened it after
                # ``close`` began).
                self._close_inline()
                db, self._db = self._db, None
                try:
                    if db is not None:
                        db.close()
                except Exception as exc:  # noqa: BLE001 - raised to the caller
                    _post([(job, False, exc)])
                else:
                    _post([(job, True, None)])
                return

    def _execute(self, batch: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        try:
            db = self._connection()
        except Exception as exc:  # noqa: BLE001 - raised to every caller
            return [(job, False, exc) for job in batch]
        if len(batch) == 1 or not any(job.write for job in batch):
            return [_alone(db, job) for job in batch]
        try:
            db.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # noqa: BLE001 - raised to every writer
            # The write lock stayed taken past busy_timeout: every write fails.
            return [
                (job, False, exc) if job.write else _alone(db, job) for job in batch
            ]
        done: list[tuple[_Job, bool, Any]] = []
        try:
            for job in batch:
                try:
                    done.append((job, True, job.call(db)))  # type: ignore[misc]
                except _CLEAN_FAILURES as exc:
                    done.append((job, False, exc))
            db.execute("COMMIT")
        except Exception:  # noqa: BLE001 - each call runs again by itself
            db.rollback()
            return [_alone(db, job) for job in batch]
        return done

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._connect()
            self._inline_db = self._connect_inline()
        return self._db

    def _connect_inline(self) -> sqlite3.Connection | None:
        """The connection for calls run at once: it never waits for a lock, nor for the disk.

        ``None`` for a database private to its connection (``:memory:``, or
        ``""``: a temporary file): a second connection would see another one.
        """
        if self._path in _PRIVATE:
            return None
        try:
            db = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:  # pragma: no cover - the worker's own just opened
            return None  # every call is queued then
        try:
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # the worker does it
        except sqlite3.Error:
            db.close()
            return None
        return db

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; every write below
        # opens its own with BEGIN IMMEDIATE. ``timeout`` is SQLite's
        # busy_timeout.
        try:
            db = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
            )
        except sqlite3.OperationalError as exc:  # only ever "unable to open"
            raise self._unopenable(exc) from exc
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            _migrate(db, self._clock.now().isoformat())
        except sqlite3.DatabaseError as exc:
            db.close()
            name = exc.sqlite_errorname or ""
            if name in _NOT_A_STORE:
                raise ConfigurationError(
                    message=f"{self._path} is not a SQLite database, or is damaged "
                    f"({exc})"
                ) from exc
            if name.startswith(_CANNOT_OPEN):
                raise self._unopenable(exc) from exc
            raise
        except BaseException:
            db.close()
            raise
        return db

    def _unopenable(self, exc: sqlite3.Error) -> ConfigurationError:
        """The error for a path SQLite cannot open, or write, as a database."""
        path = Path(self._path)
        if _is_dir(path):
            reason = "it is a directory"
        elif not _is_dir(path.parent):
            reason = f"no directory {path.parent}"
        else:
            reason = (
                "it cannot be created or opened there (permissions, a read-only "
                "file system, a name too long)"
            )
        return ConfigurationError(
            message=f"cannot open {self._path} as a SQLite database: {reason} ({exc})"
        )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long to look at
        return False


# What SQLite answers for a file that holds something else, or garbage.
_NOT_A_STORE = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
# What it answers, with or without an extended code, for a file it may not
# open or write (no permission, a read-only file or file system).
_CANNOT_OPEN = ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY")


def _alone(db: sqlite3.Connection, job: _Job) -> tuple[_Job, bool, Any]:
    """Run one call by itself: a write in its own transaction."""
    try:
        if job.write:
            with _transaction(db):
                value = job.call(db)  # type: ignore[misc]
        else:
            value = job.call(db)  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - raised to the caller
        return (job, False, exc)
    return (job, True, value)


def _post(done: list[tuple[_Job, bool, Any]]) -> None:
    """Hand results back to their event loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
    for item in done:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        # A closed loop raises RuntimeError: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, items)


def _checkpoint(db: sqlite3.Connection) -> None:
    """Copy what the log holds back into the database, as far as readers allow."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _settle(done: list[tuple[_Job, bool, Any]]) -> None:
    for job, ok, value in done:
        if job.future.done():  # the awaiting task was cancelled
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


class SqliteStore(OpenableStore):
    """Keeps sessions, their outbox, timers and audit trail in one SQLite file.

    Use it as ``async with SqliteStore("verify.db") as store:``, or call
    [`open`][multiverify.stores.SqliteStore.open] (or just use it: the file
    is opened on first use) and [`aclose`][multiverify.stores.SqliteStore.aclose].
    A closed store opens again on its next use.

    Args:
        path: the database file; created, with its tables, if missing.
        busy_timeout: how long a write waits for another connection's write
            lock before failing (with ``StoreUnavailableError``, having
            written nothing), in seconds.
        clock: stamps ``updated_at`` and similar bookkeeping columns.

    It is a [`ChangeFeed`][multiverify.stores.ChangeFeed] of the saves made
    through this object only: Verifiers sharing it wake each other at once,
    while another process writing the file (a worker) is found by polling.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float | timedelta = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self._path = os.fspath(path)
        if "\0" in self._path:
            raise ConfigurationError(
                message=f"SQLite database path {self._path!r} holds a NUL byte"
            )
        if isinstance(busy_timeout, timedelta):
            busy_timeout = busy_timeout.total_seconds()
        if busy_timeout < 0:
            raise ConfigurationError(
                message=f"busy_timeout must not be negative: {busy_timeout!r}"
            )
        self._busy_timeout = float(busy_timeout)
        self._clock: Clock = SystemClock() if clock is None else clock
        self._worker: _Worker | None = None
        self._changes = Subscribers()

    def __repr__(self) -> str:
        return f"<multiverify.stores.SqliteStore(path={self._path!r})>"

    async def open(self) -> None:
        """Open the file and bring its schema up to date (idempotent).

        Raises:
            ConfigurationError: the file was written by a newer multiverify,
                is not a SQLite database (or is damaged), or cannot be opened
                (a missing directory, a directory, no permission).
            StoreUnavailableError: another connection kept the file locked
                for longer than ``busy_timeout``.
        """
        await self._run(lambda _: None)

    async def schema_version(self) -> int:
        """Bring the schema up to date and return its version (``multiverify store migrate``)."""

        def read(db: sqlite3.Connection) -> int:
            (version,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version"
            ).fetchone()
            return int(version)

        return await self._run(read)

    async def aclose(self) -> None:
        """Close the connection and stop its thread (idempotent)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.close()

    async def _run(
        self,
        call: Callable[[sqlite3.Connection], T],
        *,
        write: bool = False,
        inline: bool = False,
    ) -> T:
        """Run ``call`` on the worker thread; a ``write`` runs inside a transaction.

        ``inline``: a short call, about one session, that may run at once on
        this thread when it need not wait (see `_Worker`).
        """
        if self._worker is None:
            self._worker = _Worker(
                self._path, busy_timeout=self._busy_timeout, clock=self._clock
            )
        return await self._worker.run(call, write=write, inline=inline)

    # --- SessionStore ---------------------------------------------------------

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
        now = self._clock.now().isoformat()

        def create(db: sqlite3.Connection) -> int:
            inserted = db.execute(
                "INSERT INTO sessions (session_id, version, status, body, "
                "created_at, updated_at) VALUES (?, 1, ?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO NOTHING",
                (
                    session.session_id,
                    session.status.value,
                    body,
                    session.created_at.isoformat(),
                    now,
                ),
            ).rowcount
            if not inserted:
                raise session_exists(session.session_id)
            _write(db, session.session_id, rows, claim)
            _schedule(db, session.session_id, timers)
            return 1

        created = await self._run(create, write=True, inline=True)
        self._changes.notify(session.session_id)  # committed by now
        return created

    async def load(self, session_id: str, /) -> tuple[Session, int]:
        row = await self._run(
            lambda db: db.execute(
                "SELECT body, version FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone(),
            inline=True,
        )
        if row is None:
            raise session_missing(session_id)
        body, version = row
        return loads(body, Session), int(version)

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
        now = self._clock.now().isoformat()
        session_id = session.session_id

        def save(db: sqlite3.Connection) -> int:
            updated = db.execute(
                "UPDATE sessions SET version = version + 1, status = ?, body = ?, "
                "updated_at = ? WHERE session_id = ? AND version = ?",
                (session.status.value, body, now, session_id, expected_version),
            ).rowcount
            if not updated:
                row = db.execute(
                    "SELECT version FROM sessions WHERE session_id = ?",
                    (session_id,),
                ).fetchone()
                if row is None:
                    raise session_missing(session_id)
                raise version_moved(session_id, row[0], expected_version)
            if completed:
                db.executemany(
                    "DELETE FROM effects WHERE session_id = ? AND effect_id = ?",
                    [(session_id, effect_id) for effect_id in completed],
                )
            gone = [*cancelled_timers, *([fired_timer] if fired_timer else [])]
            if gone:
                db.executemany(
                    "DELETE FROM timers WHERE session_id = ? AND timer_id = ?",
                    [(session_id, timer_id) for timer_id in gone],
                )
            _schedule(db, session_id, timers)
            _write(db, session_id, rows, claim)
            return expected_version + 1

        version = await self._run(save, write=True, inline=True)
        self._changes.notify(session_id)  # committed by now
        return version

    @property
    def notifies_every_writer(self) -> bool:
        """``False``: other processes writing the same file are not heard."""
        return False

    def subscribe(
        self, session_id: str, on_change: Callable[[], None], /
    ) -> Callable[[], None]:
        """Call ``on_change()`` after every create or save of the session through this object."""
        return self._changes.add(session_id, on_change)

    async def pending_effects(
        self, session_id: str | None = None, /
    ) -> list[PendingEffect]:
        if session_id is None:
            query = (
                "SELECT session_id, body, claimed_by, claimed_until FROM effects "
                "ORDER BY seq"
            )
            args: tuple[str, ...] = ()
        else:
            query = (
                "SELECT session_id, body, claimed_by, claimed_until FROM effects "
                "WHERE session_id = ? ORDER BY seq"
            )
            args = (session_id,)
        rows = await self._run(
            lambda db: db.execute(query, args).fetchall(),
            inline=session_id is not None,
        )
        return [_pending(row) for row in rows]

    async def claim_effects(
        self, owner: str, /, *, at: datetime, until: datetime, limit: int = 100
    ) -> list[PendingEffect]:
        claim = (owner, _utc_key(until), until.isoformat())

        def take(db: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            rows = db.execute(
                "UPDATE effects SET claimed_by = ?, claimed_until_utc = ?, "
                "claimed_until = ? WHERE seq IN (SELECT seq FROM effects "
                "WHERE claimed_until_utc IS NULL OR claimed_until_utc <= ? "
                "ORDER BY seq LIMIT ?) "
                "RETURNING seq, session_id, body, claimed_by, claimed_until",
                (*claim, _utc_key(at), max(limit, 0)),
            ).fetchall()
            ids = sorted({row[1] for row in rows})
            sessions = db.execute(
                "SELECT session_id, body, version FROM sessions "  # noqa: S608 - placeholders only
                f"WHERE session_id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
            return rows, sessions

        rows, sessions = await self._run(take, write=True, inline=True)
        return with_sessions(
            [_pending(row[1:]) for row in sorted(rows)],
            {session_id: (body, version) for session_id, body, version in sessions},
        )

    async def extend_effect_claims(
        self, owner: str, effects: Sequence[tuple[str, str]], /, *, until: datetime
    ) -> int:
        if not effects:
            return 0
        claim = (_utc_key(until), until.isoformat(), owner)

        def extend(db: sqlite3.Connection) -> int:
            moved = 0
            for session_id, effect_id in effects:
                moved += db.execute(
                    "UPDATE effects SET claimed_until_utc = ?, claimed_until = ? "
                    "WHERE claimed_by = ? AND session_id = ? AND effect_id = ?",
                    (*claim, session_id, effect_id),
                ).rowcount
            return moved

        return await self._run(extend, write=True, inline=True)

    async def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        """One writing statement, run at once when nothing is queued; the rows it changed."""
        changed: int = await self._run(
            lambda db: db.execute(sql, args).rowcount, write=True, inline=True
        )
        return changed

    async def complete_effect(self, session_id: str, effect_id: str, /) -> None:
        await self._write(
            "DELETE FROM effects WHERE session_id = ? AND effect_id = ?",
            (session_id, effect_id),
        )

    async def complete_effects(self, effects: Sequence[tuple[str, str]], /) -> None:
        if not effects:
            return
        keys = list(effects)
        await self._run(
            lambda db: db.executemany(
                "DELETE FROM effects WHERE session_id = ? AND effect_id = ?", keys
            ),
            write=True,
            inline=True,
        )

    async def schedule_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /
    ) -> None:
        await self._run(
            lambda db: _schedule(db, session_id, [(timer_id, due_at)]),
            write=True,
            inline=True,
        )

    async def cancel_timer(self, session_id: str, timer_id: str, /) -> None:
        await self._write(
            "DELETE FROM timers WHERE session_id = ? AND timer_id = ?",
            (session_id, timer_id),
        )

    async def move_timer(
        self, session_id: str, timer_id: str, due_at: datetime, /, *, expected: datetime
    ) -> bool:
        moved = await self._write(
            "UPDATE timers SET due_utc = ?, due_at = ? "
            "WHERE session_id = ? AND timer_id = ? AND due_utc = ?",
            (
                _utc_key(due_at),
                due_at.isoformat(),
                session_id,
                timer_id,
                _utc_key(expected),
            ),
        )
        return moved == 1

    async def due_timers(self, now: datetime, /, *, limit: int = 100) -> list[DueTimer]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT session_id, timer_id, due_at FROM timers "
                "WHERE due_utc <= ? ORDER BY due_utc, seq LIMIT ?",
                (_utc_key(now), max(limit, 0)),
            ).fetchall(),
            inline=True,
        )
        return [_timer(row) for row in rows]

    async def timers(self, session_id: str | None = None, /) -> list[DueTimer]:
        if session_id is None:
            query = (
                "SELECT session_id, timer_id, due_at FROM timers ORDER BY due_utc, seq"
            )
            args: tuple[str, ...] = ()
        else:
            query = (
                "SELECT session_id, timer_id, due_at FROM timers "
                "WHERE session_id = ? ORDER BY due_utc, seq"
            )
            args = (session_id,)
        rows = await self._run(
            lambda db: db.execute(query, args).fetchall(),
            inline=session_id is not None,
        )
        return [_timer(row) for row in rows]

    async def record_event_once(self, session_id: str, dedupe_key: str, /) -> bool:
        now = self._clock.now().isoformat()
        inserted: int = await self._run(
            lambda db: (
                db.execute(
                    "INSERT INTO events_seen (session_id, dedupe_key, seen_at) "
                    "VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (session_id, dedupe_key, now),
                ).rowcount
            ),
            write=True,
            inline=True,
        )
        return inserted == 1

    async def forget_event(self, session_id: str, dedupe_key: str, /) -> None:
        await self._write(
            "DELETE FROM events_seen WHERE session_id = ? AND dedupe_key = ?",
            (session_id, dedupe_key),
        )

    async def audit_events(self, session_id: str | None = None, /) -> list[AuditEvent]:
        if session_id is None:
            # Session by session, oldest session first, each in chain order.
            query = (
                "SELECT audit.body FROM audit JOIN sessions USING (session_id) "
                "ORDER BY sessions.seq, audit.idx"
            )
            args: tuple[str, ...] = ()
        else:
            query = "SELECT body FROM audit WHERE session_id = ? ORDER BY idx"
            args = (session_id,)
        rows = await self._run(lambda db: db.execute(query, args).fetchall())
        return [AuditEvent.from_json(body) for (body,) in rows]

    async def session_ids(self) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT session_id FROM sessions ORDER BY seq"
            ).fetchall()
        )
        return [session_id for (session_id,) in rows]

    # --- SharedState ----------------------------------------------------------

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
        now_key = _utc_key(at)
        start_key = _utc_key(at - timedelta(seconds=window))
        end_key = _utc_key(at + timedelta(seconds=window))

        def consume(db: sqlite3.Connection) -> Quota:
            db.execute(
                "DELETE FROM quota_entries WHERE key = ? AND at_utc <= ?",
                (key, start_key),
            )
            (used,) = db.execute(
                "SELECT COALESCE(SUM(amount), 0.0) FROM quota_entries WHERE key = ?",
                (key,),
            ).fetchone()
            if used + amount <= limit:
                db.execute(
                    "INSERT INTO quota_entries (key, at_utc, at, amount, "
                    "expires_utc) VALUES (?, ?, ?, ?, ?)",
                    (key, now_key, at.isoformat(), amount, end_key),
                )
                return Quota(allowed=True, used=used + amount, limit=limit)
            entries = db.execute(
                "SELECT at, amount FROM quota_entries WHERE key = ? "
                "ORDER BY at_utc, seq",
                (key,),
            ).fetchall()
            return refused_quota(
                used,
                [(datetime.fromisoformat(when), taken) for when, taken in entries],
                window=window,
                limit=limit,
                amount=amount,
            )

        return await self._run(consume, write=True, inline=True)

    async def consume_all(
        self, takes: Sequence[QuotaTake], /, *, at: datetime
    ) -> Quotas:
        takes = list(takes)
        now_key = _utc_key(at)

        def since(window: float) -> str:
            return _utc_key(at - timedelta(seconds=window))

        def consume_all(db: sqlite3.Connection) -> Quotas:
            # One transaction under the file's write lock: nobody else
            # counts these keys until it commits, with every take or none.
            db.executemany(
                "DELETE FROM quota_entries WHERE key = ? AND at_utc <= ?",
                [(key, since(w)) for key, w in widest_windows(takes).items()],
            )
            held = [
                db.execute(
                    "SELECT COALESCE(SUM(amount), 0.0) FROM quota_entries "
                    "WHERE key = ? AND at_utc > ?",
                    (take.key, since(take.window)),
                ).fetchone()[0]
                for take in takes
            ]
            quotas, refused = fit_takes(takes, held)
            if refused is not None:
                entries = db.execute(
                    "SELECT at, amount FROM quota_entries WHERE key = ? "
                    "ORDER BY at_utc, seq",
                    (takes[refused].key,),
                ).fetchall()
                return refused_take(
                    takes,
                    refused,
                    [(datetime.fromisoformat(when), taken) for when, taken in entries],
                    at=at,
                )
            db.executemany(
                "INSERT INTO quota_entries (key, at_utc, at, amount, expires_utc) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        take.key,
                        now_key,
                        at.isoformat(),
                        take.amount,
                        _utc_key(at + timedelta(seconds=take.window)),
                    )
                    for take in takes
                ],
            )
            return Quotas(quotas=quotas)

        return await self._run(consume_all, write=True, inline=True)

    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        deleted = await self._write(
            "DELETE FROM quota_entries WHERE seq = (SELECT seq FROM "
            "quota_entries WHERE key = ? AND at_utc = ? AND amount = ? "
            "ORDER BY seq DESC LIMIT 1)",
            (key, _utc_key(at), amount),
        )
        return deleted == 1

    async def get_value(self, key: str, /, *, at: datetime) -> str | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT value FROM shared_values WHERE key = ? AND expires_utc > ?",
                (key, _utc_key(at)),
            ).fetchone(),
            inline=True,
        )
        return None if row is None else str(row[0])

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
        query = (
            "INSERT INTO shared_values (key, value, expires_utc) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "expires_utc = excluded.expires_utc"
        )
        args: tuple[str, ...] = (key, value, _utc_key(at + timedelta(seconds=ttl)))
        if only_if_absent:
            query += " WHERE shared_values.expires_utc <= ?"
            args += (_utc_key(at),)
        changed: int = await self._run(
            lambda db: db.execute(query, args).rowcount,
            write=True,
            inline=True,
        )
        return changed == 1

    async def replace_value(
        self, key: str, value: str, /, *, expected: str, at: datetime, ttl: float
    ) -> bool:
        changed = await self._write(
            "UPDATE shared_values SET value = ?, expires_utc = ? "
            "WHERE key = ? AND value = ? AND expires_utc > ?",
            (value, _utc_key(at + timedelta(seconds=ttl)), key, expected, _utc_key(at)),
        )
        return changed == 1

    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        query = "DELETE FROM shared_values WHERE key = ?"
        args: tuple[str, ...] = (key,)
        if value is not None:
            query += " AND value = ?"
            args += (value,)
        deleted: int = await self._run(
            lambda db: db.execute(query, args).rowcount,
            write=True,
            inline=True,
        )
        return deleted == 1

    async def sweep_expired(self, /, *, at: datetime, batch: int = 1000) -> int:
        args = (_utc_key(at), batch)
        removed = 0
        for table, key in (("shared_values", "key"), ("quota_entries", "seq")):
            query = (
                f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "  # noqa: S608 - names above
                "WHERE expires_utc <= ? LIMIT ?)"
            )

            def sweep(db: sqlite3.Connection, query: str = query) -> int:
                deleted: int = db.execute(query, args).rowcount
                return deleted

            while True:
                # A batch a transaction, so writers wait for one batch at most.
                deleted = await self._run(sweep, write=True)
                removed += deleted
                if deleted < batch:
                    break
        return removed

    # --- WorkQueue ------------------------------------------------------------

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
        inserted: int = await self._run(
            lambda db: (
                db.execute(
                    "INSERT INTO queue_items (queue, item_id, body, priority, "
                    "enqueued_utc, enqueued_at, available_utc, available_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        queue,
                        item_id,
                        body,
                        priority,
                        _utc_key(at),
                        at.isoformat(),
                        _utc_key(available),
                        available.isoformat(),
                    ),
                ).rowcount
            ),
            write=True,
            inline=True,
        )
        return inserted == 1

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
        now_key = _utc_key(at)
        query = _CLAIM_NEXT if item_id is None else _CLAIM_ONE
        args: tuple[str, ...] = (owner, _utc_key(until), until.isoformat(), queue)
        args += (queue,) if item_id is None else (item_id,)
        args += (now_key, now_key)
        row = await self._run(
            lambda db: db.execute(query, args).fetchone(), write=True, inline=True
        )
        return None if row is None else _item(row)

    async def extend(
        self, queue: str, item_id: str, /, *, owner: str, at: datetime, lease: float
    ) -> bool:
        until = at + timedelta(seconds=lease)
        changed: int = await self._run(
            lambda db: (
                db.execute(
                    "UPDATE queue_items SET claimed_until_utc = ?, claimed_until = ? "
                    "WHERE queue = ? AND item_id = ? AND claimed_by = ?",
                    (_utc_key(until), until.isoformat(), queue, item_id, owner),
                ).rowcount
            ),
            write=True,
            inline=True,
        )
        return changed == 1

    async def release(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        owner: str,
        available_at: datetime | None = None,
    ) -> bool:
        query = (
            "UPDATE queue_items SET claimed_by = NULL, claimed_until_utc = NULL, "
            "claimed_until = NULL"
        )
        args: tuple[str, ...] = ()
        if available_at is not None:
            query += ", available_utc = ?, available_at = ?"
            args = (_utc_key(available_at), available_at.isoformat())
        query += " WHERE queue = ? AND item_id = ? AND claimed_by = ?"
        args += (queue, item_id, owner)
        changed: int = await self._run(
            lambda db: db.execute(query, args).rowcount,
            write=True,
            inline=True,
        )
        return changed == 1

    async def update_item(
        self,
        queue: str,
        item_id: str,
        /,
        *,
        body: str | None = None,
        priority: int | None = None,
    ) -> bool:
        changed: int = await self._run(
            lambda db: (
                db.execute(
                    "UPDATE queue_items SET body = COALESCE(?, body), "
                    "priority = COALESCE(?, priority) WHERE queue = ? AND item_id = ?",
                    (body, priority, queue, item_id),
                ).rowcount
            ),
            write=True,
            inline=True,
        )
        return changed == 1

    async def complete(
        self, queue: str, item_id: str, /, *, owner: str | None = None
    ) -> bool:
        query = "DELETE FROM queue_items WHERE queue = ? AND item_id = ?"
        args: tuple[str, ...] = (queue, item_id)
        if owner is not None:
            query += " AND claimed_by = ?"
            args += (owner,)
        deleted: int = await self._run(
            lambda db: db.execute(query, args).rowcount,
            write=True,
            inline=True,
        )
        return deleted == 1

    async def queue_items(self, queue: str, /) -> list[QueueItem]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT queue, item_id, body, priority, enqueued_at, available_at, "
                "claimed_by, claimed_until, claims FROM queue_items WHERE queue = ? "
                "ORDER BY priority DESC, enqueued_utc, item_id",
                (queue,),
            ).fetchall()
        )
        return [_item(row) for row in rows]


# Claim the free item first in claim order (of the queue, or with that id);
# the write lock, taken first by BEGIN IMMEDIATE, keeps others out meanwhile.
_CLAIM_NEXT = (
    "UPDATE queue_items SET claimed_by = ?, claimed_until_utc = ?, "
    "claimed_until = ?, claims = claims + 1 "
    "WHERE queue = ? AND item_id = (SELECT item_id FROM queue_items "
    "WHERE queue = ? AND available_utc <= ? "
    "AND (claimed_until_utc IS NULL OR claimed_until_utc <= ?) "
    "ORDER BY priority DESC, enqueued_utc, item_id LIMIT 1) "
    "RETURNING queue, item_id, body, priority, enqueued_at, available_at, "
    "claimed_by, claimed_until, claims"
)
_CLAIM_ONE = (
    "UPDATE queue_items SET claimed_by = ?, claimed_until_utc = ?, "
    "claimed_until = ?, claims = claims + 1 "
    "WHERE queue = ? AND item_id = ? AND available_utc <= ? "
    "AND (claimed_until_utc IS NULL OR claimed_until_utc <= ?) "
    "RETURNING queue, item_id, body, priority, enqueued_at, available_at, "
    "claimed_by, claimed_until, claims"
)


def _item(row: tuple[Any, ...]) -> QueueItem:
    queue_name, item_id, body, priority, enqueued, available, by, until, claims = row
    return QueueItem(
        queue=queue_name,
        item_id=item_id,
        body=body,
        priority=int(priority),
        enqueued_at=datetime.fromisoformat(enqueued),
        available_at=datetime.fromisoformat(available),
        claimed_by=by,
        claimed_until=None if until is None else datetime.fromisoformat(until),
        claims=int(claims),
    )


def _schedule(
    db: sqlite3.Connection, session_id: str, timers: Sequence[tuple[str, datetime]]
) -> None:
    """Store (or move) timers of a session."""
    if timers:
        db.executemany(
            "INSERT INTO timers (session_id, timer_id, due_utc, due_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (session_id, timer_id) DO UPDATE "
            "SET due_utc = excluded.due_utc, due_at = excluded.due_at",
            [
                (session_id, timer_id, _utc_key(due_at), due_at.isoformat())
                for timer_id, due_at in timers
            ],
        )


def _pending(row: Sequence[Any]) -> PendingEffect:
    """A pending effect from its columns ``session_id, body, claimed_by, claimed_until``."""
    session_id, body, owner, until = row
    return PendingEffect(
        session_id=session_id,
        effect=structure_effect(json.loads(body)),
        claimed_by=owner,
        claimed_until=None if until is None else datetime.fromisoformat(until),
    )


def _write(
    db: sqlite3.Connection,
    session_id: str,
    rows: SerialisedWrites,
    claim: EffectClaim | None,
) -> None:
    """Add effects to the outbox and events to the trail, in the caller's transaction.

    An effect saved again under its id replaces the pending one (and its
    claim) and keeps its place in the outbox; audit events are appended
    after the session's last.
    """
    if rows.effects:
        owner, until_utc, until = (
            (None, None, None)
            if claim is None
            else (claim.owner, _utc_key(claim.until), claim.until.isoformat())
        )
        db.executemany(
            "INSERT INTO effects (session_id, effect_id, body, claimed_by, "
            "claimed_until_utc, claimed_until) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id, effect_id) DO UPDATE SET body = excluded.body, "
            "claimed_by = excluded.claimed_by, "
            "claimed_until_utc = excluded.claimed_until_utc, "
            "claimed_until = excluded.claimed_until",
            [
                (session_id, effect_id, body, owner, until_utc, until)
                for effect_id, body in rows.effects
            ],
        )
    if rows.audit:
        (start,) = db.execute(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM audit WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        db.executemany(
            "INSERT INTO audit (session_id, idx, body) VALUES (?, ?, ?)",
            [
                (session_id, start + offset, body)
                for offset, body in enumerate(rows.audit)
            ],
        )


def _timer(row: tuple[str, str, str]) -> DueTimer:
    session_id, timer_id, due_at = row
    return DueTimer(
        session_id=session_id, timer_id=timer_id, due_at=datetime.fromisoformat(due_at)
    )
