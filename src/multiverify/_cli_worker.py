"""The ``multiverify worker`` and ``multiverify store`` commands (registered by ``_cli``)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from ._verifier import Verifier
from ._worker import Worker
from .exceptions import ConfigurationError, StoreUnavailableError
from .stores import SessionStore, store_from_url

__all__ = ["load_factory", "register"]

AppFactory = Callable[[SessionStore], "Verifier | Awaitable[Verifier]"]

T = TypeVar("T")

log = logging.getLogger("multiverify")

# Seconds a stopping worker may take past its stop_grace to close the
# Verifier and the store before the process ends regardless.
_STOP_MARGIN = 10.0

_STORE_HELP = (
    "The session store: sqlite:///path/verify.db, "
    "postgresql://user@host/db?schema=NAME or redis://host:6379/0?prefix=NAME."
)


def load_factory(ref: str) -> AppFactory:
    """The callable ``module:attribute`` names (the working directory is importable).

    Raises:
        ConfigurationError: the reference is malformed, or names nothing callable.
    """
    module_name, colon, attribute = ref.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigurationError(
            message=f"--app wants module:factory, such as myapp.verify:build: {ref!r}"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(message=f"cannot load {ref!r}: {exc}") from exc
    if not callable(found):
        raise ConfigurationError(message=f"{ref!r} is not callable")
    factory: AppFactory = found
    return factory


async def _build(factory: AppFactory, store: SessionStore) -> Verifier:
    made = factory(store)
    verifier = await made if inspect.isawaitable(made) else made
    if not isinstance(verifier, Verifier):
        raise ConfigurationError(
            message=f"the app factory returned {type(verifier).__name__}, not a Verifier"
        )
    return verifier


async def _open(store: SessionStore) -> None:
    opening = getattr(store, "open", None)
    if opening is not None:
        await opening()


async def run_worker(
    store_url: str, app: str, options: dict[str, Any], *, ready: Callable[[str], None]
) -> None:
    """Run a worker on the app's Verifier until SIGTERM or SIGINT, then stop within a bound.

    The worker gets ``stop_grace`` seconds to let resumed effects finish
    (then they are handed back), and the Verifier and store then close; a
    shutdown still not done ``_STOP_MARGIN`` seconds later ends the process
    at once: everything is in the store, and its claims lapse.
    """
    factory = load_factory(app)
    store = store_from_url(store_url)
    worker: Worker | None = None
    try:
        await _open(store)
        verifier = await _build(factory, store)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            worker = Worker(verifier, **options)
            worker.start()
            ready(f"worker {worker.owner} on {store!r}")
            await stop.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            bound = (0.0 if worker is None else worker.stop_grace) + _STOP_MARGIN
            try:
                async with asyncio.timeout(bound):
                    if worker is not None:
                        log.info("worker %s stopping", worker.owner)
                        await worker.stop()
                        log.info("worker %s stopped; closing", worker.owner)
                    await verifier.aclose()
                    log.info("verifier closed")
                    await store.aclose()
                    log.info("store closed")
            except TimeoutError:
                log.exception("the worker did not stop within %gs: exiting now", bound)
                logging.shutdown()
                os._exit(1)
    finally:
        await store.aclose()


async def _migrate(store_url: str) -> tuple[str, int]:
    store = store_from_url(store_url)
    try:
        version: int = await store.schema_version()  # type: ignore[attr-defined]
    except AttributeError:
        raise ConfigurationError(
            message=f"{store!r} keeps no schema: nothing to migrate"
        ) from None
    finally:
        await store.aclose()
    return repr(store), version


def _guarded(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except (ConfigurationError, StoreUnavailableError) as exc:
        raise click.ClickException(exc.message) from None


def register(cli: click.Group) -> None:
    """Add ``worker`` and ``store`` to the ``multiverify`` command group."""

    @cli.command()
    @click.option(
        "--store",
        "store_url",
        required=True,
        envvar="MULTIVERIFY_STORE",
        help=_STORE_HELP,
    )
    @click.option(
        "--app",
        required=True,
        envvar="MULTIVERIFY_APP",
        help="module:factory; the factory takes the store and returns the app's "
        "Verifier (its policies and channels).",
    )
    @click.option(
        "--poll-interval",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        help="Seconds between rounds that found nothing to do.",
    )
    @click.option(
        "--effect-grace",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        help="Seconds past the end of an effect's claim before it is taken over "
        "here (room for clock skew between replicas).",
    )
    @click.option(
        "--stop-grace",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds SIGTERM lets resumed effects finish before they are "
        "cancelled and handed back.",
    )
    @click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Effects resumed at once (and timers fired at once).",
    )
    @click.option(
        "--max-timer-backoff",
        type=click.FloatRange(min=0, min_open=True),
        default=300.0,
        show_default=True,
        help="Longest delay, in seconds, by which a due timer whose firing "
        "failed is moved later (it doubles from --poll-interval).",
    )
    @click.option(
        "--sweep-interval",
        type=click.FloatRange(min=0, min_open=True),
        default=600.0,
        show_default=True,
        help="Seconds between sweeps of the store's lapsed shared state "
        "(SMS ledger, quota windows, cached reports).",
    )
    @click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        show_default=True,
        help="What the worker logs to standard error.",
    )
    def worker(  # noqa: PLR0917 - one parameter per click option
        store_url: str,
        app: str,
        poll_interval: float,
        effect_grace: float,
        stop_grace: float,
        concurrency: int,
        max_timer_backoff: float,
        sweep_interval: float,
        log_level: str,
    ) -> None:
        """Fire due timers and resume unfinished effects until SIGTERM.

        Run one or more beside the app's replicas, on the store they share:
        an effect is resumed only once the claim of the replica that ran it
        lapsed (it died), and each timer fires once, under its session's
        lease.
        """
        logging.basicConfig(
            level=log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        options = {
            "poll_interval": poll_interval,
            "effect_grace": effect_grace,
            "stop_grace": stop_grace,
            "concurrency": concurrency,
            "max_timer_backoff": max_timer_backoff,
            "sweep_interval": sweep_interval,
        }
        _guarded(
            run_worker(
                store_url, app, options, ready=lambda what: click.echo(what, err=True)
            )
        )

    @cli.group()
    def store() -> None:
        """Manage the session store."""

    @store.command()
    @click.option(
        "--store",
        "store_url",
        required=True,
        envvar="MULTIVERIFY_STORE",
        help=_STORE_HELP,
    )
    def migrate(store_url: str) -> None:
        """Create the store's tables, or bring them to this version's schema."""
        where, version = _guarded(_migrate(store_url))
        click.echo(f"OK: {where}: schema at version {version}")
