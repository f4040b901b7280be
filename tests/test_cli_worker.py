"""Tests for ``multiverify worker``, ``multiverify store migrate`` and store URLs."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from multiverify import Policy, Step, Verifier
from multiverify import _cli_worker as cli_worker
from multiverify._cli import create_cli
from multiverify._cli_worker import load_factory, run_worker
from multiverify.exceptions import ConfigurationError
from multiverify.stores import (
    MemoryStore,
    PostgresStore,
    RedisStore,
    SessionStore,
    SqliteStore,
    store_from_url,
)
from multiverify.testing import Scripted, ScriptedChannel

BUILT: list[Verifier] = []


def factory(store: SessionStore) -> Verifier:
    """An app factory, as ``--app test_cli_worker:factory`` names it."""
    verifier = Verifier(
        Policy(name="p", version="1", steps=[Step(id="b", channel="credit_bureau")]),
        channels=[ScriptedChannel("credit_bureau", [Scripted.passes()])],
        store=store,
    )
    BUILT.append(verifier)
    return verifier


async def async_factory(store: SessionStore) -> Verifier:
    """An app factory that is a coroutine function."""
    return factory(store)


def not_a_verifier(store: SessionStore) -> str:
    """A factory that returns the wrong thing."""
    return "nope"


NOT_CALLABLE = 3


class TestStoreFromUrl:
    def test_every_scheme(self, tmp_path: Path) -> None:
        """Each scheme builds its store; schema and prefix come from the query."""
        sqlite = store_from_url(f"sqlite://{tmp_path}/a.db")
        assert isinstance(sqlite, SqliteStore)
        assert (
            repr(sqlite) == f"<multiverify.stores.SqliteStore(path='{tmp_path}/a.db')>"
        )
        assert isinstance(store_from_url("sqlite:a.db"), SqliteStore)
        postgres = store_from_url("postgresql://u:secret@db/x?schema=s1&sslmode=off")
        assert isinstance(postgres, PostgresStore)
        assert repr(postgres) == (
            "<multiverify.stores.PostgresStore(dsn='postgresql://u:***@db/x?"
            "sslmode=off', schema='s1')>"
        )
        redis = store_from_url("redis://h:6379/2?prefix=app")
        assert isinstance(redis, RedisStore)
        assert repr(redis) == (
            "<multiverify.stores.RedisStore(url='redis://h:6379/2', prefix='app')>"
        )
        assert isinstance(store_from_url("memory:"), MemoryStore)

    def test_notifications_switch(self) -> None:
        """``notifications=off`` builds a PostgreSQL or Redis store that neither notifies nor listens."""
        on = store_from_url("postgresql://db/x?notifications=on")
        off = store_from_url("postgresql://db/x?schema=s&notifications=OFF")
        assert isinstance(on, PostgresStore)
        assert isinstance(off, PostgresStore)
        assert on.notifies_every_writer
        assert not off.notifies_every_writer
        assert repr(off) == (
            "<multiverify.stores.PostgresStore(dsn='postgresql://db/x', schema='s')>"
        )
        with pytest.raises(ConfigurationError, match="notifications must be on or off"):
            store_from_url("postgresql://db/x?notifications=maybe")
        redis = store_from_url("redis://h:6379/2?prefix=app&notifications=off")
        assert isinstance(redis, RedisStore)
        assert not redis.notifies_every_writer
        assert repr(redis) == (
            "<multiverify.stores.RedisStore(url='redis://h:6379/2', prefix='app')>"
        )
        assert store_from_url("redis://h:6379/2").notifies_every_writer  # type: ignore[attr-defined]

    @pytest.mark.parametrize("url", ["nothing", "sqlite:", "ftp://x/y"])
    def test_bad_urls(self, url: str) -> None:
        """A URL that names no store is a configuration error."""
        with pytest.raises(ConfigurationError):
            store_from_url(url)


class TestMigrate:
    def test_creates_the_schema(self, tmp_path: Path) -> None:
        """``store migrate`` brings a new file to the current schema version."""
        result = CliRunner().invoke(
            create_cli(), ["store", "migrate", "--store", f"sqlite://{tmp_path}/m.db"]
        )
        assert result.exit_code == 0, result.output
        assert result.output.endswith("schema at version 4\n")

    def test_a_store_without_a_schema(self) -> None:
        """A memory store has nothing to migrate: the command says so."""
        result = CliRunner().invoke(
            create_cli(), ["store", "migrate", "--store", "memory:"]
        )
        assert result.exit_code == 1
        assert "keeps no schema" in result.output


class TestWorkerCommand:
    @pytest.mark.parametrize(
        "ref",
        [
            "nocolon",
            "x:",
            "no_such_module:f",
            "test_cli_worker:missing",
            "test_cli_worker:NOT_CALLABLE",
        ],
    )
    def test_bad_app_references(self, ref: str) -> None:
        """An --app that names nothing callable is refused with the reason."""
        with pytest.raises(ConfigurationError):
            load_factory(ref)

    @pytest.mark.parametrize(
        "ref", ["test_cli_worker:factory", "test_cli_worker:async_factory"]
    )
    async def test_runs_until_sigterm(self, tmp_path: Path, ref: str) -> None:
        """The worker builds the app's Verifier on the store and stops cleanly on SIGTERM."""
        seen: list[str] = []

        def ready(what: str) -> None:
            seen.append(what)
            os.kill(os.getpid(), signal.SIGTERM)

        await run_worker(
            f"sqlite://{tmp_path}/w.db", ref, {"poll_interval": 0.01}, ready=ready
        )
        assert seen[0].startswith("worker owner-")
        assert BUILT[-1].store is not None

    def test_the_command_reports_a_bad_factory(self, tmp_path: Path) -> None:
        """A factory that returns no Verifier ends the command with its reason."""
        result = CliRunner().invoke(
            create_cli(),
            [
                "worker",
                "--store",
                f"sqlite://{tmp_path}/w.db",
                "--app",
                "test_cli_worker:not_a_verifier",
            ],
        )
        assert result.exit_code == 1
        assert "returned str, not a Verifier" in result.output

    def test_the_command_passes_its_settings_to_the_worker(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each option reaches the Worker it builds, defaults included."""
        seen: dict[str, Any] = {}

        async def run(
            store_url: str, app: str, options: dict[str, Any], **_: Any
        ) -> None:
            seen.update(options)

        monkeypatch.setattr(cli_worker, "run_worker", run)
        result = CliRunner().invoke(
            create_cli(),
            [
                "worker",
                "--store",
                f"sqlite://{tmp_path}/w.db",
                "--app",
                "test_cli_worker:factory",
                "--max-timer-backoff",
                "60",
                "--sweep-interval",
                "120",
            ],
        )
        assert result.exit_code == 0, result.output
        assert seen == {
            "poll_interval": 1.0,
            "effect_grace": 0.0,
            "stop_grace": 10.0,
            "concurrency": 8,
            "max_timer_backoff": 60.0,
            "sweep_interval": 120.0,
        }
