"""``multiverify review``: list, show and decide cases in a store given by path or URL."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from multiverify import (
    Applicant,
    AuditTrail,
    LoanApplication,
    SessionStatus,
    Verifier,
)
from multiverify._cli import create_cli
from multiverify._cli_review import open_store
from multiverify.policy import load_policy
from multiverify.stores import PostgresStore, RedisStore, SqliteStore
from multiverify.testing import Scripted, ScriptedChannel

POLICY = """\
name = "loans"
version = "7"

[[steps]]
id = "bureau"
channel = "credit_bureau"

[[rules]]
outcome = "review"
when = "'thin_file' in steps.bureau.signals"
reason = "bureau.thin_file"

[review]
sla = "4h"
approve_reasons = ["identity_confirmed"]
reject_reasons = ["fraud_suspected"]
"""


def applicant(number: int) -> Applicant:
    return Applicant(
        applicant_id=f"a{number}",
        name="Zhao Min",
        national_id="110101199003074514",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="3000", currency="CNY", term_months=6, purpose="travel"
        ),
    )


async def _sessions(db: Path, policy_file: Path, count: int) -> list[str]:
    policy = load_policy(policy_file)
    bureau = ScriptedChannel(
        "credit_bureau", [Scripted.ends("inconclusive", signals=["thin_file"])]
    )
    ids = []
    async with (
        SqliteStore(db) as store,
        Verifier(policy, channels=[bureau], store=store) as verifier,
    ):
        for number in range(count):
            session = await verifier.start(applicant(number))
            await verifier.wait_idle()
            ids.append(session.session_id)
    return ids


@pytest.fixture
def cases(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A SQLite store with two sessions in review, and the policy file they run under."""
    policy_file = tmp_path / "loans.toml"
    policy_file.write_text(POLICY)
    db = tmp_path / "app.db"
    return db, policy_file, asyncio.run(_sessions(db, policy_file, 2))


@pytest.fixture
def cli() -> click.Group:
    return create_cli()


def invoke(cli: click.Group, *args: str) -> Result:
    return CliRunner().invoke(cli, ["review", *args], env={"COLUMNS": "200"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class TestList:
    def test_json(self, cli: click.Group, cases: tuple[Path, Path, list[str]]) -> None:
        """Every queued case, with its policy, reasons, steps and age."""
        db, _, ids = cases
        listed = as_json(invoke(cli, "list", "--store", str(db), "--json"))
        assert [case["session_id"] for case in listed] == ids
        first = listed[0]
        assert first["policy"]["name"] == "loans"
        assert first["reasons"][0]["code"] == "bureau.thin_file"
        assert first["steps"][0]["signals"] == ["thin_file"]
        assert first["age_seconds"] >= 0
        assert first["claimed_by"] is None

    def test_filters(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]]
    ) -> None:
        """Policy, reason and priority filters narrow the list."""
        db, _, _ = cases
        store = f"sqlite://{db}"
        assert (
            as_json(invoke(cli, "list", "--store", store, "--reason", "x", "--json"))
            == []
        )
        assert (
            as_json(
                invoke(cli, "list", "--store", store, "--policy", "cards", "--json")
            )
            == []
        )
        assert (
            as_json(
                invoke(cli, "list", "--store", store, "--min-priority", "1", "--json")
            )
            == []
        )
        assert (
            len(
                as_json(
                    invoke(cli, "list", "--store", store, "--policy", "loans", "--json")
                )
            )
            == 2
        )

    def test_table(self, cli: click.Group, cases: tuple[Path, Path, list[str]]) -> None:
        """The rich table names each case, its reasons and its steps."""
        db, _, ids = cases
        result = invoke(cli, "list", "--store", str(db))
        assert result.exit_code == 0, result.output
        assert "Review queue: 2 cases" in result.output
        assert ids[0] in result.output
        assert "bureau.thin_file" in result.output
        assert "bureau: inconclusive" in result.output


class TestShow:
    def test_json_and_panel(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]]
    ) -> None:
        """One case in full."""
        db, _, ids = cases
        shown = as_json(invoke(cli, "show", ids[1], "--store", str(db), "--json"))
        assert shown["session_id"] == ids[1]
        assert shown["collecting"] is False
        panel = invoke(cli, "show", ids[1], "--store", str(db))
        assert panel.exit_code == 0, panel.output
        assert f"Case {ids[1]}" in panel.output
        assert "Reason bureau.thin_file" in panel.output

    def test_unknown_session(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]]
    ) -> None:
        """An unknown id is a clear error, exit 1."""
        db, _, _ = cases
        result = invoke(cli, "show", "nope", "--store", str(db))
        assert result.exit_code == 1
        assert "no session 'nope'" in result.output


