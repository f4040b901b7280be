"""Tests for ``multiverify store purge``: retention from the command line."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path

from click.testing import CliRunner

from multiverify import Applicant, LoanApplication, Policy, Step, Verifier
from multiverify._cli import create_cli
from multiverify.stores import SqliteStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

APPLICANT = Applicant(
    applicant_id="a-1",
    name="Wang Fang",
    national_id="110101199003072420",
    phone="+8613800138000",
    date_of_birth=date(1990, 3, 7),
    timezone="Asia/Shanghai",
    loan=LoanApplication(amount="8000", currency="CNY", term_months=12, purpose="x"),
)


async def decided_long_ago(db: Path) -> str:
    """A session decided in 2020, kept in a SQLite file."""
    policy = Policy(
        name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
    )
    clock = FakeClock(datetime(2020, 1, 1, tzinfo=UTC))
    async with SqliteStore(db) as store:
        channel = ScriptedChannel("credit_bureau", [Scripted.passes()])
        async with Verifier(
            policy, channels=[channel], store=store, clock=clock
        ) as verifier:
            verdict = await verifier.run(APPLICANT)
            assert verdict.outcome.value == "review"  # the default: no rules
        (session_id,) = await store.session_ids()
        return session_id


async def applicant_of(db: Path, session_id: str) -> Applicant | None:
    async with SqliteStore(db) as store:
        session, _ = await store.load(session_id)
        return session.applicant


async def shared_values(db: Path) -> None:
    """Two ledger entries that lapsed in 2020, and a value kept for a century."""
    async with SqliteStore(db) as store:
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        await store.put_value("ledger:1", "{}", at=long_ago, ttl=86400)
        await store.put_value("ledger:2", "{}", at=long_ago, ttl=86400)
        await store.put_value("cached", "{}", at=long_ago, ttl=100 * 365 * 86400)


def value_keys(db: Path) -> list[str]:
    """The keys of the shared values the file holds, lapsed or not."""
    with closing(sqlite3.connect(db)) as conn:
        return [
            key for (key,) in conn.execute("SELECT key FROM shared_values ORDER BY key")
        ]


class TestPurge:
    def test_purges_and_says_so(self, tmp_path: Path) -> None:
        """A dry run counts; the real run purges; the trail still verifies."""
        db = tmp_path / "s.db"
        session_id = asyncio.run(decided_long_ago(db))
        runner = CliRunner()
        cli = create_cli()
        trial = runner.invoke(
            cli,
            ["store", "purge", "--older-than", "30d", "--store", str(db), "--dry-run"],
        )
        assert trial.exit_code == 0, trial.output
        assert trial.stdout.startswith("would purge the personal data of 1 session ")
        assert asyncio.run(applicant_of(db, session_id)) is not None
        done = runner.invoke(
            cli, ["store", "purge", "--older-than", "30d", "--store", f"sqlite:///{db}"]
        )
        assert done.exit_code == 0, done.output
        assert done.stdout.startswith("purged the personal data of 1 session ")
        assert asyncio.run(applicant_of(db, session_id)) is None
        exported = runner.invoke(cli, ["audit", "export", "--db", str(db)])
        trail = tmp_path / "trail.jsonl"
        trail.write_text(exported.stdout, encoding="utf-8")
        verified = runner.invoke(cli, ["audit", "verify", str(trail)])
        assert verified.exit_code == 0, verified.output
        again = runner.invoke(
            cli, ["store", "purge", "--older-than", "30d", "--store", str(db)]
        )
        assert "of 0 sessions" in again.stdout

    def test_removes_lapsed_shared_values(self, tmp_path: Path) -> None:
        """A purge also deletes lapsed shared state (a dry run leaves it)."""
        db = tmp_path / "s.db"
        asyncio.run(decided_long_ago(db))
        asyncio.run(shared_values(db))
        runner = CliRunner()
        cli = create_cli()

        trial = runner.invoke(
            cli,
            ["store", "purge", "--older-than", "30d", "--store", str(db), "--dry-run"],
        )
        assert trial.exit_code == 0, trial.output
        assert "shared-state" not in trial.stdout
        assert value_keys(db) == ["cached", "ledger:1", "ledger:2"]

        done = runner.invoke(
            cli, ["store", "purge", "--older-than", "30d", "--store", str(db)]
        )
        assert done.exit_code == 0, done.output
        assert done.stdout.splitlines()[-1] == "removed 2 lapsed shared-state entries"
        assert value_keys(db) == ["cached"]
        again = runner.invoke(
            cli, ["store", "purge", "--older-than", "30d", "--store", str(db)]
        )
        assert again.stdout.splitlines()[-1] == "removed 0 lapsed shared-state entries"

    def test_bad_duration_or_store(self, tmp_path: Path) -> None:
        """A period that is not a duration, or a store URL of no known kind, is a usage error."""
        result = CliRunner().invoke(
            create_cli(),
            ["store", "purge", "--older-than", "a month", "--store", "x.db"],
        )
        assert result.exit_code == 2
        assert "not a duration" in result.output
        result = CliRunner().invoke(
            create_cli(),
            ["store", "purge", "--older-than", "1d", "--store", "mysql://x/y"],
        )
        assert result.exit_code == 2
        assert "unknown store URL scheme" in result.output

    def test_unreachable_store(self) -> None:
        """A store that cannot be reached is a one-line error, exit 1."""
        result = CliRunner().invoke(
            create_cli(),
            [
                "store",
                "purge",
                "--older-than",
                "30d",
                "--store",
                "postgresql://nobody@127.0.0.1:9/none",
            ],
        )
        assert result.exit_code == 1
        assert "Error:" in result.output


def test_missing_sqlite_file(tmp_path: Path) -> None:
    """A SQLite path that holds no store is a usage error (no empty store is made)."""
    result = CliRunner().invoke(
        create_cli(),
        ["store", "purge", "--older-than", "1d", "--store", str(tmp_path / "no.db")],
    )
    assert result.exit_code == 2
    assert "no SQLite store" in result.output
    assert not (tmp_path / "no.db").exists()


def test_purge_joins_an_existing_store_group() -> None:
    """Registered on a group that has ``store`` already, purge joins it."""
    import click

    from multiverify._cli_store import register

    @click.group()
    def cli() -> None:
        """A command group."""

    @cli.group()
    def store() -> None:
        """Another store group."""

    register(cli)
    assert "purge" in store.commands
    assert cli.commands["store"] is store
