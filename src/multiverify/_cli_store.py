"""``multiverify store purge``: retention of personal data, run against any store.

Registered by [`create_cli`][multiverify._cli.create_cli]; needs the ``cli``
extra (and ``postgres`` or ``redis`` for those stores).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import click

from ._cli_review import _opened
from ._duration import parse_duration
from .compliance import PurgeReport, purge_personal_data
from .exceptions import MultiverifyError

__all__ = ["register", "store_group"]


async def _purge(
    target: str, older_than: str, *, dry_run: bool
) -> tuple[PurgeReport, int | None]:
    """Purge personal data, then (unless a dry run) sweep lapsed shared state."""
    now = datetime.now(UTC)
    async with _opened(target) as store:
        report = await purge_personal_data(
            store, older_than=older_than, now=now, dry_run=dry_run
        )
        swept = None if dry_run else await store.sweep_expired(at=now)
    return report, swept


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> str:
    del ctx, param
    try:
        parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.group("store")
def store_group() -> None:
    """Maintain a session store."""


@store_group.command()
@click.option(
    "--older-than",
    required=True,
    callback=_duration,
    help="How long personal data is kept after a session finished, such as 30d.",
)
@click.option(
    "--store",
    "spec",
    required=True,
    envvar="MULTIVERIFY_STORE",
    help="The store: a postgresql:// or redis:// URL, sqlite:///PATH, or the "
    "path of a SQLite file (env MULTIVERIFY_STORE; a schema or key prefix "
    "other than multiverify from MULTIVERIFY_STORE_SCHEMA / _PREFIX).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged.")
def purge(older_than: str, spec: str, dry_run: bool) -> None:
    """Purge the personal data of sessions that finished more than --older-than ago.

    The verdicts, their reasons and the hash-chained audit trail stay, so an
    exported trail still passes `multiverify audit verify`. The store's
    lapsed shared state (SMS send ledger entries, quota entries past their
    window, expired locks and cached reports) is deleted too, except in a
    dry run.
    """
    try:
        report, swept = asyncio.run(_purge(spec, older_than, dry_run=dry_run))
    except MultiverifyError as exc:
        raise click.ClickException(str(exc)) from None
    verb = "would purge" if report.dry_run else "purged"
    noun = "session" if len(report.purged) == 1 else "sessions"
    click.echo(
        f"{verb} the personal data of {len(report.purged)} {noun} that finished "
        f"before {report.cutoff.isoformat(timespec='seconds')}"
    )
    if report.skipped:
        click.echo(
            f"{len(report.skipped)} changed while being purged; run it again", err=True
        )
    if swept is not None:
        noun = "entry" if swept == 1 else "entries"
        click.echo(f"removed {swept} lapsed shared-state {noun}")


def register(cli: click.Group) -> None:
    """Add ``store purge`` to the ``multiverify`` group (into its ``store`` group if it has one)."""
    existing = cli.commands.get("store")
    if isinstance(existing, click.Group):
        existing.add_command(purge)
    else:
        cli.add_command(store_group)
