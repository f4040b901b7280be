"""``multiverify review``: list, show and decide the cases waiting for a person.

The commands work on any store, given by URL (``postgresql://...``,
``redis://...``, ``sqlite:///path``) or by the path of a SQLite file, so a
reviewer can decide from any machine that reaches the sessions' store.
Deciding needs the policy files the sessions run under (the decision is
checked against their ``[review]`` tables and applied by the pure core).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._clock import SystemClock
from ._results import Outcome, Verdict
from ._review import ReviewCase, ReviewQueue
from ._verifier import Verifier
from .exceptions import ConfigurationError, MultiverifyError, PolicyError
from .policy import Policy, load_policy
from .stores import SessionStore, SqliteStore, store_from_url

__all__ = ["case_json", "open_store", "review_group"]

T = TypeVar("T")

_STORE_HELP = (
    "The store: a postgresql:// or redis:// URL, sqlite:///PATH, or the path "
    "of a SQLite file (env MULTIVERIFY_STORE)."
)


def open_store(
    target: str, *, schema: str = "multiverify", prefix: str = "multiverify"
) -> SessionStore:
    """The store a URL (as ``store_from_url`` reads it) or a SQLite file's path names.

    Raises:
        click.BadParameter: the URL names no store, or the SQLite file does
            not exist.
    """
    scheme, colon, rest = target.partition(":")
    if colon and scheme.lower() == "sqlite":
        path = Path(rest.removeprefix("//"))  # sqlite:///abs/path, sqlite:rel.db
    elif "://" in target:
        try:
            return store_from_url(target, schema=schema, prefix=prefix)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--store") from exc
    else:
        path = Path(target)
    if not path.is_file():
        raise click.BadParameter(f"no SQLite store at {path}", param_hint="--store")
    return SqliteStore(path)


def case_json(case: ReviewCase, *, now: datetime) -> dict[str, Any]:
    """A case as ``review list --json`` and ``review show --json`` print it."""
    return {
        "session_id": case.session_id,
        "policy": {
            "name": case.policy.name,
            "version": case.policy.version,
            "hash": case.policy.hash,
        },
        "priority": case.priority,
        "queued_at": case.queued_at.isoformat(),
        "age_seconds": round(case.age(now), 3),
        "escalated": case.escalated,
        "reasons": [
            {"code": reason.code, "message": reason.message} for reason in case.reasons
        ],
        "score": case.score,
        "steps": [
            {
                "step_id": step.step_id,
                "channel": step.channel,
                "state": step.state,
                "status": None if step.result is None else step.result.status.value,
                "signals": []
                if step.result is None
                else list(step.result.signal_names),
                "score": None if step.result is None else step.result.score,
                "evidence": []
                if step.result is None
                else [
                    {"kind": item.kind, "reference": item.reference}
                    for item in step.result.evidence
                ],
            }
            for step in case.steps
        ],
        "evidence_requested": list(case.evidence),
        "collecting": case.collecting,
        "claimed_by": case.claimed_by,
        "claimed_until": None
        if case.claimed_until is None
        else case.claimed_until.isoformat(),
    }


def _age(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m"


def _step_text(case: ReviewCase) -> str:
    parts = []
    for step in case.steps:
        status = step.state if step.result is None else step.result.status.value
        parts.append(f"{step.step_id}: {status}")
    return ", ".join(parts)


def _cases_table(cases: Sequence[ReviewCase], now: datetime) -> Table:
    table = Table(
        title=f"Review queue: {len(cases)} case{'' if len(cases) == 1 else 's'}"
    )
    for column in (
        "session",
        "policy",
        "priority",
        "age",
        "reasons",
        "steps",
        "claimed by",
    ):
        table.add_column(column)
    for case in cases:
        priority = Text(str(case.priority), style="bold red" if case.escalated else "")
        table.add_row(
            case.session_id,
            f"{case.policy.name} {case.policy.version}",
            priority,
            _age(case.age(now)),
            ", ".join(case.reason_codes),
            _step_text(case),
            case.claimed_by or "",
        )
    return table


def _case_panel(case: ReviewCase, now: datetime) -> Panel:
    lines = [
        Text(
            f"Policy: {case.policy.name} {case.policy.version} ({case.policy.hash[:12]})"
        ),
        Text(
            f"Queued {case.queued_at.isoformat()} ({_age(case.age(now))} ago), "
            f"priority {case.priority}" + (", escalated" if case.escalated else "")
        ),
    ]
    if case.claimed_by is not None:
        lines.append(Text(f"Claimed by {case.claimed_by} until {case.claimed_until}"))
    if case.collecting:
        lines.append(
            Text(
                "Collecting evidence: out of the queue until it comes in",
                style="yellow",
            )
        )
    lines.extend(
        Text(f"Reason {reason.code}: {reason.message}".rstrip(": "))
        for reason in case.reasons
    )
    steps = Table(show_edge=False)
    for column in ("step", "channel", "state", "status", "signals", "evidence"):
        steps.add_column(column)
    for step in case.steps:
        result = step.result
        steps.add_row(
            step.step_id,
            step.channel,
            step.state,
            "" if result is None else result.status.value,
            "" if result is None else ", ".join(result.signal_names),
            ""
            if result is None
            else ", ".join(f"{item.kind}:{item.reference}" for item in result.evidence),
        )
    return Panel(Group(*lines, steps), title=f"Case {case.session_id}")


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    review = verdict.review
    automatic = verdict.automatic
    return {
        "outcome": verdict.outcome.value,
        "decided_by": verdict.decided_by,
        "decided_at": verdict.decided_at.isoformat(),
        "reasons": [{"code": r.code, "message": r.message} for r in verdict.reasons],
        "review": None
        if review is None
        else {
            "reviewer": review.reviewer,
            "outcome": review.outcome.value,
            "reason": review.reason,
            "note": review.note,
            "queued_at": review.queued_at.isoformat(),
            "escalated": review.escalated,
            "evidence": list(review.evidence),
        },
        "automatic": None
        if automatic is None
        else {
            "outcome": automatic.outcome.value,
            "decided_by": automatic.decided_by,
            "reasons": [
                {"code": r.code, "message": r.message} for r in automatic.reasons
            ],
        },
    }


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(work())
    except MultiverifyError as exc:
        raise click.ClickException(str(exc)) from None


def _policies(files: Sequence[Path]) -> list[Policy]:
    loaded = []
    for file in files:
        try:
            loaded.append(load_policy(file))
        except PolicyError as exc:
            raise click.ClickException(str(exc)) from None
    return loaded


def _console() -> Console:
    return Console(highlight=False)


def review_group() -> click.Group:
    """The ``review`` command group of ``multiverify``."""
    store_option = click.option(
        "--store",
        "target",
        envvar="MULTIVERIFY_STORE",
        required=True,
        help=_STORE_HELP,
    )
    json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

    @click.group()
    def review() -> None:
        """List, show and decide the sessions waiting for a person."""

    @review.command(name="list")
    @store_option
    @click.option("--policy", help="Only cases of the policy with this name or hash.")
    @click.option("--reason", help="Only cases with this automatic reason code.")
    @click.option(
        "--min-priority", type=int, help="Only cases of at least this priority."
    )
    @json_option
    def list_cases(
        *,
        target: str,
        policy: str | None,
        reason: str | None,
        min_priority: int | None,
        as_json: bool,
    ) -> None:
        """List the queued cases, highest priority and oldest first."""

        async def work() -> list[ReviewCase]:
            async with _opened(target) as store:
                queue = ReviewQueue(store=store)
                return await queue.pending(
                    policy=policy, reason=reason, min_priority=min_priority
                )

        cases = _run(work)
        now = SystemClock().now()
        if as_json:
            click.echo(json.dumps([case_json(c, now=now) for c in cases], indent=2))
        else:
            _console().print(_cases_table(cases, now))

    @review.command()
    @store_option
    @click.argument("session_id")
    @json_option
    def show(target: str, session_id: str, as_json: bool) -> None:
        """Show one case: its reasons, its evidence, its claim."""

        async def work() -> ReviewCase:
            async with _opened(target) as store:
                return await ReviewQueue(store=store).case(session_id)

        case = _run(work)
        now = SystemClock().now()
        if as_json:
            click.echo(json.dumps(case_json(case, now=now), indent=2))
        else:
            _console().print(_case_panel(case, now))

    @review.command()
    @store_option
    @click.argument("session_id")
    @click.option(
        "--approve", "outcome", flag_value="approved", help="Approve the case."
    )
    @click.option("--reject", "outcome", flag_value="rejected", help="Reject the case.")
    @click.option("--reason", required=True, help="The decision's reason code.")
    @click.option("--note", default="", help="A note kept with the verdict.")
    @click.option(
        "--reviewer",
        envvar="MULTIVERIFY_REVIEWER",
        help="Who decides (env MULTIVERIFY_REVIEWER; the login name by default).",
    )
    @click.option(
        "--policy",
        "policy_files",
        multiple=True,
        required=True,
        envvar="MULTIVERIFY_POLICY",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A policy file the sessions run under (repeatable).",
    )
    @json_option
    def decide(
        *,
        target: str,
        session_id: str,
        outcome: str | None,
        reason: str,
        note: str,
        reviewer: str | None,
        policy_files: tuple[Path, ...],
        as_json: bool,
    ) -> None:
        """Approve or reject a case with a reason code (claims it first)."""
        if outcome is None:
            raise click.UsageError("choose --approve or --reject")
        policies = _policies(policy_files)
        who = reviewer or _login()

        async def work() -> Verdict:
            async with (
                _opened(target) as store,
                Verifier(policies, store=store) as verifier,
            ):
                return await ReviewQueue(verifier).decide(
                    session_id, who, outcome=Outcome(outcome), reason=reason, note=note
                )

        verdict = _run(work)
        if as_json:
            click.echo(
                json.dumps(
                    {"session_id": session_id, **_verdict_json(verdict)}, indent=2
                )
            )
        else:
            _console().print(Panel(verdict.explain(), title=f"Session {session_id}"))

    return review


class _opened:  # noqa: N801 - reads as a function at the call sites
    """Open a store for one command and close it after."""

    def __init__(self, target: str) -> None:
        self._store = open_store(
            target,
            schema=os.environ.get("MULTIVERIFY_STORE_SCHEMA", "multiverify"),
            prefix=os.environ.get("MULTIVERIFY_STORE_PREFIX", "multiverify"),
        )

    async def __aenter__(self) -> SessionStore:
        opener = getattr(self._store, "open", None)
        if opener is not None:
            await opener()
        return self._store

    async def __aexit__(self, *exc_info: object) -> None:
        await self._store.aclose()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no login name at all
        raise click.UsageError("name the reviewer with --reviewer") from None