class TestDecide:
    def test_approve(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]]
    ) -> None:
        """The decision is the verdict, beside the automatic part; the trail verifies."""
        db, policy_file, ids = cases
        decided = as_json(
            invoke(
                cli,
                "decide",
                ids[0],
                "--approve",
                "--reason",
                "identity_confirmed",
                "--note",
                "spoke to the applicant",
                "--reviewer",
                "alice",
                "--policy",
                str(policy_file),
                "--store",
                str(db),
                "--json",
            )
        )
        assert decided["outcome"] == "approved"
        assert decided["decided_by"] == "reviewer"
        assert decided["review"]["reviewer"] == "alice"
        assert decided["review"]["note"] == "spoke to the applicant"
        assert decided["automatic"]["outcome"] == "review"
        assert decided["automatic"]["reasons"][0]["code"] == "bureau.thin_file"

        left = as_json(invoke(cli, "list", "--store", str(db), "--json"))
        assert [case["session_id"] for case in left] == [ids[1]]

        async def check() -> None:
            async with SqliteStore(db) as store:
                session, _ = await store.load(ids[0])
                assert session.status is SessionStatus.DECIDED
                events = await store.audit_events(ids[0])
                assert AuditTrail.verify(events) == len(events)
                assert events[-1].data["review"]["reviewer"] == "alice"

        asyncio.run(check())

    def test_reject_shows_the_explanation(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]]
    ) -> None:
        """Without --json the verdict is explained, the automatic part included."""
        db, policy_file, ids = cases
        result = invoke(
            cli,
            "decide",
            ids[1],
            "--reject",
            "--reason",
            "fraud_suspected",
            "--reviewer",
            "bob",
            "--policy",
            str(policy_file),
            "--store",
            str(db),
        )
        assert result.exit_code == 0, result.output
        assert "Verdict: rejected" in result.output
        assert "Review: rejected by bob" in result.output
        assert "Automatic verdict, before review:" in result.output

    @pytest.mark.parametrize(
        ("extra", "code", "message"),
        [
            ((), 2, "choose --approve or --reject"),
            (
                ("--approve", "--reason", "fraud_suspected"),
                1,
                "not one policy loans allows",
            ),
        ],
    )
    def test_refused(
        self,
        cli: click.Group,
        cases: tuple[Path, Path, list[str]],
        extra: tuple[str, ...],
        code: int,
        message: str,
    ) -> None:
        """No outcome is a usage error; a reason the policy does not allow is refused."""
        db, policy_file, ids = cases
        args = ["decide", ids[0], "--policy", str(policy_file), "--store", str(db)]
        if not extra:
            args += ["--reason", "identity_confirmed"]
        result = invoke(cli, *args, *extra, "--reviewer", "alice")
        assert result.exit_code == code, result.output
        assert message in result.output

    def test_a_policy_that_does_not_load(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]], tmp_path: Path
    ) -> None:
        """A broken policy file is reported with its located problems."""
        db, _, ids = cases
        broken = tmp_path / "broken.toml"
        broken.write_text(
            'name = "x"\nversion = "1"\nsteps = []\n[review]\nsla = "soon"\n'
        )
        result = invoke(
            cli,
            "decide",
            ids[0],
            "--approve",
            "--reason",
            "ok",
            "--policy",
            str(broken),
            "--store",
            str(db),
        )
        assert result.exit_code == 1
        assert "review.sla" in result.output

    def test_claimed_and_already_decided(
        self, cli: click.Group, cases: tuple[Path, Path, list[str]]
    ) -> None:
        """A second decision is refused: the session already has its verdict."""
        db, policy_file, ids = cases
        args = [
            "decide",
            ids[0],
            "--approve",
            "--reason",
            "identity_confirmed",
            "--policy",
            str(policy_file),
            "--store",
            str(db),
        ]
        assert invoke(cli, *args, "--reviewer", "alice").exit_code == 0
        again = invoke(cli, *args, "--reviewer", "bob")
        assert again.exit_code == 1
        assert "decided" in again.output


class TestStores:
    def test_urls_name_stores(self, tmp_path: Path) -> None:
        """postgresql:// and redis:// URLs, sqlite:// and plain paths."""
        assert isinstance(open_store("postgresql://u@h/db"), PostgresStore)
        assert isinstance(open_store("redis://127.0.0.1:6379/0"), RedisStore)
        db = tmp_path / "x.db"
        db.touch()
        assert isinstance(open_store(f"sqlite://{db}"), SqliteStore)
        assert isinstance(open_store(str(db)), SqliteStore)

    def test_a_relative_sqlite_url(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``sqlite:verify.db`` names a file in the working directory, as for the worker."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "verify.db").touch()
        store = open_store("sqlite:verify.db")
        assert isinstance(store, SqliteStore)
        assert isinstance(open_store("SQLite:verify.db"), SqliteStore)

    def test_a_directory_is_no_sqlite_store(self, tmp_path: Path) -> None:
        """A path or an empty sqlite URL naming a directory is a usage error."""
        for target in (str(tmp_path), f"sqlite://{tmp_path}", "sqlite://"):
            with pytest.raises(click.BadParameter, match="no SQLite store at"):
                open_store(target)

    def test_schema_and_prefix_defaults_yield_to_the_url(self) -> None:
        """The environment's schema or prefix applies unless the URL names one."""
        pg = open_store("postgresql://u@h/db", schema="lender")
        assert "schema='lender'" in repr(pg)
        named = open_store("postgresql://u@h/db?schema=other", schema="lender")
        assert "schema='other'" in repr(named)
        redis = open_store("redis://127.0.0.1:6379/0", prefix="lender")
        assert "prefix='lender'" in repr(redis)

    def test_bad_stores(self, cli: click.Group, tmp_path: Path) -> None:
        """An unknown scheme or a missing file is a usage error."""
        result = invoke(cli, "list", "--store", "mongodb://x")
        assert result.exit_code == 2
        assert "unknown store URL scheme 'mongodb'" in result.output
        missing = invoke(cli, "list", "--store", str(tmp_path / "none.db"))
        assert missing.exit_code == 2
        assert "no SQLite store" in missing.output
